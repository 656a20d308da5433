//! Read statistics: what each tier answered, what object storage served, what read-ahead did.
//!
//! Which reads populate which tier (so that the numbers can be read correctly):
//! - the log cache holds appends until their upload is committed and the cache needs room; it
//!   answers every fetch that starts at or above its first offset of the stream;
//! - the block cache's memory tier is filled by every block read from object storage (by a fetch
//!   or by read-ahead) and by disk-tier hits; blocks of catch-up reads and read-ahead enter at low
//!   priority and leave first;
//! - the disk tier (when configured) is filled by blocks leaving the memory tier;
//! - the index cache is filled by every index read (a tail GET, or the end of a whole-object
//!   read-ahead GET);
//! - object storage answers the rest: index reads, block reads and read-ahead. A read of bytes
//!   that a GET in flight covers joins it, so `object_gets` counts requests really sent.
//!
//! Byte gauges (`*_held_bytes`) report what is really held at the moment, not the configured size.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters and gauges of a store's read path, as plain numbers. See [`Store::read_stats`].
///
/// [`Store::read_stats`]: crate::Store::read_stats
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ReadStats {
    /// Fetches whose first position the log cache held.
    pub log_cache_hits: u64,
    /// Fetch steps that went below the log cache.
    pub log_cache_misses: u64,
    /// Payload bytes returned from the log cache.
    pub log_cache_hit_bytes: u64,
    /// Bytes the log cache holds now (including data not yet uploaded).
    pub log_cache_held_bytes: u64,
    /// Block lookups answered by the block cache's memory tier.
    pub memory_hits: u64,
    /// Block lookups answered by the disk tier.
    pub disk_hits: u64,
    /// Block lookups no tier answered (the block came from object storage).
    pub block_misses: u64,
    /// Bytes the memory tier holds now.
    pub memory_held_bytes: u64,
    /// Bytes written to the disk tier so far.
    pub disk_write_bytes: u64,
    /// Object indexes found in the index cache.
    pub index_hits: u64,
    /// Object indexes read from object storage.
    pub index_misses: u64,
    /// GET requests sent to object storage by reads (indexes, blocks and read-ahead).
    pub object_gets: u64,
    /// Bytes those GETs returned.
    pub object_bytes: u64,
    /// Bytes read ahead (prefetched) from object storage, whole-object reads' indexes and
    /// other streams' blocks included.
    pub read_ahead_bytes: u64,
    /// GETs made by read-ahead (adjacent blocks merged into one).
    pub read_ahead_gets: u64,
    /// Prefetched bytes that a later fetch used.
    pub read_ahead_used_bytes: u64,
    /// Prefetched bytes that left the memory tier before any fetch used them, plus the bytes
    /// of other streams' blocks that whole-object read-ahead GETs brought along.
    pub read_ahead_wasted_bytes: u64,
    /// Time catch-up reads and read-ahead spent waiting for the bandwidth limiter, in ms.
    pub throttled_ms: u64,
}

impl ReadStats {
    /// Share of fetch steps the log cache answered.
    pub fn log_cache_hit_ratio(&self) -> f64 {
        ratio(
            self.log_cache_hits,
            self.log_cache_hits + self.log_cache_misses,
        )
    }

    /// Share of block lookups the memory tier answered.
    pub fn memory_hit_ratio(&self) -> f64 {
        ratio(self.memory_hits, self.block_lookups())
    }

    /// Share of block lookups the disk tier answered.
    pub fn disk_hit_ratio(&self) -> f64 {
        ratio(self.disk_hits, self.block_lookups())
    }

    /// Share of prefetched bytes that left memory unused.
    pub fn read_ahead_waste_ratio(&self) -> f64 {
        ratio(self.read_ahead_wasted_bytes, self.read_ahead_bytes)
    }

    /// GET requests per GiB returned by object storage.
    pub fn gets_per_gib(&self) -> f64 {
        if self.object_bytes == 0 {
            return 0.0;
        }
        self.object_gets as f64 / (self.object_bytes as f64 / f64::from(1u32 << 30))
    }

    fn block_lookups(&self) -> u64 {
        self.memory_hits + self.disk_hits + self.block_misses
    }
}

fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// The read path's own counters (the caches keep theirs).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub index_hits: AtomicU64,
    pub index_misses: AtomicU64,
    pub object_gets: AtomicU64,
    pub object_bytes: AtomicU64,
    pub read_ahead_bytes: AtomicU64,
    pub read_ahead_gets: AtomicU64,
    pub read_ahead_used_bytes: AtomicU64,
    pub read_ahead_wasted_bytes: AtomicU64,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn fill(&self, s: &mut ReadStats) {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        s.index_hits = get(&self.index_hits);
        s.index_misses = get(&self.index_misses);
        s.object_gets = get(&self.object_gets);
        s.object_bytes = get(&self.object_bytes);
        s.read_ahead_bytes = get(&self.read_ahead_bytes);
        s.read_ahead_gets = get(&self.read_ahead_gets);
        s.read_ahead_used_bytes = get(&self.read_ahead_used_bytes);
        s.read_ahead_wasted_bytes = get(&self.read_ahead_wasted_bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_of_nothing_are_zero() {
        let s = ReadStats::default();
        assert_eq!(s.memory_hit_ratio(), 0.0);
        assert_eq!(s.log_cache_hit_ratio(), 0.0);
        assert_eq!(s.gets_per_gib(), 0.0);
    }

    #[test]
    fn ratios_divide_by_the_lookups_of_their_tier() {
        let s = ReadStats {
            memory_hits: 3,
            disk_hits: 1,
            block_misses: 4,
            object_gets: 2,
            object_bytes: 1 << 29,
            ..ReadStats::default()
        };
        assert_eq!(s.memory_hit_ratio(), 0.375);
        assert_eq!(s.disk_hit_ratio(), 0.125);
        assert_eq!(s.gets_per_gib(), 4.0);
    }
}
