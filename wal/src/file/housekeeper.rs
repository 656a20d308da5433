//! The housekeeper thread: prepares the next segment and deletes trimmed ones.
//!
//! # Spares
//!
//! There is always one spare wanted or ready: a file of the new-segment size, full of zeros
//! and synced with its metadata, filled under a temporary name (`spare-N.wal.tmp`) and renamed
//! `spare-N.wal` once complete. The writer takes it at rollover ([`take_spare`]), renames it to
//! the segment's name and syncs the directory; taking it asks for the next one. Every spare has
//! its own number, so a spare being finished can never replace one the writer is renaming. A
//! complete spare is left in place when the WAL is dropped, for the next open to adopt. Zeros
//! are written a chunk at a time, and deletions are served between chunks, so a trim never waits
//! for a whole segment to be filled.
//!
//! The writer never waits for a spare. When none is ready at rollover (appends keep the disk so
//! busy that the zeros fall behind) or preparing one failed, it makes the segment on the spot
//! with `fallocate` ([`segment::preallocate`]): a few milliseconds instead of a stall of a
//! segment's worth of zeros, at the price of slightly slower syncs in that segment. The spare in
//! progress serves the next rollover.
//!
//! # Deletions
//!
//! [`delete`] queues the files of trimmed segments (already removed from the live list by
//! `trim`); the housekeeper unlinks them, syncs the directory and resolves the trim. A failed
//! directory sync latches the WAL.

use std::collections::VecDeque;
use std::fs::{self, File};
use std::io;
use std::path::PathBuf;
#[cfg(test)]
use std::sync::atomic::Ordering;

use tokio::sync::oneshot;

use super::segment::{self, ZeroFill};
use super::Shared;
use crate::{WalError, WalResult};

/// Work for the housekeeper, under `Shared::chores`.
pub(super) struct Chores {
    spare: Spare,
    /// The number of the next spare file.
    next_spare: u64,
    deletions: VecDeque<Deletion>,
    stopping: bool,
}

impl Chores {
    /// No work yet but a spare, wanted unless one is given; new spare files are numbered from
    /// `next_spare`.
    pub fn new(spare: Option<(File, PathBuf)>, next_spare: u64) -> Self {
        Chores {
            spare: match spare {
                Some((file, path)) => Spare::Ready(file, path),
                None => Spare::Wanted,
            },
            next_spare,
            deletions: VecDeque::new(),
            stopping: false,
        }
    }
}

enum Spare {
    /// Being prepared, or about to be.
    Wanted,
    /// Zero-filled and synced: the file and its temporary path.
    Ready(File, PathBuf),
    /// Preparing it failed.
    Failed(WalError),
}

struct Deletion {
    paths: Vec<PathBuf>,
    done: oneshot::Sender<WalResult<()>>,
}

enum Job {
    Delete(Deletion),
    /// Write the next chunk of the spare, creating its file numbered so if given.
    Fill(Option<u64>),
    Stop,
}

/// The housekeeper's loop; returns after [`stop`].
pub(super) fn run(shared: &Shared) {
    let mut filling: Option<(u64, ZeroFill)> = None;
    loop {
        let job = {
            let mut chores = shared.chores.lock();
            loop {
                if let Some(deletion) = chores.deletions.pop_front() {
                    break Job::Delete(deletion);
                }
                if chores.stopping {
                    break Job::Stop;
                }
                #[cfg(test)]
                let stalled = shared.failpoints.stall_spares.load(Ordering::SeqCst);
                #[cfg(not(test))]
                let stalled = false;
                if matches!(chores.spare, Spare::Wanted) && !stalled {
                    if filling.is_some() {
                        break Job::Fill(None);
                    }
                    chores.next_spare += 1;
                    break Job::Fill(Some(chores.next_spare - 1));
                }
                shared.chores_changed.wait(&mut chores);
            }
        };
        match job {
            Job::Delete(deletion) => {
                let result = remove(shared, &deletion.paths);
                let _ = deletion.done.send(result);
            }
            Job::Fill(Some(n)) => {
                let path = segment::partial_spare_path(&shared.dir, n);
                match ZeroFill::create(path.clone(), shared.segment_bytes) {
                    Ok(fill) => filling = Some((n, fill)),
                    Err(e) => offer(shared, Err(spare_failed(&path, e))),
                }
            }
            Job::Fill(None) => {
                let Some((n, mut fill)) = filling.take() else {
                    continue;
                };
                match fill.step() {
                    Ok(false) => filling = Some((n, fill)),
                    Ok(true) => {
                        let path = fill.path().to_path_buf();
                        let complete = segment::spare_path(&shared.dir, n);
                        offer(
                            shared,
                            fill.finish(complete).map_err(|e| spare_failed(&path, e)),
                        );
                    }
                    Err(e) => {
                        let _ = fs::remove_file(fill.path());
                        offer(shared, Err(spare_failed(fill.path(), e)));
                    }
                }
            }
            Job::Stop => {
                if let Some((_, fill)) = filling.take() {
                    let _ = fs::remove_file(fill.path());
                }
                return;
            }
        }
    }
}

/// Publishes a prepared spare, or the error that prevented it.
fn offer(shared: &Shared, spare: WalResult<(File, PathBuf)>) {
    shared.chores.lock().spare = match spare {
        Ok((file, path)) => Spare::Ready(file, path),
        Err(err) => Spare::Failed(err),
    };
    shared.chores_changed.notify_all();
}

fn spare_failed(path: &std::path::Path, err: io::Error) -> WalError {
    WalError::failed(format!("prepare segment file {}", path.display()), err)
}

/// Unlinks trimmed segments and syncs the directory.
fn remove(shared: &Shared, paths: &[PathBuf]) -> WalResult<()> {
    for path in paths {
        match fs::remove_file(path) {
            Ok(()) => tracing::debug!(segment = %path.display(), "file WAL segment deleted"),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(WalError::failed(format!("delete {}", path.display()), e)),
        }
    }
    shared.sync_dir().inspect_err(|e| shared.latch(e.clone()))
}

/// Takes the prepared spare if one is ready, asking for the next one. Called by the writer at
/// rollover; `None` means the writer must make a segment itself.
pub(super) fn take_spare(shared: &Shared) -> Option<(File, PathBuf)> {
    let mut chores = shared.chores.lock();
    let taken = match std::mem::replace(&mut chores.spare, Spare::Wanted) {
        Spare::Ready(file, path) => Some((file, path)),
        Spare::Failed(err) => {
            tracing::warn!(error = %err, "file WAL: preparing a spare segment failed");
            None
        }
        Spare::Wanted => return None,
    };
    drop(chores);
    shared.chores_changed.notify_all();
    taken
}

/// A number for a spare file that no other spare has.
pub(super) fn claim_spare_number(shared: &Shared) -> u64 {
    let mut chores = shared.chores.lock();
    chores.next_spare += 1;
    chores.next_spare - 1
}

/// Queues the deletion of `paths`; the receiver resolves once they are gone and the directory
/// is synced.
pub(super) fn delete(shared: &Shared, paths: Vec<PathBuf>) -> oneshot::Receiver<WalResult<()>> {
    let (done, rx) = oneshot::channel();
    shared
        .chores
        .lock()
        .deletions
        .push_back(Deletion { paths, done });
    shared.chores_changed.notify_all();
    rx
}

/// Blocks until a spare is ready (or preparing it failed).
#[cfg(test)]
pub(super) fn wait_for_spare(shared: &Shared) {
    let mut chores = shared.chores.lock();
    while matches!(chores.spare, Spare::Wanted) {
        shared.chores_changed.wait(&mut chores);
    }
}

/// Asks the housekeeper to finish the deletions queued and stop.
pub(super) fn stop(shared: &Shared) {
    shared.chores.lock().stopping = true;
    shared.chores_changed.notify_all();
}
