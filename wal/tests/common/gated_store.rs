//! Test support for the object WAL: a store wrapper that gates, hooks, faults and counts calls,
//! and small functions that open WALs on it.
//!
//! - [`GatedStore::hold_put`]: the next PUT of a key waits until the test releases it, and the
//!   test can wait until it reached the store and until it was applied.
//! - [`GatedStore::after_list`] and [`GatedStore::before_put`]: run a step of the test at an
//!   exact point of another actor's protocol (after its LIST was taken, just before one of its
//!   creates is applied), so two actors interleave deterministically.
//! - [`GatedStore::fail_next`]: the next calls of a kind fail with a transient error.
//! - [`GatedStore::reverse_lists`]: LIST answers in reverse order.
//! - [`GatedStore::lose_next_put_response`]: the next PUT of a key is applied, then answered
//!   with a timeout (an ambiguous create).
#![allow(dead_code)]

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    ObjectStoreExt, PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
};
use objstream_wal::object::RetryPolicy;
use objstream_wal::{ObjectWal, ObjectWalIdentity, ObjectWalOptions, Wal, WalPosition};
use tokio::sync::watch;

/// A kind of store call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    Put,
    Get,
    List,
    Delete,
}

/// A step a test runs from inside another actor's store call.
pub type Hook = Box<dyn FnOnce() -> BoxFuture<'static, ()> + Send>;

/// A PUT held at the store until released.
#[derive(Clone)]
pub struct Gate(Arc<GateInner>);

struct GateInner {
    reached: watch::Sender<bool>,
    released: watch::Sender<bool>,
    applied: watch::Sender<bool>,
}

impl Gate {
    fn new() -> Gate {
        Gate(Arc::new(GateInner {
            reached: watch::channel(false).0,
            released: watch::channel(false).0,
            applied: watch::channel(false).0,
        }))
    }

    /// Waits until the PUT arrived at the store.
    pub async fn reached(&self) {
        let _ = self.0.reached.subscribe().wait_for(|v| *v).await;
    }

    /// Lets the PUT through.
    pub fn release(&self) {
        self.0.released.send_replace(true);
    }

    /// Waits until the PUT was applied (or refused) by the inner store.
    pub async fn applied(&self) {
        let _ = self.0.applied.subscribe().wait_for(|v| *v).await;
    }

    /// Lets the PUT through and waits until it was applied.
    pub async fn land(&self) {
        self.release();
        self.applied().await;
    }
}

#[derive(Default)]
struct Control {
    holds: HashMap<String, Gate>,
    before_put: HashMap<String, Hook>,
    after_list: Option<Hook>,
    faults: HashMap<Op, usize>,
    lose: HashMap<String, usize>,
    calls: HashMap<Op, usize>,
    puts: Vec<String>,
    reverse_lists: bool,
}

/// A store wrapper that gates, hooks, faults and counts calls. Clones share everything.
#[derive(Clone)]
pub struct GatedStore {
    inner: Arc<dyn ObjectStore>,
    control: Arc<Mutex<Control>>,
}

impl fmt::Debug for GatedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GatedStore({})", self.inner)
    }
}

impl fmt::Display for GatedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GatedStore({})", self.inner)
    }
}

fn transient(what: &str) -> object_store::Error {
    object_store::Error::Generic {
        store: "GatedStore",
        source: format!("injected: {what}").into(),
    }
}

impl GatedStore {
    /// A wrapper of `inner`.
    pub fn new(inner: Arc<dyn ObjectStore>) -> GatedStore {
        GatedStore {
            inner,
            control: Arc::new(Mutex::new(Control::default())),
        }
    }

    /// The wrapped store.
    pub fn inner(&self) -> Arc<dyn ObjectStore> {
        self.inner.clone()
    }

    /// This wrapper as a store to open WALs on.
    pub fn dyn_store(&self) -> Arc<dyn ObjectStore> {
        Arc::new(self.clone())
    }

    /// Holds the next PUT of `key` until the returned gate is released.
    pub fn hold_put(&self, key: &Path) -> Gate {
        let gate = Gate::new();
        self.control().holds.insert(key.to_string(), gate.clone());
        gate
    }

    /// Runs `hook` just before the next PUT of `key` is applied.
    pub fn before_put(&self, key: &Path, hook: Hook) {
        self.control().before_put.insert(key.to_string(), hook);
    }

    /// Runs `hook` after the next LIST was taken, before it is answered.
    pub fn after_list(&self, hook: Hook) {
        self.control().after_list = Some(hook);
    }

    /// Fails the next `n` calls of `op` with a transient error, before they reach the store.
    pub fn fail_next(&self, op: Op, n: usize) {
        *self.control().faults.entry(op).or_default() += n;
    }

    /// Cancels every pending injected failure.
    pub fn reset_faults(&self) {
        self.control().faults.clear();
    }

    /// Applies the next PUT of `key`, then answers it with a transient error.
    pub fn lose_next_put_response(&self, key: &Path) {
        *self.control().lose.entry(key.to_string()).or_default() += 1;
    }

    /// Answers every LIST in reverse order (stores do not promise any order).
    pub fn reverse_lists(&self) {
        self.control().reverse_lists = true;
    }

    /// Calls of `op` so far (faulted ones included).
    pub fn calls(&self, op: Op) -> usize {
        self.control().calls.get(&op).copied().unwrap_or(0)
    }

    /// Keys of every PUT so far, in order of arrival.
    pub fn puts(&self) -> Vec<String> {
        self.control().puts.clone()
    }

    fn control(&self) -> std::sync::MutexGuard<'_, Control> {
        self.control.lock().unwrap()
    }

    /// Counts a call of `op` and says whether it is to fail.
    fn enter(&self, op: Op) -> bool {
        let mut c = self.control();
        *c.calls.entry(op).or_default() += 1;
        match c.faults.get_mut(&op) {
            Some(n) if *n > 0 => {
                *n -= 1;
                true
            }
            _ => false,
        }
    }
}

#[async_trait]
impl ObjectStore for GatedStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        let key = location.to_string();
        self.control().puts.push(key.clone());
        if self.enter(Op::Put) {
            return Err(transient("503 Slow Down"));
        }
        let gate = self.control().holds.remove(&key);
        if let Some(gate) = &gate {
            gate.0.reached.send_replace(true);
            let _ = gate.0.released.subscribe().wait_for(|v| *v).await;
        }
        let hook = self.control().before_put.remove(&key);
        if let Some(hook) = hook {
            hook().await;
        }
        let result = self.inner.put_opts(location, payload, opts).await;
        if let Some(gate) = gate {
            gate.0.applied.send_replace(true);
        }
        let lose = {
            let mut c = self.control();
            match c.lose.get_mut(&key) {
                Some(n) if *n > 0 => {
                    *n -= 1;
                    true
                }
                _ => false,
            }
        };
        if lose && result.is_ok() {
            return Err(transient("timeout after the PUT was applied"));
        }
        result
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        if self.enter(Op::Get) {
            return Err(transient("503 Slow Down"));
        }
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        let this = self.clone();
        locations
            .then(move |location| {
                let this = this.clone();
                async move {
                    let location = location?;
                    if this.enter(Op::Delete) {
                        return Err(transient("503 Slow Down"));
                    }
                    this.inner.delete(&location).await?;
                    Ok(location)
                }
            })
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        let this = self.clone();
        let prefix = prefix.cloned();
        stream::once(async move {
            if this.enter(Op::List) {
                return Err(transient("503 Slow Down"));
            }
            let mut listed: Vec<ObjectMeta> =
                this.inner.list(prefix.as_ref()).try_collect().await?;
            if this.control().reverse_lists {
                listed.reverse();
            }
            let hook = this.control().after_list.take();
            if let Some(hook) = hook {
                hook().await;
            }
            Ok(stream::iter(listed.into_iter().map(Ok)))
        })
        .try_flatten()
        .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

/// A fresh in-memory store behind a gated wrapper.
pub fn memory() -> GatedStore {
    GatedStore::new(Arc::new(InMemory::new()))
}

/// The WAL prefix the tests use.
pub fn prefix() -> Path {
    Path::from("objstream/wal/00000000000000000001")
}

/// Node 1's WAL, opened by node `actor` at `epoch` (its own epoch too).
pub fn identity(actor: u64, epoch: u64) -> ObjectWalIdentity {
    ObjectWalIdentity {
        owner: 1,
        epoch,
        actor,
        actor_epoch: epoch,
    }
}

/// Small objects, short linger, fast retries.
pub fn options() -> ObjectWalOptions {
    ObjectWalOptions {
        batch_bytes: 4 << 10,
        linger: Duration::from_millis(1),
        max_in_flight: 4,
        max_record_size: 64 << 10,
        replay_parallelism: 4,
        retry: RetryPolicy {
            initial_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(5),
            max_attempts: 20,
        },
        ..ObjectWalOptions::default()
    }
}

/// Options where every record is its own object.
pub fn one_record_per_object() -> ObjectWalOptions {
    ObjectWalOptions {
        batch_bytes: 1,
        ..options()
    }
}

/// Opens the test WAL on `store` as `identity` from `floor`.
pub async fn open_at(
    store: &GatedStore,
    identity: ObjectWalIdentity,
    floor: WalPosition,
    options: ObjectWalOptions,
) -> ObjectWal {
    ObjectWal::open(store.dyn_store(), prefix(), identity, floor, options)
        .await
        .unwrap()
}

/// A record of `len` bytes that says which record it is.
pub fn payload(i: u64, len: usize) -> Bytes {
    let mut v: Vec<u8> = (0..len).map(|j| (i as usize * 31 + j) as u8).collect();
    let tag = i.to_le_bytes();
    let n = tag.len().min(len);
    v[..n].copy_from_slice(&tag[..n]);
    Bytes::from(v)
}

/// The payloads `wal` replays.
pub async fn replayed(wal: &ObjectWal) -> Vec<Bytes> {
    wal.replay()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.payload)
        .collect()
}

/// The slots present under the test prefix, sorted.
pub async fn slots(store: &dyn ObjectStore) -> Vec<u64> {
    let mut slots: Vec<u64> = store
        .list(Some(&prefix()))
        .map_ok(|m| m.location.filename().unwrap().parse::<u64>().unwrap())
        .try_collect()
        .await
        .unwrap();
    slots.sort_unstable();
    slots
}

/// Waits until `condition` holds, checking every millisecond; panics after ten seconds.
pub async fn eventually<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never happened: {what}"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}
