//! The store opens tracing spans for appends, uploads, commits, fetches and recoveries.
//!
//! Its own test binary: tracing caches whether a call site is enabled process-wide, and another
//! test appending on another thread while this one installs its subscriber could leave the
//! append call site disabled for it.

use std::sync::Arc;

use object_store::ObjectStore;
use objstream::{Components, NodeId, Offset, RecordBatch, Settings, Store, WalSettings};

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn settings(node: u64, wal: WalSettings) -> Settings {
    Settings {
        node_id: NodeId(node),
        wal,
        upload_threshold_bytes: 1 << 30,
        upload_interval_ms: 60_000,
        ..Settings::default()
    }
}

fn batch(n: u64) -> RecordBatch {
    RecordBatch::new(1, n as i64, format!("event {n}"))
}

/// Names of the spans opened while a test runs, seen through a layer of its own.
#[derive(Clone, Default)]
struct SpanNames(Arc<parking_lot::Mutex<Vec<String>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for SpanNames {
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        _: &tracing::span::Id,
        _: tracing_subscriber::layer::Context<'_, S>,
    ) {
        self.0.lock().push(attrs.metadata().name().to_string());
    }
}

#[test]
fn appends_uploads_commits_fetches_and_recoveries_open_their_spans() {
    use tracing_subscriber::layer::SubscriberExt;
    let names = SpanNames::default();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_subscriber::filter::LevelFilter::DEBUG)
        .with(names.clone());
    tracing::subscriber::with_default(subscriber, || {
        current_thread().block_on(async {
            let objects: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
            let wal = WalSettings::object(None);
            let components = || Components::new(objects.clone(), "spans");
            let old = Store::open(settings(1, wal.clone()), components())
                .await
                .unwrap();
            let stream = old.create_stream().await.unwrap();
            stream.append(batch(0)).await.unwrap();
            old.flush().await.unwrap();
            stream.fetch(Offset(0), Offset(1), 1 << 20).await.unwrap();
            stream.append(batch(1)).await.unwrap();
            let new = Store::open(settings(2, wal.clone()), components())
                .await
                .unwrap();
            new.recover_node_from(NodeId(1), &wal).await.unwrap();
            new.shutdown().await.unwrap();
        })
    });
    let names = names.0.lock().clone();
    for span in [
        "append",
        "upload",
        "commit",
        "manifest_commit",
        "fetch",
        "restart_recovery",
        "recover_node",
    ] {
        assert!(
            names.iter().any(|n| n == span),
            "no {span} span in {names:?}"
        );
    }
    assert_eq!(names.iter().filter(|n| *n == "append").count(), 2);
}
