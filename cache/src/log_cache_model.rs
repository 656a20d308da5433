//! Model test of the log cache: random inserts, durability, seals, in-order commits, reads and
//! stream removals, checked after every step against a plain list of entries.
//!
//! The model keeps every inserted entry with its sequence number and whether it is still held;
//! eviction in the model is the rule itself: while over capacity, drop the oldest held entry if
//! it is committed. Everything the cache reports (reads, seals, byte counters, read counters)
//! must match what the model derives.

use proptest::prelude::*;

use crate::log_cache::{CacheEntry, LogCache, LogCacheStats};
use crate::CachedBatch;

#[derive(Clone, Debug, PartialEq, Eq)]
struct B {
    count: u64,
    weight: u64,
}

impl CachedBatch for B {
    fn record_count(&self) -> u64 {
        self.count
    }
    fn weight(&self) -> u64 {
        self.weight
    }
}

#[derive(Clone, Debug)]
enum Op {
    Insert {
        stream: u64,
        count: u64,
        weight: u64,
    },
    MarkDurable {
        ahead: u64,
    },
    Seal,
    CommitOldestSeal,
    Read {
        stream: u64,
        back: u64,
        len: u64,
        max_bytes: u64,
    },
    Remove {
        stream: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..3u64, 1..4u64, 1..40u64).prop_map(|(stream, count, weight)| Op::Insert { stream, count, weight }),
        3 => (0..6u64).prop_map(|ahead| Op::MarkDurable { ahead }),
        2 => Just(Op::Seal),
        2 => Just(Op::CommitOldestSeal),
        4 => (0..3u64, 0..12u64, 0..12u64, 0..80u64)
            .prop_map(|(stream, back, len, max_bytes)| Op::Read { stream, back, len, max_bytes }),
        1 => (0..3u64).prop_map(|stream| Op::Remove { stream }),
    ]
}

#[derive(Clone, Debug)]
struct Entry {
    stream: u64,
    base: u64,
    seq: u64,
    value: B,
    held: bool,
}

#[derive(Default)]
struct Model {
    capacity: u64,
    entries: Vec<Entry>,
    next_offset: [u64; 3],
    durable: u64,
    sealed: u64,
    committed: u64,
    /// `upto_seq` of seals not committed yet, oldest first.
    seals: std::collections::VecDeque<u64>,
    stats: LogCacheStats,
}

impl Model {
    fn held(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter().filter(|e| e.held)
    }

    fn total(&self) -> u64 {
        self.held().map(|e| e.value.weight).sum()
    }

    fn evict(&mut self) {
        while self.total() > self.capacity {
            let committed = self.committed;
            let Some(oldest) = self.entries.iter_mut().find(|e| e.held) else {
                break;
            };
            if oldest.seq >= committed {
                break;
            }
            oldest.held = false;
            self.stats.evicted_bytes += oldest.value.weight;
        }
    }

    fn read(&mut self, stream: u64, start: u64, end: u64, max_bytes: u64) -> Option<Vec<(u64, B)>> {
        let held: Vec<&Entry> = self.held().filter(|e| e.stream == stream).collect();
        if held.first().is_none_or(|first| first.base > start) {
            self.stats.misses += 1;
            return None;
        }
        let mut out = Vec::new();
        let mut bytes = 0;
        for e in held.iter().filter(|e| e.base + e.value.count > start) {
            if e.base >= end || (!out.is_empty() && bytes + e.value.weight > max_bytes) {
                break;
            }
            bytes += e.value.weight;
            out.push((e.base, e.value.clone()));
        }
        self.stats.hits += 1;
        self.stats.hit_bytes += bytes;
        Some(out)
    }
}

fn check(cache: &LogCache<B>, model: &Model) -> Result<(), TestCaseError> {
    let usage = cache.usage();
    prop_assert_eq!(usage.total_bytes, model.total());
    let unflushed: u64 = model
        .held()
        .filter(|e| e.seq >= model.committed)
        .map(|e| e.value.weight)
        .sum();
    prop_assert_eq!(usage.unflushed_bytes, unflushed);
    let pending: u64 = model
        .held()
        .filter(|e| (model.sealed..model.durable).contains(&e.seq))
        .map(|e| e.value.weight)
        .sum();
    prop_assert_eq!(usage.pending_bytes, pending);
    prop_assert_eq!(cache.durable_seq(), model.durable);
    prop_assert_eq!(cache.sealed_seq(), model.sealed);
    prop_assert_eq!(cache.committed_seq(), model.committed);
    for stream in 0..3 {
        let first = model.held().find(|e| e.stream == stream).map(|e| e.base);
        prop_assert_eq!(cache.first_offset(stream), first);
    }
    prop_assert_eq!(cache.stats(), model.stats);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn the_cache_behaves_like_its_model(
        capacity in 0..200u64,
        ops in proptest::collection::vec(op(), 1..120),
    ) {
        let mut cache = LogCache::new(capacity);
        let mut model = Model { capacity, ..Model::default() };
        for op in ops {
            match op {
                Op::Insert { stream, count, weight } => {
                    let base = model.next_offset[stream as usize];
                    let value = B { count, weight };
                    let seq = cache.insert(stream, base, value.clone());
                    prop_assert_eq!(seq, model.entries.len() as u64);
                    model.entries.push(Entry { stream, base, seq, value, held: true });
                    model.next_offset[stream as usize] = base + count;
                }
                Op::MarkDurable { ahead } => {
                    let to = (model.durable + ahead).min(model.entries.len() as u64);
                    cache.mark_durable(to);
                    model.durable = model.durable.max(to);
                }
                Op::Seal => {
                    let sealed = cache.seal();
                    let (from, to) = (model.sealed, model.durable);
                    prop_assert_eq!(sealed.upto_seq, to);
                    let mut expected: Vec<(u64, Vec<CacheEntry<B>>)> = Vec::new();
                    for stream in 0..3 {
                        let taken: Vec<CacheEntry<B>> = model
                            .held()
                            .filter(|e| e.stream == stream && (from..to).contains(&e.seq))
                            .map(|e| CacheEntry { base_offset: e.base, seq: e.seq, value: e.value.clone() })
                            .collect();
                        if !taken.is_empty() {
                            expected.push((stream, taken));
                        }
                    }
                    let bytes: u64 = expected.iter().flat_map(|(_, es)| es).map(|e| e.value.weight).sum();
                    prop_assert_eq!(sealed.bytes, bytes);
                    prop_assert_eq!(&sealed.streams, &expected);
                    if to > from {
                        model.seals.push_back(to);
                    }
                    model.sealed = to;
                }
                Op::CommitOldestSeal => {
                    let to = model.seals.pop_front().unwrap_or(model.committed);
                    cache.mark_committed(to);
                    model.committed = model.committed.max(to.min(model.sealed));
                    model.evict();
                }
                Op::Read { stream, back, len, max_bytes } => {
                    let next = model.next_offset[stream as usize];
                    let start = next.saturating_sub(back);
                    let end = start + len;
                    let expected = model.read(stream, start, end, max_bytes);
                    prop_assert_eq!(cache.read(stream, start, end, max_bytes), expected);
                }
                Op::Remove { stream } => {
                    cache.remove_stream(stream);
                    for e in model.entries.iter_mut().filter(|e| e.stream == stream) {
                        e.held = false;
                    }
                }
            }
            check(&cache, &model)?;
        }
    }
}
