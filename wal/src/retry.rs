//! Retrying object store calls: which errors are transient, and a capped exponential backoff.
//!
//! Throttling (`503 Slow Down`), timeouts, connection resets and other transport failures reach
//! callers as `object_store::Error::Generic`; every error that says something about the object
//! or the request (not found, already exists, precondition, bad path, no permission) is final.
//!
//! Delays grow exponentially from [`RetryPolicy::initial_delay`] up to
//! [`RetryPolicy::max_delay`], each between half and all of its step. The jitter comes from a
//! small generator seeded by the caller (a slot, an object id), never from ambient randomness, so
//! a test replays the same delays. Shared by every crate of the workspace that talks to an
//! object store.

use std::time::Duration;

/// How store calls are retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The first delay. Default 10 ms.
    pub initial_delay: Duration,
    /// The cap on any delay. Default 2 s.
    pub max_delay: Duration,
    /// Attempts before a transient error is final (at least 1). Default 60: about two minutes
    /// of a store that keeps failing.
    pub max_attempts: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            initial_delay: Duration::from_millis(10),
            max_delay: Duration::from_secs(2),
            max_attempts: 60,
        }
    }
}

/// Capped exponential backoff with seeded jitter.
pub struct Backoff {
    policy: RetryPolicy,
    attempt: u32,
    rng: u64,
}

impl Backoff {
    pub fn new(policy: RetryPolicy, seed: u64) -> Backoff {
        Backoff {
            policy,
            attempt: 0,
            rng: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
        }
    }

    /// Delays handed out so far.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// The policy this backoff follows.
    pub fn policy(&self) -> RetryPolicy {
        self.policy
    }

    /// The next delay, or `None` once the attempts are used up.
    pub fn next_delay(&mut self) -> Option<Duration> {
        self.attempt += 1;
        if self.attempt >= self.policy.max_attempts {
            return None;
        }
        let base = self
            .policy
            .initial_delay
            .saturating_mul(1u32 << (self.attempt - 1).min(20))
            .min(self.policy.max_delay);
        // xorshift64
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let half = base / 2;
        let nanos = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX).max(1);
        Some(half + Duration::from_nanos(self.rng % nanos))
    }
}

/// True for errors worth retrying.
pub fn is_transient(e: &object_store::Error) -> bool {
    use object_store::Error as E;
    !matches!(
        e,
        E::NotFound { .. }
            | E::AlreadyExists { .. }
            | E::Precondition { .. }
            | E::NotModified { .. }
            | E::NotSupported { .. }
            | E::NotImplemented { .. }
            | E::InvalidPath { .. }
            | E::UnknownConfigurationKey { .. }
            | E::PermissionDenied { .. }
            | E::Unauthenticated { .. }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_stay_capped_and_run_out() {
        let policy = RetryPolicy {
            initial_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(100),
            max_attempts: 12,
        };
        let mut b = Backoff::new(policy, 7);
        let first = b.next_delay().unwrap();
        assert!(first >= Duration::from_millis(5) && first <= Duration::from_millis(10));
        let mut n = 1;
        while let Some(d) = b.next_delay() {
            assert!(d <= Duration::from_millis(100));
            n += 1;
        }
        assert_eq!(n, 11);
    }

    #[test]
    fn jitter_is_reproducible_from_its_seed() {
        let mut a = Backoff::new(RetryPolicy::default(), 3);
        let mut b = Backoff::new(RetryPolicy::default(), 3);
        for _ in 0..10 {
            assert_eq!(a.next_delay(), b.next_delay());
        }
    }

    #[test]
    fn throttling_is_transient_and_exists_is_not() {
        let slow = object_store::Error::Generic {
            store: "S3",
            source: "503 Slow Down".into(),
        };
        assert!(is_transient(&slow));
        let exists = object_store::Error::AlreadyExists {
            path: "k".into(),
            source: "exists".into(),
        };
        assert!(!is_transient(&exists));
    }
}
