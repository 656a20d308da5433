//! Two compactors racing: the second takes over, the first is fenced mid-plan and never commits
//! again, and the manifest history replays. A pass dropped at any await point (a process killed
//! between PUT and commit, or anywhere else) leaves the manifest valid and the data readable.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{small_settings, Cluster};
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::ObjectStore;
use objstream::manifest::{decode_record, Change};
use objstream::testing::{CallFilter, FaultyObjectStore, OpKind};
use objstream::Epoch;

/// Every manifest record, in order.
async fn records(cluster: &Cluster) -> Vec<objstream::manifest::Record> {
    use object_store::ObjectStoreExt;
    let root = cluster.prefix.clone().join("manifest");
    let mut keys: Vec<Path> = cluster
        .objects
        .list(Some(&root))
        .map_ok(|m| m.location)
        .try_collect()
        .await
        .unwrap();
    keys.sort();
    let mut out = Vec::new();
    for key in keys {
        let seq: u64 = key.filename().unwrap().parse().unwrap();
        let bytes = cluster
            .objects
            .get(&key)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        out.push(decode_record(key.as_ref(), seq, &bytes).unwrap());
    }
    out
}

/// A cluster on a store whose calls a test can hold, with small objects waiting to be merged.
async fn cluster_with_work() -> (Cluster, Arc<FaultyObjectStore>) {
    let faulty = Arc::new(FaultyObjectStore::new(Arc::new(
        object_store::memory::InMemory::new(),
    )));
    let mut cluster = Cluster::on(faulty.clone() as Arc<dyn ObjectStore>, Path::from("race")).await;
    let streams = [cluster.create_stream().await, cluster.create_stream().await];
    for round in 0..9 {
        for s in streams {
            cluster.append(s, 1 + round % 3, 300);
        }
        cluster.upload().await;
    }
    (cluster, faulty)
}

#[tokio::test]
async fn a_second_compactor_fences_the_first_mid_plan_and_it_never_commits_again() {
    let (cluster, faulty) = cluster_with_work().await;
    let first = cluster.compactor(1_000, small_settings()).await;
    // Hold the first compactor's first PUT of a new object: it has planned and read.
    let gate = faulty.gate_matching(CallFilter {
        op: Some(OpKind::Put),
        prefix: Some("race/objects/".into()),
    });
    let racing = {
        let first = first.clone();
        tokio::spawn(async move { first.run_pass().await })
    };
    gate.wait_for_arrival().await;
    let second = cluster.compactor(1_001, small_settings()).await;
    assert!(second.epoch() > first.epoch());
    gate.open();
    let err = racing.await.unwrap().unwrap_err();
    assert!(err.is_fenced(), "{err}");
    assert!(first.is_fenced());

    // Fenced is terminal, and costs no request.
    faulty.reset_calls();
    assert!(first.run_pass().await.unwrap_err().is_fenced());
    assert_eq!(faulty.calls().len(), 0);

    let report = second.run_pass().await.unwrap();
    assert!(!report.committed.is_empty(), "{report:?}");
    let state = cluster.replayed().await;
    cluster.check_contents(&state).await;

    // No replacement under the first epoch after the second compactor opened.
    let records = records(&cluster).await;
    let opened = records
        .iter()
        .filter(|r| r.change == Change::OpenCompactor)
        .map(|r| r.seq)
        .nth(1)
        .unwrap();
    for r in &records {
        if let Change::ReplaceObjects {
            compactor_epoch, ..
        } = &r.change
        {
            if *compactor_epoch == first.epoch() {
                assert!(r.seq < opened, "record {} by a fenced compactor", r.seq);
            } else {
                assert_eq!(*compactor_epoch, second.epoch());
            }
        }
    }
    assert_eq!(first.epoch(), Epoch(1));
}

#[tokio::test]
async fn a_spawned_compactor_stops_with_the_fenced_error_when_another_takes_over() {
    let (cluster, _faulty) = cluster_with_work().await;
    let first = cluster.compactor(1_000, small_settings()).await;
    let task = first.spawn();
    let _second = cluster.compactor(1_001, small_settings()).await;
    // The task's next pass finds the newer epoch (the interval is a second).
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while !task.is_finished() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(ended.is_ok(), "the fenced task ends on its own");
    assert!(task.stop().await.unwrap_err().is_fenced());
}

#[tokio::test]
async fn a_pass_dropped_while_its_put_is_in_flight_changes_nothing() {
    let (cluster, faulty) = cluster_with_work().await;
    let before = cluster.state().await;
    let doomed = cluster.compactor(1_000, small_settings()).await;
    let gate = faulty.gate_matching(CallFilter {
        op: Some(OpKind::Put),
        prefix: Some("race/objects/".into()),
    });
    tokio::select! {
        _ = doomed.run_pass() => panic!("the pass should be held at its PUT"),
        _ = gate.wait_for_arrival() => {}
    }
    // The pass future is dropped here, as a killed process would stop.
    gate.open();
    drop(doomed);
    let state = cluster.replayed().await;
    assert_eq!(
        state.objects().count(),
        before.objects().count(),
        "nothing was replaced"
    );
    cluster.check_contents(&state).await;
    let next = cluster.compactor(1_001, small_settings()).await;
    for _ in 0..8 {
        next.run_pass().await.unwrap();
        cluster.clock.advance(small_settings().grace_period_ms);
    }
    let state = cluster.replayed().await;
    cluster.check_contents(&state).await;
    let referenced: Vec<_> = state.objects().map(|o| o.id).collect();
    assert_eq!(cluster.listed().await, referenced);
}

#[tokio::test]
async fn passes_cut_short_at_every_await_point_never_corrupt_anything() {
    let (cluster, faulty) = cluster_with_work().await;
    faulty.set_latency(Duration::from_micros(300));
    let mut node = 1_000;
    // Each round drops a pass after a growing time, so the cut lands at a different await
    // point each time: during reads, between PUT and commit, after the commit, during deletes.
    for round in 0..40u64 {
        node += 1;
        let compactor = cluster.compactor(node, small_settings()).await;
        let cut = Duration::from_micros(500 * round);
        let _ = tokio::time::timeout(cut, compactor.run_pass()).await;
        drop(compactor);
        cluster.clock.advance(3_000);
        let state = cluster.replayed().await;
        cluster.check_contents(&state).await;
    }
    faulty.set_latency(Duration::ZERO);
    let last = cluster.compactor(node + 1, small_settings()).await;
    for _ in 0..10 {
        last.run_pass().await.unwrap();
        cluster.clock.advance(small_settings().grace_period_ms);
    }
    let state = cluster.replayed().await;
    cluster.check_contents(&state).await;
    let referenced: Vec<_> = state.objects().map(|o| o.id).collect();
    assert_eq!(cluster.listed().await, referenced);
}
