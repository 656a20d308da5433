//! The store's metrics move with what it does: appends, uploads, commits, object-store requests
//! (a throttled one among them), fetches, fencing and a takeover.
//!
//! Each test installs its own `DebuggingRecorder` as the thread's local recorder and runs the
//! store on a current-thread runtime inside it, so the store's handles register with that
//! recorder and tests running side by side never see each other's numbers.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use object_store::path::Path;
use object_store::ObjectStore;
use objstream::metrics as m;
use objstream::testing::{Fault, FaultRule, FaultyObjectStore, OpKind};
use objstream::{
    Components, Compression, NodeId, Offset, RecordBatch, Settings, Store, WalSettings,
};
use objstream_wal::metrics as wal_metrics;

/// Runs `test` on a current-thread runtime with a fresh local recorder; returns what the
/// recorder saw.
fn with_recorder<F, Fut>(test: F) -> Seen
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = ()>,
{
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    ::metrics::with_local_recorder(&recorder, || runtime.block_on(test()));
    Seen::take(&snapshotter)
}

/// One snapshot of the recorder (a snapshot drains counters, so take it once).
#[derive(Default)]
struct Seen {
    values: Vec<(String, HashMap<String, String>, DebugValue)>,
}

impl Seen {
    fn take(snapshotter: &Snapshotter) -> Seen {
        let values = snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .map(|(key, _, _, value)| {
                let key = key.key();
                let labels = key
                    .labels()
                    .map(|l| (l.key().to_string(), l.value().to_string()))
                    .collect();
                (key.name().to_string(), labels, value)
            })
            .collect();
        Seen { values }
    }

    fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a DebugValue> + 'a {
        self.values
            .iter()
            .filter(move |(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(.., v)| v)
    }

    /// The sum of the counters `name` whose labels include `labels`.
    fn counter(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        self.matching(name, labels)
            .map(|v| match v {
                DebugValue::Counter(c) => *c,
                other => panic!("{name} is not a counter: {other:?}"),
            })
            .sum()
    }

    /// How many values the histograms `name` whose labels include `labels` recorded.
    fn samples(&self, name: &str, labels: &[(&str, &str)]) -> usize {
        self.matching(name, labels)
            .map(|v| match v {
                DebugValue::Histogram(xs) => xs.len(),
                other => panic!("{name} is not a histogram: {other:?}"),
            })
            .sum()
    }

    /// The sum of the values the histograms `name` whose labels include `labels` recorded.
    fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.matching(name, labels)
            .map(|v| match v {
                DebugValue::Histogram(xs) => xs.iter().map(|x| x.0).sum::<f64>(),
                other => panic!("{name} is not a histogram: {other:?}"),
            })
            .sum()
    }

    /// The gauge `name` with `labels`.
    fn gauge(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.matching(name, labels).find_map(|v| match v {
            DebugValue::Gauge(g) => Some(g.0),
            _ => None,
        })
    }
}

fn settings(node: u64, wal: WalSettings) -> Settings {
    Settings {
        node_id: NodeId(node),
        wal,
        upload_threshold_bytes: 1 << 30,
        upload_interval_ms: 60_000,
        block_bytes: 16 << 10,
        max_batch_bytes: 1 << 20,
        // Stored bytes then bound the payload bytes from above.
        compression: Compression::None,
        ..Settings::default()
    }
}

fn batch(n: u64) -> RecordBatch {
    let payload = format!("event {n}: {}", "x".repeat(100 + n as usize));
    RecordBatch::new(1 + (n % 3) as u32, n as i64, payload)
}

/// Node 1 on an in-memory store with `wal`, and a stream holding `batch(0..20)`, all in flight
/// at once and acknowledged.
async fn open_and_append_twenty(wal: WalSettings) -> (Store, objstream::Stream) {
    let objects: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    let store = Store::open(settings(1, wal), Components::new(objects, "metrics"))
        .await
        .unwrap();
    let stream = store.create_stream().await.unwrap();
    let appends: Vec<_> = (0..20).map(|n| stream.append(batch(n))).collect();
    for a in appends {
        a.await.unwrap();
    }
    (store, stream)
}

#[test]
fn appends_uploads_commits_and_fetches_move_their_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let wal = WalSettings::file(dir.path().join("wal"));
    let (mut records, mut bytes) = (0u64, 0u64);
    for n in 0..20 {
        records += u64::from(batch(n).count);
        bytes += batch(n).payload.len() as u64;
    }
    let seen = with_recorder(|| async move {
        let (store, stream) = open_and_append_twenty(wal).await;
        store.flush().await.unwrap();
        let got = stream
            .fetch(Offset(0), Offset(records), 1 << 20)
            .await
            .unwrap();
        assert_eq!(got.len(), 20);
        let stats = store.read_stats();
        assert!(stats.log_cache_hits > 0);
        store.shutdown().await.unwrap();
    });

    assert_eq!(seen.counter(m::APPENDED_RECORDS, &[]), records);
    assert_eq!(seen.counter(m::APPENDED_BYTES, &[]), bytes);
    assert_eq!(seen.samples(m::APPEND_DURATION, &[("wal", "file")]), 20);
    assert_eq!(seen.samples(m::FETCH_DURATION, &[]), 1);
    assert_eq!(seen.counter(m::FETCHED_BYTES, &[]), bytes);

    let objects = seen.counter(m::OBJECTS_UPLOADED, &[]);
    assert!(objects >= 1, "objects uploaded: {objects}");
    let uploaded = seen.counter(m::UPLOADED_BYTES, &[]);
    assert!(uploaded > bytes, "uploaded {uploaded} of {bytes}");
    assert!(seen.samples(m::UPLOAD_DURATION, &[]) >= 1);
    assert!(seen.samples(m::COMMIT_DURATION, &[]) >= 1);
    assert_eq!(seen.gauge(m::UPLOAD_PENDING_BYTES, &[]), Some(0.0));

    assert!(seen.counter(m::MANIFEST_COMMITS, &[("change", "commit_objects")]) >= 1);
    assert_eq!(
        seen.counter(m::MANIFEST_COMMITS, &[("change", "open_node")]),
        1
    );
    assert_eq!(
        seen.counter(m::MANIFEST_COMMITS, &[("change", "create_stream")]),
        1
    );
    assert!(seen.samples(m::MANIFEST_COMMIT_DURATION, &[]) >= 4);

    // Every object PUT and every manifest create went through the metered store.
    let puts = seen.counter(
        m::OBJECT_STORE_REQUESTS,
        &[("op", "put"), ("outcome", "ok")],
    );
    assert!(puts >= objects + 3, "puts {puts}, objects {objects}");
    assert!(seen.counter(m::OBJECT_STORE_SENT_BYTES, &[]) >= uploaded);
    assert_eq!(
        seen.samples(m::OBJECT_STORE_REQUEST_DURATION, &[("op", "put")]) as u64,
        puts
    );
    // Opening the manifest reads up to the first missing record, and lists checkpoints.
    assert!(
        seen.counter(
            m::OBJECT_STORE_REQUESTS,
            &[("op", "get"), ("outcome", "not_found")]
        ) >= 1
    );
    assert!(
        seen.counter(
            m::OBJECT_STORE_REQUESTS,
            &[("op", "list"), ("outcome", "ok")]
        ) >= 1
    );

    // Read stats were published: the fetch above was answered by the log cache.
    assert!(seen.counter(m::READ_CACHE_HITS, &[("tier", "log")]) >= 1);
    assert_eq!(seen.counter(m::FENCED, &[]), 0);
    assert_eq!(seen.counter(m::RECOVERIES, &[("kind", "restart")]), 1);

    // The file WAL reported from inside to the same recorder: its group commits hold at least
    // the twenty appends, each group made durable by one sync.
    let file = [(wal_metrics::LABEL_WAL, "file")];
    let group_commits = seen.samples(wal_metrics::WRITE_RECORDS, &file);
    let wal_records = seen.sum(wal_metrics::WRITE_RECORDS, &file);
    assert!(wal_records >= 20.0, "WAL records: {wal_records}");
    assert!(
        (1..=wal_records as usize).contains(&group_commits),
        "group commits: {group_commits}"
    );
    assert!(seen.sum(wal_metrics::WRITE_BYTES, &file) > bytes as f64);
    assert_eq!(
        seen.samples(wal_metrics::SYNC_DURATION, &file),
        group_commits
    );
    assert_eq!(seen.samples(wal_metrics::WRITE_BYTES, &file), group_commits);
    assert_eq!(seen.samples(wal_metrics::REPLAY_DURATION, &file), 1);
    // The WAL's writer threads may outlive the store's shutdown by a sync.
    let syncing = seen.gauge(wal_metrics::WRITES_IN_FLIGHT, &file);
    assert!(
        syncing.is_some_and(|n| (0.0..=4.0).contains(&n)),
        "{syncing:?}"
    );
    let used = seen.gauge(wal_metrics::USED_BYTES, &file);
    assert!(used.is_some_and(|u| u > 0.0), "{used:?}");
}

#[test]
fn a_store_passes_the_block_wals_write_budget_through() {
    let dir = tempfile::tempdir().unwrap();
    let wal = WalSettings::Block {
        path: dir.path().join("wal.ring"),
        create_bytes: Some(16 << 20),
        max_writes_per_sec: 50,
    };
    let seen = with_recorder(|| async move {
        let objects: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let store = Store::open(settings(1, wal), Components::new(objects, "metrics"))
            .await
            .unwrap();
        let stream = store.create_stream().await.unwrap();
        // One at a time: past the budget's burst of four, each write waits for it.
        for n in 0..8 {
            stream.append(batch(n)).await.unwrap();
        }
        store.shutdown().await.unwrap();
    });
    let block = [(wal_metrics::LABEL_WAL, "block")];
    let held = seen.counter(wal_metrics::BUDGET_HELD, &block);
    let writes = seen.samples(wal_metrics::WRITE_BYTES, &block) as u64;
    assert!(
        held >= 1 && held <= writes,
        "{held} of {writes} writes held"
    );
}

#[test]
fn a_store_on_a_block_wal_reports_the_wals_series_to_its_recorder() {
    let dir = tempfile::tempdir().unwrap();
    let wal = WalSettings::block(dir.path().join("wal.ring"), Some(16 << 20));
    let seen = with_recorder(|| async move {
        let (store, _stream) = open_and_append_twenty(wal).await;
        store.shutdown().await.unwrap();
    });
    assert_eq!(seen.samples(m::APPEND_DURATION, &[("wal", "block")]), 20);
    // The ring was opened on a blocking thread; its handles were registered on the caller's.
    let block = [(wal_metrics::LABEL_WAL, "block")];
    assert!(seen.sum(wal_metrics::WRITE_RECORDS, &block) >= 20.0);
    let writes = seen.samples(wal_metrics::WRITE_BYTES, &block);
    assert!(writes >= 1);
    assert_eq!(seen.samples(wal_metrics::SYNC_DURATION, &block), writes);
    assert_eq!(seen.samples(wal_metrics::REPLAY_DURATION, &block), 1);
    let capacity = seen.gauge(wal_metrics::CAPACITY_BYTES, &block);
    assert!(capacity.is_some_and(|c| c > 0.0), "{capacity:?}");
    assert_eq!(
        seen.samples(
            wal_metrics::WRITE_BYTES,
            &[(wal_metrics::LABEL_WAL, "file")]
        ),
        0
    );
}

#[test]
fn throttled_and_conflicting_requests_are_counted_by_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let wal = WalSettings::file(dir.path().join("wal"));
    let seen = with_recorder(|| async move {
        let faulty = FaultyObjectStore::new(Arc::new(object_store::memory::InMemory::new()));
        let store = Store::open(
            settings(1, wal),
            Components::new(Arc::new(faulty.clone()), "throttled"),
        )
        .await
        .unwrap();
        let stream = store.create_stream().await.unwrap();
        // The next object PUT is throttled once; the next manifest create is refused once with
        // nothing written (S3's 409 on racing conditional PUTs).
        faulty.inject(
            FaultRule::new(Fault::SlowDown)
                .on(OpKind::Put)
                .under("throttled/objects/")
                .times(1),
        );
        faulty.inject(
            FaultRule::new(Fault::ConditionalConflict)
                .on(OpKind::Put)
                .under("throttled/manifest/")
                .times(1),
        );
        stream.append(batch(1)).await.unwrap();
        store.flush().await.unwrap();
        assert_eq!(faulty.pending_faults(), 0);
        store.shutdown().await.unwrap();
    });

    let requests = |op: &str, outcome: &str| {
        seen.counter(
            m::OBJECT_STORE_REQUESTS,
            &[("op", op), ("outcome", outcome)],
        )
    };
    assert_eq!(requests("put", "throttled"), 1);
    assert_eq!(requests("put", "already_exists"), 1);
    assert_eq!(requests("put", "error"), 0);
    assert!(requests("put", "ok") >= 2);
    assert_eq!(
        seen.counter(m::MANIFEST_CONFLICTS, &[("reason", "refused")]),
        1
    );
    assert_eq!(
        seen.counter(m::MANIFEST_CONFLICTS, &[("reason", "lost_race")]),
        0
    );
    assert_eq!(seen.counter(m::OBJECTS_UPLOADED, &[]), 1);
}

#[test]
fn a_takeover_counts_its_recovery_and_fences_the_old_owner() {
    let batches = 12u64;
    let bytes: u64 = (0..batches).map(|n| batch(n).payload.len() as u64).sum();
    let seen = with_recorder(|| async move {
        let objects: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let prefix = Path::from("takeover");
        let wal = WalSettings::object(None);
        let old = Store::open(
            settings(1, wal.clone()),
            Components::new(objects.clone(), prefix.clone()),
        )
        .await
        .unwrap();
        let stream = old.create_stream().await.unwrap();
        for n in 0..batches {
            stream.append(batch(n)).await.unwrap();
        }
        // Node 1 is presumed dead: node 2 takes it over through its object WAL.
        let new = Store::open(
            settings(2, wal.clone()),
            Components::new(objects.clone(), prefix.clone()),
        )
        .await
        .unwrap();
        let report = new.recover_node_from(NodeId(1), &wal).await.unwrap();
        assert_eq!(report.batches_recovered as u64, batches);
        // The old owner's next append meets the sealed WAL and fails fenced.
        let err = stream.append(batch(99)).await.unwrap_err();
        assert!(err.is_fenced(), "{err}");
        let err = stream.append(batch(100)).await.unwrap_err();
        assert!(err.is_fenced(), "{err}");
        new.shutdown().await.unwrap();
    });

    assert_eq!(seen.counter(m::RECOVERIES, &[("kind", "takeover")]), 1);
    assert_eq!(
        seen.samples(m::RECOVERY_DURATION, &[("kind", "takeover")]),
        1
    );
    assert_eq!(
        seen.counter(m::RECOVERED_BATCHES, &[("kind", "takeover")]),
        batches
    );
    assert_eq!(
        seen.counter(m::RECOVERED_BYTES, &[("kind", "takeover")]),
        bytes
    );
    // Both opens ran a restart recovery with nothing to replay.
    assert_eq!(seen.counter(m::RECOVERIES, &[("kind", "restart")]), 2);
    assert_eq!(seen.counter(m::RECOVERED_BYTES, &[("kind", "restart")]), 0);
    assert_eq!(
        seen.counter(m::MANIFEST_COMMITS, &[("change", "fence_node")]),
        1
    );
    assert!(seen.counter(m::OBJECTS_UPLOADED, &[]) >= 1);

    assert_eq!(seen.counter(m::FENCED, &[("event", "append")]), 2);
    assert_eq!(
        seen.counter(m::FENCED, &[("event", "wal")])
            + seen.counter(m::FENCED, &[("event", "node")]),
        1,
        "the old store latches one fenced error"
    );
    assert_eq!(
        seen.samples(m::APPEND_DURATION, &[("wal", "object")]) as u64,
        batches
    );
}

#[test]
fn the_metered_store_counts_each_operation_with_its_outcome_and_bytes() {
    use futures::StreamExt;
    use object_store::{ObjectStoreExt, PutMode};
    let seen = with_recorder(|| async {
        let metered =
            objstream::MeteredObjectStore::new(Arc::new(object_store::memory::InMemory::new()));
        let key = Path::from("a/b");
        metered.put(&key, vec![7u8; 100].into()).await.unwrap();
        let err = metered
            .put_opts(&key, vec![1u8; 5].into(), PutMode::Create.into())
            .await
            .unwrap_err();
        assert!(matches!(err, object_store::Error::AlreadyExists { .. }));
        assert_eq!(metered.get_range(&key, 10..30).await.unwrap().len(), 20);
        metered.get(&key).await.unwrap().bytes().await.unwrap();
        metered.head(&key).await.unwrap();
        assert!(metered.get(&Path::from("a/missing")).await.is_err());
        let listed: Vec<_> = metered.list(Some(&Path::from("a"))).collect().await;
        assert_eq!(listed.len(), 1);
        // A LIST that is never polled sends nothing and counts nothing.
        drop(metered.list(None));
        metered.delete(&key).await.unwrap();
    });
    let requests = |op: &str, outcome: &str| {
        seen.counter(
            m::OBJECT_STORE_REQUESTS,
            &[("op", op), ("outcome", outcome)],
        )
    };
    assert_eq!(requests("put", "ok"), 1);
    assert_eq!(requests("put", "already_exists"), 1);
    assert_eq!(requests("get_range", "ok"), 1);
    assert_eq!(requests("get", "ok"), 1);
    assert_eq!(requests("get", "not_found"), 1);
    assert_eq!(requests("head", "ok"), 1);
    assert_eq!(requests("list", "ok"), 1);
    assert_eq!(requests("delete", "ok"), 1);
    assert_eq!(seen.counter(m::OBJECT_STORE_REQUESTS, &[]), 8);
    assert_eq!(
        seen.samples(m::OBJECT_STORE_REQUEST_DURATION, &[("op", "put")]),
        2
    );
    assert_eq!(seen.counter(m::OBJECT_STORE_SENT_BYTES, &[]), 100);
    assert_eq!(seen.counter(m::OBJECT_STORE_RECEIVED_BYTES, &[]), 120);
}
