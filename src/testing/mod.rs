//! Tools for testing code that talks to object storage: a wrapper that injects the faults real
//! stores produce, and records every request.
//!
//! [`FaultyObjectStore`] wraps any `Arc<dyn ObjectStore>` and can
//!
//! - fail the next N calls, optionally only of one [`OpKind`] and under one key prefix
//!   ([`FaultRule`]), with a [`Fault`]: `503 Slow Down`, a timeout, a connection reset, an
//!   `AlreadyExists` that wrote nothing (S3's 409 on racing conditional PUTs), a read cut short,
//!   or a PUT that lands but reports an error (the ambiguous write);
//! - add latency to every call, or to picked calls ([`Fault::Latency`]);
//! - inject faults at random from a seeded generator ([`RandomFaults`]), so a failing run can be
//!   replayed from its seed;
//! - hold calls at a [`Gate`] until the test releases them one by one, to force an interleaving;
//! - record every call ([`Call`]: kind, key, injected fault, error) so a test can count requests.
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use std::sync::Arc;
//! use object_store::{ObjectStore, ObjectStoreExt};
//! use objstream::testing::{Fault, FaultyObjectStore, OpKind, RandomFaults};
//!
//! let faulty = FaultyObjectStore::new(Arc::new(object_store::memory::InMemory::new()));
//! faulty.set_random_faults(RandomFaults::new(7, 0.5, [Fault::Timeout]).on(OpKind::Put));
//! let mut failed = 0;
//! for i in 0..20 {
//!     if faulty.put(&format!("k/{i}").into(), "v".into()).await.is_err() {
//!         failed += 1;
//!     }
//! }
//! assert_eq!(faulty.injected(), failed);
//! assert!(failed > 0 && failed < 20);
//! # });
//! ```

mod fault;
mod gate;
mod store;

pub use fault::{Call, CallFilter, Fault, FaultRule, OpKind, RandomFaults};
pub use gate::Gate;
pub use store::FaultyObjectStore;
