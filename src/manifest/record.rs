//! The frame around every stored manifest object, and the log record inside it.
//!
//! # Byte layout
//!
//! Log records and checkpoints share one frame: a fixed 16-byte header, then a JSON body. All
//! integers are little-endian.
//!
//! ```text
//! offset  size    field
//!      0     4    magic      RECORD_MAGIC ("OSMR") or CHECKPOINT_MAGIC ("OSMC")
//!      4     2    version    FORMAT_VERSION (1)
//!      6     2    reserved   0
//!      8     4    length     body bytes; the object holds exactly HEADER_LEN + length bytes
//!     12     4    crc32c     over bytes 0..12 of the header, then the body
//!     16  length  body       JSON: a Record, or a ManifestState for a checkpoint
//! ```
//!
//! # Why each field is there
//!
//! - Two magics keep a checkpoint from ever being read as a record, or the reverse.
//! - The version lets a later format be told apart; this one reads version 1 only.
//! - The length must match the object's size exactly, so a truncated upload or trailing bytes
//!   are detected even before the crc is checked.
//! - The crc covers the header fields as well as the body, so no byte of the object can change
//!   unnoticed.
//! - Each record's body carries its own sequence number, so a record copied to another key does
//!   not validate.
//!
//! # Decoding untrusted bytes
//!
//! [`open_frame`] never panics and allocates nothing: it checks the header against the buffer it
//! was handed and returns the body as a slice of it. A bad frame is an error naming the key;
//! nothing is ever skipped.

use std::fmt;
use std::mem::size_of;

use bytes::Bytes;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::change::Change;
use crate::error::{Error, Result};

/// The magic that starts a log record ("OSMR" read as little-endian bytes).
pub const RECORD_MAGIC: u32 = u32::from_le_bytes(*b"OSMR");
/// The magic that starts a checkpoint ("OSMC" read as little-endian bytes).
pub const CHECKPOINT_MAGIC: u32 = u32::from_le_bytes(*b"OSMC");
/// The frame version this code writes and reads.
pub const FORMAT_VERSION: u16 = 1;

const MAGIC_AT: usize = 0;
const VERSION_AT: usize = MAGIC_AT + size_of::<u32>();
const RESERVED_AT: usize = VERSION_AT + size_of::<u16>();
const LENGTH_AT: usize = RESERVED_AT + size_of::<u16>();
const CRC_AT: usize = LENGTH_AT + size_of::<u32>();
/// Bytes in a frame header.
pub const HEADER_LEN: usize = CRC_AT + size_of::<u32>();

const _: () = assert!(HEADER_LEN == 16);

/// What a frame holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FrameKind {
    /// A log record.
    Record,
    /// A checkpoint of the whole state.
    Checkpoint,
}

impl FrameKind {
    fn magic(self) -> u32 {
        match self {
            FrameKind::Record => RECORD_MAGIC,
            FrameKind::Checkpoint => CHECKPOINT_MAGIC,
        }
    }

    fn name(self) -> &'static str {
        match self {
            FrameKind::Record => "record",
            FrameKind::Checkpoint => "checkpoint",
        }
    }
}

/// Frames `body` as a `kind` object.
pub fn seal_frame(kind: FrameKind, body: &[u8]) -> Result<Bytes> {
    let length = u32::try_from(body.len()).map_err(|_| {
        Error::invalid(format!(
            "a manifest {} of {} bytes",
            kind.name(),
            body.len()
        ))
    })?;
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.extend_from_slice(&kind.magic().to_le_bytes());
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&length.to_le_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&out[..CRC_AT]), body);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(body);
    Ok(Bytes::from(out))
}

/// Checks the frame of a `kind` object read from `key` and returns its body. Every defect is a
/// corruption error naming `key`.
pub fn open_frame<'a>(kind: FrameKind, key: &str, bytes: &'a [u8]) -> Result<&'a [u8]> {
    let corrupt = |what: String| Error::corruption(key, what);
    let Some(header) = bytes.get(..HEADER_LEN) else {
        return Err(corrupt(format!(
            "truncated: {} bytes, a {} header needs {HEADER_LEN}",
            bytes.len(),
            kind.name()
        )));
    };
    let magic = read_u32(header, MAGIC_AT);
    if magic != kind.magic() {
        let what = if magic == FrameKind::Record.magic() || magic == FrameKind::Checkpoint.magic() {
            format!("expected a {}, found the other kind of frame", kind.name())
        } else {
            format!("bad magic {magic:#010x}")
        };
        return Err(corrupt(what));
    }
    let version = read_u16(header, VERSION_AT);
    if version != FORMAT_VERSION {
        return Err(corrupt(format!("unsupported format version {version}")));
    }
    let reserved = read_u16(header, RESERVED_AT);
    if reserved != 0 {
        return Err(corrupt(format!("reserved header field is {reserved:#06x}")));
    }
    let length = read_u32(header, LENGTH_AT);
    let body = &bytes[HEADER_LEN..];
    if usize::try_from(length).ok() != Some(body.len()) {
        return Err(corrupt(format!(
            "header says {length} body bytes, {} follow",
            body.len()
        )));
    }
    let stored = read_u32(header, CRC_AT);
    let actual = crc32c::crc32c_append(crc32c::crc32c(&header[..CRC_AT]), body);
    if stored != actual {
        return Err(corrupt(format!(
            "crc32c mismatch: stored {stored:#010x}, computed {actual:#010x}"
        )));
    }
    Ok(body)
}

fn read_u32(header: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&header[at..at + 4]);
    u32::from_le_bytes(b)
}

fn read_u16(header: &[u8], at: usize) -> u16 {
    let mut b = [0u8; 2];
    b.copy_from_slice(&header[at..at + 2]);
    u16::from_le_bytes(b)
}

/// Identifies one writer of the manifest. Every record carries its writer's token, so a writer
/// whose create of a record was answered "already exists" (possibly because its own first
/// attempt succeeded) can tell its record from another writer's.
///
/// The store that owns a writer derives the token from its injected random source. Stored as
/// 32 lowercase hex digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct WriterToken(pub u128);

impl fmt::Display for WriterToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl Serialize for WriterToken {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for WriterToken {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        if text.len() != 32 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(serde::de::Error::custom("a writer token is 32 hex digits"));
        }
        u128::from_str_radix(&text, 16)
            .map(WriterToken)
            .map_err(serde::de::Error::custom)
    }
}

/// One log record: change number `seq`, written by `writer`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The record's sequence number; equals the number in its key.
    pub seq: u64,
    /// Who wrote it.
    pub writer: WriterToken,
    /// What it changes.
    pub change: Change,
}

/// Encodes a record into its stored bytes.
pub fn encode_record(record: &Record) -> Result<Bytes> {
    let body = serde_json::to_vec(record)
        .map_err(|e| Error::internal(format!("encoding manifest record: {e}")))?;
    seal_frame(FrameKind::Record, &body)
}

/// Decodes the record stored at `key`, which must hold record number `seq`.
pub fn decode_record(key: &str, seq: u64, bytes: &[u8]) -> Result<Record> {
    let body = open_frame(FrameKind::Record, key, bytes)?;
    let record: Record = serde_json::from_slice(body)
        .map_err(|e| Error::corruption(key, format!("record body does not parse: {e}")))?;
    if record.seq != seq {
        return Err(Error::corruption(
            key,
            format!("holds record {}, expected {seq}", record.seq),
        ));
    }
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{ErrorDetail, ErrorKind};
    use crate::manifest::change::{ManifestStreamRange, ObjectKind, ObjectMeta};
    use crate::types::{Epoch, NodeId, ObjectId, Offset, StreamId};

    const KEY: &str = "p/manifest/00000000000000000007";

    fn sample() -> Record {
        Record {
            seq: 7,
            writer: WriterToken(0x0123_4567_89ab_cdef_0011_2233_4455_6677),
            change: Change::CommitObjects {
                node: NodeId(1),
                node_epoch: Epoch(2),
                objects: vec![ObjectMeta {
                    id: ObjectId(3),
                    size: 4096,
                    kind: ObjectKind::StreamSet,
                    ranges: vec![ManifestStreamRange {
                        stream: StreamId(4),
                        epoch: Epoch(5),
                        start: Offset(10),
                        end: Offset(20),
                    }],
                }],
                wal_floor: None,
            },
        }
    }

    fn assert_corruption_at_key(result: Result<Record>) {
        let err = result.expect_err("the bytes must be rejected");
        assert_eq!(err.kind(), ErrorKind::Corruption, "{err}");
        match err.detail() {
            ErrorDetail::Corruption { location, .. } => assert_eq!(location, KEY),
            other => panic!("not a corruption: {other}"),
        }
    }

    #[test]
    fn a_record_round_trips() {
        let bytes = encode_record(&sample()).unwrap();
        assert_eq!(decode_record(KEY, 7, &bytes).unwrap(), sample());
    }

    #[test]
    fn the_encoded_bytes_are_pinned() {
        let bytes = encode_record(&sample()).unwrap();
        let body = r#"{"seq":7,"writer":"0123456789abcdef0011223344556677","change":{"commit_objects":{"node":1,"node_epoch":2,"objects":[{"id":3,"size":4096,"kind":"stream_set","ranges":[{"stream":4,"epoch":5,"start":10,"end":20}]}]}}}"#;
        assert_eq!(&bytes[HEADER_LEN..], body.as_bytes());
        let mut header = Vec::new();
        header.extend_from_slice(b"OSMR");
        header.extend_from_slice(&[1, 0, 0, 0]);
        header.extend_from_slice(&(body.len() as u32).to_le_bytes());
        let crc = crc32c::crc32c_append(crc32c::crc32c(&header), body.as_bytes());
        header.extend_from_slice(&crc.to_le_bytes());
        assert_eq!(&bytes[..HEADER_LEN], &header[..]);
    }

    #[test]
    fn every_flipped_byte_is_corruption_naming_the_key() {
        let bytes = encode_record(&sample()).unwrap();
        for i in 0..bytes.len() {
            let mut damaged = bytes.to_vec();
            damaged[i] ^= 0xff;
            assert_corruption_at_key(decode_record(KEY, 7, &damaged));
        }
    }

    #[test]
    fn every_truncation_is_corruption_naming_the_key() {
        let bytes = encode_record(&sample()).unwrap();
        for len in 0..bytes.len() {
            assert_corruption_at_key(decode_record(KEY, 7, &bytes[..len]));
        }
    }

    #[test]
    fn trailing_bytes_are_corruption() {
        let mut bytes = encode_record(&sample()).unwrap().to_vec();
        bytes.push(0);
        assert_corruption_at_key(decode_record(KEY, 7, &bytes));
    }

    #[test]
    fn a_huge_claimed_length_is_rejected_without_reading_it() {
        let mut bytes = encode_record(&sample()).unwrap().to_vec();
        bytes[LENGTH_AT..LENGTH_AT + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_corruption_at_key(decode_record(KEY, 7, &bytes));
    }

    #[test]
    fn a_record_under_another_sequence_number_is_corruption() {
        let bytes = encode_record(&sample()).unwrap();
        assert_corruption_at_key(decode_record(KEY, 8, &bytes));
    }

    #[test]
    fn a_checkpoint_frame_is_not_a_record() {
        let body = serde_json::to_vec(&sample()).unwrap();
        let bytes = seal_frame(FrameKind::Checkpoint, &body).unwrap();
        assert_corruption_at_key(decode_record(KEY, 7, &bytes));
    }

    #[test]
    fn a_well_framed_body_that_does_not_parse_is_corruption() {
        let bytes = seal_frame(FrameKind::Record, b"{\"seq\":7}").unwrap();
        assert_corruption_at_key(decode_record(KEY, 7, &bytes));
        let bytes = seal_frame(FrameKind::Record, b"\xff\xfe").unwrap();
        assert_corruption_at_key(decode_record(KEY, 7, &bytes));
    }

    #[test]
    fn a_writer_token_must_be_32_hex_digits() {
        let good: WriterToken =
            serde_json::from_str("\"0000000000000000000000000000002a\"").unwrap();
        assert_eq!(good, WriterToken(42));
        assert!(serde_json::from_str::<WriterToken>("\"2a\"").is_err());
        assert!(
            serde_json::from_str::<WriterToken>("\"+000000000000000000000000000002a\"").is_err()
        );
        assert!(serde_json::from_str::<WriterToken>("42").is_err());
    }
}
