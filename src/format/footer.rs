//! The footer: the last [`FOOTER_LEN`] bytes of an object, saying where the index is.
//!
//! ```text
//!  0  index_position  u64
//!  8  index_len       u32   header, entries and crc
//! 12  version         u16   1
//! 14  flags           u16   0
//! 16  reserved        20 zero bytes (room for later fields; a v1 reader refuses non-zero)
//! 36  crc32c          u32   over footer bytes 0..36
//! 40  magic           u64   "OSTRMOBJ"
//! ```
//!
//! The magic comes last so that a reader can tell a footer from the end of a truncated object by
//! its final eight bytes alone.

use std::mem::size_of;
use std::ops::Range;

use super::index::{decode_index, index_len, ObjectIndex};
use super::wire::{get_u16, get_u32, get_u64, put_u16, put_u32, put_u64};
use super::FORMAT_VERSION;
use crate::error::{Error, Result};
use crate::types::ObjectId;

/// "OSTRMOBJ" read as a little-endian `u64`: the last bytes of every object.
const FOOTER_MAGIC: u64 = u64::from_le_bytes(*b"OSTRMOBJ");

const INDEX_POSITION_AT: usize = 0;
const INDEX_LEN_AT: usize = INDEX_POSITION_AT + size_of::<u64>();
const VERSION_AT: usize = INDEX_LEN_AT + size_of::<u32>();
const FLAGS_AT: usize = VERSION_AT + size_of::<u16>();
const RESERVED_AT: usize = FLAGS_AT + size_of::<u16>();
const RESERVED_LEN: usize = 20;
const CRC_AT: usize = RESERVED_AT + RESERVED_LEN;
const MAGIC_AT: usize = CRC_AT + size_of::<u32>();
/// Length of the footer.
pub const FOOTER_LEN: usize = MAGIC_AT + size_of::<u64>();

/// A decoded footer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Footer {
    /// Where the index starts; also the length of the data region before it.
    pub index_position: u64,
    /// The index's length.
    pub index_len: u32,
    /// The format version the object was written in.
    pub version: u16,
}

impl Footer {
    /// The bytes of the object that hold the index.
    pub fn index_range(&self) -> Range<u64> {
        self.index_position..self.index_position + u64::from(self.index_len)
    }

    /// Decodes the index from `bytes` (exactly [`index_range`](Self::index_range) of the object)
    /// and checks that its blocks end where the footer says the index starts.
    pub fn decode_index(&self, object: ObjectId, bytes: &[u8]) -> Result<ObjectIndex> {
        if bytes.len() as u64 != u64::from(self.index_len) {
            return Err(Error::corruption(
                format!("{object} index"),
                format!(
                    "the footer says {} bytes, {} were given",
                    self.index_len,
                    bytes.len()
                ),
            ));
        }
        let index = decode_index(object, bytes)?;
        if index.data_len() != self.index_position {
            return Err(Error::corruption(
                format!("{object} index"),
                format!(
                    "blocks end at {}, but the index starts at {}",
                    index.data_len(),
                    self.index_position
                ),
            ));
        }
        Ok(index)
    }

    /// The footer's bytes.
    pub(super) fn encode(&self) -> [u8; FOOTER_LEN] {
        let mut b = [0u8; FOOTER_LEN];
        put_u64(&mut b, INDEX_POSITION_AT, self.index_position);
        put_u32(&mut b, INDEX_LEN_AT, self.index_len);
        put_u16(&mut b, VERSION_AT, self.version);
        put_u16(&mut b, FLAGS_AT, 0);
        let crc = crc32c::crc32c(&b[..CRC_AT]);
        put_u32(&mut b, CRC_AT, crc);
        put_u64(&mut b, MAGIC_AT, FOOTER_MAGIC);
        b
    }

    /// Decodes the footer of an object of `object_size` bytes, and checks that the index it points
    /// at lies between the blocks and the footer.
    pub(super) fn decode(
        object: ObjectId,
        object_size: u64,
        b: &[u8; FOOTER_LEN],
    ) -> Result<Footer> {
        let fail = |what: String| Error::corruption(format!("{object} footer"), what);
        let magic = get_u64(b, MAGIC_AT);
        if magic != FOOTER_MAGIC {
            return Err(fail(format!(
                "bad magic {magic:#018x}: not an object, or a truncated one"
            )));
        }
        let (stored, actual) = (get_u32(b, CRC_AT), crc32c::crc32c(&b[..CRC_AT]));
        if stored != actual {
            return Err(fail(format!(
                "crc32c mismatch: footer says {stored:#010x}, bytes give {actual:#010x}"
            )));
        }
        let footer = Footer {
            index_position: get_u64(b, INDEX_POSITION_AT),
            index_len: get_u32(b, INDEX_LEN_AT),
            version: get_u16(b, VERSION_AT),
        };
        if footer.version != FORMAT_VERSION {
            return Err(fail(format!(
                "format version {} (this build reads {FORMAT_VERSION})",
                footer.version
            )));
        }
        if get_u16(b, FLAGS_AT) != 0 || b[RESERVED_AT..CRC_AT].iter().any(|&x| x != 0) {
            return Err(fail("flags or reserved bytes are not zero".into()));
        }
        if (footer.index_len as usize) < index_len(0) {
            return Err(fail(format!(
                "index length {} is shorter than an empty index",
                footer.index_len
            )));
        }
        let end = footer
            .index_position
            .checked_add(u64::from(footer.index_len))
            .and_then(|e| e.checked_add(FOOTER_LEN as u64));
        if end != Some(object_size) {
            return Err(fail(format!(
                "index at {} of {} bytes does not end at the footer of an object of {object_size} bytes",
                footer.index_position, footer.index_len
            )));
        }
        Ok(footer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn footer() -> Footer {
        Footer {
            index_position: 1000,
            index_len: 52,
            version: FORMAT_VERSION,
        }
    }

    #[test]
    fn footer_offsets_follow_the_documented_layout() {
        assert_eq!((CRC_AT, MAGIC_AT, FOOTER_LEN), (36, 40, 48));
        assert_eq!(&footer().encode()[40..], b"OSTRMOBJ");
    }

    #[test]
    fn a_footer_round_trips() {
        let b = footer().encode();
        assert_eq!(Footer::decode(ObjectId(1), 1100, &b).unwrap(), footer());
    }

    #[test]
    fn a_footer_that_does_not_fit_the_object_size_is_corruption() {
        let b = footer().encode();
        for size in [0, 1099, 1101, u64::MAX] {
            let err = Footer::decode(ObjectId(1), size, &b).unwrap_err();
            assert!(
                err.to_string().contains("does not end at the footer"),
                "{err}"
            );
        }
    }

    #[test]
    fn an_unknown_version_is_refused() {
        let mut f = footer();
        f.version = 2;
        let err = Footer::decode(ObjectId(6), 1100, &f.encode()).unwrap_err();
        assert!(err.to_string().contains("object-6 footer"), "{err}");
        assert!(err.to_string().contains("format version 2"), "{err}");
    }

    #[test]
    fn an_index_position_that_overflows_is_corruption() {
        let mut f = footer();
        f.index_position = u64::MAX - 10;
        let err = Footer::decode(ObjectId(1), 1100, &f.encode()).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Corruption);
    }

    #[test]
    fn decode_index_checks_the_length_the_footer_gives() {
        let err = footer().decode_index(ObjectId(1), &[0; 51]).unwrap_err();
        assert!(
            err.to_string().contains("the footer says 52 bytes"),
            "{err}"
        );
    }
}
