//! An object store wrapper for tests: counts LISTs, returns LIST results out of order (as
//! stores whose LIST is not lexicographic do), can answer a successful create with "already
//! exists" (as a store client does when it retries a PUT whose first attempt landed), and can
//! fail writes of checkpoints.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use futures::stream::BoxStream;
use futures::StreamExt;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMode, PutMultipartOptions, PutOptions, PutPayload, PutResult,
};

/// See the module documentation.
#[derive(Debug)]
pub(crate) struct TestStore {
    inner: Arc<dyn ObjectStore>,
    lists: AtomicUsize,
    creates_to_echo: AtomicUsize,
    fail_checkpoints: AtomicBool,
}

impl TestStore {
    pub(crate) fn new(inner: Arc<dyn ObjectStore>) -> Self {
        TestStore {
            inner,
            lists: AtomicUsize::new(0),
            creates_to_echo: AtomicUsize::new(0),
            fail_checkpoints: AtomicBool::new(false),
        }
    }

    /// How many LISTs were made.
    pub(crate) fn lists(&self) -> usize {
        self.lists.load(Ordering::SeqCst)
    }

    /// The next `n` creates that succeed are answered with `AlreadyExists`.
    pub(crate) fn echo_next_creates(&self, n: usize) {
        self.creates_to_echo.store(n, Ordering::SeqCst);
    }
}

impl TestStore {
    /// Every later write of a checkpoint fails.
    pub(crate) fn fail_checkpoint_writes(&self) {
        self.fail_checkpoints.store(true, Ordering::SeqCst);
    }
}

impl fmt::Display for TestStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TestStore({})", self.inner)
    }
}

#[async_trait::async_trait]
impl ObjectStore for TestStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        if self.fail_checkpoints.load(Ordering::SeqCst)
            && location.as_ref().contains("manifest-checkpoint")
        {
            return Err(object_store::Error::Generic {
                store: "TestStore",
                source: "checkpoint writes are failing".into(),
            });
        }
        let create = matches!(opts.mode, PutMode::Create);
        let result = self.inner.put_opts(location, payload, opts).await?;
        let echo = create
            && self
                .creates_to_echo
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
        if echo {
            return Err(object_store::Error::AlreadyExists {
                path: location.to_string(),
                source: "the retried create found the first attempt's object".into(),
            });
        }
        Ok(result)
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.lists.fetch_add(1, Ordering::SeqCst);
        let inner = Arc::clone(&self.inner);
        let prefix = prefix.cloned();
        futures::stream::once(async move {
            let mut all: Vec<object_store::Result<ObjectMeta>> =
                inner.list(prefix.as_ref()).collect().await;
            // Neither ascending nor descending: the first listed key moves to the end.
            if !all.is_empty() {
                all.rotate_left(1);
            }
            futures::stream::iter(all)
        })
        .flatten()
        .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.lists.fetch_add(1, Ordering::SeqCst);
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}
