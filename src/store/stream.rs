//! A stream handle: append, fetch, trim, close.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::oneshot;

use super::{StoreInner, StreamStatus, Waiting};
use crate::error::{Error, ErrorDetail, Result};
use crate::manifest::Change;
use crate::types::{Epoch, Offset, RecordBatch, StoredBatch, StreamId};
use crate::AppendResult;

/// One stream, open on this node under one epoch. Cheap to clone; every clone is the same
/// handle. Once a newer owner opens the stream, every call fails with a fenced error.
#[derive(Clone)]
pub struct Stream {
    inner: Arc<StoreInner>,
    id: StreamId,
    epoch: Epoch,
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream")
            .field("id", &self.id)
            .field("epoch", &self.epoch)
            .finish()
    }
}

/// The future of an append: resolves once the batch is durable. The batch's place in the
/// stream is fixed when `append` is called, so a caller may keep many appends in flight.
#[must_use = "an append is durable only when its future resolves"]
pub struct AppendFuture {
    rx: Result<oneshot::Receiver<Result<AppendResult>>, Option<Error>>,
    /// Counts the append if it fails fenced.
    fenced: ::metrics::Counter,
}

impl Future for AppendFuture {
    type Output = Result<AppendResult>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let polled = match &mut self.rx {
            Ok(rx) => Pin::new(rx).poll(cx).map(|r| {
                r.unwrap_or_else(|_| Err(Error::internal("an append was dropped by the store")))
            }),
            Err(e) => Poll::Ready(Err(e
                .take()
                .unwrap_or_else(|| Error::internal("append future polled after completion")))),
        };
        if let Poll::Ready(Err(e)) = &polled {
            if e.is_fenced() {
                self.fenced.increment(1);
            }
        }
        polled
    }
}

impl Stream {
    pub(crate) fn new(inner: Arc<StoreInner>, id: StreamId, epoch: Epoch) -> Self {
        Stream { inner, id, epoch }
    }

    /// The stream's id.
    pub fn id(&self) -> StreamId {
        self.id
    }

    /// The epoch this handle writes under.
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// The first readable offset.
    pub fn start_offset(&self) -> Result<Offset> {
        Ok(self
            .inner
            .core
            .lock()
            .check_stream(self.id, self.epoch)?
            .start)
    }

    /// The offset below which every record is durable and readable.
    pub fn confirmed_offset(&self) -> Result<Offset> {
        Ok(self
            .inner
            .core
            .lock()
            .check_stream(self.id, self.epoch)?
            .confirmed)
    }

    /// Appends a batch. The returned future resolves once the batch is durable, with the offsets
    /// it got. Appends resolve in offset order; many may be in flight at once.
    ///
    /// The offsets are fixed when `append` is called, not when the future is polled, so a
    /// producer keeps many appends in flight and awaits them in order:
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let settings = objstream::Settings { wal: objstream::WalSettings::file(dir.path()), ..Default::default() };
    /// # let objects = std::sync::Arc::new(object_store::memory::InMemory::new());
    /// # let store = objstream::Store::open(settings, objstream::Components::new(objects, "doc")).await.unwrap();
    /// # let stream = store.create_stream().await.unwrap();
    /// use objstream::RecordBatch;
    /// let in_flight: Vec<_> = (0..100)
    ///     .map(|i| stream.append(RecordBatch::new(1, i, format!("event {i}"))))
    ///     .collect();
    /// for (i, append) in in_flight.into_iter().enumerate() {
    ///     let acked = append.await.unwrap(); // durable in the WAL
    ///     assert_eq!(acked.base_offset.get(), i as u64);
    /// }
    /// assert_eq!(stream.confirmed_offset().unwrap().get(), 100);
    /// # store.shutdown().await.unwrap();
    /// # });
    /// ```
    pub fn append(&self, batch: RecordBatch) -> AppendFuture {
        self.submit(batch, None)
    }

    /// Appends a batch only if the stream's next offset is `expected_next_offset` (for
    /// exactly-once producers); otherwise fails with an invalid-input error and appends nothing.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let settings = objstream::Settings { wal: objstream::WalSettings::file(dir.path()), ..Default::default() };
    /// # let objects = std::sync::Arc::new(object_store::memory::InMemory::new());
    /// # let store = objstream::Store::open(settings, objstream::Components::new(objects, "doc")).await.unwrap();
    /// # let stream = store.create_stream().await.unwrap();
    /// use objstream::{ErrorKind, Offset, RecordBatch};
    /// stream.append_if(RecordBatch::new(3, 0, "abc"), Offset(0)).await.unwrap();
    /// // A producer retrying a batch that already landed is told so, and nothing is appended twice.
    /// let retry = stream.append_if(RecordBatch::new(3, 0, "abc"), Offset(0)).await;
    /// assert_eq!(retry.unwrap_err().kind(), ErrorKind::InvalidInput);
    /// assert_eq!(stream.confirmed_offset().unwrap(), Offset(3));
    /// # store.shutdown().await.unwrap();
    /// # });
    /// ```
    pub fn append_if(&self, batch: RecordBatch, expected_next_offset: Offset) -> AppendFuture {
        self.submit(batch, Some(expected_next_offset))
    }

    fn submit(&self, batch: RecordBatch, expected: Option<Offset>) -> AppendFuture {
        let fenced = self.inner.metrics.append_fenced.clone();
        if let Err(e) = self.validate_batch(&batch) {
            return AppendFuture {
                rx: Err(Some(e)),
                fenced,
            };
        }
        let span = tracing::debug_span!(
            "append",
            stream = %self.id,
            epoch = %self.epoch,
            records = batch.count,
            bytes = batch.payload.len(),
            base_offset = tracing::field::Empty,
            next_offset = tracing::field::Empty,
        );
        let (tx, rx) = oneshot::channel();
        let waiting = Waiting {
            stream: self.id,
            epoch: self.epoch,
            batch,
            expected,
            reply: tx,
            started: std::time::Instant::now(),
            span,
        };
        let mut core = self.inner.core.lock();
        if let Err(e) = core.check_stream(self.id, self.epoch) {
            return AppendFuture {
                rx: Err(Some(e)),
                fenced,
            };
        }
        let weight = objstream_cache::CachedBatch::weight(&waiting.batch);
        if core.must_wait(weight) {
            core.waiting.push_back(waiting);
            drop(core);
            // Waiting appends are admitted as commits free memory; make sure one is coming.
            self.inner.upload_wakeup.notify_one();
        } else {
            self.inner.admit(&mut core, waiting);
        }
        AppendFuture { rx: Ok(rx), fenced }
    }

    fn validate_batch(&self, batch: &RecordBatch) -> Result<()> {
        if batch.count == 0 {
            return Err(Error::invalid(format!(
                "{}: a batch must hold at least one record",
                self.id
            )));
        }
        if batch.payload.is_empty() {
            return Err(Error::invalid(format!(
                "{}: a batch payload is empty",
                self.id
            )));
        }
        let max = self.inner.settings.max_batch_bytes;
        if batch.payload.len() > max {
            return Err(Error::invalid(format!(
                "{}: a batch of {} bytes is over the limit of {max} bytes",
                self.id,
                batch.payload.len()
            )));
        }
        Ok(())
    }

    /// Reads whole batches from `start` up to `end` (exclusive), about `max_bytes` of them.
    ///
    /// The first batch may begin before `start`. At least one batch is returned when data exists
    /// at `start`, even if it is larger than `max_bytes`. Nothing past the confirmed offset is
    /// ever returned; `start` equal to the confirmed offset returns no batches.
    ///
    /// Replaying a window, wherever its data lives now (log cache, block cache or objects):
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let settings = objstream::Settings { wal: objstream::WalSettings::file(dir.path()), ..Default::default() };
    /// # let objects = std::sync::Arc::new(object_store::memory::InMemory::new());
    /// # let store = objstream::Store::open(settings, objstream::Components::new(objects, "doc")).await.unwrap();
    /// # let stream = store.create_stream().await.unwrap();
    /// use objstream::{Offset, RecordBatch};
    /// for i in 0..10 {
    ///     stream.append(RecordBatch::new(10, i, vec![b'x'; 1000])).await.unwrap();
    /// }
    /// store.flush().await.unwrap(); // now in objects too
    ///
    /// let (start, end) = (Offset(25), Offset(60));
    /// let mut next = start;
    /// let mut records = 0;
    /// while next < end {
    ///     let batches = stream.fetch(next, end, 4096).await.unwrap();
    ///     for b in &batches {
    ///         records += b.batch.count as u64;
    ///         next = b.next_offset();
    ///     }
    /// }
    /// // Whole batches: the window is covered by the batches at 20..60.
    /// assert_eq!(records, 40);
    /// # store.shutdown().await.unwrap();
    /// # });
    /// ```
    #[tracing::instrument(
        level = "debug",
        name = "fetch",
        skip(self, start, end),
        fields(stream = %self.id, epoch = %self.epoch, start = start.0, end = end.0)
    )]
    pub async fn fetch(
        &self,
        start: Offset,
        end: Offset,
        max_bytes: usize,
    ) -> Result<Vec<StoredBatch>> {
        let started = std::time::Instant::now();
        let (first, confirmed) = {
            let core = self.inner.core.lock();
            let s = core.check_stream(self.id, self.epoch)?;
            (s.start, s.confirmed)
        };
        if end < start {
            return Err(Error::invalid(format!(
                "{}: fetch end {end} is before its start {start}",
                self.id
            )));
        }
        if start < first || start > confirmed {
            return Err(ErrorDetail::OffsetOutOfRange {
                stream: self.id,
                offset: start,
                start: first,
                end: confirmed,
            }
            .into());
        }
        let batches = crate::read::fetch(
            &self.inner,
            self.id,
            start,
            end.min(confirmed),
            max_bytes as u64,
        )
        .await?;
        self.inner.metrics.fetch_duration.record(started.elapsed());
        let bytes: usize = batches.iter().map(|b| b.batch.payload.len()).sum();
        self.inner.metrics.fetched_bytes.increment(bytes as u64);
        Ok(batches)
    }

    /// Discards every record below `new_start`. Fails if `new_start` is past the confirmed
    /// offset; a `new_start` at or below the current start changes nothing.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let settings = objstream::Settings { wal: objstream::WalSettings::file(dir.path()), ..Default::default() };
    /// # let objects = std::sync::Arc::new(object_store::memory::InMemory::new());
    /// # let store = objstream::Store::open(settings, objstream::Components::new(objects, "doc")).await.unwrap();
    /// # let stream = store.create_stream().await.unwrap();
    /// use objstream::{ErrorKind, Offset, RecordBatch};
    /// stream.append(RecordBatch::new(10, 0, "ten records")).await.unwrap();
    /// stream.trim(Offset(10)).await.unwrap();
    /// assert_eq!(stream.start_offset().unwrap(), Offset(10));
    /// // Past the confirmed offset is refused, and changes nothing.
    /// assert_eq!(stream.trim(Offset(11)).await.unwrap_err().kind(), ErrorKind::InvalidInput);
    /// # store.shutdown().await.unwrap();
    /// # });
    /// ```
    pub async fn trim(&self, new_start: Offset) -> Result<()> {
        let (start, confirmed) = {
            let core = self.inner.core.lock();
            let s = core.check_stream(self.id, self.epoch)?;
            (s.start, s.confirmed)
        };
        if new_start > confirmed {
            return Err(ErrorDetail::OffsetOutOfRange {
                stream: self.id,
                offset: new_start,
                start,
                end: confirmed,
            }
            .into());
        }
        if new_start <= start {
            return Ok(());
        }
        let committed_end = self
            .inner
            .meta
            .state()
            .await?
            .stream(self.id)
            .map(|s| s.end)
            .unwrap_or_default();
        if new_start > committed_end {
            // The manifest trims only committed data: commit up to the confirmed offset first.
            self.inner.flush_all().await?;
        }
        self.inner
            .meta
            .commit(Change::TrimStream {
                stream: self.id,
                epoch: self.epoch,
                new_start,
                compactor_epoch: None,
            })
            .await?;
        let mut core = self.inner.core.lock();
        if let Some(s) = core.streams.get_mut(&self.id) {
            if s.epoch == self.epoch && s.start < new_start {
                s.start = new_start;
            }
        }
        tracing::debug!(stream = %self.id, %new_start, "stream trimmed");
        Ok(())
    }

    /// Closes the stream: no more appends; waits for appends in flight, uploads and commits
    /// everything, and marks the stream closed so another node can open it (graceful handoff).
    ///
    /// A handoff between two nodes sharing one object store; the old handle is fenced:
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// use std::sync::Arc;
    /// use objstream::{Components, ErrorKind, NodeId, RecordBatch, Settings, Store, WalSettings};
    /// let dir = tempfile::tempdir().unwrap();
    /// let objects = Arc::new(object_store::memory::InMemory::new());
    /// let node = |id: u64| Settings {
    ///     node_id: NodeId(id),
    ///     wal: WalSettings::file(dir.path().join(format!("wal-{id}"))),
    ///     ..Settings::default()
    /// };
    /// let a = Store::open(node(1), Components::new(objects.clone(), "events")).await.unwrap();
    /// let b = Store::open(node(2), Components::new(objects.clone(), "events")).await.unwrap();
    ///
    /// let on_a = a.create_stream().await.unwrap();
    /// on_a.append(RecordBatch::new(1, 0, "written on a")).await.unwrap();
    /// on_a.close().await.unwrap(); // everything committed; the stream is free
    ///
    /// let on_b = b.open_stream(on_a.id()).await.unwrap(); // epoch raised
    /// assert!(on_b.epoch() > on_a.epoch());
    /// let batches = on_b.fetch(objstream::Offset(0), objstream::Offset(1), 1 << 20).await.unwrap();
    /// assert_eq!(&batches[0].batch.payload[..], b"written on a");
    /// on_b.append(RecordBatch::new(1, 0, "written on b")).await.unwrap();
    ///
    /// // The old owner can never write again.
    /// let late = on_a.append(RecordBatch::new(1, 0, "too late")).await.unwrap_err();
    /// assert_eq!(late.kind(), ErrorKind::Reopen);
    /// # a.shutdown().await.unwrap();
    /// # b.shutdown().await.unwrap();
    /// # });
    /// ```
    pub async fn close(&self) -> Result<()> {
        {
            let mut core = self.inner.core.lock();
            core.check_stream(self.id, self.epoch)?;
            if let Some(s) = core.streams.get_mut(&self.id) {
                s.status = StreamStatus::Closed;
            }
        }
        self.inner.flush_all().await?;
        self.inner
            .meta
            .commit(Change::CloseStream {
                stream: self.id,
                epoch: self.epoch,
                node: self.inner.node,
                node_epoch: self.inner.node_epoch,
            })
            .await?;
        tracing::info!(stream = %self.id, epoch = %self.epoch, "stream closed");
        Ok(())
    }
}
