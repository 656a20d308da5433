//! Read-ahead bookkeeping: which readers move sequentially, how far ahead to prefetch for each,
//! and which prefetched blocks were used or wasted.
//!
//! A reader is not an object here: fetches are stateless calls. A *cursor* stands for one: it
//! remembers where the last fetch from objects of a stream ended. A fetch that starts exactly
//! there continues that cursor (sequential); any other fetch starts a new cursor. Streams keep a
//! few cursors each (a tail reader and a replay of the same stream have one each), the least
//! recently used leaving first.
//!
//! Each cursor has a window in bytes (stored block sizes). Its second sequential fetch opens the
//! window at [`INITIAL_WINDOW`] — or its first, when that fetch read old data (more than one
//! object behind the newest: a scan, almost always; a lone point read of old data then costs up
//! to one initial window of waste, which the waste counter shows). After each fetch the read
//! path prefetches the blocks ahead of the cursor until the bytes prefetched and not yet used
//! fill the window, once a quarter of the window (or one maximal range read) is free. The
//! window:
//! - grows by a block's size, or half of itself if that is more, each time a fetch uses a
//!   prefetched block (so a cold reader reaches a large window within a few blocks), up to the
//!   cap;
//! - halves (down to [`MIN_WINDOW`]) each time a prefetched block leaves the memory tier before
//!   any fetch used it: the cache is too small for this much read-ahead.
//!
//! A whole-object prefetch does not know its blocks until its index arrives: it is counted as
//! outstanding by size ([`ReadAhead::reserve`]) until they are registered.
//!
//! The windows of every cursor kept, summed, are published as the
//! `objstream_read_ahead_window_bytes` gauge: the read-ahead the store is prepared to hold for
//! its sequential readers (a sum, not a maximum, because that is what memory must hold). A
//! cursor's window counts until the cursor is dropped for a newer one of its stream.
//!
//! One prefetch per cursor is planned at a time; the range reads it starts run on their own,
//! counted as outstanding until used or evicted. Every method takes the lock briefly and never
//! awaits.

use std::collections::HashMap;

use ::metrics::Gauge;
use objstream_cache::BlockKey;
use parking_lot::Mutex;

use crate::types::{Offset, StreamId};

/// The window a cursor opens with (on its second sequential fetch, or the first of a scan).
pub(crate) const INITIAL_WINDOW: u64 = 8 << 20;
/// The smallest window once open.
pub(crate) const MIN_WINDOW: u64 = 256 << 10;
/// Cursors kept per stream.
const CURSORS_PER_STREAM: usize = 8;
/// A prefetch is never planned for less than this.
const MIN_PLAN_BYTES: u64 = 64 << 10;

/// What to prefetch for one cursor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Plan {
    /// The cursor the prefetch is for.
    pub cursor: u64,
    /// Prefetch blocks holding offsets from here on.
    pub from: Offset,
    /// Up to this many stored bytes (blocks already cached count too).
    pub budget: u64,
}

#[derive(Debug)]
struct Cursor {
    id: u64,
    /// Where the last fetch from objects ended.
    next: Offset,
    window: u64,
    /// Prefetches were issued for blocks below this offset.
    planned_to: Offset,
    /// Prefetched bytes not yet used nor evicted.
    outstanding: u64,
    busy: bool,
    last_used: u64,
}

#[derive(Debug)]
struct Pending {
    stream: StreamId,
    cursor: u64,
    bytes: u64,
}

#[derive(Debug, Default)]
struct State {
    cursors: HashMap<StreamId, Vec<Cursor>>,
    pending: HashMap<BlockKey, Pending>,
    tick: u64,
    next_id: u64,
    /// The windows of every cursor, summed.
    windows: u64,
}

impl State {
    fn cursor(&mut self, stream: StreamId, id: u64) -> Option<&mut Cursor> {
        self.cursors
            .get_mut(&stream)
            .and_then(|cs| cs.iter_mut().find(|c| c.id == id))
    }
}

/// What became of a prefetched block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Not a pending prefetched block.
    None,
    /// A fetch used it: this many bytes.
    Used(u64),
    /// It left memory unused: this many bytes.
    Wasted(u64),
}

/// Cursors and prefetched blocks of one store.
#[derive(Debug)]
pub(crate) struct ReadAhead {
    cap: u64,
    max_get: u64,
    state: Mutex<State>,
    /// Where the summed window is published.
    windows: Gauge,
}

impl ReadAhead {
    /// Read-ahead with windows capped at `cap` bytes (0: off), whose range reads are at most
    /// `max_get` bytes, publishing the summed window on `windows`.
    pub(crate) fn new(cap: u64, max_get: u64, windows: Gauge) -> Self {
        ReadAhead {
            cap,
            max_get,
            state: Mutex::new(State::default()),
            windows,
        }
    }

    /// Publishes the summed window after a change of `old` to `new` in one cursor's window.
    fn window_changed(&self, state: &mut State, old: u64, new: u64) {
        if old != new {
            state.windows = (state.windows + new).saturating_sub(old);
            self.windows.set(state.windows as f64);
        }
    }

    /// Records a fetch of `stream` from objects that started at `start` and ended at `end`, and
    /// says what to prefetch next, if anything. `scan`: the fetch read old data (more than one
    /// object behind the newest), which is taken as the start of a scan: a new cursor opens
    /// its window at once instead of on its second fetch.
    pub(crate) fn advance(
        &self,
        stream: StreamId,
        start: Offset,
        end: Offset,
        scan: bool,
    ) -> Option<Plan> {
        if self.cap == 0 {
            return None;
        }
        let mut guard = self.state.lock();
        let state = &mut *guard;
        state.tick += 1;
        let tick = state.tick;
        let cursors = state.cursors.entry(stream).or_default();
        let Some(c) = cursors.iter_mut().find(|c| c.next == start && start < end) else {
            let mut dropped = 0;
            if cursors.len() >= CURSORS_PER_STREAM {
                if let Some(oldest) = (0..cursors.len()).min_by_key(|&i| cursors[i].last_used) {
                    dropped = cursors.swap_remove(oldest).window;
                }
            }
            state.next_id += 1;
            let id = state.next_id;
            let window = if scan && start < end {
                INITIAL_WINDOW.min(self.cap)
            } else {
                0
            };
            cursors.push(Cursor {
                id,
                next: end,
                window,
                planned_to: end,
                outstanding: 0,
                busy: window > 0,
                last_used: tick,
            });
            self.window_changed(state, dropped, window);
            return (window > 0).then_some(Plan {
                cursor: id,
                from: end,
                budget: window,
            });
        };
        c.next = end;
        c.last_used = tick;
        let mut opened = 0;
        if c.window == 0 {
            c.window = INITIAL_WINDOW.min(self.cap);
            opened = c.window;
        }
        let plan = self.plan_for(c, end);
        self.window_changed(state, 0, opened);
        plan
    }

    /// The next prefetch of `c`, whose last fetch ended at `end`, once enough of its window
    /// is free.
    fn plan_for(&self, c: &mut Cursor, end: Offset) -> Option<Plan> {
        if c.busy {
            return None;
        }
        // Wait until a quarter of the window (or one full range read) is free, so that
        // prefetches are few large GETs rather than many small ones (object stores serve a few
        // large reads faster than many small ones, and bill per request), yet the next GET
        // goes out while the previous ones are still being read.
        let budget = c.window.saturating_sub(c.outstanding);
        let worth = (c.window / 4)
            .min(self.max_get)
            .max(MIN_PLAN_BYTES.min(c.window));
        if budget < worth {
            return None;
        }
        c.busy = true;
        Some(Plan {
            cursor: c.id,
            from: c.planned_to.max(end),
            budget,
        })
    }

    /// Marks the prefetch of `plan` issued for blocks up to `planned_to`, registering the
    /// blocks it fetches (key and stored size) as pending.
    pub(crate) fn issued(
        &self,
        stream: StreamId,
        plan: &Plan,
        planned_to: Offset,
        blocks: &[(BlockKey, u64)],
    ) {
        let mut state = self.state.lock();
        let mut added = 0;
        for &(key, bytes) in blocks {
            let pending = Pending {
                stream,
                cursor: plan.cursor,
                bytes,
            };
            if state.pending.insert(key, pending).is_none() {
                added += bytes;
            }
        }
        if let Some(c) = state.cursor(stream, plan.cursor) {
            c.outstanding += added;
            c.planned_to = c.planned_to.max(planned_to);
        }
    }

    /// Counts `bytes` of a prefetch whose blocks are not known yet (a whole-object read, until
    /// its index is decoded) as outstanding for the cursor of `plan`, which has planned up to
    /// `planned_to`.
    pub(crate) fn reserve(&self, stream: StreamId, plan: &Plan, planned_to: Offset, bytes: u64) {
        if let Some(c) = self.state.lock().cursor(stream, plan.cursor) {
            c.outstanding += bytes;
            c.planned_to = c.planned_to.max(planned_to);
        }
    }

    /// Takes back what [`reserve`](Self::reserve) counted, once the blocks are registered.
    pub(crate) fn unreserve(&self, stream: StreamId, plan: &Plan, bytes: u64) {
        if let Some(c) = self.state.lock().cursor(stream, plan.cursor) {
            c.outstanding = c.outstanding.saturating_sub(bytes);
        }
    }

    /// Marks the planning of `plan` finished, so the cursor may plan another.
    pub(crate) fn finished(&self, stream: StreamId, plan: &Plan) {
        if let Some(c) = self.state.lock().cursor(stream, plan.cursor) {
            c.busy = false;
        }
    }

    /// Where the reader of `plan`'s cursor is: the end of its last fetch from objects (None
    /// once the cursor is gone).
    pub(crate) fn reader_at(&self, stream: StreamId, plan: &Plan) -> Option<Offset> {
        self.state
            .lock()
            .cursor(stream, plan.cursor)
            .map(|c| c.next)
    }

    /// True when a fetch of `stream` from `start` continues a cursor with an open window: a
    /// sequential reader that read-ahead serves.
    pub(crate) fn continues_window(&self, stream: StreamId, start: Offset) -> bool {
        self.state
            .lock()
            .cursors
            .get(&stream)
            .is_some_and(|cs| cs.iter().any(|c| c.next == start && c.window > 0))
    }

    /// True when `key` was prefetched and not used yet.
    pub(crate) fn is_pending(&self, key: &BlockKey) -> bool {
        self.state.lock().pending.contains_key(key)
    }

    /// A fetch used `key`: if it was prefetched, its cursor's window grows.
    pub(crate) fn used(&self, key: &BlockKey) -> Outcome {
        self.settle(key, true)
    }

    /// `key` left the memory tier: if it was prefetched and never used, its cursor's window
    /// shrinks.
    pub(crate) fn evicted(&self, key: &BlockKey) -> Outcome {
        self.settle(key, false)
    }

    /// Forgets `key` without judging it (its prefetch failed).
    pub(crate) fn forget(&self, key: &BlockKey) {
        let mut state = self.state.lock();
        if let Some(p) = state.pending.remove(key) {
            if let Some(c) = state.cursor(p.stream, p.cursor) {
                c.outstanding = c.outstanding.saturating_sub(p.bytes);
            }
        }
    }

    fn settle(&self, key: &BlockKey, used: bool) -> Outcome {
        let mut state = self.state.lock();
        let Some(p) = state.pending.remove(key) else {
            return Outcome::None;
        };
        let cap = self.cap;
        if let Some(c) = state.cursor(p.stream, p.cursor) {
            c.outstanding = c.outstanding.saturating_sub(p.bytes);
            let old = c.window;
            c.window = if used {
                (c.window + p.bytes.max(c.window / 2)).min(cap)
            } else {
                (c.window / 2).max(MIN_WINDOW.min(cap))
            };
            let new = c.window;
            self.window_changed(&mut state, old, new);
        }
        if used {
            Outcome::Used(p.bytes)
        } else {
            Outcome::Wasted(p.bytes)
        }
    }

    #[cfg(test)]
    fn advance_tail(&self, stream: StreamId, start: Offset, end: Offset) -> Option<Plan> {
        self.advance(stream, start, end, false)
    }

    #[cfg(test)]
    fn windows(&self) -> u64 {
        self.state.lock().windows
    }

    #[cfg(test)]
    fn window(&self, stream: StreamId, cursor: u64) -> u64 {
        self.state
            .lock()
            .cursor(stream, cursor)
            .map_or(0, |c| c.window)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: StreamId = StreamId(1);

    fn key(position: u64) -> BlockKey {
        BlockKey::new(7, position)
    }

    #[test]
    fn a_first_fetch_prefetches_nothing_and_a_sequential_one_opens_the_window() {
        let ra = ReadAhead::new(8 << 20, 8 << 20, Gauge::noop());
        assert_eq!(ra.advance_tail(S, Offset(0), Offset(100)), None);
        let plan = ra.advance_tail(S, Offset(100), Offset(200)).unwrap();
        assert_eq!(plan.from, Offset(200));
        assert_eq!(plan.budget, INITIAL_WINDOW);
    }

    #[test]
    fn a_fetch_elsewhere_starts_its_own_cursor() {
        let ra = ReadAhead::new(8 << 20, 8 << 20, Gauge::noop());
        assert_eq!(ra.advance_tail(S, Offset(0), Offset(100)), None);
        assert_eq!(ra.advance_tail(S, Offset(5000), Offset(5100)), None);
        assert!(ra.advance_tail(S, Offset(100), Offset(200)).is_some());
        assert!(ra.advance_tail(S, Offset(5100), Offset(5200)).is_some());
    }

    #[test]
    fn one_prefetch_per_cursor_runs_at_a_time() {
        let ra = ReadAhead::new(8 << 20, 8 << 20, Gauge::noop());
        ra.advance_tail(S, Offset(0), Offset(100));
        let plan = ra.advance_tail(S, Offset(100), Offset(200)).unwrap();
        assert_eq!(ra.advance_tail(S, Offset(200), Offset(300)), None);
        ra.finished(S, &plan);
        assert!(ra.advance_tail(S, Offset(300), Offset(400)).is_some());
    }

    #[test]
    fn the_window_grows_with_each_used_block_up_to_the_cap() {
        let cap = 2 * INITIAL_WINDOW;
        let ra = ReadAhead::new(cap, 8 << 20, Gauge::noop());
        ra.advance_tail(S, Offset(0), Offset(100));
        let plan = ra.advance_tail(S, Offset(100), Offset(200)).unwrap();
        let blocks: Vec<_> = (0..4).map(|i| (key(i), 512 << 10)).collect();
        ra.issued(S, &plan, Offset(600), &blocks);
        ra.finished(S, &plan);
        assert_eq!(ra.used(&key(0)), Outcome::Used(512 << 10));
        assert_eq!(
            ra.window(S, plan.cursor),
            INITIAL_WINDOW + INITIAL_WINDOW / 2,
            "grows by half of itself (more than a block)"
        );
        assert_eq!(ra.used(&key(0)), Outcome::None, "counted once");
        for i in 1..4 {
            ra.used(&key(i));
        }
        assert_eq!(ra.window(S, plan.cursor), cap, "capped");
        let next = ra.advance_tail(S, Offset(200), Offset(300)).unwrap();
        assert_eq!(
            next.from,
            Offset(600),
            "continues where prefetching stopped"
        );
        assert_eq!(next.budget, cap);
    }

    #[test]
    fn blocks_evicted_unused_shrink_the_window() {
        let ra = ReadAhead::new(8 << 20, 8 << 20, Gauge::noop());
        ra.advance_tail(S, Offset(0), Offset(100));
        let plan = ra.advance_tail(S, Offset(100), Offset(200)).unwrap();
        ra.issued(S, &plan, Offset(300), &[(key(0), 100), (key(1), 100)]);
        assert!(ra.is_pending(&key(0)));
        assert_eq!(ra.evicted(&key(0)), Outcome::Wasted(100));
        assert_eq!(
            ra.window(S, plan.cursor),
            MIN_WINDOW.max(INITIAL_WINDOW / 2)
        );
        ra.forget(&key(1));
        assert_eq!(ra.evicted(&key(1)), Outcome::None);
    }

    #[test]
    fn the_budget_leaves_out_what_is_prefetched_and_unused() {
        let ra = ReadAhead::new(8 << 20, 8 << 20, Gauge::noop());
        ra.advance_tail(S, Offset(0), Offset(100));
        let plan = ra.advance_tail(S, Offset(100), Offset(200)).unwrap();
        let outstanding = INITIAL_WINDOW - INITIAL_WINDOW / 8;
        ra.issued(S, &plan, Offset(300), &[(key(0), outstanding)]);
        ra.finished(S, &plan);
        // An eighth of the window free: less than the quarter worth planning for.
        assert_eq!(ra.advance_tail(S, Offset(200), Offset(250)), None);
        ra.used(&key(0));
        assert!(ra.advance_tail(S, Offset(250), Offset(300)).is_some());
    }

    #[test]
    fn a_first_fetch_of_old_data_opens_the_window_at_once() {
        let ra = ReadAhead::new(64 << 20, 8 << 20, Gauge::noop());
        let plan = ra.advance(S, Offset(0), Offset(100), true).unwrap();
        assert_eq!(plan.from, Offset(100));
        assert_eq!(plan.budget, INITIAL_WINDOW);
        assert_eq!(
            ra.advance(S, Offset(100), Offset(200), true),
            None,
            "the first plan is still running"
        );
        ra.finished(S, &plan);
        assert!(ra.advance(S, Offset(200), Offset(300), true).is_some());
    }

    #[test]
    fn a_cursor_tells_where_its_reader_is() {
        let ra = ReadAhead::new(64 << 20, 8 << 20, Gauge::noop());
        let plan = ra.advance(S, Offset(0), Offset(100), true).unwrap();
        assert_eq!(ra.reader_at(S, &plan), Some(Offset(100)));
        ra.advance(S, Offset(100), Offset(250), true);
        assert_eq!(ra.reader_at(S, &plan), Some(Offset(250)));
        assert_eq!(ra.reader_at(StreamId(9), &plan), None);
    }

    #[test]
    fn only_a_fetch_where_a_cursor_with_a_window_stopped_continues_it() {
        let ra = ReadAhead::new(64 << 20, 8 << 20, Gauge::noop());
        assert!(!ra.continues_window(S, Offset(0)));
        ra.advance_tail(S, Offset(0), Offset(100));
        assert!(
            !ra.continues_window(S, Offset(100)),
            "a tail cursor opens its window on its second fetch"
        );
        ra.advance(S, Offset(500), Offset(600), true);
        assert!(ra.continues_window(S, Offset(600)));
        assert!(!ra.continues_window(S, Offset(550)));
    }

    #[test]
    fn read_ahead_of_zero_bytes_is_off() {
        let ra = ReadAhead::new(0, 8 << 20, Gauge::noop());
        assert_eq!(ra.advance(S, Offset(0), Offset(100), true), None);
        assert_eq!(ra.advance_tail(S, Offset(100), Offset(200)), None);
    }

    #[test]
    fn the_summed_window_follows_every_cursor_opening_growing_shrinking_and_leaving() {
        let ra = ReadAhead::new(64 << 20, 8 << 20, Gauge::noop());
        let a = ra.advance(S, Offset(0), Offset(100), true).unwrap();
        let b = ra
            .advance(StreamId(2), Offset(0), Offset(100), true)
            .unwrap();
        assert_eq!(ra.windows(), 2 * INITIAL_WINDOW);
        ra.issued(S, &a, Offset(200), &[(key(0), 100), (key(1), 100)]);
        ra.used(&key(0));
        let grown = ra.window(S, a.cursor);
        assert!(grown > INITIAL_WINDOW);
        assert_eq!(ra.windows(), grown + INITIAL_WINDOW);
        ra.evicted(&key(1));
        assert_eq!(ra.windows(), grown / 2 + ra.window(StreamId(2), b.cursor));
        // Cursors of stream 2 beyond the kept few push the oldest (and its window) out.
        for n in 1..=CURSORS_PER_STREAM as u64 {
            ra.advance(StreamId(2), Offset(n * 1000), Offset(n * 1000 + 1), true);
        }
        assert_eq!(
            ra.windows(),
            grown / 2 + CURSORS_PER_STREAM as u64 * INITIAL_WINDOW
        );
    }
}
