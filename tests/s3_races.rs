//! Racing writers on one manifest, on every backend (a local directory and the S3 test server,
//! whose conditional PUTs are atomic under concurrency).
//!
//! - Three manifest writers (three nodes, three `ObjectStoreMetaStore`s) commit at once: every
//!   sequence number is won by exactly one of them, every loser reads the winner's record,
//!   re-validates and commits on top. Commit latency under contention is printed.
//! - Two stores race to open one stream: one wins, the other gets a clear "busy" error; the
//!   stream's offsets continue where the last owner committed.
//! - A node is fenced while it uploads: its commits lose to the new owner's, it fails loudly
//!   with a fenced error and never succeeds again, and the new owner sees a dense prefix of
//!   what the old one acknowledged.
//!
//! Contention stays at 2–3 writers: SeaweedFS serializes writers on one key with a lock whose
//! retry loop sleeps a second.

mod common;
mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Node;
use object_store::path::Path;
use object_store::ObjectStore;
use objstream::manifest::{decode_record, Change, MetaStore, ObjectStoreMetaStore, WriterToken};
use objstream::testing::{FaultyObjectStore, OpKind};
use objstream::{Epoch, ErrorKind, NodeId, Offset};

const WRITERS: u64 = 3;
const COMMITS_PER_WRITER: u64 = 12;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// One writer: starts its node, then creates streams and reserves ids, one commit at a time.
/// Returns the sequence numbers it won and how long each commit took.
async fn run_writer(
    meta: Arc<ObjectStoreMetaStore>,
    node: NodeId,
    start: Arc<tokio::sync::Barrier>,
) -> Vec<(u64, Duration)> {
    start.wait().await;
    let mut won = Vec::new();
    let t = Instant::now();
    let opened = meta.commit(Change::OpenNode { node }).await.unwrap();
    won.push((opened.seq, t.elapsed()));
    let objstream::manifest::Outcome::NodeEpoch(node_epoch) = opened.outcome else {
        panic!("no node epoch")
    };
    for i in 1..COMMITS_PER_WRITER {
        let change = if i % 2 == 0 {
            Change::CreateStream { node, node_epoch }
        } else {
            Change::AllocateObjectIds {
                node,
                node_epoch,
                count: 4,
            }
        };
        let t = Instant::now();
        let committed = meta.commit(change).await.unwrap_or_else(|e| {
            panic!("{node}: a lost race is re-validated and retried, not returned: {e}")
        });
        won.push((committed.seq, t.elapsed()));
    }
    won
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_manifest_writers_win_each_sequence_number_exactly_once() {
    for backend in support::backends() {
        let faulty = FaultyObjectStore::new(backend.store.clone());
        let objects: Arc<dyn ObjectStore> = Arc::new(faulty.clone());
        let start = Arc::new(tokio::sync::Barrier::new(WRITERS as usize));
        let mut tasks = Vec::new();
        for w in 0..WRITERS {
            let meta = ObjectStoreMetaStore::open(
                objects.clone(),
                backend.prefix.clone(),
                WriterToken(1000 + u128::from(w)),
                0,
            )
            .await
            .unwrap();
            tasks.push(tokio::spawn(run_writer(
                Arc::new(meta),
                NodeId(w + 1),
                start.clone(),
            )));
        }
        let started = Instant::now();
        let mut winners: BTreeMap<u64, u64> = BTreeMap::new();
        let mut latencies = Vec::new();
        for (w, task) in tasks.into_iter().enumerate() {
            for (seq, took) in task.await.unwrap() {
                assert!(
                    winners.insert(seq, w as u64).is_none(),
                    "{}: two writers claim record {seq}",
                    backend.name
                );
                latencies.push(took);
            }
        }
        let elapsed = started.elapsed();
        let total = WRITERS * COMMITS_PER_WRITER;
        assert_eq!(
            winners.keys().copied().collect::<Vec<_>>(),
            (1..=total).collect::<Vec<_>>(),
            "{}: dense sequence numbers, one winner each",
            backend.name
        );
        // Each record carries the token of the writer that claimed it.
        for (&seq, &w) in &winners {
            let key = Path::from(format!("{}/manifest/{seq:020}", backend.prefix));
            let bytes = faulty
                .inner()
                .get_opts(&key, Default::default())
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap();
            let record = decode_record(key.as_ref(), seq, &bytes).unwrap();
            assert_eq!(record.writer, WriterToken(1000 + u128::from(w)));
        }
        let lost_races = faulty.count_where(|c| {
            c.op == OpKind::Put
                && c.key.contains("/manifest/")
                && c.error
                    .as_deref()
                    .is_some_and(|e| e.contains("already exists"))
        });
        assert!(
            lost_races > 0,
            "{}: the writers never collided",
            backend.name
        );
        let fresh = ObjectStoreMetaStore::open(
            backend.store.clone(),
            backend.prefix.clone(),
            WriterToken(1),
            0,
        )
        .await
        .unwrap();
        let state = fresh.state().await.unwrap();
        assert_eq!(state.seq(), total);
        for w in 0..WRITERS {
            assert_eq!(
                state.streams_owned_by(NodeId(w + 1)).len() as u64,
                (COMMITS_PER_WRITER - 1) / 2,
                "each CreateStream applied exactly once"
            );
        }
        latencies.sort();
        println!(
            "{}: {WRITERS} writers, {total} commits in {:.2} s, {lost_races} lost races; commit p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            backend.name,
            elapsed.as_secs_f64(),
            percentile(&latencies, 0.5).as_secs_f64() * 1e3,
            percentile(&latencies, 0.99).as_secs_f64() * 1e3,
            latencies.last().unwrap().as_secs_f64() * 1e3,
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_stores_racing_to_open_a_stream_get_one_winner_and_one_clear_refusal() {
    for backend in support::backends() {
        let dir = tempfile::tempdir().unwrap();
        let first = Node::new(dir.path(), 1)
            .open(&backend.store, &backend.prefix)
            .await;
        let stream = first.create_stream().await.unwrap();
        let id = stream.id();
        let mut next = Offset(0);
        for n in 0..20 {
            next = stream
                .append(common::batch(id.0, n))
                .await
                .unwrap()
                .next_offset;
        }
        stream.close().await.unwrap();
        first.shutdown().await.unwrap();

        let a = Node::new(dir.path(), 2)
            .open(&backend.store, &backend.prefix)
            .await;
        let b = Node::new(dir.path(), 3)
            .open(&backend.store, &backend.prefix)
            .await;
        let mut n = 20;
        for round in 0..3 {
            let (ra, rb) = tokio::join!(a.open_stream(id), b.open_stream(id));
            let (winner, loser_err) = match (ra, rb) {
                (Ok(s), Err(e)) | (Err(e), Ok(s)) => (s, e),
                (Ok(_), Ok(_)) => panic!("{} round {round}: both stores opened {id}", backend.name),
                (Err(x), Err(y)) => panic!("{} round {round}: nobody won: {x}; {y}", backend.name),
            };
            assert_eq!(
                loser_err.kind(),
                ErrorKind::InvalidInput,
                "{}: the loser is told the stream is busy: {loser_err}",
                backend.name
            );
            assert!(loser_err.to_string().contains("is open on"), "{loser_err}");
            assert_eq!(winner.confirmed_offset().unwrap(), next, "{}", backend.name);
            assert_eq!(winner.epoch(), Epoch(2 + round));
            let r = winner.append(common::batch(id.0, n)).await.unwrap();
            assert_eq!(r.base_offset, next, "offsets continue at the committed end");
            next = r.next_offset;
            n += 1;
            winner.close().await.unwrap();
        }
        // Everything is there, dense, from a fresh node's objects.
        let reader = Node::new(dir.path(), 4)
            .open(&backend.store, &backend.prefix)
            .await;
        let s = reader.open_stream(id).await.unwrap();
        let mut pos = Offset(0);
        let mut k = 0;
        while pos < next {
            for b in s.fetch(pos, next, 1 << 20).await.unwrap() {
                assert_eq!(b.base_offset, pos);
                assert_eq!(b.batch.payload, common::payload(id.0, k));
                pos = b.next_offset();
                k += 1;
            }
        }
        assert_eq!(k, n);
        for store in [a, b, reader] {
            store.shutdown().await.unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_fenced_while_it_uploads_fails_loudly_and_the_new_owner_sees_a_dense_prefix() {
    for backend in support::backends() {
        let dir = tempfile::tempdir().unwrap();
        let old = Node::new(dir.path(), 1)
            .open(&backend.store, &backend.prefix)
            .await;
        let stream = old.create_stream().await.unwrap();
        let id = stream.id();
        // The old owner appends and flushes as fast as it can while the race runs.
        let writer = {
            let stream = stream.clone();
            let old = old.clone();
            tokio::spawn(async move {
                let mut acked: Vec<(Offset, u64)> = Vec::new();
                // Until the fence stops it (the test fails if a minute passes first).
                let deadline = Instant::now() + Duration::from_secs(60);
                for n in 0u64.. {
                    if Instant::now() > deadline {
                        break;
                    }
                    match stream.append(common::batch(id.0, n)).await {
                        Ok(r) => acked.push((r.base_offset, n)),
                        Err(e) => return (acked, Some(e)),
                    }
                    if n % 10 == 9 {
                        if let Err(e) = old.flush().await {
                            return (acked, Some(e));
                        }
                    }
                }
                (acked, None)
            })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        // Another controller fences node 1; node 2 then takes the stream over.
        let controller = ObjectStoreMetaStore::open(
            backend.store.clone(),
            backend.prefix.clone(),
            WriterToken(77),
            0,
        )
        .await
        .unwrap();
        let epoch = controller
            .refresh()
            .await
            .unwrap()
            .node(NodeId(1))
            .map(|n| n.epoch)
            .unwrap();
        controller
            .commit(Change::FenceNode {
                node: NodeId(1),
                epoch,
            })
            .await
            .unwrap();
        let new = Node::new(dir.path(), 2)
            .open(&backend.store, &backend.prefix)
            .await;
        let taken = new.open_stream(id).await.unwrap();
        let (acked, error) = writer.await.unwrap();
        let error = error.unwrap_or_else(|| {
            panic!(
                "{}: the fenced node went on acknowledging {} appends",
                backend.name,
                acked.len()
            )
        });
        assert_eq!(error.kind(), ErrorKind::Reopen, "{}: {error}", backend.name);
        assert!(
            stream.append(common::batch(id.0, 9999)).await.is_err(),
            "a fenced node never succeeds again"
        );
        // The new owner's stream holds a dense prefix of what the old one acknowledged.
        let end = taken.confirmed_offset().unwrap();
        let mut pos = Offset(0);
        let mut i = 0;
        while pos < end {
            for b in taken.fetch(pos, end, 1 << 20).await.unwrap() {
                let (at, n) = acked[i];
                assert_eq!(b.base_offset, at, "{}", backend.name);
                assert_eq!(b.batch.payload, common::payload(id.0, n));
                pos = b.next_offset();
                i += 1;
            }
        }
        println!(
            "{}: the old owner acknowledged {} appends before it was fenced; {} were committed",
            backend.name,
            acked.len(),
            i
        );
        new.shutdown().await.unwrap();
    }
}
