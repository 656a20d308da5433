//! Garbage collection racing a slow upload: a store whose commit is held up for longer than the
//! grace period (a store brownout) must not lose what it acknowledged.
//!
//! The upload's objects are in the object store and its commit is not in the manifest, so the
//! collector sees orphans old enough to delete. It records them as collected before deleting
//! them; the late commit is then refused, and the store uploads the same data again under fresh
//! ids. Every acknowledged append reads back byte for byte from the objects alone (a second node
//! after the first closed the streams), and every object the manifest references exists.

use std::collections::BTreeSet;
use std::sync::Arc;

use futures::TryStreamExt;
use object_store::memory::InMemory;
use object_store::ObjectStore;
use objstream::keys::parse_object_path;
use objstream::manifest::{MetaStore, ObjectStoreMetaStore, WriterToken};
use objstream::testing::{CallFilter, FaultyObjectStore, OpKind};
use objstream::{
    Components, NodeId, ObjectId, Offset, RecordBatch, Settings, Store, StoredBatch, Stream,
    WalSettings,
};
use objstream_compaction::{Compactor, CompactorComponents, CompactorSettings, ManualClock};

const PREFIX: &str = "cluster";
const GRACE_MS: u64 = 10_000;

fn node_settings(dir: &std::path::Path, id: u64) -> Settings {
    Settings {
        node_id: NodeId(id),
        wal: WalSettings::File {
            dir: dir.join(format!("wal-{id}")),
            segment_bytes: 4 << 20,
        },
        upload_threshold_bytes: 1 << 20,
        upload_interval_ms: 60_000,
        block_bytes: 4 << 10,
        stream_split_bytes: 8 << 10,
        max_batch_bytes: 1 << 20,
        ..Settings::default()
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

async fn append(stream: &Stream, id: u64, from: u64, to: u64) {
    for n in from..to {
        let done = stream.append(batch(id, n)).await.expect("append");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_held_up_past_the_grace_never_references_a_deleted_object() {
    let dir = tempfile::tempdir().unwrap();
    let objects: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let faulty = Arc::new(FaultyObjectStore::new(objects.clone()));
    let writer = Store::open(
        node_settings(dir.path(), 1),
        Components::new(faulty.clone() as Arc<dyn ObjectStore>, PREFIX),
    )
    .await
    .unwrap();
    let big = writer.create_stream().await.unwrap();
    let small = writer.create_stream().await.unwrap();
    let (big_id, small_id) = (big.id().0, small.id().0);
    // A first upload takes a batch of object ids, so the next one writes nothing to the
    // manifest before its commit.
    append(&big, big_id, 0, 20).await;
    append(&small, small_id, 0, 5).await;
    writer.flush().await.unwrap();

    let clock = Arc::new(ManualClock::new(wall_clock_ms()));
    let compactor = Compactor::open(
        compactor_settings(),
        CompactorComponents::new(objects.clone(), PREFIX, NodeId(1_000)).with_clock(clock.clone()),
    )
    .await
    .unwrap();
    let observer =
        ObjectStoreMetaStore::open(objects.clone(), PREFIX.into(), WriterToken(7), 1_000)
            .await
            .unwrap();

    // The store's next manifest write — the commit — is held; its objects land.
    let gate = faulty.gate_matching(CallFilter {
        op: Some(OpKind::Put),
        prefix: Some(format!("{PREFIX}/manifest/")),
    });
    append(&big, big_id, 20, 60).await;
    append(&small, small_id, 5, 12).await;
    let flush = tokio::spawn({
        let writer = writer.clone();
        async move { writer.flush().await }
    });
    gate.wait_for_arrival().await;
    let state = observer.refresh().await.unwrap();
    let held: Vec<ObjectId> = listed(&objects)
        .await
        .into_iter()
        .filter(|id| state.object(*id).is_none())
        .collect();
    assert_eq!(
        held.len(),
        2,
        "a stream object and a stream set object wait: {held:?}"
    );

    // Passes while the commit is held, past the grace: the collector takes the held objects.
    let report = compactor.run_pass().await.unwrap();
    assert_eq!(report.gc.deleted, 0, "{report:?}");
    // Past the grace by the collector's clock, and past the objects' wall-clock times.
    clock.advance(GRACE_MS + 60_000);
    let report = compactor.run_pass().await.unwrap();
    assert_eq!(report.gc.collected, held.len(), "{report:?}");
    let state = observer.refresh().await.unwrap();
    let now_listed = listed(&objects).await;
    for id in &held {
        assert!(state.is_collected(*id), "{id} was deleted without a record");
        assert!(!now_listed.contains(id), "{id} is still there: {report:?}");
    }
    assert!(!flush.is_finished(), "the commit is still held");

    // The commit goes through: refused for the collected ids, the data is uploaded again.
    gate.open();
    flush
        .await
        .unwrap()
        .expect("the flush succeeds after uploading again");
    let state = observer.refresh().await.unwrap();
    let now_listed = listed(&objects).await;
    for object in state.objects() {
        assert!(
            now_listed.contains(&object.id),
            "the manifest references {}, which is gone",
            object.id
        );
        assert!(!held.contains(&object.id));
    }
    assert_eq!(state.stream(big.id()).unwrap().end, Offset(60));
    assert_eq!(state.stream(small.id()).unwrap().end, Offset(12));

    // A later pass changes nothing of that, and the streams read back from objects alone.
    clock.advance(GRACE_MS + 1);
    compactor.run_pass().await.unwrap();
    clock.advance(GRACE_MS + 1);
    compactor.run_pass().await.unwrap();
    big.close().await.unwrap();
    small.close().await.unwrap();
    writer.shutdown().await.unwrap();
    let reader = Store::open(
        node_settings(dir.path(), 2),
        Components::new(objects.clone(), PREFIX),
    )
    .await
    .unwrap();
    for (id, end) in [(big.id(), 60), (small.id(), 12)] {
        let stream = reader.open_stream(id).await.unwrap();
        let got = read_all(&stream, end).await;
        assert_eq!(got.len() as u64, end, "{id}");
        for (n, stored) in got.iter().enumerate() {
            assert_eq!(stored.base_offset, Offset(n as u64), "{id}");
            assert_eq!(stored.batch, batch(id.0, n as u64), "{id} batch {n}");
        }
    }
}
