//! The two header slots at the start of the device.
//!
//! # Byte layout
//!
//! Slot `i` is the 4 KiB block at byte `i * 4096` (`i` is 0 or 1). Each holds, little-endian:
//!
//! ```text
//! offset  size  field
//!      0     4  magic       HEADER_MAGIC ("OSWB")
//!      4     4  version     1
//!      8     8  capacity    device bytes the WAL uses: the header area plus the ring
//!     16     8  trim        logical position recovery starts from
//!     24     8  node_id     the node that wrote this header
//!     32     8  node_epoch  that node's epoch; a higher one fences every lower one
//!     40     8  sequence    one more than the previous header's; picks the newest slot
//!     48     4  crc32c      over bytes 0..48
//!     52  4044  zeros
//! ```
//!
//! A header with sequence `s` is written to slot `s % 2`, so the previous header survives a
//! torn header write. The newest valid slot wins: the higher node epoch, then the higher
//! sequence number; never clocks (they are not monotonic across reboots). Ranking the epoch
//! first means that a header written by a fenced writer (a lower epoch) can never hide its
//! successor's, whatever sequence number it carries.
//!
//! An open writes its header to *both* slots, one after the other, each write synced before
//! the next ([`write_both_slots`]): a torn write damages at most one copy, and a previous
//! writer that still holds the device and races the open with one header write of its own
//! (it reads the slots before every header write, so it can have at most one in flight) can
//! overwrite at most one copy, never both.

use super::device::{AlignedBuf, BlockDevice, BLOCK};
use crate::{WalError, WalResult};

/// The magic of a header slot ("OSWB" read as little-endian bytes).
pub const HEADER_MAGIC: u32 = u32::from_le_bytes(*b"OSWB");

/// The header format version.
pub const VERSION: u32 = 1;

/// Bytes taken by the two slots; the ring starts here.
pub const HEADER_AREA: u64 = 2 * BLOCK as u64;

const CRC_AT: usize = 48;

/// The fields of a header slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Device bytes used: the header area plus the ring.
    pub capacity: u64,
    /// Where recovery starts.
    pub trim: u64,
    /// The writing node.
    pub node_id: u64,
    /// The writing node's epoch.
    pub node_epoch: u64,
    /// Orders headers: the higher one is newer.
    pub sequence: u64,
}

impl Header {
    /// The slot this header goes to.
    pub fn slot(&self) -> u64 {
        self.sequence % 2
    }

    /// Encodes the header into a 4 KiB slot image.
    pub fn encode(&self, out: &mut [u8]) {
        out[..BLOCK].fill(0);
        out[0..4].copy_from_slice(&HEADER_MAGIC.to_le_bytes());
        out[4..8].copy_from_slice(&VERSION.to_le_bytes());
        out[8..16].copy_from_slice(&self.capacity.to_le_bytes());
        out[16..24].copy_from_slice(&self.trim.to_le_bytes());
        out[24..32].copy_from_slice(&self.node_id.to_le_bytes());
        out[32..40].copy_from_slice(&self.node_epoch.to_le_bytes());
        out[40..48].copy_from_slice(&self.sequence.to_le_bytes());
        let crc = crc32c::crc32c(&out[..CRC_AT]);
        out[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_le_bytes());
    }

    /// Decodes a slot image: `Ok(None)` when it is all zeros (never written), an error naming
    /// what is wrong when it is not a valid header.
    pub fn decode(slot: &[u8]) -> Result<Option<Header>, String> {
        let Some(slot) = slot.get(..BLOCK) else {
            return Err("short header slot".to_string());
        };
        if slot.iter().all(|&b| b == 0) {
            return Ok(None);
        }
        let u32_at =
            |at: usize| u32::from_le_bytes([slot[at], slot[at + 1], slot[at + 2], slot[at + 3]]);
        let u64_at = |at: usize| {
            let mut b = [0; 8];
            b.copy_from_slice(&slot[at..at + 8]);
            u64::from_le_bytes(b)
        };
        if u32_at(0) != HEADER_MAGIC {
            return Err(format!("bad header magic {:#010x}", u32_at(0)));
        }
        let computed = crc32c::crc32c(&slot[..CRC_AT]);
        if u32_at(CRC_AT) != computed {
            return Err(format!(
                "header crc mismatch: stored {:#010x}, computed {computed:#010x}",
                u32_at(CRC_AT)
            ));
        }
        if u32_at(4) != VERSION {
            return Err(format!("unknown header version {}", u32_at(4)));
        }
        Ok(Some(Header {
            capacity: u64_at(8),
            trim: u64_at(16),
            node_id: u64_at(24),
            node_epoch: u64_at(32),
            sequence: u64_at(40),
        }))
    }
}

/// What the two slots hold.
#[derive(Debug)]
pub enum Slots {
    /// Both slots are zero: a fresh device.
    Fresh,
    /// The newest valid header.
    Valid(Header),
}

/// Reads both slots and picks the newest valid one (highest node epoch, then highest
/// sequence). Fails with corruption when neither is valid but not both are zero.
pub fn read_slots(dev: &dyn BlockDevice, buf: &mut AlignedBuf) -> WalResult<Slots> {
    dev.read_at(&mut buf[..2 * BLOCK], 0)
        .map_err(|e| WalError::failed(format!("reading the header of {}", dev.name()), e))?;
    let a = Header::decode(&buf[..BLOCK]);
    let b = Header::decode(&buf[BLOCK..2 * BLOCK]);
    let newest = [&a, &b]
        .into_iter()
        .filter_map(|h| h.as_ref().ok().copied().flatten())
        .max_by_key(|h| (h.node_epoch, h.sequence));
    match (newest, &a, &b) {
        (Some(h), _, _) => Ok(Slots::Valid(h)),
        (None, Ok(None), Ok(None)) => Ok(Slots::Fresh),
        (None, a, b) => {
            let why = |r: &Result<Option<Header>, String>| match r {
                Err(e) => e.clone(),
                Ok(_) => "empty".to_string(),
            };
            Err(WalError::corruption(
                format!("{} at offset 0", dev.name()),
                format!(
                    "no valid header slot (slot 0: {}; slot 1: {})",
                    why(a),
                    why(b)
                ),
            ))
        }
    }
}

/// Writes `header` to its slot and syncs.
pub fn write_slot(dev: &dyn BlockDevice, header: &Header, buf: &mut AlignedBuf) -> WalResult<()> {
    header.encode(&mut buf[..BLOCK]);
    let offset = header.slot() * BLOCK as u64;
    let what = || format!("writing header slot {} of {}", header.slot(), dev.name());
    dev.write_at(&buf[..BLOCK], offset)
        .map_err(|e| WalError::failed(what(), e))?;
    dev.sync().map_err(|e| WalError::failed(what(), e))
}

/// Writes `header` to slot 0 and to slot 1, syncing after each: the header an open writes.
pub fn write_both_slots(
    dev: &dyn BlockDevice,
    header: &Header,
    buf: &mut AlignedBuf,
) -> WalResult<()> {
    header.encode(&mut buf[..BLOCK]);
    for slot in 0..2u64 {
        let what = || format!("writing header slot {slot} of {}", dev.name());
        dev.write_at(&buf[..BLOCK], slot * BLOCK as u64)
            .map_err(|e| WalError::failed(what(), e))?;
        dev.sync().map_err(|e| WalError::failed(what(), e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::device::MemDevice;

    fn header(sequence: u64) -> Header {
        Header {
            capacity: 1 << 20,
            trim: 4096 * sequence,
            node_id: 7,
            node_epoch: 3,
            sequence,
        }
    }

    #[test]
    fn a_header_round_trips_through_its_slot_image() {
        let mut buf = AlignedBuf::new(BLOCK);
        header(5).encode(&mut buf);
        assert_eq!(Header::decode(&buf), Ok(Some(header(5))));
    }

    #[test]
    fn the_newest_valid_slot_wins() {
        let dev = MemDevice::new(1 << 20);
        let mut buf = AlignedBuf::new(2 * BLOCK);
        write_slot(&dev, &header(8), &mut buf).unwrap();
        write_slot(&dev, &header(9), &mut buf).unwrap();
        let Slots::Valid(h) = read_slots(&dev, &mut buf).unwrap() else {
            panic!("expected a header")
        };
        assert_eq!(h.sequence, 9);
    }

    #[test]
    fn a_corrupt_newest_slot_falls_back_to_the_other() {
        let dev = MemDevice::new(1 << 20);
        let mut buf = AlignedBuf::new(2 * BLOCK);
        write_slot(&dev, &header(8), &mut buf).unwrap();
        write_slot(&dev, &header(9), &mut buf).unwrap();
        dev.poke(BLOCK + 20, &[0xFF]);
        let Slots::Valid(h) = read_slots(&dev, &mut buf).unwrap() else {
            panic!("expected a header")
        };
        assert_eq!(h.sequence, 8);
    }

    #[test]
    fn the_sequence_decides_not_the_slot_order() {
        let dev = MemDevice::new(1 << 20);
        let mut buf = AlignedBuf::new(2 * BLOCK);
        write_slot(&dev, &header(3), &mut buf).unwrap();
        write_slot(&dev, &header(6), &mut buf).unwrap();
        let Slots::Valid(h) = read_slots(&dev, &mut buf).unwrap() else {
            panic!("expected a header")
        };
        assert_eq!((h.slot(), h.sequence), (0, 6));
    }

    #[test]
    fn two_bad_slots_are_corruption_and_two_zero_slots_are_fresh() {
        let dev = MemDevice::new(1 << 20);
        let mut buf = AlignedBuf::new(2 * BLOCK);
        assert!(matches!(read_slots(&dev, &mut buf), Ok(Slots::Fresh)));
        dev.poke(10, &[1]);
        let err = read_slots(&dev, &mut buf).unwrap_err();
        assert_eq!(err.kind(), crate::WalErrorKind::Corruption);
        assert!(err.to_string().contains("memory device"));
    }

    #[test]
    fn a_higher_node_epoch_wins_over_a_higher_sequence() {
        let dev = MemDevice::new(1 << 20);
        let mut buf = AlignedBuf::new(2 * BLOCK);
        let successor = Header {
            node_epoch: 4,
            ..header(6)
        };
        write_both_slots(&dev, &successor, &mut buf).unwrap();
        // A fenced writer's late header write lands on one slot with a higher sequence.
        write_slot(&dev, &header(7), &mut buf).unwrap();
        let Slots::Valid(h) = read_slots(&dev, &mut buf).unwrap() else {
            panic!("expected a header")
        };
        assert_eq!(h, successor);
    }

    #[test]
    fn an_open_header_fills_both_slots() {
        let dev = MemDevice::new(1 << 20);
        let mut buf = AlignedBuf::new(2 * BLOCK);
        write_both_slots(&dev, &header(3), &mut buf).unwrap();
        let image = dev.snapshot();
        assert_eq!(Header::decode(&image[..BLOCK]), Ok(Some(header(3))));
        assert_eq!(
            Header::decode(&image[BLOCK..2 * BLOCK]),
            Ok(Some(header(3)))
        );
    }
}
