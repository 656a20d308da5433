//! G5: corruption is detected and reported with where it is, never skipped: a flipped byte in
//! an earlier WAL record, in a data block, in an object's index, or in a manifest record.
//! (A torn final WAL record is cut, not reported: see the WAL's own tests and the crash tests.)

mod common;
mod support;

use std::sync::Arc;

use common::{batch, Node};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use objstream::{ErrorKind, Offset};
use support::TestStore;

/// Writes 40 batches to one stream, commits them and closes the stream. Returns the stream id.
async fn write_and_close(backend: &TestStore, node: &Node) -> objstream::StreamId {
    let store = node.open(&backend.store, &backend.prefix).await;
    let s = store.create_stream().await.unwrap();
    for n in 0..40 {
        s.append(batch(0, n)).await.unwrap();
    }
    s.close().await.unwrap();
    store.shutdown().await.unwrap();
    s.id()
}

async fn flip_byte(objects: &Arc<dyn ObjectStore>, key: &Path, at: impl Fn(usize) -> usize) {
    let mut bytes = objects
        .get(key)
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .to_vec();
    let i = at(bytes.len());
    bytes[i] ^= 0x40;
    objects.put(key, PutPayload::from(bytes)).await.unwrap();
}

async fn keys_under(objects: &Arc<dyn ObjectStore>, prefix: &Path) -> Vec<Path> {
    use futures::TryStreamExt;
    let mut keys: Vec<Path> = objects
        .list(Some(prefix))
        .map_ok(|m| m.location)
        .try_collect()
        .await
        .unwrap();
    keys.sort();
    keys
}

async fn fetch_all_from_new_node(
    backend: &TestStore,
    dir: &std::path::Path,
    id: objstream::StreamId,
) -> objstream::Error {
    let store = Node::new(dir, 2)
        .open(&backend.store, &backend.prefix)
        .await;
    let s = store.open_stream(id).await.unwrap();
    let end = s.confirmed_offset().unwrap();
    let mut pos = Offset(0);
    loop {
        match s.fetch(pos, end, 1 << 20).await {
            Ok(b) if b.is_empty() => {
                panic!("{}: read everything despite the corruption", backend.name)
            }
            Ok(b) => pos = b.last().unwrap().next_offset(),
            Err(e) => return e,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_in_a_data_block_is_reported_with_its_object() {
    for backend in support::backends() {
        let dir = tempfile::tempdir().unwrap();
        let id = write_and_close(&backend, &Node::new(dir.path(), 1)).await;
        let objects = keys_under(&backend.store, &backend.path("objects")).await;
        assert!(!objects.is_empty());
        for key in &objects {
            flip_byte(&backend.store, key, |_| 20).await;
        }
        let e = fetch_all_from_new_node(&backend, dir.path(), id).await;
        assert_eq!(e.kind(), ErrorKind::Corruption, "{}: {e}", backend.name);
        assert!(e.to_string().contains("object-"), "names the object: {e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_in_an_object_index_is_reported() {
    for backend in support::backends() {
        let dir = tempfile::tempdir().unwrap();
        let id = write_and_close(&backend, &Node::new(dir.path(), 1)).await;
        for key in keys_under(&backend.store, &backend.path("objects")).await {
            // The index ends just before the fixed-size footer.
            flip_byte(&backend.store, &key, |len| {
                len - objstream::format::FOOTER_LEN - 3
            })
            .await;
        }
        let e = fetch_all_from_new_node(&backend, dir.path(), id).await;
        assert_eq!(e.kind(), ErrorKind::Corruption, "{}: {e}", backend.name);
        assert!(e.to_string().contains("object-"), "names the object: {e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_in_a_manifest_record_stops_the_open_and_names_the_record() {
    for backend in support::backends() {
        let dir = tempfile::tempdir().unwrap();
        write_and_close(&backend, &Node::new(dir.path(), 1)).await;
        let records = keys_under(&backend.store, &backend.path("manifest")).await;
        let victim = &records[1];
        flip_byte(&backend.store, victim, |len| len / 2).await;
        let e = Node::new(dir.path(), 2)
            .try_open(&backend.store, &backend.prefix)
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corruption, "{}: {e}", backend.name);
        assert!(
            e.to_string().contains(victim.filename().unwrap()),
            "names the record {victim}: {e}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_in_an_earlier_wal_record_stops_the_restart() {
    let backend = support::local_store();
    let dir = tempfile::tempdir().unwrap();
    let node = Node::new(dir.path(), 1);
    write_and_close(&backend, &node).await;
    let mut segments: Vec<_> = std::fs::read_dir(&node.wal_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .collect();
    segments.sort();
    let first = &segments[0];
    let mut bytes = std::fs::read(first).unwrap();
    bytes[40] ^= 0x01; // inside the first record; many records follow it
    std::fs::write(first, &bytes).unwrap();
    let e = node
        .try_open(&backend.store, &backend.prefix)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corruption, "{e}");
    assert!(
        e.to_string()
            .contains(first.file_name().unwrap().to_str().unwrap()),
        "names the segment: {e}"
    );
}
