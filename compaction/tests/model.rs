//! Model test: for random workloads of appends, uploads, uploads whose commit is held across
//! later steps (a store brownout: the collector may take their ids, and they upload again),
//! trims, reopens and deletes interleaved with compaction passes, compactor crashes at every
//! protocol step and restarts, every stream
//! reads back exactly what was written, at every offset, before and after each step; the
//! manifest replays from scratch; and once the workload stops, compaction converges and every
//! unreferenced object is deleted.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::{small_settings, Cluster};
use objstream::StreamId;
use objstream_compaction::{Compactor, Step};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    Append { stream: usize, n: usize, len: usize },
    Upload,
    Hold,
    Release,
    Trim { stream: usize, percent: u64 },
    Reopen { stream: usize },
    Delete { stream: usize },
    Pass,
    Crash { step: usize },
    Restart,
    Advance { ms: u64 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..4usize, 1..10usize, 16..1500usize).prop_map(|(stream, n, len)| Op::Append { stream, n, len }),
        6 => Just(Op::Upload),
        2 => Just(Op::Hold),
        2 => Just(Op::Release),
        1 => (0..4usize, 0..=100u64).prop_map(|(stream, percent)| Op::Trim { stream, percent }),
        1 => (0..4usize).prop_map(|stream| Op::Reopen { stream }),
        1 => (0..4usize).prop_map(|stream| Op::Delete { stream }),
        4 => Just(Op::Pass),
        2 => (0..3usize).prop_map(|step| Op::Crash { step }),
        1 => Just(Op::Restart),
        2 => (0..25_000u64).prop_map(|ms| Op::Advance { ms }),
    ]
}

/// Fanout 2 makes merges of every kind happen within a short workload.
fn settings() -> objstream_compaction::CompactorSettings {
    objstream_compaction::CompactorSettings {
        fanout: 2,
        ..small_settings()
    }
}

const STEPS: [Step; 3] = [Step::BeforeCommit, Step::AfterCommit, Step::BeforeDelete];

async fn run(ops: Vec<Op>) {
    let mut cluster = Cluster::new().await;
    let mut streams: Vec<StreamId> = Vec::new();
    for _ in 0..4 {
        streams.push(cluster.create_stream().await);
    }
    let mut node = 1_000u64;
    let mut compactor: Compactor = cluster.compactor(node, settings()).await;
    let mut kinds = std::collections::BTreeMap::new();
    for op in ops {
        match op {
            Op::Append { stream, n, len } => {
                if cluster.model.contains_key(&streams[stream]) {
                    cluster.append(streams[stream], n, len);
                }
            }
            Op::Upload => cluster.upload().await,
            Op::Hold => cluster.upload_and_hold().await,
            Op::Release => cluster.release().await,
            Op::Trim { stream, percent } => {
                let s = streams[stream];
                if cluster.model.contains_key(&s) {
                    let state = cluster.state().await;
                    let meta = state.stream(s).unwrap();
                    let span = meta.end.get() - meta.start.get();
                    cluster.trim(s, meta.start.add(span * percent / 100)).await;
                }
            }
            Op::Reopen { stream } => {
                if cluster.model.contains_key(&streams[stream]) {
                    cluster.reopen(streams[stream]).await;
                }
            }
            Op::Delete { stream } => {
                if cluster.model.contains_key(&streams[stream]) && cluster.model.len() > 1 {
                    // Appended but not uploaded batches of a deleted stream are dropped.
                    cluster.upload().await;
                    cluster.delete(streams[stream]).await;
                }
            }
            Op::Pass => {
                let before = cluster.state().await;
                for k in compactor.run_pass().await.unwrap().committed {
                    *kinds.entry(format!("{k:?}")).or_insert(0) += 1;
                }
                // A reader that planned on the old layout still reads it within the grace.
                cluster.check_contents(&before).await;
            }
            Op::Crash { step } => {
                let fired = Arc::new(AtomicBool::new(false));
                let at = STEPS[step];
                let f = fired.clone();
                node += 1;
                let crashing = cluster
                    .compactor_with(
                        node,
                        settings(),
                        Arc::new(move |s| s == at && !f.swap(true, Ordering::SeqCst)),
                    )
                    .await;
                assert!(compactor.run_pass().await.unwrap_err().is_fenced());
                let result = crashing.run_pass().await;
                assert_eq!(result.is_err(), fired.load(Ordering::SeqCst));
                drop(crashing);
                node += 1;
                compactor = cluster.compactor(node, settings()).await;
            }
            Op::Restart => {
                node += 1;
                compactor = cluster.compactor(node, settings()).await;
            }
            Op::Advance { ms } => cluster.clock.advance(ms),
        }
        let state = cluster.state().await;
        cluster.check_contents(&state).await;
    }
    // Quiesce: upload the rest, then let compaction and collection run to the end.
    cluster.upload().await;
    cluster.release().await;
    let grace = settings().grace_period_ms;
    let mut converged = false;
    for _ in 0..30 {
        let report = compactor.run_pass().await.unwrap();
        cluster.clock.advance(1_000);
        if report.committed.is_empty() {
            converged = true;
            break;
        }
        for k in report.committed {
            *kinds.entry(format!("{k:?}")).or_insert(0) += 1;
        }
    }
    assert!(converged, "compaction converges once writes stop");
    // One grace period later, one pass deletes everything unreferenced.
    cluster.clock.advance(grace);
    compactor.run_pass().await.unwrap();
    let state = cluster.replayed().await;
    cluster.check_contents(&state).await;
    if std::env::var_os("COMPACTION_MODEL_VERBOSE").is_some() {
        eprintln!(
            "plans committed: {kinds:?}; held uploads sent again: {}",
            cluster.reuploads
        );
    }
    let referenced: Vec<_> = state.objects().map(|o| o.id).collect();
    assert_eq!(
        cluster.listed().await,
        referenced,
        "only referenced objects remain once the grace has passed"
    );
    // Nothing deleted or trimmed is left in the manifest.
    for o in state.objects() {
        assert!(o.ranges.iter().any(|r| {
            let s = state.stream(r.stream).unwrap();
            s.status != objstream::manifest::StreamStatus::Deleted && r.end > s.start
        }));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn every_offset_reads_the_same_through_compactions_crashes_and_restarts(
        ops in prop::collection::vec(op(), 40..150)
    ) {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(run(ops));
    }
}
