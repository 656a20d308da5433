//! Turning a sealed part of the log cache into objects.
//!
//! A stream with at least `stream_split_bytes` in the seal gets a stream object of its own; the
//! rest share one stream set object, streams in ascending id order. Encoding (and compression)
//! runs on a blocking thread.

use bytes::Bytes;
use objstream_cache::{CacheEntry, Sealed};

use crate::error::Result;
use crate::format::ObjectBuilder;
use crate::manifest::{ManifestStreamRange, ObjectKind, ObjectMeta};
use crate::settings::Compression;
use crate::types::{Epoch, ObjectId, Offset, RecordBatch, StreamId};

/// One object to upload: its bytes and what to commit for it.
pub(crate) struct BuiltObject {
    pub bytes: Bytes,
    pub meta: ObjectMeta,
}

/// One stream's part of an object: the stream, its epoch, its entries in offset order.
pub(crate) type StreamPart = (StreamId, Epoch, Vec<CacheEntry<RecordBatch>>);

/// The streams of a seal grouped into objects, before ids are known.
pub(crate) struct Plan {
    pub groups: Vec<(ObjectKind, Vec<StreamPart>)>,
}

/// Groups a seal's streams into objects. `epoch_of` gives each stream's current epoch; streams
/// without one (deleted meanwhile) are left out.
pub(crate) fn plan(
    sealed: Sealed<RecordBatch>,
    split_bytes: u64,
    epoch_of: impl Fn(StreamId) -> Option<Epoch>,
) -> Plan {
    let mut shared = Vec::new();
    let mut groups = Vec::new();
    for (stream, entries) in sealed.streams {
        let stream = StreamId(stream);
        let Some(epoch) = epoch_of(stream) else {
            continue;
        };
        let bytes: u64 = entries.iter().map(|e| e.value.payload.len() as u64).sum();
        if bytes >= split_bytes {
            groups.push((ObjectKind::Stream, vec![(stream, epoch, entries)]));
        } else {
            shared.push((stream, epoch, entries));
        }
    }
    if !shared.is_empty() {
        groups.insert(0, (ObjectKind::StreamSet, shared));
    }
    Plan { groups }
}

/// Encodes one group as object `id`.
pub(crate) fn build(
    id: ObjectId,
    kind: ObjectKind,
    streams: &[StreamPart],
    block_bytes: usize,
    compression: Compression,
) -> Result<BuiltObject> {
    let mut builder = ObjectBuilder::new(block_bytes, compression);
    for (stream, _, entries) in streams {
        for e in entries {
            builder.add(*stream, Offset(e.base_offset), &e.value)?;
        }
    }
    let encoded = builder.finish();
    let ranges = streams
        .iter()
        .filter_map(|(stream, epoch, entries)| {
            let first = entries.first()?;
            let last = entries.last()?;
            Some(ManifestStreamRange {
                stream: *stream,
                epoch: *epoch,
                start: Offset(first.base_offset),
                end: Offset(last.next_offset()),
            })
        })
        .collect();
    Ok(BuiltObject {
        meta: ObjectMeta {
            id,
            size: encoded.bytes.len() as u64,
            kind,
            ranges,
        },
        bytes: encoded.bytes,
    })
}
