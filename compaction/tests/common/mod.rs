//! A simulated cluster for compaction tests: a writer node that uploads objects and commits them
//! straight to the manifest (as the upload pipeline does, without WAL or caches), a model of
//! every stream's batches, and a reader that reads a stream from the manifest and the objects
//! alone, so a test compares what is stored with what was written.
#![allow(dead_code)]

#[path = "../../../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use objstream::format::{decode_block, decode_tail, ObjectBuilder, TailDecode};
use objstream::keys::{object_path, parse_object_path};
use objstream::manifest::{
    Change, ManifestState, ManifestStreamRange, MetaStore, ObjectKind, ObjectMeta,
    ObjectStoreMetaStore, Outcome, WriterToken,
};
use objstream::{Compression, Epoch, NodeId, ObjectId, Offset, RecordBatch, StoredBatch, StreamId};
use objstream_compaction::{
    Compactor, CompactorComponents, CompactorSettings, Failpoint, ManualClock,
};

/// Settings scaled down so that a few kilobytes make every plan kind happen.
pub fn small_settings() -> CompactorSettings {
    CompactorSettings {
        pass_interval_ms: 1_000,
        grace_period_ms: 10_000,
        min_object_bytes: 1 << 10,
        fanout: 3,
        stream_split_bytes: 4 << 10,
        max_stream_set_object_bytes: 24 << 10,
        max_stream_object_bytes: 1 << 20,
        max_plan_bytes: 1 << 20,
        max_bytes_per_pass: 8 << 20,
        bandwidth_bytes_per_sec: 0,
        max_objects_per_plan: 16,
        max_deletes_per_pass: 1000,
        block_bytes: 2 << 10,
        compression: Compression::Zstd { level: 1 },
        manifest_checkpoint_every: 16,
        ..CompactorSettings::default()
    }
}

/// The writer node's id; compactors use ids from 1000.
pub const WRITER: NodeId = NodeId(1);

/// A `CommitObjects` change, built through its stored form so that it does not depend on
/// optional fields the change may grow.
pub fn commit_objects(node: NodeId, node_epoch: Epoch, objects: &[ObjectMeta]) -> Change {
    let value = serde_json::json!({
        "commit_objects": { "node": node, "node_epoch": node_epoch, "objects": objects }
    });
    serde_json::from_value(value).expect("a commit_objects change")
}

/// Settings of store node `id` whose file WAL lives under `dir`: small blocks, uploads at
/// 1 MiB or when flushed.
pub fn node_settings(dir: &std::path::Path, id: u64) -> objstream::Settings {
    objstream::Settings {
        node_id: NodeId(id),
        wal: objstream::WalSettings::File {
            dir: dir.join(format!("wal-{id}")),
            segment_bytes: 4 << 20,
        },
        upload_threshold_bytes: 1 << 20,
        upload_interval_ms: 60_000,
        block_bytes: 4 << 10,
        max_batch_bytes: 1 << 20,
        ..objstream::Settings::default()
    }
}

/// The payload of batch `n` of `stream`: recognisable, of varying size, compressible.
pub fn payload(stream: u64, n: u64, len: usize) -> Bytes {
    let mut v = format!("s{stream} b{n} ").into_bytes();
    let mut x = stream.wrapping_mul(31).wrapping_add(n.wrapping_mul(7919)) | 1;
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.push(b'a' + (x % 8) as u8);
    }
    v.truncate(len.max(1));
    Bytes::from(v)
}

/// The cluster: objects, the writer, the model, and the clock compactors share.
pub struct Cluster {
    pub objects: Arc<dyn ObjectStore>,
    pub prefix: Path,
    pub meta: Arc<ObjectStoreMetaStore>,
    pub node_epoch: Epoch,
    pub clock: Arc<ManualClock>,
    /// Every batch ever written per stream, in offset order.
    pub model: BTreeMap<StreamId, Vec<StoredBatch>>,
    /// Batches appended and not uploaded yet.
    pending: Vec<(StreamId, RecordBatch)>,
    next_batch: u64,
    /// Streams get their own stream object in an upload past this many bytes.
    pub upload_split_bytes: usize,
    /// Uploads whose objects are stored and whose commits are held, in upload order: every
    /// object's metadata and bytes.
    held: Vec<Vec<(ObjectMeta, Bytes)>>,
    /// Held uploads whose ids the collector took: uploaded again under fresh ids.
    pub reuploads: usize,
}

impl Cluster {
    /// A fresh cluster on an in-memory store.
    pub async fn new() -> Cluster {
        Cluster::on(Arc::new(InMemory::new()), Path::from("cluster")).await
    }

    /// A fresh cluster on `objects` under `prefix`.
    pub async fn on(objects: Arc<dyn ObjectStore>, prefix: Path) -> Cluster {
        let meta = Arc::new(
            ObjectStoreMetaStore::open(objects.clone(), prefix.clone(), WriterToken(1), 16)
                .await
                .unwrap(),
        );
        let node_epoch = match meta
            .commit(Change::OpenNode { node: WRITER })
            .await
            .unwrap()
            .outcome
        {
            Outcome::NodeEpoch(e) => e,
            other => panic!("{other:?}"),
        };
        // The clock starts at the store's notion of now, since objects carry its timestamps.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        Cluster {
            objects,
            prefix,
            meta,
            node_epoch,
            clock: Arc::new(ManualClock::new(now)),
            model: BTreeMap::new(),
            pending: Vec::new(),
            next_batch: 0,
            upload_split_bytes: 6 << 10,
            held: Vec::new(),
            reuploads: 0,
        }
    }

    /// Components for a compactor with node id `node`, sharing the cluster's clock.
    pub fn components(&self, node: u64) -> CompactorComponents {
        CompactorComponents::new(self.objects.clone(), self.prefix.clone(), NodeId(node))
            .with_clock(self.clock.clone())
            .with_writer_token(u128::from(node) + 100)
    }

    /// Opens a compactor with node id `node`.
    pub async fn compactor(&self, node: u64, settings: CompactorSettings) -> Compactor {
        Compactor::open(settings, self.components(node))
            .await
            .unwrap()
    }

    /// Opens a compactor that stops at the steps `failpoint` picks.
    pub async fn compactor_with(
        &self,
        node: u64,
        settings: CompactorSettings,
        failpoint: Failpoint,
    ) -> Compactor {
        Compactor::open(settings, self.components(node).with_failpoint(failpoint))
            .await
            .unwrap()
    }

    pub async fn state(&self) -> Arc<ManifestState> {
        self.meta.refresh().await.unwrap()
    }

    pub async fn create_stream(&mut self) -> StreamId {
        let change = Change::CreateStream {
            node: WRITER,
            node_epoch: self.node_epoch,
        };
        match self.meta.commit(change).await.unwrap().outcome {
            Outcome::StreamCreated(s) => {
                self.model.insert(s, Vec::new());
                s
            }
            other => panic!("{other:?}"),
        }
    }

    /// Appends `n` batches of about `len` bytes to `stream` (uploaded by the next `upload`).
    pub fn append(&mut self, stream: StreamId, n: usize, len: usize) {
        for _ in 0..n {
            let k = self.next_batch;
            self.next_batch += 1;
            let batch =
                RecordBatch::new(1 + (k % 3) as u32, k as i64, payload(stream.get(), k, len));
            self.pending.push((stream, batch));
        }
    }

    /// Appends `n` batches of about `len` bytes to `stream` stamped `timestamp_ms`.
    pub fn append_at(&mut self, stream: StreamId, n: usize, len: usize, timestamp_ms: i64) {
        for _ in 0..n {
            let k = self.next_batch;
            self.next_batch += 1;
            let batch = RecordBatch::new(1, timestamp_ms, payload(stream.get(), k, len));
            self.pending.push((stream, batch));
        }
    }

    /// Uploads what was appended: streams with more than `upload_split_bytes` get stream
    /// objects, the rest share one stream set object; then commits them, unless commits are
    /// held: the upload then waits behind the held ones (commits apply in upload order).
    pub async fn upload(&mut self) {
        let objects = self.store_pending().await;
        if objects.is_empty() {
            return;
        }
        if self.held.is_empty() {
            self.commit_or_reupload(objects).await;
        } else {
            self.held.push(objects);
        }
    }

    /// Uploads what was appended and holds its commit, and every later one, as a store
    /// brownout would, until `release`.
    pub async fn upload_and_hold(&mut self) {
        let objects = self.store_pending().await;
        if !objects.is_empty() {
            self.held.push(objects);
        }
    }

    /// Commits the held uploads, in order.
    pub async fn release(&mut self) {
        for objects in std::mem::take(&mut self.held) {
            self.commit_or_reupload(objects).await;
        }
    }

    /// Commits `objects`; if the collector took their ids meanwhile (the commit is refused and
    /// the manifest has them collected), stores the same bytes under fresh ids and commits
    /// those, as the store's upload pipeline does.
    async fn commit_or_reupload(&mut self, mut objects: Vec<(ObjectMeta, Bytes)>) {
        loop {
            let metas: Vec<ObjectMeta> = objects.iter().map(|(m, _)| m.clone()).collect();
            let Err(e) = self
                .meta
                .commit(commit_objects(WRITER, self.node_epoch, &metas))
                .await
            else {
                return;
            };
            let state = self.state().await;
            assert!(
                metas.iter().any(|m| state.is_collected(m.id)),
                "a commit refused for another reason: {e}"
            );
            self.reuploads += 1;
            let ids = self.allocate(objects.len()).await;
            for ((meta, bytes), id) in objects.iter_mut().zip(ids) {
                meta.id = ObjectId(id);
                self.put(meta.id, bytes.clone()).await;
            }
        }
    }

    async fn allocate(&self, count: usize) -> std::ops::Range<u64> {
        match self
            .meta
            .commit(Change::AllocateObjectIds {
                node: WRITER,
                node_epoch: self.node_epoch,
                count: count as u64,
            })
            .await
            .unwrap()
            .outcome
        {
            Outcome::ObjectIds(r) => r,
            other => panic!("{other:?}"),
        }
    }

    async fn put(&self, id: ObjectId, bytes: Bytes) {
        self.objects
            .put(&object_path(&self.prefix, id), PutPayload::from(bytes))
            .await
            .unwrap();
    }

    /// Builds and stores objects of what was appended, and adds it to the model; commits
    /// nothing.
    async fn store_pending(&mut self) -> Vec<(ObjectMeta, Bytes)> {
        if self.pending.is_empty() {
            return Vec::new();
        }
        let state = self.state().await;
        let mut per_stream: BTreeMap<StreamId, Vec<RecordBatch>> = BTreeMap::new();
        for (s, b) in std::mem::take(&mut self.pending) {
            per_stream.entry(s).or_default().push(b);
        }
        let mut groups: Vec<(ObjectKind, Vec<StreamId>)> = Vec::new();
        let mut shared = Vec::new();
        for (s, batches) in &per_stream {
            let bytes: usize = batches.iter().map(|b| b.payload.len()).sum();
            if bytes > self.upload_split_bytes {
                groups.push((ObjectKind::Stream, vec![*s]));
            } else {
                shared.push(*s);
            }
        }
        if !shared.is_empty() {
            groups.push((ObjectKind::StreamSet, shared));
        }
        let ids = self.allocate(groups.len()).await;
        let mut stored = Vec::new();
        for ((kind, streams), id) in groups.into_iter().zip(ids) {
            let mut builder = ObjectBuilder::new(2 << 10, Compression::Zstd { level: 1 });
            let mut ranges = Vec::new();
            for s in streams {
                let meta = state.stream(s).unwrap();
                let mut next = self.model[&s].last().map_or(Offset(0), |b| b.next_offset());
                let start = next;
                for b in &per_stream[&s] {
                    builder.add(s, next, b).unwrap();
                    self.model.get_mut(&s).unwrap().push(StoredBatch {
                        base_offset: next,
                        batch: b.clone(),
                    });
                    next = next.add(u64::from(b.count));
                }
                ranges.push(ManifestStreamRange {
                    stream: s,
                    epoch: meta.epoch,
                    start,
                    end: next,
                });
            }
            let object = builder.finish();
            let size = object.bytes.len() as u64;
            self.put(ObjectId(id), object.bytes.clone()).await;
            let meta = ObjectMeta {
                id: ObjectId(id),
                size,
                kind,
                ranges,
            };
            stored.push((meta, object.bytes));
        }
        stored
    }

    /// Trims `stream` to `new_start` (clamped to its end).
    pub async fn trim(&mut self, stream: StreamId, new_start: Offset) {
        let state = self.state().await;
        let s = state.stream(stream).unwrap();
        let new_start = new_start.min(s.end).max(s.start);
        self.meta
            .commit(Change::TrimStream {
                stream,
                epoch: s.epoch,
                new_start,
                compactor_epoch: None,
            })
            .await
            .unwrap();
    }

    /// Closes and reopens `stream`: later ranges carry a new stream epoch. A held upload is
    /// committed first, as a store's close commits what it holds.
    pub async fn reopen(&mut self, stream: StreamId) {
        self.release().await;
        let state = self.state().await;
        let epoch = state.stream(stream).unwrap().epoch;
        self.meta
            .commit(Change::CloseStream {
                stream,
                epoch,
                node: WRITER,
                node_epoch: self.node_epoch,
            })
            .await
            .unwrap();
        self.meta
            .commit(Change::OpenStream {
                stream,
                node: WRITER,
                node_epoch: self.node_epoch,
            })
            .await
            .unwrap();
    }

    /// Deletes `stream`, after committing the held uploads.
    pub async fn delete(&mut self, stream: StreamId) {
        self.release().await;
        let state = self.state().await;
        let epoch = state.stream(stream).unwrap().epoch;
        self.meta
            .commit(Change::DeleteStream { stream, epoch })
            .await
            .unwrap();
        self.model.remove(&stream);
    }

    /// Reads every live stream through `state` and compares it with the model: every offset
    /// from the stream's start to its end is in exactly the batch that was written there.
    pub async fn check_contents(&self, state: &ManifestState) {
        for (stream, written) in &self.model {
            let s = state.stream(*stream).unwrap();
            let read = read_stream(&self.objects, &self.prefix, state, *stream).await;
            let expected: Vec<&StoredBatch> = written
                .iter()
                .filter(|b| b.next_offset() > s.start && b.base_offset < s.end)
                .collect();
            let got: Vec<&StoredBatch> =
                read.iter().filter(|b| b.next_offset() > s.start).collect();
            assert_eq!(
                got.len(),
                expected.len(),
                "{stream}: {} batches read above {}, {} written",
                got.len(),
                s.start,
                expected.len()
            );
            for (g, e) in got.iter().zip(&expected) {
                assert_eq!(g.base_offset, e.base_offset, "{stream}");
                assert_eq!(g.batch, e.batch, "{stream} at {}", e.base_offset);
            }
        }
    }

    /// Writes an object under an allocated id and never commits it, as a crashed upload would.
    pub async fn orphan(&self) -> ObjectId {
        let change = Change::AllocateObjectIds {
            node: WRITER,
            node_epoch: self.node_epoch,
            count: 1,
        };
        let Outcome::ObjectIds(ids) = self.meta.commit(change).await.unwrap().outcome else {
            panic!("no ids");
        };
        let id = ObjectId(ids.start);
        self.objects
            .put(
                &object_path(&self.prefix, id),
                PutPayload::from_static(b"half an upload"),
            )
            .await
            .unwrap();
        id
    }

    /// The data objects in the store, by id.
    pub async fn listed(&self) -> Vec<ObjectId> {
        use futures::TryStreamExt;
        let mut ids: Vec<ObjectId> = self
            .objects
            .list(Some(&self.prefix.clone().join("objects")))
            .try_collect::<Vec<_>>()
            .await
            .unwrap()
            .iter()
            .filter_map(|m| parse_object_path(&m.location))
            .collect();
        ids.sort();
        ids
    }

    /// The manifest replayed from scratch: every record validates against the one before.
    pub async fn replayed(&self) -> Arc<ManifestState> {
        let fresh = ObjectStoreMetaStore::open(
            self.objects.clone(),
            self.prefix.clone(),
            WriterToken(999),
            0,
        )
        .await
        .expect("the manifest replays");
        let state = fresh.state().await.unwrap();
        state.check_invariants().expect("invariants hold");
        state
    }
}

/// Reads `stream` from its first object part to its committed end through `state`, using only
/// GETs and the format decoder.
pub async fn read_stream(
    objects: &Arc<dyn ObjectStore>,
    prefix: &Path,
    state: &ManifestState,
    stream: StreamId,
) -> Vec<StoredBatch> {
    try_read_stream(objects, prefix, state, stream)
        .await
        .unwrap()
}

/// Like [`read_stream`], returning the first failure.
pub async fn try_read_stream(
    objects: &Arc<dyn ObjectStore>,
    prefix: &Path,
    state: &ManifestState,
    stream: StreamId,
) -> Result<Vec<StoredBatch>, String> {
    let s = state.stream(stream).ok_or("unknown stream")?;
    let mut out: Vec<StoredBatch> = Vec::new();
    let mut expected_next: Option<Offset> = None;
    for (object, size, start, end) in state.objects_covering(stream, s.start, s.end) {
        let got = objects
            .get(&object_path(prefix, object))
            .await
            .map_err(|e| format!("{object}: {e}"))?;
        let bytes = got.bytes().await.map_err(|e| e.to_string())?;
        assert_eq!(bytes.len() as u64, size, "{object} size");
        let TailDecode::Complete { index, .. } =
            decode_tail(object, size, &bytes).map_err(|e| e.to_string())?
        else {
            return Err(format!("{object}: index not in the tail"));
        };
        for entry in index.entries_for(stream, start, end) {
            let r = entry.byte_range();
            let block = bytes.slice(r.start as usize..r.end as usize);
            for b in decode_block(object, entry, block).map_err(|e| e.to_string())? {
                if b.base_offset < start || b.base_offset >= end {
                    continue;
                }
                if let Some(next) = expected_next {
                    if b.base_offset != next {
                        return Err(format!(
                            "{stream}: a hole at {next} (next batch at {})",
                            b.base_offset
                        ));
                    }
                }
                expected_next = Some(b.next_offset());
                out.push(b);
            }
        }
    }
    if expected_next.unwrap_or(s.start) < s.end {
        return Err(format!(
            "{stream}: reads stop at {expected_next:?}, the end is {}",
            s.end
        ));
    }
    Ok(out)
}

/// The S3 test server named by `OBJSTREAM_TEST_S3_*` (`scripts/s3-server.sh env`), with a
/// prefix of its own, opened as every test of the workspace opens it; `None` when it is not
/// configured.
pub fn s3_store() -> Option<(Arc<dyn ObjectStore>, Path)> {
    std::env::var("OBJSTREAM_TEST_S3_ENDPOINT").ok()?;
    let s3 = support::s3_store();
    Some((s3.store, s3.prefix))
}
