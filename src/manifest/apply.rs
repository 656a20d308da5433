//! Applying a [`Change`] to a [`ManifestState`]: the one deterministic function that both
//! validates a change before it is written and replays it from the log.
//!
//! Every change is checked completely before anything is modified, so a rejected change leaves
//! the state exactly as it was. The rules follow AutoMQ's controller:
//!
//! 1. A node acts only under its current epoch, and only while that epoch is not fenced;
//!    otherwise the change is [`Fenced`](crate::ErrorDetail::Fenced).
//! 2. A change to a stream names the stream's current epoch; an older one is fenced.
//! 3. A stream opens when it is closed, or when its owner was fenced at the node epoch it opened
//!    the stream with (the open then implicitly closes it at its committed end). Otherwise it is
//!    [`StreamBusy`](crate::ErrorDetail::StreamBusy).
//! 4. Committed ranges of a stream follow each other without gaps or overlaps: a range starts
//!    exactly at the committed end, otherwise the commit is a
//!    [`Conflict`](crate::ErrorDetail::Conflict) naming the expected and the actual start.
//! 5. A change the state already reflects — the same objects committed again, a second close
//!    or delete under the same epoch, a trim to the current start, a fence already in place — is
//!    [`Outcome::AlreadyApplied`]: success that changes nothing.
//! 6. A node that restarted (a new epoch, not fenced) still owns the streams its earlier epoch
//!    opened: it commits what that run left in its WAL and closes them. The earlier epoch itself
//!    is refused by rule 1. The streams of a node fenced at the epoch that opened them may be
//!    committed to and closed by any live node: that is how a failed node is recovered.
//! 7. Compaction replaces objects only with objects holding the same offsets of every stream,
//!    except offsets below a stream's trim point or of a deleted stream, which it may drop.
//! 8. A node's WAL floor only rises. A node raises its own (with a commit or `TrimWal`); a live
//!    node raises the floor of a node fenced at its current epoch, after recovering its WAL.
//! 9. A compactor acts only under the current compactor epoch: its replacements, and the trims it
//!    makes for retention. An older epoch is fenced.
//! 10. An object the collector deletes without its ever having been committed is collected
//!     first: `CollectObjects`, under the current compactor epoch (rule 9), names allocated ids
//!     none of which is committed (otherwise it is a [`Conflict`](crate::ErrorDetail::Conflict))
//!     and records them as collected. A commit or replacement that names a collected id is a
//!     `Conflict`. Changes apply one at a time, so of a commit and a collection naming the same
//!     id only the first succeeds: a late commit can never reference an object the collector
//!     deletes. Collecting ids that are all collected already is rule 5.

use std::collections::{BTreeMap, BTreeSet};

use super::change::{Change, ManifestStreamRange, ObjectKind, ObjectMeta, Outcome};
use super::state::{ManifestState, NodeMeta, StreamMeta, StreamObject, StreamStatus};
use crate::error::{Error, ErrorDetail, Result};
use crate::types::{Epoch, NodeId, ObjectId, Offset, StreamId};

impl ManifestState {
    /// Applies `change` if the current state allows it, and says what it assigned. On error the
    /// state is unchanged. Does not touch [`ManifestState::seq`]: the log does that.
    pub fn apply(&mut self, change: &Change) -> Result<Outcome> {
        match change {
            Change::OpenNode { node } => self.open_node(*node),
            Change::FenceNode { node, epoch } => self.fence_node(*node, *epoch),
            Change::CreateStream { node, node_epoch } => self.create_stream(*node, *node_epoch),
            Change::OpenStream {
                stream,
                node,
                node_epoch,
            } => self.open_stream(*stream, *node, *node_epoch),
            Change::CloseStream {
                stream,
                epoch,
                node,
                node_epoch,
            } => self.close_stream(*stream, *epoch, *node, *node_epoch),
            Change::TrimStream {
                stream,
                epoch,
                new_start,
                compactor_epoch,
            } => {
                if let Some(compactor) = compactor_epoch {
                    self.check_compactor(*compactor)?;
                }
                self.trim_stream(*stream, *epoch, *new_start)
            }
            Change::DeleteStream { stream, epoch } => self.delete_stream(*stream, *epoch),
            Change::AllocateObjectIds {
                node,
                node_epoch,
                count,
            } => self.allocate_object_ids(*node, *node_epoch, *count),
            Change::CommitObjects {
                node,
                node_epoch,
                objects,
                wal_floor,
            } => {
                let outcome = self.commit_objects(*node, *node_epoch, objects)?;
                if let Some(floor) = wal_floor {
                    self.raise_wal_floor(*node, *floor);
                }
                Ok(outcome)
            }
            Change::TrimWal {
                node,
                node_epoch,
                owner,
                floor,
            } => self.trim_wal(*node, *node_epoch, *owner, *floor),
            Change::ReplaceObjects {
                compactor_epoch,
                removed,
                added,
            } => self.replace_objects(*compactor_epoch, removed, added),
            Change::OpenCompactor => {
                let epoch = next_epoch(self.compactor_epoch)?;
                self.compactor_epoch = epoch;
                Ok(Outcome::CompactorEpoch(epoch))
            }
            Change::CollectObjects {
                compactor_epoch,
                ids,
            } => self.collect_objects(*compactor_epoch, ids),
        }
    }

    fn open_node(&mut self, node: NodeId) -> Result<Outcome> {
        let current = self.nodes.get(&node).map_or(Epoch(0), |n| n.epoch);
        let epoch = next_epoch(current)?;
        let meta = self.nodes.entry(node).or_insert(NodeMeta {
            epoch,
            fenced_epoch: None,
            wal_floor: 0,
        });
        meta.epoch = epoch;
        Ok(Outcome::NodeEpoch(epoch))
    }

    fn fence_node(&mut self, node: NodeId, epoch: Epoch) -> Result<Outcome> {
        let Some(meta) = self.nodes.get_mut(&node) else {
            return Err(Error::invalid(format!(
                "cannot fence {node}: it never started"
            )));
        };
        if epoch.get() == 0 || epoch > meta.epoch {
            return Err(Error::invalid(format!(
                "cannot fence {node} at {epoch}: its epoch is {}",
                meta.epoch
            )));
        }
        if meta.is_fenced(epoch) {
            return Ok(Outcome::AlreadyApplied);
        }
        meta.fenced_epoch = Some(epoch);
        Ok(Outcome::Done)
    }

    fn trim_wal(
        &mut self,
        node: NodeId,
        node_epoch: Epoch,
        owner: NodeId,
        floor: u64,
    ) -> Result<Outcome> {
        self.check_live(node, node_epoch)?;
        let Some(meta) = self.nodes.get(&owner) else {
            return Err(Error::invalid(format!(
                "cannot trim the WAL of {owner}: it never started"
            )));
        };
        if owner != node && !meta.is_fenced(meta.epoch) {
            return Err(Error::fenced(format!(
                "{node} cannot trim the WAL of {owner}: {owner} is live at {}",
                meta.epoch
            )));
        }
        if floor <= meta.wal_floor {
            return Ok(Outcome::AlreadyApplied);
        }
        self.raise_wal_floor(owner, floor);
        Ok(Outcome::Done)
    }

    /// The floor only rises: a commit replayed out of date never lowers it.
    fn raise_wal_floor(&mut self, node: NodeId, floor: u64) {
        if let Some(meta) = self.nodes.get_mut(&node) {
            meta.wal_floor = meta.wal_floor.max(floor);
        }
    }

    fn create_stream(&mut self, node: NodeId, node_epoch: Epoch) -> Result<Outcome> {
        self.check_live(node, node_epoch)?;
        let id = self.next_stream_id;
        let next = id
            .get()
            .checked_add(1)
            .ok_or_else(|| Error::internal("stream ids exhausted"))?;
        self.next_stream_id = StreamId(next);
        self.streams.insert(
            id,
            StreamMeta {
                id,
                status: StreamStatus::Open,
                epoch: Epoch(1),
                owner: node,
                owner_node_epoch: node_epoch,
                start: Offset(0),
                end: Offset(0),
                objects: BTreeMap::new(),
            },
        );
        Ok(Outcome::StreamCreated(id))
    }

    fn open_stream(
        &mut self,
        stream: StreamId,
        node: NodeId,
        node_epoch: Epoch,
    ) -> Result<Outcome> {
        self.check_live(node, node_epoch)?;
        let meta = self.live_stream(stream)?;
        if meta.status == StreamStatus::Open {
            let owner_fenced = self
                .nodes
                .get(&meta.owner)
                .is_some_and(|owner| owner.is_fenced(meta.owner_node_epoch));
            if !owner_fenced {
                return Err(ErrorDetail::StreamBusy {
                    stream,
                    owner: meta.owner,
                    epoch: meta.epoch,
                }
                .into());
            }
        }
        let epoch = next_epoch(meta.epoch)?;
        let meta = self.stream_mut(stream)?;
        meta.status = StreamStatus::Open;
        meta.epoch = epoch;
        meta.owner = node;
        meta.owner_node_epoch = node_epoch;
        Ok(Outcome::StreamOpened {
            epoch,
            start: meta.start,
            end: meta.end,
        })
    }

    fn close_stream(
        &mut self,
        stream: StreamId,
        epoch: Epoch,
        node: NodeId,
        node_epoch: Epoch,
    ) -> Result<Outcome> {
        self.check_live(node, node_epoch)?;
        let meta = self.live_stream(stream)?;
        check_stream_epoch(meta, epoch)?;
        if meta.status == StreamStatus::Closed {
            return Ok(Outcome::AlreadyApplied);
        }
        check_owner(self, meta, node, node_epoch)?;
        self.stream_mut(stream)?.status = StreamStatus::Closed;
        Ok(Outcome::Done)
    }

    fn trim_stream(
        &mut self,
        stream: StreamId,
        epoch: Epoch,
        new_start: Offset,
    ) -> Result<Outcome> {
        let meta = self.live_stream(stream)?;
        check_stream_epoch(meta, epoch)?;
        if new_start < meta.start || new_start > meta.end {
            return Err(ErrorDetail::OffsetOutOfRange {
                stream,
                offset: new_start,
                start: meta.start,
                end: meta.end,
            }
            .into());
        }
        if new_start == meta.start {
            return Ok(Outcome::AlreadyApplied);
        }
        self.stream_mut(stream)?.start = new_start;
        Ok(Outcome::Done)
    }

    fn delete_stream(&mut self, stream: StreamId, epoch: Epoch) -> Result<Outcome> {
        let meta = self
            .streams
            .get(&stream)
            .ok_or(ErrorDetail::UnknownStream(stream))?;
        if meta.status == StreamStatus::Deleted {
            return if meta.epoch == epoch {
                Ok(Outcome::AlreadyApplied)
            } else {
                Err(ErrorDetail::StreamDeleted(stream).into())
            };
        }
        check_stream_epoch(meta, epoch)?;
        self.stream_mut(stream)?.status = StreamStatus::Deleted;
        Ok(Outcome::Done)
    }

    fn allocate_object_ids(
        &mut self,
        node: NodeId,
        node_epoch: Epoch,
        count: u64,
    ) -> Result<Outcome> {
        self.check_live(node, node_epoch)?;
        if count == 0 {
            return Err(Error::invalid("allocating zero object ids"));
        }
        let first = self.next_object_id.get();
        let end = first
            .checked_add(count)
            .ok_or_else(|| Error::invalid(format!("cannot allocate {count} more object ids")))?;
        self.next_object_id = ObjectId(end);
        Ok(Outcome::ObjectIds(first..end))
    }

    fn commit_objects(
        &mut self,
        node: NodeId,
        node_epoch: Epoch,
        objects: &[ObjectMeta],
    ) -> Result<Outcome> {
        if objects.is_empty() {
            return Err(Error::invalid("a commit of no objects"));
        }
        // A replay of a commit that already happened succeeds, even from a node fenced since:
        // the objects are in the manifest, and saying otherwise would be untrue.
        let same = objects
            .iter()
            .filter(|o| self.objects.get(&o.id) == Some(*o))
            .count();
        if same == objects.len() {
            return Ok(Outcome::AlreadyApplied);
        }
        if let Some(o) = objects.iter().find(|o| self.objects.contains_key(&o.id)) {
            return Err(ErrorDetail::Conflict(format!(
                "{} is already committed with other contents, or with other objects",
                o.id
            ))
            .into());
        }
        self.check_live(node, node_epoch)?;
        self.check_new_objects(objects)?;
        self.check_not_collected(objects)?;
        let mut ends: BTreeMap<StreamId, Offset> = BTreeMap::new();
        for range in objects.iter().flat_map(|o| &o.ranges) {
            let meta = self.live_stream(range.stream)?;
            if meta.status != StreamStatus::Open {
                return Err(ErrorDetail::StreamClosed(range.stream).into());
            }
            check_owner(self, meta, node, node_epoch)?;
            check_stream_epoch(meta, range.epoch)?;
            let expected = ends.get(&range.stream).copied().unwrap_or(meta.end);
            if range.start != expected {
                return Err(ErrorDetail::Conflict(format!(
                    "{}: a committed range must start at {expected}, this one starts at {}",
                    range.stream, range.start
                ))
                .into());
            }
            ends.insert(range.stream, range.end);
        }
        for object in objects {
            self.insert_object(object)?;
        }
        for (stream, end) in ends {
            self.stream_mut(stream)?.end = end;
        }
        Ok(Outcome::Done)
    }

    /// `compactor_epoch` is the current compactor epoch: an older one is fenced.
    fn check_compactor(&self, compactor_epoch: Epoch) -> Result<()> {
        if compactor_epoch < self.compactor_epoch {
            return Err(Error::fenced(format!(
                "compactor {compactor_epoch} is older than the current {}",
                self.compactor_epoch
            )));
        }
        if compactor_epoch != self.compactor_epoch || compactor_epoch.get() == 0 {
            return Err(Error::invalid(format!(
                "compactor {compactor_epoch} never started (current is {})",
                self.compactor_epoch
            )));
        }
        Ok(())
    }

    fn replace_objects(
        &mut self,
        compactor_epoch: Epoch,
        removed: &[ObjectId],
        added: &[ObjectMeta],
    ) -> Result<Outcome> {
        self.check_compactor(compactor_epoch)?;
        if removed.is_empty() {
            return Err(Error::invalid("a replacement that removes nothing"));
        }
        let removed_set: BTreeSet<ObjectId> = removed.iter().copied().collect();
        if removed_set.len() != removed.len() {
            return Err(Error::invalid("a replacement removes an object twice"));
        }
        let replayed = removed_set
            .iter()
            .all(|id| *id < self.next_object_id && !self.objects.contains_key(id))
            && added.iter().all(|o| self.objects.get(&o.id) == Some(o));
        if replayed {
            return Ok(Outcome::AlreadyApplied);
        }
        let mut removed_metas = Vec::with_capacity(removed.len());
        for id in removed {
            let meta = self.objects.get(id).ok_or_else(|| {
                ErrorDetail::Conflict(format!("{id} is not in the manifest (replaced already?)"))
            })?;
            removed_metas.push(meta);
        }
        if let Some(o) = added.iter().find(|o| self.objects.contains_key(&o.id)) {
            return Err(ErrorDetail::Conflict(format!("{} is already committed", o.id)).into());
        }
        self.check_new_objects(added)?;
        self.check_not_collected(added)?;
        let before = coverage(removed_metas.iter().flat_map(|o| &o.ranges))?;
        let after = coverage(added.iter().flat_map(|o| &o.ranges))?;
        for (stream, intervals) in &after {
            let Some(held) = before.get(stream) else {
                return Err(Error::invalid(format!(
                    "the replacement adds {stream}, which the removed objects do not hold"
                )));
            };
            if let Some((start, end)) = intervals.iter().find(|i| !contained(**i, held)) {
                return Err(Error::invalid(format!(
                    "the replacement adds {stream} {start}..{end}, which the removed objects do not hold"
                )));
            }
        }
        for (stream, held) in &before {
            let meta = self
                .streams
                .get(stream)
                .ok_or(ErrorDetail::UnknownStream(*stream))?;
            let kept = after.get(stream).map_or(&[][..], Vec::as_slice);
            if meta.status == StreamStatus::Deleted {
                continue;
            }
            if let Some((start, end)) = gaps(held, kept).find(|(_, end)| *end > meta.start) {
                return Err(Error::invalid(format!(
                    "the replacement drops {stream} {start}..{end}, which is above its start {}",
                    meta.start
                )));
            }
        }
        for id in removed {
            self.remove_object(*id);
        }
        for object in added {
            self.insert_object(object)?;
        }
        Ok(Outcome::Done)
    }

    /// Rule 10: records allocated, uncommitted ids as collected.
    fn collect_objects(&mut self, compactor_epoch: Epoch, ids: &[ObjectId]) -> Result<Outcome> {
        self.check_compactor(compactor_epoch)?;
        if ids.is_empty() {
            return Err(Error::invalid("a collection of no objects"));
        }
        let mut fresh = BTreeSet::new();
        for id in ids {
            if *id >= self.next_object_id {
                return Err(Error::invalid(format!("{id} was never allocated")));
            }
            if self.objects.contains_key(id) {
                return Err(
                    ErrorDetail::Conflict(format!("{id} is committed: it is not garbage")).into(),
                );
            }
            if !self.collected.contains(id) {
                fresh.insert(*id);
            }
        }
        if fresh.is_empty() {
            return Ok(Outcome::AlreadyApplied);
        }
        self.collected.extend(fresh);
        Ok(Outcome::Done)
    }

    /// Rule 10: none of `objects` was collected as garbage.
    fn check_not_collected(&self, objects: &[ObjectMeta]) -> Result<()> {
        match objects.iter().find(|o| self.collected.contains(&o.id)) {
            Some(o) => Err(ErrorDetail::Conflict(format!(
                "{} was collected as garbage: its object may be deleted, upload it again",
                o.id
            ))
            .into()),
            None => Ok(()),
        }
    }

    /// The node is known and `epoch` is its live epoch.
    fn check_live(&self, node: NodeId, epoch: Epoch) -> Result<()> {
        let meta = self
            .nodes
            .get(&node)
            .ok_or_else(|| Error::invalid(format!("{node} never started")))?;
        if epoch > meta.epoch {
            return Err(Error::invalid(format!(
                "{node} has no {epoch} yet (its epoch is {})",
                meta.epoch
            )));
        }
        if epoch < meta.epoch {
            return Err(Error::fenced(format!(
                "{node} {epoch} is stale: the node restarted at {}",
                meta.epoch
            )));
        }
        if meta.is_fenced(epoch) {
            return Err(Error::fenced(format!("{node} was fenced at {epoch}")));
        }
        Ok(())
    }

    /// The stream exists and is not deleted.
    fn live_stream(&self, stream: StreamId) -> Result<&StreamMeta> {
        let meta = self
            .streams
            .get(&stream)
            .ok_or(ErrorDetail::UnknownStream(stream))?;
        if meta.status == StreamStatus::Deleted {
            return Err(ErrorDetail::StreamDeleted(stream).into());
        }
        Ok(meta)
    }

    fn stream_mut(&mut self, stream: StreamId) -> Result<&mut StreamMeta> {
        self.streams
            .get_mut(&stream)
            .ok_or_else(|| Error::internal(format!("{stream} vanished while applying a change")))
    }

    /// Objects about to enter the manifest: distinct, allocated, well formed.
    fn check_new_objects(&self, objects: &[ObjectMeta]) -> Result<()> {
        let mut ids = BTreeSet::new();
        for object in objects {
            if !ids.insert(object.id) {
                return Err(Error::invalid(format!("{} appears twice", object.id)));
            }
            if object.id >= self.next_object_id {
                return Err(Error::invalid(format!("{} was never allocated", object.id)));
            }
            let Some(first) = object.ranges.first() else {
                return Err(Error::invalid(format!("{} holds no range", object.id)));
            };
            if object.kind == ObjectKind::Stream
                && object.ranges.iter().any(|r| r.stream != first.stream)
            {
                return Err(Error::invalid(format!(
                    "stream object {} holds ranges of several streams",
                    object.id
                )));
            }
            if let Some(r) = object.ranges.iter().find(|r| r.end <= r.start) {
                return Err(Error::invalid(format!(
                    "{} holds an empty range {}..{} of {}",
                    object.id, r.start, r.end, r.stream
                )));
            }
            for range in &object.ranges {
                if !self.streams.contains_key(&range.stream) {
                    return Err(ErrorDetail::UnknownStream(range.stream).into());
                }
            }
        }
        Ok(())
    }

    /// Adds a validated object and its index entries.
    fn insert_object(&mut self, object: &ObjectMeta) -> Result<()> {
        for range in &object.ranges {
            self.stream_mut(range.stream)?.objects.insert(
                range.start,
                StreamObject {
                    object: object.id,
                    end: range.end,
                    size: object.size,
                },
            );
        }
        self.objects.insert(object.id, object.clone());
        Ok(())
    }

    /// Removes a committed object and its index entries.
    fn remove_object(&mut self, id: ObjectId) {
        let Some(object) = self.objects.remove(&id) else {
            return;
        };
        for range in &object.ranges {
            if let Some(stream) = self.streams.get_mut(&range.stream) {
                if stream
                    .objects
                    .get(&range.start)
                    .is_some_and(|part| part.object == id)
                {
                    stream.objects.remove(&range.start);
                }
            }
        }
    }
}

fn next_epoch(epoch: Epoch) -> Result<Epoch> {
    epoch
        .get()
        .checked_add(1)
        .map(Epoch)
        .ok_or_else(|| Error::internal("epoch overflow"))
}

fn check_stream_epoch(meta: &StreamMeta, epoch: Epoch) -> Result<()> {
    if epoch < meta.epoch {
        return Err(Error::fenced(format!(
            "{} {epoch} is stale: the stream is at {}",
            meta.id, meta.epoch
        )));
    }
    if epoch > meta.epoch {
        return Err(Error::invalid(format!(
            "{} has no {epoch} yet (it is at {})",
            meta.id, meta.epoch
        )));
    }
    Ok(())
}

/// The stream must be owned by `node`, with two allowances:
/// - an ownership taken by an earlier epoch of the same node counts: a restarted node (live at
///   `node_epoch`, checked by the caller) commits and closes what its previous run left, while
///   that previous run, at an older epoch, is fenced;
/// - a stream whose owner was fenced at the epoch it opened the stream with may be finished by
///   any live node: that is how `recover_node` commits a failed node's WAL and closes its streams.
fn check_owner(
    state: &ManifestState,
    meta: &StreamMeta,
    node: NodeId,
    node_epoch: Epoch,
) -> Result<()> {
    if meta.owner == node && meta.owner_node_epoch <= node_epoch {
        return Ok(());
    }
    let owner_fenced = state
        .nodes
        .get(&meta.owner)
        .is_some_and(|owner| owner.is_fenced(meta.owner_node_epoch));
    if owner_fenced {
        return Ok(());
    }
    Err(Error::fenced(format!(
        "{} is owned by {} at {}, not {node} at {node_epoch}",
        meta.id, meta.owner, meta.owner_node_epoch
    )))
}

/// Intervals `(start, end)` of offsets per stream, sorted and merged where they touch.
/// Overlapping ranges are an error: no two objects may hold the same offset.
type Coverage = BTreeMap<StreamId, Vec<(Offset, Offset)>>;

fn coverage<'a>(ranges: impl Iterator<Item = &'a ManifestStreamRange>) -> Result<Coverage> {
    let mut per_stream: Coverage = BTreeMap::new();
    for r in ranges {
        per_stream
            .entry(r.stream)
            .or_default()
            .push((r.start, r.end));
    }
    for (stream, intervals) in per_stream.iter_mut() {
        intervals.sort();
        let mut merged: Vec<(Offset, Offset)> = Vec::with_capacity(intervals.len());
        for &(start, end) in intervals.iter() {
            match merged.last_mut() {
                Some(last) if start < last.1 => {
                    return Err(Error::invalid(format!(
                        "{stream}: ranges overlap at {start}"
                    )))
                }
                Some(last) if start == last.1 => last.1 = end,
                _ => merged.push((start, end)),
            }
        }
        *intervals = merged;
    }
    Ok(per_stream)
}

/// True when `interval` lies inside one of the merged `held` intervals.
fn contained(interval: (Offset, Offset), held: &[(Offset, Offset)]) -> bool {
    held.iter()
        .any(|&(start, end)| start <= interval.0 && interval.1 <= end)
}

/// The parts of the merged `held` intervals that no interval of `kept` covers; `kept` is
/// merged, sorted and inside `held`.
fn gaps<'a>(
    held: &'a [(Offset, Offset)],
    kept: &'a [(Offset, Offset)],
) -> impl Iterator<Item = (Offset, Offset)> + 'a {
    held.iter().flat_map(move |&(start, end)| {
        let mut pieces = Vec::new();
        let mut cursor = start;
        for &(k_start, k_end) in kept.iter().filter(|k| k.0 >= start && k.1 <= end) {
            if k_start > cursor {
                pieces.push((cursor, k_start));
            }
            cursor = cursor.max(k_end);
        }
        if cursor < end {
            pieces.push((cursor, end));
        }
        pieces
    })
}

#[cfg(test)]
#[path = "apply_tests.rs"]
mod tests;
