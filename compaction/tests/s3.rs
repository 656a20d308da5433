//! Compaction on the real S3 test server: conditional creates order the compactor's commits
//! against a writer's, a second compactor fences the first, and garbage goes after the grace.
//!
//! Needs the server, like every S3 test of the workspace: `scripts/test` starts it; by hand,
//! `scripts/s3-server.sh start && eval "$(scripts/s3-server.sh env)"`. Without it the test fails
//! rather than pass quietly.

mod common;

use common::{s3_store, small_settings, Cluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_on_s3_keeps_every_offset_and_fences_a_replaced_compactor() {
    let (store, prefix) = s3_store().expect(
        "OBJSTREAM_TEST_S3_ENDPOINT is not set: start scripts/s3-server.sh and eval its env",
    );
    let mut cluster = Cluster::on(store, prefix).await;
    let streams = [cluster.create_stream().await, cluster.create_stream().await];
    let first = cluster.compactor(1_000, small_settings()).await;
    let grace = small_settings().grace_period_ms;
    for round in 0..30usize {
        for (i, s) in streams.iter().enumerate() {
            cluster.append(*s, 1 + (round + i) % 4, 400 + 300 * i);
        }
        cluster.upload().await;
        if round % 3 == 0 {
            first.run_pass().await.unwrap();
            cluster.clock.advance(grace / 3);
        }
    }
    // Writer and compactor commit concurrently; both go through.
    let (_, pass) = tokio::join!(
        async {
            for s in streams {
                cluster.trim(s, objstream::Offset(5)).await;
            }
        },
        first.run_pass()
    );
    pass.unwrap();
    let second = cluster.compactor(1_001, small_settings()).await;
    assert!(first.run_pass().await.unwrap_err().is_fenced());
    for _ in 0..8 {
        second.run_pass().await.unwrap();
        cluster.clock.advance(grace);
    }
    let state = cluster.replayed().await;
    cluster.check_contents(&state).await;
    let referenced: Vec<_> = state.objects().map(|o| o.id).collect();
    assert_eq!(cluster.listed().await, referenced);
    assert!(referenced.len() < 12, "{} objects left", referenced.len());
}
