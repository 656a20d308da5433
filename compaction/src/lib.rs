//! The objstream compactor.
//!
//! Uploads leave many small stream set objects behind. The compactor, one active per object store
//! prefix and fenced by a compactor epoch in the manifest, keeps the object count per stream
//! logarithmic in the stream's size and reclaims trimmed data:
//!
//! 1. **Plan** from the manifest: merge small stream set objects; split streams whose data passes
//!    a size into stream objects; merge small contiguous stream objects of one stream up to a
//!    target size; drop data below each stream's trim offset.
//! 2. **Execute**: read the source objects (through the same bandwidth limiter as catch-up reads),
//!    write the new objects, and commit the replacement as one manifest record that removes the
//!    old ids and adds the new objects. A plan that conflicts with a concurrent commit is
//!    re-planned, never forced.
//! 3. **Collect garbage**: replaced objects, and uploads that were never committed, are deleted
//!    only once the manifest no longer references them *and* a grace period has passed, so
//!    readers that still hold the old layout finish their reads.
//!
//! This crate holds the design only until its issue is taken up; the manifest already records
//! object replacements so that nothing else needs to change when it lands.
