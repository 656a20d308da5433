//! A writer with uploads in flight (the zombie) against an open of the same WAL (the sealer),
//! interleaved deterministically in every order of the steps that matter.
//!
//! The zombie has two acknowledged objects and four more in flight, each held at the store,
//! plus one queued append its full window has not issued yet. Each in-flight object lands in
//! one of four places relative to the sealer's protocol:
//!
//! 0. before the sealer's LIST;
//! 1. after the LIST was taken, before any fence is created;
//! 2. just before the sealer's fence create in that very slot (so the create meets it);
//! 3. after the sealer's open returned (so it meets a fence).
//!
//! All 4^4 assignments run. After each:
//!
//! - G1: every append the zombie acknowledged is in the sealer's replay, in order;
//! - G2: nothing else is: the replay is exactly what the zombie acknowledged, the zombie's other
//!   appends fail `Fenced`, its later appends fail `Fenced` forever, and yet another open
//!   replays the same records (plus what the sealer acknowledged since).

#[path = "common/gated_store.rs"]
mod gated_store;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use gated_store::*;
use object_store::memory::InMemory;
use objstream_wal::object::{slot_key, slot_of};
use objstream_wal::{Wal, WalErrorKind, WalPosition};

const IN_FLIGHT: usize = 4;
const WAIT: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Landing {
    BeforeList,
    AfterList,
    BeforeFence,
    AfterOpen,
}

const LANDINGS: [Landing; 4] = [
    Landing::BeforeList,
    Landing::AfterList,
    Landing::BeforeFence,
    Landing::AfterOpen,
];

/// Who opens the zombie's WAL: the owner restarting, or another node taking it over.
#[derive(Clone, Copy, Debug)]
enum Sealer {
    Restart,
    Takeover,
}

async fn run_case(plan: [Landing; IN_FLIGHT], sealer_kind: Sealer) {
    let inner: Arc<InMemory> = Arc::new(InMemory::new());
    let zstore = GatedStore::new(inner.clone());
    let sstore = GatedStore::new(inner.clone());
    let case = format!("{plan:?} {sealer_kind:?}");

    // The zombie: two acknowledged objects, four held in flight, one queued behind them.
    let zombie = open_at(
        &zstore,
        identity(1, 1),
        WalPosition(0),
        one_record_per_object(),
    )
    .await;
    let start = zombie.seal_report().writer_start_slot;
    let mut acked_before = Vec::new();
    for i in 0..2 {
        acked_before.push(zombie.append(payload(i, 40)).await.unwrap());
    }
    let gates: Vec<Gate> = (0..IN_FLIGHT as u64)
        .map(|j| zstore.hold_put(&slot_key(&prefix(), start + 2 + j)))
        .collect();
    let queued_gate = zstore.hold_put(&slot_key(&prefix(), start + 2 + IN_FLIGHT as u64));
    let mut pending = Vec::new();
    for i in 2..(3 + IN_FLIGHT as u64) {
        pending.push((i, zombie.append(payload(i, 40))));
    }
    for g in &gates {
        tokio::time::timeout(WAIT, g.reached())
            .await
            .expect("zombie PUT reached the store");
    }

    // Landings before the LIST.
    for (g, _) in gates
        .iter()
        .zip(plan)
        .filter(|(_, l)| *l == Landing::BeforeList)
    {
        g.land().await;
    }
    // Landings after the LIST.
    let after_list: Vec<Gate> = gates
        .iter()
        .zip(plan)
        .filter(|(_, l)| *l == Landing::AfterList)
        .map(|(g, _)| g.clone())
        .collect();
    sstore.after_list(Box::new(move || {
        async move {
            for g in after_list {
                g.land().await;
            }
        }
        .boxed()
    }));
    // Landings just before the sealer's fence in the same slot.
    let mut fired = Vec::new();
    for (j, (g, l)) in gates.iter().zip(plan).enumerate() {
        if l == Landing::BeforeFence {
            let g = g.clone();
            let flag = Arc::new(AtomicBool::new(false));
            fired.push(flag.clone());
            sstore.before_put(
                &slot_key(&prefix(), start + 2 + j as u64),
                Box::new(move || {
                    async move {
                        flag.store(true, Ordering::SeqCst);
                        g.land().await;
                    }
                    .boxed()
                }),
            );
        }
    }

    let sealer_identity = match sealer_kind {
        Sealer::Restart => identity(1, 2),
        Sealer::Takeover => identity(2, 2),
    };
    let sealer = tokio::time::timeout(
        WAIT,
        open_at(
            &sstore,
            sealer_identity,
            WalPosition(0),
            one_record_per_object(),
        ),
    )
    .await
    .unwrap_or_else(|_| panic!("{case}: the sealer's open hung"));
    assert!(
        fired.iter().all(|f| f.load(Ordering::SeqCst)),
        "{case}: a fence hook never ran"
    );
    let sealer_replay = replayed(&sealer).await;

    // Landings after the open; then the queued append may go.
    for (g, _) in gates
        .iter()
        .zip(plan)
        .filter(|(_, l)| *l == Landing::AfterOpen)
    {
        g.land().await;
    }
    queued_gate.release();

    let mut zombie_acked: Vec<Bytes> = (0..2).map(|i| payload(i, 40)).collect();
    let mut failed = false;
    for (i, f) in pending {
        let outcome = tokio::time::timeout(WAIT, f)
            .await
            .unwrap_or_else(|_| panic!("{case}: zombie append {i} hung"));
        match outcome {
            Ok(_) => {
                assert!(
                    !failed,
                    "{case}: append {i} acknowledged after an earlier one failed"
                );
                zombie_acked.push(payload(i, 40));
            }
            Err(e) => {
                assert_eq!(e.kind(), WalErrorKind::Fenced, "{case}: {e}");
                failed = true;
            }
        }
    }
    assert!(failed, "{case}: the zombie was never fenced");

    // G1 and G2: the replay is exactly what the zombie acknowledged.
    assert_eq!(sealer_replay, zombie_acked, "{case}");
    let report = sealer.seal_report();
    assert_eq!(
        report.first_fence,
        start + zombie_acked.len() as u64,
        "{case}: {report:?}"
    );

    // The zombie stays fenced.
    for i in 0..2 {
        let err = tokio::time::timeout(WAIT, zombie.append(payload(100 + i, 8)))
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(err.kind(), WalErrorKind::Fenced, "{case}");
    }
    assert_eq!(
        zombie.trim(WalPosition(0)).await.unwrap_err().kind(),
        WalErrorKind::Fenced
    );

    // The sealer writes on; another open sees both.
    let p = tokio::time::timeout(WAIT, sealer.append(payload(200, 8)))
        .await
        .unwrap()
        .unwrap();
    assert!(slot_of(p) > slot_of(*acked_before.last().unwrap()) + IN_FLIGHT as u64);
    let third = open_at(
        &GatedStore::new(inner),
        identity(3, 3),
        WalPosition(0),
        one_record_per_object(),
    )
    .await;
    let records = third.replay().await.unwrap();
    assert!(
        records.windows(2).all(|w| w[0].end <= w[1].position),
        "{case}"
    );
    let mut expected = zombie_acked;
    expected.push(payload(200, 8));
    assert_eq!(replayed(&third).await, expected, "{case}");
}

fn plans() -> Vec<[Landing; IN_FLIGHT]> {
    let mut out = Vec::new();
    for n in 0..LANDINGS.len().pow(IN_FLIGHT as u32) {
        let mut plan = [Landing::BeforeList; IN_FLIGHT];
        let mut rest = n;
        for slot in plan.iter_mut() {
            *slot = LANDINGS[rest % LANDINGS.len()];
            rest /= LANDINGS.len();
        }
        out.push(plan);
    }
    out
}

#[tokio::test]
async fn a_restart_seals_a_zombie_in_every_order_of_its_landings() {
    for plan in plans() {
        run_case(plan, Sealer::Restart).await;
    }
}

#[tokio::test]
async fn a_takeover_seals_a_zombie_in_every_order_of_its_landings() {
    for plan in plans() {
        run_case(plan, Sealer::Takeover).await;
    }
}

#[tokio::test]
async fn a_zombie_write_that_lands_above_the_first_fence_is_never_replayed() {
    // Slot start+3 lands before the LIST while start+2 is still in flight: the sealer's fence
    // takes start+2, so start+3 (never acknowledged) must not come back, now or later.
    let inner: Arc<InMemory> = Arc::new(InMemory::new());
    let zstore = GatedStore::new(inner.clone());
    let zombie = open_at(
        &zstore,
        identity(1, 1),
        WalPosition(0),
        one_record_per_object(),
    )
    .await;
    let start = zombie.seal_report().writer_start_slot;
    let held = zstore.hold_put(&slot_key(&prefix(), start));
    let first = zombie.append(payload(0, 10));
    let second = zombie.append(payload(1, 10));
    held.reached().await;
    eventually("slot start + 1 landed", || {
        let inner = inner.clone();
        async move { slots(&*inner).await.contains(&(start + 1)) }
    })
    .await;

    let sealer = open_at(
        &GatedStore::new(inner.clone()),
        identity(1, 2),
        WalPosition(0),
        one_record_per_object(),
    )
    .await;
    assert_eq!(sealer.seal_report().first_fence, start);
    assert!(replayed(&sealer).await.is_empty());
    held.land().await;
    assert_eq!(first.await.unwrap_err().kind(), WalErrorKind::Fenced);
    assert_eq!(second.await.unwrap_err().kind(), WalErrorKind::Fenced);
    sealer.append(payload(2, 10)).await.unwrap();
    drop(sealer);
    let third = open_at(
        &GatedStore::new(inner),
        identity(1, 3),
        WalPosition(0),
        one_record_per_object(),
    )
    .await;
    assert_eq!(replayed(&third).await, vec![payload(2, 10)]);
}

#[tokio::test]
async fn slots_below_the_fenced_one_that_land_later_are_still_acknowledged() {
    let inner: Arc<InMemory> = Arc::new(InMemory::new());
    let zstore = GatedStore::new(inner.clone());
    let zombie = open_at(
        &zstore,
        identity(1, 1),
        WalPosition(0),
        one_record_per_object(),
    )
    .await;
    let start = zombie.seal_report().writer_start_slot;
    let held = zstore.hold_put(&slot_key(&prefix(), start));
    let first = zombie.append(payload(0, 10));
    held.reached().await;
    // The sealer runs while slot `start` is in flight and lands it just before fencing it.
    let sstore = GatedStore::new(inner.clone());
    let h = held.clone();
    sstore.before_put(
        &slot_key(&prefix(), start),
        Box::new(move || async move { h.land().await }.boxed()),
    );
    let second_gate = zstore.hold_put(&slot_key(&prefix(), start + 1));
    let second = zombie.append(payload(1, 10));
    second_gate.reached().await;
    let sealer = open_at(
        &sstore,
        identity(2, 2),
        WalPosition(0),
        one_record_per_object(),
    )
    .await;
    second_gate.land().await;
    assert_eq!(slot_of(first.await.unwrap()), start);
    assert_eq!(second.await.unwrap_err().kind(), WalErrorKind::Fenced);
    assert_eq!(replayed(&sealer).await, vec![payload(0, 10)]);
}

async fn race(first: (u64, u64), second: (u64, u64)) {
    let inner: Arc<InMemory> = Arc::new(InMemory::new());
    let base = GatedStore::new(inner.clone());
    let old = open_at(
        &base,
        identity(1, 1),
        WalPosition(0),
        one_record_per_object(),
    )
    .await;
    old.append(payload(0, 16)).await.unwrap();
    let open = |(actor, epoch): (u64, u64)| {
        let store = GatedStore::new(inner.clone());
        async move {
            objstream_wal::ObjectWal::open(
                store.dyn_store(),
                prefix(),
                identity(actor, epoch),
                WalPosition(0),
                one_record_per_object(),
            )
            .await
        }
    };
    let (a, b) = tokio::join!(open(first), open(second));
    let mut acked: Vec<(WalPosition, Bytes)> = Vec::new();
    for (n, wal) in [a, b].into_iter().enumerate() {
        let Ok(wal) = wal else { continue };
        for i in 0..3 {
            let r = payload(10 * (n as u64 + 1) + i, 16);
            match wal.append(r.clone()).await {
                Ok(p) => acked.push((p, r)),
                Err(e) => assert_eq!(e.kind(), WalErrorKind::Fenced),
            }
        }
    }
    let last = open_at(
        &base,
        identity(3, 9),
        WalPosition(0),
        one_record_per_object(),
    )
    .await;
    acked.sort_by_key(|(p, _)| *p);
    let mut expected = vec![payload(0, 16)];
    expected.extend(acked.into_iter().map(|(_, r)| r));
    assert_eq!(replayed(&last).await, expected);
}

#[tokio::test]
async fn two_opens_racing_each_other_lose_nothing_either_acknowledged() {
    race((1, 2), (2, 3)).await;
    race((2, 3), (1, 2)).await;
}
