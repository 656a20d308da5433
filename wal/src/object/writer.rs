//! The writer: cuts queued records into objects, uploads them concurrently, acknowledges them in
//! slot order, and latches the first fence or failure.
//!
//! # Flow
//!
//! One flusher task per WAL waits for work. It cuts an object when `batch_bytes` of frames are
//! queued, when the linger rule says the queued records are due (module `linger`: at once when
//! the WAL is idle, never later than `linger` after the oldest arrived), or when the handle was
//! dropped, and only while the window has room (`next_slot < acked + max_in_flight`). While the
//! window is full, records keep queueing, so objects grow toward `batch_bytes` under load. Each
//! cut object gets the next slot, its records' positions are fixed, and an upload task is
//! spawned. An upload that completes wakes the flusher: with [`super::LingerMode::GroupCommit`] the
//! records that gathered behind it go out as soon as no PUT is in flight.
//!
//! An upload creates its slot (retrying transient errors). A create that meets an object reads
//! it back: our own bytes mean an earlier attempt landed; another writer's object means we are
//! fenced. Then, under the lock, a landed slot is marked and every landed slot at the front of
//! the window is acknowledged in order; a fence or failure at slot `s` fails the queue and every
//! slot from `s` up, while slots below `s` still acknowledge once they land.

use std::sync::Arc;

use bytes::Bytes;
use tokio::time::Instant;

use super::layout::{self, Kind, Writer};
use super::linger::{self, Quiet};
use super::store::{self, Created};
use super::{InFlight, Shared, State};
use crate::{frame, WalError, WalErrorKind, WalPosition, WalResult};

/// The identity of this instance's data objects.
pub(crate) fn data_writer(shared: &Shared) -> Writer {
    let id = shared.identity;
    Writer {
        kind: Kind::Data,
        owner: id.owner,
        epoch: id.epoch,
        actor: id.actor,
        actor_epoch: id.actor_epoch,
    }
}

/// The flusher task: runs until the handle is dropped and the queue is empty.
pub(crate) async fn run(shared: Arc<Shared>) {
    loop {
        let deadline = {
            let mut st = shared.state.lock();
            if let Some(err) = st.failed.clone() {
                fail_queue(&mut st, &err);
            }
            if st.queue.is_empty() {
                if st.closed {
                    return;
                }
                None
            } else {
                let window = shared.options.max_in_flight as u64;
                let room = st.next_slot < st.acked + window;
                let now = Instant::now();
                let quiet = Quiet {
                    first_queued: st.first_queued.unwrap_or(now),
                    last_cut: st.last_cut,
                    puts_in_flight: !st.in_flight.is_empty(),
                };
                let options = &shared.options;
                let due_at = linger::due_at(options.linger_mode, options.linger, quiet);
                let due = st.closed || st.queued_bytes >= options.batch_bytes || now >= due_at;
                if room && due {
                    st.last_cut = Some(now);
                    let (slot, records) = cut(&mut st, options.batch_bytes);
                    drop(st);
                    tokio::spawn(upload(shared.clone(), slot, records));
                    continue;
                }
                room.then_some(due_at)
            }
        };
        match deadline {
            Some(at) => {
                tokio::select! {
                    _ = shared.wake.notified() => {}
                    _ = tokio::time::sleep_until(at) => {}
                }
            }
            None => shared.wake.notified().await,
        }
    }
}

/// Takes the next object's records off the queue (at least one, then more until the object
/// holds `batch_bytes`: it may pass it by less than one record, so that objects at saturation
/// are never smaller than `batch_bytes`), gives it the next slot and registers its callers as
/// in flight.
fn cut(st: &mut State, batch_bytes: usize) -> (u64, Vec<Bytes>) {
    let slot = st.next_slot;
    st.next_slot += 1;
    let mut records = Vec::new();
    let mut waiters = Vec::new();
    let mut offset = layout::HEADER_LEN;
    let mut bytes = 0;
    while let Some(next) = st.queue.front() {
        let len = frame::frame_len(next.record.len());
        // A record larger than a whole batch goes alone.
        if !records.is_empty() && (bytes >= batch_bytes || len > batch_bytes) {
            break;
        }
        let Some(p) = st.queue.pop_front() else { break };
        waiters.push((layout::position_in(slot, offset), p.done));
        records.push(p.record);
        offset += len;
        bytes += len;
    }
    st.queued_bytes -= bytes;
    if st.queue.is_empty() {
        st.first_queued = None;
    }
    // Otherwise the rest keep the arrival time of the oldest: they have waited as long.
    st.in_flight.insert(
        slot,
        InFlight {
            waiters,
            landed: false,
        },
    );
    (slot, records)
}

/// Uploads the object of `slot` and settles it.
async fn upload(shared: Arc<Shared>, slot: u64, records: Vec<Bytes>) {
    let metrics = &shared.metrics;
    metrics.write_started();
    let started = std::time::Instant::now();
    let outcome = put_own(&shared, slot, &records).await;
    let took = started.elapsed();
    metrics.write_finished();
    {
        let mut st = shared.state.lock();
        match outcome {
            Ok(object_bytes) => {
                metrics.record_write(object_bytes as u64, records.len() as u64, took);
                if let Some(f) = st.in_flight.get_mut(&slot) {
                    f.landed = true;
                }
                acknowledge(&mut st);
            }
            Err(err) => fail_from(&mut st, slot, err),
        }
    }
    shared.wake.notify_one();
}

/// Puts our object in `slot`; `Ok` with the object's size once the slot holds it.
async fn put_own(shared: &Shared, slot: u64, records: &[Bytes]) -> WalResult<usize> {
    let me = data_writer(shared);
    let max_in_flight = shared.options.max_in_flight as u32;
    let (bytes, _) = layout::encode_data(me, slot, max_in_flight, records)?;
    let bytes = Bytes::from(bytes);
    let key = layout::slot_key(&shared.prefix, slot);
    let policy = shared.options.retry;
    let store = &*shared.store;
    let size = bytes.len();
    match store::create(store, policy, slot, &key, bytes.clone()).await? {
        Created::Written => Ok(size),
        Created::Exists => {
            let Some(found) = store::get(store, policy, slot, &key).await? else {
                return Err(fenced(slot, &key, "an object that was deleted since"));
            };
            let header = layout::Header::decode(&found, &key, slot)?;
            if header.writer != me {
                return Err(fenced(slot, &key, header.writer));
            }
            if found != bytes {
                return Err(WalError::failed(
                    format!("creating {key}"),
                    "the slot holds other bytes under this writer's own identity: two open \
                     instances share an identity",
                ));
            }
            Ok(size)
        }
    }
}

fn fenced(slot: u64, key: &object_store::path::Path, by: impl std::fmt::Display) -> WalError {
    WalError::new(
        WalErrorKind::Fenced,
        format!("the WAL was taken over: slot {slot} ({key}) holds {by}"),
    )
}

/// Acknowledges every landed slot at the front of the window, in order.
fn acknowledge(st: &mut State) {
    while let Some(entry) = st.in_flight.first_entry() {
        if *entry.key() != st.acked || !entry.get().landed {
            break;
        }
        let (slot, done) = entry.remove_entry();
        for (position, tx) in done.waiters {
            let _ = tx.send(Ok::<WalPosition, WalError>(position));
        }
        st.known.insert(slot);
        st.acked += 1;
    }
}

/// Latches `err` (the first error wins), fails the queue and every slot from `slot` up.
fn fail_from(st: &mut State, slot: u64, err: WalError) {
    if st.failed.is_none() {
        tracing::warn!(slot, error = %err, "object WAL stops accepting appends");
        st.failed = Some(err.clone());
    }
    let doomed: Vec<u64> = st.in_flight.range(slot..).map(|(s, _)| *s).collect();
    for s in doomed {
        if let Some(f) = st.in_flight.remove(&s) {
            for (_, tx) in f.waiters {
                let _ = tx.send(Err(err.clone()));
            }
        }
    }
    let latched = st.failed.clone().unwrap_or(err);
    fail_queue(st, &latched);
}

fn fail_queue(st: &mut State, err: &WalError) {
    for p in st.queue.drain(..) {
        let _ = p.done.send(Err(err.clone()));
    }
    st.queued_bytes = 0;
    st.first_queued = None;
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet, VecDeque};

    use tokio::sync::oneshot;

    use super::*;
    use crate::object::Pending;

    type Receiver = oneshot::Receiver<WalResult<WalPosition>>;

    fn state(next_slot: u64) -> State {
        State {
            queue: VecDeque::new(),
            queued_bytes: 0,
            first_queued: None,
            last_cut: None,
            next_slot,
            acked: next_slot,
            in_flight: BTreeMap::new(),
            failed: None,
            known: BTreeSet::new(),
            replay: Vec::new(),
            closed: false,
        }
    }

    fn queue(st: &mut State, len: usize) -> Receiver {
        let (done, rx) = oneshot::channel();
        st.queued_bytes += frame::frame_len(len);
        st.queue.push_back(Pending {
            record: Bytes::from(vec![7; len]),
            done,
        });
        rx
    }

    fn land(st: &mut State, slot: u64) {
        st.in_flight.get_mut(&slot).unwrap().landed = true;
        acknowledge(st);
    }

    #[test]
    fn a_cut_takes_records_until_the_batch_size_is_reached_at_dense_positions() {
        let mut st = state(10);
        let _rx: Vec<_> = (0..5).map(|_| queue(&mut st, 40)).collect();
        // Frames of 64 bytes: two make 128 bytes, short of 130; the third reaches it.
        let (slot, records) = cut(&mut st, 130);
        assert_eq!((slot, records.len()), (10, 3));
        let positions: Vec<u64> = st.in_flight[&10].waiters.iter().map(|w| w.0 .0).collect();
        assert_eq!(
            positions,
            vec![(10 << 32) | 64, (10 << 32) | 128, (10 << 32) | 192]
        );
        assert_eq!(st.queue.len(), 2);
        assert_eq!(st.queued_bytes, 2 * 64);
        assert_eq!(st.next_slot, 11);
    }

    #[test]
    fn a_record_larger_than_the_batch_is_cut_alone() {
        let mut st = state(0);
        let _a = queue(&mut st, 1000);
        let _b = queue(&mut st, 8);
        let (_, records) = cut(&mut st, 100);
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].len(), 1000);
        let (_, records) = cut(&mut st, 100);
        assert_eq!(records.len(), 1);
        assert!(st.queue.is_empty() && st.first_queued.is_none());
    }

    #[test]
    fn slots_are_acknowledged_only_as_a_landed_prefix() {
        let mut st = state(5);
        let mut rx = Vec::new();
        for _ in 0..3 {
            rx.push(queue(&mut st, 8));
            cut(&mut st, 1);
        }
        land(&mut st, 7);
        land(&mut st, 6);
        assert_eq!(st.acked, 5);
        assert!(rx[2].try_recv().is_err());
        land(&mut st, 5);
        assert_eq!(st.acked, 8);
        let got: Vec<u64> = rx
            .iter_mut()
            .map(|r| slot_of(r.try_recv().unwrap().unwrap()))
            .collect();
        assert_eq!(got, vec![5, 6, 7]);
        assert_eq!(st.known, BTreeSet::from([5, 6, 7]));
    }

    fn slot_of(p: WalPosition) -> u64 {
        p.0 >> 32
    }

    #[test]
    fn a_fence_fails_its_slot_and_above_while_lower_slots_still_acknowledge() {
        let mut st = state(0);
        let mut rx = Vec::new();
        for _ in 0..3 {
            rx.push(queue(&mut st, 8));
            cut(&mut st, 1);
        }
        let mut queued = queue(&mut st, 8);
        fail_from(
            &mut st,
            1,
            WalError::new(WalErrorKind::Fenced, "slot 1 is someone else's"),
        );
        assert_eq!(
            queued.try_recv().unwrap().unwrap_err().kind(),
            WalErrorKind::Fenced
        );
        assert_eq!(
            rx[1].try_recv().unwrap().unwrap_err().kind(),
            WalErrorKind::Fenced
        );
        assert_eq!(
            rx[2].try_recv().unwrap().unwrap_err().kind(),
            WalErrorKind::Fenced
        );
        land(&mut st, 0);
        assert_eq!(slot_of(rx[0].try_recv().unwrap().unwrap()), 0);
        assert_eq!(st.failed.as_ref().unwrap().kind(), WalErrorKind::Fenced);
    }

    #[test]
    fn the_first_failure_is_the_one_every_later_call_sees() {
        let mut st = state(0);
        fail_from(&mut st, 3, WalError::new(WalErrorKind::Fenced, "first"));
        fail_from(&mut st, 1, WalError::failed("second", "io"));
        assert_eq!(st.failed.as_ref().unwrap().kind(), WalErrorKind::Fenced);
    }
}
