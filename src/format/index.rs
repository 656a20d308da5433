//! The index: one entry per block, sorted by (stream, start offset), with a crc32c.
//!
//! ```text
//! header   0  magic        u32   "OSIX"
//!          4  entry_count  u32
//! entry    0  stream       u64
//!          8  start        u64   first offset in the block
//!         16  end          u64   one past the last offset in the block
//!         24  position     u64   where the block starts in the object
//!         32  size         u32   block length: header and stored body
//!         36  raw_len      u32   block body length once decompressed
//! crc         crc32c       u32   over every index byte before it
//! ```
//!
//! Because blocks are written in (stream, offset) order, index order is also position order: the
//! entries tile the data region from position 0 without gaps, and a decoder checks that they do.

use std::mem::size_of;
use std::ops::Range;

use super::block::BLOCK_HEADER_LEN;
use super::wire::{get_u32, get_u64, put_u32, put_u64};
use super::MAX_BLOCK_RAW_BYTES;
use crate::error::{Error, Result};
use crate::types::{ObjectId, Offset, StreamId};

/// "OSIX" read as a little-endian `u32`: the first bytes of every index.
const INDEX_MAGIC: u32 = u32::from_le_bytes(*b"OSIX");

const MAGIC_AT: usize = 0;
const COUNT_AT: usize = MAGIC_AT + size_of::<u32>();
/// Length of the index header (magic and entry count).
pub const INDEX_HEADER_LEN: usize = COUNT_AT + size_of::<u32>();
const CRC_LEN: usize = size_of::<u32>();

const STREAM_AT: usize = 0;
const START_AT: usize = STREAM_AT + size_of::<u64>();
const END_AT: usize = START_AT + size_of::<u64>();
const POSITION_AT: usize = END_AT + size_of::<u64>();
const SIZE_AT: usize = POSITION_AT + size_of::<u64>();
const RAW_LEN_AT: usize = SIZE_AT + size_of::<u32>();
/// Length of one index entry.
pub const INDEX_ENTRY_LEN: usize = RAW_LEN_AT + size_of::<u32>();

/// The most entries an index can hold: its length must fit the footer's `u32`.
pub(super) const MAX_INDEX_ENTRIES: usize =
    (u32::MAX as usize - INDEX_HEADER_LEN - CRC_LEN) / INDEX_ENTRY_LEN;

/// The length of an index of `entries` entries.
pub(super) const fn index_len(entries: usize) -> usize {
    INDEX_HEADER_LEN + entries * INDEX_ENTRY_LEN + CRC_LEN
}

/// What the index says about one block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexEntry {
    /// The stream whose batches the block holds.
    pub stream: StreamId,
    /// The offset of the block's first record.
    pub start: Offset,
    /// One past the offset of the block's last record.
    pub end: Offset,
    /// Where the block starts in the object.
    pub position: u64,
    /// The block's length in the object: its header and stored body.
    pub size: u32,
    /// The block body's length once decompressed: the memory a decoded block needs, near enough.
    pub raw_len: u32,
}

impl IndexEntry {
    /// The bytes of the object to fetch for this block.
    pub fn byte_range(&self) -> Range<u64> {
        self.position..self.position.saturating_add(u64::from(self.size))
    }

    /// The records in the block.
    pub fn record_count(&self) -> u64 {
        self.end.get().saturating_sub(self.start.get())
    }

    /// True when the block holds `offset` of `stream`.
    pub fn contains(&self, stream: StreamId, offset: Offset) -> bool {
        self.stream == stream && self.start <= offset && offset < self.end
    }
}

/// A decoded index: the blocks of one object, sorted by (stream, start offset).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObjectIndex {
    entries: Vec<IndexEntry>,
}

impl ObjectIndex {
    /// Every entry, sorted by (stream, start offset), which is also position order.
    pub fn entries(&self) -> &[IndexEntry] {
        &self.entries
    }

    /// The length of the data region: where the index starts in the object.
    pub fn data_len(&self) -> u64 {
        self.entries.last().map_or(0, |e| e.byte_range().end)
    }

    /// The entries of `stream`, in offset order; empty when the object holds none of it.
    pub fn stream_entries(&self, stream: StreamId) -> &[IndexEntry] {
        let lo = self.entries.partition_point(|e| e.stream < stream);
        let hi = self.entries.partition_point(|e| e.stream <= stream);
        &self.entries[lo..hi]
    }

    /// The entries of `stream` from the block holding `offset` to the stream's last block in this
    /// object: where a read starting at `offset` goes, in order. Empty when no block holds it.
    pub fn find(&self, stream: StreamId, offset: Offset) -> &[IndexEntry] {
        let entries = self.stream_entries(stream);
        // The first block that ends past `offset`; it holds `offset` unless `offset` is below the
        // stream's first block.
        let i = entries.partition_point(|e| e.end <= offset);
        match entries.get(i) {
            Some(e) if e.start <= offset => &entries[i..],
            _ => &[],
        }
    }

    /// The entries of `stream` that hold any offset in `start..end`, in offset order.
    pub fn entries_for(&self, stream: StreamId, start: Offset, end: Offset) -> &[IndexEntry] {
        if start >= end {
            return &[];
        }
        let entries = self.stream_entries(stream);
        let lo = entries.partition_point(|e| e.end <= start);
        let hi = entries.partition_point(|e| e.start < end);
        if lo < hi {
            &entries[lo..hi]
        } else {
            &[]
        }
    }

    #[cfg(test)]
    pub(super) fn from_entries(entries: Vec<IndexEntry>) -> Self {
        ObjectIndex { entries }
    }
}

/// Appends the index of `entries` to `out`.
pub(super) fn encode_index(out: &mut Vec<u8>, entries: &[IndexEntry]) {
    let start = out.len();
    out.resize(start + index_len(entries.len()), 0);
    let buf = &mut out[start..];
    put_u32(buf, MAGIC_AT, INDEX_MAGIC);
    // The writer keeps the entry count within MAX_INDEX_ENTRIES, below u32::MAX.
    put_u32(buf, COUNT_AT, entries.len() as u32);
    for (i, e) in entries.iter().enumerate() {
        let at = INDEX_HEADER_LEN + i * INDEX_ENTRY_LEN;
        let slot = &mut buf[at..at + INDEX_ENTRY_LEN];
        put_u64(slot, STREAM_AT, e.stream.get());
        put_u64(slot, START_AT, e.start.get());
        put_u64(slot, END_AT, e.end.get());
        put_u64(slot, POSITION_AT, e.position);
        put_u32(slot, SIZE_AT, e.size);
        put_u32(slot, RAW_LEN_AT, e.raw_len);
    }
    let crc_at = buf.len() - CRC_LEN;
    let crc = crc32c::crc32c(&buf[..crc_at]);
    put_u32(buf, crc_at, crc);
}

/// Decodes an index from `bytes`, exactly the index's byte range of the object.
///
/// Checks the checksum, that the entries are sorted by (stream, start offset), that each stream's
/// blocks are contiguous, and that the blocks tile the data region from position 0. When the
/// footer is at hand, [`Footer::decode_index`](super::Footer::decode_index) also checks that the
/// index sits where the footer says.
pub fn decode_index(object: ObjectId, bytes: &[u8]) -> Result<ObjectIndex> {
    let fail = |what: String| Error::corruption(format!("{object} index"), what);

    let Some(header) = bytes.first_chunk::<INDEX_HEADER_LEN>() else {
        return Err(fail(format!("{} bytes cannot hold an index", bytes.len())));
    };
    let magic = get_u32(header, MAGIC_AT);
    if magic != INDEX_MAGIC {
        return Err(fail(format!("bad index magic {magic:#010x}")));
    }
    let count = get_u32(header, COUNT_AT) as usize;
    // `count` is at most u32::MAX, so this cannot overflow a 64-bit usize; compare in u128 to be
    // exact everywhere.
    let expected = (INDEX_HEADER_LEN + CRC_LEN) as u128 + count as u128 * INDEX_ENTRY_LEN as u128;
    if expected != bytes.len() as u128 {
        return Err(fail(format!(
            "{count} entries need {expected} bytes, the index has {}",
            bytes.len()
        )));
    }
    let crc_at = bytes.len() - CRC_LEN;
    let (stored, actual) = (get_u32(bytes, crc_at), crc32c::crc32c(&bytes[..crc_at]));
    if stored != actual {
        return Err(fail(format!(
            "crc32c mismatch: index says {stored:#010x}, bytes give {actual:#010x}"
        )));
    }

    // The length check above bounds `count` by the input, so this allocation is too.
    let mut entries: Vec<IndexEntry> = Vec::with_capacity(count);
    let mut next_position = 0u64;
    for (i, slot) in bytes[INDEX_HEADER_LEN..crc_at]
        .chunks_exact(INDEX_ENTRY_LEN)
        .enumerate()
    {
        let e = IndexEntry {
            stream: StreamId(get_u64(slot, STREAM_AT)),
            start: Offset(get_u64(slot, START_AT)),
            end: Offset(get_u64(slot, END_AT)),
            position: get_u64(slot, POSITION_AT),
            size: get_u32(slot, SIZE_AT),
            raw_len: get_u32(slot, RAW_LEN_AT),
        };
        check_entry(&e, entries.last(), next_position)
            .map_err(|what| fail(format!("entry {i}: {what}")))?;
        next_position = e.byte_range().end;
        entries.push(e);
    }
    Ok(ObjectIndex { entries })
}

fn check_entry(e: &IndexEntry, prev: Option<&IndexEntry>, position: u64) -> Result<(), String> {
    if e.start >= e.end {
        return Err(format!("empty or reversed offsets {}..{}", e.start, e.end));
    }
    if e.raw_len as usize > MAX_BLOCK_RAW_BYTES {
        return Err(format!("raw length {} exceeds the block limit", e.raw_len));
    }
    let stored = (e.size as usize).checked_sub(BLOCK_HEADER_LEN);
    if stored.is_none_or(|s| s > e.raw_len as usize) {
        return Err(format!(
            "size {} does not fit a block of {} raw bytes",
            e.size, e.raw_len
        ));
    }
    if e.position != position {
        return Err(format!(
            "block at {} but the previous block ends at {position}",
            e.position
        ));
    }
    if let Some(p) = prev {
        if e.stream < p.stream || (e.stream == p.stream && e.start != p.end) {
            return Err(format!(
                "{} {}..{} does not follow {} {}..{}",
                e.stream, e.start, e.end, p.stream, p.start, p.end
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(stream: u64, start: u64, end: u64, position: u64) -> IndexEntry {
        IndexEntry {
            stream: StreamId(stream),
            start: Offset(start),
            end: Offset(end),
            position,
            size: 100,
            raw_len: 200,
        }
    }

    fn sample() -> Vec<IndexEntry> {
        vec![
            entry(1, 0, 10, 0),
            entry(1, 10, 15, 100),
            entry(2, 7, 8, 200),
            entry(5, 0, 3, 300),
            entry(5, 3, 9, 400),
        ]
    }

    #[test]
    fn entry_offsets_follow_the_documented_layout() {
        assert_eq!((INDEX_HEADER_LEN, SIZE_AT, INDEX_ENTRY_LEN), (8, 32, 40));
        assert_eq!(index_len(2), 8 + 80 + 4);
    }

    #[test]
    fn the_largest_index_still_fits_the_footer_length_field() {
        assert!(index_len(MAX_INDEX_ENTRIES) <= u32::MAX as usize);
        assert!(index_len(MAX_INDEX_ENTRIES + 1) > u32::MAX as usize);
    }

    #[test]
    fn an_index_round_trips() {
        let mut out = vec![];
        encode_index(&mut out, &sample());
        let index = decode_index(ObjectId(1), &out).unwrap();
        assert_eq!(index.entries(), &sample()[..]);
        assert_eq!(index.data_len(), 500);
    }

    #[test]
    fn an_empty_index_round_trips() {
        let mut out = vec![];
        encode_index(&mut out, &[]);
        let index = decode_index(ObjectId(1), &out).unwrap();
        assert!(index.entries().is_empty());
        assert_eq!(index.data_len(), 0);
        assert!(index.find(StreamId(1), Offset(0)).is_empty());
    }

    #[test]
    fn find_returns_the_holding_block_and_the_rest_of_its_stream() {
        let index = ObjectIndex::from_entries(sample());
        assert_eq!(index.find(StreamId(1), Offset(0)), &sample()[0..2]);
        assert_eq!(index.find(StreamId(1), Offset(9)), &sample()[0..2]);
        assert_eq!(index.find(StreamId(1), Offset(10)), &sample()[1..2]);
        assert!(index.find(StreamId(1), Offset(15)).is_empty());
        assert!(index.find(StreamId(2), Offset(6)).is_empty());
        assert_eq!(index.find(StreamId(2), Offset(7)), &sample()[2..3]);
        assert!(index.find(StreamId(3), Offset(0)).is_empty());
        assert_eq!(index.find(StreamId(5), Offset(8)), &sample()[4..5]);
    }

    #[test]
    fn entries_for_returns_every_block_overlapping_the_range() {
        let index = ObjectIndex::from_entries(sample());
        assert_eq!(
            index.entries_for(StreamId(1), Offset(5), Offset(11)),
            &sample()[0..2]
        );
        assert_eq!(
            index.entries_for(StreamId(1), Offset(10), Offset(11)),
            &sample()[1..2]
        );
        assert_eq!(
            index.entries_for(StreamId(1), Offset(0), Offset(10)),
            &sample()[0..1]
        );
        assert!(index
            .entries_for(StreamId(1), Offset(15), Offset(20))
            .is_empty());
        assert!(index
            .entries_for(StreamId(5), Offset(4), Offset(4))
            .is_empty());
        assert_eq!(
            index.entries_for(StreamId(5), Offset(0), Offset(100)),
            &sample()[3..5]
        );
    }

    fn reject(entries: &[IndexEntry], expect: &str) {
        let mut out = vec![];
        encode_index(&mut out, entries);
        let err = decode_index(ObjectId(4), &out).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Corruption);
        assert!(
            err.to_string().contains(expect),
            "{err} should say {expect}"
        );
        assert!(err.to_string().contains("object-4 index"), "{err}");
    }

    #[test]
    fn out_of_order_or_gapped_entries_are_corruption() {
        let mut e = sample();
        e.swap(0, 1);
        reject(&e, "block at 100 but the previous block ends at 0");
        let mut e = sample();
        e[3].stream = StreamId(1);
        reject(&e, "does not follow");
        let mut e = sample();
        e[1].start = Offset(11);
        reject(&e, "does not follow");
        let mut e = sample();
        e[2].position = 250;
        reject(&e, "previous block ends at 200");
    }

    #[test]
    fn impossible_sizes_are_corruption() {
        let mut e = sample();
        e[0].end = e[0].start;
        reject(&e, "empty or reversed");
        let mut e = sample();
        e[0].size = 10;
        reject(&e, "does not fit");
        let mut e = sample();
        e[0].raw_len = u32::MAX;
        reject(&e, "exceeds the block limit");
    }

    #[test]
    fn a_count_that_disagrees_with_the_length_is_corruption() {
        let mut out = vec![];
        encode_index(&mut out, &sample());
        put_u32(&mut out, COUNT_AT, u32::MAX);
        let err = decode_index(ObjectId(1), &out).unwrap_err();
        assert!(err.to_string().contains("entries need"), "{err}");
    }
}
