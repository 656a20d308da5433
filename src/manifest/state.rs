//! The manifest's state: nodes, streams and objects as of one log sequence number.
//!
//! A [`ManifestState`] changes only through [`ManifestState::apply`], which is deterministic, so
//! replaying the same records on the same checkpoint always yields the same state. Its maps are ordered ([`BTreeMap`]) so that its
//! serialized form, the body of a checkpoint, is deterministic too.
//!
//! # Invariants
//!
//! [`ManifestState::check_invariants`] verifies these; `apply` keeps them, and a checkpoint that
//! breaks one is rejected as corrupt:
//!
//! 1. Every stream id is below `next_stream_id`, every object id below `next_object_id`.
//! 2. A stream's `start <= end`, its epoch is at least 1, and its owner is a known node.
//! 3. A node's fenced epoch, if any, is at most its current epoch, which is at least 1.
//! 4. Every range of every object appears in its stream's object index under the range's start,
//!    with the object's id, the range's end and the object's size, and the index holds nothing
//!    else.
//! 5. A stream's index entries are non-empty, do not overlap, and end at or below the stream's
//!    committed end.
//! 6. Every collected object id is below `next_object_id` and is not a committed object.
//!
//! # Collected ids
//!
//! The collected set holds the ids a compactor recorded with `CollectObjects` before deleting
//! their objects: allocated, never committed, and never committable afterwards. It is not
//! pruned: which ids a writer may still commit is not something the manifest tracks (a node
//! takes ids in batches and skips those whose upload it abandoned; a recovering node allocates
//! its own), so no id below some watermark is provably dead. Its size is one entry per
//! collected object, and an object is collected only when its upload or compaction never
//! committed (a crash between PUT and commit, a refused plan, a commit held past the grace
//! period) or, after a compactor restart, when it was replaced before the restart and the new
//! collector cannot tell it from an orphan. Both are rare next to the objects committed.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::change::ObjectMeta;
use crate::types::{Epoch, NodeId, ObjectId, Offset, StreamId};

/// Whether a stream is open, closed or deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamStatus {
    /// Open on its owner node, which may commit to it.
    Open,
    /// Closed: any node may open it.
    Closed,
    /// Deleted: nothing may be done with it; its data waits for compaction.
    Deleted,
}

/// One object's part of a stream, as the stream's object index holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamObject {
    /// The object.
    pub object: ObjectId,
    /// The offset just past the part's last record.
    pub end: Offset,
    /// The whole object's size in bytes (a reader needs it to fetch the object's tail).
    pub size: u64,
}

/// A stream as the manifest knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamMeta {
    /// The stream.
    pub id: StreamId,
    /// Open, closed or deleted.
    pub status: StreamStatus,
    /// The stream epoch: raised by every open.
    pub epoch: Epoch,
    /// The node that opened it last.
    pub owner: NodeId,
    /// That node's epoch when it opened the stream.
    pub owner_node_epoch: Epoch,
    /// The first readable offset (the trim point).
    pub start: Offset,
    /// The committed end: the offset just past the last record in an object.
    pub end: Offset,
    /// The stream's parts of objects, by start offset.
    pub objects: BTreeMap<Offset, StreamObject>,
}

/// A node as the manifest knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeMeta {
    /// The node's current epoch (raised each time it starts).
    pub epoch: Epoch,
    /// The newest epoch of the node that was fenced, if any.
    pub fenced_epoch: Option<Epoch>,
    /// The node's WAL floor: every record of its WAL below this position is in objects, and
    /// nothing at or above it has been trimmed. 0 until the first commit that records one.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub wal_floor: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

impl NodeMeta {
    /// True when `epoch` of this node has been fenced.
    pub fn is_fenced(&self, epoch: Epoch) -> bool {
        self.fenced_epoch.is_some_and(|fenced| epoch <= fenced)
    }

    /// True when `epoch` is the node's current epoch and it is not fenced: the only epoch
    /// under which the node may change anything.
    pub fn is_live(&self, epoch: Epoch) -> bool {
        epoch == self.epoch && !self.is_fenced(epoch)
    }
}

/// The manifest's state as of log sequence number [`ManifestState::seq`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestState {
    /// The sequence number of the last record applied (0: none).
    pub(super) seq: u64,
    pub(super) next_stream_id: StreamId,
    pub(super) next_object_id: ObjectId,
    pub(super) compactor_epoch: Epoch,
    pub(super) nodes: BTreeMap<NodeId, NodeMeta>,
    pub(super) streams: BTreeMap<StreamId, StreamMeta>,
    pub(super) objects: BTreeMap<ObjectId, ObjectMeta>,
    /// Ids collected as garbage (see the module docs); absent from older checkpoints.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub(super) collected: BTreeSet<ObjectId>,
}

impl ManifestState {
    /// The empty state, before the first record.
    pub fn new() -> Self {
        Self::default()
    }

    /// The sequence number of the last record applied; 0 before the first.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The id the next created stream gets.
    pub fn next_stream_id(&self) -> StreamId {
        self.next_stream_id
    }

    /// The first object id not yet allocated.
    pub fn next_object_id(&self) -> ObjectId {
        self.next_object_id
    }

    /// The current compactor epoch (0: no compactor has started).
    pub fn compactor_epoch(&self) -> Epoch {
        self.compactor_epoch
    }

    /// A node, if it ever started.
    pub fn node(&self, node: NodeId) -> Option<&NodeMeta> {
        self.nodes.get(&node)
    }

    /// Every node that ever started, by id.
    pub fn nodes(&self) -> impl Iterator<Item = (NodeId, &NodeMeta)> {
        self.nodes.iter().map(|(id, meta)| (*id, meta))
    }

    /// A stream, if it was ever created (deleted streams included).
    pub fn stream(&self, stream: StreamId) -> Option<&StreamMeta> {
        self.streams.get(&stream)
    }

    /// Every stream ever created, by id.
    pub fn streams(&self) -> impl Iterator<Item = &StreamMeta> {
        self.streams.values()
    }

    /// The open streams whose owner is `node` (at any of its epochs), by id.
    pub fn streams_owned_by(&self, node: NodeId) -> Vec<StreamId> {
        self.streams
            .values()
            .filter(|s| s.status == StreamStatus::Open && s.owner == node)
            .map(|s| s.id)
            .collect()
    }

    /// A committed object.
    pub fn object(&self, object: ObjectId) -> Option<&ObjectMeta> {
        self.objects.get(&object)
    }

    /// Every committed object, by id.
    pub fn objects(&self) -> impl Iterator<Item = &ObjectMeta> {
        self.objects.values()
    }

    /// True when `object` was collected as garbage: it can never be committed.
    pub fn is_collected(&self, object: ObjectId) -> bool {
        self.collected.contains(&object)
    }

    /// Every collected object id, in order.
    pub fn collected(&self) -> impl Iterator<Item = ObjectId> + '_ {
        self.collected.iter().copied()
    }

    /// The parts of objects that hold offsets of `stream` in `[start, end)`, in offset order,
    /// as `(object, object size, part start, part end)`. The first part may begin before
    /// `start` and the last end after `end`. Empty when the stream is unknown or nothing in
    /// the range is committed.
    pub fn objects_covering(
        &self,
        stream: StreamId,
        start: Offset,
        end: Offset,
    ) -> Vec<(ObjectId, u64, Offset, Offset)> {
        let Some(meta) = self.streams.get(&stream) else {
            return Vec::new();
        };
        if start >= end {
            return Vec::new();
        }
        // The part containing `start`, if any, begins at or before it.
        let first = meta
            .objects
            .range(..=start)
            .next_back()
            .filter(|(_, part)| part.end > start)
            .map_or(start, |(part_start, _)| *part_start);
        meta.objects
            .range(first..end)
            .map(|(part_start, part)| (part.object, part.size, *part_start, part.end))
            .collect()
    }

    /// Checks the invariants listed in the module documentation; the error says which one
    /// fails and where.
    pub fn check_invariants(&self) -> Result<(), String> {
        for (id, node) in &self.nodes {
            if node.epoch.get() == 0 {
                return Err(format!("{id} has epoch 0"));
            }
            if node.fenced_epoch.is_some_and(|f| f > node.epoch) {
                return Err(format!("{id} is fenced above its epoch {}", node.epoch));
            }
        }
        for (id, stream) in &self.streams {
            if *id != stream.id {
                return Err(format!("{id} is stored as {}", stream.id));
            }
            if *id >= self.next_stream_id {
                return Err(format!("{id} is not below the next stream id"));
            }
            if stream.start > stream.end {
                return Err(format!("{id} starts after its end"));
            }
            if stream.epoch.get() == 0 {
                return Err(format!("{id} has epoch 0"));
            }
            if !self.nodes.contains_key(&stream.owner) {
                return Err(format!("{id} is owned by unknown {}", stream.owner));
            }
            let mut previous_end = Offset(0);
            for (start, part) in &stream.objects {
                if *start < previous_end || part.end <= *start || part.end > stream.end {
                    return Err(format!("{id}: index entry at {start} is out of order"));
                }
                previous_end = part.end;
                let held = self.objects.get(&part.object).is_some_and(|object| {
                    object.size == part.size
                        && object
                            .ranges
                            .iter()
                            .any(|r| r.stream == *id && r.start == *start && r.end == part.end)
                });
                if !held {
                    return Err(format!("{id}: index entry at {start} names no such object"));
                }
            }
        }
        for (id, object) in &self.objects {
            if *id != object.id {
                return Err(format!("{id} is stored as {}", object.id));
            }
            if *id >= self.next_object_id {
                return Err(format!("{id} is not below the next object id"));
            }
            if object.ranges.is_empty() {
                return Err(format!("{id} holds no range"));
            }
            for range in &object.ranges {
                let indexed = self
                    .streams
                    .get(&range.stream)
                    .and_then(|s| s.objects.get(&range.start))
                    .is_some_and(|part| part.object == *id && part.end == range.end);
                if !indexed {
                    return Err(format!(
                        "{id}: range {}..{} of {} is not in the stream's index",
                        range.start, range.end, range.stream
                    ));
                }
            }
        }
        for id in &self.collected {
            if *id >= self.next_object_id {
                return Err(format!("collected {id} is not below the next object id"));
            }
            if self.objects.contains_key(id) {
                return Err(format!("collected {id} is a committed object"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::change::{ManifestStreamRange, ObjectKind};

    fn state_with_parts(parts: &[(u64, u64, u64)]) -> ManifestState {
        let stream = StreamId(0);
        let mut state = ManifestState {
            next_stream_id: StreamId(1),
            ..ManifestState::default()
        };
        state.nodes.insert(
            NodeId(1),
            NodeMeta {
                epoch: Epoch(1),
                fenced_epoch: None,
                wal_floor: 0,
            },
        );
        let mut meta = StreamMeta {
            id: stream,
            status: StreamStatus::Open,
            epoch: Epoch(1),
            owner: NodeId(1),
            owner_node_epoch: Epoch(1),
            start: Offset(0),
            end: Offset(0),
            objects: BTreeMap::new(),
        };
        for &(id, start, end) in parts {
            let object = ObjectMeta {
                id: ObjectId(id),
                size: 100 + id,
                kind: ObjectKind::Stream,
                ranges: vec![ManifestStreamRange {
                    stream,
                    epoch: Epoch(1),
                    start: Offset(start),
                    end: Offset(end),
                }],
            };
            meta.objects.insert(
                Offset(start),
                StreamObject {
                    object: ObjectId(id),
                    end: Offset(end),
                    size: object.size,
                },
            );
            meta.end = meta.end.max(Offset(end));
            state.objects.insert(ObjectId(id), object);
            state.next_object_id = state.next_object_id.max(ObjectId(id + 1));
        }
        state.streams.insert(stream, meta);
        state
    }

    #[test]
    fn objects_covering_includes_the_part_that_contains_the_start() {
        let state = state_with_parts(&[(0, 0, 10), (1, 10, 20), (2, 20, 30)]);
        assert_eq!(
            state.objects_covering(StreamId(0), Offset(15), Offset(21)),
            vec![
                (ObjectId(1), 101, Offset(10), Offset(20)),
                (ObjectId(2), 102, Offset(20), Offset(30)),
            ]
        );
    }

    #[test]
    fn objects_covering_stops_before_the_end() {
        let state = state_with_parts(&[(0, 0, 10), (1, 10, 20)]);
        assert_eq!(
            state.objects_covering(StreamId(0), Offset(0), Offset(10)),
            vec![(ObjectId(0), 100, Offset(0), Offset(10))]
        );
    }

    #[test]
    fn objects_covering_skips_a_gap_left_by_compaction() {
        let state = state_with_parts(&[(1, 10, 20)]);
        assert_eq!(
            state.objects_covering(StreamId(0), Offset(0), Offset(15)),
            vec![(ObjectId(1), 101, Offset(10), Offset(20))]
        );
        assert!(state
            .objects_covering(StreamId(0), Offset(20), Offset(25))
            .is_empty());
    }

    #[test]
    fn objects_covering_an_unknown_stream_or_empty_range_is_empty() {
        let state = state_with_parts(&[(0, 0, 10)]);
        assert!(state
            .objects_covering(StreamId(9), Offset(0), Offset(10))
            .is_empty());
        assert!(state
            .objects_covering(StreamId(0), Offset(5), Offset(5))
            .is_empty());
    }

    #[test]
    fn a_consistent_state_passes_the_invariants() {
        let state = state_with_parts(&[(0, 0, 10), (1, 10, 20)]);
        assert_eq!(state.check_invariants(), Ok(()));
    }

    #[test]
    fn an_index_entry_without_its_object_breaks_the_invariants() {
        let mut state = state_with_parts(&[(0, 0, 10), (1, 10, 20)]);
        state.objects.remove(&ObjectId(1));
        assert!(state.check_invariants().is_err());
    }

    #[test]
    fn an_object_missing_from_the_index_breaks_the_invariants() {
        let mut state = state_with_parts(&[(0, 0, 10), (1, 10, 20)]);
        if let Some(stream) = state.streams.get_mut(&StreamId(0)) {
            stream.objects.remove(&Offset(0));
        }
        assert!(state.check_invariants().is_err());
    }

    #[test]
    fn overlapping_parts_break_the_invariants() {
        let state = state_with_parts(&[(0, 0, 10), (1, 5, 20)]);
        assert!(state.check_invariants().is_err());
    }

    #[test]
    fn a_collected_id_that_is_committed_or_unallocated_breaks_the_invariants() {
        let mut state = state_with_parts(&[(0, 0, 10)]);
        state.collected.insert(ObjectId(0));
        assert!(state.check_invariants().is_err());
        state.collected = BTreeSet::from([ObjectId(1)]);
        assert!(state.check_invariants().is_err());
        state.next_object_id = ObjectId(2);
        assert_eq!(state.check_invariants(), Ok(()));
    }

    #[test]
    fn a_checkpoint_body_without_collected_ids_still_decodes() {
        let state = state_with_parts(&[(0, 0, 10)]);
        let json = serde_json::to_string(&state).unwrap();
        assert!(!json.contains("collected"), "an empty set is not written");
        let decoded: ManifestState = serde_json::from_str(&json).unwrap();
        assert_eq!(decoded, state);
        let mut collected = state;
        collected.next_object_id = ObjectId(5);
        collected.collected.insert(ObjectId(3));
        let json = serde_json::to_string(&collected).unwrap();
        assert_eq!(
            serde_json::from_str::<ManifestState>(&json).unwrap(),
            collected
        );
    }

    #[test]
    fn a_fence_above_the_node_epoch_breaks_the_invariants() {
        let mut state = state_with_parts(&[]);
        state.nodes.insert(
            NodeId(1),
            NodeMeta {
                epoch: Epoch(1),
                fenced_epoch: Some(Epoch(2)),
                wal_floor: 0,
            },
        );
        assert!(state.check_invariants().is_err());
    }

    #[test]
    fn a_node_is_live_only_at_its_current_unfenced_epoch() {
        let node = NodeMeta {
            epoch: Epoch(3),
            fenced_epoch: Some(Epoch(2)),
            wal_floor: 0,
        };
        assert!(node.is_live(Epoch(3)));
        assert!(!node.is_live(Epoch(2)));
        assert!(node.is_fenced(Epoch(1)));
        let fenced = NodeMeta {
            epoch: Epoch(3),
            fenced_epoch: Some(Epoch(3)),
            wal_floor: 0,
        };
        assert!(!fenced.is_live(Epoch(3)));
    }
}
