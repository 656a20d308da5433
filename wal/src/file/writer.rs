//! The append queue and the group-commit writers.
//!
//! # Flow
//!
//! `append` locks the [`Queue`], gives the record the next position (deciding there whether it
//! opens a new segment, so that positions never depend on timing), pushes it, and wakes a
//! writer. A small, fixed set of writer threads ([`WRITERS`]) commits the queue:
//!
//! 1. One writer at a time holds the [`Log`] lock. It waits for appends, swaps the whole queue
//!    for its own empty vector (every append queued at that moment joins one batch), encodes the
//!    frames into its reused buffer and writes them with one `pwrite` (a batch larger than
//!    [`WRITE_CHUNK`] takes several) at their place in the active segment. The appends move to
//!    the [`Durability`] queue, still in position order. It releases the lock.
//! 2. Outside the lock, the writer calls `fdatasync`. Meanwhile the next writer takes and writes
//!    the appends that arrived, and starts its own sync: up to [`WRITERS`] syncs overlap, which
//!    on disks whose sync latency is mostly waiting multiplies throughput.
//! 3. A sync that returns covers every byte written before it started, whoever wrote it. So the
//!    writer raises the durable point to the end it wrote and resolves, in position order, every
//!    waiting append below it.
//!
//! No timer ever delays a batch: appends that arrive while syncs run simply form the next batch.
//!
//! # Sync errors with overlapping syncs
//!
//! Linux reports a writeback error once per open file description. Every writer therefore has its
//! own handle on the active segment, all opened before anything is written into it: then any sync
//! that starts after a failed writeback, or waits for it, reports the error through its own
//! handle, and a sync that succeeds really does prove every earlier byte durable.
//!
//! # Rollover and batch deltas
//!
//! A record that opens a new segment makes its writer sync everything written so far (so sealed
//! segments are fully durable), rename the prepared spare (or a file it preallocates on the spot
//! when none is ready) to the new segment's name, sync the directory and open the writers'
//! handles on it, all under the log lock, before writing on.
//!
//! Each frame's `batch_delta` points back to the durable point when it was written (never below
//! the segment's start): every byte before that had been made durable by a completed sync. So a
//! valid frame whose batch starts beyond a bad frame proves the bad frame was durable once, which
//! is how recovery tells corruption from a torn tail.
//!
//! On any error a writer latches it (see [`Shared::latch`]), which fails every append not yet
//! resolved, and stops; the other writers stop when they next look at the queue.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::oneshot;

use super::segment::{self, SegmentFile};
use super::{housekeeper, Shared};
use crate::frame;
use crate::{WalError, WalErrorKind, WalPosition, WalResult};

/// Frames are written once this many bytes wait in a writer's buffer, and at the end of each
/// batch.
pub(super) const WRITE_CHUNK: usize = 4 << 20;

/// Writer threads, and so syncs that may overlap.
pub(super) const WRITERS: usize = 4;

/// One queued append.
pub(super) struct Pending {
    /// Its position, fixed when `append` was called.
    pub position: u64,
    /// The record.
    pub record: Bytes,
    /// Whether it is the first record of a new segment.
    pub opens_segment: bool,
    /// Resolves the append's future; taken once the append is written.
    pub done: Option<oneshot::Sender<WalResult<WalPosition>>>,
}

/// The appends waiting for a writer, and the position bookkeeping behind them.
pub(super) struct Queue {
    /// Appends not yet taken by a writer, in position order.
    pub pending: Vec<Pending>,
    /// The position the next append gets.
    pub next_position: u64,
    /// Where the segment that holds `next_position` ends.
    segment_end: u64,
    /// Size of new segments.
    segment_bytes: u64,
    /// The latched error: once set, every call fails with it.
    pub failed: Option<WalError>,
    /// Set when the WAL is dropped: the writers drain the queue and stop.
    pub closing: bool,
}

impl Queue {
    /// A queue whose next record goes at `next_position`, in a segment ending at
    /// `segment_end`; new segments hold `segment_bytes`.
    pub fn new(next_position: u64, segment_end: u64, segment_bytes: u64) -> Self {
        Queue {
            pending: Vec::new(),
            next_position,
            segment_end,
            segment_bytes,
            failed: None,
            closing: false,
        }
    }

    /// Gives a frame of `frame_len` bytes its position; true if it opens a new segment. The
    /// caller guarantees that `frame_len` fits in an empty segment.
    pub fn assign(&mut self, frame_len: u64) -> (u64, bool) {
        let position = self.next_position;
        let opens_segment = position + frame_len > self.segment_end;
        if opens_segment {
            self.segment_end = position + self.segment_bytes;
        }
        self.next_position = position + frame_len;
        (position, opens_segment)
    }
}

/// The active segment, held by the writer that is taking and writing a batch.
pub(super) struct Log {
    /// The position of the active segment's first frame.
    base: u64,
    path: PathBuf,
    /// One handle on the active segment per writer, all opened before anything was written
    /// into it.
    files: Vec<Arc<File>>,
    /// Everything before this position is written.
    written_end: u64,
}

impl Log {
    /// The log of the active segment at `base`, whose data ends at `written_end`; `file` is an
    /// open handle on it.
    pub fn open(file: File, path: PathBuf, base: u64, written_end: u64) -> WalResult<Self> {
        Ok(Log {
            files: writer_handles(file, &path)?,
            base,
            path,
            written_end,
        })
    }
}

/// `file` and more handles on `path`, one per writer.
fn writer_handles(file: File, path: &std::path::Path) -> WalResult<Vec<Arc<File>>> {
    let mut files = vec![Arc::new(file)];
    for _ in 1..WRITERS {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| WalError::failed(format!("open {}", path.display()), e))?;
        files.push(Arc::new(file));
    }
    Ok(files)
}

/// Appends that are written and wait to be durable.
pub(super) struct Durability {
    /// In position order: each append's position, end and future.
    waiting: VecDeque<(u64, u64, oneshot::Sender<WalResult<WalPosition>>)>,
    /// Once set by a latch, nothing is resolved as durable any more.
    failed: bool,
}

impl Durability {
    pub fn new() -> Self {
        Durability {
            waiting: VecDeque::new(),
            failed: false,
        }
    }

    /// Stops resolving anything and hands back the futures still waiting.
    pub fn fail(&mut self) -> Vec<oneshot::Sender<WalResult<WalPosition>>> {
        self.failed = true;
        self.waiting.drain(..).map(|(_, _, done)| done).collect()
    }
}

/// One writer thread's state.
pub(super) struct Writer {
    shared: Arc<Shared>,
    /// Which of the log's handles is this writer's.
    index: usize,
    /// Encoded frames not yet written; reused across batches.
    buf: Vec<u8>,
    /// The position of `buf[0]`.
    buf_position: u64,
    /// The batch being written; swapped with the queue's vector to reuse both.
    batch: Vec<Pending>,
    /// How many of `batch` are written (and moved to the durability queue).
    written: usize,
    /// Frame bytes written since this writer's last sync, for the group-commit metrics.
    unsynced_bytes: u64,
    /// Records written since this writer's last sync.
    unsynced_records: u64,
}

impl Writer {
    /// The writer using the log's handle number `index`.
    pub fn new(shared: Arc<Shared>, index: usize) -> Self {
        Writer {
            shared,
            index,
            buf: Vec::with_capacity(WRITE_CHUNK),
            buf_position: 0,
            batch: Vec::new(),
            written: 0,
            unsynced_bytes: 0,
            unsynced_records: 0,
        }
    }

    /// Commits batches until the WAL is dropped or fails.
    pub fn run(mut self) {
        let shared = Arc::clone(&self.shared);
        loop {
            let mut log = shared.log.lock();
            {
                let mut q = shared.queue.lock();
                while q.pending.is_empty() {
                    if q.closing || q.failed.is_some() {
                        return;
                    }
                    shared.queue_ready.wait(&mut q);
                }
                std::mem::swap(&mut q.pending, &mut self.batch);
            }
            self.written = 0;
            if let Err(err) = self.write_batch(&mut log) {
                // Latched before the log is released, so no other writer gets to write after
                // a failed write.
                self.fail(err);
                return;
            }
            let file = Arc::clone(&log.files[self.index]);
            let end = log.written_end;
            drop(log);
            if let Err(err) = self.sync(&file) {
                self.fail(err);
                return;
            }
            shared.resolve(end);
            self.batch.clear();
        }
    }

    /// Latches `err` and fails the appends of the batch not handed on yet.
    fn fail(&mut self, err: WalError) {
        self.shared.latch(err.clone());
        for p in &mut self.batch[self.written..] {
            if let Some(done) = p.done.take() {
                let _ = done.send(Err(err.clone()));
            }
        }
    }

    /// Writes `self.batch`, rolling over to new segments as its records ask.
    fn write_batch(&mut self, log: &mut Log) -> WalResult<()> {
        // Durable ≥ the active segment's base: a rollover syncs before it switches segments.
        let mut batch_start = self.shared.durable.load(Ordering::SeqCst).max(log.base);
        for i in 0..self.batch.len() {
            let (position, opens_segment) = (self.batch[i].position, self.batch[i].opens_segment);
            if opens_segment {
                self.write(log, i)?;
                if self.shared.durable.load(Ordering::SeqCst) < log.written_end {
                    self.sync(&log.files[self.index])?;
                    self.shared.resolve(log.written_end);
                }
                self.roll(log, position)?;
                batch_start = position;
            }
            if self.buf.is_empty() {
                self.buf_position = position;
            }
            let delta = u32::try_from(position - batch_start).map_err(|_| {
                WalError::new(
                    WalErrorKind::Failed,
                    format!("frame at {position} is too far from its batch start {batch_start}"),
                )
            })?;
            frame::encode(position, delta, &self.batch[i].record, &mut self.buf)
                .map_err(|e| WalError::failed(format!("encode frame at {position}"), e))?;
            if self.buf.len() >= WRITE_CHUNK {
                self.write(log, i + 1)?;
            }
        }
        self.write(log, self.batch.len())
    }

    /// Writes the buffer (the frames of `batch[self.written..upto]`) at its place in the active
    /// segment, and moves those appends to the durability queue.
    fn write(&mut self, log: &mut Log, upto: usize) -> WalResult<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let offset = self.buf_position - log.base;
        #[cfg(test)]
        if super::FailPoints::hit(&self.shared.failpoints.writes) {
            let err = std::io::Error::other("injected write failure");
            return Err(WalError::failed(
                format!("write of {}", log.path.display()),
                err,
            ));
        }
        log.files[self.index]
            .write_all_at(&self.buf, offset)
            .map_err(|e| WalError::failed(format!("write of {}", log.path.display()), e))?;
        log.written_end = self.buf_position + self.buf.len() as u64;
        self.buf_position = log.written_end;
        self.buf.clear();
        let mut durability = self.shared.durability.lock();
        if durability.failed {
            drop(durability);
            return Err(self.shared.failure().unwrap_or_else(super::err_stopped));
        }
        for p in &mut self.batch[self.written..upto] {
            let frame_len = frame::frame_len(p.record.len()) as u64;
            self.unsynced_bytes += frame_len;
            self.unsynced_records += 1;
            if let Some(done) = p.done.take() {
                durability
                    .waiting
                    .push_back((p.position, p.position + frame_len, done));
            }
        }
        self.written = upto;
        Ok(())
    }

    /// Makes everything written to `file` so far durable, and reports the sync as one group
    /// commit of the bytes and records this writer wrote since its last sync.
    fn sync(&mut self, file: &File) -> WalResult<()> {
        let metrics = &self.shared.metrics;
        metrics.write_started();
        let started = std::time::Instant::now();
        let synced = self.sync_data(file);
        let took = started.elapsed();
        metrics.write_finished();
        if synced.is_ok() {
            metrics.record_write(self.unsynced_bytes, self.unsynced_records, took);
            self.unsynced_bytes = 0;
            self.unsynced_records = 0;
        }
        synced
    }

    /// The `fdatasync` itself (or the injected failure of a test).
    fn sync_data(&self, file: &File) -> WalResult<()> {
        #[cfg(test)]
        if super::FailPoints::hit(&self.shared.failpoints.syncs) {
            let err = std::io::Error::other("injected sync failure");
            return Err(WalError::failed("fdatasync of the active segment", err));
        }
        file.sync_data()
            .map_err(|e| WalError::failed("fdatasync of the active segment", e))
    }

    /// Makes the segment that starts at `base` the active one.
    fn roll(&mut self, log: &mut Log, base: u64) -> WalResult<()> {
        let (file, spare) = match housekeeper::take_spare(&self.shared) {
            Some(spare) => spare,
            None => self.segment_now()?,
        };
        let path = self.shared.dir.join(segment::segment_name(base));
        fs::rename(&spare, &path).map_err(|e| {
            WalError::failed(
                format!("rename {} to {}", spare.display(), path.display()),
                e,
            )
        })?;
        self.shared.sync_dir()?;
        log.files = writer_handles(file, &path)?;
        tracing::debug!(segment = %path.display(), "file WAL rolled over");
        log.base = base;
        log.path = path.clone();
        let mut segments = self.shared.segments.lock();
        segments.push_back(SegmentFile { base, path });
        self.shared.report_segments(segments.len());
        Ok(())
    }

    /// A new segment file made on the spot, when no zero-filled spare is ready.
    fn segment_now(&self) -> WalResult<(File, PathBuf)> {
        let n = housekeeper::claim_spare_number(&self.shared);
        let path = segment::partial_spare_path(&self.shared.dir, n);
        let file = segment::preallocate(&path, self.shared.segment_bytes)
            .map_err(|e| WalError::failed(format!("preallocate {}", path.display()), e))?;
        tracing::debug!(file = %path.display(), "file WAL: no spare ready, preallocated one");
        Ok((file, path))
    }
}

impl Shared {
    /// Raises the durable point to `end` and resolves, in order, every append below it.
    fn resolve(&self, end: u64) {
        let mut durability = self.durability.lock();
        if durability.failed {
            return;
        }
        let durable = self.durable.fetch_max(end, Ordering::SeqCst).max(end);
        while let Some(&(position, until, _)) = durability.waiting.front() {
            if until > durable {
                break;
            }
            if let Some((_, _, done)) = durability.waiting.pop_front() {
                let _ = done.send(Ok(WalPosition(position)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_contiguous_within_a_segment() {
        let mut q = Queue::new(0, 1024, 1024);
        assert_eq!(q.assign(32), (0, false));
        assert_eq!(q.assign(64), (32, false));
        assert_eq!(q.next_position, 96);
    }

    #[test]
    fn a_frame_that_does_not_fit_opens_a_segment_at_its_own_position() {
        let mut q = Queue::new(1000, 1024, 4096);
        assert_eq!(q.assign(24), (1000, false));
        assert_eq!(q.assign(8), (1024, true));
        assert_eq!(q.assign(4000), (1032, false));
        assert_eq!(q.assign(88), (5032, false));
        assert_eq!(q.assign(8), (5120, true));
        assert_eq!(q.next_position, 5128);
    }

    #[test]
    fn a_frame_that_exactly_fills_a_segment_stays_in_it() {
        let mut q = Queue::new(0, 64, 64);
        assert_eq!(q.assign(64), (0, false));
        assert_eq!(q.assign(64), (64, true));
        assert_eq!(q.assign(8), (128, true));
    }
}
