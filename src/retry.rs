//! Retries of object store calls: transient errors (throttling, timeouts, connection resets,
//! 5xx) are retried with capped exponential backoff and jitter; everything else is returned.
//!
//! Jitter comes from a small generator seeded by the caller, not from ambient randomness, so a
//! seeded test replays the same delays.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use object_store::path::Path;
use object_store::GetResult;

use objstream_wal::retry::RetryPolicy;

use crate::error::{Error, ErrorDetail, Result};

/// How the store retries: about two minutes of a store that keeps failing before a call gives
/// up, delays from 20 ms doubling to 5 s.
const POLICY: RetryPolicy = RetryPolicy {
    initial_delay: Duration::from_millis(20),
    max_delay: Duration::from_secs(5),
    max_attempts: 31,
};

/// Capped exponential backoff with seeded jitter ([`objstream_wal::retry::Backoff`] under the
/// store's policy). Past its attempts it keeps waiting the longest delay, for loops that never
/// give up (a commit that must land); [`retry_transient`] stops there instead.
pub struct Backoff(objstream_wal::retry::Backoff);

impl Backoff {
    /// A backoff whose jitter is seeded by `seed` (an object id, a sequence number).
    pub fn for_uploads(seed: u64) -> Self {
        Backoff(objstream_wal::retry::Backoff::new(POLICY, seed))
    }

    fn next_delay(&mut self) -> Duration {
        self.0.next_delay().unwrap_or(POLICY.max_delay)
    }

    /// Sleeps for the next delay.
    pub(crate) async fn wait(&mut self) {
        tokio::time::sleep(self.next_delay()).await;
    }

    fn exhausted(&self) -> bool {
        self.0.attempts() + 1 >= POLICY.max_attempts
    }
}

/// True for object store errors worth retrying (see [`objstream_wal::retry::is_transient`]).
pub(crate) fn is_transient_store(e: &object_store::Error) -> bool {
    objstream_wal::retry::is_transient(e)
}

/// True for store errors that come from a transient object store failure.
pub(crate) fn is_transient(e: &Error) -> bool {
    matches!(e.detail(), ErrorDetail::ObjectStore { source, .. } if is_transient_store(source))
}

/// The whole body of a GET. A body shorter (or longer) than the range the response claims is a
/// transfer cut short, reported as a transient error so that the read is retried; it is never
/// returned as data.
pub async fn read_body(got: GetResult) -> object_store::Result<Bytes> {
    let expected = got.range.end - got.range.start;
    let location = got.meta.location.to_string();
    whole_body(&location, expected, got.bytes().await?)
}

/// `bytes`, the body of a GET of `location` whose response claimed `expected` bytes, or the
/// transient error of a transfer cut short when it holds another number.
pub(crate) fn whole_body(
    location: &str,
    expected: u64,
    bytes: Bytes,
) -> object_store::Result<Bytes> {
    if bytes.len() as u64 != expected {
        return Err(object_store::Error::Generic {
            store: "objstream",
            source: format!(
                "a read of {location} returned {} of {expected} bytes: the response was cut short",
                bytes.len()
            )
            .into(),
        });
    }
    Ok(bytes)
}

/// Like [`retry_transient`], for calls that already return this crate's errors: retries those
/// that [`is_transient`] calls transient.
pub async fn retry_transient_errors<T, F, Fut>(
    operation: &'static str,
    path: &Path,
    mut backoff: Backoff,
    mut call: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    loop {
        match call().await {
            Err(e) if is_transient(&e) && !backoff.exhausted() => {
                tracing::warn!(operation, %path, attempt = backoff.0.attempts() + 1, error = %e, "object store call failed; retrying");
                backoff.wait().await;
            }
            done => return done,
        }
    }
}

/// Runs `call` until it succeeds, fails for good, or transient failures exhaust the backoff.
pub async fn retry_transient<T, F, Fut>(
    operation: &'static str,
    path: &Path,
    backoff: Backoff,
    mut call: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = object_store::Result<T>>,
{
    retry_transient_errors(operation, path, backoff, || {
        let attempt = call();
        async move {
            attempt
                .await
                .map_err(|e| Error::object_store(operation, path, e))
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_and_stay_capped() {
        let mut b = Backoff::for_uploads(7);
        let first = b.next_delay();
        assert!(first >= POLICY.initial_delay / 2 && first <= POLICY.initial_delay);
        for _ in 0..40 {
            assert!(b.next_delay() <= POLICY.max_delay);
        }
        assert!(b.exhausted());
    }

    #[test]
    fn throttling_timeouts_and_resets_are_transient() {
        for message in [
            "503 Slow Down: please reduce your request rate",
            "operation timed out",
            "connection reset by peer",
        ] {
            let e = object_store::Error::Generic {
                store: "S3",
                source: message.into(),
            };
            assert!(is_transient_store(&e), "{message}");
        }
        let gone = object_store::Error::NotFound {
            path: "k".into(),
            source: "gone".into(),
        };
        assert!(!is_transient_store(&gone));
    }

    #[tokio::test]
    async fn transient_errors_are_retried_until_the_call_succeeds() {
        let mut calls = 0;
        let r: Result<u32> =
            retry_transient("get", &Path::from("k"), Backoff::for_uploads(1), || {
                calls += 1;
                let n = calls;
                async move {
                    if n < 3 {
                        Err(object_store::Error::Generic {
                            store: "S3",
                            source: "503 Slow Down".into(),
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
    async fn a_body_shorter_than_its_range_is_a_transient_error() {
        use object_store::{ObjectStore, ObjectStoreExt};
        let store = crate::testing::FaultyObjectStore::new(std::sync::Arc::new(
            object_store::memory::InMemory::new(),
        ));
        let key = Path::from("k");
        store.put(&key, vec![1u8; 64].into()).await.unwrap();
        let whole = store.get(&key).await.unwrap();
        assert_eq!(read_body(whole).await.unwrap().len(), 64);
        store.fail_next(1, crate::testing::Fault::TruncatedRead);
        let options = object_store::GetOptions::new().with_range(Some(8..40));
        let short = store.get_opts(&key, options).await.unwrap();
        let err = read_body(short).await.unwrap_err();
        assert!(is_transient_store(&err), "{err}");
        assert!(err.to_string().contains("16 of 32 bytes"), "{err}");
    }

    #[tokio::test]
    async fn permanent_errors_are_not_retried() {
        let mut calls = 0;
        let r: Result<()> =
            retry_transient("get", &Path::from("k"), Backoff::for_uploads(1), || {
                calls += 1;
                async {
                    Err(object_store::Error::NotFound {
                        path: "k".into(),
                        source: "gone".into(),
                    })
                }
            })
            .await;
        assert!(r.is_err());
        assert_eq!(calls, 1);
    }
}
