//! A model test of the object WAL: random appends, trims, reopens and takeovers of a WAL whose
//! previous writer still has appends pending, checked against a plain list of the records that
//! were acknowledged and not trimmed.
//!
//! After every open the replay must equal the model exactly (same payloads, same positions),
//! positions must be dense (each record ends where the next in its object starts; the last of
//! an object ends at the next slot), and a writer that was sealed must fail every later append
//! with `Fenced`.

#[path = "common/gated_store.rs"]
mod gated_store;

use bytes::Bytes;
use gated_store::*;
use objstream_wal::object::slot_of;
use objstream_wal::{ObjectWal, Wal, WalErrorKind, WalPosition, WalRecord};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Step {
    /// Appends records of these sizes, all issued before any is awaited.
    Append(Vec<usize>),
    /// Trims up to the position of one of the model's records.
    Trim(prop::sample::Index),
    /// Trims everything acknowledged.
    TrimAll,
    /// Drops the WAL and opens it again at the next epoch.
    Reopen,
    /// Leaves the WAL running with appends of these sizes pending, and opens it elsewhere.
    Takeover(Vec<usize>),
}

fn sizes() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(prop_oneof![0usize..200, 200usize..3000, Just(5000)], 1..12)
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => sizes().prop_map(Step::Append),
        1 => any::<prop::sample::Index>().prop_map(Step::Trim),
        1 => Just(Step::TrimAll),
        1 => Just(Step::Reopen),
        1 => sizes().prop_map(Step::Takeover),
    ]
}

struct Harness {
    store: GatedStore,
    wal: ObjectWal,
    epoch: u64,
    /// The floor the caller recorded before its last trim.
    floor: WalPosition,
    /// Acknowledged, untrimmed records.
    model: Vec<(WalPosition, Bytes)>,
    next_id: u64,
}

impl Harness {
    fn record(&mut self, len: usize) -> Bytes {
        self.next_id += 1;
        payload(self.next_id, len)
    }

    async fn open(&mut self, actor: u64) -> ObjectWal {
        self.epoch += 1;
        ObjectWal::open(
            self.store.dyn_store(),
            prefix(),
            identity(actor, self.epoch),
            self.floor,
            options(),
        )
        .await
        .unwrap()
    }

    async fn check_replay(&self) {
        let records = self.wal.replay().await.unwrap();
        let got: Vec<(WalPosition, Bytes)> = records
            .iter()
            .map(|r| (r.position, r.payload.clone()))
            .collect();
        assert_eq!(got, self.model);
        check_dense(&records);
    }

    async fn run(&mut self, step: Step) {
        match step {
            Step::Append(sizes) => {
                let futures: Vec<_> = sizes
                    .into_iter()
                    .map(|len| {
                        let r = self.record(len);
                        (r.clone(), self.wal.append(r))
                    })
                    .collect();
                for (r, f) in futures {
                    let p = f.await.unwrap();
                    if let Some((last, _)) = self.model.last() {
                        assert!(p > *last);
                    }
                    self.model.push((p, r));
                }
            }
            Step::Trim(index) => {
                if self.model.is_empty() {
                    return;
                }
                let before = self.model[index.index(self.model.len())].0;
                self.floor = self.floor.max(before);
                self.wal.trim(before).await.unwrap();
                self.model.retain(|(p, _)| *p >= before);
            }
            Step::TrimAll => {
                let before = self.wal.acked_end();
                self.floor = before;
                self.wal.trim(before).await.unwrap();
                self.model.clear();
            }
            Step::Reopen => {
                let fresh = self.open(1).await;
                self.wal = fresh;
                self.check_replay().await;
            }
            Step::Takeover(sizes) => {
                let pending: Vec<_> = sizes
                    .into_iter()
                    .map(|len| {
                        let r = self.record(len);
                        (r.clone(), self.wal.append(r))
                    })
                    .collect();
                tokio::task::yield_now().await;
                let actor = 1 + self.epoch % 3;
                let fresh = self.open(actor).await;
                let zombie = std::mem::replace(&mut self.wal, fresh);
                let mut fenced = false;
                for (r, f) in pending {
                    match f.await {
                        Ok(p) => {
                            assert!(!fenced, "acknowledged after a fenced append");
                            self.model.push((p, r));
                        }
                        Err(e) => {
                            assert_eq!(e.kind(), WalErrorKind::Fenced, "{e}");
                            fenced = true;
                        }
                    }
                }
                self.check_replay().await;
                let err = zombie
                    .append(Bytes::from_static(b"late"))
                    .await
                    .unwrap_err();
                assert_eq!(err.kind(), WalErrorKind::Fenced);
            }
        }
    }
}

fn check_dense(records: &[WalRecord]) {
    for pair in records.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        assert!(a.position < a.end && a.end <= b.position);
        if slot_of(a.position) == slot_of(b.position) {
            assert_eq!(a.end, b.position);
        } else {
            assert_eq!(a.end, WalPosition((slot_of(a.position) + 1) << 32));
        }
    }
    if let Some(last) = records.last() {
        assert_eq!(last.end, WalPosition((slot_of(last.position) + 1) << 32));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn the_wal_replays_exactly_what_was_acknowledged_and_not_trimmed(
        steps in prop::collection::vec(step(), 1..16),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let store = memory();
            let wal = ObjectWal::open(
                store.dyn_store(),
                prefix(),
                identity(1, 1),
                WalPosition(0),
                options(),
            )
            .await
            .unwrap();
            let mut h = Harness {
                store,
                wal,
                epoch: 1,
                floor: WalPosition(0),
                model: Vec::new(),
                next_id: 0,
            };
            for step in steps {
                h.run(step).await;
            }
            let fresh = h.open(1).await;
            h.wal = fresh;
            h.check_replay().await;
        });
    }
}
