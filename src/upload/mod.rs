//! The upload pipeline: log cache ─► objects ─► manifest ─► WAL trim.
//!
//! One task owns the pipeline. On a trigger (bytes waiting over the threshold, the timer, a
//! flush, appends waiting for memory) it seals every durable, not yet sealed entry of the log
//! cache, groups it into objects, takes object ids in order, and starts the upload: encoding on
//! a blocking thread, then one PUT per object, all in parallel, retried with capped backoff.
//! Up to `max_uploads_in_flight` seals upload at once, and their commits apply strictly in seal
//! order, so the committed prefix of the cache only grows and the WAL can be trimmed after each
//! commit. After a commit, the seal's cache entries become evictable, appends waiting for memory
//! are admitted, and flushes whose data is now committed return.
//!
//! # A commit that finds its ids collected
//!
//! The compactor's collector deletes objects that were allocated and never committed, after a
//! grace period, and records them in the manifest first (`CollectObjects`); a commit naming a
//! collected id is refused. An upload whose commit was held up past that grace (a store
//! brownout; one stuck commit holds back every later one) meets exactly that refusal. Its data
//! is still in the log cache (entries leave only once committed) and in the WAL (trimmed only
//! after the commit), so nothing is lost: the seal is encoded again under fresh ids, uploaded,
//! and committed in the same place in the seal order, since the task commits one seal at a
//! time.

pub(crate) mod build;

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use futures::stream::{FuturesOrdered, StreamExt};
use object_store::path::Path;
use object_store::ObjectStore;
use objstream_wal::WalPosition;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::error::{Error, ErrorDetail, Result};
use crate::keys;
use crate::manifest::{Change, ObjectMeta, Outcome};
use crate::retry::{retry_transient, Backoff};
use crate::store::{StoreInner, StreamStatus};

/// Requests to the upload task.
pub(crate) enum UploadCommand {
    /// Reply once everything below log cache sequence `target` is committed.
    Flush {
        target: u64,
        reply: oneshot::Sender<Result<()>>,
    },
    /// Stop after replying.
    Shutdown(oneshot::Sender<()>),
}

/// A seal whose objects are uploaded, ready to commit.
struct Uploaded {
    upto_seq: u64,
    trim_before: Option<WalPosition>,
    /// The seal grouped into objects: kept to upload it again under fresh ids if the collector
    /// took the ids first. Its entries share their bytes with the log cache.
    plan: Arc<build::Plan>,
    objects: Vec<ObjectMeta>,
    /// When the last object was stored (commit latency starts here).
    stored_at: Instant,
}

/// How often the read path's numbers are published as metrics by the upload task.
const READ_STATS_EVERY: Duration = Duration::from_secs(1);

/// Object ids reserved from the manifest and not used yet.
#[derive(Default)]
struct IdPool {
    next: u64,
    end: u64,
}

pub(crate) async fn run(
    inner: Weak<StoreInner>,
    mut commands: mpsc::UnboundedReceiver<UploadCommand>,
) {
    let Some((settings, wakeup)) = inner
        .upgrade()
        .map(|s| (s.settings.clone(), s.upload_wakeup.clone()))
    else {
        return;
    };
    // The first tick one interval after the start, not at once: an append right after open
    // is not a reason to upload.
    let period = Duration::from_millis(settings.upload_interval_ms.max(1));
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut in_flight: FuturesOrdered<JoinHandle<Result<Uploaded>>> = FuturesOrdered::new();
    let mut flushes: Vec<(u64, oneshot::Sender<Result<()>>)> = Vec::new();
    let mut ids = IdPool::default();
    let mut shutdown = None;
    let mut read_stats_published = Instant::now();
    loop {
        let mut seal_now = false;
        tokio::select! {
            Some(done) = in_flight.next(), if !in_flight.is_empty() => {
                let Some(store) = inner.upgrade() else { break };
                let result = match done {
                    Ok(r) => r,
                    Err(e) => Err(Error::internal(format!("upload task panicked: {e}"))),
                };
                if let Err(e) = commit(&store, &mut ids, result).await {
                    store.fail(e);
                }
            }
            command = commands.recv() => match command {
                None => break,
                Some(UploadCommand::Flush { target, reply }) => {
                    flushes.push((target, reply));
                    seal_now = true;
                }
                Some(UploadCommand::Shutdown(reply)) => shutdown = Some(reply),
            },
            _ = wakeup.notified() => seal_now = true,
            _ = ticker.tick() => seal_now = true,
        }
        let Some(store) = inner.upgrade() else { break };
        answer_flushes(&store, &mut flushes);
        publish_gauges(&store, in_flight.len());
        if read_stats_published.elapsed() >= READ_STATS_EVERY {
            read_stats_published = Instant::now();
            store.metrics.read.publish(&store.read_stats());
        }
        if shutdown.is_some() && in_flight.is_empty() {
            break;
        }
        if seal_now && in_flight.len() < settings.max_uploads_in_flight.max(1) {
            match start_upload(&store, &mut ids).await {
                Ok(Some(job)) => in_flight.push_back(job),
                Ok(None) => answer_flushes(&store, &mut flushes),
                Err(e) => store.fail(e),
            }
        }
    }
    if let Some(store) = inner.upgrade() {
        answer_flushes(&store, &mut flushes);
    }
    if let Some(reply) = shutdown {
        let _ = reply.send(());
    }
}

/// Publishes the bytes waiting for a commit and the uploads in flight.
fn publish_gauges(store: &StoreInner, in_flight: usize) {
    let pending = store.core.lock().cache.usage().unflushed_bytes;
    store.metrics.pending_bytes.set(pending as f64);
    store.metrics.uploads_in_flight.set(in_flight as f64);
}

/// Replies to every flush whose data is committed, and fails them all if the store failed.
fn answer_flushes(store: &StoreInner, flushes: &mut Vec<(u64, oneshot::Sender<Result<()>>)>) {
    let (committed, failed) = {
        let core = store.core.lock();
        (core.cache.committed_seq(), core.failed.clone())
    };
    let mut i = 0;
    while i < flushes.len() {
        if failed.is_some() || flushes[i].0 <= committed {
            let (_, reply) = flushes.swap_remove(i);
            let _ = reply.send(match &failed {
                Some(e) => Err(e.clone()),
                None => Ok(()),
            });
        } else {
            i += 1;
        }
    }
}

async fn start_upload(
    store: &Arc<StoreInner>,
    ids: &mut IdPool,
) -> Result<Option<JoinHandle<Result<Uploaded>>>> {
    let (sealed, trim_before, epochs) = {
        let mut core = store.core.lock();
        if let Some(e) = &core.failed {
            return Err(e.clone());
        }
        if core.cache.durable_seq() == core.cache.sealed_seq() {
            // Nothing durable waits; a flush of data sealed already is answered by its commit.
            return Ok(None);
        }
        let sealed = core.cache.seal();
        let trim_before = core.last_durable.map(|(_, p)| WalPosition(p.0 + 1));
        let epochs: std::collections::HashMap<_, _> = core
            .streams
            .iter()
            .filter(|(_, s)| s.status != StreamStatus::Deleted)
            .map(|(id, s)| (*id, s.epoch))
            .collect();
        (sealed, trim_before, epochs)
    };
    let upto_seq = sealed.upto_seq;
    let sealed_bytes = sealed.bytes;
    let plan = build::plan(sealed, store.settings.stream_split_bytes, |s| {
        epochs.get(&s).copied()
    });
    let count = plan.groups.len() as u64;
    let started = Instant::now();
    let first_id = take_ids(store, ids, count).await?;
    let objects = store.objects.clone();
    let prefix = store.prefix.clone();
    let settings = store.settings.clone();
    let reader = store.reader.clone();
    let weak = Arc::downgrade(store);
    let span = tracing::info_span!(
        "upload",
        upto_seq,
        bytes = sealed_bytes,
        objects = count,
        first_object = first_id,
    );
    tracing::debug!(parent: &span, "upload started");
    let plan = Arc::new(plan);
    let job = async move {
        let built = encode(plan.clone(), first_id, &settings).await?;
        // Uploads share the object-store bandwidth budget with reads and go first.
        reader.charge_upload(built.iter().map(|b| b.bytes.len() as u64).sum());
        put_objects(&objects, &prefix, &built).await?;
        if let Some(store) = weak.upgrade() {
            store.metrics.upload_duration.record(started.elapsed());
            for b in &built {
                store.metrics.object_uploaded(b.meta.kind, b.bytes.len());
            }
        }
        Ok(Uploaded {
            upto_seq,
            trim_before,
            plan,
            objects: built.into_iter().map(|b| b.meta).collect(),
            stored_at: Instant::now(),
        })
    };
    Ok(Some(tokio::spawn(job.instrument(span))))
}

/// Encodes the plan's groups as objects `first_id`, `first_id + 1`, …, on a blocking thread.
pub(crate) async fn encode(
    plan: Arc<build::Plan>,
    first_id: u64,
    settings: &crate::settings::Settings,
) -> Result<Vec<build::BuiltObject>> {
    let (block_bytes, compression) = (settings.block_bytes, settings.compression);
    tokio::task::spawn_blocking(move || {
        plan.groups
            .iter()
            .enumerate()
            .map(|(i, (kind, streams))| {
                build::build(
                    crate::types::ObjectId(first_id + i as u64),
                    *kind,
                    streams,
                    block_bytes,
                    compression,
                )
            })
            .collect::<Result<Vec<_>>>()
    })
    .await
    .map_err(|e| Error::internal(format!("object encoding panicked: {e}")))?
}

/// Stores encoded objects, every PUT at once (each retried by [`put_object`]).
pub(crate) async fn put_objects(
    objects: &Arc<dyn ObjectStore>,
    prefix: &Path,
    built: &[build::BuiltObject],
) -> Result<()> {
    let puts = built
        .iter()
        .map(|b| put_object(objects, prefix, b.meta.id, b.bytes.clone()));
    futures::future::try_join_all(puts).await?;
    Ok(())
}

async fn take_ids(store: &StoreInner, ids: &mut IdPool, count: u64) -> Result<u64> {
    if ids.end - ids.next < count {
        let wanted = count.max(store.settings.object_id_batch.max(1));
        let committed = store
            .meta
            .commit(Change::AllocateObjectIds {
                node: store.node,
                node_epoch: store.node_epoch,
                count: wanted,
            })
            .await?;
        let Outcome::ObjectIds(range) = committed.outcome else {
            return Err(Error::internal("allocating object ids returned no ids"));
        };
        ids.next = range.start;
        ids.end = range.end;
    }
    let first = ids.next;
    ids.next += count;
    Ok(first)
}

#[tracing::instrument(
    level = "debug",
    name = "put_object",
    skip(objects, prefix, bytes),
    fields(object = %id, bytes = bytes.len())
)]
pub(crate) async fn put_object(
    objects: &Arc<dyn ObjectStore>,
    prefix: &Path,
    id: crate::types::ObjectId,
    bytes: bytes::Bytes,
) -> Result<()> {
    let path = keys::object_path(prefix, id);
    let len = bytes.len();
    retry_transient("put object", &path, Backoff::for_uploads(id.0), || {
        let objects = objects.clone();
        let path = path.clone();
        let payload = object_store::PutPayload::from_bytes(bytes.clone());
        async move {
            objects
                .put_opts(&path, payload, object_store::PutOptions::default())
                .await
                .map(|_| ())
        }
    })
    .await?;
    tracing::debug!(object = %id, bytes = len, "object uploaded");
    Ok(())
}

async fn commit(store: &StoreInner, ids: &mut IdPool, uploaded: Result<Uploaded>) -> Result<()> {
    let uploaded = uploaded?;
    let span = tracing::info_span!(
        "commit",
        upto_seq = uploaded.upto_seq,
        objects = uploaded.objects.len(),
        first_object = uploaded.objects.first().map(|o| o.id.0),
        last_object = uploaded.objects.last().map(|o| o.id.0),
    );
    commit_uploaded(store, ids, uploaded).instrument(span).await
}

async fn commit_uploaded(
    store: &StoreInner,
    ids: &mut IdPool,
    mut uploaded: Uploaded,
) -> Result<()> {
    let wal_floor = uploaded.trim_before.map(|p| p.0);
    // The WAL floor goes into the manifest with the commit, before the WAL deletes anything:
    // a node recovering an object WAL starts from the newest floor it finds there.
    loop {
        let change = if !uploaded.objects.is_empty() {
            Change::CommitObjects {
                node: store.node,
                node_epoch: store.node_epoch,
                objects: uploaded.objects.clone(),
                wal_floor,
            }
        } else if let Some(floor) = wal_floor {
            Change::TrimWal {
                node: store.node,
                node_epoch: store.node_epoch,
                owner: store.node,
                floor,
            }
        } else {
            break;
        };
        match commit_change(store, &uploaded, change).await {
            Ok(()) => break,
            Err(e) if collected(store, &uploaded.objects, &e).await? => {
                tracing::warn!(
                    error = %e,
                    "the collector took this upload's ids while its commit was held up; uploading it again"
                );
                store.metrics.reuploads.increment(1);
                reupload(store, ids, &mut uploaded).await?;
            }
            Err(e) => return Err(e),
        }
    }
    {
        let mut core = store.core.lock();
        core.cache.mark_committed(uploaded.upto_seq);
        store.admit_waiting(&mut core);
    }
    if let Some(before) = uploaded.trim_before {
        store.wal.trim(before).await?;
    }
    Ok(())
}

/// Commits `change`, retrying transient failures.
async fn commit_change(store: &StoreInner, uploaded: &Uploaded, change: Change) -> Result<()> {
    let mut backoff = Backoff::for_uploads(uploaded.upto_seq);
    loop {
        match store.meta.commit(change.clone()).await {
            Ok(_) => break,
            Err(e) if crate::retry::is_transient(&e) => {
                store.metrics.commit_retries.increment(1);
                tracing::warn!(error = %e, "manifest commit failed; retrying");
                backoff.wait().await;
            }
            Err(e) => return Err(e),
        }
    }
    store
        .metrics
        .commit_duration
        .record(uploaded.stored_at.elapsed());
    tracing::debug!(
        objects = ?uploaded.objects.iter().map(|o| o.id).collect::<Vec<_>>(),
        upto_seq = uploaded.upto_seq,
        wal_floor = uploaded.trim_before.map(|p| p.0),
        "objects committed"
    );
    Ok(())
}

/// True when `refusal` refused a commit of `objects` because the collector collected one of
/// their ids (manifest rule 10), as the refreshed manifest shows.
pub(crate) async fn collected(
    store: &StoreInner,
    objects: &[ObjectMeta],
    refusal: &Error,
) -> Result<bool> {
    if objects.is_empty() || !matches!(refusal.detail(), ErrorDetail::Conflict(_)) {
        return Ok(false);
    }
    let state = store.meta.refresh().await?;
    Ok(objects.iter().any(|o| state.is_collected(o.id)))
}

/// Encodes the seal again under fresh ids and uploads it; `uploaded` then names the new objects.
/// The old objects are orphans that the collector has recorded and deletes.
async fn reupload(store: &StoreInner, ids: &mut IdPool, uploaded: &mut Uploaded) -> Result<()> {
    let first_id = take_ids(store, ids, uploaded.plan.groups.len() as u64).await?;
    let built = encode(uploaded.plan.clone(), first_id, &store.settings).await?;
    store
        .reader
        .charge_upload(built.iter().map(|b| b.bytes.len() as u64).sum());
    put_objects(&store.objects, &store.prefix, &built).await?;
    for b in &built {
        store.metrics.object_uploaded(b.meta.kind, b.bytes.len());
    }
    uploaded.objects = built.into_iter().map(|b| b.meta).collect();
    uploaded.stored_at = Instant::now();
    Ok(())
}
