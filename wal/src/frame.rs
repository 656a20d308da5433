//! The record frame shared by every WAL backend.
//!
//! # Byte layout
//!
//! A frame is a fixed 24-byte header, the body, and zero padding up to the next multiple of 8
//! bytes. All integers are little-endian.
//!
//! ```text
//! offset  size  field
//!      0     4  magic        FRAME_MAGIC, never zero
//!      4     4  crc32c       over bytes 8..24 of the header, then the body
//!      8     8  position     the frame's logical position: where it starts in the WAL's
//!                            address space, which only grows
//!     16     4  length       body bytes
//!     20     4  batch_delta  position minus the start of the frame's write batch: the point
//!                            below which the log was already durable when it was written
//!     24     length  body
//!      .     0..=7   zero padding to an 8-byte boundary (not covered by the crc)
//! ```
//!
//! # Why each field is there
//!
//! - An all-zero header marks the end of data: backends write frames into zeroed space, so the
//!   first zero header after the last frame is where the log ends. The magic is never zero, so
//!   a real frame never looks like the end.
//! - The position ties a frame to its place. Bytes left over from an earlier use of the same
//!   space (a ring buffer's previous lap, a reused file) carry another position and never
//!   validate, even with a good crc. The crc covers the position, so a frame cannot be moved.
//! - `batch_delta` lets recovery tell a torn tail from corruption. Everything before a frame's
//!   batch start had been made durable by a completed sync before the frame was written (with
//!   one sync at a time, the batch start is simply the first frame of the batch that sync
//!   covers). So when a valid frame whose batch starts *beyond* a bad frame follows it, the bad
//!   frame was durable once and has since been damaged: that is corruption. When no such frame
//!   follows, the bad frame was still being written when the log stopped: a torn tail.
//!
//! # Decoding untrusted bytes
//!
//! [`decode`] never panics and never allocates: it checks the magic, then that the claimed
//! length fits both [`MAX_BODY_LEN`] and the buffer, then the crc, then the position, and hands
//! back the body as a slice of the input.

use std::fmt;
use std::mem::size_of;

/// The magic number that starts every frame ("OSWF" read as little-endian bytes). Never zero.
pub const FRAME_MAGIC: u32 = u32::from_le_bytes(*b"OSWF");

const MAGIC_AT: usize = 0;
const CRC_AT: usize = MAGIC_AT + size_of::<u32>();
const POSITION_AT: usize = CRC_AT + size_of::<u32>();
const LENGTH_AT: usize = POSITION_AT + size_of::<u64>();
const BATCH_DELTA_AT: usize = LENGTH_AT + size_of::<u32>();

/// Bytes in a frame header.
pub const HEADER_LEN: usize = BATCH_DELTA_AT + size_of::<u32>();

/// Frames start and end on multiples of this many bytes.
pub const ALIGN: usize = 8;

/// The largest body a frame may carry (1 GiB). Backends set lower limits of their own.
pub const MAX_BODY_LEN: usize = 1 << 30;

const _: () = assert!(HEADER_LEN == 24);
const _: () = assert!(HEADER_LEN % ALIGN == 0);

/// The bytes a frame with a body of `body_len` bytes occupies, padding included.
pub const fn frame_len(body_len: usize) -> usize {
    (HEADER_LEN + body_len).div_ceil(ALIGN) * ALIGN
}

/// Why bytes are not a valid frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// Fewer bytes than a header remain, and they are not all zero.
    ShortHeader {
        /// Bytes available.
        available: usize,
    },
    /// The header does not start with [`FRAME_MAGIC`].
    BadMagic {
        /// The magic found.
        found: u32,
    },
    /// The body length is larger than [`MAX_BODY_LEN`].
    TooLong {
        /// The length in the header.
        length: u32,
    },
    /// The frame runs past the end of the buffer.
    PastEnd {
        /// The frame's length, padding included.
        frame_len: usize,
        /// Bytes available.
        available: usize,
    },
    /// The crc32c does not match the header and body.
    BadCrc {
        /// The crc stored in the header.
        stored: u32,
        /// The crc of the bytes.
        computed: u32,
    },
    /// The frame is intact but belongs at another position.
    WrongPosition {
        /// Where the frame was read.
        expected: u64,
        /// The position in its header.
        found: u64,
    },
    /// The batch delta points before position zero.
    BadBatchDelta {
        /// The frame's position.
        position: u64,
        /// The batch delta in its header.
        batch_delta: u32,
    },
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            FrameError::ShortHeader { available } => {
                write!(f, "{available} non-zero bytes, too few for a frame header")
            }
            FrameError::BadMagic { found } => write!(f, "bad frame magic {found:#010x}"),
            FrameError::TooLong { length } => {
                write!(f, "frame length {length} is over the limit {MAX_BODY_LEN}")
            }
            FrameError::PastEnd {
                frame_len,
                available,
            } => write!(
                f,
                "frame of {frame_len} bytes runs past the {available} bytes available"
            ),
            FrameError::BadCrc { stored, computed } => write!(
                f,
                "crc mismatch: stored {stored:#010x}, computed {computed:#010x}"
            ),
            FrameError::WrongPosition { expected, found } => {
                write!(f, "frame claims position {found}, read at {expected}")
            }
            FrameError::BadBatchDelta {
                position,
                batch_delta,
            } => write!(
                f,
                "batch delta {batch_delta} reaches before position 0 from {position}"
            ),
        }
    }
}

impl std::error::Error for FrameError {}

/// A valid frame, borrowed from the buffer it was decoded from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    /// The frame's logical position.
    pub position: u64,
    /// The distance back from this frame to the start of its write batch.
    pub batch_delta: u32,
    /// The body.
    pub body: &'a [u8],
    /// Bytes the frame occupies, padding included: the next frame starts this far on.
    pub len: usize,
}

impl Frame<'_> {
    /// The start of the write batch this frame was written in: everything before it was
    /// durable when the frame was written.
    pub fn batch_start(&self) -> u64 {
        // `decode` rejects deltas larger than the position.
        self.position - u64::from(self.batch_delta)
    }

    /// Where the body starts, as an offset from the start of the frame.
    pub fn body_offset(&self) -> usize {
        HEADER_LEN
    }
}

/// A header's fields as stored, before any check. Recovery uses it to skip cheaply over bytes
/// that cannot be a frame at their place before paying for a crc.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawHeader {
    /// The magic number.
    pub magic: u32,
    /// The stored crc32c.
    pub crc: u32,
    /// The claimed position.
    pub position: u64,
    /// The claimed body length.
    pub length: u32,
    /// The claimed batch delta.
    pub batch_delta: u32,
}

impl RawHeader {
    /// Reads the header at the start of `buf`; `None` if fewer than [`HEADER_LEN`] bytes.
    pub fn read(buf: &[u8]) -> Option<RawHeader> {
        let header = buf.get(..HEADER_LEN)?;
        Some(RawHeader {
            magic: read_u32(header, MAGIC_AT),
            crc: read_u32(header, CRC_AT),
            position: read_u64(header, POSITION_AT),
            length: read_u32(header, LENGTH_AT),
            batch_delta: read_u32(header, BATCH_DELTA_AT),
        })
    }

    /// The start of the claimed write batch, if the delta does not reach below zero.
    pub fn batch_start(&self) -> Option<u64> {
        self.position.checked_sub(u64::from(self.batch_delta))
    }
}

/// What the bytes at a position hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A valid frame.
    Frame(Frame<'a>),
    /// An all-zero header (or an empty buffer, or fewer than [`HEADER_LEN`] zero bytes): no data
    /// from here on.
    End,
}

/// Appends the frame of `body` at `position` to `out`, padding included, and returns the bytes
/// it added ([`frame_len`] of the body length).
///
/// `batch_delta` is `position` minus the start of the write batch (see the module docs). Fails
/// with [`FrameError::TooLong`] when the body is longer than [`MAX_BODY_LEN`] and with
/// [`FrameError::BadBatchDelta`] when the delta is larger than the position; `out` is unchanged
/// then.
pub fn encode(
    position: u64,
    batch_delta: u32,
    body: &[u8],
    out: &mut Vec<u8>,
) -> Result<usize, FrameError> {
    if body.len() > MAX_BODY_LEN {
        return Err(FrameError::TooLong {
            length: u32::try_from(body.len()).unwrap_or(u32::MAX),
        });
    }
    if u64::from(batch_delta) > position {
        return Err(FrameError::BadBatchDelta {
            position,
            batch_delta,
        });
    }
    // Fits: MAX_BODY_LEN < u32::MAX.
    let length = body.len() as u32;
    let total = frame_len(body.len());
    let start = out.len();
    out.reserve(total);
    out.extend_from_slice(&FRAME_MAGIC.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&position.to_le_bytes());
    out.extend_from_slice(&length.to_le_bytes());
    out.extend_from_slice(&batch_delta.to_le_bytes());
    out.extend_from_slice(body);
    out.resize(start + total, 0);
    let crc = checksum(
        &out[start + POSITION_AT..start + HEADER_LEN],
        &out[start + HEADER_LEN..start + HEADER_LEN + body.len()],
    );
    out[start + CRC_AT..start + POSITION_AT].copy_from_slice(&crc.to_le_bytes());
    Ok(total)
}

/// Reads the frame at the start of `buf`, which was found at `expected_position`.
///
/// Returns [`Decoded::End`] for an all-zero header, [`Decoded::Frame`] for a valid frame at
/// `expected_position`, and an error saying what is wrong otherwise. Never panics and never
/// allocates, whatever the bytes.
pub fn decode(buf: &[u8], expected_position: u64) -> Result<Decoded<'_>, FrameError> {
    let Some(header) = RawHeader::read(buf) else {
        return if buf.iter().all(|&b| b == 0) {
            Ok(Decoded::End)
        } else {
            Err(FrameError::ShortHeader {
                available: buf.len(),
            })
        };
    };
    if header.magic != FRAME_MAGIC {
        return if buf[..HEADER_LEN].iter().all(|&b| b == 0) {
            Ok(Decoded::End)
        } else {
            Err(FrameError::BadMagic {
                found: header.magic,
            })
        };
    }
    let body_len = header.length as usize;
    if body_len > MAX_BODY_LEN {
        return Err(FrameError::TooLong {
            length: header.length,
        });
    }
    let total = frame_len(body_len);
    if total > buf.len() {
        return Err(FrameError::PastEnd {
            frame_len: total,
            available: buf.len(),
        });
    }
    let body = &buf[HEADER_LEN..HEADER_LEN + body_len];
    let computed = checksum(&buf[POSITION_AT..HEADER_LEN], body);
    if header.crc != computed {
        return Err(FrameError::BadCrc {
            stored: header.crc,
            computed,
        });
    }
    let (position, batch_delta) = (header.position, header.batch_delta);
    if position != expected_position {
        return Err(FrameError::WrongPosition {
            expected: expected_position,
            found: position,
        });
    }
    if header.batch_start().is_none() {
        return Err(FrameError::BadBatchDelta {
            position,
            batch_delta,
        });
    }
    Ok(Decoded::Frame(Frame {
        position,
        batch_delta,
        body,
        len: total,
    }))
}

fn checksum(header_rest: &[u8], body: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(header_rest), body)
}

fn read_u32(header: &[u8], at: usize) -> u32 {
    let mut b = [0; size_of::<u32>()];
    b.copy_from_slice(&header[at..at + size_of::<u32>()]);
    u32::from_le_bytes(b)
}

fn read_u64(header: &[u8], at: usize) -> u64 {
    let mut b = [0; size_of::<u64>()];
    b.copy_from_slice(&header[at..at + size_of::<u64>()]);
    u64::from_le_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn encoded(position: u64, batch_delta: u32, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode(position, batch_delta, body, &mut out).unwrap();
        out
    }

    fn frame(buf: &[u8], position: u64) -> Frame<'_> {
        match decode(buf, position).unwrap() {
            Decoded::Frame(f) => f,
            Decoded::End => panic!("expected a frame"),
        }
    }

    #[test]
    fn encoded_bytes_match_the_documented_layout() {
        let out = encoded(0x0102_0304_0506_0708, 16, b"hello");
        let crc = crc32c::crc32c_append(crc32c::crc32c(&out[8..24]), b"hello");
        let mut expected = Vec::new();
        expected.extend_from_slice(b"OSWF");
        expected.extend_from_slice(&crc.to_le_bytes());
        expected.extend_from_slice(&[8, 7, 6, 5, 4, 3, 2, 1]);
        expected.extend_from_slice(&[5, 0, 0, 0]);
        expected.extend_from_slice(&[16, 0, 0, 0]);
        expected.extend_from_slice(b"hello");
        expected.extend_from_slice(&[0, 0, 0]);
        assert_eq!(out, expected);
        assert_eq!(out.len(), frame_len(5));
        assert_eq!(out.len(), 32);
    }

    #[test]
    fn the_crc_of_a_fixed_frame_never_changes() {
        // Pins the format: a change here breaks every WAL already on disk.
        let out = encoded(4096, 8, b"objstream");
        assert_eq!(&out[4..8], &0xEE34_CB99u32.to_le_bytes());
    }

    #[test]
    fn frames_are_padded_to_eight_bytes() {
        for len in 0..40 {
            let out = encoded(0, 0, &vec![0xAB; len]);
            assert_eq!(out.len() % ALIGN, 0);
            assert_eq!(out.len(), frame_len(len));
            assert!(out.len() >= HEADER_LEN + len && out.len() < HEADER_LEN + len + ALIGN);
        }
    }

    #[test]
    fn a_frame_decodes_to_its_body_and_fields() {
        let mut buf = encoded(800, 24, b"payload");
        buf.extend_from_slice(&[0; 64]);
        let f = frame(&buf, 800);
        assert_eq!(f.body, b"payload");
        assert_eq!(f.position, 800);
        assert_eq!(f.batch_delta, 24);
        assert_eq!(f.batch_start(), 776);
        assert_eq!(f.len, 32);
        assert_eq!(
            &buf[f.body_offset()..f.body_offset() + f.body.len()],
            b"payload"
        );
    }

    #[test]
    fn an_empty_body_is_a_valid_frame() {
        let buf = encoded(8, 0, b"");
        let f = frame(&buf, 8);
        assert!(f.body.is_empty());
        assert_eq!(f.len, HEADER_LEN);
    }

    #[test]
    fn zero_bytes_mark_the_end_of_data() {
        assert_eq!(decode(&[], 0), Ok(Decoded::End));
        assert_eq!(decode(&[0; 8], 0), Ok(Decoded::End));
        assert_eq!(decode(&[0; HEADER_LEN], 0), Ok(Decoded::End));
        assert_eq!(decode(&[0; 4096], 123), Ok(Decoded::End));
    }

    #[test]
    fn a_short_non_zero_tail_is_invalid() {
        assert_eq!(
            decode(&[0, 0, 1, 0], 0),
            Err(FrameError::ShortHeader { available: 4 })
        );
    }

    #[test]
    fn a_zero_magic_with_non_zero_fields_is_invalid() {
        let mut buf = encoded(0, 0, b"x");
        buf[..4].copy_from_slice(&[0; 4]);
        assert_eq!(decode(&buf, 0), Err(FrameError::BadMagic { found: 0 }));
    }

    #[test]
    fn a_flipped_bit_anywhere_in_header_or_body_is_detected() {
        let buf = encoded(64, 8, b"some body bytes");
        let covered = HEADER_LEN + b"some body bytes".len();
        for byte in 0..covered {
            for bit in 0..8 {
                let mut bad = buf.clone();
                bad[byte] ^= 1 << bit;
                assert!(decode(&bad, 64).is_err(), "byte {byte} bit {bit}");
            }
        }
    }

    #[test]
    fn a_frame_read_at_another_position_is_rejected() {
        let buf = encoded(64, 0, b"abc");
        assert_eq!(
            decode(&buf, 72),
            Err(FrameError::WrongPosition {
                expected: 72,
                found: 64
            })
        );
    }

    #[test]
    fn a_length_past_the_buffer_is_rejected_before_the_crc() {
        let buf = encoded(0, 0, &[7; 100]);
        assert_eq!(
            decode(&buf[..64], 0),
            Err(FrameError::PastEnd {
                frame_len: frame_len(100),
                available: 64
            })
        );
    }

    #[test]
    fn a_length_over_the_limit_is_rejected() {
        let mut buf = encoded(0, 0, b"abc");
        buf[LENGTH_AT..LENGTH_AT + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            decode(&buf, 0),
            Err(FrameError::TooLong { length: u32::MAX })
        );
    }

    #[test]
    fn encode_refuses_a_batch_delta_before_position_zero() {
        let mut out = vec![1, 2, 3];
        assert_eq!(
            encode(8, 16, b"x", &mut out),
            Err(FrameError::BadBatchDelta {
                position: 8,
                batch_delta: 16
            })
        );
        assert_eq!(out, vec![1, 2, 3]);
    }

    #[test]
    fn encode_appends_after_existing_bytes() {
        let mut out = Vec::new();
        let a = encode(0, 0, b"first", &mut out).unwrap();
        let b = encode(a as u64, a as u32, b"second", &mut out).unwrap();
        assert_eq!(out.len(), a + b);
        assert_eq!(frame(&out, 0).body, b"first");
        let second = frame(&out[a..], a as u64);
        assert_eq!(second.body, b"second");
        assert_eq!(second.batch_start(), 0);
    }

    proptest! {
        #[test]
        fn any_frame_round_trips(
            position in 0u64..(1 << 60),
            delta in any::<u32>(),
            body in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let delta = u32::try_from(u64::from(delta).min(position)).unwrap();
            let buf = encoded(position, delta, &body);
            let f = frame(&buf, position);
            prop_assert_eq!(f.body, &body[..]);
            prop_assert_eq!(f.batch_delta, delta);
            prop_assert_eq!(f.len, buf.len());
        }

        #[test]
        fn decode_never_panics_on_arbitrary_bytes(
            bytes in proptest::collection::vec(any::<u8>(), 0..200),
            position in any::<u64>(),
        ) {
            let _ = decode(&bytes, position);
        }

        #[test]
        fn decode_never_panics_on_a_damaged_frame(
            body in proptest::collection::vec(any::<u8>(), 0..100),
            at in any::<prop::sample::Index>(),
            value in any::<u8>(),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut buf = encoded(1024, 0, &body);
            let i = at.index(buf.len());
            buf[i] = value;
            let end = cut.index(buf.len() + 1);
            let _ = decode(&buf[..end], 1024);
        }
    }
}
