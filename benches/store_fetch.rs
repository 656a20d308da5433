//! Fetch throughput of a store: tail reads served from the log cache, and reads of committed
//! data from objects through the block cache (the object store is in memory, so this measures
//! the store's own path: index lookup, block decode, batch assembly).
//!
//! Prints MB/s for each. Run with `cargo bench --bench store_fetch`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use object_store::memory::InMemory;
use objstream::{Components, Offset, RecordBatch, Settings, Store, Stream, WalSettings};

const DATA_BYTES: u64 = 64 << 20;
const RECORD_BYTES: usize = 2048;

async fn fill(dir: &std::path::Path, cache_bytes: u64) -> (Store, Stream, Offset) {
    let settings = Settings {
        wal: WalSettings::file(dir.join("wal")),
        log_cache_bytes: cache_bytes,
        upload_threshold_bytes: 16 << 20,
        ..Settings::default()
    };
    let store = Store::open(
        settings,
        Components::new(Arc::new(InMemory::new()), "bench"),
    )
    .await
    .unwrap();
    let s = store.create_stream().await.unwrap();
    let payload = Bytes::from(
        (0..RECORD_BYTES)
            .map(|i| b"{\"kind\":\"model_response\",\"text\":\"lorem ipsum\"}"[i % 46])
            .collect::<Vec<u8>>(),
    );
    let mut futures = Vec::new();
    for _ in 0..DATA_BYTES / RECORD_BYTES as u64 {
        futures.push(s.append(RecordBatch::new(1, 0, payload.clone())));
        if futures.len() == 256 {
            for f in futures.drain(..) {
                f.await.unwrap();
            }
        }
    }
    for f in futures {
        f.await.unwrap();
    }
    store.flush().await.unwrap();
    let end = s.confirmed_offset().unwrap();
    (store, s, end)
}

async fn read_all(s: &Stream, end: Offset) -> u64 {
    let mut pos = Offset(0);
    let mut bytes = 0;
    while pos < end {
        let got = s.fetch(pos, end, 1 << 20).await.unwrap();
        for b in &got {
            bytes += b.batch.payload.len() as u64;
        }
        pos = got.last().unwrap().next_offset();
    }
    bytes
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut group = c.benchmark_group("fetch");
    group.throughput(Throughput::Bytes(DATA_BYTES));
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(5));

    // Everything stays in the log cache.
    let (store, s, end) = rt.block_on(fill(&dir.path().join("tail"), 1 << 30));
    group.bench_function("log_cache_64MiB", |b| {
        b.to_async(&rt).iter(|| read_all(&s, end))
    });
    let t = Instant::now();
    let bytes = rt.block_on(read_all(&s, end));
    let tail_mbs = bytes as f64 / 1e6 / t.elapsed().as_secs_f64();
    rt.block_on(store.shutdown()).unwrap();

    // A cache too small to hold the data: reads come from objects and the block cache.
    let (store, s, end) = rt.block_on(fill(&dir.path().join("objects"), 4 << 20));
    group.bench_function("objects_64MiB", |b| {
        b.to_async(&rt).iter(|| read_all(&s, end))
    });
    let t = Instant::now();
    let bytes = rt.block_on(read_all(&s, end));
    let object_mbs = bytes as f64 / 1e6 / t.elapsed().as_secs_f64();
    rt.block_on(store.shutdown()).unwrap();
    group.finish();

    println!("\n== fetch summary ==");
    println!("log cache tail fetch:            {tail_mbs:>8.0} MB/s");
    println!(
        "committed data (objects, in-memory store, 64 MiB block cache): {object_mbs:>8.0} MB/s"
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
