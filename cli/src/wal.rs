//! `wal file|block|object`: a write-ahead log dumped record by record, read-only.
//!
//! | backend | read how | never does |
//! |---|---|---|
//! | file | each `{position:020}.wal` segment read whole with plain reads | take or touch the `LOCK` file, delete or zero a segment |
//! | block | [`objstream_wal::block::inspect`]: header slots and ring, read-only | write a header, zero a torn tail |
//! | object | LIST the slots of `{prefix}/wal/{node:020}`, GET each | write a fence or anything else |
//!
//! Frames are decoded with [`objstream_wal::frame`], object WAL slots with
//! [`objstream_wal::object::layout`], and each frame's body with the store's WAL record decoder
//! ([`objstream::wal_record::decode`]): stream, epoch, base offset, record count, payload.
//!
//! What counts as damage follows each backend's recovery: a frame that does not validate
//! followed by a valid frame of a later write batch (the bad bytes had been durable), anything
//! wrong in a sealed file segment or in a WAL object (objects are written whole). A torn last
//! write is shown but is not damage: nothing in it was acknowledged. The command exits 1 when
//! it found damage.

use std::path::{Path as FsPath, PathBuf};

use bytes::Bytes;
use objstream::keys::wal_prefix;
use objstream::NodeId;
use objstream_wal::block::inspect::{inspect, RingEntry, SlotState};
use objstream_wal::frame::{self, Decoded, RawHeader, FRAME_MAGIC};
use objstream_wal::object::layout::{decode_object, parse_slot_key, position_in, Header, Kind};
use serde::Serialize;

use crate::location::StoreArgs;
use crate::output::{print_json, Table};
use crate::{CmdResult, Failure};

/// Which WAL to dump.
#[derive(Debug, clap::Subcommand)]
pub enum WalCommand {
    /// A file WAL directory (segments `{position:020}.wal`). Does not take the WAL's lock.
    File {
        /// The WAL directory.
        dir: PathBuf,
    },
    /// A block WAL device or preallocated file. Never writes the header.
    Block {
        /// The device or file.
        path: PathBuf,
    },
    /// The object WAL of one node, in a store (`{prefix}/wal/{node:020}/{slot:020}`). Only
    /// LISTs and GETs: never writes a fence.
    Object {
        #[command(flatten)]
        store: StoreArgs,
        /// The node whose WAL to dump.
        node: u64,
    },
}

/// What the store wrote in a frame.
#[derive(Debug, Clone, Serialize)]
struct StoreRecord {
    stream: u64,
    epoch: u64,
    base_offset: u64,
    count: u32,
    payload_bytes: usize,
}

/// One row of the dump: a record, or a damaged stretch.
#[derive(Debug, Clone, Serialize)]
struct Row {
    /// Logical WAL position.
    position: u64,
    /// Bytes, padding included (for damage: up to where the dump went on).
    len: u64,
    /// `ok` for a valid frame, `bad` for damage.
    crc: &'static str,
    /// File and byte, device offset, or slot key.
    location: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    record: Option<StoreRecord>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

impl Row {
    fn frame(position: u64, len: u64, location: String, body: &[u8]) -> Row {
        let body = Bytes::copy_from_slice(body);
        let (record, error) = match objstream::wal_record::decode(&body, &location) {
            Ok(b) => (
                Some(StoreRecord {
                    stream: b.stream.0,
                    epoch: b.epoch.0,
                    base_offset: b.batch.base_offset.0,
                    count: b.batch.batch.count,
                    payload_bytes: b.batch.batch.payload.len(),
                }),
                None,
            ),
            Err(e) => (None, Some(e.to_string())),
        };
        Row {
            position,
            len,
            crc: "ok",
            location,
            record,
            error,
        }
    }

    fn damage(position: u64, len: u64, location: String, error: String) -> Row {
        Row {
            position,
            len,
            crc: "bad",
            location,
            record: None,
            error: Some(error),
        }
    }

    /// A damaged stretch, or a valid frame whose body is not a store record.
    fn is_bad(&self) -> bool {
        self.error.is_some()
    }
}

/// One part of the WAL (a segment, the block header, a slot) and what it said.
#[derive(Debug, Serialize)]
struct Part {
    name: String,
    info: String,
    rows: Vec<Row>,
    /// How the part ends (for a segment or ring: zeros, a torn write, its end).
    end: String,
    /// Damage outside any row (a bad object header, non-zero bytes after a sealed segment).
    #[serde(skip_serializing_if = "Option::is_none")]
    fault: Option<String>,
}

#[derive(Debug, Serialize)]
struct Dump {
    backend: &'static str,
    source: String,
    parts: Vec<Part>,
    records: usize,
    corrupt: bool,
}

/// Runs a `wal` subcommand.
pub async fn run(command: WalCommand, json: bool) -> CmdResult {
    let dump = match command {
        WalCommand::File { dir } => dump_file(&dir)?,
        WalCommand::Block { path } => dump_block(&path)?,
        WalCommand::Object { store, node } => dump_object(&store, node).await?,
    };
    if json {
        print_json(&dump)?;
    } else {
        print_dump(&dump);
    }
    if dump.corrupt {
        return Err(Failure::Reported);
    }
    Ok(())
}

fn finish(backend: &'static str, source: String, parts: Vec<Part>) -> Dump {
    let records = parts
        .iter()
        .flat_map(|p| &p.rows)
        .filter(|r| r.crc == "ok")
        .count();
    let corrupt = parts
        .iter()
        .any(|p| p.fault.is_some() || p.rows.iter().any(Row::is_bad));
    Dump {
        backend,
        source,
        parts,
        records,
        corrupt,
    }
}

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

fn dump_file(dir: &FsPath) -> Result<Dump, Failure> {
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

fn dump_block(path: &FsPath) -> Result<Dump, Failure> {
    let found = inspect(path)?;
    let slot = |s: &SlotState| match s {
        SlotState::Empty => "empty".to_string(),
        SlotState::Valid(h) => format!(
            "node {} epoch {} sequence {} trim {} capacity {}",
            h.node_id, h.node_epoch, h.sequence, h.trim, h.capacity
        ),
        SlotState::Invalid(e) => format!("invalid: {e}"),
    };
    let info = format!(
        "{} bytes; header slot 0: {}; slot 1: {}; ring {} bytes",
        found.device_bytes,
        slot(&found.slots[0]),
        slot(&found.slots[1]),
        found.ring_bytes
    );
    let mut rows = Vec::new();
    for entry in &found.entries {
        match entry {
            RingEntry::Frame {
                position,
                device_offset,
                len,
                body,
                ..
            } => rows.push(Row::frame(
                *position,
                *len,
                format!("device+{device_offset}"),
                body,
            )),
            RingEntry::Marker { .. } => {}
            RingEntry::Damaged {
                position,
                device_offset,
                error,
                resumes_at,
            } => rows.push(Row::damage(
                *position,
                resumes_at - position,
                format!("device+{device_offset}"),
                error.clone(),
            )),
        }
    }
    let part = Part {
        name: path.display().to_string(),
        info,
        rows,
        end: format!("{} at position {}", found.end_reason, found.end),
        fault: found.fault.clone(),
    };
    Ok(finish("block", path.display().to_string(), vec![part]))
}

async fn dump_object(args: &StoreArgs, node: u64) -> Result<Dump, Failure> {
    use futures::TryStreamExt;
    let store = args.open()?;
    let prefix = wal_prefix(&store.prefix, NodeId(node));
    let listed: Vec<object_store::ObjectMeta> = store
        .objects
        .list(Some(&prefix))
        .try_collect()
        .await
        .map_err(|e| Failure::Failed(format!("listing {prefix}: {e}")))?;
    let mut slots: Vec<(u64, object_store::path::Path)> = listed
        .into_iter()
        .filter_map(|m| parse_slot_key(&prefix, &m.location).map(|s| (s, m.location)))
        .collect();
    slots.sort();
    let mut parts = Vec::new();
    for (slot, key) in slots {
        let Some(bytes) = crate::manifest_log::get(&store, &key).await? else {
            continue; // Trimmed between the LIST and the GET.
        };
        parts.push(object_slot(slot, &key, &bytes));
    }
    Ok(finish("object", prefix.to_string(), parts))
}

/// One object WAL slot: its header, then its frames. Objects are written whole, so any fault
/// is damage.
fn object_slot(slot: u64, key: &object_store::path::Path, bytes: &Bytes) -> Part {
    let mut part = Part {
        name: key.to_string(),
        info: String::new(),
        rows: Vec::new(),
        end: String::new(),
        fault: None,
    };
    let header = match Header::decode(bytes, key, slot) {
        Ok(h) => h,
        Err(e) => {
            part.info = format!("slot {slot}");
            part.fault = Some(e.to_string());
            return part;
        }
    };
    let w = header.writer;
    part.info = format!(
        "slot {slot}: {} owner {} epoch {} written by node {} at epoch {}, {} records",
        match w.kind {
            Kind::Data => "data",
            Kind::Fence => "FENCE",
        },
        w.owner,
        w.epoch,
        w.actor,
        w.actor_epoch,
        header.record_count
    );
    let mut at = objstream_wal::object::HEADER_LEN;
    while at < bytes.len() {
        let position = position_in(slot, at).0;
        match frame::decode(&bytes[at..], position) {
            Ok(Decoded::Frame(f)) => {
                part.rows
                    .push(Row::frame(position, f.len as u64, format!("+{at}"), f.body));
                at += f.len;
            }
            Ok(Decoded::End) => {
                part.rows.push(Row::damage(
                    position,
                    (bytes.len() - at) as u64,
                    format!("+{at}"),
                    "zeros inside the object body".into(),
                ));
                break;
            }
            Err(e) => {
                part.rows.push(Row::damage(
                    position,
                    (bytes.len() - at) as u64,
                    format!("+{at}"),
                    e.to_string(),
                ));
                break;
            }
        }
    }
    // The whole-object check (lengths, record count) is the WAL's own.
    part.end = match decode_object(bytes, key, slot) {
        Ok(_) => "the end of the object".into(),
        Err(e) => {
            if !part.rows.iter().any(Row::is_bad) {
                part.fault = Some(e.to_string());
            }
            "damaged".into()
        }
    };
    part
}

fn print_dump(dump: &Dump) {
    println!("{} WAL at {}", dump.backend, dump.source);
    for part in &dump.parts {
        println!();
        println!("{}: {}", part.name, part.info);
        if let Some(fault) = &part.fault {
            println!("  CORRUPT: {fault}");
        }
        if !part.rows.is_empty() {
            let mut table = Table::new(&[
                "POSITION", "LEN", "CRC", "STREAM", "EPOCH", "BASE", "COUNT", "PAYLOAD", "WHERE",
                "NOTE",
            ]);
            for r in &part.rows {
                let rec = |f: fn(&StoreRecord) -> String| r.record.as_ref().map_or("-".into(), f);
                table.row(vec![
                    r.position.to_string(),
                    r.len.to_string(),
                    r.crc.to_string(),
                    rec(|x| x.stream.to_string()),
                    rec(|x| x.epoch.to_string()),
                    rec(|x| x.base_offset.to_string()),
                    rec(|x| x.count.to_string()),
                    rec(|x| x.payload_bytes.to_string()),
                    r.location.clone(),
                    r.error.clone().unwrap_or_default(),
                ]);
            }
            for line in table.render().lines() {
                println!("  {line}");
            }
        }
        if !part.end.is_empty() {
            println!("  end: {}", part.end);
        }
    }
    println!();
    println!(
        "{} records in {} parts; {}",
        dump.records,
        dump.parts.len(),
        if dump.corrupt {
            "CORRUPTION FOUND"
        } else {
            "no damage"
        }
    );
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
