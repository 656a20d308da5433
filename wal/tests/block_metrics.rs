//! The block WAL reports its writes, writes in flight, ring use and capacity, waits for a full
//! ring and replay through `objstream_wal::metrics`, labelled `wal = block`.
//!
//! The WAL is opened under a fresh `DebuggingRecorder` installed as the thread's local
//! recorder: its handles are built at open, so they keep reporting to that recorder from the
//! WAL's own threads, and tests running side by side never see each other's numbers.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::executor::block_on;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use objstream_wal::block::{Durability, MemDevice, HEADER_AREA};
use objstream_wal::metrics as m;
use objstream_wal::{BlockWal, BlockWalOptions, Wal, WalPosition};

const RING: u64 = 256 << 10;

fn options() -> BlockWalOptions {
    BlockWalOptions {
        create_bytes: None,
        max_record_bytes: 16 << 10,
        max_batch_bytes: 32 << 10,
        durability: Durability::Fdatasync,
        max_writes_per_sec: 0,
    }
}

/// What the recorder saw for `wal = block`, by metric name. The debugging recorder drains
/// what it reports: a gauge moved by increments shows the sum of its changes.
fn block_values(snapshotter: &Snapshotter) -> HashMap<String, DebugValue> {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(key, ..)| {
            key.key()
                .labels()
                .any(|l| l.key() == m::LABEL_WAL && l.value() == "block")
        })
        .map(|(key, _, _, value)| (key.key().name().to_string(), value))
        .collect()
}

fn samples(values: &HashMap<String, DebugValue>, name: &str) -> Vec<f64> {
    match values.get(name) {
        Some(DebugValue::Histogram(h)) => h.iter().map(|v| v.0).collect(),
        other => panic!("{name} is not a histogram: {other:?}"),
    }
}

fn gauge(values: &HashMap<String, DebugValue>, name: &str) -> f64 {
    match values.get(name) {
        Some(DebugValue::Gauge(g)) => g.0,
        other => panic!("{name} is not a gauge: {other:?}"),
    }
}

fn counter(values: &HashMap<String, DebugValue>, name: &str) -> u64 {
    match values.get(name) {
        Some(DebugValue::Counter(c)) => *c,
        other => panic!("{name} is not a counter: {other:?}"),
    }
}

fn open(dev: &MemDevice, epoch: u64) -> BlockWal {
    BlockWal::open_device(Arc::new(dev.clone()), 1, epoch, options()).unwrap()
}

#[test]
fn writes_ring_use_capacity_and_replay_are_reported() {
    let dev = MemDevice::new((HEADER_AREA + RING) as usize);
    let record = Bytes::from(vec![9u8; 3000]);
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let (written, next) = metrics::with_local_recorder(&recorder, || {
        let wal = open(&dev, 1);
        let appends: Vec<_> = (0..30).map(|_| wal.append(record.clone())).collect();
        for a in appends {
            block_on(a).unwrap();
        }
        let next = wal.next_position();
        (30 * record.len() as u64, next)
    });
    let values = block_values(&snapshotter);
    let records = samples(&values, m::WRITE_RECORDS);
    assert_eq!(records.iter().sum::<f64>(), 30.0);
    let bytes = samples(&values, m::WRITE_BYTES);
    assert_eq!(bytes.len(), records.len());
    assert!(
        bytes.iter().all(|&b| b > 0.0 && b % 4096.0 == 0.0),
        "{bytes:?}"
    );
    assert_eq!(samples(&values, m::SYNC_DURATION).len(), records.len());
    assert_eq!(gauge(&values, m::WRITES_IN_FLIGHT), 0.0);
    assert_eq!(gauge(&values, m::CAPACITY_BYTES), RING as f64);
    assert_eq!(gauge(&values, m::USED_BYTES), next.0 as f64);
    assert_eq!(counter(&values, m::FULL_WAITS), 0);
    // A fresh ring replays nothing, and says so.
    assert_eq!(counter(&values, m::REPLAYED_BYTES), 0);

    let values = metrics::with_local_recorder(&recorder, || {
        let wal = open(&dev, 2);
        assert_eq!(block_on(wal.replay()).unwrap().len(), 30);
        block_on(wal.trim(next)).unwrap();
        block_values(&snapshotter)
    });
    assert_eq!(counter(&values, m::REPLAYED_BYTES), written);
    assert_eq!(samples(&values, m::REPLAY_DURATION).len(), 1);
    assert_eq!(gauge(&values, m::USED_BYTES), 0.0);
}

#[test]
fn appends_that_wait_for_a_trim_count_as_full_waits() {
    let dev = MemDevice::new((HEADER_AREA + RING) as usize);
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let record = Bytes::from(vec![3u8; 8 << 10]);
    metrics::with_local_recorder(&recorder, || {
        let wal = open(&dev, 1);
        let mut last = WalPosition(0);
        // 8 KiB records take three blocks each: about 21 fill the ring.
        for _ in 0..21 {
            last = block_on(wal.append(record.clone())).unwrap();
        }
        let first = wal.append(record.clone());
        // Let the writer find the ring full before the second append arrives.
        std::thread::sleep(Duration::from_millis(100));
        let second = wal.append(record.clone());
        std::thread::sleep(Duration::from_millis(100));
        block_on(wal.trim(last)).unwrap();
        block_on(first).unwrap();
        block_on(second).unwrap();
    });
    let values = block_values(&snapshotter);
    assert_eq!(counter(&values, m::FULL_WAITS), 2);
}

#[test]
fn writes_held_by_the_budget_are_counted_once_each() {
    let dev = MemDevice::new((HEADER_AREA + RING) as usize);
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        let wal = BlockWal::open_device(
            Arc::new(dev.clone()),
            1,
            1,
            BlockWalOptions {
                max_writes_per_sec: 20,
                ..options()
            },
        )
        .unwrap();
        // One record at a time: the first four writes are the burst, the next two each wait
        // about 50 ms for the budget.
        for i in 0..6u8 {
            block_on(wal.append(Bytes::from(vec![i; 100]))).unwrap();
        }
    });
    let values = block_values(&snapshotter);
    assert_eq!(counter(&values, m::BUDGET_HELD), 2);
    assert_eq!(samples(&values, m::WRITE_RECORDS).len(), 6);
}
