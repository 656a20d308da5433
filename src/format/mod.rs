//! The object format, version 1: how batches are laid out in an object in object storage.
//!
//! Stream set objects (many streams, written by uploads) and stream objects (one stream, written
//! by uploads of big streams and by compaction) share one format: data blocks, then an index of
//! the blocks, then a fixed-size footer that says where the index is. Every integer is
//! little-endian. Every byte of an object is covered by a crc32c.
//!
//! ```text
//! object := block* index footer
//!
//! block  := header (48 bytes) body (stored_len bytes)
//!   header   0  magic          u32   "OSBK"
//!            4  codec          u8    0 = none, 1 = zstd
//!            5  flags          u8    0
//!            6  reserved       u16   0
//!            8  stream         u64   the one stream whose batches the block holds
//!           16  base_offset    u64   offset of the block's first record
//!           24  record_count   u64   records in the block (the sum of the batch counts)
//!           32  batch_count    u32
//!           36  raw_len        u32   body length before compression
//!           40  stored_len     u32   body length as stored (≤ raw_len)
//!           44  crc32c         u32   over header bytes 0..44, then the stored body
//!   body (raw_len bytes once decompressed) := batch{batch_count}
//!   batch    0  count          u32   ≥ 1
//!            4  base_timestamp i64
//!           12  payload_len    u32
//!           16  payload        payload_len bytes
//!
//! index  := header entry{entry_count} crc
//!   header   0  magic          u32   "OSIX"
//!            4  entry_count    u32
//!   entry    0  stream         u64
//!            8  start          u64   first offset in the block
//!           16  end            u64   one past the last offset in the block
//!           24  position       u64   where the block starts in the object
//!           32  size           u32   block length in the object (header and stored body)
//!           36  raw_len        u32   block body length once decompressed
//!   crc      crc32c u32 over every index byte before it
//!
//! footer (48 bytes, the last bytes of the object)
//!            0  index_position u64
//!            8  index_len      u32   header, entries and crc
//!           12  version        u16   1
//!           14  flags          u16   0
//!           16  reserved       20 zero bytes
//!           36  crc32c         u32   over footer bytes 0..36
//!           40  magic          u64   "OSTRMOBJ"
//! ```
//!
//! Invariants a decoder checks (a violation is [`ErrorKind::Corruption`](crate::ErrorKind)):
//!
//! 1. A block holds contiguous batches of one stream; a batch's base offset is the block's
//!    `base_offset` plus the counts of the batches before it, so offsets need not be stored per
//!    batch and a gap inside a block cannot be expressed.
//! 2. Blocks are written in (stream, offset) order, back to back from position 0; the index lists
//!    them in the same order, so entry positions tile `0..index_position` exactly.
//! 3. Within one object a stream's blocks are contiguous: each starts where the previous ends.
//! 4. A block's body is at most [`MAX_BLOCK_RAW_BYTES`] once decompressed, and it is never stored
//!    larger than that: a block that zstd does not shrink is stored uncompressed.
//! 5. The index ends where the footer begins.
//!
//! The index has no per-entry record count: offsets are dense, so it is `end - start`. It keeps
//! the decompressed length instead, so that a reader knows the memory a block needs before it
//! fetches it.
//!
//! # Reading
//!
//! A reader fetches the last [`TAIL_READ_HINT`] bytes ([`tail_range`]) with one ranged GET and
//! hands them to [`decode_tail`], which returns the footer and, when the tail holds all of it, the
//! index; otherwise the byte range of the index to fetch next ([`TailDecode::NeedIndex`]). Then it
//! fetches blocks by [`IndexEntry::byte_range`] and decodes them with [`decode_block`].
//!
//! ```
//! use bytes::Bytes;
//! use objstream::format::{decode_block, decode_tail, tail_range, ObjectBuilder, TailDecode};
//! use objstream::{Compression, ObjectId, Offset, RecordBatch, StreamId};
//!
//! let mut builder = ObjectBuilder::new(512 << 10, Compression::Zstd { level: 1 });
//! builder.add(StreamId(1), Offset(0), &RecordBatch::new(2, 1_000, "a\nb\n"))?;
//! builder.add(StreamId(1), Offset(2), &RecordBatch::new(1, 1_001, "c\n"))?;
//! builder.add(StreamId(7), Offset(40), &RecordBatch::new(1, 1_002, "x\n"))?;
//! let object = builder.finish();
//! assert_eq!(object.ranges.len(), 2);
//!
//! // Read it back as a reader would: the tail first, then one block.
//! let size = object.bytes.len() as u64;
//! let tail = tail_range(size);
//! let tail = &object.bytes[tail.start as usize..];
//! let TailDecode::Complete { index, .. } = decode_tail(ObjectId(9), size, tail)? else {
//!     unreachable!("a small object's index fits in the tail");
//! };
//! let entry = &index.find(StreamId(1), Offset(2))[0];
//! let range = entry.byte_range();
//! let block = object.bytes.slice(range.start as usize..range.end as usize);
//! let batches = decode_block(ObjectId(9), entry, block)?;
//! assert_eq!(batches[1].base_offset, Offset(2));
//! assert_eq!(batches[1].batch.payload, Bytes::from_static(b"c\n"));
//! # Ok::<(), objstream::Error>(())
//! ```

mod block;
mod footer;
mod index;
mod reader;
mod wire;
mod writer;

#[cfg(test)]
mod tests;

pub use block::{decode_block, BATCH_HEADER_LEN, BLOCK_HEADER_LEN};
pub use footer::{Footer, FOOTER_LEN};
pub use index::{decode_index, IndexEntry, ObjectIndex, INDEX_ENTRY_LEN, INDEX_HEADER_LEN};
pub use reader::{decode_tail, tail_range, TailDecode};
pub use writer::{EncodedObject, ObjectBuilder, StreamRange};

/// The format version this module writes and reads.
pub const FORMAT_VERSION: u16 = 1;

/// How many bytes from the end of an object a reader fetches first: enough for the footer and
/// the index of an object of a few thousand blocks (an entry is [`INDEX_ENTRY_LEN`] bytes).
pub const TAIL_READ_HINT: usize = 64 << 10;

/// The largest block body, once decompressed. A decoder refuses a block that claims more, so a
/// corrupt length can never make it allocate more than this; a writer refuses a batch that would
/// not fit.
pub const MAX_BLOCK_RAW_BYTES: usize = 64 << 20;
