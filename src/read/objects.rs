//! Reading committed objects: indexes, blocks through the block cache, merged range GETs, and
//! read-ahead.
//!
//! ```text
//! read(stream, from, covering objects)
//!   └─ per object: index (index cache, else one tail GET)
//!        └─ blocks the fetch needs ─► block cache get_or_fetch ─hit─► batches
//!                                         │ miss
//!                                         ▼
//!             a GET in flight covers the block (`InFlight`)? ─► slice it from that GET
//!             else adjacent missing blocks share one range GET (≤ MAX_MERGED_GET), itself
//!             recorded in flight; each block decoded on its own (zstd on a blocking thread)
//! after_read (module `prefetch`) ─► read-ahead plan ─► background GETs, low priority
//! ```
//!
//! Every GET takes tokens from the [`Limiter`] at the fetch's priority first. No lock is held
//! across an await: the index cache, the read-ahead state and the limiter are locked only for
//! map operations, and the block cache's own locks are foyer's.
//!
//! Memory: an uncompressed block is a slice of the buffer its GET returned, not a copy (a copy
//! of every byte read, and the page faults of fresh buffers, more than doubled the CPU a
//! catch-up costs). A GET's buffer is freed when the last of its blocks leaves the cache; the
//! blocks of one GET enter together, at one priority, and a sequential reader uses them in
//! order, so they leave close together. The cache's weight counts each block's own bytes, so
//! the memory held can exceed it by about one GET per reader (at most `MAX_MERGED_GET`, or half
//! an object read whole).
//!
//! A cold scan reads hundreds of megabytes once. Fresh buffers for all of it cost as much CPU as
//! the rest of the read path (the kernel faults in and zeroes every page), so GET bodies are
//! gathered into recycled buffers (`buffers`), and a block leaves the memory tier once a scan
//! has read it to its end. A scan here is a catch-up read (more than one object behind the
//! newest) that continues a read-ahead cursor with an open window: a sequential reader of old
//! data. When the last block of a GET is gone, its buffer goes back to the pool for the next
//! GET, and the scan runs on the same few faulted-in pages instead of filling the cache with
//! data read once (which would only push tail readers' blocks out). A fetch that ends inside a
//! block leaves it cached for the next fetch, which reads on from there. Blocks of tail reads
//! and of lone reads of old data stay cached as before. With a disk tier, or a cache the
//! embedder passed (perhaps shared by other stores), scan blocks stay too: repeated replays of
//! old data are what those are for.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures::future::{BoxFuture, FutureExt};
use object_store::path::Path;
use object_store::{GetOptions, GetResult, GetResultPayload, ObjectStore};
use objstream_cache::{
    BlockCache, BlockCacheConfig, BlockKey, DiskTierConfig, EvictionObserver, FetchError,
    FoyerBlockCache, Priority,
};
use parking_lot::Mutex;
use tokio::sync::Semaphore;

use super::block::DecodedBlock;
use super::buffers::BufferPool;
use super::inflight::{InFlight, SharedGet};
use super::limiter::{Limiter, ReadPriority};
use super::lru::Lru;
use super::metrics::{GetKind, ReadPathMetrics};
use super::read_ahead::{Outcome, ReadAhead};
use super::stats::{Counters, ReadStats};
use crate::error::{Error, Result};
use crate::format::{self, IndexEntry, ObjectIndex, TailDecode, BLOCK_HEADER_LEN, INDEX_ENTRY_LEN};
use crate::keys;
use crate::retry::{read_body, retry_transient, whole_body, Backoff};
use crate::settings::Settings;
use crate::types::{ObjectId, Offset, StoredBatch, StreamId};

/// The largest range GET that adjacent blocks are merged into. Large: the `read_path` bench
/// found a few large reads in flight beat many small ones (and requests are billed).
pub(crate) const MAX_MERGED_GET: u64 = 32 << 20;
/// Read-ahead GETs sent at once, across readers. Two large GETs in flight saturated the S3
/// test server (see the `read_path` bench); more only share its bandwidth, so the bytes a
/// reader needs next arrive later.
const READ_AHEAD_GETS: usize = 2;
/// The in-flight read-ahead budget is counted in units of this many bytes.
pub(crate) const PERMIT_BYTES: u64 = 64 << 10;

/// The block cache as the read path sees it.
pub(crate) type Blocks = Arc<dyn BlockCache<DecodedBlock, Error>>;

/// One object part that covers a stream range: (object, object size, first offset, end offset).
pub(crate) type Part = (ObjectId, u64, Offset, Offset);

/// Reads batches from objects. Cheap to clone: every clone shares the caches.
#[derive(Clone)]
pub(crate) struct ObjectReader {
    pub(super) shared: Arc<Inner>,
}

pub(super) struct Inner {
    objects: Arc<dyn ObjectStore>,
    prefix: Path,
    indexes: Mutex<Lru<ObjectId, Arc<ObjectIndex>>>,
    pub(super) blocks: Blocks,
    /// True when the store opened the block cache (and so closes it at shutdown).
    owns_blocks: bool,
    limiter: Limiter,
    pub(super) read_ahead: Arc<ReadAhead>,
    /// The in-flight read-ahead budget, in units of `PERMIT_BYTES`.
    pub(super) read_ahead_permits: Arc<Semaphore>,
    pub(super) read_ahead_units: u32,
    pub(super) counters: Arc<Counters>,
    /// GETs in flight, which reads of the same bytes join.
    pub(super) inflight: InFlight,
    /// Turns of read-ahead GETs: at most `READ_AHEAD_GETS` run at once, taken in plan order.
    pub(super) read_ahead_turns: Arc<Semaphore>,
    /// GET latencies, the read-ahead window and the limiter's waiters.
    metrics: ReadPathMetrics,
    /// Receive buffers of GET bodies, recycled.
    buffers: BufferPool,
    /// True when a block leaves the memory tier once a scan has read it to its end (see the
    /// module docs): the store's own cache, without a disk tier.
    scan_read_once: bool,
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
        let metrics = ReadPathMetrics::new();
        let read_ahead = Arc::new(ReadAhead::new(cap, MAX_MERGED_GET, metrics.window.clone()));
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
        let scan_read_once = owns_blocks && settings.block_cache_disk_dir.is_none();
        // Idle receive buffers: up to one read-ahead window, freed after a second unused.
        let buffers = BufferPool::new(cap);
        buffers.expire_idle();
        Ok(ObjectReader {
            shared: Arc::new(Inner {
                objects,
                prefix,
                indexes: Mutex::new(Lru::new(settings.index_cache_bytes)),
                blocks,
                owns_blocks,
                limiter: Limiter::new(
                    settings.catch_up_bytes_per_sec,
                    metrics.limiter_waiters.clone(),
                ),
                read_ahead,
                read_ahead_permits: Arc::new(Semaphore::new(units as usize)),
                read_ahead_units: units,
                counters,
                inflight: InFlight::default(),
                read_ahead_turns: Arc::new(Semaphore::new(READ_AHEAD_GETS)),
                metrics,
                buffers,
                scan_read_once,
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
        // A sequential catch-up reader (a scan) reads each block once (see the module docs).
        let read_once = self.shared.scan_read_once
            && priority == ReadPriority::CatchUp
            && self.shared.read_ahead.continues_window(stream, start);
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
                    // A block a scan has read to its end leaves the memory tier, so that its
                    // GET's buffer goes back to the pool.
                    if read_once {
                        self.shared
                            .blocks
                            .remove(&BlockKey::new(id.0, entry.position));
                    }
                }
                i += n;
            }
        }
        Ok(pos)
    }

    async fn get_range(
        &self,
        id: ObjectId,
        range: Range<u64>,
        priority: ReadPriority,
        kind: GetKind,
    ) -> Result<Bytes> {
        let s = &self.shared;
        s.limiter.acquire(range.end - range.start, priority).await;
        let started = std::time::Instant::now();

        let path = keys::object_path(&s.prefix, id);
        // A body cut short is retried like any transfer failure (`receive_body`).
        let bytes = retry_transient("get range", &path, Backoff::for_uploads(id.0), || {
            let options = GetOptions::new().with_range(Some(range.clone()));
            let (objects, path, buffers) = (&s.objects, &path, &s.buffers);
            async move { receive_body(buffers, objects.get_opts(path, options).await?).await }
        })
        .await?;
        if bytes.len() as u64 != range.end - range.start {
            return Err(Error::corruption(
                format!("{id}"),
                format!("a range read of {:?} returned {} bytes", range, bytes.len()),
            ));
        }
        s.metrics.get(kind, started.elapsed());
        Counters::add(&s.counters.object_gets, 1);
        Counters::add(&s.counters.object_bytes, bytes.len() as u64);
        Ok(bytes)
    }

    /// The index of `id` if the index cache holds it (no I/O).
    pub(super) fn cached_index(&self, id: ObjectId) -> Option<Arc<ObjectIndex>> {
        self.shared.indexes.lock().get(&id)
    }

    /// The index of object `id` (of `size` bytes): from the index cache, else read.
    pub(super) async fn index(
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
        // A GET in flight for the object's end (a whole-object read-ahead, another reader's
        // index read) serves this one too.
        let tail = self
            .range_bytes(id, format::tail_range(size), priority)
            .await?;
        let index = match format::decode_tail(id, size, &tail)? {
            TailDecode::Complete { index, .. } => index,
            TailDecode::NeedIndex { footer, range } => {
                let bytes = self.range_bytes(id, range, priority).await?;
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
    pub(super) fn fetches(
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
            // A block a running GET covers (read-ahead's, another reader's) is sliced from it.
            let joined = if cached {
                None
            } else {
                self.shared.inflight.join_span(id, &first.byte_range(), 2)
            };
            if let Some(pieces) = joined {
                out.push(block_from(id, first, pieces));
                i += 1;
                continue;
            }
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
                        || self
                            .shared
                            .inflight
                            .join_span(id, &next.byte_range(), 2)
                            .is_some()
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
            let (got, get) = self.shared_get(id, range, priority, read_ahead, GetKind::Block);
            for &e in run {
                out.push(block_from(id, e, vec![(got.clone(), get.clone())]));
            }
            i += n;
        }
        out
    }

    /// `range` of object `id`, a part of its index: sliced from a GET in flight that covers it,
    /// else read by a new GET that later reads of the same bytes join.
    async fn range_bytes(
        &self,
        id: ObjectId,
        range: Range<u64>,
        priority: ReadPriority,
    ) -> Result<Bytes> {
        let (got, get) = self.shared_get(id, range.clone(), priority, false, GetKind::Index);
        let bytes = get.await?;
        slice_of(id, &bytes, &got, &range)
    }

    /// A GET of object `id` covering `range`: one in flight that covers it (and its range),
    /// else a new one of exactly `range` (counted as read-ahead if `read_ahead`, timed as
    /// `kind`), recorded so that others can join it.
    pub(super) fn shared_get(
        &self,
        id: ObjectId,
        range: Range<u64>,
        priority: ReadPriority,
        read_ahead: bool,
        kind: GetKind,
    ) -> (Range<u64>, SharedGet) {
        if let Some(joined) = self.shared.inflight.join(id, &range) {
            return joined;
        }
        let reader = self.clone();
        let get = {
            let range = range.clone();
            async move {
                let bytes = reader.get_range(id, range, priority, kind).await?;
                if read_ahead {
                    let c = &reader.shared.counters;
                    Counters::add(&c.read_ahead_gets, 1);
                    Counters::add(&c.read_ahead_bytes, bytes.len() as u64);
                }
                Ok(bytes)
            }
            .boxed()
            .shared()
        };
        self.shared.inflight.insert(id, range.clone(), &get);
        (range, get)
    }
}

/// The whole body of a GET, gathered into a recycled buffer when it arrives in chunks. A body
/// shorter (or longer) than the range the response claims is a transfer cut short, reported as
/// a transient error so that the read is retried (as [`read_body`] does); it is never returned
/// as data. A local file's body is read by the file store itself.
async fn receive_body(buffers: &BufferPool, got: GetResult) -> object_store::Result<Bytes> {
    if !matches!(got.payload, GetResultPayload::Stream(_)) {
        return read_body(got).await;
    }
    let expected = got.range.end - got.range.start;
    let location = got.meta.location.to_string();
    let len = usize::try_from(expected).unwrap_or(usize::MAX);
    let bytes = buffers.receive(len, got.into_stream()).await?;
    whole_body(&location, expected, bytes)
}

/// The bytes of `wanted` out of `bytes`, the result of a GET of `got`.
fn slice_of(id: ObjectId, bytes: &Bytes, got: &Range<u64>, wanted: &Range<u64>) -> Result<Bytes> {
    let from = wanted.start.checked_sub(got.start);
    let to = wanted.end.checked_sub(got.start);
    match (from, to) {
        (Some(from), Some(to)) if from <= to && to <= bytes.len() as u64 => {
            Ok(bytes.slice(from as usize..to as usize))
        }
        _ => Err(Error::internal(format!(
            "{id}: bytes {wanted:?} are outside the range read {got:?}"
        ))),
    }
}

/// The block of `e`, sliced out of `pieces` (GETs and their ranges, adjacent, together covering
/// the block) and decoded. A block within one GET keeps a slice of that GET's buffer (no copy;
/// see the module docs for what that pins); one that straddles two is copied together. A fetch
/// that is never polled costs nothing.
fn block_from(
    id: ObjectId,
    e: IndexEntry,
    pieces: Vec<(Range<u64>, SharedGet)>,
) -> BoxFuture<'static, Result<DecodedBlock>> {
    async move {
        let wanted = e.byte_range();
        let block = match pieces.as_slice() {
            [(got, get)] => slice_of(id, &get.clone().await?, got, &wanted)?,
            _ => {
                let mut joined = Vec::with_capacity(e.size as usize);
                for (got, get) in &pieces {
                    let bytes = get.clone().await?;
                    let part = got.start.max(wanted.start)..got.end.min(wanted.end);
                    joined.extend_from_slice(&slice_of(id, &bytes, got, &part)?);
                }
                Bytes::from(joined)
            }
        };
        decode(id, e, block).await
    }
    .boxed()
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
