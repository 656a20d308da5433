//! An LLM feedback and evaluation event loop on the embedded default: a local directory as the
//! object store and a file WAL, both under `./data/feedback_loop`.
//!
//! Producers append events (prompts, model responses, tool calls, retrieval context, evaluator
//! scores, human feedback; JSON of 1–4 KiB) keyed by conversation onto several streams, with many
//! appends in flight each. An evaluator tails the newest events of every stream. When the run
//! ends, the store is shut down and opened again (WAL replay, recovery), and an "incident window"
//! (an exact offset range of one stream) is replayed from object storage and checked byte for
//! byte against the events as they were generated.
//!
//! With `--metrics ADDR` the store's metrics are served in the Prometheus text format at
//! `http://ADDR/metrics` while the loop runs; with `--metrics-file PATH` they are written there
//! at the end. Either way a few headline metrics are printed at the end.
//!
//! ```text
//! cargo run --release --example feedback_loop -- [--seconds 10] [--rate 4000] [--streams 8]
//!     [--producers 8] [--dir data/feedback_loop] [--keep]
//!     [--metrics 127.0.0.1:9464] [--metrics-file metrics.prom]
//! ```

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use object_store::local::LocalFileSystem;
use object_store::ObjectStore;
use objstream::{Components, Offset, RecordBatch, Settings, Store, Stream, StreamId, WalSettings};
use parking_lot::Mutex;

struct Args {
    seconds: u64,
    rate: u64,
    streams: usize,
    producers: usize,
    dir: PathBuf,
    keep: bool,
    metrics: Option<String>,
    metrics_file: Option<PathBuf>,
}

fn parse_args() -> Args {
    let mut a = Args {
        seconds: 10,
        rate: 4000,
        streams: 8,
        producers: 8,
        dir: PathBuf::from("data/feedback_loop"),
        keep: false,
        metrics: None,
        metrics_file: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .unwrap_or_else(|| usage(&format!("{flag} needs a value")))
        };
        match flag.as_str() {
            "--seconds" => a.seconds = value().parse().unwrap_or_else(|_| usage("--seconds")),
            "--rate" => a.rate = value().parse().unwrap_or_else(|_| usage("--rate")),
            "--streams" => a.streams = value().parse().unwrap_or_else(|_| usage("--streams")),
            "--producers" => a.producers = value().parse().unwrap_or_else(|_| usage("--producers")),
            "--dir" => a.dir = PathBuf::from(value()),
            "--keep" => a.keep = true,
            "--metrics" => a.metrics = Some(value()),
            "--metrics-file" => a.metrics_file = Some(PathBuf::from(value())),
            "-h" | "--help" => usage(""),
            other => usage(&format!("unknown flag {other}")),
        }
    }
    if a.streams == 0 || a.producers == 0 || a.rate == 0 {
        usage("--streams, --producers and --rate must be at least 1");
    }
    a
}

fn usage(problem: &str) -> ! {
    if !problem.is_empty() {
        eprintln!("error: {problem}");
    }
    eprintln!(
        "usage: feedback_loop [--seconds N] [--rate EVENTS_PER_SEC] [--streams N] [--producers N] [--dir PATH] [--keep] [--metrics ADDR] [--metrics-file PATH]"
    );
    std::process::exit(2)
}

/// A small deterministic generator, so every event can be regenerated for the replay check.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }
}

const WORDS: &[&str] = &[
    "the",
    "model",
    "answer",
    "retrieval",
    "context",
    "customer",
    "refund",
    "policy",
    "latency",
    "token",
    "embedding",
    "summary",
    "invoice",
    "account",
    "shipping",
    "error",
    "timeout",
    "evaluation",
    "grounded",
    "citation",
    "hallucination",
    "tool",
    "search",
    "database",
    "query",
    "user",
    "assistant",
    "system",
    "prompt",
    "feedback",
    "score",
    "helpful",
    "harmless",
    "order",
];
const KINDS: &[&str] = &[
    "prompt",
    "model_response",
    "tool_call",
    "retrieval_context",
    "evaluator_score",
    "human_feedback",
];
const MODELS: &[&str] = &["gpt-large-2026-06", "claude-class-m", "local-llama-70b"];

/// Event `n` of `producer`: the same bytes every time it is generated.
fn event(producer: usize, n: u64) -> (u64, Vec<u8>) {
    let mut rng = Rng((producer as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ (n + 1).wrapping_mul(0xD6E8_FEB8_6659_FD93));
    for _ in 0..4 {
        rng.next();
    }
    let conversation = rng.next() % 5000;
    let kind = rng.pick(KINDS);
    let target = 1024 + (rng.next() % 3072) as usize;
    let mut text = String::with_capacity(target);
    while text.len() < target.saturating_sub(260) {
        text.push_str(rng.pick(WORDS));
        text.push(' ');
    }
    let detail = match kind {
        "evaluator_score" => format!(
            r#""evaluator":"groundedness-v3","score":{:.3},"passed":{}"#,
            (rng.next() % 1000) as f64 / 1000.0,
            rng.next() % 4 != 0
        ),
        "human_feedback" => format!(
            r#""rating":{},"reviewer":"r-{}""#,
            rng.next() % 5 + 1,
            rng.next() % 90
        ),
        "tool_call" => format!(
            r#""tool":"{}","duration_ms":{}"#,
            rng.pick(&["search", "sql", "http_get"]),
            rng.next() % 900
        ),
        _ => format!(
            r#""model":"{}","tokens":{}"#,
            rng.pick(MODELS),
            rng.next() % 4000
        ),
    };
    let json = format!(
        r#"{{"kind":"{kind}","conversation":"conv-{conversation:05}","tenant":"tenant-{}","producer":{producer},"seq":{n},{detail},"text":"{}"}}"#,
        conversation % 17,
        text.trim_end()
    );
    (conversation, json.into_bytes())
}

/// Where each appended batch came from, per stream: (base offset, producer, event number).
type Ledger = Mutex<HashMap<StreamId, Vec<(Offset, usize, u64)>>>;

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn open_store(dir: &std::path::Path) -> objstream::Result<Store> {
    let objects_dir = dir.join("objects");
    std::fs::create_dir_all(&objects_dir).expect("create the object directory");
    let objects: Arc<dyn ObjectStore> =
        Arc::new(LocalFileSystem::new_with_prefix(&objects_dir).expect("local object store"));
    let settings = Settings {
        wal: WalSettings::file(dir.join("wal")),
        ..Settings::default()
    };
    Store::open(settings, Components::new(objects, "feedback")).await
}

/// Installs the Prometheus recorder (before the store opens: the store registers its metrics
/// when it opens), keeps its histograms rolling, and serves scrapes at `addr` if given.
async fn install_metrics(
    addr: Option<&str>,
) -> Result<PrometheusHandle, Box<dyn std::error::Error>> {
    let handle = PrometheusBuilder::new().install_recorder()?;
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });
    if let Some(addr) = addr {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        println!(
            "metrics at http://{}/metrics (Prometheus text format)",
            listener.local_addr()?
        );
        let handle = handle.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let handle = handle.clone();
                tokio::spawn(async move {
                    if let Err(e) = answer_scrape(socket, &handle).await {
                        eprintln!("metrics: {e}");
                    }
                });
            }
        });
    }
    Ok(handle)
}

/// Answers one HTTP request on `socket` with the rendered metrics (any path, one response).
async fn answer_scrape(
    mut socket: tokio::net::TcpStream,
    handle: &PrometheusHandle,
) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    // Read the request head (bounded); its contents do not matter.
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 16 << 10 {
        let n = socket.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        request.extend_from_slice(&buf[..n]);
    }
    let body = handle.render();
    let head = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    socket.write_all(head.as_bytes()).await?;
    socket.write_all(body.as_bytes()).await?;
    socket.shutdown().await
}

/// Prints the headline metrics from the rendered text: append latency quantiles, object-store
/// requests by outcome, upload and commit latency, recoveries, fencing, cache hits; series at
/// zero are left out.
fn print_headline(rendered: &str) {
    const HEADLINE: &[&str] = &[
        objstream::metrics::APPEND_DURATION,
        objstream::metrics::UPLOAD_DURATION,
        objstream::metrics::COMMIT_DURATION,
        objstream::metrics::OBJECT_STORE_REQUESTS,
        objstream::metrics::OBJECTS_UPLOADED,
        objstream::metrics::RECOVERIES,
        objstream::metrics::FENCED,
        objstream::metrics::READ_CACHE_HITS,
    ];
    println!("metrics (headline)");
    // Series still at zero (most operation × outcome pairs) are left out.
    let nonzero = |l: &&str| !l.starts_with('#') && !l.ends_with(" 0");
    for line in rendered.lines().filter(nonzero) {
        let shown = HEADLINE.iter().any(|name| {
            line.strip_prefix(name).is_some_and(|rest| {
                // Quantiles 0.5 and 0.99 of latencies; every series of the counters.
                let latency = name.ends_with("_seconds");
                rest.starts_with(['{', ' '])
                    && (!latency
                        || rest.contains("quantile=\"0.5\"")
                        || rest.contains("quantile=\"0.99\""))
            })
        });
        if shown {
            println!("  {line}");
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args();
    if !args.keep && args.dir.exists() {
        std::fs::remove_dir_all(&args.dir)?;
    }
    let metrics = if args.metrics.is_some() || args.metrics_file.is_some() {
        Some(install_metrics(args.metrics.as_deref()).await?)
    } else {
        None
    };
    println!(
        "feedback_loop: {} producers → {} streams at {} events/s for {} s, data in {}",
        args.producers,
        args.streams,
        args.rate,
        args.seconds,
        args.dir.display()
    );
    let started = Instant::now();
    let store = open_store(&args.dir).await?;
    let mut streams: Vec<Stream> = Vec::new();
    for _ in 0..args.streams {
        streams.push(store.create_stream().await?);
    }
    let streams = Arc::new(streams);
    let ledger: Arc<Ledger> = Arc::new(Mutex::new(HashMap::new()));
    let latencies = Arc::new(Mutex::new(Vec::<u64>::new()));
    let appended_bytes = Arc::new(AtomicU64::new(0));
    let appended_records = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let clock = Instant::now();

    // The evaluator: tails every stream and measures how old each event is when it sees it.
    let lags = Arc::new(Mutex::new(Vec::<u64>::new()));
    let evaluator = {
        let (streams, lags, stop) = (streams.clone(), lags.clone(), stop.clone());
        tokio::spawn(async move {
            let mut next = vec![Offset(0); streams.len()];
            let mut seen = 0u64;
            loop {
                let done = stop.load(Ordering::Relaxed);
                for (i, s) in streams.iter().enumerate() {
                    let confirmed = s.confirmed_offset()?;
                    if confirmed <= next[i] {
                        continue;
                    }
                    let batches = s.fetch(next[i], confirmed, 1 << 20).await?;
                    let now = clock.elapsed().as_micros() as i64;
                    let mut l = lags.lock();
                    for b in &batches {
                        l.push((now - b.batch.base_timestamp).max(0) as u64);
                        seen += u64::from(b.batch.count);
                    }
                    next[i] = batches.last().map_or(next[i], |b| b.next_offset());
                }
                if done {
                    return Ok::<u64, objstream::Error>(seen);
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };

    // Progress, once a second.
    let progress = {
        let (bytes, records, stop) = (
            appended_bytes.clone(),
            appended_records.clone(),
            stop.clone(),
        );
        tokio::spawn(async move {
            let mut last = 0;
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let b = bytes.load(Ordering::Relaxed);
                println!(
                    "  {:>4.1} s  {:>8} events  {:>8.1} MB  {:>6.1} MB/s",
                    clock.elapsed().as_secs_f64(),
                    records.load(Ordering::Relaxed),
                    b as f64 / 1e6,
                    (b - last) as f64 / 1e6
                );
                last = b;
            }
        })
    };

    let deadline = clock + Duration::from_secs(args.seconds);
    let per_producer = (args.rate as f64 / args.producers as f64).max(1.0);
    let mut producers = Vec::new();
    for p in 0..args.producers {
        let (streams, ledger, latencies, bytes, records) = (
            streams.clone(),
            ledger.clone(),
            latencies.clone(),
            appended_bytes.clone(),
            appended_records.clone(),
        );
        producers.push(tokio::spawn(async move {
            let mut in_flight = FuturesUnordered::new();
            let mut n = 0u64;
            let interval = Duration::from_secs_f64(1.0 / per_producer);
            let begin = Instant::now();
            while Instant::now() < deadline {
                // Until the next event is due, settle acknowledgements as they arrive, so the
                // measured latency is the store's and not this loop's.
                let due = tokio::time::Instant::from_std(begin + interval.mul_f64(n as f64));
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep_until(due) => break,
                        Some(done) = in_flight.next(), if !in_flight.is_empty() => {
                            settle(Some(done), p, &streams, &ledger, &latencies, &bytes, &records)?;
                        }
                    }
                }
                let (conversation, payload) = event(p, n);
                let stream_idx = (conversation % streams.len() as u64) as usize;
                let len = payload.len() as u64;
                let sent = Instant::now();
                let ts = clock.elapsed().as_micros() as i64;
                let fut = streams[stream_idx].append(RecordBatch::new(1, ts, payload));
                let item = n;
                in_flight.push(async move {
                    let r = fut.await;
                    (r, sent.elapsed(), stream_idx, item, len)
                });
                n += 1;
                while in_flight.len() >= 256 {
                    settle(
                        in_flight.next().await,
                        p,
                        &streams,
                        &ledger,
                        &latencies,
                        &bytes,
                        &records,
                    )?;
                }
            }
            while let Some(done) = in_flight.next().await {
                settle(
                    Some(done),
                    p,
                    &streams,
                    &ledger,
                    &latencies,
                    &bytes,
                    &records,
                )?;
            }
            Ok::<(), objstream::Error>(())
        }));
    }
    for p in producers {
        p.await??;
    }
    let produce_secs = clock.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let tailed = evaluator.await??;
    progress.await?;

    // Restart: shut down, open again (WAL replay and recovery), and replay an incident window.
    let ids: Vec<StreamId> = streams.iter().map(|s| s.id()).collect();
    drop(streams);
    store.flush().await?;
    store.shutdown().await?;
    drop(store);
    let reopen_started = Instant::now();
    let store = open_store(&args.dir).await?;
    let reopen = reopen_started.elapsed();
    let ledger = std::mem::take(&mut *ledger.lock());
    let (incident_stream, entries) = ledger
        .iter()
        .max_by_key(|(_, v)| v.len())
        .map(|(s, v)| (*s, v.clone()))
        .ok_or("no events were appended")?;
    let mut entries = entries;
    entries.sort_by_key(|e| e.0);
    let from = entries.len() / 4;
    let to = (entries.len() * 3 / 4).max(from + 1).min(entries.len());
    let window = &entries[from..to];
    let (start, end) = (window[0].0, window[window.len() - 1].0.add(1));
    let stream = store.open_stream(incident_stream).await?;
    let replay_started = Instant::now();
    let mut pos = start;
    let mut replayed_bytes = 0u64;
    let mut expected = window.iter();
    while pos < end {
        let batches = stream.fetch(pos, end, 4 << 20).await?;
        for b in batches
            .iter()
            .filter(|b| b.base_offset >= start && b.base_offset < end)
        {
            let (offset, producer, n) = expected
                .next()
                .ok_or("replay returned more than was appended")?;
            let (_, want) = event(*producer, *n);
            if b.base_offset != *offset || b.batch.payload[..] != want[..] {
                return Err(format!(
                    "replay mismatch at {incident_stream} offset {}",
                    b.base_offset
                )
                .into());
            }
            replayed_bytes += b.batch.payload.len() as u64;
        }
        pos = batches.last().map_or(end, |b| b.next_offset());
    }
    if expected.next().is_some() {
        return Err("replay returned fewer events than were appended".into());
    }
    let replay = replay_started.elapsed();
    stream.close().await?;
    // Publishes the read path's numbers (cache hits per tier, read-ahead) as metrics too.
    let _ = store.read_stats();
    store.shutdown().await?;

    let objects_dir = args.dir.join("objects");
    let (mut object_count, mut object_bytes) = (0u64, 0u64);
    for entry in walk(&objects_dir.join("feedback").join("objects")) {
        object_count += 1;
        object_bytes += entry;
    }
    let mut lat = std::mem::take(&mut *latencies.lock());
    lat.sort_unstable();
    let mut lag = std::mem::take(&mut *lags.lock());
    lag.sort_unstable();
    let bytes = appended_bytes.load(Ordering::Relaxed);
    println!("summary");
    println!(
        "  appended        {} events, {:.1} MB in {:.1} s ({:.1} MB/s) over {} streams",
        appended_records.load(Ordering::Relaxed),
        bytes as f64 / 1e6,
        produce_secs,
        bytes as f64 / 1e6 / produce_secs,
        ids.len()
    );
    println!(
        "  append latency  p50 {:.2} ms  p99 {:.2} ms",
        percentile(&lat, 0.5) as f64 / 1e3,
        percentile(&lat, 0.99) as f64 / 1e3
    );
    println!(
        "  tail-read lag   p50 {:.2} ms  p99 {:.2} ms  ({} events tailed)",
        percentile(&lag, 0.5) as f64 / 1e3,
        percentile(&lag, 0.99) as f64 / 1e3,
        tailed
    );
    println!(
        "  restart         {:.0} ms to reopen the store",
        reopen.as_secs_f64() * 1e3
    );
    println!(
        "  incident replay {incident_stream} offsets [{start}, {end}): {} events, {:.1} MB at {:.0} MB/s, byte for byte identical",
        window.len(),
        replayed_bytes as f64 / 1e6,
        replayed_bytes as f64 / 1e6 / replay.as_secs_f64().max(1e-9)
    );
    println!(
        "  object storage  {object_count} objects, {:.1} MB ({:.2}x smaller than appended)",
        object_bytes as f64 / 1e6,
        bytes as f64 / object_bytes.max(1) as f64
    );
    println!("  total           {:.1} s", started.elapsed().as_secs_f64());
    if let Some(handle) = metrics {
        handle.run_upkeep();
        let rendered = handle.render();
        print_headline(&rendered);
        if let Some(path) = &args.metrics_file {
            std::fs::write(path, &rendered)?;
            println!("  all metrics written to {}", path.display());
        }
    }
    Ok(())
}

#[allow(clippy::type_complexity)]
fn settle(
    done: Option<(
        objstream::Result<objstream::AppendResult>,
        Duration,
        usize,
        u64,
        u64,
    )>,
    producer: usize,
    streams: &[Stream],
    ledger: &Ledger,
    latencies: &Mutex<Vec<u64>>,
    bytes: &AtomicU64,
    records: &AtomicU64,
) -> objstream::Result<()> {
    let Some((result, latency, stream_idx, n, len)) = done else {
        return Ok(());
    };
    let acked = result?;
    latencies.lock().push(latency.as_micros() as u64);
    ledger
        .lock()
        .entry(streams[stream_idx].id())
        .or_default()
        .push((acked.base_offset, producer, n));
    bytes.fetch_add(len, Ordering::Relaxed);
    records.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

/// Sizes of every file under `dir`.
fn walk(dir: &std::path::Path) -> Vec<u64> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let path = e.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else if let Ok(m) = e.metadata() {
            out.push(m.len());
        }
    }
    out
}
