//! The file WAL's behaviour through its public API: round trips, ordering, concurrency, trim and
//! input checks.

mod common;

use std::sync::Arc;

use bytes::Bytes;
use futures::FutureExt;
use objstream_wal::{FileWal, Wal, WalErrorKind, WalPosition};

use common::{payload, payloads, reopen, segment_base, segment_files, small_segments};

#[tokio::test]
async fn records_round_trip_across_segment_rollovers() {
    let dir = tempfile::tempdir().unwrap();
    let wal = FileWal::open(dir.path(), small_segments()).unwrap();
    let mut expected = Vec::new();
    let mut positions = Vec::new();
    for i in 0..300u64 {
        let record = payload(i, (i as usize * 97) % 2000);
        positions.push(wal.append(record.clone()).await.unwrap());
        expected.push(record);
    }
    drop(wal);
    assert!(segment_files(dir.path()).len() >= 4, "expected rollovers");

    let (wal, records) = reopen(dir.path(), small_segments()).await;
    assert_eq!(payloads(&records), expected);
    let replayed: Vec<_> = records.iter().map(|r| r.position).collect();
    assert_eq!(replayed, positions);
    for pair in records.windows(2) {
        assert_eq!(pair[0].end, pair[1].position, "positions are contiguous");
    }
    // Appends continue after the last record.
    let next = wal.append(payload(300, 10)).await.unwrap();
    assert_eq!(next, records.last().unwrap().end);
}

#[tokio::test]
async fn every_segment_is_named_by_its_first_position() {
    let dir = tempfile::tempdir().unwrap();
    let wal = FileWal::open(dir.path(), small_segments()).unwrap();
    for i in 0..100 {
        wal.append(payload(i, 3000)).await.unwrap();
    }
    drop(wal);
    let (_wal, records) = reopen(dir.path(), small_segments()).await;
    for file in segment_files(dir.path()) {
        let base = segment_base(&file);
        assert!(
            records.iter().any(|r| r.position.0 == base),
            "{} does not start at a record",
            file.display()
        );
        assert_eq!(std::fs::metadata(&file).unwrap().len(), 64 << 10);
    }
}

#[tokio::test]
async fn futures_resolve_in_the_order_appends_were_called() {
    let dir = tempfile::tempdir().unwrap();
    let wal = FileWal::open(dir.path(), small_segments()).unwrap();
    let mut futures: Vec<_> = (0..400)
        .map(|i| Some(wal.append(payload(i, 100 + (i as usize % 7) * 300))))
        .collect();
    let mut positions = vec![WalPosition(0); futures.len()];
    // Await records in a scrambled order; once one is resolved, all before it must be too.
    // (Unconstrained, so that tokio's cooperative budget never makes a ready channel look
    // pending.)
    tokio::task::unconstrained(async {
        for k in [399, 17, 250, 251, 100, 398, 0] {
            if let Some(f) = futures[k].take() {
                positions[k] = f.await.unwrap();
            }
            for (j, slot) in futures.iter_mut().enumerate().take(k) {
                if let Some(f) = slot.take() {
                    let ready = f.now_or_never();
                    assert!(ready.is_some(), "append {j} not resolved after append {k}");
                    positions[j] = ready.unwrap().unwrap();
                }
            }
        }
    })
    .await;
    for f in futures.into_iter().flatten() {
        f.await.unwrap();
    }
    assert!(positions[..399].windows(2).all(|w| w[0] < w[1]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appenders_are_all_durable_and_replayed_in_order() {
    const TASKS: u64 = 64;
    const EACH: u64 = 40;
    let dir = tempfile::tempdir().unwrap();
    let wal = Arc::new(FileWal::open(dir.path(), small_segments()).unwrap());
    let mut handles = Vec::new();
    for task in 0..TASKS {
        let wal = Arc::clone(&wal);
        handles.push(tokio::spawn(async move {
            let mut last = None;
            let mut mine = Vec::new();
            for seq in 0..EACH {
                let record = Bytes::from(format!(
                    "{task}:{seq}:{}",
                    "x".repeat((seq * 37 % 500) as usize)
                ));
                let position = wal.append(record).await.unwrap();
                assert!(last < Some(position), "a task's appends land in call order");
                last = Some(position);
                mine.push(position);
            }
            mine
        }));
    }
    let mut acknowledged = Vec::new();
    for h in handles {
        acknowledged.extend(h.await.unwrap());
    }
    drop(Arc::into_inner(wal).unwrap());

    let (_wal, records) = reopen(dir.path(), small_segments()).await;
    assert_eq!(records.len() as u64, TASKS * EACH);
    acknowledged.sort();
    let replayed: Vec<_> = records.iter().map(|r| r.position).collect();
    assert_eq!(replayed, acknowledged);
    let mut next_seq = vec![0u64; TASKS as usize];
    for r in &records {
        let text = std::str::from_utf8(&r.payload).unwrap();
        let mut parts = text.split(':');
        let task: usize = parts.next().unwrap().parse().unwrap();
        let seq: u64 = parts.next().unwrap().parse().unwrap();
        assert_eq!(seq, next_seq[task], "task {task} replayed out of order");
        next_seq[task] += 1;
    }
}

#[tokio::test]
async fn trim_deletes_whole_segments_and_reopen_starts_at_the_first_kept_one() {
    let dir = tempfile::tempdir().unwrap();
    let wal = FileWal::open(dir.path(), small_segments()).unwrap();
    let mut positions = Vec::new();
    for i in 0..200 {
        positions.push(wal.append(payload(i, 1500)).await.unwrap());
    }
    let before_trim = segment_files(dir.path());
    assert!(before_trim.len() >= 4);
    let cut = positions[120];
    wal.trim(cut).await.unwrap();

    let kept = segment_files(dir.path());
    let first_kept = segment_base(&kept[0]);
    assert!(
        first_kept <= cut.0,
        "the segment holding the trim point is kept"
    );
    let deleted: Vec<_> = before_trim.iter().filter(|f| !kept.contains(f)).collect();
    assert!(!deleted.is_empty());
    for file in &deleted {
        // Every record of a deleted segment is below the trim point: the next segment starts
        // at or below it.
        let next = before_trim
            .iter()
            .find(|f| segment_base(f) > segment_base(file))
            .unwrap();
        assert!(segment_base(next) <= cut.0);
    }
    // The live handle no longer replays trimmed records.
    let live = wal.replay().await.unwrap();
    assert!(live.iter().all(|r| r.position >= cut));
    drop(wal);

    let (_wal, records) = reopen(dir.path(), small_segments()).await;
    assert_eq!(records[0].position.0, first_kept);
    let first = positions.iter().position(|p| p.0 == first_kept).unwrap();
    let expected: Vec<_> = (first as u64..200).map(|i| payload(i, 1500)).collect();
    assert_eq!(payloads(&records), expected);
}

#[tokio::test]
async fn trim_never_deletes_the_active_segment() {
    let dir = tempfile::tempdir().unwrap();
    let wal = FileWal::open(dir.path(), small_segments()).unwrap();
    for i in 0..100 {
        wal.append(payload(i, 2000)).await.unwrap();
    }
    let end = wal.next_position();
    wal.trim(end).await.unwrap();
    assert_eq!(segment_files(dir.path()).len(), 1);
    let after = wal.append(payload(100, 10)).await.unwrap();
    assert_eq!(after, end);
    drop(wal);
    let (_wal, records) = reopen(dir.path(), small_segments()).await;
    assert_eq!(records.last().unwrap().position, after);
}

#[tokio::test]
async fn an_oversized_record_is_invalid_input_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let wal = FileWal::open(dir.path(), small_segments()).unwrap();
    wal.append(payload(0, 10)).await.unwrap();
    let before = wal.next_position();
    let limit = wal.max_record_size();
    assert_eq!(limit, 16 << 10);
    let err = wal
        .append(Bytes::from(vec![1; limit + 1]))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), WalErrorKind::InvalidInput);
    assert_eq!(wal.next_position(), before);
    // The WAL still works, and the limit itself is accepted.
    wal.append(Bytes::from(vec![2; limit])).await.unwrap();
    drop(wal);
    let (_wal, records) = reopen(dir.path(), small_segments()).await;
    let sizes: Vec<_> = records.iter().map(|r| r.payload.len()).collect();
    assert_eq!(sizes, vec![10, limit]);
}

#[tokio::test]
async fn empty_records_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let wal = FileWal::open(dir.path(), small_segments()).unwrap();
    let a = wal.append(Bytes::new()).await.unwrap();
    let b = wal.append(Bytes::new()).await.unwrap();
    assert!(a < b);
    drop(wal);
    let (_wal, records) = reopen(dir.path(), small_segments()).await;
    assert_eq!(records.len(), 2);
}

#[tokio::test]
async fn a_wal_reopened_with_another_segment_size_keeps_its_old_segments() {
    let dir = tempfile::tempdir().unwrap();
    let wal = FileWal::open(dir.path(), small_segments()).unwrap();
    for i in 0..50 {
        wal.append(payload(i, 3000)).await.unwrap();
    }
    drop(wal);
    let mut bigger = small_segments();
    bigger.segment_bytes = 256 << 10;
    let (wal, records) = reopen(dir.path(), bigger.clone()).await;
    assert_eq!(records.len(), 50);
    for i in 50..200 {
        wal.append(payload(i, 3000)).await.unwrap();
    }
    drop(wal);
    let (_wal, records) = reopen(dir.path(), bigger).await;
    let expected: Vec<_> = (0..200).map(|i| payload(i, 3000)).collect();
    assert_eq!(payloads(&records), expected);
}
