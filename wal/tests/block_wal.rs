//! The block WAL end to end: ordering, group commit, backpressure, failure latching,
//! takeover by node epoch, corruption reports, and a real file opened with O_DIRECT.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::executor::block_on;
use objstream_wal::block::{BlockDevice, Durability, MemDevice, HEADER_AREA};
use objstream_wal::{BlockWal, BlockWalOptions, Wal, WalErrorKind, WalPosition};

fn options() -> BlockWalOptions {
    BlockWalOptions {
        create_bytes: None,
        max_record_bytes: 16 << 10,
        max_batch_bytes: 32 << 10,
        durability: Durability::Fdatasync,
        max_writes_per_sec: 0,
    }
}

fn payload(i: u64, len: usize) -> Bytes {
    let mut v: Vec<u8> = (0..len).map(|j| (i as usize * 31 + j) as u8).collect();
    let tag = i.to_le_bytes();
    let n = tag.len().min(len);
    v[..n].copy_from_slice(&tag[..n]);
    Bytes::from(v)
}

fn open(dev: &MemDevice, epoch: u64) -> BlockWal {
    BlockWal::open_device(Arc::new(dev.clone()), 1, epoch, options()).unwrap()
}

fn payloads(wal: &BlockWal) -> Vec<Bytes> {
    block_on(wal.replay())
        .unwrap()
        .into_iter()
        .map(|r| r.payload)
        .collect()
}

#[test]
fn appends_resolve_in_call_order_and_survive_a_reopen() {
    let dev = MemDevice::new(1 << 20);
    let wal = open(&dev, 1);
    let futures: Vec<_> = (0..100)
        .map(|i| wal.append(payload(i, 100 + i as usize * 37)))
        .collect();
    let positions: Vec<WalPosition> = futures.into_iter().map(|f| block_on(f).unwrap()).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]));
    drop(wal);
    let wal = open(&dev, 1);
    let expected: Vec<_> = (0..100)
        .map(|i| payload(i, 100 + i as usize * 37))
        .collect();
    assert_eq!(payloads(&wal), expected);
    let replayed: Vec<_> = block_on(wal.replay())
        .unwrap()
        .iter()
        .map(|r| r.position)
        .collect();
    assert_eq!(replayed, positions);
}

#[test]
fn concurrent_appends_share_writes() {
    let dev = MemDevice::new(1 << 20);
    let wal = open(&dev, 1);
    let before = dev.writes();
    let futures: Vec<_> = (0..256).map(|i| wal.append(payload(i, 64))).collect();
    for f in futures {
        block_on(f).unwrap();
    }
    let writes = dev.writes() - before;
    assert!(writes < 256, "256 appends took {writes} writes");
}

#[test]
fn a_full_ring_makes_appends_wait_for_a_trim() {
    let dev = MemDevice::new(HEADER_AREA as usize + (256 << 10));
    let wal = open(&dev, 1);
    let mut last = WalPosition(0);
    // 8 KiB records take three blocks each: about 21 fill the ring.
    for i in 0..21 {
        last = block_on(wal.append(payload(i, 8 << 10))).unwrap();
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let blocked = wal.append(payload(99, 8 << 10));
    std::thread::spawn(move || tx.send(block_on(blocked)).unwrap());
    assert!(rx.recv_timeout(Duration::from_millis(200)).is_err());
    block_on(wal.trim(last)).unwrap();
    let position = rx.recv_timeout(Duration::from_secs(5)).unwrap().unwrap();
    assert!(position > last);
    drop(wal);
    let wal = open(&dev, 1);
    let replayed = payloads(&wal);
    assert_eq!(replayed.last(), Some(&payload(99, 8 << 10)));
}

#[test]
fn records_below_a_trim_are_gone_after_a_reopen() {
    let dev = MemDevice::new(1 << 20);
    let wal = open(&dev, 1);
    let mut positions = Vec::new();
    for i in 0..10 {
        positions.push(block_on(wal.append(payload(i, 5000))).unwrap());
    }
    block_on(wal.trim(positions[6])).unwrap();
    drop(wal);
    let wal = open(&dev, 1);
    let replayed: Vec<_> = block_on(wal.replay()).unwrap();
    // Trimming is lazy (a whole write at a time) but never loses a record at or above it.
    assert!(replayed.iter().all(|r| r.position >= positions[5]));
    let kept: Vec<_> = replayed
        .iter()
        .filter(|r| r.position >= positions[6])
        .collect();
    assert_eq!(kept.len(), 4);
    assert!(block_on(wal.trim(WalPosition(1 << 40))).is_err());
}

#[test]
fn a_failed_write_fails_that_append_and_every_later_call() {
    let dev = MemDevice::new(1 << 20);
    let wal = open(&dev, 1);
    block_on(wal.append(payload(0, 10))).unwrap();
    dev.crash_at_write(dev.writes(), 0);
    let err = block_on(wal.append(payload(1, 10))).unwrap_err();
    assert_eq!(err.kind(), WalErrorKind::Failed);
    assert_eq!(
        block_on(wal.append(payload(2, 10))).unwrap_err().kind(),
        WalErrorKind::Failed
    );
    assert_eq!(
        block_on(wal.trim(WalPosition(0))).unwrap_err().kind(),
        WalErrorKind::Failed
    );
    assert!(block_on(wal.replay()).is_err());
}

#[test]
fn a_higher_node_epoch_takes_over_and_fences_the_previous_writer() {
    let dev = MemDevice::new(1 << 20);
    let old = open(&dev, 1);
    block_on(old.append(payload(0, 100))).unwrap();
    let a = old.next_position();
    let new = BlockWal::open_device(Arc::new(dev.clone()), 2, 5, options()).unwrap();
    assert_eq!(payloads(&new), vec![payload(0, 100)]);
    // The old writer's next write is checked against the header before it is acknowledged:
    // it fails, and nothing succeeds again.
    let err = block_on(old.append(payload(1, 1))).unwrap_err();
    assert_eq!(err.kind(), WalErrorKind::Fenced);
    assert!(err.to_string().contains("node 2"), "{err}");
    assert_eq!(
        block_on(old.trim(a)).unwrap_err().kind(),
        WalErrorKind::Fenced
    );
    // The new owner keeps working.
    block_on(new.append(payload(2, 100))).unwrap();
    block_on(new.trim(a)).unwrap();
}

#[test]
fn an_opener_with_a_lower_node_epoch_is_refused() {
    let dev = MemDevice::new(1 << 20);
    drop(open(&dev, 7));
    let err = BlockWal::open_device(Arc::new(dev.clone()), 2, 6, options()).unwrap_err();
    assert_eq!(err.kind(), WalErrorKind::Fenced);
    // The same epoch reopens (a restart of the same node).
    drop(open(&dev, 7));
}

#[test]
fn damage_before_the_tail_is_reported_with_device_and_offset() {
    let dev = MemDevice::new(1 << 20);
    let wal = open(&dev, 1);
    block_on(wal.append(payload(0, 100))).unwrap();
    block_on(wal.append(payload(1, 100))).unwrap();
    drop(wal);
    dev.poke(HEADER_AREA as usize + 40, &[0xAA]);
    let err = BlockWal::open_device(Arc::new(dev.clone()), 1, 1, options()).unwrap_err();
    assert_eq!(err.kind(), WalErrorKind::Corruption);
    assert!(
        err.to_string().contains("memory device at offset 8192"),
        "{err}"
    );
}

#[test]
fn a_record_over_the_limit_is_invalid_input() {
    let dev = MemDevice::new(1 << 20);
    let wal = open(&dev, 1);
    let err = block_on(wal.append(Bytes::from(vec![0; (16 << 10) + 1]))).unwrap_err();
    assert_eq!(err.kind(), WalErrorKind::InvalidInput);
    assert_eq!(wal.max_record_size(), 16 << 10);
}

#[test]
fn a_ring_too_small_for_its_writes_is_refused() {
    let dev = MemDevice::new(HEADER_AREA as usize + (64 << 10));
    let err = BlockWal::open_device(Arc::new(dev), 1, 1, options()).unwrap_err();
    assert_eq!(err.kind(), WalErrorKind::InvalidInput);
}

/// A directory on a disk filesystem (tmpfs refuses O_DIRECT).
fn disk_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("block_wal");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn open_direct(path: &std::path::Path, epoch: u64, durability: Durability) -> Option<BlockWal> {
    let opts = BlockWalOptions {
        create_bytes: Some(1 << 20),
        durability,
        ..options()
    };
    match BlockWal::open(path, 1, epoch, opts) {
        Ok(wal) => Some(wal),
        Err(e) if e.to_string().contains("Invalid argument") => {
            println!(
                "skipped: the filesystem under {} refuses O_DIRECT: {e}",
                path.display()
            );
            None
        }
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn a_real_file_with_o_direct_round_trips_and_takes_over() {
    for durability in [Durability::Dsync, Durability::Fdatasync] {
        let path = disk_dir().join(format!("direct-{durability:?}.wal"));
        let _ = std::fs::remove_file(&path);
        let Some(wal) = open_direct(&path, 1, durability) else {
            return;
        };
        assert_eq!(wal.ring_bytes(), (1 << 20) - HEADER_AREA);
        let futures: Vec<_> = (0..50).map(|i| wal.append(payload(i, 3000))).collect();
        for f in futures {
            block_on(f).unwrap();
        }
        let new = open_direct(&path, 2, durability).unwrap();
        let expected: Vec<_> = (0..50).map(|i| payload(i, 3000)).collect();
        assert_eq!(payloads(&new), expected);
        assert_eq!(
            block_on(wal.trim(WalPosition(0))).map_err(|e| e.kind()),
            Ok(())
        );
        assert_eq!(
            block_on(wal.trim(wal.next_position())).unwrap_err().kind(),
            WalErrorKind::Fenced
        );
        drop(new);
        drop(wal);
        std::fs::remove_file(&path).unwrap();
    }
}

#[test]
fn the_device_trait_reports_the_file_size() {
    let path = disk_dir().join("size.wal");
    let _ = std::fs::remove_file(&path);
    match objstream_wal::block::DirectFile::open(&path, Some(256 << 10), false) {
        Ok(dev) => assert_eq!(dev.len(), 256 << 10),
        Err(e) => println!("skipped: O_DIRECT refused under {}: {e}", path.display()),
    }
    let _ = std::fs::remove_file(&path);
}
