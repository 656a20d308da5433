//! The object WAL against the S3 test server, with the server's raw limits measured in the same
//! run:
//!
//! 1. raw conditional PUT latency (p50, p99) of WAL-sized objects, one at a time: the floor an
//!    acknowledgement cannot beat;
//! 2. object WAL append latency with one appender awaiting each 1 KiB append (target: p99 <=
//!    raw PUT p99 + 5 ms);
//! 3. saturation: 256 appenders of 64 KiB records, 4 in flight each, as fast as acknowledgements
//!    allow, for throughput, latency, bytes per PUT (target >= 4 MiB per PUT) and PUTs per GB,
//!    against raw 4 MiB PUTs with as many in flight as the WAL allows;
//! 4. idle PUTs per second (target 0: nothing is written while nothing is appended);
//! 5. takeover: a node appends 64 MiB that stay in its WAL (no upload yet) and stops without
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
use objstream_wal::{ObjectWal, ObjectWalIdentity, ObjectWalOptions, Wal, WalPosition};

const TAKEOVER_BYTES: u64 = 64 << 20;

fn quick() -> bool {
    std::env::var("OBJSTREAM_BENCH_QUICK").is_ok()
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

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
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
        let key = prefix.clone().join("raw").join(format!("{i:020}").as_str());
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

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (label, store, prefix, _guard) = target();
    let mut summary = vec![format!("object store: {label}")];
    let samples = if quick() { 60 } else { 300 };

    // 1. Raw PUT latency of an object the size one lone 1 KiB append makes.
    let raw = rt.block_on(raw_put_latencies(&store, &prefix, 1200, samples));
    let (raw_p50, raw_p99) = (percentile(&raw, 0.5), percentile(&raw, 0.99));
    summary.push(format!(
        "raw conditional PUT of 1.2 KiB, one at a time: p50 {:.2} ms, p99 {:.2} ms",
        ms(raw_p50),
        ms(raw_p99)
    ));

    // 2. One appender awaiting each append.
    let faulty = Arc::new(FaultyObjectStore::new(store.clone()));
    let counted: Arc<dyn ObjectStore> = faulty.clone();
    let wal = Arc::new(rt.block_on(open_wal(
        counted.clone(),
        prefix.clone().join("wal-latency"),
        1,
        ObjectWalOptions::default(),
    )));
    let mut lat = Vec::with_capacity(samples);
    rt.block_on(async {
        for n in 0..samples as u64 {
            let started = Instant::now();
            wal.append(record(1024, n)).await.unwrap();
            lat.push(started.elapsed());
        }
    });
    lat.sort();
    let (p50, p99) = (percentile(&lat, 0.5), percentile(&lat, 0.99));
    summary.push(format!(
        "object WAL, 1 appender, 1 KiB: p50 {:.2} ms, p99 {:.2} ms = raw PUT p99 {:+.2} ms (target <= +5 ms), linger {} ms",
        ms(p50),
        ms(p99),
        ms(p99) - ms(raw_p99),
        ObjectWalOptions::default().linger.as_secs_f64() * 1e3,
    ));
    let mut group = c.benchmark_group("object_wal");
    group
        .sample_size(if quick() { 10 } else { 30 })
        .throughput(Throughput::Bytes(1024));
    group.bench_function("append_1k_awaited", |b| {
        let n = AtomicU64::new(0);
        b.to_async(&rt).iter(|| {
            let wal = wal.clone();
            let n = n.fetch_add(1, Ordering::Relaxed);
            async move { wal.append(record(1024, n)).await.unwrap() }
        })
    });
    group.finish();

    // 4. Idle: nothing appended for a while, count the requests.
    faulty.reset_calls();
    let idle_secs = if quick() { 1 } else { 3 };
    rt.block_on(async { tokio::time::sleep(Duration::from_secs(idle_secs)).await });
    let idle_puts = faulty.count(OpKind::Put);
    summary.push(format!(
        "idle for {idle_secs} s: {idle_puts} PUTs ({:.1} per second; target 0)",
        idle_puts as f64 / idle_secs as f64
    ));
    drop(wal);

    // 3. Saturation: many appenders, larger records; raw 4 MiB PUTs, as many in flight, first.
    let in_flight = ObjectWalOptions::default().max_in_flight;
    let raw_objects = if quick() { 16 } else { 48 };
    let raw_mbps = rt.block_on(async {
        let body = record(4 << 20, 7);
        let started = Instant::now();
        let mut puts = FuturesUnordered::new();
        for i in 0..raw_objects {
            let store = store.clone();
            let key = prefix
                .clone()
                .join("raw-4m")
                .join(format!("{i:020}").as_str());
            let body = body.clone();
            puts.push(async move { store.put(&key, PutPayload::from_bytes(body)).await });
            if puts.len() >= in_flight {
                puts.next().await.unwrap().unwrap();
            }
        }
        while let Some(r) = puts.next().await {
            r.unwrap();
        }
        (raw_objects * (4 << 20)) as f64 / started.elapsed().as_secs_f64() / 1e6
    });
    let wal = Arc::new(rt.block_on(open_wal(
        counted.clone(),
        prefix.clone().join("wal-saturation"),
        1,
        ObjectWalOptions::default(),
    )));
    faulty.reset_calls();
    let run_for = Duration::from_secs(if quick() { 2 } else { 6 });
    let (bytes, lat) = rt.block_on(async {
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
        (bytes, lat)
    });
    let mut lat = lat;
    lat.sort();
    let puts = faulty.count(OpKind::Put).max(1);
    let secs = run_for.as_secs_f64();
    summary.push(format!(
        "object WAL, 256 appenders x 4 in flight, 64 KiB: {:.1} MB/s = {:.0} % of raw 4 MiB PUTs with {in_flight} in flight ({raw_mbps:.1} MB/s); p50 {:.1} ms, p99 {:.1} ms; {puts} PUTs of {:.2} MiB on average (target >= 4 MiB at saturation) = {:.0} PUTs per GB",
        bytes as f64 / secs / 1e6,
        100.0 * bytes as f64 / secs / 1e6 / raw_mbps,
        ms(percentile(&lat, 0.5)),
        ms(percentile(&lat, 0.99)),
        bytes as f64 / puts as f64 / (1 << 20) as f64,
        puts as f64 / (bytes as f64 / 1e9),
    ));
    drop(wal);
    // The sizes of the data objects it wrote (fences are a bare 64-byte header).
    let mut sizes: Vec<u64> = rt.block_on(async {
        store
            .list(Some(&prefix.clone().join("wal-saturation")))
            .map_ok(|meta| meta.size)
            .try_collect::<Vec<_>>()
            .await
            .unwrap()
    });
    sizes.retain(|&size| size > 64);
    sizes.sort_unstable();
    let full = sizes
        .iter()
        .filter(|&&size| size >= ObjectWalOptions::default().batch_bytes as u64)
        .count();
    summary.push(format!(
        "  WAL objects at saturation: median {:.2} MiB, {full} of {} at batch_bytes or more (the rest: the ramp at the start and the tail at the end)",
        sizes.get(sizes.len() / 2).copied().unwrap_or(0) as f64 / (1 << 20) as f64,
        sizes.len(),
    ));

    // 5. Takeover of 64 MiB of unflushed WAL.
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
