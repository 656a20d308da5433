//! A tail reader keeps up while a catch-up reader scans old data.
//!
//! One stream holds 192 MiB of old data, in objects, behind a block cache of 16 MiB. While a
//! catch-up reader scans all of it from the start, a writer appends to a second stream at a
//! steady pace and a tail reader follows that stream. The tail reader's lag is measured in
//! records: after each of its fetches, how many records were confirmed but not yet read by it.
//! The same is measured for a while without the scan, and the scan may not make it much worse.
//! Every byte the scan reads is checked, and the scan must have used read-ahead.
//!
//! The catch-up limiter is off by default; a second test sets it and checks that a scan keeps
//! to its rate (read-ahead included) while the tail reader, which the limiter never holds
//! back, still keeps up.

mod common;
mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::Node;
use objstream::{Compression, Offset, RecordBatch, Settings, Store, Stream};

const OLD_BYTES: u64 = 192 << 20;
const OLD_BATCH: usize = 256 << 10;
/// The writer appends one batch per tick.
const TICK: Duration = Duration::from_millis(2);

fn old_payload(n: u64) -> Bytes {
    let mut v = vec![(n % 251) as u8; OLD_BATCH];
    v[..8].copy_from_slice(&n.to_le_bytes());
    Bytes::from(v)
}

fn settings(node: &Node) -> Settings {
    Settings {
        compression: Compression::None,
        block_bytes: 512 << 10,
        max_batch_bytes: 1 << 20,
        upload_threshold_bytes: 16 << 20,
        log_cache_bytes: 48 << 20,
        block_cache_bytes: 16 << 20,
        read_ahead_bytes: 4 << 20,
        ..node.settings.clone()
    }
}

struct Lag {
    max: u64,
    reads: u64,
    /// Records the writer had confirmed by the end of the phase.
    written: u64,
}

/// Follows `stream` from `from` until `stop`, measuring lag after every fetch.
async fn tail(stream: Stream, from: Offset, stop: Arc<AtomicBool>) -> Lag {
    let mut pos = from;
    let mut lag = Lag {
        max: 0,
        reads: 0,
        written: 0,
    };
    while !stop.load(Ordering::Relaxed) {
        let confirmed = stream.confirmed_offset().unwrap();
        if confirmed == pos {
            tokio::time::sleep(Duration::from_millis(1)).await;
            continue;
        }
        let got = stream.fetch(pos, confirmed, 1 << 20).await.unwrap();
        for b in &got {
            assert_eq!(b.base_offset, pos, "the tail reader sees every record");
            assert_eq!(b.batch.payload, common::payload(1, pos.get()));
            pos = b.next_offset();
        }
        let behind = stream.confirmed_offset().unwrap().get() - pos.get();
        lag.max = lag.max.max(behind);
        lag.reads += 1;
    }
    lag
}

/// Appends one record per tick until `stop`.
async fn write(stream: Stream, stop: Arc<AtomicBool>) -> Duration {
    let mut tick = tokio::time::interval(TICK);
    let mut slowest = Duration::ZERO;
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let n = stream.confirmed_offset().unwrap().get();
        let t = Instant::now();
        stream
            .append(RecordBatch::new(1, 0, common::payload(1, n)))
            .await
            .unwrap();
        slowest = slowest.max(t.elapsed());
    }
    slowest
}

/// Runs a writer and a tail reader on `live` for as long as `during` takes; returns the
/// tail's lag, its fetch count and the writer's slowest append.
async fn tail_while<F: std::future::Future>(
    live: &Stream,
    during: F,
) -> (Lag, Duration, F::Output) {
    let stop = Arc::new(AtomicBool::new(false));
    let from = live.confirmed_offset().unwrap();
    let writer = tokio::spawn(write(live.clone(), stop.clone()));
    let reader = tokio::spawn(tail(live.clone(), from, stop.clone()));
    let out = during.await;
    stop.store(true, Ordering::Relaxed);
    let slowest = writer.await.unwrap();
    let mut lag = reader.await.unwrap();
    lag.written = live.confirmed_offset().unwrap().get() - from.get();
    (lag, slowest, out)
}

async fn scan(old: Stream, end: Offset) -> u64 {
    scan_from(old, Offset(0), end, end).await
}

/// Reads `old` from `from` until at least `until`, each fetch asking for up to `end` (so the
/// reader is as far behind as the stream's end says, not just `until`).
async fn scan_from(old: Stream, from: Offset, until: Offset, end: Offset) -> u64 {
    let mut pos = from;
    let mut bytes = 0;
    while pos < until {
        let got = old.fetch(pos, end, 1 << 20).await.unwrap();
        for b in got {
            assert_eq!(b.base_offset, pos, "the scan sees every record");
            assert_eq!(b.batch.payload, old_payload(pos.get()), "batch {pos}");
            bytes += b.batch.payload.len() as u64;
            pos = b.next_offset();
        }
    }
    bytes
}

async fn load_old(store: &Store) -> (Stream, Offset) {
    let old = store.create_stream().await.unwrap();
    let mut appends = Vec::new();
    for n in 0..OLD_BYTES / OLD_BATCH as u64 {
        appends.push(old.append(RecordBatch::new(1, 0, old_payload(n))));
        if appends.len() == 32 {
            for a in appends.drain(..) {
                a.await.unwrap();
            }
        }
    }
    for a in appends {
        a.await.unwrap();
    }
    store.flush().await.unwrap();
    let end = old.confirmed_offset().unwrap();
    (old, end)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tail_reader_keeps_up_while_old_data_is_scanned() {
    for backend in support::backends() {
        isolation(&backend).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limited_scan_keeps_to_its_rate_and_the_tail_keeps_up() {
    for backend in support::backends() {
        limited(&backend).await;
    }
}

/// The scan's rate limit in the limited test.
const LIMIT: u64 = 12 << 20;

async fn limited(backend: &support::TestStore) {
    let name = backend.name;
    let dir = tempfile::tempdir().unwrap();
    // The old data is written by another node: uploads charge the bucket too, and 192 MiB of
    // them would hold the scan back for many seconds.
    let writer = Node::new(dir.path(), 1);
    let components = || objstream::Components::new(backend.store.clone(), backend.prefix.clone());
    let store = Store::open(settings(&writer), components()).await.unwrap();
    let (old, end) = load_old(&store).await;
    old.close().await.unwrap();
    store.shutdown().await.unwrap();
    let node = Node::new(dir.path(), 2);
    let store = Store::open(
        Settings {
            catch_up_bytes_per_sec: LIMIT,
            ..settings(&node)
        },
        components(),
    )
    .await
    .unwrap();
    let old = store.open_stream(old.id()).await.unwrap();
    let live = store.create_stream().await.unwrap();
    let (quiet, _, ()) = tail_while(&live, tokio::time::sleep(Duration::from_secs(1))).await;

    // Scan 40 MiB from 8 MiB in, at a limit well below what the scan reaches unlimited.
    let batches = OLD_BYTES / OLD_BATCH as u64;
    let (from, to) = (Offset(batches / 24), Offset(batches / 4));
    assert!(to < end);
    let before = store.read_stats();
    let started = Instant::now();
    let (busy, _, scanned) = tail_while(&live, scan_from(old.clone(), from, to, end)).await;
    let took = started.elapsed();
    let stats = store.read_stats();
    let fetched = stats.object_bytes - before.object_bytes;
    println!(
        "{name}: limited scan: {} MiB in {:.2} s ({} MiB from objects, throttled {} ms); \
         tail lag {} records alone, {} during the scan",
        scanned >> 20,
        took.as_secs_f64(),
        fetched >> 20,
        stats.throttled_ms - before.throttled_ms,
        quiet.max,
        busy.max,
    );
    assert!(
        scanned >= (to.get() - from.get()) * OLD_BATCH as u64,
        "{name}"
    );
    assert!(
        fetched >= scanned,
        "{name}: the scan came from object storage: {stats:?}"
    );
    // The bucket starts with a second's worth of tokens, and a read takes its tokens once the
    // balance is positive, whatever its size (at most the read-ahead window here): what the
    // scan fetched beyond those took at least its time at the rate.
    let least = fetched.saturating_sub(LIMIT + (4 << 20)) as f64 / LIMIT as f64;
    assert!(
        took.as_secs_f64() >= least * 0.95,
        "{name}: {} MiB fetched in {:.2} s, faster than {} MiB/s allows ({least:.2} s)",
        fetched >> 20,
        took.as_secs_f64(),
        LIMIT >> 20
    );
    assert!(
        stats.throttled_ms > before.throttled_ms,
        "{name}: the limiter held the scan back: {stats:?}"
    );
    let bound = quiet.max.max(10) + (250 / TICK.as_millis() as u64);
    assert!(
        busy.max <= bound,
        "{name}: the tail fell {} records behind during the limited scan (alone: {}, bound {bound})",
        busy.max,
        quiet.max
    );
    store.shutdown().await.unwrap();
}

async fn isolation(backend: &support::TestStore) {
    let name = backend.name;
    let dir = tempfile::tempdir().unwrap();
    let node = Node::new(dir.path(), 1);
    let store = Store::open(
        settings(&node),
        objstream::Components::new(backend.store.clone(), backend.prefix.clone()),
    )
    .await
    .unwrap();
    let (old, end) = load_old(&store).await;
    let live = store.create_stream().await.unwrap();

    // The tail alone, for a second: the baseline.
    let (quiet, quiet_slowest, ()) =
        tail_while(&live, tokio::time::sleep(Duration::from_secs(1))).await;

    // The tail while the old data is scanned. Most of the old data left the log cache: it holds
    // 48 MiB, and 192 MiB went through it.
    let before = store.read_stats();
    let started = Instant::now();
    let (busy, busy_slowest, scanned) = tail_while(&live, scan(old.clone(), end)).await;
    let took = started.elapsed();
    let stats = store.read_stats();
    println!(
        "{name}: scan: {} MiB in {:.1} s; tail lag: {} records alone ({} fetches, {} written, \
         slowest append {:?}), {} records during the scan ({} fetches, {} written, slowest \
         append {:?})",
        scanned >> 20,
        took.as_secs_f64(),
        quiet.max,
        quiet.reads,
        quiet.written,
        quiet_slowest,
        busy.max,
        busy.reads,
        busy.written,
        busy_slowest,
    );
    println!("{stats:#?}");

    assert_eq!(scanned, OLD_BYTES, "{name}");
    assert!(
        stats.object_bytes - before.object_bytes >= OLD_BYTES - (48 << 20),
        "{name}: the scan came from object storage below the log cache: {stats:?}"
    );
    assert!(
        stats.read_ahead_used_bytes > OLD_BYTES / 2,
        "{name}: the scan ran on read-ahead: {stats:?}"
    );
    assert!(
        stats.memory_held_bytes <= 16 << 20,
        "{name}: the block cache kept to its size: {stats:?}"
    );
    // The scan must not stop the tail reader: per record the writer confirmed, it fetches at
    // least a quarter as often as it did alone. (A reader can fetch only what was written, and
    // on a loaded machine the writer's syncs slow both phases alike, so no fixed count.)
    assert!(
        busy.reads * 4 * quiet.written >= quiet.reads * busy.written,
        "{name}: the tail reader kept reading during the scan ({} fetches for {} records \
         written, {} for {} alone)",
        busy.reads,
        busy.written,
        quiet.reads,
        quiet.written
    );
    // One tick's worth of records arrives during each fetch; the scan may slow the tail down
    // a little, never by more than a quarter of a second of appends.
    let bound = quiet.max.max(10) + (250 / TICK.as_millis() as u64);
    assert!(
        busy.max <= bound,
        "{name}: the tail fell {} records behind during the scan (alone: {}, bound {bound})",
        busy.max,
        quiet.max
    );
    store.shutdown().await.unwrap();
}
