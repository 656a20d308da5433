//! The compactor inside the broker's process, beside its store.
//!
//! A store appends small batches to a few streams and uploads often, leaving many small
//! objects; a compactor spawned on the same runtime merges them while appends and tail reads go
//! on. At the end the example prints the object count before and after, and reads every stream
//! back from a fresh store to show nothing changed.
//!
//! ```text
//! cargo run --release -p objstream-compaction --example compactor_embedded
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use object_store::local::LocalFileSystem;
use object_store::ObjectStore;
use objstream::{Components, NodeId, Offset, RecordBatch, Settings, Store, WalSettings};
use objstream_compaction::{Compactor, CompactorComponents, CompactorSettings};

fn event(stream: usize, n: u64) -> RecordBatch {
    let body = format!(
        r#"{{"conversation":{stream},"turn":{n},"kind":"evaluator_score","score":{}}}"#,
        n % 11
    );
    RecordBatch::new(1, n as i64, body)
}

async fn object_count(objects: &Arc<dyn ObjectStore>) -> usize {
    use futures::TryStreamExt;
    objects
        .list(Some(&"objects".into()))
        .try_collect::<Vec<_>>()
        .await
        .map_or(0, |v| v.len())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    std::fs::create_dir_all(dir.path().join("objects"))?;
    let objects: Arc<dyn ObjectStore> = Arc::new(LocalFileSystem::new_with_prefix(
        dir.path().join("objects"),
    )?);
    let settings = Settings {
        node_id: NodeId(1),
        wal: WalSettings::file(dir.path().join("wal")),
        upload_threshold_bytes: 64 << 10,
        upload_interval_ms: 100,
        ..Settings::default()
    };
    let store = Store::open(settings.clone(), Components::new(objects.clone(), "")).await?;
    let compactor = Compactor::open(
        CompactorSettings {
            pass_interval_ms: 500,
            min_object_bytes: 64 << 10,
            grace_period_ms: 2_000,
            ..CompactorSettings::default()
        },
        CompactorComponents::new(objects.clone(), "", NodeId(1_000)),
    )
    .await?;
    let task = compactor.spawn();

    let streams = [
        store.create_stream().await?,
        store.create_stream().await?,
        store.create_stream().await?,
    ];
    let started = Instant::now();
    let mut n = 0u64;
    let mut peak_objects = 0;
    while started.elapsed() < Duration::from_secs(5) {
        for (i, s) in streams.iter().enumerate() {
            s.append(event(i, n)).await?;
        }
        n += 1;
        if n % 500 == 0 {
            peak_objects = peak_objects.max(object_count(&objects).await);
            // A tail read never waits for compaction.
            let s = &streams[0];
            let end = s.confirmed_offset()?;
            let tail = s.fetch(Offset(end.get() - 1), end, 1 << 10).await?;
            assert_eq!(tail[0].batch, event(0, n - 1));
        }
    }
    store.flush().await?;
    for s in &streams {
        s.close().await?;
    }
    store.shutdown().await?;
    // Let the compactor finish merging, then wait out the grace so the old objects go.
    tokio::time::sleep(Duration::from_secs(4)).await;
    task.stop().await?;
    let after = object_count(&objects).await;
    println!("{n} events per stream; objects: up to {peak_objects} while writing, {after} after compaction");

    let reader = Store::open(
        Settings {
            node_id: NodeId(2),
            wal: WalSettings::file(dir.path().join("wal-2")),
            ..settings
        },
        Components::new(objects.clone(), ""),
    )
    .await?;
    for (i, id) in streams.iter().map(|s| s.id()).enumerate() {
        let s = reader.open_stream(id).await?;
        let mut pos = Offset(0);
        let end = s.confirmed_offset()?;
        while pos < end {
            for b in s.fetch(pos, end, 1 << 20).await? {
                assert_eq!(b.batch, event(i, b.base_offset.get()));
                pos = b.next_offset();
            }
        }
    }
    reader.shutdown().await?;
    println!("every event reads back unchanged");
    Ok(())
}
