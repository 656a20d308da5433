//! Recovery: reading the segments back when a WAL opens.
//!
//! # Rules
//!
//! Segments are read in position order and every frame is validated (magic, crc, and a position
//! equal to its place). Then:
//!
//! 1. **Sealed segments** (all but the last) were fully synced before the writer moved on, so
//!    they must read as frames up to an end-of-data header followed only by zeros. A bad frame,
//!    or a non-zero byte after the end, is corruption.
//! 2. **Segments are contiguous**: each segment must start at the position where the data of the
//!    one before it ends; anything else means frames were lost.
//! 3. **The last segment** may end in a torn write. At the first bad frame (or end-of-data),
//!    the rest of the segment is scanned at frame alignment for frames that are valid at their
//!    place. One whose write batch starts after the bad frame proves the bad frame had been
//!    synced before that frame was written, so the bad frame is corruption. Otherwise the bad
//!    frame was still being written when the log stopped: a torn tail. It is cut by zeroing the
//!    rest of the segment (and syncing), so that new appends continue at that position and
//!    nothing stale lingers after them.
//!
//! Corruption fails the open with an error naming the file and the byte offset. A complete spare
//! left by an earlier run is adopted if it has the current segment size; other spares are
//! deleted.
//!
//! Each segment is read whole; the records handed to `replay` are slices of one shared buffer
//! per segment, cut down to the segment's data.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::ops::Range;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::segment::{self, SegmentFile};
use crate::frame::{self, Decoded, RawHeader};
use crate::{WalError, WalPosition, WalRecord, WalResult};

/// The largest segment base accepted (2^62): far beyond any real log, and low enough that
/// positions computed from it never overflow.
const MAX_BASE: u64 = 1 << 62;

/// What recovery found.
pub(super) struct Recovered {
    /// The segments, oldest first.
    pub segments: Vec<SegmentFile>,
    /// The records, in position order.
    pub records: Vec<WalRecord>,
    /// The last segment, where appends continue; `None` if there is no segment.
    pub active: Option<Active>,
    /// A complete spare left by an earlier run, ready for the next rollover.
    pub spare: Option<(File, PathBuf)>,
    /// The number for the next spare file.
    pub next_spare: u64,
}

/// The segment appends continue in.
pub(super) struct Active {
    /// Open for reading and writing.
    pub file: File,
    /// The position after its last valid frame.
    pub next_position: u64,
    /// Its size in bytes, rounded down to the frame alignment.
    pub capacity: u64,
}

/// The frames of one segment.
#[derive(Debug, Default, PartialEq, Eq)]
struct Scan {
    /// Each frame's position, body range in the segment and length.
    frames: Vec<(u64, Range<usize>, usize)>,
    /// The offset where the data ends.
    end: usize,
    /// Whether non-zero bytes after `end` must be cleared (a torn tail).
    torn: bool,
}

/// Reads and validates the segments in `dir`, cutting a torn tail, and adopts a complete spare
/// of `segment_bytes` bytes.
pub(super) fn recover(dir: &Path, segment_bytes: u64) -> WalResult<Recovered> {
    let listing =
        segment::list(dir).map_err(|e| WalError::failed(format!("list {}", dir.display()), e))?;
    let next_spare = listing.spares.last().map_or(0, |(n, _)| n + 1);
    let (spare, stale) = adopt_spare(listing.spares, segment_bytes)?;
    for path in stale.iter().chain(&listing.partial) {
        if let Err(e) = fs::remove_file(path) {
            if e.kind() != io::ErrorKind::NotFound {
                return Err(WalError::failed(format!("delete {}", path.display()), e));
            }
        }
    }
    let segments = listing.segments;

    let mut records = Vec::new();
    let mut active = None;
    let mut data_end: Option<u64> = None;
    for (i, seg) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        let name = seg.path.display();
        if seg.base > MAX_BASE {
            return Err(WalError::corruption(
                format!("{name} at byte 0"),
                format!("the segment's position {} is out of range", seg.base),
            ));
        }
        if let Some(end) = data_end {
            if seg.base != end {
                return Err(WalError::corruption(
                    format!("{name} at byte 0"),
                    format!(
                        "the segment starts at position {}, but the data before it ends at {end}",
                        seg.base
                    ),
                ));
            }
        }
        let io_failed = |what: &str, e: io::Error| WalError::failed(format!("{what} {name}"), e);
        let mut file = OpenOptions::new()
            .read(true)
            .write(last)
            .open(&seg.path)
            .map_err(|e| io_failed("open", e))?;
        let mut data = Vec::new();
        file.read_to_end(&mut data)
            .map_err(|e| io_failed("read", e))?;
        let capacity = data.len() as u64 & !(frame::ALIGN as u64 - 1);

        let scan = scan(seg, &data, last)?;
        if scan.torn {
            tracing::warn!(
                segment = %name,
                offset = scan.end,
                bytes = data.len() - scan.end,
                "file WAL: cutting a torn tail"
            );
            segment::zero_range(&file, scan.end as u64, data.len() as u64)
                .map_err(|e| io_failed("cut the torn tail of", e))?;
        }
        data_end = Some(seg.base + scan.end as u64);

        data.truncate(scan.end);
        if data.capacity() - data.len() > segment::ZERO_CHUNK {
            data.shrink_to_fit();
        }
        let data = Bytes::from(data);
        records.extend(
            scan.frames
                .into_iter()
                .map(|(position, body, len)| WalRecord {
                    position: WalPosition(position),
                    end: WalPosition(position + len as u64),
                    payload: data.slice(body),
                }),
        );
        if last {
            active = Some(Active {
                file,
                next_position: seg.base + scan.end as u64,
                capacity,
            });
        }
    }
    Ok(Recovered {
        segments,
        records,
        active,
        spare,
        next_spare,
    })
}

/// Picks the newest complete spare of the right size to reuse; the others are stale.
#[allow(clippy::type_complexity)]
fn adopt_spare(
    mut spares: Vec<(u64, PathBuf)>,
    segment_bytes: u64,
) -> WalResult<(Option<(File, PathBuf)>, Vec<PathBuf>)> {
    let mut adopted = None;
    if let Some((_, path)) = spares.pop() {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| WalError::failed(format!("open {}", path.display()), e))?;
        let len = file
            .metadata()
            .map_err(|e| WalError::failed(format!("stat {}", path.display()), e))?
            .len();
        if len == segment_bytes {
            adopted = Some((file, path));
        } else {
            spares.push((0, path));
        }
    }
    Ok((adopted, spares.into_iter().map(|(_, p)| p).collect()))
}

/// Validates the frames of one segment; see the module docs for the rules.
fn scan(seg: &SegmentFile, data: &[u8], last: bool) -> WalResult<Scan> {
    let mut frames = Vec::new();
    let mut end = 0;
    let bad = loop {
        match frame::decode(&data[end..], seg.base + end as u64) {
            Ok(Decoded::Frame(f)) => {
                let body = end + f.body_offset()..end + f.body_offset() + f.body.len();
                frames.push((f.position, body, f.len));
                end += f.len;
            }
            Ok(Decoded::End) => break None,
            Err(e) => break Some(e),
        }
    };
    let corrupt = |offset: usize, what: String| {
        WalError::corruption(format!("{} at byte {offset}", seg.path.display()), what)
    };
    let rest = &data[end..];
    if !last {
        if let Some(e) = bad {
            return Err(corrupt(end, format!("{e} in a sealed segment")));
        }
        if let Some(i) = rest.iter().position(|&b| b != 0) {
            return Err(corrupt(
                end + i,
                format!("non-zero bytes after the end of data at byte {end} of a sealed segment"),
            ));
        }
        return Ok(Scan {
            frames,
            end,
            torn: false,
        });
    }
    if let Some(later) = later_batch(seg.base, data, end) {
        let what = match bad {
            Some(e) => e.to_string(),
            None => "the data ends here".to_string(),
        };
        return Err(corrupt(
            end,
            format!("{what}, yet a frame of a later write batch follows at byte {later}"),
        ));
    }
    Ok(Scan {
        frames,
        end,
        torn: rest.iter().any(|&b| b != 0),
    })
}

/// The offset of the first frame after `bad` (at frame alignment, valid at its place) whose
/// write batch starts after the position of `bad`.
fn later_batch(base: u64, data: &[u8], bad: usize) -> Option<usize> {
    let bad_position = base + bad as u64;
    let mut at = bad + frame::ALIGN;
    while at < data.len() {
        let position = base + at as u64;
        let candidate = RawHeader::read(&data[at..]).is_some_and(|h| {
            h.magic == frame::FRAME_MAGIC
                && h.position == position
                && h.batch_start().is_some_and(|start| start > bad_position)
        });
        if candidate && matches!(frame::decode(&data[at..], position), Ok(Decoded::Frame(_))) {
            return Some(at);
        }
        at += frame::ALIGN;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(base: u64) -> SegmentFile {
        SegmentFile {
            base,
            path: PathBuf::from(segment::segment_name(base)),
        }
    }

    /// A segment of `len` bytes at `base` holding `batches` of bodies, each batch's frames
    /// carrying their delta from the batch's first frame. Returns the bytes and frame offsets.
    fn segment_bytes(base: u64, len: usize, batches: &[&[&[u8]]]) -> (Vec<u8>, Vec<usize>) {
        let mut data = Vec::new();
        let mut offsets = Vec::new();
        for batch in batches {
            let start = data.len();
            for body in *batch {
                offsets.push(data.len());
                let delta = (data.len() - start) as u32;
                frame::encode(base + data.len() as u64, delta, body, &mut data).unwrap();
            }
        }
        data.resize(len, 0);
        (data, offsets)
    }

    fn bodies<'a>(data: &'a [u8], scan: &Scan) -> Vec<&'a [u8]> {
        scan.frames
            .iter()
            .map(|(_, r, _)| &data[r.clone()])
            .collect()
    }

    #[test]
    fn a_clean_segment_scans_to_its_end_of_data() {
        let (data, offsets) = segment_bytes(64, 256, &[&[b"a", b"bb"], &[b"ccc"]]);
        for last in [false, true] {
            let scan = scan(&seg(64), &data, last).unwrap();
            assert_eq!(bodies(&data, &scan), [&b"a"[..], b"bb", b"ccc"]);
            assert_eq!(scan.end, offsets[2] + 32);
            assert!(!scan.torn);
            assert_eq!(scan.frames[1].0, 64 + offsets[1] as u64);
        }
    }

    #[test]
    fn garbage_after_the_last_batch_of_the_last_segment_is_a_torn_tail() {
        let (mut data, offsets) = segment_bytes(0, 256, &[&[b"a"], &[b"b"]]);
        data[offsets[1] + frame::HEADER_LEN] ^= 0xFF;
        let scan = scan(&seg(0), &data, true).unwrap();
        assert_eq!(bodies(&data, &scan), [&b"a"[..]]);
        assert_eq!(scan.end, offsets[1]);
        assert!(scan.torn);
    }

    #[test]
    fn a_bad_frame_with_a_valid_frame_of_its_own_batch_after_it_is_a_torn_tail() {
        let (mut data, offsets) = segment_bytes(0, 256, &[&[b"a"], &[b"b", b"c"]]);
        data[offsets[1]..offsets[2]].fill(0);
        let scan = scan(&seg(0), &data, true).unwrap();
        assert_eq!(bodies(&data, &scan), [&b"a"[..]]);
        assert!(scan.torn);
    }

    #[test]
    fn a_bad_frame_followed_by_a_later_batch_is_corruption() {
        let (mut data, offsets) = segment_bytes(0, 256, &[&[b"a"], &[b"b"], &[b"c"]]);
        data[offsets[1] + frame::HEADER_LEN] ^= 1;
        let err = scan(&seg(0), &data, true).unwrap_err();
        assert_eq!(err.kind(), crate::WalErrorKind::Corruption);
        let message = err.to_string();
        assert!(
            message.contains(&format!("at byte {}", offsets[1])),
            "{message}"
        );
        assert!(message.contains("crc mismatch"), "{message}");
    }

    #[test]
    fn a_zeroed_frame_followed_by_a_later_batch_is_corruption() {
        let (mut data, offsets) = segment_bytes(0, 256, &[&[b"a"], &[b"b"], &[b"c"]]);
        data[offsets[1]..offsets[2]].fill(0);
        let err = scan(&seg(0), &data, true).unwrap_err();
        assert!(err.to_string().contains("the data ends here"), "{err}");
    }

    #[test]
    fn any_bad_frame_in_a_sealed_segment_is_corruption() {
        let (mut data, offsets) = segment_bytes(0, 256, &[&[b"a"], &[b"b"]]);
        data[offsets[1] + 8] ^= 1;
        let err = scan(&seg(0), &data, false).unwrap_err();
        assert_eq!(err.kind(), crate::WalErrorKind::Corruption);
        assert!(err.to_string().contains(&format!("at byte {}", offsets[1])));
    }

    #[test]
    fn bytes_after_the_end_of_a_sealed_segment_are_corruption() {
        let (mut data, _) = segment_bytes(0, 256, &[&[b"a"]]);
        data[200] = 1;
        let err = scan(&seg(0), &data, false).unwrap_err();
        assert!(err.to_string().contains("at byte 200"), "{err}");
    }

    #[test]
    fn a_segment_named_past_the_position_range_is_corruption() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(segment::segment_name(u64::MAX - 8)),
            [0u8; 64],
        )
        .unwrap();
        let err = recover(dir.path(), 4096).err().unwrap();
        assert_eq!(err.kind(), crate::WalErrorKind::Corruption);
        assert!(err.to_string().contains("out of range"), "{err}");
    }

    #[test]
    fn a_frame_written_for_another_place_is_not_taken_as_a_later_batch() {
        // A valid frame copied to the wrong offset (its position field names another place).
        let (mut data, offsets) = segment_bytes(0, 256, &[&[b"a"], &[b"b"]]);
        let copy = data[offsets[1]..offsets[1] + 32].to_vec();
        data[offsets[1]..offsets[1] + 32].fill(0);
        data[128..160].copy_from_slice(&copy);
        let scan = scan(&seg(0), &data, true).unwrap();
        assert_eq!(scan.end, offsets[1]);
        assert!(scan.torn);
    }
}
