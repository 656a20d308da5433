//! The object store itself, measured in the same run as the store's use of it:
//!
//! 1. raw PUT and GET latency (p50, p99) of 4 KiB and 8 MiB objects, one request at a time;
//! 2. raw throughput with 8 requests in flight (objects/s for 4 KiB, MB/s for 8 MiB);
//! 3. the requests the store's upload pipeline issues per GB appended (PUTs, GETs, HEADs, LISTs),
//!    counted by `objstream::testing::FaultyObjectStore` with no faults, for records of 1–4 KiB
//!    under default settings.
//!
//! The store is the S3 test server when `OBJSTREAM_TEST_S3_*` is set (see
//! `scripts/s3-server.sh env`), opened through `objstream::config`; otherwise a local directory.
//! `OBJSTREAM_BENCH_APPEND_MB` sets how much step 3 appends (default 128).
//!
//! Run: `cargo bench --bench object_store_raw`. Prints one summary block.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use objstream::config::{open_url_with_env, ObjectStoreOptions, StoreLocation};
use objstream::testing::{FaultyObjectStore, OpKind};
use objstream::{Components, RecordBatch, Settings, Store, WalSettings};

const SMALL: usize = 4 << 10;
const LARGE: usize = 8 << 20;
const IN_FLIGHT: usize = 8;

/// The S3 test server if configured, else a local directory under `dir`.
fn configured_store(dir: &std::path::Path) -> (&'static str, StoreLocation) {
    let run = format!(
        "bench-raw-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0)
    );
    let options = ObjectStoreOptions::default();
    match std::env::var("OBJSTREAM_TEST_S3_ENDPOINT") {
        Ok(endpoint) => {
            let var = |n: &str| std::env::var(n).unwrap_or_else(|_| panic!("{n} is not set"));
            let env = HashMap::from([
                ("AWS_ENDPOINT_URL".to_string(), endpoint),
                (
                    "AWS_ACCESS_KEY_ID".to_string(),
                    var("OBJSTREAM_TEST_S3_ACCESS_KEY_ID"),
                ),
                (
                    "AWS_SECRET_ACCESS_KEY".to_string(),
                    var("OBJSTREAM_TEST_S3_SECRET_ACCESS_KEY"),
                ),
                ("AWS_REGION".to_string(), var("OBJSTREAM_TEST_S3_REGION")),
                ("AWS_ALLOW_HTTP".to_string(), "true".to_string()),
            ]);
            let url = format!("s3://{}/{run}", var("OBJSTREAM_TEST_S3_BUCKET"));
            (
                "s3 test server",
                open_url_with_env(&url, &options, &env).unwrap(),
            )
        }
        Err(_) => {
            let url = format!("file://{}", dir.join("objects").display());
            let mut location = open_url_with_env(&url, &options, &HashMap::new()).unwrap();
            location.prefix = Path::from(run);
            ("local directory", location)
        }
    }
}

fn payload(len: usize, salt: u64) -> Bytes {
    Bytes::from(
        (0..len)
            .map(|i| (i as u64).wrapping_mul(31).wrapping_add(salt) as u8)
            .collect::<Vec<u8>>(),
    )
}

struct Latency {
    put: Vec<Duration>,
    get: Vec<Duration>,
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1e3
}

/// `count` sequential PUTs then GETs of `size`-byte objects.
async fn latency(
    store: &Arc<dyn ObjectStore>,
    prefix: &Path,
    size: usize,
    count: usize,
) -> Latency {
    let body = payload(size, size as u64);
    let mut put = Vec::with_capacity(count);
    let mut get = Vec::with_capacity(count);
    for i in 0..count {
        let key = Path::from(format!("{prefix}/lat-{size}/{i:06}"));
        let t = Instant::now();
        store.put(&key, body.clone().into()).await.unwrap();
        put.push(t.elapsed());
    }
    for i in 0..count {
        let key = Path::from(format!("{prefix}/lat-{size}/{i:06}"));
        let t = Instant::now();
        let got = store.get(&key).await.unwrap().bytes().await.unwrap();
        get.push(t.elapsed());
        assert_eq!(got.len(), size);
    }
    put.sort();
    get.sort();
    Latency { put, get }
}

/// Objects per second of `count` PUTs, then GETs, with `IN_FLIGHT` at a time.
async fn throughput(
    store: &Arc<dyn ObjectStore>,
    prefix: &Path,
    size: usize,
    count: usize,
) -> (f64, f64) {
    let body = payload(size, 7);
    let key = |i: usize| Path::from(format!("{prefix}/tput-{size}/{i:06}"));
    let mut rates = [0.0; 2];
    for (phase, rate) in rates.iter_mut().enumerate() {
        let started = Instant::now();
        let mut pending = FuturesUnordered::new();
        for i in 0..count {
            let (store, key, body) = (store.clone(), key(i), body.clone());
            pending.push(async move {
                if phase == 0 {
                    store.put(&key, body.into()).await.map(|_| ())
                } else {
                    store.get(&key).await.unwrap().bytes().await.map(|_| ())
                }
            });
            if pending.len() >= IN_FLIGHT {
                pending.next().await.unwrap().unwrap();
            }
        }
        while let Some(r) = pending.next().await {
            r.unwrap();
        }
        *rate = count as f64 / started.elapsed().as_secs_f64();
    }
    (rates[0], rates[1])
}

struct PipelineCounts {
    appended: u64,
    seconds: f64,
    puts: usize,
    gets: usize,
    heads: usize,
    lists: usize,
    data_puts: usize,
    manifest_puts: usize,
}

/// Appends records of 1–4 KiB to four streams through a store with default settings, flushes,
/// closes, and counts the requests its object store saw.
async fn pipeline(location: &StoreLocation, dir: &std::path::Path, bytes: u64) -> PipelineCounts {
    let faulty = FaultyObjectStore::new(location.store.clone());
    let objects: Arc<dyn ObjectStore> = Arc::new(faulty.clone());
    let prefix = Path::from(format!("{}/pipeline", location.prefix));
    let settings = Settings {
        wal: WalSettings::file(dir.join("wal")),
        ..Settings::default()
    };
    let started = Instant::now();
    let store = Store::open(settings, Components::new(objects, prefix.clone()))
        .await
        .unwrap();
    let mut streams = Vec::new();
    for _ in 0..4 {
        streams.push(store.create_stream().await.unwrap());
    }
    let base = payload(4096, 3);
    let mut appended = 0u64;
    let mut pending = FuturesUnordered::new();
    let mut n = 0u64;
    while appended < bytes {
        let len = 1024 + (n.wrapping_mul(2_654_435_761) % 3072) as usize;
        let s = &streams[(n % 4) as usize];
        pending.push(s.append(RecordBatch::new(1, n as i64, base.slice(..len))));
        appended += len as u64;
        n += 1;
        if pending.len() >= 512 {
            pending.next().await.unwrap().unwrap();
        }
    }
    while let Some(r) = pending.next().await {
        r.unwrap();
    }
    for s in &streams {
        s.close().await.unwrap();
    }
    store.shutdown().await.unwrap();
    let seconds = started.elapsed().as_secs_f64();
    let manifest = format!("{prefix}/manifest");
    let objects_prefix = format!("{prefix}/objects/");
    PipelineCounts {
        appended,
        seconds,
        puts: faulty.count_where(|c| c.op.is_write()),
        gets: faulty.count_where(|c| matches!(c.op, OpKind::Get | OpKind::GetRange)),
        heads: faulty.count(OpKind::Head),
        lists: faulty.count(OpKind::List),
        data_puts: faulty.count_where(|c| c.op.is_write() && c.key.starts_with(&objects_prefix)),
        manifest_puts: faulty.count_where(|c| c.op.is_write() && c.key.starts_with(&manifest)),
    }
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this once as a smoke test.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let append_mb: u64 = std::env::var("OBJSTREAM_BENCH_APPEND_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if smoke { 4 } else { 128 });
    let (small_count, large_count) = if smoke { (20, 2) } else { (300, 12) };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (name, location) = configured_store(dir.path());
    let store = location.store.clone();
    let prefix = location.prefix.clone();
    rt.block_on(async {
        let small = latency(&store, &prefix, SMALL, small_count).await;
        let large = latency(&store, &prefix, LARGE, large_count).await;
        let (small_put_rate, small_get_rate) = throughput(&store, &prefix, SMALL, small_count).await;
        let (large_put_rate, large_get_rate) = throughput(&store, &prefix, LARGE, large_count).await;
        let counts = pipeline(&location, dir.path(), append_mb << 20).await;
        let mb = |rate: f64| rate * LARGE as f64 / 1e6;
        let per_gb = |n: usize| n as f64 * (1u64 << 30) as f64 / counts.appended as f64;
        println!();
        println!("object store raw — {name}");
        println!("  4 KiB  PUT p50 {:7.2} ms  p99 {:7.2} ms   ({} sequential)", pct(&small.put, 0.5), pct(&small.put, 0.99), small_count);
        println!("  4 KiB  GET p50 {:7.2} ms  p99 {:7.2} ms", pct(&small.get, 0.5), pct(&small.get, 0.99));
        println!("  8 MiB  PUT p50 {:7.2} ms  p99 {:7.2} ms   ({} sequential)", pct(&large.put, 0.5), pct(&large.put, 0.99), large_count);
        println!("  8 MiB  GET p50 {:7.2} ms  p99 {:7.2} ms", pct(&large.get, 0.5), pct(&large.get, 0.99));
        println!("  4 KiB  throughput, {IN_FLIGHT} in flight: PUT {small_put_rate:8.0} obj/s   GET {small_get_rate:8.0} obj/s");
        println!("  8 MiB  throughput, {IN_FLIGHT} in flight: PUT {:8.1} MB/s   GET {:8.1} MB/s", mb(large_put_rate), mb(large_get_rate));
        println!(
            "  upload pipeline, default settings, 1-4 KiB records on 4 streams: {:.0} MiB appended in {:.1} s ({:.1} MB/s)",
            counts.appended as f64 / (1 << 20) as f64,
            counts.seconds,
            counts.appended as f64 / 1e6 / counts.seconds
        );
        println!(
            "    requests per GB appended: PUT {:.1} (data {:.1}, manifest {:.1})  GET {:.1}  HEAD {:.1}  LIST {:.1}",
            per_gb(counts.puts),
            per_gb(counts.data_puts),
            per_gb(counts.manifest_puts),
            per_gb(counts.gets),
            per_gb(counts.heads),
            per_gb(counts.lists)
        );
        println!(
            "    raw counts: {} PUT, {} GET, {} HEAD, {} LIST",
            counts.puts, counts.gets, counts.heads, counts.lists
        );
    });
}
