//! A token bucket that shares object-store read bandwidth by priority.
//!
//! Tokens are bytes; they refill at `rate` bytes per second up to a burst of one second's worth.
//! Each read takes its size in tokens before its GET:
//!
//! - [`ReadPriority::Tail`] (reads within one object of the newest data) and uploads never wait:
//!   they take their tokens even when that drives the balance below zero, and later reads of
//!   lower priority wait until it is positive again. Tail readers are never slowed by a scan.
//! - [`ReadPriority::CatchUp`] (reads of older data) waits until the balance is positive.
//! - [`ReadPriority::ReadAhead`] waits like catch-up reads and also until no catch-up read is
//!   waiting: prefetching yields to readers that are blocked right now.
//!
//! A rate of 0 turns the limiter off. Waiting is a sleep outside any lock, so a waiting reader
//! holds nothing that appends or other readers need.
//!
//! The reads waiting at any moment are counted (and published as the
//! `objstream_read_limiter_waiters` gauge). A waiting read whose future is dropped (its fetch
//! was cancelled) stops counting as waiting at once, so a cancelled catch-up read never holds
//! read-ahead back.

use std::time::Duration;

use ::metrics::Gauge;
use parking_lot::Mutex;
use tokio::time::Instant;

/// Who a read is for, highest priority first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum ReadPriority {
    /// Near the tail, or an upload: never waits.
    Tail,
    /// A reader of old data waiting for this read.
    CatchUp,
    /// A prefetch no reader waits for yet.
    ReadAhead,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    refilled: Instant,
    catch_up_waiting: usize,
    /// Reads of any priority waiting now.
    waiting: usize,
    waited: Duration,
}

/// The shared token bucket. See the module docs.
#[derive(Debug)]
pub(crate) struct Limiter {
    rate: f64,
    burst: f64,
    bucket: Mutex<Bucket>,
    waiters: Gauge,
}

/// One read's place among the waiters: counted while it lives, taken back when the read gets
/// its tokens or its future is dropped.
struct Waiting<'a> {
    limiter: &'a Limiter,
    catch_up: bool,
}

impl<'a> Waiting<'a> {
    fn start(limiter: &'a Limiter, b: &mut Bucket, catch_up: bool) -> Self {
        b.waiting += 1;
        if catch_up {
            b.catch_up_waiting += 1;
        }
        limiter.waiters.set(b.waiting as f64);
        Waiting { limiter, catch_up }
    }

    /// Takes the read off the waiters under a lock its caller holds.
    fn end(self, b: &mut Bucket) {
        self.leave(b);
        std::mem::forget(self);
    }

    fn leave(&self, b: &mut Bucket) {
        b.waiting = b.waiting.saturating_sub(1);
        if self.catch_up {
            b.catch_up_waiting = b.catch_up_waiting.saturating_sub(1);
        }
        self.limiter.waiters.set(b.waiting as f64);
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let mut b = self.limiter.bucket.lock();
        self.leave(&mut b);
    }
}

/// The longest single sleep; a waiter re-checks the balance after it.
const MAX_SLEEP: Duration = Duration::from_millis(50);

impl Limiter {
    /// A limiter of `bytes_per_sec` (0: unlimited) that reports how many reads wait on
    /// `waiters`.
    pub(crate) fn new(bytes_per_sec: u64, waiters: Gauge) -> Self {
        let rate = bytes_per_sec as f64;
        Limiter {
            rate,
            burst: rate,
            bucket: Mutex::new(Bucket {
                tokens: rate,
                refilled: Instant::now(),
                catch_up_waiting: 0,
                waiting: 0,
                waited: Duration::ZERO,
            }),
            waiters,
        }
    }

    /// Takes `bytes` tokens for a read of `priority`, waiting as the module docs say.
    pub(crate) async fn acquire(&self, bytes: u64, priority: ReadPriority) {
        if self.rate == 0.0 {
            return;
        }
        let started = Instant::now();
        let mut waiting: Option<Waiting<'_>> = None;
        loop {
            let wait = {
                let mut b = self.bucket.lock();
                self.refill(&mut b);
                let blocked_by_catch_up =
                    priority == ReadPriority::ReadAhead && b.catch_up_waiting > 0;
                if priority == ReadPriority::Tail || (b.tokens > 0.0 && !blocked_by_catch_up) {
                    b.tokens -= bytes as f64;
                    if let Some(w) = waiting.take() {
                        w.end(&mut b);
                    }
                    b.waited += started.elapsed();
                    return;
                }
                if waiting.is_none() {
                    let catch_up = priority == ReadPriority::CatchUp;
                    waiting = Some(Waiting::start(self, &mut b, catch_up));
                }
                let deficit = (-b.tokens).max(1.0);
                Duration::from_secs_f64(deficit / self.rate).min(MAX_SLEEP)
            };
            tokio::time::sleep(wait.max(Duration::from_millis(1))).await;
        }
    }

    /// Takes `bytes` tokens without waiting (uploads use this).
    pub(crate) fn charge(&self, bytes: u64) {
        if self.rate == 0.0 {
            return;
        }
        let mut b = self.bucket.lock();
        self.refill(&mut b);
        b.tokens -= bytes as f64;
    }

    /// Total time reads spent waiting for tokens.
    pub(crate) fn waited(&self) -> Duration {
        self.bucket.lock().waited
    }

    /// Reads waiting now.
    #[cfg(test)]
    fn waiting(&self) -> usize {
        self.bucket.lock().waiting
    }

    fn refill(&self, b: &mut Bucket) {
        let now = Instant::now();
        let elapsed = now.duration_since(b.refilled).as_secs_f64();
        b.refilled = now;
        b.tokens = (b.tokens + elapsed * self.rate).min(self.burst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn an_unlimited_limiter_never_waits() {
        let l = Limiter::new(0, Gauge::noop());
        let t = Instant::now();
        l.acquire(1 << 40, ReadPriority::CatchUp).await;
        assert_eq!(t.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn catch_up_reads_are_held_to_the_rate() {
        let l = Limiter::new(1 << 20, Gauge::noop());
        let t = Instant::now();
        for _ in 0..5 {
            l.acquire(1 << 20, ReadPriority::CatchUp).await;
        }
        // A read goes once the balance is positive and may take it negative: the burst pays for
        // the first, the second goes as soon as the balance leaves zero, and each later one
        // waits for the one before it to be paid off at 1 MiB per second.
        let secs = t.elapsed().as_secs_f64();
        assert!((2.9..3.3).contains(&secs), "took {secs} s");
        assert!(l.waited() >= Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn tail_reads_never_wait_and_push_catch_up_reads_back() {
        let l = Limiter::new(1 << 20, Gauge::noop());
        let t = Instant::now();
        for _ in 0..4 {
            l.acquire(1 << 20, ReadPriority::Tail).await;
        }
        assert_eq!(t.elapsed(), Duration::ZERO, "tail reads do not wait");
        l.acquire(1, ReadPriority::CatchUp).await;
        let secs = t.elapsed().as_secs_f64();
        assert!(
            secs >= 3.0,
            "the catch-up read waited for the debt: {secs} s"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn read_ahead_yields_to_a_waiting_catch_up_read() {
        let l = std::sync::Arc::new(Limiter::new(1 << 20, Gauge::noop()));
        l.charge(2 << 20);
        let order = std::sync::Arc::new(Mutex::new(Vec::new()));
        let (l2, o2) = (l.clone(), order.clone());
        let ahead = tokio::spawn(async move {
            // Starts waiting after the catch-up read below.
            tokio::time::sleep(Duration::from_millis(1)).await;
            l2.acquire(1 << 20, ReadPriority::ReadAhead).await;
            o2.lock().push("read-ahead");
        });
        l.acquire(1 << 20, ReadPriority::CatchUp).await;
        order.lock().push("catch-up");
        ahead.await.unwrap();
        assert_eq!(*order.lock(), vec!["catch-up", "read-ahead"]);
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_reads_are_counted_until_they_get_their_tokens() {
        let l = std::sync::Arc::new(Limiter::new(1 << 20, Gauge::noop()));
        l.charge(2 << 20);
        let (a, b) = (l.clone(), l.clone());
        let first = tokio::spawn(async move { a.acquire(1, ReadPriority::CatchUp).await });
        let second = tokio::spawn(async move { b.acquire(1, ReadPriority::ReadAhead).await });
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(l.waiting(), 2);
        first.await.unwrap();
        second.await.unwrap();
        assert_eq!(l.waiting(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_catch_up_read_does_not_hold_read_ahead_back() {
        let l = Limiter::new(1 << 20, Gauge::noop());
        l.charge(2 << 20);
        let cancelled = tokio::time::timeout(
            Duration::from_millis(10),
            l.acquire(1, ReadPriority::CatchUp),
        )
        .await;
        assert!(cancelled.is_err(), "the catch-up read was still waiting");
        assert_eq!(l.waiting(), 0);
        let t = Instant::now();
        l.acquire(1, ReadPriority::ReadAhead).await;
        // A debt of 1 MiB (2 MiB charged against a full bucket of 1 MiB) at 1 MiB/s, less the
        // 10 ms already waited: no catch-up read is left to yield to, so read-ahead goes once
        // the balance is positive.
        let secs = t.elapsed().as_secs_f64();
        assert!((0.9..1.1).contains(&secs), "took {secs} s");
    }
}
