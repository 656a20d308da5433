//! A loop device over a temporary file, so the block WAL's suites also run on a real block
//! device. Setting one up needs `losetup` and the right to use it (root); when either is
//! missing, [`LoopDevice::new`] says why and the tests print that reason and pass.
//!
//! The device is detached and its backing file removed on drop, which also runs when a test
//! panics (unwinding), so no loop device stays attached.
#![allow(dead_code)]

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use objstream_wal::block::{AlignedBuf, BlockDevice, DirectFile};

/// An attached loop device over a file of its own. Detached on drop.
#[derive(Debug)]
pub struct LoopDevice {
    device: PathBuf,
    backing: PathBuf,
}

impl LoopDevice {
    /// Creates a zeroed file of `bytes` in cargo's target tmp dir (a disk filesystem), and
    /// attaches a loop device to it with direct I/O (so that a flush reaches the disk rather
    /// than the page cache), falling back to buffered when the kernel refuses direct I/O.
    pub fn new(name: &str, bytes: u64) -> Result<LoopDevice, String> {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("loopdev");
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        // Unique per process and call: tests of one binary run in parallel.
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let backing = dir.join(format!("{name}-{}-{n}.img", std::process::id()));
        let _ = std::fs::remove_file(&backing);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&backing)
            .map_err(|e| format!("creating {}: {e}", backing.display()))?;
        file.set_len(bytes)
            .map_err(|e| format!("sizing {}: {e}", backing.display()))?;
        drop(file);
        let attach = |extra: &[&str]| -> Result<PathBuf, String> {
            let out = Command::new("losetup")
                .args(["-f", "--show"])
                .args(extra)
                .arg(&backing)
                .output()
                .map_err(|e| format!("running losetup: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "losetup {extra:?} failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
            let device = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if !device.starts_with("/dev/") {
                return Err(format!("losetup printed {device:?}, not a device"));
            }
            Ok(PathBuf::from(device))
        };
        match attach(&["--direct-io=on"]).or_else(|_| attach(&[])) {
            Ok(device) => Ok(LoopDevice { device, backing }),
            Err(e) => {
                let _ = std::fs::remove_file(&backing);
                Err(e)
            }
        }
    }

    /// Sets one up, or prints why it cannot and returns `None` (the caller then skips).
    pub fn or_skip(name: &str, bytes: u64) -> Option<LoopDevice> {
        match LoopDevice::new(name, bytes) {
            Ok(dev) => Some(dev),
            Err(why) => {
                println!("skipped on a loop device: {why}");
                None
            }
        }
    }

    /// The device node, e.g. `/dev/loop3`.
    pub fn path(&self) -> &Path {
        &self.device
    }

    /// Zeroes the whole device and opens it with `O_DIRECT` (writes made durable by
    /// `fdatasync`), as a fresh disk for one test scenario.
    pub fn open_zeroed(&self) -> Arc<dyn BlockDevice> {
        let dev = DirectFile::open(&self.device, None, false).unwrap();
        let zeros = AlignedBuf::new(1 << 20);
        let mut at = 0;
        while at < dev.len() {
            let n = (dev.len() - at).min(zeros.len() as u64) as usize;
            dev.write_at(&zeros[..n], at).unwrap();
            at += n as u64;
        }
        dev.sync().unwrap();
        Arc::new(dev)
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let out = Command::new("losetup").arg("-d").arg(&self.device).output();
        match out {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!(
                "detaching {}: {}",
                self.device.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            Err(e) => eprintln!("detaching {}: {e}", self.device.display()),
        }
        let _ = std::fs::remove_file(&self.backing);
    }
}
