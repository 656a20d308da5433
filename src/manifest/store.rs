//! [`ObjectStoreMetaStore`]: the manifest log kept on an object store.
//!
//! # Protocol
//!
//! 1. **Open.** LIST the checkpoints, sort their numbers, and load the newest that decodes (or
//!    start from the empty state). Then GET records `seq + 1`, `seq + 2`, … until one is not
//!    found: that is the tail. This is the only LIST.
//! 2. **Commit.** Under a process-wide async mutex: apply the change to a copy of the cached
//!    state (which validates it), then create record `seq + 1` with `PutMode::Create`.
//!    - Created: the commit is durable; the copy becomes the cached state.
//!    - Already exists: read that record back. If it carries this writer's token and this very
//!      change, it is our own earlier attempt (a PUT whose response was lost landed, and its
//!      retry reports "already exists"): the commit succeeded. Otherwise another writer won the
//!      number: apply its record, read forward to the new tail, validate the change again
//!      against the new state and try the next number. If no record is there, either the log
//!      moved on behind a newer checkpoint (reload from it), or the store refused the create
//!      without writing (S3 answers `409 ConditionalRequestConflict` to conditional PUTs racing
//!      on one key, which object_store reports as "already exists"): back off and try the same
//!      number again. After [`MAX_COMMIT_ATTEMPTS`] attempts the commit fails with a `Conflict`.
//!    - A change the state already reflects ([`Outcome::AlreadyApplied`]) writes nothing.
//! 3. **Checkpoint.** The committer of every `checkpoint_every`-th record writes a checkpoint
//!    of the state as of that record. A failed checkpoint write is logged, not returned.
//! 4. **Refresh.** Read forward from the cached state. When the next record is missing, probe
//!    the checkpoint at the next multiple of `checkpoint_every`: if it exists, the log moved on
//!    and the records this reader needed were removed after a newer checkpoint, so it reloads
//!    from the newest checkpoint.
//!
//! Every GET, PUT, HEAD and LIST goes through [`retry_transient`](crate::retry): throttling,
//! timeouts, resets and bodies cut short are retried with capped, jittered backoff, never
//! returned as a failed commit. A retried create is what makes the writer token necessary. The
//! one exception is the checkpoint write of step 3: it is best effort and not retried.
//!
//! A record that fails to decode, or does not apply to the state it follows, is a corruption
//! error naming its key; it is never skipped.
//!
//! 5. **Prune** (with [`ObjectStoreMetaStore::with_log_retention`]). The writer of a checkpoint
//!    removes the records below it, and older checkpoints, once the retention has passed since
//!    the checkpoint was written. Because a create of a removed number would succeed, every
//!    create and every read forward is preceded by a check that this store saw the tail less
//!    than [`TAIL_FRESHNESS`] ago; otherwise it reloads (step 1) first. Module
//!    [`prune`](super::prune) has the argument. Every store follows the freshness rule, pruning
//!    or not.

use std::fmt;
use std::sync::Arc;

use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutPayload};

use super::change::{Change, Outcome};
use super::checkpoint::{checkpoint_exists, list_checkpoints, read_checkpoint, write_checkpoint};
use super::paths::ManifestPaths;
use super::prune::{LogPruner, TailWatch, TAIL_FRESHNESS};
use super::record::{decode_record, encode_record, Record, WriterToken};
use super::state::ManifestState;
use super::{Committed, MetaStore};
use crate::error::{Error, ErrorDetail, ErrorKind, Result};
use crate::retry::{read_body, retry_transient, retry_transient_errors, Backoff};

/// How many times one commit may lose the race for the next sequence number before it fails.
pub const MAX_COMMIT_ATTEMPTS: usize = 100;

/// The manifest log on an object store, under `{prefix}/manifest/` and
/// `{prefix}/manifest-checkpoint/`.
///
/// Several processes may each hold one on the same prefix; conditional creates order their
/// commits. Within a process, commits are serialized.
pub struct ObjectStoreMetaStore {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    paths: ManifestPaths,
    writer: WriterToken,
    checkpoint_every: u64,
    /// Held across a whole commit or refresh, so that at most one of them talks to the log.
    commit_lock: tokio::sync::Mutex<()>,
    /// The latest state known; replaced (never mutated) under `commit_lock`.
    cached: parking_lot::Mutex<Arc<ManifestState>>,
    /// Commit latency and conflict counters.
    metrics: crate::metrics::ManifestMetrics,
    /// When the log's tail was last seen.
    tail: TailWatch,
    /// Removes records that checkpoints this store wrote cover; `None` keeps every record.
    pruner: Option<Arc<LogPruner>>,
}

/// What one create of the next record found.
enum Created {
    /// The record is ours now.
    Yes,
    /// The key is taken (or the create was refused): read it back.
    Taken,
    /// The last sight of the tail went stale before the create could be sent: reload first.
    Stale,
}

impl fmt::Debug for ObjectStoreMetaStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectStoreMetaStore")
            .field("store", &self.store.to_string())
            .field("prefix", &self.prefix.as_ref())
            .field("writer", &self.writer.to_string())
            .field("checkpoint_every", &self.checkpoint_every)
            .field("seq", &self.cached.lock().seq())
            .finish()
    }
}

impl ObjectStoreMetaStore {
    /// Opens the manifest under `prefix`, loading the newest checkpoint and the records after
    /// it. `writer` marks this store's records (derive it from the node's random source);
    /// `checkpoint_every` is how many records lie between checkpoints (0: never write one).
    pub async fn open(
        store: Arc<dyn ObjectStore>,
        prefix: Path,
        writer: WriterToken,
        checkpoint_every: u64,
    ) -> Result<Self> {
        let paths = ManifestPaths::new(&prefix);
        let meta = ObjectStoreMetaStore {
            store,
            prefix,
            paths,
            writer,
            checkpoint_every,
            commit_lock: tokio::sync::Mutex::new(()),
            cached: parking_lot::Mutex::new(Arc::new(ManifestState::new())),
            metrics: crate::metrics::ManifestMetrics::new(),
            tail: TailWatch::default(),
            pruner: None,
        };
        let state = meta.load_newest().await?;
        tracing::debug!(prefix = %meta.prefix, seq = state.seq(), "opened the manifest");
        *meta.cached.lock() = Arc::new(state);
        Ok(meta)
    }

    /// Removes log records once a checkpoint this store wrote covers them and `retention` has
    /// passed since (zero: keep every record). At least
    /// [`MIN_LOG_RETENTION`](super::prune::MIN_LOG_RETENTION); fails with an invalid-input
    /// error otherwise.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// use std::{sync::Arc, time::Duration};
    /// use objstream::manifest::{ObjectStoreMetaStore, WriterToken};
    /// let store = Arc::new(object_store::memory::InMemory::new());
    /// let meta = ObjectStoreMetaStore::open(store, "events".into(), WriterToken(7), 64)
    ///     .await
    ///     .unwrap()
    ///     .with_log_retention(Duration::from_secs(600))
    ///     .unwrap();
    /// # drop(meta);
    /// # });
    /// ```
    pub fn with_log_retention(mut self, retention: std::time::Duration) -> Result<Self> {
        self.pruner = if retention.is_zero() {
            None
        } else {
            Some(Arc::new(LogPruner::new(retention)?))
        };
        Ok(self)
    }

    /// This store's writer token.
    pub fn writer(&self) -> WriterToken {
        self.writer
    }

    /// The prefix the manifest lives under.
    pub fn prefix(&self) -> &Path {
        &self.prefix
    }

    fn cached(&self) -> Arc<ManifestState> {
        Arc::clone(&self.cached.lock())
    }

    fn publish(&self, state: Arc<ManifestState>) {
        let mut cached = self.cached.lock();
        if state.seq() >= cached.seq() {
            *cached = state;
        }
    }

    /// The newest checkpoint that decodes plus every record after it. An attempt that took
    /// longer than [`TAIL_FRESHNESS`] from its LIST starts over: what it listed may have been
    /// pruned since.
    async fn load_newest(&self) -> Result<ManifestState> {
        const ATTEMPTS: usize = 5;
        for _ in 0..ATTEMPTS {
            let listed_at = tokio::time::Instant::now();
            let state = self.load_newest_once().await?;
            if listed_at.elapsed() < TAIL_FRESHNESS {
                self.tail.observed(listed_at);
                return Ok(state);
            }
            tracing::warn!(
                took = ?listed_at.elapsed(),
                "loading the manifest took longer than the tail may stay unseen; loading again"
            );
        }
        Err(ErrorDetail::Conflict(format!(
            "loading the manifest took longer than {TAIL_FRESHNESS:?} {ATTEMPTS} times"
        ))
        .into())
    }

    async fn load_newest_once(&self) -> Result<ManifestState> {
        let checkpoints = self.paths.checkpoints();
        let seqs = retry_transient_errors(
            "list manifest checkpoints",
            checkpoints,
            Backoff::for_uploads(0),
            || list_checkpoints(self.store.as_ref(), &self.paths),
        )
        .await?;
        let mut state = ManifestState::new();
        let mut newest_bad: Option<(u64, Error)> = None;
        for &seq in seqs.iter().rev() {
            let read = retry_transient_errors(
                "get manifest checkpoint",
                &self.paths.checkpoint(seq),
                Backoff::for_uploads(seq),
                || read_checkpoint(self.store.as_ref(), &self.paths, seq),
            )
            .await;
            match read {
                Ok(Some(loaded)) => {
                    state = loaded;
                    break;
                }
                Ok(None) => continue,
                Err(e) if e.kind() == ErrorKind::Corruption => {
                    tracing::warn!(error = %e, "skipping a corrupt manifest checkpoint; the log after an older one holds the same state");
                    newest_bad.get_or_insert((seq, e));
                }
                Err(e) => return Err(e),
            }
        }
        self.read_forward(&mut state).await?;
        match newest_bad {
            // Without that checkpoint the log cannot reach the state it held.
            Some((seq, e)) if state.seq() < seq => Err(e),
            _ => Ok(state),
        }
    }

    /// Reads record `seq`; `None` when it does not exist.
    async fn read_record(&self, seq: u64) -> Result<Option<Record>> {
        let key = self.paths.record(seq);
        let bytes = retry_transient(
            "get manifest record",
            &key,
            Backoff::for_uploads(seq),
            || async {
                match self.store.get(&key).await {
                    Ok(got) => read_body(got).await.map(Some),
                    Err(object_store::Error::NotFound { .. }) => Ok(None),
                    Err(e) => Err(e),
                }
            },
        )
        .await?;
        bytes
            .map(|bytes| decode_record(key.as_ref(), seq, &bytes))
            .transpose()
    }

    /// Applies record `record` (number `state.seq() + 1`) to `state`. A record that does not
    /// apply is corruption of the log.
    fn apply_record(&self, state: &mut ManifestState, record: &Record) -> Result<()> {
        state.apply(&record.change).map_err(|e| {
            Error::corruption(
                self.paths.record(record.seq).as_ref(),
                format!(
                    "record does not apply to the state as of {}: {e}",
                    state.seq()
                ),
            )
        })?;
        state.seq = record.seq;
        Ok(())
    }

    /// Applies every record after `state.seq()` up to the tail.
    async fn read_forward(&self, state: &mut ManifestState) -> Result<()> {
        while let Some(record) = self.read_record(state.seq() + 1).await? {
            self.apply_record(state, &record)?;
        }
        Ok(())
    }

    /// Like [`Self::read_forward`], but copies `base` only when there is something to apply.
    async fn advance(&self, base: Arc<ManifestState>) -> Result<Arc<ManifestState>> {
        let Some(record) = self.read_record(base.seq() + 1).await? else {
            return Ok(base);
        };
        let mut state = (*base).clone();
        self.apply_record(&mut state, &record)?;
        self.read_forward(&mut state).await?;
        Ok(Arc::new(state))
    }

    /// `base` brought to the tail: read forward while the last sight of the tail is fresh,
    /// reloaded from the newest checkpoint otherwise.
    async fn advance_to_tail(&self, base: Arc<ManifestState>) -> Result<Arc<ManifestState>> {
        if !self.tail.is_fresh() {
            let reloaded = Arc::new(self.load_newest().await?);
            return Ok(if reloaded.seq() >= base.seq() {
                reloaded
            } else {
                base
            });
        }
        let started = tokio::time::Instant::now();
        let mut state = self.advance(base).await?;
        if self.fell_behind_a_checkpoint(state.seq()).await? {
            state = self.restart_past(state.seq()).await?;
        }
        self.tail.observed(started);
        Ok(state)
    }

    /// True when a checkpoint past `seq` exists although record `seq + 1` does not: the records
    /// after `seq` were removed behind a newer checkpoint.
    async fn fell_behind_a_checkpoint(&self, seq: u64) -> Result<bool> {
        if self.checkpoint_every == 0 {
            return Ok(false);
        }
        let boundary = (seq / self.checkpoint_every)
            .checked_add(1)
            .and_then(|n| n.checked_mul(self.checkpoint_every));
        match boundary {
            Some(boundary) => {
                retry_transient_errors(
                    "head manifest checkpoint",
                    &self.paths.checkpoint(boundary),
                    Backoff::for_uploads(boundary),
                    || checkpoint_exists(self.store.as_ref(), &self.paths, boundary),
                )
                .await
            }
            None => Ok(false),
        }
    }

    /// Reloads from the newest checkpoint, which must be past `seq`.
    async fn restart_past(&self, seq: u64) -> Result<Arc<ManifestState>> {
        tracing::info!(
            seq,
            "manifest records after the cached state were removed; reloading from the newest checkpoint"
        );
        let state = self.load_newest().await?;
        if state.seq() <= seq {
            return Err(Error::internal(format!(
                "manifest record {} vanished, and no checkpoint past {seq} could be loaded",
                seq + 1
            )));
        }
        Ok(Arc::new(state))
    }

    /// Creates record `seq`. [`Created::Taken`] when the key already exists (possibly written
    /// by an earlier attempt of this very call whose response was lost: the caller reads it
    /// back); [`Created::Stale`] when the tail was last seen too long ago to send the create
    /// (the number may have been pruned, and a create of it would succeed).
    async fn create_record(&self, record: &Record) -> Result<Created> {
        let key = self.paths.record(record.seq);
        let bytes = encode_record(record)?;
        retry_transient(
            "create manifest record",
            &key,
            Backoff::for_uploads(record.seq),
            || async {
                if !self.tail.is_fresh() {
                    return Ok(Created::Stale);
                }
                let payload = PutPayload::from(bytes.clone());
                match self
                    .store
                    .put_opts(&key, payload, PutMode::Create.into())
                    .await
                {
                    Ok(_) => Ok(Created::Yes),
                    Err(object_store::Error::AlreadyExists { .. }) => Ok(Created::Taken),
                    Err(e) => Err(e),
                }
            },
        )
        .await
    }

    /// Finishes a commit that is durable as record `state.seq()`.
    async fn committed(
        &self,
        change: &Change,
        outcome: Outcome,
        state: ManifestState,
        attempts: usize,
    ) -> Committed {
        let seq = state.seq();
        let state = Arc::new(state);
        self.publish(Arc::clone(&state));
        self.metrics.committed(change.kind());
        tracing::Span::current().record("seq", seq);
        tracing::debug!(seq, change = change.kind(), writer = %self.writer, attempts, "committed a manifest record");
        if self.checkpoint_every > 0 && seq % self.checkpoint_every == 0 {
            // Best effort, not retried: a throttled store is better off without the extra
            // requests, and the next boundary writes a checkpoint again.
            let written = write_checkpoint(self.store.as_ref(), &self.paths, &state).await;
            match (written, &self.pruner) {
                (Err(e), _) => {
                    tracing::warn!(seq, error = %e, "could not write a manifest checkpoint; opening will replay more records");
                }
                (Ok(()), Some(pruner)) => pruner.checkpoint_written(seq),
                (Ok(()), None) => {}
            }
        }
        if let Some(pruner) = &self.pruner {
            pruner.start_due(&self.store, &self.paths);
        }
        Committed {
            seq,
            outcome,
            state,
        }
    }
}

#[async_trait::async_trait]
impl MetaStore for ObjectStoreMetaStore {
    async fn state(&self) -> Result<Arc<ManifestState>> {
        Ok(self.cached())
    }

    async fn refresh(&self) -> Result<Arc<ManifestState>> {
        let _guard = self.commit_lock.lock().await;
        let state = self.advance_to_tail(self.cached()).await?;
        self.publish(Arc::clone(&state));
        Ok(state)
    }

    async fn commit(&self, change: Change) -> Result<Committed> {
        use tracing::Instrument;
        let span = tracing::debug_span!(
            "manifest_commit",
            change = change.kind(),
            seq = tracing::field::Empty
        );
        let started = std::time::Instant::now();
        let committed = self.commit_inner(change).instrument(span).await;
        self.metrics.commit_duration.record(started.elapsed());
        committed
    }
}

impl ObjectStoreMetaStore {
    /// [`MetaStore::commit`], without its span and latency.
    async fn commit_inner(&self, change: Change) -> Result<Committed> {
        let _guard = self.commit_lock.lock().await;
        let mut base = self.cached();
        if !self.tail.is_fresh() {
            // Validate against the log as it is, not as it was when this store last looked.
            base = self.advance_to_tail(base).await?;
            self.publish(Arc::clone(&base));
        }
        let mut conflicts = Backoff::for_uploads(base.seq());
        for attempt in 1..=MAX_COMMIT_ATTEMPTS {
            let mut next = (*base).clone();
            let outcome = next.apply(&change)?;
            if outcome == Outcome::AlreadyApplied {
                tracing::debug!(
                    seq = base.seq(),
                    change = change.kind(),
                    "manifest change already applied"
                );
                return Ok(Committed {
                    seq: base.seq(),
                    outcome,
                    state: base,
                });
            }
            let seq = base.seq() + 1;
            next.seq = seq;
            let record = Record {
                seq,
                writer: self.writer,
                change: change.clone(),
            };
            let sent_at = tokio::time::Instant::now();
            match self.create_record(&record).await? {
                Created::Yes => {
                    self.tail.observed(sent_at);
                    return Ok(self.committed(&change, outcome, next, attempt).await);
                }
                Created::Stale => {
                    base = self.advance_to_tail(base).await?;
                    self.publish(Arc::clone(&base));
                    continue;
                }
                Created::Taken => {}
            }
            let Some(existing) = self.read_record(seq).await? else {
                if self.fell_behind_a_checkpoint(base.seq()).await? {
                    base = self.restart_past(base.seq()).await?;
                    self.publish(Arc::clone(&base));
                } else {
                    // Refused without a record (a conditional-write conflict): the number is
                    // still free, or about to be taken by the request we raced.
                    self.metrics.refused.increment(1);
                    tracing::warn!(
                        seq,
                        change = change.kind(),
                        "manifest create refused but nothing is there; retrying"
                    );
                    conflicts.wait().await;
                }
                continue;
            };
            if existing.writer == self.writer && existing.change == change {
                return Ok(self.committed(&change, outcome, next, attempt).await);
            }
            self.metrics.lost_race.increment(1);
            let mut theirs = (*base).clone();
            self.apply_record(&mut theirs, &existing)?;
            base = self.advance_to_tail(Arc::new(theirs)).await?;
            self.publish(Arc::clone(&base));
        }
        Err(ErrorDetail::Conflict(format!(
            "lost the race for the next manifest record {MAX_COMMIT_ATTEMPTS} times"
        ))
        .into())
    }
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
