//! `wal file DIR`: the segments of a file WAL, each read whole with plain reads; the WAL's
//! `LOCK` is never taken, nothing is deleted or zeroed.
//!
//! A segment is walked as recovery walks it (`objstream_wal::file`): frames from its first
//! byte, each at its own position, up to an all-zero header. A fault followed by a valid frame
//! of a later write batch is damage, and the walk goes on from that frame; in a sealed
//! segment (every one but the newest) any fault, or non-zero bytes after the end of data, is
//! damage; in the newest, a fault with nothing written after it is a torn last write.

use std::path::Path as FsPath;

use objstream_wal::frame::{self, Decoded, RawHeader, FRAME_MAGIC};

use super::{finish, Dump, Part, Row};
use crate::Failure;

/// The first frame after `bad`, valid at its place, of a write batch that starts past `bad`:
/// proof that the bytes at `bad` had been durable.
fn later_batch(data: &[u8], base: u64, bad: usize) -> Option<usize> {
    let bad_position = base + bad as u64;
    let mut at = bad + frame::ALIGN;
    while at < data.len() {
        let position = base + at as u64;
        let candidate = RawHeader::read(&data[at..]).is_some_and(|h| {
            h.magic == FRAME_MAGIC
                && h.position == position
                && h.batch_start().is_some_and(|s| s > bad_position)
        });
        if candidate && matches!(frame::decode(&data[at..], position), Ok(Decoded::Frame(_))) {
            return Some(at);
        }
        at += frame::ALIGN;
    }
    None
}

/// Walks the frames of one file segment (`data` starts at position `base`). In a sealed
/// segment (not the newest) every fault is damage; in the newest, a fault with no later batch
/// after it is a torn last write.
fn walk_segment(name: &str, data: &[u8], base: u64, sealed: bool) -> Part {
    let mut rows = Vec::new();
    let mut at = 0usize;
    let location = |at: usize| format!("{name}+{at}");
    let (end, fault) = loop {
        if at >= data.len() {
            break ("the end of the segment".to_string(), None);
        }
        let position = base + at as u64;
        let problem = match frame::decode(&data[at..], position) {
            Ok(Decoded::Frame(f)) => {
                rows.push(Row::frame(position, f.len as u64, location(at), f.body));
                at += f.len;
                continue;
            }
            Ok(Decoded::End) => None,
            Err(e) => Some(e.to_string()),
        };
        if let Some(next) = later_batch(data, base, at) {
            let what = problem.unwrap_or_else(|| "zeros where data was durable".into());
            rows.push(Row::damage(
                position,
                (next - at) as u64,
                location(at),
                what,
            ));
            at = next;
            continue;
        }
        let rest_dirty = data[at..].iter().position(|&b| b != 0);
        break match (problem, sealed, rest_dirty) {
            (None, _, None) => ("zeros: the end of data".to_string(), None),
            (None, true, Some(i)) => (
                format!("data ends at byte {at}"),
                Some(format!(
                    "non-zero bytes at byte {} after the end of data of a sealed segment",
                    at + i
                )),
            ),
            (None, false, Some(_)) => (
                format!("data ends at byte {at}; a torn last write follows"),
                None,
            ),
            (Some(e), true, _) => (
                format!("data ends at byte {at}"),
                Some(format!("{e} at byte {at} of a sealed segment")),
            ),
            (Some(e), false, _) => (format!("a torn last write at byte {at}: {e}"), None),
        };
    };
    Part {
        name: name.to_string(),
        info: format!("segment from position {base}, {} bytes", data.len()),
        rows,
        end,
        fault,
    }
}

/// Dumps the file WAL in `dir`.
pub(super) fn dump(dir: &FsPath) -> Result<Dump, Failure> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| Failure::Failed(format!("reading the directory {}: {e}", dir.display())))?;
    let mut segments = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Failure::Failed(format!("{}: {e}", dir.display())))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let base = name
            .strip_suffix(".wal")
            .filter(|n| n.len() == 20 && n.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(base) = base {
            segments.push((base, name, entry.path()));
        }
    }
    if segments.is_empty() {
        return Err(Failure::Failed(format!(
            "{} holds no file WAL segments ({{position:020}}.wal)",
            dir.display()
        )));
    }
    segments.sort();
    let last = segments.len() - 1;
    let mut parts = Vec::new();
    for (i, (base, name, path)) in segments.iter().enumerate() {
        let data = std::fs::read(path)
            .map_err(|e| Failure::Failed(format!("reading {}: {e}", path.display())))?;
        parts.push(walk_segment(name, &data, *base, i != last));
    }
    Ok(finish("file", dir.display().to_string(), parts))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(bodies: &[&[u8]], len: usize) -> Vec<u8> {
        let mut data = Vec::new();
        for body in bodies {
            // Each frame is a write batch of its own.
            frame::encode(data.len() as u64, 0, body, &mut data).unwrap();
        }
        data.resize(len, 0);
        data
    }

    fn record(i: u64) -> Vec<u8> {
        let mut r = vec![1u8];
        for v in [7u64, 1, i] {
            r.extend_from_slice(&v.to_le_bytes());
        }
        r.extend_from_slice(&1u32.to_le_bytes());
        r.extend_from_slice(&0i64.to_le_bytes());
        r.extend_from_slice(b"payload");
        r
    }

    #[test]
    fn a_clean_segment_lists_each_store_record() {
        let (a, b) = (record(0), record(1));
        let part = walk_segment("s", &segment(&[&a, &b], 4096), 0, false);
        assert_eq!(part.rows.len(), 2);
        assert_eq!(part.rows[1].record.as_ref().unwrap().base_offset, 1);
        assert!(part.fault.is_none() && !part.rows.iter().any(Row::is_bad));
    }

    #[test]
    fn a_bad_frame_before_a_later_batch_is_damage_and_the_dump_goes_on() {
        let (a, b) = (record(0), record(1));
        let mut data = segment(&[&a, &b], 4096);
        data[frame::HEADER_LEN] ^= 1;
        let part = walk_segment("s", &data, 0, false);
        assert!(part.rows[0].is_bad());
        assert_eq!(part.rows[1].record.as_ref().unwrap().base_offset, 1);
    }

    #[test]
    fn a_torn_last_frame_is_not_damage_but_in_a_sealed_segment_it_is() {
        let a = record(0);
        let mut data = segment(&[&a], 4096);
        let last = data.iter().rposition(|&b| b != 0).unwrap();
        data[last] ^= 1;
        let torn = walk_segment("s", &data, 0, false);
        assert!(torn.fault.is_none() && torn.rows.is_empty(), "{torn:?}");
        assert!(torn.end.contains("torn"));
        let sealed = walk_segment("s", &data, 0, true);
        assert!(sealed.fault.is_some());
    }
}
