//! A read-only scan of a block WAL, for inspection tools.
//!
//! [`inspect`] opens the device or file read-only (no `O_DIRECT`, no lock, never a write: no
//! header is written and no torn tail is zeroed), decodes both header slots, and walks the ring
//! from the newest header's trim position the way recovery does (module `ring`): frames, the
//! zeros after a write's last frame up to the next 4 KiB boundary, padding markers at a lap's
//! end. Where recovery would stop (the *cut*), the scan looks on through the rest of the lap, at
//! frame alignment, for a frame valid at its place whose write batch starts past the cut:
//!
//! - found: the bytes at the cut had been durable and were damaged since. The scan records a
//!   [`RingEntry::Damaged`] and goes on from that frame, so that one bad frame does not hide the
//!   records after it.
//! - not found within [`LOOK_PAST`] bytes: the cut is the end of the log (a clean end, or a
//!   torn last write).
//!
//! The ring is read in chunks of [`READ_CHUNK`] bytes; the scan holds one chunk (or one frame,
//! when a frame is larger) at a time. A device that a writer is using may change under the scan:
//! the result is then a snapshot of no single moment.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use bytes::Bytes;

use super::device::BLOCK;
use super::header::{Header, HEADER_AREA};
use super::ring::{align_up, is_pad, Ring};
use crate::frame::{self, Decoded, RawHeader, FRAME_MAGIC};
use crate::{WalError, WalResult};

/// Bytes the scan reads at once.
pub const READ_CHUNK: usize = 8 << 20;

/// The largest frame the scan reads whole; a header claiming more is reported as damage.
const MAX_SCAN_FRAME: u64 = 256 << 20;

/// How far past a bad place the scan looks for a frame of a later write batch. Recovery looks
/// as far as the writes that can be in flight at once (four writes of up to `max_batch_bytes`
/// each, a few MiB with the defaults); this covers that with any write size a store uses,
/// without reading a whole large device after a torn tail.
pub const LOOK_PAST: u64 = 256 << 20;

const BLOCK_U64: u64 = BLOCK as u64;

/// One header slot as found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SlotState {
    /// All zeros: never written.
    Empty,
    /// A valid header.
    Valid(Header),
    /// Not a valid header, and why.
    Invalid(String),
}

/// What the scan found at one place of the ring.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RingEntry {
    /// A valid frame.
    Frame {
        /// Its logical position.
        position: u64,
        /// Where it lies on the device.
        device_offset: u64,
        /// Bytes it occupies, padding included.
        len: u64,
        /// The start of the write batch it was written in.
        batch_start: u64,
        /// Its body: the record as appended.
        body: Bytes,
    },
    /// A padding marker: the rest of the lap is unused, the log goes on at the next lap.
    Marker {
        /// Its logical position.
        position: u64,
        /// The first position of the next lap.
        next_lap: u64,
    },
    /// Bytes that are not a frame, followed by a frame of a later write batch: they had been
    /// durable and were damaged.
    Damaged {
        /// Where the damage starts.
        position: u64,
        /// Where that lies on the device.
        device_offset: u64,
        /// What is wrong with the bytes there.
        error: String,
        /// The position of the next valid frame, where the scan went on.
        resumes_at: u64,
    },
}

/// The result of a scan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inspection {
    /// The device's (or file's) length in bytes.
    pub device_bytes: u64,
    /// Header slots 0 and 1.
    pub slots: [SlotState; 2],
    /// The newest valid header (highest node epoch, then sequence), if any.
    pub newest: Option<Header>,
    /// Ring bytes, from the newest header's capacity (0 without a usable header).
    pub ring_bytes: u64,
    /// What the ring holds from the trim position on, in order.
    pub entries: Vec<RingEntry>,
    /// Where the log ends: the position after the last frame.
    pub end: u64,
    /// Why the scan stopped there: zeros, the end of the ring, or the fault of a torn write.
    pub end_reason: String,
    /// A fault that stopped the scan before the ring (no usable header), if any.
    pub fault: Option<String>,
}

impl Inspection {
    /// True when the scan found damage: a bad header slot next to a good one is not damage
    /// (a torn header write leaves one), but no usable header, or a damaged ring entry, is.
    pub fn is_corrupt(&self) -> bool {
        self.fault.is_some()
            || self
                .entries
                .iter()
                .any(|e| matches!(e, RingEntry::Damaged { .. }))
    }
}

/// Scans the block WAL at `path` without writing anything. Fails only when the path cannot be
/// opened or read; what is wrong inside is described in the [`Inspection`].
pub fn inspect(path: &Path) -> WalResult<Inspection> {
    let file = File::open(path)
        .map_err(|e| WalError::failed(format!("opening {} read-only", path.display()), e))?;
    let device_bytes =
        device_len(&file).map_err(|e| WalError::failed(format!("sizing {}", path.display()), e))?;
    let name = path.display().to_string();
    let mut inspection = Inspection {
        device_bytes,
        slots: [SlotState::Empty, SlotState::Empty],
        newest: None,
        ring_bytes: 0,
        entries: Vec::new(),
        end: 0,
        end_reason: String::new(),
        fault: None,
    };
    if device_bytes < HEADER_AREA {
        inspection.fault = Some(format!(
            "{device_bytes} bytes cannot hold the {HEADER_AREA}-byte header area"
        ));
        return Ok(inspection);
    }
    let mut slots = vec![0u8; 2 * BLOCK];
    file.read_exact_at(&mut slots, 0)
        .map_err(|e| WalError::failed(format!("reading the header of {name}"), e))?;
    for (i, slot) in slots.chunks_exact(BLOCK).enumerate() {
        inspection.slots[i] = match Header::decode(slot) {
            Ok(None) => SlotState::Empty,
            Ok(Some(h)) => SlotState::Valid(h),
            Err(e) => SlotState::Invalid(e),
        };
    }
    inspection.newest = inspection
        .slots
        .iter()
        .filter_map(|s| match s {
            SlotState::Valid(h) => Some(*h),
            _ => None,
        })
        .max_by_key(|h| (h.node_epoch, h.sequence));
    let Some(header) = inspection.newest else {
        inspection.fault = match inspection.slots {
            [SlotState::Empty, SlotState::Empty] => None,
            _ => Some("no valid header slot".to_string()),
        };
        inspection.end_reason = "no header: the WAL was never opened".to_string();
        return Ok(inspection);
    };
    if header.capacity > device_bytes
        || header.capacity % BLOCK_U64 != 0
        || header.capacity <= HEADER_AREA
        || header.trim % BLOCK_U64 != 0
    {
        inspection.fault = Some(format!(
            "header claims capacity {} and trim {} on a device of {device_bytes} bytes",
            header.capacity, header.trim
        ));
        return Ok(inspection);
    }
    let ring = Ring {
        size: header.capacity - HEADER_AREA,
    };
    inspection.ring_bytes = ring.size;
    let mut scan = Scan {
        reader: Reader::new(&file, &name, ring),
        ring,
        limit: header.trim + ring.size,
    };
    let (entries, end, reason) = scan.run(header.trim)?;
    inspection.entries = entries;
    inspection.end = end;
    inspection.end_reason = reason;
    Ok(inspection)
}

/// The length of a regular file or a block device.
fn device_len(file: &File) -> std::io::Result<u64> {
    use std::io::{Seek, SeekFrom};
    let len = file.metadata()?.len();
    if len > 0 {
        return Ok(len);
    }
    // A block device reports 0 in its metadata; its end is where seeking to the end lands.
    let mut handle = file.try_clone()?;
    handle.seek(SeekFrom::End(0))
}

struct Scan<'a> {
    reader: Reader<'a>,
    ring: Ring,
    /// One lap past the trim: the scan never goes further.
    limit: u64,
}

impl Scan<'_> {
    fn run(&mut self, trim: u64) -> WalResult<(Vec<RingEntry>, u64, String)> {
        let mut entries = Vec::new();
        let mut pos = trim;
        loop {
            if pos >= self.limit {
                return Ok((entries, self.limit, "the end of the ring".to_string()));
            }
            let to_boundary = align_up(pos) - pos;
            if to_boundary > 0 {
                let view = self.reader.view(pos, to_boundary)?;
                if view
                    .get(..to_boundary as usize)
                    .is_some_and(|b| b.iter().all(|&x| x == 0))
                {
                    pos = align_up(pos);
                    continue;
                }
            }
            let want = self.frame_want(pos)?;
            let view = self.reader.view(pos, want)?;
            let fault = match frame::decode(view, pos) {
                Ok(Decoded::Frame(f)) => {
                    entries.push(RingEntry::Frame {
                        position: pos,
                        device_offset: self.ring.physical(pos),
                        len: f.len as u64,
                        batch_start: f.batch_start(),
                        body: Bytes::copy_from_slice(f.body),
                    });
                    pos += f.len as u64;
                    continue;
                }
                _ if pos % BLOCK_U64 == 0 && is_pad(self.ring, pos, view) => {
                    let next_lap = self.ring.lap_end(pos);
                    entries.push(RingEntry::Marker {
                        position: pos,
                        next_lap,
                    });
                    pos = next_lap;
                    continue;
                }
                Ok(Decoded::End) => None,
                Err(e) => Some(e.to_string()),
            };
            match self.later_batch(pos)? {
                Some(resumes_at) => {
                    entries.push(RingEntry::Damaged {
                        position: pos,
                        device_offset: self.ring.physical(pos),
                        error: fault.unwrap_or_else(|| "zeros where data was durable".into()),
                        resumes_at,
                    });
                    pos = resumes_at;
                }
                None => {
                    let reason = match fault {
                        None => "zeros: the end of data".to_string(),
                        Some(e) => format!("a torn last write: {e}"),
                    };
                    return Ok((entries, pos, reason));
                }
            }
        }
    }

    /// How many bytes to look at for the frame at `pos`: the frame its header claims, within
    /// the lap and a sane bound, or just the header.
    fn frame_want(&mut self, pos: u64) -> WalResult<u64> {
        let room = self.ring.lap_end(pos) - pos;
        let header = self.reader.view(pos, frame::HEADER_LEN as u64)?;
        let claimed = RawHeader::read(header)
            .filter(|h| h.magic == FRAME_MAGIC)
            .map_or(frame::HEADER_LEN as u64, |h| {
                frame::frame_len(h.length as usize) as u64
            });
        Ok(claimed.min(room).min(MAX_SCAN_FRAME))
    }

    /// The position of the first frame after `bad`, valid at its place, whose write batch
    /// starts after `bad`, at most [`LOOK_PAST`] bytes on and within the scan.
    fn later_batch(&mut self, bad: u64) -> WalResult<Option<u64>> {
        let mut q = bad + frame::ALIGN as u64;
        let end = self.limit.min(bad.saturating_add(LOOK_PAST));
        while q < end {
            let head = self.reader.view(q, frame::HEADER_LEN as u64)?;
            let candidate = RawHeader::read(head).is_some_and(|h| {
                h.magic == FRAME_MAGIC
                    && h.position == q
                    && h.batch_start().is_some_and(|start| start > bad)
            });
            if candidate {
                let want = self.frame_want(q)?;
                if matches!(
                    frame::decode(self.reader.view(q, want)?, q),
                    Ok(Decoded::Frame(_))
                ) {
                    return Ok(Some(q));
                }
            }
            q += frame::ALIGN as u64;
        }
        Ok(None)
    }
}

/// Reads the ring in chunks that never cross a lap's end.
struct Reader<'a> {
    file: &'a File,
    name: &'a str,
    ring: Ring,
    buf: Vec<u8>,
    /// The logical position of `buf[0]`.
    start: u64,
}

impl<'a> Reader<'a> {
    fn new(file: &'a File, name: &'a str, ring: Ring) -> Reader<'a> {
        Reader {
            file,
            name,
            ring,
            buf: Vec::new(),
            start: 0,
        }
    }

    /// At least `want` bytes from `pos` (fewer only at the lap's end).
    fn view(&mut self, pos: u64, want: u64) -> WalResult<&[u8]> {
        let lap_end = self.ring.lap_end(pos);
        let end = (pos + want).min(lap_end);
        let held = self.start..self.start + self.buf.len() as u64;
        if pos < held.start || end > held.end {
            let len = (lap_end - pos).min((READ_CHUNK as u64).max(want));
            self.buf.resize(len as usize, 0);
            let offset = self.ring.physical(pos);
            self.file
                .read_exact_at(&mut self.buf, offset)
                .map_err(|e| {
                    WalError::failed(format!("reading {} at offset {offset}", self.name), e)
                })?;
            self.start = pos;
        }
        let from = (pos - self.start) as usize;
        Ok(&self.buf[from..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::{BlockWal, BlockWalOptions, Durability};
    use crate::Wal;

    fn options(create: u64) -> BlockWalOptions {
        BlockWalOptions {
            create_bytes: Some(create),
            max_record_bytes: 16 << 10,
            max_batch_bytes: 16 << 10,
            durability: Durability::Fdatasync,
            max_writes_per_sec: 0,
        }
    }

    fn write_wal(path: &Path, records: &[&[u8]]) {
        let wal = BlockWal::open(path, 3, 5, options(1 << 20)).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            for r in records {
                wal.append(Bytes::copy_from_slice(r)).await.unwrap();
            }
        });
    }

    fn frames(inspection: &Inspection) -> Vec<(u64, Bytes)> {
        inspection
            .entries
            .iter()
            .filter_map(|e| match e {
                RingEntry::Frame { position, body, .. } => Some((*position, body.clone())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_scan_lists_every_record_and_the_header_without_writing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal");
        write_wal(&path, &[b"one", b"two", b"three"]);
        let before = std::fs::read(&path).unwrap();
        let found = inspect(&path).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), before, "the scan wrote");
        let header = found.newest.unwrap();
        assert_eq!((header.node_id, header.node_epoch), (3, 5));
        let bodies: Vec<Bytes> = frames(&found).into_iter().map(|(_, b)| b).collect();
        assert_eq!(bodies, vec!["one", "two", "three"]);
        assert!(!found.is_corrupt(), "{found:?}");
        assert!(found.end_reason.contains("zeros"), "{}", found.end_reason);
    }

    #[test]
    fn a_damaged_frame_before_later_writes_is_reported_and_the_scan_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal");
        write_wal(&path, &[b"first", b"second", b"third"]);
        let found = inspect(&path).unwrap();
        let (first, _) = frames(&found)[0].clone();
        let mut bytes = std::fs::read(&path).unwrap();
        let at = (HEADER_AREA + first + frame::HEADER_LEN as u64) as usize;
        bytes[at] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let damaged = inspect(&path).unwrap();
        assert!(damaged.is_corrupt());
        assert!(matches!(
            damaged.entries[0],
            RingEntry::Damaged { position, .. } if position == first
        ));
        assert_eq!(frames(&damaged).len(), 2);
    }

    #[test]
    fn a_fresh_or_too_short_file_is_described_not_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let fresh = dir.path().join("fresh");
        std::fs::write(&fresh, vec![0u8; 4 * BLOCK]).unwrap();
        let found = inspect(&fresh).unwrap();
        assert!(found.newest.is_none() && !found.is_corrupt());
        let short = dir.path().join("short");
        std::fs::write(&short, b"hello").unwrap();
        assert!(inspect(&short).unwrap().is_corrupt());
        let junk = dir.path().join("junk");
        std::fs::write(&junk, vec![7u8; 4 * BLOCK]).unwrap();
        assert!(inspect(&junk).unwrap().is_corrupt());
    }
}
