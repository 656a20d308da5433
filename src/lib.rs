//! objstream: durable, ordered, append-only streams on object storage.

pub mod error;
pub mod format;
pub mod manifest;
pub mod settings;
pub mod types;

pub use error::{Error, ErrorDetail, ErrorKind, Result};
pub use settings::{Compression, Settings, WalSettings};
pub use types::{Epoch, NodeId, ObjectId, Offset, RecordBatch, StoredBatch, StreamId};
