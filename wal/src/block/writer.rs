//! The writer thread: group commit, trims and header writes.
//!
//! One thread owns every device write after the open. Each turn it either persists a pending
//! trim (a header write, after re-reading both slots to notice a takeover) or takes every append
//! waiting at that moment that fits (the batch limit, the ring's end, the trimmed space), encodes
//! their frames into one pooled aligned buffer, writes it with one `pwrite` and makes it durable
//! (`O_DSYNC`, or one `fdatasync`), then resolves the appends in order. Positions are assigned
//! here, in queue order, so acknowledgements resolve in the order `append` was called.
//!
//! When the first waiting record does not fit in the trimmed space, the thread waits for a trim
//! (backpressure); it never overwrites untrimmed data. After any failed write, sync or header
//! write, or a takeover, the error is latched and every waiting and later call gets it.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::oneshot;

use super::device::{AlignedBuf, BLOCK};
use super::header::{self, Header, Slots};
use super::ring::{self, align_up};
use super::Shared;
use crate::frame;
use crate::{WalError, WalErrorKind, WalPosition, WalResult};

/// An append waiting to be written.
pub(super) struct Pending {
    pub record: Bytes,
    pub done: oneshot::Sender<WalResult<WalPosition>>,
}

/// State shared between callers and the writer, under one lock.
pub(super) struct Queue {
    /// Appends not yet taken by the writer, in call order.
    pub pending: VecDeque<Pending>,
    /// Where the next write starts (4 KiB-aligned).
    pub next: u64,
    /// The trim position in the newest header: ring space below it may be reused.
    pub trim: u64,
    /// The trim callers asked for that is not yet in a header.
    pub trim_target: Option<u64>,
    /// Trims waiting for the header write.
    pub trim_waiters: Vec<oneshot::Sender<WalResult<()>>>,
    /// Positions where writes started at or after `trim`, ascending: the places recovery may
    /// start from.
    pub write_starts: VecDeque<u64>,
    /// The last header this WAL wrote.
    pub header: Header,
    /// The latched error.
    pub failed: Option<WalError>,
    /// Set when the WAL is dropped: write what is pending and stop.
    pub closed: bool,
}

impl Queue {
    fn fail_all(&mut self, err: &WalError) {
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

/// The writer thread's loop.
pub(super) fn run(shared: Arc<Shared>) {
    let mut buf = shared.pool.take();
    let mut block = AlignedBuf::new(2 * BLOCK);
    let mut scratch: Vec<u8> = Vec::with_capacity(buf.len());
    loop {
        let mut q = shared.queue.lock();
        // Wait for work.
        loop {
            if let Some(err) = q.failed.clone() {
                q.fail_all(&err);
                if q.closed {
                    shared.pool.put(buf);
                    return;
                }
            } else if q.trim_target.is_some() {
                break;
            } else if let Some(first) = q.pending.front() {
                let len = frame::frame_len(first.record.len()) as u64;
                let (start, _) = placement(&shared, q.next, len);
                if align_up(start + len) <= q.trim + shared.ring.size {
                    break;
                }
                if q.closed {
                    let err = WalError::new(
                        WalErrorKind::Failed,
                        "the WAL was closed while appends waited for a trim",
                    );
                    q.fail_all(&err);
                    continue;
                }
            } else if q.closed {
                shared.pool.put(buf);
                return;
            }
            shared.wake.wait(&mut q);
        }

        if let Some(target) = q.trim_target.take() {
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
            if boundary <= q.trim {
                drop(q);
                for w in waiters {
                    let _ = w.send(Ok(()));
                }
                continue;
            }
            let mine = q.header;
            let next = Header {
                trim: boundary,
                sequence: mine.sequence + 1,
                ..mine
            };
            drop(q);
            let result = write_header(&shared, &mine, &next, &mut block);
            let mut q = shared.queue.lock();
            match &result {
                Ok(()) => {
                    q.header = next;
                    q.trim = boundary;
                    while q.write_starts.front().is_some_and(|&s| s < boundary) {
                        q.write_starts.pop_front();
                    }
                }
                Err(err) => {
                    q.failed.get_or_insert_with(|| err.clone());
                }
            }
            drop(q);
            for w in waiters {
                let _ = w.send(result.clone());
            }
            continue;
        }

        // Take every append that fits.
        let first_len = q
            .pending
            .front()
            .map_or(0, |p| frame::frame_len(p.record.len()) as u64);
        let pad_at = q.next;
        let (start, pad) = placement(&shared, q.next, first_len);
        let limit = (start + shared.max_batch)
            .min(shared.ring.lap_end(start))
            .min(q.trim + shared.ring.size);
        let mut batch = Vec::new();
        let mut end = start;
        while let Some(p) = q.pending.front() {
            let len = frame::frame_len(p.record.len()) as u64;
            if !batch.is_empty() && align_up(end + len) > limit {
                break;
            }
            end += len;
            batch.extend(q.pending.pop_front());
        }
        drop(q);

        let result = write_batch(
            &shared,
            pad.then_some(pad_at),
            start,
            &batch,
            &mut buf,
            &mut block,
            &mut scratch,
        );
        let mut q = shared.queue.lock();
        match result {
            Ok(positions) => {
                if pad {
                    q.write_starts.push_back(pad_at);
                }
                q.write_starts.push_back(start);
                q.next = align_up(end);
                drop(q);
                for (p, pos) in batch.into_iter().zip(positions) {
                    let _ = p.done.send(Ok(WalPosition(pos)));
                }
            }
            Err(err) => {
                q.failed.get_or_insert_with(|| err.clone());
                drop(q);
                for p in batch {
                    let _ = p.done.send(Err(err.clone()));
                }
            }
        }
    }
}

/// Writes one batch (after a padding marker at `pad`, if given) and makes it durable. Returns
/// the records' positions.
fn write_batch(
    shared: &Shared,
    pad: Option<u64>,
    start: u64,
    batch: &[Pending],
    buf: &mut AlignedBuf,
    block: &mut AlignedBuf,
    scratch: &mut Vec<u8>,
) -> WalResult<Vec<u64>> {
    let dev = &*shared.dev;
    let fail = |offset: u64, e: std::io::Error| {
        WalError::failed(format!("writing {} at {offset}", dev.name()), e)
    };
    if let Some(at) = pad {
        ring::encode_pad(shared.ring, at, block);
        let offset = shared.ring.physical(at);
        dev.write_at(&block[..BLOCK], offset)
            .map_err(|e| fail(offset, e))?;
        dev.sync().map_err(|e| fail(offset, e))?;
    }
    scratch.clear();
    let mut positions = Vec::with_capacity(batch.len());
    let mut pos = start;
    for p in batch {
        positions.push(pos);
        let delta = u32::try_from(pos - start)
            .map_err(|_| WalError::new(WalErrorKind::InvalidInput, "write batch over 4 GiB"))?;
        let n = frame::encode(pos, delta, &p.record, scratch).map_err(|e| {
            WalError::new(WalErrorKind::InvalidInput, format!("encoding a frame: {e}"))
        })?;
        pos += n as u64;
    }
    let len = align_up(scratch.len() as u64) as usize;
    if len > buf.len() {
        *buf = AlignedBuf::new(len);
    }
    buf[..scratch.len()].copy_from_slice(scratch);
    buf[scratch.len()..len].fill(0);
    let offset = shared.ring.physical(start);
    dev.write_at(&buf[..len], offset)
        .map_err(|e| fail(offset, e))?;
    dev.sync().map_err(|e| fail(offset, e))?;
    Ok(positions)
}

/// Writes `next` as the new header after checking that the newest header on the device is
/// still `mine`; fails with [`WalErrorKind::Fenced`] when another node has written since.
pub(super) fn write_header(
    shared: &Shared,
    mine: &Header,
    next: &Header,
    block: &mut AlignedBuf,
) -> WalResult<()> {
    let dev = &*shared.dev;
    match header::read_slots(dev, block)? {
        Slots::Valid(found) if found == *mine => {}
        Slots::Valid(found) => {
            return Err(WalError::new(
                WalErrorKind::Fenced,
                format!(
                    "{} was taken over by node {} with node epoch {} (this writer is node {} \
                     epoch {})",
                    dev.name(),
                    found.node_id,
                    found.node_epoch,
                    mine.node_id,
                    mine.node_epoch
                ),
            ))
        }
        Slots::Fresh => {
            return Err(WalError::new(
                WalErrorKind::Fenced,
                format!("the header of {} was wiped", dev.name()),
            ))
        }
    }
    header::write_slot(dev, next, block)
}
