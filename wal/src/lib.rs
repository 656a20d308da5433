//! Write-ahead logs for objstream.
//!
//! A WAL makes an append durable before the store acknowledges it; the store uploads the data to
//! object storage later and then trims the WAL. Every backend implements [`Wal`]:
//!
//! - appends resolve **in the order they were called**, each once it is durable;
//! - [`Wal::trim`] discards every record below a position;
//! - [`Wal::replay`] returns the records that survived the last crash or shutdown, in order.
//!
//! Records are opaque bytes. Every backend frames them the same way (see [`frame`]): magic,
//! length, logical position and a crc32c over header and body, so a torn tail is detected and cut
//! and corruption before the tail is reported, never skipped.
//!
//! Backends: [`FileWal`], a directory of preallocated segment files on a local disk with group
//! commit (see [`mod@file`]); [`BlockWal`], a ring buffer on a block device (see [`mod@block`]);
//! [`ObjectWal`], batches of records in immutable objects on an object store, sealed by
//! whoever opens the WAL next so that another node can take it over (see [`mod@object`]).
//!
//! Every backend reports group-commit sizes, sync latency, writes in flight, held bytes and
//! replay through one set of metric names labelled by backend (see [`mod@metrics`]).
//!
//! After a failed write or fsync a WAL refuses every later call: the outcome of the failed write
//! is unknown, and retrying past a failed fsync can silently lose data.

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;

pub mod block;
pub mod file;
pub mod frame;
pub mod metrics;
pub mod object;
pub mod retry;

pub use block::{BlockWal, BlockWalOptions};
pub use file::{FileWal, FileWalOptions};
pub use object::{ObjectWal, ObjectWalIdentity, ObjectWalOptions, SealReport};

/// A logical position in a WAL: the byte offset of a record's frame in the log's own address
/// space, which only grows (segments and ring laps do not reset it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WalPosition(pub u64);

impl fmt::Display for WalPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "wal@{}", self.0)
    }
}

/// A record read back from a WAL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalRecord {
    /// Where the record's frame starts.
    pub position: WalPosition,
    /// Where the next record's frame starts.
    pub end: WalPosition,
    /// The record's bytes, as appended.
    pub payload: Bytes,
}

/// What the caller of a WAL should do about an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum WalErrorKind {
    /// The WAL failed a write or an fsync; it refuses every later call. Reopen it.
    Failed,
    /// Another node took this WAL over; it refuses every later call.
    Fenced,
    /// Stored bytes are corrupt before the tail.
    Corruption,
    /// The call was wrong (a record too large, a trim past the end).
    InvalidInput,
    /// A transient condition; try again.
    Retry,
}

/// A WAL error. Cheap to clone, so that one failure can be handed to every waiting append.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{message}")]
pub struct WalError {
    kind: WalErrorKind,
    message: String,
}

impl WalError {
    /// An error of `kind`.
    pub fn new(kind: WalErrorKind, message: impl Into<String>) -> Self {
        WalError {
            kind,
            message: message.into(),
        }
    }

    /// What to do about it.
    pub fn kind(&self) -> WalErrorKind {
        self.kind
    }

    /// A failed write or sync at `what`.
    pub fn failed(what: impl fmt::Display, err: impl fmt::Display) -> Self {
        WalError::new(WalErrorKind::Failed, format!("{what}: {err}"))
    }

    /// Corruption at `location`.
    pub fn corruption(location: impl fmt::Display, what: impl fmt::Display) -> Self {
        WalError::new(
            WalErrorKind::Corruption,
            format!("corruption in {location}: {what}"),
        )
    }
}

/// The result of WAL calls.
pub type WalResult<T> = Result<T, WalError>;

/// A future returned by the WAL. It is `'static`: an append's order is fixed when `append` is
/// called, and the future only waits for durability.
pub type WalFuture<T> = Pin<Box<dyn Future<Output = WalResult<T>> + Send + 'static>>;

/// A write-ahead log.
pub trait Wal: Send + Sync + fmt::Debug + 'static {
    /// Queues `record` and returns a future that resolves to its position once it is durable.
    ///
    /// The record's place in the log is fixed when this is called: two appends called one after
    /// the other land in that order, and their futures resolve in that order.
    fn append(&self, record: Bytes) -> WalFuture<WalPosition>;

    /// Discards every record whose position is below `before`. Space is reclaimed lazily (a file
    /// segment is deleted once all of it is below the trim point).
    fn trim(&self, before: WalPosition) -> WalFuture<()>;

    /// The records found when the WAL was opened (the ones not yet trimmed), in order.
    fn replay(&self) -> WalFuture<Vec<WalRecord>>;

    /// The largest record `append` accepts.
    fn max_record_size(&self) -> usize;
}
