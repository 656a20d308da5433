//! [`Compactor`]: one pass = retention, plans, garbage collection; fenced by the compactor epoch.
//!
//! # Fencing
//!
//! 1. Opening a compactor commits `OpenCompactor`: the manifest's compactor epoch rises by one,
//!    and this compactor holds the new epoch. Every replacement it commits carries that epoch,
//!    and the manifest refuses one whose epoch is not current, so once another compactor opens,
//!    this one can never commit again.
//! 2. It also commits `OpenNode` for its own node id (one no store uses): object ids are
//!    allocated under that node's epoch, so a second compactor with the same id fences the
//!    first's allocations too.
//! 3. Fenced is terminal: the first fenced answer is latched, and every later call returns it
//!    without touching the object store. A pass that finds a newer compactor epoch in the
//!    manifest latches it before doing anything, deletions included.
//!
//! # A pass
//!
//! 1. Refresh the manifest; check the compactor epoch (rule 3).
//! 2. Retention: commit `TrimStream` for every stream past its limits.
//! 3. Plan ([`plan`](crate::plan::plan)) and execute plans, in order, until the pass's byte
//!    budget is spent: allocate ids, read, write new objects, commit one `ReplaceObjects`. The
//!    manifest validates it against its current state; a plan it refuses (a concurrent change
//!    made it wrong) is dropped and the rest are planned again from the refreshed state, never
//!    forced. Its new objects are orphans for the collector.
//! 4. Collect garbage ([`gc`](crate::gc)): pick what the manifest no longer references,
//!    commit `CollectObjects` for the picked objects that were never committed (a commit that
//!    names one afterwards is refused, so a late upload cannot reference a deleted object),
//!    then delete.
//!
//! A crash anywhere leaves the manifest valid: before the commit, the new objects are orphans;
//! after it, the old ones are unreferenced. Both are collected after the grace period.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use object_store::path::Path;
use object_store::ObjectStore;
use objstream::manifest::{Change, MetaStore, ObjectStoreMetaStore, Outcome, WriterToken};
use objstream::{Epoch, Error, ErrorDetail, ErrorKind, NodeId, ObjectId, Offset, Result, StreamId};
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::clock::{Clock, SystemClock};
use crate::execute::{input_records, write_outputs, BuildOptions};
use crate::gc::{delete_objects, Collector, Garbage, GcReport};
use crate::limiter::Bandwidth;
use crate::metrics::CompactorMetrics;
use crate::plan::{plan, Plan, PlanKind};
use crate::retention::{trims, Ages};
use crate::settings::CompactorSettings;
use crate::source::ObjectAccess;

/// Times a pass plans again after a plan was refused.
const MAX_REPLANS_PER_PASS: usize = 4;
/// Object ids allocated at once.
const ID_BATCH: u64 = 16;

/// A protocol step at which a test may stop the compactor, as a crash would.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Step {
    /// A plan's new objects are written; its replacement is not committed.
    BeforeCommit,
    /// A plan's replacement is committed; nothing else happened after it.
    AfterCommit,
    /// Garbage was picked; nothing is deleted yet.
    BeforeDelete,
}

/// Decides, at each [`Step`], whether the compactor stops there with an error, as if it had
/// crashed. For tests.
pub type Failpoint = Arc<dyn Fn(Step) -> bool + Send + Sync>;

/// The parts a compactor is built from: where the objects are, and optionally a meta store,
/// a clock and a failpoint.
///
/// A test or a simulation injects its own clock, so grace periods and retention by age move
/// only when it says so:
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use std::sync::Arc;
/// use object_store::{memory::InMemory, ObjectStore};
/// use objstream::NodeId;
/// use objstream_compaction::{Compactor, CompactorComponents, CompactorSettings, ManualClock};
///
/// let objects: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
/// let clock = Arc::new(ManualClock::new(1_700_000_000_000));
/// let components = CompactorComponents::new(objects, "cluster-b", NodeId(2_000))
///     .with_clock(clock.clone())
///     .with_writer_token(42);
/// let compactor = Compactor::open(CompactorSettings::default(), components).await?;
/// compactor.run_pass().await?;
/// clock.advance(CompactorSettings::default().grace_period_ms);
/// let report = compactor.run_pass().await?;
/// assert_eq!(report.gc.deleted, 0, "nothing was ever replaced");
/// # Ok::<_, objstream::Error>(()) }).unwrap();
/// ```
#[derive(Clone)]
pub struct CompactorComponents {
    objects: Arc<dyn ObjectStore>,
    prefix: Path,
    node: NodeId,
    meta: Option<Arc<dyn MetaStore>>,
    clock: Arc<dyn Clock>,
    writer_token: Option<u128>,
    failpoint: Option<Failpoint>,
}

impl fmt::Debug for CompactorComponents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CompactorComponents")
            .field("prefix", &self.prefix.as_ref())
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl CompactorComponents {
    /// Objects and manifest in `objects` under `prefix` (the stores' prefix). `node` is the
    /// compactor's node id for allocating object ids: one that no store uses.
    pub fn new(objects: Arc<dyn ObjectStore>, prefix: impl Into<Path>, node: NodeId) -> Self {
        CompactorComponents {
            objects,
            prefix: prefix.into(),
            node,
            meta: None,
            clock: Arc::new(SystemClock),
            writer_token: None,
            failpoint: None,
        }
    }

    /// Uses this meta store instead of opening the manifest log under the prefix.
    pub fn with_meta_store(mut self, meta: Arc<dyn MetaStore>) -> Self {
        self.meta = Some(meta);
        self
    }

    /// Uses this clock for grace periods and retention by age (default: the system clock).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Tags the compactor's manifest records with this token (default: drawn when opening).
    pub fn with_writer_token(mut self, token: u128) -> Self {
        self.writer_token = Some(token);
        self
    }

    /// Stops the compactor at the steps `failpoint` picks, as a crash would. For tests.
    pub fn with_failpoint(mut self, failpoint: Failpoint) -> Self {
        self.failpoint = Some(failpoint);
        self
    }
}

/// What one pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PassReport {
    /// Streams trimmed by retention.
    pub trimmed_streams: usize,
    /// Replacements committed, by kind.
    pub committed: Vec<PlanKind>,
    /// Plans the manifest refused (planned again).
    pub refused: usize,
    /// Plans left for a later pass (byte budget).
    pub deferred: usize,
    /// Objects that left the manifest.
    pub objects_removed: usize,
    /// Objects that entered it.
    pub objects_added: usize,
    /// Bytes read from source objects.
    pub bytes_read: u64,
    /// Bytes of new objects written.
    pub bytes_written: u64,
    /// Garbage collection.
    pub gc: GcReport,
}

struct Inner {
    settings: CompactorSettings,
    access: ObjectAccess,
    meta: Arc<dyn MetaStore>,
    clock: Arc<dyn Clock>,
    failpoint: Option<Failpoint>,
    node: NodeId,
    node_epoch: Epoch,
    epoch: Epoch,
    /// The first fenced error, returned by every later call.
    fenced: Mutex<Option<Error>>,
    /// One pass at a time.
    pass: tokio::sync::Mutex<PassState>,
    /// The handles it reports through.
    metrics: CompactorMetrics,
}

/// What passes remember.
#[derive(Default)]
struct PassState {
    collector: Collector,
    ages: Ages,
    /// Objects whose rewrite would drop nothing (a trim inside their first batch).
    /// With the start offsets of their streams when found: a trim that moves one of them may
    /// make the rewrite worth it again.
    barren: BTreeMap<ObjectId, Vec<(StreamId, Offset)>>,
    ids: std::ops::Range<u64>,
}

/// The compactor of one object-store prefix. Cheap to clone; clones share one compactor.
///
/// Run beside a store, it usually runs passes on its own task; stopping the task waits for the
/// pass in progress:
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use std::sync::Arc;
/// use object_store::{memory::InMemory, ObjectStore};
/// use objstream::NodeId;
/// use objstream_compaction::{Compactor, CompactorComponents, CompactorSettings};
///
/// let objects: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
/// let settings = CompactorSettings { pass_interval_ms: 10, ..CompactorSettings::default() };
/// let components = CompactorComponents::new(objects, "cluster-c", NodeId(3_000));
/// let compactor = Compactor::open(settings, components).await?;
/// let task = compactor.spawn();
/// tokio::time::sleep(std::time::Duration::from_millis(50)).await;
/// task.stop().await?;
/// assert!(!compactor.is_fenced());
/// # Ok::<_, objstream::Error>(()) }).unwrap();
/// ```
#[derive(Clone)]
pub struct Compactor {
    inner: Arc<Inner>,
}

impl fmt::Debug for Compactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Compactor")
            .field("epoch", &self.inner.epoch)
            .field("node", &self.inner.node)
            .field("fenced", &self.inner.fenced.lock().is_some())
            .finish()
    }
}

impl Compactor {
    /// Opens a compactor: validates the settings, opens the manifest, and takes the next
    /// compactor epoch, fencing whichever compactor ran before.
    pub async fn open(
        settings: CompactorSettings,
        components: CompactorComponents,
    ) -> Result<Self> {
        settings.validate()?;
        let metrics = CompactorMetrics::new();
        let meta = match components.meta {
            Some(meta) => meta,
            None => Arc::new(
                ObjectStoreMetaStore::open(
                    components.objects.clone(),
                    components.prefix.clone(),
                    WriterToken(components.writer_token.unwrap_or_else(random_token)),
                    settings.manifest_checkpoint_every,
                )
                .await?,
            ) as Arc<dyn MetaStore>,
        };
        let node_epoch = match meta
            .commit(Change::OpenNode {
                node: components.node,
            })
            .await?
            .outcome
        {
            Outcome::NodeEpoch(e) => e,
            other => return Err(unexpected("open_node", &other)),
        };
        let epoch = match meta.commit(Change::OpenCompactor).await?.outcome {
            Outcome::CompactorEpoch(e) => e,
            other => return Err(unexpected("open_compactor", &other)),
        };
        tracing::info!(%epoch, node = %components.node, "compactor opened");
        let access = ObjectAccess {
            store: components.objects,
            prefix: components.prefix,
            bandwidth: Arc::new(Bandwidth::new(settings.bandwidth_bytes_per_sec)),
        };
        Ok(Compactor {
            inner: Arc::new(Inner {
                settings,
                access,
                meta,
                clock: components.clock,
                failpoint: components.failpoint,
                node: components.node,
                node_epoch,
                epoch,
                fenced: Mutex::new(None),
                pass: tokio::sync::Mutex::new(PassState::default()),
                metrics,
            }),
        })
    }

    /// This compactor's epoch.
    pub fn epoch(&self) -> Epoch {
        self.inner.epoch
    }

    /// True once this compactor has been fenced by a newer one.
    pub fn is_fenced(&self) -> bool {
        self.inner.fenced.lock().is_some()
    }

    /// The settings it runs with.
    pub fn settings(&self) -> &CompactorSettings {
        &self.inner.settings
    }

    /// Runs one pass (see the module docs). Passes of one compactor never overlap: a second
    /// call waits for the first.
    pub async fn run_pass(&self) -> Result<PassReport> {
        self.check_fenced()?;
        let mut pass = self.inner.pass.lock().await;
        let started = std::time::Instant::now();
        let waited_before = self.inner.access.bandwidth.waited();
        let result = self.pass(&mut pass).await;
        let throttled = self
            .inner
            .access
            .bandwidth
            .waited()
            .saturating_sub(waited_before);
        self.inner
            .metrics
            .pass(&result, started.elapsed(), throttled);
        if let Err(e) = &result {
            if e.is_fenced() {
                self.latch(e.clone());
            }
        }
        result
    }

    /// Runs passes every `pass_interval_ms` on its own task until [`CompactorTask::stop`] or
    /// until fenced. A pass that fails for another reason is logged and retried at the next
    /// interval.
    pub fn spawn(&self) -> CompactorTask {
        let (stop, mut stopped) = watch::channel(false);
        let compactor = self.clone();
        let interval = Duration::from_millis(self.inner.settings.pass_interval_ms);
        let task = tokio::spawn(async move {
            loop {
                match compactor.run_pass().await {
                    Ok(report) => tracing::debug!(?report, "compaction pass"),
                    Err(e) if e.is_fenced() => {
                        tracing::warn!(error = %e, "compactor fenced; stopping");
                        return Err(e);
                    }
                    Err(e) => tracing::warn!(error = %e, "compaction pass failed"),
                }
                tokio::select! {
                    _ = tokio::time::sleep(interval) => {}
                    _ = stopped.changed() => return Ok(()),
                }
            }
        });
        CompactorTask { stop, task }
    }

    fn check_fenced(&self) -> Result<()> {
        match &*self.inner.fenced.lock() {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    fn latch(&self, e: Error) {
        let mut fenced = self.inner.fenced.lock();
        if fenced.is_none() {
            tracing::warn!(epoch = %self.inner.epoch, error = %e, "compactor fenced");
            *fenced = Some(e);
        }
    }

    fn fail_at(&self, step: Step) -> Result<()> {
        match &self.inner.failpoint {
            Some(f) if f(step) => Err(ErrorDetail::Internal(format!("stopped at {step:?}")).into()),
            _ => Ok(()),
        }
    }

    async fn pass(&self, pass: &mut PassState) -> Result<PassReport> {
        let inner = &*self.inner;
        let mut report = PassReport::default();
        let state = inner.meta.refresh().await?;
        self.check_epoch(state.compactor_epoch())?;
        pass.ages.retain_in(&state);
        pass.barren.retain(|id, starts| {
            state.object(*id).is_some()
                && starts
                    .iter()
                    .all(|(s, start)| state.stream(*s).is_some_and(|m| m.start == *start))
        });
        // Retention.
        let wanted = trims(
            &state,
            &inner.settings,
            &inner.access,
            inner.clock.now_ms(),
            &mut pass.ages,
        )
        .await?;
        for t in wanted {
            let change = Change::TrimStream {
                stream: t.stream,
                epoch: t.epoch,
                new_start: t.new_start,
                compactor_epoch: Some(self.epoch()),
            };
            match inner.meta.commit(change).await {
                Ok(_) => {
                    report.trimmed_streams += 1;
                    inner.metrics.streams_trimmed.increment(1);
                }
                // The stream was reopened or deleted meanwhile: the next pass sees it anew.
                Err(e) if matches!(e.kind(), ErrorKind::Reopen | ErrorKind::InvalidInput) => {
                    tracing::debug!(stream = %t.stream, error = %e, "retention trim refused");
                }
                Err(e) => return Err(e),
            }
        }
        // Plans.
        let mut budget = inner.settings.max_bytes_per_pass;
        let mut replans = 0;
        'planning: loop {
            let state = inner.meta.state().await?;
            self.check_epoch(state.compactor_epoch())?;
            let barren: BTreeSet<ObjectId> = pass.barren.keys().copied().collect();
            let plans = plan(&state, &inner.settings, &barren);
            report.deferred = 0;
            for p in plans {
                if p.input_bytes > budget {
                    report.deferred += 1;
                    continue;
                }
                match self.execute(pass, &p, &mut report).await {
                    Ok(()) => budget -= p.input_bytes,
                    Err(e) if refused(&e) => {
                        report.refused += 1;
                        tracing::info!(kind = ?p.kind, error = %e, "the manifest refused a plan; planning again");
                        inner.meta.refresh().await?;
                        replans += 1;
                        if replans <= MAX_REPLANS_PER_PASS {
                            continue 'planning;
                        }
                        break 'planning;
                    }
                    Err(e) => return Err(e),
                }
            }
            break;
        }
        // Garbage.
        let clock = Arc::clone(&inner.clock);
        let (doomed, mut gc) = pass
            .collector
            .pick(
                &inner.access,
                &inner.meta,
                || clock.now_ms(),
                inner.settings.grace_period_ms,
                inner.settings.max_deletes_per_pass,
            )
            .await?;
        // The collector refreshed the manifest: a newer compactor owns collection now.
        self.check_epoch(inner.meta.state().await?.compactor_epoch())?;
        inner.metrics.awaiting_grace.set(gc.awaiting_grace as f64);
        let mut doomed = doomed;
        self.collect(pass, &mut doomed, &mut gc).await?;
        inner
            .metrics
            .objects_collected
            .increment(gc.collected as u64);
        inner
            .metrics
            .committed_meanwhile
            .increment(gc.committed_meanwhile as u64);
        if !doomed.paths.is_empty() {
            self.fail_at(Step::BeforeDelete)?;
            gc.deleted = delete_objects(&inner.access, &doomed.paths).await?;
            gc.deleted_bytes = doomed.bytes;
            pass.collector.deleted(&doomed.paths);
            inner.metrics.objects_deleted.increment(gc.deleted as u64);
            inner.metrics.deleted_bytes.increment(doomed.bytes);
        }
        report.gc = gc;
        Ok(report)
    }

    /// Records the orphans among `doomed` as collected in the manifest before anything is
    /// deleted (gc rule 5). A refusal means a commit took some of them meanwhile: the manifest
    /// is refreshed, those are left out, and the rest are collected again. Orphans that still
    /// cannot be collected after a few tries are left for a later pass.
    async fn collect(
        &self,
        pass: &mut PassState,
        doomed: &mut Garbage,
        gc: &mut GcReport,
    ) -> Result<()> {
        let inner = &*self.inner;
        for _ in 0..=MAX_REPLANS_PER_PASS {
            if doomed.orphans.is_empty() {
                return Ok(());
            }
            let change = Change::CollectObjects {
                compactor_epoch: inner.epoch,
                ids: doomed.orphans.clone(),
            };
            match inner.meta.commit(change).await {
                Ok(_) => {
                    gc.collected = doomed.orphans.len();
                    return Ok(());
                }
                Err(e) if matches!(e.detail(), ErrorDetail::Conflict(_)) => {
                    let state = inner.meta.refresh().await?;
                    self.check_epoch(state.compactor_epoch())?;
                    let taken: Vec<ObjectId> = doomed
                        .orphans
                        .iter()
                        .copied()
                        .filter(|id| state.object(*id).is_some())
                        .collect();
                    tracing::info!(?taken, error = %e, "objects about to be collected were committed; keeping them");
                    gc.committed_meanwhile += doomed.keep(|id| taken.contains(&id));
                    pass.collector.committed(taken);
                }
                Err(e) => return Err(e),
            }
        }
        // Keep refusing: delete only what needs no record, and try the rest next pass.
        doomed.keep(|_| true);
        Ok(())
    }

    /// Fenced when the manifest's compactor epoch moved past ours.
    fn check_epoch(&self, current: Epoch) -> Result<()> {
        if current != self.inner.epoch {
            let e: Error = ErrorDetail::Fenced(format!(
                "compactor {} was replaced by compactor {current}",
                self.inner.epoch
            ))
            .into();
            self.latch(e.clone());
            return Err(e);
        }
        Ok(())
    }

    async fn execute(&self, pass: &mut PassState, p: &Plan, report: &mut PassReport) -> Result<()> {
        let inner = &*self.inner;
        let ids = self.take_ids(pass, p.outputs.len()).await?;
        let drops_something =
            |records: u64| p.kind != PlanKind::DropTrimmed || records < input_records(p);
        let options = BuildOptions {
            block_bytes: inner.settings.block_bytes,
            compression: inner.settings.compression,
        };
        let Some(written) = write_outputs(&inner.access, options, p, &ids, drops_something).await?
        else {
            let state = inner.meta.state().await?;
            for id in &p.removed {
                let starts = state.object(*id).map_or_else(Vec::new, |o| {
                    o.ranges
                        .iter()
                        .filter_map(|r| state.stream(r.stream).map(|m| (r.stream, m.start)))
                        .collect()
                });
                pass.barren.insert(*id, starts);
            }
            return Ok(());
        };
        let added_ids: Vec<ObjectId> = written.objects.iter().map(|o| o.id).collect();
        // From here on the new objects exist: if the commit does not take them, they are
        // orphans, and the collector may delete them once it finds them unreferenced.
        pass.collector
            .written_at(added_ids.iter().copied(), inner.clock.now_ms());
        self.fail_at(Step::BeforeCommit)?;
        let change = Change::ReplaceObjects {
            compactor_epoch: inner.epoch,
            removed: p.removed.clone(),
            added: written.objects.clone(),
        };
        inner.meta.commit(change).await?;
        pass.collector
            .removed_at(p.removed.iter().copied(), inner.clock.now_ms());
        tracing::debug!(kind = ?p.kind, removed = ?p.removed, added = ?added_ids, "committed a replacement");
        report.committed.push(p.kind);
        report.objects_removed += p.removed.len();
        report.objects_added += written.objects.len();
        report.bytes_read += written.bytes_read;
        report.bytes_written += written.bytes_written;
        let m = &inner.metrics;
        m.objects_replaced.increment(p.removed.len() as u64);
        m.objects_written.increment(written.objects.len() as u64);
        m.read_bytes.increment(written.bytes_read);
        m.written_bytes.increment(written.bytes_written);
        self.fail_at(Step::AfterCommit)?;
        Ok(())
    }

    /// `n` fresh object ids, allocated through the manifest under the compactor's node.
    async fn take_ids(&self, pass: &mut PassState, n: usize) -> Result<Vec<ObjectId>> {
        let n = n as u64;
        if pass.ids.end - pass.ids.start < n {
            let change = Change::AllocateObjectIds {
                node: self.inner.node,
                node_epoch: self.inner.node_epoch,
                count: n.max(ID_BATCH),
            };
            match self.inner.meta.commit(change).await?.outcome {
                Outcome::ObjectIds(range) => pass.ids = range,
                other => return Err(unexpected("allocate_object_ids", &other)),
            }
        }
        let first = pass.ids.start;
        pass.ids.start += n;
        Ok((first..first + n).map(ObjectId).collect())
    }
}

/// A compactor running passes on its own task.
#[derive(Debug)]
pub struct CompactorTask {
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<()>>,
}

impl CompactorTask {
    /// Stops after the pass in progress, if any, and returns how the task ended: `Ok` when
    /// stopped, the fenced error when a newer compactor took over.
    pub async fn stop(self) -> Result<()> {
        let _ = self.stop.send(true);
        self.task
            .await
            .map_err(|e| ErrorDetail::Internal(format!("compactor task: {e}")).into())
            .and_then(|r| r)
    }

    /// True once the task has ended (stopped or fenced).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

/// True for errors that mean the plan no longer fits the manifest: plan again.
fn refused(e: &Error) -> bool {
    matches!(
        e.detail(),
        ErrorDetail::Conflict(_) | ErrorDetail::InvalidInput(_) | ErrorDetail::UnknownStream(_)
    )
}

fn unexpected(change: &str, outcome: &Outcome) -> Error {
    ErrorDetail::Internal(format!("{change} answered {outcome:?}")).into()
}

/// A token unique to this process start, to recognise the compactor's own manifest records:
/// the std hasher's per-process random keys over the process id.
fn random_token() -> u128 {
    use std::hash::{BuildHasher, Hasher};
    let mut token = 0u128;
    for salt in 0..2u64 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(salt);
        h.write_u32(std::process::id());
        token = (token << 64) | u128::from(h.finish());
    }
    token
}
