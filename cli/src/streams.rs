//! `streams`: every stream in the manifest's current state.
//!
//! Objects and bytes come from the manifest alone (no object is read): `objects` counts the
//! distinct objects holding part of the stream, `object_bytes` adds up their whole sizes, so a
//! stream set object shared by several streams counts in full for each (`stats` reads the
//! indexes for the stream's own share).

use std::collections::BTreeSet;

use objstream::manifest::{StreamMeta, StreamStatus};
use serde::Serialize;

use crate::location::Store;
use crate::manifest_log;
use crate::output::{print_json, Table};
use crate::CmdResult;

#[derive(Debug, Serialize)]
struct StreamView {
    stream: u64,
    status: &'static str,
    epoch: u64,
    owner: u64,
    owner_node_epoch: u64,
    start: u64,
    end: u64,
    objects: usize,
    object_bytes: u64,
}

/// The name of a status, as stored.
pub fn status_name(status: StreamStatus) -> &'static str {
    match status {
        StreamStatus::Open => "open",
        StreamStatus::Closed => "closed",
        StreamStatus::Deleted => "deleted",
    }
}

fn view(stream: &StreamMeta) -> StreamView {
    let objects: BTreeSet<u64> = stream.objects.values().map(|o| o.object.0).collect();
    let object_bytes = stream
        .objects
        .values()
        .map(|o| (o.object.0, o.size))
        .collect::<std::collections::BTreeMap<_, _>>()
        .values()
        .sum();
    StreamView {
        stream: stream.id.0,
        status: status_name(stream.status),
        epoch: stream.epoch.0,
        owner: stream.owner.0,
        owner_node_epoch: stream.owner_node_epoch.0,
        start: stream.start.0,
        end: stream.end.0,
        objects: objects.len(),
        object_bytes,
    }
}

/// Prints every stream.
pub async fn run(store: &Store, json: bool) -> CmdResult {
    let state = manifest_log::current_state(store).await?;
    let streams: Vec<StreamView> = state.streams().map(view).collect();
    if json {
        return print_json(&streams);
    }
    println!(
        "manifest as of record {}: {} streams",
        state.seq(),
        streams.len()
    );
    let mut table = Table::new(&[
        "STREAM",
        "STATUS",
        "EPOCH",
        "OWNER",
        "NODE_EPOCH",
        "START",
        "END",
        "OBJECTS",
        "OBJECT_BYTES",
    ]);
    for s in &streams {
        table.row(vec![
            s.stream.to_string(),
            s.status.to_string(),
            s.epoch.to_string(),
            s.owner.to_string(),
            s.owner_node_epoch.to_string(),
            s.start.to_string(),
            s.end.to_string(),
            s.objects.to_string(),
            s.object_bytes.to_string(),
        ]);
    }
    table.print();
    Ok(())
}
