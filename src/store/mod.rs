//! The store: one node's handle on streams kept in an object store behind a write-ahead log.
//!
//! ```text
//! append ─► admit (offsets, log cache, WAL queue: one lock) ─► WAL durable ─► confirm ─► ack
//!               background: seal durable cache entries ─► build objects ─► upload (parallel)
//!                           ─► commit to the manifest (in order) ─► WAL trim, cache evictable
//! fetch  ─► log cache ─► block cache ─► object store range GETs
//! ```
//!
//! A [`Store`] is a node: it bumps its node epoch in the manifest when it opens, replays its WAL,
//! uploads and commits whatever the last run left uncommitted, and closes the streams that run
//! had open. [`Store::create_stream`] and [`Store::open_stream`] then hand out [`Stream`]s.
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use objstream::{Components, RecordBatch, Settings, Store, WalSettings};
//! let dir = tempfile::tempdir().unwrap();
//! let settings = Settings { wal: WalSettings::file(dir.path().join("wal")), ..Settings::default() };
//! let objects = std::sync::Arc::new(object_store::memory::InMemory::new());
//! let store = Store::open(settings, Components::new(objects, "demo")).await.unwrap();
//!
//! let stream = store.create_stream().await.unwrap();
//! let acked = stream.append(RecordBatch::new(2, 0, "two records")).await.unwrap();
//! assert_eq!(acked.base_offset.get(), 0);
//! let batches = stream.fetch(objstream::Offset(0), objstream::Offset(2), 1 << 20).await.unwrap();
//! assert_eq!(&batches[0].batch.payload[..], b"two records");
//! store.shutdown().await.unwrap();
//! # });
//! ```

mod components;
mod core;
mod recovery;
mod replay;
mod stream;
mod takeover;

use std::sync::{Arc, Weak};

use object_store::path::Path;
use object_store::ObjectStore;
use objstream_wal::Wal;
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot, watch, Notify};

pub use self::components::Components;
pub use self::core::AppendResult;
pub(crate) use self::core::{Core, InFlight, StreamState, StreamStatus, Waiting};
pub use self::stream::{AppendFuture, Stream};
pub use self::takeover::NodeRecovery;

use crate::error::{Error, ErrorDetail, Result};
use crate::manifest::{Change, MetaStore, Outcome};
use crate::read::{ObjectReader, ReadStats};
use crate::settings::Settings;
use crate::types::{Epoch, NodeId, StreamId};
use crate::upload::{self, UploadCommand};
use crate::wal_record;

/// Shared by the store, its streams and its background tasks.
pub(crate) struct StoreInner {
    pub settings: Settings,
    pub node: NodeId,
    pub node_epoch: Epoch,
    pub objects: Arc<dyn ObjectStore>,
    pub prefix: Path,
    pub meta: Arc<dyn MetaStore>,
    pub wal: Arc<dyn Wal>,
    pub core: Mutex<Core>,
    pub reader: ObjectReader,
    completions: mpsc::UnboundedSender<InFlight>,
    /// The log cache's durable watermark, for flushes waiting on durability.
    pub durable: watch::Sender<u64>,
    pub uploads: mpsc::UnboundedSender<UploadCommand>,
    /// Wakes the upload task when enough bytes wait.
    pub upload_wakeup: Arc<Notify>,
    /// Metric handles, registered when the store opened.
    pub metrics: crate::metrics::StoreMetrics,
}

/// A node: opens, creates and deletes streams. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<StoreInner>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("node", &self.inner.node)
            .field("node_epoch", &self.inner.node_epoch)
            .field("prefix", &self.inner.prefix)
            .finish()
    }
}

impl Store {
    /// Opens the node `settings.node_id`: bumps its node epoch, replays its WAL, uploads and
    /// commits what the last run left, and closes the streams that run had open.
    pub async fn open(settings: Settings, components: Components) -> Result<Store> {
        settings.validate()?;
        let parts = components.resolve(&settings).await?;
        let metrics = crate::metrics::StoreMetrics::new(match (&parts.wal, &settings.wal) {
            (Some(_), _) => "custom",
            (None, crate::WalSettings::File { .. }) => "file",
            (None, crate::WalSettings::Block { .. }) => "block",
            (None, crate::WalSettings::Object { .. }) => "object",
        });
        let reader = ObjectReader::open(
            parts.objects.clone(),
            parts.prefix.clone(),
            parts.block_cache.clone(),
            &settings,
        )
        .await?;
        let committed = parts
            .meta
            .commit(Change::OpenNode {
                node: settings.node_id,
            })
            .await?;
        let Outcome::NodeEpoch(node_epoch) = committed.outcome else {
            return Err(Error::internal(
                "opening a node did not assign a node epoch",
            ));
        };
        let wal = match parts.wal {
            Some(wal) => wal,
            None => {
                let floor = committed
                    .state
                    .node(settings.node_id)
                    .map_or(0, |n| n.wal_floor);
                components::open_wal(
                    &settings.wal,
                    settings.max_batch_bytes,
                    components::WalTarget {
                        owner: settings.node_id,
                        epoch: node_epoch,
                        actor: (settings.node_id, node_epoch),
                        floor,
                        objects: &parts.objects,
                        prefix: &parts.prefix,
                    },
                )
                .await?
            }
        };
        tracing::info!(node = %settings.node_id, %node_epoch, prefix = %parts.prefix, "store opening");
        let (completions, completion_rx) = mpsc::unbounded_channel();
        let (uploads, upload_rx) = mpsc::unbounded_channel();
        let inner = Arc::new(StoreInner {
            node: settings.node_id,
            node_epoch,
            reader,
            core: Mutex::new(Core::new(settings.log_cache_bytes)),
            settings,
            objects: parts.objects,
            prefix: parts.prefix,
            meta: parts.meta,
            wal,
            completions,
            durable: watch::channel(0).0,
            uploads,
            upload_wakeup: Arc::new(Notify::new()),
            metrics,
        });
        tokio::spawn(run_completions(Arc::downgrade(&inner), completion_rx));
        tokio::spawn(upload::run(Arc::downgrade(&inner), upload_rx));
        recovery::recover(&inner).await?;
        Ok(Store { inner })
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.inner.node
    }

    /// This node's epoch: rises each time the node opens.
    pub fn node_epoch(&self) -> Epoch {
        self.inner.node_epoch
    }

    /// Counters of the read path: hits per tier, object-store GETs and bytes, read-ahead use
    /// and waste (see [`ReadStats`] for which reads fill which tier).
    /// Each call also publishes them as metrics (`objstream_read_*`).
    pub fn read_stats(&self) -> ReadStats {
        let stats = self.inner.read_stats();
        self.inner.metrics.read.publish(&stats);
        stats
    }

    /// Creates a stream, open on this node with epoch 1.
    pub async fn create_stream(&self) -> Result<Stream> {
        let committed = self
            .inner
            .meta
            .commit(Change::CreateStream {
                node: self.inner.node,
                node_epoch: self.inner.node_epoch,
            })
            .await?;
        let Outcome::StreamCreated(id) = committed.outcome else {
            return Err(Error::internal("creating a stream did not assign an id"));
        };
        let meta = committed
            .state
            .stream(id)
            .ok_or_else(|| Error::internal(format!("{id} missing right after its creation")))?;
        let epoch = meta.epoch;
        self.install_stream(id, epoch, meta.start, meta.end);
        tracing::info!(stream = %id, %epoch, "stream created");
        Ok(Stream::new(self.inner.clone(), id, epoch))
    }
    /// Opens an existing stream on this node with its epoch raised by one. Fails while the
    /// stream is open on a live node.
    pub async fn open_stream(&self, id: StreamId) -> Result<Stream> {
        self.check_failed()?;
        // Another node may have created or closed the stream since this node last looked.
        self.inner.meta.refresh().await?;
        let committed = self
            .inner
            .meta
            .commit(Change::OpenStream {
                stream: id,
                node: self.inner.node,
                node_epoch: self.inner.node_epoch,
            })
            .await?;
        let Outcome::StreamOpened { epoch, start, end } = committed.outcome else {
            return Err(Error::internal("opening a stream did not assign an epoch"));
        };
        self.install_stream(id, epoch, start, end);
        tracing::info!(stream = %id, %epoch, %start, %end, "stream opened");
        Ok(Stream::new(self.inner.clone(), id, epoch))
    }

    /// Deletes a stream. A handle of it on this node fails every later call.
    pub async fn delete_stream(&self, id: StreamId) -> Result<()> {
        self.check_failed()?;
        // Commit whatever of the stream is still in flight first, so that no upload carries
        // data of a deleted stream.
        let local_epoch = {
            let mut core = self.inner.core.lock();
            core.streams
                .get_mut(&id)
                .filter(|s| s.status == StreamStatus::Open)
                .map(|s| {
                    s.status = StreamStatus::Closed;
                    s.epoch
                })
        };
        if local_epoch.is_some() {
            self.inner.flush_all().await?;
        }
        let state = self.inner.meta.refresh().await?;
        let meta = state.stream(id).ok_or(ErrorDetail::UnknownStream(id))?;
        if local_epoch.is_none() && meta.status == crate::manifest::StreamStatus::Open {
            // Deleting a stream under a live owner would fail that owner's uploads.
            let owner_fenced = state
                .node(meta.owner)
                .is_some_and(|n| n.is_fenced(meta.owner_node_epoch));
            if meta.owner != self.inner.node && !owner_fenced {
                return Err(ErrorDetail::StreamBusy {
                    stream: id,
                    owner: meta.owner,
                    epoch: meta.epoch,
                }
                .into());
            }
        }
        self.inner
            .meta
            .commit(Change::DeleteStream {
                stream: id,
                epoch: local_epoch.unwrap_or(meta.epoch),
            })
            .await?;
        let mut core = self.inner.core.lock();
        if let Some(s) = core.streams.get_mut(&id) {
            s.status = StreamStatus::Deleted;
        }
        core.cache.remove_stream(id.0);
        tracing::info!(stream = %id, "stream deleted");
        Ok(())
    }

    /// Uploads and commits everything durable so far; returns once it is in objects.
    pub async fn flush(&self) -> Result<()> {
        self.inner.flush_all().await
    }

    /// Flushes everything and stops accepting work. Open streams stay open in the manifest (the
    /// next open of this node closes them); close them first for a graceful handoff.
    pub async fn shutdown(&self) -> Result<()> {
        self.inner.flush_all().await?;
        let (tx, rx) = oneshot::channel();
        let _ = self.inner.uploads.send(UploadCommand::Shutdown(tx));
        let _ = rx.await;
        {
            let mut core = self.inner.core.lock();
            core.fail(Error::from(ErrorDetail::Fenced(
                "the store was shut down".to_string(),
            )));
        }
        // A cache failing to close loses nothing durable (its disk tier is emptied at open).
        if let Err(e) = self.inner.reader.close().await {
            tracing::warn!(error = %e, "block cache did not close cleanly");
        }
        Ok(())
    }

    fn check_failed(&self) -> Result<()> {
        match &self.inner.core.lock().failed {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    fn install_stream(&self, id: StreamId, epoch: Epoch, start: crate::Offset, end: crate::Offset) {
        let mut core = self.inner.core.lock();
        // Anything cached from an earlier ownership is committed and may be stale now.
        core.cache.remove_stream(id.0);
        core.streams.insert(
            id,
            StreamState {
                epoch,
                status: StreamStatus::Open,
                start,
                next: end,
                confirmed: end,
            },
        );
    }
}

impl StoreInner {
    /// The read path's counters and the log cache's (see [`Store::read_stats`]).
    pub(crate) fn read_stats(&self) -> ReadStats {
        let mut stats = ReadStats::default();
        {
            let core = self.core.lock();
            let log = core.cache.stats();
            stats.log_cache_hits = log.hits;
            stats.log_cache_misses = log.misses;
            stats.log_cache_hit_bytes = log.hit_bytes;
            stats.log_cache_held_bytes = core.cache.usage().total_bytes;
        }
        self.reader.fill_stats(&mut stats);
        stats
    }

    /// Admits an append under the lock: offsets, cache entry and WAL queue in one step.
    pub(crate) fn admit(&self, core: &mut Core, w: Waiting) {
        let state = match core.check_stream(w.stream, w.epoch) {
            Ok(s) => s,
            Err(e) => {
                let _ = w.reply.send(Err(e));
                return;
            }
        };
        let base = state.next;
        if let Some(expected) = w.expected {
            if expected != base {
                let _ = w.reply.send(Err(ErrorDetail::UnexpectedOffset {
                    stream: w.stream,
                    expected,
                    actual: base,
                }
                .into()));
                return;
            }
        }
        let next = base.add(u64::from(w.batch.count));
        w.span.record("base_offset", base.0);
        w.span.record("next_offset", next.0);
        let bytes = w.batch.payload.len() as u64;
        let record = wal_record::encode(w.stream, w.epoch, base, &w.batch);
        let durable = self.wal.append(record);
        let seq = core.cache.insert(w.stream.0, base.0, w.batch);
        if let Some(s) = core.streams.get_mut(&w.stream) {
            s.next = next;
        }
        let in_flight = InFlight {
            stream: w.stream,
            seq,
            result: AppendResult {
                base_offset: base,
                next_offset: next,
            },
            durable,
            reply: w.reply,
            started: w.started,
            bytes,
            span: w.span,
        };
        if let Err(mpsc::error::SendError(f)) = self.completions.send(in_flight) {
            let _ = f
                .reply
                .send(Err(Error::internal("the store's completion task stopped")));
        }
    }

    /// Admits waiting appends, in order, while memory allows.
    pub(crate) fn admit_waiting(&self, core: &mut Core) {
        while let Some(w) = core.waiting.front() {
            let weight = objstream_cache::CachedBatch::weight(&w.batch);
            let usage = core.cache.usage();
            if usage.unflushed_bytes > 0 && usage.unflushed_bytes + weight > core.cache.capacity() {
                break;
            }
            let Some(w) = core.waiting.pop_front() else {
                break;
            };
            self.admit(core, w);
        }
    }

    /// Waits until everything admitted so far is durable, then until it is committed.
    pub(crate) async fn flush_all(&self) -> Result<()> {
        let target = self.core.lock().cache.next_seq();
        self.flush_to(target).await
    }

    pub(crate) async fn flush_to(&self, target: u64) -> Result<()> {
        let mut durable = self.durable.subscribe();
        loop {
            if let Some(e) = &self.core.lock().failed {
                return Err(e.clone());
            }
            if *durable.borrow_and_update() >= target {
                break;
            }
            if durable.changed().await.is_err() {
                return Err(Error::internal("the store's completion task stopped"));
            }
        }
        let (tx, rx) = oneshot::channel();
        self.uploads
            .send(UploadCommand::Flush { target, reply: tx })
            .map_err(|_| Error::fenced("the store was shut down"))?;
        rx.await
            .map_err(|_| Error::fenced("the store was shut down"))?
    }

    /// Latches a fatal error.
    pub(crate) fn fail(&self, err: Error) {
        tracing::error!(error = %err, node = %self.node, "store failed; every later call fails");
        let mut core = self.core.lock();
        if core.failed.is_none() {
            match err.detail() {
                ErrorDetail::Fenced(_) => self.metrics.node_fenced.increment(1),
                _ if err.is_fenced() => self.metrics.wal_fenced.increment(1),
                _ => {}
            }
        }
        core.fail(err);
        drop(core);
        self.durable.send_modify(|_| {});
    }
}

/// Resolves appends as the WAL makes them durable. WAL futures resolve in order, so awaiting
/// them one after the other loses no time, and confirmations advance in WAL order.
async fn run_completions(inner: Weak<StoreInner>, mut rx: mpsc::UnboundedReceiver<InFlight>) {
    while let Some(f) = rx.recv().await {
        let outcome = f.durable.await;
        let Some(inner) = inner.upgrade() else {
            // The store is gone but the WAL's verdict stands: a durable append is acknowledged
            // (a restart or a takeover will commit it), a failed one fails.
            let _ = f.reply.send(outcome.map(|_| f.result).map_err(Error::from));
            continue;
        };
        match outcome {
            Ok(position) => {
                inner.metrics.append_duration.record(f.started.elapsed());
                inner.metrics.appended_bytes.increment(f.bytes);
                inner
                    .metrics
                    .appended_records
                    .increment(f.result.next_offset.0 - f.result.base_offset.0);
                let span = &f.span;
                tracing::debug!(parent: span, "append durable");
                let wake = {
                    let mut core = inner.core.lock();
                    core.cache.mark_durable(f.seq + 1);
                    core.last_durable = Some((f.seq, position));
                    if let Some(s) = core.streams.get_mut(&f.stream) {
                        if s.confirmed < f.result.next_offset {
                            s.confirmed = f.result.next_offset;
                        }
                    }
                    // Upload when enough waits, or when appends wait for the memory an upload
                    // would free.
                    core.cache.usage().pending_bytes >= inner.settings.upload_threshold_bytes
                        || !core.waiting.is_empty()
                };
                inner.durable.send_replace(f.seq + 1);
                if wake {
                    inner.upload_wakeup.notify_one();
                }
                let _ = f.reply.send(Ok(f.result));
            }
            Err(e) => {
                let err = Error::from(e);
                inner.fail(err.clone());
                let _ = f.reply.send(Err(err));
            }
        }
    }
}
