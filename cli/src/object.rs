//! `object`: one data object laid open, and the object check `verify` shares.
//!
//! The object is read whole, then decoded with the store's own decoders: [`decode_tail`] for
//! the footer and index, [`decode_block`] for each block (crc32c, header against index, batch
//! framing). Only the block header fields the decoder does not hand out (codec, batch count,
//! stored length) are read here, from their places in the 48-byte header
//! (`src/format/block.rs`), and only for display: whether a block is good is the decoder's
//! verdict.

use std::path::Path as FsPath;

use bytes::Bytes;
use objstream::format::{decode_block, decode_tail, IndexEntry, TailDecode, BLOCK_HEADER_LEN};
use objstream::keys::object_path;
use objstream::ObjectId;
use serde::Serialize;

use crate::location::S3Args;
use crate::manifest_log;
use crate::output::{print_json, Table};
use crate::{CmdResult, Failure};

/// Where the block header keeps the codec byte, the batch count and the stored length.
const CODEC_AT: usize = 4;
const BATCH_COUNT_AT: usize = 32;
const STORED_LEN_AT: usize = 40;

/// The footer as shown.
#[derive(Debug, Clone, Serialize)]
pub struct FooterView {
    /// Where the index starts.
    pub index_position: u64,
    /// The index's length.
    pub index_len: u32,
    /// The format version.
    pub version: u16,
}

/// One block: what the index says, what the header says, and the decoder's verdict.
#[derive(Debug, Clone, Serialize)]
pub struct BlockView {
    /// The stream.
    pub stream: u64,
    /// First offset.
    pub start: u64,
    /// One past the last offset.
    pub end: u64,
    /// Records.
    pub records: u64,
    /// Where the block starts in the object.
    pub position: u64,
    /// Header and stored body.
    pub size: u32,
    /// Body length once decompressed.
    pub raw_len: u32,
    /// `none`, `zstd`, or the unknown code.
    pub codec: String,
    /// Body length as stored (from the header).
    pub stored_len: Option<u32>,
    /// Batches (from the header).
    pub batches: Option<u32>,
    /// Batches the decoder found, when the block decoded.
    pub decoded_batches: Option<usize>,
    /// True when the block decoded: crc32c, header and framing all good.
    pub ok: bool,
    /// What is wrong, when it is not.
    pub error: Option<String>,
}

/// An object's check.
#[derive(Debug, Clone, Serialize)]
pub struct ObjectReport {
    /// The object id.
    pub id: u64,
    /// Where it was read from.
    pub location: String,
    /// Its size.
    pub size: u64,
    /// Its footer, when it decoded.
    pub footer: Option<FooterView>,
    /// Its blocks, as the index lists them.
    pub blocks: Vec<BlockView>,
    /// Why the footer or index did not decode.
    pub error: Option<String>,
}

impl ObjectReport {
    /// True when nothing is wrong.
    pub fn is_ok(&self) -> bool {
        self.error.is_none() && self.blocks.iter().all(|b| b.ok)
    }
}

/// Checks every byte of object `id`, given whole.
pub fn check(id: ObjectId, location: String, bytes: &Bytes) -> ObjectReport {
    let size = bytes.len() as u64;
    let mut report = ObjectReport {
        id: id.0,
        location,
        size,
        footer: None,
        blocks: Vec::new(),
        error: None,
    };
    let (footer, index) = match decode_tail(id, size, bytes) {
        Ok(TailDecode::Complete { footer, index }) => (footer, index),
        Ok(TailDecode::NeedIndex { .. }) => {
            report.error = Some("the index lies outside the object".into());
            return report;
        }
        Err(e) => {
            report.error = Some(e.to_string());
            return report;
        }
    };
    report.footer = Some(FooterView {
        index_position: footer.index_position,
        index_len: footer.index_len,
        version: footer.version,
    });
    for entry in index.entries() {
        report.blocks.push(check_block(id, entry, bytes));
    }
    report
}

fn check_block(id: ObjectId, entry: &IndexEntry, bytes: &Bytes) -> BlockView {
    let range = entry.byte_range();
    let block = usize::try_from(range.start)
        .ok()
        .zip(usize::try_from(range.end).ok())
        .and_then(|(a, b)| bytes.get(a..b).map(|_| bytes.slice(a..b)));
    let header = block
        .as_ref()
        .and_then(|b| b.first_chunk::<BLOCK_HEADER_LEN>().copied());
    let u32_at = |h: &[u8; BLOCK_HEADER_LEN], at: usize| {
        u32::from_le_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]])
    };
    let mut view = BlockView {
        stream: entry.stream.0,
        start: entry.start.0,
        end: entry.end.0,
        records: entry.record_count(),
        position: entry.position,
        size: entry.size,
        raw_len: entry.raw_len,
        codec: header.map_or("?".into(), |h| match h[CODEC_AT] {
            0 => "none".into(),
            1 => "zstd".into(),
            other => format!("unknown({other})"),
        }),
        stored_len: header.map(|h| u32_at(&h, STORED_LEN_AT)),
        batches: header.map(|h| u32_at(&h, BATCH_COUNT_AT)),
        decoded_batches: None,
        ok: false,
        error: None,
    };
    match block {
        None => view.error = Some(format!("the block {range:?} lies outside the object")),
        Some(block) => match decode_block(id, entry, block) {
            Ok(batches) => {
                view.ok = true;
                view.decoded_batches = Some(batches.len());
            }
            Err(e) => view.error = Some(e.to_string()),
        },
    }
    view
}

/// `object URL ID` or `object PATH`.
pub async fn run(target: &str, id: Option<u64>, s3: &S3Args, json: bool) -> CmdResult {
    let (id, location, bytes) = match id {
        Some(id) => {
            let store = s3.open(target)?;
            let key = object_path(&store.prefix, ObjectId(id));
            let bytes = manifest_log::get(&store, &key)
                .await?
                .ok_or_else(|| Failure::Failed(format!("object {id} not found at {key}")))?;
            (ObjectId(id), key.to_string(), bytes)
        }
        None => {
            if target.contains("://") {
                return Err(Failure::Usage(format!(
                    "{target} is a URL: give the object id after it (`objstream object URL ID`)"
                )));
            }
            let path = FsPath::new(target);
            let bytes = std::fs::read(path)
                .map_err(|e| Failure::Failed(format!("reading {}: {e}", path.display())))?;
            (
                id_from_name(path),
                path.display().to_string(),
                Bytes::from(bytes),
            )
        }
    };
    let report = check(id, location, &bytes);
    if json {
        print_json(&report)?;
    } else {
        print_report(&report);
    }
    match (&report.error, report.is_ok()) {
        (Some(e), _) => Err(Failure::Failed(format!(
            "{} is not a readable objstream object: {e}",
            report.location
        ))),
        (None, false) => Err(Failure::Reported),
        (None, true) => Ok(()),
    }
}

/// The id in a file named like an object key (20 digits), else 0.
fn id_from_name(path: &FsPath) -> ObjectId {
    path.file_name()
        .and_then(|n| n.to_str())
        .filter(|n| n.len() == 20 && n.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|n| n.parse().ok())
        .map_or(ObjectId(0), ObjectId)
}

fn print_report(report: &ObjectReport) {
    println!(
        "object {} at {}: {} bytes",
        report.id, report.location, report.size
    );
    let Some(footer) = &report.footer else {
        return;
    };
    println!(
        "footer: index at {}, {} bytes, format version {}",
        footer.index_position, footer.index_len, footer.version
    );
    println!("index: {} blocks", report.blocks.len());
    let mut table = Table::new(&[
        "POSITION", "SIZE", "STREAM", "START", "END", "RECORDS", "CODEC", "STORED", "RAW",
        "BATCHES", "CRC",
    ]);
    let opt = |v: Option<u32>| v.map_or("?".into(), |v| v.to_string());
    for b in &report.blocks {
        table.row(vec![
            b.position.to_string(),
            b.size.to_string(),
            b.stream.to_string(),
            b.start.to_string(),
            b.end.to_string(),
            b.records.to_string(),
            b.codec.clone(),
            opt(b.stored_len),
            b.raw_len.to_string(),
            opt(b.batches),
            match &b.error {
                None => "ok".into(),
                Some(e) => format!("BAD: {e}"),
            },
        ]);
    }
    table.print();
    let bad = report.blocks.iter().filter(|b| !b.ok).count();
    if bad > 0 {
        println!("{bad} bad blocks");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use objstream::format::ObjectBuilder;
    use objstream::{Compression, Offset, RecordBatch, StreamId};

    fn sample() -> Bytes {
        let mut b = ObjectBuilder::new(0, Compression::Zstd { level: 1 });
        b.add(
            StreamId(1),
            Offset(0),
            &RecordBatch::new(2, 0, "aaaaaaaaaaaaaaaa"),
        )
        .unwrap();
        b.add(StreamId(2), Offset(5), &RecordBatch::new(1, 0, "bbbb"))
            .unwrap();
        b.finish().bytes
    }

    #[test]
    fn a_good_object_shows_every_block_ok() {
        let report = check(ObjectId(1), "x".into(), &sample());
        assert!(report.is_ok(), "{report:?}");
        assert_eq!(report.blocks.len(), 2);
        assert_eq!(report.blocks[1].start, 5);
        assert_eq!(report.blocks[0].batches, Some(1));
    }

    #[test]
    fn a_flipped_block_byte_marks_that_block_bad_only() {
        let mut bytes = sample().to_vec();
        bytes[BLOCK_HEADER_LEN] ^= 1;
        let report = check(ObjectId(1), "x".into(), &Bytes::from(bytes));
        assert!(!report.blocks[0].ok && report.blocks[1].ok, "{report:?}");
    }

    #[test]
    fn bytes_that_are_not_an_object_are_a_footer_error() {
        let report = check(ObjectId(1), "x".into(), &Bytes::from_static(b"hello world"));
        assert!(report.error.is_some() && report.blocks.is_empty());
    }
}
