//! [`MeteredObjectStore`]: an [`ObjectStore`] that forwards every call to another and counts it
//! by operation and outcome, with its latency and its bytes.
//!
//! [`Components`](crate::Components) wraps the store it is given in one when the store opens,
//! so every request of the data path, the manifest, the read path and an object WAL on the same
//! store is counted. The handles (one counter per operation × outcome, one histogram per
//! operation) are registered when the wrapper is created; a request updates two of them and
//! allocates nothing for it.
//!
//! What one "request" is, per call:
//! - `get_opts` is a `get`, a `get_range` (a range was asked for) or a `head`; its latency is
//!   the time to the response head (the body streams later), its bytes the returned range;
//! - `get_ranges` is one `get_range` (the inner store may coalesce or split it);
//! - a LIST is one `list`, timed from the call to the end of its stream (or its drop), with the
//!   outcome of its first error (a LIST stream dropped before it was polled is not counted);
//! - `delete_stream` counts each location's result as one `delete`, timed from the previous
//!   result (or the call);
//! - a multipart upload counts `put_multipart` (the create), each `put_part`, and the
//!   `complete_multipart` or `abort_multipart`.

use std::fmt;
use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use ::metrics::{counter, histogram, Counter, Histogram};
use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{BoxStream, Stream, StreamExt};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, Result, UploadPart,
};

use crate::metrics::{
    LABEL_OP, LABEL_OUTCOME, OBJECT_STORE_RECEIVED_BYTES, OBJECT_STORE_REQUESTS,
    OBJECT_STORE_REQUEST_DURATION, OBJECT_STORE_SENT_BYTES,
};

/// An object-store operation, as counted (the `op` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// A whole-object GET.
    Get,
    /// A ranged GET.
    GetRange,
    /// A HEAD.
    Head,
    /// A PUT (plain or conditional).
    Put,
    /// The creation of a multipart upload.
    PutMultipart,
    /// One part of a multipart upload.
    PutPart,
    /// The completion of a multipart upload.
    CompleteMultipart,
    /// The abort of a multipart upload.
    AbortMultipart,
    /// A LIST (with or without delimiter or offset).
    List,
    /// The delete of one location.
    Delete,
    /// A copy.
    Copy,
    /// A rename.
    Rename,
}

impl Op {
    /// Every operation, in label order.
    pub const ALL: [Op; 12] = [
        Op::Get,
        Op::GetRange,
        Op::Head,
        Op::Put,
        Op::PutMultipart,
        Op::PutPart,
        Op::CompleteMultipart,
        Op::AbortMultipart,
        Op::List,
        Op::Delete,
        Op::Copy,
        Op::Rename,
    ];

    /// The label value.
    pub fn name(self) -> &'static str {
        match self {
            Op::Get => "get",
            Op::GetRange => "get_range",
            Op::Head => "head",
            Op::Put => "put",
            Op::PutMultipart => "put_multipart",
            Op::PutPart => "put_part",
            Op::CompleteMultipart => "complete_multipart",
            Op::AbortMultipart => "abort_multipart",
            Op::List => "list",
            Op::Delete => "delete",
            Op::Copy => "copy",
            Op::Rename => "rename",
        }
    }
}

/// How an object-store request ended (the `outcome` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Success.
    Ok,
    /// The object does not exist.
    NotFound,
    /// A conditional request lost: the object exists already, or a precondition failed.
    AlreadyExists,
    /// The store throttled the request (`503 Slow Down`, `429 Too Many Requests`).
    Throttled,
    /// Any other failure (timeouts, resets, 5xx, permissions, bad requests).
    Error,
}

impl Outcome {
    /// Every outcome, in label order.
    pub const ALL: [Outcome; 5] = [
        Outcome::Ok,
        Outcome::NotFound,
        Outcome::AlreadyExists,
        Outcome::Throttled,
        Outcome::Error,
    ];

    /// The label value.
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::NotFound => "not_found",
            Outcome::AlreadyExists => "already_exists",
            Outcome::Throttled => "throttled",
            Outcome::Error => "error",
        }
    }

    /// The outcome of a result.
    pub fn of<T>(result: &Result<T>) -> Outcome {
        match result {
            Ok(_) => Outcome::Ok,
            Err(e) => Outcome::of_error(e),
        }
    }

    /// The outcome of an error. Throttling arrives as a generic error (object_store has no
    /// variant for it), so it is recognised by the status or code the message carries, along
    /// the whole source chain.
    pub fn of_error(e: &object_store::Error) -> Outcome {
        use object_store::Error as E;
        match e {
            E::NotFound { .. } => Outcome::NotFound,
            E::AlreadyExists { .. } | E::Precondition { .. } => Outcome::AlreadyExists,
            _ if is_throttling(e) => Outcome::Throttled,
            _ => Outcome::Error,
        }
    }
}

/// Markers of throttling in an error message: S3's `SlowDown` (503), HTTP 429, and the codes
/// of other stores (`RequestLimitExceeded`, `TooManyRequests`, "throttl…").
const THROTTLE_MARKERS: [&str; 9] = [
    "slowdown",
    "slow down",
    "503 service unavailable",
    "status code: 503",
    "too many requests",
    "toomanyrequests",
    "status code: 429",
    "requestlimitexceeded",
    "throttl",
];

fn is_throttling(e: &object_store::Error) -> bool {
    let mut source: Option<&dyn std::error::Error> = Some(e);
    while let Some(err) = source {
        let text = err.to_string().to_ascii_lowercase();
        if THROTTLE_MARKERS.iter().any(|m| text.contains(m)) {
            return true;
        }
        source = err.source();
    }
    false
}

/// The handles of every (operation, outcome) pair.
struct Handles {
    requests: Vec<[Counter; 5]>,
    durations: Vec<Histogram>,
    sent: Counter,
    received: Counter,
}

impl Handles {
    fn new() -> Self {
        Handles {
            requests: Op::ALL
                .iter()
                .map(|op| {
                    Outcome::ALL.map(|outcome| {
                        counter!(
                            OBJECT_STORE_REQUESTS,
                            LABEL_OP => op.name(),
                            LABEL_OUTCOME => outcome.name()
                        )
                    })
                })
                .collect(),
            durations: Op::ALL
                .iter()
                .map(|op| histogram!(OBJECT_STORE_REQUEST_DURATION, LABEL_OP => op.name()))
                .collect(),
            sent: counter!(OBJECT_STORE_SENT_BYTES),
            received: counter!(OBJECT_STORE_RECEIVED_BYTES),
        }
    }

    fn record(&self, op: Op, outcome: Outcome, started: Instant) {
        let (o, i) = (op as usize, outcome as usize);
        self.requests[o][i].increment(1);
        self.durations[o].record(started.elapsed());
    }

    fn record_result<T>(&self, op: Op, result: &Result<T>, started: Instant) {
        self.record(op, Outcome::of(result), started);
    }
}

/// Counts every call to the wrapped store (see the module docs). Cheap to clone.
///
/// The store wraps its own object store already; wrap another one (a compactor's, a tool's) to
/// count its requests in the same series:
///
/// ```
/// use std::sync::Arc;
/// use metrics_util::debugging::{DebugValue, DebuggingRecorder};
/// use object_store::{path::Path, ObjectStoreExt, PutPayload};
///
/// let recorder = DebuggingRecorder::new();
/// let snapshotter = recorder.snapshotter();
/// metrics::with_local_recorder(&recorder, || {
///     let store = objstream::MeteredObjectStore::new(Arc::new(object_store::memory::InMemory::new()));
///     let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
///     rt.block_on(async {
///         store.put(&Path::from("a"), PutPayload::from("hello")).await.unwrap();
///         store.get(&Path::from("a")).await.unwrap();
///         assert!(store.get(&Path::from("missing")).await.is_err());
///     });
/// });
/// let count = |op: &str, outcome: &str| {
///     snapshotter.snapshot().into_vec().into_iter().find_map(|(key, _, _, value)| {
///         let key = key.key();
///         let labelled = |k: &str, v: &str| key.labels().any(|l| l.key() == k && l.value() == v);
///         let wanted = key.name() == objstream::metrics::OBJECT_STORE_REQUESTS
///             && labelled("op", op) && labelled("outcome", outcome);
///         match value { DebugValue::Counter(n) if wanted => Some(n), _ => None }
///     })
/// };
/// assert_eq!(count("get", "not_found"), Some(1));
/// ```
#[derive(Clone)]
pub struct MeteredObjectStore {
    inner: Arc<dyn ObjectStore>,
    handles: Arc<Handles>,
}

impl MeteredObjectStore {
    /// Wraps `inner`, registering the handles with the current recorder.
    pub fn new(inner: Arc<dyn ObjectStore>) -> Self {
        MeteredObjectStore {
            inner,
            handles: Arc::new(Handles::new()),
        }
    }

    /// The wrapped store.
    pub fn inner(&self) -> &Arc<dyn ObjectStore> {
        &self.inner
    }
}

impl fmt::Display for MeteredObjectStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MeteredObjectStore({})", self.inner)
    }
}

impl fmt::Debug for MeteredObjectStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MeteredObjectStore")
            .field("inner", &self.inner.to_string())
            .finish()
    }
}

#[async_trait]
impl ObjectStore for MeteredObjectStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        let started = Instant::now();
        let len = payload.content_length() as u64;
        let result = self.inner.put_opts(location, payload, opts).await;
        self.handles.record_result(Op::Put, &result, started);
        if result.is_ok() {
            self.handles.sent.increment(len);
        }
        result
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        let started = Instant::now();
        let result = self.inner.put_multipart_opts(location, opts).await;
        self.handles
            .record_result(Op::PutMultipart, &result, started);
        result.map(|upload| {
            Box::new(MeteredUpload {
                handles: self.handles.clone(),
                upload,
            }) as Box<dyn MultipartUpload>
        })
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let op = if options.head {
            Op::Head
        } else if options.range.is_some() {
            Op::GetRange
        } else {
            Op::Get
        };
        let started = Instant::now();
        let result = self.inner.get_opts(location, options).await;
        self.handles.record_result(op, &result, started);
        if let (Ok(got), false) = (&result, op == Op::Head) {
            self.handles
                .received
                .increment(got.range.end.saturating_sub(got.range.start));
        }
        result
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        let started = Instant::now();
        let result = self.inner.get_ranges(location, ranges).await;
        self.handles.record_result(Op::GetRange, &result, started);
        if let Ok(parts) = &result {
            let bytes: usize = parts.iter().map(Bytes::len).sum();
            self.handles.received.increment(bytes as u64);
        }
        result
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        let handles = self.handles.clone();
        let mut last = Instant::now();
        self.inner
            .delete_stream(locations)
            .map(move |result| {
                handles.record_result(Op::Delete, &result, last);
                last = Instant::now();
                result
            })
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        MeteredList::new(self.handles.clone(), self.inner.list(prefix)).boxed()
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        MeteredList::new(
            self.handles.clone(),
            self.inner.list_with_offset(prefix, offset),
        )
        .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        let started = Instant::now();
        let result = self.inner.list_with_delimiter(prefix).await;
        self.handles.record_result(Op::List, &result, started);
        result
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        let started = Instant::now();
        let result = self.inner.copy_opts(from, to, options).await;
        self.handles.record_result(Op::Copy, &result, started);
        result
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        let started = Instant::now();
        let result = self.inner.rename_opts(from, to, options).await;
        self.handles.record_result(Op::Rename, &result, started);
        result
    }
}

/// A LIST stream that records one request when it ends or is dropped.
struct MeteredList {
    handles: Arc<Handles>,
    inner: BoxStream<'static, Result<ObjectMeta>>,
    started: Instant,
    outcome: Outcome,
    /// Set once the stream was polled: a LIST never polled sent no request.
    polled: bool,
    recorded: bool,
}

impl MeteredList {
    fn new(handles: Arc<Handles>, inner: BoxStream<'static, Result<ObjectMeta>>) -> Self {
        MeteredList {
            handles,
            inner,
            started: Instant::now(),
            outcome: Outcome::Ok,
            polled: false,
            recorded: false,
        }
    }

    fn finish(&mut self) {
        if self.polled && !self.recorded {
            self.recorded = true;
            self.handles.record(Op::List, self.outcome, self.started);
        }
    }
}

impl Stream for MeteredList {
    type Item = Result<ObjectMeta>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.polled = true;
        let polled = self.inner.poll_next_unpin(cx);
        match &polled {
            Poll::Ready(Some(Err(e))) if self.outcome == Outcome::Ok => {
                self.outcome = Outcome::of_error(e);
            }
            Poll::Ready(None) => self.finish(),
            _ => {}
        }
        polled
    }
}

impl Drop for MeteredList {
    fn drop(&mut self) {
        self.finish();
    }
}

/// A multipart upload whose create, parts and completion are counted.
struct MeteredUpload {
    handles: Arc<Handles>,
    upload: Box<dyn MultipartUpload>,
}

impl fmt::Debug for MeteredUpload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MeteredUpload").finish_non_exhaustive()
    }
}

#[async_trait]
impl MultipartUpload for MeteredUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let len = data.content_length() as u64;
        let part = self.upload.put_part(data);
        let handles = self.handles.clone();
        Box::pin(async move {
            let started = Instant::now();
            let result = part.await;
            handles.record_result(Op::PutPart, &result, started);
            if result.is_ok() {
                handles.sent.increment(len);
            }
            result
        })
    }

    async fn complete(&mut self) -> Result<PutResult> {
        let started = Instant::now();
        let result = self.upload.complete().await;
        self.handles
            .record_result(Op::CompleteMultipart, &result, started);
        result
    }

    async fn abort(&mut self) -> Result<()> {
        let started = Instant::now();
        let result = self.upload.abort().await;
        self.handles
            .record_result(Op::AbortMultipart, &result, started);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generic(message: &str) -> object_store::Error {
        object_store::Error::Generic {
            store: "S3",
            source: message.to_string().into(),
        }
    }

    #[test]
    fn slow_down_and_too_many_requests_are_throttling() {
        for message in [
            "503 Slow Down: please reduce your request rate",
            "Server returned non-2xx status code: 503 Service Unavailable: <Code>SlowDown</Code>",
            "HTTP status client error (429 Too Many Requests)",
            "RequestLimitExceeded",
        ] {
            assert_eq!(
                Outcome::of_error(&generic(message)),
                Outcome::Throttled,
                "{message}"
            );
        }
    }

    #[test]
    fn other_failures_keep_their_own_outcome() {
        let not_found = object_store::Error::NotFound {
            path: "p/objects/00000000000000000503".into(),
            source: "gone".into(),
        };
        assert_eq!(Outcome::of_error(&not_found), Outcome::NotFound);
        let exists = object_store::Error::AlreadyExists {
            path: "p/manifest/1".into(),
            source: "exists".into(),
        };
        assert_eq!(Outcome::of_error(&exists), Outcome::AlreadyExists);
        assert_eq!(
            Outcome::of_error(&generic("connection reset by peer")),
            Outcome::Error
        );
        assert_eq!(Outcome::of::<()>(&Ok(())), Outcome::Ok);
    }

    #[test]
    fn label_values_follow_the_variant_order() {
        for (i, op) in Op::ALL.iter().enumerate() {
            assert_eq!(*op as usize, i);
        }
        for (i, outcome) in Outcome::ALL.iter().enumerate() {
            assert_eq!(*outcome as usize, i);
        }
    }
}
