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
//! window at [`INITIAL_WINDOW`]; after each fetch the read path prefetches the blocks ahead of
//! the cursor until the bytes prefetched and not yet used fill the window, once half the window
//! (or one maximal range read) is free. The window:
//! - grows by a block's size, or a quarter of itself if that is more, each time a fetch uses a
//!   prefetched block (so a cold reader reaches a large window within a few MB), up to the cap;
//! - halves (down to [`MIN_WINDOW`]) each time a prefetched block leaves the memory tier before
//!   any fetch used it: the cache is too small for this much read-ahead.
//!
//! One prefetch per cursor is planned at a time; the range reads it starts run on their own,
//! counted as outstanding until used or evicted. Every method takes the lock briefly and never
//! awaits.

use std::collections::HashMap;

use objstream_cache::BlockKey;
use parking_lot::Mutex;

use crate::types::{Offset, StreamId};

/// The window a cursor opens with on its second sequential fetch.
pub(crate) const INITIAL_WINDOW: u64 = 1 << 20;
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
}

impl ReadAhead {
    /// Read-ahead with windows capped at `cap` bytes (0: off), whose range reads are at most
    /// `max_get` bytes.
    pub(crate) fn new(cap: u64, max_get: u64) -> Self {
        ReadAhead {
            cap,
            max_get,
            state: Mutex::new(State::default()),
        }
    }

    /// Records a fetch of `stream` from objects that started at `start` and ended at `end`, and
    /// says what to prefetch next, if anything.
    pub(crate) fn advance(&self, stream: StreamId, start: Offset, end: Offset) -> Option<Plan> {
        if self.cap == 0 {
            return None;
        }
        let mut guard = self.state.lock();
        let state = &mut *guard;
        state.tick += 1;
        let tick = state.tick;
        let cursors = state.cursors.entry(stream).or_default();
        let Some(c) = cursors.iter_mut().find(|c| c.next == start && start < end) else {
            if cursors.len() >= CURSORS_PER_STREAM {
                if let Some(oldest) = (0..cursors.len()).min_by_key(|&i| cursors[i].last_used) {
                    cursors.swap_remove(oldest);
                }
            }
            state.next_id += 1;
            cursors.push(Cursor {
                id: state.next_id,
                next: end,
                window: 0,
                planned_to: end,
                outstanding: 0,
                busy: false,
                last_used: tick,
            });
            return None;
        };
        c.next = end;
        c.last_used = tick;
        if c.window == 0 {
            c.window = INITIAL_WINDOW.min(self.cap);
        }
        if c.busy {
            return None;
        }
        // Wait until half the window (or one full range read) is free, so that prefetches are
        // few large GETs rather than many small ones: object stores serve a few large reads
        // faster than many small ones in parallel, and bill per request.
        let budget = c.window.saturating_sub(c.outstanding);
        let worth = (c.window / 2)
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

    /// Marks the planning of `plan` finished, so the cursor may plan another.
    pub(crate) fn finished(&self, stream: StreamId, plan: &Plan) {
        if let Some(c) = self.state.lock().cursor(stream, plan.cursor) {
            c.busy = false;
        }
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
            c.window = if used {
                (c.window + p.bytes.max(c.window / 4)).min(cap)
            } else {
                (c.window / 2).max(MIN_WINDOW.min(cap))
            };
        }
        if used {
            Outcome::Used(p.bytes)
        } else {
            Outcome::Wasted(p.bytes)
        }
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
        let ra = ReadAhead::new(8 << 20, 8 << 20);
        assert_eq!(ra.advance(S, Offset(0), Offset(100)), None);
        let plan = ra.advance(S, Offset(100), Offset(200)).unwrap();
        assert_eq!(plan.from, Offset(200));
        assert_eq!(plan.budget, INITIAL_WINDOW);
    }

    #[test]
    fn a_fetch_elsewhere_starts_its_own_cursor() {
        let ra = ReadAhead::new(8 << 20, 8 << 20);
        assert_eq!(ra.advance(S, Offset(0), Offset(100)), None);
        assert_eq!(ra.advance(S, Offset(5000), Offset(5100)), None);
        assert!(ra.advance(S, Offset(100), Offset(200)).is_some());
        assert!(ra.advance(S, Offset(5100), Offset(5200)).is_some());
    }

    #[test]
    fn one_prefetch_per_cursor_runs_at_a_time() {
        let ra = ReadAhead::new(8 << 20, 8 << 20);
        ra.advance(S, Offset(0), Offset(100));
        let plan = ra.advance(S, Offset(100), Offset(200)).unwrap();
        assert_eq!(ra.advance(S, Offset(200), Offset(300)), None);
        ra.finished(S, &plan);
        assert!(ra.advance(S, Offset(300), Offset(400)).is_some());
    }

    #[test]
    fn the_window_grows_with_each_used_block_up_to_the_cap() {
        let ra = ReadAhead::new(2 << 20, 8 << 20);
        ra.advance(S, Offset(0), Offset(100));
        let plan = ra.advance(S, Offset(100), Offset(200)).unwrap();
        let blocks: Vec<_> = (0..4).map(|i| (key(i), 512 << 10)).collect();
        ra.issued(S, &plan, Offset(600), &blocks);
        ra.finished(S, &plan);
        assert_eq!(ra.used(&key(0)), Outcome::Used(512 << 10));
        assert_eq!(ra.window(S, plan.cursor), INITIAL_WINDOW + (512 << 10));
        assert_eq!(ra.used(&key(0)), Outcome::None, "counted once");
        for i in 1..4 {
            ra.used(&key(i));
        }
        assert_eq!(ra.window(S, plan.cursor), 2 << 20, "capped");
        let next = ra.advance(S, Offset(200), Offset(300)).unwrap();
        assert_eq!(
            next.from,
            Offset(600),
            "continues where prefetching stopped"
        );
        assert_eq!(next.budget, 2 << 20);
    }

    #[test]
    fn blocks_evicted_unused_shrink_the_window() {
        let ra = ReadAhead::new(8 << 20, 8 << 20);
        ra.advance(S, Offset(0), Offset(100));
        let plan = ra.advance(S, Offset(100), Offset(200)).unwrap();
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
        let ra = ReadAhead::new(8 << 20, 8 << 20);
        ra.advance(S, Offset(0), Offset(100));
        let plan = ra.advance(S, Offset(100), Offset(200)).unwrap();
        ra.issued(S, &plan, Offset(300), &[(key(0), 1000 << 10)]);
        ra.finished(S, &plan);
        // 1 MiB window, 1000 KiB outstanding: too little left to plan.
        assert_eq!(ra.advance(S, Offset(200), Offset(250)), None);
    }

    #[test]
    fn read_ahead_of_zero_bytes_is_off() {
        let ra = ReadAhead::new(0, 8 << 20);
        ra.advance(S, Offset(0), Offset(100));
        assert_eq!(ra.advance(S, Offset(100), Offset(200)), None);
    }
}
