//! objstream: durable, ordered, append-only streams on object storage.

pub mod config;
pub mod error;
pub mod format;
#[doc(hidden)]
pub mod keys;
pub mod manifest;
pub mod metered_store;
pub mod metrics;
mod read;
#[doc(hidden)]
pub mod retry;
pub mod settings;
mod store;
pub mod testing;
pub mod types;
mod upload;
#[doc(hidden)]
pub mod wal_record;

pub use config::{ObjectStoreOptions, StoreLocation};
pub use error::{Error, ErrorDetail, ErrorKind, Result};
pub use metered_store::MeteredObjectStore;
pub use read::{DecodedBlock, ReadStats, SharedBlockCache};
pub use settings::{Compression, Settings, WalLinger, WalSettings};
pub use store::{AppendFuture, AppendResult, Components, NodeRecovery, Store, Stream};
pub use types::{Epoch, NodeId, ObjectId, Offset, RecordBatch, StoredBatch, StreamId};

/// The README's code blocks, compiled as doctests so the documented API cannot drift from the
/// real one.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
