//! Retention: streams are trimmed by size and by age through `TrimStream`, at object part
//! granularity, keeping at least what the limits ask; the data below is then dropped by
//! compaction and collected after the grace.

mod common;

use common::{small_settings, Cluster};
use objstream::Offset;
use objstream_compaction::{Clock, CompactorSettings, Retention};

#[tokio::test]
async fn a_stream_over_its_size_limit_is_trimmed_keeping_at_least_the_limit() {
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
    let compactor = cluster.compactor(1_000, settings).await;
    let report = compactor.run_pass().await.unwrap();
    assert_eq!(report.trimmed_streams, 1);
    let state = cluster.state().await;
    let s = state.stream(limited).unwrap();
    assert!(s.start > Offset(0));
    assert_eq!(state.stream(unlimited).unwrap().start, Offset(0));
    // What remains holds at least the limit, by the model's payload bytes (stored bytes are
    // compressed, so the payload is at least as large).
    let kept: usize = cluster.model[&limited]
        .iter()
        .filter(|b| b.next_offset() > s.start)
        .map(|b| b.batch.payload.len())
        .sum();
    assert!(kept >= 8 << 10, "kept {kept} bytes");
    cluster.check_contents(&state).await;
    // Later passes drop what is below the trim, and collect it.
    for _ in 0..6 {
        compactor.run_pass().await.unwrap();
        cluster.clock.advance(small_settings().grace_period_ms);
    }
    let state = cluster.replayed().await;
    cluster.check_contents(&state).await;
    let s = state.stream(limited).unwrap();
    for (id, ..) in state.objects_covering(limited, Offset(0), s.end) {
        let o = state.object(id).unwrap();
        assert!(
            o.ranges
                .iter()
                .all(|r| r.stream != limited || r.end > s.start),
            "{id} still holds trimmed data"
        );
    }
}

#[tokio::test]
async fn a_stream_is_trimmed_past_the_parts_older_than_its_age_limit() {
    let mut cluster = Cluster::new().await;
    let s = cluster.create_stream().await;
    let now = cluster.clock.now_ms() as i64;
    let hour = 3_600_000i64;
    // Three old uploads, then two recent ones.
    for age in [30, 20, 10] {
        cluster.append_at(s, 3, 400, now - age * hour);
        cluster.upload().await;
    }
    cluster.append_at(s, 3, 400, now - hour / 2);
    cluster.upload().await;
    let recent_start = cluster.state().await.stream(s).unwrap().end;
    cluster.append_at(s, 3, 400, now);
    cluster.upload().await;
    let settings = CompactorSettings {
        retention: Retention {
            max_bytes: None,
            max_age_ms: Some(2 * hour as u64),
        },
        // Keep the objects apart so that the trim lands on an upload boundary.
        fanout: 64,
        max_objects_per_plan: 64,
        ..small_settings()
    };
    let compactor = cluster.compactor(1_000, settings).await;
    let report = compactor.run_pass().await.unwrap();
    assert_eq!(report.trimmed_streams, 1, "{report:?}");
    let state = cluster.state().await;
    assert_eq!(
        state.stream(s).unwrap().start,
        Offset(recent_start.get() - 3)
    );
    cluster.check_contents(&state).await;
    // A second pass finds nothing more to trim, and reads no part twice for it.
    let report = compactor.run_pass().await.unwrap();
    assert_eq!(report.trimmed_streams, 0);
}
