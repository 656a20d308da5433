//! The block WAL: a ring buffer on a block device or a preallocated file, written with
//! `O_DIRECT` in 4 KiB-aligned writes.
//!
//! # Device layout
//!
//! ```text
//! byte 0       header slot 0 (4 KiB)   } two alternating header slots (module `header`)
//! byte 4096    header slot 1 (4 KiB)   }
//! byte 8192    the ring: `capacity - 8192` bytes of frames (module `ring`)
//! ```
//!
//! # Roles
//!
//! - [`BlockWal`] (this module) takes calls: `append` queues a record and returns a future on a
//!   oneshot channel; `trim` asks for a header write; `replay` hands out what the open found.
//! - The writer (module `writer`) is the group commit: a sequencer thread that forms batches
//!   and persists trims, and I/O threads that keep up to four writes in flight, each made
//!   durable and checked against the header before it is acknowledged, in order.
//!   With a write budget ([`BlockWalOptions::max_writes_per_sec`], module `budget`) a write
//!   that would exceed it waits, and appends arriving meanwhile join it.
//! - Recovery (module `ring`) runs in [`BlockWal::open_device`], after the new header is written.
//! - The device seam (module `device`) is a small trait with an `O_DIRECT` implementation and an
//!   in-memory one that can crash mid-write; [`CrashingDevice`] (module `crashing`) makes any
//!   device crash mid-write, so the torn-write tests also run on a real block device.
//!
//! # Fencing
//!
//! Every header carries the node id and node epoch of its writer. Opening with a node epoch
//! lower than the newest header's fails with [`WalErrorKind::Fenced`]; otherwise the open
//! writes a header with the opener's identity and the next sequence number to both slots, one
//! synced write after the other, *before* it replays the ring. The newest header is the one
//! with the highest node epoch, then the highest sequence.
//!
//! A writer acknowledges a write only after this sequence, for that write alone:
//!
//! 1. the write is durable (`O_DSYNC` returned, or `fdatasync` returned);
//! 2. *then* an `O_DIRECT` read of both header slots finds that the newest header is one this
//!    writer wrote: its last, or one of the few before it, or the one a trim is writing, since
//!    a check takes no lock and a trim's header write may land during its read (otherwise the
//!    write, and every later call, fails with [`WalErrorKind::Fenced`]);
//! 3. then the appends it holds resolve, once every earlier write has resolved.
//!
//! **Claim.** Once a new owner's open has returned, the previous writer acknowledges nothing
//! more, and the new owner's replay holds every record the previous writer acknowledged.
//!
//! *Argument.* Reads and writes of one device are linearizable at block granularity: a read
//! that starts after a write completed returns that write's bytes. Let `H` be the completion of
//! the new owner's header write (the second slot's sync; the first slot completed earlier), and
//! `R` the start of its replay, after `H`. Take any write `w` of the previous writer that is
//! acknowledged. Its check (step 2) found the previous writer's header, so that read started
//! before `H`: a read starting after `H` finds the new header in both slots, or in one slot
//! when the previous writer's racing header write (a lower epoch) overwrote the other, and
//! the new header outranks it either way.
//! Step 1 completed before step 2 started, so `w` was durable before `H`, hence before `R`:
//! replay reads it. And a check that starts after `H` fails, so every acknowledgement after
//! the open returns is an error. The window in which a check can still pass is one header read
//! (a few tens of microseconds) and closes at `H`, before the open returns: no acknowledged
//! append is lost to the new owner and none is acknowledged after the open.
//!
//! A header write of the previous writer (a trim) re-reads both slots first and stops at a
//! foreign header; one already past that read when the open wrote its header can overwrite one
//! slot with a lower epoch, which the other copy outranks. So a fenced writer never takes the
//! device back.
//!
//! What this does not stop: the previous writer's *unacknowledged* writes may still land after
//! the new owner's replay, over ring space the new owner is about to use: at most eight, the
//! four that may be in flight at `H` and four more issued into the slots freed by writes whose
//! checks began before `H` (every check that begins after `H` fails and latches the error, and
//! nothing is issued after that). Their records were never acknowledged, but their bytes can
//! damage the new owner's writes at the same place. Only the
//! storage can refuse a fenced host's I/O: detaching the volume from the failed node, or
//! fencing it with NVMe reservations on EBS Multi-Attach, before the takeover, and reattaching
//! it where it is needed, is the orchestrator's job, not this crate's. The header check makes
//! takeover safe for acknowledgements on its own; the volume fence makes it safe for bytes.
//!
//! # Invariants
//!
//! 1. Writes start at 4 KiB-aligned positions and never cross the ring's end; no block holding
//!    an acknowledged record is rewritten.
//! 2. A write only covers positions below `trim + ring size`, where `trim` is in a durable
//!    header: untrimmed data is never overwritten, and recovery always starts at a place where
//!    a write started.
//! 3. An append resolves after the write holding it was made durable and the header was found
//!    unchanged after that; appends resolve in call order.
//! 4. After a failed write, sync, header read or header write, or a takeover, every later call
//!    fails.
//! 5. At most four writes are unacknowledged at a time; each frame's batch start is the first
//!    position of the oldest of them, so recovery looks that far past a torn write.
//!
//! # Metrics
//!
//! The WAL reports through [`crate::metrics::WalMetrics`] labelled `wal = block`, with handles
//! built once at open (nothing is allocated or locked for them per append): each write's bytes
//! (padding included), records and the time from its `pwrite` to the end of its header check;
//! writes in flight; ring bytes in use between the trim and the last write issued, and the
//! ring's capacity; appends that waited for a trim because the ring was full; and the bytes
//! and time of the replay at open.
//!
//! The options that size writes (`max_record_bytes`, `max_batch_bytes`) must not shrink between
//! opens of one device: recovery uses them, with the four writes in flight, to bound how far it
//! looks past a torn tail.

mod budget;
mod crashing;
mod device;
mod header;
pub mod inspect;
mod reader;
mod ring;
mod writer;

use std::fmt;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use bytes::Bytes;
use parking_lot::{Condvar, Mutex};
use tokio::sync::oneshot;

use crate::frame;
use crate::metrics::WalMetrics;
use crate::{Wal, WalError, WalErrorKind, WalFuture, WalPosition, WalRecord, WalResult};
use budget::WriteBudget;
pub use crashing::CrashingDevice;
pub use device::{AlignedBuf, BlockDevice, BufferPool, DirectFile, MemDevice, BLOCK, SECTOR};
use header::Slots;
pub use header::{Header, HEADER_AREA, HEADER_MAGIC};
pub use reader::{RECOVERY_READ_BYTES, RECOVERY_READ_DEPTH};
use ring::{align_up, Ring};
use writer::{Pending, Queue};

/// How a write is made durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// Open the device with `O_DSYNC`: every write is durable when it returns.
    Dsync,
    /// Follow every write with `fdatasync`.
    Fdatasync,
}

/// Tunables of a [`BlockWal`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockWalOptions {
    /// When the path does not exist, create a regular file of this many bytes (rounded down to
    /// 4 KiB). `None` requires the path to exist (a block device or a preallocated file).
    pub create_bytes: Option<u64>,
    /// The largest record `append` accepts. Default 1 MiB.
    pub max_record_bytes: usize,
    /// A write takes appends until it holds this many bytes (a single larger record still
    /// goes alone). Default 1 MiB.
    pub max_batch_bytes: usize,
    /// How writes are made durable. Default [`Durability::Dsync`].
    pub durability: Durability,
    /// The most writes a second the WAL sends to the device; 0 (the default) for no limit.
    ///
    /// Each write is one `pwrite` of a group commit, its sync, and the 8 KiB header read of
    /// the ownership check. A volume serves a bounded number of operations a second (EBS gp3:
    /// 3 000 at baseline, counting reads and writes alike); past it the device queues or
    /// stalls every write, so more, smaller writes make appends slower, not faster. With a
    /// budget, a write that would exceed it waits (up to one interval, `1 s / budget`) and
    /// the appends arriving meanwhile join it; four writes may go back to back after an idle
    /// spell, and a write that already holds `max_batch_bytes` never waits. Under light load
    /// nothing changes. Set it to what the volume allows for this WAL, halved for the header
    /// reads (1 200 leaves a gp3 volume's baseline some room). Writes that waited are counted
    /// by `objstream_wal_budget_held_writes_total`.
    pub max_writes_per_sec: u32,
}

impl Default for BlockWalOptions {
    fn default() -> Self {
        BlockWalOptions {
            create_bytes: None,
            max_record_bytes: 1 << 20,
            max_batch_bytes: 1 << 20,
            durability: Durability::Dsync,
            max_writes_per_sec: 0,
        }
    }
}

/// State shared by the handle, the sequencer and the I/O threads.
struct Shared {
    dev: Arc<dyn BlockDevice>,
    ring: Ring,
    max_batch: u64,
    pool: BufferPool,
    queue: Mutex<Queue>,
    /// Wakes the sequencer: an append, a trim, a retired write, the close.
    wake: Condvar,
    /// Wakes the I/O threads: a job, or the stop.
    work: Condvar,
    /// The headers this WAL wrote last and the one it is writing: what an ownership check
    /// accepts on the device. Held only to look or to update, never across I/O.
    header: Mutex<writer::OwnHeaders>,
    replay: Mutex<Vec<WalRecord>>,
    metrics: WalMetrics,
}

/// The block WAL. See the module docs.
///
/// Appends resolve in call order once durable; a reopen replays what was not trimmed; a trim
/// lets the ring reuse the space below a position. Here on a memory device (a real one is
/// opened with [`BlockWal::open`]):
///
/// ```
/// use std::sync::Arc;
/// use bytes::Bytes;
/// use futures::executor::block_on;
/// use objstream_wal::block::{MemDevice, HEADER_AREA};
/// use objstream_wal::{BlockWal, BlockWalOptions, Wal};
///
/// let dev = MemDevice::new(HEADER_AREA as usize + (8 << 20));
/// let open = |epoch| {
///     BlockWal::open_device(Arc::new(dev.clone()), 1, epoch, BlockWalOptions::default())
/// };
///
/// let wal = open(1)?;
/// let first = wal.append(Bytes::from_static(b"prompt"));
/// let second = wal.append(Bytes::from_static(b"response"));
/// let (first, second) = (block_on(first)?, block_on(second)?);
/// assert!(first < second);
/// drop(wal);
///
/// // A reopen (a restart, or a takeover at a higher node epoch) replays every record.
/// let wal = open(2)?;
/// let replayed = block_on(wal.replay())?;
/// assert_eq!(replayed.len(), 2);
/// assert_eq!(replayed[1].payload, "response");
///
/// // Once the records are safe elsewhere, trim: the next reopen replays nothing.
/// block_on(wal.trim(wal.next_position()))?;
/// drop(wal);
/// assert!(block_on(open(3)?.replay())?.is_empty());
/// # Ok::<(), objstream_wal::WalError>(())
/// ```
pub struct BlockWal {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    max_record: usize,
}

impl fmt::Debug for BlockWal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlockWal")
            .field("device", &self.shared.dev.name())
            .field("ring", &self.shared.ring.size)
            .finish()
    }
}

impl BlockWal {
    /// Opens the WAL on `path` (a block device or a preallocated file; created when missing
    /// and [`BlockWalOptions::create_bytes`] is set) with `O_DIRECT`, as node `node_id` at
    /// `node_epoch`. See [`BlockWal::open_device`].
    ///
    /// A preallocated file in a directory on a filesystem that accepts `O_DIRECT` (tmpfs does
    /// not):
    ///
    /// ```
    /// use bytes::Bytes;
    /// use futures::executor::block_on;
    /// use objstream_wal::{BlockWal, BlockWalOptions, Wal};
    ///
    /// let dir = tempfile::tempdir_in(".").unwrap();
    /// let path = dir.path().join("node-1.wal");
    /// let options = BlockWalOptions {
    ///     create_bytes: Some(16 << 20),
    ///     ..BlockWalOptions::default()
    /// };
    /// let wal = BlockWal::open(&path, 1, 1, options.clone())?;
    /// block_on(wal.append(Bytes::from_static(b"evaluator score")))?;
    /// assert_eq!(wal.ring_bytes(), (16 << 20) - 8192);
    /// drop(wal);
    ///
    /// let wal = BlockWal::open(&path, 1, 2, options)?;
    /// assert_eq!(block_on(wal.replay())?[0].payload, "evaluator score");
    /// # Ok::<(), objstream_wal::WalError>(())
    /// ```
    pub fn open(
        path: impl AsRef<Path>,
        node_id: u64,
        node_epoch: u64,
        options: BlockWalOptions,
    ) -> WalResult<BlockWal> {
        let metrics = BlockWal::new_metrics();
        BlockWal::open_with_metrics(path, node_id, node_epoch, options, metrics)
    }

    /// [`BlockWal::open`] reporting through `metrics` (see [`BlockWal::new_metrics`]): for a
    /// caller that opens the WAL on another thread than the one whose recorder should see it.
    pub fn open_with_metrics(
        path: impl AsRef<Path>,
        node_id: u64,
        node_epoch: u64,
        options: BlockWalOptions,
        metrics: WalMetrics,
    ) -> WalResult<BlockWal> {
        let path = path.as_ref();
        let create = options
            .create_bytes
            .map(|b| b / BLOCK as u64 * BLOCK as u64);
        let dev = DirectFile::open(path, create, options.durability == Durability::Dsync).map_err(
            |e: io::Error| WalError::failed(format!("opening {} with O_DIRECT", path.display()), e),
        )?;
        BlockWal::open_device_with_metrics(Arc::new(dev), node_id, node_epoch, options, metrics)
    }

    /// Opens the WAL on `dev` as node `node_id` at `node_epoch`: reads the header, refuses with
    /// [`WalErrorKind::Fenced`] when it carries a higher node epoch, writes a header with the
    /// opener's identity, then recovers the ring (cutting a torn tail, failing with
    /// [`WalErrorKind::Corruption`] on damage before it) and starts the writer thread.
    ///
    /// A takeover: the node that opens at a higher node epoch fences the previous writer, whose
    /// later calls fail, and an opener at a lower epoch is refused.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use bytes::Bytes;
    /// use futures::executor::block_on;
    /// use objstream_wal::block::{MemDevice, HEADER_AREA};
    /// use objstream_wal::{BlockWal, BlockWalOptions, Wal, WalErrorKind};
    ///
    /// let dev = MemDevice::new(HEADER_AREA as usize + (8 << 20));
    /// let open = |node, epoch| {
    ///     BlockWal::open_device(Arc::new(dev.clone()), node, epoch, BlockWalOptions::default())
    /// };
    /// let old = open(1, 1)?;
    /// block_on(old.append(Bytes::from_static(b"acknowledged")))?;
    ///
    /// let new = open(2, 2)?;
    /// assert_eq!(block_on(new.replay())?.len(), 1);
    /// let err = block_on(old.append(Bytes::from_static(b"late"))).unwrap_err();
    /// assert_eq!(err.kind(), WalErrorKind::Fenced);
    /// assert_eq!(open(1, 1).unwrap_err().kind(), WalErrorKind::Fenced);
    /// # Ok::<(), objstream_wal::WalError>(())
    /// ```
    pub fn open_device(
        dev: Arc<dyn BlockDevice>,
        node_id: u64,
        node_epoch: u64,
        options: BlockWalOptions,
    ) -> WalResult<BlockWal> {
        let metrics = BlockWal::new_metrics();
        BlockWal::open_device_with_metrics(dev, node_id, node_epoch, options, metrics)
    }

    /// The handles a block WAL reports through (`wal = block`), registered with the recorder
    /// current on the calling thread: for a caller that opens the WAL elsewhere but wants the
    /// numbers in its own thread's recorder.
    pub fn new_metrics() -> WalMetrics {
        WalMetrics::new("block")
    }

    /// [`BlockWal::open_device`], reporting through `metrics` (see [`BlockWal::new_metrics`]):
    /// per write its bytes, records and the time to make it durable and check the header;
    /// writes in flight; ring bytes in use between the trim and the last write issued, and the
    /// ring's capacity; appends that waited for a trim because the ring was full; and the
    /// replay at open.
    pub fn open_device_with_metrics(
        dev: Arc<dyn BlockDevice>,
        node_id: u64,
        node_epoch: u64,
        options: BlockWalOptions,
        metrics: WalMetrics,
    ) -> WalResult<BlockWal> {
        let invalid = |m: String| WalError::new(WalErrorKind::InvalidInput, m);
        let max_frame = frame::frame_len(options.max_record_bytes) as u64;
        let max_write = align_up(max_frame.max(options.max_batch_bytes as u64));
        let mut block = AlignedBuf::new(2 * BLOCK);
        let current = header::read_slots(&*dev, &mut block)?;
        let previous = match current {
            Slots::Fresh => None,
            Slots::Valid(h) => Some(h),
        };
        let capacity = match previous {
            Some(h) => {
                if h.capacity > dev.len()
                    || h.capacity % BLOCK as u64 != 0
                    || h.capacity <= HEADER_AREA
                    || h.trim % BLOCK as u64 != 0
                {
                    return Err(WalError::corruption(
                        format!("{} at offset 0", dev.name()),
                        format!(
                            "header claims capacity {} and trim {} on a device of {} bytes",
                            h.capacity,
                            h.trim,
                            dev.len()
                        ),
                    ));
                }
                if h.node_epoch > node_epoch {
                    return Err(WalError::new(
                        WalErrorKind::Fenced,
                        format!(
                            "{} belongs to node {} at node epoch {}, above this opener's {}",
                            dev.name(),
                            h.node_id,
                            h.node_epoch,
                            node_epoch
                        ),
                    ));
                }
                h.capacity
            }
            None => dev.len() / BLOCK as u64 * BLOCK as u64,
        };
        let ring = Ring {
            size: capacity.saturating_sub(HEADER_AREA),
        };
        if ring.size < 4 * max_write {
            return Err(invalid(format!(
                "a ring of {} bytes is too small for writes of up to {max_write} bytes (it \
                 must hold four)",
                ring.size
            )));
        }
        let mine = Header {
            capacity,
            trim: previous.map_or(0, |h| h.trim),
            node_id,
            node_epoch,
            sequence: previous.map_or(1, |h| h.sequence + 1),
        };
        header::write_both_slots(&*dev, &mine, &mut block)?;

        // The torn write and the ones issued with it may reach this far past the cut: up to
        // WRITES_IN_FLIGHT writes, each zero-padded to a block, and once among them the space
        // skipped at the ring's end (less than one write).
        let in_flight = writer::WRITES_IN_FLIGHT as u64 * (max_write + BLOCK as u64) + max_write;
        let window = (in_flight + max_write + BLOCK as u64).min(ring.size);
        let started = Instant::now();
        let recovered = ring::recover(&*dev, ring, mine.trim, max_frame, window)?;
        let mut zero_buf = AlignedBuf::new(max_write.min(1 << 20) as usize);
        // The scan past the cut read further than this, so it knows where the bytes left
        // there end: blocks of zeros need no write.
        let zero_to = (recovered.cut + in_flight + BLOCK as u64)
            .min(mine.trim + ring.size)
            .min(recovered.dirty_end);
        ring::zero_range(&*dev, ring, recovered.cut, zero_to, &mut zero_buf)?;
        let replayed: u64 = recovered
            .records
            .iter()
            .map(|r| r.payload.len() as u64)
            .sum();
        metrics.replayed(replayed, started.elapsed());
        metrics.capacity(ring.size);
        let next = align_up(recovered.cut);
        metrics.used(next - mine.trim);

        let shared = Arc::new(Shared {
            dev,
            ring,
            max_batch: options.max_batch_bytes as u64,
            pool: BufferPool::new(max_write as usize),
            queue: Mutex::new(Queue::new(
                next,
                mine.trim,
                recovered.write_starts.into(),
                WriteBudget::new(options.max_writes_per_sec),
            )),
            wake: Condvar::new(),
            work: Condvar::new(),
            header: Mutex::new(writer::OwnHeaders::new(mine)),
            replay: Mutex::new(recovered.records),
            metrics,
        });
        let spawn = |name: String, f: fn(Arc<Shared>)| {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(name)
                .spawn(move || f(shared))
                .map_err(|e| WalError::failed("starting the block WAL writer", e))
        };
        let mut threads = Vec::with_capacity(writer::WRITES_IN_FLIGHT + 1);
        let started = (|| {
            threads.push(spawn("block-wal-writer".to_string(), writer::run)?);
            for i in 0..writer::WRITES_IN_FLIGHT {
                threads.push(spawn(format!("block-wal-io-{i}"), writer::io_thread)?);
            }
            Ok::<(), WalError>(())
        })();
        let wal = BlockWal {
            shared,
            threads,
            max_record: options.max_record_bytes,
        };
        started?;
        Ok(wal)
    }

    /// The device's name.
    pub fn device_name(&self) -> String {
        self.shared.dev.name()
    }

    /// Ring bytes (the device's capacity minus the header area).
    pub fn ring_bytes(&self) -> u64 {
        self.shared.ring.size
    }

    /// The end of the acknowledged log: where the write after the last acknowledged one
    /// starts. Trimming to it keeps no acknowledged record.
    pub fn next_position(&self) -> WalPosition {
        WalPosition(self.shared.queue.lock().next)
    }

    /// The trim position in the newest header this WAL wrote.
    pub fn trim_position(&self) -> WalPosition {
        WalPosition(self.shared.queue.lock().trim)
    }

    /// Reads the header slots now and fails with [`WalErrorKind::Fenced`] when another opener
    /// has written a header since this WAL's newest one (every acknowledged write does this
    /// check; this is for callers that want to know without appending).
    pub fn check_owner(&self) -> WalResult<()> {
        if let Some(err) = self.shared.queue.lock().failed.clone() {
            return Err(err);
        }
        let mut block = AlignedBuf::new(2 * BLOCK);
        writer::check_owner(&self.shared, &mut block)
    }
}

fn ready<T: Send + 'static>(r: WalResult<T>) -> WalFuture<T> {
    Box::pin(std::future::ready(r))
}

fn closed_channel() -> WalError {
    WalError::new(WalErrorKind::Failed, "the block WAL writer stopped")
}

impl Wal for BlockWal {
    fn append(&self, record: Bytes) -> WalFuture<WalPosition> {
        if record.len() > self.max_record {
            return ready(Err(WalError::new(
                WalErrorKind::InvalidInput,
                format!(
                    "a record of {} bytes is over the limit of {}",
                    record.len(),
                    self.max_record
                ),
            )));
        }
        let (tx, rx) = oneshot::channel();
        let wake = {
            let mut q = self.shared.queue.lock();
            if let Some(err) = &q.failed {
                return ready(Err(err.clone()));
            }
            if q.full {
                self.shared.metrics.full_wait();
            }
            // The sequencer only needs waking when this append makes a write issuable; else
            // a retired write or a trim wakes it.
            q.push(Pending { record, done: tx }, self.shared.max_batch)
        };
        if wake {
            self.shared.wake.notify_all();
        }
        Box::pin(async move { rx.await.unwrap_or_else(|_| Err(closed_channel())) })
    }

    fn trim(&self, before: WalPosition) -> WalFuture<()> {
        let (tx, rx) = oneshot::channel();
        {
            let mut q = self.shared.queue.lock();
            if let Some(err) = &q.failed {
                return ready(Err(err.clone()));
            }
            if before.0 > q.next {
                return ready(Err(WalError::new(
                    WalErrorKind::InvalidInput,
                    format!("trim to {before} is past the end of the log at {}", q.next),
                )));
            }
            if before.0 <= q.trim && q.trim_target.is_none() {
                return ready(Ok(()));
            }
            q.trim_target = Some(q.trim_target.map_or(before.0, |t| t.max(before.0)));
            q.trim_waiters.push(tx);
        }
        self.shared.wake.notify_all();
        let before = before.0;
        let shared = self.shared.clone();
        Box::pin(async move {
            rx.await.unwrap_or_else(|_| Err(closed_channel()))?;
            shared.replay.lock().retain(|r| r.position.0 >= before);
            Ok(())
        })
    }

    fn replay(&self) -> WalFuture<Vec<WalRecord>> {
        let result = match self.shared.queue.lock().failed.clone() {
            Some(err) => Err(err),
            None => Ok(self.shared.replay.lock().clone()),
        };
        ready(result)
    }

    fn max_record_size(&self) -> usize {
        self.max_record
    }
}

impl Drop for BlockWal {
    fn drop(&mut self) {
        self.shared.queue.lock().closed = true;
        self.shared.wake.notify_all();
        self.shared.work.notify_all();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}
