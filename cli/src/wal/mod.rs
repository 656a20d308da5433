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

mod block;
mod file;
mod object;

use std::path::PathBuf;

use bytes::Bytes;
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
        WalCommand::File { dir } => file::dump(&dir)?,
        WalCommand::Block { path } => block::dump(&path)?,
        WalCommand::Object { store, node } => object::dump(&store, node).await?,
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
