//! Reading committed objects: indexes, blocks through the block cache, merged range GETs, and
//! read-ahead.
//!
//! ```text
//! read(stream, from, covering objects)
//!   └─ per object: index (index cache, else one tail GET)
//!        └─ blocks the fetch needs ─► block cache get_or_fetch ─hit─► batches
//!                                         │ miss
//!                                         ▼
//!             adjacent missing blocks share one range GET (≤ MAX_MERGED_GET), each block
//!             decoded on its own (zstd blocks on a blocking thread)
//! after_read ─► read-ahead plan ─► spawned prefetch: same merged GETs, low priority, within the
//!               in-flight budget, through the limiter
//! ```
//!
//! Every GET takes tokens from the [`Limiter`] at the fetch's priority first. No lock is held
//! across an await: the index cache, the read-ahead state and the limiter are locked only for
//! map operations, and the block cache's own locks are foyer's.
//!
//! Memory: a block sliced out of a merged GET gets its own buffer when it is stored
//! uncompressed, so that evicting one block frees its bytes instead of pinning the whole range.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures::future::{BoxFuture, FutureExt, Shared};
use object_store::path::Path;
use object_store::{GetOptions, ObjectStore};
use objstream_cache::{
    BlockCache, BlockCacheConfig, BlockKey, DiskTierConfig, EvictionObserver, FetchError,
    FoyerBlockCache, Priority,
};
use parking_lot::Mutex;
use tokio::sync::Semaphore;

use super::block::DecodedBlock;
use super::limiter::{Limiter, ReadPriority};
use super::lru::Lru;
use super::read_ahead::{Outcome, Plan, ReadAhead};
use super::stats::{Counters, ReadStats};
use crate::error::{Error, Result};
use crate::format::{self, IndexEntry, ObjectIndex, TailDecode, BLOCK_HEADER_LEN, INDEX_ENTRY_LEN};
use crate::keys;
use crate::retry::{read_body, retry_transient, Backoff};
use crate::settings::Settings;
use crate::types::{ObjectId, Offset, StoredBatch, StreamId};

/// The largest range GET that adjacent blocks are merged into. Large: the `read_path` bench
/// found a few large reads in flight beat many small ones (and requests are billed).
pub(crate) const MAX_MERGED_GET: u64 = 32 << 20;
/// Read-ahead looks at most this many objects ahead of a reader.
const READ_AHEAD_OBJECTS: usize = 64;
/// The in-flight read-ahead budget is counted in units of this many bytes.
const PERMIT_BYTES: u64 = 64 << 10;

/// The block cache as the read path sees it.
pub(crate) type Blocks = Arc<dyn BlockCache<DecodedBlock, Error>>;

/// One object part that covers a stream range: (object, object size, first offset, end offset).
pub(crate) type Part = (ObjectId, u64, Offset, Offset);

type SharedGet = Shared<BoxFuture<'static, Result<Bytes>>>;

/// Reads batches from objects. Cheap to clone: every clone shares the caches.
#[derive(Clone)]
pub(crate) struct ObjectReader {
    shared: Arc<Inner>,
}

struct Inner {
    objects: Arc<dyn ObjectStore>,
    prefix: Path,
    indexes: Mutex<Lru<ObjectId, Arc<ObjectIndex>>>,
    blocks: Blocks,
    /// True when the store opened the block cache (and so closes it at shutdown).
    owns_blocks: bool,
    limiter: Limiter,
    read_ahead: Arc<ReadAhead>,
    read_ahead_permits: Arc<Semaphore>,
    read_ahead_units: u32,
    counters: Arc<Counters>,
}

/// The read-ahead window cap in effect: the configured one, but never more than a quarter of the
/// memory tier, so that prefetched blocks do not push each other out before they are read.
pub(crate) fn read_ahead_cap(settings: &Settings) -> u64 {
    settings
        .read_ahead_bytes
        .min(settings.block_cache_bytes / 4)
}

impl ObjectReader {
    /// Opens the caches `settings` describe, or reads through `blocks` (the embedder's block
    /// cache) when given.
    pub(crate) async fn open(
        objects: Arc<dyn ObjectStore>,
        prefix: Path,
        blocks: Option<Blocks>,
        settings: &Settings,
    ) -> Result<Self> {
        let cap = read_ahead_cap(settings);
        let read_ahead = Arc::new(ReadAhead::new(cap, MAX_MERGED_GET));
        let counters = Arc::new(Counters::default());
        let observer: EvictionObserver = {
            let (read_ahead, counters) = (read_ahead.clone(), counters.clone());
            Arc::new(move |key: &BlockKey| {
                if let Outcome::Wasted(bytes) = read_ahead.evicted(key) {
                    Counters::add(&counters.read_ahead_wasted_bytes, bytes);
                }
            })
        };
        let (blocks, owns_blocks): (Blocks, bool) = match blocks {
            Some(blocks) => {
                blocks.observe_evictions(observer);
                (blocks, false)
            }
            None => {
                let config = BlockCacheConfig {
                    memory_bytes: settings.block_cache_bytes,
                    disk: settings
                        .block_cache_disk_dir
                        .as_ref()
                        .map(|dir| DiskTierConfig {
                            dir: dir.clone(),
                            capacity_bytes: settings.block_cache_disk_bytes,
                        }),
                };
                let blocks = FoyerBlockCache::<DecodedBlock>::open(&config, Some(observer))
                    .await
                    .map_err(|e| Error::internal(format!("opening the block cache: {e}")))?;
                (Arc::new(blocks), true)
            }
        };
        let units = u32::try_from((cap / PERMIT_BYTES).max(1)).unwrap_or(u32::MAX);
        Ok(ObjectReader {
            shared: Arc::new(Inner {
                objects,
                prefix,
                indexes: Mutex::new(Lru::new(settings.index_cache_bytes)),
                blocks,
                owns_blocks,
                limiter: Limiter::new(settings.catch_up_bytes_per_sec),
                read_ahead,
                read_ahead_permits: Arc::new(Semaphore::new(units as usize)),
                read_ahead_units: units,
                counters,
            }),
        })
    }

    /// Closes the block cache if the store opened it (an embedder's cache stays open): waits
    /// for the disk tier's writers to finish and stops them.
    pub(crate) async fn close(&self) -> Result<()> {
        if !self.shared.owns_blocks {
            return Ok(());
        }
        self.shared
            .blocks
            .close()
            .await
            .map_err(|e| Error::internal(format!("closing the block cache: {e}")))
    }

    /// Takes `bytes` of object-store bandwidth for an upload (never waits; catch-up reads yield).
    pub(crate) fn charge_upload(&self, bytes: u64) {
        self.shared.limiter.charge(bytes);
    }

    /// Fills the read path's part of `stats`.
    pub(crate) fn fill_stats(&self, stats: &mut ReadStats) {
        let s = &self.shared;
        s.counters.fill(stats);
        let blocks = s.blocks.stats();
        stats.memory_hits = blocks.memory_hits;
        stats.disk_hits = blocks.disk_hits;
        stats.block_misses = blocks.misses;
        stats.memory_held_bytes = blocks.memory_bytes;
        stats.disk_write_bytes = blocks.disk_write_bytes;
        stats.throttled_ms = s.limiter.waited().as_millis() as u64;
    }

    /// Batches of `stream` from `start` towards `end`, from the objects that cover them (in
    /// order), until about `max_bytes` are collected. Returns the offset reached.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn read(
        &self,
        stream: StreamId,
        start: Offset,
        end: Offset,
        max_bytes: u64,
        covering: &[Part],
        priority: ReadPriority,
        out: &mut Vec<StoredBatch>,
    ) -> Result<Offset> {
        let mut pos = start;
        let mut bytes = 0u64;
        for &(id, size, _, _) in covering {
            if bytes >= max_bytes && !out.is_empty() {
                break;
            }
            let index = self.index(id, size, priority).await?;
            let entries = index.entries_for(stream, pos, end);
            let mut i = 0;
            while i < entries.len() && (bytes < max_bytes || out.is_empty()) {
                // The blocks this fetch expects to need, fetched together.
                let mut want = 0u64;
                let mut n = 0;
                while i + n < entries.len() {
                    want += u64::from(entries[i + n].raw_len);
                    n += 1;
                    if bytes + want >= max_bytes {
                        break;
                    }
                }
                let chunk = &entries[i..i + n];
                let fetches = self.fetches(id, chunk, priority, false);
                for (entry, fetch) in chunk.iter().zip(fetches) {
                    let block = self.block(id, entry, priority, fetch).await?;
                    for b in block.batches() {
                        if b.next_offset() <= pos {
                            continue;
                        }
                        if b.base_offset >= end || (bytes >= max_bytes && !out.is_empty()) {
                            return Ok(pos);
                        }
                        bytes += b.batch.payload.len() as u64;
                        pos = b.next_offset();
                        out.push(b.clone());
                    }
                }
                i += n;
            }
        }
        Ok(pos)
    }

    /// Tells read-ahead that a fetch read `[start, reached)` of `stream` from objects and, if the
    /// reader moves sequentially, starts the next prefetch: planning runs here (it reads an
    /// index only when the reader enters a new object), the range reads run in the background.
    /// Planning before the fetch returns keeps the reader from asking for a block before its
    /// prefetch was issued.
    pub(crate) async fn after_read(
        &self,
        stream: StreamId,
        start: Offset,
        reached: Offset,
        covering: &[Part],
        end: Offset,
    ) {
        let Some(plan) = self.shared.read_ahead.advance(stream, start, reached) else {
            return;
        };
        let ahead: Vec<Part> = covering
            .iter()
            .filter(|p| p.3 > plan.from)
            .take(READ_AHEAD_OBJECTS)
            .copied()
            .collect();
        self.prefetch(stream, &plan, &ahead, end).await;
        self.shared.read_ahead.finished(stream, &plan);
    }

    async fn prefetch(&self, stream: StreamId, plan: &Plan, ahead: &[Part], end: Offset) {
        let s = &self.shared;
        let mut budget = plan.budget;
        let mut walked_to = plan.from;
        let mut runs: Vec<(ObjectId, Vec<IndexEntry>)> = Vec::new();
        for &(id, size, _, _) in ahead {
            if budget == 0 {
                break;
            }
            let Ok(index) = self.index(id, size, ReadPriority::ReadAhead).await else {
                break;
            };
            let mut run: Vec<IndexEntry> = Vec::new();
            for e in index.entries_for(stream, plan.from, end) {
                if budget == 0 {
                    break;
                }
                budget = budget.saturating_sub(u64::from(e.size));
                walked_to = e.end;
                let key = BlockKey::new(id.0, e.position);
                if s.blocks.contains(&key) || s.read_ahead.is_pending(&key) {
                    if !run.is_empty() {
                        runs.push((id, std::mem::take(&mut run)));
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
                    runs.push((id, std::mem::take(&mut run)));
                }
                run.push(*e);
            }
            if !run.is_empty() {
                runs.push((id, run));
            }
        }
        for (id, run) in &runs {
            let bytes: u64 = run.iter().map(|e| u64::from(e.size)).sum();
            let units = u32::try_from(bytes.div_ceil(PERMIT_BYTES))
                .unwrap_or(u32::MAX)
                .min(s.read_ahead_units);
            let Ok(permit) = s.read_ahead_permits.clone().try_acquire_many_owned(units) else {
                // Out of in-flight budget: the next fetch plans again from here.
                walked_to = run[0].start;
                break;
            };
            let keys: Vec<(BlockKey, u64)> = run
                .iter()
                .map(|e| (BlockKey::new(id.0, e.position), u64::from(e.size)))
                .collect();
            let last_end = run.last().map_or(plan.from, |e| e.end);
            s.read_ahead.issued(stream, plan, last_end, &keys);
            let fetches = self.fetches(*id, run, ReadPriority::ReadAhead, true);
            let lookups: Vec<_> = keys
                .into_iter()
                .zip(fetches)
                .map(|((key, _), fetch)| {
                    let s = self.shared.clone();
                    async move {
                        if s.blocks
                            .get_or_fetch(key, Priority::Low, fetch)
                            .await
                            .is_err()
                        {
                            s.read_ahead.forget(&key);
                        }
                    }
                })
                .collect();
            // The run completes on its own; the cursor may plan the next one meanwhile (its
            // budget counts this run as outstanding).
            tokio::spawn(async move {
                futures::future::join_all(lookups).await;
                drop(permit);
            });
        }
        s.read_ahead.issued(stream, plan, walked_to, &[]);
    }

    async fn get_range(
        &self,
        id: ObjectId,
        range: Range<u64>,
        priority: ReadPriority,
    ) -> Result<Bytes> {
        let s = &self.shared;
        s.limiter.acquire(range.end - range.start, priority).await;
        let path = keys::object_path(&s.prefix, id);
        // A body cut short is retried like any transfer failure (`read_body`).
        let bytes = retry_transient("get range", &path, Backoff::for_uploads(id.0), || {
            let options = GetOptions::new().with_range(Some(range.clone()));
            let (objects, path) = (&s.objects, &path);
            async move { read_body(objects.get_opts(path, options).await?).await }
        })
        .await?;
        if bytes.len() as u64 != range.end - range.start {
            return Err(Error::corruption(
                format!("{id}"),
                format!("a range read of {:?} returned {} bytes", range, bytes.len()),
            ));
        }
        Counters::add(&s.counters.object_gets, 1);
        Counters::add(&s.counters.object_bytes, bytes.len() as u64);
        Ok(bytes)
    }

    async fn index(
        &self,
        id: ObjectId,
        size: u64,
        priority: ReadPriority,
    ) -> Result<Arc<ObjectIndex>> {
        let s = &self.shared;
        if let Some(index) = s.indexes.lock().get(&id) {
            Counters::add(&s.counters.index_hits, 1);
            return Ok(index);
        }
        Counters::add(&s.counters.index_misses, 1);
        let tail = self
            .get_range(id, format::tail_range(size), priority)
            .await?;
        let index = match format::decode_tail(id, size, &tail)? {
            TailDecode::Complete { index, .. } => index,
            TailDecode::NeedIndex { footer, range } => {
                let bytes = self.get_range(id, range, priority).await?;
                footer.decode_index(id, &bytes)?
            }
        };
        let weight = (index.entries().len() * INDEX_ENTRY_LEN + 64) as u64;
        let index = Arc::new(index);
        s.indexes.lock().insert(id, index.clone(), weight);
        Ok(index)
    }

    /// The block of `entry` through the block cache, loading it with `fetch` on a miss.
    async fn block(
        &self,
        id: ObjectId,
        entry: &IndexEntry,
        priority: ReadPriority,
        fetch: BoxFuture<'static, Result<DecodedBlock>>,
    ) -> Result<DecodedBlock> {
        let s = &self.shared;
        let key = BlockKey::new(id.0, entry.position);
        let cache_priority = match priority {
            ReadPriority::Tail => Priority::Normal,
            ReadPriority::CatchUp | ReadPriority::ReadAhead => Priority::Low,
        };
        let block = match s.blocks.get_or_fetch(key, cache_priority, fetch).await {
            Ok(fetched) => fetched.value,
            Err(FetchError::Fetch(e)) => return Err(e),
            Err(FetchError::Cache(e)) => {
                // A cache failure (say, a disk tier read) costs a GET, not the read.
                tracing::warn!(%key, error = %e, "block cache failed; reading the block from its object");
                s.blocks.remove(&key);
                let mut direct = self.fetches(id, std::slice::from_ref(entry), priority, false);
                match direct.pop() {
                    Some(fetch) => fetch.await?,
                    None => return Err(Error::internal("no fetch for a block")),
                }
            }
        };
        if let Outcome::Used(bytes) = s.read_ahead.used(&key) {
            Counters::add(&s.counters.read_ahead_used_bytes, bytes);
        }
        Ok(block)
    }

    /// One fetch per entry of `entries` (blocks of one object, in position order). Entries the
    /// cache does not hold and that lie next to each other share one range GET; a fetch that is
    /// never polled costs nothing.
    fn fetches(
        &self,
        id: ObjectId,
        entries: &[IndexEntry],
        priority: ReadPriority,
        read_ahead: bool,
    ) -> Vec<BoxFuture<'static, Result<DecodedBlock>>> {
        let mut out = Vec::with_capacity(entries.len());
        let mut i = 0;
        while i < entries.len() {
            let first = entries[i];
            let cached = self
                .shared
                .blocks
                .contains(&BlockKey::new(id.0, first.position));
            let mut n = 1;
            if !cached {
                let mut bytes = u64::from(first.size);
                while let Some(next) = entries.get(i + n) {
                    let prev_end = entries[i + n - 1].byte_range().end;
                    let next_cached = self
                        .shared
                        .blocks
                        .contains(&BlockKey::new(id.0, next.position));
                    if next_cached
                        || next.position != prev_end
                        || bytes + u64::from(next.size) > MAX_MERGED_GET
                    {
                        break;
                    }
                    bytes += u64::from(next.size);
                    n += 1;
                }
            }
            let run = &entries[i..i + n];
            let range = run[0].position..run[n - 1].byte_range().end;
            let get = self.shared_get(id, range.clone(), priority, read_ahead);
            for &e in run {
                let get = get.clone();
                let single = n == 1;
                let run_start = range.start;
                out.push(
                    async move {
                        let bytes = get.await?;
                        let from = usize::try_from(e.position - run_start).unwrap_or(usize::MAX);
                        let slice = from
                            .checked_add(e.size as usize)
                            .and_then(|to| bytes.get(from..to))
                            .ok_or_else(|| {
                                Error::internal(format!(
                                    "{id}: block at {} is outside its range read",
                                    e.position
                                ))
                            })?;
                        let block_bytes = if single {
                            bytes.clone()
                        } else if stored_compressed(&e) {
                            bytes.slice(from..from + slice.len())
                        } else {
                            Bytes::copy_from_slice(slice)
                        };
                        decode(id, e, block_bytes).await
                    }
                    .boxed(),
                );
            }
            i += n;
        }
        out
    }

    fn shared_get(
        &self,
        id: ObjectId,
        range: Range<u64>,
        priority: ReadPriority,
        read_ahead: bool,
    ) -> SharedGet {
        let reader = self.clone();
        async move {
            let bytes = reader.get_range(id, range, priority).await?;
            if read_ahead {
                let c = &reader.shared.counters;
                Counters::add(&c.read_ahead_gets, 1);
                Counters::add(&c.read_ahead_bytes, bytes.len() as u64);
            }
            Ok(bytes)
        }
        .boxed()
        .shared()
    }
}

/// True when the block's body is stored compressed (smaller than its decompressed length).
fn stored_compressed(e: &IndexEntry) -> bool {
    u64::from(e.size) < BLOCK_HEADER_LEN as u64 + u64::from(e.raw_len)
}

/// Decodes one block; decompression runs on a blocking thread so that a scan of old data does
/// not hold up the runtime's workers (appends, tail reads).
async fn decode(id: ObjectId, entry: IndexEntry, bytes: Bytes) -> Result<DecodedBlock> {
    if stored_compressed(&entry) {
        let batches = tokio::task::spawn_blocking(move || format::decode_block(id, &entry, bytes))
            .await
            .map_err(|e| Error::internal(format!("block decode task: {e}")))??;
        Ok(DecodedBlock::new(batches, entry.raw_len as usize))
    } else {
        let len = bytes.len();
        let batches = format::decode_block(id, &entry, bytes)?;
        Ok(DecodedBlock::new(batches, len))
    }
}
