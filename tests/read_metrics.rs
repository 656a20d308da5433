//! The read path's own metrics move with what it does: a cold scan times its index, block and
//! whole-object GETs and opens read-ahead windows; a scan held back by the bandwidth limiter
//! shows as waiting reads while it waits, and as none once it is done.
//!
//! Each test installs its own `DebuggingRecorder` as the thread's local recorder and runs the
//! stores on a current-thread runtime inside it, so tests running side by side never see each
//! other's numbers. The names are spelled out: they are what operators' dashboards use.

mod common;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use common::Node;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use object_store::path::Path;
use object_store::ObjectStore;
use objstream::{Compression, Offset, RecordBatch, Settings, StreamId};

const GET_DURATION: &str = "objstream_read_get_duration_seconds";
const WINDOW: &str = "objstream_read_ahead_window_bytes";
const WAITERS: &str = "objstream_read_limiter_waiters";

/// Runs `test` (given a snapshotter of the recorder) on a current-thread runtime with a fresh
/// local recorder.
fn with_recorder<F, Fut>(test: F)
where
    F: FnOnce(Snapshotter) -> Fut,
    Fut: Future<Output = ()>,
{
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    ::metrics::with_local_recorder(&recorder, || runtime.block_on(test(snapshotter)));
}

/// What the recorder saw, gathered over several snapshots (a snapshot drains histograms).
#[derive(Default)]
struct Seen {
    /// GET latency samples, by `what`.
    gets: HashMap<String, Vec<f64>>,
    /// Each gauge's value in the latest snapshot.
    gauges: HashMap<String, f64>,
}

impl Seen {
    fn take(&mut self, snapshotter: &Snapshotter) {
        for (key, _, _, value) in snapshotter.snapshot().into_vec() {
            let key = key.key();
            match value {
                DebugValue::Histogram(xs) if key.name() == GET_DURATION => {
                    let what = key
                        .labels()
                        .find(|l| l.key() == "what")
                        .map(|l| l.value().to_string())
                        .unwrap_or_default();
                    let samples = self.gets.entry(what).or_default();
                    samples.extend(xs.iter().map(|x| x.0));
                }
                DebugValue::Gauge(g) => {
                    self.gauges.insert(key.name().to_string(), g.0);
                }
                _ => {}
            }
        }
    }

    fn gets(&self, what: &str) -> &[f64] {
        self.gets.get(what).map_or(&[], Vec::as_slice)
    }

    fn gauge(&self, name: &str) -> f64 {
        self.gauges.get(name).copied().unwrap_or(f64::NAN)
    }
}

fn settings(node: &Node) -> Settings {
    Settings {
        compression: Compression::None,
        block_bytes: 16 << 10,
        upload_threshold_bytes: 256 << 10,
        log_cache_bytes: 1 << 20,
        block_cache_bytes: 16 << 20,
        read_ahead_bytes: 4 << 20,
        ..node.settings.clone()
    }
}

/// Writes `bytes` of 4 KiB batches to a new stream by node 1 and hands the stream over; returns
/// it and its end.
async fn old_stream(
    dir: &std::path::Path,
    objects: &Arc<dyn ObjectStore>,
    prefix: &Path,
    bytes: u64,
) -> (StreamId, Offset) {
    let node = Node::new(dir, 1);
    let node = Node {
        settings: settings(&node),
        ..node
    };
    let store = node.open(objects, prefix).await;
    let stream = store.create_stream().await.unwrap();
    let mut appends = Vec::new();
    for n in 0..bytes / 4096 {
        appends.push(stream.append(RecordBatch::new(1, 0, vec![(n % 251) as u8; 4096])));
    }
    for a in appends {
        a.await.unwrap();
    }
    let end = stream.confirmed_offset().unwrap();
    stream.close().await.unwrap();
    store.shutdown().await.unwrap();
    (stream.id(), end)
}

#[test]
fn a_cold_scan_times_its_gets_by_kind_and_opens_a_read_ahead_window() {
    let dir = tempfile::tempdir().unwrap();
    with_recorder(|snapshotter| async move {
        let objects: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let prefix = Path::from("read-metrics");
        let (id, end) = old_stream(dir.path(), &objects, &prefix, 8 << 20).await;

        let node = Node::new(dir.path(), 2);
        let node = Node {
            settings: settings(&node),
            ..node
        };
        let store = node.open(&objects, &prefix).await;
        let stream = store.open_stream(id).await.unwrap();
        let mut seen = Seen::default();
        let mut pos = Offset(0);
        let mut window_seen = 0.0f64;
        while pos < end {
            let got = stream.fetch(pos, end, 256 << 10).await.unwrap();
            pos = got.last().unwrap().next_offset();
            seen.take(&snapshotter);
            window_seen = window_seen.max(seen.gauge(WINDOW));
        }
        let stats = store.read_stats();
        seen.take(&snapshotter);
        let (index, block, object) = (seen.gets("index"), seen.gets("block"), seen.gets("object"));
        assert!(!index.is_empty(), "the first object's index was read");
        assert!(
            !block.is_empty() || !object.is_empty(),
            "blocks were read: {} block GETs, {} whole-object GETs",
            block.len(),
            object.len()
        );
        assert_eq!(
            (index.len() + block.len() + object.len()) as u64,
            stats.object_gets,
            "one latency per GET really sent"
        );
        assert!(
            index
                .iter()
                .chain(block)
                .chain(object)
                .all(|s| (0.0..60.0).contains(s)),
            "latencies are seconds"
        );
        assert!(
            window_seen >= (256 << 10) as f64,
            "a sequential cold reader has a read-ahead window: {window_seen}"
        );
        stream.close().await.unwrap();
        store.shutdown().await.unwrap();
    });
}

#[test]
fn a_scan_held_back_by_the_limiter_shows_as_waiting_and_then_not() {
    let dir = tempfile::tempdir().unwrap();
    with_recorder(|snapshotter| async move {
        let objects: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let prefix = Path::from("read-metrics");
        let (id, end) = old_stream(dir.path(), &objects, &prefix, 4 << 20).await;

        let node = Node::new(dir.path(), 2);
        let node = Node {
            settings: Settings {
                // A quarter of the data per second: the scan waits for tokens most of the time.
                catch_up_bytes_per_sec: 1 << 20,
                read_ahead_bytes: 0,
                ..settings(&node)
            },
            ..node
        };
        let store = node.open(&objects, &prefix).await;
        let stream = store.open_stream(id).await.unwrap();
        let scan = {
            let stream = stream.clone();
            tokio::spawn(async move {
                let mut pos = Offset(0);
                while pos < end {
                    let got = stream.fetch(pos, end, 512 << 10).await.unwrap();
                    pos = got.last().unwrap().next_offset();
                }
            })
        };
        let mut seen = Seen::default();
        let mut waiting_seen = 0.0f64;
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            seen.take(&snapshotter);
            waiting_seen = waiting_seen.max(seen.gauge(WAITERS));
            if waiting_seen >= 1.0 || scan.is_finished() {
                break;
            }
        }
        assert!(
            waiting_seen >= 1.0,
            "a throttled scan was seen waiting: {waiting_seen}"
        );
        scan.await.unwrap();
        seen.take(&snapshotter);
        assert_eq!(
            seen.gauge(WAITERS),
            0.0,
            "no read waits once the scan is done"
        );
        stream.close().await.unwrap();
        store.shutdown().await.unwrap();
    });
}
