//! The device seam: what the block WAL needs from a disk, a real implementation over a path
//! opened with `O_DIRECT`, a pool of aligned buffers, and an in-memory device that can crash.
//!
//! Every offset, length and buffer address handed to a [`BlockDevice`] is a multiple of
//! [`BLOCK`] (4 KiB): `O_DIRECT` requires it, and [`MemDevice`] checks it so that tests catch
//! misaligned I/O that a real disk would refuse.

use std::alloc::{self, Layout};
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::ops::{Deref, DerefMut};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::Arc;

use parking_lot::Mutex;

/// The unit of every device I/O: offsets, lengths and buffer addresses are multiples of it.
pub const BLOCK: usize = 4096;

/// The smallest unit a crash may cut a write at in [`MemDevice`] (a disk sector).
pub const SECTOR: usize = 512;

/// What the block WAL needs from a disk. Offsets, lengths and buffer addresses are multiples of
/// [`BLOCK`].
pub trait BlockDevice: Send + Sync + fmt::Debug + 'static {
    /// Fills `buf` from `offset`.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Writes all of `buf` at `offset`. Durable once [`BlockDevice::sync`] returns, or at once
    /// when the device was opened with `O_DSYNC`.
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Makes every completed write durable.
    fn sync(&self) -> io::Result<()>;
    /// The device's size in bytes.
    fn len(&self) -> u64;
    /// Whether the device holds no bytes at all.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// A name for error messages (a path).
    fn name(&self) -> String;
}

fn check_aligned(buf: &[u8], offset: u64) -> io::Result<()> {
    if (buf.as_ptr() as usize) % BLOCK != 0 || buf.len() % BLOCK != 0 || offset % BLOCK as u64 != 0
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "unaligned I/O: {} bytes at offset {offset}, buffer address {:p}",
                buf.len(),
                buf.as_ptr()
            ),
        ));
    }
    Ok(())
}

/// A block device or a preallocated regular file opened with `O_DIRECT`.
#[derive(Debug)]
pub struct DirectFile {
    file: File,
    path: PathBuf,
    len: u64,
    dsync: bool,
}

impl DirectFile {
    /// Opens `path` with `O_DIRECT` (and `O_DSYNC` when `dsync`). When the path does not exist
    /// and `create_bytes` is given, creates a regular file of that many bytes, allocated with
    /// `fallocate` so that writes never allocate, and syncs it and its directory.
    ///
    /// Fails with the OS error when the filesystem refuses `O_DIRECT` (tmpfs does), so that a
    /// caller sees why rather than silently losing direct I/O.
    pub fn open(path: &Path, create_bytes: Option<u64>, dsync: bool) -> io::Result<DirectFile> {
        let mut flags = libc::O_DIRECT;
        if dsync {
            flags |= libc::O_DSYNC;
        }
        if !path.exists() {
            if let Some(bytes) = create_bytes {
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create_new(true)
                    .open(path)?;
                // SAFETY: a plain syscall on a file descriptor we own.
                let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, bytes as libc::off_t) };
                if rc != 0 {
                    let err = io::Error::last_os_error();
                    // Filesystems without fallocate still get a file of the right size.
                    if err.raw_os_error() != Some(libc::EOPNOTSUPP) {
                        return Err(err);
                    }
                    file.set_len(bytes)?;
                }
                file.sync_all()?;
                if let Some(dir) = path.parent() {
                    let dir = if dir.as_os_str().is_empty() {
                        Path::new(".")
                    } else {
                        dir
                    };
                    File::open(dir)?.sync_all()?;
                }
            }
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(flags)
            .open(path)?;
        // Block devices report size 0 in metadata; seeking to the end works for both.
        // SAFETY: a plain syscall on a file descriptor we own.
        let end = unsafe { libc::lseek(file.as_raw_fd(), 0, libc::SEEK_END) };
        if end < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(DirectFile {
            file,
            path: path.to_path_buf(),
            len: end as u64,
            dsync,
        })
    }

    /// Whether every write is durable on return (`O_DSYNC`).
    pub fn is_dsync(&self) -> bool {
        self.dsync
    }
}

impl BlockDevice for DirectFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        check_aligned(buf, offset)?;
        self.file.read_exact_at(buf, offset)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        check_aligned(buf, offset)?;
        self.file.write_all_at(buf, offset)
    }

    fn sync(&self) -> io::Result<()> {
        if self.dsync {
            return Ok(());
        }
        self.file.sync_data()
    }

    fn len(&self) -> u64 {
        self.len
    }

    fn name(&self) -> String {
        self.path.display().to_string()
    }
}

/// A zeroed heap buffer whose address and length are multiples of [`BLOCK`].
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    len: usize,
    align: usize,
}

/// The alignment of [`AlignedBuf::for_bulk_reads`] buffers: a transparent huge page. A
/// buffer with this alignment is a mapping of its own (see `Drop`).
const HUGE_PAGE: usize = 2 << 20;

// SAFETY: the buffer is uniquely owned heap memory, like a Vec<u8>.
unsafe impl Send for AlignedBuf {}
// SAFETY: shared access only hands out shared slices.
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// A zeroed buffer of `len` bytes rounded up to a multiple of [`BLOCK`] (at least one block).
    pub fn new(len: usize) -> AlignedBuf {
        let len = len.max(1).div_ceil(BLOCK) * BLOCK;
        let layout = Layout::from_size_align(len, BLOCK).expect("block-aligned layout");
        // SAFETY: the layout has a non-zero size.
        let raw = unsafe { alloc::alloc_zeroed(layout) };
        let Some(ptr) = NonNull::new(raw) else {
            alloc::handle_alloc_error(layout);
        };
        AlignedBuf {
            ptr,
            len,
            align: BLOCK,
        }
    }

    /// A zeroed buffer like [`AlignedBuf::new`], for large reads whose bytes are kept (a
    /// replay): from 2 MiB on it is fresh anonymous memory mapped at a 2 MiB boundary with
    /// transparent huge pages asked for, so that filling it takes one page fault per 2 MiB
    /// rather than one per 4 KiB, and is not zeroed twice (the kernel hands out zeroed pages;
    /// page faults, not copying, bound replay from a fast device).
    pub fn for_bulk_reads(len: usize) -> AlignedBuf {
        let len = len.max(1).div_ceil(BLOCK) * BLOCK;
        if len < HUGE_PAGE {
            return AlignedBuf::new(len);
        }
        let span = len + HUGE_PAGE;
        // SAFETY: an anonymous private mapping at an address of the kernel's choosing; it
        // aliases nothing.
        let raw = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                span,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if raw == libc::MAP_FAILED {
            return AlignedBuf::new(len);
        }
        let base = raw as usize;
        let aligned = base.div_ceil(HUGE_PAGE) * HUGE_PAGE;
        // SAFETY: the head before the aligned start and the tail after `len` bytes from it lie
        // inside the mapping made above and are never used; unmapping them and advising on the
        // rest only concern that mapping. The advice is a hint: its failure (a kernel without
        // transparent huge pages) changes nothing but speed.
        unsafe {
            if aligned > base {
                libc::munmap(raw, aligned - base);
            }
            let tail = base + span - (aligned + len);
            if tail > 0 {
                libc::munmap((aligned + len) as *mut libc::c_void, tail);
            }
            libc::madvise(aligned as *mut libc::c_void, len, libc::MADV_HUGEPAGE);
        }
        let Some(ptr) = NonNull::new(aligned as *mut u8) else {
            return AlignedBuf::new(len);
        };
        AlignedBuf {
            ptr,
            len,
            align: HUGE_PAGE,
        }
    }
}

impl Deref for AlignedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: `ptr` points to `len` initialized bytes owned by self.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl AsRef<[u8]> for AlignedBuf {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above, and `&mut self` makes the access unique.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        if self.align == HUGE_PAGE {
            // SAFETY: mapped in `for_bulk_reads`, exactly `len` bytes from `ptr`.
            unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
            return;
        }
        let layout = Layout::from_size_align(self.len, self.align).expect("aligned layout");
        // SAFETY: allocated in `new` with this same layout.
        unsafe { alloc::dealloc(self.ptr.as_ptr(), layout) };
    }
}

impl fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AlignedBuf({} bytes)", self.len)
    }
}

/// A pool of equal-sized aligned buffers, so that writes reuse memory instead of allocating.
#[derive(Debug)]
pub struct BufferPool {
    size: usize,
    free: Mutex<Vec<AlignedBuf>>,
}

impl BufferPool {
    /// A pool of buffers of `size` bytes (rounded up to a block).
    pub fn new(size: usize) -> BufferPool {
        BufferPool {
            size: size.div_ceil(BLOCK) * BLOCK,
            free: Mutex::new(Vec::new()),
        }
    }

    /// A buffer from the pool, or a new one when the pool is empty. Its contents are whatever
    /// the last user left.
    pub fn take(&self) -> AlignedBuf {
        self.free
            .lock()
            .pop()
            .unwrap_or_else(|| AlignedBuf::new(self.size))
    }

    /// Returns a buffer to the pool.
    pub fn put(&self, buf: AlignedBuf) {
        if buf.len() == self.size {
            self.free.lock().push(buf);
        }
    }
}

/// An in-memory device for tests that can crash in the middle of a write.
///
/// Writes are durable at once. [`MemDevice::crash_at_write`] arms a crash: that write persists
/// only a prefix of the given number of bytes (a multiple of [`SECTOR`]) and fails, and every
/// later call fails too, as if the machine had stopped. [`MemDevice::reboot`] returns a new
/// device holding what was persisted.
#[derive(Clone, Debug)]
pub struct MemDevice {
    inner: Arc<Mutex<MemInner>>,
}

#[derive(Debug)]
struct MemInner {
    data: Vec<u8>,
    writes: u64,
    crash: Option<(u64, usize)>,
    crashed: bool,
}

impl MemDevice {
    /// A zeroed device of `len` bytes.
    pub fn new(len: usize) -> MemDevice {
        MemDevice {
            inner: Arc::new(Mutex::new(MemInner {
                data: vec![0; len],
                writes: 0,
                crash: None,
                crashed: false,
            })),
        }
    }

    /// The number of writes made so far.
    pub fn writes(&self) -> u64 {
        self.inner.lock().writes
    }

    /// Makes write number `write` (counting from 0 over the device's life) persist only its
    /// first `keep` bytes, rounded down to a sector, and crash the device.
    pub fn crash_at_write(&self, write: u64, keep: usize) {
        self.inner.lock().crash = Some((write, keep / SECTOR * SECTOR));
    }

    /// Crashes the device now: every later call fails.
    pub fn crash(&self) {
        self.inner.lock().crashed = true;
    }

    /// A fresh device holding the persisted bytes, as after a restart.
    pub fn reboot(&self) -> MemDevice {
        let data = self.inner.lock().data.clone();
        MemDevice {
            inner: Arc::new(Mutex::new(MemInner {
                data,
                writes: 0,
                crash: None,
                crashed: false,
            })),
        }
    }

    /// A copy of the device's bytes.
    pub fn snapshot(&self) -> Vec<u8> {
        self.inner.lock().data.clone()
    }

    /// Overwrites bytes directly, bypassing every check (to plant corruption).
    pub fn poke(&self, offset: usize, bytes: &[u8]) {
        self.inner.lock().data[offset..offset + bytes.len()].copy_from_slice(bytes);
    }
}

fn crashed() -> io::Error {
    io::Error::other("device crashed")
}

impl BlockDevice for MemDevice {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        check_aligned(buf, offset)?;
        let inner = self.inner.lock();
        if inner.crashed {
            return Err(crashed());
        }
        let start = offset as usize;
        let src = inner
            .data
            .get(start..start + buf.len())
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        buf.copy_from_slice(src);
        Ok(())
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        check_aligned(buf, offset)?;
        let mut inner = self.inner.lock();
        if inner.crashed {
            return Err(crashed());
        }
        let start = offset as usize;
        if start + buf.len() > inner.data.len() {
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
        }
        let n = inner.writes;
        inner.writes += 1;
        if let Some((at, keep)) = inner.crash {
            if at == n {
                let keep = keep.min(buf.len());
                inner.data[start..start + keep].copy_from_slice(&buf[..keep]);
                inner.crashed = true;
                return Err(crashed());
            }
        }
        inner.data[start..start + buf.len()].copy_from_slice(buf);
        Ok(())
    }

    fn sync(&self) -> io::Result<()> {
        if self.inner.lock().crashed {
            return Err(crashed());
        }
        Ok(())
    }

    fn len(&self) -> u64 {
        self.inner.lock().data.len() as u64
    }

    fn name(&self) -> String {
        "memory device".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_buffers_are_block_aligned_and_zeroed() {
        let buf = AlignedBuf::new(5000);
        assert_eq!(buf.len(), 2 * BLOCK);
        assert_eq!(buf.as_ptr() as usize % BLOCK, 0);
        assert!(buf.iter().all(|&b| b == 0));
    }

    #[test]
    fn bulk_read_buffers_are_zeroed_and_huge_page_aligned() {
        let buf = AlignedBuf::for_bulk_reads(5 << 20);
        assert_eq!(buf.len(), 5 << 20);
        assert_eq!(buf.as_ptr() as usize % HUGE_PAGE, 0);
        assert!(buf.iter().all(|&b| b == 0));
        assert_eq!(AlignedBuf::for_bulk_reads(100).len(), BLOCK);
    }

    #[test]
    fn the_pool_hands_back_a_returned_buffer() {
        let pool = BufferPool::new(BLOCK);
        let buf = pool.take();
        let addr = buf.as_ptr();
        pool.put(buf);
        assert_eq!(pool.take().as_ptr(), addr);
    }

    #[test]
    fn a_crashing_write_keeps_a_sector_prefix_and_then_everything_fails() {
        let dev = MemDevice::new(4 * BLOCK);
        let mut buf = AlignedBuf::new(2 * BLOCK);
        buf.fill(7);
        dev.crash_at_write(0, 1000);
        assert!(dev.write_at(&buf, 0).is_err());
        assert!(dev.sync().is_err());
        let after = dev.reboot().snapshot();
        assert!(after[..512].iter().all(|&b| b == 7));
        assert!(after[512..].iter().all(|&b| b == 0));
    }

    #[test]
    fn misaligned_io_is_refused() {
        let dev = MemDevice::new(4 * BLOCK);
        let buf = AlignedBuf::new(BLOCK);
        assert!(dev.write_at(&buf, 512).is_err());
        assert!(dev.write_at(&buf[..512], 0).is_err());
    }
}
