//! Planning: from a manifest state to a list of object replacements.
//!
//! [`plan`] is a pure function of the manifest state, the settings and a set of objects to leave
//! alone. Each [`Plan`] removes a set of objects and adds new ones holding the same offsets of
//! every stream, minus what is below a stream's trim offset or belongs to a deleted stream:
//! exactly what the manifest's `ReplaceObjects` validation allows. No object is in two plans.
//!
//! Kinds, in the order they are produced (cheapest and most useful first):
//!
//! 1. [`PlanKind::DeleteDead`]: objects holding nothing live (every range below its stream's
//!    trim offset, or of a deleted stream) leave the manifest without a replacement.
//! 2. [`PlanKind::SplitStreamSet`]: a stream set object of at least
//!    `max_stream_set_object_bytes` is split into one stream object per stream.
//! 3. [`PlanKind::MergeStreamSet`]: `fanout` stream set objects of one size tier merge; streams
//!    with at least `stream_split_bytes` in them get stream objects of their own, the rest share
//!    a new stream set object.
//! 4. [`PlanKind::MergeStreamObjects`]: neighbouring stream objects of one stream merge when the
//!    newer ones together outgrow the older one (see `Planner::stream_window`), so sizes shrink
//!    geometrically from old to new.
//! 5. [`PlanKind::DropTrimmed`]: an object at least half of whose records are below its
//!    streams' trim offsets is rewritten without them.
//!
//! The manifest does not record bytes per range, so a range's bytes are estimated as the
//! object's size times the range's share of the object's records.
//!
//! # Layout of outputs
//!
//! The object format stores a stream's blocks contiguously within an object, so an output holds
//! at most one contiguous run of each stream. When a merge gathers two runs of one stream that
//! are not adjacent (another object holds the offsets between them), each run goes into a stream
//! object of its own; those merge with their neighbours later. So a merge of stream set objects
//! always leaves at most one stream set object, and their number only falls.

use std::collections::{BTreeMap, BTreeSet};

use objstream::manifest::{
    ManifestState, ManifestStreamRange, ObjectKind, ObjectMeta, StreamStatus,
};
use objstream::{ObjectId, Offset, StreamId};

use crate::settings::CompactorSettings;

/// What a plan does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PlanKind {
    /// Removes objects that hold nothing live.
    DeleteDead,
    /// Splits a large stream set object into stream objects.
    SplitStreamSet,
    /// Merges small stream set objects, splitting out big streams.
    MergeStreamSet,
    /// Merges neighbouring stream objects of one stream.
    MergeStreamObjects,
    /// Rewrites an object without its trimmed data.
    DropTrimmed,
}

/// A range of a source object to copy: the batches of `range`, minus those that end at or
/// below `keep_from`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Piece {
    /// The object holding it.
    pub source: ObjectId,
    /// That object's size.
    pub source_size: u64,
    /// The range as the manifest records it.
    pub range: ManifestStreamRange,
    /// The stream's trim offset when planned: batches ending at or below it are dropped.
    pub keep_from: Offset,
}

/// One new object: its shape and the pieces it copies, in (stream, offset) order, each
/// stream's pieces contiguous.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedObject {
    /// Stream set or stream object.
    pub kind: ObjectKind,
    /// What it copies.
    pub pieces: Vec<Piece>,
}

/// One replacement: committed as one `ReplaceObjects` manifest record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// What it does.
    pub kind: PlanKind,
    /// The objects that leave the manifest.
    pub removed: Vec<ObjectId>,
    /// The objects to write in their place (empty for [`PlanKind::DeleteDead`]).
    pub outputs: Vec<PlannedObject>,
    /// The bytes of the removed objects (an upper bound of what executing the plan reads).
    pub input_bytes: u64,
}

/// The plans for `state`, leaving the objects in `skip` alone unless they hold nothing live.
/// Plans are disjoint and each
/// holds at most `max_objects_per_plan` removed objects and `max_plan_bytes` input bytes.
pub fn plan(
    state: &ManifestState,
    settings: &CompactorSettings,
    skip: &BTreeSet<ObjectId>,
) -> Vec<Plan> {
    let mut planner = Planner {
        state,
        settings,
        taken: BTreeSet::new(),
        plans: Vec::new(),
    };
    // Objects to skip are still removed once they hold nothing live.
    planner.dead();
    planner.taken.extend(skip.iter().copied());
    planner.stream_sets();
    planner.stream_objects();
    planner.trimmed();
    planner.plans
}

/// How much of an object is live.
#[derive(Clone, Copy, Debug, Default)]
struct Liveness {
    records: u64,
    live_records: u64,
    /// A range names a stream the state does not know: leave the object alone.
    unknown: bool,
}

struct Planner<'a> {
    state: &'a ManifestState,
    settings: &'a CompactorSettings,
    taken: BTreeSet<ObjectId>,
    plans: Vec<Plan>,
}

impl<'a> Planner<'a> {
    /// The trim offset of a range's stream, or `None` when the range holds nothing live.
    fn keep_from(&self, r: &ManifestStreamRange) -> Option<Offset> {
        let s = self.state.stream(r.stream)?;
        if s.status == StreamStatus::Deleted || r.end <= s.start {
            return None;
        }
        Some(s.start)
    }

    fn liveness(&self, o: &ObjectMeta) -> Liveness {
        let mut l = Liveness::default();
        for r in &o.ranges {
            let records = r.end.get() - r.start.get();
            l.records += records;
            if self.state.stream(r.stream).is_none() {
                l.unknown = true;
            }
            if let Some(keep) = self.keep_from(r) {
                l.live_records += r.end.get() - r.start.get().max(keep.get());
            }
        }
        l
    }

    /// The estimated bytes of `records` records of object `o`.
    fn estimate(o: &ObjectMeta, records: u64, total: u64) -> u64 {
        if total == 0 {
            return 0;
        }
        ((u128::from(o.size) * u128::from(records)) / u128::from(total)) as u64
    }

    /// Objects in no plan yet, whose streams are all known.
    fn free(&self) -> Vec<&'a ObjectMeta> {
        let state: &'a ManifestState = self.state;
        state
            .objects()
            .filter(|o| !self.taken.contains(&o.id) && !self.liveness(o).unknown)
            .collect()
    }

    fn push(&mut self, plan: Plan) {
        self.taken.extend(plan.removed.iter().copied());
        self.plans.push(plan);
    }

    fn dead(&mut self) {
        let dead: Vec<&ObjectMeta> = self
            .free()
            .into_iter()
            .filter(|o| self.liveness(o).live_records == 0)
            .collect();
        let chunks: Vec<Plan> = dead
            .chunks(self.settings.max_objects_per_plan)
            .map(|chunk| Plan {
                kind: PlanKind::DeleteDead,
                removed: chunk.iter().map(|o| o.id).collect(),
                outputs: Vec::new(),
                input_bytes: 0,
            })
            .collect();
        for p in chunks {
            self.push(p);
        }
    }

    fn stream_sets(&mut self) {
        let sets: Vec<&ObjectMeta> = self
            .free()
            .into_iter()
            .filter(|o| o.kind == ObjectKind::StreamSet)
            .collect();
        let mut by_tier: BTreeMap<u32, Vec<&ObjectMeta>> = BTreeMap::new();
        let mut split = Vec::new();
        for o in sets {
            if o.size >= self.settings.max_stream_set_object_bytes {
                split.push(o);
            } else {
                by_tier
                    .entry(self.settings.tier(o.size))
                    .or_default()
                    .push(o);
            }
        }
        for o in split {
            if o.size > self.settings.max_plan_bytes {
                tracing::warn!(object = %o.id, size = o.size, "a stream set object larger than max_plan_bytes is left unsplit");
                continue;
            }
            let outputs = self.outputs(&[o], 0);
            self.push(Plan {
                kind: PlanKind::SplitStreamSet,
                removed: vec![o.id],
                outputs,
                input_bytes: o.size,
            });
        }
        let fanout = self.settings.fanout;
        for (_, objects) in by_tier {
            let mut group: Vec<&ObjectMeta> = Vec::new();
            let mut bytes = 0u64;
            for o in objects {
                if bytes + o.size > self.settings.max_plan_bytes && group.len() >= 2 {
                    self.merge_sets(&group, bytes);
                    group.clear();
                    bytes = 0;
                }
                group.push(o);
                bytes += o.size;
                if group.len() == fanout.max(2) {
                    self.merge_sets(&group, bytes);
                    group.clear();
                    bytes = 0;
                }
            }
        }
    }

    fn merge_sets(&mut self, group: &[&ObjectMeta], bytes: u64) {
        let outputs = self.outputs(group, self.settings.stream_split_bytes);
        self.push(Plan {
            kind: PlanKind::MergeStreamSet,
            removed: group.iter().map(|o| o.id).collect(),
            outputs,
            input_bytes: bytes,
        });
    }

    /// The outputs holding the live data of `objects`: streams with at least `split_bytes`
    /// (every stream when it is 0), or with runs that are not adjacent, in stream objects, one
    /// per run; the rest in one stream set object.
    fn outputs(&self, objects: &[&ObjectMeta], split_bytes: u64) -> Vec<PlannedObject> {
        let mut per_stream: BTreeMap<StreamId, (Vec<Piece>, u64)> = BTreeMap::new();
        for o in objects {
            let total: u64 = o.ranges.iter().map(|r| r.end.get() - r.start.get()).sum();
            for r in &o.ranges {
                let Some(keep_from) = self.keep_from(r) else {
                    continue;
                };
                let live = r.end.get() - r.start.get().max(keep_from.get());
                let entry = per_stream.entry(r.stream).or_default();
                entry.0.push(Piece {
                    source: o.id,
                    source_size: o.size,
                    range: *r,
                    keep_from,
                });
                entry.1 += Self::estimate(o, live, total);
            }
        }
        let mut own: Vec<PlannedObject> = Vec::new();
        let mut shared: Vec<Piece> = Vec::new();
        for (_, (mut pieces, bytes)) in per_stream {
            pieces.sort_by_key(|p| p.range.start);
            let runs = runs(pieces);
            if split_bytes == 0 || bytes >= split_bytes || runs.len() > 1 {
                own.extend(runs.into_iter().map(|pieces| PlannedObject {
                    kind: ObjectKind::Stream,
                    pieces,
                }));
            } else {
                shared.extend(runs.into_iter().flatten());
            }
        }
        if !shared.is_empty() {
            own.push(PlannedObject {
                kind: ObjectKind::StreamSet,
                pieces: shared,
            });
        }
        own
    }

    fn stream_objects(&mut self) {
        let mut plans = Vec::new();
        for s in self.state.streams() {
            if s.status == StreamStatus::Deleted {
                continue;
            }
            // The stream's objects in offset order, each once.
            let mut units: Vec<&ObjectMeta> = Vec::new();
            for part in s.objects.values() {
                if units.last().is_some_and(|u| u.id == part.object) {
                    continue;
                }
                if let Some(o) = self.state.object(part.object) {
                    units.push(o);
                }
            }
            let mergeable = |o: &ObjectMeta| {
                o.kind == ObjectKind::Stream
                    && !self.taken.contains(&o.id)
                    && o.size < self.settings.max_stream_object_bytes
            };
            for run in units.split(|o| !mergeable(o)) {
                if let Some(window) = self.stream_window(run) {
                    plans.push(self.merge_stream_objects(window));
                }
            }
        }
        for p in plans {
            self.push(p);
        }
    }

    /// The objects of `run` (neighbouring stream objects of one stream, oldest first) to merge
    /// now, if any: from the oldest object that its newer neighbours together outgrow,
    /// `size × (fanout - 1) ≤ newer bytes` (sizes counted as at least `min_object_bytes`), or
    /// from the oldest small object followed by `fanout - 1` others; as many newer ones as the
    /// size and count limits allow.
    ///
    /// So every object holds more than `fanout - 1` times all newer ones together: the total
    /// grows by a factor of `fanout` or more with each older object, down to `min_object_bytes`
    /// with fewer than `fanout` objects below it, and the count is logarithmic in the stream's
    /// size. A byte is rewritten each time its object grows by a factor of `fanout / (fanout -
    /// 1)` or more, a number of times logarithmic too.
    fn stream_window<'r>(&self, run: &'r [&'a ObjectMeta]) -> Option<&'r [&'a ObjectMeta]> {
        let min = self.settings.min_object_bytes;
        let factor = (self.settings.fanout.max(2) - 1) as u64;
        let mut newer: u64 = run.iter().map(|o| o.size).sum();
        let mut start = None;
        for (i, o) in run.iter().enumerate() {
            newer -= o.size;
            let newer_count = run.len() - 1 - i;
            if newer_count == 0 {
                break;
            }
            let outgrown = newer.saturating_mul(factor) >= o.size.max(min);
            let crowded = o.size < min && newer_count + 1 >= self.settings.fanout;
            if outgrown || crowded {
                start = Some(i);
                break;
            }
        }
        let start = start?;
        let cap = self
            .settings
            .max_stream_object_bytes
            .min(self.settings.max_plan_bytes);
        let mut bytes = 0u64;
        let mut end = start;
        while end < run.len()
            && end - start < self.settings.max_objects_per_plan
            && bytes + run[end].size <= cap
        {
            bytes += run[end].size;
            end += 1;
        }
        (end - start >= 2).then(|| &run[start..end])
    }

    fn merge_stream_objects(&self, window: &[&ObjectMeta]) -> Plan {
        let mut pieces: Vec<Piece> = window
            .iter()
            .flat_map(|o| {
                o.ranges.iter().filter_map(|r| {
                    self.keep_from(r).map(|keep_from| Piece {
                        source: o.id,
                        source_size: o.size,
                        range: *r,
                        keep_from,
                    })
                })
            })
            .collect();
        pieces.sort_by_key(|p| p.range.start);
        Plan {
            kind: PlanKind::MergeStreamObjects,
            removed: window.iter().map(|o| o.id).collect(),
            outputs: runs(pieces)
                .into_iter()
                .map(|pieces| PlannedObject {
                    kind: ObjectKind::Stream,
                    pieces,
                })
                .collect(),
            input_bytes: window.iter().map(|o| o.size).sum(),
        }
    }

    fn trimmed(&mut self) {
        let candidates: Vec<&ObjectMeta> = self
            .free()
            .into_iter()
            .filter(|o| {
                let l = self.liveness(o);
                l.live_records > 0
                    && l.live_records * 2 <= l.records
                    && o.size <= self.settings.max_plan_bytes
            })
            .collect();
        let plans: Vec<Plan> = candidates
            .into_iter()
            .map(|o| Plan {
                kind: PlanKind::DropTrimmed,
                removed: vec![o.id],
                outputs: match o.kind {
                    ObjectKind::StreamSet => self.outputs(&[o], u64::MAX),
                    ObjectKind::Stream => self.outputs(&[o], 0),
                },
                input_bytes: o.size,
            })
            .collect();
        for p in plans {
            self.push(p);
        }
    }
}

/// Splits pieces of one stream, sorted by start, into runs of adjacent pieces.
fn runs(pieces: Vec<Piece>) -> Vec<Vec<Piece>> {
    let mut out: Vec<Vec<Piece>> = Vec::new();
    for p in pieces {
        match out.last_mut() {
            Some(run)
                if run
                    .last()
                    .is_some_and(|last| last.range.end == p.range.start) =>
            {
                run.push(p)
            }
            _ => out.push(vec![p]),
        }
    }
    out
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
