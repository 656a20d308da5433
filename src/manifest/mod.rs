//! The manifest: which streams, nodes and objects exist, kept as a log on object storage.
//!
//! # Roles
//!
//! - [`Change`] ([`change`]): one request to the manifest — start or fence a node, create, open,
//!   close, trim or delete a stream, allocate object ids, commit an upload's objects, replace
//!   objects after compaction, record orphaned ids as collected before garbage collection
//!   deletes them, raise a WAL's floor.
//! - [`ManifestState`] ([`state`]): nodes, streams and objects as of a sequence number, with
//!   the queries the rest of the store needs ([`ManifestState::stream`],
//!   [`ManifestState::objects_covering`], [`ManifestState::streams_owned_by`]).
//! - [`ManifestState::apply`] (module `apply`): the one deterministic function that validates
//!   a change and applies it — before writing it, and again when replaying it. Epoch fencing
//!   and the rule that committed ranges chain without gaps live there.
//! - [`record`]: the framed, checksummed bytes of a log record; [`checkpoint`]: the same frame
//!   around a whole state.
//! - [`MetaStore`]: what the rest of the store uses, so a broker can plug in its own
//!   controller, or a consensus database can serve larger clusters.
//! - [`ObjectStoreMetaStore`]: the `MetaStore` that keeps the log on an object store using
//!   only create-if-absent (S3, S3 Express, GCS, Azure, `LocalFileSystem`, `InMemory`).
//! - [`prune`]: removing the records a checkpoint covers, and the freshness rule that keeps a
//!   writer that stayed behind from recreating a removed number.
//!
//! # Flow
//!
//! A commit validates the change against the cached state and creates the next record number
//! with `PutMode::Create`; losing that race means reading the winner's records and trying again
//! on the new state. Every record carries its writer's [`WriterToken`], so an ambiguous create
//! (the store answered "already exists" to a retry of our own successful PUT) is resolved by
//! reading the record back, never by guessing. See [`store`] for the whole protocol.
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use std::sync::Arc;
//! use objstream::manifest::{Change, MetaStore, ObjectStoreMetaStore, Outcome, WriterToken};
//! use objstream::{Epoch, NodeId, StreamId};
//!
//! let store = Arc::new(object_store::memory::InMemory::new());
//! let meta = ObjectStoreMetaStore::open(store, "cluster".into(), WriterToken(1), 100).await?;
//! let node = NodeId(7);
//! let started = meta.commit(Change::OpenNode { node }).await?;
//! assert_eq!(started.outcome, Outcome::NodeEpoch(Epoch(1)));
//! let created = meta.commit(Change::CreateStream { node, node_epoch: Epoch(1) }).await?;
//! assert_eq!(created.outcome, Outcome::StreamCreated(StreamId(0)));
//! assert_eq!(created.seq, 2);
//! assert_eq!(meta.state().await?.streams_owned_by(node), vec![StreamId(0)]);
//! # Ok::<_, objstream::Error>(()) }).unwrap();
//! ```

use std::fmt;
use std::sync::Arc;

use crate::error::Result;

mod apply;
pub mod change;
pub mod checkpoint;
mod paths;
pub mod prune;
pub mod record;
pub mod state;
pub mod store;
#[cfg(test)]
mod test_support;

pub use change::{Change, ManifestStreamRange, ObjectKind, ObjectMeta, Outcome};
pub use checkpoint::{decode_checkpoint, encode_checkpoint};
pub use record::{decode_record, encode_record, Record, WriterToken};
pub use state::{ManifestState, NodeMeta, StreamMeta, StreamObject, StreamStatus};
pub use store::ObjectStoreMetaStore;

/// A successful commit.
#[derive(Clone, Debug)]
pub struct Committed {
    /// The sequence number of the record written; for [`Outcome::AlreadyApplied`], the sequence
    /// number of the state the change was found in (no record was written).
    pub seq: u64,
    /// What the change assigned.
    pub outcome: Outcome,
    /// The state right after the change.
    pub state: Arc<ManifestState>,
}

/// Where the manifest lives and how changes are committed to it.
///
/// Implementations must apply changes with [`ManifestState::apply`] in one total order, each
/// exactly once, and must report a commit as successful only once it is durable.
#[async_trait::async_trait]
pub trait MetaStore: Send + Sync + fmt::Debug {
    /// The latest state this store knows, without asking anyone.
    async fn state(&self) -> Result<Arc<ManifestState>>;

    /// Catches up with changes committed elsewhere and returns the new state.
    async fn refresh(&self) -> Result<Arc<ManifestState>>;

    /// Validates `change` against the latest state and commits it. Validation errors (fenced,
    /// busy, unknown stream, a range that does not start at the committed end, …) change
    /// nothing.
    async fn commit(&self, change: Change) -> Result<Committed>;
}
