//! `manifest`: the log record by record; `nodes`: what the manifest knows of each node.
//!
//! `manifest` lists the record and checkpoint keys, then reads and decodes each record from
//! `--from` on with the store's own decoder ([`decode_record`]), so a damaged record is shown
//! where it is (and the command exits 1) instead of stopping the listing.

use objstream::manifest::{decode_record, Change, ObjectMeta};
use serde::Serialize;
use serde_json::Value;

use crate::location::Store;
use crate::manifest_log::{self, record_key};
use crate::output::{print_json, Table};
use crate::{CmdResult, Failure};

/// One record as shown.
#[derive(Debug, Serialize)]
struct RecordView {
    seq: u64,
    key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    writer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    change: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Debug, Serialize)]
struct HistoryView {
    checkpoints: Vec<u64>,
    first_record: Option<u64>,
    last_record: Option<u64>,
    records: Vec<RecordView>,
}

/// Prints records `from..` (at most `limit`) of the manifest.
pub async fn history(store: &Store, from: u64, limit: Option<u64>, json: bool) -> CmdResult {
    let listing = manifest_log::list(store).await?;
    if listing.records.is_empty() && listing.checkpoints.is_empty() {
        return Err(manifest_log::no_manifest(store));
    }
    let chosen = listing
        .records
        .iter()
        .copied()
        .filter(|&seq| seq >= from)
        .take(limit.map_or(usize::MAX, |l| l.try_into().unwrap_or(usize::MAX)));
    let chosen: Vec<u64> = chosen.collect();
    let keys = chosen.iter().map(|&seq| record_key(&store.prefix, seq));
    let read = manifest_log::get_all(store, keys.collect()).await?;
    let mut records = Vec::new();
    let mut bad = false;
    for (&seq, (key, bytes)) in chosen.iter().zip(read) {
        let mut view = RecordView {
            seq,
            key: key.to_string(),
            kind: None,
            writer: None,
            change: None,
            error: None,
        };
        match bytes {
            None => view.error = Some("listed, but gone when read".into()),
            Some(bytes) => match decode_record(key.as_ref(), seq, &bytes) {
                Ok(record) => {
                    view.kind = Some(record.change.kind());
                    view.writer = Some(record.writer.to_string());
                    view.change = Some(change_fields(&record.change));
                }
                Err(e) => {
                    bad = true;
                    view.error = Some(e.to_string());
                }
            },
        }
        records.push(view);
    }
    let view = HistoryView {
        checkpoints: listing.checkpoints.clone(),
        first_record: listing.records.first().copied(),
        last_record: listing.records.last().copied(),
        records,
    };
    if json {
        print_json(&view)?;
    } else {
        let span = match (view.first_record, view.last_record) {
            (Some(a), Some(b)) => format!("records {a}..={b}"),
            _ => "no records".to_string(),
        };
        println!("manifest: {span}; checkpoints: {:?}", view.checkpoints);
        let mut table = Table::new(&["SEQ", "KIND", "CHANGE"]);
        for r in &view.records {
            let (kind, text) = match (&r.error, &r.change) {
                (Some(e), _) => ("CORRUPT".to_string(), e.clone()),
                (None, Some(c)) => (r.kind.unwrap_or("").to_string(), summary(c)),
                (None, None) => (String::new(), String::new()),
            };
            table.row(vec![r.seq.to_string(), kind, text]);
        }
        table.print();
    }
    if bad {
        return Err(Failure::Reported);
    }
    Ok(())
}

/// The fields of a change, without the enum's tag.
fn change_fields(change: &Change) -> Value {
    match serde_json::to_value(change) {
        Ok(Value::Object(map)) if map.len() == 1 => {
            map.into_iter().next().map_or(Value::Null, |(_, v)| v)
        }
        Ok(other) => other,
        Err(e) => Value::String(format!("(cannot show: {e})")),
    }
}

/// A one-line rendering of a change's fields: `key=value` pairs, objects shortened.
fn summary(fields: &Value) -> String {
    let Value::Object(map) = fields else {
        return fields.to_string();
    };
    map.iter()
        .map(|(k, v)| match (k.as_str(), v) {
            ("objects" | "added", Value::Array(objects)) => {
                let shown: Vec<String> = objects.iter().map(object_summary).collect();
                format!("{k}=[{}]", shown.join("; "))
            }
            (_, Value::Array(items)) => format!(
                "{k}=[{}]",
                items
                    .iter()
                    .map(|i| i.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            _ => format!("{k}={v}"),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `id kind size: stream@epoch start..end, ...`.
fn object_summary(object: &Value) -> String {
    match serde_json::from_value::<ObjectMeta>(object.clone()) {
        Ok(o) => {
            let ranges: Vec<String> = o
                .ranges
                .iter()
                .map(|r| {
                    format!(
                        "stream {} epoch {} {}..{}",
                        r.stream.0, r.epoch.0, r.start.0, r.end.0
                    )
                })
                .collect();
            format!(
                "object {} {} {}B: {}",
                o.id.0,
                kind_name(o.kind),
                o.size,
                ranges.join(", ")
            )
        }
        Err(_) => object.to_string(),
    }
}

/// The stored name of an object kind.
pub fn kind_name(kind: objstream::manifest::ObjectKind) -> &'static str {
    match kind {
        objstream::manifest::ObjectKind::StreamSet => "stream_set",
        objstream::manifest::ObjectKind::Stream => "stream",
    }
}

#[derive(Debug, Serialize)]
struct NodeView {
    node: u64,
    epoch: u64,
    fenced_epoch: Option<u64>,
    live: bool,
    wal_floor: u64,
    open_streams: usize,
}

/// Prints every node the manifest knows.
pub async fn nodes(store: &Store, json: bool) -> CmdResult {
    let state = manifest_log::current_state(store).await?;
    let nodes: Vec<NodeView> = state
        .nodes()
        .map(|(id, meta)| NodeView {
            node: id.0,
            epoch: meta.epoch.0,
            fenced_epoch: meta.fenced_epoch.map(|e| e.0),
            live: meta.is_live(meta.epoch),
            wal_floor: meta.wal_floor,
            open_streams: state.streams_owned_by(id).len(),
        })
        .collect();
    if json {
        return print_json(&nodes);
    }
    println!("manifest as of record {}", state.seq());
    let mut table = Table::new(&[
        "NODE",
        "EPOCH",
        "FENCED_AT",
        "LIVE",
        "WAL_FLOOR",
        "OPEN_STREAMS",
    ]);
    for n in &nodes {
        table.row(vec![
            n.node.to_string(),
            n.epoch.to_string(),
            n.fenced_epoch.map_or("-".into(), |e| e.to_string()),
            if n.live { "yes" } else { "no" }.into(),
            n.wal_floor.to_string(),
            n.open_streams.to_string(),
        ]);
    }
    table.print();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use objstream::{Epoch, NodeId};

    #[test]
    fn a_change_is_shown_as_its_fields_without_the_tag() {
        let change = Change::FenceNode {
            node: NodeId(3),
            epoch: Epoch(2),
        };
        let fields = change_fields(&change);
        assert_eq!(summary(&fields), "epoch=2 node=3");
    }
}
