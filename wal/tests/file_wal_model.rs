//! A model test of the file WAL: random appends, trims and reopens, with what `replay` returns
//! compared to a plain list of the acknowledged records.

mod common;

use bytes::Bytes;
use objstream_wal::frame::frame_len;
use objstream_wal::{FileWal, FileWalOptions, Wal, WalPosition, WalRecord};
use proptest::prelude::*;
use proptest::sample::Index;

use common::payload;

#[derive(Clone, Debug)]
enum Op {
    /// One append, awaited.
    Append { len: usize },
    /// Several appends called together, then awaited together.
    AppendMany { count: usize, len: usize },
    /// Trim at the position of a record picked by index (or at the end).
    Trim { at: Index },
    /// Drop the WAL and open it again.
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0usize..3000).prop_map(|len| Op::Append { len }),
        2 => (2usize..12, 0usize..900).prop_map(|(count, len)| Op::AppendMany { count, len }),
        2 => any::<Index>().prop_map(|at| Op::Trim { at }),
        2 => Just(Op::Reopen),
    ]
}

/// Tiny segments, so that the ops roll over often and trims delete files.
fn options() -> FileWalOptions {
    FileWalOptions {
        segment_bytes: 8 << 10,
        max_record_bytes: 4 << 10,
    }
}

#[derive(Default)]
struct Model {
    /// Every acknowledged record: position and payload.
    records: Vec<(WalPosition, Bytes)>,
    /// The highest trim point ever asked for.
    trim: WalPosition,
    /// The position the next append gets.
    next: u64,
}

impl Model {
    fn acknowledge(&mut self, position: WalPosition, record: Bytes) {
        assert_eq!(position.0, self.next, "positions are contiguous");
        self.next += frame_len(record.len()) as u64;
        self.records.push((position, record));
    }

    /// Checks what a fresh open replays.
    fn check_replay(&self, replayed: &[WalRecord]) {
        let expected: Vec<_> = self
            .records
            .iter()
            .filter(|(p, _)| *p >= self.trim)
            .collect();
        let kept: Vec<_> = replayed
            .iter()
            .filter(|r| r.position >= self.trim)
            .collect();
        assert_eq!(
            kept.len(),
            expected.len(),
            "records at or above the trim point"
        );
        for (r, (position, payload)) in kept.iter().zip(&expected) {
            assert_eq!(r.position, *position);
            assert_eq!(&r.payload, payload);
        }
        // Records below the trim point may come back from segments not yet deleted, but only
        // records that were acknowledged, as one contiguous run.
        for r in replayed.iter().filter(|r| r.position < self.trim) {
            assert!(
                self.records
                    .iter()
                    .any(|(p, b)| *p == r.position && *b == r.payload),
                "replayed a record that was never appended at {}",
                r.position
            );
        }
        for pair in replayed.windows(2) {
            assert_eq!(pair[0].end, pair[1].position);
        }
        if let Some(last) = replayed.last() {
            assert_eq!(last.end.0, self.next);
        }
    }
}

async fn run(ops: Vec<Op>) {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = FileWal::open(dir.path(), options()).unwrap();
    let mut model = Model::default();
    // What the current handle replayed at open, and the trims it has seen since.
    let mut opened_with: Vec<WalRecord> = Vec::new();
    let mut live_trim = WalPosition(0);
    let mut counter = 0u64;
    for op in ops {
        match op {
            Op::Append { len } => {
                let record = payload(counter, len);
                counter += 1;
                let position = wal.append(record.clone()).await.unwrap();
                model.acknowledge(position, record);
            }
            Op::AppendMany { count, len } => {
                let records: Vec<_> = (0..count as u64)
                    .map(|i| payload(counter + i, len + i as usize * 13))
                    .collect();
                counter += count as u64;
                let futures: Vec<_> = records.iter().map(|r| wal.append(r.clone())).collect();
                for (position, record) in futures::future::join_all(futures)
                    .await
                    .into_iter()
                    .zip(records)
                {
                    model.acknowledge(position.unwrap(), record);
                }
            }
            Op::Trim { at } => {
                let i = at.index(model.records.len() + 1);
                let before = model
                    .records
                    .get(i)
                    .map_or(WalPosition(model.next), |r| r.0);
                wal.trim(before).await.unwrap();
                model.trim = model.trim.max(before);
                live_trim = live_trim.max(before);
                let live = wal.replay().await.unwrap();
                let expected: Vec<_> = opened_with
                    .iter()
                    .filter(|r| r.position >= live_trim)
                    .cloned()
                    .collect();
                assert_eq!(
                    live, expected,
                    "the live handle replays what it opened with, less trims"
                );
            }
            Op::Reopen => {
                drop(wal);
                wal = FileWal::open(dir.path(), options()).unwrap();
                opened_with = wal.replay().await.unwrap();
                live_trim = WalPosition(0);
                model.check_replay(&opened_with);
            }
        }
    }
    drop(wal);
    let wal = FileWal::open(dir.path(), options()).unwrap();
    model.check_replay(&wal.replay().await.unwrap());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn replay_matches_a_model_across_appends_trims_and_reopens(
        ops in proptest::collection::vec(op(), 1..30)
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        runtime.block_on(run(ops));
    }
}
