//! The record ring: where frames go on the device, the padding marker at the ring's end, and
//! recovery.
//!
//! # Layout
//!
//! The ring is the device after the two header slots, `ring` bytes long (a multiple of 4 KiB).
//! Logical positions only grow; a position `p` lives at byte `HEADER_AREA + p % ring`. Records
//! use the shared frame ([`crate::frame`]), whose position field ties it to its lap: bytes left
//! from an earlier lap carry a position one or more laps lower and never validate.
//!
//! # Writes
//!
//! Every write starts at a 4 KiB-aligned position and is zero-padded to the next 4 KiB
//! boundary; the next write starts at that boundary. Written blocks are never rewritten while
//! they hold acknowledged records (a torn rewrite could destroy them); the price is up to 4 KiB
//! of padding per write. Recovery reads zeros from an unaligned position up to the next block
//! boundary (however few: fewer than a frame header is possible) as that padding.
//!
//! A write never crosses the ring's end. When the first frame of a write does not fit before
//! the end, the writer puts a padding marker at the write's position and syncs it before
//! writing the frames at the start of the next lap. The marker is a 24-byte header shaped like
//! a frame header but with its own magic ("OSWP"): crc32c over bytes 8..24, the position, and
//! the bytes to the ring's end.
//!
//! # Recovery
//!
//! From the trim position, frames are read while they validate. At the first position holding
//! neither a frame, nor padding, nor a marker (the *cut*), the next `window` bytes are scanned
//! at frame alignment for frames valid at their place. One whose write batch starts beyond the
//! cut proves that the bytes at the cut had been durable before it was written: that is
//! corruption, reported with the device and offset. Otherwise the cut is a torn tail: the log
//! ends there, and the open zeroes the bytes from the cut over a window (never into untrimmed
//! data) so that nothing of the torn write can validate after new writes.
//!
//! The window covers every write that may have been in flight with the torn one (the writer
//! keeps up to four; their frames' batch starts point back to the oldest, so they read as a
//! torn tail, not as corruption), and the zeroing covers them too.
//!
//! Recovery reads through module `reader`: large chunks, several reads in flight while the
//! current chunk is decoded. Replayed payloads are slices of those chunks, not copies: memory
//! held by a replay is the replayed bytes plus at most one largest frame per chunk, until the
//! records are dropped.

use std::thread::Scope;

use super::device::{AlignedBuf, BlockDevice, BLOCK};
use super::header::HEADER_AREA;
use super::reader::Reader;
use crate::frame::{self, Decoded, RawHeader, FRAME_MAGIC};
use crate::{WalError, WalPosition, WalRecord, WalResult};

/// The magic of a padding marker ("OSWP" read as little-endian bytes).
pub const PAD_MAGIC: u32 = u32::from_le_bytes(*b"OSWP");

const BLOCK_U64: u64 = BLOCK as u64;

/// Rounds `x` up to a multiple of 4 KiB.
pub fn align_up(x: u64) -> u64 {
    x.div_ceil(BLOCK_U64) * BLOCK_U64
}

/// The ring's geometry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ring {
    /// Ring bytes, a multiple of 4 KiB.
    pub size: u64,
}

impl Ring {
    /// Where position `pos` lives on the device.
    pub fn physical(&self, pos: u64) -> u64 {
        HEADER_AREA + pos % self.size
    }

    /// The first position of the lap after the one holding `pos`.
    pub fn lap_end(&self, pos: u64) -> u64 {
        pos - pos % self.size + self.size
    }
}

/// Writes a padding marker at `pos` into `out` (one block).
pub fn encode_pad(ring: Ring, pos: u64, out: &mut [u8]) {
    out[..BLOCK].fill(0);
    let len = ring.lap_end(pos) - pos;
    out[0..4].copy_from_slice(&PAD_MAGIC.to_le_bytes());
    out[8..16].copy_from_slice(&pos.to_le_bytes());
    out[16..24].copy_from_slice(&len.to_le_bytes());
    let crc = crc32c::crc32c(&out[8..24]);
    out[4..8].copy_from_slice(&crc.to_le_bytes());
}

/// Whether `bytes` hold a valid padding marker for position `pos`.
pub(crate) fn is_pad(ring: Ring, pos: u64, bytes: &[u8]) -> bool {
    let Some(h) = bytes.get(..frame::HEADER_LEN) else {
        return false;
    };
    let word = |at: usize| {
        let mut b = [0; 8];
        b.copy_from_slice(&h[at..at + 8]);
        u64::from_le_bytes(b)
    };
    h[0..4] == PAD_MAGIC.to_le_bytes()
        && h[4..8] == crc32c::crc32c(&h[8..24]).to_le_bytes()
        && word(8) == pos
        && word(16) == ring.lap_end(pos) - pos
}

/// What recovery found.
#[derive(Debug)]
pub struct Recovered {
    /// The surviving records, in order.
    pub records: Vec<WalRecord>,
    /// Where the log ends (the cut).
    pub cut: u64,
    /// Positions where writes started (aligned; recovery may start at any of them), ascending.
    pub write_starts: Vec<u64>,
    /// Past the cut, the bytes recovery read hold only zeros from here on (up to the window's
    /// end): zeroing them again would change nothing.
    pub dirty_end: u64,
}

/// Reads the ring from `trim` (see the module docs). `max_frame` is the largest frame a write
/// may hold; `window` how far past the cut to look for proof of corruption.
pub fn recover(
    dev: &dyn BlockDevice,
    ring: Ring,
    trim: u64,
    max_frame: u64,
    window: u64,
) -> WalResult<Recovered> {
    std::thread::scope(|scope| recover_in(scope, dev, ring, trim, max_frame, window))
}

fn recover_in<'scope, 'env>(
    scope: &'scope Scope<'scope, 'env>,
    dev: &'env dyn BlockDevice,
    ring: Ring,
    trim: u64,
    max_frame: u64,
    window: u64,
) -> WalResult<Recovered> {
    let limit = trim + ring.size;
    let mut reader = Reader::new(dev, scope, ring, max_frame, limit);
    let mut records = Vec::new();
    let mut write_starts = vec![trim];
    let mut pos = trim;
    while pos < limit {
        let view = frame_view(&mut reader, pos)?;
        // A write ends anywhere and the next one starts at the next block boundary, so the
        // rest of a block after the last frame of a write is zeros, possibly fewer of them
        // than a frame header: skip them.
        let to_boundary = (align_up(pos) - pos) as usize;
        if to_boundary > 0
            && view
                .get(..to_boundary)
                .is_some_and(|b| b.iter().all(|&x| x == 0))
        {
            pos = align_up(pos);
            continue;
        }
        match frame::decode(view, pos) {
            Ok(Decoded::Frame(f)) => {
                let start = f.batch_start();
                let (len, body_at, body_len) = (f.len as u64, f.body_offset(), f.body.len());
                if start >= trim && write_starts.last() != Some(&start) {
                    write_starts.push(start);
                }
                records.push(WalRecord {
                    position: WalPosition(pos),
                    end: WalPosition(pos + len),
                    payload: reader.bytes(pos + body_at as u64, body_len),
                });
                pos += len;
            }
            _ if pos % BLOCK_U64 == 0 && is_pad(ring, pos, view) => {
                if write_starts.last() != Some(&pos) {
                    write_starts.push(pos);
                }
                pos = ring.lap_end(pos);
            }
            _ => break,
        }
    }
    let cut = pos.min(limit);
    // Look for a frame written after the cut had been made durable.
    let end = (cut + window).min(limit);
    let mut q = cut + frame::ALIGN as u64;
    let mut dirty_end = q.min(limit);
    while q < end {
        let view = reader.view(q, frame::HEADER_LEN as u64)?;
        // Bytes not seen count as not zero, so they are zeroed.
        if view
            .get(..frame::ALIGN)
            .is_none_or(|w| w.iter().any(|&b| b != 0))
        {
            dirty_end = q + frame::ALIGN as u64;
        }
        let candidate = RawHeader::read(view).is_some_and(|h| {
            h.magic == FRAME_MAGIC && h.position == q && h.batch_start() > Some(cut)
        });
        if candidate {
            let view = frame_view(&mut reader, q)?;
            if let Ok(Decoded::Frame(f)) = frame::decode(view, q) {
                if f.batch_start() > cut {
                    let offset = ring.physical(cut);
                    return Err(WalError::corruption(
                        format!("{} at offset {offset}", dev.name()),
                        format!(
                            "no valid frame at position {cut}, but the frame at {q} was \
                             written after it had been made durable"
                        ),
                    ));
                }
            }
        }
        q += frame::ALIGN as u64;
    }
    write_starts.retain(|&s| s <= cut);
    Ok(Recovered {
        records,
        cut,
        write_starts,
        dirty_end,
    })
}

/// The bytes at `pos` as far as the frame whose header is there claims to reach (up to the
/// largest frame, the lap's end or the reader's limit), and at least a block's worth.
fn frame_view<'a>(reader: &'a mut Reader<'_, '_>, pos: u64) -> WalResult<&'a [u8]> {
    let claimed = {
        let view = reader.view(pos, BLOCK_U64)?;
        RawHeader::read(view)
            .filter(|h| h.magic == FRAME_MAGIC)
            .map(|h| frame::frame_len(h.length as usize) as u64)
    };
    let want = claimed.map_or(BLOCK_U64, |len| len.max(BLOCK_U64));
    reader.view(pos, want)
}

/// Zeroes the ring from `from` up to `to` (both logical; `from` may be unaligned: the bytes
/// before it in its block are kept), then syncs. `to - from` must be below the ring size.
pub fn zero_range(
    dev: &dyn BlockDevice,
    ring: Ring,
    from: u64,
    to: u64,
    buf: &mut AlignedBuf,
) -> WalResult<()> {
    let fail = |offset: u64, e: std::io::Error| {
        WalError::failed(format!("zeroing {} at {offset}", dev.name()), e)
    };
    let mut pos = from - from % BLOCK_U64;
    if pos < from && pos < to {
        let offset = ring.physical(pos);
        dev.read_at(&mut buf[..BLOCK], offset)
            .map_err(|e| fail(offset, e))?;
        buf[(from - pos) as usize..BLOCK].fill(0);
        dev.write_at(&buf[..BLOCK], offset)
            .map_err(|e| fail(offset, e))?;
        pos += BLOCK_U64;
    }
    let to = align_up(to);
    buf.fill(0);
    while pos < to {
        let len = (to - pos)
            .min(ring.lap_end(pos) - pos)
            .min(buf.len() as u64);
        let offset = ring.physical(pos);
        dev.write_at(&buf[..len as usize], offset)
            .map_err(|e| fail(offset, e))?;
        pos += len;
    }
    dev.sync().map_err(|e| fail(0, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::device::MemDevice;
    use crate::block::reader::RECOVERY_READ_BYTES as READ_CHUNK;

    const RING: Ring = Ring { size: 16 * 4096 };

    fn write_frames(dev: &MemDevice, start: u64, bodies: &[&[u8]]) -> u64 {
        let mut out = Vec::new();
        let mut pos = start;
        for body in bodies {
            pos += frame::encode(pos, (pos - start) as u32, body, &mut out).unwrap() as u64;
        }
        let mut buf = AlignedBuf::new(out.len());
        buf[..out.len()].copy_from_slice(&out);
        dev.write_at(&buf, RING.physical(start)).unwrap();
        pos
    }

    #[test]
    fn positions_map_into_the_ring_after_the_headers() {
        assert_eq!(RING.physical(0), HEADER_AREA);
        assert_eq!(RING.physical(RING.size + 8), HEADER_AREA + 8);
        assert_eq!(RING.lap_end(RING.size - 1), RING.size);
    }

    #[test]
    fn recovery_skips_block_padding_and_stops_at_zeros() {
        let dev = MemDevice::new((HEADER_AREA + RING.size) as usize);
        let end = write_frames(&dev, 0, &[b"a", b"bb"]);
        write_frames(&dev, align_up(end), &[b"ccc"]);
        let r = recover(&dev, RING, 0, 8192, 16384).unwrap();
        let bodies: Vec<_> = r.records.iter().map(|r| r.payload.clone()).collect();
        assert_eq!(bodies, vec!["a", "bb", "ccc"]);
        assert_eq!(r.write_starts, vec![0, 4096]);
        // The zero padding after the last frame reads as padding to the next block.
        assert_eq!(r.cut, 8192);
    }

    #[test]
    fn fewer_zeros_than_a_frame_header_before_a_block_boundary_are_padding() {
        for tail in [8usize, 16] {
            let dev = MemDevice::new((HEADER_AREA + RING.size) as usize);
            let body = vec![3u8; BLOCK - tail - frame::HEADER_LEN];
            let end = write_frames(&dev, 0, &[&body]);
            assert_eq!(end, (BLOCK - tail) as u64);
            write_frames(&dev, 4096, &[b"after"]);
            let r = recover(&dev, RING, 0, 8192, 16384).unwrap();
            assert_eq!(r.records.len(), 2, "{tail} zero bytes before the boundary");
        }
    }

    #[test]
    fn a_padding_marker_continues_at_the_next_lap() {
        let dev = MemDevice::new((HEADER_AREA + RING.size) as usize);
        let last = RING.size - 4096;
        let mut buf = AlignedBuf::new(BLOCK);
        encode_pad(RING, RING.size + last, &mut buf);
        dev.write_at(&buf, RING.physical(last)).unwrap();
        write_frames(&dev, 2 * RING.size, &[b"next lap"]);
        let r = recover(&dev, RING, RING.size + last, 8192, 16384).unwrap();
        assert_eq!(r.records.len(), 1);
        assert_eq!(r.records[0].position, WalPosition(2 * RING.size));
    }

    #[test]
    fn frames_of_an_earlier_lap_never_validate() {
        let dev = MemDevice::new((HEADER_AREA + RING.size) as usize);
        write_frames(&dev, 0, &[b"old lap"]);
        let r = recover(&dev, RING, RING.size, 8192, 16384).unwrap();
        assert!(r.records.is_empty());
        assert_eq!(r.cut, RING.size);
    }

    #[test]
    fn a_damaged_frame_followed_by_a_later_write_is_corruption() {
        let dev = MemDevice::new((HEADER_AREA + RING.size) as usize);
        write_frames(&dev, 0, &[b"first"]);
        write_frames(&dev, 4096, &[b"second"]);
        dev.poke(HEADER_AREA as usize + 26, &[0xEE]);
        let err = recover(&dev, RING, 0, 8192, 16384).unwrap_err();
        assert_eq!(err.kind(), crate::WalErrorKind::Corruption);
        assert!(err.to_string().contains("memory device at offset 8192"));
    }

    #[test]
    fn recovery_says_where_the_bytes_past_the_cut_turn_to_zeros() {
        let dev = MemDevice::new((HEADER_AREA + RING.size) as usize);
        let end = write_frames(&dev, 0, &[b"kept"]);
        let r = recover(&dev, RING, 0, 8192, 16384).unwrap();
        assert_eq!((r.cut, r.dirty_end), (4096, 4096 + 8));
        // A torn write left bytes two blocks past the cut: they must be zeroed, not skipped.
        dev.poke((HEADER_AREA + 3 * 4096 + 100) as usize, &[1]);
        let r = recover(&dev, RING, 0, 8192, 16384).unwrap();
        assert_eq!(r.cut, align_up(end));
        assert_eq!(r.dirty_end, 3 * 4096 + 104);
    }

    #[test]
    fn zeroing_keeps_the_bytes_before_the_cut_in_its_block() {
        let dev = MemDevice::new((HEADER_AREA + RING.size) as usize);
        let end = write_frames(&dev, 0, &[b"keep", b"drop"]);
        let cut = frame::frame_len(4) as u64;
        let mut buf = AlignedBuf::new(8192);
        zero_range(&dev, RING, cut, end + 8192, &mut buf).unwrap();
        let r = recover(&dev, RING, 0, 8192, 16384).unwrap();
        assert_eq!(r.records.len(), 1);
        assert_eq!(r.cut, 4096);
    }

    #[test]
    fn a_torn_write_followed_by_a_write_issued_before_it_was_durable_is_a_torn_tail() {
        let dev = MemDevice::new((HEADER_AREA + RING.size) as usize);
        write_frames(&dev, 0, &[b"durable"]);
        // The second write tore: only its first sector landed.
        let mut out = Vec::new();
        frame::encode(4096, 0, &[7u8; 3000], &mut out).unwrap();
        let mut buf = AlignedBuf::new(out.len());
        buf[..512].copy_from_slice(&out[..512]);
        dev.write_at(&buf, RING.physical(4096)).unwrap();
        // The third was issued while the second was in flight: its batch start points back.
        let mut out = Vec::new();
        frame::encode(8192, 8192 - 4096, b"landed", &mut out).unwrap();
        let mut buf = AlignedBuf::new(out.len());
        buf[..out.len()].copy_from_slice(&out);
        dev.write_at(&buf, RING.physical(8192)).unwrap();
        let r = recover(&dev, RING, 0, 8192, 16384).unwrap();
        assert_eq!(r.records.len(), 1);
        assert_eq!(r.cut, 4096);
    }

    #[test]
    fn recovery_reads_across_many_chunks_without_losing_or_repeating_a_frame() {
        let ring = Ring {
            size: 3 * READ_CHUNK,
        };
        let dev = MemDevice::new((HEADER_AREA + ring.size) as usize);
        let mut pos = 0u64;
        let mut bodies = Vec::new();
        let mut i = 0u64;
        while pos < 2 * READ_CHUNK + 12345 {
            let body: Vec<u8> = (0..(i * 7919) % 200_000).map(|j| (i + j) as u8).collect();
            let mut out = Vec::new();
            let n = frame::encode(pos, 0, &body, &mut out).unwrap() as u64;
            let mut buf = AlignedBuf::new(out.len());
            buf[..out.len()].copy_from_slice(&out);
            dev.write_at(&buf, ring.physical(pos)).unwrap();
            bodies.push(body);
            pos = align_up(pos + n);
            i += 1;
        }
        let r = recover(&dev, ring, 0, 256 << 10, 1 << 20).unwrap();
        let got: Vec<Vec<u8>> = r.records.iter().map(|r| r.payload.to_vec()).collect();
        assert!(
            got == bodies,
            "{} of {} frames recovered",
            got.len(),
            bodies.len()
        );
        assert_eq!(r.cut, pos);
    }
}
