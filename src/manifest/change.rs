//! The changes a manifest record can carry, and what applying one assigned.
//!
//! A [`Change`] is a request: it names the node and the epochs it acts under, and
//! [`ManifestState::apply`](super::ManifestState::apply) decides, deterministically, whether it is
//! allowed in the current state. The same change is validated before it is written and replayed
//! from the log afterwards, so every field that validation depends on is part of the change.
//!
//! Changes are stored as JSON inside a framed record (see [`record`](super::record)); the serde
//! names below are part of the stored format and must not change.

use std::ops::Range;

use serde::{Deserialize, Serialize};

use crate::types::{Epoch, NodeId, ObjectId, Offset, StreamId};

/// One change to the manifest: the body of one log record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// A node starts: its epoch becomes the previous one plus 1 (the first is 1). This fences
    /// nothing by itself: a node fenced at an old epoch stays fenced there, the new epoch starts
    /// live, and commits under an older epoch are rejected because they are not current.
    OpenNode {
        /// The node.
        node: NodeId,
    },
    /// Marks `epoch` of `node` as fenced: every change carrying that node epoch or an older one
    /// is rejected, and the node's open streams may be opened elsewhere.
    FenceNode {
        /// The node.
        node: NodeId,
        /// The newest epoch fenced.
        epoch: Epoch,
    },
    /// Allocates the next stream id, opened by `node` with stream epoch 1 and start = end = 0.
    CreateStream {
        /// The creating (and owning) node.
        node: NodeId,
        /// Its current epoch.
        node_epoch: Epoch,
    },
    /// Opens a stream on `node`: the stream epoch rises by 1. Allowed when the stream is closed,
    /// or when it is open on a node that has been fenced at the epoch it opened the stream with.
    OpenStream {
        /// The stream.
        stream: StreamId,
        /// The new owner.
        node: NodeId,
        /// Its current epoch.
        node_epoch: Epoch,
    },
    /// Closes a stream; its owner calls this after committing everything it acknowledged.
    CloseStream {
        /// The stream.
        stream: StreamId,
        /// The stream epoch the owner opened it with.
        epoch: Epoch,
        /// The owner.
        node: NodeId,
        /// The owner's current epoch.
        node_epoch: Epoch,
    },
    /// Moves the first readable offset of a stream forward.
    TrimStream {
        /// The stream.
        stream: StreamId,
        /// The stream's current epoch.
        epoch: Epoch,
        /// The new first readable offset: at least the current one, at most the committed end.
        new_start: Offset,
        /// Set when a compactor trims for retention: it must be the current compactor epoch,
        /// so a fenced compactor trims nothing.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        compactor_epoch: Option<Epoch>,
    },
    /// Deletes a stream. Its objects keep their ranges until compaction removes them.
    DeleteStream {
        /// The stream.
        stream: StreamId,
        /// The stream's current epoch.
        epoch: Epoch,
    },
    /// Allocates `count` object ids, `[next, next + count)`.
    AllocateObjectIds {
        /// The allocating node.
        node: NodeId,
        /// Its current epoch.
        node_epoch: Epoch,
        /// How many ids; at least 1.
        count: u64,
    },
    /// Atomically adds the objects of one upload (typically one stream set object and the
    /// stream objects split out of it). Each range must continue its stream exactly at the
    /// committed end, under the stream's current epoch, from its owner.
    CommitObjects {
        /// The uploading node, which owns every stream in the ranges.
        node: NodeId,
        /// Its current epoch.
        node_epoch: Epoch,
        /// The objects, in the order their ranges follow each other.
        objects: Vec<ObjectMeta>,
        /// The committing node's WAL may be trimmed below this position once the commit is in:
        /// every record below it is in objects. Recorded before the WAL deletes anything, so a
        /// node recovering an object WAL knows that no slot at or above the newest floor was
        /// ever deleted (see `ManifestState::wal_floor`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        wal_floor: Option<u64>,
    },
    /// Raises the WAL floor of `owner` (see `CommitObjects::wal_floor`) without committing
    /// objects: after an upload that had nothing left to commit, or by a node that recovered a
    /// fenced owner's WAL and is about to trim it.
    TrimWal {
        /// The acting node.
        node: NodeId,
        /// Its current epoch.
        node_epoch: Epoch,
        /// Whose WAL: `node` itself, or a node fenced at its current epoch.
        owner: NodeId,
        /// The new floor, a WAL position.
        floor: u64,
    },
    /// Replaces objects by others holding the same data (compaction). The added objects cover
    /// exactly what the removed ones covered, stream by stream, except data below a stream's
    /// trim offset or of a deleted stream, which may be dropped.
    ReplaceObjects {
        /// The compactor's epoch; must be current.
        compactor_epoch: Epoch,
        /// Objects that leave the manifest.
        removed: Vec<ObjectId>,
        /// Objects that enter it.
        added: Vec<ObjectMeta>,
    },
    /// A compactor starts: the compactor epoch rises by 1, fencing the previous compactor.
    OpenCompactor,
    /// Records, before the collector deletes them, that objects allocated and not committed are
    /// garbage: from then on no commit or replacement may name them. Committed before any such
    /// object is deleted, so an upload whose commit was only late loses the race in the manifest
    /// (its commit is refused and it uploads again) instead of committing a deleted object.
    CollectObjects {
        /// The collecting compactor's epoch; must be current.
        compactor_epoch: Epoch,
        /// The objects about to be deleted: allocated, none committed. An id may repeat.
        ids: Vec<ObjectId>,
    },
}

impl Change {
    /// A short name of the change's kind, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Change::OpenNode { .. } => "open_node",
            Change::FenceNode { .. } => "fence_node",
            Change::CreateStream { .. } => "create_stream",
            Change::OpenStream { .. } => "open_stream",
            Change::CloseStream { .. } => "close_stream",
            Change::TrimStream { .. } => "trim_stream",
            Change::DeleteStream { .. } => "delete_stream",
            Change::AllocateObjectIds { .. } => "allocate_object_ids",
            Change::CommitObjects { .. } => "commit_objects",
            Change::TrimWal { .. } => "trim_wal",
            Change::ReplaceObjects { .. } => "replace_objects",
            Change::OpenCompactor => "open_compactor",
            Change::CollectObjects { .. } => "collect_objects",
        }
    }
}

/// Which of the two object shapes an object has (both share one file format).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectKind {
    /// Ranges of many streams, written by an upload.
    StreamSet,
    /// Ranges of a single stream, written by an upload of a big stream or by compaction.
    Stream,
}

/// An object as the manifest knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectMeta {
    /// The object's id (its key derives from it).
    pub id: ObjectId,
    /// Its size in bytes.
    pub size: u64,
    /// Its shape.
    pub kind: ObjectKind,
    /// The stream ranges it holds, at least one; a [`ObjectKind::Stream`] object holds ranges
    /// of a single stream.
    pub ranges: Vec<ManifestStreamRange>,
}

/// A range of one stream's offsets held by an object: `[start, end)`, written under `epoch`.
///
/// This is the manifest's view of a range; the object format keeps an index of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ManifestStreamRange {
    /// The stream.
    pub stream: StreamId,
    /// The stream epoch the data was committed under.
    pub epoch: Epoch,
    /// The first offset.
    pub start: Offset,
    /// The offset just past the last one; greater than `start`.
    pub end: Offset,
}

/// What applying a change assigned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// [`Change::OpenNode`]: the node's new epoch.
    NodeEpoch(Epoch),
    /// [`Change::CreateStream`]: the new stream's id.
    StreamCreated(StreamId),
    /// [`Change::OpenStream`]: the stream's new epoch and its readable range.
    StreamOpened {
        /// The new stream epoch.
        epoch: Epoch,
        /// The first readable offset.
        start: Offset,
        /// The committed end.
        end: Offset,
    },
    /// [`Change::AllocateObjectIds`]: the ids allocated.
    ObjectIds(Range<u64>),
    /// [`Change::OpenCompactor`]: the compactor's new epoch.
    CompactorEpoch(Epoch),
    /// The change was applied and assigned nothing.
    Done,
    /// The state already reflects the change (a replayed commit, a second close, a trim to the
    /// current start). Nothing changed, and a store writes no record for it.
    AlreadyApplied,
}
