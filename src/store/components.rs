//! The pluggable parts of a store: object store, WAL and meta store.

use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;

use object_store::path::Path;
use object_store::ObjectStore;
use objstream_wal::object::LingerMode;
use objstream_wal::{
    BlockWal, BlockWalOptions, FileWal, FileWalOptions, ObjectWal, ObjectWalIdentity,
    ObjectWalOptions, Wal, WalPosition,
};

use crate::error::Result;
use crate::manifest::{MetaStore, ObjectStoreMetaStore, WriterToken};
use crate::metered_store::MeteredObjectStore;
use crate::read::SharedBlockCache;
use crate::settings::{Settings, WalSettings};
use crate::types::{Epoch, NodeId};

/// The parts a store is built from. Only the object store and a key prefix are required; the
/// WAL defaults to what `Settings::wal` describes and the meta store to a manifest log under the
/// same prefix. The store counts every request to the object store through a
/// [`MeteredObjectStore`] it wraps around it (see [`crate::metrics`]).
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
    /// The object store is wrapped in a [`MeteredObjectStore`] here, when the store opens, so
    /// that its request metrics register with the recorder current at that time.
    pub(crate) async fn resolve(self, settings: &Settings) -> Result<Resolved> {
        let wal = self.wal;
        let objects: Arc<dyn ObjectStore> = Arc::new(MeteredObjectStore::new(self.objects));
        let meta = match self.meta {
            Some(m) => m,
            None => {
                let token = WriterToken(self.writer_token.unwrap_or_else(random_token));
                Arc::new(
                    ObjectStoreMetaStore::open(
                        objects.clone(),
                        self.prefix.clone(),
                        token,
                        settings.manifest_checkpoint_every,
                    )
                    .await?
                    .with_log_retention(std::time::Duration::from_secs(
                        settings.manifest_log_retention_secs,
                    ))?,
                ) as Arc<dyn MetaStore>
            }
        };
        Ok(Resolved {
            objects,
            prefix: self.prefix,
            wal,
            meta,
            block_cache: self.block_cache,
        })
    }
}

/// Whose WAL to open, as whom, and where an object WAL lives.
pub(crate) struct WalTarget<'a> {
    /// The node whose WAL it is.
    pub owner: NodeId,
    /// The epoch to write (or seal) it at: the owner's current epoch when it opens its own, one
    /// above the failed node's epoch when another node takes it over.
    pub epoch: Epoch,
    /// The node opening it, and that node's epoch.
    pub actor: (NodeId, Epoch),
    /// The owner's WAL floor from the manifest (object WAL: where sealing starts).
    pub floor: u64,
    /// The data store and its prefix (an object WAL without a URL lives there, under `wal/`).
    pub objects: &'a Arc<dyn ObjectStore>,
    pub prefix: &'a Path,
}

/// Opens the WAL that `settings` describes for `target` (the block WAL writes node and epoch
/// into its header and refuses an opener older than its last writer; the object WAL seals every
/// slot a previous writer could still fill).
pub(crate) async fn open_wal(
    settings: &WalSettings,
    max_batch_bytes: usize,
    target: WalTarget<'_>,
) -> Result<Arc<dyn Wal>> {
    // The WAL record adds a small header to the batch payload.
    let max_record_bytes = max_batch_bytes + crate::wal_record::HEADER_LEN;
    if let WalSettings::Object {
        url,
        batch_bytes,
        linger_micros,
        linger_mode,
        max_in_flight,
    } = settings
    {
        let (store, prefix) = match url {
            Some(url) => {
                let at =
                    crate::config::open_url(url, &crate::config::ObjectStoreOptions::default())?;
                (at.store, at.prefix)
            }
            None => (target.objects.clone(), target.prefix.clone()),
        };
        let options = ObjectWalOptions {
            batch_bytes: *batch_bytes,
            linger: std::time::Duration::from_micros(*linger_micros),
            max_in_flight: *max_in_flight,
            max_record_size: max_record_bytes,
            linger_mode: match linger_mode {
                crate::settings::WalLinger::WhenBusy => LingerMode::WhenBusy,
                crate::settings::WalLinger::GroupCommit => LingerMode::GroupCommit,
                crate::settings::WalLinger::Fixed => LingerMode::Fixed,
            },
            ..ObjectWalOptions::default()
        };
        let identity = ObjectWalIdentity {
            owner: target.owner.0,
            epoch: target.epoch.0,
            actor: target.actor.0 .0,
            actor_epoch: target.actor.1 .0,
        };
        let wal = ObjectWal::open(
            store,
            crate::keys::wal_prefix(&prefix, target.owner),
            identity,
            WalPosition(target.floor),
            options,
        )
        .await?;
        let report = wal.seal_report();
        tracing::info!(owner = %target.owner, epoch = %target.epoch, ?report, "object WAL sealed");
        return Ok(Arc::new(wal));
    }
    let settings = settings.clone();
    let (node, node_epoch) = (target.owner, target.epoch);
    // Registered here, not on the blocking thread: the caller's recorder may be thread-local.
    let metrics = match &settings {
        WalSettings::Block { .. } => BlockWal::new_metrics(),
        _ => FileWal::new_metrics(),
    };
    let wal = tokio::task::spawn_blocking(move || -> Result<Arc<dyn Wal>> {
        Ok(match settings {
            WalSettings::File { dir, segment_bytes } => Arc::new(FileWal::open_with_metrics(
                dir,
                FileWalOptions {
                    segment_bytes,
                    max_record_bytes,
                },
                metrics,
            )?),
            WalSettings::Block {
                path,
                create_bytes,
                max_writes_per_sec,
            } => Arc::new(BlockWal::open_with_metrics(
                path,
                node.0,
                node_epoch.0,
                BlockWalOptions {
                    create_bytes,
                    max_record_bytes,
                    max_writes_per_sec,
                    ..BlockWalOptions::default()
                },
                metrics,
            )?),
            WalSettings::Object { .. } => unreachable!("opened above"),
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
