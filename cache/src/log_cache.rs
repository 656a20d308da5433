//! The log cache: recent appends per stream, in memory, until they are uploaded and committed.
//!
//! Every appended batch enters the cache when its append is queued on the WAL, tagged with a
//! store-wide sequence number that follows WAL order. Three watermarks over that sequence split
//! the cache into prefixes:
//!
//! ```text
//!  seq:  0 ........ committed ........ sealed ........ durable ........ next
//!        [evictable: in objects ] [being uploaded ] [durable, waiting] [queued on the WAL]
//! ```
//!
//! - `durable`: the WAL confirmed everything below it. Only durable entries are uploaded.
//! - `sealed`: everything below it has been handed to an upload ([`LogCache::seal`]).
//! - `committed`: everything below it is in committed objects ([`LogCache::mark_committed`]);
//!   only these entries may be evicted, oldest first, and only when the cache is over capacity.
//!
//! Uploads commit strictly in order, so each watermark only moves forward and each class is a
//! prefix of the global order. Per stream, entries are in offset order, and a tail read returns
//! cheap clones of the cached values (for `Bytes` payloads: no copy).
//!
//! Reads count hits (the cache held the first offset asked for), misses, the bytes they returned
//! and the bytes evicted, as plain numbers ([`LogCache::stats`]); the counters are atomics so
//! that reads stay `&self`.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};

/// A value the cache can hold: it knows how many offsets it spans and how many bytes it costs.
pub trait CachedBatch: Clone {
    /// The number of offsets the value spans (at least 1).
    fn record_count(&self) -> u64;
    /// The bytes the value holds in memory.
    fn weight(&self) -> u64;
}

/// One cached value with its place in the stream and in the store-wide order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheEntry<V> {
    /// The offset of the value's first record.
    pub base_offset: u64,
    /// The store-wide sequence number (WAL order).
    pub seq: u64,
    /// The value.
    pub value: V,
}

impl<V: CachedBatch> CacheEntry<V> {
    /// The offset just past the value.
    pub fn next_offset(&self) -> u64 {
        self.base_offset + self.value.record_count()
    }
}

/// What [`LogCache::seal`] hands to an upload: every durable entry not yet sealed, per stream.
#[derive(Clone, Debug, Default)]
pub struct Sealed<V> {
    /// Entries below this sequence number are now sealed.
    pub upto_seq: u64,
    /// Streams in ascending id order, each with its entries in offset order.
    pub streams: Vec<(u64, Vec<CacheEntry<V>>)>,
    /// The bytes sealed.
    pub bytes: u64,
}

/// Byte counters of the cache.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheUsage {
    /// Everything held.
    pub total_bytes: u64,
    /// Held and not yet committed (not evictable).
    pub unflushed_bytes: u64,
    /// Durable and not yet sealed: what the next upload would take.
    pub pending_bytes: u64,
}

/// Read counters of a [`LogCache`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogCacheStats {
    /// Reads whose first offset the cache held.
    pub hits: u64,
    /// Reads whose first offset it did not hold (they go to objects).
    pub misses: u64,
    /// Bytes (by [`CachedBatch::weight`]) that hits returned.
    pub hit_bytes: u64,
    /// Bytes evicted after their upload was committed.
    pub evicted_bytes: u64,
}

#[derive(Debug, Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    hit_bytes: AtomicU64,
    evicted_bytes: AtomicU64,
}

/// Recent appends per stream. Not thread-safe by itself: the store wraps it in its append lock.
#[derive(Debug)]
pub struct LogCache<V> {
    capacity: u64,
    streams: HashMap<u64, VecDeque<CacheEntry<V>>>,
    /// (stream, seq, weight) in sequence order: the eviction order.
    order: VecDeque<(u64, u64, u64)>,
    next_seq: u64,
    durable: u64,
    sealed: u64,
    committed: u64,
    total_bytes: u64,
    committed_bytes: u64,
    sealed_bytes: u64,
    durable_bytes: u64,
    counters: Counters,
}

impl<V: CachedBatch> LogCache<V> {
    /// An empty cache that evicts committed entries once it holds more than `capacity` bytes.
    pub fn new(capacity: u64) -> Self {
        LogCache {
            capacity,
            streams: HashMap::new(),
            order: VecDeque::new(),
            next_seq: 0,
            durable: 0,
            sealed: 0,
            committed: 0,
            total_bytes: 0,
            committed_bytes: 0,
            sealed_bytes: 0,
            durable_bytes: 0,
            counters: Counters::default(),
        }
    }

    /// Read counters so far.
    pub fn stats(&self) -> LogCacheStats {
        let c = &self.counters;
        LogCacheStats {
            hits: c.hits.load(Ordering::Relaxed),
            misses: c.misses.load(Ordering::Relaxed),
            hit_bytes: c.hit_bytes.load(Ordering::Relaxed),
            evicted_bytes: c.evicted_bytes.load(Ordering::Relaxed),
        }
    }

    /// The configured capacity in bytes.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Adds a value at the end of `stream` and returns its sequence number. The caller must add
    /// values in WAL order and, per stream, in offset order without gaps.
    pub fn insert(&mut self, stream: u64, base_offset: u64, value: V) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        let weight = value.weight();
        let entries = self.streams.entry(stream).or_default();
        debug_assert!(entries
            .back()
            .is_none_or(|last| last.next_offset() == base_offset));
        entries.push_back(CacheEntry {
            base_offset,
            seq,
            value,
        });
        self.order.push_back((stream, seq, weight));
        self.total_bytes += weight;
        seq
    }

    /// Marks every entry below `seq` durable (the WAL confirmed it). Moves only forward.
    pub fn mark_durable(&mut self, upto_seq: u64) {
        if upto_seq <= self.durable {
            return;
        }
        self.durable_bytes += self.weight_between(self.durable, upto_seq);
        self.durable = upto_seq;
    }

    /// The sequence number the next insert gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The durable watermark.
    pub fn durable_seq(&self) -> u64 {
        self.durable
    }

    /// Takes every durable entry not sealed yet, for one upload.
    pub fn seal(&mut self) -> Sealed<V> {
        let from = self.sealed;
        let to = self.durable;
        let mut streams: Vec<(u64, Vec<CacheEntry<V>>)> = Vec::new();
        let mut bytes = 0;
        let mut touched: Vec<u64> = self
            .order
            .iter()
            .filter(|(_, seq, _)| (from..to).contains(seq))
            .map(|(stream, _, _)| *stream)
            .collect();
        touched.sort_unstable();
        touched.dedup();
        for stream in touched {
            let Some(entries) = self.streams.get(&stream) else {
                continue;
            };
            let taken: Vec<CacheEntry<V>> = entries
                .iter()
                .filter(|e| (from..to).contains(&e.seq))
                .cloned()
                .collect();
            bytes += taken.iter().map(|e| e.value.weight()).sum::<u64>();
            if !taken.is_empty() {
                streams.push((stream, taken));
            }
        }
        self.sealed_bytes += self.weight_between(from, to);
        self.sealed = to;
        Sealed {
            upto_seq: to,
            streams,
            bytes,
        }
    }

    /// Marks every entry below `upto_seq` committed (evictable) and evicts while over capacity.
    pub fn mark_committed(&mut self, upto_seq: u64) {
        let upto_seq = upto_seq.min(self.sealed);
        if upto_seq > self.committed {
            self.committed_bytes += self.weight_between(self.committed, upto_seq);
            self.committed = upto_seq;
        }
        self.evict_over_capacity();
    }

    /// The sealed watermark: everything below it was handed to an upload.
    pub fn sealed_seq(&self) -> u64 {
        self.sealed
    }

    /// The committed watermark.
    pub fn committed_seq(&self) -> u64 {
        self.committed
    }

    /// Byte counters.
    pub fn usage(&self) -> CacheUsage {
        CacheUsage {
            total_bytes: self.total_bytes,
            unflushed_bytes: self.total_bytes - self.committed_bytes,
            pending_bytes: self.durable_bytes - self.sealed_bytes,
        }
    }

    /// The first cached offset of `stream`, if any value of it is held.
    pub fn first_offset(&self, stream: u64) -> Option<u64> {
        self.streams
            .get(&stream)
            .and_then(|e| e.front())
            .map(|e| e.base_offset)
    }

    /// The cached values of `stream` from the one holding `start` onwards, stopping before
    /// `end` and once `max_bytes` are collected (at least one value is returned when any
    /// overlaps), as `(base offset, value)`. Returns `None` when the cache does not hold
    /// `start` (a miss: read objects).
    pub fn read(&self, stream: u64, start: u64, end: u64, max_bytes: u64) -> Option<Vec<(u64, V)>> {
        let held = self
            .streams
            .get(&stream)
            .filter(|e| e.front().is_some_and(|first| first.base_offset <= start));
        let Some(entries) = held else {
            self.counters.misses.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        // Entries are dense and in offset order: find the one holding `start`.
        let idx = entries.partition_point(|e| e.next_offset() <= start);
        let mut out = Vec::new();
        let mut bytes = 0;
        for e in entries.range(idx..) {
            if e.base_offset >= end || (!out.is_empty() && bytes + e.value.weight() > max_bytes) {
                break;
            }
            bytes += e.value.weight();
            out.push((e.base_offset, e.value.clone()));
        }
        self.counters.hits.fetch_add(1, Ordering::Relaxed);
        self.counters.hit_bytes.fetch_add(bytes, Ordering::Relaxed);
        Some(out)
    }

    /// Drops every value of `stream` (the stream was deleted). Values that were not committed
    /// still count until their upload is committed, so the watermarks stay consistent.
    pub fn remove_stream(&mut self, stream: u64) {
        let Some(entries) = self.streams.remove(&stream) else {
            return;
        };
        for e in &entries {
            let w = e.value.weight();
            self.total_bytes -= w;
            if e.seq < self.committed {
                self.committed_bytes -= w;
            }
            if e.seq < self.sealed {
                self.sealed_bytes -= w;
            }
            if e.seq < self.durable {
                self.durable_bytes -= w;
            }
        }
        self.order.retain(|(s, _, _)| *s != stream);
    }

    fn weight_between(&self, from: u64, to: u64) -> u64 {
        // `order` is sorted by seq; most calls touch its tail.
        let start = self.order.partition_point(|(_, seq, _)| *seq < from);
        self.order
            .range(start..)
            .take_while(|(_, seq, _)| *seq < to)
            .map(|(_, _, w)| *w)
            .sum()
    }

    fn evict_over_capacity(&mut self) {
        while self.total_bytes > self.capacity {
            let Some(&(stream, seq, weight)) = self.order.front() else {
                break;
            };
            if seq >= self.committed {
                break;
            }
            self.order.pop_front();
            if let Some(entries) = self.streams.get_mut(&stream) {
                if entries.front().is_some_and(|e| e.seq == seq) {
                    entries.pop_front();
                }
                if entries.is_empty() {
                    self.streams.remove(&stream);
                }
            }
            self.total_bytes -= weight;
            self.committed_bytes -= weight;
            self.sealed_bytes -= weight;
            self.durable_bytes -= weight;
            self.counters
                .evicted_bytes
                .fetch_add(weight, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Debug, PartialEq, Eq)]
    struct B(u64, u64);
    impl CachedBatch for B {
        fn record_count(&self) -> u64 {
            self.0
        }
        fn weight(&self) -> u64 {
            self.1
        }
    }

    #[test]
    fn reads_return_entries_from_the_one_holding_start() {
        let mut c = LogCache::new(1 << 20);
        c.insert(1, 0, B(2, 10));
        c.insert(1, 2, B(3, 10));
        c.insert(1, 5, B(1, 10));
        assert_eq!(
            c.read(1, 3, 100, 1000),
            Some(vec![(2, B(3, 10)), (5, B(1, 10))])
        );
        assert_eq!(c.read(1, 0, 2, 1000), Some(vec![(0, B(2, 10))]));
        assert_eq!(
            c.read(1, 0, 100, 5),
            Some(vec![(0, B(2, 10))]),
            "at least one"
        );
        assert_eq!(c.read(2, 0, 100, 5), None);
    }

    #[test]
    fn reads_count_hits_misses_and_returned_bytes() {
        let mut c = LogCache::new(1 << 20);
        c.insert(1, 0, B(2, 10));
        c.insert(1, 2, B(3, 20));
        assert!(c.read(1, 0, 100, 1000).is_some());
        assert!(c.read(1, 3, 100, 1000).is_some());
        assert!(c.read(2, 0, 100, 1000).is_none());
        assert_eq!(
            c.stats(),
            LogCacheStats {
                hits: 2,
                misses: 1,
                hit_bytes: 50,
                evicted_bytes: 0
            }
        );
    }

    #[test]
    fn only_durable_entries_are_sealed() {
        let mut c = LogCache::new(1 << 20);
        c.insert(1, 0, B(1, 10));
        c.insert(2, 0, B(1, 20));
        c.insert(1, 1, B(1, 30));
        c.mark_durable(2);
        assert_eq!(c.usage().pending_bytes, 30);
        let s = c.seal();
        assert_eq!(s.upto_seq, 2);
        assert_eq!(s.bytes, 30);
        assert_eq!(s.streams.len(), 2);
        assert_eq!(c.usage().pending_bytes, 0);
        c.mark_durable(3);
        let s = c.seal();
        assert_eq!(
            s.streams,
            vec![(
                1,
                vec![CacheEntry {
                    base_offset: 1,
                    seq: 2,
                    value: B(1, 30)
                }]
            )]
        );
    }

    #[test]
    fn nothing_uncommitted_is_ever_evicted() {
        let mut c = LogCache::new(25);
        for i in 0..5 {
            c.insert(1, i, B(1, 10));
        }
        c.mark_durable(5);
        c.seal();
        c.mark_committed(0);
        assert_eq!(
            c.usage().total_bytes,
            50,
            "over capacity but nothing committed"
        );
        c.mark_committed(3);
        assert_eq!(
            c.usage().total_bytes,
            20,
            "evicts committed entries until it fits"
        );
        assert_eq!(c.first_offset(1), Some(3));
        assert_eq!(c.read(1, 0, 10, 100), None, "evicted offsets are a miss");
        assert_eq!(c.usage().unflushed_bytes, 20);
        assert_eq!(c.stats().evicted_bytes, 30);
    }

    #[test]
    fn commit_cannot_pass_what_was_sealed() {
        let mut c = LogCache::new(0);
        c.insert(1, 0, B(1, 10));
        c.mark_durable(1);
        c.mark_committed(1);
        assert_eq!(c.usage().total_bytes, 10);
    }

    #[test]
    fn removing_a_stream_releases_its_bytes() {
        let mut c = LogCache::new(1 << 20);
        c.insert(1, 0, B(1, 10));
        c.insert(2, 0, B(1, 20));
        c.mark_durable(2);
        c.remove_stream(1);
        assert_eq!(c.usage().total_bytes, 20);
        assert_eq!(c.usage().pending_bytes, 20);
        let s = c.seal();
        assert_eq!(s.streams.len(), 1);
    }
}
