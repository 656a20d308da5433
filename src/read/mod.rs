//! The read path: log cache first, then objects.
//!
//! A fetch walks forward from `start`. While the log cache holds the position, batches come from
//! it (cheap `Bytes` clones). Below the cache's first offset the data is in committed objects:
//! the manifest names the objects covering the range; each object's footer and index come with
//! one tail range GET (then cached), and each needed block with one range GET (then cached,
//! decoded). The walk switches between the two as it goes, so a read that starts in old data runs
//! on into the tail.

mod lru;

use std::sync::Arc;

use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use parking_lot::Mutex;

use self::lru::Lru;
use crate::error::{Error, Result};
use crate::format::{self, IndexEntry, ObjectIndex, TailDecode};
use crate::keys;
use crate::retry::{retry_transient, Backoff};
use crate::store::StoreInner;
use crate::types::{ObjectId, Offset, StoredBatch, StreamId};

/// Indexes of this many objects are kept decoded.
const INDEX_CACHE_ENTRIES: u64 = 4096;

/// Decoded blocks by (object, block position).
type BlockCache = Lru<(ObjectId, u64), Arc<Vec<StoredBatch>>>;

/// Reads batches from objects through an index cache and a block cache.
pub(crate) struct ObjectReader {
    objects: Arc<dyn ObjectStore>,
    prefix: Path,
    indexes: Mutex<Lru<ObjectId, Arc<ObjectIndex>>>,
    blocks: Mutex<BlockCache>,
}

impl ObjectReader {
    pub(crate) fn new(objects: Arc<dyn ObjectStore>, prefix: Path, block_cache_bytes: u64) -> Self {
        ObjectReader {
            objects,
            prefix,
            indexes: Mutex::new(Lru::new(INDEX_CACHE_ENTRIES)),
            blocks: Mutex::new(Lru::new(block_cache_bytes)),
        }
    }

    async fn get_range(&self, id: ObjectId, range: std::ops::Range<u64>) -> Result<bytes::Bytes> {
        let path = keys::object_path(&self.prefix, id);
        let bytes = retry_transient("get range", &path, Backoff::for_uploads(id.0), || {
            self.objects.get_range(&path, range.clone())
        })
        .await?;
        if bytes.len() as u64 != range.end - range.start {
            return Err(Error::corruption(
                format!("{id}"),
                format!("a range read of {:?} returned {} bytes", range, bytes.len()),
            ));
        }
        Ok(bytes)
    }

    async fn index(&self, id: ObjectId, size: u64) -> Result<Arc<ObjectIndex>> {
        if let Some(index) = self.indexes.lock().get(&id) {
            return Ok(index);
        }
        let tail = self.get_range(id, format::tail_range(size)).await?;
        let index = match format::decode_tail(id, size, &tail)? {
            TailDecode::Complete { index, .. } => index,
            TailDecode::NeedIndex { footer, range } => {
                let bytes = self.get_range(id, range).await?;
                footer.decode_index(id, &bytes)?
            }
        };
        let index = Arc::new(index);
        self.indexes.lock().insert(id, index.clone(), 1);
        Ok(index)
    }

    async fn block(&self, id: ObjectId, entry: &IndexEntry) -> Result<Arc<Vec<StoredBatch>>> {
        let key = (id, entry.position);
        if let Some(block) = self.blocks.lock().get(&key) {
            return Ok(block);
        }
        let bytes = self.get_range(id, entry.byte_range()).await?;
        let block = Arc::new(format::decode_block(id, entry, bytes)?);
        self.blocks
            .lock()
            .insert(key, block.clone(), u64::from(entry.raw_len).max(1));
        Ok(block)
    }

    /// Batches of `stream` from `start` towards `end`, from the objects that cover them, until
    /// about `max_bytes` are collected.
    async fn read(
        &self,
        stream: StreamId,
        start: Offset,
        end: Offset,
        max_bytes: u64,
        covering: &[(ObjectId, u64)],
        out: &mut Vec<StoredBatch>,
    ) -> Result<()> {
        let mut pos = start;
        let mut bytes = 0u64;
        for &(id, size) in covering {
            let index = self.index(id, size).await?;
            for entry in index.entries_for(stream, pos, end) {
                let block = self.block(id, entry).await?;
                for b in block.iter() {
                    if b.next_offset() <= pos {
                        continue;
                    }
                    if b.base_offset >= end || (bytes >= max_bytes && !out.is_empty()) {
                        return Ok(());
                    }
                    bytes += b.batch.payload.len() as u64;
                    pos = b.next_offset();
                    out.push(b.clone());
                }
            }
        }
        Ok(())
    }
}

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
        let covering: Vec<(ObjectId, u64)> = state
            .objects_covering(stream, pos, objects_end)
            .into_iter()
            .map(|(id, size, _, _)| (id, size))
            .collect();
        let before = out.len();
        inner
            .reader
            .read(
                stream,
                pos,
                objects_end,
                max_bytes.saturating_sub(bytes),
                &covering,
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
        pos = out.last().map_or(pos, |b| b.next_offset());
    }
    Ok(out)
}
