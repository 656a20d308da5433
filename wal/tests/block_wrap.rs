//! Wrap-around: many laps over a 64 KiB ring with random trims and reopens, checked against a
//! model. Stale bytes of earlier laps never come back as records. The same runs on a loop
//! device (fewer cases; skipped, saying why, when none can be set up).

#[path = "common/loopdev.rs"]
mod loopdev;

use std::sync::Arc;

use bytes::Bytes;
use futures::executor::block_on;
use loopdev::LoopDevice;
use objstream_wal::block::{BlockDevice, Durability, MemDevice, HEADER_AREA};
use objstream_wal::{BlockWal, BlockWalOptions, Wal, WalPosition};
use proptest::prelude::*;

const RING: u64 = 64 << 10;

fn options() -> BlockWalOptions {
    BlockWalOptions {
        create_bytes: None,
        max_record_bytes: 4000,
        max_batch_bytes: 8 << 10,
        durability: Durability::Fdatasync,
        max_writes_per_sec: 0,
    }
}

fn open(dev: &Arc<dyn BlockDevice>) -> BlockWal {
    BlockWal::open_device(dev.clone(), 1, 1, options()).unwrap()
}

fn memory() -> Arc<dyn BlockDevice> {
    Arc::new(MemDevice::new((HEADER_AREA + RING) as usize))
}

#[derive(Clone, Debug)]
enum Op {
    Append(usize),
    /// Trim below the acknowledged record at this fraction of the live ones.
    Trim(f64),
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0usize..4000).prop_map(Op::Append),
        2 => (0.0f64..=1.0).prop_map(Op::Trim),
        1 => Just(Op::Reopen),
    ]
}

fn body(seq: u64, len: usize) -> Bytes {
    let mut v: Vec<u8> = (0..len)
        .map(|j| (seq as usize * 17 + j) as u8 | 1)
        .collect();
    let tag = seq.to_le_bytes();
    let n = tag.len().min(len);
    v[..n].copy_from_slice(&tag[..n]);
    Bytes::from(v)
}

/// Runs `ops` against a fresh ring on `dev`, checking every reopen against the model.
fn run_ops(dev: Arc<dyn BlockDevice>, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut wal = open(&dev);
    // Acknowledged records at or above the trim point, in order.
    let mut live: Vec<(WalPosition, Bytes)> = Vec::new();
    let mut trim = WalPosition(0);
    let mut seq = 0u64;
    for op in ops {
        match op {
            Op::Append(len) => {
                // Keep room: an append into a full ring waits for a trim.
                if wal.next_position().0 - wal.trim_position().0 > RING - (16 << 10) {
                    trim = wal.next_position();
                    block_on(wal.trim(trim)).unwrap();
                    live.clear();
                }
                seq += 1;
                let b = body(seq, len);
                let pos = block_on(wal.append(b.clone())).unwrap();
                prop_assert!(pos >= trim);
                live.push((pos, b));
            }
            Op::Trim(f) => {
                let i = ((live.len() as f64) * f) as usize;
                let to = live.get(i).map_or(wal.next_position(), |r| r.0);
                block_on(wal.trim(to)).unwrap();
                trim = trim.max(to);
                live.retain(|r| r.0 >= trim);
            }
            Op::Reopen => {
                drop(wal);
                wal = open(&dev);
                let replayed = block_on(wal.replay()).unwrap();
                // Lazy trimming may hand back records below the trim point, but never a
                // record that was not appended, and every live record in order.
                let kept: Vec<_> = replayed
                    .iter()
                    .filter(|r| r.position >= trim)
                    .map(|r| (r.position, r.payload.clone()))
                    .collect();
                prop_assert!(kept == live, "{} replayed, {} live", kept.len(), live.len());
                for r in &replayed {
                    let tag = r
                        .payload
                        .get(..8)
                        .map(|t| u64::from_le_bytes(t.try_into().unwrap()));
                    if let Some(s) = tag {
                        prop_assert!(s <= seq, "a record that was never appended came back");
                        prop_assert_eq!(&r.payload, &body(s, r.payload.len()));
                    }
                }
            }
        }
    }
    prop_assert!(wal.next_position().0 >= trim.0);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn laps_with_trims_and_reopens_replay_exactly_the_live_records(
        ops in proptest::collection::vec(op(), 50..300)
    ) {
        run_ops(memory(), ops)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4))]

    #[test]
    fn laps_with_trims_and_reopens_replay_exactly_the_live_records_on_a_loop_device(
        ops in proptest::collection::vec(op(), 50..300)
    ) {
        let Some(dev) = LoopDevice::or_skip("wrap", HEADER_AREA + RING) else {
            return Ok(());
        };
        run_ops(dev.open_zeroed(), ops)?;
    }
}

fn thousands_of_appends(dev: Arc<dyn BlockDevice>) {
    let mut wal = open(&dev);
    let mut last = Vec::new();
    for i in 0..3000u64 {
        if wal.next_position().0 - wal.trim_position().0 > RING - (16 << 10) {
            block_on(wal.trim(wal.next_position())).unwrap();
            last.clear();
        }
        let b = body(i, (i as usize * 97) % 3000);
        block_on(wal.append(b.clone())).unwrap();
        last.push(b);
        if i % 500 == 499 {
            drop(wal);
            wal = open(&dev);
            let got: Vec<_> = block_on(wal.replay())
                .unwrap()
                .into_iter()
                .map(|r| r.payload)
                .collect();
            assert!(
                got == last,
                "{} replayed, {} expected",
                got.len(),
                last.len()
            );
        }
    }
    assert!(
        wal.next_position().0 > 20 * RING,
        "only {} laps",
        wal.next_position().0 / RING
    );
}

#[test]
fn thousands_of_appends_go_round_a_small_ring_many_times() {
    thousands_of_appends(memory());
}

#[test]
fn thousands_of_appends_go_round_a_small_ring_many_times_on_a_loop_device() {
    if let Some(dev) = LoopDevice::or_skip("wrap-laps", HEADER_AREA + RING) {
        thousands_of_appends(dev.open_zeroed());
    }
}
