//! Gates: hold the calls a filter picks until the test lets them through, one at a time.
//!
//! A held call is counted as it arrives ([`Gate::wait_for_arrival`] waits for the next one) and
//! waits for a permit ([`Gate::release`] hands out one). [`Gate::open`], or dropping the
//! [`Gate`], lets every held and later call through, so a test that ends early never leaves a
//! call hanging.

use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::{watch, Semaphore};

use super::fault::{CallFilter, OpKind};

/// The shared half of a gate: the store consults it on every call.
#[derive(Debug)]
pub(crate) struct GateState {
    filter: CallFilter,
    /// Calls that arrived so far.
    arrivals: watch::Sender<u64>,
    /// Arrivals that `wait_for_arrival` has returned for.
    seen: Mutex<u64>,
    /// One permit lets one held call through; closed means open.
    permits: Semaphore,
}

impl GateState {
    pub(crate) fn new(filter: CallFilter) -> Self {
        GateState {
            filter,
            arrivals: watch::channel(0).0,
            seen: Mutex::new(0),
            permits: Semaphore::new(0),
        }
    }

    pub(crate) fn is_open(&self) -> bool {
        self.permits.is_closed()
    }

    pub(crate) fn matches(&self, op: OpKind, key: &str) -> bool {
        !self.is_open() && self.filter.matches(op, key)
    }

    /// Holds a call until a permit comes or the gate opens.
    pub(crate) async fn pass(&self) {
        self.arrivals.send_modify(|n| *n += 1);
        if let Ok(permit) = self.permits.acquire().await {
            permit.forget();
        }
    }
}

/// Holds calls of one kind (and key prefix) until released. Made by
/// [`FaultyObjectStore::gate`](super::FaultyObjectStore::gate); opens when dropped.
#[derive(Debug)]
pub struct Gate {
    state: Arc<GateState>,
}

impl Gate {
    pub(crate) fn new(state: Arc<GateState>) -> Self {
        Gate { state }
    }

    /// Waits until a call arrives at the gate that no earlier `wait_for_arrival` returned for
    /// (the call may already have been released since).
    pub async fn wait_for_arrival(&self) {
        let target = {
            let mut seen = self.state.seen.lock();
            *seen += 1;
            *seen
        };
        let mut arrivals = self.state.arrivals.subscribe();
        // The sender lives in `self.state`, so the channel cannot close while we wait.
        let _ = arrivals.wait_for(|n| *n >= target).await;
    }

    /// How many calls have arrived so far.
    pub fn arrivals(&self) -> u64 {
        *self.state.arrivals.borrow()
    }

    /// Lets one held call through (or the next one to arrive, if none is held).
    pub fn release(&self) {
        self.state.permits.add_permits(1);
    }

    /// Lets every held and later call through; the gate is gone.
    pub fn open(&self) {
        self.state.permits.close();
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.open();
    }
}
