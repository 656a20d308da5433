//! The store under object store faults: throttling (503 Slow Down), timeouts, connection resets,
//! latency, range reads cut short, PUTs that land but report an error, and conditional PUTs that
//! meet a conflict. Each is injected through `objstream::testing::FaultyObjectStore`.
//!
//! Targeted tests first (one fault at one protocol step), then the seeded workload: appends on a
//! few streams with many in flight, flushes, fetches from objects, close and reopen, restarts
//! and crashes, with faults of one kind injected at random from a seed. Every run checks that no
//! acknowledged record was lost or changed, offsets are dense and never duplicated, and that the
//! store kept working or failed loudly (an error its caller saw), never silently.
//!
//! `OBJSTREAM_FAULT_SEEDS=N` runs N seeds on the in-memory store instead of the default; a few
//! seeds always run against the S3 test server too.

mod common;
mod support;

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::ObjectStore;
use objstream::manifest::{Change, MetaStore, ObjectStoreMetaStore, WriterToken};
use objstream::testing::{CallFilter, Fault, FaultRule, FaultyObjectStore, OpKind, RandomFaults};
use objstream::{
    Components, ErrorKind, NodeId, Offset, RecordBatch, Settings, Store, StoredBatch, Stream,
    StreamId, WalSettings,
};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

fn manifest_prefix(prefix: &Path) -> String {
    format!("{prefix}/manifest/")
}

fn objects_prefix(prefix: &Path) -> String {
    format!("{prefix}/objects/")
}

/// Settings that make a small workload exercise every step: small uploads, object ids reserved
/// a few at a time, frequent checkpoints.
fn settings(dir: &std::path::Path, node: u64) -> Settings {
    Settings {
        node_id: NodeId(node),
        wal: WalSettings::File {
            dir: dir.join(format!("wal-{node}")),
            segment_bytes: 1 << 20,
        },
        max_batch_bytes: 64 << 10,
        upload_threshold_bytes: 16 << 10,
        upload_interval_ms: 20,
        block_bytes: 4 << 10,
        object_id_batch: 3,
        manifest_checkpoint_every: 8,
        max_uploads_in_flight: 4,
        ..Settings::default()
    }
}

async fn open(faulty: &FaultyObjectStore, prefix: &Path, settings: &Settings) -> Store {
    let objects: Arc<dyn ObjectStore> = Arc::new(faulty.clone());
    Store::open(settings.clone(), Components::new(objects, prefix.clone()))
        .await
        .expect("open the store")
}

/// Reads `[from, to)` whole, in pieces.
async fn read_all(
    stream: &Stream,
    from: Offset,
    to: Offset,
) -> objstream::Result<Vec<StoredBatch>> {
    let mut out: Vec<StoredBatch> = Vec::new();
    let mut pos = from;
    while pos < to {
        let got = stream.fetch(pos, to, 16 << 10).await?;
        assert!(
            !got.is_empty(),
            "fetch at {pos} below {to} returned nothing"
        );
        pos = got.last().map_or(pos, |b| b.next_offset());
        out.extend(got);
    }
    Ok(out)
}

/// Every warning logged in this test process so far. The first call installs a global
/// subscriber that collects them (global, so that the store's tasks on any thread log to it).
fn logged_warnings() -> String {
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);
    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    static SINK: std::sync::OnceLock<Sink> = std::sync::OnceLock::new();
    let sink = SINK.get_or_init(|| {
        let sink = Sink::default();
        let writer = sink.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::WARN)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("no other subscriber");
        sink
    });
    String::from_utf8_lossy(&sink.0.lock().unwrap()).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_slows_uploads_and_commits_but_fails_no_append() {
    logged_warnings();
    let dir = tempfile::tempdir().unwrap();
    let faulty = FaultyObjectStore::new(Arc::new(InMemory::new()));
    let prefix = Path::from("throttled");
    let settings = settings(dir.path(), 1);
    let store = open(&faulty, &prefix, &settings).await;
    let stream = store.create_stream().await.unwrap();
    faulty.inject(
        FaultRule::new(Fault::SlowDown)
            .times(6)
            .on(OpKind::Put)
            .under(objects_prefix(&prefix)),
    );
    faulty.inject(
        FaultRule::new(Fault::SlowDown)
            .times(4)
            .on(OpKind::Put)
            .under(manifest_prefix(&prefix)),
    );
    let appends: Vec<_> = (0..300)
        .map(|n| stream.append(common::batch(0, n)))
        .collect();
    let mut next = Offset(0);
    for a in appends {
        let r = a.await.expect("no append fails while the store throttles");
        assert_eq!(r.base_offset, next);
        next = r.next_offset;
    }
    store
        .flush()
        .await
        .expect("the flush waits the throttling out");
    assert_eq!(faulty.pending_faults(), 0, "every 503 was met");
    let read = read_all(&stream, Offset(0), next).await.unwrap();
    assert_eq!(read.len(), 300);
    store.shutdown().await.unwrap();
    // Only this test's lines: their keys are under its prefix.
    let logs: String = logged_warnings()
        .lines()
        .filter(|l| l.contains("throttled/"))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(logs.contains("retrying"), "{logs}");
    assert!(
        logs.contains("put object"),
        "the retry log names the operation: {logs}"
    );
    assert!(
        logs.contains("create manifest record"),
        "manifest retries are logged with their operation: {logs}"
    );
    assert!(logs.contains("503 Slow Down"), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_under_throttling_replays_and_commits_everything() {
    let dir = tempfile::tempdir().unwrap();
    let faulty = FaultyObjectStore::new(Arc::new(InMemory::new()));
    let prefix = Path::from("restart");
    let settings = Settings {
        // Nothing is uploaded before the crash: the restart has it all to do.
        upload_threshold_bytes: 64 << 20,
        upload_interval_ms: 60_000,
        ..settings(dir.path(), 1)
    };
    let store = open(&faulty, &prefix, &settings).await;
    let stream = store.create_stream().await.unwrap();
    let id = stream.id();
    let mut next = Offset(0);
    for n in 0..50 {
        next = stream
            .append(common::batch(0, n))
            .await
            .unwrap()
            .next_offset;
    }
    drop(stream);
    drop(store);
    // Every kind of call is throttled for a while: LIST and GETs of the manifest, the object
    // PUTs of the WAL replay, the manifest creates of its commits.
    for (op, under) in [
        (OpKind::List, format!("{prefix}/")),
        (OpKind::Get, manifest_prefix(&prefix)),
        (OpKind::Put, objects_prefix(&prefix)),
        (OpKind::Put, manifest_prefix(&prefix)),
    ] {
        faulty.inject(FaultRule::new(Fault::SlowDown).times(3).on(op).under(under));
    }
    let store = open_when_wal_free(&faulty, &prefix, &settings)
        .await
        .expect("recovery waits the throttling out");
    assert_eq!(faulty.pending_faults(), 0, "every 503 was met");
    let kinds: std::collections::HashSet<OpKind> = faulty
        .calls()
        .iter()
        .filter(|c| c.injected.is_some())
        .map(|c| c.op)
        .collect();
    assert!(
        kinds.len() >= 2,
        "faults hit several kinds of call: {kinds:?}"
    );
    let stream = store.open_stream(id).await.unwrap();
    assert_eq!(stream.confirmed_offset().unwrap(), next);
    let read = read_all(&stream, Offset(0), next).await.unwrap();
    for (n, b) in read.iter().enumerate() {
        assert_eq!(b.batch.payload, common::payload(0, n as u64));
    }
    store.shutdown().await.unwrap();
}

/// A manifest on a faulty store, with its own writer token.
async fn meta(faulty: &FaultyObjectStore, prefix: &Path, token: u128) -> ObjectStoreMetaStore {
    ObjectStoreMetaStore::open(
        Arc::new(faulty.clone()),
        prefix.clone(),
        WriterToken(token),
        0,
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn every_transient_fault_on_a_manifest_call_is_retried() {
    for fault in [Fault::SlowDown, Fault::Timeout, Fault::ConnectionReset] {
        let faulty = FaultyObjectStore::new(Arc::new(InMemory::new()));
        let prefix = Path::from("m");
        let m = meta(&faulty, &prefix, 1).await;
        let node = NodeId(1);
        m.commit(Change::OpenNode { node }).await.unwrap();
        // The create of the next record fails twice, then the read of a record fails once.
        faulty.inject(
            FaultRule::new(fault)
                .times(2)
                .on(OpKind::Put)
                .under(manifest_prefix(&prefix)),
        );
        let created = m
            .commit(Change::CreateStream {
                node,
                node_epoch: objstream::Epoch(1),
            })
            .await
            .unwrap_or_else(|e| panic!("{fault:?} on a manifest PUT: {e}"));
        assert_eq!(created.seq, 2);
        faulty.inject(
            FaultRule::new(fault)
                .on(OpKind::Get)
                .under(manifest_prefix(&prefix)),
        );
        let other = meta(&faulty, &prefix, 2).await;
        assert_eq!(
            other.state().await.unwrap().seq(),
            2,
            "{fault:?} on a manifest GET"
        );
        assert_eq!(faulty.pending_faults(), 0);
    }
}

#[tokio::test]
async fn an_ambiguous_manifest_create_is_resolved_by_its_writer_token() {
    let faulty = FaultyObjectStore::new(Arc::new(InMemory::new()));
    let prefix = Path::from("m");
    let m = meta(&faulty, &prefix, 7).await;
    let node = NodeId(1);
    m.commit(Change::OpenNode { node }).await.unwrap();
    // The record lands, but the writer hears a timeout; its retry meets its own record.
    faulty.inject(
        FaultRule::new(Fault::PutSucceedsButErrors)
            .on(OpKind::Put)
            .under(manifest_prefix(&prefix)),
    );
    let created = m
        .commit(Change::CreateStream {
            node,
            node_epoch: objstream::Epoch(1),
        })
        .await
        .expect("the ambiguous create is our own record: a success");
    assert_eq!(created.seq, 2);
    let ambiguous = faulty.count_where(|c| c.injected == Some(Fault::PutSucceedsButErrors));
    assert_eq!(ambiguous, 1);
    let record_2 = format!("{}{:020}", manifest_prefix(&prefix), 2);
    let puts = faulty.count_where(|c| c.op == OpKind::Put && c.key == record_2);
    assert_eq!(puts, 2, "one PUT that landed, one retry that met it");
    // Exactly one stream was created, and the next commit takes the next number.
    let next = m
        .commit(Change::CreateStream {
            node,
            node_epoch: objstream::Epoch(1),
        })
        .await
        .unwrap();
    assert_eq!(next.seq, 3);
    assert_eq!(next.state.streams_owned_by(node).len(), 2);
    let fresh = meta(&faulty, &prefix, 8).await;
    assert_eq!(fresh.state().await.unwrap().seq(), 3);
}

#[tokio::test]
async fn an_ambiguous_create_that_lost_the_race_revalidates_instead_of_claiming_success() {
    let faulty = FaultyObjectStore::new(Arc::new(InMemory::new()));
    let prefix = Path::from("m");
    let a = meta(&faulty, &prefix, 1).await;
    let b = meta(&faulty, &prefix, 2).await;
    let node_a = NodeId(1);
    let node_b = NodeId(2);
    // Hold A's create of record 1 until B has written record 1.
    let gate = faulty.gate_matching(CallFilter {
        op: Some(OpKind::Put),
        prefix: Some(format!("{}{:020}", manifest_prefix(&prefix), 1)),
    });
    let a_commit = tokio::spawn(async move {
        let r = a.commit(Change::OpenNode { node: node_a }).await;
        (a, r)
    });
    gate.wait_for_arrival().await;
    // B's create of record 1 is held too; let it through first.
    let b_commit = tokio::spawn(async move { b.commit(Change::OpenNode { node: node_b }).await });
    gate.wait_for_arrival().await;
    // Whichever is released first wins record 1; make A's attempt time out after the race.
    faulty.inject(
        FaultRule::new(Fault::Timeout)
            .on(OpKind::Put)
            .under(manifest_prefix(&prefix)),
    );
    gate.release();
    gate.release();
    drop(gate);
    let (a, a_result) = a_commit.await.unwrap();
    let b_result = b_commit.await.unwrap();
    let a_committed = a_result.expect("A retries, meets a record, reads it, re-validates");
    let b_committed = b_result.expect("B commits");
    assert_ne!(a_committed.seq, b_committed.seq, "one record per number");
    let state = a.refresh().await.unwrap();
    assert_eq!(state.seq(), 2);
    assert!(state.node(node_a).is_some() && state.node(node_b).is_some());
}

#[tokio::test]
async fn a_conditional_conflict_that_wrote_nothing_is_retried() {
    let faulty = FaultyObjectStore::new(Arc::new(InMemory::new()));
    let prefix = Path::from("m");
    let m = meta(&faulty, &prefix, 1).await;
    let node = NodeId(1);
    m.commit(Change::OpenNode { node }).await.unwrap();
    // S3 answers 409 to a conditional PUT racing another request on the key; object_store
    // reports AlreadyExists, yet nothing may be there when the writer looks.
    faulty.inject(
        FaultRule::new(Fault::ConditionalConflict)
            .times(2)
            .on(OpKind::Put)
            .under(manifest_prefix(&prefix)),
    );
    let created = m
        .commit(Change::CreateStream {
            node,
            node_epoch: objstream::Epoch(1),
        })
        .await
        .expect("a conflict with nothing written is retried");
    assert_eq!(created.seq, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_range_read_is_never_returned_as_data() {
    let dir = tempfile::tempdir().unwrap();
    let faulty = FaultyObjectStore::new(Arc::new(InMemory::new()));
    let prefix = Path::from("short");
    let store = open(&faulty, &prefix, &settings(dir.path(), 1)).await;
    let stream = store.create_stream().await.unwrap();
    let mut next = Offset(0);
    for n in 0..60 {
        next = stream
            .append(common::batch(0, n))
            .await
            .unwrap()
            .next_offset;
    }
    stream.close().await.unwrap();
    store.shutdown().await.unwrap();
    // A fresh node's cache is empty: every fetch reads objects.
    let store = open(&faulty, &prefix, &settings(dir.path(), 2)).await;
    let stream = store.open_stream(stream.id()).await.unwrap();
    faulty.inject(
        FaultRule::new(Fault::TruncatedRead)
            .times(3)
            .on(OpKind::GetRange),
    );
    // A short body is a broken transfer: retried, neither returned nor called corruption.
    let read = read_all(&stream, Offset(0), next)
        .await
        .expect("short reads are retried");
    for (n, b) in read.iter().enumerate() {
        assert_eq!(b.batch.payload, common::payload(0, n as u64));
    }
    assert_eq!(faulty.pending_faults(), 0, "every short read was met");
    let short = faulty.count_where(|c| c.injected == Some(Fault::TruncatedRead));
    assert_eq!(short, 3);
    store.shutdown().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// The seeded workload.
// ---------------------------------------------------------------------------------------------

/// Seeds run on the in-memory store by default (more with `OBJSTREAM_FAULT_SEEDS`).
const DEFAULT_SEEDS: u64 = 200;
/// Seeds run at once.
const PARALLEL_SEEDS: usize = 8;
const STREAMS: usize = 3;
const STEPS: usize = 10;
/// Chance of a fault per object store call.
const FAULT_PROBABILITY: f64 = 0.1;

/// The fault a seed injects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    SlowDown,
    Timeout,
    Reset,
    Latency,
    TruncatedRead,
    AmbiguousPut,
    ManifestConflict,
    Mixed,
}

const KINDS: [Kind; 8] = [
    Kind::SlowDown,
    Kind::Timeout,
    Kind::Reset,
    Kind::Latency,
    Kind::TruncatedRead,
    Kind::AmbiguousPut,
    Kind::ManifestConflict,
    Kind::Mixed,
];

impl Kind {
    fn of_seed(seed: u64) -> Kind {
        KINDS[(seed % KINDS.len() as u64) as usize]
    }

    fn random_faults(self, seed: u64, prefix: &Path) -> RandomFaults {
        let latency = Fault::Latency(Duration::from_millis(5));
        let faults = match self {
            Kind::SlowDown => vec![Fault::SlowDown],
            Kind::Timeout => vec![Fault::Timeout],
            Kind::Reset => vec![Fault::ConnectionReset],
            Kind::Latency => vec![latency],
            Kind::TruncatedRead => vec![Fault::TruncatedRead],
            Kind::AmbiguousPut => vec![Fault::PutSucceedsButErrors],
            // S3 sends 409 only for conditional PUTs: the manifest's creates.
            Kind::ManifestConflict => {
                return RandomFaults::new(seed, 0.3, [Fault::ConditionalConflict])
                    .under(manifest_prefix(prefix))
            }
            Kind::Mixed => vec![
                Fault::SlowDown,
                Fault::Timeout,
                Fault::ConnectionReset,
                latency,
                Fault::TruncatedRead,
                Fault::PutSucceedsButErrors,
            ],
        };
        RandomFaults::new(seed, FAULT_PROBABILITY, faults).under(prefix.as_ref())
    }
}

/// What happened to one append.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Outcome {
    Acked(Offset),
    Failed,
}

/// One stream's appends, in the order they were made.
#[derive(Default)]
struct StreamModel {
    attempts: Vec<(RecordBatch, Outcome)>,
    by_payload: HashMap<Bytes, usize>,
}

impl StreamModel {
    fn add(&mut self, batch: RecordBatch, outcome: Outcome) {
        self.by_payload
            .insert(batch.payload.clone(), self.attempts.len());
        self.attempts.push((batch, outcome));
    }

    /// `read` (everything from offset 0) against the appends: dense offsets, appends in the
    /// order they were made and each at most once, every acknowledged one at its offset with
    /// its bytes, and nothing that was never appended.
    fn check(&self, read: &[StoredBatch]) -> Result<(), String> {
        let mut next = Offset(0);
        let mut last: Option<usize> = None;
        let mut seen = vec![false; self.attempts.len()];
        for b in read {
            if b.base_offset != next {
                return Err(format!(
                    "a hole or overlap: batch at {} after {next}",
                    b.base_offset
                ));
            }
            next = b.next_offset();
            let Some(&i) = self.by_payload.get(&b.batch.payload) else {
                return Err(format!("batch at {} was never appended", b.base_offset));
            };
            if last.is_some_and(|l| i <= l) {
                return Err(format!(
                    "append {i} at {} is out of order or repeated",
                    b.base_offset
                ));
            }
            last = Some(i);
            seen[i] = true;
            let (batch, outcome) = &self.attempts[i];
            if batch.count != b.batch.count {
                return Err(format!(
                    "append {i}: {} records, read {}",
                    batch.count, b.batch.count
                ));
            }
            if let Outcome::Acked(at) = outcome {
                if *at != b.base_offset {
                    return Err(format!(
                        "append {i} was acknowledged at {at}, read at {}",
                        b.base_offset
                    ));
                }
            }
        }
        for (i, (_, outcome)) in self.attempts.iter().enumerate() {
            if let (Outcome::Acked(at), false) = (outcome, seen[i]) {
                return Err(format!("acknowledged append {i} at {at} is lost"));
            }
        }
        Ok(())
    }
}

#[derive(Debug)]
struct RunStats {
    kind: Kind,
    acked: u64,
    injected: u64,
    calls: u64,
    loud_errors: Vec<String>,
}

/// One seeded run against `inner`: a workload under the seed's faults, then a check of every
/// stream on a fresh store with the faults off.
async fn run_seed(
    seed: u64,
    inner: Arc<dyn ObjectStore>,
    prefix: Path,
) -> Result<RunStats, String> {
    let kind = Kind::of_seed(seed);
    let fail = |what: String| format!("seed {seed} ({kind:?}): {what}");
    let dir = tempfile::tempdir().map_err(|e| fail(e.to_string()))?;
    let settings = settings(dir.path(), 1);
    let faulty = FaultyObjectStore::new(inner);
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut stats = RunStats {
        kind,
        acked: 0,
        injected: 0,
        calls: 0,
        loud_errors: Vec::new(),
    };
    let mut models: Vec<StreamModel> = (0..STREAMS).map(|_| StreamModel::default()).collect();

    // The streams are created before the faults start, so that every run has all of them.
    let mut store = open(&faulty, &prefix, &settings).await;
    let mut ids = Vec::new();
    let mut handles: Vec<Option<Stream>> = Vec::new();
    for _ in 0..STREAMS {
        let stream = store
            .create_stream()
            .await
            .map_err(|e| fail(e.to_string()))?;
        ids.push(stream.id());
        handles.push(Some(stream));
    }
    faulty.set_random_faults(kind.random_faults(seed, &prefix));
    let mut appended = 0u64;
    for step in 0..STEPS {
        let action = rng.random_range(0..10u32);
        let mut broken = false;
        match action {
            // A burst of appends over all streams, many in flight.
            0..=4 => {
                let count = rng.random_range(5..30usize);
                let mut pending = Vec::new();
                for _ in 0..count {
                    let s = rng.random_range(0..STREAMS);
                    let len = rng.random_range(100..2000usize);
                    let mut payload =
                        format!("seed {seed} stream {s} append {appended}:").into_bytes();
                    payload.resize(len.max(payload.len()), b'a' + (appended % 26) as u8);
                    appended += 1;
                    let batch = RecordBatch::new(rng.random_range(1..4), 0, payload);
                    match &handles[s] {
                        Some(h) => pending.push((s, batch.clone(), h.append(batch))),
                        None => models[s].add(batch, Outcome::Failed),
                    }
                }
                for (s, batch, future) in pending {
                    match future.await {
                        Ok(r) => {
                            models[s].add(batch, Outcome::Acked(r.base_offset));
                            stats.acked += 1;
                        }
                        Err(e) => {
                            models[s].add(batch, Outcome::Failed);
                            stats.loud_errors.push(format!("step {step} append: {e}"));
                            broken = true;
                        }
                    }
                }
                // Acknowledgements are dense per stream: each starts where the last one ended.
                for (s, m) in models.iter().enumerate() {
                    let acked: Vec<_> = m
                        .attempts
                        .iter()
                        .filter_map(|(b, o)| match o {
                            Outcome::Acked(at) => Some((at, b.count)),
                            Outcome::Failed => None,
                        })
                        .collect();
                    for pair in acked.windows(2) {
                        if pair[1].0 < &pair[0].0.add(u64::from(pair[0].1)) {
                            return Err(fail(format!(
                                "stream {s}: offset {} given twice",
                                pair[1].0
                            )));
                        }
                    }
                }
            }
            5 => {
                if let Err(e) = store.flush().await {
                    stats.loud_errors.push(format!("step {step} flush: {e}"));
                    broken = true;
                }
            }
            // Close a stream and open it again: its cache is dropped, reads go to objects.
            6 | 7 => {
                let s = rng.random_range(0..STREAMS);
                if let Some(h) = handles[s].take() {
                    if let Err(e) = h.close().await {
                        stats.loud_errors.push(format!("step {step} close: {e}"));
                        broken = true;
                    }
                }
                if !broken {
                    match store.open_stream(ids[s]).await {
                        Ok(h) => handles[s] = Some(h),
                        Err(e) => {
                            stats
                                .loud_errors
                                .push(format!("step {step} open stream: {e}"));
                            broken = true;
                        }
                    }
                }
                if let Some(h) = &handles[s] {
                    broken |= verify(h, &models[s], &mut stats, step)
                        .await
                        .map_err(&fail)?;
                }
            }
            // Restart: clean (shutdown) or a crash (dropped; the WAL is replayed).
            _ => {
                if action == 8 {
                    if let Err(e) = store.shutdown().await {
                        stats.loud_errors.push(format!("step {step} shutdown: {e}"));
                    }
                }
                broken = true;
            }
        }
        if broken {
            handles.iter_mut().for_each(|h| *h = None);
            drop(store);
            store = reopen(&faulty, &prefix, &settings, &mut stats).await;
            for (s, &id) in ids.iter().enumerate() {
                handles[s] = reopen_stream(&store, id, &mut stats).await;
            }
        }
    }
    stats.injected = faulty.injected() as u64;
    stats.calls = faulty.calls().len() as u64;
    // The verdict: with the faults off, a restarted node reads every stream back from objects.
    faulty.clear_faults();
    drop(handles);
    store.shutdown().await.ok();
    drop(store);
    let store = open_when_wal_free(&faulty, &prefix, &settings)
        .await
        .map_err(|e| fail(format!("final open: {e}")))?;
    for (s, &id) in ids.iter().enumerate() {
        let h = store
            .open_stream(id)
            .await
            .map_err(|e| fail(format!("final open: {e}")))?;
        let end = h.confirmed_offset().map_err(|e| fail(e.to_string()))?;
        let read = read_all(&h, Offset(0), end)
            .await
            .map_err(|e| fail(format!("final read: {e}")))?;
        models[s]
            .check(&read)
            .map_err(|e| fail(format!("stream {s}: {e}")))?;
    }
    store.shutdown().await.map_err(|e| fail(e.to_string()))?;
    Ok(stats)
}

/// Reads a stream whole and checks it; true when the read failed (loudly).
async fn verify(
    h: &Stream,
    model: &StreamModel,
    stats: &mut RunStats,
    step: usize,
) -> Result<bool, String> {
    let end = match h.confirmed_offset() {
        Ok(end) => end,
        Err(e) => {
            stats
                .loud_errors
                .push(format!("step {step} confirmed offset: {e}"));
            return Ok(true);
        }
    };
    match read_all(h, Offset(0), end).await {
        Ok(read) => model
            .check(&read)
            .map(|()| false)
            .map_err(|e| format!("step {step} read of {}: {e}", h.id())),
        Err(e) => {
            if e.kind() == ErrorKind::Corruption {
                return Err(format!(
                    "step {step}: a transient fault was reported as corruption: {e}"
                ));
            }
            stats.loud_errors.push(format!("step {step} fetch: {e}"));
            Ok(true)
        }
    }
}

/// Opens `settings`' node, waiting while the WAL is still held by the dropped store's last
/// background task.
async fn open_when_wal_free(
    faulty: &FaultyObjectStore,
    prefix: &Path,
    settings: &Settings,
) -> objstream::Result<Store> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let objects: Arc<dyn ObjectStore> = Arc::new(faulty.clone());
        match Store::open(settings.clone(), Components::new(objects, prefix.clone())).await {
            Err(e)
                if e.to_string().contains("in use by another WAL") && Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            done => return done,
        }
    }
}

/// Opens the node again, retrying an open that fails loudly.
async fn reopen(
    faulty: &FaultyObjectStore,
    prefix: &Path,
    settings: &Settings,
    stats: &mut RunStats,
) -> Store {
    for _ in 0..5 {
        match open_when_wal_free(faulty, prefix, settings).await {
            Ok(store) => return store,
            Err(e) => stats.loud_errors.push(format!("reopen: {e}")),
        }
    }
    faulty.clear_faults();
    open_when_wal_free(faulty, prefix, settings)
        .await
        .expect("open with the faults off")
}

async fn reopen_stream(store: &Store, id: StreamId, stats: &mut RunStats) -> Option<Stream> {
    match store.open_stream(id).await {
        Ok(h) => Some(h),
        Err(e) => {
            stats.loud_errors.push(format!("open stream {id}: {e}"));
            None
        }
    }
}

fn seed_count() -> u64 {
    std::env::var("OBJSTREAM_FAULT_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_SEEDS)
}

/// Runs `seeds` and fails with every failing seed named.
async fn run_seeds(
    seeds: Vec<u64>,
    backend: impl Fn(u64) -> (Arc<dyn ObjectStore>, Path),
    parallel: usize,
) -> Vec<RunStats> {
    use futures::stream::StreamExt as _;
    let started = Instant::now();
    let runs = futures::stream::iter(seeds.iter().map(|&seed| {
        let (inner, prefix) = backend(seed);
        tokio::spawn(run_seed(seed, inner, prefix))
    }))
    .buffer_unordered(parallel)
    .collect::<Vec<_>>()
    .await;
    let mut failures = Vec::new();
    let mut stats = Vec::new();
    for r in runs {
        match r {
            Ok(Ok(s)) => stats.push(s),
            Ok(Err(e)) => failures.push(e),
            Err(e) => failures.push(format!("a run panicked: {e}")),
        }
    }
    let acked: u64 = stats.iter().map(|s| s.acked).sum();
    let injected: u64 = stats.iter().map(|s| s.injected).sum();
    let calls: u64 = stats.iter().map(|s| s.calls).sum();
    let loud: Vec<&String> = stats.iter().flat_map(|s| &s.loud_errors).collect();
    println!(
        "{} seeds in {:.1} s: {acked} appends acknowledged, {injected} faults in {calls} object store calls, {} loud errors",
        seeds.len(),
        started.elapsed().as_secs_f64(),
        loud.len()
    );
    for kind in KINDS {
        let of_kind = stats.iter().filter(|s| s.kind == kind);
        let (runs, faults) = of_kind.fold((0, 0), |(r, f), s| (r + 1, f + s.injected));
        println!("  {kind:?}: {runs} runs, {faults} faults injected");
    }
    for e in loud.iter().take(10) {
        println!("  loud error: {e}");
    }
    // Every injected fault is transient: retries must absorb it, so the store keeps working.
    assert!(
        loud.is_empty(),
        "the store failed under transient faults: {loud:?}"
    );
    assert!(
        failures.is_empty(),
        "{} failing runs:\n{}",
        failures.len(),
        failures.join("\n")
    );
    stats
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_faults_on_the_in_memory_store_lose_nothing() {
    let seeds: Vec<u64> = (0..seed_count()).collect();
    let stats = run_seeds(
        seeds,
        |_| {
            (
                Arc::new(InMemory::new()) as Arc<dyn ObjectStore>,
                Path::from("seeded"),
            )
        },
        PARALLEL_SEEDS,
    )
    .await;
    let injected: u64 = stats.iter().map(|s| s.injected).sum();
    assert!(injected > 0, "faults were injected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_faults_on_every_backend_lose_nothing() {
    for backend in support::backends() {
        let seeds: Vec<u64> = (1000..1000 + KINDS.len() as u64).collect();
        let store = backend.store.clone();
        let prefix = backend.prefix.clone();
        println!("backend {}", backend.name);
        run_seeds(
            seeds,
            |seed| (store.clone(), prefix.clone().join(format!("seed-{seed}"))),
            4,
        )
        .await;
    }
}
