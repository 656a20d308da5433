//! G7: memory stays within the configured bounds during a long ingest with slow readers.
//!
//! Its own test binary (one test), so that nothing else runs in the process whose resident set
//! it measures: `/proc/self/status` `VmRSS`, sampled every 10 ms by a thread, must stay under
//! `Settings::memory_bound_bytes()` plus `MEMORY_OVERHEAD_BYTES` while four writers push 384 MiB
//! of fresh payloads through a 32 MiB log cache (so appends must wait for uploads), a slow tail
//! reader follows each stream, and a slow reader replays the first stream from its start
//! through a block cache smaller than the data.
//!
//! glibc's malloc raises its mmap threshold each time a large mmapped block is freed (here, the
//! encoded objects of uploads), after which freed payload buffers stay in its heap arenas
//! instead of going back to the system: in this test that alone added up to about 100 MiB of
//! resident memory that no one uses. The test fixes the threshold, as a deployment should
//! (`MALLOC_MMAP_THRESHOLD_=65536`, or an allocator such as jemalloc), so that it measures the
//! store rather than the allocator's slack.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{local_objects, Node};
use objstream::settings::MEMORY_OVERHEAD_BYTES;
use objstream::{Compression, Offset, RecordBatch, Settings, Store, Stream};

const WRITERS: u64 = 4;
const BATCH: usize = 128 << 10;
const TOTAL: u64 = 384 << 20;
/// Appends each writer keeps in flight: the caller's own memory, outside the store's bounds.
const IN_FLIGHT: usize = 8;

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("a VmRSS line");
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("VmRSS in kB");
    kib << 10
}

/// A fresh allocation per batch, so that cached batches never share memory.
fn fresh_payload(stream: u64, n: u64) -> Bytes {
    let mut v = vec![(stream * 31 + n) as u8; BATCH];
    v[..16].copy_from_slice(&[stream.to_le_bytes(), n.to_le_bytes()].concat());
    Bytes::from(v)
}

async fn write(stream: Stream, index: u64, batches: u64) {
    let mut pending = std::collections::VecDeque::new();
    for n in 0..batches {
        pending.push_back(stream.append(RecordBatch::new(1, 0, fresh_payload(index, n))));
        if pending.len() == IN_FLIGHT {
            pending.pop_front().unwrap().await.unwrap();
        }
    }
    for a in pending {
        a.await.unwrap();
    }
}

/// Follows `stream`, slowly: a small fetch every 20 ms.
async fn slow_tail(stream: Stream, index: u64, stop: Arc<AtomicBool>) {
    let mut pos = Offset(0);
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let confirmed = stream.confirmed_offset().unwrap();
        if confirmed == pos {
            continue;
        }
        for b in stream.fetch(pos, confirmed, 256 << 10).await.unwrap() {
            assert_eq!(b.batch.payload, fresh_payload(index, b.base_offset.get()));
            pos = b.next_offset();
        }
    }
}

/// Replays `stream` from its start, 1 MiB every 10 ms, as far as it is written.
async fn slow_replay(stream: Stream, stop: Arc<AtomicBool>) -> u64 {
    let mut pos = Offset(0);
    let mut bytes = 0;
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let confirmed = stream.confirmed_offset().unwrap();
        if confirmed == pos {
            continue;
        }
        for b in stream.fetch(pos, confirmed, 1 << 20).await.unwrap() {
            assert_eq!(b.batch.payload, fresh_payload(0, b.base_offset.get()));
            bytes += b.batch.payload.len() as u64;
            pos = b.next_offset();
        }
    }
    bytes
}

#[test]
fn memory_stays_within_the_configured_bounds_during_a_long_ingest() {
    // SAFETY: mallopt only sets an allocator parameter; no allocation is in flight on another
    // thread yet.
    let fixed = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 64 << 10) };
    assert_eq!(fixed, 1, "mallopt(M_MMAP_THRESHOLD) failed");
    let peak = Arc::new(AtomicU64::new(0));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (peak, sampling) = (peak.clone(), sampling.clone());
        std::thread::spawn(move || {
            while sampling.load(Ordering::Relaxed) {
                peak.fetch_max(rss_bytes(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let baseline = rss_bytes();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let node = Node::new(dir.path(), 1);
    let settings = Settings {
        compression: Compression::None,
        block_bytes: 512 << 10,
        max_batch_bytes: 1 << 20,
        upload_threshold_bytes: 8 << 20,
        log_cache_bytes: 32 << 20,
        block_cache_bytes: 16 << 20,
        index_cache_bytes: 1 << 20,
        read_ahead_bytes: 4 << 20,
        ..node.settings.clone()
    };
    let bound = settings.memory_bound_bytes();
    let replayed = runtime.block_on(async {
        let store = Store::open(
            settings,
            objstream::Components::new(local_objects(dir.path()), "memory"),
        )
        .await
        .unwrap();
        let mut streams = Vec::new();
        for _ in 0..WRITERS {
            streams.push(store.create_stream().await.unwrap());
        }
        let stop = Arc::new(AtomicBool::new(false));
        let mut readers = Vec::new();
        for (i, s) in streams.iter().enumerate() {
            readers.push(tokio::spawn(slow_tail(s.clone(), i as u64, stop.clone())));
        }
        let replay = tokio::spawn(slow_replay(streams[0].clone(), stop.clone()));
        let per_writer = TOTAL / WRITERS / BATCH as u64;
        let writers: Vec<_> = streams
            .iter()
            .enumerate()
            .map(|(i, s)| tokio::spawn(write(s.clone(), i as u64, per_writer)))
            .collect();
        for w in writers {
            w.await.unwrap();
        }
        stop.store(true, Ordering::Relaxed);
        for r in readers {
            r.await.unwrap();
        }
        let replayed = replay.await.unwrap();
        let stats = store.read_stats();
        store.shutdown().await.unwrap();
        println!("{stats:#?}");
        replayed
    });
    sampling.store(false, Ordering::Relaxed);
    sampler.join().unwrap();
    let peak = peak.load(Ordering::Relaxed);
    println!(
        "ingested {} MiB; replayed {} MiB; RSS: {} MiB before the store, peak {} MiB; \
         bound {} MiB + overhead {} MiB",
        TOTAL >> 20,
        replayed >> 20,
        baseline >> 20,
        peak >> 20,
        bound >> 20,
        MEMORY_OVERHEAD_BYTES >> 20,
    );
    assert!(
        replayed > 16 << 20,
        "the replay read past the block cache's size"
    );
    assert!(
        peak <= bound + MEMORY_OVERHEAD_BYTES,
        "peak RSS {} MiB is over the bound {} MiB + {} MiB",
        peak >> 20,
        bound >> 20,
        MEMORY_OVERHEAD_BYTES >> 20
    );
}
