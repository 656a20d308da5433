//! The recovery reader: the ring read in large chunks, several reads in flight, records handed
//! out as slices of the chunks.
//!
//! # Flow
//!
//! Recovery walks the ring forward from the trim position. The reader keeps the chunk being decoded
//! and, behind it, up to [`RECOVERY_READ_DEPTH`] reads of the following chunks in flight, each in
//! its own scoped thread: the thread allocates the chunk's buffer (so the page faults of fresh
//! memory are spread over threads too) and fills it with one `O_DIRECT` read. A device serves
//! several reads at once far faster than one at a time, and decoding the current chunk overlaps all
//! of them.
//!
//! Chunks are contiguous in logical positions and never cross a lap's end, so each is one
//! physically contiguous read. A chunk buffer starts with `slack` unused bytes: when a frame
//! straddles the end of the current chunk, only the bytes from the block holding that frame's
//! start are copied into the slack of the next chunk, in front of its data, so that every
//! frame is one contiguous slice. That frame (at most one largest frame per chunk) is the only
//! copy; every other payload is a slice of the buffer the device filled.
//!
//! # Asking for bytes
//!
//! [`Reader::view`] takes the number of bytes the caller needs at a position (a frame's
//! length, once its header is read), not a fixed amount, so that a chunk is left only when the
//! next frame truly runs past it. A read-ahead past the end of the log is wasted; the depth
//! bounds the waste at `RECOVERY_READ_DEPTH` chunks, little more than recovery reads past the
//! cut anyway to tell a torn tail from corruption.

use std::collections::VecDeque;
use std::io;
use std::thread::{Scope, ScopedJoinHandle};

use bytes::Bytes;

use super::device::{AlignedBuf, BlockDevice, BLOCK};
use super::ring::{align_up, Ring};
use crate::{WalError, WalResult};

/// Bytes of one recovery read (or the rest of the lap, when less).
pub const RECOVERY_READ_BYTES: u64 = 4 << 20;

/// Recovery reads in flight behind the chunk being decoded.
pub const RECOVERY_READ_DEPTH: usize = 4;

const BLOCK_U64: u64 = BLOCK as u64;

/// A read of a chunk after the current one, running in its own thread.
struct Ahead<'scope> {
    /// The logical position it reads from.
    at: u64,
    len: u64,
    read: ScopedJoinHandle<'scope, io::Result<AlignedBuf>>,
}

/// Reads the ring forward in chunks, with reads in flight ahead of the decoding. See the
/// module docs.
pub struct Reader<'scope, 'env> {
    dev: &'env dyn BlockDevice,
    scope: &'scope Scope<'scope, 'env>,
    ring: Ring,
    /// Bytes per read (at least two largest frames, so a frame straddling a chunk's end fits
    /// the next one with room to spare).
    chunk: u64,
    /// Bytes reserved before each chunk's data for the unread tail of the previous chunk.
    slack: u64,
    /// The most a caller may ask for at once: a largest frame, rounded up to a block.
    need: u64,
    /// Where reading stops: nothing at or past it is needed.
    limit: u64,
    /// The chunk being decoded, and the logical position of its first byte.
    data: Bytes,
    start: u64,
    /// Reads in flight, contiguous with `data` and with each other, in position order.
    ahead: VecDeque<Ahead<'scope>>,
}

impl<'scope, 'env> Reader<'scope, 'env> {
    /// A reader of `ring` on `dev` whose largest frame is `max_frame` bytes, that never reads
    /// at or past `limit`. Nothing is read until the first [`Reader::view`].
    pub fn new(
        dev: &'env dyn BlockDevice,
        scope: &'scope Scope<'scope, 'env>,
        ring: Ring,
        max_frame: u64,
        limit: u64,
    ) -> Reader<'scope, 'env> {
        let need = align_up(max_frame.max(1));
        Reader {
            dev,
            scope,
            ring,
            chunk: (2 * need + BLOCK_U64)
                .max(RECOVERY_READ_BYTES)
                .min(ring.size),
            slack: need + BLOCK_U64,
            need,
            limit,
            data: Bytes::new(),
            start: 0,
            ahead: VecDeque::new(),
        }
    }

    fn failed(&self, offset: u64, e: io::Error) -> WalError {
        WalError::failed(format!("reading {} at {offset}", self.dev.name()), e)
    }

    /// The bytes from `pos` on, at least `want` of them (at most a largest frame) or up to the
    /// end of `pos`'s lap or the limit, whichever comes first. Positions only move forward,
    /// except within the chunk held.
    pub fn view(&mut self, pos: u64, want: u64) -> WalResult<&[u8]> {
        let want_end = (pos + want.min(self.need))
            .min(self.ring.lap_end(pos))
            .min(self.limit);
        // A read made now always covers `want_end`; the read-ahead taken first may fall
        // short only when it ends a lap or the limit, which `want_end` respects: so at most
        // two turns.
        for _ in 0..2 {
            let held_end = self.start + self.data.len() as u64;
            if pos >= self.start && want_end <= held_end {
                break;
            }
            self.refill(pos, held_end)?;
        }
        let from = (pos - self.start) as usize;
        Ok(self.data.get(from..).unwrap_or(&[]))
    }

    /// Makes the held chunk start at the block holding `pos`: the next read in flight when it
    /// continues the held bytes, else a read made now.
    fn refill(&mut self, pos: u64, held_end: u64) -> WalResult<()> {
        let start = pos - pos % BLOCK_U64;
        let kept = if self.start <= start && start < held_end {
            held_end - start
        } else {
            0
        };
        let continues = self
            .ahead
            .front()
            .is_some_and(|a| a.at == held_end && start <= held_end && kept <= self.slack);
        let next = if continues {
            self.ahead.pop_front()
        } else {
            // A jump (never made by recovery's forward walk): what is in flight is of no use.
            self.ahead.clear();
            None
        };
        match next {
            Some(a) => {
                let offset = self.ring.physical(a.at);
                let mut buf = a
                    .read
                    .join()
                    .map_err(|_| self.failed(offset, io::Error::other("a recovery read panicked")))?
                    .map_err(|e| self.failed(offset, e))?;
                let front = (self.slack - kept) as usize;
                let from = (start - self.start) as usize;
                buf[front..self.slack as usize]
                    .copy_from_slice(&self.data[from..from + kept as usize]);
                let end = (self.slack + a.len) as usize;
                self.data = Bytes::from_owner(buf).slice(front..end);
            }
            None => {
                let end = (start + self.chunk)
                    .min(self.ring.lap_end(start))
                    .min(self.limit.max(start + BLOCK_U64));
                let mut buf = AlignedBuf::for_bulk_reads((end - start) as usize);
                if kept > 0 {
                    let from = (start - self.start) as usize;
                    buf[..kept as usize].copy_from_slice(&self.data[from..from + kept as usize]);
                }
                let offset = self.ring.physical(start + kept);
                if start + kept < end {
                    self.dev
                        .read_at(&mut buf[kept as usize..(end - start) as usize], offset)
                        .map_err(|e| self.failed(offset, e))?;
                }
                self.data = Bytes::from_owner(buf).slice(..(end - start) as usize);
            }
        }
        self.start = start;
        self.read_ahead();
        Ok(())
    }

    /// Issues reads of the chunks after the held one until [`RECOVERY_READ_DEPTH`] are in flight or
    /// the limit is reached.
    fn read_ahead(&mut self) {
        let mut at = self
            .ahead
            .back()
            .map_or(self.start + self.data.len() as u64, |a| a.at + a.len);
        while self.ahead.len() < RECOVERY_READ_DEPTH && at < self.limit {
            let len = self
                .chunk
                .min(self.ring.lap_end(at) - at)
                .min(self.limit - at);
            let (dev, slack, offset) = (self.dev, self.slack, self.ring.physical(at));
            let read = self.scope.spawn(move || {
                let mut buf = AlignedBuf::for_bulk_reads((slack + len) as usize);
                dev.read_at(&mut buf[slack as usize..(slack + len) as usize], offset)?;
                Ok(buf)
            });
            self.ahead.push_back(Ahead { at, len, read });
            at += len;
        }
    }

    /// `len` bytes at `pos`, which [`Reader::view`] made available, sharing the chunk.
    pub fn bytes(&self, pos: u64, len: usize) -> Bytes {
        let at = (pos - self.start) as usize;
        self.data.slice(at..at + len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::device::MemDevice;
    use crate::block::header::HEADER_AREA;

    fn numbered_device(ring: Ring) -> MemDevice {
        let dev = MemDevice::new((HEADER_AREA + ring.size) as usize);
        let bytes: Vec<u8> = (0..ring.size).map(|i| (i / 8 % 251) as u8).collect();
        dev.poke(HEADER_AREA as usize, &bytes);
        dev
    }

    fn expected(ring: Ring, pos: u64, len: usize) -> Vec<u8> {
        (pos..pos + len as u64)
            .map(|p| (p % ring.size / 8 % 251) as u8)
            .collect()
    }

    #[test]
    fn views_across_many_chunks_and_a_lap_end_hold_the_device_bytes() {
        let ring = Ring {
            size: 5 * RECOVERY_READ_BYTES / 2,
        };
        let dev = numbered_device(ring);
        std::thread::scope(|scope| {
            let start = ring.size / 2 + 4096;
            let mut reader = Reader::new(&dev, scope, ring, 100_000, start + ring.size);
            let mut pos = start;
            let mut step = 0u64;
            while pos < start + ring.size - 200_000 {
                let want = 1 + step * 7919 % 100_000;
                let lap_left = ring.lap_end(pos) - pos;
                let view = reader.view(pos, want).unwrap();
                assert!(view.len() as u64 >= want.min(lap_left), "at {pos}");
                let n = (want.min(lap_left)) as usize;
                assert!(view[..n] == expected(ring, pos, n)[..], "at {pos}");
                assert_eq!(reader.bytes(pos, n).to_vec(), expected(ring, pos, n));
                pos += want.min(lap_left);
                step += 1;
            }
        });
    }

    #[test]
    fn a_view_never_reads_at_or_past_the_limit() {
        let ring = Ring {
            size: 4 * RECOVERY_READ_BYTES,
        };
        let dev = numbered_device(ring);
        std::thread::scope(|scope| {
            let limit = 3 * 4096;
            let mut reader = Reader::new(&dev, scope, ring, 4096, limit);
            let view = reader.view(0, 4096).unwrap();
            assert_eq!(view.len() as u64, limit);
            assert!(reader.ahead.is_empty());
        });
    }

    #[test]
    fn a_failed_read_is_an_error_naming_the_offset() {
        let ring = Ring {
            size: 2 * RECOVERY_READ_BYTES,
        };
        let dev = numbered_device(ring);
        dev.crash();
        std::thread::scope(|scope| {
            let mut reader = Reader::new(&dev, scope, ring, 4096, ring.size);
            let err = reader.view(8192, 16).unwrap_err();
            assert!(err.to_string().contains("at 16384"), "{err}");
        });
    }
}
