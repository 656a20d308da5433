//! Reading source objects: the index with one tail GET, then a stream's blocks with one range
//! GET per piece.
//!
//! The compactor reads objects, never the stores' caches: it runs beside appends and tail reads
//! without taking anything they use. Every GET is retried on transient errors and charged to the
//! bandwidth limiter first. Bytes that fail their checks are a corruption error naming the
//! object; nothing is skipped.

use std::sync::Arc;

use object_store::path::Path;
use object_store::{GetOptions, ObjectStore};
use objstream::format::{decode_block, decode_tail, tail_range, ObjectIndex, TailDecode};
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
        let entries = index.entries_for(stream, start, end);
        let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
            return Err(corrupt(
                id,
                format!("the manifest says it holds {stream} {start}..{end}, its index has no block of it"),
            ));
        };
        let from = first.position;
        let to = last.byte_range().end;
        let bytes = self.get_range(id, from, to).await?;
        let mut out = Vec::new();
        for entry in entries {
            let range = entry.byte_range();
            let block = bytes.slice((range.start - from) as usize..(range.end - from) as usize);
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
        Ok((out, to - from))
    }
}

fn corrupt(id: ObjectId, what: String) -> Error {
    ErrorDetail::Corruption {
        location: id.to_string(),
        what,
    }
    .into()
}
