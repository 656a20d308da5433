//! Removing manifest records that a checkpoint covers, without ever letting a stale writer fork
//! the log.
//!
//! The log grows by one record per commit; a checkpoint every `checkpoint_every` records is all
//! that opening needs, so the records below a checkpoint (and the older checkpoints) are garbage
//! once nobody can still be reading them. The danger is not a reader but a **writer**: commits
//! are conditional creates of `seq + 1`, and a create of a number that was deleted *succeeds*.
//! A writer whose cached state stopped at `S` while the log moved on to a checkpoint `M > S`
//! and the records below `M` were removed would create `S + 1` again — a record no opener ever
//! reads, a commit silently lost.
//!
//! ```text
//! pruner (the node that wrote checkpoint M)          any writer or reader
//!   write checkpoint M; done at P (its own clock)      observe the tail S at T
//!   wait until P + retention                             (a create of S + 1 that succeeded, or
//!   delete records [low, M) and checkpoints < M           a GET of S + 1 that found nothing;
//!                                                         T is taken before the request)
//!                                                       before each create or read forward:
//!                                                         T older than TAIL_FRESHNESS?
//!                                                           → reload: LIST checkpoints, newest,
//!                                                             read forward (a new T)
//! ```
//!
//! **Claim.** No create or forward read of a writer that follows this rule meets a number that
//! was deleted.
//!
//! *Argument.* A writer observed at `T` that `S` was the tail, so record `S + 1`, and with it
//! every record and checkpoint `M > S`, was created after `T`. A pruner deletes numbers at or
//! above `S + 1` only below such a checkpoint `M`, and only `retention` after its write of `M`
//! completed, so after `T + retention`. The writer issues its request within
//! [`TAIL_FRESHNESS`] of `T` and retention is at least [`MIN_LOG_RETENTION`]
//! (`3 × TAIL_FRESHNESS`): the request lands at least two freshness windows before anything it
//! names can be gone. An open is the same with `T` the start of its LIST of checkpoints: the
//! checkpoint it loads and the records after it outlive the open by the same margin, and an
//! open slower than [`TAIL_FRESHNESS`] starts over.
//!
//! Only durations on each side's own monotonic clock are compared, never two clocks: the
//! pruner's wait starts after its write completed, the writer's window before its request
//! started. A process suspended for minutes between its freshness check and its request is
//! the case this cannot cover (a request signed that long ago is refused by S3 anyway).
//!
//! Every node and compactor of one prefix must follow the rule, whatever its own retention
//! setting: freshness is a constant, not a setting, for that reason. A retention of zero keeps
//! every record.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::ObjectStore;
use tokio::time::Instant;

use super::checkpoint::list_checkpoints;
use super::paths::ManifestPaths;
use crate::error::{Error, Result};

/// How old a writer's last sight of the log's tail may be before it must reload (LIST the
/// checkpoints) instead of creating or reading the next number.
pub const TAIL_FRESHNESS: Duration = Duration::from_secs(60);

/// The shortest retention of covered manifest records a pruner accepts.
pub const MIN_LOG_RETENTION: Duration = Duration::from_secs(3 * 60);

/// When this store last saw the log's tail.
#[derive(Debug, Default)]
pub(crate) struct TailWatch {
    seen: parking_lot::Mutex<Option<Instant>>,
}

impl TailWatch {
    /// Records that the tail was seen by a request started at `at`.
    pub(crate) fn observed(&self, at: Instant) {
        let mut seen = self.seen.lock();
        if seen.is_none_or(|s| s < at) {
            *seen = Some(at);
        }
    }

    /// True while the last sight of the tail is younger than [`TAIL_FRESHNESS`].
    pub(crate) fn is_fresh(&self) -> bool {
        self.seen
            .lock()
            .is_some_and(|s| s.elapsed() < TAIL_FRESHNESS)
    }
}

/// Checkpoints this store wrote, waiting for the retention to pass before the records they
/// cover are removed.
#[derive(Debug)]
pub(crate) struct LogPruner {
    retention: Duration,
    state: parking_lot::Mutex<PrunerState>,
}

#[derive(Debug, Default)]
struct PrunerState {
    /// (checkpoint number, when its write completed), oldest first.
    written: VecDeque<(u64, Instant)>,
    /// Records below this number are known to be gone (`None`: not known yet; the first prune
    /// lists them).
    removed_below: Option<u64>,
    /// The prune running in the background, if any.
    running: Option<tokio::task::JoinHandle<()>>,
}

impl LogPruner {
    /// A pruner that removes covered records `retention` after their checkpoint was written.
    pub(crate) fn new(retention: Duration) -> Result<Self> {
        if retention < MIN_LOG_RETENTION {
            return Err(Error::invalid(format!(
                "a manifest log retention of {retention:?} is below the minimum of {MIN_LOG_RETENTION:?}"
            )));
        }
        Ok(LogPruner {
            retention,
            state: parking_lot::Mutex::new(PrunerState::default()),
        })
    }

    /// Notes that this store wrote checkpoint `seq`, the write having completed now.
    pub(crate) fn checkpoint_written(&self, seq: u64) {
        self.state.lock().written.push_back((seq, Instant::now()));
    }

    /// Starts removing what the newest checkpoint past its retention covers, in the
    /// background, unless a removal is still running or nothing is due.
    pub(crate) fn start_due(self: &Arc<Self>, store: &Arc<dyn ObjectStore>, paths: &ManifestPaths) {
        let mut state = self.state.lock();
        if state.running.as_ref().is_some_and(|r| !r.is_finished()) {
            return;
        }
        let mut due = None;
        while let Some(&(seq, at)) = state.written.front() {
            if at.elapsed() < self.retention {
                break;
            }
            due = Some(seq);
            state.written.pop_front();
        }
        let Some(below) = due else { return };
        if state.removed_below.is_some_and(|low| low >= below) {
            return;
        }
        let known_low = state.removed_below;
        let (pruner, store, paths) = (Arc::clone(self), Arc::clone(store), paths.clone());
        state.running = Some(tokio::spawn(async move {
            match remove_covered(&store, &paths, known_low, below).await {
                Ok(removed) => {
                    pruner.state.lock().removed_below = Some(below);
                    tracing::info!(
                        below,
                        removed,
                        "removed manifest records a checkpoint covers"
                    );
                }
                Err(e) => {
                    tracing::warn!(below, error = %e, "could not remove old manifest records; the next checkpoint tries again")
                }
            }
        }));
    }

    /// Waits for the removal running in the background, if any.
    #[cfg(test)]
    pub(crate) async fn settle(&self) {
        let running = self.state.lock().running.take();
        if let Some(running) = running {
            running.await.unwrap();
        }
    }
}

/// Deletes records `[low, below)` and checkpoints below `below`; returns how many keys went.
/// `low` unknown: the records are listed first.
async fn remove_covered(
    store: &Arc<dyn ObjectStore>,
    paths: &ManifestPaths,
    low: Option<u64>,
    below: u64,
) -> Result<usize> {
    let mut keys: Vec<Path> = match low {
        Some(low) => (low..below).map(|seq| paths.record(seq)).collect(),
        None => {
            let listed: Vec<object_store::ObjectMeta> = store
                .list(Some(paths.records()))
                .try_collect()
                .await
                .map_err(|e| Error::object_store("list", paths.records(), e))?;
            listed
                .into_iter()
                .filter(|m| paths.record_seq(&m.location).is_some_and(|s| s < below))
                .map(|m| m.location)
                .collect()
        }
    };
    let checkpoints = list_checkpoints(store.as_ref(), paths).await?;
    keys.extend(
        checkpoints
            .into_iter()
            .filter(|&s| s < below)
            .map(|s| paths.checkpoint(s)),
    );
    let count = keys.len();
    let locations = futures::stream::iter(keys.into_iter().map(Ok)).boxed();
    let mut deleted = store.delete_stream(locations);
    while let Some(result) = deleted.next().await {
        match result {
            Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(Error::object_store("delete", paths.records(), e)),
        }
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retention_below_the_minimum_is_refused() {
        assert!(LogPruner::new(MIN_LOG_RETENTION - Duration::from_secs(1)).is_err());
        assert!(LogPruner::new(MIN_LOG_RETENTION).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn the_tail_goes_stale_after_the_freshness_window() {
        let watch = TailWatch::default();
        assert!(!watch.is_fresh(), "never seen is not fresh");
        watch.observed(Instant::now());
        tokio::time::advance(TAIL_FRESHNESS - Duration::from_millis(1)).await;
        assert!(watch.is_fresh());
        watch.observed(Instant::now() - TAIL_FRESHNESS); // an older sight changes nothing
        tokio::time::advance(Duration::from_millis(2)).await;
        assert!(!watch.is_fresh());
    }
}
