//! Opening a WAL: seal it against every earlier writer, then replay it.
//!
//! # Steps
//!
//! 1. LIST the prefix, collect and sort the slots (LIST order is not relied on anywhere); keys
//!    that are not slot keys are ignored with a warning, slots below the floor are only
//!    remembered for trim. `high` is the highest slot at or above the floor.
//! 2. Create a fence (epoch = the opener's epoch) in every empty slot of `[floor, high + 1]`, in
//!    parallel. A create that meets an object reads it (an ambiguous retry of our own fence
//!    counts as ours). If `high + 1` was taken, try `high + 2`, ... until a fence lands there.
//!    `F` is the lowest slot where one of our fences landed.
//! 3. Read every slot in `[floor, F)` (bounded parallelism) and the header of every other
//!    known slot above `F`, so that `W` = the largest `max_in_flight` in any header (or ours)
//!    is known.
//! 4. Create a fence in every empty slot of `(F, F + W]` (repeated if a collision there reveals a
//!    larger window). Now every slot of `[floor, F + W]` holds an object, and no earlier writer
//!    can issue a slot above `F + W - 1` (module docs, rule 4).
//! 5. Replay `[floor, F)` in slot order: fences raise the fence epoch; a data object is
//!    replayed iff its epoch is at least the fence epoch so far. A slot missing below `F` is
//!    corruption naming the slot.
//!
//! The writer starts at `max(F + W, highest slot known) + 1`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::ObjectStore;

use super::layout::{self, Header, Kind, Writer};
use super::store::{self, Created};
use super::{ObjectWalIdentity, ObjectWalOptions, SealReport, MAX_IN_FLIGHT_LIMIT};
use crate::{WalError, WalErrorKind, WalPosition, WalRecord, WalResult};

/// More empty slots than this between the floor and the highest slot cannot come from writers
/// (each leaves at most `MAX_IN_FLIGHT_LIMIT` holes, and each open fills them): the floor is
/// wrong, and the open refuses rather than write fences over the gap.
const MAX_HOLES: usize = 4 * MAX_IN_FLIGHT_LIMIT;

/// What an open found.
pub(crate) struct Sealed {
    /// Records to replay, in order.
    pub records: Vec<WalRecord>,
    /// Every slot known to hold an object (what a trim may delete).
    pub known: BTreeSet<u64>,
    pub report: SealReport,
}

/// The sealing in progress.
struct Sealer<'a> {
    store: &'a dyn ObjectStore,
    prefix: &'a Path,
    options: &'a ObjectWalOptions,
    fence: Writer,
    /// Objects read, by slot: whole below `F`, at least the header above.
    read: BTreeMap<u64, Bytes>,
    /// Slots where our fence landed.
    ours: BTreeSet<u64>,
    /// Slots listed at the start.
    listed: BTreeSet<u64>,
    fences_written: u64,
    slots_read: u64,
}

/// What became of one fence create.
enum FenceOutcome {
    Ours,
    Taken(Bytes),
}

/// Seals and replays the WAL under `prefix`.
pub(crate) async fn seal(
    store: &dyn ObjectStore,
    prefix: &Path,
    identity: ObjectWalIdentity,
    floor: WalPosition,
    options: &ObjectWalOptions,
) -> WalResult<Sealed> {
    let started = Instant::now();
    let floor_slot = layout::slot_of(floor);
    let mut s = Sealer {
        store,
        prefix,
        options,
        fence: Writer {
            kind: Kind::Fence,
            owner: identity.owner,
            epoch: identity.epoch,
            actor: identity.actor,
            actor_epoch: identity.actor_epoch,
        },
        read: BTreeMap::new(),
        ours: BTreeSet::new(),
        listed: BTreeSet::new(),
        fences_written: 0,
        slots_read: 0,
    };

    // 1. LIST.
    let mut below_floor = BTreeSet::new();
    for key in store::list(store, options.retry, prefix).await? {
        match layout::parse_slot_key(prefix, &key) {
            Some(slot) if slot >= floor_slot => {
                s.listed.insert(slot);
            }
            Some(slot) => {
                below_floor.insert(slot);
            }
            None => tracing::warn!(%key, "ignoring a key under the WAL prefix that is not a slot"),
        }
    }
    let top = s.listed.last().map_or(floor_slot, |high| high + 1);
    let empty: Vec<u64> = (floor_slot..=top)
        .filter(|slot| !s.listed.contains(slot))
        .collect();
    if empty.len() > MAX_HOLES {
        return Err(WalError::corruption(
            prefix,
            format!(
                "{} of the slots from the floor {floor_slot} to {top} are missing: more than \
                 any writer leaves; is the floor right?",
                empty.len()
            ),
        ));
    }

    // 2. Fences up to one above the highest slot, then upward until one lands.
    s.fence_all(empty).await?;
    let mut next = top;
    while !s.ours.contains(&next) {
        next += 1;
        s.fence_all(vec![next]).await?;
    }
    let first_fence = s.ours.first().copied().unwrap_or(next);

    // 3. Read [floor, F), and the header of every other object above F.
    let below: Vec<u64> = (floor_slot..first_fence)
        .filter(|slot| !s.read.contains_key(slot))
        .collect();
    s.read_all(below, false).await?;
    let above: Vec<u64> = s
        .listed
        .range(first_fence..)
        .filter(|slot| !s.read.contains_key(slot))
        .copied()
        .collect();
    s.read_all(above, true).await?;
    for slot in floor_slot..first_fence {
        if !s.read.contains_key(&slot) {
            return Err(WalError::corruption(
                layout::slot_key(prefix, slot),
                format!("slot {slot} is missing below the first fence at slot {first_fence}"),
            ));
        }
    }
    let mut window = s.window()?;

    // 4. Fence (F, F + W].
    loop {
        let empty: Vec<u64> = (first_fence + 1..=first_fence + window)
            .filter(|slot| !s.holds(*slot))
            .collect();
        s.fence_all(empty).await?;
        let wider = s.window()?;
        if wider == window {
            break;
        }
        window = wider;
    }

    // 5. Replay [floor, F).
    let mut records = Vec::new();
    let mut fence_epoch = 0;
    for (&slot, bytes) in s.read.range(floor_slot..first_fence) {
        let key = layout::slot_key(prefix, slot);
        let object = layout::decode_object(bytes, &key, slot)?;
        let writer = object.header.writer;
        match writer.kind {
            Kind::Fence => fence_epoch = fence_epoch.max(writer.epoch),
            Kind::Data if writer.epoch >= fence_epoch => {
                records.extend(object.records.into_iter().filter(|r| r.position >= floor))
            }
            Kind::Data => {
                tracing::info!(slot, %writer, fence_epoch, "skipping a write of a fenced writer")
            }
        }
    }

    let mut known: BTreeSet<u64> = below_floor;
    known.extend(s.listed.iter().copied());
    known.extend(s.read.keys().copied());
    known.extend(s.ours.iter().copied());
    let highest = known.last().copied().unwrap_or(0);
    let writer_start_slot = (first_fence + window).max(highest) + 1;
    let report = SealReport {
        slots_read: s.slots_read,
        fences_written: s.fences_written,
        first_fence,
        writer_start_slot,
        records_replayed: records.len() as u64,
        millis: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    };
    tracing::debug!(prefix = %prefix, ?report, "object WAL sealed");
    Ok(Sealed {
        records,
        known,
        report,
    })
}

impl Sealer<'_> {
    /// True when `slot` is known to hold an object.
    fn holds(&self, slot: u64) -> bool {
        self.listed.contains(&slot) || self.read.contains_key(&slot) || self.ours.contains(&slot)
    }

    /// Creates fences in `slots`, in parallel; records which landed and reads the others.
    async fn fence_all(&mut self, slots: Vec<u64>) -> WalResult<()> {
        let parallelism = self.options.replay_parallelism;
        let this = &*self;
        let outcomes: Vec<(u64, FenceOutcome)> = futures::stream::iter(slots)
            .map(|slot| async move { Ok::<_, WalError>((slot, this.fence_one(slot).await?)) })
            .buffer_unordered(parallelism)
            .try_collect()
            .await?;
        for (slot, outcome) in outcomes {
            match outcome {
                FenceOutcome::Ours => {
                    self.ours.insert(slot);
                    self.fences_written += 1;
                }
                FenceOutcome::Taken(bytes) => {
                    self.slots_read += 1;
                    self.read.insert(slot, bytes);
                }
            }
        }
        Ok(())
    }

    async fn fence_one(&self, slot: u64) -> WalResult<FenceOutcome> {
        let key = layout::slot_key(self.prefix, slot);
        let max_in_flight = self.options.max_in_flight as u32;
        let bytes = Bytes::from(layout::encode_fence(self.fence, slot, max_in_flight));
        let policy = self.options.retry;
        match store::create(self.store, policy, slot, &key, bytes).await? {
            Created::Written => Ok(FenceOutcome::Ours),
            Created::Exists => {
                let found = self.must_get(slot, &key).await?;
                let header = Header::decode(&found, &key, slot)?;
                if header.writer == self.fence {
                    // An earlier attempt of this very create landed; its answer was lost.
                    Ok(FenceOutcome::Ours)
                } else {
                    Ok(FenceOutcome::Taken(found))
                }
            }
        }
    }

    /// Reads `slots` in parallel, whole or (`headers_only`) just their headers. A slot that
    /// does not exist is left out (the caller decides whether that is corruption).
    async fn read_all(&mut self, slots: Vec<u64>, headers_only: bool) -> WalResult<()> {
        let parallelism = self.options.replay_parallelism;
        let this = &*self;
        let got: Vec<(u64, Option<Bytes>)> = futures::stream::iter(slots)
            .map(|slot| async move {
                let key = layout::slot_key(this.prefix, slot);
                let policy = this.options.retry;
                let bytes = if headers_only {
                    store::get_head(this.store, policy, slot, &key, layout::HEADER_LEN).await?
                } else {
                    store::get(this.store, policy, slot, &key).await?
                };
                Ok::<_, WalError>((slot, bytes))
            })
            .buffer_unordered(parallelism)
            .try_collect()
            .await?;
        for (slot, bytes) in got {
            if let Some(bytes) = bytes {
                self.slots_read += 1;
                self.read.insert(slot, bytes);
            }
        }
        Ok(())
    }

    /// The object in `slot`, which a create just found there.
    async fn must_get(&self, slot: u64, key: &Path) -> WalResult<Bytes> {
        match store::get(self.store, self.options.retry, slot, key).await? {
            Some(bytes) => Ok(bytes),
            None => Err(WalError::new(
                WalErrorKind::Fenced,
                format!(
                    "{key} vanished while sealing: a newer owner trimmed the WAL past this \
                     opener's floor"
                ),
            )),
        }
    }

    /// The largest `max_in_flight` of this opener and every object read; fails with
    /// `Fenced` if any object read carries an epoch above the opener's.
    fn window(&self) -> WalResult<u64> {
        let mut window = self.options.max_in_flight as u64;
        for (&slot, bytes) in &self.read {
            let key = layout::slot_key(self.prefix, slot);
            let header = Header::decode(bytes, &key, slot)?;
            if header.writer.epoch > self.fence.epoch {
                return Err(WalError::new(
                    WalErrorKind::Fenced,
                    format!(
                        "{key} was written at epoch {}, above this opener's epoch {}",
                        header.writer.epoch, self.fence.epoch
                    ),
                ));
            }
            window = window.max(u64::from(header.max_in_flight).min(MAX_IN_FLIGHT_LIMIT as u64));
        }
        Ok(window)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use object_store::memory::InMemory;
    use object_store::{ObjectStoreExt, PutPayload};

    use super::*;

    fn writer(kind: Kind, epoch: u64, actor: u64) -> Writer {
        Writer {
            kind,
            owner: 1,
            epoch,
            actor,
            actor_epoch: epoch,
        }
    }

    async fn put(store: &InMemory, slot: u64, bytes: Vec<u8>) {
        let key = layout::slot_key(&prefix(), slot);
        store.put(&key, PutPayload::from(bytes)).await.unwrap();
    }

    async fn put_data(store: &InMemory, slot: u64, epoch: u64, window: u32, body: &'static [u8]) {
        let w = writer(Kind::Data, epoch, 1);
        let (bytes, _) = layout::encode_data(w, slot, window, &[Bytes::from_static(body)]).unwrap();
        put(store, slot, bytes).await;
    }

    fn prefix() -> Path {
        Path::from("wal/1")
    }

    fn options() -> ObjectWalOptions {
        ObjectWalOptions {
            max_in_flight: 2,
            ..ObjectWalOptions::default()
        }
    }

    async fn seal_at(store: &InMemory, epoch: u64) -> WalResult<Sealed> {
        let identity = ObjectWalIdentity {
            owner: 1,
            epoch,
            actor: 9,
            actor_epoch: epoch,
        };
        seal(store, &prefix(), identity, WalPosition(0), &options()).await
    }

    fn payloads(sealed: &Sealed) -> Vec<&[u8]> {
        sealed.records.iter().map(|r| &r.payload[..]).collect()
    }

    #[tokio::test]
    async fn a_write_of_a_lower_epoch_after_a_higher_fence_is_not_replayed() {
        let store = InMemory::new();
        put_data(&store, 0, 1, 2, b"acked").await;
        put(
            &store,
            1,
            layout::encode_fence(writer(Kind::Fence, 2, 2), 1, 2),
        )
        .await;
        put_data(&store, 2, 1, 2, b"zombie").await;
        put_data(&store, 3, 2, 2, b"second writer").await;
        let sealed = seal_at(&store, 3).await.unwrap();
        assert_eq!(payloads(&sealed), vec![&b"acked"[..], b"second writer"]);
        assert_eq!(sealed.report.first_fence, 4);
    }

    #[tokio::test]
    async fn holes_below_the_highest_slot_are_fenced_and_end_the_replay() {
        let store = InMemory::new();
        put_data(&store, 0, 1, 2, b"a").await;
        put_data(&store, 2, 1, 2, b"never acknowledged").await;
        let sealed = seal_at(&store, 2).await.unwrap();
        assert_eq!(payloads(&sealed), vec![&b"a"[..]]);
        let r = sealed.report;
        assert_eq!(r.first_fence, 1);
        // Fences in 1 and 3, then (1, 1 + 2] minus the taken 2 and 3: nothing more.
        assert_eq!(r.fences_written, 2);
        assert_eq!(r.writer_start_slot, 4);
        assert_eq!(sealed.known, BTreeSet::from([0, 1, 2, 3]));
    }

    #[tokio::test]
    async fn a_larger_window_in_a_header_widens_the_fenced_range() {
        let store = InMemory::new();
        put_data(&store, 0, 1, 6, b"a").await;
        let sealed = seal_at(&store, 2).await.unwrap();
        assert_eq!(sealed.report.first_fence, 1);
        assert_eq!(sealed.report.fences_written, 7);
        assert_eq!(sealed.report.writer_start_slot, 8);
    }

    #[tokio::test]
    async fn an_object_of_a_higher_epoch_fences_the_opener() {
        let store = InMemory::new();
        put_data(&store, 0, 5, 2, b"a").await;
        let err = seal_at(&store, 4).await.err().unwrap();
        assert_eq!(err.kind(), WalErrorKind::Fenced);
    }

    #[tokio::test]
    async fn records_below_the_floor_are_not_replayed() {
        let store = Arc::new(InMemory::new());
        let w = writer(Kind::Data, 1, 1);
        let records = [Bytes::from_static(b"old"), Bytes::from_static(b"new")];
        let (bytes, positions) = layout::encode_data(w, 3, 2, &records).unwrap();
        put(&store, 3, bytes).await;
        let identity = ObjectWalIdentity {
            owner: 1,
            epoch: 2,
            actor: 1,
            actor_epoch: 2,
        };
        let sealed = seal(&*store, &prefix(), identity, positions[1], &options())
            .await
            .unwrap();
        assert_eq!(payloads(&sealed), vec![&b"new"[..]]);
    }
}
