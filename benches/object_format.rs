//! Encode and decode throughput of the object format on a 32 MiB object of JSON-like events.
//!
//! The data imitates the feedback-loop workload: events of 1–4 KiB (prompts, responses, scores)
//! from a few tenants, four events per batch, eight streams, cut into 512 KiB blocks. Encoding
//! builds the whole object; decoding reads the tail, the index and every block, as a reader that
//! replays the object would. Throughput is payload bytes per second (criterion's `thrpt`), with no
//! compression and with zstd level 1.
//!
//! Run with `cargo bench --bench object_format`; it takes well under a minute.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use objstream::format::{decode_block, decode_tail, tail_range, ObjectBuilder, TailDecode};
use objstream::{Compression, ObjectId, Offset, RecordBatch, StreamId};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

const OBJECT_BYTES: usize = 32 << 20;
const STREAMS: u64 = 8;
const EVENTS_PER_BATCH: u32 = 4;
const BLOCK_BYTES: usize = 512 << 10;

const WORDS: &[&str] = &[
    "the",
    "model",
    "answer",
    "user",
    "asked",
    "about",
    "refund",
    "policy",
    "order",
    "shipping",
    "latency",
    "retrieval",
    "context",
    "document",
    "score",
    "helpful",
    "harmless",
    "tool",
    "call",
    "search",
    "result",
    "summary",
    "customer",
    "account",
    "error",
    "timeout",
    "retry",
    "because",
    "please",
    "thanks",
    "invoice",
    "billing",
    "update",
    "version",
    "feature",
    "request",
    "is",
    "was",
    "not",
    "and",
    "with",
    "for",
    "from",
    "this",
    "that",
    "evaluation",
    "feedback",
];
const ROLES: &[&str] = &["user", "assistant", "tool", "evaluator"];
const MODELS: &[&str] = &["gpt-large-2025-06", "small-instruct-v3", "local-8b-q4"];

/// One JSON-like event of 1–4 KiB.
fn event(rng: &mut SmallRng, seq: u64, out: &mut String) {
    let target = rng.random_range(1024..4096);
    let start = out.len();
    out.push_str(&format!(
        "{{\"conversation_id\":\"c-{:08}\",\"tenant\":\"tenant-{}\",\"seq\":{seq},\"role\":\"{}\",\
         \"model\":\"{}\",\"latency_ms\":{},\"scores\":{{\"helpful\":{:.3},\"grounded\":{:.3}}},\"text\":\"",
        rng.random_range(0..50_000),
        rng.random_range(0..20),
        ROLES[rng.random_range(0..ROLES.len())],
        MODELS[rng.random_range(0..MODELS.len())],
        rng.random_range(20..9_000),
        rng.random::<f64>(),
        rng.random::<f64>(),
    ));
    while out.len() - start < target - 2 {
        out.push_str(WORDS[rng.random_range(0..WORDS.len())]);
        out.push(' ');
    }
    out.push_str("\"}");
}

/// About 32 MiB of batches, in (stream, offset) order.
fn workload() -> (Vec<(StreamId, Offset, RecordBatch)>, u64) {
    let mut rng = SmallRng::seed_from_u64(7);
    let mut batches = Vec::new();
    let mut total = 0u64;
    let per_stream = OBJECT_BYTES as u64 / STREAMS;
    for s in 0..STREAMS {
        let (mut offset, mut bytes) = (0u64, 0u64);
        while bytes < per_stream {
            let mut payload = String::new();
            for i in 0..EVENTS_PER_BATCH {
                event(&mut rng, offset + u64::from(i), &mut payload);
                payload.push('\n');
            }
            bytes += payload.len() as u64;
            let batch =
                RecordBatch::new(EVENTS_PER_BATCH, 1_700_000_000_000 + offset as i64, payload);
            batches.push((StreamId(s + 1), Offset(offset), batch));
            offset += u64::from(EVENTS_PER_BATCH);
        }
        total += bytes;
    }
    (batches, total)
}

fn encode(batches: &[(StreamId, Offset, RecordBatch)], compression: Compression) -> bytes::Bytes {
    let mut builder = ObjectBuilder::new(BLOCK_BYTES, compression);
    for (stream, offset, batch) in batches {
        builder
            .add(*stream, *offset, batch)
            .expect("batches are in order");
    }
    builder.finish().bytes
}

/// Reads every batch back; returns the payload bytes seen.
fn decode(object: &bytes::Bytes) -> u64 {
    let id = ObjectId(1);
    let size = object.len() as u64;
    let tail = tail_range(size);
    let tail = &object[tail.start as usize..];
    let index = match decode_tail(id, size, tail).expect("valid object") {
        TailDecode::Complete { index, .. } => index,
        TailDecode::NeedIndex { footer, range } => footer
            .decode_index(id, &object[range.start as usize..range.end as usize])
            .expect("valid index"),
    };
    let mut payload = 0;
    for entry in index.entries() {
        let r = entry.byte_range();
        let block = object.slice(r.start as usize..r.end as usize);
        for b in decode_block(id, entry, block).expect("valid block") {
            payload += b.batch.payload.len() as u64;
        }
    }
    payload
}

fn object_format(c: &mut Criterion) {
    let (batches, payload) = workload();
    let cases = [
        ("none", Compression::None),
        ("zstd1", Compression::Zstd { level: 1 }),
    ];
    for (name, compression) in cases {
        let object = encode(&batches, compression);
        println!(
            "object_format/{name}: {} batches, {:.1} MiB payload, object {:.1} MiB (ratio {:.2})",
            batches.len(),
            payload as f64 / (1 << 20) as f64,
            object.len() as f64 / (1 << 20) as f64,
            payload as f64 / object.len() as f64,
        );
    }

    let mut group = c.benchmark_group("object_format");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .throughput(Throughput::Bytes(payload));
    for (name, compression) in cases {
        group.bench_with_input(BenchmarkId::new("encode", name), &compression, |b, &c| {
            b.iter(|| black_box(encode(&batches, c)))
        });
        let object = encode(&batches, compression);
        group.bench_with_input(BenchmarkId::new("decode", name), &object, |b, object| {
            b.iter(|| {
                let seen = decode(object);
                assert_eq!(seen, payload);
                black_box(seen)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, object_format);
criterion_main!(benches);
