//! The write budget: at most so many writes a second reach the device.
//!
//! A volume serves a bounded number of I/O operations a second (an EBS gp3 volume 3 000 at
//! baseline; a virtual disk's host may pause the whole machine when its I/O emulation uses
//! more CPU than the machine is allowed). Past that bound, issuing a write for every few
//! appends does not make them durable sooner: the device queues or stalls them. With a
//! budget, a write that would exceed it waits until the budget allows it, and the appends
//! arriving meanwhile join it: the WAL answers more appends a second with fewer, larger
//! writes.
//!
//! The budget is a token bucket kept as one instant (the generic cell rate algorithm):
//! `due` is when the bucket would be full again, so a write at `now` fits when
//! `due - now` is at most the burst's worth of intervals. A write as large as the batch limit
//! never waits (waiting would not make it larger), but it spends from the budget too.

use std::time::{Duration, Instant};

/// Writes a budget lets through back to back after an idle spell.
pub(super) const BURST: u32 = 4;

/// A token bucket of writes.
#[derive(Debug)]
pub(super) struct WriteBudget {
    /// The time one write spends; zero when there is no budget.
    interval: Duration,
    /// `interval` times ([`BURST`] - 1): how far ahead of now `due` may run.
    tolerance: Duration,
    /// When the bucket is full again; `None` before the first write.
    due: Option<Instant>,
}

impl WriteBudget {
    /// A budget of `per_sec` writes a second; 0 for none.
    pub fn new(per_sec: u32) -> WriteBudget {
        let interval = if per_sec == 0 {
            Duration::ZERO
        } else {
            Duration::from_secs(1) / per_sec
        };
        WriteBudget {
            interval,
            tolerance: interval * (BURST - 1),
            due: None,
        }
    }

    /// Whether there is a budget at all.
    pub fn limited(&self) -> bool {
        !self.interval.is_zero()
    }

    /// When a write may go, if not at `now`.
    pub fn wait_until(&self, now: Instant) -> Option<Instant> {
        let due = self.due?;
        let at = due.checked_sub(self.tolerance).unwrap_or(now);
        (at > now).then_some(at)
    }

    /// Spends one write at `now`.
    pub fn spend(&mut self, now: Instant) {
        if self.limited() {
            self.due = Some(self.due.map_or(now, |due| due.max(now)) + self.interval);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_budget_never_waits() {
        let mut budget = WriteBudget::new(0);
        let now = Instant::now();
        for _ in 0..1000 {
            assert_eq!(budget.wait_until(now), None);
            budget.spend(now);
        }
        assert!(!budget.limited());
    }

    #[test]
    fn a_burst_goes_at_once_then_writes_are_spaced_by_the_interval() {
        let mut budget = WriteBudget::new(1000);
        let start = Instant::now();
        for _ in 0..BURST {
            assert_eq!(budget.wait_until(start), None);
            budget.spend(start);
        }
        let next = budget.wait_until(start).expect("the burst is spent");
        assert_eq!(next - start, Duration::from_millis(1));
        budget.spend(next);
        let after = budget.wait_until(next).expect("spent again");
        assert_eq!(after - next, Duration::from_millis(1));
    }

    #[test]
    fn an_idle_spell_refills_the_burst_and_no_more() {
        let mut budget = WriteBudget::new(1000);
        let start = Instant::now();
        budget.spend(start);
        let later = start + Duration::from_secs(10);
        let mut sent = 0;
        while budget.wait_until(later).is_none() {
            budget.spend(later);
            sent += 1;
        }
        assert_eq!(sent, BURST);
    }

    #[test]
    fn over_any_span_writes_stay_within_the_rate_plus_the_burst() {
        let mut budget = WriteBudget::new(2000);
        let start = Instant::now();
        let mut now = start;
        let mut sent = 0u32;
        // A writer that always wants to write: it goes whenever the budget lets it.
        while now - start < Duration::from_secs(1) {
            match budget.wait_until(now) {
                None => {
                    budget.spend(now);
                    sent += 1;
                }
                Some(at) => now = at,
            }
        }
        assert!(sent <= 2000 + BURST, "{sent} writes in a second");
        assert!(sent >= 2000, "{sent} writes in a second");
    }
}
