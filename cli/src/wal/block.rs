//! `wal block PATH`: a block WAL through [`objstream_wal::block::inspect`], which opens the
//! device read-only and never writes a header or zeroes a torn tail.

use std::path::Path as FsPath;

use objstream_wal::block::inspect::{inspect, RingEntry, SlotState};

use super::{finish, Dump, Part, Row};
use crate::Failure;

/// Dumps the block WAL on `path`.
pub(super) fn dump(path: &FsPath) -> Result<Dump, Failure> {
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
