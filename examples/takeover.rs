//! Takeover of a failed broker: two stores ("brokers") share one object store, and the WAL is an
//! object WAL in that same store, so either broker can reach the other's log.
//!
//! Broker A appends to a set of streams with many appends in flight and is killed without
//! warning (its runtime stops mid-flight: no flush, no close, uploads and WAL writes cut off).
//! Broker B then recovers A (fences it in the manifest, seals and replays its WAL, uploads and
//! commits what was not yet in objects, closes its streams), opens every stream with a higher
//! epoch, checks that every record A acknowledged is there byte for byte, and continues the
//! streams.
//!
//! ```text
//! cargo run --release --example takeover -- [--seconds 3] [--streams 8] [--dir data/takeover]
//!     [--url s3://bucket/prefix]
//! ```
//! With `--url` the object store (and the WAL) is that URL (credentials from `AWS_*`
//! variables); otherwise a local directory under `--dir`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt};
use object_store::path::Path;
use object_store::ObjectStore;
use objstream::config::{open_url, ObjectStoreOptions};
use objstream::{Components, NodeId, Offset, RecordBatch, Settings, Store, StreamId, WalSettings};
use parking_lot::Mutex;

struct Args {
    seconds: f64,
    streams: usize,
    dir: PathBuf,
    url: Option<String>,
}

fn parse_args() -> Args {
    let mut a = Args {
        seconds: 3.0,
        streams: 8,
        dir: PathBuf::from("data/takeover"),
        url: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .unwrap_or_else(|| usage(&format!("{flag} needs a value")))
        };
        match flag.as_str() {
            "--seconds" => a.seconds = value().parse().unwrap_or_else(|_| usage("--seconds")),
            "--streams" => a.streams = value().parse().unwrap_or_else(|_| usage("--streams")),
            "--dir" => a.dir = PathBuf::from(value()),
            "--url" => a.url = Some(value()),
            "-h" | "--help" => usage(""),
            other => usage(&format!("unknown flag {other}")),
        }
    }
    if a.streams == 0 || a.seconds <= 0.0 {
        usage("--streams and --seconds must be positive");
    }
    a
}

fn usage(problem: &str) -> ! {
    if !problem.is_empty() {
        eprintln!("error: {problem}");
    }
    eprintln!("usage: takeover [--seconds 3] [--streams 8] [--dir data/takeover] [--url s3://bucket/prefix]");
    std::process::exit(2)
}

fn settings(node: u64) -> Settings {
    Settings {
        node_id: NodeId(node),
        wal: WalSettings::object(None),
        ..Settings::default()
    }
}

/// An event of stream `stream`, number `n`: 1–3 KiB of JSON-ish text, recognisable.
fn event(stream: u64, n: u64) -> Bytes {
    let len = 1024 + ((stream * 7919 + n * 104_729) % 2048) as usize;
    let mut v = format!("{{\"stream\":{stream},\"n\":{n},\"kind\":\"evaluator_score\",\"text\":\"")
        .into_bytes();
    v.resize(len - 2, b'a' + (n % 26) as u8);
    v.extend_from_slice(b"\"}");
    Bytes::from(v)
}

/// What broker A acknowledged: per stream, base offset -> event number.
type Acked = Arc<Mutex<BTreeMap<u64, BTreeMap<u64, u64>>>>;

/// Broker A: appends with many in flight until its runtime is stopped under it.
async fn broker_a(
    objects: Arc<dyn ObjectStore>,
    prefix: Path,
    streams: usize,
    acked: Acked,
    ids: Arc<Mutex<Vec<StreamId>>>,
) {
    let store = Store::open(settings(1), Components::new(objects, prefix))
        .await
        .expect("broker A opens");
    let mut handles = Vec::new();
    for _ in 0..streams {
        let s = store.create_stream().await.expect("create a stream");
        ids.lock().push(s.id());
        handles.push(s);
    }
    let mut producers = FuturesUnordered::new();
    for s in handles {
        let acked = acked.clone();
        producers.push(async move {
            let stream = s.id().0;
            let mut in_flight = FuturesUnordered::new();
            for n in 0u64.. {
                let append = s.append(RecordBatch::new(1, n as i64, event(stream, n)));
                in_flight.push(async move { (n, append.await) });
                if in_flight.len() >= 64 {
                    if let Some((n, Ok(r))) = in_flight.next().await {
                        acked
                            .lock()
                            .entry(stream)
                            .or_default()
                            .insert(r.base_offset.0, n);
                    }
                }
            }
        });
    }
    while producers.next().await.is_some() {}
}

fn main() {
    let args = parse_args();
    let (objects, prefix): (Arc<dyn ObjectStore>, Path) = match &args.url {
        Some(url) => {
            let at = open_url(url, &ObjectStoreOptions::default()).unwrap_or_else(|e| {
                eprintln!("error: {e}");
                std::process::exit(1)
            });
            (at.store, at.prefix)
        }
        None => {
            let dir = args.dir.join("objects");
            let _ = std::fs::remove_dir_all(&args.dir);
            std::fs::create_dir_all(&dir).expect("create the object directory");
            let store = object_store::local::LocalFileSystem::new_with_prefix(&dir)
                .expect("open the object directory");
            (Arc::new(store), Path::from("takeover"))
        }
    };
    let run = format!(
        "run-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0)
    );
    let prefix = prefix.join(run.as_str());

    // Broker A runs on a runtime of its own, so that killing it stops everything it does.
    let acked: Acked = Arc::default();
    let ids: Arc<Mutex<Vec<StreamId>>> = Arc::default();
    let a_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("broker A's runtime");
    a_runtime.spawn(broker_a(
        objects.clone(),
        prefix.clone(),
        args.streams,
        acked.clone(),
        ids.clone(),
    ));
    println!(
        "broker A: appending to {} streams for {:.1} s, 64 appends in flight per stream, object WAL",
        args.streams, args.seconds
    );
    std::thread::sleep(Duration::from_secs_f64(args.seconds));
    a_runtime.shutdown_background();
    let acked = std::mem::take(&mut *acked.lock());
    let ids = ids.lock().clone();
    let acked_batches: usize = acked.values().map(|m| m.len()).sum();
    println!("broker A: killed without warning after {acked_batches} acknowledged appends");

    let rt = tokio::runtime::Runtime::new().expect("broker B's runtime");
    rt.block_on(async move {
        let b = Store::open(settings(2), Components::new(objects, prefix))
            .await
            .expect("broker B opens");
        let started = Instant::now();
        let report = b
            .recover_node_from(NodeId(1), &settings(1).wal)
            .await
            .expect("broker B recovers broker A");
        let recovered = started.elapsed();
        let mut streams = Vec::new();
        for id in &ids {
            streams.push(b.open_stream(*id).await.expect("open a recovered stream"));
        }
        let takeover = started.elapsed();
        println!(
            "broker B: took over in {:.0} ms (recovery {:.0} ms: {} WAL records, {} batches = {:.1} MiB not yet in objects, {} objects written; opening {} streams {:.0} ms)",
            takeover.as_secs_f64() * 1e3,
            recovered.as_secs_f64() * 1e3,
            report.wal_records,
            report.batches_recovered,
            report.bytes_recovered as f64 / (1 << 20) as f64,
            report.objects_written,
            streams.len(),
            (takeover - recovered).as_secs_f64() * 1e3,
        );

        // Every acknowledged record is there, byte for byte, at its offset.
        let mut checked = 0usize;
        for s in &streams {
            let stream = s.id().0;
            let end = s.confirmed_offset().expect("confirmed offset");
            let mut found = BTreeMap::new();
            let mut pos = Offset(0);
            while pos < end {
                for b in s.fetch(pos, end, 4 << 20).await.expect("fetch") {
                    found.insert(b.base_offset.0, b.batch.payload.clone());
                    pos = b.next_offset();
                }
            }
            for (offset, n) in acked.get(&stream).into_iter().flatten() {
                match found.get(offset) {
                    Some(bytes) if *bytes == event(stream, *n) => checked += 1,
                    other => {
                        eprintln!(
                            "LOST: stream {stream} offset {offset} (event {n}) acknowledged by A, found {:?}",
                            other.map(|b| b.len())
                        );
                        std::process::exit(1);
                    }
                }
            }
        }
        println!("broker B: all {checked} acknowledged appends of A verified byte for byte");

        // B continues the streams.
        for s in &streams {
            let next = s.confirmed_offset().expect("confirmed offset");
            let r = s
                .append(RecordBatch::new(1, 0, Bytes::from_static(b"{\"kind\":\"continued by B\"}")))
                .await
                .expect("B appends");
            assert_eq!(r.base_offset, next, "B continues exactly where A stopped");
        }
        println!(
            "broker B: continued all {} streams at their next offsets",
            streams.len()
        );
        for s in streams {
            s.close().await.expect("close");
        }
        b.shutdown().await.expect("shutdown");
    });
}
