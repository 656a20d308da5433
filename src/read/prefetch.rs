//! Prefetching for sequential readers: after a fetch, plan the next reads from the cursor's
//! window and issue them in the background.
//!
//! ```text
//! after_read ─► ReadAhead::advance ─► plan (cursor, from, budget) ─► spawned:
//!   1. per object ahead, in order, until the budget is spent:
//!        index cached          ─► its blocks of the stream
//!        index not cached, the stream fills most of the object (≥ 3/4 by the bytes per offset
//!        seen so far) and the object fits the budget and MAX_WHOLE_GET
//!                              ─► the whole object in one GET (blocks and index together)
//!        otherwise             ─► its index, read concurrently with the other missing ones
//!   2. adjacent missing blocks merge into range GETs of at most MAX_MERGED_GET
//!   3. each GET takes in-flight permits (its size in PERMIT_BYTES units) or planning stops
//!      there; the GET's blocks go into the block cache at low priority as pending read-ahead
//! ```
//!
//! Every GET is recorded as in flight (`InFlight`), so a reader that reaches a block before its
//! prefetch finished joins that GET rather than sending its own, and an index read of an object
//! being read whole is sliced from the same GET. A whole-object GET saves the index GET (half
//! the requests of a catch-up over small objects) and is one large read, which object stores
//! serve best; the bytes of other streams it brings are counted as read-ahead waste.
//!
//! Planning runs in a task of its own, so a reader never waits for the index reads planning
//! needs; the cursor plans nothing else until it finishes.

use std::sync::Arc;

use futures::FutureExt;

use objstream_cache::{BlockKey, Priority};

use super::inflight::SharedGet;
use super::limiter::ReadPriority;
use super::metrics::GetKind;
use super::objects::{ObjectReader, Part, MAX_MERGED_GET, PERMIT_BYTES};
use super::read_ahead::Plan;
use super::stats::Counters;
use crate::format::{IndexEntry, ObjectIndex};
use crate::types::{ObjectId, Offset, StreamId};

/// Read-ahead looks at most this many objects ahead of a reader.
const READ_AHEAD_OBJECTS: usize = 64;
/// The largest object read whole (by one GET, or two side by side).
pub(crate) const MAX_WHOLE_GET: u64 = 64 << 20;
/// An object read whole is split in two GETs when it is larger than twice this.
const WHOLE_SPLIT_BYTES: u64 = 8 << 20;

/// What planning decided for one object ahead.
enum Step {
    /// Its index is at hand: prefetch its blocks of the stream.
    Indexed(ObjectId, Arc<ObjectIndex>),
    /// Read its index first.
    NeedIndex(ObjectId, u64),
    /// Read it whole: (object, size, first offset of the stream to keep).
    Whole(ObjectId, u64, Offset),
}

/// A GET planning issues.
enum Action {
    /// Adjacent blocks of one object.
    Run(ObjectId, Vec<IndexEntry>),
    /// A whole object: (object, size, first offset of the stream to keep, end of its part).
    Whole(ObjectId, u64, Offset, Offset),
}

impl ObjectReader {
    /// Tells read-ahead that a fetch at `priority` read `[start, reached)` of `stream` from
    /// objects and, if the reader moves sequentially (or starts a scan of old data), starts
    /// planning the next prefetch in the background.
    pub(crate) async fn after_read(
        &self,
        stream: StreamId,
        start: Offset,
        reached: Offset,
        covering: &[Part],
        end: Offset,
        priority: ReadPriority,
    ) {
        let scan = priority == ReadPriority::CatchUp;
        let Some(plan) = self.shared.read_ahead.advance(stream, start, reached, scan) else {
            return;
        };
        // From the object the fetch started in: objects already planned past still tell how
        // many bytes an offset of this stream takes.
        let ahead: Vec<Part> = covering
            .iter()
            .filter(|p| p.3 > start)
            .take(READ_AHEAD_OBJECTS)
            .copied()
            .collect();
        let reader = self.clone();
        tokio::spawn(async move {
            reader.prefetch(stream, &plan, &ahead, end).await;
            reader.shared.read_ahead.finished(stream, &plan);
        });
    }

    async fn prefetch(&self, stream: StreamId, plan: &Plan, ahead: &[Part], end: Offset) {
        let steps = self.steps(stream, plan, ahead, end);
        // The missing indexes, read together.
        let missing = steps.iter().filter_map(|step| match step {
            Step::NeedIndex(id, size) => Some(self.index(*id, *size, ReadPriority::ReadAhead)),
            _ => None,
        });
        let mut read = futures::future::join_all(missing).await.into_iter();
        let mut resolved = Vec::with_capacity(steps.len());
        for step in steps {
            match step {
                Step::NeedIndex(id, _) => match read.next() {
                    Some(Ok(index)) => resolved.push(Step::Indexed(id, index)),
                    // A failed index read ends planning there; the reader meets the error itself.
                    _ => break,
                },
                other => resolved.push(other),
            }
        }
        let (actions, walked_to) = self.actions(stream, plan, ahead, resolved, end);
        self.issue(stream, plan, actions, walked_to, end);
    }

    /// What to do with each object ahead, by the estimated budget (no I/O).
    fn steps(&self, stream: StreamId, plan: &Plan, ahead: &[Part], end: Offset) -> Vec<Step> {
        let mut steps = Vec::new();
        let mut budget = plan.budget;
        let mut bytes_per_offset: Option<f64> = None;
        let max_in_flight = u64::from(self.shared.read_ahead_units) * PERMIT_BYTES;
        for &(id, size, first, last) in ahead {
            if budget == 0 {
                break;
            }
            if let Some(index) = self.cached_index(id) {
                let part = index.entries_for(stream, first, last);
                if let (Some(a), Some(b)) = (part.first(), part.last()) {
                    let offsets = b.end.0.saturating_sub(a.start.0);
                    let bytes: u64 = part.iter().map(|e| u64::from(e.size)).sum();
                    if offsets > 0 {
                        bytes_per_offset = Some(bytes as f64 / offsets as f64);
                    }
                }
                let entries = index.entries_for(stream, plan.from.max(first), end);
                if !entries.is_empty() {
                    let bytes: u64 = entries.iter().map(|e| u64::from(e.size)).sum();
                    budget = budget.saturating_sub(bytes);
                    steps.push(Step::Indexed(id, index));
                }
                continue;
            }
            if last <= plan.from {
                continue;
            }
            let from = plan.from.max(first);
            let offsets = last.0.min(end.0).saturating_sub(from.0);
            let guess = bytes_per_offset.map(|r| ((r * offsets as f64) as u64).min(size));
            // A whole object may overshoot what is left of the budget (by less than one object):
            // cutting it at the budget would cost an index GET now and a second range GET later.
            let whole = first >= plan.from
                && size <= MAX_WHOLE_GET.min(max_in_flight)
                && guess.is_some_and(|g| g.saturating_mul(4) >= size.saturating_mul(3));
            budget = budget.saturating_sub(guess.unwrap_or(size));
            steps.push(if whole {
                Step::Whole(id, size, from)
            } else {
                Step::NeedIndex(id, size)
            });
        }
        steps
    }

    /// The GETs to issue, in order, within the budget, and how far they reach.
    fn actions(
        &self,
        stream: StreamId,
        plan: &Plan,
        ahead: &[Part],
        steps: Vec<Step>,
        end: Offset,
    ) -> (Vec<Action>, Offset) {
        let s = &self.shared;
        let mut budget = plan.budget;
        let mut walked_to = plan.from;
        let mut actions = Vec::new();
        for step in steps {
            if budget == 0 {
                break;
            }
            let (id, index) = match step {
                Step::Whole(id, size, from) => {
                    budget = budget.saturating_sub(size);
                    let part_end = ahead
                        .iter()
                        .find(|p| p.0 == id)
                        .map_or(from, |p| p.3.min(end));
                    walked_to = part_end;
                    actions.push(Action::Whole(id, size, from, part_end));
                    continue;
                }
                Step::Indexed(id, index) => (id, index),
                Step::NeedIndex(..) => break,
            };
            let mut run: Vec<IndexEntry> = Vec::new();
            for e in index.entries_for(stream, plan.from, end) {
                if budget == 0 {
                    break;
                }
                budget = budget.saturating_sub(u64::from(e.size));
                walked_to = e.end;
                let key = BlockKey::new(id.0, e.position);
                let held = s.blocks.contains(&key)
                    || s.read_ahead.is_pending(&key)
                    || s.inflight.join(id, &e.byte_range()).is_some();
                if held {
                    if !run.is_empty() {
                        actions.push(Action::Run(id, std::mem::take(&mut run)));
                    }
                    continue;
                }
                let contiguous = run
                    .last()
                    .is_some_and(|last| last.byte_range().end == e.position);
                let run_bytes: u64 = run.iter().map(|r| u64::from(r.size)).sum();
                if !run.is_empty()
                    && (!contiguous || run_bytes + u64::from(e.size) > MAX_MERGED_GET)
                {
                    actions.push(Action::Run(id, std::mem::take(&mut run)));
                }
                run.push(*e);
            }
            if !run.is_empty() {
                actions.push(Action::Run(id, run));
            }
        }
        (actions, walked_to)
    }

    /// Sends the GETs of `actions` in order while in-flight permits last. The GETs are created
    /// (and recorded as in flight, so a reader can join them) at once; they start in plan
    /// order as turns free up, unless a reader that needs them now polls them first.
    fn issue(
        &self,
        stream: StreamId,
        plan: &Plan,
        actions: Vec<Action>,
        mut walked_to: Offset,
        end: Offset,
    ) {
        let s = &self.shared;
        let mut works: Vec<(u32, futures::future::BoxFuture<'static, ()>)> = Vec::new();
        for action in actions {
            let (bytes, first) = match &action {
                Action::Run(_, run) => (
                    run.iter().map(|e| u64::from(e.size)).sum::<u64>(),
                    run.first().map_or(plan.from, |e| e.start),
                ),
                Action::Whole(_, size, from, _) => (*size, *from),
            };
            let units = u32::try_from(bytes.div_ceil(PERMIT_BYTES))
                .unwrap_or(u32::MAX)
                .min(s.read_ahead_units);
            let Ok(permit) = s.read_ahead_permits.clone().try_acquire_many_owned(units) else {
                // Out of in-flight budget: the next fetch plans again from here.
                walked_to = first;
                break;
            };
            let reader = self.clone();
            match action {
                Action::Run(id, run) => {
                    let keys = keys_for(&run, id);
                    let last_end = run.last().map_or(plan.from, |e| e.end);
                    s.read_ahead.issued(stream, plan, last_end, &keys);
                    let fetches = self.fetches(id, &run, ReadPriority::ReadAhead, true);
                    let plan = *plan;
                    works.push((
                        1,
                        async move {
                            reader.cache_all(stream, &plan, id, &run, fetches).await;
                            drop(permit);
                        }
                        .boxed(),
                    ));
                }
                Action::Whole(id, size, from, part_end) => {
                    // Halves of a large object are read side by side: two GETs in flight
                    // serve an object store better than one (Little's law).
                    let split = if size > 2 * WHOLE_SPLIT_BYTES {
                        size / 2
                    } else {
                        size
                    };
                    let gets: Vec<SharedGet> = [0..split, split..size]
                        .into_iter()
                        .filter(|r| !r.is_empty())
                        .map(|r| {
                            self.shared_get(id, r, ReadPriority::ReadAhead, true, GetKind::Object)
                                .1
                        })
                        .collect();
                    s.read_ahead.reserve(stream, plan, part_end, size);
                    let plan = *plan;
                    works.push((
                        gets.len() as u32,
                        async move {
                            reader
                                .cache_whole(stream, &plan, (id, size, from, end), gets)
                                .await;
                            drop(permit);
                        }
                        .boxed(),
                    ));
                }
            }
        }
        s.read_ahead.issued(stream, plan, walked_to, &[]);
        let turns = s.read_ahead_turns.clone();
        tokio::spawn(async move {
            for (n, work) in works {
                let Ok(turn) = turns.clone().acquire_many_owned(n).await else {
                    return;
                };
                tokio::spawn(async move {
                    work.await;
                    drop(turn);
                });
            }
        });
    }

    /// Runs the fetches of prefetched blocks (`entries` of object `id`) into the cache at low
    /// priority, except those the reader of `plan` has already read past: a reader that
    /// reached them first took them from the GET itself, and a catch-up reader then dropped
    /// them from memory on purpose (see `objects`); putting them back would pin their GET's
    /// buffer for nothing.
    async fn cache_all(
        &self,
        stream: StreamId,
        plan: &Plan,
        id: ObjectId,
        entries: &[IndexEntry],
        fetches: Vec<
            futures::future::BoxFuture<'static, crate::Result<super::block::DecodedBlock>>,
        >,
    ) {
        let reader_at = self.shared.read_ahead.reader_at(stream, plan);
        let lookups = entries.iter().zip(fetches).map(|(e, fetch)| {
            let s = self.shared.clone();
            let key = BlockKey::new(id.0, e.position);
            let passed = reader_at.is_some_and(|at| e.end <= at);
            async move {
                if passed {
                    s.read_ahead.forget(&key);
                    return;
                }
                if s.blocks
                    .get_or_fetch(key, Priority::Low, fetch)
                    .await
                    .is_err()
                {
                    s.read_ahead.forget(&key);
                }
            }
        });
        futures::future::join_all(lookups).await;
    }

    /// Once the whole-object GETs `get` return: the index (sliced from them), then the stream's
    /// blocks from `from` on, into the cache as pending read-ahead. `part` is (object, size,
    /// first offset to keep, end of the read).
    async fn cache_whole(
        &self,
        stream: StreamId,
        plan: &Plan,
        part: (ObjectId, u64, Offset, Offset),
        get: Vec<SharedGet>,
    ) {
        let s = &self.shared;
        let (id, size, from, end) = part;
        // Shared GETs start when first polled: poll every part now, side by side.
        let (index, _) = futures::future::join(
            self.index(id, size, ReadPriority::ReadAhead),
            futures::future::join_all(get.iter().cloned()),
        )
        .await;
        // Blocks the reader has read past meanwhile (from this GET) are not prefetched again.
        let from = s
            .read_ahead
            .reader_at(stream, plan)
            .map_or(from, |at| from.max(at));
        let entries: Vec<IndexEntry> = match &index {
            Ok(index) => index.entries_for(stream, from, end).to_vec(),
            Err(_) => Vec::new(),
        };
        // Blocks a reader already took from this GET are not pending any more.
        let keys: Vec<(BlockKey, u64)> = entries
            .iter()
            .map(|e| (BlockKey::new(id.0, e.position), u64::from(e.size)))
            .filter(|(key, _)| !s.blocks.contains(key))
            .collect();
        s.read_ahead.issued(stream, plan, from, &keys);
        s.read_ahead.unreserve(stream, plan, size);
        if let Ok(index) = &index {
            let kept: u64 = index
                .stream_entries(stream)
                .iter()
                .map(|e| u64::from(e.size))
                .sum();
            let others = index.data_len().saturating_sub(kept);
            Counters::add(&s.counters.read_ahead_wasted_bytes, others);
        }
        let fetches = self.fetches(id, &entries, ReadPriority::ReadAhead, true);
        self.cache_all(stream, plan, id, &entries, fetches).await;
        drop(get);
    }
}

fn keys_for(entries: &[IndexEntry], id: ObjectId) -> Vec<(BlockKey, u64)> {
    entries
        .iter()
        .map(|e| (BlockKey::new(id.0, e.position), u64::from(e.size)))
        .collect()
}
