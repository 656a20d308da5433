//! Retention: where each stream's start offset should move to, by size and by age.
//!
//! A stream's data is the sequence of its object parts (the manifest's per-stream index), and
//! trimming is at part granularity: the new start is the first offset of the oldest part that
//! must stay, so a stream keeps at least what its limits ask.
//!
//! - **By size**: parts are summed from the newest; the oldest part needed to reach `max_bytes`
//!   stays. A part's bytes are estimated as its object's size times its share of the object's
//!   records (the manifest keeps no bytes per range).
//! - **By age**: parts are checked from the oldest; a part whose newest batch has a
//!   `base_timestamp` older than `now - max_age_ms` goes. Checking reads the part's last block
//!   (two range GETs); the answer is remembered per object, so a part is read once.
//!
//! The compactor commits the result as a `TrimStream` under the stream's current epoch; the data
//! below it is then dropped by compaction like any trimmed data.

use std::collections::{BTreeMap, BTreeSet};

use objstream::manifest::{ManifestState, StreamMeta, StreamStatus};
use objstream::{Epoch, ObjectId, Offset, Result, StreamId};

use crate::settings::{CompactorSettings, Retention};
use crate::source::ObjectAccess;

/// Most parts whose age one stream checks per pass.
const MAX_AGE_CHECKS_PER_STREAM: usize = 64;

/// A trim to commit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Trim {
    pub(crate) stream: StreamId,
    pub(crate) epoch: Epoch,
    pub(crate) new_start: Offset,
}

/// The newest batch timestamp of each (object, stream) part checked so far.
#[derive(Debug, Default)]
pub(crate) struct Ages {
    newest: BTreeMap<(ObjectId, StreamId), i64>,
}

impl Ages {
    /// Forgets objects that left the manifest.
    pub(crate) fn retain_in(&mut self, state: &ManifestState) {
        self.newest.retain(|(o, _), _| state.object(*o).is_some());
    }
}

/// The trims retention asks for in `state`.
pub(crate) async fn trims(
    state: &ManifestState,
    settings: &CompactorSettings,
    access: &ObjectAccess,
    now_ms: u64,
    ages: &mut Ages,
) -> Result<Vec<Trim>> {
    let mut out = Vec::new();
    for s in state.streams() {
        let retention = settings.retention_of(s.id);
        if s.status == StreamStatus::Deleted || retention.is_unlimited() || s.objects.is_empty() {
            continue;
        }
        let parts = parts(state, s);
        let by_size = by_size(&parts, &retention);
        let by_age = match retention.max_age_ms {
            Some(max_age) => {
                let cutoff = i64::try_from(now_ms.saturating_sub(max_age)).unwrap_or(i64::MAX);
                by_age(&parts, s.id, cutoff, access, ages).await?
            }
            None => None,
        };
        let new_start = by_size.into_iter().chain(by_age).max();
        if let Some(new_start) = new_start.filter(|n| *n > s.start && *n <= s.end) {
            out.push(Trim {
                stream: s.id,
                epoch: s.epoch,
                new_start,
            });
        }
    }
    Ok(out)
}

/// One part of a stream: `[start, end)` in `object`, with its estimated bytes.
#[derive(Clone, Copy, Debug)]
struct Part {
    object: ObjectId,
    object_size: u64,
    start: Offset,
    end: Offset,
    bytes: u64,
}

fn parts(state: &ManifestState, s: &StreamMeta) -> Vec<Part> {
    s.objects
        .iter()
        .filter(|(_, p)| p.end > s.start)
        .map(|(start, p)| {
            let records = p.end.get() - start.get();
            let total = state.object(p.object).map_or(records, |o| {
                o.ranges.iter().map(|r| r.end.get() - r.start.get()).sum()
            });
            let bytes = if total == 0 {
                0
            } else {
                ((u128::from(p.size) * u128::from(records)) / u128::from(total)) as u64
            };
            Part {
                object: p.object,
                object_size: p.size,
                start: *start,
                end: p.end,
                bytes,
            }
        })
        .collect()
}

/// The start of the oldest part needed to keep `max_bytes`; `None` when everything is needed.
fn by_size(parts: &[Part], retention: &Retention) -> Option<Offset> {
    let max_bytes = retention.max_bytes?;
    let mut kept = 0u64;
    for p in parts.iter().rev() {
        kept = kept.saturating_add(p.bytes);
        if kept >= max_bytes {
            return Some(p.start);
        }
    }
    None
}

/// The start of the oldest part whose newest batch is at or after `cutoff`, or the end of the
/// last part when every part is older.
async fn by_age(
    parts: &[Part],
    stream: StreamId,
    cutoff: i64,
    access: &ObjectAccess,
    ages: &mut Ages,
) -> Result<Option<Offset>> {
    let mut new_start = None;
    let mut checked = BTreeSet::new();
    for p in parts {
        let key = (p.object, stream);
        let newest = match ages.newest.get(&key) {
            Some(t) => *t,
            None => {
                if checked.len() >= MAX_AGE_CHECKS_PER_STREAM {
                    break;
                }
                checked.insert(p.object);
                let t = newest_timestamp(access, stream, p).await?;
                ages.newest.insert(key, t);
                t
            }
        };
        if newest >= cutoff {
            return Ok(Some(p.start));
        }
        new_start = Some(p.end);
    }
    Ok(new_start)
}

/// The `base_timestamp` of the last batch of a part.
async fn newest_timestamp(access: &ObjectAccess, stream: StreamId, p: &Part) -> Result<i64> {
    let index = access.index(p.object, p.object_size).await?;
    // The block holding the part's last offset; an index without it is reported as corruption
    // by the read.
    let from = index
        .entries_for(stream, Offset(p.end.get() - 1), p.end)
        .last()
        .map_or(p.start, |e| e.start.max(p.start));
    let (batches, _) = access
        .batches(p.object, &index, stream, from, p.end)
        .await?;
    Ok(batches.last().map_or(i64::MAX, |b| b.batch.base_timestamp))
}
