//! Caches for objstream.
//!
//! - [`LogCache`]: recent appends per stream, in memory, until they are uploaded and committed;
//!   serves tail reads without copies and tells the store when appends must wait.
//! - [`BlockCache`]: decoded data blocks of committed objects, keyed by (object id, block
//!   position), behind a trait; [`FoyerBlockCache`] implements it on foyer's hybrid cache (a
//!   memory tier and an optional local-disk tier).

mod block_cache;
mod foyer_cache;
mod log_cache;
#[cfg(test)]
mod log_cache_model;

pub use block_cache::{
    BlockCache, BlockCacheStats, BlockKey, BlockValue, BoxFuture, EvictionObserver, FetchError,
    Fetched, Priority, Tier,
};
pub use foyer_cache::{BlockCacheConfig, DiskTierConfig, FoyerBlockCache, DISK_BLOCK_BYTES};
pub use log_cache::{CacheEntry, CacheUsage, CachedBatch, LogCache, LogCacheStats, Sealed};
