//! Arbitrary bytes as a manifest record and as a manifest checkpoint. Nothing may panic, and a
//! decoder may allocate only in proportion to its input.
//!
//! The first input byte picks a mode. With bit 0 set, the rest is framed as a record body with a
//! valid crc, and with bit 1 set as a checkpoint body, so that mutations reach the JSON parser
//! and the state's invariant checks instead of stopping at a crc mismatch. A record that decodes
//! is then applied to a small state, and to a checkpoint's state when both decode: applying any
//! change to any state that passed its checks must not panic either.

#![no_main]

use libfuzzer_sys::fuzz_target;
use objstream::manifest::record::{seal_frame, FrameKind};
use objstream::manifest::{decode_checkpoint, decode_record, Change, ManifestState};
use objstream::{Epoch, NodeId};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let record_bytes = if mode & 1 == 1 {
        seal_frame(FrameKind::Record, rest)
            .map(|b| b.to_vec())
            .unwrap_or_default()
    } else {
        rest.to_vec()
    };
    let checkpoint_bytes = if mode & 2 == 2 {
        seal_frame(FrameKind::Checkpoint, rest)
            .map(|b| b.to_vec())
            .unwrap_or_default()
    } else {
        rest.to_vec()
    };

    let record = decode_record("fuzz/manifest/00000000000000000001", 1, &record_bytes).ok();
    let checkpoint = decode_checkpoint(
        "fuzz/manifest-checkpoint/00000000000000000001",
        1,
        &checkpoint_bytes,
    )
    .ok();

    if let Some(record) = record {
        let mut state = small_state();
        let _ = state.apply(&record.change);
        if let Err(what) = state.check_invariants() {
            panic!("applying {:?} broke an invariant: {what}", record.change);
        }
        if let Some(mut loaded) = checkpoint {
            let _ = loaded.apply(&record.change);
            if let Err(what) = loaded.check_invariants() {
                panic!(
                    "applying {:?} to a checkpoint broke an invariant: {what}",
                    record.change
                );
            }
        }
    }
});

/// Two nodes, a stream and a few allocated object ids: enough for most changes to apply.
fn small_state() -> ManifestState {
    let mut state = ManifestState::new();
    for change in [
        Change::OpenNode { node: NodeId(1) },
        Change::OpenNode { node: NodeId(2) },
        Change::CreateStream {
            node: NodeId(1),
            node_epoch: Epoch(1),
        },
        Change::AllocateObjectIds {
            node: NodeId(1),
            node_epoch: Epoch(1),
            count: 4,
        },
        Change::OpenCompactor,
    ] {
        let _ = state.apply(&change);
    }
    state
}
