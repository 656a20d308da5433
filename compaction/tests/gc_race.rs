//! Garbage collection racing a slow upload: a store whose commit is held up for longer than the
//! grace period (a store brownout) must not lose what it acknowledged.
//!
//! The upload's objects are in the object store and its commit is not in the manifest, so the
//! collector sees orphans old enough to delete. It records them as collected before deleting
//! them; the late commit is then refused, and the store uploads the same data again under fresh
//! ids. Every acknowledged append reads back byte for byte from the objects alone (a second node
//! after the first closed the streams), and every object the manifest references exists.
//!
//! The other order is tested too: the commit lands between the collector's pick and its
//! collection, the collection is refused, and the objects stay.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;

use futures::TryStreamExt;
use object_store::memory::InMemory;
use object_store::ObjectStore;
use objstream::keys::parse_object_path;
use objstream::manifest::{ManifestState, MetaStore, ObjectStoreMetaStore, WriterToken};
use objstream::testing::{CallFilter, FaultyObjectStore, Gate, OpKind};
use objstream::{
    Components, NodeId, ObjectId, Offset, RecordBatch, Settings, Store, StoredBatch, Stream,
    WalSettings,
};
use objstream_compaction::{Compactor, CompactorComponents, CompactorSettings, ManualClock};
use tokio::task::JoinHandle;

const PREFIX: &str = "cluster";
const GRACE_MS: u64 = 10_000;

/// The shared node settings, with a stream object for any stream past 8 KiB in an upload.
fn node_settings(dir: &std::path::Path, id: u64) -> Settings {
    Settings {
        stream_split_bytes: 8 << 10,
        ..common::node_settings(dir, id)
    }
}

fn compactor_settings() -> CompactorSettings {
    CompactorSettings {
        grace_period_ms: GRACE_MS,
        pass_interval_ms: 1_000,
        ..CompactorSettings::default()
    }
}

/// Batch `n` of stream `stream`: recognisable bytes of varying size.
fn batch(stream: u64, n: u64) -> RecordBatch {
    let mut payload = format!("stream {stream} event {n}: ").into_bytes();
    payload.resize(
        300 + (n as usize * 53) % 900,
        b'a' + ((n + stream) % 26) as u8,
    );
    RecordBatch::new(1, n as i64, payload)
}

async fn append(stream: &Stream, from: u64, to: u64) {
    for n in from..to {
        let done = stream
            .append(batch(stream.id().0, n))
            .await
            .expect("append");
        assert_eq!(done.base_offset, Offset(n), "one record per batch");
    }
}

async fn read_all(stream: &Stream, end: u64) -> Vec<StoredBatch> {
    let mut out: Vec<StoredBatch> = Vec::new();
    let mut pos = Offset(0);
    while pos < Offset(end) {
        let got = stream
            .fetch(pos, Offset(end), 64 << 10)
            .await
            .expect("fetch");
        assert!(!got.is_empty(), "nothing at {pos}");
        pos = got.last().expect("a batch").next_offset();
        out.extend(got);
    }
    out
}

async fn listed(objects: &Arc<dyn ObjectStore>) -> BTreeSet<ObjectId> {
    let root = object_store::path::Path::from(PREFIX).join("objects");
    objects
        .list(Some(&root))
        .try_collect::<Vec<_>>()
        .await
        .expect("list")
        .iter()
        .filter_map(|m| parse_object_path(&m.location))
        .collect()
}

fn wall_clock_ms() -> u64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    since.expect("a clock after 1970").as_millis() as u64
}

/// A writer node whose latest upload is stored but whose commit is held, beside a compactor.
struct HeldCommit {
    _dir: tempfile::TempDir,
    objects: Arc<dyn ObjectStore>,
    writer: Store,
    streams: [Stream; 2],
    /// Holds the writer's manifest writes; opening it lets the commit go.
    commit_gate: Gate,
    flush: JoinHandle<objstream::Result<()>>,
    /// The objects of the held upload.
    held: Vec<ObjectId>,
    /// The compactor's object store: a test may hold its manifest writes too.
    compactor_objects: Arc<FaultyObjectStore>,
    compactor: Compactor,
    clock: Arc<ManualClock>,
    observer: ObjectStoreMetaStore,
}

/// Stream 0 gets 60 batches, enough for a stream object of its own; stream 1 gets 12.
const ENDS: [u64; 2] = [60, 12];

impl HeldCommit {
    async fn new() -> HeldCommit {
        let dir = tempfile::tempdir().unwrap();
        let objects: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let faulty = Arc::new(FaultyObjectStore::new(objects.clone()));
        let writer = Store::open(
            node_settings(dir.path(), 1),
            Components::new(faulty.clone() as Arc<dyn ObjectStore>, PREFIX),
        )
        .await
        .unwrap();
        let streams = [
            writer.create_stream().await.unwrap(),
            writer.create_stream().await.unwrap(),
        ];
        // A first upload takes a batch of object ids, so the next one writes nothing to the
        // manifest before its commit.
        append(&streams[0], 0, 20).await;
        append(&streams[1], 0, 5).await;
        writer.flush().await.unwrap();

        let (compactor_objects, compactor, clock, observer) = collector(&objects).await;

        // The store's next manifest write — the commit — is held; its objects land.
        let commit_gate = manifest_gate(&faulty);
        append(&streams[0], 20, ENDS[0]).await;
        append(&streams[1], 5, ENDS[1]).await;
        let flush = tokio::spawn({
            let writer = writer.clone();
            async move { writer.flush().await }
        });
        commit_gate.wait_for_arrival().await;
        let held = uncommitted(&observer, &objects).await;
        assert_eq!(
            held.len(),
            2,
            "a stream object and a stream set object wait: {held:?}"
        );
        HeldCommit {
            _dir: dir,
            objects,
            writer,
            streams,
            commit_gate,
            flush,
            held,
            compactor_objects,
            compactor,
            clock,
            observer,
        }
    }

    /// Every object the manifest references exists, and the streams end where they should.
    async fn check_manifest(&self) -> Arc<ManifestState> {
        check_references(&self.observer, &self.objects).await;
        let state = self.observer.refresh().await.unwrap();
        for (stream, end) in self.streams.iter().zip(ENDS) {
            assert_eq!(state.stream(stream.id()).unwrap().end, Offset(end));
        }
        state
    }

    /// Closes the writer's streams and reads them back on a second node, from objects alone.
    async fn check_reads_from_objects(self) {
        for stream in &self.streams {
            stream.close().await.unwrap();
        }
        self.writer.shutdown().await.unwrap();
        let ids: Vec<_> = self.streams.iter().map(|s| s.id()).collect();
        read_back_on_a_new_node(self._dir.path(), &self.objects, &ids).await;
    }
}

/// A compactor on its own clock (so a test moves it past the grace), through a store whose
/// manifest writes a test may hold, and an observer of the manifest.
async fn collector(
    objects: &Arc<dyn ObjectStore>,
) -> (
    Arc<FaultyObjectStore>,
    Compactor,
    Arc<ManualClock>,
    ObjectStoreMetaStore,
) {
    let clock = Arc::new(ManualClock::new(wall_clock_ms()));
    let compactor_objects = Arc::new(FaultyObjectStore::new(objects.clone()));
    let compactor = Compactor::open(
        compactor_settings(),
        CompactorComponents::new(
            compactor_objects.clone() as Arc<dyn ObjectStore>,
            PREFIX,
            NodeId(1_000),
        )
        .with_clock(clock.clone()),
    )
    .await
    .unwrap();
    let observer =
        ObjectStoreMetaStore::open(objects.clone(), PREFIX.into(), WriterToken(7), 1_000)
            .await
            .unwrap();
    (compactor_objects, compactor, clock, observer)
}

/// The objects in the store that the manifest does not reference.
async fn uncommitted(
    observer: &ObjectStoreMetaStore,
    objects: &Arc<dyn ObjectStore>,
) -> Vec<ObjectId> {
    let state = observer.refresh().await.unwrap();
    listed(objects)
        .await
        .into_iter()
        .filter(|id| state.object(*id).is_none())
        .collect()
}

/// Every object the manifest references exists.
async fn check_references(observer: &ObjectStoreMetaStore, objects: &Arc<dyn ObjectStore>) {
    let state = observer.refresh().await.unwrap();
    let listed = listed(objects).await;
    for object in state.objects() {
        assert!(
            listed.contains(&object.id),
            "the manifest references {}, which is gone",
            object.id
        );
    }
}

/// Reads `streams` back on a fresh node from objects alone: every batch up to its end in
/// `ENDS`, byte for byte.
async fn read_back_on_a_new_node(
    dir: &std::path::Path,
    objects: &Arc<dyn ObjectStore>,
    streams: &[objstream::StreamId],
) {
    let reader = Store::open(
        node_settings(dir, 9),
        Components::new(objects.clone(), PREFIX),
    )
    .await
    .unwrap();
    for (&id, end) in streams.iter().zip(ENDS) {
        let stream = reader.open_stream(id).await.unwrap();
        let got = read_all(&stream, end).await;
        assert_eq!(got.len() as u64, end, "{id}");
        for (n, stored) in got.iter().enumerate() {
            assert_eq!(stored.base_offset, Offset(n as u64), "{id}");
            assert_eq!(stored.batch, batch(id.0, n as u64), "{id} batch {n}");
        }
    }
}

/// Holds every record write to the manifest through `store`.
fn manifest_gate(store: &FaultyObjectStore) -> Gate {
    store.gate_matching(CallFilter {
        op: Some(OpKind::Put),
        prefix: Some(format!("{PREFIX}/manifest/")),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_held_up_past_the_grace_never_references_a_deleted_object() {
    let mut t = HeldCommit::new().await;
    // Passes while the commit is held, past the grace: the collector takes the held objects.
    let report = t.compactor.run_pass().await.unwrap();
    assert_eq!(report.gc.deleted, 0, "{report:?}");
    // Past the grace by the collector's clock, and past the objects' wall-clock times.
    t.clock.advance(GRACE_MS + 60_000);
    let report = t.compactor.run_pass().await.unwrap();
    assert_eq!(report.gc.collected, t.held.len(), "{report:?}");
    let state = t.observer.refresh().await.unwrap();
    let listed_now = listed(&t.objects).await;
    for id in &t.held {
        assert!(state.is_collected(*id), "{id} was deleted without a record");
        assert!(!listed_now.contains(id), "{id} is still there: {report:?}");
    }
    assert!(!t.flush.is_finished(), "the commit is still held");

    // The commit goes through: refused for the collected ids, the data is uploaded again.
    t.commit_gate.open();
    (&mut t.flush)
        .await
        .unwrap()
        .expect("the flush succeeds after uploading again");
    let state = t.check_manifest().await;
    assert!(t.held.iter().all(|id| state.object(*id).is_none()));

    // Later passes change nothing of that.
    for _ in 0..2 {
        t.clock.advance(GRACE_MS + 1);
        t.compactor.run_pass().await.unwrap();
    }
    t.check_manifest().await;
    t.check_reads_from_objects().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_that_lands_before_the_collection_keeps_its_objects() {
    let mut t = HeldCommit::new().await;
    t.compactor.run_pass().await.unwrap();
    t.clock.advance(GRACE_MS + 60_000);
    // The collector picks the held objects; its collection is held in turn.
    let collect_gate = manifest_gate(&t.compactor_objects);
    let pass = tokio::spawn({
        let compactor = t.compactor.clone();
        async move { compactor.run_pass().await }
    });
    collect_gate.wait_for_arrival().await;
    t.commit_gate.open();
    (&mut t.flush)
        .await
        .unwrap()
        .expect("the commit lands first");
    collect_gate.open();
    let report = pass.await.unwrap().unwrap();
    assert_eq!(report.gc.collected, 0, "{report:?}");
    assert_eq!(report.gc.committed_meanwhile, t.held.len(), "{report:?}");
    let state = t.check_manifest().await;
    for id in &t.held {
        assert!(state.object(*id).is_some(), "{id} was committed as it was");
        assert!(!state.is_collected(*id));
    }
    t.clock.advance(GRACE_MS + 1);
    t.compactor.run_pass().await.unwrap();
    t.check_manifest().await;
    t.check_reads_from_objects().await;
}

/// A takeover held up the same way: node 1 dies with its acknowledged batches only in its
/// object WAL; node 2 recovers it, and the recovered objects land but their commit is held
/// past the grace, so the collector takes them. The recovery is refused for the collected ids,
/// uploads the same batches again under fresh ids, and finishes: every batch node 1
/// acknowledged reads back from objects alone, and the manifest references no deleted object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_takeover_whose_commit_is_held_past_the_grace_uploads_again() {
    let dir = tempfile::tempdir().unwrap();
    let objects: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let failed = Store::open(
        Settings {
            wal: WalSettings::object(None),
            ..node_settings(dir.path(), 1)
        },
        Components::new(objects.clone(), PREFIX),
    )
    .await
    .unwrap();
    let streams = [
        failed.create_stream().await.unwrap(),
        failed.create_stream().await.unwrap(),
    ];
    append(&streams[0], 0, ENDS[0]).await;
    append(&streams[1], 0, ENDS[1]).await;
    let (_, compactor, clock, observer) = collector(&objects).await;

    let faulty = Arc::new(FaultyObjectStore::new(objects.clone()));
    let recoverer = Store::open(
        node_settings(dir.path(), 2),
        Components::new(faulty.clone() as Arc<dyn ObjectStore>, PREFIX),
    )
    .await
    .unwrap();
    // The recovered objects' PUTs are held until the manifest gate is in place, so that the
    // commit after them (and not the fence or the id allocation before) is what it holds.
    let data_gate = faulty.gate_matching(CallFilter {
        op: Some(OpKind::Put),
        prefix: Some(format!("{PREFIX}/objects/")),
    });
    let recovery = tokio::spawn({
        let recoverer = recoverer.clone();
        async move {
            recoverer
                .recover_node_from(NodeId(1), &WalSettings::object(None))
                .await
        }
    });
    data_gate.wait_for_arrival().await;
    let commit_gate = manifest_gate(&faulty);
    data_gate.open();
    commit_gate.wait_for_arrival().await;
    let held = uncommitted(&observer, &objects).await;
    assert_eq!(
        held.len(),
        2,
        "a stream object and a stream set object: {held:?}"
    );

    compactor.run_pass().await.unwrap();
    clock.advance(GRACE_MS + 60_000);
    let report = compactor.run_pass().await.unwrap();
    assert_eq!(report.gc.collected, held.len(), "{report:?}");
    assert!(!recovery.is_finished(), "the commit is still held");

    commit_gate.open();
    let report = recovery
        .await
        .unwrap()
        .expect("the recovery succeeds after uploading again");
    assert_eq!(report.batches_recovered as u64, ENDS[0] + ENDS[1]);
    assert_eq!(report.objects_written, 2);
    check_references(&observer, &objects).await;
    let state = observer.refresh().await.unwrap();
    for id in &held {
        assert!(
            state.object(*id).is_none() && state.is_collected(*id),
            "{id}"
        );
    }
    // The failed node, if it still runs, is fenced.
    let err = streams[0].append(batch(0, ENDS[0])).await.unwrap_err();
    assert!(err.is_fenced(), "{err}");
    clock.advance(GRACE_MS + 1);
    compactor.run_pass().await.unwrap();
    check_references(&observer, &objects).await;
    let ids: Vec<_> = streams.iter().map(|s| s.id()).collect();
    read_back_on_a_new_node(dir.path(), &objects, &ids).await;
}
