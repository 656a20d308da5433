//! A token bucket for the compactor's object-store bandwidth.
//!
//! Tokens are bytes; they refill at `rate` bytes per second up to a burst of one second's worth.
//! Every GET and PUT of compaction takes its size first. A request larger than the balance drives
//! it below zero and the next one waits until it is positive again, so a single large object
//! never waits forever and the average rate still holds. A rate of 0 turns the limiter off.
//! The limiter adds up the time its callers waited ([`Bandwidth::waited`]) for the compactor's
//! throttle metric.
//!
//! The store's read path has a limiter of its own that orders readers by priority; compaction is
//! one class of traffic, so it needs only this plain bucket. It measures time with tokio's clock
//! (pausable in tests); rate limiting is not part of the protocol, so that is not wall time the
//! protocol depends on.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    refilled: Instant,
}

/// The compactor's bandwidth limiter.
#[derive(Debug)]
pub struct Bandwidth {
    rate: f64,
    bucket: Mutex<Bucket>,
    /// Nanoseconds callers spent waiting, in total.
    waited_nanos: AtomicU64,
}

/// The longest single sleep; a waiter re-checks the balance after it.
const MAX_SLEEP: Duration = Duration::from_millis(100);

impl Bandwidth {
    /// A limiter of `bytes_per_sec` (0: unlimited).
    pub fn new(bytes_per_sec: u64) -> Self {
        let rate = bytes_per_sec as f64;
        Bandwidth {
            rate,
            bucket: Mutex::new(Bucket {
                tokens: rate,
                refilled: Instant::now(),
            }),
            waited_nanos: AtomicU64::new(0),
        }
    }

    /// Takes `bytes` tokens, first waiting until the balance is positive.
    pub async fn acquire(&self, bytes: u64) {
        if self.rate == 0.0 {
            return;
        }
        loop {
            let wait = {
                let mut b = self.bucket.lock();
                let now = Instant::now();
                let elapsed = now.duration_since(b.refilled).as_secs_f64();
                b.tokens = (b.tokens + elapsed * self.rate).min(self.rate);
                b.refilled = now;
                if b.tokens > 0.0 {
                    b.tokens -= bytes as f64;
                    return;
                }
                Duration::from_secs_f64((-b.tokens + 1.0) / self.rate).min(MAX_SLEEP)
            };
            let started = Instant::now();
            tokio::time::sleep(wait).await;
            let waited = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
            self.waited_nanos.fetch_add(waited, Ordering::Relaxed);
        }
    }

    /// The time callers of [`Bandwidth::acquire`] have spent waiting, in total (by tokio's
    /// clock).
    pub fn waited(&self) -> Duration {
        Duration::from_nanos(self.waited_nanos.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_average_rate_holds_over_many_requests() {
        let limiter = Bandwidth::new(1_000_000);
        let started = Instant::now();
        for _ in 0..50 {
            limiter.acquire(100_000).await;
        }
        // 5 MB at 1 MB/s with a 1 MB burst: about 4 seconds.
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(3_800), "{took:?}");
        assert!(took <= Duration::from_millis(4_500), "{took:?}");
        // Every wait is counted, and nothing but the waits.
        assert!(limiter.waited() >= Duration::from_millis(3_800));
        assert!(limiter.waited() <= took);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_larger_than_the_burst_still_goes_through() {
        let limiter = Bandwidth::new(1_000);
        limiter.acquire(1_000_000).await;
        let started = Instant::now();
        limiter.acquire(1).await;
        assert!(started.elapsed() >= Duration::from_secs(900));
    }

    #[tokio::test(start_paused = true)]
    async fn a_rate_of_zero_never_waits() {
        let limiter = Bandwidth::new(0);
        let started = Instant::now();
        limiter.acquire(u64::MAX).await;
        assert_eq!(started.elapsed(), Duration::ZERO);
        assert_eq!(limiter.waited(), Duration::ZERO);
    }
}
