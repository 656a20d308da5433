//! The append queue and the group-commit writer thread.
//!
//! # Flow
//!
//! `append` locks the [`Queue`], gives the record the next position (deciding there whether it
//! opens a new segment, so that positions never depend on timing), pushes it, and wakes the
//! writer. The writer swaps the whole queue for its own empty vector, so every append queued at
//! that moment joins one batch, then:
//!
//! 1. encodes the frames into one reused buffer (a batch larger than [`WRITE_CHUNK`] is written
//!    in several `pwrite`s, still before one sync);
//! 2. writes the buffer at the frames' place in the active segment and calls `fdatasync`;
//! 3. resolves the batch's futures in order.
//!
//! A record that opens a new segment ends the current write batch: the frames before it are
//! written and synced (and resolved), then the writer renames the prepared spare (or, if none is
//! ready, a file it preallocates on the spot) to the new segment's name, syncs the directory and
//! goes on. No timer ever delays a batch: appends that
//! arrive while a sync is running simply form the next batch.
//!
//! Each frame's `batch_delta` is its distance from the first frame of its write batch, which
//! recovery uses to tell a torn last batch from an earlier batch damaged after it was synced.
//!
//! On any error the writer latches it (see [`Shared::latch`]), fails every record of the batch
//! that is not yet durable, and stops.

use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::oneshot;

use super::segment::{self, SegmentFile};
use super::{housekeeper, Shared};
use crate::frame;
use crate::{WalError, WalErrorKind, WalPosition, WalResult};

/// Frames are written once this many bytes wait in the buffer, and at the end of each batch.
pub(super) const WRITE_CHUNK: usize = 4 << 20;

/// One queued append.
pub(super) struct Pending {
    /// Its position, fixed when `append` was called.
    pub position: u64,
    /// The record.
    pub record: Bytes,
    /// Whether it is the first record of a new segment.
    pub opens_segment: bool,
    /// Resolves the append's future; taken when it is resolved.
    pub done: Option<oneshot::Sender<WalResult<WalPosition>>>,
}

/// The appends waiting for the writer, and the position bookkeeping behind them.
pub(super) struct Queue {
    /// Appends not yet taken by the writer, in position order.
    pub pending: Vec<Pending>,
    /// The position the next append gets.
    pub next_position: u64,
    /// Where the segment that holds `next_position` ends.
    segment_end: u64,
    /// Size of new segments.
    segment_bytes: u64,
    /// The latched error: once set, every call fails with it.
    pub failed: Option<WalError>,
    /// Set when the WAL is dropped: the writer drains the queue and stops.
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

/// The writer thread's state.
pub(super) struct Writer {
    shared: Arc<Shared>,
    /// The segment being appended to.
    active: File,
    active_base: u64,
    active_path: PathBuf,
    /// Encoded frames not yet written; reused across batches.
    buf: Vec<u8>,
    /// The position of `buf[0]`.
    buf_position: u64,
    /// The batch being committed; swapped with the queue's vector to reuse both.
    batch: Vec<Pending>,
    /// How many of `batch` are resolved.
    resolved: usize,
}

impl Writer {
    /// A writer appending to `active`, the segment whose first frame is at `active_base`.
    pub fn new(shared: Arc<Shared>, active: File, active_base: u64) -> Self {
        let active_path = shared.dir.join(segment::segment_name(active_base));
        Writer {
            shared,
            active,
            active_base,
            active_path,
            buf: Vec::with_capacity(WRITE_CHUNK),
            buf_position: 0,
            batch: Vec::new(),
            resolved: 0,
        }
    }

    /// Commits batches until the WAL is dropped or fails.
    pub fn run(mut self) {
        loop {
            {
                let mut q = self.shared.queue.lock();
                while q.pending.is_empty() {
                    if q.closing || q.failed.is_some() {
                        return;
                    }
                    self.shared.queue_ready.wait(&mut q);
                }
                std::mem::swap(&mut q.pending, &mut self.batch);
            }
            self.resolved = 0;
            if let Err(err) = self.commit() {
                self.shared.latch(err.clone());
                for p in self.batch.drain(self.resolved..) {
                    if let Some(done) = p.done {
                        let _ = done.send(Err(err.clone()));
                    }
                }
                return;
            }
            self.batch.clear();
        }
    }

    /// Writes, syncs and resolves `self.batch`.
    fn commit(&mut self) -> WalResult<()> {
        let mut batch_start: Option<u64> = None;
        for i in 0..self.batch.len() {
            let (position, opens_segment) = (self.batch[i].position, self.batch[i].opens_segment);
            if opens_segment {
                if batch_start.take().is_some() {
                    self.write()?;
                    self.sync()?;
                    self.resolve(i);
                }
                self.roll(position)?;
            }
            let start = *batch_start.get_or_insert(position);
            if self.buf.is_empty() {
                self.buf_position = position;
            }
            let delta = u32::try_from(position - start).map_err(|_| {
                WalError::new(
                    WalErrorKind::Failed,
                    format!("write batch at {start} outgrew a frame's batch delta"),
                )
            })?;
            frame::encode(position, delta, &self.batch[i].record, &mut self.buf)
                .map_err(|e| WalError::failed(format!("encode frame at {position}"), e))?;
            if self.buf.len() >= WRITE_CHUNK {
                self.write()?;
            }
        }
        if batch_start.is_some() {
            self.write()?;
            self.sync()?;
            self.resolve(self.batch.len());
        }
        Ok(())
    }

    /// Resolves the batch's appends up to `to`, in order.
    fn resolve(&mut self, to: usize) {
        for p in &mut self.batch[self.resolved..to] {
            if let Some(done) = p.done.take() {
                let _ = done.send(Ok(WalPosition(p.position)));
            }
        }
        self.resolved = to;
    }

    /// Writes the buffer at its place in the active segment.
    fn write(&mut self) -> WalResult<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let offset = self.buf_position - self.active_base;
        #[cfg(test)]
        if super::FailPoints::hit(&self.shared.failpoints.writes) {
            return Err(self.failed("write", std::io::Error::other("injected write failure")));
        }
        self.active
            .write_all_at(&self.buf, offset)
            .map_err(|e| self.failed("write", e))?;
        self.buf_position += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    /// Makes what was written to the active segment durable.
    fn sync(&self) -> WalResult<()> {
        #[cfg(test)]
        if super::FailPoints::hit(&self.shared.failpoints.syncs) {
            return Err(self.failed("fdatasync", std::io::Error::other("injected sync failure")));
        }
        self.active
            .sync_data()
            .map_err(|e| self.failed("fdatasync", e))
    }

    /// Makes the prepared spare the segment that starts at `base`.
    fn roll(&mut self, base: u64) -> WalResult<()> {
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
        tracing::debug!(segment = %path.display(), "file WAL rolled over");
        self.active = file;
        self.active_base = base;
        self.active_path = path.clone();
        self.shared
            .segments
            .lock()
            .push_back(SegmentFile { base, path });
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

    fn failed(&self, what: &str, err: std::io::Error) -> WalError {
        WalError::failed(format!("{what} of {}", self.active_path.display()), err)
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
