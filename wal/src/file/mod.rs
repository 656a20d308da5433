//! The file WAL: a directory of preallocated segment files on a local disk.
//!
//! # Roles
//!
//! - [`FileWal`] (this module) takes calls. `append` fixes a record's position under the queue
//!   lock, pushes it to the queue and returns a future on a oneshot channel.
//! - The writer threads (module `writer`) are the group commit: one at a time takes every append
//!   queued at that moment, encodes their frames into one reused buffer and writes it with one
//!   `pwrite`; then, outside the lock, it makes them durable with one `fdatasync` and resolves
//!   the futures in order, while the next writer takes the appends that arrived meanwhile. No
//!   writer sleeps or lingers to grow a batch.
//! - The housekeeper thread (module `housekeeper`) zero-fills the next segment in advance, so
//!   that a rollover costs a rename and a directory sync, and deletes trimmed segments.
//! - Recovery (module `recovery`) runs in [`FileWal::open`]: it validates every frame, cuts a torn
//!   tail and reports corruption anywhere else.
//!
//! # Invariants
//!
//! 1. Positions are contiguous: a record's frame starts where the previous one ends, and a
//!    segment starts where the previous segment's data ends.
//! 2. A writer syncs everything written before it rolls over to a new segment, so a sealed
//!    segment is fully durable. A frame's batch delta points back to the durable point when it
//!    was written, so a valid frame whose batch starts beyond a bad frame proves that the bad
//!    frame had been synced.
//! 3. A segment file appears under its name only complete (zero-filled, or allocated when no
//!    zero-filled spare was ready, and synced with its metadata), and the
//!    directory is synced before any frame is written into it and after segments are deleted.
//! 4. An append resolves once a sync that started after its frame was written returns. After a
//!    failed write, sync or directory sync, every unresolved and later call fails with
//!    [`WalErrorKind::Failed`]; the WAL never retries past a failed sync.
//! 5. The active segment (the last one) is never deleted.
//!
//! # Metrics
//!
//! The WAL reports through [`crate::metrics::WalMetrics`] labelled `wal = file`: each group
//! commit's bytes and records and its `fdatasync` time, the syncs in flight (up to the number of
//! writer threads), the bytes of live segment files (whole segments: that is what the disk
//! holds), and the bytes and time of recovery at open. It reports no capacity: it grows as far
//! as the disk lets it. The handles are built once, in [`FileWal::open`] (or by the caller of
//! [`FileWal::open_with_metrics`]); the writers update them without allocating or taking a
//! lock.
//!
//! The directory holds a `LOCK` file, locked (`flock`) while a `FileWal` has it open, so that two
//! processes never write one WAL.

mod housekeeper;
mod recovery;
mod segment;
mod writer;

use std::collections::VecDeque;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use bytes::Bytes;
use parking_lot::{Condvar, Mutex};
use tokio::sync::oneshot;

use crate::frame;
use crate::metrics::WalMetrics;
use crate::{Wal, WalError, WalErrorKind, WalFuture, WalPosition, WalRecord, WalResult};
use housekeeper::Chores;
use segment::SegmentFile;
use writer::{Durability, Log, Pending, Queue};

/// Tunables of a [`FileWal`].
///
/// Small segments give trimmed space back sooner; a record larger than the limit is refused
/// before anything is written:
///
/// ```
/// use bytes::Bytes;
/// use objstream_wal::{FileWal, FileWalOptions, Wal, WalErrorKind};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let dir = tempfile::tempdir().unwrap();
/// let options = FileWalOptions {
///     segment_bytes: 64 << 10,
///     max_record_bytes: 16 << 10,
/// };
/// let wal = FileWal::open(dir.path(), options).unwrap();
/// assert_eq!(wal.max_record_size(), 16 << 10);
/// let err = wal.append(Bytes::from(vec![0; 32 << 10])).await.unwrap_err();
/// assert_eq!(err.kind(), WalErrorKind::InvalidInput);
///
/// // Eight records of 16 KiB fill more than two segments; trimming past them deletes the
/// // segments that hold nothing at or above the trim point.
/// let mut last = None;
/// for _ in 0..8 {
///     last = Some(wal.append(Bytes::from(vec![1; 16 << 10])).await.unwrap());
/// }
/// // Segments are `{first position:020}.wal`; zero-filled spares wait beside them as `spare-*`.
/// let segments = || {
///     let names = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name());
///     names
///         .filter(|n| n.to_string_lossy().ends_with(".wal"))
///         .filter(|n| !n.to_string_lossy().starts_with("spare-"))
///         .count()
/// };
/// assert_eq!(segments(), 3);
/// wal.trim(last.unwrap()).await.unwrap();
/// assert_eq!(segments(), 1);
/// # });
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileWalOptions {
    /// Size of each segment file. Default 64 MiB; rounded down to a multiple of 8; at least
    /// 4 KiB and below 4 GiB. Larger segments mean fewer rollovers; trimmed space is reclaimed a
    /// whole segment at a time, and every segment costs its full size on disk from the start.
    pub segment_bytes: u64,
    /// The largest record `append` accepts. Default 16 MiB. The WAL also caps it so that one
    /// record's frame fits in a segment.
    pub max_record_bytes: usize,
}

impl Default for FileWalOptions {
    fn default() -> Self {
        FileWalOptions {
            segment_bytes: 64 << 20,
            max_record_bytes: 16 << 20,
        }
    }
}

const MIN_SEGMENT_BYTES: u64 = 4096;
/// Segments stay below 4 GiB so that a batch's delta always fits the frame's u32.
const MAX_SEGMENT_BYTES: u64 = u32::MAX as u64 & !(frame::ALIGN as u64 - 1);

/// A write-ahead log in a directory of preallocated segment files, with group commit.
///
/// Survives crashes and restarts of the process on the same machine; another node can take it
/// over only with the disk. See the [module docs](self) for the design.
///
/// ```
/// use bytes::Bytes;
/// use objstream_wal::{FileWal, FileWalOptions, Wal};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let dir = tempfile::tempdir().unwrap();
/// let options = FileWalOptions { segment_bytes: 1 << 20, ..FileWalOptions::default() };
/// let wal = FileWal::open(dir.path(), options.clone()).unwrap();
/// let first = wal.append(Bytes::from_static(b"hello")).await.unwrap();
/// let second = wal.append(Bytes::from_static(b"world")).await.unwrap();
/// assert!(first < second);
/// drop(wal);
///
/// let wal = FileWal::open(dir.path(), options).unwrap();
/// let records = wal.replay().await.unwrap();
/// let payloads: Vec<_> = records.iter().map(|r| &r.payload[..]).collect();
/// assert_eq!(payloads, [&b"hello"[..], &b"world"[..]]);
/// assert_eq!(records[1].position, second);
/// # });
/// ```
pub struct FileWal {
    shared: Arc<Shared>,
    max_record: usize,
    writers: Vec<JoinHandle<()>>,
    housekeeper: Option<JoinHandle<()>>,
    /// Holds the directory's `flock` until the WAL is dropped.
    _lock: File,
}

/// State shared by the caller-facing handle and the threads.
struct Shared {
    dir: PathBuf,
    /// An open handle on the directory, to sync it.
    dir_handle: File,
    /// Size of new segments.
    segment_bytes: u64,
    queue: Mutex<Queue>,
    /// Wakes the writer waiting for appends.
    queue_ready: Condvar,
    /// The active segment; held by the writer taking and writing a batch.
    log: Mutex<Log>,
    /// Written appends waiting to be durable.
    durability: Mutex<Durability>,
    /// Everything before this position is durable.
    durable: AtomicU64,
    chores: Mutex<Chores>,
    /// Wakes the housekeeper and a writer waiting for a spare.
    chores_changed: Condvar,
    /// Live segments, oldest first; the last is the active one.
    segments: Mutex<VecDeque<SegmentFile>>,
    /// The records found at open that are not trimmed yet.
    replay: Mutex<Vec<WalRecord>>,
    trim_point: AtomicU64,
    /// The handles this WAL reports through.
    metrics: WalMetrics,
    #[cfg(test)]
    failpoints: FailPoints,
}

impl Shared {
    /// Latches `err`: fails every unresolved append now and every call from now on. The first
    /// error latched is the one reported.
    fn latch(&self, err: WalError) {
        let (pending, reported) = {
            let mut q = self.queue.lock();
            if q.failed.is_none() {
                tracing::error!(dir = %self.dir.display(), error = %err, "file WAL failed");
            }
            let reported = q.failed.get_or_insert(err).clone();
            (std::mem::take(&mut q.pending), reported)
        };
        let waiting = self.durability.lock().fail();
        self.queue_ready.notify_all();
        self.chores_changed.notify_all();
        let queued = pending.into_iter().filter_map(|p| p.done);
        for done in waiting.into_iter().chain(queued) {
            let _ = done.send(Err(reported.clone()));
        }
    }

    /// The latched error, if any.
    fn failure(&self) -> Option<WalError> {
        self.queue.lock().failed.clone()
    }

    /// Reports the bytes of the live segments, `count` of them.
    fn report_segments(&self, count: usize) {
        self.metrics.used(count as u64 * self.segment_bytes);
    }

    fn sync_dir(&self) -> WalResult<()> {
        segment::sync_dir(&self.dir_handle)
            .map_err(|e| WalError::failed(format!("sync of directory {}", self.dir.display()), e))
    }
}

fn err_stopped() -> WalError {
    WalError::new(WalErrorKind::Failed, "the file WAL writers stopped")
}

/// Test-only switches that make the next write or sync fail.
#[cfg(test)]
#[derive(Debug, Default)]
pub(crate) struct FailPoints {
    /// When non-zero, the write this many writes from now fails.
    pub writes: AtomicU64,
    /// When non-zero, the sync this many syncs from now fails.
    pub syncs: AtomicU64,
    /// While set, the housekeeper prepares no spare.
    pub stall_spares: std::sync::atomic::AtomicBool,
}

#[cfg(test)]
impl FailPoints {
    /// Counts one operation on `counter`; true if it is the one to fail.
    fn hit(counter: &AtomicU64) -> bool {
        counter
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |c| c.checked_sub(1))
            .is_ok_and(|before| before == 1)
    }
}

impl FileWal {
    /// Opens the WAL in `dir`, creating the directory and the first segment if needed, and
    /// recovers what is there: a torn tail is cut, and corruption anywhere else fails the open
    /// with [`WalErrorKind::Corruption`] naming the file and byte offset.
    ///
    /// Its metric handles register with the recorder current on the calling thread.
    pub fn open(dir: impl AsRef<Path>, options: FileWalOptions) -> WalResult<FileWal> {
        Self::open_with_metrics(dir, options, Self::new_metrics())
    }

    /// The handles a file WAL reports through (`wal = file`; no capacity series), registered
    /// with the recorder current on the calling thread. For a caller that opens the WAL on
    /// another thread (a blocking task) but wants the numbers in its own thread's recorder.
    pub fn new_metrics() -> WalMetrics {
        // A file WAL grows as far as the disk lets it: no capacity to report.
        WalMetrics::with_gauges("file", true, false)
    }

    /// [`FileWal::open`], reporting through `metrics` (see [`FileWal::new_metrics`]).
    pub fn open_with_metrics(
        dir: impl AsRef<Path>,
        options: FileWalOptions,
        metrics: WalMetrics,
    ) -> WalResult<FileWal> {
        let dir = dir.as_ref().to_path_buf();
        let segment_bytes = options.segment_bytes & !(frame::ALIGN as u64 - 1);
        if !(MIN_SEGMENT_BYTES..=MAX_SEGMENT_BYTES).contains(&segment_bytes) {
            return Err(WalError::new(
                WalErrorKind::InvalidInput,
                format!(
                    "segment_bytes {} is outside {MIN_SEGMENT_BYTES}..={MAX_SEGMENT_BYTES}",
                    options.segment_bytes
                ),
            ));
        }
        let max_record = options
            .max_record_bytes
            .min(segment_bytes as usize - frame::HEADER_LEN)
            .min(frame::MAX_BODY_LEN);
        let io_err = |what: &str, e: std::io::Error| {
            WalError::failed(format!("{what} in {}", dir.display()), e)
        };
        fs::create_dir_all(&dir).map_err(|e| io_err("create directory", e))?;
        let lock = lock_dir(&dir)?;
        let dir_handle = File::open(&dir).map_err(|e| io_err("open directory", e))?;

        let started = Instant::now();
        let recovered = recovery::recover(&dir, segment_bytes)?;
        let replayed: usize = recovered.records.iter().map(|r| r.payload.len()).sum();
        metrics.replayed(replayed as u64, started.elapsed());
        let mut next_spare = recovered.next_spare;
        let (segments, active, next_position, active_capacity) = match recovered.active {
            Some(active) => (
                recovered.segments,
                active.file,
                active.next_position,
                active.capacity,
            ),
            None => {
                let path = dir.join(segment::segment_name(0));
                let partial = segment::partial_spare_path(&dir, next_spare);
                let (file, _) = segment::ZeroFill::create(partial, segment_bytes)
                    .and_then(|fill| fill.run(path.clone()))
                    .map_err(|e| io_err("create the first segment", e))?;
                next_spare += 1;
                segment::sync_dir(&dir_handle).map_err(|e| io_err("sync", e))?;
                (vec![SegmentFile { base: 0, path }], file, 0, segment_bytes)
            }
        };
        let active_base = segments.last().map_or(0, |s| s.base);
        let live_segments = segments.len();
        let active_path = dir.join(segment::segment_name(active_base));
        let log = Log::open(active, active_path, active_base, next_position)?;

        let shared = Arc::new(Shared {
            dir: dir.clone(),
            dir_handle,
            segment_bytes,
            queue: Mutex::new(Queue::new(
                next_position,
                active_base + active_capacity,
                segment_bytes,
            )),
            queue_ready: Condvar::new(),
            log: Mutex::new(log),
            durability: Mutex::new(Durability::new()),
            durable: AtomicU64::new(next_position),
            chores: Mutex::new(Chores::new(recovered.spare, next_spare)),
            chores_changed: Condvar::new(),
            segments: Mutex::new(segments.into()),
            replay: Mutex::new(recovered.records),
            trim_point: AtomicU64::new(0),
            metrics,
            #[cfg(test)]
            failpoints: FailPoints::default(),
        });
        shared.report_segments(live_segments);
        let mut wal = FileWal {
            shared: Arc::clone(&shared),
            max_record,
            writers: Vec::new(),
            housekeeper: None,
            _lock: lock,
        };
        // From here on, dropping `wal` stops whatever threads were started.
        let housekeeper = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("objstream-wal-segments".into())
                .spawn(move || housekeeper::run(&shared))
                .map_err(|e| io_err("start the segment thread", e))?
        };
        wal.housekeeper = Some(housekeeper);
        for index in 0..writer::WRITERS {
            let writer = writer::Writer::new(Arc::clone(&shared), index);
            let handle = std::thread::Builder::new()
                .name(format!("objstream-wal-writer-{index}"))
                .spawn(move || writer.run())
                .map_err(|e| io_err("start a writer thread", e))?;
            wal.writers.push(handle);
        }
        Ok(wal)
    }

    /// The directory this WAL lives in.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// The position the next appended record will get.
    pub fn next_position(&self) -> WalPosition {
        WalPosition(self.shared.queue.lock().next_position)
    }

    #[cfg(test)]
    pub(crate) fn failpoints(&self) -> &FailPoints {
        &self.shared.failpoints
    }

    #[cfg(test)]
    pub(crate) fn wait_for_spare(&self) {
        housekeeper::wait_for_spare(&self.shared);
    }
}

impl Wal for FileWal {
    fn append(&self, record: Bytes) -> WalFuture<WalPosition> {
        if record.len() > self.max_record {
            let err = WalError::new(
                WalErrorKind::InvalidInput,
                format!(
                    "record of {} bytes is larger than the limit of {} bytes",
                    record.len(),
                    self.max_record
                ),
            );
            return Box::pin(std::future::ready(Err(err)));
        }
        let (done, rx) = oneshot::channel();
        {
            let mut q = self.shared.queue.lock();
            if let Some(err) = &q.failed {
                return Box::pin(std::future::ready(Err(err.clone())));
            }
            let (position, opens_segment) = q.assign(frame::frame_len(record.len()) as u64);
            q.pending.push(Pending {
                position,
                record,
                opens_segment,
                done: Some(done),
            });
        }
        self.shared.queue_ready.notify_one();
        Box::pin(async move { rx.await.unwrap_or_else(|_| Err(err_stopped())) })
    }

    fn trim(&self, before: WalPosition) -> WalFuture<()> {
        let next = {
            let q = self.shared.queue.lock();
            if let Some(err) = &q.failed {
                return Box::pin(std::future::ready(Err(err.clone())));
            }
            q.next_position
        };
        if before.0 > next {
            let err = WalError::new(
                WalErrorKind::InvalidInput,
                format!("trim to {before} is past the end of the log at {next}"),
            );
            return Box::pin(std::future::ready(Err(err)));
        }
        self.shared.trim_point.fetch_max(before.0, Ordering::SeqCst);
        {
            let mut replay = self.shared.replay.lock();
            let kept = replay.partition_point(|r| r.position < before);
            replay.drain(..kept);
        }
        let doomed: Vec<PathBuf> = {
            let mut segments = self.shared.segments.lock();
            let mut doomed = Vec::new();
            while segments.len() > 1 && segments[1].base <= before.0 {
                if let Some(s) = segments.pop_front() {
                    doomed.push(s.path);
                }
            }
            if !doomed.is_empty() {
                self.shared.report_segments(segments.len());
            }
            doomed
        };
        if doomed.is_empty() {
            return Box::pin(std::future::ready(Ok(())));
        }
        let rx = housekeeper::delete(&self.shared, doomed);
        Box::pin(async move { rx.await.unwrap_or_else(|_| Err(err_stopped())) })
    }

    fn replay(&self) -> WalFuture<Vec<WalRecord>> {
        let result = match self.shared.failure() {
            Some(err) => Err(err),
            None => {
                let trim = self.shared.trim_point.load(Ordering::SeqCst);
                let replay = self.shared.replay.lock();
                let from = replay.partition_point(|r| r.position.0 < trim);
                Ok(replay[from..].to_vec())
            }
        };
        Box::pin(std::future::ready(result))
    }

    fn max_record_size(&self) -> usize {
        self.max_record
    }
}

impl fmt::Debug for FileWal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileWal")
            .field("dir", &self.shared.dir)
            .field("segment_bytes", &self.shared.segment_bytes)
            .field("max_record", &self.max_record)
            .finish_non_exhaustive()
    }
}

impl Drop for FileWal {
    /// Writes and syncs what is queued, then stops the threads and waits for them (so it blocks
    /// for about one sync).
    fn drop(&mut self) {
        self.shared.queue.lock().closing = true;
        self.shared.queue_ready.notify_all();
        for writer in self.writers.drain(..) {
            let _ = writer.join();
        }
        housekeeper::stop(&self.shared);
        if let Some(housekeeper) = self.housekeeper.take() {
            let _ = housekeeper.join();
        }
    }
}

/// Takes the directory's `flock`, failing if another open WAL holds it.
fn lock_dir(dir: &Path) -> WalResult<File> {
    let path = dir.join("LOCK");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| WalError::failed(format!("open {}", path.display()), e))?;
    // SAFETY: flock only reads the descriptor, which `file` keeps open for the call.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        return Err(WalError::new(
            WalErrorKind::Failed,
            format!("{} is in use by another WAL: {err}", dir.display()),
        ));
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> FileWalOptions {
        FileWalOptions {
            segment_bytes: 64 << 10,
            max_record_bytes: 16 << 10,
        }
    }

    fn record(i: usize) -> Bytes {
        Bytes::from(format!("record {i}"))
    }

    #[tokio::test]
    async fn a_failed_sync_fails_its_batch_and_every_later_call() {
        let dir = tempfile::tempdir().unwrap();
        let wal = FileWal::open(dir.path(), options()).unwrap();
        wal.append(record(0)).await.unwrap();
        wal.failpoints().syncs.store(1, Ordering::SeqCst);
        let err = wal.append(record(1)).await.unwrap_err();
        assert_eq!(err.kind(), WalErrorKind::Failed);
        assert!(err.to_string().contains("injected sync failure"), "{err}");
        // Never retried: later calls fail with the same error, even though syncs work again.
        let later = wal.append(record(2)).await.unwrap_err();
        assert_eq!(later.kind(), WalErrorKind::Failed);
        assert_eq!(later.to_string(), err.to_string());
        assert_eq!(
            wal.trim(WalPosition(0)).await.unwrap_err().kind(),
            WalErrorKind::Failed
        );
        assert_eq!(wal.replay().await.unwrap_err().kind(), WalErrorKind::Failed);
    }

    #[tokio::test]
    async fn a_failed_write_fails_every_append_queued_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let wal = FileWal::open(dir.path(), options()).unwrap();
        wal.failpoints().writes.store(1, Ordering::SeqCst);
        let futures: Vec<_> = (0..50).map(|i| wal.append(record(i))).collect();
        let results = futures::future::join_all(futures).await;
        assert!(results
            .iter()
            .all(|r| r.as_ref().is_err_and(|e| e.kind() == WalErrorKind::Failed)));
        assert!(wal.append(record(99)).await.is_err());
    }

    #[tokio::test]
    async fn reopening_after_a_failure_keeps_what_was_durable() {
        let dir = tempfile::tempdir().unwrap();
        let wal = FileWal::open(dir.path(), options()).unwrap();
        for i in 0..3 {
            wal.append(record(i)).await.unwrap();
        }
        wal.failpoints().syncs.store(1, Ordering::SeqCst);
        wal.append(record(3)).await.unwrap_err();
        drop(wal);
        let wal = FileWal::open(dir.path(), options()).unwrap();
        let replayed = wal.replay().await.unwrap();
        // The failed record reached the page cache, so it may or may not come back; the durable
        // ones must.
        let payloads: Vec<_> = replayed.iter().map(|r| r.payload.clone()).collect();
        assert_eq!(payloads[..3], [record(0), record(1), record(2)]);
        wal.append(record(4)).await.unwrap();
    }

    #[tokio::test]
    async fn a_failed_sync_in_a_new_segment_fails_every_record_after_the_last_durable_one() {
        let dir = tempfile::tempdir().unwrap();
        let wal = FileWal::open(dir.path(), options()).unwrap();
        let big = Bytes::from(vec![7u8; 16 << 10]);
        for _ in 0..3 {
            wal.append(big.clone()).await.unwrap();
        }
        // The fourth record opens the second segment. Its sync or the fifth's fails, and the
        // outcomes stay in order: some successes (if a sync covered them before the failure
        // latched), then only failures.
        wal.failpoints().syncs.store(1, Ordering::SeqCst);
        let (fourth, fifth) = futures::join!(wal.append(big.clone()), wal.append(big.clone()));
        assert!(fourth.is_err() || fifth.is_err());
        assert!(!(fourth.is_err() && fifth.is_ok()), "resolved out of order");
        let later = wal.append(big.clone()).await.unwrap_err();
        assert_eq!(later.kind(), WalErrorKind::Failed);
        let durable = 3 + usize::from(fourth.is_ok());
        drop(wal);

        let wal = FileWal::open(dir.path(), options()).unwrap();
        let replayed = wal.replay().await.unwrap();
        assert!(replayed.len() >= durable);
        assert_eq!(segment::list(dir.path()).unwrap().segments.len(), 2);
    }

    #[tokio::test]
    async fn a_rollover_with_no_spare_ready_preallocates_a_segment_instead_of_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let wal = FileWal::open(dir.path(), options()).unwrap();
        wal.wait_for_spare();
        wal.failpoints().stall_spares.store(true, Ordering::SeqCst);
        let big = Bytes::from(vec![3u8; 16 << 10]);
        // Three records of 16 KiB fit in a segment of 64 KiB, so ten take four segments: the
        // first rollover takes the ready spare, the next two find none.
        for _ in 0..10 {
            wal.append(big.clone()).await.unwrap();
        }
        let listing = segment::list(dir.path()).unwrap();
        assert_eq!(listing.segments.len(), 4);
        for s in &listing.segments {
            assert_eq!(fs::metadata(&s.path).unwrap().len(), 64 << 10);
        }
        drop(wal);
        let wal = FileWal::open(dir.path(), options()).unwrap();
        let replayed = wal.replay().await.unwrap();
        assert_eq!(replayed.len(), 10);
        assert!(replayed.iter().all(|r| r.payload == big));
    }

    #[test]
    fn a_second_open_of_the_same_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _wal = FileWal::open(dir.path(), options()).unwrap();
        let err = FileWal::open(dir.path(), options()).unwrap_err();
        assert!(err.to_string().contains("in use"), "{err}");
    }

    #[test]
    fn segment_sizes_out_of_range_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        for segment_bytes in [0, 4095, 1 << 33] {
            let options = FileWalOptions {
                segment_bytes,
                ..options()
            };
            let err = FileWal::open(dir.path(), options).unwrap_err();
            assert_eq!(err.kind(), WalErrorKind::InvalidInput);
        }
    }

    #[test]
    fn the_record_limit_leaves_room_for_the_frame_header() {
        let dir = tempfile::tempdir().unwrap();
        let options = FileWalOptions {
            segment_bytes: 4096,
            max_record_bytes: 1 << 20,
        };
        let wal = FileWal::open(dir.path(), options).unwrap();
        assert_eq!(wal.max_record_size(), 4096 - frame::HEADER_LEN);
    }

    #[tokio::test]
    async fn a_trim_past_the_end_is_invalid_input() {
        let dir = tempfile::tempdir().unwrap();
        let wal = FileWal::open(dir.path(), options()).unwrap();
        let end = wal.next_position();
        let err = wal.trim(WalPosition(end.0 + 8)).await.unwrap_err();
        assert_eq!(err.kind(), WalErrorKind::InvalidInput);
        wal.trim(end).await.unwrap();
    }

    #[tokio::test]
    async fn a_complete_spare_outlives_the_wal_and_is_adopted_by_the_next_open() {
        let dir = tempfile::tempdir().unwrap();
        let wal = FileWal::open(dir.path(), options()).unwrap();
        wal.append(record(0)).await.unwrap();
        wal.wait_for_spare();
        drop(wal);
        let listing = segment::list(dir.path()).unwrap();
        assert_eq!(listing.segments.len(), 1);
        assert!(listing.partial.is_empty(), "{listing:?}");
        let spare = match &listing.spares[..] {
            [(_, spare)] => spare.clone(),
            other => panic!("expected one spare, found {other:?}"),
        };

        // The next open takes it for its first rollover instead of writing a new one.
        let wal = FileWal::open(dir.path(), options()).unwrap();
        let big = Bytes::from(vec![1u8; 16 << 10]);
        for _ in 0..4 {
            wal.append(big.clone()).await.unwrap();
        }
        assert!(!spare.exists());
        let listing = segment::list(dir.path()).unwrap();
        assert_eq!(listing.segments.len(), 2);
    }

    #[test]
    fn a_spare_of_another_size_is_deleted_at_open() {
        let dir = tempfile::tempdir().unwrap();
        FileWal::open(dir.path(), options())
            .unwrap()
            .wait_for_spare();
        let old = segment::list(dir.path()).unwrap().spares;
        assert_eq!(old.len(), 1);
        let bigger = FileWalOptions {
            segment_bytes: 128 << 10,
            ..options()
        };
        FileWal::open(dir.path(), bigger).unwrap().wait_for_spare();
        let listing = segment::list(dir.path()).unwrap();
        assert!(!old[0].1.exists());
        assert_eq!(listing.spares.len(), 1);
        assert_eq!(fs::metadata(&listing.spares[0].1).unwrap().len(), 128 << 10);
    }
}
