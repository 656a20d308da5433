//! The object WAL end to end on an in-memory store: round trips, positions, ordering of
//! out-of-order landings, batching, trim, and reopen.

#[path = "common/gated_store.rs"]
mod gated_store;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use gated_store::*;
use objstream_wal::object::{slot_key, slot_of};
use objstream_wal::{ObjectWal, Wal, WalErrorKind, WalPosition};

#[tokio::test]
async fn appends_resolve_in_order_and_replay_after_a_reopen() {
    let store = memory();
    let wal = open_at(&store, identity(1, 1), WalPosition(0), options()).await;
    assert!(replayed(&wal).await.is_empty());
    let futures: Vec<_> = (0..200)
        .map(|i| wal.append(payload(i, 10 + (i as usize * 37) % 900)))
        .collect();
    let mut positions = Vec::new();
    for f in futures {
        positions.push(f.await.unwrap());
    }
    assert!(positions.windows(2).all(|w| w[0] < w[1]));
    drop(wal);
    let wal = open_at(&store, identity(1, 2), WalPosition(0), options()).await;
    let records = wal.replay().await.unwrap();
    let expected: Vec<Bytes> = (0..200)
        .map(|i| payload(i, 10 + (i as usize * 37) % 900))
        .collect();
    assert_eq!(
        records
            .iter()
            .map(|r| r.payload.clone())
            .collect::<Vec<_>>(),
        expected
    );
    assert_eq!(
        records.iter().map(|r| r.position).collect::<Vec<_>>(),
        positions
    );
}

#[tokio::test]
async fn positions_are_dense_within_an_object_and_ends_reach_the_next_slot() {
    let store = memory();
    let wal = open_at(&store, identity(1, 1), WalPosition(0), options()).await;
    let futures: Vec<_> = (0..50).map(|i| wal.append(payload(i, 300))).collect();
    for f in futures {
        f.await.unwrap();
    }
    drop(wal);
    let wal = open_at(&store, identity(1, 2), WalPosition(0), options()).await;
    let records = wal.replay().await.unwrap();
    assert_eq!(records.len(), 50);
    for pair in records.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        if slot_of(a.position) == slot_of(b.position) {
            assert_eq!(a.end, b.position);
        } else {
            assert_eq!(a.end, WalPosition((slot_of(a.position) + 1) << 32));
            assert!(b.position > a.end || slot_of(b.position) > slot_of(a.position));
        }
        assert_eq!(
            a.position.0 & 0xFFFF_FFFF == 64,
            a.position.0 & 0xFFFF_FFFF == 64
        );
    }
    let last = records.last().unwrap();
    assert_eq!(last.end, WalPosition((slot_of(last.position) + 1) << 32));
    // Several records share objects: 50 × 328 bytes in 4 KiB batches.
    let objects: std::collections::BTreeSet<u64> =
        records.iter().map(|r| slot_of(r.position)).collect();
    assert!(objects.len() < 50 && objects.len() >= 4, "{objects:?}");
}

#[tokio::test]
async fn a_fresh_open_fences_the_first_slot_and_the_window_above_it() {
    let store = memory();
    let wal = open_at(&store, identity(1, 1), WalPosition(0), options()).await;
    let report = wal.seal_report();
    assert_eq!(report.first_fence, 0);
    assert_eq!(report.fences_written, 5);
    assert_eq!(report.writer_start_slot, 5);
    assert_eq!(slots(&*store.inner()).await, vec![0, 1, 2, 3, 4]);
    let p = wal.append(payload(0, 10)).await.unwrap();
    assert_eq!(slot_of(p), 5);
    assert_eq!(p, WalPosition((5 << 32) | 64));
}

#[tokio::test]
async fn nothing_is_written_while_nothing_is_queued() {
    let store = memory();
    let wal = open_at(&store, identity(1, 1), WalPosition(0), options()).await;
    wal.append(payload(0, 10)).await.unwrap();
    let puts = store.calls(Op::Put);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(store.calls(Op::Put), puts);
}

#[tokio::test]
async fn a_later_slot_landing_first_is_not_acknowledged_before_the_earlier_one() {
    let store = memory();
    let wal = open_at(
        &store,
        identity(1, 1),
        WalPosition(0),
        one_record_per_object(),
    )
    .await;
    let start = wal.seal_report().writer_start_slot;
    let gate = store.hold_put(&slot_key(&prefix(), start + 1));
    let mut first = wal.append(payload(0, 10));
    let mut second = wal.append(payload(1, 10));
    let mut third = wal.append(payload(2, 10));
    let p0 = (&mut first).await.unwrap();
    assert_eq!(slot_of(p0), start);
    gate.reached().await;
    // Slot start + 2 lands, start + 1 is held: the third append must wait.
    let inner = store.inner();
    eventually("slot start + 2 landed", || {
        let inner = inner.clone();
        async move { slots(&*inner).await.contains(&(start + 2)) }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert!(futures::poll!(&mut second).is_pending());
    assert!(futures::poll!(&mut third).is_pending());
    gate.release();
    assert_eq!(slot_of(second.await.unwrap()), start + 1);
    assert_eq!(slot_of(third.await.unwrap()), start + 2);
}

#[tokio::test]
async fn a_full_window_issues_nothing_more_and_queued_records_go_out_in_big_objects() {
    let store = memory();
    let wal = open_at(&store, identity(1, 1), WalPosition(0), options()).await;
    let start = wal.seal_report().writer_start_slot;
    let key = |slot: u64| slot_key(&prefix(), slot).to_string();
    let gate = store.hold_put(&slot_key(&prefix(), start));
    let mut first = Vec::new();
    for i in 0..4 {
        first.push(wal.append(payload(i, 100)));
        let k = key(start + i);
        eventually("the object was sent", || {
            let sent = store.puts().contains(&k);
            async move { sent }
        })
        .await;
    }
    // Four objects unacknowledged (the first held): the window is full.
    let rest: Vec<_> = (4..104).map(|i| wal.append(payload(i, 100))).collect();
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert!(
        !store.puts().contains(&key(start + 4)),
        "{:?}",
        store.puts()
    );
    gate.release();
    for f in first {
        f.await.unwrap();
    }
    let mut slots_used = std::collections::BTreeSet::new();
    for f in rest {
        slots_used.insert(slot_of(f.await.unwrap()));
    }
    // 100 records of 128 frame bytes in objects of up to 4 KiB.
    assert_eq!(slots_used.len(), 4, "{slots_used:?}");
}

#[tokio::test]
async fn a_record_larger_than_a_batch_goes_alone_and_oversize_is_refused() {
    let store = memory();
    let wal = open_at(&store, identity(1, 1), WalPosition(0), options()).await;
    let small = wal.append(payload(0, 10));
    let big = wal.append(payload(1, 20 << 10));
    let after = wal.append(payload(2, 10));
    let (s, b, a) = (
        small.await.unwrap(),
        big.await.unwrap(),
        after.await.unwrap(),
    );
    assert!(slot_of(s) < slot_of(b) && slot_of(b) < slot_of(a));
    let err = wal.append(payload(3, (64 << 10) + 1)).await.unwrap_err();
    assert_eq!(err.kind(), WalErrorKind::InvalidInput);
    assert_eq!(wal.max_record_size(), 64 << 10);
}

#[tokio::test]
async fn trim_deletes_exactly_the_slots_below_and_a_reopen_starts_there() {
    let store = memory();
    let wal = open_at(
        &store,
        identity(1, 1),
        WalPosition(0),
        one_record_per_object(),
    )
    .await;
    let mut positions = Vec::new();
    for i in 0..10 {
        positions.push(wal.append(payload(i, 50)).await.unwrap());
    }
    let cut = positions[6];
    wal.trim(cut).await.unwrap();
    let left = slots(&*store.inner()).await;
    assert_eq!(left.first(), Some(&slot_of(cut)));
    assert!(left.contains(&slot_of(positions[9])));
    let replay_after_trim = wal.replay().await.unwrap();
    assert!(replay_after_trim.is_empty());
    drop(wal);
    let wal = open_at(&store, identity(1, 2), cut, one_record_per_object()).await;
    let expected: Vec<Bytes> = (6..10).map(|i| payload(i, 50)).collect();
    assert_eq!(replayed(&wal).await, expected);
    assert_eq!(wal.replay().await.unwrap()[0].position, cut);
}

#[tokio::test]
async fn trim_past_the_acknowledged_end_is_invalid_input() {
    let store = memory();
    let wal = open_at(&store, identity(1, 1), WalPosition(0), options()).await;
    let p = wal.append(payload(0, 10)).await.unwrap();
    let end = wal.acked_end();
    assert!(end > p);
    wal.trim(end).await.unwrap();
    let err = wal.trim(WalPosition(end.0 + 1)).await.unwrap_err();
    assert_eq!(err.kind(), WalErrorKind::InvalidInput);
}

#[tokio::test]
async fn trim_and_replay_respect_a_floor_inside_an_object() {
    let store = memory();
    let wal = open_at(&store, identity(1, 1), WalPosition(0), options()).await;
    let futures: Vec<_> = (0..5).map(|i| wal.append(payload(i, 10))).collect();
    let mut positions = Vec::new();
    for f in futures {
        positions.push(f.await.unwrap());
    }
    assert_eq!(slot_of(positions[0]), slot_of(positions[4]));
    wal.trim(positions[2]).await.unwrap();
    drop(wal);
    let wal = open_at(&store, identity(1, 2), positions[2], options()).await;
    let expected: Vec<Bytes> = (2..5).map(|i| payload(i, 10)).collect();
    assert_eq!(replayed(&wal).await, expected);
}

#[tokio::test]
async fn invalid_options_refuse_the_open() {
    let store = memory();
    let mut bad = options();
    bad.max_in_flight = 65;
    let err = ObjectWal::open(
        store.dyn_store(),
        prefix(),
        identity(1, 1),
        WalPosition(0),
        bad,
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), WalErrorKind::InvalidInput);
    assert_eq!(store.calls(Op::List), 0);
}

#[tokio::test]
async fn an_object_wal_works_behind_a_dyn_wal() {
    let store = memory();
    let wal: Arc<dyn Wal> =
        Arc::new(open_at(&store, identity(1, 1), WalPosition(0), options()).await);
    let p = wal.append(payload(0, 10)).await.unwrap();
    wal.trim(p).await.unwrap();
    assert!(wal.replay().await.unwrap().is_empty());
}

#[tokio::test]
async fn an_open_at_a_lower_epoch_than_an_object_found_is_fenced() {
    let store = memory();
    let wal = open_at(&store, identity(1, 5), WalPosition(0), options()).await;
    wal.append(payload(0, 10)).await.unwrap();
    let err = ObjectWal::open(
        store.dyn_store(),
        prefix(),
        identity(1, 4),
        WalPosition(0),
        options(),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), WalErrorKind::Fenced);
}

#[tokio::test]
async fn records_queued_when_the_handle_is_dropped_still_land() {
    let store = memory();
    let mut opts = options();
    opts.linger = Duration::from_secs(3600);
    let wal = open_at(&store, identity(1, 1), WalPosition(0), opts).await;
    // The first object leaves an idle WAL at once; the records right after it find the WAL busy
    // and wait out the linger, so they are still queued when the handle goes.
    let first = wal.append(payload(9, 10)).await.unwrap();
    let pending: Vec<_> = (0..3).map(|i| wal.append(payload(i, 10))).collect();
    tokio::time::sleep(Duration::from_millis(20)).await;
    drop(wal);
    let mut pending_slots = Vec::new();
    for f in pending {
        pending_slots.push(slot_of(f.await.unwrap()));
    }
    let wal = open_at(&store, identity(1, 2), WalPosition(0), options()).await;
    assert_eq!(replayed(&wal).await.len(), 4);
    assert!(pending_slots.iter().all(|&s| s > slot_of(first)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_appenders_on_threads_lose_nothing_and_keep_each_ones_order() {
    let store = memory();
    let wal = Arc::new(open_at(&store, identity(1, 1), WalPosition(0), options()).await);
    store.fail_next(Op::Put, 10);
    let tasks: Vec<_> = (0..8u64)
        .map(|t| {
            let wal = wal.clone();
            tokio::spawn(async move {
                let mut out = Vec::new();
                let mut pending = std::collections::VecDeque::new();
                for i in 0..150u64 {
                    let r = payload(t * 1000 + i, 1 + ((t * 7 + i * 13) % 700) as usize);
                    pending.push_back((r.clone(), wal.append(r)));
                    // Up to 16 appends in flight per appender.
                    if pending.len() == 16 {
                        let (r, f) = pending.pop_front().unwrap();
                        out.push((f.await.unwrap(), r));
                    }
                }
                for (r, f) in pending {
                    out.push((f.await.unwrap(), r));
                }
                out
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        let out = t.await.unwrap();
        assert!(out.windows(2).all(|w| w[0].0 < w[1].0));
        all.extend(out);
    }
    drop(wal);
    all.sort_by_key(|(p, _)| *p);
    let wal = open_at(&store, identity(1, 2), WalPosition(0), options()).await;
    let replay: Vec<(WalPosition, Bytes)> = wal
        .replay()
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.position, r.payload))
        .collect();
    assert_eq!(replay.len(), 8 * 150);
    assert_eq!(replay, all);
}
