//! The read path: log cache, then the block cache's tiers, then object storage.
//!
//! ```text
//! fetch(stream, start, end, max_bytes)
//!   ├─ log cache holds `start`?  ─► cheap Bytes clones of recent appends        (tail reads)
//!   └─ below the log cache       ─► manifest: objects covering the range
//!        └─ ObjectReader: index cache ─► block cache (memory ─► disk) ─► range GETs
//!             ├─ priority: within one object of the log cache (or of the end) = tail,
//!             │  else catch-up (throttled by the limiter, low cache priority)
//!             └─ read-ahead: a sequential reader gets the next blocks prefetched
//! ```
//!
//! The walk switches between the two sources as it goes, so a read that starts in old data runs
//! on into the tail. The store's lock is taken only to copy log cache entries out; nothing on the
//! read path holds a lock across an await, so a slow reader never holds up appends.
//!
//! Modules: [`objects`] (index and block reads, merged GETs), [`prefetch`] (planning and
//! issuing read-ahead, whole-object reads), [`inflight`] (GETs in flight, which reads of the
//! same bytes join), [`read_ahead`] (cursors and windows), [`limiter`] (bandwidth by
//! priority), [`block`] (decoded blocks and their disk encoding), `buffers` (recycled
//! receive buffers of GET bodies), [`stats`] (what
//! [`Store::read_stats`](crate::Store::read_stats) returns), `lru` (the index cache),
//! `metrics` (GET latencies, read-ahead windows and limiter waiters as metrics). The
//! settings, their trade-offs and the metrics are described in `docs/reading.md`.

mod block;
mod buffers;
mod inflight;
mod limiter;
mod lru;
pub(crate) mod metrics;
mod objects;
mod prefetch;
mod read_ahead;
mod stats;

pub use self::block::DecodedBlock;
pub(crate) use self::objects::{read_ahead_cap, ObjectReader};
pub use self::stats::ReadStats;

/// A block cache a store can read through: decoded blocks, fetch errors of the store's type.
/// Pass one to [`Components::with_block_cache`](crate::Components::with_block_cache) to share
/// or replace the cache the store would open from its settings, for example a
/// [`FoyerBlockCache`](objstream_cache::FoyerBlockCache) of `DecodedBlock`s.
pub type SharedBlockCache = std::sync::Arc<dyn objstream_cache::BlockCache<DecodedBlock, Error>>;

use self::limiter::ReadPriority;
use crate::error::{Error, Result};
use crate::store::StoreInner;
use crate::types::{Offset, StoredBatch, StreamId};

/// Reads `[start, end)` of `stream` (`end` at most the confirmed offset), about `max_bytes`.
pub(crate) async fn fetch(
    inner: &StoreInner,
    stream: StreamId,
    start: Offset,
    end: Offset,
    max_bytes: u64,
) -> Result<Vec<StoredBatch>> {
    let mut out: Vec<StoredBatch> = Vec::new();
    let mut pos = start;
    let mut bytes = 0u64;
    while pos < end && (out.is_empty() || bytes < max_bytes) {
        let (cached, cache_first) = {
            let core = inner.core.lock();
            (
                core.cache
                    .read(stream.0, pos.0, end.0, max_bytes.saturating_sub(bytes)),
                core.cache.first_offset(stream.0),
            )
        };
        if let Some(entries) = cached {
            if entries.is_empty() {
                break;
            }
            for (base, batch) in entries {
                bytes += batch.payload.len() as u64;
                let b = StoredBatch {
                    base_offset: Offset(base),
                    batch,
                };
                pos = b.next_offset();
                out.push(b);
            }
            continue;
        }
        let objects_end = cache_first.map_or(end, |f| end.min(Offset(f)));
        let state = inner.meta.state().await?;
        let covering = state.objects_covering(stream, pos, objects_end);
        // A reader within one object of the newest data is a tail reader that fell just behind
        // the log cache: it is not throttled and its blocks are kept at normal priority.
        let priority = if covering.len() <= 1 {
            ReadPriority::Tail
        } else {
            ReadPriority::CatchUp
        };
        let before = out.len();
        let from = pos;
        let reached = inner
            .reader
            .read(
                stream,
                pos,
                objects_end,
                max_bytes.saturating_sub(bytes),
                &covering,
                priority,
                &mut out,
            )
            .await?;
        if out.len() == before {
            return Err(Error::internal(format!(
                "no committed object holds {stream} at offset {pos}"
            )));
        }
        for b in &out[before..] {
            bytes += b.batch.payload.len() as u64;
        }
        pos = reached;
        inner
            .reader
            .after_read(stream, from, reached, &covering, objects_end, priority)
            .await;
    }
    Ok(out)
}
