//! Metric names, their descriptions, and the handles the store updates.
//!
//! The store reports through the [`metrics`] facade and installs no exporter: an embedder that
//! wants the numbers installs a recorder (Prometheus, StatsD, OpenTelemetry, …) **before**
//! [`Store::open`](crate::Store::open), because every handle is registered once when the store
//! opens and keeps pointing at the recorder that was current then. Without a recorder every
//! update is a no-op.
//!
//! Every name is a constant here, prefixed `objstream_`, and [`describe`] registers each one's
//! unit and description. The WAL backends report from inside through the names of
//! [`objstream_wal::metrics`] (prefixed `objstream_wal_`), which [`describe`] registers too.
//! `docs/metrics.md` lists them all with what each tells an operator.
//!
//! Hot-path cost: the handles ([`metrics::Counter`], [`metrics::Histogram`], [`metrics::Gauge`])
//! are built with their labels when the store (or [`MeteredObjectStore`]) is created, so an
//! append, a fetch or an object-store request updates a handle and allocates nothing.
//!
//! Read-path numbers come from [`ReadStats`]: they are counted by the read path and published
//! here as absolute values (cumulative counts as counters, held bytes and ratios as gauges) on
//! every [`Store::read_stats`](crate::Store::read_stats) call and on the upload task's timer.
//!
//! [`MeteredObjectStore`]: crate::metered_store::MeteredObjectStore

use std::time::Duration;

use ::metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Counter,
    Gauge, Histogram, Unit,
};

use crate::read::ReadStats;

/// Append latency, from the `append` call to durability in the WAL. Label [`LABEL_WAL`].
pub const APPEND_DURATION: &str = "objstream_append_duration_seconds";
/// Payload bytes of acknowledged (durable) appends.
pub const APPENDED_BYTES: &str = "objstream_appended_bytes_total";
/// Records of acknowledged (durable) appends.
pub const APPENDED_RECORDS: &str = "objstream_appended_records_total";
/// Fetch latency, from the `fetch` call to the batches in hand.
pub const FETCH_DURATION: &str = "objstream_fetch_duration_seconds";
/// Payload bytes returned by fetches.
pub const FETCHED_BYTES: &str = "objstream_fetched_bytes_total";

/// Upload latency: from sealing a part of the log cache to every object of it stored.
pub const UPLOAD_DURATION: &str = "objstream_upload_duration_seconds";
/// Commit latency: from an upload's objects stored to their manifest record written.
pub const COMMIT_DURATION: &str = "objstream_commit_duration_seconds";
/// Upload commits retried after a transient manifest error.
pub const COMMIT_RETRIES: &str = "objstream_commit_retries_total";
/// Uploads sent again under fresh ids because the garbage collector collected their ids while
/// their commit was held up.
pub const REUPLOADS: &str = "objstream_upload_reuploads_total";
/// Bytes acknowledged but not yet committed to objects (what a crash would replay).
pub const UPLOAD_PENDING_BYTES: &str = "objstream_upload_pending_bytes";
/// Uploads in flight (sealed, not yet committed).
pub const UPLOADS_IN_FLIGHT: &str = "objstream_uploads_in_flight";
/// Objects uploaded by the upload pipeline and by takeovers. Label [`LABEL_KIND`].
pub const OBJECTS_UPLOADED: &str = "objstream_objects_uploaded_total";
/// Bytes of those objects (encoded: blocks, index and footer).
pub const UPLOADED_BYTES: &str = "objstream_uploaded_bytes_total";

/// Manifest records written. Label [`LABEL_CHANGE`].
pub const MANIFEST_COMMITS: &str = "objstream_manifest_commits_total";
/// Manifest commit latency, including lost races and retries.
pub const MANIFEST_COMMIT_DURATION: &str = "objstream_manifest_commit_duration_seconds";
/// Manifest creates that did not win their sequence number. Label [`LABEL_REASON`].
pub const MANIFEST_CONFLICTS: &str = "objstream_manifest_conflicts_total";

/// Object-store requests. Labels [`LABEL_OP`] and [`LABEL_OUTCOME`].
pub const OBJECT_STORE_REQUESTS: &str = "objstream_object_store_requests_total";
/// Object-store request latency (to the response head for GETs). Label [`LABEL_OP`].
pub const OBJECT_STORE_REQUEST_DURATION: &str = "objstream_object_store_request_duration_seconds";
/// Bytes sent to the object store (PUT bodies and multipart parts).
pub const OBJECT_STORE_SENT_BYTES: &str = "objstream_object_store_sent_bytes_total";
/// Bytes the object store answered GETs with (the length of each returned range).
pub const OBJECT_STORE_RECEIVED_BYTES: &str = "objstream_object_store_received_bytes_total";

/// Fencing events. Label [`LABEL_EVENT`].
pub const FENCED: &str = "objstream_fenced_total";

/// Recoveries finished. Label [`LABEL_KIND`] (`restart` or `takeover`).
pub const RECOVERIES: &str = "objstream_recoveries_total";
/// Recovery duration. Label [`LABEL_KIND`].
pub const RECOVERY_DURATION: &str = "objstream_recovery_duration_seconds";
/// Payload bytes a recovery found in a WAL and committed to objects. Label [`LABEL_KIND`].
pub const RECOVERED_BYTES: &str = "objstream_recovered_bytes_total";
/// Batches a recovery found in a WAL and committed to objects. Label [`LABEL_KIND`].
pub const RECOVERED_BATCHES: &str = "objstream_recovered_batches_total";

/// Read lookups a cache tier answered. Label [`LABEL_TIER`] (`log`, `memory`, `disk`, `index`).
pub const READ_CACHE_HITS: &str = "objstream_read_cache_hits_total";
/// Read lookups a tier could not answer. Label [`LABEL_TIER`] (`log`, `block`, `index`).
pub const READ_CACHE_MISSES: &str = "objstream_read_cache_misses_total";
/// Bytes a tier holds now. Label [`LABEL_TIER`] (`log`, `memory`).
pub const READ_CACHE_HELD_BYTES: &str = "objstream_read_cache_held_bytes";
/// Bytes written to the block cache's disk tier.
pub const READ_CACHE_DISK_WRITTEN_BYTES: &str = "objstream_read_cache_disk_written_bytes_total";
/// GETs the read path sent to object storage (indexes, blocks, read-ahead).
pub const READ_OBJECT_GETS: &str = "objstream_read_object_gets_total";
/// Bytes those GETs returned.
pub const READ_OBJECT_BYTES: &str = "objstream_read_object_bytes_total";
/// Read-ahead bytes. Label [`LABEL_USE`] (`fetched`, `used`, `wasted`).
pub const READ_AHEAD_BYTES: &str = "objstream_read_ahead_bytes_total";
/// Share of read-ahead bytes that left memory unused (0 to 1).
pub const READ_AHEAD_WASTE_RATIO: &str = "objstream_read_ahead_waste_ratio";
/// Time catch-up reads and read-ahead waited for the bandwidth limiter, in milliseconds.
pub const READ_THROTTLED: &str = "objstream_read_throttled_milliseconds_total";

pub use crate::read::metrics::{
    GET_DURATION as READ_GET_DURATION, LABEL_WHAT, LIMITER_WAITERS as READ_LIMITER_WAITERS,
    READ_AHEAD_WINDOW,
};

/// Label: the WAL backend, `file`, `block`, `object`, or `custom` (a WAL the embedder passed).
pub const LABEL_WAL: &str = "wal";
/// Label: an object's kind (`stream_set`, `stream`) or a recovery's (`restart`, `takeover`).
pub const LABEL_KIND: &str = "kind";
/// Label: a manifest change (`commit_objects`, `open_stream`, …).
pub const LABEL_CHANGE: &str = "change";
/// Label: why a manifest create lost (`lost_race`: another writer took the number; `refused`:
/// the store refused the conditional create and nothing is there).
pub const LABEL_REASON: &str = "reason";
/// Label: an object-store operation (see [`crate::metered_store::Op`]).
pub const LABEL_OP: &str = "op";
/// Label: an object-store outcome (see [`crate::metered_store::Outcome`]).
pub const LABEL_OUTCOME: &str = "outcome";
/// Label: a fencing event (`append`, `node`, `wal`).
pub const LABEL_EVENT: &str = "event";
/// Label: a read tier.
pub const LABEL_TIER: &str = "tier";
/// Label: what became of read-ahead bytes.
pub const LABEL_USE: &str = "use";

/// Registers the unit and description of every metric with the current recorder, the WAL
/// backends' (`objstream_wal::metrics`) included. The store calls it when it opens; calling it
/// again is harmless.
pub fn describe() {
    objstream_wal::metrics::describe();
    crate::read::metrics::describe();
    describe_histogram!(
        APPEND_DURATION,
        Unit::Seconds,
        "Append latency from the call to durability in the WAL, by WAL backend"
    );
    describe_counter!(
        APPENDED_BYTES,
        Unit::Bytes,
        "Payload bytes of acknowledged appends"
    );
    describe_counter!(
        APPENDED_RECORDS,
        Unit::Count,
        "Records of acknowledged appends"
    );
    describe_histogram!(
        FETCH_DURATION,
        Unit::Seconds,
        "Fetch latency from the call to the batches in hand"
    );
    describe_counter!(
        FETCHED_BYTES,
        Unit::Bytes,
        "Payload bytes returned by fetches"
    );
    describe_histogram!(
        UPLOAD_DURATION,
        Unit::Seconds,
        "From sealing log cache data to every object of it stored"
    );
    describe_histogram!(
        COMMIT_DURATION,
        Unit::Seconds,
        "From an upload's objects stored to their manifest record written"
    );
    describe_counter!(
        COMMIT_RETRIES,
        Unit::Count,
        "Upload commits retried after a transient manifest error"
    );
    describe_counter!(
        REUPLOADS,
        Unit::Count,
        "Uploads sent again under fresh ids because the garbage collector collected their ids while their commit was held up"
    );
    describe_gauge!(
        UPLOAD_PENDING_BYTES,
        Unit::Bytes,
        "Bytes acknowledged but not yet committed to objects"
    );
    describe_gauge!(
        UPLOADS_IN_FLIGHT,
        Unit::Count,
        "Uploads sealed and not yet committed"
    );
    describe_counter!(
        OBJECTS_UPLOADED,
        Unit::Count,
        "Objects uploaded, by kind (stream_set, stream)"
    );
    describe_counter!(
        UPLOADED_BYTES,
        Unit::Bytes,
        "Encoded bytes of uploaded objects"
    );
    describe_counter!(
        MANIFEST_COMMITS,
        Unit::Count,
        "Manifest records written, by change"
    );
    describe_histogram!(
        MANIFEST_COMMIT_DURATION,
        Unit::Seconds,
        "Manifest commit latency, lost races and retries included"
    );
    describe_counter!(
        MANIFEST_CONFLICTS,
        Unit::Count,
        "Manifest creates that did not win their sequence number, by reason"
    );
    describe_counter!(
        OBJECT_STORE_REQUESTS,
        Unit::Count,
        "Object-store requests by operation and outcome"
    );
    describe_histogram!(
        OBJECT_STORE_REQUEST_DURATION,
        Unit::Seconds,
        "Object-store request latency by operation"
    );
    describe_counter!(
        OBJECT_STORE_SENT_BYTES,
        Unit::Bytes,
        "Bytes sent to the object store"
    );
    describe_counter!(
        OBJECT_STORE_RECEIVED_BYTES,
        Unit::Bytes,
        "Bytes the object store answered GETs with"
    );
    describe_counter!(
        FENCED,
        Unit::Count,
        "Fencing events: appends failed fenced, this node fenced, its WAL fenced"
    );
    describe_counter!(
        RECOVERIES,
        Unit::Count,
        "Recoveries finished, by kind (restart, takeover)"
    );
    describe_histogram!(
        RECOVERY_DURATION,
        Unit::Seconds,
        "Recovery duration, by kind"
    );
    describe_counter!(
        RECOVERED_BYTES,
        Unit::Bytes,
        "Payload bytes recovered from a WAL into objects, by kind"
    );
    describe_counter!(
        RECOVERED_BATCHES,
        Unit::Count,
        "Batches recovered from a WAL into objects, by kind"
    );
    describe_counter!(
        READ_CACHE_HITS,
        Unit::Count,
        "Read lookups answered by a cache tier"
    );
    describe_counter!(
        READ_CACHE_MISSES,
        Unit::Count,
        "Read lookups a tier could not answer"
    );
    describe_gauge!(
        READ_CACHE_HELD_BYTES,
        Unit::Bytes,
        "Bytes a read tier holds now"
    );
    describe_counter!(
        READ_CACHE_DISK_WRITTEN_BYTES,
        Unit::Bytes,
        "Bytes written to the block cache's disk tier"
    );
    describe_counter!(
        READ_OBJECT_GETS,
        Unit::Count,
        "GETs the read path sent to object storage"
    );
    describe_counter!(
        READ_OBJECT_BYTES,
        Unit::Bytes,
        "Bytes the read path's GETs returned"
    );
    describe_counter!(
        READ_AHEAD_BYTES,
        Unit::Bytes,
        "Read-ahead bytes fetched, used by a later fetch, and wasted"
    );
    describe_gauge!(
        READ_AHEAD_WASTE_RATIO,
        Unit::Count,
        "Share of read-ahead bytes that left memory unused"
    );
    describe_counter!(
        READ_THROTTLED,
        Unit::Milliseconds,
        "Time catch-up reads and read-ahead waited for the bandwidth limiter"
    );
}

/// One kind of recovery's handles.
pub(crate) struct RecoveryMetrics {
    count: Counter,
    duration: Histogram,
    bytes: Counter,
    batches: Counter,
}

impl RecoveryMetrics {
    fn new(kind: &'static str) -> Self {
        RecoveryMetrics {
            count: counter!(RECOVERIES, LABEL_KIND => kind),
            duration: histogram!(RECOVERY_DURATION, LABEL_KIND => kind),
            bytes: counter!(RECOVERED_BYTES, LABEL_KIND => kind),
            batches: counter!(RECOVERED_BATCHES, LABEL_KIND => kind),
        }
    }

    /// Records a finished recovery.
    pub(crate) fn record(&self, took: Duration, batches: u64, bytes: u64) {
        self.count.increment(1);
        self.duration.record(took);
        self.batches.increment(batches);
        self.bytes.increment(bytes);
    }
}

/// The read path's numbers, published from [`ReadStats`].
pub(crate) struct ReadMetrics {
    log_hits: Counter,
    memory_hits: Counter,
    disk_hits: Counter,
    index_hits: Counter,
    log_misses: Counter,
    block_misses: Counter,
    index_misses: Counter,
    log_held: Gauge,
    memory_held: Gauge,
    disk_written: Counter,
    object_gets: Counter,
    object_bytes: Counter,
    ahead_fetched: Counter,
    ahead_used: Counter,
    ahead_wasted: Counter,
    ahead_waste_ratio: Gauge,
    throttled: Counter,
}

impl ReadMetrics {
    fn new() -> Self {
        let hits = |tier: &'static str| counter!(READ_CACHE_HITS, LABEL_TIER => tier);
        let misses = |tier: &'static str| counter!(READ_CACHE_MISSES, LABEL_TIER => tier);
        let ahead = |what: &'static str| counter!(READ_AHEAD_BYTES, LABEL_USE => what);
        ReadMetrics {
            log_hits: hits("log"),
            memory_hits: hits("memory"),
            disk_hits: hits("disk"),
            index_hits: hits("index"),
            log_misses: misses("log"),
            block_misses: misses("block"),
            index_misses: misses("index"),
            log_held: gauge!(READ_CACHE_HELD_BYTES, LABEL_TIER => "log"),
            memory_held: gauge!(READ_CACHE_HELD_BYTES, LABEL_TIER => "memory"),
            disk_written: counter!(READ_CACHE_DISK_WRITTEN_BYTES),
            object_gets: counter!(READ_OBJECT_GETS),
            object_bytes: counter!(READ_OBJECT_BYTES),
            ahead_fetched: ahead("fetched"),
            ahead_used: ahead("used"),
            ahead_wasted: ahead("wasted"),
            ahead_waste_ratio: gauge!(READ_AHEAD_WASTE_RATIO),
            throttled: counter!(READ_THROTTLED),
        }
    }

    /// Publishes a snapshot: cumulative numbers as absolute counter values, the rest as gauges.
    pub(crate) fn publish(&self, s: &ReadStats) {
        self.log_hits.absolute(s.log_cache_hits);
        self.memory_hits.absolute(s.memory_hits);
        self.disk_hits.absolute(s.disk_hits);
        self.index_hits.absolute(s.index_hits);
        self.log_misses.absolute(s.log_cache_misses);
        self.block_misses.absolute(s.block_misses);
        self.index_misses.absolute(s.index_misses);
        self.log_held.set(s.log_cache_held_bytes as f64);
        self.memory_held.set(s.memory_held_bytes as f64);
        self.disk_written.absolute(s.disk_write_bytes);
        self.object_gets.absolute(s.object_gets);
        self.object_bytes.absolute(s.object_bytes);
        self.ahead_fetched.absolute(s.read_ahead_bytes);
        self.ahead_used.absolute(s.read_ahead_used_bytes);
        self.ahead_wasted.absolute(s.read_ahead_wasted_bytes);
        self.ahead_waste_ratio.set(s.read_ahead_waste_ratio());
        self.throttled.absolute(s.throttled_ms);
    }
}

/// Every handle a store updates, registered once when it opens.
pub(crate) struct StoreMetrics {
    pub append_duration: Histogram,
    pub appended_bytes: Counter,
    pub appended_records: Counter,
    pub fetch_duration: Histogram,
    pub fetched_bytes: Counter,
    pub upload_duration: Histogram,
    pub commit_duration: Histogram,
    pub commit_retries: Counter,
    pub reuploads: Counter,
    pub pending_bytes: Gauge,
    pub uploads_in_flight: Gauge,
    pub stream_set_objects: Counter,
    pub stream_objects: Counter,
    pub uploaded_bytes: Counter,
    pub append_fenced: Counter,
    pub node_fenced: Counter,
    pub wal_fenced: Counter,
    pub restart: RecoveryMetrics,
    pub takeover: RecoveryMetrics,
    pub read: ReadMetrics,
}

impl StoreMetrics {
    /// Registers the handles with the current recorder; `wal` names the WAL backend.
    pub(crate) fn new(wal: &'static str) -> Self {
        describe();
        let fenced = |event: &'static str| counter!(FENCED, LABEL_EVENT => event);
        StoreMetrics {
            append_duration: histogram!(APPEND_DURATION, LABEL_WAL => wal),
            appended_bytes: counter!(APPENDED_BYTES),
            appended_records: counter!(APPENDED_RECORDS),
            fetch_duration: histogram!(FETCH_DURATION),
            fetched_bytes: counter!(FETCHED_BYTES),
            upload_duration: histogram!(UPLOAD_DURATION),
            commit_duration: histogram!(COMMIT_DURATION),
            commit_retries: counter!(COMMIT_RETRIES),
            reuploads: counter!(REUPLOADS),
            pending_bytes: gauge!(UPLOAD_PENDING_BYTES),
            uploads_in_flight: gauge!(UPLOADS_IN_FLIGHT),
            stream_set_objects: counter!(OBJECTS_UPLOADED, LABEL_KIND => "stream_set"),
            stream_objects: counter!(OBJECTS_UPLOADED, LABEL_KIND => "stream"),
            uploaded_bytes: counter!(UPLOADED_BYTES),
            append_fenced: fenced("append"),
            node_fenced: fenced("node"),
            wal_fenced: fenced("wal"),
            restart: RecoveryMetrics::new("restart"),
            takeover: RecoveryMetrics::new("takeover"),
            read: ReadMetrics::new(),
        }
    }

    /// Counts one uploaded object.
    pub(crate) fn object_uploaded(&self, kind: crate::manifest::ObjectKind, bytes: usize) {
        match kind {
            crate::manifest::ObjectKind::Stream => self.stream_objects.increment(1),
            _ => self.stream_set_objects.increment(1),
        }
        self.uploaded_bytes.increment(bytes as u64);
    }
}

/// The handles of a manifest log, registered when it opens.
pub(crate) struct ManifestMetrics {
    pub commit_duration: Histogram,
    pub lost_race: Counter,
    pub refused: Counter,
}

impl ManifestMetrics {
    pub(crate) fn new() -> Self {
        ManifestMetrics {
            commit_duration: histogram!(MANIFEST_COMMIT_DURATION),
            lost_race: counter!(MANIFEST_CONFLICTS, LABEL_REASON => "lost_race"),
            refused: counter!(MANIFEST_CONFLICTS, LABEL_REASON => "refused"),
        }
    }

    /// Counts a written record of `change` (a kind name; registered per commit, off the hot
    /// path: commits are batched per upload).
    pub(crate) fn committed(&self, change: &'static str) {
        counter!(MANIFEST_COMMITS, LABEL_CHANGE => change).increment(1);
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
            let store = StoreMetrics::new("file");
            let manifest = ManifestMetrics::new();
            store.appended_bytes.increment(1);
            manifest.committed("open_node");
        });
        let snapshot = snapshotter.snapshot().into_vec();
        assert!(snapshot.len() > 30);
        for (key, unit, description, _) in snapshot {
            let name = key.key().name();
            assert!(name.starts_with("objstream_"), "{name}");
            assert!(description.is_some(), "{name} has no description");
            assert!(unit.is_some(), "{name} has no unit");
        }
    }

    #[test]
    fn read_stats_publish_as_absolute_values() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        ::metrics::with_local_recorder(&recorder, || {
            let read = ReadMetrics::new();
            let mut stats = ReadStats {
                memory_hits: 5,
                read_ahead_bytes: 100,
                read_ahead_wasted_bytes: 25,
                ..ReadStats::default()
            };
            read.publish(&stats);
            stats.memory_hits = 7;
            read.publish(&stats);
        });
        // A snapshot drains what it reads: take one and look at both values in it.
        let snapshot = snapshotter.snapshot().into_vec();
        let hits: u64 = snapshot
            .iter()
            .filter(|(k, ..)| k.key().name() == READ_CACHE_HITS)
            .map(|(.., v)| match v {
                DebugValue::Counter(c) => *c,
                _ => 0,
            })
            .sum();
        assert_eq!(hits, 7);
        let ratio = snapshot
            .into_iter()
            .find(|(k, ..)| k.key().name() == READ_AHEAD_WASTE_RATIO)
            .map(|(.., v)| v);
        assert!(matches!(ratio, Some(DebugValue::Gauge(g)) if g.0 == 0.25));
    }
}
