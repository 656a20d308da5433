//! Tests of [`ObjectStoreMetaStore`] on an in-memory store.

use object_store::memory::InMemory;

use super::*;
use crate::manifest::change::{ManifestStreamRange, ObjectKind, ObjectMeta};
use crate::manifest::record::{seal_frame, FrameKind};
use crate::manifest::test_support::TestStore;
use crate::types::{Epoch, NodeId, ObjectId, Offset, StreamId};

const A: NodeId = NodeId(1);
const B: NodeId = NodeId(2);
const ME: WriterToken = WriterToken(0xa11ce);
const OTHER: WriterToken = WriterToken(0xb0b);

fn memory() -> Arc<dyn ObjectStore> {
    Arc::new(InMemory::new())
}

fn prefix() -> Path {
    Path::from("cluster")
}

async fn open(
    store: &Arc<dyn ObjectStore>,
    writer: WriterToken,
    every: u64,
) -> ObjectStoreMetaStore {
    ObjectStoreMetaStore::open(Arc::clone(store), prefix(), writer, every)
        .await
        .unwrap()
}

fn record_key(seq: u64) -> Path {
    ManifestPaths::new(&prefix()).record(seq)
}

async fn exists(store: &Arc<dyn ObjectStore>, key: &Path) -> bool {
    match store.head(key).await {
        Ok(_) => true,
        Err(object_store::Error::NotFound { .. }) => false,
        Err(e) => panic!("head {key}: {e}"),
    }
}

async fn put_record(store: &Arc<dyn ObjectStore>, seq: u64, writer: WriterToken, change: Change) {
    let bytes = encode_record(&Record {
        seq,
        writer,
        change,
    })
    .unwrap();
    store.put(&record_key(seq), bytes.into()).await.unwrap();
}

fn json(state: &ManifestState) -> String {
    serde_json::to_string(state).unwrap()
}

/// Starts node A, creates a stream, allocates ids and commits `objects` objects of 10 offsets.
async fn fill(meta: &ObjectStoreMetaStore, objects: u64) -> StreamId {
    meta.commit(Change::OpenNode { node: A }).await.unwrap();
    let created = meta
        .commit(Change::CreateStream {
            node: A,
            node_epoch: Epoch(1),
        })
        .await
        .unwrap();
    let Outcome::StreamCreated(stream) = created.outcome else {
        panic!("{:?}", created.outcome);
    };
    let ids = meta
        .commit(Change::AllocateObjectIds {
            node: A,
            node_epoch: Epoch(1),
            count: objects.max(1),
        })
        .await
        .unwrap();
    let Outcome::ObjectIds(ids) = ids.outcome else {
        panic!("{:?}", ids.outcome);
    };
    for (i, id) in ids.take(objects as usize).enumerate() {
        meta.commit(commit_of(stream, id, i as u64 * 10))
            .await
            .unwrap();
    }
    stream
}

fn commit_of(stream: StreamId, id: u64, start: u64) -> Change {
    Change::CommitObjects {
        node: A,
        node_epoch: Epoch(1),
        objects: vec![ObjectMeta {
            id: ObjectId(id),
            size: 64,
            kind: ObjectKind::StreamSet,
            ranges: vec![ManifestStreamRange {
                stream,
                epoch: Epoch(1),
                start: Offset(start),
                end: Offset(start + 10),
            }],
        }],
        wal_floor: None,
    }
}

#[tokio::test]
async fn opening_an_empty_prefix_gives_the_empty_state() {
    let store = memory();
    let meta = open(&store, ME, 4).await;
    assert_eq!(*meta.state().await.unwrap(), ManifestState::new());
    assert_eq!(meta.refresh().await.unwrap().seq(), 0);
}

#[tokio::test]
async fn commits_take_dense_sequence_numbers_and_survive_a_reopen() {
    let store = memory();
    let meta = open(&store, ME, 0).await;
    fill(&meta, 3).await;
    let state = meta.state().await.unwrap();
    assert_eq!(state.seq(), 6);
    for seq in 1..=6 {
        assert!(exists(&store, &record_key(seq)).await, "record {seq}");
    }
    assert!(!exists(&store, &record_key(7)).await);
    let reopened = open(&store, OTHER, 0).await;
    assert_eq!(*reopened.state().await.unwrap(), *state);
}

#[tokio::test]
async fn a_checkpoint_plus_the_records_after_it_reopen_to_the_same_state() {
    let store = memory();
    let meta = open(&store, ME, 4).await;
    fill(&meta, 7).await;
    let state = meta.state().await.unwrap();
    assert_eq!(state.seq(), 10);
    let paths = ManifestPaths::new(&prefix());
    for seq in [4, 8] {
        assert!(
            exists(&store, &paths.checkpoint(seq)).await,
            "checkpoint {seq}"
        );
    }
    // Without the records the checkpoint covers, only the checkpoint can give this state.
    for seq in 1..=8 {
        store.delete(&record_key(seq)).await.unwrap();
    }
    let reopened = open(&store, OTHER, 4).await;
    assert_eq!(json(&reopened.state().await.unwrap()), json(&state));
}

#[tokio::test]
async fn opening_picks_the_newest_checkpoint_whatever_the_list_order() {
    let inner = memory();
    let writer = open(&inner, ME, 2).await;
    fill(&writer, 5).await;
    let expected = writer.state().await.unwrap();
    assert_eq!(expected.seq(), 8);
    for seq in 1..=8 {
        inner.delete(&record_key(seq)).await.unwrap();
    }
    let shuffled: Arc<dyn ObjectStore> = Arc::new(TestStore::new(Arc::clone(&inner)));
    let reopened = open(&shuffled, OTHER, 2).await;
    assert_eq!(json(&reopened.state().await.unwrap()), json(&expected));
}

#[tokio::test]
async fn nothing_is_listed_after_open() {
    let test = Arc::new(TestStore::new(memory()));
    let store: Arc<dyn ObjectStore> = test.clone();
    let meta = open(&store, ME, 2).await;
    assert_eq!(test.lists(), 1);
    fill(&meta, 4).await;
    meta.refresh().await.unwrap();
    let other = open(&store, OTHER, 2).await;
    other.commit(Change::OpenNode { node: B }).await.unwrap();
    meta.commit(Change::OpenNode { node: A }).await.unwrap();
    meta.refresh().await.unwrap();
    assert_eq!(test.lists(), 2, "one LIST per open, none after");
}

#[tokio::test]
async fn our_own_record_already_at_the_next_number_is_a_success_without_a_duplicate() {
    let store = memory();
    let meta = open(&store, ME, 0).await;
    let change = Change::OpenNode { node: A };
    put_record(&store, 1, ME, change.clone()).await;
    let committed = meta.commit(change).await.unwrap();
    assert_eq!(committed.seq, 1);
    assert_eq!(committed.outcome, Outcome::NodeEpoch(Epoch(1)));
    assert!(!exists(&store, &record_key(2)).await);
    let reader = open(&store, OTHER, 0).await;
    assert_eq!(
        reader.state().await.unwrap().node(A).unwrap().epoch,
        Epoch(1)
    );
}

#[tokio::test]
async fn a_create_the_client_retried_after_it_landed_is_resolved_by_the_writer_token() {
    let test = Arc::new(TestStore::new(memory()));
    let store: Arc<dyn ObjectStore> = test.clone();
    let meta = open(&store, ME, 0).await;
    test.echo_next_creates(1);
    let committed = meta.commit(Change::OpenNode { node: A }).await.unwrap();
    assert_eq!(committed.seq, 1);
    assert!(!exists(&store, &record_key(2)).await);
}

#[tokio::test]
async fn the_same_change_by_another_writer_is_not_our_commit() {
    let store = memory();
    let meta = open(&store, ME, 0).await;
    put_record(&store, 1, OTHER, Change::OpenNode { node: A }).await;
    let committed = meta.commit(Change::OpenNode { node: A }).await.unwrap();
    assert_eq!(committed.seq, 2);
    assert_eq!(committed.outcome, Outcome::NodeEpoch(Epoch(2)));
}

#[tokio::test]
async fn a_lost_race_revalidates_the_change_against_the_winners_state() {
    let store = memory();
    let first = open(&store, ME, 0).await;
    let stream = fill(&first, 0).await;
    first.commit(Change::OpenNode { node: B }).await.unwrap();
    first
        .commit(Change::CloseStream {
            stream,
            epoch: Epoch(1),
            node: A,
            node_epoch: Epoch(1),
        })
        .await
        .unwrap();
    let second = open(&store, OTHER, 0).await;
    first
        .commit(Change::OpenStream {
            stream,
            node: A,
            node_epoch: Epoch(1),
        })
        .await
        .unwrap();
    let err = second
        .commit(Change::OpenStream {
            stream,
            node: B,
            node_epoch: Epoch(1),
        })
        .await
        .unwrap_err();
    assert!(
        matches!(err.detail(), ErrorDetail::StreamBusy { owner: A, .. }),
        "{err}"
    );
    // The loser learned the winner's record, and wrote nothing.
    let seen = second.state().await.unwrap();
    assert_eq!(seen.seq(), first.state().await.unwrap().seq());
    assert!(!exists(&store, &record_key(seen.seq() + 1)).await);
}

#[tokio::test]
async fn a_lost_race_for_a_valid_change_commits_at_the_next_number() {
    let store = memory();
    let first = open(&store, ME, 0).await;
    let second = open(&store, OTHER, 0).await;
    first.commit(Change::OpenNode { node: A }).await.unwrap();
    first.commit(Change::OpenNode { node: A }).await.unwrap();
    let committed = second.commit(Change::OpenNode { node: B }).await.unwrap();
    assert_eq!(committed.seq, 3);
    assert_eq!(committed.state.node(A).unwrap().epoch, Epoch(2));
    assert_eq!(first.refresh().await.unwrap().seq(), 3);
}

#[tokio::test]
async fn a_change_already_applied_writes_no_record() {
    let store = memory();
    let meta = open(&store, ME, 0).await;
    let stream = fill(&meta, 1).await;
    let seq = meta.state().await.unwrap().seq();
    let again = meta.commit(commit_of(stream, 0, 0)).await.unwrap();
    assert_eq!(again.outcome, Outcome::AlreadyApplied);
    assert_eq!(again.seq, seq);
    assert!(!exists(&store, &record_key(seq + 1)).await);
}

#[tokio::test]
async fn a_refused_change_writes_no_record() {
    let store = memory();
    let meta = open(&store, ME, 0).await;
    let err = meta
        .commit(Change::CreateStream {
            node: A,
            node_epoch: Epoch(1),
        })
        .await
        .unwrap_err();
    assert_eq!(err.kind(), crate::ErrorKind::InvalidInput);
    assert!(!exists(&store, &record_key(1)).await);
}

#[tokio::test]
async fn a_corrupt_record_fails_open_with_an_error_naming_its_key() {
    let store = memory();
    let meta = open(&store, ME, 0).await;
    fill(&meta, 1).await;
    let key = record_key(2);
    let mut bytes = store
        .get(&key)
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .to_vec();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x20;
    store.put(&key, bytes.into()).await.unwrap();
    let err = ObjectStoreMetaStore::open(Arc::clone(&store), prefix(), OTHER, 0)
        .await
        .unwrap_err();
    match err.detail() {
        ErrorDetail::Corruption { location, .. } => assert_eq!(location, key.as_ref()),
        other => panic!("not a corruption: {other}"),
    }
    assert!(
        meta.refresh().await.is_ok(),
        "the writer has nothing new to read"
    );
}

#[tokio::test]
async fn a_record_that_does_not_apply_is_corruption_not_skipped() {
    let store = memory();
    put_record(
        &store,
        1,
        OTHER,
        Change::CreateStream {
            node: A,
            node_epoch: Epoch(1),
        },
    )
    .await;
    let err = ObjectStoreMetaStore::open(Arc::clone(&store), prefix(), ME, 0)
        .await
        .unwrap_err();
    match err.detail() {
        ErrorDetail::Corruption { location, what } => {
            assert_eq!(location, record_key(1).as_ref());
            assert!(what.contains("does not apply"), "{what}");
        }
        other => panic!("not a corruption: {other}"),
    }
}

#[tokio::test]
async fn a_stale_reader_whose_records_were_removed_restarts_from_the_newest_checkpoint() {
    let store = memory();
    let writer = open(&store, ME, 4).await;
    writer.commit(Change::OpenNode { node: B }).await.unwrap();
    let reader = open(&store, OTHER, 4).await;
    assert_eq!(reader.state().await.unwrap().seq(), 1);
    fill(&writer, 6).await;
    let expected = writer.state().await.unwrap();
    assert_eq!(expected.seq(), 10);
    for seq in 1..=8 {
        store.delete(&record_key(seq)).await.unwrap();
    }
    let caught_up = reader.refresh().await.unwrap();
    assert_eq!(json(&caught_up), json(&expected));
}

#[tokio::test]
async fn a_corrupt_newest_checkpoint_falls_back_to_the_log() {
    let store = memory();
    let meta = open(&store, ME, 4).await;
    fill(&meta, 3).await;
    let expected = meta.state().await.unwrap();
    let key = ManifestPaths::new(&prefix()).checkpoint(4);
    let garbage = seal_frame(FrameKind::Checkpoint, b"{}").unwrap();
    store.delete(&key).await.unwrap();
    store.put(&key, garbage.into()).await.unwrap();
    let reopened = open(&store, OTHER, 4).await;
    assert_eq!(json(&reopened.state().await.unwrap()), json(&expected));
    // Once the records it covered are gone, the corrupt checkpoint is needed: an error.
    for seq in 1..=4 {
        store.delete(&record_key(seq)).await.unwrap();
    }
    let err = ObjectStoreMetaStore::open(Arc::clone(&store), prefix(), OTHER, 4)
        .await
        .unwrap_err();
    match err.detail() {
        ErrorDetail::Corruption { location, .. } => assert_eq!(location, key.as_ref()),
        other => panic!("not a corruption: {other}"),
    }
}

#[tokio::test]
async fn a_failed_checkpoint_write_does_not_fail_the_commit() {
    let test = Arc::new(TestStore::new(memory()));
    let store: Arc<dyn ObjectStore> = test.clone();
    let meta = open(&store, ME, 2).await;
    test.fail_checkpoint_writes();
    fill(&meta, 2).await;
    assert_eq!(meta.state().await.unwrap().seq(), 5);
    let paths = ManifestPaths::new(&prefix());
    assert!(!exists(&store, &paths.checkpoint(2)).await);
    let reopened = open(&store, OTHER, 2).await;
    assert_eq!(reopened.state().await.unwrap().seq(), 5);
}

#[tokio::test]
async fn the_meta_store_is_usable_as_a_trait_object() {
    let store = memory();
    let meta: Arc<dyn MetaStore> = Arc::new(open(&store, ME, 0).await);
    let committed = meta.commit(Change::OpenCompactor).await.unwrap();
    assert_eq!(committed.outcome, Outcome::CompactorEpoch(Epoch(1)));
    assert!(format!("{meta:?}").contains("seq: 1"));
}

mod pruning {
    use std::time::Duration;

    use super::*;
    use crate::manifest::prune::{MIN_LOG_RETENTION, TAIL_FRESHNESS};

    async fn pruning(store: &Arc<dyn ObjectStore>, writer: WriterToken) -> ObjectStoreMetaStore {
        open(store, writer, 4)
            .await
            .with_log_retention(MIN_LOG_RETENTION)
            .unwrap()
    }

    /// A change that is always valid: node 9 starts again.
    fn filler() -> Change {
        Change::OpenNode { node: NodeId(9) }
    }

    async fn settle(meta: &ObjectStoreMetaStore) {
        meta.pruner.as_ref().unwrap().settle().await;
    }

    async fn stored(store: &Arc<dyn ObjectStore>, folder: &str) -> Vec<u64> {
        let paths = ManifestPaths::new(&prefix());
        let listed: Vec<_> = store
            .list(Some(&prefix().join(folder)))
            .try_collect()
            .await
            .unwrap();
        let mut seqs: Vec<u64> = listed
            .iter()
            .filter_map(|m| {
                paths
                    .record_seq(&m.location)
                    .or_else(|| paths.checkpoint_seq(&m.location))
            })
            .collect();
        seqs.sort_unstable();
        seqs
    }

    use futures::TryStreamExt;

    #[tokio::test(start_paused = true)]
    async fn covered_records_go_once_the_retention_has_passed_and_an_opener_sees_the_same_state() {
        let store = memory();
        let meta = pruning(&store, ME).await;
        let _stream = fill(&meta, 6).await; // records 1..=9, checkpoints 4 and 8
        settle_if_running(&meta).await;
        assert_eq!(
            stored(&store, "manifest").await,
            (1..=9).collect::<Vec<_>>()
        );

        // Not yet: the checkpoints are younger than the retention.
        tokio::time::advance(MIN_LOG_RETENTION - Duration::from_secs(1)).await;
        meta.commit(filler()).await.unwrap(); // record 10
        settle_if_running(&meta).await;
        assert_eq!(
            stored(&store, "manifest").await,
            (1..=10).collect::<Vec<_>>()
        );

        tokio::time::advance(Duration::from_secs(2)).await;
        meta.commit(filler()).await.unwrap(); // record 11
        settle(&meta).await;
        assert_eq!(stored(&store, "manifest").await, vec![8, 9, 10, 11]);
        assert_eq!(stored(&store, "manifest-checkpoint").await, vec![8]);

        let reopened = open(&store, OTHER, 4).await;
        assert_eq!(
            json(&reopened.state().await.unwrap()),
            json(&meta.state().await.unwrap())
        );
    }

    async fn settle_if_running(meta: &ObjectStoreMetaStore) {
        meta.pruner.as_ref().unwrap().settle().await;
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_writer_reloads_before_it_commits_so_it_never_recreates_a_pruned_record() {
        let store = memory();
        let idle = open(&store, OTHER, 4).await; // prunes nothing itself
        let busy = pruning(&store, ME).await;
        let _stream = fill(&busy, 10).await; // records 1..=13
        idle.refresh().await.unwrap();
        assert_eq!(idle.state().await.unwrap().seq(), 13);

        // The busy node goes on; once the retention passes it prunes below checkpoint 16.
        for _ in 0..3 {
            busy.commit(filler()).await.unwrap();
        }
        tokio::time::advance(MIN_LOG_RETENTION + Duration::from_secs(1)).await;
        busy.commit(filler()).await.unwrap(); // record 17
        settle(&busy).await;
        assert!(
            !exists(&store, &record_key(14)).await,
            "record 14 was pruned"
        );

        // The idle node's cached state stops at 13; record 14's key is free again. A create of
        // it would succeed and be lost; the idle node must reload instead.
        let committed = idle.commit(Change::OpenNode { node: B }).await.unwrap();
        assert_eq!(committed.seq, 18);
        assert!(
            !exists(&store, &record_key(14)).await,
            "no fork below the tail"
        );
        let fresh = open(&store, ME, 4).await;
        assert_eq!(
            json(&fresh.state().await.unwrap()),
            json(&committed.state),
            "an opener sees the idle node's commit"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_reader_idle_past_the_freshness_window_reloads_when_it_refreshes() {
        let store = memory();
        let reader = open(&store, OTHER, 4).await;
        let busy = pruning(&store, ME).await;
        let _stream = fill(&busy, 10).await;
        tokio::time::advance(MIN_LOG_RETENTION + TAIL_FRESHNESS).await;
        busy.commit(filler()).await.unwrap();
        settle(&busy).await;
        assert!(!exists(&store, &record_key(1)).await);
        let caught_up = reader.refresh().await.unwrap();
        assert_eq!(json(&caught_up), json(&busy.state().await.unwrap()));
    }

    #[tokio::test]
    async fn a_retention_below_the_minimum_is_refused_by_the_meta_store() {
        let store = memory();
        let err = open(&store, ME, 4)
            .await
            .with_log_retention(Duration::from_secs(1))
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
    }
}
