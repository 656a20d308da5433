//! The read path's internals as metrics, for operators: how long its GETs take, how far ahead
//! sequential readers prefetch, and how many reads wait for the bandwidth limiter.
//!
//! ```text
//! objstream_read_get_duration_seconds{what}   histogram  one GET: index | block | object
//! objstream_read_ahead_window_bytes           gauge      sum of the open read-ahead windows
//! objstream_read_limiter_waiters              gauge      reads waiting for limiter tokens now
//! ```
//!
//! Unlike the counters published from [`ReadStats`](super::ReadStats), these are updated where
//! they happen: a GET records its latency when its body is in hand, the window gauge is set when
//! a window opens, grows, shrinks or its cursor is dropped, and the waiter gauge moves when a
//! read starts and stops waiting. Every handle is built once, when the store opens (so, like
//! the store's other metrics, with the recorder current then); an update allocates nothing.
//!
//! The latency of a GET runs from the request to its whole body in hand, retries of transient
//! failures included, and does not include time spent waiting for the limiter (that time shows
//! in `objstream_read_throttled_milliseconds_total`). A read that joins a GET already in flight
//! records nothing: only requests really sent are timed.

use std::time::Duration;

use ::metrics::{describe_gauge, describe_histogram, gauge, histogram, Gauge, Histogram, Unit};

/// Latency of one GET the read path sent, to its whole body, retries included. Label
/// [`LABEL_WHAT`].
pub const GET_DURATION: &str = "objstream_read_get_duration_seconds";
/// The read-ahead windows of every sequential reader the store tracks, summed, in bytes.
pub const READ_AHEAD_WINDOW: &str = "objstream_read_ahead_window_bytes";
/// Reads (catch-up and read-ahead) waiting for bandwidth-limiter tokens right now.
pub const LIMITER_WAITERS: &str = "objstream_read_limiter_waiters";

/// Label: what a GET read, `index` (an object's tail: footer and index), `block` (a range of
/// data blocks) or `object` (a whole object, or half of one, read by read-ahead).
pub const LABEL_WHAT: &str = "what";

/// What a GET of the read path reads: the value of [`LABEL_WHAT`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum GetKind {
    /// An object's tail (footer and index), or the rest of an index that did not fit it.
    Index,
    /// Adjacent data blocks.
    Block,
    /// A whole object (or one of the two halves of one) read by read-ahead.
    Object,
}

/// Registers the unit and description of each read-path metric with the current recorder.
/// Calling it again is harmless.
pub(crate) fn describe() {
    describe_histogram!(
        GET_DURATION,
        Unit::Seconds,
        "Latency of one read-path GET to its whole body, retries included, by what it read (index, block, object)"
    );
    describe_gauge!(
        READ_AHEAD_WINDOW,
        Unit::Bytes,
        "Read-ahead windows of the sequential readers the store tracks, summed"
    );
    describe_gauge!(
        LIMITER_WAITERS,
        Unit::Count,
        "Catch-up reads and read-ahead GETs waiting for bandwidth-limiter tokens now"
    );
}

/// The read path's handles, registered once when the store opens.
#[derive(Clone)]
pub(crate) struct ReadPathMetrics {
    index_gets: Histogram,
    block_gets: Histogram,
    object_gets: Histogram,
    /// The summed read-ahead window (see [`READ_AHEAD_WINDOW`]).
    pub window: Gauge,
    /// Reads waiting for the limiter (see [`LIMITER_WAITERS`]).
    pub limiter_waiters: Gauge,
}

impl ReadPathMetrics {
    /// Describes the metrics and builds every handle with the current recorder.
    pub(crate) fn new() -> Self {
        describe();
        let get = |what: &'static str| histogram!(GET_DURATION, LABEL_WHAT => what);
        ReadPathMetrics {
            index_gets: get("index"),
            block_gets: get("block"),
            object_gets: get("object"),
            window: gauge!(READ_AHEAD_WINDOW),
            limiter_waiters: gauge!(LIMITER_WAITERS),
        }
    }

    /// Records one GET of `kind` that took `took`.
    pub(crate) fn get(&self, kind: GetKind, took: Duration) {
        match kind {
            GetKind::Index => &self.index_gets,
            GetKind::Block => &self.block_gets,
            GetKind::Object => &self.object_gets,
        }
        .record(took);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    #[test]
    fn every_read_path_metric_is_prefixed_described_and_given_a_unit() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        ::metrics::with_local_recorder(&recorder, || {
            let m = ReadPathMetrics::new();
            m.get(GetKind::Index, Duration::from_millis(1));
            m.window.set(1.0);
            m.limiter_waiters.set(0.0);
        });
        let snapshot = snapshotter.snapshot().into_vec();
        // Three histograms (one per `what`) and two gauges.
        assert_eq!(snapshot.len(), 5);
        for (key, unit, description, _) in snapshot {
            let name = key.key().name();
            assert!(name.starts_with("objstream_read_"), "{name}");
            assert!(description.is_some(), "{name} has no description");
            assert!(unit.is_some(), "{name} has no unit");
        }
    }

    #[test]
    fn each_kind_of_get_lands_in_its_own_series() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        ::metrics::with_local_recorder(&recorder, || {
            let m = ReadPathMetrics::new();
            m.get(GetKind::Block, Duration::from_millis(3));
            m.get(GetKind::Block, Duration::from_millis(5));
            m.get(GetKind::Object, Duration::from_millis(7));
        });
        let mut seen: Vec<(String, usize)> = snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .filter(|(key, ..)| key.key().name() == GET_DURATION)
            .map(|(key, _, _, value)| {
                let what = key
                    .key()
                    .labels()
                    .find(|l| l.key() == LABEL_WHAT)
                    .map(|l| l.value().to_string())
                    .unwrap_or_default();
                let n = match value {
                    DebugValue::Histogram(v) => v.len(),
                    _ => 0,
                };
                (what, n)
            })
            .collect();
        seen.sort();
        assert_eq!(
            seen,
            vec![
                ("block".to_string(), 2),
                ("index".to_string(), 0),
                ("object".to_string(), 1)
            ]
        );
    }
}
