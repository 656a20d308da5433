//! Metric names, their descriptions, and the handles the compactor updates.
//!
//! The compactor reports through the [`metrics`] facade, as the store does, and installs no
//! exporter: an embedder that wants the numbers installs a recorder **before**
//! [`Compactor::open`](crate::Compactor::open), which calls [`describe`] and registers every
//! handle once; they keep pointing at the recorder that was current then. Without a recorder
//! every update is a no-op.
//!
//! Every name is a constant here, prefixed `objstream_compaction_`. `docs/metrics.md` lists them
//! with what each tells an operator.
//!
//! When each number moves:
//!
//! - a pass ends: [`PASSES`] (by [`LABEL_OUTCOME`]) and [`PASS_DURATION`];
//! - retention commits a trim: [`STREAMS_TRIMMED`];
//! - a replacement is committed: [`READ_BYTES`], [`WRITTEN_BYTES`], [`OBJECTS_REPLACED`],
//!   [`OBJECTS_WRITTEN`] (the work of a plan the manifest refused is not counted: it left
//!   nothing behind but orphans for the collector);
//! - garbage is deleted: [`OBJECTS_DELETED`], [`DELETED_BYTES`] (sizes from the LIST);
//! - a collection picks its garbage: [`OBJECTS_AWAITING_GRACE`] is set;
//! - a pass ends: [`THROTTLED`] grows by the time the bandwidth limiter made the pass's reads
//!   and writes wait.

use std::time::Duration;

use ::metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Counter,
    Gauge, Histogram, Unit,
};
use objstream::{Error, ErrorDetail};

use crate::compactor::PassReport;

/// Passes finished. Label [`LABEL_OUTCOME`].
pub const PASSES: &str = "objstream_compaction_passes_total";
/// Duration of one pass: retention, plans and garbage collection.
pub const PASS_DURATION: &str = "objstream_compaction_pass_duration_seconds";
/// Bytes read from the source objects of committed replacements.
pub const READ_BYTES: &str = "objstream_compaction_read_bytes_total";
/// Bytes of the new objects of committed replacements.
pub const WRITTEN_BYTES: &str = "objstream_compaction_written_bytes_total";
/// Source objects removed from the manifest by committed replacements.
pub const OBJECTS_REPLACED: &str = "objstream_compaction_objects_replaced_total";
/// New objects added to the manifest by committed replacements.
pub const OBJECTS_WRITTEN: &str = "objstream_compaction_objects_written_total";
/// Unreferenced objects deleted by garbage collection.
pub const OBJECTS_DELETED: &str = "objstream_compaction_objects_deleted_total";
/// Bytes of the objects garbage collection deleted.
pub const DELETED_BYTES: &str = "objstream_compaction_deleted_bytes_total";
/// Orphans (allocated, never committed) recorded as collected in the manifest before deletion.
pub const OBJECTS_COLLECTED: &str = "objstream_compaction_objects_collected_total";
/// Orphans about to be collected that an upload committed first, and which were kept.
pub const COMMITTED_MEANWHILE: &str = "objstream_compaction_committed_meanwhile_total";
/// Unreferenced objects the last collection left because their grace period has not passed.
pub const OBJECTS_AWAITING_GRACE: &str = "objstream_compaction_objects_awaiting_grace";
/// Streams trimmed by retention.
pub const STREAMS_TRIMMED: &str = "objstream_compaction_streams_trimmed_total";
/// Time reads and writes of compaction waited for the bandwidth limiter, in milliseconds.
pub const THROTTLED: &str = "objstream_compaction_throttled_milliseconds_total";

/// Label: how a pass ended: `ok`; `conflict` (the manifest refused a plan, planned again or left
/// for the next pass); `fenced` (a newer compactor took over); `error` (anything else; the
/// next pass tries again).
pub const LABEL_OUTCOME: &str = "outcome";

/// Registers the unit and description of every compaction metric with the current recorder.
/// [`Compactor::open`](crate::Compactor::open) calls it; calling it again is harmless.
pub fn describe() {
    describe_counter!(
        PASSES,
        Unit::Count,
        "Compaction passes finished, by outcome (ok, conflict, fenced, error)"
    );
    describe_histogram!(
        PASS_DURATION,
        Unit::Seconds,
        "Duration of one compaction pass: retention, plans and garbage collection"
    );
    describe_counter!(
        READ_BYTES,
        Unit::Bytes,
        "Bytes read from the source objects of committed compactions"
    );
    describe_counter!(
        WRITTEN_BYTES,
        Unit::Bytes,
        "Bytes of the new objects of committed compactions"
    );
    describe_counter!(
        OBJECTS_REPLACED,
        Unit::Count,
        "Source objects removed from the manifest by compaction"
    );
    describe_counter!(
        OBJECTS_WRITTEN,
        Unit::Count,
        "New objects added to the manifest by compaction"
    );
    describe_counter!(
        OBJECTS_DELETED,
        Unit::Count,
        "Unreferenced objects deleted by garbage collection"
    );
    describe_counter!(
        DELETED_BYTES,
        Unit::Bytes,
        "Bytes of the objects garbage collection deleted"
    );
    describe_counter!(
        OBJECTS_COLLECTED,
        Unit::Count,
        "Orphaned objects recorded as collected in the manifest before their deletion"
    );
    describe_counter!(
        COMMITTED_MEANWHILE,
        Unit::Count,
        "Orphans about to be collected that an upload committed first, and which were kept"
    );
    describe_gauge!(
        OBJECTS_AWAITING_GRACE,
        Unit::Count,
        "Unreferenced objects waiting for their grace period before deletion"
    );
    describe_counter!(STREAMS_TRIMMED, Unit::Count, "Streams trimmed by retention");
    describe_counter!(
        THROTTLED,
        Unit::Milliseconds,
        "Time compaction reads and writes waited for the bandwidth limiter"
    );
}

/// Every handle a compactor updates, registered once when it opens.
pub(crate) struct CompactorMetrics {
    ok: Counter,
    conflict: Counter,
    fenced: Counter,
    error: Counter,
    pass_duration: Histogram,
    pub read_bytes: Counter,
    pub written_bytes: Counter,
    pub objects_replaced: Counter,
    pub objects_written: Counter,
    pub objects_deleted: Counter,
    pub deleted_bytes: Counter,
    pub objects_collected: Counter,
    pub committed_meanwhile: Counter,
    pub awaiting_grace: Gauge,
    pub streams_trimmed: Counter,
    throttled: Counter,
}

impl CompactorMetrics {
    /// Describes the metrics and registers the handles with the current recorder.
    pub(crate) fn new() -> Self {
        describe();
        let passes = |outcome: &'static str| counter!(PASSES, LABEL_OUTCOME => outcome);
        CompactorMetrics {
            ok: passes("ok"),
            conflict: passes("conflict"),
            fenced: passes("fenced"),
            error: passes("error"),
            pass_duration: histogram!(PASS_DURATION),
            read_bytes: counter!(READ_BYTES),
            written_bytes: counter!(WRITTEN_BYTES),
            objects_replaced: counter!(OBJECTS_REPLACED),
            objects_written: counter!(OBJECTS_WRITTEN),
            objects_deleted: counter!(OBJECTS_DELETED),
            deleted_bytes: counter!(DELETED_BYTES),
            objects_collected: counter!(OBJECTS_COLLECTED),
            committed_meanwhile: counter!(COMMITTED_MEANWHILE),
            awaiting_grace: gauge!(OBJECTS_AWAITING_GRACE),
            streams_trimmed: counter!(STREAMS_TRIMMED),
            throttled: counter!(THROTTLED),
        }
    }

    /// Counts a finished pass by its outcome, with its duration and the time it was throttled.
    pub(crate) fn pass(
        &self,
        result: &Result<PassReport, Error>,
        took: Duration,
        throttled: Duration,
    ) {
        let outcome = match pass_outcome(result) {
            "ok" => &self.ok,
            "conflict" => &self.conflict,
            "fenced" => &self.fenced,
            _ => &self.error,
        };
        outcome.increment(1);
        self.pass_duration.record(took);
        self.throttled
            .increment(u64::try_from(throttled.as_millis()).unwrap_or(u64::MAX));
    }
}

/// The [`LABEL_OUTCOME`] of a pass that returned `result`.
pub(crate) fn pass_outcome(result: &Result<PassReport, Error>) -> &'static str {
    match result {
        Ok(report) if report.refused > 0 => "conflict",
        Ok(_) => "ok",
        Err(e) if e.is_fenced() => "fenced",
        Err(e) if matches!(e.detail(), ErrorDetail::Conflict(_)) => "conflict",
        Err(_) => "error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    #[test]
    fn every_name_is_prefixed_and_described() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        ::metrics::with_local_recorder(&recorder, || {
            CompactorMetrics::new();
        });
        let snapshot = snapshotter.snapshot().into_vec();
        // Four outcomes of one counter, and twelve more series.
        assert_eq!(snapshot.len(), 16);
        for (key, unit, description, _) in snapshot {
            let name = key.key().name();
            assert!(name.starts_with("objstream_compaction_"), "{name}");
            assert!(description.is_some(), "{name} has no description");
            assert!(unit.is_some(), "{name} has no unit");
        }
    }

    #[test]
    fn a_pass_is_labelled_by_how_it_ended() {
        let refused = PassReport {
            refused: 1,
            ..PassReport::default()
        };
        assert_eq!(pass_outcome(&Ok(PassReport::default())), "ok");
        assert_eq!(pass_outcome(&Ok(refused)), "conflict");
        let fenced: Error = ErrorDetail::Fenced("a newer compactor".into()).into();
        assert_eq!(pass_outcome(&Err(fenced)), "fenced");
        let conflict: Error = ErrorDetail::Conflict("the manifest moved".into()).into();
        assert_eq!(pass_outcome(&Err(conflict)), "conflict");
        let other: Error = ErrorDetail::Internal("stopped".into()).into();
        assert_eq!(pass_outcome(&Err(other)), "error");
    }

    #[test]
    fn a_pass_counts_its_outcome_duration_and_throttled_milliseconds() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        ::metrics::with_local_recorder(&recorder, || {
            let m = CompactorMetrics::new();
            let fenced: Error = ErrorDetail::Fenced("a newer compactor".into()).into();
            m.pass(
                &Ok(PassReport::default()),
                Duration::from_millis(5),
                Duration::ZERO,
            );
            m.pass(
                &Err(fenced),
                Duration::from_millis(7),
                Duration::from_millis(1500),
            );
        });
        let snapshot = snapshotter.snapshot().into_vec();
        let counter = |name: &str, outcome: Option<&str>| -> u64 {
            snapshot
                .iter()
                .filter(|(k, ..)| k.key().name() == name)
                .filter(|(k, ..)| outcome.is_none_or(|o| k.key().labels().any(|l| l.value() == o)))
                .map(|(.., v)| match v {
                    DebugValue::Counter(c) => *c,
                    _ => 0,
                })
                .sum()
        };
        assert_eq!(counter(PASSES, Some("ok")), 1);
        assert_eq!(counter(PASSES, Some("fenced")), 1);
        assert_eq!(counter(PASSES, Some("error")), 0);
        assert_eq!(counter(THROTTLED, None), 1500);
        let durations = snapshot
            .iter()
            .find(|(k, ..)| k.key().name() == PASS_DURATION)
            .map(|(.., v)| match v {
                DebugValue::Histogram(h) => h.len(),
                _ => 0,
            });
        assert_eq!(durations, Some(2));
    }
}
