//! Calls to the object store, each retried on transient errors with capped backoff.
//!
//! Which errors are transient and how delays grow is [`crate::retry`]; transient errors are
//! retried until the caller's limit on attempts ([`RetryPolicy::max_attempts`]), with the slot
//! as the jitter's seed.

use std::future::Future;
use std::ops::Range;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{GetOptions, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

pub use crate::retry::RetryPolicy;
use crate::retry::{is_transient, Backoff};
use crate::{WalError, WalResult};

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
    use std::time::Duration;

    use super::*;

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
