//! G4: a reader tailing a stream while a writer keeps many appends in flight never sees a hole,
//! never sees bytes other than what was appended, never sees an offset whose append later fails,
//! and always sees an append once it is acknowledged (read your writes).

mod common;
mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use common::{payload, Node};
use futures::stream::{FuturesOrdered, StreamExt};
use objstream::{Offset, RecordBatch};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tailing_reader_sees_no_hole_and_nothing_unacknowledged() {
    for backend in support::backends() {
        let dir = tempfile::tempdir().unwrap();
        // A small log cache: the reader's walk crosses from objects into the cache and back
        // as entries are evicted under it.
        let mut node = Node::new(dir.path(), 1);
        node.settings.log_cache_bytes = 384 << 10;
        node.settings.max_batch_bytes = 64 << 10;
        let store = node.open(&backend.store, &backend.prefix).await;
        let s = Arc::new(store.create_stream().await.unwrap());
        let acked = Arc::new(AtomicU64::new(0));
        let done = Arc::new(AtomicBool::new(false));

        let reader = {
            let (s, acked, done) = (s.clone(), acked.clone(), done.clone());
            tokio::spawn(async move {
                let mut pos = Offset(0);
                let mut reads = 0u64;
                loop {
                    let finished = done.load(Ordering::SeqCst);
                    // Anything acknowledged before this point must be visible now.
                    let must_see = acked.load(Ordering::SeqCst);
                    let confirmed = s.confirmed_offset().unwrap();
                    assert!(
                        confirmed.0 >= must_see,
                        "acknowledged {must_see} but confirmed {confirmed}"
                    );
                    while pos < confirmed {
                        let got = s.fetch(pos, confirmed, 32 << 10).await.unwrap();
                        assert!(
                            !got.is_empty(),
                            "nothing at {pos} below the confirmed {confirmed}"
                        );
                        for b in got {
                            assert!(b.base_offset <= pos && b.next_offset() > pos);
                            assert_eq!(b.base_offset, pos, "a hole or an overlap at {pos}");
                            assert_eq!(b.batch.payload, payload(0, pos.0), "bytes at {pos}");
                            pos = b.next_offset();
                        }
                        reads += 1;
                    }
                    if finished {
                        return (pos, reads);
                    }
                    tokio::task::yield_now().await;
                }
            })
        };

        let mut in_flight = FuturesOrdered::new();
        let mut next = Offset(0);
        for n in 0..1500u64 {
            let count = 1 + (n % 4) as u32;
            in_flight.push_back(s.append_if(RecordBatch::new(count, 0, payload(0, next.0)), next));
            next = next.add(u64::from(count));
            while in_flight.len() > 32 {
                let r = in_flight.next().await.unwrap().unwrap();
                acked.fetch_max(r.next_offset.0, Ordering::SeqCst);
            }
        }
        while let Some(r) = in_flight.next().await {
            acked.fetch_max(r.unwrap().next_offset.0, Ordering::SeqCst);
        }
        done.store(true, Ordering::SeqCst);
        let (seen, reads) = reader.await.unwrap();
        assert_eq!(seen, next, "{}: the reader reached the end", backend.name);
        assert!(reads > 1, "the reader read while the writer wrote");
        store.shutdown().await.unwrap();
    }
}
