//! The block WAL against the raw device it runs on.
//!
//! One run on one file (a preallocated file under cargo's target tmp dir, opened with
//! `O_DIRECT`, written over once before anything is timed so that no write meets an unwritten
//! extent), so the ratios compare like with like:
//!
//! - raw: 1 MiB `O_DIRECT | O_DSYNC` sequential writes (durable write bandwidth) and 4 KiB
//!   `O_DIRECT | O_DSYNC` writes one at a time (the floor for one durable append);
//!   `O_DIRECT` 8 KiB reads of the header slots (what the ownership check before every
//!   acknowledged write costs);
//! - the WAL: appends of 1 KiB and 64 KiB records by 1 and by 256 appender threads (each with
//!   one append in flight), for both durability modes (`O_DSYNC` and `fdatasync`), while a
//!   trimmer keeps the ring from filling; throughput, p50 and p99;
//! - paced load: appends offered at a fixed 100 MB/s for 10 s (open loop: latency counts from
//!   when an append was due, so a stall cannot hide the appends it delayed), p50, p99 and max,
//!   after raw 64 KiB `O_DIRECT | O_DSYNC` writes paced the same way (the floor); for 1, 4 and
//!   64 KiB records, each run after a pass of raw 4 KiB `O_DIRECT | O_DSYNC` writes whose p50
//!   and p99 print beside it; without a write budget and with each budget in
//!   `BLOCK_WAL_BENCH_BUDGET` (default 2000 writes a second). Beside each run a probe
//!   (module `stalls`) reports the device's pauses and how many late appends waited through
//!   one, and `/proc/diskstats` what the device served per append;
//! - replay: 256 MiB of 64 KiB records written once, then in alternating rounds raw `O_DIRECT`
//!   reads of the same bytes of the same file with the recovery's read size and depth
//!   ([`RECOVERY_READ_BYTES`], [`RECOVERY_READ_DEPTH`] in flight), and the time to open
//!   (recover) and replay; each round's ratio and the median; then replay from memory.
//!
//! `BLOCK_WAL_BENCH=replay,paced` (comma separated: `raw`, `closed`, `paired`, `paced`,
//! `memory`, `replay`, `criterion`) runs only the parts named.
//!
//! The summary prints each figure and its ratio to the raw ones, and the bandwidth ratio again
//! from raw and WAL runs in alternating pairs (the median of three), since a shared disk's
//! bandwidth drifts over a run. A criterion group for one
//! appender of 1 KiB records follows. Run with `cargo bench --bench block_wal` (about five
//! minutes); under `cargo test --benches` each part runs briefly (replay on 16 MiB).

use std::collections::VecDeque;
use std::fs::OpenOptions;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput};
use futures::executor::block_on;
use objstream_wal::block::{
    AlignedBuf, Durability, MemDevice, HEADER_AREA, RECOVERY_READ_BYTES, RECOVERY_READ_DEPTH,
};
use objstream_wal::{BlockWal, BlockWalOptions, Wal};

mod stalls;
use stalls::{Attribution, DeviceWatch, Sample};

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

/// How long each paced run lasts: long enough to meet the pauses a shared disk makes every
/// few seconds, so that its p99 is not a matter of luck.
fn paced_time() -> Duration {
    if full_run() {
        Duration::from_secs(10)
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

/// Durable sequential bandwidth with 1 MiB `O_DIRECT | O_DSYNC` writes, in MB/s, after one
/// untimed pass over the whole file (which turns its preallocated extents into written ones).
fn raw_bandwidth(path: &Path) -> f64 {
    let file = direct_dsync(path);
    let mut buf = AlignedBuf::new(1 << 20);
    buf.fill(0x5A);
    for off in (0..FILE_BYTES).step_by(buf.len()) {
        file.write_all_at(&buf, off).unwrap();
    }
    raw_bandwidth_now(path)
}

/// [`raw_bandwidth`] without the untimed pass, but over the whole file at least (so that no
/// frame of an earlier WAL run survives to be mistaken for damage), then the header slots
/// zeroed so that the WAL that runs next on the file starts fresh.
fn raw_bandwidth_now(path: &Path) -> f64 {
    let file = direct_dsync(path);
    let mut buf = AlignedBuf::new(1 << 20);
    buf.fill(0x5A);
    let start = Instant::now();
    let mut off = 0u64;
    while start.elapsed() < part_time() || off < FILE_BYTES {
        file.write_all_at(&buf, off % FILE_BYTES).unwrap();
        off += buf.len() as u64;
    }
    let mb_per_s = off as f64 / start.elapsed().as_secs_f64() / 1e6;
    file.write_all_at(&AlignedBuf::new(8192), 0).unwrap();
    mb_per_s
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

/// Sequential 8 MiB `O_DIRECT` reads over the file, in MB/s: the ceiling for replay.
fn raw_read_bandwidth(path: &Path) -> f64 {
    let file = direct_dsync(path);
    let len = file.metadata().unwrap().len();
    let mut buf = AlignedBuf::new(8 << 20);
    let span = len - len % buf.len() as u64;
    let start = Instant::now();
    let mut off = 0u64;
    while start.elapsed() < part_time() {
        file.read_exact_at(&mut buf, off % span).unwrap();
        off += buf.len() as u64;
    }
    off as f64 / start.elapsed().as_secs_f64() / 1e6
}

/// 64 KiB `O_DIRECT | O_DSYNC` writes offered at `offered` bytes per second from one thread
/// (open loop, latency from when each was due) for [`paced_time`], with the stall probe
/// running: the floor for the paced WAL runs. Returns the sorted latencies and the
/// attribution.
fn raw_paced(path: &Path, offered: f64) -> (Vec<Duration>, Attribution) {
    let file = direct_dsync(path);
    let buf = AlignedBuf::new(64 << 10);
    let interval = Duration::from_secs_f64(buf.len() as f64 / offered);
    let watch = DeviceWatch::start(path);
    let mut samples: Vec<Sample> = Vec::new();
    let mut off = 0u64;
    pace(interval, |due| {
        file.write_all_at(&buf, 8192 + off % (FILE_BYTES - (1 << 20)))
            .unwrap();
        off += buf.len() as u64;
        samples.push((due, due.elapsed()));
    });
    let (attribution, disk) = watch.finish(&samples);
    if let Some(disk) = disk {
        println!("raw paced: {disk}");
    }
    let mut lat: Vec<Duration> = samples.into_iter().map(|(_, l)| l).collect();
    lat.sort();
    (lat, attribution)
}

/// Calls `send` with each due time, `interval` apart, for [`paced_time`] from now (open
/// loop), and returns when it started. It sleeps rather than spins (the machine may have two
/// cores): what fell due during a sleep goes out right after it, and its latency counts the
/// wait.
fn pace(interval: Duration, mut send: impl FnMut(Instant)) -> Instant {
    let start = Instant::now();
    let mut due = start;
    while due.duration_since(start) < paced_time() {
        let now = Instant::now();
        if now < due {
            std::thread::sleep((due - now).min(Duration::from_micros(200)));
            continue;
        }
        send(due);
        due += interval;
    }
    start
}

/// 8 KiB `O_DIRECT` reads of the header slots, sorted: the ownership check's cost.
fn header_read_latency(path: &Path) -> Vec<Duration> {
    let file = direct_dsync(path);
    let mut buf = AlignedBuf::new(8192);
    let mut lat = Vec::new();
    let start = Instant::now();
    while start.elapsed() < part_time() {
        let t = Instant::now();
        file.read_exact_at(&mut buf, 0).unwrap();
        lat.push(t.elapsed());
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
        max_writes_per_sec: 0,
    }
}

/// The write budgets the paced runs try: none, then `BLOCK_WAL_BENCH_BUDGET` writes a second
/// (comma separated; default 2000, what this kind of virtual disk serves alongside the load's
/// CPU before its host pauses the machine).
fn budgets() -> Vec<u32> {
    let mut budgets = vec![0];
    let named = std::env::var("BLOCK_WAL_BENCH_BUDGET").unwrap_or_else(|_| "2000".into());
    budgets.extend(
        named
            .split(',')
            .filter_map(|b| b.trim().parse::<u32>().ok()),
    );
    budgets
}

fn run_wal(path: &Path, durability: Durability, record: usize, appenders: usize) -> Figures {
    let wal = Arc::new(BlockWal::open(path, 1, 1, wal_options(durability)).unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let trimmer = trimmer(wal.clone(), stop.clone());
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

/// Keeps the ring a quarter full at most until `stop`.
fn trimmer(wal: Arc<BlockWal>, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(5));
            if wal.next_position().0 - wal.trim_position().0 > wal.ring_bytes() / 4 {
                block_on(wal.trim(wal.next_position())).unwrap();
            }
        }
    })
}

struct Paced {
    mb_per_s: f64,
    p50: Duration,
    p99: Duration,
    max: Duration,
    /// CPU time of the WAL's own threads (sequencer and I/O threads) per append.
    cpu_per_append: Duration,
    /// Time the WAL's threads were ready to run but waited for a CPU, per append.
    wait_per_append: Duration,
    /// Times the WAL's threads went to sleep and were woken, per append.
    switches_per_append: f64,
    /// CPU time of every thread of the process (the WAL's, the appender's, the waiter's, the
    /// trimmer's) per append.
    process_cpu_per_append: Duration,
    /// The device stalls during the run and the p99 without them (runs on a file only).
    attribution: Option<Attribution>,
    /// What the device served during the run, per append (runs on a file only).
    disk: Option<String>,
}

impl Paced {
    /// The per-append costs, for printing.
    fn costs(&self) -> String {
        format!(
            "per append: WAL threads {:?} CPU, {:?} waiting for a CPU, {:.2} context switches; \
             whole process {:?} CPU",
            self.cpu_per_append,
            self.wait_per_append,
            self.switches_per_append,
            self.process_cpu_per_append
        )
    }
}

/// Scheduler figures so far of this process's threads whose name starts with `prefix` (all
/// threads when empty), from `/proc`: time on a CPU, time runnable but waiting for one, and
/// context switches.
fn threads_usage(prefix: &str) -> (Duration, Duration, u64) {
    let (mut cpu, mut wait, mut switches) = (Duration::ZERO, Duration::ZERO, 0);
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return (cpu, wait, switches);
    };
    for task in tasks.flatten() {
        let dir = task.path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if !comm.starts_with(prefix) {
            continue;
        }
        let sched = std::fs::read_to_string(dir.join("schedstat")).unwrap_or_default();
        let mut fields = sched
            .split(' ')
            .map(|n| n.trim().parse::<u64>().unwrap_or(0));
        cpu += Duration::from_nanos(fields.next().unwrap_or(0));
        wait += Duration::from_nanos(fields.next().unwrap_or(0));
        let status = std::fs::read_to_string(dir.join("status")).unwrap_or_default();
        switches += status
            .lines()
            .filter(|l| l.contains("ctxt_switches"))
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum::<u64>();
    }
    (cpu, wait, switches)
}

/// Offers `record`-byte appends at `offered` bytes per second from one thread (open loop);
/// another thread awaits them in order. Latency runs from when each append was due.
/// `budget` is the WAL's `max_writes_per_sec`.
fn run_paced(
    path: &Path,
    durability: Durability,
    budget: u32,
    record: usize,
    offered: f64,
) -> Paced {
    let options = BlockWalOptions {
        max_writes_per_sec: budget,
        ..wal_options(durability)
    };
    let wal = BlockWal::open(path, 1, 1, options).unwrap();
    paced_on(wal, Some(path), record, offered)
}

/// [`run_paced`] on an open WAL; on a file (`file`), with a [`DeviceWatch`] beside it.
fn paced_on(wal: BlockWal, file: Option<&Path>, record: usize, offered: f64) -> Paced {
    let wal = Arc::new(wal);
    let watch = file.map(DeviceWatch::start);
    let (cpu_before, wait_before, switches_before) = threads_usage("block-wal");
    let process_before = threads_usage("").0;
    let stop = Arc::new(AtomicBool::new(false));
    let trim = trimmer(wal.clone(), stop.clone());
    let (tx, rx) = mpsc::channel::<(Instant, objstream_wal::WalFuture<_>)>();
    let waiter = std::thread::spawn(move || {
        let mut samples: Vec<Sample> = Vec::new();
        for (due, append) in rx {
            block_on(append).unwrap();
            samples.push((due, due.elapsed()));
        }
        samples
    });
    let payload = Bytes::from(vec![0x3C; record]);
    let interval = Duration::from_secs_f64(record as f64 / offered);
    let mut sent = 0usize;
    let start = pace(interval, |due| {
        tx.send((due, wal.append(payload.clone()))).unwrap();
        sent += 1;
    });
    drop(tx);
    let samples = waiter.join().unwrap();
    let secs = start.elapsed().as_secs_f64();
    let (attribution, disk) = match watch.map(|w| w.finish(&samples)) {
        Some((a, d)) => (Some(a), d),
        None => (None, None),
    };
    let mut lat: Vec<Duration> = samples.into_iter().map(|(_, l)| l).collect();
    let (cpu_after, wait_after, switches_after) = threads_usage("block-wal");
    let process_after = threads_usage("").0;
    stop.store(true, Ordering::Relaxed);
    trim.join().unwrap();
    lat.sort();
    let sent_u32 = u32::try_from(sent.max(1)).unwrap_or(u32::MAX);
    Paced {
        mb_per_s: (sent * record) as f64 / secs / 1e6,
        p50: percentile(&lat, 0.5),
        p99: percentile(&lat, 0.99),
        max: lat.last().copied().unwrap_or_default(),
        cpu_per_append: cpu_after.saturating_sub(cpu_before) / sent_u32,
        wait_per_append: wait_after.saturating_sub(wait_before) / sent_u32,
        switches_per_append: (switches_after - switches_before) as f64 / sent.max(1) as f64,
        process_cpu_per_append: process_after.saturating_sub(process_before) / sent_u32,
        attribution,
        disk,
    }
}

/// `O_DIRECT` reads of `bytes` bytes from `offset` on, `chunk` bytes each, `depth` of them in
/// flight (one thread each, every thread taking the next chunk in order), in MB/s: the ceiling
/// for a replay that reads the same way.
fn raw_read_depth(path: &Path, offset: u64, bytes: u64, chunk: u64, depth: usize) -> f64 {
    let file = direct_dsync(path);
    let next = std::sync::atomic::AtomicU64::new(0);
    let start = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..depth {
            scope.spawn(|| {
                let mut buf = AlignedBuf::new(chunk as usize);
                loop {
                    let at = next.fetch_add(chunk, Ordering::Relaxed);
                    if at >= bytes {
                        break;
                    }
                    let len = chunk.min(bytes - at) as usize;
                    file.read_exact_at(&mut buf[..len], offset + at).unwrap();
                }
            });
        }
    });
    bytes as f64 / start.elapsed().as_secs_f64() / 1e6
}

/// Where a replay bench keeps its ring: a file (`O_DIRECT`) or memory.
enum ReplayRing<'a> {
    File(&'a Path),
    Memory(MemDevice),
}

impl ReplayRing<'_> {
    fn options(bytes: u64) -> BlockWalOptions {
        BlockWalOptions {
            create_bytes: Some(bytes + (32 << 20)),
            ..wal_options(Durability::Fdatasync)
        }
    }

    fn open(&self, bytes: u64, epoch: u64) -> BlockWal {
        match self {
            ReplayRing::File(path) => BlockWal::open(path, 1, epoch, Self::options(bytes)).unwrap(),
            ReplayRing::Memory(dev) => {
                BlockWal::open_device(Arc::new(dev.clone()), 1, epoch, Self::options(bytes))
                    .unwrap()
            }
        }
    }
}

/// Writes `bytes` of 64 KiB records to a fresh ring at node epoch 1; returns where the log
/// ends.
fn fill_ring(ring: &ReplayRing<'_>, bytes: u64) -> u64 {
    let wal = ring.open(bytes, 1);
    let payload = Bytes::from(vec![0x7E; 64 << 10]);
    let mut inflight: VecDeque<objstream_wal::WalFuture<_>> = VecDeque::new();
    let mut written = 0u64;
    while written < bytes {
        if inflight.len() == 64 {
            block_on(inflight.pop_front().unwrap()).unwrap();
        }
        inflight.push_back(wal.append(payload.clone()));
        written += payload.len() as u64;
    }
    for f in inflight {
        block_on(f).unwrap();
    }
    wal.next_position().0
}

/// Opens the ring [`fill_ring`] wrote at node epoch `epoch` and replays it: the seconds the
/// open (recovery) and the whole took. Checks that every byte came back.
fn time_replay(ring: &ReplayRing<'_>, bytes: u64, epoch: u64) -> (f64, f64) {
    let start = Instant::now();
    let wal = ring.open(bytes, epoch);
    let opened = start.elapsed().as_secs_f64();
    let records = block_on(wal.replay()).unwrap();
    let secs = start.elapsed().as_secs_f64();
    let replayed: u64 = records.iter().map(|r| r.payload.len() as u64).sum();
    assert_eq!(replayed, bytes);
    (opened, secs)
}

/// Replay against raw reads of the same bytes of the same file with the same read size and
/// depth, in alternating rounds; then replay from memory.
fn replay_part() {
    let bytes: u64 = if full_run() { 256 << 20 } else { 16 << 20 };
    let rounds = if full_run() { 5 } else { 1 };
    let (chunk, depth) = (RECOVERY_READ_BYTES, RECOVERY_READ_DEPTH);
    let path = dir().join("replay.wal");
    let _ = std::fs::remove_file(&path);
    let ring = ReplayRing::File(&path);
    // The raw reads cover the log: the frames, each write padded to 4 KiB.
    let span = fill_ring(&ring, bytes);
    let mut ratios = Vec::new();
    let mut figures = Vec::new();
    for round in 0..rounds {
        // Alternate which goes first, so that neither always meets the bytes the other has
        // just brought into any cache below the file.
        let (raw, (opened, secs)) = if round % 2 == 0 {
            let raw = raw_read_depth(&path, HEADER_AREA, span, chunk, depth);
            (raw, time_replay(&ring, bytes, 2 + round as u64))
        } else {
            let replay = time_replay(&ring, bytes, 2 + round as u64);
            (
                raw_read_depth(&path, HEADER_AREA, span, chunk, depth),
                replay,
            )
        };
        let gb_per_s = bytes as f64 / secs / 1e9;
        println!(
            "replay round {round}: raw O_DIRECT reads ({} MiB x {depth} in flight) {:.2} GB/s; \
             open + replay of {} MiB {:.3} s (open {:.3} s) = {gb_per_s:.2} GB/s = {:.2} of raw",
            chunk >> 20,
            raw / 1e3,
            bytes >> 20,
            secs,
            opened,
            gb_per_s * 1e3 / raw
        );
        ratios.push(gb_per_s * 1e3 / raw);
        figures.push(gb_per_s);
    }
    let _ = std::fs::remove_file(&path);
    ratios.sort_by(f64::total_cmp);
    figures.sort_by(f64::total_cmp);
    println!(
        "replay from the file: median {:.2} GB/s (min {:.2}, max {:.2}; target >= 1 GB/s), \
         median ratio to raw reads of the same size and depth {:.2} (min {:.2}, max {:.2})",
        figures[figures.len() / 2],
        figures[0],
        figures[figures.len() - 1],
        ratios[ratios.len() / 2],
        ratios[0],
        ratios[ratios.len() - 1]
    );
    let memory = ReplayRing::Memory(MemDevice::new((bytes + (32 << 20)) as usize));
    fill_ring(&memory, bytes);
    let mut memory_figures: Vec<f64> = (0..rounds)
        .map(|round| bytes as f64 / time_replay(&memory, bytes, 2 + round as u64).1 / 1e9)
        .collect();
    memory_figures.sort_by(f64::total_cmp);
    println!(
        "replay from memory (decode, crc and the device's copy): median {:.2} GB/s (min {:.2}, \
         max {:.2})",
        memory_figures[memory_figures.len() / 2],
        memory_figures[0],
        memory_figures[memory_figures.len() - 1]
    );
}

/// Whether the part `name` runs: every part unless `BLOCK_WAL_BENCH` names some (comma
/// separated: `raw`, `closed`, `paired`, `paced`, `memory` (the paced runs on a memory device
/// only), `replay`, `criterion`).
fn part(name: &str) -> bool {
    std::env::var("BLOCK_WAL_BENCH").map_or(true, |parts| parts.split(',').any(|p| p == name))
}

/// The paced load on a memory device: what the WAL's own threads cost, with no disk.
fn memory_paced_part() {
    for record in [1 << 10, 4 << 10, 64 << 10] {
        let dev = Arc::new(MemDevice::new(FILE_BYTES as usize));
        let wal = BlockWal::open_device(dev, 1, 1, wal_options(Durability::Dsync)).unwrap();
        let p = paced_on(wal, None, record, 100e6);
        println!(
            "memory device paced 100 MB/s offered, {:>2} KiB records: {:.1} MB/s done, p50 {:?}, \
             p99 {:?}, max {:?}; {}",
            record >> 10,
            p.mb_per_s,
            p.p50,
            p.p99,
            p.max,
            p.costs()
        );
    }
}

/// The raw write figures, then the closed-loop, paired and paced WAL runs that compare with
/// them, on the file at `path`.
fn write_parts(path: &Path) {
    let bandwidth = raw_bandwidth(path);
    let raw = raw_latency(path);
    let (raw_p50, raw_p99) = (percentile(&raw, 0.5), percentile(&raw, 0.99));
    let header = header_read_latency(path);
    let read_bandwidth = raw_read_bandwidth(path);
    let (paced_raw, paced_raw_stalls) = raw_paced(path, 100e6);
    // The raw writes covered the file (so no write below meets an unwritten extent, as none
    // would on a block device or after a ring's first lap); zero the header slots so the WAL
    // starts fresh. The WAL runs then share the file, each reopening the ring.
    {
        let file = direct_dsync(path);
        file.write_all_at(&AlignedBuf::new(8192), 0).unwrap();
    }

    println!("\n== block WAL on {} ==", path.display());
    println!("raw O_DIRECT|O_DSYNC 1 MiB sequential writes: {bandwidth:.1} MB/s");
    println!("raw O_DIRECT|O_DSYNC 4 KiB write latency: p50 {raw_p50:?}, p99 {raw_p99:?}");
    println!("raw O_DIRECT 8 MiB sequential reads: {read_bandwidth:.1} MB/s");
    println!(
        "ownership check (8 KiB O_DIRECT header read) per acknowledged write: p50 {:?}, p99 {:?}",
        percentile(&header, 0.5),
        percentile(&header, 0.99)
    );
    println!(
        "raw O_DIRECT|O_DSYNC 64 KiB writes paced at 100 MB/s (one at a time, {:?}): p50 {:?}, \
         p99 {:?}, max {:?}; {paced_raw_stalls}",
        paced_time(),
        percentile(&paced_raw, 0.5),
        percentile(&paced_raw, 0.99),
        paced_raw.last().copied().unwrap_or_default()
    );
    let mut best_bw = 0f64;
    for durability in [Durability::Dsync, Durability::Fdatasync] {
        if !part("closed") {
            break;
        }
        for record in [1 << 10, 64 << 10] {
            for appenders in [1, 256] {
                let f = run_wal(path, durability, record, appenders);
                best_bw = best_bw.max(f.mb_per_s);
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

    if part("closed") {
        println!(
            "best WAL bandwidth {best_bw:.1} MB/s = {:.2} of raw O_DIRECT bandwidth (target >= \
             0.70)",
            best_bw / bandwidth
        );
    }
    // A shared disk's bandwidth drifts over a run: compare the WAL with the raw file in
    // alternating pairs, and take the median ratio.
    for durability in [Durability::Dsync, Durability::Fdatasync] {
        if !part("paired") {
            break;
        }
        let mut ratios = Vec::new();
        for _ in 0..if full_run() { 3 } else { 1 } {
            let raw = raw_bandwidth_now(path);
            let wal = run_wal(path, durability, 64 << 10, 256).mb_per_s;
            println!("{durability:?} paired: raw {raw:.1} MB/s, WAL 64 KiB x 256 {wal:.1} MB/s");
            ratios.push(wal / raw);
        }
        ratios.sort_by(f64::total_cmp);
        println!(
            "{durability:?} WAL / raw bandwidth, median of {} pairs: {:.2} (target >= 0.70)",
            ratios.len(),
            ratios[ratios.len() / 2]
        );
    }
    // Each paced run follows a pass of raw 4 KiB O_DSYNC writes, so that a loaded minute of
    // a shared disk shows in both.
    for durability in [Durability::Dsync, Durability::Fdatasync] {
        if !part("paced") {
            break;
        }
        for (budget, record) in budgets()
            .into_iter()
            .flat_map(|b| [1 << 10, 4 << 10, 64 << 10].map(|r| (b, r)))
        {
            let raw = raw_latency(path);
            // Cover the file again, so that the WAL starts fresh with no frame of an earlier
            // run past the blocks the raw pass wrote.
            raw_bandwidth_now(path);
            let p = run_paced(path, durability, budget, record, 100e6);
            let budget = match budget {
                0 => "no write budget".to_string(),
                b => format!("budget {b} writes/s"),
            };
            println!(
                "{durability:?} {budget}, paced 100 MB/s offered, {:>2} KiB records: {:.1} MB/s done, \
                 p50 {:?}, p99 {:?} (target <= 1 ms), max {:?}; raw 4 KiB O_DSYNC just before: \
                 p50 {:?}, p99 {:?}; {}",
                record >> 10,
                p.mb_per_s,
                p.p50,
                p.p99,
                p.max,
                percentile(&raw, 0.5),
                percentile(&raw, 0.99),
                p.costs()
            );
            if let Some(stalls) = &p.attribution {
                println!("  {stalls}");
            }
            if let Some(disk) = &p.disk {
                println!("  {disk}");
            }
        }
    }
}

fn main() {
    let path = dir().join("bench.wal");
    let _ = std::fs::remove_file(&path);
    // Create and preallocate through the WAL itself, then measure the raw file.
    drop(BlockWal::open(&path, 1, 1, wal_options(Durability::Dsync)).unwrap());

    if ["raw", "closed", "paired", "paced"].iter().any(|p| part(p)) {
        write_parts(&path);
    }
    if part("paced") || part("memory") {
        memory_paced_part();
    }
    if part("replay") {
        replay_part();
    }
    if !part("criterion") {
        let _ = std::fs::remove_file(&path);
        return;
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
