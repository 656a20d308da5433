//! Garbage collection and object counts: replaced objects outlive their replacement by the
//! grace period and no more than one pass; uploads that were never committed are found by LIST
//! and deleted after the same grace; a restarted compactor waits a whole grace again; after a
//! long seeded workload a stream's object count is logarithmic in its size.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{small_settings, try_read_stream, Cluster};
use object_store::{ObjectStoreExt, PutPayload};
use objstream::keys::object_path;
use objstream::{ObjectId, StreamId};
use objstream_compaction::Clock;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

#[tokio::test]
async fn replaced_objects_stay_readable_through_the_grace_and_are_deleted_after_it() {
    let mut cluster = Cluster::new().await;
    let s = cluster.create_stream().await;
    for _ in 0..3 {
        cluster.append(s, 4, 200);
        cluster.upload().await;
    }
    // Past the objects' last-modified times: only the grace since replacement matters here.
    cluster.clock.advance(1_000);
    let compactor = cluster.compactor(1_000, small_settings()).await;
    let before = cluster.state().await;
    let old: Vec<ObjectId> = before.objects().map(|o| o.id).collect();
    let report = compactor.run_pass().await.unwrap();
    assert_eq!(report.objects_removed, 3, "{report:?}");
    let after = cluster.state().await;
    assert!(old.iter().all(|id| after.object(*id).is_none()));

    let grace = small_settings().grace_period_ms;
    // A reader that planned on the old layout keeps reading it until the grace ends.
    cluster.clock.advance(grace - 1);
    compactor.run_pass().await.unwrap();
    try_read_stream(&cluster.objects, &cluster.prefix, &before, s)
        .await
        .expect("the old layout is readable within the grace");
    cluster.check_contents(&after).await;

    cluster.clock.advance(1);
    let report = compactor.run_pass().await.unwrap();
    assert_eq!(report.gc.deleted, 3, "{report:?}");
    let listed: BTreeSet<ObjectId> = cluster.listed().await.into_iter().collect();
    assert!(old.iter().all(|id| !listed.contains(id)));
    // The old layout is gone for good; the new one reads the same.
    assert!(
        try_read_stream(&cluster.objects, &cluster.prefix, &before, s)
            .await
            .is_err()
    );
    let now = cluster.state().await;
    cluster.check_contents(&now).await;
}

#[tokio::test]
async fn an_upload_that_was_never_committed_is_deleted_after_the_grace_and_foreign_keys_are_not() {
    let mut cluster = Cluster::new().await;
    let s = cluster.create_stream().await;
    cluster.append(s, 2, 100);
    cluster.upload().await;
    let compactor = cluster.compactor(1_000, small_settings()).await;
    let lost = cluster.orphan().await;
    // An id the manifest never allocated is not this cluster's to judge.
    let foreign = ObjectId(1 << 40);
    cluster
        .objects
        .put(
            &object_path(&cluster.prefix, foreign),
            PutPayload::from_static(b"?"),
        )
        .await
        .unwrap();

    let report = compactor.run_pass().await.unwrap();
    assert_eq!(report.gc.unreferenced, 1, "{report:?}");
    assert_eq!(
        report.gc.deleted, 0,
        "an orphan younger than the grace stays"
    );
    let grace = small_settings().grace_period_ms;
    cluster.clock.advance(grace + 1_000);
    let report = compactor.run_pass().await.unwrap();
    assert_eq!(report.gc.deleted, 1, "{report:?}");
    let listed = cluster.listed().await;
    assert!(!listed.contains(&lost));
    assert!(listed.contains(&foreign));
    let now = cluster.state().await;
    cluster.check_contents(&now).await;
}

#[tokio::test]
async fn a_restarted_compactor_waits_a_whole_grace_before_deleting_what_it_finds() {
    let mut cluster = Cluster::new().await;
    let s = cluster.create_stream().await;
    for _ in 0..3 {
        cluster.append(s, 4, 200);
        cluster.upload().await;
    }
    let grace = small_settings().grace_period_ms;
    // The objects are old by their last-modified time before they are replaced.
    cluster.clock.advance(3 * grace);
    let before = cluster.state().await;
    let first = cluster.compactor(1_000, small_settings()).await;
    assert_eq!(first.run_pass().await.unwrap().objects_removed, 3);
    drop(first);

    cluster.clock.advance(grace / 2);
    let second = cluster.compactor(1_001, small_settings()).await;
    let report = second.run_pass().await.unwrap();
    assert_eq!(report.gc.unreferenced, 3);
    assert_eq!(report.gc.deleted, 0, "first seen now: the grace starts now");
    cluster.clock.advance(grace - 1);
    assert_eq!(second.run_pass().await.unwrap().gc.deleted, 0);
    try_read_stream(&cluster.objects, &cluster.prefix, &before, s)
        .await
        .expect("still readable");
    cluster.clock.advance(1);
    assert_eq!(second.run_pass().await.unwrap().gc.deleted, 3);
}

/// Distinct objects holding data of `stream` at or above its start.
fn objects_of(state: &objstream::manifest::ManifestState, stream: StreamId) -> usize {
    let s = state.stream(stream).unwrap();
    state
        .objects_covering(stream, s.start, s.end)
        .iter()
        .map(|(id, ..)| *id)
        .collect::<BTreeSet<_>>()
        .len()
}

#[tokio::test]
async fn object_counts_stay_logarithmic_and_garbage_never_outlives_the_grace_by_a_pass() {
    let settings = small_settings();
    let grace = settings.grace_period_ms;
    let interval = settings.pass_interval_ms;
    let mut cluster = Cluster::new().await;
    let streams = [
        cluster.create_stream().await,
        cluster.create_stream().await,
        cluster.create_stream().await,
    ];
    let compactor = cluster.compactor(1_000, settings.clone()).await;
    let mut rng = SmallRng::seed_from_u64(0x5eed);
    // When each unreferenced object was first observed unreferenced (the clock stands still
    // during a pass, so that is when it left the manifest).
    let mut unreferenced_since: BTreeMap<ObjectId, u64> = BTreeMap::new();
    let mut uploads = 0;
    let mut bytes: BTreeMap<StreamId, u64> = BTreeMap::new();
    for round in 0..400 {
        // Stream 0 is busy, stream 1 steady, stream 2 trickles.
        for (i, s) in streams.iter().enumerate() {
            let n = match i {
                0 => rng.random_range(1..6),
                1 => rng.random_range(0..3),
                _ => usize::from(round % 7 == 0),
            };
            let len = rng.random_range(50..900);
            cluster.append(*s, n, len);
            *bytes.entry(*s).or_default() += (n * len) as u64;
        }
        cluster.upload().await;
        uploads += 1;
        compactor.run_pass().await.unwrap();
        let now = cluster.clock.now_ms();
        let state = cluster.state().await;
        let listed = cluster.listed().await;
        let live: BTreeSet<ObjectId> = listed.iter().copied().collect();
        unreferenced_since.retain(|id, _| live.contains(id));
        for id in listed {
            if state.object(id).is_none() {
                let since = *unreferenced_since.entry(id).or_insert(now);
                assert!(
                    now - since <= grace + interval,
                    "{id} unreferenced since {since} still exists at {now}"
                );
            }
        }
        cluster.clock.advance(interval);
    }
    let state = cluster.state().await;
    cluster.check_contents(&state).await;
    for s in streams {
        let count = objects_of(&state, s);
        let size = bytes[&s];
        // Stream objects: logarithmic (base fanout) in the size, plus fewer than fanout small
        // ones; stream set objects: fewer than fanout per tier below the split size.
        let fanout = settings.fanout as u64;
        let ratio = (size as f64 / settings.min_object_bytes as f64).max(1.0);
        let stream_objects = (ratio.ln() / (fanout as f64).ln()).ceil() as u64 + fanout;
        let tiers = u64::from(settings.tier(settings.max_stream_set_object_bytes)) + 1;
        let bound = stream_objects + (fanout - 1) * tiers;
        println!("{s}: {size} bytes in {count} objects after {uploads} uploads (bound {bound})");
        assert!(
            count as u64 <= bound,
            "{s}: {count} objects for {size} bytes, more than {bound}"
        );
    }
}
