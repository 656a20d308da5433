//! Object WAL objects: key naming, the fixed header, and encoding and validating whole objects.
//!
//! # Keys
//!
//! Slot `s` of the WAL under `wal_prefix` is the object `{wal_prefix}/{s:020}`: fixed-width,
//! zero-padded, so keys sort like slots. A key under the prefix that is not exactly one segment
//! of 20 ASCII digits is not a slot.
//!
//! # Object layout
//!
//! ```text
//! [header: HEADER_LEN bytes] [frame] [frame] ...
//! ```
//!
//! Frames are the crate's shared frame format ([`crate::frame`]). A frame at byte offset `o` of
//! the object in slot `s` carries the logical position `(s << 32) | o`; its batch delta is
//! `o - HEADER_LEN` (the object is the write batch). Objects are written whole and atomically,
//! so the frames fill the body exactly: no torn tail, no zero padding after the last frame.
//!
//! # Header layout
//!
//! All integers are little-endian.
//!
//! ```text
//! offset  size  field
//!      0     4  magic          OBJECT_MAGIC ("OSWO")
//!      4     2  version        FORMAT_VERSION
//!      6     1  kind           1 = data, 2 = fence
//!      7     1  reserved       zero
//!      8     8  slot           the slot the object was written to (checked against its key)
//!     16     8  owner          the node whose WAL this is
//!     24     8  epoch          data: the writer's epoch; fence: the epoch the WAL is fenced at
//!     32     8  actor          the node that wrote the object (the writer or a sealer)
//!     40     8  actor_epoch    that node's own epoch
//!     48     4  max_in_flight  the writer's window of unacknowledged objects
//!     52     4  record_count   frames in the body (zero for a fence)
//!     56     4  body_len       bytes after the header (zero for a fence)
//!     60     4  crc32c         over bytes 0..60
//! ```
//!
//! The identity of the writer instance that made an object is (kind, owner, epoch, actor,
//! actor_epoch). It is deterministic, so a writer that meets an object in a slot it tried to
//! create can tell whether the object is its own (an earlier attempt whose answer was lost).

use std::fmt;
use std::mem::size_of;

use bytes::Bytes;
use object_store::path::Path;

use crate::frame::{self, Decoded};
use crate::{WalError, WalPosition, WalRecord, WalResult};

/// The magic number that starts every WAL object ("OSWO" read as little-endian bytes).
pub const OBJECT_MAGIC: u32 = u32::from_le_bytes(*b"OSWO");

/// The format version this code writes and reads.
pub const FORMAT_VERSION: u16 = 1;

const MAGIC_AT: usize = 0;
const VERSION_AT: usize = MAGIC_AT + size_of::<u32>();
const KIND_AT: usize = VERSION_AT + size_of::<u16>();
const RESERVED_AT: usize = KIND_AT + size_of::<u8>();
const SLOT_AT: usize = RESERVED_AT + size_of::<u8>();
const OWNER_AT: usize = SLOT_AT + size_of::<u64>();
const EPOCH_AT: usize = OWNER_AT + size_of::<u64>();
const ACTOR_AT: usize = EPOCH_AT + size_of::<u64>();
const ACTOR_EPOCH_AT: usize = ACTOR_AT + size_of::<u64>();
const MAX_IN_FLIGHT_AT: usize = ACTOR_EPOCH_AT + size_of::<u64>();
const RECORD_COUNT_AT: usize = MAX_IN_FLIGHT_AT + size_of::<u32>();
const BODY_LEN_AT: usize = RECORD_COUNT_AT + size_of::<u32>();
const CRC_AT: usize = BODY_LEN_AT + size_of::<u32>();

/// Bytes in an object header.
pub const HEADER_LEN: usize = CRC_AT + size_of::<u32>();

const _: () = assert!(HEADER_LEN == 64);
const _: () = assert!(HEADER_LEN % frame::ALIGN == 0);

/// Digits in a slot key's last segment.
const SLOT_DIGITS: usize = 20;

/// The key of slot `slot` under `wal_prefix`: `{wal_prefix}/{slot:020}`.
pub fn slot_key(wal_prefix: &Path, slot: u64) -> Path {
    wal_prefix.clone().join(format!("{slot:020}"))
}

/// The slot a key under `wal_prefix` names, or `None` when it is not a slot key.
pub fn parse_slot_key(wal_prefix: &Path, key: &Path) -> Option<u64> {
    let mut rest = key.prefix_match(wal_prefix)?;
    let part = rest.next()?;
    if rest.next().is_some() {
        return None;
    }
    let name = part.as_ref();
    if name.len() != SLOT_DIGITS || !name.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    name.parse().ok()
}

/// The slot that holds the record at `position`.
pub fn slot_of(position: WalPosition) -> u64 {
    position.0 >> 32
}

/// The position of byte `offset` of the object in `slot`.
pub fn position_in(slot: u64, offset: usize) -> WalPosition {
    WalPosition((slot << 32) | offset as u64)
}

/// What an object is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Records written by the WAL's writer.
    Data,
    /// An empty object a sealer puts in a slot so that no older writer can fill it.
    Fence,
}

impl Kind {
    fn code(self) -> u8 {
        match self {
            Kind::Data => 1,
            Kind::Fence => 2,
        }
    }

    fn from_code(code: u8) -> Option<Kind> {
        match code {
            1 => Some(Kind::Data),
            2 => Some(Kind::Fence),
            _ => None,
        }
    }
}

/// Who wrote an object: equal for every object of one writer instance (data) or one sealing
/// (fence), different for any two instances whose callers use distinct epochs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Writer {
    /// Data or fence.
    pub kind: Kind,
    /// The node whose WAL this is.
    pub owner: u64,
    /// The writer's epoch (data) or the epoch the WAL is fenced at (fence).
    pub epoch: u64,
    /// The node that wrote the object.
    pub actor: u64,
    /// That node's own epoch.
    pub actor_epoch: u64,
}

impl fmt::Display for Writer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} of owner {} at epoch {} by node {} at epoch {}",
            self.kind, self.owner, self.epoch, self.actor, self.actor_epoch
        )
    }
}

/// An object's header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Who wrote the object.
    pub writer: Writer,
    /// The slot it was written to.
    pub slot: u64,
    /// The writer's window of unacknowledged objects.
    pub max_in_flight: u32,
    /// Frames in the body.
    pub record_count: u32,
    /// Bytes after the header.
    pub body_len: u32,
}

impl Header {
    /// The header's bytes.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[MAGIC_AT..VERSION_AT].copy_from_slice(&OBJECT_MAGIC.to_le_bytes());
        b[VERSION_AT..KIND_AT].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        b[KIND_AT] = self.writer.kind.code();
        b[SLOT_AT..OWNER_AT].copy_from_slice(&self.slot.to_le_bytes());
        b[OWNER_AT..EPOCH_AT].copy_from_slice(&self.writer.owner.to_le_bytes());
        b[EPOCH_AT..ACTOR_AT].copy_from_slice(&self.writer.epoch.to_le_bytes());
        b[ACTOR_AT..ACTOR_EPOCH_AT].copy_from_slice(&self.writer.actor.to_le_bytes());
        b[ACTOR_EPOCH_AT..MAX_IN_FLIGHT_AT].copy_from_slice(&self.writer.actor_epoch.to_le_bytes());
        b[MAX_IN_FLIGHT_AT..RECORD_COUNT_AT].copy_from_slice(&self.max_in_flight.to_le_bytes());
        b[RECORD_COUNT_AT..BODY_LEN_AT].copy_from_slice(&self.record_count.to_le_bytes());
        b[BODY_LEN_AT..CRC_AT].copy_from_slice(&self.body_len.to_le_bytes());
        let crc = crc32c::crc32c(&b[..CRC_AT]);
        b[CRC_AT..HEADER_LEN].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Reads and checks the header at the start of `bytes`, which were read from `key`, the
    /// object of `slot`. Every fault is [`crate::WalErrorKind::Corruption`] naming the key.
    pub fn decode(bytes: &[u8], key: &Path, slot: u64) -> WalResult<Header> {
        let bad = |what: String| WalError::corruption(key, what);
        let Some(b) = bytes.get(..HEADER_LEN) else {
            return Err(bad(format!(
                "{} bytes, too short for a {HEADER_LEN}-byte object header",
                bytes.len()
            )));
        };
        let magic = read_u32(b, MAGIC_AT);
        if magic != OBJECT_MAGIC {
            return Err(bad(format!("bad object magic {magic:#010x}")));
        }
        let stored = read_u32(b, CRC_AT);
        let computed = crc32c::crc32c(&b[..CRC_AT]);
        if stored != computed {
            return Err(bad(format!(
                "header crc mismatch: stored {stored:#010x}, computed {computed:#010x}"
            )));
        }
        let version = u16::from_le_bytes([b[VERSION_AT], b[VERSION_AT + 1]]);
        if version != FORMAT_VERSION {
            return Err(bad(format!("unknown object format version {version}")));
        }
        let kind = Kind::from_code(b[KIND_AT])
            .ok_or_else(|| bad(format!("unknown object kind {}", b[KIND_AT])))?;
        if b[RESERVED_AT] != 0 {
            return Err(bad(format!("reserved header byte is {}", b[RESERVED_AT])));
        }
        let header = Header {
            writer: Writer {
                kind,
                owner: read_u64(b, OWNER_AT),
                epoch: read_u64(b, EPOCH_AT),
                actor: read_u64(b, ACTOR_AT),
                actor_epoch: read_u64(b, ACTOR_EPOCH_AT),
            },
            slot: read_u64(b, SLOT_AT),
            max_in_flight: read_u32(b, MAX_IN_FLIGHT_AT),
            record_count: read_u32(b, RECORD_COUNT_AT),
            body_len: read_u32(b, BODY_LEN_AT),
        };
        if header.slot != slot {
            return Err(bad(format!(
                "object claims slot {}, stored in slot {slot}",
                header.slot
            )));
        }
        if kind == Kind::Fence && (header.record_count != 0 || header.body_len != 0) {
            return Err(bad(format!(
                "fence object claims {} records in {} bytes",
                header.record_count, header.body_len
            )));
        }
        Ok(header)
    }
}

/// An object whose every byte was checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Object {
    /// Its header.
    pub header: Header,
    /// Its records, in order, with their positions and ends.
    pub records: Vec<WalRecord>,
}

/// Encodes the data object of `slot` holding `records`; returns its bytes and the position of
/// each record.
pub fn encode_data(
    writer: Writer,
    slot: u64,
    max_in_flight: u32,
    records: &[Bytes],
) -> WalResult<(Vec<u8>, Vec<WalPosition>)> {
    let body_len: usize = records.iter().map(|r| frame::frame_len(r.len())).sum();
    let total = HEADER_LEN + body_len;
    let too_big = || {
        WalError::new(
            crate::WalErrorKind::InvalidInput,
            format!("a WAL object of {total} bytes does not fit the 32-bit offsets of a slot"),
        )
    };
    let body_len = u32::try_from(body_len).map_err(|_| too_big())?;
    if u32::try_from(total).is_err() {
        return Err(too_big());
    }
    let header = Header {
        writer,
        slot,
        max_in_flight,
        record_count: u32::try_from(records.len()).map_err(|_| too_big())?,
        body_len,
    };
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&header.encode());
    let mut positions = Vec::with_capacity(records.len());
    for record in records {
        let offset = out.len();
        let position = position_in(slot, offset);
        positions.push(position);
        // The batch delta is the offset past the header: it fits u32 because the object does.
        let delta = (offset - HEADER_LEN) as u32;
        frame::encode(position.0, delta, record, &mut out)
            .map_err(|e| WalError::new(crate::WalErrorKind::InvalidInput, e.to_string()))?;
    }
    Ok((out, positions))
}

/// Encodes the fence object of `slot`.
pub fn encode_fence(writer: Writer, slot: u64, max_in_flight: u32) -> Vec<u8> {
    Header {
        writer,
        slot,
        max_in_flight,
        record_count: 0,
        body_len: 0,
    }
    .encode()
    .to_vec()
}

/// Validates every byte of the object read from `key` (slot `slot`) and returns its records,
/// sharing `bytes`. Any fault is [`crate::WalErrorKind::Corruption`] naming the key.
pub fn decode_object(bytes: &Bytes, key: &Path, slot: u64) -> WalResult<Object> {
    let header = Header::decode(bytes, key, slot)?;
    let expected = HEADER_LEN + header.body_len as usize;
    if bytes.len() != expected {
        return Err(WalError::corruption(
            key,
            format!(
                "object is {} bytes, its header says {expected}",
                bytes.len()
            ),
        ));
    }
    let mut records = Vec::with_capacity((header.record_count as usize).min(1 << 16));
    let mut offset = HEADER_LEN;
    while offset < bytes.len() {
        let position = position_in(slot, offset);
        let frame = match frame::decode(&bytes[offset..], position.0) {
            Ok(Decoded::Frame(f)) => f,
            Ok(Decoded::End) => {
                return Err(WalError::corruption(
                    key,
                    format!("zero bytes at offset {offset} inside the object body"),
                ))
            }
            Err(e) => return Err(WalError::corruption(format!("{key} at offset {offset}"), e)),
        };
        // The crc covers the frame header and body; the padding after the body and the batch
        // delta (always the offset past the header here) are checked so that every byte of an
        // object is accounted for.
        let body_at = offset + frame.body_offset();
        let body_end = body_at + frame.body.len();
        if bytes[body_end..offset + frame.len].iter().any(|&b| b != 0) {
            return Err(WalError::corruption(
                format!("{key} at offset {body_end}"),
                "non-zero padding after a record",
            ));
        }
        if frame.batch_delta as usize != offset - HEADER_LEN {
            return Err(WalError::corruption(
                format!("{key} at offset {offset}"),
                format!(
                    "a record's batch delta is {}, not its offset past the header",
                    frame.batch_delta
                ),
            ));
        }
        let payload = bytes.slice(body_at..body_end);
        offset += frame.len;
        let end = if offset < bytes.len() {
            position_in(slot, offset)
        } else {
            position_in(slot + 1, 0)
        };
        records.push(WalRecord {
            position,
            end,
            payload,
        });
    }
    if records.len() != header.record_count as usize {
        return Err(WalError::corruption(
            key,
            format!(
                "object holds {} records, its header says {}",
                records.len(),
                header.record_count
            ),
        ));
    }
    Ok(Object { header, records })
}

fn read_u32(b: &[u8], at: usize) -> u32 {
    let mut v = [0; size_of::<u32>()];
    v.copy_from_slice(&b[at..at + size_of::<u32>()]);
    u32::from_le_bytes(v)
}

fn read_u64(b: &[u8], at: usize) -> u64 {
    let mut v = [0; size_of::<u64>()];
    v.copy_from_slice(&b[at..at + size_of::<u64>()]);
    u64::from_le_bytes(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::WalErrorKind;
    use proptest::prelude::*;

    fn writer(kind: Kind) -> Writer {
        Writer {
            kind,
            owner: 0x11,
            epoch: 0x22,
            actor: 0x33,
            actor_epoch: 0x44,
        }
    }

    fn key(slot: u64) -> Path {
        slot_key(&Path::from("p/wal/1"), slot)
    }

    #[test]
    fn the_header_bytes_match_the_documented_layout() {
        let h = Header {
            writer: writer(Kind::Data),
            slot: 0x0102_0304_0506_0708,
            max_in_flight: 8,
            record_count: 3,
            body_len: 96,
        };
        let b = h.encode();
        let mut expected = Vec::new();
        expected.extend_from_slice(b"OSWO");
        expected.extend_from_slice(&[1, 0, 1, 0]);
        expected.extend_from_slice(&[8, 7, 6, 5, 4, 3, 2, 1]);
        expected.extend_from_slice(&0x11u64.to_le_bytes());
        expected.extend_from_slice(&0x22u64.to_le_bytes());
        expected.extend_from_slice(&0x33u64.to_le_bytes());
        expected.extend_from_slice(&0x44u64.to_le_bytes());
        expected.extend_from_slice(&8u32.to_le_bytes());
        expected.extend_from_slice(&3u32.to_le_bytes());
        expected.extend_from_slice(&96u32.to_le_bytes());
        expected.extend_from_slice(&crc32c::crc32c(&expected).to_le_bytes());
        assert_eq!(b.to_vec(), expected);
    }

    #[test]
    fn the_crc_of_a_fixed_fence_never_changes() {
        // Pins the format: a change here makes every WAL object already written unreadable.
        let b = encode_fence(writer(Kind::Fence), 5, 8);
        assert_eq!(b.len(), HEADER_LEN);
        assert_eq!(b[6], 2);
        assert_eq!(&b[60..64], &0x3A69_BF0Bu32.to_le_bytes());
    }

    #[test]
    fn slot_keys_are_fixed_width_and_parse_back() {
        let prefix = Path::from("p/wal/00000000000000000001");
        let k = slot_key(&prefix, 42);
        assert_eq!(
            k.as_ref(),
            "p/wal/00000000000000000001/00000000000000000042"
        );
        assert_eq!(parse_slot_key(&prefix, &k), Some(42));
        assert_eq!(
            parse_slot_key(&prefix, &Path::from("p/wal/00000000000000000001/x")),
            None
        );
        assert_eq!(parse_slot_key(&prefix, &prefix.clone().join("42")), None);
        assert_eq!(
            parse_slot_key(&prefix, &k.clone().join("00000000000000000001")),
            None
        );
        assert_eq!(parse_slot_key(&Path::from("q"), &k), None);
    }

    #[test]
    fn a_data_object_decodes_to_its_records_with_positions_and_ends() {
        let records = vec![Bytes::from_static(b"one"), Bytes::from_static(b"second")];
        let (bytes, positions) = encode_data(writer(Kind::Data), 9, 8, &records).unwrap();
        let bytes = Bytes::from(bytes);
        let object = decode_object(&bytes, &key(9), 9).unwrap();
        assert_eq!(object.header.record_count, 2);
        assert_eq!(positions[0], WalPosition((9 << 32) | HEADER_LEN as u64));
        assert_eq!(object.records[0].position, positions[0]);
        assert_eq!(object.records[0].end, positions[1]);
        assert_eq!(object.records[1].end, WalPosition(10 << 32));
        assert_eq!(object.records[0].payload, records[0]);
        assert_eq!(object.records[1].payload, records[1]);
    }

    #[test]
    fn an_object_read_from_another_slot_is_corrupt_and_names_the_key() {
        let (bytes, _) =
            encode_data(writer(Kind::Data), 9, 8, &[Bytes::from_static(b"x")]).unwrap();
        let err = decode_object(&Bytes::from(bytes), &key(10), 10).unwrap_err();
        assert_eq!(err.kind(), WalErrorKind::Corruption);
        assert!(err.to_string().contains(key(10).as_ref()), "{err}");
    }

    #[test]
    fn a_flipped_byte_anywhere_in_an_object_is_corruption() {
        let records = vec![Bytes::from_static(b"alpha"), Bytes::from_static(b"beta")];
        let (bytes, _) = encode_data(writer(Kind::Data), 3, 8, &records).unwrap();
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x40;
            // Crcs cover headers and bodies; the padding after a body must be zeros.
            let result = decode_object(&Bytes::from(bad), &key(3), 3);
            assert_eq!(
                result.map(|_| ()).unwrap_err().kind(),
                WalErrorKind::Corruption,
                "byte {i}"
            );
        }
        let mut bad = bytes.clone();
        bad[HEADER_LEN + 26] ^= 1;
        assert!(decode_object(&Bytes::from(bad), &key(3), 3).is_err());
    }

    #[test]
    fn a_truncated_or_extended_object_is_corruption() {
        let (bytes, _) =
            encode_data(writer(Kind::Data), 3, 8, &[Bytes::from_static(b"abc")]).unwrap();
        for len in [0, 10, HEADER_LEN, bytes.len() - 8] {
            let cut = Bytes::copy_from_slice(&bytes[..len]);
            assert_eq!(
                decode_object(&cut, &key(3), 3).unwrap_err().kind(),
                WalErrorKind::Corruption
            );
        }
        let mut longer = bytes.clone();
        longer.extend_from_slice(&[0; 8]);
        assert!(decode_object(&Bytes::from(longer), &key(3), 3).is_err());
    }

    #[test]
    fn a_fence_holds_no_records() {
        let b = Bytes::from(encode_fence(writer(Kind::Fence), 4, 16));
        let object = decode_object(&b, &key(4), 4).unwrap();
        assert_eq!(object.header.writer.kind, Kind::Fence);
        assert_eq!(object.header.max_in_flight, 16);
        assert!(object.records.is_empty());
    }

    proptest! {
        #[test]
        fn any_slot_key_round_trips(slot in any::<u64>()) {
            let prefix = Path::from("a/b");
            prop_assert_eq!(parse_slot_key(&prefix, &slot_key(&prefix, slot)), Some(slot));
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(
            bytes in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let _ = decode_object(&Bytes::from(bytes), &key(1), 1);
        }

        #[test]
        fn any_records_round_trip(
            slot in 0u64..(1 << 31),
            records in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..8),
        ) {
            let records: Vec<Bytes> = records.into_iter().map(Bytes::from).collect();
            let (bytes, positions) = encode_data(writer(Kind::Data), slot, 4, &records).unwrap();
            let object = decode_object(&Bytes::from(bytes), &key(slot), slot).unwrap();
            prop_assert_eq!(object.records.len(), records.len());
            for (i, r) in object.records.iter().enumerate() {
                prop_assert_eq!(r.position, positions[i]);
                prop_assert_eq!(&r.payload, &records[i]);
            }
        }
    }
}
