//! Tests of whole objects: round trips, lookups, corruption anywhere, truncation, and snapshots
//! that pin the encoded bytes.

use std::path::PathBuf;

use bytes::Bytes;
use proptest::prelude::*;

use super::block::Codec;
use super::*;
use crate::error::Result;
use crate::settings::Compression;
use crate::types::{ObjectId, Offset, RecordBatch, StoredBatch, StreamId};
use crate::ErrorKind;

/// Reads a whole object as a reader would, fetching a tail of `tail_len` bytes first.
fn read_object(
    bytes: &Bytes,
    tail_len: usize,
) -> Result<(ObjectIndex, Vec<(StreamId, StoredBatch)>)> {
    let object = ObjectId(77);
    let size = bytes.len() as u64;
    let tail = &bytes[bytes.len() - tail_len.min(bytes.len())..];
    let index = match decode_tail(object, size, tail)? {
        TailDecode::Complete { index, .. } => index,
        TailDecode::NeedIndex { footer, range } => {
            footer.decode_index(object, &bytes[range.start as usize..range.end as usize])?
        }
    };
    let mut out = Vec::new();
    for entry in index.entries() {
        let r = entry.byte_range();
        let block = bytes.slice(r.start as usize..r.end as usize);
        for b in decode_block(object, entry, block)? {
            out.push((entry.stream, b));
        }
    }
    Ok((index, out))
}

/// A batch whose payload is partly a run of one byte (so zstd has something to do) and partly
/// arbitrary bytes.
fn arb_batch() -> impl Strategy<Value = RecordBatch> {
    (
        1u32..20,
        any::<i64>(),
        0usize..300,
        any::<u8>(),
        prop::collection::vec(any::<u8>(), 0..24),
    )
        .prop_map(|(count, ts, run, byte, tail)| {
            let mut payload = vec![byte; run];
            payload.extend(tail);
            RecordBatch::new(count, ts, payload)
        })
}

/// Streams in increasing order, each with a first offset and contiguous batches.
fn arb_streams() -> impl Strategy<Value = Vec<(StreamId, Vec<StoredBatch>)>> {
    prop::collection::vec(
        (
            1u64..4,
            0u64..1_000,
            prop::collection::vec(arb_batch(), 1..12),
        ),
        0..5,
    )
    .prop_map(|streams| {
        let mut id = 0;
        streams
            .into_iter()
            .map(|(gap, start, batches)| {
                id += gap;
                let mut next = Offset(start);
                let stored = batches
                    .into_iter()
                    .map(|batch| {
                        let b = StoredBatch {
                            base_offset: next,
                            batch,
                        };
                        next = b.next_offset();
                        b
                    })
                    .collect();
                (StreamId(id), stored)
            })
            .collect()
    })
}

fn arb_compression() -> impl Strategy<Value = Compression> {
    prop_oneof![
        Just(Compression::None),
        (1i32..4).prop_map(|level| Compression::Zstd { level })
    ]
}

fn build(
    streams: &[(StreamId, Vec<StoredBatch>)],
    block_bytes: usize,
    c: Compression,
) -> EncodedObject {
    let mut builder = ObjectBuilder::new(block_bytes, c);
    for (stream, batches) in streams {
        for b in batches {
            builder.add(*stream, b.base_offset, &b.batch).unwrap();
        }
    }
    builder.finish()
}

proptest! {
    #[test]
    fn objects_round_trip_and_every_offset_is_found(
        streams in arb_streams(),
        block_bytes in 0usize..2_000,
        compression in arb_compression(),
        tail_len in prop_oneof![Just(TAIL_READ_HINT), FOOTER_LEN..200],
    ) {
        let object = build(&streams, block_bytes, compression);
        let (index, decoded) = read_object(&object.bytes, tail_len).unwrap();

        let expected: Vec<(StreamId, StoredBatch)> = streams
            .iter()
            .flat_map(|(s, bs)| bs.iter().map(move |b| (*s, b.clone())))
            .collect();
        prop_assert_eq!(decoded, expected);

        prop_assert_eq!(object.ranges.len(), streams.len());
        for ((stream, batches), range) in streams.iter().zip(&object.ranges) {
            let (start, end) = (batches[0].base_offset, batches[batches.len() - 1].next_offset());
            prop_assert_eq!((range.stream, range.start, range.end), (*stream, start, end));
            let own = index.stream_entries(*stream);
            let bytes: u64 = own.iter().map(|e| u64::from(e.size)).sum();
            prop_assert_eq!(range.bytes, bytes);

            for o in start.get()..end.get() {
                let found = index.find(*stream, Offset(o));
                prop_assert!(found[0].contains(*stream, Offset(o)));
                prop_assert_eq!(found.last(), own.last());
                prop_assert_eq!(index.entries_for(*stream, Offset(o), Offset(o + 1)), &found[..1]);
            }
            prop_assert!(index.find(*stream, end).is_empty());
            prop_assert!(start.get() == 0 || index.find(*stream, Offset(start.get() - 1)).is_empty());
            prop_assert_eq!(index.entries_for(*stream, Offset(0), Offset(u64::MAX)), own);
        }
    }
}

/// Two streams, three blocks: small enough to corrupt at every byte.
fn small_object(compression: Compression) -> Bytes {
    let mut b = ObjectBuilder::new(96, compression);
    let text =
        |i: u32| format!("{{\"event\":\"eval\",\"score\":{i},\"note\":\"ok ok ok ok ok ok\"}}\n");
    b.add(StreamId(4), Offset(10), &RecordBatch::new(2, 1, text(1)))
        .unwrap();
    b.add(StreamId(4), Offset(12), &RecordBatch::new(1, 2, text(2)))
        .unwrap();
    b.add(
        StreamId(9),
        Offset(0),
        &RecordBatch::new(3, 3, text(3).repeat(3)),
    )
    .unwrap();
    b.finish().bytes
}

#[test]
fn the_small_object_has_several_blocks_and_reads_back() {
    for c in [Compression::None, Compression::Zstd { level: 1 }] {
        let bytes = small_object(c);
        let (index, batches) = read_object(&bytes, TAIL_READ_HINT).unwrap();
        assert_eq!(index.entries().len(), 3, "{c:?}");
        assert_eq!(batches.len(), 3);
        assert_eq!(batches[2].1.base_offset, Offset(0));
    }
}

#[test]
fn a_flipped_byte_anywhere_is_reported_as_corruption() {
    for c in [Compression::None, Compression::Zstd { level: 1 }] {
        let bytes = small_object(c);
        for i in 0..bytes.len() {
            let mut bad = bytes.to_vec();
            bad[i] ^= 0xff;
            let bad = Bytes::from(bad);
            for tail_len in [TAIL_READ_HINT, FOOTER_LEN] {
                match read_object(&bad, tail_len) {
                    Err(e) => assert_eq!(e.kind(), ErrorKind::Corruption, "byte {i}: {e}"),
                    Ok(_) => panic!("{c:?}: flipping byte {i} of {} went unnoticed", bytes.len()),
                }
            }
        }
    }
}

#[test]
fn a_truncated_object_fails_cleanly() {
    let bytes = small_object(Compression::Zstd { level: 1 });
    for len in 0..bytes.len() {
        let err = read_object(&bytes.slice(..len), TAIL_READ_HINT).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corruption, "length {len}: {err}");
    }
}

#[test]
fn a_block_given_too_few_or_too_many_bytes_is_corruption() {
    let bytes = small_object(Compression::None);
    let (index, _) = read_object(&bytes, TAIL_READ_HINT).unwrap();
    let e = &index.entries()[1];
    let r = e.byte_range();
    for (from, to) in [
        (r.start, r.end - 1),
        (r.start, r.end + 1),
        (r.start + 1, r.end),
    ] {
        let err =
            decode_block(ObjectId(1), e, bytes.slice(from as usize..to as usize)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corruption, "{err}");
    }
}

#[test]
fn decompressed_payloads_share_the_block_buffer() {
    let mut b = ObjectBuilder::new(1 << 20, Compression::Zstd { level: 1 });
    b.add(
        StreamId(1),
        Offset(0),
        &RecordBatch::new(1, 0, "a".repeat(500)),
    )
    .unwrap();
    b.add(
        StreamId(1),
        Offset(1),
        &RecordBatch::new(1, 0, "b".repeat(500)),
    )
    .unwrap();
    let bytes = b.finish().bytes;
    let (_, batches) = read_object(&bytes, TAIL_READ_HINT).unwrap();
    let (first, second) = (&batches[0].1.batch.payload, &batches[1].1.batch.payload);
    // The second payload starts one batch header after the first ends: one buffer, no copies.
    let gap = second.as_ptr() as usize - (first.as_ptr() as usize + first.len());
    assert_eq!(gap, BATCH_HEADER_LEN);
}

#[test]
fn an_empty_object_is_just_an_index_and_a_footer() {
    let object = ObjectBuilder::new(1 << 20, Compression::None).finish();
    assert_eq!(object.bytes.len(), INDEX_HEADER_LEN + 4 + FOOTER_LEN);
    assert!(object.ranges.is_empty());
    let (index, batches) = read_object(&object.bytes, TAIL_READ_HINT).unwrap();
    assert!(index.entries().is_empty() && batches.is_empty());
}

/// Compares `bytes` with the hex fixture `name`, or rewrites the fixture when
/// `OBJSTREAM_UPDATE_SNAPSHOTS` is set. Then checks that the fixture decodes to `expected`.
fn check_snapshot(name: &str, bytes: &Bytes, expected: &[(StreamId, StoredBatch)]) {
    let path: PathBuf = [env!("CARGO_MANIFEST_DIR"), "src/format/testdata", name]
        .iter()
        .collect();
    if std::env::var_os("OBJSTREAM_UPDATE_SNAPSHOTS").is_some() {
        let hex: Vec<String> = bytes
            .chunks(16)
            .map(|line| line.iter().map(|b| format!("{b:02x}")).collect())
            .collect();
        std::fs::write(&path, hex.join("\n") + "\n").unwrap();
    }
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (set OBJSTREAM_UPDATE_SNAPSHOTS=1 to write it)",
            path.display()
        )
    });
    let digits: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    let fixture: Vec<u8> = digits
        .chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
        .collect();
    assert_eq!(
        hex_lines(bytes),
        hex_lines(&fixture),
        "{name}: the encoding changed; a format change needs a new version, and old fixtures must keep decoding"
    );
    let (_, decoded) = read_object(&Bytes::from(fixture), TAIL_READ_HINT).unwrap();
    assert_eq!(decoded, expected);
}

fn hex_lines(b: &[u8]) -> Vec<String> {
    b.chunks(16)
        .enumerate()
        .map(|(i, l)| {
            format!(
                "{:04x}: {}",
                i * 16,
                l.iter().map(|b| format!("{b:02x}")).collect::<String>()
            )
        })
        .collect()
}

fn tiny_batches() -> Vec<(StreamId, StoredBatch)> {
    let b = |offset, count, ts, payload: &str| StoredBatch {
        base_offset: Offset(offset),
        batch: RecordBatch::new(count, ts, payload.to_owned()),
    };
    vec![
        (
            StreamId(1),
            b(0, 2, 1_700_000_000_000, "hello hello hello hello\n"),
        ),
        (
            StreamId(1),
            b(2, 1, 1_700_000_000_001, "hello again hello again\n"),
        ),
        (StreamId(2), b(5, 1, -1, "x")),
    ]
}

fn tiny_object(c: Compression) -> Bytes {
    let mut builder = ObjectBuilder::new(1 << 20, c);
    for (s, b) in tiny_batches() {
        builder.add(s, b.base_offset, &b.batch).unwrap();
    }
    builder.finish().bytes
}

#[test]
fn snapshot_of_a_tiny_uncompressed_object() {
    let bytes = tiny_object(Compression::None);
    assert_eq!(&bytes[..4], b"OSBK");
    assert_eq!(&bytes[bytes.len() - 8..], b"OSTRMOBJ");
    check_snapshot("v1_none.hex", &bytes, &tiny_batches());
}

#[test]
fn snapshot_of_a_tiny_zstd_object() {
    let bytes = tiny_object(Compression::Zstd { level: 1 });
    assert_eq!(bytes[4], Codec::Zstd as u8, "the first block is compressed");
    check_snapshot("v1_zstd.hex", &bytes, &tiny_batches());
}
