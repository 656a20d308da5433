//! `stats`: per stream, what is stored and what a full read costs; objects by kind.
//!
//! Reads the manifest's current state and the index of every object it references (one tail
//! GET each, a second when the index does not fit the tail), never a data block. Per stream:
//!
//! - `objects`: the objects holding part of it;
//! - `stored_bytes`: its blocks as stored (headers and compressed bodies);
//! - `raw_bytes`: its block bodies once decompressed: payloads plus a 16-byte header per batch;
//! - `records`: records in those blocks (trimmed ones still stored included);
//! - `full_read_gets`: the GETs a reader with cold caches makes to read `[start, end)`: per
//!   object the index GETs, then one range GET per run of adjacent blocks up to 32 MiB (the
//!   read path merges adjacent blocks into one GET up to that size). It counts the fetch path
//!   alone: read-ahead for a sequential reader can take an object the stream fills with one
//!   whole-object GET, saving its index GET, so a catch-up scan may make fewer.

use std::collections::BTreeMap;

use futures::StreamExt;
use object_store::ObjectStoreExt;
use objstream::format::{decode_tail, tail_range, ObjectIndex, TailDecode};
use objstream::keys::object_path;
use objstream::manifest::ObjectMeta;
use objstream::ObjectId;
use serde::Serialize;

use crate::location::Store;
use crate::manifest::kind_name;
use crate::manifest_log;
use crate::output::{print_json, Table};
use crate::{CmdResult, Failure};

/// The read path's largest merged range GET.
const MAX_MERGED_GET: u64 = 32 << 20;
/// Indexes fetched at once.
const PARALLEL_INDEXES: usize = 8;

#[derive(Debug, Default, Serialize)]
struct StreamStats {
    stream: u64,
    start: u64,
    end: u64,
    objects: usize,
    stored_bytes: u64,
    raw_bytes: u64,
    records: u64,
    full_read_gets: u64,
}

#[derive(Debug, Default, Serialize)]
struct KindStats {
    objects: usize,
    bytes: u64,
}

#[derive(Debug, Serialize)]
struct Stats {
    seq: u64,
    streams: Vec<StreamStats>,
    object_kinds: BTreeMap<&'static str, KindStats>,
}

/// An object's index and the GETs it took.
struct Indexed {
    index: ObjectIndex,
    gets: u64,
}

async fn read_index(store: &Store, meta: &ObjectMeta) -> Result<Indexed, Failure> {
    let key = object_path(&store.prefix, meta.id);
    let failed = |e: object_store::Error| Failure::Failed(format!("reading {key}: {e}"));
    let tail = store
        .objects
        .get_range(&key, tail_range(meta.size))
        .await
        .map_err(failed)?;
    match decode_tail(meta.id, meta.size, &tail)? {
        TailDecode::Complete { index, .. } => Ok(Indexed { index, gets: 1 }),
        TailDecode::NeedIndex { footer, range } => {
            let bytes = store.objects.get_range(&key, range).await.map_err(failed)?;
            Ok(Indexed {
                index: footer.decode_index(meta.id, &bytes)?,
                gets: 2,
            })
        }
    }
}

/// Range GETs for blocks of `sizes`, adjacent, merged up to [`MAX_MERGED_GET`].
fn merged_gets(sizes: impl Iterator<Item = u64>) -> u64 {
    let mut gets = 0;
    let mut run = 0u64;
    for size in sizes {
        if run == 0 || run + size > MAX_MERGED_GET {
            gets += 1;
            run = 0;
        }
        run += size;
    }
    gets
}

/// Runs `stats`.
pub async fn run(store: &Store, json: bool) -> CmdResult {
    let state = manifest_log::current_state(store).await?;
    let mut object_kinds: BTreeMap<&'static str, KindStats> = BTreeMap::new();
    for meta in state.objects() {
        let k = object_kinds.entry(kind_name(meta.kind)).or_default();
        k.objects += 1;
        k.bytes += meta.size;
    }
    let metas: Vec<ObjectMeta> = state.objects().cloned().collect();
    let mut indexes: BTreeMap<ObjectId, Indexed> = BTreeMap::new();
    let mut fetched = futures::stream::iter(metas)
        .map(|meta| async move { read_index(store, &meta).await.map(|i| (meta.id, i)) })
        .buffer_unordered(PARALLEL_INDEXES);
    while let Some(result) = fetched.next().await {
        let (id, indexed) = result?;
        indexes.insert(id, indexed);
    }
    let mut streams = Vec::new();
    for stream in state.streams() {
        let mut s = StreamStats {
            stream: stream.id.0,
            start: stream.start.0,
            end: stream.end.0,
            ..StreamStats::default()
        };
        let mut ids: Vec<ObjectId> = stream.objects.values().map(|o| o.object).collect();
        ids.sort();
        ids.dedup();
        s.objects = ids.len();
        for id in ids {
            let Some(indexed) = indexes.get(&id) else {
                continue;
            };
            let entries = indexed.index.stream_entries(stream.id);
            s.stored_bytes += entries.iter().map(|e| u64::from(e.size)).sum::<u64>();
            s.raw_bytes += entries.iter().map(|e| u64::from(e.raw_len)).sum::<u64>();
            s.records += entries.iter().map(|e| e.record_count()).sum::<u64>();
            let read = indexed
                .index
                .entries_for(stream.id, stream.start, stream.end);
            if !read.is_empty() {
                s.full_read_gets +=
                    indexed.gets + merged_gets(read.iter().map(|e| u64::from(e.size)));
            }
        }
        streams.push(s);
    }
    let stats = Stats {
        seq: state.seq(),
        streams,
        object_kinds,
    };
    if json {
        return print_json(&stats);
    }
    println!("manifest as of record {}", stats.seq);
    let mut table = Table::new(&[
        "STREAM",
        "START",
        "END",
        "OBJECTS",
        "STORED_BYTES",
        "RAW_BYTES",
        "RECORDS",
        "FULL_READ_GETS",
    ]);
    for s in &stats.streams {
        table.row(vec![
            s.stream.to_string(),
            s.start.to_string(),
            s.end.to_string(),
            s.objects.to_string(),
            s.stored_bytes.to_string(),
            s.raw_bytes.to_string(),
            s.records.to_string(),
            s.full_read_gets.to_string(),
        ]);
    }
    table.print();
    println!();
    let mut kinds = Table::new(&["OBJECT_KIND", "OBJECTS", "BYTES"]);
    for (kind, k) in &stats.object_kinds {
        kinds.row(vec![
            kind.to_string(),
            k.objects.to_string(),
            k.bytes.to_string(),
        ]);
    }
    kinds.print();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adjacent_blocks_merge_into_gets_of_at_most_32_mib() {
        assert_eq!(merged_gets([].into_iter()), 0);
        assert_eq!(merged_gets([1 << 20; 10].into_iter()), 1);
        assert_eq!(merged_gets([20 << 20, 20 << 20, 1].into_iter()), 2);
        assert_eq!(merged_gets([64 << 20, 1].into_iter()), 2);
    }
}
