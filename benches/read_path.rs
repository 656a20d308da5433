//! The read path at each tier, and cold catch-up against a real S3 server.
//!
//! - `tail/log_cache`: fetches of 1 MiB from the log cache (64 MiB of 16 KiB batches).
//! - `cached/memory_tier`: the same data read from objects whose blocks are all in the block
//!   cache's memory tier (the log cache is too small to hold it).
//! - `block_hit/*`: what a hit costs if the memory tier held decoded blocks (clone the batches)
//!   or raw blocks (checksum and decompress on every hit): why it holds decoded ones.
//! - catch-up (only with `OBJSTREAM_TEST_S3_ENDPOINT` set, see `scripts/s3-server.sh`): a cold
//!   sequential read, with read-ahead, of 256 MiB in objects on the S3 server by a node whose
//!   caches are empty, against raw GETs of the same objects (whole objects, one at a time).
//!   The two alternate, `READ_PATH_ROUNDS` times (default 5), each round swapping which goes
//!   first; the summary gives the median and range of both, of their ratio within a round,
//!   the client CPU and minor page faults per GiB of each, GETs per GB and the share of
//!   read-ahead wasted.
//!
//! Run with `cargo bench --bench read_path`; it takes about two minutes. `READ_PATH_CATCH_UP_ONLY=1`
//! runs only the S3 part; `READ_PATH_VERBOSE=1` adds range-read sweeps and per-round waits.

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use object_store::memory::InMemory;
use object_store::{ObjectStore, ObjectStoreExt};
use objstream::format::{decode_block, decode_tail, tail_range, ObjectBuilder, TailDecode};
use objstream::{
    Components, Compression, NodeId, ObjectId, Offset, RecordBatch, Settings, Store, Stream,
    StreamId, WalSettings,
};

const DATA_BYTES: u64 = 64 << 20;
const BATCH_BYTES: usize = 16 << 10;
const FETCH_BYTES: usize = 1 << 20;
const CATCH_UP_BYTES: u64 = 256 << 20;

fn payload(n: u64, len: usize) -> Bytes {
    let text = b"{\"kind\":\"model_response\",\"tenant\":\"acme\",\"text\":\"lorem ipsum dolor\"} ";
    let mut v: Vec<u8> = (0..len).map(|i| text[i % text.len()]).collect();
    v[..8].copy_from_slice(&n.to_le_bytes());
    Bytes::from(v)
}

async fn open(
    dir: &std::path::Path,
    node: u64,
    objects: Arc<dyn ObjectStore>,
    prefix: &str,
    settings: Settings,
) -> Store {
    // Nodes above 10 only read: a small WAL segment keeps their WAL's background zero-filling
    // of new segments from competing with the reads being measured.
    let (segment_bytes, max_batch_bytes) = if node > 10 {
        (1 << 20, 64 << 10)
    } else {
        (64 << 20, settings.max_batch_bytes)
    };
    let settings = Settings {
        node_id: NodeId(node),
        wal: WalSettings::File {
            dir: dir.join(format!("wal-{node}")),
            segment_bytes,
        },
        max_batch_bytes,
        ..settings
    };
    Store::open(settings, Components::new(objects, prefix))
        .await
        .unwrap()
}

async fn fill(stream: &Stream, bytes: u64) -> Offset {
    let mut futures = Vec::new();
    for n in 0..bytes / BATCH_BYTES as u64 {
        futures.push(stream.append(RecordBatch::new(1, 0, payload(n, BATCH_BYTES))));
        if futures.len() == 256 {
            for f in futures.drain(..) {
                f.await.unwrap();
            }
        }
    }
    for f in futures {
        f.await.unwrap();
    }
    stream.confirmed_offset().unwrap()
}

async fn read_all(s: &Stream, end: Offset) -> u64 {
    let mut pos = Offset(0);
    let mut bytes = 0;
    while pos < end {
        let got = s.fetch(pos, end, FETCH_BYTES).await.unwrap();
        for b in &got {
            bytes += b.batch.payload.len() as u64;
        }
        pos = got.last().unwrap().next_offset();
    }
    bytes
}

/// Like `read_all`, and also the time spent in fetches that waited (took over 1 ms).
async fn read_all_timed(s: &Stream, end: Offset) -> (u64, Duration, u32) {
    let mut pos = Offset(0);
    let (mut bytes, mut waited, mut waits) = (0, Duration::ZERO, 0);
    while pos < end {
        let t = Instant::now();
        let got = s.fetch(pos, end, FETCH_BYTES).await.unwrap();
        let took = t.elapsed();
        if took > Duration::from_millis(1) {
            waited += took;
            waits += 1;
        }
        for b in &got {
            bytes += b.batch.payload.len() as u64;
        }
        pos = got.last().unwrap().next_offset();
    }
    (bytes, waited, waits)
}

/// CPU time this process has used so far (user and system), and its minor page faults.
fn usage() -> (Duration, u64) {
    // SAFETY: getrusage writes into the struct it is given and nothing else.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    (
        tv(usage.ru_utime) + tv(usage.ru_stime),
        usage.ru_minflt as u64,
    )
}

fn gbps(bytes: u64, took: Duration) -> f64 {
    bytes as f64 / 1e9 / took.as_secs_f64()
}

/// Runs `f` `rounds` times and returns the best throughput in GB/s.
fn best<F: FnMut() -> (u64, Duration)>(rounds: usize, mut f: F) -> f64 {
    (0..rounds)
        .map(|_| {
            let (bytes, took) = f();
            gbps(bytes, took)
        })
        .fold(0.0, f64::max)
}

fn tiers(c: &mut Criterion, summary: &mut Vec<String>) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut group = c.benchmark_group("read");
    group
        .throughput(Throughput::Bytes(DATA_BYTES))
        .sample_size(10)
        .measurement_time(Duration::from_secs(4));

    // Tail: everything in the log cache.
    let objects: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let settings = Settings {
        log_cache_bytes: 1 << 30,
        ..Settings::default()
    };
    let store = rt.block_on(open(dir.path(), 1, objects, "tail", settings));
    let s = rt.block_on(store.create_stream()).unwrap();
    let end = rt.block_on(fill(&s, DATA_BYTES));
    group.bench_function("tail/log_cache", |b| {
        b.to_async(&rt).iter(|| read_all(&s, end))
    });
    let tail = best(5, || {
        let t = Instant::now();
        (rt.block_on(read_all(&s, end)), t.elapsed())
    });
    summary.push(format!(
        "tail fetch from the log cache (16 KiB batches, 1 MiB fetches): {tail:>6.2} GB/s (target >= 5)"
    ));
    rt.block_on(store.shutdown()).unwrap();

    // Memory tier: a log cache too small for the data, a block cache that holds all of it.
    let objects: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let settings = Settings {
        log_cache_bytes: 16 << 20,
        block_cache_bytes: 256 << 20,
        upload_threshold_bytes: 8 << 20,
        ..Settings::default()
    };
    let store = rt.block_on(open(dir.path(), 2, objects, "memory", settings));
    let s = rt.block_on(store.create_stream()).unwrap();
    let end = rt.block_on(fill(&s, DATA_BYTES));
    rt.block_on(store.flush()).unwrap();
    rt.block_on(read_all(&s, end));
    let before = store.read_stats();
    group.bench_function("cached/memory_tier", |b| {
        b.to_async(&rt).iter(|| read_all(&s, end))
    });
    let memory = best(5, || {
        let t = Instant::now();
        (rt.block_on(read_all(&s, end)), t.elapsed())
    });
    let stats = store.read_stats();
    let from_objects = stats.object_gets - before.object_gets;
    summary.push(format!(
        "cached fetch from the memory tier (blocks decoded, zstd in objects): {memory:>6.2} GB/s (target >= 3); \
         memory-tier hit ratio {:.3}, GETs while measuring: {from_objects}",
        stats.memory_hit_ratio()
    ));
    rt.block_on(store.shutdown()).unwrap();
    group.finish();
}

/// Decoded blocks against raw blocks decoded on every hit.
fn block_hit(c: &mut Criterion, summary: &mut Vec<String>) {
    let mut group = c.benchmark_group("block_hit");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(2));
    for (name, compression) in [
        ("none", Compression::None),
        ("zstd", Compression::Zstd { level: 1 }),
    ] {
        let mut builder = ObjectBuilder::new(512 << 10, compression);
        for n in 0..32u64 {
            builder
                .add(
                    StreamId(1),
                    Offset(n),
                    &RecordBatch::new(1, 0, payload(n, BATCH_BYTES)),
                )
                .unwrap();
        }
        let object = builder.finish().bytes;
        let size = object.len() as u64;
        let tail = &object[tail_range(size).start as usize..];
        let TailDecode::Complete { index, .. } = decode_tail(ObjectId(1), size, tail).unwrap()
        else {
            panic!("a small object's tail holds its index");
        };
        let entry = index.entries()[0];
        let r = entry.byte_range();
        let raw = object.slice(r.start as usize..r.end as usize);
        let decoded = decode_block(ObjectId(1), &entry, raw.clone()).unwrap();
        let bytes: u64 = decoded.iter().map(|b| b.batch.payload.len() as u64).sum();
        group.throughput(Throughput::Bytes(bytes));
        group.bench_function(format!("decoded_{name}"), |b| b.iter(|| decoded.to_vec()));
        group.bench_function(format!("raw_{name}_decode_on_hit"), |b| {
            b.iter(|| decode_block(ObjectId(1), &entry, raw.clone()).unwrap())
        });
        let hit = best(50, || {
            let t = Instant::now();
            std::hint::black_box(decoded.to_vec());
            (bytes, t.elapsed())
        });
        let decode = best(50, || {
            let t = Instant::now();
            std::hint::black_box(decode_block(ObjectId(1), &entry, raw.clone()).unwrap());
            (bytes, t.elapsed())
        });
        summary.push(format!(
            "a 512 KiB block hit ({name}): decoded {hit:>7.1} GB/s, raw + decode on hit {decode:>5.2} GB/s"
        ));
    }
    group.finish();
}

/// Cold catch-up with read-ahead against raw GETs of the same objects, on the S3 server.
fn catch_up(summary: &mut Vec<String>) {
    if std::env::var("OBJSTREAM_TEST_S3_ENDPOINT").is_err() {
        summary.push("catch-up against S3: skipped (OBJSTREAM_TEST_S3_ENDPOINT is not set)".into());
        return;
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let s3 = support::s3_store();
    let prefix = s3.prefix.to_string();
    let settings = Settings {
        compression: Compression::None,
        log_cache_bytes: 64 << 20,
        block_cache_bytes: 256 << 20,
        read_ahead_bytes: 64 << 20,
        ..Settings::default()
    };
    // Write the data and hand the stream over.
    let (id, end) = rt.block_on(async {
        let store = open(dir.path(), 1, s3.store.clone(), &prefix, settings.clone()).await;
        let s = store.create_stream().await.unwrap();
        let end = fill(&s, CATCH_UP_BYTES).await;
        s.close().await.unwrap();
        store.shutdown().await.unwrap();
        (s.id(), end)
    });
    let object_paths: Vec<(object_store::path::Path, u64)> = rt.block_on(async {
        use futures::TryStreamExt;
        let listed: Vec<_> = s3
            .store
            .list(Some(&s3.path("objects")))
            .try_collect()
            .await
            .unwrap();
        listed.into_iter().map(|m| (m.location, m.size)).collect()
    });
    let object_bytes: u64 = object_paths.iter().map(|(_, size)| size).sum();

    let raw_round = || {
        rt.block_on(async {
            let t = Instant::now();
            let mut bytes = 0;
            for (path, _) in &object_paths {
                bytes += s3
                    .store
                    .get(path)
                    .await
                    .unwrap()
                    .bytes()
                    .await
                    .unwrap()
                    .len() as u64;
            }
            (bytes, t.elapsed())
        })
    };
    // Ranged GETs of 8 MiB, four in flight: what read-ahead's request pattern can get.
    let ranged_round_with = |size: u64, in_flight: usize| {
        rt.block_on(async {
            use futures::StreamExt;
            let t = Instant::now();
            let mut ranges = Vec::new();
            for (path, len) in &object_paths {
                let mut at = 0;
                while at < *len {
                    let end = (at + size).min(*len);
                    ranges.push((path.clone(), at..end));
                    at = end;
                }
            }
            let bytes: u64 = futures::stream::iter(ranges)
                .map(|(path, range)| {
                    let store = s3.store.clone();
                    async move { store.get_range(&path, range).await.unwrap().len() as u64 }
                })
                .buffered(in_flight)
                .fold(0, |a, b| async move { a + b })
                .await;
            gbps(bytes, t.elapsed())
        })
    };
    // With READ_PATH_VERBOSE set: how the server serves range reads of each size and
    // concurrency (on the loopback test server, few large reads beat many small ones).
    if std::env::var("READ_PATH_VERBOSE").is_ok() {
        for (size, n) in [
            (16u64 << 20, 1usize),
            (16 << 20, 2),
            (8 << 20, 1),
            (8 << 20, 2),
            (4 << 20, 4),
            (2 << 20, 8),
        ] {
            eprintln!(
                "ranged {} MiB x{n}: {:.2} GB/s",
                size >> 20,
                ranged_round_with(size, n)
            );
        }
    }
    let ranged_round = || {
        rt.block_on(async {
            use futures::StreamExt;
            let t = Instant::now();
            let mut ranges = Vec::new();
            for (path, size) in &object_paths {
                let mut at = 0;
                while at < *size {
                    let end = (at + (8 << 20)).min(*size);
                    ranges.push((path.clone(), at..end));
                    at = end;
                }
            }
            let bytes: u64 = futures::stream::iter(ranges)
                .map(|(path, range)| {
                    let store = s3.store.clone();
                    async move { store.get_range(&path, range).await.unwrap().len() as u64 }
                })
                .buffered(4)
                .fold(0, |a, b| async move { a + b })
                .await;
            (bytes, t.elapsed())
        })
    };
    let mut node = 10;
    let mut store_round = |stats: &mut Option<objstream::ReadStats>| {
        node += 1;
        rt.block_on(async {
            let store = open(
                dir.path(),
                node,
                s3.store.clone(),
                &prefix,
                settings.clone(),
            )
            .await;
            let s = store.open_stream(id).await.unwrap();
            let t = Instant::now();
            let (bytes, waited, waits) = read_all_timed(&s, end).await;
            let took = t.elapsed();
            *stats = Some(store.read_stats());
            if std::env::var("READ_PATH_VERBOSE").is_ok() {
                eprintln!("store round: {took:?}, {waits} fetches waited {waited:?}");
            }
            s.close().await.unwrap();
            store.shutdown().await.unwrap();
            (bytes, took)
        })
    };

    let rounds: usize = std::env::var("READ_PATH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    // Alternate the two, swapping which goes first each round, so that both see the same
    // server state (the machine is shared: a round's figure moves with other load).
    let mut ratios = Vec::new();
    let (mut raws, mut ours) = (Vec::new(), Vec::new());
    let mut last = None;
    let mut gets = 0u64;
    let mut got_bytes = 0u64;
    let mut wasted = 0u64;
    let mut prefetched = 0u64;
    let (mut raw_cpu, mut store_cpu) = (Duration::ZERO, Duration::ZERO);
    let (mut raw_faults, mut store_faults) = (0u64, 0u64);
    for round in 0..rounds {
        let mut raw = || {
            let (cpu, faults) = usage();
            let (b, t) = raw_round();
            let (cpu_after, faults_after) = usage();
            raw_cpu += cpu_after - cpu;
            raw_faults += faults_after - faults;
            gbps(b, t)
        };
        let mut store = |last: &mut Option<objstream::ReadStats>| {
            let (cpu, faults) = usage();
            let (b, t) = store_round(last);
            let (cpu_after, faults_after) = usage();
            store_cpu += cpu_after - cpu;
            store_faults += faults_after - faults;
            gbps(b, t)
        };
        let (raw, store) = if round % 2 == 0 {
            let raw = raw();
            (raw, store(&mut last))
        } else {
            let store = store(&mut last);
            (raw(), store)
        };
        let stats = last.expect("a store round ran");
        gets += stats.object_gets;
        got_bytes += stats.object_bytes;
        wasted += stats.read_ahead_wasted_bytes;
        prefetched += stats.read_ahead_bytes;
        eprintln!(
            "round {round}: raw {raw:.2} GB/s, store {store:.2} GB/s = {:.0} %",
            100.0 * store / raw
        );
        raws.push(raw);
        ours.push(store);
        ratios.push(store / raw);
    }
    let ranged = ranged_round();
    let stats = last.expect("a store round ran");
    let (r_med, r_min, r_max) = spread(&raws);
    let (o_med, o_min, o_max) = spread(&ours);
    let (q_med, q_min, q_max) = spread(&ratios);
    summary.push(format!(
        "cold catch-up on S3 ({} MiB payload in {} objects, {} MiB stored), {rounds} alternated rounds, median [min, max]:",
        CATCH_UP_BYTES >> 20,
        object_paths.len(),
        object_bytes >> 20,
    ));
    summary.push(format!(
        "  raw whole-object GETs, one at a time: {r_med:>5.2} GB/s [{r_min:.2}, {r_max:.2}]"
    ));
    summary.push(format!(
        "  store with read-ahead:                {o_med:>5.2} GB/s [{o_min:.2}, {o_max:.2}]"
    ));
    summary.push(format!(
        "  store / raw (same round):             {:>5.0} %    [{:.0}, {:.0}] (target >= 80 %)",
        100.0 * q_med,
        100.0 * q_min,
        100.0 * q_max
    ));
    summary.push(format!(
        "  raw ranged GETs of 8 MiB, four in flight: {:>5.2} GB/s",
        gbps(ranged.0, ranged.1)
    ));
    let gib = (CATCH_UP_BYTES * rounds as u64) as f64 / f64::from(1u32 << 30);
    summary.push(format!(
        "  client CPU per GiB read: raw {:.0} ms, store {:.0} ms (store rounds include opening and closing a node)",
        raw_cpu.as_secs_f64() * 1e3 / gib,
        store_cpu.as_secs_f64() * 1e3 / gib,
    ));
    summary.push(format!(
        "  minor page faults per GiB read: raw {:.0}, store {:.0} (a fresh 4 KiB page each)",
        raw_faults as f64 / gib,
        store_faults as f64 / gib,
    ));
    summary.push(format!(
        "  per cold read: {:.1} GETs per GB ({} GETs for {} MiB in the last round, {} of them read-ahead); \
         read-ahead waste {:.1} % ({} MiB of {} MiB over all rounds)",
        gets as f64 / (got_bytes as f64 / 1e9),
        stats.object_gets,
        stats.object_bytes >> 20,
        stats.read_ahead_gets,
        100.0 * wasted as f64 / (prefetched.max(1)) as f64,
        wasted >> 20,
        prefetched >> 20,
    ));
}

/// Median, minimum and maximum.
fn spread(values: &[f64]) -> (f64, f64, f64) {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let median = if v.is_empty() {
        0.0
    } else if v.len() % 2 == 1 {
        v[v.len() / 2]
    } else {
        (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
    };
    (
        median,
        v.first().copied().unwrap_or(0.0),
        v.last().copied().unwrap_or(0.0),
    )
}

fn bench(c: &mut Criterion) {
    let mut summary = Vec::new();
    if std::env::var("READ_PATH_CATCH_UP_ONLY").is_err() {
        tiers(c, &mut summary);
        block_hit(c, &mut summary);
    }
    catch_up(&mut summary);
    println!("\n== read path summary ==");
    for line in summary {
        println!("{line}");
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
