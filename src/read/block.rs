//! Decoded blocks as the block cache holds them, and their encoding for its disk tier.
//!
//! The memory tier holds blocks decoded (batches whose payloads are `Bytes` slices of one
//! buffer), because a hit must cost no more than cloning those slices: decompressing and
//! checksumming a block again on every hit would cap cached reads near zstd's speed (see the
//! `read_path` bench, which measures both). The disk tier holds this encoding:
//!
//! ```text
//! header    0  magic        u32   "OSDB"
//!           4  batch_count  u32
//!           8  crc32c       u32   over every byte after the header
//!          12  reserved     u32   0
//! batch     0  base_offset  u64              (batch_count of these)
//!           8  count        u32
//!          12  timestamp    i64
//!          20  payload_len  u32
//! payloads  the payloads, in batch order
//! ```
//!
//! Decoding checks the magic, the checksum and every length, and fails (never panics) on bytes
//! that do not hold a block: the read path then reads the block from object storage again.

use std::mem::size_of;
use std::sync::Arc;

use bytes::Bytes;
use objstream_cache::BlockValue;

use crate::types::{Offset, RecordBatch, StoredBatch};

// Callers index only within lengths they checked; the slices below are fixed-size.
fn get_u32(buf: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&buf[at..at + 4]);
    u32::from_le_bytes(w)
}

fn get_u64(buf: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&buf[at..at + 8]);
    u64::from_le_bytes(w)
}

fn put_u32(buf: &mut [u8], at: usize, v: u32) {
    buf[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put_u64(buf: &mut [u8], at: usize, v: u64) {
    buf[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

const MAGIC: u32 = u32::from_le_bytes(*b"OSDB");
const MAGIC_AT: usize = 0;
const COUNT_AT: usize = MAGIC_AT + size_of::<u32>();
const CRC_AT: usize = COUNT_AT + size_of::<u32>();
const RESERVED_AT: usize = CRC_AT + size_of::<u32>();
const HEADER_LEN: usize = RESERVED_AT + size_of::<u32>();

const BASE_AT: usize = 0;
const RECORDS_AT: usize = BASE_AT + size_of::<u64>();
const TIMESTAMP_AT: usize = RECORDS_AT + size_of::<u32>();
const PAYLOAD_LEN_AT: usize = TIMESTAMP_AT + size_of::<i64>();
const BATCH_LEN: usize = PAYLOAD_LEN_AT + size_of::<u32>();

/// Memory charged per decoded batch on top of its payload (the `StoredBatch` itself).
const PER_BATCH: usize = size_of::<StoredBatch>();
/// Memory charged per block on top of its batches.
const PER_BLOCK: usize = 64;

/// One data block, decoded: its batches in offset order. The value type of the block cache
/// (see [`SharedBlockCache`](crate::SharedBlockCache)); its disk-tier encoding is the layout
/// above.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodedBlock {
    batches: Arc<[StoredBatch]>,
    weight: usize,
}

impl DecodedBlock {
    /// A block of `batches` whose payloads share buffers of `buffer_bytes` bytes in all.
    pub(crate) fn new(batches: Vec<StoredBatch>, buffer_bytes: usize) -> Self {
        let weight = buffer_bytes + batches.len() * PER_BATCH + PER_BLOCK;
        DecodedBlock {
            batches: batches.into(),
            weight,
        }
    }

    /// The batches, in offset order.
    pub(crate) fn batches(&self) -> &[StoredBatch] {
        &self.batches
    }

    fn payload_bytes(&self) -> usize {
        self.batches.iter().map(|b| b.batch.payload.len()).sum()
    }
}

impl BlockValue for DecodedBlock {
    fn weight(&self) -> usize {
        self.weight
    }

    fn encoded_len(&self) -> usize {
        HEADER_LEN + self.batches.len() * BATCH_LEN + self.payload_bytes()
    }

    fn encode(&self, out: &mut dyn std::io::Write) -> std::io::Result<()> {
        let mut head = vec![0u8; HEADER_LEN + self.batches.len() * BATCH_LEN];
        let count = u32::try_from(self.batches.len())
            .map_err(|_| std::io::Error::other("a block of more than u32::MAX batches"))?;
        put_u32(&mut head, MAGIC_AT, MAGIC);
        put_u32(&mut head, COUNT_AT, count);
        for (i, b) in self.batches.iter().enumerate() {
            let at = HEADER_LEN + i * BATCH_LEN;
            let slot = &mut head[at..at + BATCH_LEN];
            let len = u32::try_from(b.batch.payload.len())
                .map_err(|_| std::io::Error::other("a payload of more than u32::MAX bytes"))?;
            put_u64(slot, BASE_AT, b.base_offset.get());
            put_u32(slot, RECORDS_AT, b.batch.count);
            put_u64(slot, TIMESTAMP_AT, b.batch.base_timestamp as u64);
            put_u32(slot, PAYLOAD_LEN_AT, len);
        }
        let mut crc = crc32c::crc32c(&head[HEADER_LEN..]);
        for b in self.batches.iter() {
            crc = crc32c::crc32c_append(crc, &b.batch.payload);
        }
        put_u32(&mut head, CRC_AT, crc);
        out.write_all(&head)?;
        for b in self.batches.iter() {
            out.write_all(&b.batch.payload)?;
        }
        Ok(())
    }

    fn decode(bytes: Bytes) -> Result<Self, String> {
        let Some(header) = bytes.first_chunk::<HEADER_LEN>() else {
            return Err(format!("{} bytes cannot hold a block header", bytes.len()));
        };
        if get_u32(header, MAGIC_AT) != MAGIC {
            return Err("bad cached block magic".into());
        }
        if get_u32(header, RESERVED_AT) != 0 {
            return Err("reserved header bytes are not zero".into());
        }
        let count = get_u32(header, COUNT_AT) as usize;
        let payloads_at = count
            .checked_mul(BATCH_LEN)
            .and_then(|n| n.checked_add(HEADER_LEN))
            .filter(|&n| n <= bytes.len())
            .ok_or_else(|| format!("{count} batches do not fit {} bytes", bytes.len()))?;
        let (expected, actual) = (
            get_u32(header, CRC_AT),
            crc32c::crc32c(&bytes[HEADER_LEN..]),
        );
        if expected != actual {
            return Err(format!(
                "crc32c mismatch: header says {expected:#010x}, bytes give {actual:#010x}"
            ));
        }
        let mut batches = Vec::with_capacity(count);
        let mut at = payloads_at;
        for i in 0..count {
            let slot_at = HEADER_LEN + i * BATCH_LEN;
            let slot = &bytes[slot_at..slot_at + BATCH_LEN];
            let len = get_u32(slot, PAYLOAD_LEN_AT) as usize;
            let end = at
                .checked_add(len)
                .filter(|&e| e <= bytes.len())
                .ok_or_else(|| format!("batch {i} runs past the end of the cached block"))?;
            batches.push(StoredBatch {
                base_offset: Offset(get_u64(slot, BASE_AT)),
                batch: RecordBatch {
                    count: get_u32(slot, RECORDS_AT),
                    base_timestamp: get_u64(slot, TIMESTAMP_AT) as i64,
                    payload: bytes.slice(at..end),
                },
            });
            at = end;
        }
        if at != bytes.len() {
            return Err(format!(
                "{} bytes left over after the last batch",
                bytes.len() - at
            ));
        }
        Ok(DecodedBlock::new(batches, bytes.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block() -> DecodedBlock {
        let batches = (0..5u64)
            .map(|i| StoredBatch {
                base_offset: Offset(100 + i * 3),
                batch: RecordBatch::new(3, -(i as i64), vec![b'a' + i as u8; 10 + i as usize]),
            })
            .collect();
        DecodedBlock::new(batches, 1000)
    }

    fn encoded(b: &DecodedBlock) -> Vec<u8> {
        let mut out = Vec::new();
        b.encode(&mut out).unwrap();
        out
    }

    #[test]
    fn a_block_survives_the_disk_encoding() {
        let b = block();
        let bytes = encoded(&b);
        assert_eq!(bytes.len(), b.encoded_len());
        let back = DecodedBlock::decode(Bytes::from(bytes)).unwrap();
        assert_eq!(back.batches(), b.batches());
    }

    #[test]
    fn the_header_layout_is_pinned() {
        let bytes = encoded(&block());
        assert_eq!(&bytes[0..4], b"OSDB");
        assert_eq!(u32::from_le_bytes(bytes[4..8].try_into().unwrap()), 5);
        assert_eq!(&bytes[12..16], &[0, 0, 0, 0]);
        // The first batch's base offset follows the header.
        assert_eq!(u64::from_le_bytes(bytes[16..24].try_into().unwrap()), 100);
        assert_eq!(BATCH_LEN, 24);
    }

    #[test]
    fn every_damaged_or_cut_encoding_is_refused() {
        let bytes = encoded(&block());
        for i in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[i] ^= 0x40;
            assert!(
                DecodedBlock::decode(Bytes::from(damaged)).is_err(),
                "a flipped bit at {i} went unnoticed"
            );
        }
        for len in 0..bytes.len() {
            assert!(DecodedBlock::decode(Bytes::copy_from_slice(&bytes[..len])).is_err());
        }
    }

    #[test]
    fn weight_counts_the_buffer_and_each_batch() {
        let b = block();
        assert_eq!(b.weight(), 1000 + 5 * PER_BATCH + PER_BLOCK);
    }
}
