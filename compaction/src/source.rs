//! Reading source objects: whole, with one GET each (compaction copies most of every object it
//! reads), or by range: the index with one tail GET, then a stream's blocks with one range GET
//! (retention, which reads one block of an object).
//!
//! The compactor reads objects, never the stores' caches: it runs beside appends and tail reads
//! without taking anything they use. Every GET is retried on transient errors and charged to the
//! bandwidth limiter first. Bytes that fail their checks are a corruption error naming the
//! object; nothing is skipped.

use std::sync::Arc;

use object_store::path::Path;
use object_store::{GetOptions, ObjectStore};
use objstream::format::{
    decode_block, decode_tail, tail_range, IndexEntry, ObjectIndex, TailDecode,
};
use objstream::keys::object_path;
use objstream::retry::{read_body, retry_transient, Backoff};
use objstream::{Error, ErrorDetail, ObjectId, Offset, Result, StoredBatch, StreamId};

use crate::limiter::Bandwidth;

/// What the reads need: where objects live and the bandwidth to charge.
#[derive(Clone, Debug)]
pub(crate) struct ObjectAccess {
    pub(crate) store: Arc<dyn ObjectStore>,
    pub(crate) prefix: Path,
    pub(crate) bandwidth: Arc<Bandwidth>,
}

impl ObjectAccess {
    /// `len` bytes of `id` from `start`, retried on transient errors.
    async fn get_range(&self, id: ObjectId, start: u64, end: u64) -> Result<bytes::Bytes> {
        self.bandwidth.acquire(end - start).await;
        let key = object_path(&self.prefix, id);
        retry_transient(
            "get object range",
            &key,
            Backoff::for_uploads(id.get()),
            || async {
                let options = GetOptions::new().with_range(Some(start..end));
                let got = self.store.get_opts(&key, options).await?;
                read_body(got).await
            },
        )
        .await
    }

    /// Reads the index of object `id` of `size` bytes.
    pub(crate) async fn index(&self, id: ObjectId, size: u64) -> Result<ObjectIndex> {
        let tail = tail_range(size);
        let bytes = self.get_range(id, tail.start, tail.end).await?;
        match decode_tail(id, size, &bytes)? {
            TailDecode::Complete { index, .. } => Ok(index),
            TailDecode::NeedIndex { footer, range } => {
                let bytes = self.get_range(id, range.start, range.end).await?;
                footer.decode_index(id, &bytes)
            }
        }
    }

    /// The batches of `stream` in `[start, end)` of object `id`, which must tile that range
    /// exactly; blocks are fetched with one range GET.
    pub(crate) async fn batches(
        &self,
        id: ObjectId,
        index: &ObjectIndex,
        stream: StreamId,
        start: Offset,
        end: Offset,
    ) -> Result<(Vec<StoredBatch>, u64)> {
        let entries = blocks_of(id, index, stream, start, end)?;
        let from = entries.first().map_or(0, |e| e.position);
        let to = entries.last().map_or(0, |e| e.byte_range().end);
        let bytes = self.get_range(id, from, to).await?;
        let batches = decode_tiling(id, entries, &bytes, from, stream, start, end)?;
        Ok((batches, to - from))
    }

    /// Reads all of object `id` with one GET, and its index from the bytes read.
    pub(crate) async fn whole(&self, id: ObjectId, size: u64) -> Result<SourceObject> {
        let bytes = self.get_range(id, 0, size).await?;
        let index = match decode_tail(id, size, &bytes)? {
            TailDecode::Complete { index, .. } => index,
            TailDecode::NeedIndex { footer, range } => {
                footer.decode_index(id, &bytes[range.start as usize..range.end as usize])?
            }
        };
        Ok(SourceObject { id, bytes, index })
    }
}

/// A whole source object in memory, with its index.
#[derive(Debug)]
pub(crate) struct SourceObject {
    id: ObjectId,
    bytes: bytes::Bytes,
    index: ObjectIndex,
}

impl SourceObject {
    /// The object's size in bytes.
    pub(crate) fn len(&self) -> u64 {
        self.bytes.len() as u64
    }

    /// The batches of `stream` in `[start, end)`, which must tile that range exactly.
    pub(crate) fn batches(
        &self,
        stream: StreamId,
        start: Offset,
        end: Offset,
    ) -> Result<Vec<StoredBatch>> {
        let entries = blocks_of(self.id, &self.index, stream, start, end)?;
        decode_tiling(self.id, entries, &self.bytes, 0, stream, start, end)
    }
}

/// The index entries of `stream` in `[start, end)`; none is corruption: the manifest says the
/// object holds them.
fn blocks_of(
    id: ObjectId,
    index: &ObjectIndex,
    stream: StreamId,
    start: Offset,
    end: Offset,
) -> Result<&[IndexEntry]> {
    let entries = index.entries_for(stream, start, end);
    if entries.is_empty() {
        return Err(corrupt(
            id,
            format!(
                "the manifest says it holds {stream} {start}..{end}, its index has no block of it"
            ),
        ));
    }
    Ok(entries)
}

/// Decodes `entries` from `bytes` (which start at object position `from`) and keeps the batches
/// that start in `[start, end)`; they must tile it exactly.
fn decode_tiling(
    id: ObjectId,
    entries: &[IndexEntry],
    bytes: &bytes::Bytes,
    from: u64,
    stream: StreamId,
    start: Offset,
    end: Offset,
) -> Result<Vec<StoredBatch>> {
    let mut out = Vec::new();
    for entry in entries {
        let range = entry.byte_range();
        let (lo, hi) = (range.start - from, range.end - from);
        if hi > bytes.len() as u64 {
            return Err(corrupt(
                id,
                format!("a block at {} runs past the bytes read", entry.position),
            ));
        }
        let block = bytes.slice(lo as usize..hi as usize);
        for b in decode_block(id, entry, block)? {
            if b.base_offset >= start && b.base_offset < end {
                out.push(b);
            }
        }
    }
    let mut expected = start;
    for b in &out {
        if b.base_offset != expected {
            return Err(corrupt(
                id,
                format!(
                    "{stream}: expected a batch at {expected}, found one at {}",
                    b.base_offset
                ),
            ));
        }
        expected = b.next_offset();
    }
    if expected != end {
        return Err(corrupt(
            id,
            format!("{stream}: the batches of {start}..{end} end at {expected}"),
        ));
    }
    Ok(out)
}

fn corrupt(id: ObjectId, what: String) -> Error {
    ErrorDetail::Corruption {
        location: id.to_string(),
        what,
    }
    .into()
}
