//! `wal object URL NODE`: the slots of one node's object WAL, with LIST and GET only (never a
//! fence). Each slot's header is decoded with [`objstream_wal::object::layout`], then its
//! frames one by one so a bad one is shown where it is, then the whole object with the WAL's
//! own [`decode_object`] (lengths, record count). Objects are written whole, so any fault is
//! damage.

use bytes::Bytes;
use objstream::keys::wal_prefix;
use objstream::NodeId;
use objstream_wal::frame::{self, Decoded};
use objstream_wal::object::layout::{decode_object, parse_slot_key, position_in, Header, Kind};

use super::{finish, Dump, Part, Row};
use crate::location::StoreArgs;
use crate::Failure;

/// Dumps node `node`'s object WAL in the store `args` names.
pub(super) async fn dump(args: &StoreArgs, node: u64) -> Result<Dump, Failure> {
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
    if slots.is_empty() {
        eprintln!(
            "objstream: no slots under {prefix}: the WAL is empty (trimmed), or the node id or \
             URL is not the one meant"
        );
    }
    let keys = slots.iter().map(|(_, key)| key.clone()).collect();
    let read = crate::manifest_log::get_all(&store, keys).await?;
    let mut parts = Vec::new();
    for ((slot, key), (_, bytes)) in slots.iter().zip(read) {
        // None: trimmed between the LIST and the GET.
        if let Some(bytes) = bytes {
            parts.push(object_slot(*slot, key, &bytes));
        }
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
