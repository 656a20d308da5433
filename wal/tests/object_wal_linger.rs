//! The linger modes end to end on an in-memory store: when a record that does not fill an object
//! goes out, and which records share an object. A linger of an hour stands for "never" here: a
//! test that sees such an append resolve proves the record did not wait for the linger.

#[path = "common/gated_store.rs"]
mod gated_store;

use std::time::{Duration, Instant};

use gated_store::*;
use objstream_wal::object::{slot_key, slot_of, LingerMode};
use objstream_wal::{ObjectWalOptions, Wal, WalPosition};

const HOUR: Duration = Duration::from_secs(3600);

fn lingering(mode: LingerMode, linger: Duration) -> ObjectWalOptions {
    ObjectWalOptions {
        linger,
        linger_mode: mode,
        ..options()
    }
}

/// Resolves `append` or fails the test after ten seconds.
async fn soon<T>(append: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), append)
        .await
        .expect("the append resolved without waiting for the linger")
}

#[tokio::test]
async fn a_lone_append_to_an_idle_wal_does_not_wait_for_the_linger_in_either_adaptive_mode() {
    for mode in [LingerMode::WhenBusy, LingerMode::GroupCommit] {
        let store = memory();
        let wal = open_at(
            &store,
            identity(1, 1),
            WalPosition(0),
            lingering(mode, HOUR),
        )
        .await;
        let at = soon(wal.append(payload(0, 10))).await.unwrap();
        assert_eq!(slot_of(at), wal.seal_report().writer_start_slot, "{mode:?}");
    }
}

#[tokio::test]
async fn group_commit_sends_each_awaited_append_at_once() {
    let store = memory();
    let options = lingering(LingerMode::GroupCommit, HOUR);
    let wal = open_at(&store, identity(1, 1), WalPosition(0), options).await;
    let start = wal.seal_report().writer_start_slot;
    for i in 0..5 {
        let at = soon(wal.append(payload(i, 10))).await.unwrap();
        assert_eq!(slot_of(at), start + i);
    }
}

#[tokio::test]
async fn when_busy_holds_an_append_that_follows_the_previous_object_within_the_linger() {
    let store = memory();
    let options = lingering(LingerMode::WhenBusy, HOUR);
    let wal = open_at(&store, identity(1, 1), WalPosition(0), options).await;
    soon(wal.append(payload(0, 10))).await.unwrap();
    let puts = store.calls(Op::Put);
    let mut second = wal.append(payload(1, 10));
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(futures::poll!(&mut second).is_pending());
    assert_eq!(store.calls(Op::Put), puts);
    // Dropping the handle flushes what waits.
    drop(wal);
    soon(second).await.unwrap();
}

#[tokio::test]
async fn when_busy_sends_at_once_once_a_linger_has_passed_since_the_previous_object() {
    let store = memory();
    let linger = Duration::from_millis(100);
    let options = lingering(LingerMode::WhenBusy, linger);
    let wal = open_at(&store, identity(1, 1), WalPosition(0), options).await;
    wal.append(payload(0, 10)).await.unwrap();
    tokio::time::sleep(linger * 2).await;
    let started = Instant::now();
    wal.append(payload(1, 10)).await.unwrap();
    assert!(started.elapsed() < linger, "{:?}", started.elapsed());
}

#[tokio::test]
async fn when_busy_holds_a_record_the_whole_linger_not_only_the_rest_of_the_previous_ones() {
    let store = memory();
    let linger = Duration::from_millis(200);
    let options = lingering(LingerMode::WhenBusy, linger);
    let wal = open_at(&store, identity(1, 1), WalPosition(0), options).await;
    wal.append(payload(0, 10)).await.unwrap();
    tokio::time::sleep(linger / 2).await;
    // The WAL is busy: this record waits a whole linger from its own arrival, so that a trickle
    // is batched as a fixed linger batches it.
    let started = Instant::now();
    wal.append(payload(1, 10)).await.unwrap();
    assert!(started.elapsed() >= linger, "{:?}", started.elapsed());
}

#[tokio::test]
async fn fixed_holds_even_a_lone_append_for_the_whole_linger() {
    let store = memory();
    let linger = Duration::from_millis(150);
    let options = lingering(LingerMode::Fixed, linger);
    let wal = open_at(&store, identity(1, 1), WalPosition(0), options).await;
    let started = Instant::now();
    wal.append(payload(0, 10)).await.unwrap();
    assert!(started.elapsed() >= linger, "{:?}", started.elapsed());
}

#[tokio::test]
async fn group_commit_gathers_the_appends_that_arrive_while_a_put_is_in_flight() {
    let store = memory();
    let options = lingering(LingerMode::GroupCommit, HOUR);
    let wal = open_at(&store, identity(1, 1), WalPosition(0), options).await;
    let start = wal.seal_report().writer_start_slot;
    let gate = store.hold_put(&slot_key(&prefix(), start));
    let first = wal.append(payload(0, 10));
    gate.reached().await;
    let behind: Vec<_> = (1..4).map(|i| wal.append(payload(i, 10))).collect();
    tokio::time::sleep(Duration::from_millis(30)).await;
    // A PUT is in flight and the linger is an hour: nothing more goes out.
    assert!(!store
        .puts()
        .contains(&slot_key(&prefix(), start + 1).to_string()));
    gate.release();
    assert_eq!(slot_of(soon(first).await.unwrap()), start);
    for append in behind {
        assert_eq!(slot_of(soon(append).await.unwrap()), start + 1);
    }
}

#[tokio::test]
async fn a_full_object_goes_out_at_once_whatever_the_mode() {
    for mode in [
        LingerMode::WhenBusy,
        LingerMode::GroupCommit,
        LingerMode::Fixed,
    ] {
        let store = memory();
        let options = lingering(mode, HOUR);
        let wal = open_at(&store, identity(1, 1), WalPosition(0), options).await;
        let start = wal.seal_report().writer_start_slot;
        // Frames of 1 KiB + 24 bytes: four fill the 4 KiB batch; the fifth is left over.
        let full: Vec<_> = (0..4).map(|i| wal.append(payload(i, 1024))).collect();
        let left_over = wal.append(payload(4, 10));
        for append in full {
            assert_eq!(slot_of(soon(append).await.unwrap()), start, "{mode:?}");
        }
        drop(wal);
        assert_eq!(
            slot_of(soon(left_over).await.unwrap()),
            start + 1,
            "{mode:?}"
        );
    }
}
