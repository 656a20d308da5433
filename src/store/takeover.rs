//! Failover: this node finishes the work of a failed node.
//!
//! ```text
//! 1. FenceNode(failed, its epoch)     the failed node can no longer commit, open or close
//! 2. replay the failed node's WAL     (the caller opens it: a shared disk, a reattached volume,
//!                                      an object WAL — whatever reaches it from here)
//! 3. keep what is not yet committed   records of the failed node's open streams, under their
//!                                      current epochs, at or past each committed end, dense
//! 4. upload and commit it             as this node (the manifest lets a live node finish the
//!                                      streams of a fenced one)
//! 5. close those streams              any node may now open them, with a higher epoch
//! ```
//!
//! The failed node's records are uploaded straight from the replay: they never enter this
//! node's log cache or WAL, so this node's own appends are not held up.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use objstream_cache::LogCache;
use objstream_wal::Wal;

use super::{Store, StoreInner};
use crate::error::{Error, Result};
use crate::manifest::{Change, NodeMeta, Outcome, StreamStatus};
use crate::types::{NodeId, RecordBatch, StreamId};
use crate::upload::{build, encode, put_objects};

/// What [`Store::recover_node`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeRecovery {
    /// The failed node.
    pub node: NodeId,
    /// Streams it had open, now closed.
    pub streams_closed: Vec<StreamId>,
    /// WAL records read.
    pub wal_records: usize,
    /// Batches that were not yet in objects and now are.
    pub batches_recovered: usize,
    /// Their payload bytes.
    pub bytes_recovered: u64,
    /// Objects written.
    pub objects_written: usize,
    /// How long the whole recovery took, in milliseconds (with `recover_node_from`, from the
    /// fence to the last close: opening and sealing the WAL included).
    pub millis: u64,
}

impl Store {
    /// Takes over a failed node: fences it in the manifest, replays its WAL (`wal`, opened by
    /// the caller on whatever reaches the failed node's log), uploads and commits every
    /// acknowledged batch that was not yet in objects, and closes its streams so that any node
    /// can open them with a higher epoch.
    ///
    /// Safe to run again after a crash part way: what is committed already is skipped. If two
    /// nodes recover the same node at once, one may fail with a conflict (`ErrorKind::Retry`);
    /// running it again then finds the work done. A commit held up so long that the collector
    /// took its objects as orphans meanwhile is refused and the recovered batches are uploaded
    /// again under fresh ids, as the upload pipeline does.
    pub async fn recover_node(&self, failed: NodeId, wal: Arc<dyn Wal>) -> Result<NodeRecovery> {
        recover(&self.inner, failed, wal, Instant::now()).await
    }

    /// [`Store::recover_node`] on the WAL that `wal` describes (the failed node's settings).
    /// The failed node is fenced in the manifest first; then its WAL is opened as the failed node
    /// at an epoch above its current one, which fences a writer that still holds it: a block WAL
    /// gets the higher epoch in its header, an object WAL is sealed from the floor the manifest
    /// records.
    ///
    /// Node 1 dies with acknowledged appends not yet in objects; node 2 takes its WAL over (an
    /// object WAL here, which any node can reach; a block WAL on a shared volume works the same
    /// way) and every acknowledged append is readable:
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// use std::sync::Arc;
    /// use objstream::{Components, NodeId, Offset, RecordBatch, Settings, Store, WalSettings};
    /// let objects = Arc::new(object_store::memory::InMemory::new());
    /// let node = |id: u64| Settings {
    ///     node_id: NodeId(id),
    ///     wal: WalSettings::object(None), // WAL objects in the data store
    ///     upload_interval_ms: 3_600_000,  // keep data in the WAL only, for the example
    ///     ..Settings::default()
    /// };
    /// let failed = Store::open(node(1), Components::new(objects.clone(), "events")).await.unwrap();
    /// let stream = failed.create_stream().await.unwrap();
    /// stream.append(RecordBatch::new(1, 0, "acknowledged")).await.unwrap();
    /// let id = stream.id();
    /// drop((stream, failed)); // node 1 is gone, without a shutdown
    ///
    /// let survivor = Store::open(node(2), Components::new(objects.clone(), "events")).await.unwrap();
    /// let report = survivor.recover_node_from(NodeId(1), &node(1).wal).await.unwrap();
    /// assert_eq!(report.batches_recovered, 1);
    /// assert_eq!(report.streams_closed, vec![id]);
    ///
    /// let taken = survivor.open_stream(id).await.unwrap();
    /// let batches = taken.fetch(Offset(0), Offset(1), 1 << 20).await.unwrap();
    /// assert_eq!(&batches[0].batch.payload[..], b"acknowledged");
    /// # survivor.shutdown().await.unwrap();
    /// # });
    /// ```
    pub async fn recover_node_from(
        &self,
        failed: NodeId,
        wal: &crate::WalSettings,
    ) -> Result<NodeRecovery> {
        let started = Instant::now();
        let node = fence(&self.inner, failed).await?;
        let opened = super::components::open_wal(
            wal,
            self.inner.settings.max_batch_bytes,
            super::components::WalTarget {
                owner: failed,
                epoch: node.epoch.next(),
                actor: (self.inner.node, self.inner.node_epoch),
                floor: node.wal_floor,
                objects: &self.inner.objects,
                prefix: &self.inner.prefix,
            },
        )
        .await?;
        recover(&self.inner, failed, opened, started).await
    }
}

/// Fences `failed` at its current epoch (idempotent) and returns what the manifest then says of
/// it. Every commit the failed node attempts from now on is refused, so the WAL floor read here
/// is the last it will ever record.
async fn fence(inner: &StoreInner, failed: NodeId) -> Result<NodeMeta> {
    if failed == inner.node {
        return Err(Error::invalid(format!(
            "{failed} cannot recover itself; reopen it instead"
        )));
    }
    let state = inner.meta.refresh().await?;
    let node = state
        .node(failed)
        .ok_or_else(|| Error::invalid(format!("{failed} has never opened")))?;
    inner
        .meta
        .commit(Change::FenceNode {
            node: failed,
            epoch: node.epoch,
        })
        .await?;
    let state = inner.meta.refresh().await?;
    state
        .node(failed)
        .copied()
        .ok_or_else(|| Error::internal(format!("{failed} vanished from the manifest")))
}

#[tracing::instrument(
    name = "recover_node",
    skip_all,
    fields(failed = %failed, by = %inner.node, by_epoch = %inner.node_epoch)
)]
async fn recover(
    inner: &StoreInner,
    failed: NodeId,
    wal: Arc<dyn Wal>,
    started: Instant,
) -> Result<NodeRecovery> {
    let node = fence(inner, failed).await?;
    tracing::info!(node = %failed, epoch = %node.epoch, by = %inner.node, "node fenced; recovering its WAL");
    let state = inner.meta.refresh().await?;
    let owned: HashMap<StreamId, _> = state
        .streams_owned_by(failed)
        .into_iter()
        .filter_map(|id| state.stream(id).map(|s| (id, s.clone())))
        .filter(|(_, s)| s.status == StreamStatus::Open)
        .collect();
    let records = wal.replay().await?;
    let mut report = NodeRecovery {
        node: failed,
        wal_records: records.len(),
        ..NodeRecovery::default()
    };
    let open: HashMap<StreamId, _> = owned
        .iter()
        .map(|(id, s)| (*id, (s.epoch, s.end)))
        .collect();
    let mut cache: LogCache<RecordBatch> = LogCache::new(u64::MAX);
    for logged in super::replay::uncommitted(&records, &open, &format!("{failed}'s WAL"))? {
        report.batches_recovered += 1;
        report.bytes_recovered += logged.batch.batch.payload.len() as u64;
        cache.insert(
            logged.stream.0,
            logged.batch.base_offset.0,
            logged.batch.batch,
        );
    }
    cache.mark_durable(cache.next_seq());
    let plan = build::plan(cache.seal(), inner.settings.stream_split_bytes, |s| {
        open.get(&s).map(|(epoch, _)| *epoch)
    });
    if !plan.groups.is_empty() {
        report.objects_written = upload_recovered(inner, Arc::new(plan)).await?;
    }
    let mut closed: Vec<StreamId> = owned.keys().copied().collect();
    closed.sort();
    for (id, meta) in &owned {
        inner
            .meta
            .commit(Change::CloseStream {
                stream: *id,
                epoch: meta.epoch,
                node: inner.node,
                node_epoch: inner.node_epoch,
            })
            .await?;
    }
    if let Some(last) = records.last() {
        super::replay::trim_recorded(inner, failed, wal.as_ref(), last.end).await?;
    }
    report.streams_closed = closed;
    report.millis = started.elapsed().as_millis() as u64;
    inner.metrics.takeover.record(
        started.elapsed(),
        report.batches_recovered as u64,
        report.bytes_recovered,
    );
    tracing::info!(
        node = %failed,
        by = %inner.node,
        streams = report.streams_closed.len(),
        batches = report.batches_recovered,
        bytes = report.bytes_recovered,
        objects = report.objects_written,
        millis = report.millis,
        "node recovered"
    );
    Ok(report)
}

/// Uploads the recovered groups as objects of this node and commits them; returns how many
/// objects were committed. A commit refused because the collector took its ids meanwhile (the
/// commit was held up past the collector's grace: see `crate::upload`) is not the end: the
/// groups are still here, so they are encoded again under fresh ids and uploaded, as the
/// upload pipeline does with a seal.
async fn upload_recovered(inner: &StoreInner, plan: Arc<build::Plan>) -> Result<usize> {
    loop {
        let committed = inner
            .meta
            .commit(Change::AllocateObjectIds {
                node: inner.node,
                node_epoch: inner.node_epoch,
                count: plan.groups.len() as u64,
            })
            .await?;
        let Outcome::ObjectIds(ids) = committed.outcome else {
            return Err(Error::internal("allocating object ids returned no ids"));
        };
        let built = encode(plan.clone(), ids.start, &inner.settings).await?;
        put_objects(&inner.objects, &inner.prefix, &built).await?;
        for b in &built {
            inner.metrics.object_uploaded(b.meta.kind, b.bytes.len());
        }
        let objects: Vec<_> = built.into_iter().map(|b| b.meta).collect();
        let change = Change::CommitObjects {
            node: inner.node,
            node_epoch: inner.node_epoch,
            objects: objects.clone(),
            wal_floor: None,
        };
        match inner.meta.commit(change).await {
            Ok(_) => return Ok(objects.len()),
            Err(e) if crate::upload::collected(inner, &objects, &e).await? => {
                tracing::warn!(
                    error = %e,
                    "the collector took the recovered objects' ids while their commit was held up; uploading them again"
                );
                inner.metrics.reuploads.increment(1);
            }
            Err(e) => return Err(e),
        }
    }
}
