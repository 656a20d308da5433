//! The file and object WALs report their group commits, syncs or PUTs, writes in flight, held
//! bytes, full windows and replay through `objstream_wal::metrics`, labelled by backend.
//!
//! Each test installs its own `DebuggingRecorder` as the thread's local recorder and opens the
//! WAL inside it on a current-thread runtime: the handles are built at open, so they register
//! with that recorder (and keep reporting to it from the file WAL's writer threads), and tests
//! running side by side never see each other's numbers.

#[path = "common/gated_store.rs"]
mod gated_store;

use std::collections::HashMap;
use std::future::Future;

use bytes::Bytes;
use gated_store::*;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use objstream_wal::frame::frame_len;
use objstream_wal::metrics as m;
use objstream_wal::object::slot_key;
use objstream_wal::{FileWal, FileWalOptions, ObjectWalOptions, Wal, WalPosition};

/// Runs `test` on a current-thread runtime under a fresh local recorder; returns what the
/// recorder saw.
fn with_recorder<F, Fut>(test: F) -> Seen
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
    let inner = recorder.snapshotter();
    ::metrics::with_local_recorder(&recorder, || runtime.block_on(test(inner)));
    Seen::take(&snapshotter)
}

/// One snapshot of the recorder. The debugging recorder drains every value it reports, gauges
/// included: a later snapshot holds only what moved since (a gauge moved by increments shows
/// the sum of its changes).
struct Seen {
    values: Vec<(String, HashMap<String, String>, DebugValue)>,
}

impl Seen {
    fn take(snapshotter: &Snapshotter) -> Seen {
        let values = snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .map(|(key, _, _, value)| {
                let key = key.key();
                let labels = key
                    .labels()
                    .map(|l| (l.key().to_string(), l.value().to_string()))
                    .collect();
                (key.name().to_string(), labels, value)
            })
            .collect();
        Seen { values }
    }

    fn find(&self, name: &str, wal: &str) -> &DebugValue {
        self.values
            .iter()
            .find(|(n, l, _)| n == name && l.get(m::LABEL_WAL).map(String::as_str) == Some(wal))
            .map(|(.., v)| v)
            .unwrap_or_else(|| panic!("{name}{{wal={wal}}} was not reported"))
    }

    fn counter(&self, name: &str, wal: &str) -> u64 {
        match self.find(name, wal) {
            DebugValue::Counter(c) => *c,
            other => panic!("{name} is not a counter: {other:?}"),
        }
    }

    fn gauge(&self, name: &str, wal: &str) -> f64 {
        match self.find(name, wal) {
            DebugValue::Gauge(g) => g.0,
            other => panic!("{name} is not a gauge: {other:?}"),
        }
    }

    fn samples(&self, name: &str, wal: &str) -> Vec<f64> {
        match self.find(name, wal) {
            DebugValue::Histogram(h) => h.iter().map(|v| v.0).collect(),
            other => panic!("{name} is not a histogram: {other:?}"),
        }
    }

    fn has(&self, name: &str, wal: &str) -> bool {
        self.values
            .iter()
            .any(|(n, l, _)| n == name && l.get(m::LABEL_WAL).map(String::as_str) == Some(wal))
    }
}

#[test]
fn the_file_wal_reports_group_commits_syncs_live_segments_and_replay() {
    const SEGMENT: u64 = 64 << 10;
    const RECORDS: usize = 40;
    let record = Bytes::from(vec![5u8; 4000]);
    let dir = tempfile::tempdir().unwrap();
    let options = FileWalOptions {
        segment_bytes: SEGMENT,
        ..FileWalOptions::default()
    };
    let mut kept_bytes = 0;
    let mut in_flight_before_trim = f64::NAN;
    let seen = with_recorder(|snapshotter| {
        let (dir, record, options) = (dir.path(), record.clone(), options.clone());
        let kept_bytes = &mut kept_bytes;
        let in_flight_before_trim = &mut in_flight_before_trim;
        async move {
            let wal = FileWal::open(dir, options.clone()).unwrap();
            let appends: Vec<_> = (0..RECORDS).map(|_| wal.append(record.clone())).collect();
            let positions: Vec<WalPosition> = futures::future::join_all(appends)
                .await
                .into_iter()
                .map(Result::unwrap)
                .collect();
            // 40 frames of about 4 KiB fill three segments of 64 KiB.
            let before_trim = Seen::take(&snapshotter);
            // The open replayed an empty WAL (this snapshot takes the first open's replay
            // sample: the final one holds only the reopen's).
            assert_eq!(before_trim.samples(m::REPLAY_DURATION, "file").len(), 1);
            assert_eq!(before_trim.counter(m::REPLAYED_BYTES, "file"), 0);
            assert_eq!(
                before_trim.gauge(m::USED_BYTES, "file"),
                3.0 * SEGMENT as f64
            );
            // A writer may still be in a sync whose bytes another writer's sync covered.
            *in_flight_before_trim = before_trim.gauge(m::WRITES_IN_FLIGHT, "file");
            let bytes = before_trim.samples(m::WRITE_BYTES, "file");
            let records = before_trim.samples(m::WRITE_RECORDS, "file");
            let syncs = before_trim.samples(m::SYNC_DURATION, "file");
            // Every frame is counted once, in the group commit whose sync made it durable.
            let framed = RECORDS * frame_len(record.len());
            assert_eq!(bytes.iter().sum::<f64>(), framed as f64);
            assert_eq!(records.iter().sum::<f64>(), RECORDS as f64);
            assert!(records.iter().all(|&r| r >= 1.0), "{records:?}");
            assert_eq!(syncs.len(), bytes.len());
            assert!(syncs.iter().all(|&s| s > 0.0), "{syncs:?}");

            // Trimming past the first two segments leaves one live segment.
            let keep_from = positions[RECORDS - 2];
            wal.trim(keep_from).await.unwrap();
            let after_trim = Seen::take(&snapshotter);
            assert_eq!(after_trim.gauge(m::USED_BYTES, "file"), SEGMENT as f64);
            drop(wal);

            // The reopen replays the records of the live segment (trim points are the
            // caller's to keep).
            let wal = FileWal::open(dir, options).unwrap();
            *kept_bytes = wal
                .replay()
                .await
                .unwrap()
                .iter()
                .map(|r| r.payload.len() as u64)
                .sum::<u64>();
        }
    });
    assert!(kept_bytes >= 2 * record.len() as u64, "{kept_bytes}");
    assert_eq!(seen.counter(m::REPLAYED_BYTES, "file"), kept_bytes);
    // The reopen's replay.
    let replays = seen.samples(m::REPLAY_DURATION, "file");
    assert_eq!(replays.len(), 1, "{replays:?}");
    assert_eq!(seen.gauge(m::USED_BYTES, "file"), SEGMENT as f64);
    assert_eq!(seen.counter(m::FULL_WAITS, "file"), 0);
    // With both WALs dropped every sync has returned: the gauge, seen in two drained parts,
    // adds up to zero.
    assert!((0.0..=4.0).contains(&in_flight_before_trim));
    let in_flight_after = seen.gauge(m::WRITES_IN_FLIGHT, "file");
    assert_eq!(in_flight_before_trim + in_flight_after, 0.0);
    assert!(!seen.has(m::CAPACITY_BYTES, "file"));
}

#[test]
fn the_object_wal_reports_objects_puts_in_flight_full_windows_and_replay() {
    let store = memory();
    let options = ObjectWalOptions {
        max_in_flight: 1,
        ..one_record_per_object()
    };
    let record = |i| payload(i, 100);
    let seen = with_recorder(|snapshotter| {
        let store = store.clone();
        async move {
            let wal = open_at(&store, identity(1, 1), WalPosition(0), options.clone()).await;
            let first_slot = wal.seal_report().writer_start_slot;
            let gate = store.hold_put(&slot_key(&prefix(), first_slot));
            let a = wal.append(record(0));
            gate.reached().await;
            let held = Seen::take(&snapshotter);
            assert_eq!(held.gauge(m::WRITES_IN_FLIGHT, "object"), 1.0);
            assert_eq!(held.samples(m::REPLAY_DURATION, "object").len(), 1);
            assert_eq!(held.counter(m::REPLAYED_BYTES, "object"), 0);
            assert_eq!(held.counter(m::FULL_WAITS, "object"), 0);
            // The window of one object is taken: this append has to wait for it.
            let b = wal.append(record(1));
            gate.release();
            a.await.unwrap();
            b.await.unwrap();
            let mut positions = Vec::new();
            for i in 2..10 {
                positions.push(wal.append(record(i)).await.unwrap());
            }
            wal.trim(positions[0]).await.unwrap();
            drop(wal);

            // A takeover from the trim point replays the eight records above it.
            let wal = open_at(&store, identity(2, 2), positions[0], options).await;
            assert_eq!(replayed(&wal).await.len(), 8);
        }
    });
    assert!(seen.counter(m::FULL_WAITS, "object") >= 1);
    assert_eq!(seen.counter(m::REPLAYED_BYTES, "object"), 800);
    assert_eq!(seen.samples(m::REPLAY_DURATION, "object").len(), 1);
    // The held PUT was seen in flight; the drained gauge then moved by one down: none is left.
    assert_eq!(seen.gauge(m::WRITES_IN_FLIGHT, "object"), -1.0);
    // One record per object: ten PUTs of one record each, every one larger than its frame.
    let records = seen.samples(m::WRITE_RECORDS, "object");
    assert_eq!(records, vec![1.0; 10]);
    let bytes = seen.samples(m::WRITE_BYTES, "object");
    assert_eq!(bytes.len(), 10);
    assert!(
        bytes.iter().all(|&b| b > frame_len(100) as f64),
        "{bytes:?}"
    );
    let puts = seen.samples(m::SYNC_DURATION, "object");
    assert_eq!(puts.len(), 10);
    assert!(puts.iter().all(|&d| d > 0.0), "{puts:?}");
    // The object WAL does not know the bytes its untrimmed slots hold.
    assert!(!seen.has(m::USED_BYTES, "object"));
}
