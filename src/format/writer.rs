//! Building an object: batches in, the object's bytes and per-stream ranges out.
//!
//! [`ObjectBuilder`] takes batches in (stream, offset) order, contiguous within each stream. It
//! writes each batch straight into the output buffer behind a reserved block header, so an
//! uncompressed payload is copied once. A block is sealed when its stream changes or when the next
//! batch would take its body past `block_bytes`: then the body is compressed (when it shrinks),
//! and the header with its checksum is filled in. [`ObjectBuilder::finish`] seals the last block
//! and appends the index and the footer.

use std::fmt;

use bytes::Bytes;

use super::block::{encode_batch, BlockHeader, Codec, BATCH_HEADER_LEN, BLOCK_HEADER_LEN};
use super::footer::{Footer, FOOTER_LEN};
use super::index::{encode_index, index_len, IndexEntry, MAX_INDEX_ENTRIES};
use super::{FORMAT_VERSION, MAX_BLOCK_RAW_BYTES};
use crate::error::{Error, Result};
use crate::settings::Compression;
use crate::types::{Offset, RecordBatch, StreamId};

/// The batches of one stream in an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamRange {
    /// The stream.
    pub stream: StreamId,
    /// The offset of its first record in the object.
    pub start: Offset,
    /// One past the offset of its last record in the object.
    pub end: Offset,
    /// The bytes its blocks take in the object (headers and stored bodies).
    pub bytes: u64,
}

/// A finished object.
#[derive(Clone, Debug)]
pub struct EncodedObject {
    /// The object's bytes, ready to upload.
    pub bytes: Bytes,
    /// One range per stream, in stream order, covering all of that stream's batches.
    pub ranges: Vec<StreamRange>,
}

/// The block being filled: its header sits at `position` in the output, its body after it.
struct OpenBlock {
    position: usize,
    stream: StreamId,
    base_offset: Offset,
    next_offset: Offset,
    batch_count: u32,
}

/// Builds one object from batches given in (stream, offset) order.
pub struct ObjectBuilder {
    block_bytes: usize,
    compressor: Option<zstd::bulk::Compressor<'static>>,
    out: Vec<u8>,
    scratch: Vec<u8>,
    entries: Vec<IndexEntry>,
    ranges: Vec<StreamRange>,
    open: Option<OpenBlock>,
}

impl fmt::Debug for ObjectBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectBuilder")
            .field("block_bytes", &self.block_bytes)
            .field("zstd", &self.compressor.is_some())
            .field("len", &self.out.len())
            .field("blocks", &self.entries.len())
            .field("ranges", &self.ranges)
            .finish()
    }
}

impl ObjectBuilder {
    /// A builder that cuts blocks at about `block_bytes` of uncompressed body (at most
    /// [`MAX_BLOCK_RAW_BYTES`]) and stores them with `compression`.
    ///
    /// A block holds one batch more than `block_bytes` allows only when that batch alone exceeds
    /// it. With zstd, a block that does not shrink is stored uncompressed; if a zstd context cannot
    /// be created at all, every block is.
    pub fn new(block_bytes: usize, compression: Compression) -> Self {
        let compressor = match compression {
            Compression::None => None,
            Compression::Zstd { level } => match zstd::bulk::Compressor::new(level) {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::warn!(level, error = %e, "zstd unavailable; writing blocks uncompressed");
                    None
                }
            },
        };
        ObjectBuilder {
            block_bytes: block_bytes.min(MAX_BLOCK_RAW_BYTES),
            compressor,
            out: Vec::new(),
            scratch: Vec::new(),
            entries: Vec::new(),
            ranges: Vec::new(),
            open: None,
        }
    }

    /// Adds `batch` as the records of `stream` from `base_offset`.
    ///
    /// Streams must come in increasing order, and each stream's batches in offset order without
    /// gaps or overlaps. A batch out of that order, with no records, whose offsets overflow, or too
    /// large for a block ([`MAX_BLOCK_RAW_BYTES`] with its header) is refused with an
    /// invalid-input error, and the builder is unchanged.
    pub fn add(
        &mut self,
        stream: StreamId,
        base_offset: Offset,
        batch: &RecordBatch,
    ) -> Result<()> {
        if batch.count == 0 {
            return Err(Error::invalid(format!(
                "{stream}: a batch at {base_offset} has no records"
            )));
        }
        let encoded = BATCH_HEADER_LEN.saturating_add(batch.payload.len());
        if encoded > MAX_BLOCK_RAW_BYTES {
            return Err(Error::invalid(format!(
                "{stream}: a batch of {} bytes at {base_offset} exceeds the block limit of {MAX_BLOCK_RAW_BYTES}",
                batch.payload.len()
            )));
        }
        let Some(end) = base_offset.get().checked_add(u64::from(batch.count)) else {
            return Err(Error::invalid(format!(
                "{stream}: {} records at {base_offset} overflow the offset space",
                batch.count
            )));
        };
        if let Some(last) = self.ranges.last() {
            if stream < last.stream || (stream == last.stream && base_offset != last.end) {
                return Err(Error::invalid(format!(
                    "{stream} at {base_offset} does not follow {} at {}: batches must come in \
                     (stream, offset) order without gaps",
                    last.stream, last.end
                )));
            }
        }

        let fits = self.open.as_ref().is_some_and(|b| {
            let body = self.out.len() - b.position - BLOCK_HEADER_LEN;
            b.stream == stream && b.batch_count < u32::MAX && body + encoded <= self.block_bytes
        });
        if !fits {
            let blocks = self.entries.len() + usize::from(self.open.is_some());
            if blocks >= MAX_INDEX_ENTRIES {
                return Err(Error::invalid(format!(
                    "{stream} at {base_offset}: the object already holds {blocks} blocks, the most \
                     an index can list"
                )));
            }
            self.seal();
        }
        let open = self.open.get_or_insert_with(|| {
            let position = self.out.len();
            self.out.resize(position + BLOCK_HEADER_LEN, 0);
            OpenBlock {
                position,
                stream,
                base_offset,
                next_offset: base_offset,
                batch_count: 0,
            }
        });
        encode_batch(&mut self.out, batch.count, batch);
        open.batch_count += 1;
        open.next_offset = Offset(end);

        match self.ranges.last_mut() {
            Some(r) if r.stream == stream => r.end = Offset(end),
            _ => self.ranges.push(StreamRange {
                stream,
                start: base_offset,
                end: Offset(end),
                bytes: 0,
            }),
        }
        Ok(())
    }

    /// True when no batch was added.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// The size the object would have if finished now, counting the open block uncompressed: an
    /// upper bound, near enough, for deciding when to cut an object.
    pub fn estimated_size(&self) -> u64 {
        let blocks = self.entries.len() + usize::from(self.open.is_some());
        (self.out.len() + index_len(blocks) + FOOTER_LEN) as u64
    }

    /// Seals the last block and appends the index and the footer.
    pub fn finish(mut self) -> EncodedObject {
        self.seal();
        let index_position = self.out.len() as u64;
        encode_index(&mut self.out, &self.entries);
        let footer = Footer {
            index_position,
            // `add` keeps the entry count within MAX_INDEX_ENTRIES, so the length fits.
            index_len: index_len(self.entries.len()) as u32,
            version: FORMAT_VERSION,
        };
        self.out.extend_from_slice(&footer.encode());
        EncodedObject {
            bytes: Bytes::from(self.out),
            ranges: self.ranges,
        }
    }

    /// Compresses the open block's body if that shrinks it, fills in its header, and indexes it.
    fn seal(&mut self) {
        let Some(b) = self.open.take() else {
            return;
        };
        let body_at = b.position + BLOCK_HEADER_LEN;
        let raw_len = self.out.len() - body_at;
        let mut codec = Codec::None;
        if let Some(compressor) = &mut self.compressor {
            self.scratch.clear();
            self.scratch.reserve(raw_len);
            // Output that would not fit in `raw_len` bytes fails here, and is stored as it is.
            let packed = compressor.compress_to_buffer(&self.out[body_at..], &mut self.scratch);
            if matches!(packed, Ok(n) if n < raw_len) {
                self.out.truncate(body_at);
                self.out.extend_from_slice(&self.scratch);
                codec = Codec::Zstd;
            }
        }
        let stored_len = self.out.len() - body_at;
        let header = BlockHeader {
            codec,
            stream: b.stream,
            base_offset: b.base_offset,
            record_count: b.next_offset.get() - b.base_offset.get(),
            batch_count: b.batch_count,
            // Both are at most MAX_BLOCK_RAW_BYTES: `add` keeps every block body within it.
            raw_len: raw_len as u32,
            stored_len: stored_len as u32,
        };
        let (head, body) = self.out[b.position..].split_at_mut(BLOCK_HEADER_LEN);
        header.write(head, body);
        let size = BLOCK_HEADER_LEN + stored_len;
        self.entries.push(IndexEntry {
            stream: b.stream,
            start: b.base_offset,
            end: b.next_offset,
            position: b.position as u64,
            size: size as u32,
            raw_len: raw_len as u32,
        });
        if let Some(r) = self.ranges.last_mut() {
            r.bytes += size as u64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{decode_tail, TailDecode};
    use crate::types::ObjectId;
    use crate::ErrorKind;

    fn batch(count: u32, len: usize) -> RecordBatch {
        RecordBatch::new(count, 0, vec![b'a'; len])
    }

    fn entries(bytes: &Bytes) -> Vec<IndexEntry> {
        match decode_tail(ObjectId(0), bytes.len() as u64, bytes).unwrap() {
            TailDecode::Complete { index, .. } => index.entries().to_vec(),
            TailDecode::NeedIndex { .. } => panic!("whole object given"),
        }
    }

    #[test]
    fn blocks_are_cut_before_they_pass_block_bytes() {
        // Each batch takes 16 + 30 = 46 bytes of body: two fit in 100, a third does not.
        let mut b = ObjectBuilder::new(100, Compression::None);
        for i in 0..5 {
            b.add(StreamId(1), Offset(i), &batch(1, 30)).unwrap();
        }
        let e = entries(&b.finish().bytes);
        let raw: Vec<u32> = e.iter().map(|e| e.raw_len).collect();
        assert_eq!(raw, [92, 92, 46]);
        assert_eq!((e[1].start, e[1].end), (Offset(2), Offset(4)));
    }

    #[test]
    fn a_batch_larger_than_block_bytes_gets_a_block_of_its_own() {
        let mut b = ObjectBuilder::new(100, Compression::None);
        b.add(StreamId(1), Offset(0), &batch(1, 10)).unwrap();
        b.add(StreamId(1), Offset(1), &batch(3, 500)).unwrap();
        b.add(StreamId(1), Offset(4), &batch(1, 10)).unwrap();
        let e = entries(&b.finish().bytes);
        let raw: Vec<u32> = e.iter().map(|e| e.raw_len).collect();
        assert_eq!(raw, [26, 516, 26]);
    }

    #[test]
    fn a_new_stream_starts_a_new_block() {
        let mut b = ObjectBuilder::new(1 << 20, Compression::None);
        b.add(StreamId(1), Offset(0), &batch(1, 10)).unwrap();
        b.add(StreamId(2), Offset(50), &batch(2, 10)).unwrap();
        let object = b.finish();
        let e = entries(&object.bytes);
        assert_eq!(e.len(), 2);
        assert_eq!(
            object.ranges,
            [
                StreamRange {
                    stream: StreamId(1),
                    start: Offset(0),
                    end: Offset(1),
                    bytes: u64::from(e[0].size),
                },
                StreamRange {
                    stream: StreamId(2),
                    start: Offset(50),
                    end: Offset(52),
                    bytes: u64::from(e[1].size),
                },
            ]
        );
    }

    #[test]
    fn batches_out_of_order_are_refused_and_change_nothing() {
        let mut b = ObjectBuilder::new(1 << 20, Compression::None);
        b.add(StreamId(2), Offset(10), &batch(5, 10)).unwrap();
        let before = b.estimated_size();
        for (stream, offset) in [(2, 14), (2, 16), (2, 0), (1, 15)] {
            let err = b
                .add(StreamId(stream), Offset(offset), &batch(1, 1))
                .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
        }
        assert_eq!(b.estimated_size(), before);
        b.add(StreamId(2), Offset(15), &batch(1, 1)).unwrap();
        b.add(StreamId(3), Offset(0), &batch(1, 1)).unwrap();
    }

    #[test]
    fn empty_overflowing_and_oversized_batches_are_refused() {
        let mut b = ObjectBuilder::new(1 << 20, Compression::None);
        let err = b.add(StreamId(1), Offset(0), &batch(0, 1)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        let err = b
            .add(StreamId(1), Offset(u64::MAX - 1), &batch(2, 1))
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        let huge = RecordBatch::new(1, 0, vec![0u8; MAX_BLOCK_RAW_BYTES]);
        let err = b.add(StreamId(1), Offset(0), &huge).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        assert!(b.is_empty());
    }

    #[test]
    fn estimated_size_is_exact_without_compression() {
        let mut b = ObjectBuilder::new(64, Compression::None);
        assert_eq!(b.estimated_size(), (index_len(0) + FOOTER_LEN) as u64);
        for stream in 0..3 {
            for i in 0..4 {
                b.add(StreamId(stream), Offset(i), &batch(1, 20 + i as usize))
                    .unwrap();
            }
        }
        let estimate = b.estimated_size();
        assert_eq!(b.finish().bytes.len() as u64, estimate);
    }

    #[test]
    fn incompressible_blocks_are_stored_as_they_are() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let noise: Vec<u8> = (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let mut b = ObjectBuilder::new(1 << 20, Compression::Zstd { level: 1 });
        b.add(StreamId(1), Offset(0), &RecordBatch::new(1, 0, noise))
            .unwrap();
        let bytes = b.finish().bytes;
        let e = entries(&bytes);
        assert_eq!(bytes[4], Codec::None as u8);
        assert_eq!(e[0].size as usize, BLOCK_HEADER_LEN + e[0].raw_len as usize);
    }

    #[test]
    fn compressible_blocks_are_stored_compressed() {
        let mut b = ObjectBuilder::new(1 << 20, Compression::Zstd { level: 1 });
        b.add(StreamId(1), Offset(0), &batch(1, 4096)).unwrap();
        let bytes = b.finish().bytes;
        let e = entries(&bytes);
        assert_eq!(bytes[4], Codec::Zstd as u8);
        assert!((e[0].size as usize) < 200, "{:?}", e[0]);
    }
}
