//! Errors.
//!
//! Two layers: [`Error`] is what callers see, and its [`ErrorKind`] says what to do about it
//! (retry, reopen, fix the input, treat the data as corrupt, report a bug). The detail behind it
//! ([`ErrorDetail`]) names exactly what went wrong and where, for logs and tests.

use std::fmt;
use std::sync::Arc;

use crate::types::{Epoch, NodeId, Offset, StreamId};

/// What the caller should do about an error.
///
/// A producer loop that handles every kind:
///
/// ```
/// use objstream::{ErrorKind, RecordBatch, Stream};
///
/// async fn produce(stream: &Stream, event: &'static str) -> objstream::Result<()> {
///     loop {
///         match stream.append(RecordBatch::new(1, 0, event)).await {
///             Ok(_) => return Ok(()),
///             // Throttled or unreachable: the same call may succeed later.
///             Err(e) if e.kind() == ErrorKind::Retry => {
///                 tokio::time::sleep(std::time::Duration::from_millis(50)).await
///             }
///             // Fenced, closed, or the WAL failed: this handle is done. Open the stream again
///             // (on this node or wherever it now lives) and resume from its confirmed offset.
///             Err(e) if e.kind() == ErrorKind::Reopen => return Err(e),
///             // A bad batch (empty, too large, wrong expected offset): nothing was appended.
///             Err(e) if e.kind() == ErrorKind::InvalidInput => return Err(e),
///             // Corruption or a bug: stop and report; `e` names the object or record.
///             Err(e) => return Err(e),
///         }
///     }
/// }
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// # let dir = tempfile::tempdir().unwrap();
/// # let settings = objstream::Settings { wal: objstream::WalSettings::file(dir.path()), ..Default::default() };
/// # let objects = std::sync::Arc::new(object_store::memory::InMemory::new());
/// # let store = objstream::Store::open(settings, objstream::Components::new(objects, "doc")).await.unwrap();
/// # let stream = store.create_stream().await.unwrap();
/// produce(&stream, "event").await.unwrap();
/// let empty = stream.append(RecordBatch::new(0, 0, "")).await.unwrap_err();
/// assert_eq!(empty.kind(), ErrorKind::InvalidInput);
/// # store.shutdown().await.unwrap();
/// # });
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A transient condition (throttling, a timeout, an unreachable store): the same call may
    /// succeed later.
    Retry,
    /// This handle can never succeed again (fenced by a newer owner, closed, or its WAL failed):
    /// open the stream or the store again.
    Reopen,
    /// The request was wrong (bad argument, unknown stream, wrong expected offset). Nothing changed.
    InvalidInput,
    /// Stored bytes failed their checksum or do not parse. The message names the object, file or
    /// record. The data is never skipped.
    Corruption,
    /// A bug or an unexpected state in the store itself.
    Internal,
}

/// What exactly went wrong. Each variant maps to one [`ErrorKind`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorDetail {
    /// A newer owner took the stream or the node over.
    #[error("fenced: {0}")]
    Fenced(String),
    /// The stream handle was closed.
    #[error("{0} is closed")]
    StreamClosed(StreamId),
    /// The stream was deleted.
    #[error("{0} was deleted")]
    StreamDeleted(StreamId),
    /// No such stream.
    #[error("{0} does not exist")]
    UnknownStream(StreamId),
    /// The stream is open on a live node.
    #[error("{stream} is open on {owner} (epoch {epoch}); close it or recover that node first")]
    StreamBusy {
        /// The stream.
        stream: StreamId,
        /// Its owner.
        owner: NodeId,
        /// Its epoch.
        epoch: Epoch,
    },
    /// A bad argument.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// `append_if` found another next offset.
    #[error("{stream}: expected next offset {expected}, but it is {actual}")]
    UnexpectedOffset {
        /// The stream.
        stream: StreamId,
        /// What the caller expected.
        expected: Offset,
        /// What it is.
        actual: Offset,
    },
    /// A fetch or trim outside the stream's range.
    #[error("{stream}: offset {offset} is outside [{start}, {end})")]
    OffsetOutOfRange {
        /// The stream.
        stream: StreamId,
        /// The offset asked for.
        offset: Offset,
        /// The stream's first readable offset.
        start: Offset,
        /// The stream's confirmed end.
        end: Offset,
    },
    /// Stored bytes failed a checksum or do not parse.
    #[error("corruption in {location}: {what}")]
    Corruption {
        /// Which file, object or record.
        location: String,
        /// What is wrong with it.
        what: String,
    },
    /// A manifest commit did not validate against the current state.
    #[error("manifest conflict: {0}")]
    Conflict(String),
    /// The write-ahead log failed.
    #[error("write-ahead log: {0}")]
    Wal(#[from] objstream_wal::WalError),
    /// The object store failed.
    #[error("object store {operation} {path}: {source}")]
    ObjectStore {
        /// The operation (put, get, …).
        operation: &'static str,
        /// The key.
        path: String,
        /// The store's error.
        source: object_store::Error,
    },
    /// A bug or an impossible state.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ErrorDetail {
    fn kind(&self) -> ErrorKind {
        match self {
            ErrorDetail::Fenced(_)
            | ErrorDetail::StreamClosed(_)
            | ErrorDetail::StreamDeleted(_) => ErrorKind::Reopen,
            ErrorDetail::UnknownStream(_)
            | ErrorDetail::StreamBusy { .. }
            | ErrorDetail::InvalidInput(_)
            | ErrorDetail::UnexpectedOffset { .. }
            | ErrorDetail::OffsetOutOfRange { .. } => ErrorKind::InvalidInput,
            ErrorDetail::Corruption { .. } => ErrorKind::Corruption,
            ErrorDetail::Conflict(_) => ErrorKind::Retry,
            ErrorDetail::Wal(e) => match e.kind() {
                objstream_wal::WalErrorKind::Corruption => ErrorKind::Corruption,
                objstream_wal::WalErrorKind::InvalidInput => ErrorKind::InvalidInput,
                objstream_wal::WalErrorKind::Fenced | objstream_wal::WalErrorKind::Failed => {
                    ErrorKind::Reopen
                }
                objstream_wal::WalErrorKind::Retry => ErrorKind::Retry,
                _ => ErrorKind::Internal,
            },
            ErrorDetail::ObjectStore { source, .. } => match source {
                object_store::Error::NotFound { .. } => ErrorKind::Internal,
                object_store::Error::InvalidPath { .. } => ErrorKind::InvalidInput,
                _ => ErrorKind::Retry,
            },
            ErrorDetail::Internal(_) => ErrorKind::Internal,
        }
    }
}

/// The error of every fallible call in this crate. Cheap to clone.
#[derive(Clone)]
pub struct Error {
    detail: Arc<ErrorDetail>,
}

impl Error {
    /// What the caller should do.
    pub fn kind(&self) -> ErrorKind {
        self.detail.kind()
    }

    /// What exactly went wrong.
    pub fn detail(&self) -> &ErrorDetail {
        &self.detail
    }

    /// True when a newer owner fenced this handle; it will never succeed again.
    pub fn is_fenced(&self) -> bool {
        matches!(*self.detail, ErrorDetail::Fenced(_))
            || matches!(&*self.detail, ErrorDetail::Wal(e) if e.kind() == objstream_wal::WalErrorKind::Fenced)
    }

    pub(crate) fn invalid(msg: impl Into<String>) -> Self {
        ErrorDetail::InvalidInput(msg.into()).into()
    }

    pub(crate) fn internal(msg: impl Into<String>) -> Self {
        ErrorDetail::Internal(msg.into()).into()
    }

    pub(crate) fn fenced(msg: impl Into<String>) -> Self {
        ErrorDetail::Fenced(msg.into()).into()
    }

    pub(crate) fn corruption(location: impl Into<String>, what: impl Into<String>) -> Self {
        ErrorDetail::Corruption {
            location: location.into(),
            what: what.into(),
        }
        .into()
    }

    pub(crate) fn object_store(
        operation: &'static str,
        path: &object_store::path::Path,
        source: object_store::Error,
    ) -> Self {
        ErrorDetail::ObjectStore {
            operation,
            path: path.to_string(),
            source,
        }
        .into()
    }
}

impl From<ErrorDetail> for Error {
    fn from(detail: ErrorDetail) -> Self {
        Error {
            detail: Arc::new(detail),
        }
    }
}

impl From<objstream_wal::WalError> for Error {
    fn from(e: objstream_wal::WalError) -> Self {
        ErrorDetail::Wal(e).into()
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Error({:?}: {})", self.kind(), self.detail)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.detail, f)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&*self.detail)
    }
}

/// The result of every fallible call in this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_detail_tells_the_caller_what_to_do() {
        assert_eq!(Error::fenced("x").kind(), ErrorKind::Reopen);
        assert!(Error::fenced("x").is_fenced());
        assert_eq!(Error::invalid("x").kind(), ErrorKind::InvalidInput);
        assert_eq!(Error::corruption("a", "b").kind(), ErrorKind::Corruption);
        assert_eq!(
            Error::from(ErrorDetail::StreamClosed(StreamId(1))).kind(),
            ErrorKind::Reopen
        );
    }
}
