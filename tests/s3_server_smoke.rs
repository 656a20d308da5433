//! The test object stores behave as the engine needs: plain reads and writes, and conditional
//! creates that exactly one writer wins, on the local file system and on the S3 test server.

mod support;

use std::sync::Arc;

use bytes::Bytes;
use object_store::{Error, ObjectStoreExt, PutMode, PutPayload};
use tokio::sync::Barrier;

#[tokio::test]
async fn put_get_and_range_get_return_what_was_written() {
    for ts in support::backends() {
        let path = ts.path("objects/a");
        let body = Bytes::from_static(b"0123456789abcdef");
        ts.store.put(&path, body.clone().into()).await.unwrap();

        let got = ts.store.get(&path).await.unwrap().bytes().await.unwrap();
        assert_eq!(got, body, "{}: full get", ts.name);

        let range = ts.store.get_range(&path, 4..10).await.unwrap();
        assert_eq!(&range[..], b"456789", "{}: range get", ts.name);

        let meta = ts.store.head(&path).await.unwrap();
        assert_eq!(meta.size, 16, "{}: head size", ts.name);
    }
}

#[tokio::test]
async fn a_second_create_of_one_key_is_already_exists() {
    for ts in support::backends() {
        let path = ts.path("create-twice");
        ts.store
            .put_opts(
                &path,
                PutPayload::from_static(b"first"),
                PutMode::Create.into(),
            )
            .await
            .unwrap();
        let second = ts
            .store
            .put_opts(
                &path,
                PutPayload::from_static(b"second"),
                PutMode::Create.into(),
            )
            .await;
        assert!(
            matches!(second, Err(Error::AlreadyExists { .. })),
            "{}: second create gave {second:?}",
            ts.name
        );
        let got = ts.store.get(&path).await.unwrap().bytes().await.unwrap();
        assert_eq!(&got[..], b"first", "{}: the first body stays", ts.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_creates_of_one_key_have_exactly_one_winner() {
    const WRITERS: usize = 4;
    for ts in support::backends() {
        let path = ts.path("race");
        let barrier = Arc::new(Barrier::new(WRITERS));
        let mut tasks = Vec::new();
        for writer in 0..WRITERS {
            let store = Arc::clone(&ts.store);
            let path = path.clone();
            let barrier = Arc::clone(&barrier);
            tasks.push(tokio::spawn(async move {
                // Large enough that the upload takes a while and the writes overlap.
                let body = vec![writer as u8; 256 * 1024];
                barrier.wait().await;
                store
                    .put_opts(&path, body.into(), PutMode::Create.into())
                    .await
            }));
        }

        let mut winners = Vec::new();
        for (writer, task) in tasks.into_iter().enumerate() {
            match task.await.unwrap() {
                Ok(_) => winners.push(writer),
                Err(Error::AlreadyExists { .. }) => {}
                Err(other) => panic!("{}: writer {writer} failed: {other:?}", ts.name),
            }
        }
        assert_eq!(winners.len(), 1, "{}: winners {winners:?}", ts.name);

        let got = ts.store.get(&path).await.unwrap().bytes().await.unwrap();
        assert_eq!(got.len(), 256 * 1024, "{}: stored size", ts.name);
        assert!(
            got.iter().all(|&b| b == winners[0] as u8),
            "{}: the stored body is the winner's",
            ts.name
        );
    }
}
