//! Garbage collection: deleting data objects the manifest no longer references, after a grace.
//!
//! # Rules
//!
//! An object is deleted only when all of these hold:
//!
//! 1. It was listed under `{prefix}/objects/` *before* the manifest was refreshed, and the
//!    refreshed manifest does not reference it. (Listing first means an object committed between
//!    the two steps is seen as referenced.)
//! 2. Its id is below the manifest's next object id: it was allocated through this manifest.
//!    Anything else is not ours to judge, and is left alone with a warning.
//! 3. Its `last_modified` (from the LIST) is older than the grace period: an upload still on its
//!    way to a commit is never touched. The grace period must exceed the longest time between an
//!    upload's PUT and its commit.
//! 4. This collector has seen it unreferenced for at least the grace period, by the injected
//!    clock. An object replaced by compaction may have been written long ago (rule 3 holds at
//!    once), but readers that planned their reads on the old layout still fetch it: they get the
//!    grace period from the moment it left the manifest. A collector that restarts forgets what it
//!    saw and waits a whole grace period again, which is safe.
//!
//! 5. An *orphan* — an object this collector never saw referenced, so possibly one whose upload
//!    has not committed yet — is deleted only after the manifest accepted a `CollectObjects`
//!    naming it (manifest rule 10). From then on no commit may name it; if a commit got there
//!    first, the collection is refused, the manifest is refreshed, and the objects now referenced
//!    are dropped from the pass. An object this collector saw referenced, or removed with its own
//!    replacement, left the manifest through `ReplaceObjects` and can never be committed again:
//!    it needs no record.
//!
//! Rules 1–4 make deleting an object that is about to be committed unlikely; rule 5 makes it
//! impossible, whatever the clocks say: an upload whose commit is held up for longer than the
//! grace period (a store brownout; commits apply in order, so one stuck upload holds back the
//! later ones) either commits before the collection, and the object is kept, or finds its ids
//! collected, and uploads its data again under fresh ids.
//!
//! A recovering node reads the manifest before it reads objects, and the objects it commits are
//! new ids written after it started, so rules 1–3 never delete what it needs.
//!
//! Deletes are bounded per pass, retried on transient errors, and an object already gone counts
//! as deleted.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use futures::stream::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::ObjectStoreExt;
use objstream::keys::parse_object_path;
use objstream::manifest::MetaStore;
use objstream::retry::{retry_transient, Backoff};
use objstream::{ObjectId, Result};

use crate::source::ObjectAccess;

/// Deletions in flight at once.
const DELETE_CONCURRENCY: usize = 16;

/// What one collection did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Data objects listed.
    pub listed: usize,
    /// Listed objects the manifest does not reference.
    pub unreferenced: usize,
    /// Objects deleted.
    pub deleted: usize,
    /// Bytes of the objects deleted (their sizes as listed).
    pub deleted_bytes: u64,
    /// Unreferenced objects left because their grace period has not passed yet.
    pub awaiting_grace: usize,
    /// Orphans recorded as collected in the manifest before their deletion (rule 5).
    pub collected: usize,
    /// Orphans kept because a commit took them before the collection could (rule 5).
    pub committed_meanwhile: usize,
}

/// The objects one collection picked for deletion.
#[derive(Clone, Debug, Default)]
pub(crate) struct Garbage {
    /// Their keys.
    pub paths: Vec<Path>,
    /// Their sizes as listed, added up.
    pub bytes: u64,
    /// The ids among them that were never seen committed: they must be collected in the
    /// manifest before they are deleted (rule 5).
    pub orphans: Vec<ObjectId>,
    /// Every picked object's id and listed size, by path, to drop some after a refusal.
    sizes: BTreeMap<ObjectId, (Path, u64)>,
}

impl Garbage {
    fn push(&mut self, l: Listed, orphan: bool) {
        if orphan {
            self.orphans.push(l.id);
        }
        self.bytes += l.size;
        self.paths.push(l.path.clone());
        self.sizes.insert(l.id, (l.path, l.size));
    }

    /// Leaves out of the deletion the orphans `keep` picks (they were committed after all).
    pub(crate) fn keep(&mut self, keep: impl Fn(ObjectId) -> bool) -> usize {
        let kept: BTreeSet<ObjectId> = self
            .orphans
            .iter()
            .copied()
            .filter(|id| keep(*id))
            .collect();
        self.orphans.retain(|id| !kept.contains(id));
        for id in &kept {
            if let Some((path, size)) = self.sizes.remove(id) {
                self.paths.retain(|p| *p != path);
                self.bytes -= size;
            }
        }
        kept.len()
    }
}

/// An object the last LIST returned.
#[derive(Clone, Debug)]
struct Listed {
    id: ObjectId,
    path: Path,
    last_modified_ms: u64,
    size: u64,
}

/// The collector's memory: when each unreferenced object was first seen unreferenced.
#[derive(Debug, Default)]
pub(crate) struct Collector {
    first_seen: BTreeMap<ObjectId, u64>,
    /// Unreferenced ids this collector once saw committed, or removed itself: they left the
    /// manifest through a replacement and are no orphans (rule 5).
    was_committed: BTreeSet<ObjectId>,
}

impl Collector {
    /// Notes that `ids` left the manifest at `now_ms`: the grace period of rule 4 starts now,
    /// whatever was noted about them before.
    pub(crate) fn removed_at(&mut self, ids: impl IntoIterator<Item = ObjectId>, now_ms: u64) {
        for id in ids {
            self.first_seen.insert(id, now_ms);
            self.was_committed.insert(id);
        }
    }

    /// Notes that `ids` turned out to be committed: they are no orphans.
    pub(crate) fn committed(&mut self, ids: impl IntoIterator<Item = ObjectId>) {
        self.was_committed.extend(ids);
    }

    /// Notes that `ids` were written for a plan not committed yet: if the commit never takes
    /// them, they are unreferenced since `now_ms`. A commit that does take them makes the next
    /// collection forget this note.
    pub(crate) fn written_at(&mut self, ids: impl IntoIterator<Item = ObjectId>, now_ms: u64) {
        for id in ids {
            self.first_seen.entry(id).or_insert(now_ms);
        }
    }

    /// The objects of one collection: LIST, refresh the manifest, pick what rules 1–4 allow,
    /// at most `max_deletes`.
    pub(crate) async fn pick(
        &mut self,
        access: &ObjectAccess,
        meta: &Arc<dyn MetaStore>,
        now_ms: impl Fn() -> u64,
        grace_ms: u64,
        max_deletes: usize,
    ) -> Result<(Garbage, GcReport)> {
        let listed = list_objects(access).await?;
        let state = meta.refresh().await?;
        let now = now_ms();
        let mut report = GcReport {
            listed: listed.len(),
            ..GcReport::default()
        };
        let mut seen_now = BTreeMap::new();
        let mut referenced = BTreeSet::new();
        let mut doomed = Garbage::default();
        for l in listed {
            if state.object(l.id).is_some() {
                referenced.insert(l.id);
                continue;
            }
            if l.id >= state.next_object_id() {
                tracing::warn!(key = %l.path, "an object id the manifest never allocated; leaving it alone");
                continue;
            }
            report.unreferenced += 1;
            let first = self.first_seen.get(&l.id).copied().unwrap_or(now);
            seen_now.insert(l.id, first);
            let old_enough = now.saturating_sub(l.last_modified_ms) >= grace_ms;
            let unreferenced_long_enough = now.saturating_sub(first) >= grace_ms;
            if !(old_enough && unreferenced_long_enough) {
                report.awaiting_grace += 1;
            } else if doomed.paths.len() < max_deletes {
                let orphan = !self.was_committed.contains(&l.id);
                doomed.push(l, orphan);
            }
        }
        // Forget what is gone or referenced; keep notes of ids not listed yet only while they
        // are young.
        for (id, since) in &self.first_seen {
            let noted = seen_now.contains_key(id) || referenced.contains(id);
            if !noted && now.saturating_sub(*since) < grace_ms {
                seen_now.insert(*id, *since);
            }
        }
        // What left the manifest stays known as such while it is still listed.
        let mut was_committed = referenced;
        was_committed.extend(
            self.was_committed
                .iter()
                .filter(|id| seen_now.contains_key(id)),
        );
        self.was_committed = was_committed;
        self.first_seen = seen_now;
        Ok((doomed, report))
    }

    /// Forgets objects that were deleted.
    pub(crate) fn deleted(&mut self, paths: &[Path]) {
        for p in paths {
            if let Some(id) = parse_object_path(p) {
                self.first_seen.remove(&id);
                self.was_committed.remove(&id);
            }
        }
    }
}

/// Every data object under the prefix, sorted by id (LIST order is not relied on).
async fn list_objects(access: &ObjectAccess) -> Result<Vec<Listed>> {
    let root = access.prefix.clone().join("objects");
    let mut listed = retry_transient("list objects", &root, Backoff::for_uploads(0), || async {
        access.store.list(Some(&root)).try_collect::<Vec<_>>().await
    })
    .await?
    .into_iter()
    .filter_map(|m| {
        parse_object_path(&m.location).map(|id| Listed {
            id,
            last_modified_ms: u64::try_from(m.last_modified.timestamp_millis()).unwrap_or(0),
            size: m.size,
            path: m.location,
        })
    })
    .collect::<Vec<_>>();
    listed.sort_by_key(|l| l.id);
    Ok(listed)
}

/// Deletes `paths`, several at a time; an object already gone counts as deleted.
pub(crate) async fn delete_objects(access: &ObjectAccess, paths: &[Path]) -> Result<usize> {
    let results: Vec<Result<()>> = futures::stream::iter(paths.iter().cloned())
        .map(|path| async move {
            retry_transient("delete object", &path, Backoff::for_uploads(0), || async {
                match access.store.delete(&path).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                    Err(e) => Err(e),
                }
            })
            .await
        })
        .buffer_unordered(DELETE_CONCURRENCY)
        .collect()
        .await;
    let mut deleted = 0;
    for r in results {
        r?;
        deleted += 1;
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use object_store::memory::InMemory;
    use object_store::{ObjectStore, PutPayload};
    use objstream::keys::object_path;
    use objstream::manifest::{
        Change, ManifestStreamRange, ObjectKind, ObjectMeta, ObjectStoreMetaStore, WriterToken,
    };
    use objstream::{Epoch, NodeId, Offset, StreamId};

    use super::*;
    use crate::limiter::Bandwidth;

    const NODE: NodeId = NodeId(1);
    const GRACE: u64 = 1_000;

    fn one_range(id: u64) -> ObjectMeta {
        ObjectMeta {
            id: ObjectId(id),
            size: 1,
            kind: ObjectKind::Stream,
            ranges: vec![ManifestStreamRange {
                stream: StreamId(0),
                epoch: Epoch(1),
                start: Offset(0),
                end: Offset(1),
            }],
        }
    }

    /// A manifest with one stream, a compactor, ids 0..4 allocated and objects 0..4 stored;
    /// object 0 committed.
    async fn setup() -> (ObjectAccess, Arc<dyn MetaStore>) {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let prefix = Path::from("p");
        let meta = ObjectStoreMetaStore::open(store.clone(), prefix.clone(), WriterToken(1), 100)
            .await
            .unwrap();
        let meta: Arc<dyn MetaStore> = Arc::new(meta);
        for change in [
            Change::OpenNode { node: NODE },
            Change::OpenCompactor,
            Change::CreateStream {
                node: NODE,
                node_epoch: Epoch(1),
            },
            Change::AllocateObjectIds {
                node: NODE,
                node_epoch: Epoch(1),
                count: 4,
            },
            Change::CommitObjects {
                node: NODE,
                node_epoch: Epoch(1),
                objects: vec![one_range(0)],
                wal_floor: None,
            },
        ] {
            meta.commit(change).await.unwrap();
        }
        for id in 0..4 {
            store
                .put(
                    &object_path(&prefix, ObjectId(id)),
                    PutPayload::from_static(b"x"),
                )
                .await
                .unwrap();
        }
        let access = ObjectAccess {
            store,
            prefix,
            bandwidth: Arc::new(Bandwidth::new(0)),
        };
        (access, meta)
    }

    /// Picks twice, a grace apart, at times far past the objects' last-modified times.
    async fn pick_after_grace(
        collector: &mut Collector,
        access: &ObjectAccess,
        meta: &Arc<dyn MetaStore>,
    ) -> Garbage {
        let start = u64::MAX / 2;
        collector
            .pick(access, meta, || start, GRACE, 100)
            .await
            .unwrap();
        let (garbage, _) = collector
            .pick(access, meta, || start + GRACE, GRACE, 100)
            .await
            .unwrap();
        garbage
    }

    #[tokio::test]
    async fn objects_never_seen_committed_are_orphans_to_collect_first() {
        let (access, meta) = setup().await;
        let mut collector = Collector::default();
        let garbage = pick_after_grace(&mut collector, &access, &meta).await;
        assert_eq!(garbage.paths.len(), 3);
        assert_eq!(garbage.orphans, vec![ObjectId(1), ObjectId(2), ObjectId(3)]);
    }

    #[tokio::test]
    async fn an_object_seen_committed_or_removed_by_this_collector_needs_no_collection() {
        let (access, meta) = setup().await;
        let mut collector = Collector::default();
        collector
            .pick(&access, &meta, || 0, GRACE, 100)
            .await
            .unwrap();
        // Object 0, seen committed above, is replaced by object 1.
        let replace = Change::ReplaceObjects {
            compactor_epoch: Epoch(1),
            removed: vec![ObjectId(0)],
            added: vec![one_range(1)],
        };
        meta.commit(replace).await.unwrap();
        collector.removed_at([ObjectId(2)], 0);
        let garbage = pick_after_grace(&mut collector, &access, &meta).await;
        assert_eq!(garbage.paths.len(), 3, "0, 2 and 3 are unreferenced");
        assert_eq!(garbage.orphans, vec![ObjectId(3)]);
    }

    #[tokio::test]
    async fn keeping_orphans_takes_their_paths_and_bytes_out_of_the_deletion() {
        let (access, meta) = setup().await;
        let mut collector = Collector::default();
        let mut garbage = pick_after_grace(&mut collector, &access, &meta).await;
        assert_eq!(garbage.bytes, 3);
        assert_eq!(garbage.keep(|id| id == ObjectId(2)), 1);
        assert_eq!(garbage.orphans, vec![ObjectId(1), ObjectId(3)]);
        assert_eq!(garbage.bytes, 2);
        assert!(!garbage
            .paths
            .contains(&object_path(&access.prefix, ObjectId(2))));
        assert_eq!(garbage.keep(|_| true), 2);
        assert!(garbage.paths.is_empty() && garbage.bytes == 0);
    }
}
