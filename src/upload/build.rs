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

#[cfg(test)]
mod tests {
    use super::*;
    use objstream_cache::LogCache;

    fn sealed(sizes: &[(u64, usize)]) -> Sealed<RecordBatch> {
        let mut cache = LogCache::new(1 << 30);
        let mut next = std::collections::HashMap::new();
        for &(stream, len) in sizes {
            let base = next.entry(stream).or_insert(0u64);
            cache.insert(stream, *base, RecordBatch::new(1, 0, vec![7u8; len]));
            *base += 1;
        }
        cache.mark_durable(sizes.len() as u64);
        cache.seal()
    }

    #[test]
    fn big_streams_get_objects_of_their_own_and_the_rest_share_one() {
        let s = sealed(&[(1, 100), (2, 5000), (3, 100), (2, 5000)]);
        let plan = plan(s, 8000, |s| Some(Epoch(s.0 + 10)));
        let shapes: Vec<_> = plan
            .groups
            .iter()
            .map(|(k, parts)| {
                (
                    *k,
                    parts.iter().map(|p| (p.0 .0, p.1 .0)).collect::<Vec<_>>(),
                )
            })
            .collect();
        assert_eq!(
            shapes,
            vec![
                (ObjectKind::StreamSet, vec![(1, 11), (3, 13)]),
                (ObjectKind::Stream, vec![(2, 12)]),
            ]
        );
    }

    #[test]
    fn streams_without_an_epoch_are_left_out() {
        let plan = plan(sealed(&[(1, 10), (2, 10)]), 1 << 20, |s| {
            (s.0 == 2).then_some(Epoch(1))
        });
        assert_eq!(plan.groups.len(), 1);
        assert_eq!(plan.groups[0].1.len(), 1);
        assert_eq!(plan.groups[0].1[0].0, StreamId(2));
    }

    #[test]
    fn a_built_object_commits_one_range_per_stream() {
        let plan = plan(sealed(&[(1, 10), (1, 20), (4, 30)]), 1 << 20, |_| {
            Some(Epoch(3))
        });
        let (kind, parts) = &plan.groups[0];
        let built = build(ObjectId(9), *kind, parts, 1 << 10, Compression::None).unwrap();
        assert_eq!(built.meta.size, built.bytes.len() as u64);
        let ranges: Vec<_> = built
            .meta
            .ranges
            .iter()
            .map(|r| (r.stream.0, r.start.0, r.end.0))
            .collect();
        assert_eq!(ranges, vec![(1, 0, 2), (4, 0, 1)]);
    }
}
