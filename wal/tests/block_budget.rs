//! The block WAL's write budget (`max_writes_per_sec`): writes reaching the device stay within
//! it, appends arriving faster share the writes, a full batch does not wait, and a budget
//! changes nothing for what is durable.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::executor::block_on;
use objstream_wal::block::{BlockDevice, Durability, MemDevice, HEADER_AREA};
use objstream_wal::{BlockWal, BlockWalOptions, Wal};

/// A memory device that counts the writes of record data (those past the header slots).
#[derive(Debug)]
struct CountingDevice {
    inner: MemDevice,
    data_writes: AtomicU64,
}

impl BlockDevice for CountingDevice {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.inner.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        if offset >= HEADER_AREA {
            self.data_writes.fetch_add(1, Ordering::Relaxed);
        }
        self.inner.write_at(buf, offset)
    }
    fn sync(&self) -> io::Result<()> {
        self.inner.sync()
    }
    fn len(&self) -> u64 {
        self.inner.len()
    }
    fn name(&self) -> String {
        "counting".into()
    }
}

fn device() -> Arc<CountingDevice> {
    Arc::new(CountingDevice {
        inner: MemDevice::new(8 << 20),
        data_writes: AtomicU64::new(0),
    })
}

fn options(budget: u32) -> BlockWalOptions {
    BlockWalOptions {
        max_record_bytes: 16 << 10,
        max_batch_bytes: 32 << 10,
        durability: Durability::Fdatasync,
        max_writes_per_sec: budget,
        ..BlockWalOptions::default()
    }
}

fn open(dev: &Arc<CountingDevice>, budget: u32) -> BlockWal {
    let dev: Arc<dyn BlockDevice> = dev.clone();
    BlockWal::open_device(dev, 1, 1, options(budget)).unwrap()
}

/// Eight threads appending 100-byte records one at a time each for `span`, trimming as the
/// ring fills: the appends acknowledged and the data writes the device saw.
fn closed_loop(dev: &Arc<CountingDevice>, wal: Arc<BlockWal>, span: Duration) -> (u64, u64) {
    let before = dev.data_writes.load(Ordering::Relaxed);
    let start = Instant::now();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let wal = wal.clone();
            std::thread::spawn(move || {
                let mut acked = 0u64;
                while start.elapsed() < span {
                    block_on(wal.append(Bytes::from(vec![t as u8; 100]))).unwrap();
                    acked += 1;
                    if t == 0 && wal.next_position().0 - wal.trim_position().0 > 1 << 20 {
                        block_on(wal.trim(wal.next_position())).unwrap();
                    }
                }
                acked
            })
        })
        .collect();
    let acked = threads.into_iter().map(|t| t.join().unwrap()).sum();
    (acked, dev.data_writes.load(Ordering::Relaxed) - before)
}

#[test]
fn writes_stay_within_the_budget_and_appends_share_them() {
    let span = Duration::from_millis(600);
    // Without a budget a memory device takes a write for every few appends.
    let free = device();
    let (free_acked, free_writes) = closed_loop(&free, Arc::new(open(&free, 0)), span);
    // With 100 writes a second: at most the burst plus one write per 10 ms of the run.
    let dev = device();
    let wal = Arc::new(open(&dev, 100));
    let start = Instant::now();
    let (acked, writes) = closed_loop(&dev, wal.clone(), span);
    let elapsed = start.elapsed().as_secs_f64();
    let allowed = 4 + (elapsed * 100.0).ceil() as u64;
    assert!(
        writes <= allowed,
        "{writes} data writes in {elapsed:.3} s with a budget of 100 a second (at most {allowed})"
    );
    assert!(
        free_writes > 2 * allowed,
        "without a budget the same load made only {free_writes} writes ({free_acked} appends): \
         the test would not tell a budget from none"
    );
    // Every append waiting when a write goes joins it: eight appenders, so most writes carry
    // several records.
    assert!(
        acked >= 4 * writes,
        "{acked} appends in {writes} writes: appends did not share the budgeted writes"
    );
    // The budget changes nothing for what is durable: a reopen replays every untrimmed
    // append, in order of position.
    let next = wal.next_position();
    drop(wal);
    let reopened = open(&dev, 0);
    let records = block_on(reopened.replay()).unwrap();
    assert!(records.windows(2).all(|w| w[0].position < w[1].position));
    assert!(records.last().is_some_and(|r| r.position < next));
}

#[test]
fn after_the_burst_a_small_write_waits_for_the_budget_and_a_full_batch_does_not() {
    let dev = device();
    // One write a second: the fifth write in a row waits about a second.
    let wal = open(&dev, 1);
    // The open itself may zero the ring past the log's end.
    let opened = dev.data_writes.load(Ordering::Relaxed);
    let start = Instant::now();
    for i in 0..4u8 {
        block_on(wal.append(Bytes::from(vec![i; 100]))).unwrap();
    }
    assert_eq!(dev.data_writes.load(Ordering::Relaxed) - opened, 4);

    // Four 10 KiB records: the first three fill a 32 KiB batch, which cannot grow by waiting,
    // so that write goes at once; the fourth is left alone in a small write, which waits for
    // the budget (the bucket refills one write a second from the burst on).
    let appends: Vec<_> = (0..4u8)
        .map(|i| wal.append(Bytes::from(vec![i; 10 << 10])))
        .collect();
    let mut appends = appends.into_iter();
    let full = Instant::now();
    for a in appends.by_ref().take(3) {
        block_on(a).unwrap();
    }
    let full = full.elapsed();
    assert!(
        full < Duration::from_millis(500),
        "a full batch waited {full:?} for a budget of one write a second"
    );
    for a in appends {
        block_on(a).unwrap();
    }
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(900),
        "a small write after the burst went after {waited:?}, under the budget's second"
    );
    assert_eq!(dev.data_writes.load(Ordering::Relaxed) - opened, 6);
}
