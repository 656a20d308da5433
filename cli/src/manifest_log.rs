//! Reading the manifest's objects as they are stored, without the store's open logic.
//!
//! ```text
//! {prefix}/manifest/{seq:020}             log record seq (the first is 1)
//! {prefix}/manifest-checkpoint/{seq:020}  the state after records 1..=seq
//! ```
//!
//! The commands that show the current state ([`current_state`]) open the manifest the way a
//! store does ([`ObjectStoreMetaStore::open`], which only reads: the newest checkpoint, then
//! the records after it). `manifest` and `verify` list and read every record and checkpoint
//! themselves, so that they can show and check the ones a store would never read again.
//! Keys are sorted by number here: LIST order is not trusted.

use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use objstream::manifest::{ManifestState, MetaStore, ObjectStoreMetaStore, WriterToken};

use crate::location::{key, Store};
use crate::Failure;

/// The folder of log records under a prefix.
pub const RECORDS: &str = "manifest";
/// The folder of checkpoints under a prefix.
pub const CHECKPOINTS: &str = "manifest-checkpoint";

/// What a LIST of the manifest's two folders found, sorted by sequence number.
#[derive(Debug, Default)]
pub struct Listing {
    /// Record numbers.
    pub records: Vec<u64>,
    /// Checkpoint numbers.
    pub checkpoints: Vec<u64>,
    /// Keys in either folder that are not named like a record or checkpoint.
    pub strays: Vec<String>,
}

/// The key of record `seq`.
pub fn record_key(prefix: &Path, seq: u64) -> Path {
    key(prefix, &[RECORDS, &format!("{seq:020}")])
}

/// The key of checkpoint `seq`.
pub fn checkpoint_key(prefix: &Path, seq: u64) -> Path {
    key(prefix, &[CHECKPOINTS, &format!("{seq:020}")])
}

/// Lists the records and checkpoints under the store's prefix.
pub async fn list(store: &Store) -> Result<Listing, Failure> {
    let mut listing = Listing::default();
    for (folder, into_records) in [(RECORDS, true), (CHECKPOINTS, false)] {
        let dir = key(&store.prefix, &[folder]);
        let found: Vec<object_store::ObjectMeta> = store
            .objects
            .list(Some(&dir))
            .try_collect()
            .await
            .map_err(|e| Failure::Failed(format!("listing {dir}: {e}")))?;
        for meta in found {
            match sequence_number(&dir, &meta.location) {
                Some(seq) if into_records => listing.records.push(seq),
                Some(seq) => listing.checkpoints.push(seq),
                None => listing.strays.push(meta.location.to_string()),
            }
        }
    }
    listing.records.sort_unstable();
    listing.checkpoints.sort_unstable();
    listing.strays.sort();
    Ok(listing)
}

/// The number a key directly under `dir` is named by: exactly 20 digits.
fn sequence_number(dir: &Path, key: &Path) -> Option<u64> {
    let mut rest = key.prefix_match(dir)?;
    let name = rest.next()?;
    if rest.next().is_some() {
        return None;
    }
    let name = name.as_ref();
    if name.len() != 20 || !name.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    name.parse().ok()
}

/// The bytes at `key`; `None` when there is no such object.
pub async fn get(store: &Store, key: &Path) -> Result<Option<Bytes>, Failure> {
    let got = match store.objects.get(key).await {
        Ok(got) => got,
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(Failure::Failed(format!("reading {key}: {e}"))),
    };
    got.bytes()
        .await
        .map(Some)
        .map_err(|e| Failure::Failed(format!("reading {key}: {e}")))
}

/// Manifest objects read at once.
const PARALLEL_READS: usize = 16;

/// Reads the objects at `keys` (in order, several at a time): each one's bytes, or `None` when
/// it is gone.
pub async fn get_all(
    store: &Store,
    keys: Vec<Path>,
) -> Result<Vec<(Path, Option<Bytes>)>, Failure> {
    futures::stream::iter(keys)
        .map(|key| async move { get(store, &key).await.map(|bytes| (key, bytes)) })
        .buffered(PARALLEL_READS)
        .try_collect()
        .await
}

/// The manifest's current state, loaded as a store opening the prefix would load it.
pub async fn current_state(store: &Store) -> Result<Arc<ManifestState>, Failure> {
    let meta = ObjectStoreMetaStore::open(
        Arc::clone(&store.objects),
        store.prefix.clone(),
        WriterToken(0),
        0,
    )
    .await?;
    let state = meta.state().await?;
    if state.seq() == 0 {
        return Err(no_manifest(store));
    }
    Ok(state)
}

/// The failure of a command pointed at a prefix that holds no manifest.
pub fn no_manifest(store: &Store) -> Failure {
    Failure::Failed(format!(
        "no manifest under `{}`: is the URL right (it names the store's prefix)?",
        store.prefix
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_twenty_digit_names_directly_in_the_folder_are_numbers() {
        let dir = Path::from("p/manifest");
        let at = |k: &str| sequence_number(&dir, &Path::from(k));
        assert_eq!(at("p/manifest/00000000000000000042"), Some(42));
        assert_eq!(at("p/manifest/42"), None);
        assert_eq!(at("p/manifest/x/00000000000000000042"), None);
        assert_eq!(at("q/manifest/00000000000000000042"), None);
        assert_eq!(
            record_key(&Path::from("p"), 7).as_ref(),
            "p/manifest/00000000000000000007"
        );
    }
}
