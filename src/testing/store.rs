//! [`FaultyObjectStore`]: an [`ObjectStore`] that forwards to another and, on the way, holds,
//! delays, fails or corrupts the calls a test picks, and records every call.
//!
//! Each call goes through the same steps:
//!
//! 1. classify it ([`OpKind`]) and name its key;
//! 2. wait at every open [`Gate`] that picks it;
//! 3. decide its fault: the first [`FaultRule`] that picks it, else the [`RandomFaults`] coin;
//! 4. sleep the configured latency (plus a [`Fault::Latency`]);
//! 5. fail it, or forward it (and then cut a read short, or report an error for a write that
//!    landed), and record the [`Call`].

use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, ObjectStoreExt, PutMultipartOptions, PutOptions, PutPayload, PutResult,
    RenameOptions, Result, UploadPart,
};
use parking_lot::Mutex;

use super::fault::{Call, CallFilter, Fault, FaultRule, OpKind, RandomFaults, SeededRng};
use super::gate::{Gate, GateState};

/// The name inner errors are reported under.
const STORE: &str = "FaultyObjectStore";

/// Wraps any object store to inject faults and count requests. Cheap to clone; clones share
/// their rules, gates and record.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use std::sync::Arc;
/// use object_store::{ObjectStore, ObjectStoreExt};
/// use objstream::testing::{Fault, FaultRule, FaultyObjectStore, OpKind};
///
/// let faulty = FaultyObjectStore::new(Arc::new(object_store::memory::InMemory::new()));
/// faulty.inject(FaultRule::new(Fault::SlowDown).on(OpKind::Put));
/// let key = "a/b".into();
/// let err = faulty.put(&key, "x".into()).await.unwrap_err();
/// assert!(err.to_string().contains("503 Slow Down"));
/// faulty.put(&key, "x".into()).await.unwrap(); // the rule picked one call only
/// assert_eq!(faulty.count(OpKind::Put), 2);
/// # });
/// ```
#[derive(Clone)]
pub struct FaultyObjectStore {
    shared: Arc<Shared>,
}

struct Shared {
    inner: Arc<dyn ObjectStore>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    rules: Vec<FaultRule>,
    random: Option<(RandomFaults, SeededRng)>,
    latency: Duration,
    gates: Vec<Arc<GateState>>,
    calls: Vec<Call>,
}

impl FaultyObjectStore {
    /// Wraps `inner`. With no rules, gates or latency it only records calls.
    pub fn new(inner: Arc<dyn ObjectStore>) -> Self {
        FaultyObjectStore {
            shared: Arc::new(Shared {
                inner,
                state: Mutex::new(State::default()),
            }),
        }
    }

    /// The wrapped store (calls to it are neither faulted nor recorded).
    pub fn inner(&self) -> &Arc<dyn ObjectStore> {
        &self.shared.inner
    }

    /// Adds a rule. Rules are consulted in the order they were added; the first that picks a
    /// call decides its fault.
    pub fn inject(&self, rule: FaultRule) {
        self.shared.state.lock().rules.push(rule);
    }

    /// Fails the next `n` calls of any kind with `fault`.
    pub fn fail_next(&self, n: u64, fault: Fault) {
        self.inject(FaultRule::new(fault).times(n));
    }

    /// Injects faults at random from now on (replacing an earlier random setting).
    pub fn set_random_faults(&self, random: RandomFaults) {
        let rng = SeededRng::new(random.seed);
        self.shared.state.lock().random = Some((random, rng));
    }

    /// Makes every call wait `latency` before it goes on (zero: no wait).
    pub fn set_latency(&self, latency: Duration) {
        self.shared.state.lock().latency = latency;
    }

    /// Removes every rule, the random faults and the latency. Gates stay.
    pub fn clear_faults(&self) {
        let mut state = self.shared.state.lock();
        state.rules.clear();
        state.random = None;
        state.latency = Duration::ZERO;
    }

    /// How many calls the rules still will pick.
    pub fn pending_faults(&self) -> u64 {
        self.shared
            .state
            .lock()
            .rules
            .iter()
            .map(FaultRule::remaining)
            .sum()
    }

    /// Holds every call of kind `op` until the returned gate releases it.
    pub fn gate(&self, op: OpKind) -> Gate {
        self.gate_matching(CallFilter {
            op: Some(op),
            prefix: None,
        })
    }

    /// Holds every call `filter` picks until the returned gate releases it.
    pub fn gate_matching(&self, filter: CallFilter) -> Gate {
        let state = Arc::new(GateState::new(filter));
        self.shared.state.lock().gates.push(state.clone());
        Gate::new(state)
    }

    /// Every call recorded so far, in the order they ended.
    pub fn calls(&self) -> Vec<Call> {
        self.shared.state.lock().calls.clone()
    }

    /// How many calls of kind `op` were recorded.
    pub fn count(&self, op: OpKind) -> usize {
        self.count_where(|c| c.op == op)
    }

    /// How many recorded calls satisfy `pick`.
    pub fn count_where(&self, pick: impl Fn(&Call) -> bool) -> usize {
        self.shared
            .state
            .lock()
            .calls
            .iter()
            .filter(|c| pick(c))
            .count()
    }

    /// How many calls got a fault injected.
    pub fn injected(&self) -> usize {
        self.count_where(|c| c.injected.is_some())
    }

    /// Forgets the recorded calls.
    pub fn reset_calls(&self) {
        self.shared.state.lock().calls.clear();
    }
}

impl Shared {
    /// Steps 2 to 4: gates, the fault decision, latency. Returns the fault to enact.
    async fn before(&self, op: OpKind, key: &str) -> Option<Fault> {
        let (gates, latency) = {
            let mut state = self.state.lock();
            state.gates.retain(|g| !g.is_open());
            let gates: Vec<_> = state
                .gates
                .iter()
                .filter(|g| g.matches(op, key))
                .cloned()
                .collect();
            (gates, state.latency)
        };
        for gate in gates {
            gate.pass().await;
        }
        let fault = self.decide(op, key);
        let delay = match fault {
            Some(Fault::Latency(extra)) => latency + extra,
            _ => latency,
        };
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        fault
    }

    fn decide(&self, op: OpKind, key: &str) -> Option<Fault> {
        let mut state = self.state.lock();
        if let Some(fault) = state.rules.iter_mut().find_map(|r| r.take(op, key)) {
            state.rules.retain(|r| r.remaining() > 0);
            return Some(fault);
        }
        let (random, rng) = state.random.as_mut()?;
        if !random.filter.matches(op, key) {
            return None;
        }
        let coin = rng.next_f64();
        let pick = rng.next_u64();
        let eligible: Vec<Fault> = random
            .faults
            .iter()
            .copied()
            .filter(|f| f.applies_to(op))
            .collect();
        if coin >= random.probability || eligible.is_empty() {
            return None;
        }
        Some(eligible[(pick % eligible.len() as u64) as usize])
    }

    fn record<T>(&self, op: OpKind, key: &str, injected: Option<Fault>, result: &Result<T>) {
        self.state.lock().calls.push(Call {
            op,
            key: key.to_string(),
            injected,
            error: result.as_ref().err().map(|e| e.to_string()),
        });
    }
}

/// The error a fault that fails a call reports.
fn injected_error(fault: Fault, op: OpKind, key: &str) -> object_store::Error {
    let message = fault.message().unwrap_or("injected fault");
    let source = format!("injected into {op:?} {key}: {message}").into();
    match fault {
        Fault::ConditionalConflict => object_store::Error::AlreadyExists {
            path: key.to_string(),
            source,
        },
        _ => object_store::Error::Generic {
            store: STORE,
            source,
        },
    }
}

/// The error of a fault that fails the call before it reaches the inner store.
fn early_error(fault: Option<Fault>, op: OpKind, key: &str) -> Option<object_store::Error> {
    match fault? {
        f @ (Fault::SlowDown
        | Fault::Timeout
        | Fault::ConnectionReset
        | Fault::ConditionalConflict) => Some(injected_error(f, op, key)),
        _ => None,
    }
}

/// A get result that claims its range but carries only the first half of the bytes.
async fn cut_short(mut got: GetResult) -> Result<GetResult> {
    let meta = got.meta.clone();
    let range = got.range.clone();
    let attributes = std::mem::take(&mut got.attributes);
    let extensions = std::mem::take(&mut got.extensions);
    let bytes = got.bytes().await?;
    let short: Bytes = bytes.slice(..bytes.len() / 2);
    Ok(GetResult {
        payload: GetResultPayload::Stream(futures::stream::once(async move { Ok(short) }).boxed()),
        meta,
        range,
        attributes,
        extensions,
    })
}

impl fmt::Display for FaultyObjectStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultyObjectStore({})", self.shared.inner)
    }
}

impl fmt::Debug for FaultyObjectStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.shared.state.lock();
        f.debug_struct("FaultyObjectStore")
            .field("inner", &self.shared.inner.to_string())
            .field("rules", &state.rules)
            .field("random", &state.random.as_ref().map(|(r, _)| r))
            .field("latency", &state.latency)
            .field("calls", &state.calls.len())
            .finish()
    }
}

#[async_trait]
impl ObjectStore for FaultyObjectStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        let (op, key) = (OpKind::Put, location.as_ref());
        let fault = self.shared.before(op, key).await;
        let result = match early_error(fault, op, key) {
            Some(e) => Err(e),
            None => {
                let put = self.shared.inner.put_opts(location, payload, opts).await;
                match (fault, put) {
                    (Some(f @ Fault::PutSucceedsButErrors), Ok(_)) => {
                        Err(injected_error(f, op, key))
                    }
                    (_, put) => put,
                }
            }
        };
        self.shared.record(op, key, fault, &result);
        result
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        let (op, key) = (OpKind::PutMultipart, location.as_ref());
        let fault = self.shared.before(op, key).await;
        let result = match early_error(fault, op, key) {
            Some(e) => Err(e),
            None => self
                .shared
                .inner
                .put_multipart_opts(location, opts)
                .await
                .map(|upload| {
                    Box::new(RecordedUpload {
                        shared: self.shared.clone(),
                        key: key.to_string(),
                        upload,
                    }) as Box<dyn MultipartUpload>
                }),
        };
        self.shared.record(op, key, fault, &result);
        result
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let op = if options.head {
            OpKind::Head
        } else if options.range.is_some() {
            OpKind::GetRange
        } else {
            OpKind::Get
        };
        let key = location.as_ref();
        let fault = self.shared.before(op, key).await;
        let result = match early_error(fault, op, key) {
            Some(e) => Err(e),
            None => {
                let got = self.shared.inner.get_opts(location, options).await;
                match (fault, got) {
                    (Some(Fault::TruncatedRead), Ok(got)) => cut_short(got).await,
                    (_, got) => got,
                }
            }
        };
        self.shared.record(op, key, fault, &result);
        result
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        // One recorded range GET per range, so that every range can be faulted on its own.
        let mut out = Vec::with_capacity(ranges.len());
        for range in ranges {
            out.push(self.get_range(location, range.clone()).await?);
        }
        Ok(out)
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        let shared = self.shared.clone();
        locations
            .then(move |location| {
                let shared = shared.clone();
                async move {
                    let location = location?;
                    let (op, key) = (OpKind::Delete, location.as_ref());
                    let fault = shared.before(op, key).await;
                    let result = match early_error(fault, op, key) {
                        Some(e) => Err(e),
                        None => shared.inner.delete(&location).await,
                    };
                    shared.record(op, key, fault, &result);
                    result.map(|()| location)
                }
            })
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.faulted_list(prefix, None)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        self.faulted_list(prefix, Some(offset.clone()))
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        let op = OpKind::List;
        let key = prefix.map(|p| p.to_string()).unwrap_or_default();
        let fault = self.shared.before(op, &key).await;
        let result = match early_error(fault, op, &key) {
            Some(e) => Err(e),
            None => self.shared.inner.list_with_delimiter(prefix).await,
        };
        self.shared.record(op, &key, fault, &result);
        result
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        let (op, key) = (OpKind::Copy, to.as_ref());
        let fault = self.shared.before(op, key).await;
        let result = match early_error(fault, op, key) {
            Some(e) => Err(e),
            None => self.shared.inner.copy_opts(from, to, options).await,
        };
        self.shared.record(op, key, fault, &result);
        result
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        let (op, key) = (OpKind::Rename, to.as_ref());
        let fault = self.shared.before(op, key).await;
        let result = match early_error(fault, op, key) {
            Some(e) => Err(e),
            None => self.shared.inner.rename_opts(from, to, options).await,
        };
        self.shared.record(op, key, fault, &result);
        result
    }
}

impl FaultyObjectStore {
    /// A LIST: gates, latency and the fault apply before the first page; the call is recorded
    /// with the outcome of that first step (errors of later pages come through unrecorded).
    fn faulted_list(
        &self,
        prefix: Option<&Path>,
        offset: Option<Path>,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        let shared = self.shared.clone();
        let prefix = prefix.cloned();
        futures::stream::once(async move {
            let op = OpKind::List;
            let key = prefix.as_ref().map(|p| p.to_string()).unwrap_or_default();
            let fault = shared.before(op, &key).await;
            let result: Result<()> = match early_error(fault, op, &key) {
                Some(e) => Err(e),
                None => Ok(()),
            };
            shared.record(op, &key, fault, &result);
            match result {
                Ok(()) => match offset {
                    Some(offset) => shared.inner.list_with_offset(prefix.as_ref(), &offset),
                    None => shared.inner.list(prefix.as_ref()),
                },
                Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
            }
        })
        .flatten()
        .boxed()
    }
}

/// A multipart upload whose parts and completion are recorded (and can be faulted, except
/// that a part is recorded when it is handed over, before it is sent).
struct RecordedUpload {
    shared: Arc<Shared>,
    key: String,
    upload: Box<dyn MultipartUpload>,
}

impl fmt::Debug for RecordedUpload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordedUpload")
            .field("key", &self.key)
            .finish()
    }
}

#[async_trait]
impl MultipartUpload for RecordedUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let part = self.upload.put_part(data);
        let shared = self.shared.clone();
        let key = self.key.clone();
        Box::pin(async move {
            let op = OpKind::PutPart;
            let fault = shared.before(op, &key).await;
            let result = match early_error(fault, op, &key) {
                Some(e) => Err(e),
                None => part.await,
            };
            shared.record(op, &key, fault, &result);
            result
        })
    }

    async fn complete(&mut self) -> Result<PutResult> {
        let op = OpKind::CompleteMultipart;
        let fault = self.shared.before(op, &self.key).await;
        let result = match early_error(fault, op, &self.key) {
            Some(e) => Err(e),
            None => self.upload.complete().await,
        };
        self.shared.record(op, &self.key, fault, &result);
        result
    }

    async fn abort(&mut self) -> Result<()> {
        self.upload.abort().await
    }
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
