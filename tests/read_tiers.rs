//! Every tier of the read path returns the same bytes: the log cache, the block cache's memory
//! tier, its disk tier and object storage. Each pass forces one path and proves, with
//! `Store::read_stats`, that the path it meant to take is the one that answered. On every backend.
//!
//! A block cache passed in by the embedder (`Components::with_block_cache`) serves reads
//! instead of the store's own, can serve a second store reading the same objects, and stays
//! open after a store that used it shuts down.

mod common;
mod support;

use std::sync::Arc;
use std::time::Duration;

use common::{batch, payload, Node};
use objstream::{
    DecodedBlock, Offset, ReadStats, Settings, SharedBlockCache, Store, StoredBatch, Stream,
};
use objstream_cache::{BlockCacheConfig, FoyerBlockCache};

const BATCHES: u64 = 1500;

async fn read_all(stream: &Stream, to: Offset) -> Vec<StoredBatch> {
    let mut out: Vec<StoredBatch> = Vec::new();
    let mut pos = Offset(0);
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

fn check(batches: &[StoredBatch], what: &str) {
    assert_eq!(batches.len() as u64, BATCHES, "{what}: batch count");
    let mut next = Offset(0);
    for (n, b) in batches.iter().enumerate() {
        assert_eq!(b.base_offset, next, "{what}: offsets are dense");
        assert_eq!(b.batch, batch(0, n as u64), "{what}: batch {n}");
        next = b.next_offset();
    }
}

/// Small blocks and caches, so that a few MB cross every tier; no read-ahead, so that each
/// fetch's lookups are its own.
fn settings(node: &Node, dir: &std::path::Path) -> Settings {
    Settings {
        block_cache_bytes: 256 << 10,
        block_cache_disk_dir: Some(dir.join(format!("blocks-{}", node.settings.node_id.0))),
        block_cache_disk_bytes: 64 << 20,
        read_ahead_bytes: 0,
        ..node.settings.clone()
    }
}

async fn open(node: &Node, dir: &std::path::Path, backend: &support::TestStore) -> Store {
    let settings = settings(node, dir);
    Store::open(
        settings,
        objstream::Components::new(backend.store.clone(), backend.prefix.clone()),
    )
    .await
    .expect("open store")
}

fn delta(after: &ReadStats, before: &ReadStats) -> ReadStats {
    ReadStats {
        log_cache_hits: after.log_cache_hits - before.log_cache_hits,
        memory_hits: after.memory_hits - before.memory_hits,
        disk_hits: after.disk_hits - before.disk_hits,
        block_misses: after.block_misses - before.block_misses,
        object_gets: after.object_gets - before.object_gets,
        ..*after
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tier_returns_the_same_bytes() {
    for backend in support::backends() {
        let name = backend.name;
        let dir = tempfile::tempdir().unwrap();

        // Pass 1: the log cache, on the node that wrote the data.
        let writer = Node::new(dir.path(), 1);
        let store = open(&writer, dir.path(), &backend).await;
        let s = store.create_stream().await.unwrap();
        let mut appends = Vec::new();
        for n in 0..BATCHES {
            appends.push(s.append(batch(0, n)));
        }
        for a in appends {
            a.await.unwrap();
        }
        let end = s.confirmed_offset().unwrap();
        let before = store.read_stats();
        check(&read_all(&s, end).await, "log cache");
        let d = delta(&store.read_stats(), &before);
        assert!(d.log_cache_hits > 0, "{name}: {d:?}");
        assert_eq!(
            (d.memory_hits, d.disk_hits, d.block_misses, d.object_gets),
            (0, 0, 0, 0),
            "{name}: only the log cache answered"
        );
        s.close().await.unwrap();
        store.shutdown().await.unwrap();

        // Pass 2: object storage, on a node whose caches are empty.
        let reader = Node::new(dir.path(), 2);
        let store = open(&reader, dir.path(), &backend).await;
        let s = store.open_stream(s.id()).await.unwrap();
        let before = store.read_stats();
        check(&read_all(&s, end).await, "object store");
        let d = delta(&store.read_stats(), &before);
        assert!(d.block_misses > 0 && d.object_gets > 0, "{name}: {d:?}");
        assert_eq!(
            d.log_cache_hits, 0,
            "{name}: the new node's log cache is empty"
        );
        let blocks = d.block_misses;

        // Pass 3: the memory tier, for a range small enough to stay in it.
        let few = Offset(40);
        let first = s.fetch(Offset(0), few, 1).await.unwrap();
        let before = store.read_stats();
        let again = s.fetch(Offset(0), few, 1).await.unwrap();
        let d = delta(&store.read_stats(), &before);
        assert_eq!(again, first, "{name}: memory tier");
        assert_eq!(again[0].batch.payload, payload(0, 0));
        assert_eq!((d.memory_hits, d.object_gets), (1, 0), "{name}: {d:?}");

        // Pass 4: the disk tier. The memory tier holds a few blocks; the rest went to disk as
        // they were evicted (in the background, so wait until the disk tier answers).
        let mut disk_hits = 0;
        for _ in 0..50 {
            let before = store.read_stats();
            check(&read_all(&s, end).await, "disk tier");
            let d = delta(&store.read_stats(), &before);
            disk_hits = d.disk_hits;
            if d.disk_hits > blocks / 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            disk_hits > blocks / 2,
            "{name}: most of {blocks} blocks came from disk, not {disk_hits}"
        );
        let stats = store.read_stats();
        assert!(stats.disk_write_bytes > 0, "{name}: {stats:?}");
        assert!(stats.memory_held_bytes <= 256 << 10, "{name}: {stats:?}");
        store.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedders_block_cache_serves_reads_and_outlives_the_store() {
    for backend in support::backends() {
        let name = backend.name;
        let dir = tempfile::tempdir().unwrap();
        let writer = Node::new(dir.path(), 1);
        let store = open(&writer, dir.path(), &backend).await;
        let s = store.create_stream().await.unwrap();
        let mut appends = Vec::new();
        for n in 0..BATCHES {
            appends.push(s.append(batch(0, n)));
        }
        for a in appends {
            a.await.unwrap();
        }
        let end = s.confirmed_offset().unwrap();
        s.close().await.unwrap();
        store.shutdown().await.unwrap();

        // One cache, big enough for everything, shared by two reader nodes in turn.
        let config = BlockCacheConfig {
            memory_bytes: 64 << 20,
            disk: None,
        };
        let cache: SharedBlockCache = Arc::new(
            FoyerBlockCache::<DecodedBlock>::open(&config, None)
                .await
                .unwrap(),
        );
        let mut blocks_read = 0;
        for (n, id) in [(2, s.id()), (3, s.id())] {
            let node = Node::new(dir.path(), n);
            let store = Store::open(
                settings(&node, dir.path()),
                objstream::Components::new(backend.store.clone(), backend.prefix.clone())
                    .with_block_cache(cache.clone()),
            )
            .await
            .unwrap();
            let s = store.open_stream(id).await.unwrap();
            let before = cache.stats();
            check(&read_all(&s, end).await, "embedder's cache");
            let after = cache.stats();
            let stats = store.read_stats();
            if n == 2 {
                blocks_read = after.misses - before.misses;
                assert!(blocks_read > 0, "{name}: the first reader filled the cache");
                assert_eq!(
                    stats.block_misses, blocks_read,
                    "{name}: the store read through the embedder's cache: {stats:?}"
                );
            } else {
                assert_eq!(
                    after.misses, before.misses,
                    "{name}: the second reader found every block in the shared cache"
                );
                assert!(after.memory_hits - before.memory_hits >= blocks_read);
                assert_eq!(
                    stats.object_gets, stats.index_misses,
                    "{name}: only index reads went to object storage: {stats:?}"
                );
            }
            s.close().await.unwrap();
            store.shutdown().await.unwrap();
        }
        // Shutting the stores down left the embedder's cache open and holding the blocks.
        assert!(
            cache.stats().memory_bytes > 0,
            "{name}: {:?}",
            cache.stats()
        );
        cache.close().await.unwrap();
    }
}
