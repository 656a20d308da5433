//! Eight writers race on one manifest, each through its own `ObjectStoreMetaStore` (its own
//! writer token, one node each), on `InMemory` and on `LocalFileSystem`. A fresh reader must
//! then see every commit exactly once at dense sequence numbers, and commits under stale node
//! or stream epochs must be refused.

use std::sync::Arc;

use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutPayload};
use objstream::manifest::{
    Change, ManifestStreamRange, MetaStore, ObjectKind, ObjectMeta, ObjectStoreMetaStore, Outcome,
    StreamStatus, WriterToken,
};
use objstream::{Epoch, NodeId, ObjectId, Offset, StreamId};

const WRITERS: u64 = 8;
const COMMITS_PER_WRITER: u64 = 50;
/// Each writer starts its node, creates two streams and allocates ids: four commits; the
/// rest commit one object each, alternating between its two streams.
const OBJECTS_PER_WRITER: u64 = COMMITS_PER_WRITER - 4;
const RECORDS_PER_OBJECT: u64 = 10;
const CHECKPOINT_EVERY: u64 = 16;

fn prefix() -> Path {
    Path::from("race")
}

fn token(node: NodeId) -> WriterToken {
    WriterToken(0x5eed_0000 + u128::from(node.get()))
}

async fn open(store: &Arc<dyn ObjectStore>, writer: WriterToken) -> ObjectStoreMetaStore {
    ObjectStoreMetaStore::open(Arc::clone(store), prefix(), writer, CHECKPOINT_EVERY)
        .await
        .unwrap()
}

fn one_object(
    node: NodeId,
    node_epoch: Epoch,
    id: u64,
    stream: StreamId,
    stream_epoch: Epoch,
    start: u64,
) -> Change {
    Change::CommitObjects {
        node,
        node_epoch,
        objects: vec![ObjectMeta {
            id: ObjectId(id),
            size: 4096,
            kind: ObjectKind::StreamSet,
            ranges: vec![ManifestStreamRange {
                stream,
                epoch: stream_epoch,
                start: Offset(start),
                end: Offset(start + RECORDS_PER_OBJECT),
            }],
        }],
        wal_floor: None,
    }
}

/// What one writer did.
struct Writer {
    meta: ObjectStoreMetaStore,
    node: NodeId,
    streams: [StreamId; 2],
    spare_id: u64,
    seqs: Vec<u64>,
}

async fn run_writer(
    store: Arc<dyn ObjectStore>,
    node: NodeId,
    start: Arc<tokio::sync::Barrier>,
) -> Writer {
    let meta = open(&store, token(node)).await;
    start.wait().await;
    let mut seqs = Vec::new();
    let started = meta.commit(Change::OpenNode { node }).await.unwrap();
    assert_eq!(started.outcome, Outcome::NodeEpoch(Epoch(1)));
    seqs.push(started.seq);
    let mut streams = [StreamId(0); 2];
    for stream in &mut streams {
        let created = meta
            .commit(Change::CreateStream {
                node,
                node_epoch: Epoch(1),
            })
            .await
            .unwrap();
        let Outcome::StreamCreated(id) = created.outcome else {
            panic!("{:?}", created.outcome)
        };
        *stream = id;
        seqs.push(created.seq);
    }
    let allocated = meta
        .commit(Change::AllocateObjectIds {
            node,
            node_epoch: Epoch(1),
            count: OBJECTS_PER_WRITER + 1,
        })
        .await
        .unwrap();
    let Outcome::ObjectIds(ids) = allocated.outcome else {
        panic!("{:?}", allocated.outcome)
    };
    seqs.push(allocated.seq);
    let spare_id = ids.end - 1;
    for (i, id) in ids.take(OBJECTS_PER_WRITER as usize).enumerate() {
        let i = i as u64;
        let stream = streams[(i % 2) as usize];
        let start = (i / 2) * RECORDS_PER_OBJECT;
        let committed = meta
            .commit(one_object(node, Epoch(1), id, stream, Epoch(1), start))
            .await
            .unwrap();
        assert_eq!(committed.outcome, Outcome::Done);
        seqs.push(committed.seq);
    }
    Writer {
        meta,
        node,
        streams,
        spare_id,
        seqs,
    }
}

async fn race(store: Arc<dyn ObjectStore>) {
    let began = std::time::Instant::now();
    let start = Arc::new(tokio::sync::Barrier::new(WRITERS as usize));
    let tasks: Vec<_> = (0..WRITERS)
        .map(|n| {
            tokio::spawn(run_writer(
                Arc::clone(&store),
                NodeId(n),
                Arc::clone(&start),
            ))
        })
        .collect();
    let mut writers = Vec::new();
    for task in tasks {
        writers.push(task.await.unwrap());
    }

    eprintln!(
        "{store}: {} commits by {WRITERS} racing writers in {:?}",
        WRITERS * COMMITS_PER_WRITER,
        began.elapsed()
    );

    // Every commit got its own sequence number, and together they are dense.
    let mut seqs: Vec<u64> = writers.iter().flat_map(|w| w.seqs.clone()).collect();
    seqs.sort_unstable();
    let total = WRITERS * COMMITS_PER_WRITER;
    assert_eq!(seqs, (1..=total).collect::<Vec<_>>());

    // A writer learns of others' records only by losing a race for a number, so a writer whose
    // numbers jump lost at least one race: the collisions this test is about did happen.
    let collided = writers
        .iter()
        .filter(|w| w.seqs.windows(2).any(|pair| pair[1] != pair[0] + 1))
        .count();
    assert!(collided > 0, "the writers never collided");

    // A fresh reader sees each commit exactly once.
    let reader = open(&store, WriterToken(1)).await;
    let state = reader.state().await.unwrap();
    assert_eq!(state.seq(), total);
    assert_eq!(state.next_stream_id(), StreamId(2 * WRITERS));
    assert_eq!(
        state.next_object_id(),
        ObjectId(WRITERS * (OBJECTS_PER_WRITER + 1))
    );
    assert_eq!(state.objects().count() as u64, WRITERS * OBJECTS_PER_WRITER);
    let per_stream = OBJECTS_PER_WRITER / 2;
    for w in &writers {
        assert_eq!(state.node(w.node).unwrap().epoch, Epoch(1));
        for stream in w.streams {
            let meta = state.stream(stream).unwrap();
            assert_eq!(meta.owner, w.node);
            assert_eq!(meta.end, Offset(per_stream * RECORDS_PER_OBJECT));
            assert_eq!(meta.objects.len() as u64, per_stream);
        }
    }
    let past_the_tail = prefix().join("manifest").join(format!("{:020}", total + 1));
    assert!(matches!(
        store.head(&past_the_tail).await,
        Err(object_store::Error::NotFound { .. })
    ));

    stale_epochs_are_refused(&store, &writers).await;
}

async fn stale_epochs_are_refused(store: &Arc<dyn ObjectStore>, writers: &[Writer]) {
    let (zero, one) = (&writers[0], &writers[1]);
    let end = Offset(OBJECTS_PER_WRITER / 2 * RECORDS_PER_OBJECT);

    // Node 0 restarts: its old epoch can no longer commit.
    let restarted = open(store, WriterToken(2)).await;
    let again = restarted
        .commit(Change::OpenNode { node: zero.node })
        .await
        .unwrap();
    assert_eq!(again.outcome, Outcome::NodeEpoch(Epoch(2)));
    let stale = zero
        .meta
        .commit(one_object(
            zero.node,
            Epoch(1),
            zero.spare_id,
            zero.streams[0],
            Epoch(1),
            end.get(),
        ))
        .await
        .unwrap_err();
    assert!(stale.is_fenced(), "{stale}");

    // Node 1 fails: the restarted node 0 fences it and takes its stream over.
    restarted
        .commit(Change::FenceNode {
            node: one.node,
            epoch: Epoch(1),
        })
        .await
        .unwrap();
    let opened = restarted
        .commit(Change::OpenStream {
            stream: one.streams[0],
            node: zero.node,
            node_epoch: Epoch(2),
        })
        .await
        .unwrap();
    assert_eq!(
        opened.outcome,
        Outcome::StreamOpened {
            epoch: Epoch(2),
            start: Offset(0),
            end
        }
    );
    let zombie = one
        .meta
        .commit(one_object(
            one.node,
            Epoch(1),
            one.spare_id,
            one.streams[0],
            Epoch(1),
            end.get(),
        ))
        .await
        .unwrap_err();
    assert!(zombie.is_fenced(), "{zombie}");
    let reopen = one
        .meta
        .commit(Change::OpenStream {
            stream: one.streams[1],
            node: one.node,
            node_epoch: Epoch(1),
        })
        .await
        .unwrap_err();
    assert!(reopen.is_fenced(), "{reopen}");

    // The new owner commits under the new stream epoch only.
    let old_epoch = restarted
        .commit(one_object(
            zero.node,
            Epoch(2),
            zero.spare_id,
            one.streams[0],
            Epoch(1),
            end.get(),
        ))
        .await
        .unwrap_err();
    assert!(old_epoch.is_fenced(), "{old_epoch}");
    restarted
        .commit(one_object(
            zero.node,
            Epoch(2),
            zero.spare_id,
            one.streams[0],
            Epoch(2),
            end.get(),
        ))
        .await
        .unwrap();

    let state = open(store, WriterToken(3)).await.state().await.unwrap();
    let taken = state.stream(one.streams[0]).unwrap();
    assert_eq!(taken.status, StreamStatus::Open);
    assert_eq!((taken.owner, taken.epoch), (zero.node, Epoch(2)));
    assert_eq!(taken.end, end.add(RECORDS_PER_OBJECT));
    assert_eq!(
        state.stream(one.streams[1]).unwrap().owner_node_epoch,
        Epoch(1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_writers_on_in_memory_commit_each_change_exactly_once() {
    race(Arc::new(InMemory::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_writers_on_local_files_commit_each_change_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn ObjectStore> =
        Arc::new(LocalFileSystem::new_with_prefix(dir.path()).unwrap());

    // The manifest relies on create-if-absent; check this store really refuses a second create.
    let probe = Path::from("probe");
    store
        .put_opts(
            &probe,
            PutPayload::from_static(b"a"),
            PutMode::Create.into(),
        )
        .await
        .unwrap();
    let second = store
        .put_opts(
            &probe,
            PutPayload::from_static(b"b"),
            PutMode::Create.into(),
        )
        .await;
    assert!(
        matches!(second, Err(object_store::Error::AlreadyExists { .. })),
        "{second:?}"
    );
    let kept = store.get(&probe).await.unwrap().bytes().await.unwrap();
    assert_eq!(&kept[..], b"a");

    race(store).await;
}
