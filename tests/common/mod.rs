//! Helpers shared by the store-level integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use object_store::ObjectStore;
use objstream::{Components, NodeId, RecordBatch, Settings, Store, WalSettings};

/// A node's private pieces: its WAL directory and settings.
pub struct Node {
    pub settings: Settings,
    pub wal_dir: PathBuf,
}

impl Node {
    /// Node `id` with its WAL under `dir`, small thresholds so uploads happen in tests.
    pub fn new(dir: &Path, id: u64) -> Node {
        let wal_dir = dir.join(format!("wal-{id}"));
        let settings = Settings {
            node_id: NodeId(id),
            wal: WalSettings::File {
                dir: wal_dir.clone(),
                segment_bytes: 4 << 20,
            },
            upload_threshold_bytes: 256 << 10,
            upload_interval_ms: 50,
            block_bytes: 16 << 10,
            max_batch_bytes: 1 << 20,
            ..Settings::default()
        };
        Node { settings, wal_dir }
    }

    pub async fn open(
        &self,
        objects: &Arc<dyn ObjectStore>,
        prefix: &object_store::path::Path,
    ) -> Store {
        self.try_open(objects, prefix).await.expect("open store")
    }

    pub async fn try_open(
        &self,
        objects: &Arc<dyn ObjectStore>,
        prefix: &object_store::path::Path,
    ) -> objstream::Result<Store> {
        Store::open(
            self.settings.clone(),
            Components::new(objects.clone(), prefix.clone()),
        )
        .await
    }
}

/// The payload of batch `n` of a stream: recognisable and of varying size.
pub fn payload(stream: u64, n: u64) -> Bytes {
    let len = 16 + ((stream * 7919 + n * 104_729) % 2000) as usize;
    let mut v = format!("stream {stream} batch {n}:").into_bytes();
    v.resize(len, b'a' + (n % 26) as u8);
    Bytes::from(v)
}

pub fn batch(stream: u64, n: u64) -> RecordBatch {
    RecordBatch::new(1 + (n % 3) as u32, n as i64, payload(stream, n))
}

/// A local-directory object store in `dir`.
pub fn local_objects(dir: &Path) -> Arc<dyn ObjectStore> {
    let d = dir.join("objects");
    std::fs::create_dir_all(&d).unwrap();
    Arc::new(object_store::local::LocalFileSystem::new_with_prefix(d).unwrap())
}
