//! The compactor's metrics move with what it does: retention trims, committed replacements
//! (bytes and objects), garbage deleted after the grace and what waits for it, time throttled
//! by the bandwidth limiter, and passes counted by how they ended.
//!
//! Each test installs its own `DebuggingRecorder` as the thread's local recorder and runs the
//! cluster on a current-thread runtime inside it, so the compactor's handles register with that
//! recorder and tests running side by side never see each other's numbers. Time is paused, so
//! the bandwidth limiter's waits cost nothing.

mod common;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use common::{small_settings, Cluster};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use objstream_compaction::metrics as m;
use objstream_compaction::{PassReport, Retention, Step};

/// Runs `test` on a current-thread runtime with paused time under a fresh local recorder;
/// returns what the recorder saw at the end.
fn with_recorder<F, Fut>(test: F) -> Seen
where
    F: FnOnce(Snapshotter) -> Fut,
    Fut: Future<Output = ()>,
{
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    let inner = recorder.snapshotter();
    ::metrics::with_local_recorder(&recorder, || runtime.block_on(test(inner)));
    Seen::take(&snapshotter)
}

/// One snapshot of the recorder. A snapshot drains counters and histograms: a later one holds
/// only what moved since.
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

    fn find(&self, name: &str, labels: &[(&str, &str)]) -> &DebugValue {
        self.values
            .iter()
            .find(|(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(.., v)| v)
            .unwrap_or_else(|| panic!("{name} {labels:?} was not reported"))
    }

    fn counter(&self, name: &str) -> u64 {
        self.passes_or_counter(name, &[])
    }

    fn passes(&self, outcome: &str) -> u64 {
        self.passes_or_counter(m::PASSES, &[(m::LABEL_OUTCOME, outcome)])
    }

    fn passes_or_counter(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        match self.find(name, labels) {
            DebugValue::Counter(c) => *c,
            other => panic!("{name} is not a counter: {other:?}"),
        }
    }

    fn gauge(&self, name: &str) -> f64 {
        match self.find(name, &[]) {
            DebugValue::Gauge(g) => g.0,
            other => panic!("{name} is not a gauge: {other:?}"),
        }
    }

    fn samples(&self, name: &str) -> usize {
        match self.find(name, &[]) {
            DebugValue::Histogram(h) => h.len(),
            other => panic!("{name} is not a histogram: {other:?}"),
        }
    }
}

/// Two snapshots taken one after the other, added up.
struct Sum<'a>(&'a Seen, &'a Seen);

impl Sum<'_> {
    fn counter(&self, name: &str) -> u64 {
        self.0.counter(name) + self.1.counter(name)
    }

    fn passes(&self, outcome: &str) -> u64 {
        self.0.passes(outcome) + self.1.passes(outcome)
    }

    fn samples(&self, name: &str) -> usize {
        self.0.samples(name) + self.1.samples(name)
    }
}

/// What a run of passes reported, added up.
#[derive(Default)]
struct Totals {
    passes: u64,
    refused: u64,
    trimmed: u64,
    removed: u64,
    added: u64,
    read: u64,
    written: u64,
    deleted: u64,
    deleted_bytes: u64,
    collected: u64,
}

impl Totals {
    fn add(&mut self, r: &PassReport) {
        self.passes += 1;
        self.refused += u64::from(r.refused > 0);
        self.trimmed += r.trimmed_streams as u64;
        self.removed += r.objects_removed as u64;
        self.added += r.objects_added as u64;
        self.read += r.bytes_read;
        self.written += r.bytes_written;
        self.deleted += r.gc.deleted as u64;
        self.deleted_bytes += r.gc.deleted_bytes;
        self.collected += r.gc.collected as u64;
    }
}

#[test]
fn passes_report_trims_replacements_garbage_and_throttling() {
    let mut totals = Totals::default();
    let mut after_first_pass = None;
    let mut awaiting_after_first_pass = 0;
    let rest = with_recorder(|snapshotter| {
        let totals = &mut totals;
        let after_first = &mut after_first_pass;
        let awaiting = &mut awaiting_after_first_pass;
        async move {
            let mut cluster = Cluster::new().await;
            let limited = cluster.create_stream().await;
            let unlimited = cluster.create_stream().await;
            for _ in 0..12 {
                cluster.append(limited, 4, 500);
                cluster.append(unlimited, 4, 500);
                cluster.upload().await;
            }
            let mut settings = small_settings();
            settings.stream_retention.insert(
                limited.get(),
                Retention {
                    max_bytes: Some(8 << 10),
                    max_age_ms: None,
                },
            );
            // Well below what one pass reads and writes: the limiter has to make it wait.
            settings.bandwidth_bytes_per_sec = 16 << 10;
            let grace = settings.grace_period_ms;
            let compactor = cluster.compactor(1_000, settings).await;
            cluster.orphan().await; // a crashed upload: collected, then deleted

            let first = compactor.run_pass().await.unwrap();
            totals.add(&first);
            *awaiting = first.gc.awaiting_grace;
            *after_first = Some(Seen::take(&snapshotter));
            for _ in 0..6 {
                cluster.clock.advance(grace);
                totals.add(&compactor.run_pass().await.unwrap());
            }
            let state = cluster.replayed().await;
            cluster.check_contents(&state).await;
        }
    });
    let first = after_first_pass.expect("a snapshot after the first pass");
    let seen = Sum(&first, &rest);
    // The numbers agree with what the passes reported, and the work did happen.
    assert!(totals.trimmed >= 1);
    assert_eq!(seen.counter(m::STREAMS_TRIMMED), totals.trimmed);
    assert!(totals.removed > 0 && totals.added > 0);
    assert_eq!(seen.counter(m::OBJECTS_REPLACED), totals.removed);
    assert_eq!(seen.counter(m::OBJECTS_WRITTEN), totals.added);
    assert!(totals.read > 0 && totals.written > 0);
    assert_eq!(seen.counter(m::READ_BYTES), totals.read);
    assert_eq!(seen.counter(m::WRITTEN_BYTES), totals.written);
    assert!(totals.deleted > 0);
    assert_eq!(seen.counter(m::OBJECTS_DELETED), totals.deleted);
    assert!(totals.deleted_bytes > 0);
    assert_eq!(seen.counter(m::DELETED_BYTES), totals.deleted_bytes);
    assert!(totals.collected >= 1);
    assert_eq!(seen.counter(m::OBJECTS_COLLECTED), totals.collected);
    // Replaced objects wait for their grace after the first pass; the gauge says how many.
    assert!(awaiting_after_first_pass > 0);
    assert_eq!(
        first.gauge(m::OBJECTS_AWAITING_GRACE),
        awaiting_after_first_pass as f64
    );
    assert!(seen.counter(m::THROTTLED) > 0);
    assert_eq!(
        seen.passes("ok") + seen.passes("conflict"),
        totals.passes,
        "every pass is counted once"
    );
    assert_eq!(seen.passes("conflict"), totals.refused);
    assert_eq!(seen.passes("fenced") + seen.passes("error"), 0);
    assert_eq!(seen.samples(m::PASS_DURATION) as u64, totals.passes);
}

#[test]
fn failed_and_fenced_passes_are_counted_by_outcome() {
    let seen = with_recorder(|_| async {
        let mut cluster = Cluster::new().await;
        let s = cluster.create_stream().await;
        for _ in 0..3 {
            cluster.append(s, 4, 200);
            cluster.upload().await;
        }
        let stop_before_commit = Arc::new(|step: Step| step == Step::BeforeCommit);
        let first = cluster
            .compactor_with(1_000, small_settings(), stop_before_commit)
            .await;
        let err = first.run_pass().await.unwrap_err();
        assert!(!err.is_fenced(), "{err}");
        let _second = cluster.compactor(1_001, small_settings()).await;
        assert!(first.run_pass().await.unwrap_err().is_fenced());
        // Once fenced, calls return at once: they are not passes.
        assert!(first.run_pass().await.unwrap_err().is_fenced());
    });
    assert_eq!(seen.passes("error"), 1);
    assert_eq!(seen.passes("fenced"), 1);
    assert_eq!(seen.passes("ok"), 0);
    assert_eq!(seen.samples(m::PASS_DURATION), 2);
    // The stopped plan committed nothing: nothing is counted as replaced.
    assert_eq!(seen.counter(m::OBJECTS_REPLACED), 0);
    assert_eq!(seen.counter(m::OBJECTS_WRITTEN), 0);
}
