//! Object stores for integration tests.
//!
//! Every test that touches object storage runs against each backend of [`backends`]: a
//! [`LocalFileSystem`] in a fresh temporary directory, and a real S3 server (SeaweedFS on loopback)
//! that `scripts/test` starts and describes through the `OBJSTREAM_TEST_S3_*` variables. Running
//! against S3 is not optional: without those variables [`backends`] and [`s3_store`] panic, so a
//! test can never pass quietly without having met the server.
//!
//! Each [`TestStore`] carries a prefix that no other test call shares (test name, process id,
//! clock and a counter), so tests may run in parallel against one bucket and never clean up.
//!
//! Include it from an integration test with `mod support;`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use object_store::aws::{AmazonS3Builder, S3ConditionalPut};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{BackoffConfig, ObjectStore, RetryConfig};

/// What keeps a backend alive for as long as the test holds its [`TestStore`].
#[allow(dead_code)]
pub enum Backend {
    /// A local file system rooted in this directory, removed when dropped.
    Local(tempfile::TempDir),
    /// The S3 server named by the `OBJSTREAM_TEST_S3_*` variables.
    S3,
}

/// One object store to run a test against, with a prefix of its own.
#[allow(dead_code)]
pub struct TestStore {
    /// `"local"` or `"s3"`; print it in assertion messages.
    pub name: &'static str,
    /// The store itself.
    pub store: Arc<dyn ObjectStore>,
    /// A prefix unique to this call; put every key of the test under it.
    pub prefix: Path,
    /// Owns the temporary directory of a local store.
    pub backend: Backend,
}

#[allow(dead_code)]
impl TestStore {
    /// The key `<prefix>/<relative>`.
    pub fn path(&self, relative: &str) -> Path {
        Path::from(format!("{}/{relative}", self.prefix))
    }
}

/// Every backend a storage test must pass on: local file system, then S3.
///
/// Panics if the S3 server is not configured (see [`s3_store`]).
#[allow(dead_code)]
pub fn backends() -> Vec<TestStore> {
    vec![local_store(), s3_store()]
}

/// A [`LocalFileSystem`] in a fresh temporary directory.
#[allow(dead_code)]
pub fn local_store() -> TestStore {
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let store = LocalFileSystem::new_with_prefix(dir.path()).expect("open the local store");
    TestStore {
        name: "local",
        store: Arc::new(store),
        prefix: unique_prefix(),
        backend: Backend::Local(dir),
    }
}

/// The S3 server named by `OBJSTREAM_TEST_S3_ENDPOINT`, `_BUCKET`, `_ACCESS_KEY_ID`,
/// `_SECRET_ACCESS_KEY` and `_REGION`.
///
/// Panics, saying how to start the server, if the endpoint is not set.
#[allow(dead_code)]
pub fn s3_store() -> TestStore {
    let endpoint = std::env::var("OBJSTREAM_TEST_S3_ENDPOINT").unwrap_or_else(|_| {
        panic!(
            "OBJSTREAM_TEST_S3_ENDPOINT is not set: these tests need the S3 test server. \
             Run them through `scripts/test`, or start the server by hand with \
             `scripts/s3-server.sh start` and `eval \"$(scripts/s3-server.sh env)\"`."
        )
    });
    let var = |name: &str| {
        std::env::var(name)
            .unwrap_or_else(|_| panic!("{name} is not set; see `scripts/s3-server.sh env`"))
    };
    let store = AmazonS3Builder::new()
        .with_endpoint(endpoint)
        .with_allow_http(true)
        .with_virtual_hosted_style_request(false)
        .with_bucket_name(var("OBJSTREAM_TEST_S3_BUCKET"))
        .with_region(var("OBJSTREAM_TEST_S3_REGION"))
        .with_access_key_id(var("OBJSTREAM_TEST_S3_ACCESS_KEY_ID"))
        .with_secret_access_key(var("OBJSTREAM_TEST_S3_SECRET_ACCESS_KEY"))
        .with_conditional_put(S3ConditionalPut::ETagMatch)
        .with_retry(RetryConfig {
            backoff: BackoffConfig::default(),
            max_retries: 2,
            retry_timeout: Duration::from_secs(30),
        })
        .build()
        .expect("build the S3 client");
    TestStore {
        name: "s3",
        store: Arc::new(store),
        prefix: unique_prefix(),
        backend: Backend::S3,
    }
}

/// `<test name>-<pid>-<nanos>-<counter>`: distinct across calls, tests and concurrent runs.
fn unique_prefix() -> Path {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    // The test harness names each test's thread after the test.
    let thread = std::thread::current();
    let test: String = thread
        .name()
        .unwrap_or("test")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(80)
        .collect();
    Path::from(format!("{test}-{}-{nanos}-{count}", std::process::id()))
}
