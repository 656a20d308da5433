//! The object WAL against the S3 test server, with the server's raw limits measured in the same
//! run. Every part runs the three linger modes (`LingerMode::Fixed`, the rule before modes
//! existed; `WhenBusy`, the default; `GroupCommit`) in alternating rounds beside the raw
//! measurement, so that a loaded minute on a shared machine shows in all of them; figures are
//! the median over rounds with the range (min–max) beside it.
//!
//! 1. raw conditional PUT latency (p50, p99) of WAL-sized objects, one at a time: the floor an
//!    acknowledgement cannot beat;
//! 2. object WAL append latency with one appender awaiting each 1 KiB append, next to raw PUT
//!    latency of the same round (target: p99 <= raw PUT p99 + 5 ms);
//! 3. paced trickles: 1 KiB appends at 200, 600 and 2000 per second from a thread that keeps
//!    the pace, each awaited on its own: PUTs per second (what a trickle costs, also as a ratio
//!    to the fixed linger's in the same round) and append latency;
//!    The same lone appender and the 2000 per second trickle again with 4 ms added to every
//!    store call, a store slower than the linger as S3 Express is;
//! 4. idle PUTs per second (target 0: nothing is written while nothing is appended);
//! 5. saturation: 256 appenders of 64 KiB records, 4 in flight each, as fast as acknowledgements
//!    allow, for throughput, latency, the WAL object size distribution (target median >=
//!    `batch_bytes`, 4 MiB) and PUTs per GB, against raw 4 MiB PUTs with as many in flight as
//!    the WAL allows;
//! 6. takeover: a node appends 64 MiB that stay in its WAL (no upload yet) and stops without
//!    warning; another node fences it, seals and replays its WAL, uploads and commits, and opens
//!    every stream. Target <= 500 ms on the loopback server.
//!
//! The store is the S3 test server when `OBJSTREAM_TEST_S3_*` is set (see `scripts/s3-server.sh
//! env`); otherwise a local directory, and the summary says so. Run:
//! `cargo bench --bench object_wal`. `OBJSTREAM_BENCH_QUICK=1` shortens every part.

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use futures::stream::{FuturesUnordered, StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use objstream::testing::{FaultyObjectStore, OpKind};
use objstream::{Components, NodeId, RecordBatch, Settings, Store, WalSettings};
use objstream_wal::object::LingerMode;
use objstream_wal::{ObjectWal, ObjectWalIdentity, ObjectWalOptions, Wal, WalPosition};
use tokio::runtime::Runtime;

const TAKEOVER_BYTES: u64 = 64 << 20;

/// The modes compared, the rule before modes existed first.
const MODES: [(&str, LingerMode); 3] = [
    ("fixed (before)", LingerMode::Fixed),
    ("when busy (default)", LingerMode::WhenBusy),
    ("group commit", LingerMode::GroupCommit),
];

fn quick() -> bool {
    std::env::var("OBJSTREAM_BENCH_QUICK").is_ok()
}

fn rounds() -> usize {
    if quick() {
        2
    } else {
        3
    }
}

fn options(mode: LingerMode) -> ObjectWalOptions {
    ObjectWalOptions {
        linger_mode: mode,
        ..ObjectWalOptions::default()
    }
}

/// The S3 server if configured, else a local directory (kept alive by the returned guard).
fn target() -> (
    &'static str,
    Arc<dyn ObjectStore>,
    Path,
    Option<tempfile::TempDir>,
) {
    if std::env::var("OBJSTREAM_TEST_S3_ENDPOINT").is_ok() {
        let s3 = support::s3_store();
        ("s3 test server", s3.store, s3.prefix, None)
    } else {
        let dir = tempfile::tempdir().unwrap();
        let store = object_store::local::LocalFileSystem::new_with_prefix(dir.path()).unwrap();
        (
            "local directory (OBJSTREAM_TEST_S3_ENDPOINT not set)",
            Arc::new(store),
            Path::from("bench"),
            Some(dir),
        )
    }
}

fn record(len: usize, n: u64) -> Bytes {
    let mut v = vec![b'x'; len];
    v[..8].copy_from_slice(&n.to_le_bytes());
    Bytes::from(v)
}

fn percentile<T: Copy + Default>(sorted: &[T], p: f64) -> T {
    if sorted.is_empty() {
        return T::default();
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// One figure per round: prints as "median (min–max)".
#[derive(Default)]
struct Rounds(Vec<f64>);

impl Rounds {
    fn push(&mut self, x: f64) {
        self.0.push(x);
    }

    fn median(&self) -> f64 {
        let mut v = self.0.clone();
        v.sort_by(f64::total_cmp);
        percentile(&v, 0.5)
    }

    fn show(&self, digits: usize) -> String {
        let min = self.0.iter().copied().fold(f64::INFINITY, f64::min);
        let max = self.0.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        format!("{:.digits$} ({min:.digits$}–{max:.digits$})", self.median())
    }
}

async fn open_wal(
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    epoch: u64,
    options: ObjectWalOptions,
) -> ObjectWal {
    ObjectWal::open(
        store,
        prefix,
        ObjectWalIdentity {
            owner: 1,
            epoch,
            actor: 1,
            actor_epoch: epoch,
        },
        WalPosition(0),
        options,
    )
    .await
    .unwrap()
}

/// Raw conditional PUTs of `len` bytes, one at a time.
async fn raw_put_latencies(
    store: &Arc<dyn ObjectStore>,
    prefix: &Path,
    len: usize,
    n: usize,
) -> Vec<Duration> {
    let body = record(len, 0);
    let mut lat = Vec::with_capacity(n);
    for i in 0..n {
        let key = prefix.clone().join(format!("{i:020}").as_str());
        let started = Instant::now();
        store
            .put_opts(
                &key,
                PutPayload::from_bytes(body.clone()),
                PutOptions {
                    mode: PutMode::Create,
                    ..PutOptions::default()
                },
            )
            .await
            .unwrap();
        lat.push(started.elapsed());
    }
    lat.sort();
    lat
}

/// One appender awaiting each 1 KiB append; sorted latencies.
async fn awaited_latencies(wal: &ObjectWal, n: usize) -> Vec<Duration> {
    let mut lat = Vec::with_capacity(n);
    for i in 0..n as u64 {
        let started = Instant::now();
        wal.append(record(1024, i)).await.unwrap();
        lat.push(started.elapsed());
    }
    lat.sort();
    lat
}

/// Appends 1 KiB records at `rate` per second for `run_for` from a thread that keeps the pace
/// (tokio's timer ticks in milliseconds, too coarse for 2000 per second), each append awaited
/// on its own task; returns the sorted latencies once every append is acknowledged.
fn trickle(rt: &Runtime, wal: Arc<ObjectWal>, rate: u32, run_for: Duration) -> Vec<Duration> {
    let handle = rt.handle().clone();
    let pacer = std::thread::spawn(move || {
        let interval = Duration::from_secs(1) / rate;
        let started = Instant::now();
        let mut tasks = Vec::new();
        for n in 0.. {
            let at = started + interval * n;
            if at - started >= run_for {
                break;
            }
            let now = Instant::now();
            if at > now {
                std::thread::sleep(at - now);
            }
            let sent = Instant::now();
            let append = wal.append(record(1024, n as u64));
            tasks.push(handle.spawn(async move {
                append.await.unwrap();
                sent.elapsed()
            }));
        }
        tasks
    });
    let tasks = pacer.join().unwrap();
    let mut lat = rt.block_on(futures::future::try_join_all(tasks)).unwrap();
    lat.sort();
    lat
}

/// Raw 4 MiB PUTs with `in_flight` at a time: MB/s.
async fn raw_4m_mbps(
    store: &Arc<dyn ObjectStore>,
    prefix: &Path,
    objects: usize,
    in_flight: usize,
) -> f64 {
    let body = record(4 << 20, 7);
    let started = Instant::now();
    let mut puts = FuturesUnordered::new();
    for i in 0..objects {
        let store = store.clone();
        let key = prefix.clone().join(format!("{i:020}").as_str());
        let body = body.clone();
        puts.push(async move { store.put(&key, PutPayload::from_bytes(body)).await });
        if puts.len() >= in_flight {
            puts.next().await.unwrap().unwrap();
        }
    }
    while let Some(r) = puts.next().await {
        r.unwrap();
    }
    (objects * (4 << 20)) as f64 / started.elapsed().as_secs_f64() / 1e6
}

/// 256 appenders of 64 KiB records, 4 in flight each, for `run_for`: bytes appended and the
/// sorted latencies.
async fn saturate(wal: Arc<ObjectWal>, run_for: Duration) -> (u64, Vec<Duration>) {
    let started = Instant::now();
    let mut appenders = FuturesUnordered::new();
    for a in 0..256u64 {
        let wal = wal.clone();
        appenders.push(tokio::spawn(async move {
            // Each appender keeps 4 appends in flight: 64 MiB outstanding in all, enough to
            // fill every WAL object to batch_bytes while max_in_flight objects upload.
            let mut lat = Vec::new();
            let mut n = 0u64;
            let mut in_flight = FuturesUnordered::new();
            while started.elapsed() < run_for {
                let t = Instant::now();
                let append = wal.append(record(64 << 10, a << 32 | n));
                in_flight.push(async move {
                    append.await.unwrap();
                    t.elapsed()
                });
                n += 1;
                if in_flight.len() >= 4 {
                    lat.push(in_flight.next().await.unwrap());
                }
            }
            while let Some(l) = in_flight.next().await {
                lat.push(l);
            }
            (n * (64 << 10), lat)
        }));
    }
    let (mut bytes, mut lat) = (0u64, Vec::new());
    while let Some(done) = appenders.next().await {
        let (b, l) = done.unwrap();
        bytes += b;
        lat.extend(l);
    }
    lat.sort();
    (bytes, lat)
}

/// Sizes of the data objects under `prefix` (fences are a bare 64-byte header), sorted.
async fn object_sizes(store: &Arc<dyn ObjectStore>, prefix: &Path) -> Vec<u64> {
    let mut sizes: Vec<u64> = store
        .list(Some(prefix))
        .map_ok(|meta| meta.size)
        .try_collect::<Vec<_>>()
        .await
        .unwrap();
    sizes.retain(|&size| size > 64);
    sizes.sort_unstable();
    sizes
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (label, store, prefix, _guard) = target();
    let mut summary = vec![
        format!("object store: {label}"),
        format!(
            "linger {} ms, batch_bytes {} MiB, max_in_flight {}; {} rounds, figures are median (min–max) over rounds",
            ms(ObjectWalOptions::default().linger),
            ObjectWalOptions::default().batch_bytes >> 20,
            ObjectWalOptions::default().max_in_flight,
            rounds(),
        ),
    ];
    let samples = if quick() { 60 } else { 300 };
    // One counting wrapper per mode, so each mode's PUTs are its own.
    let counted: Vec<Arc<FaultyObjectStore>> = MODES
        .iter()
        .map(|_| Arc::new(FaultyObjectStore::new(store.clone())))
        .collect();
    let dyn_store = |m: usize| -> Arc<dyn ObjectStore> { counted[m].clone() };
    let mut epoch = 0;
    let mut next_epoch = || {
        epoch += 1;
        epoch
    };

    // 1 and 2. Raw PUT latency of the object one lone 1 KiB append makes, then one appender
    // awaiting each append in every mode, round after round.
    let (mut raw_p50, mut raw_p99) = (Rounds::default(), Rounds::default());
    let mut lone: Vec<[Rounds; 4]> = MODES.iter().map(|_| Default::default()).collect();
    for round in 0..rounds() {
        let raw_prefix = prefix.clone().join(format!("raw-{round}").as_str());
        let raw = rt.block_on(raw_put_latencies(&store, &raw_prefix, 1200, samples));
        let (p50, p99) = (ms(percentile(&raw, 0.5)), ms(percentile(&raw, 0.99)));
        raw_p50.push(p50);
        raw_p99.push(p99);
        for (m, (_, mode)) in MODES.iter().enumerate() {
            let wal_prefix = prefix.clone().join(format!("wal-latency-{m}").as_str());
            let wal = rt.block_on(open_wal(
                dyn_store(m),
                wal_prefix,
                next_epoch(),
                options(*mode),
            ));
            let lat = rt.block_on(awaited_latencies(&wal, samples));
            let (wp50, wp99) = (ms(percentile(&lat, 0.5)), ms(percentile(&lat, 0.99)));
            lone[m][0].push(wp50);
            lone[m][1].push(wp99);
            lone[m][2].push(wp99 - p99);
            lone[m][3].push(wp50 / p50);
        }
    }
    summary.push(format!(
        "raw conditional PUT of 1.2 KiB, one at a time: p50 {} ms, p99 {} ms",
        raw_p50.show(2),
        raw_p99.show(2)
    ));
    for (m, (name, _)) in MODES.iter().enumerate() {
        summary.push(format!(
            "  object WAL, 1 appender awaiting each 1 KiB append, {name}: p50 {} ms = {}× raw p50; p99 {} ms = raw p99 + {} ms (target <= +5 ms)",
            lone[m][0].show(2),
            lone[m][3].show(2),
            lone[m][1].show(2),
            lone[m][2].show(2),
        ));
    }

    let default_wal = Arc::new(rt.block_on(open_wal(
        store.clone(),
        prefix.clone().join("wal-criterion"),
        next_epoch(),
        ObjectWalOptions::default(),
    )));
    let mut group = c.benchmark_group("object_wal");
    group
        .sample_size(if quick() { 10 } else { 30 })
        .throughput(Throughput::Bytes(1024));
    group.bench_function("append_1k_awaited", |b| {
        let n = AtomicU64::new(0);
        b.to_async(&rt).iter(|| {
            let wal = default_wal.clone();
            let n = n.fetch_add(1, Ordering::Relaxed);
            async move { wal.append(record(1024, n)).await.unwrap() }
        })
    });
    group.finish();
    drop(default_wal);

    // 3. Paced trickles: what a steady stream of lone appends costs in PUTs.
    let trickle_for = Duration::from_secs(if quick() { 1 } else { 2 });
    for rate in [200u32, 600, 2000] {
        let mut figures: Vec<[Rounds; 5]> = MODES.iter().map(|_| Default::default()).collect();
        for _ in 0..rounds() {
            for (m, (_, mode)) in MODES.iter().enumerate() {
                let wal_prefix = prefix.clone().join(format!("wal-trickle-{m}").as_str());
                let wal = Arc::new(rt.block_on(open_wal(
                    dyn_store(m),
                    wal_prefix,
                    next_epoch(),
                    options(*mode),
                )));
                counted[m].reset_calls();
                let lat = trickle(&rt, wal.clone(), rate, trickle_for);
                let puts = counted[m].count(OpKind::Put);
                let secs = trickle_for.as_secs_f64();
                figures[m][0].push(puts as f64 / secs);
                figures[m][1].push(lat.len() as f64 / puts.max(1) as f64);
                figures[m][2].push(ms(percentile(&lat, 0.5)));
                figures[m][3].push(ms(percentile(&lat, 0.99)));
            }
            // PUTs against the fixed linger's in the same round (mode 0).
            for m in 0..MODES.len() {
                let fixed = *figures[0][0].0.last().unwrap_or(&1.0);
                let ratio = figures[m][0].0.last().copied().unwrap_or(0.0) / fixed.max(1.0);
                figures[m][4].push(ratio);
            }
        }
        summary.push(format!(
            "paced trickle of 1 KiB appends at {rate} per second, {} s per round:",
            trickle_for.as_secs()
        ));
        for (m, (name, _)) in MODES.iter().enumerate() {
            summary.push(format!(
                "  {name}: {} PUTs per second = {}× fixed, {} appends per PUT; latency p50 {} ms, p99 {} ms",
                figures[m][0].show(0),
                figures[m][4].show(2),
                figures[m][1].show(1),
                figures[m][2].show(2),
                figures[m][3].show(2),
            ));
        }
    }

    // 3b. A store slower than the linger, as S3 Express is: every store call waits 4 ms more.
    let added = Duration::from_millis(4);
    let slow_samples = samples / 3;
    let mut slow: Vec<[Rounds; 5]> = MODES.iter().map(|_| Default::default()).collect();
    for c in &counted {
        c.set_latency(added);
    }
    for _ in 0..rounds() {
        for (m, (_, mode)) in MODES.iter().enumerate() {
            let wal_prefix = prefix.clone().join(format!("wal-slow-{m}").as_str());
            let wal = Arc::new(rt.block_on(open_wal(
                dyn_store(m),
                wal_prefix,
                next_epoch(),
                options(*mode),
            )));
            let lat = rt.block_on(awaited_latencies(&wal, slow_samples));
            slow[m][0].push(ms(percentile(&lat, 0.5)));
            slow[m][1].push(ms(percentile(&lat, 0.99)));
            counted[m].reset_calls();
            let lat = trickle(&rt, wal.clone(), 2000, trickle_for);
            slow[m][2].push(counted[m].count(OpKind::Put) as f64 / trickle_for.as_secs_f64());
            slow[m][3].push(ms(percentile(&lat, 0.5)));
            slow[m][4].push(ms(percentile(&lat, 0.99)));
        }
    }
    for c in &counted {
        c.clear_faults();
    }
    summary.push(format!(
        "store calls slowed by {} ms (PUTs slower than the linger, as on S3 Express):",
        ms(added)
    ));
    for (m, (name, _)) in MODES.iter().enumerate() {
        summary.push(format!(
            "  {name}: 1 appender awaiting each 1 KiB append p50 {} ms, p99 {} ms; trickle of 2000 per second {} PUTs per second, latency p50 {} ms, p99 {} ms",
            slow[m][0].show(2),
            slow[m][1].show(2),
            slow[m][2].show(0),
            slow[m][3].show(2),
            slow[m][4].show(2),
        ));
    }

    // 4. Idle: every mode's WAL open after an append, nothing appended for a while.
    let idle_secs = if quick() { 1 } else { 3 };
    let idle_wals: Vec<ObjectWal> = MODES
        .iter()
        .enumerate()
        .map(|(m, (_, mode))| {
            let wal_prefix = prefix.clone().join(format!("wal-idle-{m}").as_str());
            let wal = rt.block_on(open_wal(
                dyn_store(m),
                wal_prefix,
                next_epoch(),
                options(*mode),
            ));
            rt.block_on(wal.append(record(1024, 0))).unwrap();
            counted[m].reset_calls();
            wal
        })
        .collect();
    rt.block_on(async { tokio::time::sleep(Duration::from_secs(idle_secs)).await });
    for (m, (name, _)) in MODES.iter().enumerate() {
        let idle_puts = counted[m].count(OpKind::Put);
        summary.push(format!(
            "idle for {idle_secs} s, {name}: {idle_puts} PUTs ({:.1} per second; target 0)",
            idle_puts as f64 / idle_secs as f64
        ));
    }
    drop(idle_wals);

    // 5. Saturation: raw 4 MiB PUTs with as many in flight as the WAL allows, then every mode.
    let in_flight = ObjectWalOptions::default().max_in_flight;
    let batch_bytes = ObjectWalOptions::default().batch_bytes as u64;
    let raw_objects = if quick() { 16 } else { 48 };
    let run_for = Duration::from_secs(if quick() { 2 } else { 6 });
    let saturation_rounds = if quick() { 1 } else { 2 };
    let mut raw_mbps = Rounds::default();
    let mut sat: Vec<[Rounds; 5]> = MODES.iter().map(|_| Default::default()).collect();
    let mut sizes: Vec<Vec<u64>> = MODES.iter().map(|_| Vec::new()).collect();
    for round in 0..saturation_rounds {
        let raw_prefix = prefix.clone().join(format!("raw-4m-{round}").as_str());
        let raw = rt.block_on(raw_4m_mbps(&store, &raw_prefix, raw_objects, in_flight));
        raw_mbps.push(raw);
        for (m, (_, mode)) in MODES.iter().enumerate() {
            let wal_prefix = prefix
                .clone()
                .join(format!("wal-saturation-{m}-{round}").as_str());
            let wal = Arc::new(rt.block_on(open_wal(
                dyn_store(m),
                wal_prefix.clone(),
                next_epoch(),
                options(*mode),
            )));
            counted[m].reset_calls();
            let (bytes, lat) = rt.block_on(saturate(wal.clone(), run_for));
            let puts = counted[m].count(OpKind::Put).max(1);
            drop(wal);
            let mbps = bytes as f64 / run_for.as_secs_f64() / 1e6;
            sat[m][0].push(mbps);
            sat[m][1].push(100.0 * mbps / raw);
            sat[m][2].push(ms(percentile(&lat, 0.5)));
            sat[m][3].push(ms(percentile(&lat, 0.99)));
            sat[m][4].push(puts as f64 / (bytes as f64 / 1e9));
            sizes[m].extend(rt.block_on(object_sizes(&store, &wal_prefix)));
        }
    }
    summary.push(format!(
        "saturation, 256 appenders x 4 in flight x 64 KiB, {} s per round; raw 4 MiB PUTs with {in_flight} in flight: {} MB/s",
        run_for.as_secs(),
        raw_mbps.show(1),
    ));
    for (m, (name, _)) in MODES.iter().enumerate() {
        let sizes = &mut sizes[m];
        sizes.sort_unstable();
        let full = sizes.iter().filter(|&&size| size >= batch_bytes).count();
        summary.push(format!(
            "  {name}: {} MB/s = {} % of raw; p50 {} ms, p99 {} ms; {} PUTs per GB (4 MiB objects: {:.0})",
            sat[m][0].show(1),
            sat[m][1].show(0),
            sat[m][2].show(1),
            sat[m][3].show(1),
            sat[m][4].show(0),
            1e9 / batch_bytes as f64,
        ));
        summary.push(format!(
            "    WAL objects: {} in all, min {:.2} / p10 {:.2} / median {:.2} / p90 {:.2} / max {:.2} MiB; {full} at batch_bytes or more (the rest: the ramp at the start and the tail at the end)",
            sizes.len(),
            mib(sizes.first().copied().unwrap_or(0)),
            mib(percentile(sizes, 0.1)),
            mib(percentile(sizes, 0.5)),
            mib(percentile(sizes, 0.9)),
            mib(sizes.last().copied().unwrap_or(0)),
        ));
    }

    // 6. Takeover of 64 MiB of unflushed WAL.
    let takeover_bytes = if quick() {
        TAKEOVER_BYTES / 4
    } else {
        TAKEOVER_BYTES
    };
    let (report, open_ms, total_ms) = rt.block_on(takeover(
        store.clone(),
        prefix.clone().join("takeover"),
        takeover_bytes,
    ));
    summary.push(format!(
        "takeover of {} MiB of unflushed WAL in {} streams: {total_ms:.0} ms (target <= 500 ms): fence + seal + replay + upload + commit + close {} ms, then open every stream {open_ms:.0} ms; {} batches, {} objects",
        takeover_bytes >> 20,
        report.streams_closed.len(),
        report.millis,
        report.batches_recovered,
        report.objects_written,
    ));

    println!("\n== object WAL summary ==");
    for line in summary {
        println!("{line}");
    }
}

fn node_settings(node: u64) -> Settings {
    Settings {
        node_id: NodeId(node),
        wal: WalSettings::object(None),
        // Nothing uploads before the takeover: everything is in the WAL.
        upload_threshold_bytes: 1 << 40,
        upload_interval_ms: 3_600_000,
        log_cache_bytes: 512 << 20,
        ..Settings::default()
    }
}

async fn takeover(
    objects: Arc<dyn ObjectStore>,
    prefix: Path,
    bytes: u64,
) -> (objstream::NodeRecovery, f64, f64) {
    const STREAMS: usize = 8;
    const BATCH: usize = 64 << 10;
    let a = Store::open(
        node_settings(1),
        Components::new(objects.clone(), prefix.clone()),
    )
    .await
    .unwrap();
    let mut streams = Vec::new();
    for _ in 0..STREAMS {
        streams.push(a.create_stream().await.unwrap());
    }
    let mut appends = FuturesUnordered::new();
    for n in 0..bytes / BATCH as u64 {
        let s = &streams[n as usize % STREAMS];
        appends.push(s.append(RecordBatch::new(16, n as i64, record(BATCH, n))));
        if appends.len() >= 512 {
            appends.next().await.unwrap().unwrap();
        }
    }
    while let Some(r) = appends.next().await {
        r.unwrap();
    }
    let ids: Vec<_> = streams.iter().map(|s| s.id()).collect();
    // Node 1 stops without warning: no flush, no close.
    drop(streams);
    drop(a);
    let b = Store::open(node_settings(2), Components::new(objects, prefix))
        .await
        .unwrap();
    let started = Instant::now();
    let report = b
        .recover_node_from(NodeId(1), &node_settings(1).wal)
        .await
        .unwrap();
    let opening = Instant::now();
    let opened = futures::future::try_join_all(ids.iter().map(|id| b.open_stream(*id)))
        .await
        .unwrap();
    let open_ms = ms(opening.elapsed());
    let total_ms = ms(started.elapsed());
    drop(opened);
    b.shutdown().await.unwrap();
    (report, open_ms, total_ms)
}

criterion_group!(benches, bench);
criterion_main!(benches);
