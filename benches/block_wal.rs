//! The block WAL against the raw device it runs on.
//!
//! One run on one file (a preallocated file under cargo's target tmp dir, opened with
//! `O_DIRECT`), so the ratios compare like with like:
//!
//! - raw: 1 MiB `O_DIRECT | O_DSYNC` sequential writes (durable write bandwidth) and 4 KiB
//!   `O_DIRECT | O_DSYNC` writes one at a time (the floor for one durable append);
//! - the WAL: appends of 1 KiB and 64 KiB records by 1 and by 256 appender threads (each with
//!   one append in flight), for both durability modes (`O_DSYNC` and `fdatasync`), while a
//!   trimmer keeps the ring from filling; throughput, p50 and p99.
//!
//! The summary prints each figure and its ratio to the raw ones. A criterion group for one
//! appender of 1 KiB records follows. Run with `cargo bench --bench block_wal` (under a
//! minute); under `cargo test --benches` each part runs briefly.

use std::fs::OpenOptions;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput};
use futures::executor::block_on;
use objstream_wal::block::{AlignedBuf, Durability};
use objstream_wal::{BlockWal, BlockWalOptions, Wal};

const FILE_BYTES: u64 = 256 << 20;

fn full_run() -> bool {
    std::env::args().any(|a| a == "--bench")
}

fn part_time() -> Duration {
    if full_run() {
        Duration::from_secs(2)
    } else {
        Duration::from_millis(100)
    }
}

fn dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("block_wal_bench");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p) as usize]
}

fn direct_dsync(path: &Path) -> std::fs::File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_DIRECT | libc::O_DSYNC)
        .open(path)
        .unwrap()
}

/// Durable sequential bandwidth with 1 MiB `O_DIRECT | O_DSYNC` writes, in MB/s.
fn raw_bandwidth(path: &Path) -> f64 {
    let file = direct_dsync(path);
    let mut buf = AlignedBuf::new(1 << 20);
    buf.fill(0x5A);
    let start = Instant::now();
    let mut off = 0u64;
    while start.elapsed() < part_time() {
        file.write_all_at(&buf, off % FILE_BYTES).unwrap();
        off += buf.len() as u64;
    }
    off as f64 / start.elapsed().as_secs_f64() / 1e6
}

/// 4 KiB `O_DIRECT | O_DSYNC` write latencies, sorted.
fn raw_latency(path: &Path) -> Vec<Duration> {
    let file = direct_dsync(path);
    let buf = AlignedBuf::new(4096);
    let mut lat = Vec::new();
    let start = Instant::now();
    let mut off = 0u64;
    while start.elapsed() < part_time() {
        let t = Instant::now();
        file.write_all_at(&buf, off % FILE_BYTES).unwrap();
        lat.push(t.elapsed());
        off += 4096;
    }
    lat.sort();
    lat
}

struct Figures {
    mb_per_s: f64,
    appends_per_s: f64,
    p50: Duration,
    p99: Duration,
}

fn wal_options(durability: Durability) -> BlockWalOptions {
    BlockWalOptions {
        create_bytes: Some(FILE_BYTES),
        max_record_bytes: 1 << 20,
        max_batch_bytes: 1 << 20,
        durability,
    }
}

fn run_wal(path: &Path, durability: Durability, record: usize, appenders: usize) -> Figures {
    let wal = Arc::new(BlockWal::open(path, 1, 1, wal_options(durability)).unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let trimmer = {
        let (wal, stop) = (wal.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(5));
                let ring = wal.ring_bytes();
                if wal.next_position().0 - wal.trim_position().0 > ring / 4 {
                    block_on(wal.trim(wal.next_position())).unwrap();
                }
            }
        })
    };
    let payload = Bytes::from(vec![0xC3; record]);
    let start = Instant::now();
    let threads: Vec<_> = (0..appenders)
        .map(|_| {
            let (wal, payload) = (wal.clone(), payload.clone());
            std::thread::spawn(move || {
                let mut lat = Vec::new();
                while start.elapsed() < part_time() {
                    let t = Instant::now();
                    block_on(wal.append(payload.clone())).unwrap();
                    lat.push(t.elapsed());
                }
                lat
            })
        })
        .collect();
    let mut lat: Vec<Duration> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    let secs = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    trimmer.join().unwrap();
    lat.sort();
    Figures {
        mb_per_s: (lat.len() * record) as f64 / secs / 1e6,
        appends_per_s: lat.len() as f64 / secs,
        p50: percentile(&lat, 0.5),
        p99: percentile(&lat, 0.99),
    }
}

fn main() {
    let path = dir().join("bench.wal");
    let _ = std::fs::remove_file(&path);
    // Create and preallocate through the WAL itself, then measure the raw file.
    drop(BlockWal::open(&path, 1, 1, wal_options(Durability::Dsync)).unwrap());

    let bandwidth = raw_bandwidth(&path);
    let raw = raw_latency(&path);
    let (raw_p50, raw_p99) = (percentile(&raw, 0.5), percentile(&raw, 0.99));
    let _ = std::fs::remove_file(&path);

    println!("\n== block WAL on {} ==", path.display());
    println!("raw O_DIRECT|O_DSYNC 1 MiB sequential writes: {bandwidth:.1} MB/s");
    println!("raw O_DIRECT|O_DSYNC 4 KiB write latency: p50 {raw_p50:?}, p99 {raw_p99:?}");
    for durability in [Durability::Dsync, Durability::Fdatasync] {
        for record in [1 << 10, 64 << 10] {
            for appenders in [1, 256] {
                let f = run_wal(&path, durability, record, appenders);
                let _ = std::fs::remove_file(&path);
                println!(
                    "{durability:?} {:>2} KiB x {appenders:>3}: {:>8.0} appends/s {:>7.1} MB/s \
                     ({:.2} of raw bw), p50 {:?} ({:.2}x raw 4 KiB), p99 {:?}",
                    record >> 10,
                    f.appends_per_s,
                    f.mb_per_s,
                    f.mb_per_s / bandwidth,
                    f.p50,
                    f.p50.as_secs_f64() / raw_p50.as_secs_f64(),
                    f.p99,
                );
            }
        }
    }

    let mut c = Criterion::default()
        .configure_from_args()
        .measurement_time(part_time())
        .warm_up_time(Duration::from_millis(200));
    let wal = BlockWal::open(&path, 1, 1, wal_options(Durability::Dsync)).unwrap();
    let payload = Bytes::from(vec![0xC3; 1 << 10]);
    let mut group = c.benchmark_group("block_wal");
    group.throughput(Throughput::Bytes(1 << 10));
    group.bench_function("append_1KiB_one_appender", |b| {
        b.iter(|| {
            if wal.next_position().0 - wal.trim_position().0 > wal.ring_bytes() / 4 {
                block_on(wal.trim(wal.next_position())).unwrap();
            }
            block_on(wal.append(payload.clone())).unwrap()
        })
    });
    group.finish();
    drop(wal);
    let _ = std::fs::remove_file(&path);
    c.final_summary();
}
