//! The block cache interface: decoded data blocks of immutable objects, keyed by
//! (object id, block position), in one or more tiers.
//!
//! ```text
//!  get_or_fetch(key, fetch) ─► memory tier ─hit─► value            (Tier::Memory)
//!                                  │ miss
//!                                  ▼
//!                              disk tier ───hit─► value, promoted  (Tier::Disk)
//!                                  │ miss
//!                                  ▼
//!                              fetch (one per key at a time) ────► value, inserted (Tier::Fetched)
//! ```
//!
//! Objects are immutable and their ids are never reused, so an entry never goes stale: it only
//! leaves when the cache needs room, or when the caller removes it. Blocks of a deleted object
//! need not be removed: no later read can ask for them (no manifest entry names the object, and
//! no other object ever gets its id), so they simply age out.
//!
//! The store talks to this trait only, so the implementation behind it (today foyer's hybrid
//! cache, [`FoyerBlockCache`](crate::FoyerBlockCache)) can change without touching the read path.
//! Values are generic: the cache knows how much memory a value holds and how to write it to and
//! read it from the disk tier ([`BlockValue`]), nothing else.

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;

/// A boxed, sendable future: what the object-safe [`BlockCache`] methods return and take.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where a block lives: the object that holds it and the block's byte position in that object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlockKey {
    /// The object id (never reused).
    pub object: u64,
    /// The block's first byte in the object.
    pub position: u64,
}

impl BlockKey {
    /// Length of the key in the disk tier: two little-endian `u64`s.
    pub const ENCODED_LEN: usize = 16;

    /// The key of the block at `position` of `object`.
    pub fn new(object: u64, position: u64) -> Self {
        BlockKey { object, position }
    }

    /// The key as stored in the disk tier.
    pub fn to_bytes(self) -> [u8; Self::ENCODED_LEN] {
        let mut out = [0u8; Self::ENCODED_LEN];
        out[..8].copy_from_slice(&self.object.to_le_bytes());
        out[8..].copy_from_slice(&self.position.to_le_bytes());
        out
    }

    /// The key from its stored form.
    pub fn from_bytes(bytes: [u8; Self::ENCODED_LEN]) -> Self {
        let (object, position) = bytes.split_at(8);
        let word = |b: &[u8]| {
            let mut w = [0u8; 8];
            w.copy_from_slice(b);
            u64::from_le_bytes(w)
        };
        BlockKey {
            object: word(object),
            position: word(position),
        }
    }
}

impl fmt::Display for BlockKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "object {} block at {}", self.object, self.position)
    }
}

/// A value the block cache can hold in memory and spill to its disk tier.
pub trait BlockValue: Clone + Send + Sync + 'static {
    /// The bytes the value holds in memory (what the memory tier's capacity counts).
    fn weight(&self) -> usize;
    /// The length of [`encode`](BlockValue::encode)'s output.
    fn encoded_len(&self) -> usize;
    /// Writes the value for the disk tier.
    fn encode(&self, out: &mut dyn std::io::Write) -> std::io::Result<()>;
    /// Reads a value back from what [`encode`](BlockValue::encode) wrote. Bytes that do not
    /// decode are an error (the caller then reads the block from object storage), never a panic.
    fn decode(bytes: Bytes) -> Result<Self, String>;
}

/// How long a block deserves to stay in memory relative to others.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Priority {
    /// Blocks near the tail of a stream, read by readers that keep up.
    #[default]
    Normal,
    /// Blocks of catch-up scans and read-ahead: read once, usually. They leave first, so a scan
    /// of old data does not push out what tail readers use.
    Low,
}

/// Which tier answered a lookup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tier {
    /// The memory tier held the block.
    Memory,
    /// The disk tier held the block; it is in memory again now.
    Disk,
    /// No tier held it: the fetch ran (this caller's or a concurrent caller's).
    Fetched,
}

/// A value and the tier that produced it.
#[derive(Clone, Debug)]
pub struct Fetched<V> {
    /// The value.
    pub value: V,
    /// Where it came from.
    pub tier: Tier,
}

/// Why [`BlockCache::get_or_fetch`] failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FetchError<E> {
    /// The fetch failed with this error (every caller waiting on it gets a copy).
    Fetch(E),
    /// The cache itself failed (for example a disk tier read); the caller may fetch directly.
    Cache(String),
}

impl<E: fmt::Display> fmt::Display for FetchError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FetchError::Fetch(e) => write!(f, "{e}"),
            FetchError::Cache(e) => write!(f, "block cache: {e}"),
        }
    }
}

/// Counters of a block cache, as plain numbers. Hits and misses count lookups; `*_bytes` count
/// what is really held right now (not what was configured).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockCacheStats {
    /// Lookups the memory tier answered.
    pub memory_hits: u64,
    /// Lookups the disk tier answered.
    pub disk_hits: u64,
    /// Lookups no tier answered (a fetch ran or was joined).
    pub misses: u64,
    /// Lookups that failed (fetch or cache errors).
    pub errors: u64,
    /// Weight of the values held in the memory tier.
    pub memory_bytes: u64,
    /// Capacity of the memory tier.
    pub memory_capacity_bytes: u64,
    /// Capacity of the disk tier (0 without one).
    pub disk_capacity_bytes: u64,
    /// Bytes written to the disk tier so far.
    pub disk_write_bytes: u64,
    /// Bytes read from the disk tier so far.
    pub disk_read_bytes: u64,
}

/// Called with the key of each value that leaves the memory tier to make room (it may still be
/// in the disk tier). Runs inside the cache: it must be quick and must not call the cache.
pub type EvictionObserver = std::sync::Arc<dyn Fn(&BlockKey) + Send + Sync>;

/// A cache of decoded blocks. `E` is the error type of fetches.
pub trait BlockCache<V: BlockValue, E>: Send + Sync {
    /// The block under `key`: from the memory tier, else the disk tier, else by running `fetch`
    /// and inserting its value with `priority`. Concurrent calls for one key run one fetch; the
    /// others wait for it and get its value or its error. The fetch runs to completion even if
    /// every caller stops waiting.
    fn get_or_fetch(
        &self,
        key: BlockKey,
        priority: Priority,
        fetch: BoxFuture<'static, Result<V, E>>,
    ) -> BoxFuture<'_, Result<Fetched<V>, FetchError<E>>>;

    /// True when the memory tier holds `key`, or the disk tier may (a cheap check, no I/O).
    fn contains(&self, key: &BlockKey) -> bool;

    /// Drops `key` from every tier (for example when its object was deleted, to free the room
    /// sooner than eviction would).
    fn remove(&self, key: &BlockKey);

    /// Current counters.
    fn stats(&self) -> BlockCacheStats;

    /// Stops background work (disk tier writers); later calls may fail.
    fn close(&self) -> BoxFuture<'_, Result<(), String>>;

    /// Adds `observer` to those told of values that leave the memory tier to make room. A cache
    /// that cannot tell keeps this default, which ignores it: a store reading through it then
    /// cannot see read-ahead blocks evicted unread (its windows do not shrink on eviction, and
    /// its waste counter stays at zero).
    fn observe_evictions(&self, observer: EvictionObserver) {
        let _ = observer;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_survives_its_stored_form() {
        for key in [
            BlockKey::new(0, 0),
            BlockKey::new(7, 1 << 40),
            BlockKey::new(u64::MAX, u64::MAX - 1),
        ] {
            assert_eq!(BlockKey::from_bytes(key.to_bytes()), key);
        }
    }

    #[test]
    fn keys_order_by_object_then_position() {
        assert!(BlockKey::new(1, 900) < BlockKey::new(2, 0));
        assert!(BlockKey::new(2, 0) < BlockKey::new(2, 1));
    }
}
