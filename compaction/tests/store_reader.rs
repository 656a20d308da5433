//! The compactor beside real stores: a reader that started before a compaction finishes after
//! it, on the layout it planned with (the grace period keeps it), and a store opened after the
//! old objects are deleted reads the same bytes from the new layout. Appends keep going while
//! the compactor runs.

mod common;

use std::sync::Arc;

use common::node_settings;
use object_store::ObjectStore;
use objstream::{Components, NodeId, Offset, RecordBatch, Store, StoredBatch, Stream};
use objstream_compaction::{Compactor, CompactorComponents, CompactorSettings, ManualClock};

fn batch(n: u64) -> RecordBatch {
    let mut payload = format!("event {n}: ").into_bytes();
    payload.resize(200 + (n as usize * 37) % 700, b'a' + (n % 26) as u8);
    RecordBatch::new(1 + (n % 2) as u32, n as i64, payload)
}

async fn read_range(stream: &Stream, from: Offset, to: Offset) -> Vec<StoredBatch> {
    let mut out: Vec<StoredBatch> = Vec::new();
    let mut pos = from;
    while pos < to {
        let got = stream.fetch(pos, to, 4 << 10).await.expect("fetch");
        assert!(!got.is_empty(), "nothing at {pos}");
        pos = got.last().unwrap().next_offset();
        out.extend(got);
    }
    out
}

fn check(batches: &[StoredBatch], first: u64) {
    for (i, b) in batches.iter().enumerate() {
        assert_eq!(
            b.batch,
            batch(first + i as u64),
            "batch {} at {}",
            first + i as u64,
            b.base_offset
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_started_before_a_compaction_finishes_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let objects: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    let prefix = "cluster";
    let writer = Store::open(
        node_settings(dir.path(), 1),
        Components::new(objects.clone(), prefix),
    )
    .await
    .unwrap();
    let s = writer.create_stream().await.unwrap();
    let mut n = 0u64;
    for _ in 0..24 {
        for _ in 0..10 {
            s.append(batch(n)).await.unwrap();
            n += 1;
        }
        writer.flush().await.unwrap();
    }
    let end = s.confirmed_offset().unwrap();
    s.close().await.unwrap();
    writer.shutdown().await.unwrap();

    // A reader on another node: its log cache is empty, so every read goes to objects.
    let reader = Store::open(
        node_settings(dir.path(), 2),
        Components::new(objects.clone(), prefix),
    )
    .await
    .unwrap();
    let r = reader.open_stream(s.id()).await.unwrap();
    let mid = Offset(end.get() / 2);
    let first_half = read_range(&r, Offset(0), mid).await;
    check(&first_half, 0);

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let clock = Arc::new(ManualClock::new(now + 60_000));
    let settings = CompactorSettings {
        min_object_bytes: 4 << 10,
        fanout: 3,
        stream_split_bytes: 64 << 10,
        max_stream_set_object_bytes: 128 << 10,
        block_bytes: 16 << 10,
        grace_period_ms: 60_000,
        ..CompactorSettings::default()
    };
    let compactor = Compactor::open(
        settings,
        CompactorComponents::new(objects.clone(), prefix, NodeId(1_000)).with_clock(clock.clone()),
    )
    .await
    .unwrap();
    let mut removed = 0;
    for _ in 0..6 {
        removed += compactor.run_pass().await.unwrap().objects_removed;
    }
    assert!(removed >= 20, "compaction replaced {removed} objects");

    // The reader carries on with the layout it knew; appends on the open stream still work.
    let rest = read_range(
        &r,
        Offset(first_half.last().unwrap().next_offset().get()),
        end,
    )
    .await;
    check(&rest, first_half.len() as u64);
    let appended = r.append(batch(n)).await.unwrap();
    assert_eq!(appended.base_offset, end);
    r.close().await.unwrap();
    reader.shutdown().await.unwrap();

    // Once the grace is over the old objects go; a new reader sees only the new layout.
    clock.advance(120_000);
    let report = compactor.run_pass().await.unwrap();
    assert!(report.gc.deleted >= 20, "{report:?}");
    let fresh = Store::open(
        node_settings(dir.path(), 3),
        Components::new(objects.clone(), prefix),
    )
    .await
    .unwrap();
    let f = fresh.open_stream(s.id()).await.unwrap();
    let all = read_range(&f, Offset(0), appended.next_offset).await;
    check(&all, 0);
    fresh.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_uploads_and_tail_reads_go_on_while_a_compaction_is_stuck_reading() {
    use objstream::testing::{CallFilter, FaultyObjectStore, OpKind};
    let dir = tempfile::tempdir().unwrap();
    let faulty = Arc::new(FaultyObjectStore::new(Arc::new(
        object_store::memory::InMemory::new(),
    )));
    let objects: Arc<dyn ObjectStore> = faulty.clone();
    let prefix = "cluster";
    let store = Store::open(
        node_settings(dir.path(), 1),
        Components::new(objects.clone(), prefix),
    )
    .await
    .unwrap();
    let s = store.create_stream().await.unwrap();
    let mut n = 0u64;
    for _ in 0..12 {
        for _ in 0..5 {
            s.append(batch(n)).await.unwrap();
            n += 1;
        }
        store.flush().await.unwrap();
    }
    let compactor = Compactor::open(
        CompactorSettings {
            min_object_bytes: 4 << 10,
            fanout: 3,
            ..CompactorSettings::default()
        },
        CompactorComponents::new(objects.clone(), prefix, NodeId(1_000)),
    )
    .await
    .unwrap();
    // Hold every object read of the compactor: its pass stops in the middle of a plan.
    let gate = faulty.gate_matching(CallFilter {
        op: Some(OpKind::GetRange),
        prefix: Some(format!("{prefix}/objects/")),
    });
    let pass = {
        let compactor = compactor.clone();
        tokio::spawn(async move { compactor.run_pass().await })
    };
    gate.wait_for_arrival().await;
    // Appends are acknowledged, uploaded and committed, and the tail reads them back.
    for _ in 0..3 {
        let appended = s.append(batch(n)).await.unwrap();
        n += 1;
        store.flush().await.unwrap();
        let tail = s
            .fetch(appended.base_offset, appended.next_offset, 1 << 10)
            .await
            .unwrap();
        assert_eq!(tail[0].batch, batch(n - 1));
    }
    assert!(!pass.is_finished(), "the pass is still held");
    gate.open();
    let report = pass.await.unwrap().unwrap();
    assert!(!report.committed.is_empty(), "{report:?}");
    // The store's next commit lands after the compactor's, and everything reads back.
    s.append(batch(n)).await.unwrap();
    store.flush().await.unwrap();
    let all = read_range(&s, Offset(0), s.confirmed_offset().unwrap()).await;
    check(&all, 0);
    store.shutdown().await.unwrap();
}
