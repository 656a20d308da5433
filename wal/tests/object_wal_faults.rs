//! The object WAL against a misbehaving store: transient errors retried everywhere, ambiguous
//! creates resolved by identity, a store that keeps failing fails the WAL for good, corrupt or
//! missing objects reported by key, and keys or LIST orders it must not trust.

#[path = "common/gated_store.rs"]
mod gated_store;

use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use gated_store::*;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload};
use objstream_wal::object::{slot_key, slot_of, RetryPolicy};
use objstream_wal::{ObjectWal, Wal, WalErrorKind, WalPosition};

async fn write_some(store: &GatedStore, epoch: u64, n: u64) -> Vec<WalPosition> {
    let wal = open_at(
        store,
        identity(1, epoch),
        WalPosition(0),
        one_record_per_object(),
    )
    .await;
    let mut positions = Vec::new();
    for i in 0..n {
        positions.push(wal.append(payload(i, 64)).await.unwrap());
    }
    positions
}

#[tokio::test]
async fn an_open_retries_throttled_lists_gets_and_puts() {
    let store = memory();
    write_some(&store, 1, 5).await;
    store.fail_next(Op::List, 3);
    store.fail_next(Op::Get, 4);
    store.fail_next(Op::Put, 4);
    let wal = open_at(&store, identity(1, 2), WalPosition(0), options()).await;
    let expected: Vec<Bytes> = (0..5).map(|i| payload(i, 64)).collect();
    assert_eq!(replayed(&wal).await, expected);
    assert_eq!(store.calls(Op::List), 2 + 3);
}

#[tokio::test]
async fn appends_and_trims_ride_out_transient_errors() {
    let store = memory();
    let wal = open_at(
        &store,
        identity(1, 1),
        WalPosition(0),
        one_record_per_object(),
    )
    .await;
    store.fail_next(Op::Put, 6);
    let futures: Vec<_> = (0..8).map(|i| wal.append(payload(i, 64))).collect();
    let mut positions = Vec::new();
    for f in futures {
        positions.push(f.await.unwrap());
    }
    store.fail_next(Op::Delete, 3);
    wal.trim(positions[4]).await.unwrap();
    assert_eq!(
        slots(&*store.inner()).await.first(),
        Some(&slot_of(positions[4]))
    );
    drop(wal);
    let wal = open_at(&store, identity(1, 2), positions[4], options()).await;
    let expected: Vec<Bytes> = (4..8).map(|i| payload(i, 64)).collect();
    assert_eq!(replayed(&wal).await, expected);
}

#[tokio::test]
async fn a_create_whose_answer_was_lost_is_recognised_as_our_own() {
    let store = memory();
    let wal = open_at(
        &store,
        identity(1, 1),
        WalPosition(0),
        one_record_per_object(),
    )
    .await;
    let start = wal.seal_report().writer_start_slot;
    store.lose_next_put_response(&slot_key(&prefix(), start));
    let p = wal.append(payload(0, 64)).await.unwrap();
    assert_eq!(slot_of(p), start);
    // It was sent twice and met itself the second time.
    let key = slot_key(&prefix(), start).to_string();
    assert_eq!(store.puts().iter().filter(|k| **k == key).count(), 2);
    let q = wal.append(payload(1, 64)).await.unwrap();
    assert_eq!(slot_of(q), start + 1);
    drop(wal);
    let wal = open_at(&store, identity(1, 2), WalPosition(0), options()).await;
    assert_eq!(replayed(&wal).await, vec![payload(0, 64), payload(1, 64)]);
}

#[tokio::test]
async fn a_fence_whose_answer_was_lost_still_counts_as_the_openers() {
    let store = memory();
    let positions = write_some(&store, 1, 3).await;
    let top = slot_of(*positions.last().unwrap()) + 1;
    store.lose_next_put_response(&slot_key(&prefix(), top));
    let wal = open_at(&store, identity(1, 2), WalPosition(0), options()).await;
    assert_eq!(wal.seal_report().first_fence, top);
    assert_eq!(replayed(&wal).await.len(), 3);
}

#[tokio::test]
async fn a_store_that_keeps_failing_fails_the_wal_for_good() {
    let store = memory();
    let mut opts = one_record_per_object();
    opts.retry = RetryPolicy {
        initial_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(1),
        max_attempts: 3,
    };
    let wal = open_at(&store, identity(1, 1), WalPosition(0), opts).await;
    let ok = wal.append(payload(0, 8)).await.unwrap();
    store.fail_next(Op::Put, 3);
    let err = wal.append(payload(1, 8)).await.unwrap_err();
    assert_eq!(err.kind(), WalErrorKind::Failed);
    // Latched: the store works again, the WAL does not.
    assert_eq!(
        wal.append(payload(2, 8)).await.unwrap_err().kind(),
        WalErrorKind::Failed
    );
    assert_eq!(wal.trim(ok).await.unwrap_err().kind(), WalErrorKind::Failed);
    assert_eq!(wal.replay().await.unwrap_err().kind(), WalErrorKind::Failed);
}

#[tokio::test]
async fn an_open_that_cannot_list_fails_after_the_callers_attempts() {
    let store = memory();
    let mut opts = options();
    opts.retry.max_attempts = 2;
    store.fail_next(Op::List, 2);
    let err = ObjectWal::open(
        store.dyn_store(),
        prefix(),
        identity(1, 1),
        WalPosition(0),
        opts,
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), WalErrorKind::Failed);
}

async fn flip_byte(store: &GatedStore, key: &Path, at: usize) {
    let inner = store.inner();
    let mut bytes = inner
        .get(key)
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .to_vec();
    bytes[at] ^= 0x20;
    inner.put(key, PutPayload::from(bytes)).await.unwrap();
}

#[tokio::test]
async fn a_flipped_byte_in_a_data_object_is_corruption_naming_the_key() {
    let store = memory();
    let positions = write_some(&store, 1, 4).await;
    let key = slot_key(&prefix(), slot_of(positions[2]));
    // A byte of the record's body.
    flip_byte(&store, &key, 64 + 24 + 3).await;
    let err = ObjectWal::open(
        store.dyn_store(),
        prefix(),
        identity(1, 2),
        WalPosition(0),
        options(),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), WalErrorKind::Corruption);
    assert!(err.to_string().contains(key.as_ref()), "{err}");
}

#[tokio::test]
async fn a_flipped_byte_in_a_header_is_corruption_naming_the_key() {
    let store = memory();
    write_some(&store, 1, 1).await;
    let key = slot_key(&prefix(), 2);
    flip_byte(&store, &key, 20).await;
    let err = ObjectWal::open(
        store.dyn_store(),
        prefix(),
        identity(1, 2),
        WalPosition(0),
        options(),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), WalErrorKind::Corruption);
    assert!(err.to_string().contains(key.as_ref()), "{err}");
}

#[tokio::test]
async fn an_object_copied_into_another_slot_is_corruption() {
    let store = memory();
    let positions = write_some(&store, 1, 3).await;
    let inner = store.inner();
    let from = slot_key(&prefix(), slot_of(positions[0]));
    let to = slot_key(&prefix(), slot_of(positions[1]));
    let bytes = inner.get(&from).await.unwrap().bytes().await.unwrap();
    inner.put(&to, PutPayload::from(bytes)).await.unwrap();
    let err = ObjectWal::open(
        store.dyn_store(),
        prefix(),
        identity(1, 2),
        WalPosition(0),
        options(),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), WalErrorKind::Corruption);
    assert!(err.to_string().contains(to.as_ref()), "{err}");
}

#[tokio::test]
async fn a_slot_that_vanishes_below_the_first_fence_is_corruption_not_a_gap() {
    let store = memory();
    let positions = write_some(&store, 1, 4).await;
    let key = slot_key(&prefix(), slot_of(positions[1]));
    // Listed, then gone before it is read: skipping it would silently drop a record.
    let inner = store.inner();
    let doomed = key.clone();
    store.after_list(Box::new(move || {
        async move { inner.delete(&doomed).await.unwrap() }.boxed()
    }));
    let err = ObjectWal::open(
        store.dyn_store(),
        prefix(),
        identity(1, 2),
        WalPosition(0),
        options(),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), WalErrorKind::Corruption);
    assert!(err.to_string().contains(key.as_ref()), "{err}");
}

#[tokio::test]
async fn keys_that_are_not_slots_are_ignored_and_list_order_is_not_trusted() {
    let store = memory();
    write_some(&store, 1, 6).await;
    let inner = store.inner();
    for junk in ["notes.txt", "12", "00000000000000000003/extra"] {
        let key = Path::from(format!("{}/{junk}", prefix()));
        inner
            .put(&key, PutPayload::from_static(b"junk"))
            .await
            .unwrap();
    }
    store.reverse_lists();
    let wal = open_at(&store, identity(1, 2), WalPosition(0), options()).await;
    let expected: Vec<Bytes> = (0..6).map(|i| payload(i, 64)).collect();
    assert_eq!(replayed(&wal).await, expected);
}

#[tokio::test]
async fn a_floor_far_below_the_slots_is_refused_rather_than_fenced_over() {
    let store = memory();
    let wal = ObjectWal::open(
        store.dyn_store(),
        prefix(),
        identity(1, 1),
        WalPosition(10_000 << 32),
        one_record_per_object(),
    )
    .await
    .unwrap();
    wal.append(payload(0, 8)).await.unwrap();
    drop(wal);
    let err = ObjectWal::open(
        store.dyn_store(),
        prefix(),
        identity(1, 2),
        WalPosition(0),
        options(),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), WalErrorKind::Corruption);
}

#[tokio::test]
async fn a_trim_whose_deletes_keep_failing_says_retry_and_the_next_trim_finishes_it() {
    let store = memory();
    let mut opts = one_record_per_object();
    opts.retry.max_attempts = 2;
    let wal = open_at(&store, identity(1, 1), WalPosition(0), opts).await;
    let mut positions = Vec::new();
    for i in 0..4 {
        positions.push(wal.append(payload(i, 8)).await.unwrap());
    }
    store.fail_next(Op::Delete, 1000);
    let err = wal.trim(positions[3]).await.unwrap_err();
    assert_eq!(err.kind(), WalErrorKind::Retry);
    assert_eq!(slots(&*store.inner()).await.first(), Some(&0));
    store.reset_faults();
    wal.trim(positions[3]).await.unwrap();
    assert_eq!(
        slots(&*store.inner()).await.first(),
        Some(&slot_of(positions[3]))
    );
    // The WAL keeps working: a failed delete does not fail it.
    wal.append(payload(9, 8)).await.unwrap();
}
