//! Calls to the object store, each retried on transient errors with capped backoff.
//!
//! Throttling (`503 Slow Down`), timeouts, connection resets and other transport failures reach
//! us as `object_store::Error::Generic`; every error that says something about the object or the
//! request (not found, already exists, precondition, bad path, no permission) is final. Transient
//! errors are retried until the caller's limit on attempts ([`RetryPolicy::max_attempts`]).
//!
//! Delays grow exponentially from [`RetryPolicy::initial_delay`] up to
//! [`RetryPolicy::max_delay`], each between half and all of its step. The jitter comes from a
//! small generator seeded by the caller (the slot), never from ambient randomness, so a test
//! replays the same delays.

use std::future::Future;
use std::ops::Range;
use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{GetOptions, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use crate::{WalError, WalResult};

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
pub(crate) struct Backoff {
    policy: RetryPolicy,
    attempt: u32,
    rng: u64,
}

impl Backoff {
    pub(crate) fn new(policy: RetryPolicy, seed: u64) -> Backoff {
        Backoff {
            policy,
            attempt: 0,
            rng: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
        }
    }

    /// The next delay, or `None` once the attempts are used up.
    pub(crate) fn next_delay(&mut self) -> Option<Duration> {
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
pub(crate) fn is_transient(e: &object_store::Error) -> bool {
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

/// Runs `call` until it returns something other than a transient error or the attempts run out.
pub(crate) async fn retry<T, F, Fut>(
    policy: RetryPolicy,
    seed: u64,
    what: &str,
    mut call: F,
) -> object_store::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = object_store::Result<T>>,
{
    let mut backoff = Backoff::new(policy, seed);
    loop {
        match call().await {
            Err(e) if is_transient(&e) => match backoff.next_delay() {
                Some(delay) => {
                    tracing::debug!(what, error = %e, ?delay, "object store call failed; retrying");
                    tokio::time::sleep(delay).await;
                }
                None => return Err(e),
            },
            done => return done,
        }
    }
}

/// A store error as a WAL error that fails the WAL.
pub(crate) fn failed(what: impl std::fmt::Display, e: object_store::Error) -> WalError {
    WalError::failed(what, e)
}

/// The outcome of a create.
pub(crate) enum Created {
    /// Our bytes are in the slot now.
    Written,
    /// Something was already there.
    Exists,
}

/// Creates `key` with `bytes` unless it exists. An attempt whose answer is lost and whose retry
/// meets the object comes back as [`Created::Exists`]: the caller reads it to tell.
pub(crate) async fn create(
    store: &dyn ObjectStore,
    policy: RetryPolicy,
    seed: u64,
    key: &Path,
    bytes: Bytes,
) -> WalResult<Created> {
    let result = retry(policy, seed, "create", || {
        let opts = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        store.put_opts(key, PutPayload::from_bytes(bytes.clone()), opts)
    })
    .await;
    match result {
        Ok(_) => Ok(Created::Written),
        Err(object_store::Error::AlreadyExists { .. }) => Ok(Created::Exists),
        Err(e) => Err(failed(format!("creating {key}"), e)),
    }
}

/// The whole object at `key`, or `None` when it does not exist.
pub(crate) async fn get(
    store: &dyn ObjectStore,
    policy: RetryPolicy,
    seed: u64,
    key: &Path,
) -> WalResult<Option<Bytes>> {
    read(store, policy, seed, key, None).await
}

/// The first `len` bytes of `key` (fewer if the object is shorter), or `None` when it does not
/// exist.
pub(crate) async fn get_head(
    store: &dyn ObjectStore,
    policy: RetryPolicy,
    seed: u64,
    key: &Path,
    len: usize,
) -> WalResult<Option<Bytes>> {
    read(store, policy, seed, key, Some(0..len as u64)).await
}

async fn read(
    store: &dyn ObjectStore,
    policy: RetryPolicy,
    seed: u64,
    key: &Path,
    range: Option<Range<u64>>,
) -> WalResult<Option<Bytes>> {
    let result = retry(policy, seed, "get", || async {
        let options = GetOptions::new().with_range(range.clone());
        let got = store.get_opts(key, options).await?;
        let expected = got.range.end - got.range.start;
        let bytes = got.bytes().await?;
        if bytes.len() as u64 != expected {
            // A transfer cut short is transient: retried, never returned as data.
            return Err(object_store::Error::Generic {
                store: "objstream-wal",
                source: format!(
                    "a read of {key} returned {} of {expected} bytes",
                    bytes.len()
                )
                .into(),
            });
        }
        Ok(bytes)
    })
    .await;
    match result {
        Ok(bytes) => Ok(Some(bytes)),
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(failed(format!("reading {key}"), e)),
    }
}

/// Deletes `key`; a missing key is fine.
pub(crate) async fn delete(
    store: &dyn ObjectStore,
    policy: RetryPolicy,
    seed: u64,
    key: &Path,
) -> WalResult<()> {
    match retry(policy, seed, "delete", || store.delete(key)).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(failed(format!("deleting {key}"), e)),
    }
}

/// Every key under `prefix`, in no particular order.
pub(crate) async fn list(
    store: &dyn ObjectStore,
    policy: RetryPolicy,
    prefix: &Path,
) -> WalResult<Vec<Path>> {
    retry(policy, 0, "list", || async {
        store
            .list(Some(prefix))
            .map_ok(|meta| meta.location)
            .try_collect::<Vec<_>>()
            .await
    })
    .await
    .map_err(|e| failed(format!("listing {prefix}"), e))
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

    #[tokio::test]
    async fn a_transient_error_is_retried_until_the_call_succeeds() {
        let policy = RetryPolicy {
            initial_delay: Duration::from_millis(1),
            ..RetryPolicy::default()
        };
        let mut calls = 0;
        let r = retry(policy, 1, "test", || {
            calls += 1;
            let n = calls;
            async move {
                if n < 3 {
                    Err(object_store::Error::Generic {
                        store: "S3",
                        source: "timeout".into(),
                    })
                } else {
                    Ok(n)
                }
            }
        })
        .await;
        assert_eq!(r.unwrap(), 3);
    }

    #[tokio::test]
    async fn the_callers_attempt_limit_ends_the_retries() {
        let policy = RetryPolicy {
            initial_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(1),
            max_attempts: 4,
        };
        let mut calls = 0;
        let r: object_store::Result<()> = retry(policy, 1, "test", || {
            calls += 1;
            async {
                Err(object_store::Error::Generic {
                    store: "S3",
                    source: "timeout".into(),
                })
            }
        })
        .await;
        assert!(r.is_err());
        assert_eq!(calls, 4);
    }
}
