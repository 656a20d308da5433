//! The object WAL: appends batched into immutable objects on an object store (S3 Express One
//! Zone, or any store with create-if-absent), several uploads in flight, acknowledged in order,
//! sealed by whoever opens it next.
//!
//! # Keys, slots and positions
//!
//! A WAL is every object under one key prefix. Slot `s` is the object `{wal_prefix}/{s:020}`
//! ([`slot_key`]), written once with `PutMode::Create` and never overwritten. A record's
//! [`WalPosition`] is `(slot << 32) | offset of its frame in the object`; its end is the next
//! record's position, or `(slot + 1) << 32` for the last record of an object. The byte layout
//! of an object is in module `layout`.
//!
//! # Roles
//!
//! - [`ObjectWal`] (this module) takes calls: `append` queues a record and returns a future on a
//!   oneshot channel; `trim` deletes slot objects below a position; `replay` hands out what the
//!   open found.
//! - The opening (module `seal`) seals the WAL against every earlier writer and replays it.
//! - The writer (module `writer`) cuts queued records into objects, uploads them concurrently,
//!   acknowledges them in order and latches the first fence or failure.
//! - The linger rule (module `linger`, [`LingerMode`]) decides when an object that is not full
//!   goes out: at once when the WAL is idle, otherwise after at most `linger`.
//! - Store calls (module `store`) retry transient errors with capped, seeded backoff.
//!
//! # Rules
//!
//! 1. A writer creates slots in increasing order and issues slot `s` only while
//!    `s < acked + max_in_flight`, where `acked` is its first slot not yet acknowledged.
//! 2. A writer acknowledges slot `s` only when every slot from its first slot through `s` holds
//!    its own object. Its acknowledged prefix therefore never passes a slot someone else filled.
//! 3. A create that meets an object reads it: the writer's own identity means an earlier attempt
//!    landed (an ambiguous answer); any other identity means the WAL was taken over, and every
//!    pending and later append fails with [`WalErrorKind::Fenced`], forever. Slots below the
//!    fenced one that land as the writer's own are still acknowledged: the sealer replays them.
//! 4. Every open seals first: it fills every empty slot from the floor up to one above the
//!    highest slot found with a fence, continues upward until one of its fences lands (the first
//!    is `F`), then fills every empty slot of `(F, F + W]`, `W` being the largest
//!    `max_in_flight` it knows of. By rules 1 and 2 an earlier writer's acknowledged prefix ends
//!    at or below `F` and it never issues a slot above `F + W - 1`; after sealing, every such
//!    slot holds an object, so nothing of an earlier writer can land in the new writer's slots.
//! 5. Replay reads every slot in `[floor, F)` in order, tracking the highest fence epoch seen; a
//!    data object is replayed iff its epoch is at least that. An object of a lower epoch after a
//!    higher fence is an unacknowledged write of a fenced writer. A missing slot below `F` is
//!    corruption, never skipped.
//! 6. Objects at or above the floor are deleted only by [`Wal::trim`], whose caller has recorded
//!    the new floor durably first.
//!
//! Callers give every open of one WAL a distinct epoch, growing over time; an open that finds
//! an object of a higher epoch than its own fails with [`WalErrorKind::Fenced`]. All writers of
//! one WAL should use the same `max_in_flight`: a sealer learns a larger window only from the
//! objects it reads.
//!
//! # Metrics
//!
//! The WAL reports through [`crate::metrics::WalMetrics`] labelled `wal = object`: each WAL
//! object's bytes and records and the time its conditional PUT took (retries and the read-back of
//! an ambiguous create included), the PUTs in flight, appends that arrived while the window of
//! `max_in_flight` objects was full (they wait for a slot to be acknowledged), and the bytes and
//! time of the open's seal and replay. The bytes held by untrimmed slots are not reported: the
//! sizes of objects found at open are not known without reading them. The handles are built once
//! in [`ObjectWal::open`].
//!
//! Nothing is sent while nothing is queued. The queue itself is not bounded here: a caller that
//! must bound memory (the store does, G7) waits on its appends before queueing more.
//!
//! # Example
//!
//! ```
//! # use std::sync::Arc;
//! # use object_store::{memory::InMemory, path::Path};
//! # use objstream_wal::{ObjectWal, ObjectWalIdentity, ObjectWalOptions, Wal, WalPosition};
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> objstream_wal::WalResult<()> {
//! let store = Arc::new(InMemory::new());
//! let me = ObjectWalIdentity { owner: 7, epoch: 1, actor: 7, actor_epoch: 1 };
//! let wal = ObjectWal::open(store.clone(), Path::from("wal/7"), me, WalPosition(0),
//!     ObjectWalOptions::default()).await?;
//! let at = wal.append("event".into()).await?;
//! drop(wal);
//!
//! // Another node takes the WAL over: it seals it and replays what was acknowledged.
//! let other = ObjectWalIdentity { owner: 7, epoch: 2, actor: 8, actor_epoch: 4 };
//! let wal = ObjectWal::open(store, Path::from("wal/7"), other, WalPosition(0),
//!     ObjectWalOptions::default()).await?;
//! let records = wal.replay().await?;
//! assert_eq!(records[0].position, at);
//! assert_eq!(&records[0].payload[..], b"event");
//! # Ok(())
//! # }
//! ```

/// The byte layout of WAL objects, public for inspection tools and fuzzing.
pub mod layout;
mod linger;
mod seal;
mod store;
mod trim;
mod writer;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use object_store::path::Path;
use object_store::ObjectStore;
use parking_lot::Mutex;
use tokio::sync::{oneshot, Notify};

use crate::metrics::WalMetrics;
use crate::{frame, Wal, WalError, WalErrorKind, WalFuture, WalPosition, WalRecord, WalResult};
pub use layout::{slot_key, slot_of, HEADER_LEN, OBJECT_MAGIC};
pub use linger::LingerMode;
pub use store::RetryPolicy;

/// The largest `max_in_flight` accepted.
pub const MAX_IN_FLIGHT_LIMIT: usize = 64;

/// Who opens a WAL: the node whose WAL it is and its epoch, and the node doing the opening (the
/// owner itself after a restart, another node taking over) with that node's own epoch.
///
/// Every open of one WAL must use a distinct `epoch`, larger than every earlier one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ObjectWalIdentity {
    /// The node whose WAL this is.
    pub owner: u64,
    /// The epoch this open writes data at and fences the WAL at.
    pub epoch: u64,
    /// The node opening the WAL.
    pub actor: u64,
    /// That node's own epoch.
    pub actor_epoch: u64,
}

/// Tunables of an [`ObjectWal`].
///
/// For S3 Express One Zone the defaults fit: PUTs of a few milliseconds, so a short linger and
/// a window of eight objects. A slower store wants larger objects and a wider window (Little's
/// law: throughput is about `max_in_flight × batch_bytes / PUT latency`):
///
/// ```
/// use std::time::Duration;
/// use objstream_wal::{ObjectWalOptions, WalErrorKind};
///
/// let standard_s3 = ObjectWalOptions {
///     batch_bytes: 8 << 20,
///     linger: Duration::from_millis(20),
///     max_in_flight: 32,
///     ..ObjectWalOptions::default()
/// };
/// standard_s3.validate().unwrap();
///
/// let too_wide = ObjectWalOptions { max_in_flight: 100, ..ObjectWalOptions::default() };
/// assert_eq!(too_wide.validate().unwrap_err().kind(), WalErrorKind::InvalidInput);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectWalOptions {
    /// Cut an object once this many bytes of frames are queued; it holds at least this many
    /// (less than one record more) when that many wait. Larger objects cost fewer PUTs per GB;
    /// smaller ones acknowledge sooner under light load. Default 4 MiB.
    pub batch_bytes: usize,
    /// The longest a queued record waits for others to share its object; whether it waits
    /// depends on `linger_mode`. Longer means fewer PUTs for a trickle of appends (at most
    /// about `1 / linger` per second with [`LingerMode::WhenBusy`] or [`LingerMode::Fixed`]),
    /// shorter means less added latency when the WAL is busy. Default 2 ms (S3 Express PUTs
    /// take single-digit milliseconds).
    pub linger: Duration,
    /// When an object that is not full goes out. Default [`LingerMode::WhenBusy`]: a record
    /// goes at once when no object started in the `linger` before it, else it waits `linger`;
    /// a steady trickle costs the PUTs a fixed linger costs, and a lone append waits only when
    /// the previous object started less than `linger` before it.
    /// [`LingerMode::GroupCommit`] never holds a record while no PUT is in flight: a lone
    /// append costs one PUT of latency even against a store faster than `linger`, and a
    /// trickle may cost up to one PUT per PUT latency. [`LingerMode::Fixed`] holds every such
    /// object for the whole `linger`: the fewest PUTs, and `linger` added to every lone append.
    pub linger_mode: LingerMode,
    /// Objects uploaded but not yet acknowledged, at most (1 to 64). Throughput is about
    /// `max_in_flight × object size / PUT latency`; a sealer writes this many extra fences.
    /// Default 8.
    pub max_in_flight: usize,
    /// The largest record `append` accepts; a record larger than `batch_bytes` goes alone in
    /// its own object. Default 64 MiB.
    pub max_record_size: usize,
    /// Objects read (or fences written) at once while opening. Default 16.
    pub replay_parallelism: usize,
    /// How store calls are retried. See [`RetryPolicy`].
    pub retry: RetryPolicy,
}

impl Default for ObjectWalOptions {
    fn default() -> Self {
        ObjectWalOptions {
            batch_bytes: 4 << 20,
            linger: Duration::from_millis(2),
            linger_mode: LingerMode::WhenBusy,
            max_in_flight: 8,
            max_record_size: 64 << 20,
            replay_parallelism: 16,
            retry: RetryPolicy::default(),
        }
    }
}

impl ObjectWalOptions {
    /// Checks the options: sizes and counts must be positive, `max_in_flight` at most
    /// [`MAX_IN_FLIGHT_LIMIT`], and an object must fit the 32-bit offsets of a slot.
    pub fn validate(&self) -> WalResult<()> {
        let invalid = |m: &str| Err(invalid(format!("object WAL options: {m}")));
        if self.batch_bytes == 0 {
            return invalid("batch_bytes must be positive");
        }
        if self.max_record_size == 0 {
            return invalid("max_record_size must be positive");
        }
        if self.max_in_flight == 0 || self.max_in_flight > MAX_IN_FLIGHT_LIMIT {
            return invalid("max_in_flight must be between 1 and 64");
        }
        if self.replay_parallelism == 0 {
            return invalid("replay_parallelism must be positive");
        }
        if self.retry.max_attempts == 0 {
            return invalid("retry.max_attempts must be positive");
        }
        if self.max_record_size > frame::MAX_BODY_LEN || self.batch_bytes > frame::MAX_BODY_LEN {
            return invalid("batch_bytes and max_record_size must be at most 1 GiB");
        }
        Ok(())
    }
}

/// What an open found and did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SealReport {
    /// Slot objects read (replayed or checked).
    pub slots_read: u64,
    /// Fence objects this open created.
    pub fences_written: u64,
    /// `F`: the lowest slot where this open's fence landed. Replay covers the slots below it.
    pub first_fence: u64,
    /// The first slot this instance writes.
    pub writer_start_slot: u64,
    /// Records replayed.
    pub records_replayed: u64,
    /// Time the open took, in milliseconds.
    pub millis: u64,
}

/// A queued append.
pub(crate) struct Pending {
    record: Bytes,
    done: oneshot::Sender<WalResult<WalPosition>>,
}

/// An object uploaded but not yet acknowledged.
pub(crate) struct InFlight {
    /// Each record's position and its caller, in order.
    waiters: Vec<(WalPosition, oneshot::Sender<WalResult<WalPosition>>)>,
    /// The slot holds our object.
    landed: bool,
}

/// The writer's state, behind one lock.
pub(crate) struct State {
    queue: VecDeque<Pending>,
    /// Frame bytes in `queue`.
    queued_bytes: usize,
    /// When the oldest queued record arrived.
    first_queued: Option<tokio::time::Instant>,
    /// When the latest object was cut (the linger rule paces objects from it).
    last_cut: Option<tokio::time::Instant>,
    /// The next slot to issue.
    next_slot: u64,
    /// The first slot not yet acknowledged.
    acked: u64,
    in_flight: BTreeMap<u64, InFlight>,
    /// The first failure or fence; every later call returns it.
    failed: Option<WalError>,
    /// Slots this instance knows hold an object (read or fenced at open, or its own and
    /// acknowledged): what trim deletes.
    known: BTreeSet<u64>,
    /// What the open replayed, minus what was trimmed since.
    replay: Vec<WalRecord>,
    /// The handle was dropped: flush what is queued and stop.
    closed: bool,
}

/// State shared by the handle, the flusher and the uploads.
pub(crate) struct Shared {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    identity: ObjectWalIdentity,
    options: ObjectWalOptions,
    state: Mutex<State>,
    /// Wakes the flusher: a record was queued, a slot was acknowledged, the handle was dropped.
    wake: Notify,
    /// The handles this WAL reports through.
    metrics: WalMetrics,
}

/// The object WAL. See the module docs for the design and a takeover.
///
/// Appends resolve in order once their object landed; a trim deletes the objects wholly below
/// a position, and an open from that position (the floor the caller recorded) replays only what
/// is above it:
///
/// ```
/// use std::sync::Arc;
/// use object_store::{memory::InMemory, path::Path};
/// use objstream_wal::{ObjectWal, ObjectWalIdentity, ObjectWalOptions, Wal};
/// use objstream_wal::WalPosition;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> objstream_wal::WalResult<()> {
/// let store = Arc::new(InMemory::new());
/// let prefix = Path::from("wal/3");
/// let identity = |epoch| ObjectWalIdentity { owner: 3, epoch, actor: 3, actor_epoch: epoch };
/// let wal = ObjectWal::open(store.clone(), prefix.clone(), identity(1), WalPosition(0),
///     ObjectWalOptions::default()).await?;
/// let first = wal.append("one".into());
/// let second = wal.append("two".into());
/// let (first, second) = (first.await?, second.await?);
/// assert!(first < second);
///
/// // Everything is uploaded elsewhere up to the end of the acknowledged objects: trim it.
/// let floor = wal.acked_end();
/// wal.trim(floor).await?;
/// let third = wal.append("three".into()).await?;
/// drop(wal);
///
/// // A restart from the recorded floor replays only what came after it.
/// let wal = ObjectWal::open(store, prefix, identity(2), floor,
///     ObjectWalOptions::default()).await?;
/// let records = wal.replay().await?;
/// assert_eq!(records.len(), 1);
/// assert_eq!(records[0].position, third);
/// assert_eq!(&records[0].payload[..], b"three");
/// # Ok(())
/// # }
/// ```
pub struct ObjectWal {
    shared: Arc<Shared>,
    report: SealReport,
}

impl fmt::Debug for ObjectWal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectWal")
            .field("prefix", &self.shared.prefix.as_ref())
            .field("identity", &self.shared.identity)
            .field("report", &self.report)
            .finish()
    }
}

impl ObjectWal {
    /// Opens the WAL under `wal_prefix` on `store` as `identity`: seals it against every earlier
    /// writer, replays it, and starts the writer above every slot in use (see the module docs).
    ///
    /// `floor` is the position below which the WAL may have been trimmed (the caller records it
    /// durably before it trims); slots below `slot_of(floor)` are ignored and records below
    /// `floor` are not replayed. Must be called inside a tokio runtime: the writer runs on it.
    pub async fn open(
        store: Arc<dyn ObjectStore>,
        wal_prefix: Path,
        identity: ObjectWalIdentity,
        floor: WalPosition,
        options: ObjectWalOptions,
    ) -> WalResult<ObjectWal> {
        options.validate()?;
        let metrics = WalMetrics::with_gauges("object", false, false);
        let started = Instant::now();
        let sealed = seal::seal(&*store, &wal_prefix, identity, floor, &options).await?;
        let replayed: usize = sealed.records.iter().map(|r| r.payload.len()).sum();
        metrics.replayed(replayed as u64, started.elapsed());
        let shared = Arc::new(Shared {
            store,
            prefix: wal_prefix,
            identity,
            options,
            state: Mutex::new(State {
                queue: VecDeque::new(),
                queued_bytes: 0,
                first_queued: None,
                last_cut: None,
                next_slot: sealed.report.writer_start_slot,
                acked: sealed.report.writer_start_slot,
                in_flight: BTreeMap::new(),
                failed: None,
                known: sealed.known,
                replay: sealed.records,
                closed: false,
            }),
            wake: Notify::new(),
            metrics,
        });
        tokio::spawn(writer::run(shared.clone()));
        Ok(ObjectWal {
            shared,
            report: sealed.report,
        })
    }

    /// What the open found and did.
    pub fn seal_report(&self) -> SealReport {
        self.report
    }

    /// The key prefix of the WAL.
    pub fn prefix(&self) -> &Path {
        &self.shared.prefix
    }

    /// The first position not yet acknowledged: trims may reach up to it.
    pub fn acked_end(&self) -> WalPosition {
        layout::position_in(self.shared.state.lock().acked, 0)
    }
}

fn ready<T: Send + 'static>(r: WalResult<T>) -> WalFuture<T> {
    Box::pin(std::future::ready(r))
}

fn invalid(message: impl Into<String>) -> WalError {
    WalError::new(WalErrorKind::InvalidInput, message)
}

fn writer_gone() -> WalError {
    WalError::new(WalErrorKind::Failed, "the object WAL writer stopped")
}

impl Wal for ObjectWal {
    fn append(&self, record: Bytes) -> WalFuture<WalPosition> {
        let max = self.shared.options.max_record_size;
        if record.len() > max {
            return ready(Err(invalid(format!(
                "a record of {} bytes is over the limit of {max}",
                record.len()
            ))));
        }
        let (done, rx) = oneshot::channel();
        {
            let mut st = self.shared.state.lock();
            if let Some(err) = &st.failed {
                return ready(Err(err.clone()));
            }
            if st.next_slot >= st.acked + self.shared.options.max_in_flight as u64 {
                // Every slot of the window is taken: this record waits for one to be
                // acknowledged before its object can even be cut.
                self.shared.metrics.full_wait();
            }
            st.queued_bytes += frame::frame_len(record.len());
            if st.first_queued.is_none() {
                st.first_queued = Some(tokio::time::Instant::now());
            }
            st.queue.push_back(Pending { record, done });
        }
        self.shared.wake.notify_one();
        Box::pin(async move { rx.await.unwrap_or_else(|_| Err(writer_gone())) })
    }

    fn trim(&self, before: WalPosition) -> WalFuture<()> {
        trim::trim(&self.shared, before)
    }

    fn replay(&self) -> WalFuture<Vec<WalRecord>> {
        let st = self.shared.state.lock();
        ready(match &st.failed {
            Some(err) => Err(err.clone()),
            None => Ok(st.replay.clone()),
        })
    }

    fn max_record_size(&self) -> usize {
        self.shared.options.max_record_size
    }
}

impl Drop for ObjectWal {
    fn drop(&mut self) {
        self.shared.state.lock().closed = true;
        self.shared.wake.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_options_are_valid() {
        ObjectWalOptions::default().validate().unwrap();
    }

    #[test]
    fn zero_sizes_and_windows_out_of_range_are_invalid_input() {
        let cases = [
            ObjectWalOptions {
                batch_bytes: 0,
                ..Default::default()
            },
            ObjectWalOptions {
                max_record_size: 0,
                ..Default::default()
            },
            ObjectWalOptions {
                max_in_flight: 0,
                ..Default::default()
            },
            ObjectWalOptions {
                max_in_flight: 65,
                ..Default::default()
            },
            ObjectWalOptions {
                replay_parallelism: 0,
                ..Default::default()
            },
            ObjectWalOptions {
                max_record_size: 2 << 30,
                ..Default::default()
            },
        ];
        for options in cases {
            let err = options.validate().unwrap_err();
            assert_eq!(err.kind(), WalErrorKind::InvalidInput, "{options:?}");
        }
        let widest = ObjectWalOptions {
            max_in_flight: 64,
            ..Default::default()
        };
        widest.validate().unwrap();
    }

    #[test]
    fn a_position_names_its_slot() {
        assert_eq!(slot_of(WalPosition((7 << 32) | 64)), 7);
        assert_eq!(slot_of(WalPosition(0)), 0);
    }

    #[test]
    fn an_object_wal_is_usable_as_a_dyn_wal() {
        fn takes(_: Option<Arc<dyn Wal>>) {}
        takes(None::<Arc<ObjectWal>>.map(|w| w as Arc<dyn Wal>));
    }
}
