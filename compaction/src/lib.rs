//! The objstream compactor.
//!
//! Uploads leave many small stream set objects behind. The compactor, one active per object store
//! prefix and fenced by a compactor epoch in the manifest, keeps the object count per stream
//! logarithmic in the stream's size and reclaims trimmed data:
//!
//! 1. **Retention** (module `retention`): streams past their size or age limit are trimmed with a
//!    manifest `TrimStream`.
//! 2. **Plan** ([`plan`]) from the manifest: delete objects holding only trimmed or deleted data;
//!    split large stream set objects into stream objects; merge small stream set objects of one
//!    size tier, splitting out streams with enough data in them; merge neighbouring stream objects
//!    of one stream and tier; rewrite objects that are mostly trimmed.
//! 3. **Execute** (module `execute`): read each source object whole with one GET (charged to a
//!    bandwidth limiter), write the new objects, and commit the replacement as one manifest
//!    `ReplaceObjects` record that removes the old ids and adds the new objects. A plan that
//!    conflicts with a concurrent commit is planned again, never forced.
//! 4. **Collect garbage** ([`gc`]): replaced objects, and uploads that were never committed, are
//!    deleted only once the manifest no longer references them *and* a grace period has passed,
//!    so readers that still hold the old layout finish their reads.
//!
//! It reports what it does (passes by outcome, bytes read and written, objects replaced and
//! collected, time throttled) through the `metrics` facade: see [`metrics`].
//!
//! The compactor reads objects, not the stores' caches, and runs on its own tasks: appends and
//! tail reads never wait for it. It runs beside a store in the same process or as a process of
//! its own; either way it talks to the store only through the manifest and the object store.
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use std::sync::Arc;
//! use object_store::ObjectStore;
//! use objstream::NodeId;
//! use objstream_compaction::{Compactor, CompactorComponents, CompactorSettings};
//!
//! let objects: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
//! let components = CompactorComponents::new(objects.clone(), "cluster-a", NodeId(1_000));
//! let first = Compactor::open(CompactorSettings::default(), components).await?;
//! let report = first.run_pass().await?;
//! assert!(report.committed.is_empty(), "nothing to compact yet");
//!
//! // A second compactor takes over; the first is fenced for good.
//! let components = CompactorComponents::new(objects, "cluster-a", NodeId(1_001));
//! let second = Compactor::open(CompactorSettings::default(), components).await?;
//! assert!(first.run_pass().await.unwrap_err().is_fenced());
//! second.run_pass().await?;
//! # Ok::<_, objstream::Error>(()) }).unwrap();
//! ```

pub mod clock;
mod compactor;
mod execute;
pub mod gc;
pub mod limiter;
pub mod metrics;
pub mod plan;
mod retention;
pub mod settings;
mod source;

pub use clock::{Clock, ManualClock, SystemClock};
pub use compactor::{Compactor, CompactorComponents, CompactorTask, Failpoint, PassReport, Step};
pub use gc::GcReport;
pub use limiter::Bandwidth;
pub use plan::{Plan, PlanKind};
pub use settings::{CompactorSettings, Retention};
