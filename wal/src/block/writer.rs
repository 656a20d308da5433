//! The writer: group commit with several writes in flight, trims and header writes.
//!
//! # Flow
//!
//! 1. The *sequencer* thread ([`run`]) owns positions. Each turn it either persists a pending trim
//!    (a header write, after re-reading both slots to notice a takeover) or, when no write is
//!    unacknowledged, or fewer than [`WRITES_IN_FLIGHT`] are and [`OVERLAP_BYTES`] of frames wait,
//!    takes every append waiting at that moment that fits (the batch limit, the ring's end, the
//!    trimmed space), gives each its position in queue order, encodes their frames into one pooled
//!    aligned buffer and hands it to the I/O threads as a [`Job`]. It does not wait for the write:
//!    the next batch forms while earlier ones are being written and synced. With a write
//!    budget, a write that would exceed it waits first (unless it already fills a batch), and
//!    appends arriving meanwhile join it (module `budget`).
//! 2. An *I/O* thread ([`io_thread`], one per write in flight) writes the job with one `pwrite`
//!    (after a padding marker, written and synced first, when the batch starts a new lap),
//!    makes it durable (`O_DSYNC`, or its own `fdatasync`), then reads both header slots and
//!    checks that the newest header is still the one this WAL wrote (see "Fencing" in the
//!    module docs of [`crate::block`]).
//! 3. Jobs finish in any order; they are *retired* in issue order ([`retire`]): the oldest
//!    unacknowledged job is retired as soon as it has finished, its appends resolved, then the
//!    next, so appends resolve in the order `append` was called.
//!
//! Each frame's batch start is the first position of the oldest write still unacknowledged when
//! its write was issued (or its own write's start when none was): everything before it was
//! durable. So a torn write followed by a later write that did land is a torn tail to recovery,
//! not corruption, and recovery looks [`WRITES_IN_FLIGHT`] writes past the cut.
//!
//! When the first waiting record does not fit in the trimmed space, the sequencer waits for a
//! trim (backpressure); it never overwrites untrimmed data. After any failed write, sync or
//! header read or write, or a takeover, the error is latched: the job that met it and every
//! later one fail (even if their own writes succeeded), queued jobs are not written, and every
//! waiting and later call gets the error.
//!
//! With `O_DIRECT` a write's I/O error comes back from that `pwrite` (there is no page-cache
//! writeback to report it later to some other caller), so the I/O threads can share one file
//! descriptor.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::oneshot;

use super::budget::WriteBudget;
use super::device::{AlignedBuf, BLOCK};
use super::header::{self, Header, Slots};
use super::ring::{self, align_up};
use super::Shared;
use crate::frame;
use crate::{WalError, WalErrorKind, WalPosition, WalResult};

/// Writes issued and not yet acknowledged, at most; also the number of I/O threads.
pub(super) const WRITES_IN_FLIGHT: usize = 4;

/// Frame bytes that must be waiting before a write is issued while another is in flight.
///
/// A write costs the device a fixed time (a durable write, then the header read of the
/// ownership check) plus its bytes. Issuing one for every append as soon as a slot frees
/// keeps small records in writes of one or two frames: at 25 000 appends a second that is as
/// many durable writes and header reads a second, which a disk serves far slower than the same
/// bytes in fewer writes, and the queue behind them grows. So the first write goes out at
/// once (an idle WAL adds no wait), and while it is in flight the next ones gather appends
/// until they carry this much (or a write retires): small records then share writes, and
/// records of this size or more still get every slot.
pub(super) const OVERLAP_BYTES: u64 = 64 << 10;

/// An append waiting to be written.
pub(super) struct Pending {
    pub record: Bytes,
    pub done: oneshot::Sender<WalResult<WalPosition>>,
}

/// A write handed to an I/O thread.
pub(super) struct Job {
    /// Matches the [`InFlight`] entry it belongs to.
    id: u64,
    /// Where a padding marker goes first, if the batch starts a new lap.
    pad: Option<u64>,
    /// The batch's logical start (4 KiB-aligned).
    start: u64,
    /// The encoded frames, zero-padded to `len` (a multiple of 4 KiB).
    buf: AlignedBuf,
    len: usize,
    /// Records in the write.
    records: u64,
}

/// A write issued and not yet retired.
pub(super) struct InFlight {
    id: u64,
    pad: Option<u64>,
    start: u64,
    /// Where the batch's last frame ends.
    end: u64,
    appends: Vec<(oneshot::Sender<WalResult<WalPosition>>, u64)>,
    /// Set when the I/O thread has finished with it.
    result: Option<WalResult<()>>,
}

impl InFlight {
    /// The first position the write covers.
    fn first(&self) -> u64 {
        self.pad.unwrap_or(self.start)
    }
}

/// State shared between callers, the sequencer and the I/O threads, under one lock.
pub(super) struct Queue {
    /// Appends not yet taken by the sequencer, in call order.
    pub pending: VecDeque<Pending>,
    /// The frame bytes of `pending`.
    pub pending_bytes: u64,
    /// The end of the acknowledged log (4 KiB-aligned): where the write after the last
    /// acknowledged one starts.
    pub next: u64,
    /// Where the next write to be issued starts (4 KiB-aligned; `next` plus what is in flight).
    pub issued: u64,
    /// The trim position in the newest header: ring space below it may be reused.
    pub trim: u64,
    /// The trim callers asked for that is not yet in a header.
    pub trim_target: Option<u64>,
    /// Trims waiting for the header write.
    pub trim_waiters: Vec<oneshot::Sender<WalResult<()>>>,
    /// Positions where acknowledged writes started at or after `trim`, ascending: the places
    /// recovery may start from.
    pub write_starts: VecDeque<u64>,
    /// Writes issued and not yet retired, in issue order.
    pub inflight: VecDeque<InFlight>,
    /// Jobs waiting for an I/O thread.
    pub jobs: VecDeque<Job>,
    /// The id the next job gets.
    pub next_job: u64,
    /// Set while the first waiting append does not fit the trimmed space: appends queued
    /// meanwhile count as waits for a full ring.
    pub full: bool,
    /// How many writes a second may reach the device.
    pub budget: WriteBudget,
    /// Set while the next write waits for the budget.
    pub held: bool,
    /// The latched error.
    pub failed: Option<WalError>,
    /// Set when the WAL is dropped: write what is pending and stop.
    pub closed: bool,
    /// Set by the sequencer when it stops: I/O threads finish the queued jobs and stop.
    pub stop: bool,
}

impl Queue {
    /// A queue for a log whose acknowledged end is `next`.
    pub fn new(next: u64, trim: u64, write_starts: VecDeque<u64>, budget: WriteBudget) -> Queue {
        Queue {
            pending: VecDeque::new(),
            pending_bytes: 0,
            next,
            issued: next,
            trim,
            trim_target: None,
            trim_waiters: Vec::new(),
            write_starts,
            inflight: VecDeque::new(),
            jobs: VecDeque::new(),
            next_job: 0,
            full: false,
            budget,
            held: false,
            failed: None,
            closed: false,
            stop: false,
        }
    }

    /// Queues an append; returns whether the sequencer may have to be woken for it: it
    /// makes a write issuable that was not (see [`Queue::may_issue`]), or fills a batch of
    /// `max_batch` bytes that waits for the budget (which then goes at once).
    pub fn push(&mut self, pending: Pending, max_batch: u64) -> bool {
        let before = self.may_issue();
        let filled = self.pending_bytes >= max_batch;
        self.pending_bytes += frame::frame_len(pending.record.len()) as u64;
        self.pending.push_back(pending);
        (!before && self.may_issue())
            || (self.budget.limited() && !filled && self.pending_bytes >= max_batch)
    }

    /// Whether a write of the waiting appends may be issued now, space permitting: when none
    /// is in flight, or when a slot is free and [`OVERLAP_BYTES`] wait.
    pub fn may_issue(&self) -> bool {
        !self.pending.is_empty()
            && (self.inflight.is_empty()
                || (self.inflight.len() < WRITES_IN_FLIGHT && self.pending_bytes >= OVERLAP_BYTES))
    }

    /// When a write that [`Queue::may_issue`] allows must wait for the budget: until then.
    /// A full batch (`max_batch` bytes waiting) never waits: it cannot grow.
    fn held_until(&self, max_batch: u64) -> Option<Instant> {
        if !self.budget.limited() || self.pending_bytes >= max_batch {
            return None;
        }
        self.budget.wait_until(Instant::now())
    }

    fn fail_waiting(&mut self, err: &WalError) {
        self.pending_bytes = 0;
        for p in self.pending.drain(..) {
            let _ = p.done.send(Err(err.clone()));
        }
        for w in self.trim_waiters.drain(..) {
            let _ = w.send(Err(err.clone()));
        }
    }
}

/// Where a write holding a first frame of `len` bytes starts when the log is at `next`, and
/// whether a padding marker must go at `next` first.
fn placement(shared: &Shared, next: u64, len: u64) -> (u64, bool) {
    let ring = shared.ring;
    if next % ring.size + len > ring.size {
        (ring.lap_end(next), true)
    } else {
        (next, false)
    }
}

/// What the sequencer does next.
enum Turn {
    Trim(u64),
    Write,
    Stop,
}

/// The sequencer's loop.
pub(super) fn run(shared: Arc<Shared>) {
    let mut block = AlignedBuf::new(2 * BLOCK);
    let mut scratch: Vec<u8> = Vec::new();
    loop {
        let mut q = shared.queue.lock();
        let turn = loop {
            if let Some(err) = q.failed.clone() {
                q.fail_waiting(&err);
                if q.closed {
                    break Turn::Stop;
                }
            } else if let Some(target) = q.trim_target.take() {
                break Turn::Trim(target);
            } else if let Some(first) = q.pending.front() {
                let len = frame::frame_len(first.record.len()) as u64;
                let (start, _) = placement(&shared, q.issued, len);
                if align_up(start + len) <= q.trim + shared.ring.size {
                    q.full = false;
                    if q.may_issue() {
                        match q.held_until(shared.max_batch) {
                            Some(until) => {
                                q.held = true;
                                shared.wake.wait_until(&mut q, until);
                                continue;
                            }
                            None => break Turn::Write,
                        }
                    }
                } else if !q.full {
                    q.full = true;
                    for _ in 0..q.pending.len() {
                        shared.metrics.full_wait();
                    }
                    continue;
                } else if q.closed {
                    let err = WalError::new(
                        WalErrorKind::Failed,
                        "the WAL was closed while appends waited for a trim",
                    );
                    q.fail_waiting(&err);
                    continue;
                }
            } else if q.closed {
                break Turn::Stop;
            }
            shared.wake.wait(&mut q);
        };
        match turn {
            Turn::Stop => {
                q.stop = true;
                drop(q);
                shared.work.notify_all();
                return;
            }
            Turn::Trim(target) => {
                let boundary = if target >= q.next {
                    q.next
                } else {
                    let i = q.write_starts.partition_point(|&s| s <= target);
                    q.write_starts
                        .get(i.wrapping_sub(1))
                        .copied()
                        .unwrap_or(q.trim)
                };
                let waiters = std::mem::take(&mut q.trim_waiters);
                let result = if boundary <= q.trim {
                    Ok(())
                } else {
                    drop(q);
                    let result = persist_trim(&shared, boundary, &mut block);
                    q = shared.queue.lock();
                    match &result {
                        Ok(()) => {
                            q.trim = boundary;
                            shared.metrics.used(q.issued - boundary);
                            while q.write_starts.front().is_some_and(|&s| s < boundary) {
                                q.write_starts.pop_front();
                            }
                        }
                        Err(err) => {
                            q.failed.get_or_insert_with(|| err.clone());
                        }
                    }
                    result
                };
                drop(q);
                for w in waiters {
                    let _ = w.send(result.clone());
                }
            }
            Turn::Write => {
                let job = take_batch(&shared, &mut q, &mut scratch);
                match job {
                    Ok(job) => q.jobs.push_back(job),
                    Err(err) => {
                        q.failed.get_or_insert(err);
                    }
                }
                drop(q);
                shared.work.notify_one();
            }
        }
    }
}

/// Takes every waiting append that fits into one batch, encodes it and records it as in
/// flight. The first waiting append must fit (the caller checked).
fn take_batch(shared: &Shared, q: &mut Queue, scratch: &mut Vec<u8>) -> WalResult<Job> {
    let first_len = q
        .pending
        .front()
        .map_or(0, |p| frame::frame_len(p.record.len()) as u64);
    let pad_at = q.issued;
    let (start, pad) = placement(shared, q.issued, first_len);
    let pad = pad.then_some(pad_at);
    let limit = (start + shared.max_batch)
        .min(shared.ring.lap_end(start))
        .min(q.trim + shared.ring.size);
    // Everything below the oldest unacknowledged write is durable.
    let durable = q.inflight.front().map_or(start, InFlight::first);
    scratch.clear();
    let mut appends = Vec::new();
    let mut pos = start;
    while let Some(p) = q.pending.front() {
        let len = frame::frame_len(p.record.len()) as u64;
        if !appends.is_empty() && align_up(pos + len) > limit {
            break;
        }
        let Some(p) = q.pending.pop_front() else {
            break;
        };
        q.pending_bytes -= len;
        let delta = u32::try_from(pos - durable)
            .map_err(|_| WalError::new(WalErrorKind::InvalidInput, "write batch over 4 GiB"))?;
        let n = frame::encode(pos, delta, &p.record, scratch).map_err(|e| {
            WalError::new(WalErrorKind::InvalidInput, format!("encoding a frame: {e}"))
        })?;
        appends.push((p.done, pos));
        pos += n as u64;
    }
    let len = align_up(scratch.len() as u64) as usize;
    let mut buf = shared.pool.take();
    if len > buf.len() {
        buf = AlignedBuf::new(len);
    }
    buf[..scratch.len()].copy_from_slice(scratch);
    buf[scratch.len()..len].fill(0);
    let id = q.next_job;
    q.next_job += 1;
    if q.budget.limited() {
        q.budget.spend(Instant::now());
        if std::mem::take(&mut q.held) {
            shared.metrics.budget_held();
        }
    }
    q.issued = align_up(pos);
    shared.metrics.used(q.issued - q.trim);
    let records = appends.len() as u64;
    q.inflight.push_back(InFlight {
        id,
        pad,
        start,
        end: pos,
        appends,
        result: None,
    });
    Ok(Job {
        id,
        pad,
        start,
        buf,
        len,
        records,
    })
}

/// An I/O thread's loop.
pub(super) fn io_thread(shared: Arc<Shared>) {
    let mut block = AlignedBuf::new(2 * BLOCK);
    loop {
        let mut q = shared.queue.lock();
        let job = loop {
            if let Some(job) = q.jobs.pop_front() {
                break job;
            }
            if q.stop {
                return;
            }
            shared.work.wait(&mut q);
        };
        let latched = q.failed.clone();
        drop(q);
        let result = match latched {
            Some(err) => Err(err),
            None => {
                shared.metrics.write_started();
                let started = Instant::now();
                let result = write_job(&shared, &job, &mut block);
                shared.metrics.write_finished();
                if result.is_ok() {
                    shared
                        .metrics
                        .record_write(job.len as u64, job.records, started.elapsed());
                }
                result
            }
        };
        shared.pool.put(job.buf);
        let mut q = shared.queue.lock();
        if let Some(f) = q.inflight.iter_mut().find(|f| f.id == job.id) {
            f.result = Some(result);
        }
        retire(&mut q);
        drop(q);
        shared.wake.notify_all();
    }
}

/// Retires finished jobs in issue order, resolving their appends.
fn retire(q: &mut Queue) {
    while q.inflight.front().is_some_and(|f| f.result.is_some()) {
        let Some(f) = q.inflight.pop_front() else {
            break;
        };
        let result = match (&q.failed, f.result) {
            (Some(err), _) => Err(err.clone()),
            (None, Some(Err(err))) => {
                q.failed = Some(err.clone());
                Err(err)
            }
            (None, _) => Ok(()),
        };
        match result {
            Ok(()) => {
                if let Some(pad) = f.pad {
                    q.write_starts.push_back(pad);
                }
                q.write_starts.push_back(f.start);
                q.next = align_up(f.end);
                for (done, pos) in f.appends {
                    let _ = done.send(Ok(WalPosition(pos)));
                }
            }
            Err(err) => {
                for (done, _) in f.appends {
                    let _ = done.send(Err(err.clone()));
                }
            }
        }
    }
}

/// Writes one job (after its padding marker, if any), makes it durable, then checks that the
/// device still belongs to this WAL.
fn write_job(shared: &Shared, job: &Job, block: &mut AlignedBuf) -> WalResult<()> {
    let dev = &*shared.dev;
    let fail = |offset: u64, e: std::io::Error| {
        WalError::failed(format!("writing {} at {offset}", dev.name()), e)
    };
    if let Some(at) = job.pad {
        ring::encode_pad(shared.ring, at, block);
        let offset = shared.ring.physical(at);
        dev.write_at(&block[..BLOCK], offset)
            .map_err(|e| fail(offset, e))?;
        dev.sync().map_err(|e| fail(offset, e))?;
    }
    let offset = shared.ring.physical(job.start);
    dev.write_at(&job.buf[..job.len], offset)
        .map_err(|e| fail(offset, e))?;
    dev.sync().map_err(|e| fail(offset, e))?;
    check_owner(shared, block)
}

/// How many of the headers this WAL wrote last an ownership check accepts. A check reads the
/// slots without holding anything, so a trim's header write may complete while the read is
/// under way; the read then finds that header or the one before it. Keeping a few more
/// covers trims in quick succession, and a check that overlaps more header writes than this
/// fails safe: it reports a takeover that did not happen, never misses one.
const OWN_HEADERS: usize = 8;

/// The headers this WAL wrote (the newest last, at most [`OWN_HEADERS`]) and the one being
/// written, if any. A check finding any of them on the device knows no other opener had
/// written a header when its read started: an opener's header outranks every one of them.
#[derive(Debug)]
pub(super) struct OwnHeaders {
    written: VecDeque<Header>,
    writing: Option<Header>,
}

impl OwnHeaders {
    /// The headers of a WAL that has written `opened`.
    pub fn new(opened: Header) -> OwnHeaders {
        OwnHeaders {
            written: VecDeque::from([opened]),
            writing: None,
        }
    }

    /// The newest header written.
    fn latest(&self) -> Header {
        // `written` is never empty: it starts with one header and only grows before trimming.
        self.written.back().copied().unwrap_or(Header {
            capacity: 0,
            trim: 0,
            node_id: 0,
            node_epoch: 0,
            sequence: 0,
        })
    }

    fn contains(&self, found: &Header) -> bool {
        self.writing.as_ref() == Some(found) || self.written.contains(found)
    }
}

/// Reads both header slots and fails with [`WalErrorKind::Fenced`] unless the newest header
/// is one this WAL wrote (see [`OwnHeaders`]). Holds no lock during the read, so a trim's
/// header write never holds checks up.
pub(super) fn check_owner(shared: &Shared, block: &mut AlignedBuf) -> WalResult<()> {
    let found = header::read_slots(&*shared.dev, block)?;
    let own = shared.header.lock();
    match found {
        Slots::Valid(found) if own.contains(&found) => Ok(()),
        _ => owner_is(shared, &own.latest(), found),
    }
}

fn owner_is(shared: &Shared, mine: &Header, found: Slots) -> WalResult<()> {
    let name = shared.dev.name();
    match found {
        Slots::Valid(found) if found == *mine => Ok(()),
        Slots::Valid(found) => Err(WalError::new(
            WalErrorKind::Fenced,
            format!(
                "{name} was taken over by node {} with node epoch {} (this writer is node {} \
                 epoch {})",
                found.node_id, found.node_epoch, mine.node_id, mine.node_epoch
            ),
        )),
        Slots::Fresh => Err(WalError::new(
            WalErrorKind::Fenced,
            format!("the header of {name} was wiped"),
        )),
    }
}

/// Writes a header with trim `boundary` after checking that the newest header on the device
/// is still this WAL's; fails with [`WalErrorKind::Fenced`] when another node has written
/// since. Only the sequencer writes headers once the WAL is open, so there is one at a time.
fn persist_trim(shared: &Shared, boundary: u64, block: &mut AlignedBuf) -> WalResult<()> {
    let mine = shared.header.lock().latest();
    let found = header::read_slots(&*shared.dev, block)?;
    owner_is(shared, &mine, found)?;
    let next = Header {
        trim: boundary,
        sequence: mine.sequence + 1,
        ..mine
    };
    shared.header.lock().writing = Some(next);
    let written = header::write_slot(&*shared.dev, &next, block);
    let mut own = shared.header.lock();
    own.writing = None;
    written?;
    own.written.push_back(next);
    if own.written.len() > OWN_HEADERS {
        own.written.pop_front();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(sequence: u64, trim: u64) -> Header {
        Header {
            capacity: 1 << 20,
            trim,
            node_id: 7,
            node_epoch: 3,
            sequence,
        }
    }

    #[test]
    fn a_check_accepts_the_header_being_written_and_the_ones_just_replaced() {
        let mut own = OwnHeaders::new(header(5, 0));
        own.writing = Some(header(6, 4096));
        assert!(own.contains(&header(5, 0)));
        assert!(own.contains(&header(6, 4096)));
        own.writing = None;
        own.written.push_back(header(6, 4096));
        assert!(own.contains(&header(5, 0)));
        assert_eq!(own.latest(), header(6, 4096));
    }

    #[test]
    fn a_check_refuses_an_openers_header_even_with_this_writers_identity() {
        let own = OwnHeaders::new(header(5, 0));
        // An opener with the same node id and epoch writes the next sequence number over the
        // trim it found: it is not a header this writer wrote.
        assert!(!own.contains(&header(6, 0)));
        assert!(!own.contains(&Header {
            node_epoch: 4,
            ..header(5, 0)
        }));
    }
}
