//! Checkpoints: the whole manifest state as of one sequence number, so that opening the manifest
//! does not replay the log from the beginning.
//!
//! A checkpoint uses the record frame (see [`record`](super::record)) with
//! [`CHECKPOINT_MAGIC`](super::record::CHECKPOINT_MAGIC); its body is the [`ManifestState`] as
//! JSON, which includes the sequence number it is as of. The committer of every
//! `checkpoint_every`-th record writes one, create-if-absent, as a best effort: checkpoints are
//! derived data, and a missing one only makes opening slower.
//!
//! Decoding checks the frame, that the state is as of the sequence number in the key, and the
//! state's invariants ([`ManifestState::check_invariants`]), so a checkpoint that decodes is safe
//! to apply changes to.

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutPayload};

use super::paths::ManifestPaths;
use super::record::{open_frame, seal_frame, FrameKind};
use super::state::ManifestState;
use crate::error::{Error, Result};

/// Encodes `state` as a checkpoint.
pub fn encode_checkpoint(state: &ManifestState) -> Result<Bytes> {
    let body = serde_json::to_vec(state)
        .map_err(|e| Error::internal(format!("encoding manifest checkpoint: {e}")))?;
    seal_frame(FrameKind::Checkpoint, &body)
}

/// Decodes the checkpoint stored at `key`, which must be as of `seq`.
pub fn decode_checkpoint(key: &str, seq: u64, bytes: &[u8]) -> Result<ManifestState> {
    let body = open_frame(FrameKind::Checkpoint, key, bytes)?;
    let state: ManifestState = serde_json::from_slice(body)
        .map_err(|e| Error::corruption(key, format!("checkpoint body does not parse: {e}")))?;
    if state.seq() != seq {
        return Err(Error::corruption(
            key,
            format!("holds the state as of {}, expected {seq}", state.seq()),
        ));
    }
    state
        .check_invariants()
        .map_err(|what| Error::corruption(key, format!("inconsistent state: {what}")))?;
    Ok(state)
}

/// The sequence numbers of the stored checkpoints, ascending. Keys that are not checkpoints are
/// ignored (with a warning).
pub(crate) async fn list_checkpoints(
    store: &dyn ObjectStore,
    paths: &ManifestPaths,
) -> Result<Vec<u64>> {
    let listed: Vec<object_store::ObjectMeta> = store
        .list(Some(paths.checkpoints()))
        .try_collect()
        .await
        .map_err(|e| Error::object_store("list", paths.checkpoints(), e))?;
    let mut seqs = Vec::with_capacity(listed.len());
    for meta in listed {
        match paths.checkpoint_seq(&meta.location) {
            Some(seq) => seqs.push(seq),
            None => {
                tracing::warn!(key = %meta.location, "ignoring a stray key among manifest checkpoints")
            }
        }
    }
    seqs.sort_unstable();
    seqs.dedup();
    Ok(seqs)
}

/// Reads checkpoint `seq`; `None` when it does not exist (it may have been deleted since it was
/// listed).
pub(crate) async fn read_checkpoint(
    store: &dyn ObjectStore,
    paths: &ManifestPaths,
    seq: u64,
) -> Result<Option<ManifestState>> {
    let key = paths.checkpoint(seq);
    let bytes = match store.get(&key).await {
        Ok(got) => got.bytes().await,
        Err(e) => Err(e),
    };
    match bytes {
        Ok(bytes) => decode_checkpoint(key.as_ref(), seq, &bytes).map(Some),
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(Error::object_store("get", &key, e)),
    }
}

/// True when checkpoint `seq` exists.
pub(crate) async fn checkpoint_exists(
    store: &dyn ObjectStore,
    paths: &ManifestPaths,
    seq: u64,
) -> Result<bool> {
    let key = paths.checkpoint(seq);
    match store.head(&key).await {
        Ok(_) => Ok(true),
        Err(object_store::Error::NotFound { .. }) => Ok(false),
        Err(e) => Err(Error::object_store("head", &key, e)),
    }
}

/// Writes a checkpoint of `state`, create-if-absent. One that already exists holds the same
/// state (the log is deterministic), so finding it is success.
pub(crate) async fn write_checkpoint(
    store: &dyn ObjectStore,
    paths: &ManifestPaths,
    state: &ManifestState,
) -> Result<()> {
    let key = paths.checkpoint(state.seq());
    let bytes = encode_checkpoint(state)?;
    match store
        .put_opts(&key, PutPayload::from(bytes), PutMode::Create.into())
        .await
    {
        Ok(_) | Err(object_store::Error::AlreadyExists { .. }) => Ok(()),
        Err(e) => Err(Error::object_store("put", &key, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{ErrorDetail, ErrorKind};
    use crate::manifest::change::Change;
    use crate::types::NodeId;

    fn state_at(seq: u64) -> ManifestState {
        let mut state = ManifestState::new();
        state.apply(&Change::OpenNode { node: NodeId(1) }).unwrap();
        state.seq = seq;
        state
    }

    #[test]
    fn a_checkpoint_round_trips() {
        let state = state_at(12);
        let bytes = encode_checkpoint(&state).unwrap();
        assert_eq!(decode_checkpoint("k", 12, &bytes).unwrap(), state);
    }

    #[test]
    fn every_flipped_byte_of_a_checkpoint_is_corruption_naming_the_key() {
        let bytes = encode_checkpoint(&state_at(12)).unwrap();
        for i in 0..bytes.len() {
            let mut damaged = bytes.to_vec();
            damaged[i] ^= 0x01;
            let err = decode_checkpoint("ckpt-key", 12, &damaged).unwrap_err();
            match err.detail() {
                ErrorDetail::Corruption { location, .. } => assert_eq!(location, "ckpt-key"),
                other => panic!("byte {i}: not a corruption: {other}"),
            }
        }
    }

    #[test]
    fn a_checkpoint_under_another_sequence_number_is_corruption() {
        let bytes = encode_checkpoint(&state_at(12)).unwrap();
        let err = decode_checkpoint("k", 13, &bytes).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corruption);
    }

    #[test]
    fn a_well_framed_but_inconsistent_state_is_corruption() {
        let mut state = state_at(3);
        state
            .apply(&Change::CreateStream {
                node: NodeId(1),
                node_epoch: crate::types::Epoch(1),
            })
            .unwrap();
        state.next_stream_id = crate::types::StreamId(0);
        let body = serde_json::to_vec(&state).unwrap();
        let bytes = seal_frame(FrameKind::Checkpoint, &body).unwrap();
        let err = decode_checkpoint("k", 3, &bytes).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corruption, "{err}");
    }
}
