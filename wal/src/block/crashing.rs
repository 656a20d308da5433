//! A device wrapper that crashes in the middle of a write, over any [`BlockDevice`]: the
//! torn-write tests run it over memory, a file or a real block device (a loop device).
//!
//! A crashing write persists a prefix of the buffer cut at a [`SECTOR`] boundary and fails;
//! every later call fails too, as if the machine had stopped. The inner device only accepts
//! 4 KiB-aligned I/O, so the cut is made by reading the blocks the prefix touches, laying the
//! prefix over them and writing them back: the sectors after the cut keep their old bytes, as
//! on a disk that lost power mid-write.

use std::fmt;
use std::io;
use std::sync::Arc;

use parking_lot::Mutex;

use super::device::{AlignedBuf, BlockDevice, BLOCK, SECTOR};

/// A [`BlockDevice`] that crashes at a chosen write. See the module docs.
pub struct CrashingDevice {
    inner: Arc<dyn BlockDevice>,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    writes: u64,
    crash: Option<(u64, usize)>,
    crashed: bool,
}

impl fmt::Debug for CrashingDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CrashingDevice")
            .field("inner", &self.inner.name())
            .field("state", &*self.state.lock())
            .finish()
    }
}

fn crashed() -> io::Error {
    io::Error::other("device crashed")
}

impl CrashingDevice {
    /// Wraps `inner`; nothing crashes until [`CrashingDevice::crash_at_write`].
    pub fn new(inner: Arc<dyn BlockDevice>) -> CrashingDevice {
        CrashingDevice {
            inner,
            state: Mutex::new(State::default()),
        }
    }

    /// The writes made through this wrapper so far.
    pub fn writes(&self) -> u64 {
        self.state.lock().writes
    }

    /// Makes write number `write` (counting from 0 through this wrapper) persist only its
    /// first `keep` bytes, rounded down to a sector, and crash.
    pub fn crash_at_write(&self, write: u64, keep: usize) {
        self.state.lock().crash = Some((write, keep / SECTOR * SECTOR));
    }

    /// The device underneath, to reopen after the crash (as after a restart).
    pub fn inner(&self) -> Arc<dyn BlockDevice> {
        self.inner.clone()
    }
}

impl BlockDevice for CrashingDevice {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        if self.state.lock().crashed {
            return Err(crashed());
        }
        self.inner.read_at(buf, offset)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        // Held across the write so that a crash is ordered with every other write.
        let mut state = self.state.lock();
        if state.crashed {
            return Err(crashed());
        }
        let n = state.writes;
        state.writes += 1;
        match state.crash {
            Some((at, keep)) if at == n => {
                let keep = keep.min(buf.len());
                let blocks = keep.div_ceil(BLOCK) * BLOCK;
                if blocks > 0 {
                    let mut torn = AlignedBuf::new(blocks);
                    self.inner.read_at(&mut torn[..blocks], offset)?;
                    torn[..keep].copy_from_slice(&buf[..keep]);
                    self.inner.write_at(&torn[..blocks], offset)?;
                    self.inner.sync()?;
                }
                state.crashed = true;
                Err(crashed())
            }
            _ => {
                drop(state);
                self.inner.write_at(buf, offset)
            }
        }
    }

    fn sync(&self) -> io::Result<()> {
        if self.state.lock().crashed {
            return Err(crashed());
        }
        self.inner.sync()
    }

    fn len(&self) -> u64 {
        self.inner.len()
    }

    fn name(&self) -> String {
        self.inner.name()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::device::MemDevice;

    #[test]
    fn a_crash_keeps_a_sector_prefix_and_the_old_bytes_after_it() {
        let mem = MemDevice::new(4 * BLOCK);
        let mut old = AlignedBuf::new(2 * BLOCK);
        old.fill(1);
        mem.write_at(&old, 0).unwrap();
        let dev = CrashingDevice::new(Arc::new(mem.clone()));
        let mut new = AlignedBuf::new(2 * BLOCK);
        new.fill(2);
        dev.write_at(&new[..BLOCK], 2 * BLOCK as u64).unwrap();
        dev.crash_at_write(1, 1100);
        assert!(dev.write_at(&new, 0).is_err());
        assert!(dev.sync().is_err());
        assert!(dev.read_at(&mut old[..BLOCK], 0).is_err());
        let after = mem.snapshot();
        assert!(after[..1024].iter().all(|&b| b == 2));
        assert!(after[1024..2 * BLOCK].iter().all(|&b| b == 1));
        assert!(after[2 * BLOCK..3 * BLOCK].iter().all(|&b| b == 2));
        assert_eq!(dev.writes(), 2);
    }
}
