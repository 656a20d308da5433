//! Torn writes: a crash cuts the write holding a multi-block record at every sector boundary;
//! recovery returns exactly the acknowledged records and the ring keeps working. Each scenario
//! runs in memory and on a loop device (skipped, saying why, when none can be set up), with
//! the crash made by [`CrashingDevice`].

#[path = "common/loopdev.rs"]
mod loopdev;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use futures::executor::block_on;
use loopdev::LoopDevice;
use objstream_wal::block::{BlockDevice, CrashingDevice, Durability, MemDevice, SECTOR};
use objstream_wal::{BlockWal, BlockWalOptions, Wal};

/// Bytes of every scenario's device.
const DEVICE_BYTES: usize = 512 << 10;

/// Where a scenario runs.
enum Disk {
    Memory,
    Loop(LoopDevice),
}

impl Disk {
    /// A zeroed device.
    fn fresh(&self) -> Arc<dyn BlockDevice> {
        match self {
            Disk::Memory => Arc::new(MemDevice::new(DEVICE_BYTES)),
            Disk::Loop(dev) => dev.open_zeroed(),
        }
    }
}

/// Memory, then a loop device when one can be set up.
fn disks() -> Vec<Disk> {
    let mut disks = vec![Disk::Memory];
    disks.extend(LoopDevice::or_skip("torn", DEVICE_BYTES as u64).map(Disk::Loop));
    disks
}

fn options() -> BlockWalOptions {
    BlockWalOptions {
        create_bytes: None,
        max_record_bytes: 32 << 10,
        max_batch_bytes: 32 << 10,
        durability: Durability::Fdatasync,
        max_writes_per_sec: 0,
    }
}

fn payload(i: u64, len: usize) -> Bytes {
    Bytes::from(
        (0..len)
            .map(|j| (i as usize * 131 + j * 7 + 1) as u8)
            .collect::<Vec<_>>(),
    )
}

fn open(dev: &Arc<dyn BlockDevice>) -> BlockWal {
    BlockWal::open_device(dev.clone(), 1, 1, options()).unwrap()
}

fn open_crashing(dev: &Arc<CrashingDevice>) -> BlockWal {
    BlockWal::open_device(dev.clone(), 1, 1, options()).unwrap()
}

fn replayed(wal: &BlockWal) -> Vec<Bytes> {
    block_on(wal.replay())
        .unwrap()
        .into_iter()
        .map(|r| r.payload)
        .collect()
}

/// Runs the scenario with the write of the big record cut after `keep` bytes.
fn crash_with(disk: &Disk, keep: usize, big_len: usize, lap_offset: bool) {
    let dev = Arc::new(CrashingDevice::new(disk.fresh()));
    let wal = open_crashing(&dev);
    let mut acked = Vec::new();
    let count = if lap_offset { 120 } else { 3 };
    for i in 0..count {
        let p = payload(i, 1000 + (i % 20) as usize * 300);
        block_on(wal.append(p.clone())).unwrap();
        acked.push(p);
        if lap_offset {
            // Keep the ring trimmed so that the cut write lands on a later lap.
            block_on(wal.trim(wal.next_position())).unwrap();
            acked.clear();
        }
    }
    if lap_offset {
        assert!(wal.next_position().0 > 512 << 10, "the ring has not lapped");
    }
    dev.crash_at_write(dev.writes(), keep);
    assert!(block_on(wal.append(payload(99, big_len))).is_err());
    drop(wal);

    let dev = dev.inner();
    let wal = open(&dev);
    let got = replayed(&wal);
    // A cut after the whole frame leaves a complete (unacknowledged) record, which survives.
    if keep >= objstream_wal::frame::frame_len(big_len) {
        acked.push(payload(99, big_len));
    }
    assert!(
        got == acked,
        "cut after {keep} bytes: {} records replayed, {} expected",
        got.len(),
        acked.len()
    );

    // The ring keeps working: append, reopen, replay.
    block_on(wal.append(payload(100, 5000))).unwrap();
    block_on(wal.append(payload(101, 20))).unwrap();
    drop(wal);
    let wal = open(&dev);
    let mut expected = acked.clone();
    expected.extend([payload(100, 5000), payload(101, 20)]);
    assert!(
        replayed(&wal) == expected,
        "after the cut at {keep} bytes the ring lost or revived records"
    );
}

#[test]
fn a_write_cut_at_every_sector_boundary_keeps_exactly_the_complete_records() {
    let big: usize = 5 * 4096 + 100;
    let write_len = (big + 24).div_ceil(4096) * 4096;
    for disk in disks() {
        for keep in (0..write_len).step_by(SECTOR) {
            crash_with(&disk, keep, big, false);
        }
    }
}

#[test]
fn a_torn_write_on_a_later_lap_never_revives_older_bytes() {
    let big: usize = 3 * 4096 + 8;
    let write_len = (big + 24).div_ceil(4096) * 4096;
    for disk in disks() {
        for keep in (0..write_len).step_by(SECTOR) {
            crash_with(&disk, keep, big, true);
        }
    }
}

#[test]
fn a_write_that_completed_before_the_crash_may_survive_unacknowledged() {
    // The whole write reached the device but its sync failed: the record may be replayed.
    for disk in disks() {
        let dev = Arc::new(CrashingDevice::new(disk.fresh()));
        let wal = open_crashing(&dev);
        block_on(wal.append(payload(0, 10))).unwrap();
        dev.crash_at_write(dev.writes(), 1 << 20);
        assert!(block_on(wal.append(payload(1, 10))).is_err());
        drop(wal);
        let got = replayed(&open(&dev.inner()));
        assert_eq!(got[0], payload(0, 10));
        assert!(got.len() <= 2);
    }
}

/// A memory device whose write number `tear` (none until set) keeps only its first block and
/// fails, after a pause during which the writes issued behind it land.
#[derive(Debug)]
struct TearOne {
    inner: MemDevice,
    writes: AtomicU64,
    tear: AtomicU64,
    landed_after: AtomicU64,
}

impl BlockDevice for TearOne {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.inner.read_at(buf, offset)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        let n = self.writes.fetch_add(1, Ordering::SeqCst);
        let tear = self.tear.load(Ordering::SeqCst);
        if n == tear {
            std::thread::sleep(std::time::Duration::from_millis(100));
            self.inner.write_at(&buf[..4096], offset)?;
            return Err(std::io::Error::other("torn"));
        }
        if n > tear {
            self.landed_after.fetch_add(1, Ordering::SeqCst);
        }
        self.inner.write_at(buf, offset)
    }

    fn sync(&self) -> std::io::Result<()> {
        self.inner.sync()
    }

    fn len(&self) -> u64 {
        self.inner.len()
    }

    fn name(&self) -> String {
        self.inner.name()
    }
}

#[test]
fn a_torn_write_whose_successors_landed_is_a_torn_tail_and_nothing_after_it_comes_back() {
    let mem = MemDevice::new(DEVICE_BYTES);
    let dev = Arc::new(TearOne {
        inner: mem.clone(),
        writes: AtomicU64::new(0),
        tear: AtomicU64::new(u64::MAX),
        landed_after: AtomicU64::new(0),
    });
    let wal = BlockWal::open_device(dev.clone(), 1, 1, options()).unwrap();
    let acked: Vec<Bytes> = (0..5).map(|i| payload(i, 700)).collect();
    for p in &acked {
        block_on(wal.append(p.clone())).unwrap();
    }
    // The next write (holding a 12 KiB record) tears; the writes issued while it hangs land.
    dev.tear
        .store(dev.writes.load(Ordering::SeqCst), Ordering::SeqCst);
    let futures: Vec<_> = (10..200)
        .map(|i| wal.append(payload(i, 12 << 10)))
        .collect();
    for f in futures {
        assert!(
            block_on(f).is_err(),
            "an append after the torn write succeeded"
        );
    }
    assert!(
        dev.landed_after.load(Ordering::SeqCst) > 0,
        "no write landed behind the torn one"
    );
    drop(wal);
    let reopened: Arc<dyn BlockDevice> = Arc::new(mem.clone());
    let wal = open(&reopened);
    assert!(
        replayed(&wal) == acked,
        "the replay is not the acknowledged records"
    );
    block_on(wal.append(payload(300, 100))).unwrap();
    drop(wal);
    let mut expected = acked.clone();
    expected.push(payload(300, 100));
    assert!(
        replayed(&open(&reopened)) == expected,
        "records behind the torn write came back"
    );
}
