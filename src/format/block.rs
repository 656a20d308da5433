//! Data blocks: one stream's contiguous batches, optionally zstd-compressed.
//!
//! ```text
//! header   0  magic          u32   "OSBK"
//!          4  codec          u8    0 = none, 1 = zstd
//!          5  flags          u8    0
//!          6  reserved       u16   0
//!          8  stream         u64
//!         16  base_offset    u64
//!         24  record_count   u64
//!         32  batch_count    u32
//!         36  raw_len        u32
//!         40  stored_len     u32
//!         44  crc32c         u32   over header bytes 0..44, then the stored body
//! body     batch{batch_count}, raw_len bytes once decompressed
//! batch    0  count u32, 4 base_timestamp i64, 12 payload_len u32, 16 payload
//! ```
//!
//! The header repeats what the index says about the block (stream, first offset, record count,
//! lengths), so a decoder checks the two against each other: an index entry that points at the
//! wrong block is caught even though both pass their checksums.
//!
//! Decoding never copies a payload: each is a [`Bytes`] slice of the decompressed body, or of the
//! fetched block itself when the block is stored uncompressed.

use std::mem::size_of;

use bytes::Bytes;

use super::index::IndexEntry;
use super::wire::{get_u16, get_u32, get_u64, put_u16, put_u32, put_u64, Cursor};
use super::MAX_BLOCK_RAW_BYTES;
use crate::error::{Error, Result};
use crate::types::{ObjectId, Offset, RecordBatch, StoredBatch, StreamId};

/// "OSBK" read as a little-endian `u32`: the first bytes of every block.
pub(super) const BLOCK_MAGIC: u32 = u32::from_le_bytes(*b"OSBK");

const MAGIC_AT: usize = 0;
const CODEC_AT: usize = MAGIC_AT + size_of::<u32>();
const FLAGS_AT: usize = CODEC_AT + size_of::<u8>();
const RESERVED_AT: usize = FLAGS_AT + size_of::<u8>();
const STREAM_AT: usize = RESERVED_AT + size_of::<u16>();
const BASE_OFFSET_AT: usize = STREAM_AT + size_of::<u64>();
const RECORD_COUNT_AT: usize = BASE_OFFSET_AT + size_of::<u64>();
const BATCH_COUNT_AT: usize = RECORD_COUNT_AT + size_of::<u64>();
const RAW_LEN_AT: usize = BATCH_COUNT_AT + size_of::<u32>();
const STORED_LEN_AT: usize = RAW_LEN_AT + size_of::<u32>();
const CRC_AT: usize = STORED_LEN_AT + size_of::<u32>();

/// Length of a block header. The stored body follows it.
pub const BLOCK_HEADER_LEN: usize = CRC_AT + size_of::<u32>();

/// Length of the header in front of each batch's payload in a block body: count `u32`,
/// base timestamp `i64`, payload length `u32`.
pub const BATCH_HEADER_LEN: usize = size_of::<u32>() + size_of::<i64>() + size_of::<u32>();

/// How a block body is stored: the header's codec byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(super) enum Codec {
    /// As it is.
    None = 0,
    /// One zstd frame.
    Zstd = 1,
}

impl Codec {
    fn from_byte(b: u8) -> Option<Codec> {
        match b {
            0 => Some(Codec::None),
            1 => Some(Codec::Zstd),
            _ => None,
        }
    }
}

/// The fields of a block header other than the magic and the checksum.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct BlockHeader {
    pub(super) codec: Codec,
    pub(super) stream: StreamId,
    pub(super) base_offset: Offset,
    pub(super) record_count: u64,
    pub(super) batch_count: u32,
    pub(super) raw_len: u32,
    pub(super) stored_len: u32,
}

impl BlockHeader {
    /// Writes the header into `header`, with a checksum over it and the stored `body`.
    pub(super) fn write(&self, header: &mut [u8], body: &[u8]) {
        let header = &mut header[..BLOCK_HEADER_LEN];
        put_u32(header, MAGIC_AT, BLOCK_MAGIC);
        header[CODEC_AT] = self.codec as u8;
        header[FLAGS_AT] = 0;
        put_u16(header, RESERVED_AT, 0);
        put_u64(header, STREAM_AT, self.stream.get());
        put_u64(header, BASE_OFFSET_AT, self.base_offset.get());
        put_u64(header, RECORD_COUNT_AT, self.record_count);
        put_u32(header, BATCH_COUNT_AT, self.batch_count);
        put_u32(header, RAW_LEN_AT, self.raw_len);
        put_u32(header, STORED_LEN_AT, self.stored_len);
        let crc = checksum(header, body);
        put_u32(header, CRC_AT, crc);
    }
}

fn checksum(header: &[u8], body: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&header[..CRC_AT]), body)
}

/// Appends one batch, as it is laid out in a block body, to `out`.
pub(super) fn encode_batch(out: &mut Vec<u8>, count: u32, batch: &RecordBatch) {
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(&batch.base_timestamp.to_le_bytes());
    // The writer checked that the payload fits a block, so its length fits a u32.
    out.extend_from_slice(&(batch.payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&batch.payload);
}

/// Decodes the block that `entry` describes from `bytes`, exactly the entry's
/// [`byte_range`](IndexEntry::byte_range) of the object.
///
/// Checks the checksum, that the header agrees with `entry` (stream, first offset, record count,
/// lengths), and that the batches fill the body exactly and add up to the entry's records.
/// Payloads are slices of the decompressed body, or of `bytes` for an uncompressed block.
pub fn decode_block(
    object: ObjectId,
    entry: &IndexEntry,
    bytes: Bytes,
) -> Result<Vec<StoredBatch>> {
    let fail =
        |what: String| Error::corruption(format!("{object} block at {}", entry.position), what);

    if bytes.len() as u64 != u64::from(entry.size) {
        return Err(fail(format!(
            "the index says {} bytes, {} were given",
            entry.size,
            bytes.len()
        )));
    }
    let Some(header) = bytes.first_chunk::<BLOCK_HEADER_LEN>() else {
        return Err(fail(format!(
            "{} bytes cannot hold a {BLOCK_HEADER_LEN}-byte block header",
            bytes.len()
        )));
    };
    let magic = get_u32(header, MAGIC_AT);
    if magic != BLOCK_MAGIC {
        return Err(fail(format!("bad block magic {magic:#010x}")));
    }
    let stored = &bytes[BLOCK_HEADER_LEN..];
    let (expected, actual) = (get_u32(header, CRC_AT), checksum(header, stored));
    if expected != actual {
        return Err(fail(format!(
            "crc32c mismatch: header says {expected:#010x}, bytes give {actual:#010x}"
        )));
    }
    let Some(codec) = Codec::from_byte(header[CODEC_AT]) else {
        return Err(fail(format!("unknown codec {}", header[CODEC_AT])));
    };
    if header[FLAGS_AT] != 0 || get_u16(header, RESERVED_AT) != 0 {
        return Err(fail("flags or reserved bytes are not zero".into()));
    }
    let h = BlockHeader {
        codec,
        stream: StreamId(get_u64(header, STREAM_AT)),
        base_offset: Offset(get_u64(header, BASE_OFFSET_AT)),
        record_count: get_u64(header, RECORD_COUNT_AT),
        batch_count: get_u32(header, BATCH_COUNT_AT),
        raw_len: get_u32(header, RAW_LEN_AT),
        stored_len: get_u32(header, STORED_LEN_AT),
    };
    if h.stream != entry.stream
        || h.base_offset != entry.start
        || Some(h.record_count) != entry.end.get().checked_sub(entry.start.get())
        || h.raw_len != entry.raw_len
    {
        return Err(fail(format!(
            "header ({}, {}+{} records, {} raw bytes) does not match the index ({}, {}..{}, {} raw bytes)",
            h.stream, h.base_offset, h.record_count, h.raw_len, entry.stream, entry.start, entry.end, entry.raw_len
        )));
    }
    if h.stored_len as usize != stored.len() || h.stored_len > h.raw_len {
        return Err(fail(format!(
            "stored length {} does not fit a block of {} stored bytes and {} raw bytes",
            h.stored_len,
            stored.len(),
            h.raw_len
        )));
    }
    if h.raw_len as usize > MAX_BLOCK_RAW_BYTES {
        return Err(fail(format!(
            "raw length {} exceeds the limit of {MAX_BLOCK_RAW_BYTES}",
            h.raw_len
        )));
    }

    let body = match h.codec {
        Codec::None if h.stored_len == h.raw_len => bytes.slice(BLOCK_HEADER_LEN..),
        Codec::None => {
            return Err(fail(
                "uncompressed block with stored length != raw length".into(),
            ))
        }
        Codec::Zstd => {
            // The capacity caps the allocation: zstd fails rather than grow past it.
            let raw = zstd::bulk::decompress(stored, h.raw_len as usize)
                .map_err(|e| fail(format!("zstd: {e}")))?;
            if raw.len() != h.raw_len as usize {
                return Err(fail(format!(
                    "zstd produced {} bytes, the header says {}",
                    raw.len(),
                    h.raw_len
                )));
            }
            Bytes::from(raw)
        }
    };
    decode_body(&h, body).map_err(fail)
}

/// Splits a decompressed body into batches, checking it against the header.
fn decode_body(h: &BlockHeader, body: Bytes) -> Result<Vec<StoredBatch>, String> {
    // Every batch takes at least its header, so a batch count the body cannot hold is refused
    // before it sizes an allocation.
    if (h.batch_count as usize).saturating_mul(BATCH_HEADER_LEN) > body.len() {
        return Err(format!(
            "{} batches cannot fit in {} bytes",
            h.batch_count,
            body.len()
        ));
    }
    let mut batches = Vec::with_capacity(h.batch_count as usize);
    let mut cursor = Cursor::new(&body);
    let mut records: u64 = 0;
    for i in 0..h.batch_count {
        let (Some(count), Some(base_timestamp), Some(len)) =
            (cursor.u32(), cursor.i64(), cursor.u32())
        else {
            return Err(format!("batch {i} header runs past the body"));
        };
        if count == 0 {
            return Err(format!("batch {i} has no records"));
        }
        let start = cursor.position();
        if cursor.take(len as usize).is_none() {
            return Err(format!(
                "batch {i} payload of {len} bytes runs past the body ({} left)",
                cursor.remaining()
            ));
        }
        let base_offset = h.base_offset.add(records);
        records += u64::from(count);
        if records > h.record_count {
            return Err(format!(
                "batches hold more than the header's {} records",
                h.record_count
            ));
        }
        batches.push(StoredBatch {
            base_offset,
            batch: RecordBatch {
                count,
                base_timestamp,
                payload: body.slice(start..start + len as usize),
            },
        });
    }
    if cursor.remaining() != 0 {
        return Err(format!(
            "{} bytes follow the last batch",
            cursor.remaining()
        ));
    }
    if records != h.record_count {
        return Err(format!(
            "batches hold {records} records, the header says {}",
            h.record_count
        ));
    }
    Ok(batches)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(codec_byte: u8, body: &[u8], h: BlockHeader) -> (IndexEntry, Bytes) {
        let mut bytes = vec![0u8; BLOCK_HEADER_LEN];
        bytes.extend_from_slice(body);
        let (header, stored) = bytes.split_at_mut(BLOCK_HEADER_LEN);
        h.write(header, stored);
        if codec_byte != h.codec as u8 {
            header[CODEC_AT] = codec_byte;
            let crc = checksum(header, stored);
            put_u32(header, CRC_AT, crc);
        }
        let entry = IndexEntry {
            stream: h.stream,
            start: h.base_offset,
            end: h.base_offset.add(h.record_count),
            position: 0,
            size: bytes.len() as u32,
            raw_len: h.raw_len,
        };
        (entry, Bytes::from(bytes))
    }

    fn header(body: &[u8], record_count: u64, batch_count: u32) -> BlockHeader {
        BlockHeader {
            codec: Codec::None,
            stream: StreamId(3),
            base_offset: Offset(100),
            record_count,
            batch_count,
            raw_len: body.len() as u32,
            stored_len: body.len() as u32,
        }
    }

    fn two_batches() -> Vec<u8> {
        let mut body = Vec::new();
        encode_batch(&mut body, 2, &RecordBatch::new(2, -5, "ab"));
        encode_batch(&mut body, 1, &RecordBatch::new(1, 7, ""));
        body
    }

    #[test]
    fn header_offsets_follow_the_documented_layout() {
        assert_eq!(
            (
                STREAM_AT,
                RECORD_COUNT_AT,
                RAW_LEN_AT,
                CRC_AT,
                BLOCK_HEADER_LEN
            ),
            (8, 24, 36, 44, 48)
        );
        assert_eq!(BATCH_HEADER_LEN, 16);
    }

    #[test]
    fn batches_get_consecutive_offsets_and_share_the_block_buffer() {
        let body = two_batches();
        let (entry, bytes) = block(0, &body, header(&body, 3, 2));
        let batches = decode_block(ObjectId(1), &entry, bytes.clone()).unwrap();
        assert_eq!(batches.len(), 2);
        assert_eq!(batches[0].base_offset, Offset(100));
        assert_eq!(batches[0].batch, RecordBatch::new(2, -5, "ab"));
        assert_eq!(batches[1].base_offset, Offset(102));
        assert_eq!(batches[1].batch, RecordBatch::new(1, 7, ""));
        let payload = &batches[0].batch.payload;
        let inside = bytes.as_ptr_range().contains(&payload.as_ptr());
        assert!(inside, "an uncompressed payload is a slice of the block");
    }

    #[test]
    fn a_record_count_that_disagrees_with_the_batches_is_corruption() {
        let body = two_batches();
        let (entry, bytes) = block(0, &body, header(&body, 4, 2));
        let err = decode_block(ObjectId(1), &entry, bytes).unwrap_err();
        assert!(err.to_string().contains("hold 3 records"), "{err}");
    }

    #[test]
    fn a_batch_count_too_large_for_the_body_is_refused_before_allocating() {
        let body = two_batches();
        let (entry, bytes) = block(0, &body, header(&body, 3, u32::MAX));
        let err = decode_block(ObjectId(1), &entry, bytes).unwrap_err();
        assert!(err.to_string().contains("cannot fit"), "{err}");
    }

    #[test]
    fn trailing_bytes_after_the_last_batch_are_corruption() {
        let mut body = two_batches();
        body.push(0);
        let (entry, bytes) = block(0, &body, header(&body, 3, 2));
        let err = decode_block(ObjectId(1), &entry, bytes).unwrap_err();
        assert!(err.to_string().contains("follow the last batch"), "{err}");
    }

    #[test]
    fn an_unknown_codec_is_corruption() {
        let body = two_batches();
        let (entry, bytes) = block(9, &body, header(&body, 3, 2));
        let err = decode_block(ObjectId(1), &entry, bytes).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Corruption);
        assert!(err.to_string().contains("unknown codec 9"), "{err}");
    }

    #[test]
    fn an_entry_for_another_stream_is_corruption_and_names_the_object() {
        let body = two_batches();
        let (mut entry, bytes) = block(0, &body, header(&body, 3, 2));
        entry.stream = StreamId(4);
        let err = decode_block(ObjectId(12), &entry, bytes).unwrap_err();
        assert!(err.to_string().contains("object-12 block at 0"), "{err}");
        assert!(
            err.to_string().contains("does not match the index"),
            "{err}"
        );
    }

    #[test]
    fn a_zstd_body_that_inflates_past_its_raw_length_is_corruption() {
        let body = vec![b'z'; 4096];
        let packed = zstd::bulk::compress(&body, 1).unwrap();
        let mut h = header(&body, 1, 1);
        h.codec = Codec::Zstd;
        h.raw_len = 100;
        h.stored_len = packed.len() as u32;
        let (entry, bytes) = block(1, &packed, h);
        let err = decode_block(ObjectId(1), &entry, bytes).unwrap_err();
        assert!(err.to_string().contains("zstd"), "{err}");
    }
}
