//! Range GETs in flight, by object, so that a read of bytes that a running GET will return
//! joins it instead of sending another.
//!
//! ```text
//! ranges(object) = [(range, weak handle of the shared GET future), ...]
//!   join(object, wanted)  ─► the first live GET whose range covers `wanted`, else None
//!   insert(object, range, get) ─► recorded (dead handles of that object pruned)
//! ```
//!
//! Entries hold weak handles: a GET stays joinable while someone still holds its future (the
//! block fetches sliced from it, the read-ahead task decoding a whole object), and its bytes
//! are freed as soon as the last holder drops it, whatever the map holds. Dead handles are
//! pruned whenever their object is looked at, and the whole map when it grows past
//! [`PRUNE_AT`] objects, so it stays as small as the set of GETs in flight.

use std::collections::HashMap;
use std::ops::Range;

use bytes::Bytes;
use futures::future::{BoxFuture, Shared, WeakShared};
use parking_lot::Mutex;

use crate::error::Result;
use crate::types::ObjectId;

/// A GET's future, shared by every read that wants some of its bytes.
pub(crate) type SharedGet = Shared<GetFuture>;

type GetFuture = BoxFuture<'static, Result<Bytes>>;

/// The GETs of one object: each range read and a weak handle of its future.
type ObjectGets = Vec<(Range<u64>, WeakShared<GetFuture>)>;

/// Objects tracked before the whole map is swept for dead handles.
const PRUNE_AT: usize = 256;

/// The GETs in flight. See the module docs.
#[derive(Default)]
pub(crate) struct InFlight {
    gets: Mutex<HashMap<u64, ObjectGets>>,
}

impl InFlight {
    /// A live GET of `object` whose range covers `wanted`: its range and future.
    pub(crate) fn join(
        &self,
        object: ObjectId,
        wanted: &Range<u64>,
    ) -> Option<(Range<u64>, SharedGet)> {
        let mut gets = self.gets.lock();
        let list = gets.get_mut(&object.0)?;
        let mut found = None;
        list.retain(|(range, weak)| match weak.upgrade() {
            Some(get) => {
                if found.is_none() && range.start <= wanted.start && wanted.end <= range.end {
                    found = Some((range.clone(), get));
                }
                true
            }
            None => false,
        });
        if list.is_empty() {
            gets.remove(&object.0);
        }
        found
    }

    /// Live GETs of `object` that together cover `wanted`, in order, each starting where the
    /// previous one ends (a block that straddles two parts of a split whole-object read); at
    /// most `max` of them.
    pub(crate) fn join_span(
        &self,
        object: ObjectId,
        wanted: &Range<u64>,
        max: usize,
    ) -> Option<Vec<(Range<u64>, SharedGet)>> {
        let gets = self.gets.lock();
        let list = gets.get(&object.0)?;
        let mut out = Vec::new();
        let mut at = wanted.start;
        while at < wanted.end {
            if out.len() == max {
                return None;
            }
            let (range, get) = list.iter().find_map(|(range, weak)| {
                if range.start <= at && at < range.end {
                    weak.upgrade().map(|get| (range.clone(), get))
                } else {
                    None
                }
            })?;
            at = range.end;
            out.push((range, get));
        }
        Some(out)
    }

    /// Records `get`, a GET of `range` of `object`.
    pub(crate) fn insert(&self, object: ObjectId, range: Range<u64>, get: &SharedGet) {
        let Some(weak) = get.downgrade() else {
            // Already resolved: nothing left to join.
            return;
        };
        let mut gets = self.gets.lock();
        if gets.len() >= PRUNE_AT {
            gets.retain(|_, list| {
                list.retain(|(_, w)| w.upgrade().is_some());
                !list.is_empty()
            });
        }
        let list = gets.entry(object.0).or_default();
        list.retain(|(_, w)| w.upgrade().is_some());
        list.push((range, weak));
    }

    #[cfg(test)]
    fn objects(&self) -> usize {
        self.gets.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use futures::FutureExt;

    use super::*;

    fn get(bytes: &'static [u8]) -> SharedGet {
        async move { Ok(Bytes::from_static(bytes)) }
            .boxed()
            .shared()
    }

    #[test]
    fn a_read_inside_a_running_get_joins_it() {
        let inflight = InFlight::default();
        let g = get(b"0123456789");
        inflight.insert(ObjectId(1), 100..110, &g);
        let (range, joined) = inflight.join(ObjectId(1), &(102..105)).unwrap();
        assert_eq!(range, 100..110);
        assert_eq!(
            futures::executor::block_on(joined).unwrap(),
            Bytes::from_static(b"0123456789")
        );
    }

    #[test]
    fn a_read_that_sticks_out_of_every_get_joins_none() {
        let inflight = InFlight::default();
        let g = get(b"0123456789");
        inflight.insert(ObjectId(1), 100..110, &g);
        assert!(inflight.join(ObjectId(1), &(95..105)).is_none());
        assert!(inflight.join(ObjectId(1), &(105..111)).is_none());
        assert!(inflight.join(ObjectId(2), &(102..105)).is_none());
    }

    #[test]
    fn a_read_across_two_adjacent_gets_joins_both() {
        let inflight = InFlight::default();
        let (a, b) = (get(b"01234"), get(b"56789"));
        inflight.insert(ObjectId(1), 0..5, &a);
        inflight.insert(ObjectId(1), 5..10, &b);
        let span = inflight.join_span(ObjectId(1), &(3..7), 2).unwrap();
        let ranges: Vec<_> = span.iter().map(|(r, _)| r.clone()).collect();
        assert_eq!(ranges, vec![0..5, 5..10]);
        assert!(
            inflight.join_span(ObjectId(1), &(3..11), 2).is_none(),
            "past the last GET"
        );
        assert!(
            inflight.join_span(ObjectId(1), &(3..7), 1).is_none(),
            "more parts than allowed"
        );
    }

    #[test]
    fn a_get_nobody_holds_any_more_is_forgotten() {
        let inflight = InFlight::default();
        let g = get(b"0123456789");
        inflight.insert(ObjectId(1), 0..10, &g);
        drop(g);
        assert!(inflight.join(ObjectId(1), &(0..5)).is_none());
        assert_eq!(inflight.objects(), 0);
    }
}
