//! Reading an object's tail: the footer and, usually, the index, from one ranged GET.
//!
//! Flow: GET [`tail_range`] → [`decode_tail`] → either the index is complete, or GET
//! [`TailDecode::NeedIndex`]'s range and decode it with [`Footer::decode_index`] → GET blocks by
//! [`IndexEntry::byte_range`](super::IndexEntry::byte_range) → [`decode_block`](super::decode_block).

use std::ops::Range;

use super::footer::{Footer, FOOTER_LEN};
use super::index::ObjectIndex;
use super::TAIL_READ_HINT;
use crate::error::{Error, Result};
use crate::types::ObjectId;

/// What the tail of an object gave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TailDecode {
    /// The tail held the whole index.
    Complete {
        /// The footer.
        footer: Footer,
        /// The index.
        index: ObjectIndex,
    },
    /// The index starts before the tail: fetch `range` and decode it with
    /// [`Footer::decode_index`].
    NeedIndex {
        /// The footer.
        footer: Footer,
        /// The bytes of the object that hold the index.
        range: Range<u64>,
    },
}

/// The bytes to fetch first from an object of `object_size` bytes: its last [`TAIL_READ_HINT`]
/// bytes, or all of it when it is smaller.
pub fn tail_range(object_size: u64) -> Range<u64> {
    object_size.saturating_sub(TAIL_READ_HINT as u64)..object_size
}

/// Decodes the footer, and the index when it lies wholly inside `tail`, from the last
/// `tail.len()` bytes of an object of `object_size` bytes.
///
/// `tail` may have any length from [`FOOTER_LEN`] to `object_size`; [`tail_range`] gives a good
/// one. A footer that fails its checks, an index that fails its own, or a tail that cannot be the
/// end of an object of that size is [`Corruption`](crate::ErrorKind::Corruption).
pub fn decode_tail(object: ObjectId, object_size: u64, tail: &[u8]) -> Result<TailDecode> {
    if tail.len() as u64 > object_size {
        return Err(Error::corruption(
            format!("{object} footer"),
            format!(
                "a tail of {} bytes from an object of {object_size} bytes",
                tail.len()
            ),
        ));
    }
    let Some(footer_bytes) = tail.last_chunk::<FOOTER_LEN>() else {
        return Err(Error::corruption(
            format!("{object} footer"),
            format!(
                "{} bytes of an object of {object_size} bytes cannot hold the {FOOTER_LEN}-byte footer",
                tail.len()
            ),
        ));
    };
    let footer = Footer::decode(object, object_size, footer_bytes)?;
    let tail_start = object_size - tail.len() as u64;
    let range = footer.index_range();
    if range.start < tail_start {
        return Ok(TailDecode::NeedIndex { footer, range });
    }
    // Both bounds are inside the tail: the footer check pinned the index's end to the footer's
    // start, and its start is at or after the tail's.
    let from = (range.start - tail_start) as usize;
    let to = (range.end - tail_start) as usize;
    let index = footer.decode_index(object, &tail[from..to])?;
    Ok(TailDecode::Complete { footer, index })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::ObjectBuilder;
    use crate::settings::Compression;
    use crate::types::{Offset, RecordBatch, StreamId};
    use crate::ErrorKind;

    fn object(blocks: u64) -> bytes::Bytes {
        let mut b = ObjectBuilder::new(0, Compression::None);
        for i in 0..blocks {
            b.add(StreamId(1), Offset(i), &RecordBatch::new(1, 0, "x"))
                .unwrap();
        }
        b.finish().bytes
    }

    #[test]
    fn tail_range_covers_small_objects_whole() {
        assert_eq!(tail_range(100), 0..100);
        assert_eq!(
            tail_range(1 << 20),
            (1 << 20) - TAIL_READ_HINT as u64..1 << 20
        );
    }

    #[test]
    fn a_tail_that_holds_the_index_decodes_completely() {
        let bytes = object(3);
        let size = bytes.len() as u64;
        let TailDecode::Complete { footer, index } =
            decode_tail(ObjectId(1), size, &bytes).unwrap()
        else {
            panic!("the whole object holds the index");
        };
        assert_eq!(index.entries().len(), 3);
        assert_eq!(footer.index_range().end, size - FOOTER_LEN as u64);
    }

    #[test]
    fn a_short_tail_asks_for_the_index_range_which_then_decodes() {
        let bytes = object(3);
        let size = bytes.len() as u64;
        let tail = &bytes[bytes.len() - FOOTER_LEN - 5..];
        let TailDecode::NeedIndex { footer, range } = decode_tail(ObjectId(1), size, tail).unwrap()
        else {
            panic!("five bytes cannot hold an index");
        };
        let index = footer
            .decode_index(
                ObjectId(1),
                &bytes[range.start as usize..range.end as usize],
            )
            .unwrap();
        assert_eq!(index.entries().len(), 3);
    }

    #[test]
    fn a_tail_longer_than_the_object_or_shorter_than_a_footer_is_corruption() {
        let bytes = object(1);
        let size = bytes.len() as u64;
        let err = decode_tail(ObjectId(1), size - 1, &bytes).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corruption);
        let err = decode_tail(ObjectId(1), size, &bytes[bytes.len() - 10..]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corruption);
        let err = decode_tail(ObjectId(1), 0, &[]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corruption);
    }
}
