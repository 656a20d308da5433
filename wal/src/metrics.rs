//! Metric names, their descriptions, and the handles every WAL backend updates.
//!
//! The WALs report through the [`metrics`] facade and install no exporter: an embedder that
//! wants the numbers installs a recorder (Prometheus, StatsD, OpenTelemetry, …) **before** it
//! opens a WAL (or the store that opens one), because every handle is registered once, when the
//! WAL opens, and keeps pointing at the recorder that was current then. Without a recorder every
//! update is a no-op.
//!
//! All three backends report through the same names, told apart by the [`LABEL_WAL`] label
//! (`file`, `block` or `object`), so one dashboard serves whichever backend a node runs. Every
//! name is a constant here, prefixed `objstream_wal_`, and [`describe`] registers each one's
//! unit and description. `docs/metrics.md` lists them with what each tells an operator.
//!
//! What one "write" is depends on the backend:
//!
//! | backend | one write | made durable by |
//! |---|---|---|
//! | `file` | one group commit: every frame waiting when the writer woke | the `fdatasync` |
//! | `block` | one group commit to the ring | the `O_DIRECT` write, `O_DSYNC`/`fdatasync` and header check |
//! | `object` | one WAL object | the conditional PUT, retries included |
//!
//! Hot-path cost: [`WalMetrics::new`] builds every handle ([`metrics::Counter`],
//! [`metrics::Histogram`], [`metrics::Gauge`]) with its label once; the methods only update a
//! handle, so a write allocates nothing and takes no lock of its own. Handles are shared
//! pointers, so cloning a [`WalMetrics`] into a writer task is cheap.
//!
//! A thread-local recorder (`metrics::with_local_recorder`) sees only handles built on its
//! thread. A caller that opens a WAL on another thread (a blocking task) builds the handles on
//! its own first and passes them in: see [`FileWal::open_with_metrics`].
//!
//! [`FileWal::open_with_metrics`]: crate::FileWal::open_with_metrics

use std::time::Duration;

use ::metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Counter,
    Gauge, Histogram, Unit,
};

/// Bytes of one write: one group commit (file, block) or one WAL object (object).
pub const WRITE_BYTES: &str = "objstream_wal_write_bytes";
/// Records in one write (the group-commit size in records).
pub const WRITE_RECORDS: &str = "objstream_wal_write_records";
/// Time to make one write durable (fdatasync; O_DIRECT write and sync; conditional PUT).
pub const SYNC_DURATION: &str = "objstream_wal_sync_duration_seconds";
/// Writes, fsyncs or PUTs issued and not yet complete.
pub const WRITES_IN_FLIGHT: &str = "objstream_wal_writes_in_flight";
/// Bytes held between the trim point and the head.
pub const USED_BYTES: &str = "objstream_wal_used_bytes";
/// Bytes the WAL can hold (the block ring's size).
pub const CAPACITY_BYTES: &str = "objstream_wal_capacity_bytes";
/// Appends that waited because the WAL was full (ring full; PUTs at their in-flight limit).
pub const FULL_WAITS: &str = "objstream_wal_full_waits_total";
/// Writes that waited for the write budget before going to the device (block WAL with a
/// budget of writes a second): while it rises, appends come faster than the budget allows
/// writes, and they share fewer, larger writes.
pub const BUDGET_HELD: &str = "objstream_wal_budget_held_writes_total";
/// Bytes of records found and handed back by replay when the WAL opened.
pub const REPLAYED_BYTES: &str = "objstream_wal_replayed_bytes_total";
/// Time to read back the WAL when it opened.
pub const REPLAY_DURATION: &str = "objstream_wal_replay_duration_seconds";

/// Label: the WAL backend, `file`, `block` or `object`.
pub const LABEL_WAL: &str = "wal";

/// Registers the unit and description of every WAL metric with the current recorder. Each
/// backend calls it when it opens and the store calls it from its own `describe`; calling it
/// again is harmless.
pub fn describe() {
    describe_histogram!(
        WRITE_BYTES,
        Unit::Bytes,
        "Bytes of one WAL write: a group commit (file, block) or a WAL object (object)"
    );
    describe_histogram!(
        WRITE_RECORDS,
        Unit::Count,
        "Records in one WAL write: the group-commit size"
    );
    describe_histogram!(
        SYNC_DURATION,
        Unit::Seconds,
        "Time to make one WAL write durable: fdatasync, O_DIRECT write and sync, or conditional PUT"
    );
    describe_gauge!(
        WRITES_IN_FLIGHT,
        Unit::Count,
        "WAL writes, fsyncs or PUTs issued and not yet complete"
    );
    describe_gauge!(
        USED_BYTES,
        Unit::Bytes,
        "WAL bytes held between the trim point and the head"
    );
    describe_gauge!(CAPACITY_BYTES, Unit::Bytes, "Bytes the WAL can hold");
    describe_counter!(
        FULL_WAITS,
        Unit::Count,
        "Appends that waited because the WAL was full or at its in-flight limit"
    );
    describe_counter!(
        BUDGET_HELD,
        Unit::Count,
        "WAL writes that waited for the write budget (writes a second) before going to the device"
    );
    describe_counter!(
        REPLAYED_BYTES,
        Unit::Bytes,
        "Record bytes read back from the WAL when it opened"
    );
    describe_histogram!(
        REPLAY_DURATION,
        Unit::Seconds,
        "Time to read back the WAL when it opened"
    );
}

/// Every handle one WAL updates, registered once with the recorder current at [`WalMetrics::new`].
///
/// What a backend does as it writes, seen through a debugging recorder:
///
/// ```
/// use std::time::Duration;
/// use metrics_util::debugging::{DebugValue, DebuggingRecorder};
/// use objstream_wal::metrics::{WalMetrics, WRITE_RECORDS};
///
/// let recorder = DebuggingRecorder::new();
/// let snapshotter = recorder.snapshotter();
/// metrics::with_local_recorder(&recorder, || {
///     let m = WalMetrics::new("block");
///     m.capacity(1 << 30);
///     m.write_started();
///     m.record_write(64 << 10, 12, Duration::from_micros(450));
///     m.write_finished();
///     m.used(64 << 10);
/// });
/// let snapshot = snapshotter.snapshot().into_vec();
/// let records = snapshot.iter().find(|(k, ..)| k.key().name() == WRITE_RECORDS);
/// assert!(matches!(records, Some((.., DebugValue::Histogram(v))) if v[0].0 == 12.0));
/// ```
#[derive(Clone)]
pub struct WalMetrics {
    write_bytes: Histogram,
    write_records: Histogram,
    sync_duration: Histogram,
    in_flight: Gauge,
    used: Gauge,
    capacity: Gauge,
    full_waits: Counter,
    budget_held: Counter,
    replayed_bytes: Counter,
    replay_duration: Histogram,
}

impl WalMetrics {
    /// Describes the metrics and builds every handle with `wal = backend` (`file`, `block`,
    /// `object`).
    pub fn new(backend: &'static str) -> Self {
        Self::with_gauges(backend, true, true)
    }

    /// Like [`WalMetrics::new`], but registers the [`USED_BYTES`] and [`CAPACITY_BYTES`] gauges
    /// only if `used` and `capacity` say so: a backend that cannot know a number leaves its
    /// series out rather than export a zero an operator would take for real. The methods of a
    /// series left out do nothing.
    pub fn with_gauges(backend: &'static str, used: bool, capacity: bool) -> Self {
        describe();
        let optional = |report: bool, name: &'static str| {
            if report {
                gauge!(name, LABEL_WAL => backend)
            } else {
                Gauge::noop()
            }
        };
        WalMetrics {
            write_bytes: histogram!(WRITE_BYTES, LABEL_WAL => backend),
            write_records: histogram!(WRITE_RECORDS, LABEL_WAL => backend),
            sync_duration: histogram!(SYNC_DURATION, LABEL_WAL => backend),
            in_flight: gauge!(WRITES_IN_FLIGHT, LABEL_WAL => backend),
            used: optional(used, USED_BYTES),
            capacity: optional(capacity, CAPACITY_BYTES),
            full_waits: counter!(FULL_WAITS, LABEL_WAL => backend),
            // Only the block WAL has a write budget; the others leave the series out.
            budget_held: if backend == "block" {
                counter!(BUDGET_HELD, LABEL_WAL => backend)
            } else {
                Counter::noop()
            },
            replayed_bytes: counter!(REPLAYED_BYTES, LABEL_WAL => backend),
            replay_duration: histogram!(REPLAY_DURATION, LABEL_WAL => backend),
        }
    }

    /// Records one durable write of `bytes` holding `records` records, made durable in
    /// `duration`.
    pub fn record_write(&self, bytes: u64, records: u64, duration: Duration) {
        self.write_bytes.record(bytes as f64);
        self.write_records.record(records as f64);
        self.sync_duration.record(duration);
    }

    /// Counts one write, fsync or PUT issued (the in-flight gauge rises by one).
    pub fn write_started(&self) {
        self.in_flight.increment(1.0);
    }

    /// Counts one write, fsync or PUT complete, whatever its outcome (the in-flight gauge falls
    /// by one).
    pub fn write_finished(&self) {
        self.in_flight.decrement(1.0);
    }

    /// Sets the bytes held between the trim point and the head.
    pub fn used(&self, bytes: u64) {
        self.used.set(bytes as f64);
    }

    /// Sets the bytes the WAL can hold.
    pub fn capacity(&self, bytes: u64) {
        self.capacity.set(bytes as f64);
    }

    /// Counts one append that had to wait because the WAL was full.
    pub fn full_wait(&self) {
        self.full_waits.increment(1);
    }

    /// Counts one write that waited for the write budget.
    pub fn budget_held(&self) {
        self.budget_held.increment(1);
    }

    /// Records the replay at open: `bytes` of records read back in `duration`.
    pub fn replayed(&self, bytes: u64, duration: Duration) {
        self.replayed_bytes.increment(bytes);
        self.replay_duration.record(duration);
    }
}

impl std::fmt::Debug for WalMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WalMetrics").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    use metrics_util::MetricKind;

    fn value<'a>(
        snapshot: &'a [(
            metrics_util::CompositeKey,
            Option<Unit>,
            Option<::metrics::SharedString>,
            DebugValue,
        )],
        kind: MetricKind,
        name: &str,
    ) -> &'a DebugValue {
        snapshot
            .iter()
            .find(|(k, ..)| k.kind() == kind && k.key().name() == name)
            .map(|(.., v)| v)
            .unwrap_or_else(|| panic!("{name} was not reported"))
    }

    #[test]
    fn every_name_is_prefixed_described_and_labelled_with_the_backend() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        ::metrics::with_local_recorder(&recorder, || {
            let m = WalMetrics::new("file");
            m.record_write(1, 1, Duration::from_millis(1));
            m.write_started();
            m.used(1);
            m.capacity(1);
            m.full_wait();
            m.replayed(1, Duration::from_millis(1));
        });
        let snapshot = snapshotter.snapshot().into_vec();
        assert_eq!(snapshot.len(), 9);
        for (key, unit, description, _) in snapshot {
            let name = key.key().name();
            assert!(name.starts_with("objstream_wal_"), "{name}");
            assert!(description.is_some(), "{name} has no description");
            assert!(unit.is_some(), "{name} has no unit");
            let labels: Vec<_> = key.key().labels().collect();
            assert_eq!(labels.len(), 1, "{name}");
            assert_eq!((labels[0].key(), labels[0].value()), (LABEL_WAL, "file"));
        }
    }

    #[test]
    fn writes_started_and_finished_from_many_threads_leave_the_gauge_exact() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let m = ::metrics::with_local_recorder(&recorder, || WalMetrics::new("file"));
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..1000 {
                        m.write_started();
                        m.write_finished();
                    }
                });
            }
        });
        m.write_started();
        let s = snapshotter.snapshot().into_vec();
        assert!(matches!(
            value(&s, MetricKind::Gauge, WRITES_IN_FLIGHT),
            DebugValue::Gauge(g) if g.0 == 1.0
        ));
    }

    #[test]
    fn gauges_a_backend_cannot_know_are_left_out() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        ::metrics::with_local_recorder(&recorder, || {
            let m = WalMetrics::with_gauges("object", false, false);
            m.used(10);
            m.capacity(10);
            m.write_started();
        });
        let names: Vec<String> = snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .map(|(k, ..)| k.key().name().to_string())
            .collect();
        assert!(names.iter().any(|n| n == WRITES_IN_FLIGHT));
        assert!(!names.iter().any(|n| n == USED_BYTES || n == CAPACITY_BYTES));
        assert_eq!(names.len(), 7);
    }

    #[test]
    fn each_method_moves_its_own_series() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        ::metrics::with_local_recorder(&recorder, || {
            let m = WalMetrics::new("object");
            let clone = m.clone();
            m.record_write(4096, 3, Duration::from_millis(2));
            clone.record_write(100, 1, Duration::from_millis(4));
            m.write_started();
            m.write_started();
            m.used(5000);
            m.capacity(1 << 20);
            m.full_wait();
            clone.full_wait();
            m.replayed(777, Duration::from_millis(9));
        });
        let s = snapshotter.snapshot().into_vec();
        let hist = |name| match value(&s, MetricKind::Histogram, name) {
            DebugValue::Histogram(v) => v.iter().map(|x| x.0).collect::<Vec<_>>(),
            other => panic!("{name}: {other:?}"),
        };
        assert_eq!(hist(WRITE_BYTES), vec![4096.0, 100.0]);
        assert_eq!(hist(WRITE_RECORDS), vec![3.0, 1.0]);
        assert_eq!(hist(SYNC_DURATION), vec![0.002, 0.004]);
        assert_eq!(hist(REPLAY_DURATION), vec![0.009]);
        let gauge = |name| match value(&s, MetricKind::Gauge, name) {
            DebugValue::Gauge(g) => g.0,
            other => panic!("{name}: {other:?}"),
        };
        assert_eq!(gauge(WRITES_IN_FLIGHT), 2.0);
        assert_eq!(gauge(USED_BYTES), 5000.0);
        assert_eq!(gauge(CAPACITY_BYTES), 1048576.0);
        let count = |name| match value(&s, MetricKind::Counter, name) {
            DebugValue::Counter(c) => *c,
            other => panic!("{name}: {other:?}"),
        };
        assert_eq!(count(FULL_WAITS), 2);
        assert_eq!(count(REPLAYED_BYTES), 777);
    }
}
