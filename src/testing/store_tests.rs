use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode};

use super::FaultyObjectStore;
use crate::testing::{CallFilter, Fault, FaultRule, OpKind, RandomFaults};

fn faulty() -> FaultyObjectStore {
    FaultyObjectStore::new(Arc::new(InMemory::new()))
}

fn key(s: &str) -> Path {
    Path::from(s)
}

#[tokio::test]
async fn slow_down_fails_with_a_503_message_and_writes_nothing() {
    let f = faulty();
    f.fail_next(1, Fault::SlowDown);
    let err = f.put(&key("a"), "x".into()).await.unwrap_err();
    assert!(matches!(err, object_store::Error::Generic { .. }));
    assert!(err.to_string().contains("503 Slow Down"), "{err}");
    assert!(crate::retry::is_transient_store(&err));
    assert!(matches!(
        f.inner().get(&key("a")).await,
        Err(object_store::Error::NotFound { .. })
    ));
    f.put(&key("a"), "x".into()).await.unwrap();
    let calls = f.calls();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].injected, Some(Fault::SlowDown));
    assert!(!calls[0].succeeded() && calls[1].succeeded());
}

#[tokio::test]
async fn timeouts_and_resets_are_transient_errors() {
    let f = faulty();
    f.fail_next(1, Fault::Timeout);
    f.fail_next(1, Fault::ConnectionReset);
    let timeout = f.get(&key("a")).await.unwrap_err();
    assert!(timeout.to_string().contains("timed out"), "{timeout}");
    assert!(crate::retry::is_transient_store(&timeout));
    let reset = f.head(&key("a")).await.unwrap_err();
    assert!(reset.to_string().contains("connection reset"), "{reset}");
    assert!(crate::retry::is_transient_store(&reset));
    // With the faults used up, the inner store answers.
    assert!(matches!(
        f.get(&key("a")).await,
        Err(object_store::Error::NotFound { .. })
    ));
    assert_eq!(f.count(OpKind::Get), 2);
    assert_eq!(f.count(OpKind::Head), 1);
}

#[tokio::test]
async fn rules_pick_only_their_kind_and_prefix() {
    let f = faulty();
    f.inject(
        FaultRule::new(Fault::Timeout)
            .times(2)
            .on(OpKind::Put)
            .under("p/manifest/"),
    );
    f.put(&key("p/objects/1"), "x".into()).await.unwrap();
    f.get(&key("p/objects/1")).await.unwrap();
    assert!(f.put(&key("p/manifest/1"), "x".into()).await.is_err());
    assert_eq!(f.pending_faults(), 1);
    assert!(f.put(&key("p/manifest/1"), "x".into()).await.is_err());
    f.put(&key("p/manifest/1"), "x".into()).await.unwrap();
    assert_eq!(f.pending_faults(), 0);
    assert_eq!(f.injected(), 2);
}

#[tokio::test]
async fn latency_delays_calls_without_failing_them() {
    let f = faulty();
    f.inject(FaultRule::new(Fault::Latency(Duration::from_millis(60))).on(OpKind::Put));
    let started = Instant::now();
    f.put(&key("a"), "x".into()).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(60));
    f.set_latency(Duration::from_millis(30));
    let started = Instant::now();
    f.get(&key("a")).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(30));
    f.set_latency(Duration::from_secs(5));
    f.clear_faults();
    let started = Instant::now();
    f.get(&key("a")).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the latency is gone"
    );
}

#[tokio::test]
async fn a_truncated_range_read_returns_fewer_bytes_than_asked() {
    let f = faulty();
    f.put(&key("a"), vec![7u8; 100].into()).await.unwrap();
    f.inject(FaultRule::new(Fault::TruncatedRead));
    // The rule skips calls it cannot apply to (a HEAD) and waits for a read.
    f.head(&key("a")).await.unwrap();
    let short = f.get_range(&key("a"), 10..90).await.unwrap();
    assert_eq!(short.len(), 40);
    assert_eq!(f.get_range(&key("a"), 10..90).await.unwrap().len(), 80);
    let truncated = f.count_where(|c| c.injected == Some(Fault::TruncatedRead));
    assert_eq!(truncated, 1);
}

#[tokio::test]
async fn an_ambiguous_put_lands_but_reports_an_error() {
    let f = faulty();
    f.fail_next(1, Fault::PutSucceedsButErrors);
    let err = f
        .put_opts(&key("m/1"), "mine".into(), PutMode::Create.into())
        .await
        .unwrap_err();
    assert!(crate::retry::is_transient_store(&err), "{err}");
    let stored = f.inner().get(&key("m/1")).await.unwrap().bytes().await;
    assert_eq!(&stored.unwrap()[..], b"mine");
    // The retry of the create meets the object it wrote itself.
    assert!(matches!(
        f.put_opts(&key("m/1"), "mine".into(), PutMode::Create.into())
            .await,
        Err(object_store::Error::AlreadyExists { .. })
    ));
}

#[tokio::test]
async fn a_conditional_conflict_reports_already_exists_and_writes_nothing() {
    let f = faulty();
    f.fail_next(1, Fault::ConditionalConflict);
    assert!(matches!(
        f.put_opts(&key("m/1"), "x".into(), PutMode::Create.into())
            .await,
        Err(object_store::Error::AlreadyExists { .. })
    ));
    assert!(f.inner().head(&key("m/1")).await.is_err());
}

#[tokio::test]
async fn list_and_delete_are_faulted_and_recorded() {
    let f = faulty();
    f.put(&key("d/1"), "x".into()).await.unwrap();
    f.put(&key("d/2"), "x".into()).await.unwrap();
    f.inject(FaultRule::new(Fault::SlowDown).on(OpKind::List));
    let listed: Result<Vec<_>, _> = f.list(Some(&key("d"))).try_collect().await;
    assert!(listed.is_err());
    let listed: Vec<_> = f.list(Some(&key("d"))).try_collect().await.unwrap();
    assert_eq!(listed.len(), 2);
    f.inject(
        FaultRule::new(Fault::Timeout)
            .on(OpKind::Delete)
            .under("d/2"),
    );
    f.delete(&key("d/1")).await.unwrap();
    assert!(f.delete(&key("d/2")).await.is_err());
    assert_eq!(f.count(OpKind::List), 2);
    assert_eq!(f.count(OpKind::Delete), 2);
    f.reset_calls();
    assert!(f.calls().is_empty());
}

#[tokio::test]
async fn multipart_parts_and_completion_are_recorded() {
    let f = faulty();
    let mut upload = f.put_multipart(&key("big")).await.unwrap();
    upload.put_part(vec![1u8; 10].into()).await.unwrap();
    upload.complete().await.unwrap();
    assert_eq!(f.count(OpKind::PutMultipart), 1);
    assert_eq!(f.count(OpKind::PutPart), 1);
    assert_eq!(f.count(OpKind::CompleteMultipart), 1);
    assert!(f.calls().iter().all(|c| c.op.is_write()));
}

#[tokio::test]
async fn random_faults_repeat_exactly_for_one_seed() {
    async fn run(seed: u64) -> Vec<Option<Fault>> {
        let f = faulty();
        f.set_random_faults(RandomFaults::new(
            seed,
            0.3,
            [Fault::SlowDown, Fault::Timeout, Fault::TruncatedRead],
        ));
        for i in 0..50 {
            let _ = f.put(&key(&format!("k/{i}")), "value".into()).await;
        }
        f.calls().into_iter().map(|c| c.injected).collect()
    }
    let a = run(11).await;
    assert_eq!(a, run(11).await);
    assert_ne!(a, run(12).await);
    let faults = a.iter().flatten().count();
    assert!((5..=25).contains(&faults), "{faults} of 50 at p = 0.3");
    assert!(
        !a.contains(&Some(Fault::TruncatedRead)),
        "a read fault never lands on a put"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gate_holds_calls_until_released_one_by_one() {
    let f = faulty();
    let gate = f.gate(OpKind::Put);
    let tasks: Vec<_> = (0..2)
        .map(|i| {
            let f = f.clone();
            tokio::spawn(async move { f.put(&key(&format!("g/{i}")), "x".into()).await })
        })
        .collect();
    gate.wait_for_arrival().await;
    gate.wait_for_arrival().await;
    assert_eq!(gate.arrivals(), 2);
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(f.count(OpKind::Put), 0, "both calls are held");
    gate.release();
    while f.count(OpKind::Put) < 1 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(f.count(OpKind::Put), 1, "one release lets one call through");
    // Calls of other kinds pass.
    assert!(f.get(&key("nothing")).await.is_err());
    drop(gate);
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    // A dropped gate holds nothing.
    f.put(&key("g/late"), "x".into()).await.unwrap();
}

#[tokio::test]
async fn a_gate_picks_by_prefix() {
    let f = faulty();
    let gate = f.gate_matching(CallFilter {
        op: None,
        prefix: Some("held/".into()),
    });
    f.put(&key("free/1"), "x".into()).await.unwrap();
    let held = {
        let f = f.clone();
        tokio::spawn(async move { f.put(&key("held/1"), "x".into()).await })
    };
    gate.wait_for_arrival().await;
    assert!(!held.is_finished());
    gate.open();
    held.await.unwrap().unwrap();
}

#[test]
fn display_and_debug_name_the_inner_store() {
    let f = faulty();
    f.fail_next(2, Fault::Timeout);
    assert!(f.to_string().starts_with("FaultyObjectStore(InMemory"));
    let debug = format!("{f:?}");
    assert!(
        debug.contains("Timeout") && debug.contains("remaining: 2"),
        "{debug}"
    );
}
