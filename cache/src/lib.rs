//! Caches for objstream.
//!
//! - [`LogCache`]: recent appends per stream, in memory, until they are uploaded and committed;
//!   serves tail reads without copies and tells the store when appends must wait.

mod log_cache;

pub use log_cache::{CacheEntry, CacheUsage, CachedBatch, LogCache, Sealed};
