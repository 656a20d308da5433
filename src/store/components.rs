//! The pluggable parts of a store: object store, WAL and meta store.

use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;

use object_store::path::Path;
use object_store::ObjectStore;
use objstream_wal::{BlockWal, BlockWalOptions, FileWal, FileWalOptions, Wal};

use crate::error::Result;
use crate::manifest::{MetaStore, ObjectStoreMetaStore, WriterToken};
use crate::read::SharedBlockCache;
use crate::settings::{Settings, WalSettings};
use crate::types::{Epoch, NodeId};

/// The parts a store is built from. Only the object store and a key prefix are required; the
/// WAL defaults to what `Settings::wal` describes and the meta store to a manifest log under the
/// same prefix.
///
/// ```
/// use std::sync::Arc;
/// let objects = Arc::new(object_store::memory::InMemory::new());
/// let components = objstream::Components::new(objects, "cluster-a/streams");
/// # let _ = components;
/// ```
#[derive(Clone)]
pub struct Components {
    objects: Arc<dyn ObjectStore>,
    prefix: Path,
    wal: Option<Arc<dyn Wal>>,
    meta: Option<Arc<dyn MetaStore>>,
    writer_token: Option<u128>,
    block_cache: Option<SharedBlockCache>,
}

pub(crate) struct Resolved {
    pub objects: Arc<dyn ObjectStore>,
    pub prefix: Path,
    pub wal: Option<Arc<dyn Wal>>,
    pub meta: Arc<dyn MetaStore>,
    /// The embedder's block cache; `None`: the read path opens the one `Settings` describe.
    pub block_cache: Option<SharedBlockCache>,
}

impl Components {
    /// Data and manifest in `objects`, every key under `prefix`.
    pub fn new(objects: Arc<dyn ObjectStore>, prefix: impl Into<Path>) -> Self {
        Components {
            objects,
            prefix: prefix.into(),
            wal: None,
            meta: None,
            writer_token: None,
            block_cache: None,
        }
    }

    /// Uses this WAL instead of opening the one `Settings::wal` describes.
    pub fn with_wal(mut self, wal: Arc<dyn Wal>) -> Self {
        self.wal = Some(wal);
        self
    }

    /// Uses this meta store (for example a broker's own controller) instead of the manifest log.
    pub fn with_meta_store(mut self, meta: Arc<dyn MetaStore>) -> Self {
        self.meta = Some(meta);
        self
    }

    /// Sets the token that tags this node's manifest records, so that a retried conditional
    /// create can recognise its own record. Default: drawn at random when the store opens.
    pub fn with_writer_token(mut self, token: u128) -> Self {
        self.writer_token = Some(token);
        self
    }

    /// Uses this block cache instead of opening the one `Settings` describe
    /// (`block_cache_bytes`, `block_cache_disk_dir`, `block_cache_disk_bytes` are then ignored).
    /// The embedder owns it: the store's shutdown does not close it. Block keys are (object id,
    /// position), so one cache may serve several stores only if they read the same objects
    /// (the same prefix).
    pub fn with_block_cache(mut self, cache: SharedBlockCache) -> Self {
        self.block_cache = Some(cache);
        self
    }

    /// Everything but the WAL, which opens once the node's epoch is known (`open_wal`).
    pub(crate) async fn resolve(self, settings: &Settings) -> Result<Resolved> {
        let wal = self.wal;
        let meta = match self.meta {
            Some(m) => m,
            None => {
                let token = WriterToken(self.writer_token.unwrap_or_else(random_token));
                Arc::new(
                    ObjectStoreMetaStore::open(
                        self.objects.clone(),
                        self.prefix.clone(),
                        token,
                        settings.manifest_checkpoint_every,
                    )
                    .await?,
                ) as Arc<dyn MetaStore>
            }
        };
        Ok(Resolved {
            objects: self.objects,
            prefix: self.prefix,
            wal,
            meta,
            block_cache: self.block_cache,
        })
    }
}

/// Opens the WAL that `settings` describes, for node `node` at `node_epoch` (the block WAL
/// writes them into its header and refuses an opener older than its last writer).
pub(crate) async fn open_wal(
    settings: &WalSettings,
    max_batch_bytes: usize,
    node: NodeId,
    node_epoch: Epoch,
) -> Result<Arc<dyn Wal>> {
    // The WAL record adds a small header to the batch payload.
    let max_record_bytes = max_batch_bytes + crate::wal_record::HEADER_LEN;
    let settings = settings.clone();
    let wal = tokio::task::spawn_blocking(move || -> Result<Arc<dyn Wal>> {
        Ok(match settings {
            WalSettings::File { dir, segment_bytes } => Arc::new(FileWal::open(
                dir,
                FileWalOptions {
                    segment_bytes,
                    max_record_bytes,
                },
            )?),
            WalSettings::Block { path, create_bytes } => Arc::new(BlockWal::open(
                path,
                node.0,
                node_epoch.0,
                BlockWalOptions {
                    create_bytes,
                    max_record_bytes,
                    ..BlockWalOptions::default()
                },
            )?),
        })
    })
    .await
    .map_err(|e| crate::Error::internal(format!("WAL open task: {e}")))??;
    Ok(wal)
}

/// A token unique to this process start: the std hasher's per-process random keys mixed with
/// the time and the process id. Used only to recognise this node's own manifest records.
fn random_token() -> u128 {
    let mut token = 0u128;
    for salt in 0..2u64 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(salt);
        h.write_u32(std::process::id());
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default(),
        );
        token = (token << 64) | u128::from(h.finish());
    }
    token
}
