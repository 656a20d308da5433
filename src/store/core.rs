//! The store's in-memory heart, behind one lock: each open stream's offsets, the log cache, and
//! the queue of appends waiting for memory.
//!
//! One lock orders everything that must agree: an admitted append gets its offsets, its log cache
//! sequence number and its place in the WAL queue in one critical section, so WAL order, cache
//! order and offset order are the same order. The critical section does no I/O: it encodes the
//! record and hands it to the WAL's queue.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use objstream_cache::{CachedBatch, LogCache};
use objstream_wal::{WalFuture, WalPosition};
use tokio::sync::oneshot;

use crate::error::{Error, ErrorDetail, Result};
use crate::types::{Epoch, Offset, RecordBatch, StreamId};

impl CachedBatch for RecordBatch {
    fn record_count(&self) -> u64 {
        u64::from(self.count)
    }

    fn weight(&self) -> u64 {
        // The payload plus a fixed charge for the entry's bookkeeping.
        self.payload.len() as u64 + 64
    }
}

/// Where an open stream stands on this node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum StreamStatus {
    /// Accepting appends.
    Open,
    /// Closing or closed by this node: no more appends.
    Closed,
    /// Deleted.
    Deleted,
}

/// One stream's offsets on this node.
#[derive(Clone, Debug)]
pub(crate) struct StreamState {
    pub epoch: Epoch,
    pub status: StreamStatus,
    /// The first readable offset (trim point).
    pub start: Offset,
    /// The offset the next admitted append gets.
    pub next: Offset,
    /// Everything below is durable and readable.
    pub confirmed: Offset,
}

/// The result of a successful append.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppendResult {
    /// The offset of the batch's first record.
    pub base_offset: Offset,
    /// The offset just past the batch's last record.
    pub next_offset: Offset,
}

/// An append admitted to the WAL, waiting for durability in the completion queue.
pub(crate) struct InFlight {
    pub stream: StreamId,
    pub seq: u64,
    pub result: AppendResult,
    pub durable: WalFuture<WalPosition>,
    pub reply: oneshot::Sender<Result<AppendResult>>,
    /// When `append` was called (append latency ends at durability).
    pub started: Instant,
    /// The batch's payload bytes.
    pub bytes: u64,
    /// The append's span (disabled unless a subscriber wants debug spans).
    pub span: tracing::Span,
}

/// An append waiting for memory, in call order.
pub(crate) struct Waiting {
    pub stream: StreamId,
    pub epoch: Epoch,
    pub batch: RecordBatch,
    pub expected: Option<Offset>,
    pub reply: oneshot::Sender<Result<AppendResult>>,
    /// When `append` was called.
    pub started: Instant,
    /// The append's span.
    pub span: tracing::Span,
}

/// Everything behind the store's append lock.
pub(crate) struct Core {
    pub cache: LogCache<RecordBatch>,
    pub streams: HashMap<StreamId, StreamState>,
    pub waiting: VecDeque<Waiting>,
    /// The highest durable log cache sequence number and the WAL position of its record.
    pub last_durable: Option<(u64, WalPosition)>,
    /// The first fatal error; once set, every call fails with it.
    pub failed: Option<Error>,
}

impl Core {
    pub fn new(cache_bytes: u64) -> Self {
        Core {
            cache: LogCache::new(cache_bytes),
            streams: HashMap::new(),
            waiting: VecDeque::new(),
            last_durable: None,
            failed: None,
        }
    }

    /// The stream's state if the handle of `epoch` may still use it.
    pub fn check_stream(&self, stream: StreamId, epoch: Epoch) -> Result<&StreamState> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let Some(s) = self.streams.get(&stream) else {
            return Err(ErrorDetail::StreamClosed(stream).into());
        };
        if s.epoch != epoch {
            return Err(Error::fenced(format!(
                "{stream} was reopened with {}; this handle holds {epoch}",
                s.epoch
            )));
        }
        match s.status {
            StreamStatus::Open => Ok(s),
            StreamStatus::Closed => Err(ErrorDetail::StreamClosed(stream).into()),
            StreamStatus::Deleted => Err(ErrorDetail::StreamDeleted(stream).into()),
        }
    }

    /// True when an append of `weight` bytes must wait for memory.
    pub fn must_wait(&self, weight: u64) -> bool {
        if !self.waiting.is_empty() {
            return true;
        }
        let usage = self.cache.usage();
        // An append larger than the whole cache is admitted once nothing else is unflushed, so
        // that it cannot wait forever.
        usage.unflushed_bytes > 0 && usage.unflushed_bytes + weight > self.cache.capacity()
    }

    /// Latches the first fatal error and fails everything waiting for memory.
    pub fn fail(&mut self, err: Error) {
        if self.failed.is_none() {
            self.failed = Some(err.clone());
        }
        for w in self.waiting.drain(..) {
            let _ = w.reply.send(Err(err.clone()));
        }
    }
}
