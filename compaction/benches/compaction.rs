//! Compaction throughput against the object store, next to the raw GET + PUT throughput of the
//! same bytes measured in the same run, with the peak memory of a pass and the objects and
//! requests before and after.
//!
//! Runs against the S3 test server when `OBJSTREAM_TEST_S3_*` is set (`scripts/s3-server.sh
//! start && eval "$(scripts/s3-server.sh env)"`), else against a local directory (and says so).
//!
//! ```text
//! cargo bench -p objstream-compaction --bench compaction
//! ```
//!
//! The workload: 64 uploads of 512 KiB of events (about 2:1 compressible), each a stream set
//! object holding 8 streams (what a busy node's uploads leave behind), compacted by one
//! pass with settings that merge them all. "Raw" GETs every source object and PUTs the same
//! number of bytes as compaction wrote, in objects of the same sizes, one request at a time as
//! the compactor issues them.

#[path = "../../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use objstream::format::ObjectBuilder;
use objstream::keys::object_path;
use objstream::manifest::{
    Change, ManifestStreamRange, MetaStore, ObjectKind, ObjectMeta, ObjectStoreMetaStore, Outcome,
    WriterToken,
};
use objstream::testing::{FaultyObjectStore, OpKind};
use objstream::{Compression, Epoch, NodeId, ObjectId, Offset, RecordBatch, StreamId};
use objstream_compaction::{Compactor, CompactorComponents, CompactorSettings};

const UPLOADS: usize = 64;
const STREAMS: u64 = 8;
const EVENT_BYTES: usize = 1_000;
const EVENTS_PER_STREAM_PER_UPLOAD: usize = 64;

fn backend() -> (
    &'static str,
    Arc<dyn ObjectStore>,
    Option<tempfile::TempDir>,
) {
    match std::env::var("OBJSTREAM_TEST_S3_ENDPOINT") {
        Ok(_) => {
            let s3 = support::s3_store();
            ("s3 test server", s3.store, None)
        }
        Err(_) => {
            let dir = tempfile::tempdir().expect("temp dir");
            let local = object_store::local::LocalFileSystem::new_with_prefix(dir.path())
                .expect("local store");
            (
                "local directory (OBJSTREAM_TEST_S3_ENDPOINT not set)",
                Arc::new(local),
                Some(dir),
            )
        }
    }
}

fn unique_prefix(name: &str) -> Path {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    Path::from(format!(
        "bench-{name}-{}-{nanos}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ))
}

fn event(stream: u64, n: usize) -> RecordBatch {
    let mut body = format!(
        r#"{{"conversation":{stream},"turn":{n},"role":"assistant","score":{},"text":""#,
        n % 7
    )
    .into_bytes();
    // Half words, half ids: compresses about 2:1, like real event text.
    let words = [
        "the", "model", "answered", "with", "a", "tool", "call", "and", "context",
    ];
    let mut x = (stream << 32 | n as u64) | 1;
    while body.len() < EVENT_BYTES {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        body.extend_from_slice(words[(x % 9) as usize].as_bytes());
        body.extend_from_slice(format!(" {:x} ", x >> 40).as_bytes());
    }
    body.extend_from_slice(b"\"}");
    RecordBatch::new(1, n as i64, body)
}

/// Writes `UPLOADS` stream set objects under `prefix` and commits them, as uploads would.
async fn populate(
    objects: &Arc<dyn ObjectStore>,
    prefix: &Path,
    compression: Compression,
) -> Vec<(ObjectId, u64)> {
    let meta = ObjectStoreMetaStore::open(objects.clone(), prefix.clone(), WriterToken(1), 64)
        .await
        .expect("manifest");
    let node = NodeId(1);
    let Outcome::NodeEpoch(epoch) = meta
        .commit(Change::OpenNode { node })
        .await
        .unwrap()
        .outcome
    else {
        panic!("open node");
    };
    let mut streams = Vec::new();
    for _ in 0..STREAMS {
        let change = Change::CreateStream {
            node,
            node_epoch: epoch,
        };
        let Outcome::StreamCreated(s) = meta.commit(change).await.unwrap().outcome else {
            panic!("create stream");
        };
        streams.push(s);
    }
    let change = Change::AllocateObjectIds {
        node,
        node_epoch: epoch,
        count: UPLOADS as u64,
    };
    let Outcome::ObjectIds(ids) = meta.commit(change).await.unwrap().outcome else {
        panic!("ids");
    };
    let mut ends: BTreeMap<StreamId, Offset> = streams.iter().map(|s| (*s, Offset(0))).collect();
    let mut written = Vec::new();
    let mut n = 0;
    for id in ids {
        let mut builder = ObjectBuilder::new(512 << 10, compression);
        let mut ranges = Vec::new();
        for s in &streams {
            let start = ends[s];
            let mut next = start;
            for _ in 0..EVENTS_PER_STREAM_PER_UPLOAD {
                let e = event(s.get(), n);
                n += 1;
                builder.add(*s, next, &e).unwrap();
                next = next.add(1);
            }
            ends.insert(*s, next);
            ranges.push(ManifestStreamRange {
                stream: *s,
                epoch: Epoch(1),
                start,
                end: next,
            });
        }
        let object = builder.finish();
        let size = object.bytes.len() as u64;
        objects
            .put(
                &object_path(prefix, ObjectId(id)),
                PutPayload::from(object.bytes),
            )
            .await
            .unwrap();
        let meta_object = ObjectMeta {
            id: ObjectId(id),
            size,
            kind: ObjectKind::StreamSet,
            ranges,
        };
        let change = serde_json::from_value(serde_json::json!({
            "commit_objects": { "node": node, "node_epoch": epoch, "objects": [meta_object] }
        }))
        .unwrap();
        meta.commit(change).await.unwrap();
        written.push((ObjectId(id), size));
    }
    written
}

const ZSTD: Compression = Compression::Zstd { level: 1 };

fn settings(compression: Compression) -> CompactorSettings {
    CompactorSettings {
        compression,
        fanout: UPLOADS,
        max_objects_per_plan: UPLOADS,
        min_object_bytes: 64 << 10,
        stream_split_bytes: 1 << 20,
        max_stream_set_object_bytes: 256 << 20,
        bandwidth_bytes_per_sec: 0,
        ..CompactorSettings::default()
    }
}

/// Peak resident memory since the last reset, in bytes (Linux), and a reset.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn peak_rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

fn current_rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// One compaction pass over a fresh population; returns (elapsed, bytes read, bytes written,
/// sizes of the new objects).
async fn compact_once(objects: &Arc<dyn ObjectStore>) -> (Duration, u64, u64, Vec<u64>) {
    let prefix = unique_prefix("compact");
    let sources = populate(objects, &prefix, ZSTD).await;
    let input: u64 = sources.iter().map(|(_, s)| s).sum();
    let compactor = Compactor::open(
        settings(ZSTD),
        CompactorComponents::new(objects.clone(), prefix.clone(), NodeId(1_000)),
    )
    .await
    .unwrap();
    let started = Instant::now();
    let report = compactor.run_pass().await.unwrap();
    let elapsed = started.elapsed();
    assert_eq!(report.objects_removed, UPLOADS, "{report:?}");
    let meta = ObjectStoreMetaStore::open(objects.clone(), prefix, WriterToken(2), 64)
        .await
        .unwrap();
    let sizes = meta
        .state()
        .await
        .unwrap()
        .objects()
        .map(|o| o.size)
        .collect();
    (elapsed, input, report.bytes_written, sizes)
}

/// GETs every source object of a fresh population and PUTs objects of `sizes`, one request at
/// a time.
async fn raw_once(objects: &Arc<dyn ObjectStore>, sizes: &[u64]) -> (Duration, u64) {
    let prefix = unique_prefix("raw");
    let sources = populate(objects, &prefix, ZSTD).await;
    raw_of(objects, &prefix, &sources, sizes).await
}

/// GETs `sources` under `prefix` and PUTs objects of `sizes`, one request at a time.
async fn raw_of(
    objects: &Arc<dyn ObjectStore>,
    prefix: &Path,
    sources: &[(ObjectId, u64)],
    sizes: &[u64],
) -> (Duration, u64) {
    let input: u64 = sources.iter().map(|(_, s)| s).sum();
    let started = Instant::now();
    let mut held = Vec::new();
    for (id, _) in sources {
        let bytes = objects
            .get(&object_path(prefix, *id))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        held.push(bytes);
    }
    let all: Vec<u8> = held.iter().flat_map(|b| b.iter().copied()).collect();
    let mut at = 0usize;
    for (i, size) in sizes.iter().enumerate() {
        let end = (at + *size as usize).min(all.len());
        let body = bytes::Bytes::copy_from_slice(&all[at..end]);
        at = end;
        objects
            .put(
                &prefix.clone().join(format!("out-{i}").as_str()),
                PutPayload::from(body),
            )
            .await
            .unwrap();
    }
    (started.elapsed(), input)
}

/// One measured pass with requests counted and the memory peak, then raw GET+PUT of the same
/// bytes; returns the printed figures and the sizes of the new objects.
async fn figures(objects: &Arc<dyn ObjectStore>, compression: Compression) -> (String, Vec<u64>) {
    let counted = Arc::new(FaultyObjectStore::new(objects.clone()));
    let as_store: Arc<dyn ObjectStore> = counted.clone();
    let prefix = unique_prefix("figures");
    let sources = populate(&as_store, &prefix, compression).await;
    let input: u64 = sources.iter().map(|(_, s)| s).sum();
    let compactor = Compactor::open(
        settings(compression),
        CompactorComponents::new(as_store.clone(), prefix.clone(), NodeId(1_000)),
    )
    .await
    .unwrap();
    counted.reset_calls();
    let rss_before = current_rss();
    reset_peak_rss();
    let started = Instant::now();
    let report = compactor.run_pass().await.unwrap();
    let elapsed = started.elapsed();
    let peak = peak_rss().saturating_sub(rss_before);
    let gets = counted.count(OpKind::Get) + counted.count(OpKind::GetRange);
    let puts = counted.count(OpKind::Put);
    let all = counted.calls().len();
    let meta = ObjectStoreMetaStore::open(as_store.clone(), prefix.clone(), WriterToken(2), 64)
        .await
        .unwrap();
    let after: Vec<u64> = meta
        .state()
        .await
        .unwrap()
        .objects()
        .map(|o| o.size)
        .collect();
    let raw_prefix = unique_prefix("raw");
    let raw_sources = populate(objects, &raw_prefix, compression).await;
    let (raw_elapsed, raw_input) = raw_of(objects, &raw_prefix, &raw_sources, &after).await;
    let compaction_rate = mib_per_sec(input, elapsed);
    let raw_rate = mib_per_sec(raw_input, raw_elapsed);
    let line = format!(
        "  objects: {UPLOADS} before, {} after; {:.1} MiB in, {:.1} MiB out\n  \
         requests of the pass: {all} ({gets} GET, {puts} PUT, the rest manifest and LIST); raw: {} requests\n  \
         throughput: compaction {compaction_rate:.1} MiB/s, raw GET+PUT {raw_rate:.1} MiB/s: {:.0} % of raw\n  \
         peak memory of the pass: {:.1} MiB above the resident set before it",
        after.len(),
        input as f64 / (1 << 20) as f64,
        report.bytes_written as f64 / (1 << 20) as f64,
        UPLOADS + after.len(),
        100.0 * compaction_rate / raw_rate,
        peak as f64 / (1 << 20) as f64
    );
    (line, after)
}

fn mib_per_sec(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / (1 << 20) as f64 / d.as_secs_f64()
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (name, objects, _dir) = backend();
    println!("compaction bench on the {name}");

    let mut sizes = Vec::new();
    for (label, compression) in [("zstd level 1", ZSTD), ("uncompressed", Compression::None)] {
        let (line, after) = rt.block_on(figures(&objects, compression));
        println!("{label}:\n{line}");
        if compression == ZSTD {
            sizes = after;
        }
    }
    let input = rt.block_on(async {
        let prefix = unique_prefix("size");
        populate(&objects, &prefix, ZSTD)
            .await
            .iter()
            .map(|(_, s)| s)
            .sum::<u64>()
    });

    let mut group = c.benchmark_group("compaction");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    group.throughput(criterion::Throughput::Bytes(input));
    group.bench_function("one_pass_of_64_uploads", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let objects = objects.clone();
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += compact_once(&objects).await.0;
                }
                total
            }
        })
    });
    group.bench_function("raw_get_put_of_the_same_bytes", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let objects = objects.clone();
            let sizes = sizes.clone();
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += raw_once(&objects, &sizes).await.0;
                }
                total
            }
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
