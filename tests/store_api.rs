//! The store's API end to end, on every backend (a local directory and the S3 server):
//! appends and fetches across the log cache and objects, handoff between nodes, trim, delete,
//! backpressure, and bad input (G6) that gets a clear error and changes nothing.

mod common;
mod support;

use std::sync::Arc;

use common::{batch, payload, Node};
use objstream::{ErrorKind, Offset, RecordBatch, StoredBatch, Stream};

async fn read_all(stream: &Stream, from: Offset, to: Offset) -> Vec<StoredBatch> {
    let mut out: Vec<StoredBatch> = Vec::new();
    let mut pos = from;
    while pos < to {
        let got = stream.fetch(pos, to, 64 << 10).await.expect("fetch");
        assert!(
            !got.is_empty(),
            "fetch at {pos} below {to} returned nothing"
        );
        pos = got.last().unwrap().next_offset();
        out.extend(got);
    }
    out
}

fn check_dense(batches: &[StoredBatch], stream: u64, first_n: u64) {
    let mut expected = batches[0].base_offset;
    for (i, b) in batches.iter().enumerate() {
        assert_eq!(b.base_offset, expected, "offsets are dense");
        assert_eq!(b.batch.payload, payload(stream, first_n + i as u64));
        expected = b.next_offset();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_are_read_back_from_cache_and_from_objects() {
    for backend in support::backends() {
        let dir = tempfile::tempdir().unwrap();
        let node = Node::new(dir.path(), 1);
        let store = node.open(&backend.store, &backend.prefix).await;
        let s = store.create_stream().await.unwrap();
        let mut next = Offset(0);
        for n in 0..300 {
            let r = s.append(batch(0, n)).await.unwrap();
            assert_eq!(r.base_offset, next, "{}", backend.name);
            next = r.next_offset;
        }
        assert_eq!(s.confirmed_offset().unwrap(), next);
        // From the log cache.
        check_dense(&read_all(&s, Offset(0), next).await, 0, 0);
        store.flush().await.unwrap();
        s.close().await.unwrap();
        store.shutdown().await.unwrap();
        // A fresh node has an empty cache: everything comes from objects.
        let other = Node::new(dir.path(), 2)
            .open(&backend.store, &backend.prefix)
            .await;
        let s = other.open_stream(s.id()).await.unwrap();
        assert_eq!(s.confirmed_offset().unwrap(), next);
        check_dense(&read_all(&s, Offset(0), next).await, 0, 0);
        // A read from the middle starts at the batch holding the offset.
        let mid = s.fetch(Offset(5), next, 1).await.unwrap();
        assert_eq!(mid.len(), 1, "at least one batch even over max_bytes");
        assert!(mid[0].base_offset <= Offset(5) && mid[0].next_offset() > Offset(5));
        other.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_appends_in_flight_resolve_in_offset_order() {
    for backend in support::backends() {
        let dir = tempfile::tempdir().unwrap();
        let store = Node::new(dir.path(), 1)
            .open(&backend.store, &backend.prefix)
            .await;
        let s = store.create_stream().await.unwrap();
        let futures: Vec<_> = (0..200).map(|n| s.append(batch(0, n))).collect();
        let mut next = Offset(0);
        for f in futures {
            let r = f.await.unwrap();
            assert_eq!(r.base_offset, next);
            next = r.next_offset;
        }
        check_dense(&read_all(&s, Offset(0), next).await, 0, 0);
        store.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_clear_error_and_changes_nothing() {
    for backend in support::backends() {
        let dir = tempfile::tempdir().unwrap();
        let node = Node::new(dir.path(), 1);
        let store = node.open(&backend.store, &backend.prefix).await;
        let s = store.create_stream().await.unwrap();
        s.append(batch(0, 0)).await.unwrap();
        let end = s.confirmed_offset().unwrap();

        let empty = s.append(RecordBatch::new(0, 0, "x")).await.unwrap_err();
        assert_eq!(empty.kind(), ErrorKind::InvalidInput, "{empty}");
        let empty = s.append(RecordBatch::new(1, 0, "")).await.unwrap_err();
        assert_eq!(empty.kind(), ErrorKind::InvalidInput, "{empty}");
        let huge = vec![0u8; node.settings.max_batch_bytes + 1];
        let e = s.append(RecordBatch::new(1, 0, huge)).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        assert!(e.to_string().contains("over the limit"), "{e}");

        let e = s.fetch(end.add(1), end.add(5), 100).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
        let e = s.fetch(Offset(1), Offset(0), 100).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        assert!(
            s.fetch(end, end, 100).await.unwrap().is_empty(),
            "the tail is empty, not an error"
        );

        let e = s.trim(end.add(1)).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");

        let e = s.append_if(batch(0, 1), end.add(3)).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        assert!(e.to_string().contains("expected next offset"), "{e}");
        let ok = s.append_if(batch(0, 1), end).await.unwrap();
        assert_eq!(ok.base_offset, end);

        let e = store
            .open_stream(objstream::StreamId(999))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");

        // Nothing above changed the stream: exactly the two good batches are there.
        let all = read_all(&s, Offset(0), s.confirmed_offset().unwrap()).await;
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].batch.payload, payload(0, 0));
        assert_eq!(all[1].batch.payload, payload(0, 1));

        s.close().await.unwrap();
        let e = s.append(batch(0, 2)).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Reopen, "append after close: {e}");
        let s = store.open_stream(s.id()).await.unwrap();
        store.delete_stream(s.id()).await.unwrap();
        let e = s.append(batch(0, 2)).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Reopen, "append after delete: {e}");
        let e = store.open_stream(s.id()).await.unwrap_err();
        assert!(e.to_string().contains("deleted"), "{e}");
        store.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_stream_is_handed_to_another_node_and_the_old_handle_is_fenced() {
    for backend in support::backends() {
        let dir = tempfile::tempdir().unwrap();
        let a = Node::new(dir.path(), 1)
            .open(&backend.store, &backend.prefix)
            .await;
        let b = Node::new(dir.path(), 2)
            .open(&backend.store, &backend.prefix)
            .await;
        let sa = a.create_stream().await.unwrap();
        for n in 0..20 {
            sa.append(batch(0, n)).await.unwrap();
        }
        let e = b.open_stream(sa.id()).await.unwrap_err();
        assert_eq!(
            e.kind(),
            ErrorKind::InvalidInput,
            "open while open elsewhere: {e}"
        );
        sa.close().await.unwrap();
        let sb = b.open_stream(sa.id()).await.unwrap();
        assert_eq!(sb.epoch(), sa.epoch().next());
        let end = sb.confirmed_offset().unwrap();
        for n in 20..40 {
            sb.append(batch(0, n)).await.unwrap();
        }
        assert!(
            sa.append(batch(0, 99)).await.is_err(),
            "the old handle never succeeds again"
        );
        let e = a.delete_stream(sb.id()).await.unwrap_err();
        assert_eq!(
            e.kind(),
            ErrorKind::InvalidInput,
            "delete under a live owner: {e}"
        );
        check_dense(
            &read_all(&sb, Offset(0), sb.confirmed_offset().unwrap()).await,
            0,
            0,
        );
        assert!(end > Offset(0));
        a.shutdown().await.unwrap();
        b.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trim_hides_records_below_the_new_start() {
    for backend in support::backends() {
        let dir = tempfile::tempdir().unwrap();
        let node = Node::new(dir.path(), 1);
        let store = node.open(&backend.store, &backend.prefix).await;
        let s = store.create_stream().await.unwrap();
        for n in 0..50 {
            s.append(batch(0, n)).await.unwrap();
        }
        let end = s.confirmed_offset().unwrap();
        s.trim(Offset(10)).await.unwrap();
        assert_eq!(s.start_offset().unwrap(), Offset(10));
        let e = s.fetch(Offset(9), end, 100).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        let got = s.fetch(Offset(10), end, 1 << 20).await.unwrap();
        assert!(got[0].base_offset <= Offset(10));
        s.trim(Offset(5)).await.unwrap();
        assert_eq!(
            s.start_offset().unwrap(),
            Offset(10),
            "trim never moves back"
        );
        s.close().await.unwrap();
        let s = store.open_stream(s.id()).await.unwrap();
        assert_eq!(
            s.start_offset().unwrap(),
            Offset(10),
            "the trim point is in the manifest"
        );
        store.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_wait_for_memory_instead_of_growing_it() {
    let backend = support::local_store();
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::new(dir.path(), 1);
    node.settings.log_cache_bytes = 64 << 10;
    node.settings.max_batch_bytes = 16 << 10;
    node.settings.upload_threshold_bytes = 1 << 30;
    node.settings.upload_interval_ms = 60_000;
    let store = node.open(&backend.store, &backend.prefix).await;
    let s = Arc::new(store.create_stream().await.unwrap());
    // 400 appends of about 1 KiB through a 64 KiB cache: they must wait for uploads and all
    // complete, in order.
    let futures: Vec<_> = (0..400).map(|n| s.append(batch(0, n))).collect();
    let mut next = Offset(0);
    for f in futures {
        let r = f.await.unwrap();
        assert_eq!(r.base_offset, next);
        next = r.next_offset;
    }
    check_dense(&read_all(&s, Offset(0), next).await, 0, 0);
    store.shutdown().await.unwrap();
}
