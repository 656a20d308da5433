//! The linger rule: when the writer cuts an object that is not full.
//!
//! A full object (`batch_bytes` of frames queued) is cut as soon as the window has room, and so
//! is everything queued once the handle is dropped. For the rest, waiting trades latency
//! against request cost: each object is one PUT, and records that wait for company share it.
//! A fixed linger (cut when the oldest queued record has waited `linger`) makes every lone
//! append wait it out, even when the WAL was idle and nothing could have joined it.
//!
//! No mode holds a record longer than `linger` after it was queued. The modes differ in when a
//! record goes at once:
//!
//! ```text
//! WhenBusy (default): due = first_queued            no object started in the linger before it
//!                     due = first_queued + linger   otherwise (the WAL is busy: wait as Fixed)
//!                     A steady trickle faster than 1 / linger always finds the WAL busy and is
//!                     batched exactly as Fixed batches it; a slower one costs one PUT per append
//!                     in both. A lone append waits for nothing when the previous object started
//!                     a linger ago or more: always on a store whose PUTs take longer than the
//!                     linger, and after any pause of a linger.
//! GroupCommit:        due = first_queued            when no PUT is in flight
//!                     due = first_queued + linger   while PUTs are in flight
//!                     a lone append never waits; appends that arrive while a PUT is in the air
//!                     gather behind it. A trickle faster than PUTs complete costs about one PUT
//!                     per PUT latency: more than Fixed when PUTs are faster than the linger.
//! Fixed:              due = first_queued + linger
//!                     every object that is not full waits the whole linger: every lone append
//!                     pays the linger on top of its PUT.
//! ```
//!
//! No mode writes anything while nothing is queued, and none changes which records an object
//! holds (module `writer` cuts them), their slots, or the order of acknowledgements.

use std::time::Duration;

use tokio::time::Instant;

/// How the writer decides when to cut an object that is not full. See the module docs of
/// [`crate::object`] and [`crate::ObjectWalOptions::linger_mode`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum LingerMode {
    /// Linger only when the WAL is busy. A record goes at once when no object started in the
    /// `linger` before it arrived; otherwise it waits the whole `linger`, as with
    /// [`LingerMode::Fixed`]. A steady trickle of appends costs the PUTs it costs with
    /// `Fixed`; a lone append waits only when the previous object started less than `linger`
    /// before it (on a store faster than `linger`, an appender that awaits each append). The
    /// default.
    #[default]
    WhenBusy,
    /// Group commit: a record goes at once when no PUT is in flight, and waits up to `linger`
    /// for company only while PUTs are in flight. The lowest latency for a lone appender (one
    /// PUT), at the cost of up to one PUT per PUT latency for a trickle of appends: more than
    /// [`LingerMode::Fixed`] when PUTs return faster than `linger`.
    GroupCommit,
    /// Every object that is not full goes out `linger` after its first record arrived, however
    /// quiet the WAL: every lone append waits the whole `linger` on top of its PUT.
    Fixed,
}

/// What the rule looks at: the writer's state at one moment.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Quiet {
    /// When the oldest queued record arrived.
    pub first_queued: Instant,
    /// When the previous object was cut, if any was.
    pub last_cut: Option<Instant>,
    /// Some PUT of this writer has not completed.
    pub puts_in_flight: bool,
}

/// When the queued records should go out in an object that is not full (the window permitting).
/// Never later than `first_queued + linger`.
pub(crate) fn due_at(mode: LingerMode, linger: Duration, quiet: Quiet) -> Instant {
    let at_once = quiet.first_queued;
    let latest = quiet.first_queued + linger;
    match mode {
        LingerMode::WhenBusy => match quiet.last_cut {
            Some(cut) if cut + linger > quiet.first_queued => latest,
            _ => at_once,
        },
        LingerMode::GroupCommit if quiet.puts_in_flight => latest,
        LingerMode::GroupCommit => at_once,
        LingerMode::Fixed => latest,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINGER: Duration = Duration::from_millis(2);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn quiet(t0: Instant, first: u64, last_cut: Option<u64>, puts_in_flight: bool) -> Quiet {
        Quiet {
            first_queued: t0 + ms(first),
            last_cut: last_cut.map(|c| t0 + ms(c)),
            puts_in_flight,
        }
    }

    #[test]
    fn a_first_record_goes_at_once_in_either_adaptive_mode() {
        let t0 = Instant::now();
        for mode in [LingerMode::WhenBusy, LingerMode::GroupCommit] {
            assert_eq!(due_at(mode, LINGER, quiet(t0, 5, None, false)), t0 + ms(5));
        }
    }

    #[test]
    fn when_busy_sends_at_once_when_no_object_started_in_the_linger_before_the_record() {
        let t0 = Instant::now();
        let q = quiet(t0, 10, Some(8), true);
        assert_eq!(due_at(LingerMode::WhenBusy, LINGER, q), t0 + ms(10));
    }

    #[test]
    fn when_busy_waits_the_whole_linger_when_an_object_started_within_it() {
        let t0 = Instant::now();
        let q = quiet(t0, 11, Some(10), false);
        assert_eq!(due_at(LingerMode::WhenBusy, LINGER, q), t0 + ms(13));
    }

    #[test]
    fn group_commit_sends_at_once_when_no_put_is_in_flight_however_recent_the_last_cut() {
        let t0 = Instant::now();
        let q = quiet(t0, 11, Some(10), false);
        assert_eq!(due_at(LingerMode::GroupCommit, LINGER, q), t0 + ms(11));
    }

    #[test]
    fn group_commit_lingers_while_a_put_is_in_flight() {
        let t0 = Instant::now();
        let q = quiet(t0, 11, Some(1), true);
        assert_eq!(due_at(LingerMode::GroupCommit, LINGER, q), t0 + ms(13));
    }

    #[test]
    fn fixed_waits_the_whole_linger_even_for_a_first_record() {
        let t0 = Instant::now();
        let q = quiet(t0, 5, None, false);
        assert_eq!(due_at(LingerMode::Fixed, LINGER, q), t0 + ms(7));
    }

    #[test]
    fn no_record_waits_longer_than_the_linger_after_it_was_queued() {
        let t0 = Instant::now();
        // Records left over from a full object cut after they arrived.
        let q = quiet(t0, 4, Some(5), true);
        for mode in [
            LingerMode::WhenBusy,
            LingerMode::GroupCommit,
            LingerMode::Fixed,
        ] {
            assert!(due_at(mode, LINGER, q) <= t0 + ms(6), "{mode:?}");
        }
    }

    /// Objects a steady trickle of one record per `every` makes in `run_for` under `mode`, each
    /// cut taking every record queued by then.
    fn objects_for_trickle(mode: LingerMode, every: Duration, run_for: Duration) -> usize {
        let t0 = Instant::now();
        let n = (run_for.as_nanos() / every.as_nanos()) as u32;
        let arrivals: Vec<Instant> = (0..n).map(|i| t0 + every * i).collect();
        let mut cuts: Vec<Instant> = Vec::new();
        let mut next = 0;
        while next < arrivals.len() {
            let q = Quiet {
                first_queued: arrivals[next],
                last_cut: cuts.last().copied(),
                puts_in_flight: false,
            };
            let at = due_at(mode, LINGER, q);
            cuts.push(at);
            while next < arrivals.len() && arrivals[next] <= at {
                next += 1;
            }
        }
        cuts.len()
    }

    #[test]
    fn when_busy_batches_a_steady_trickle_as_fixed_does_and_sends_a_slow_one_record_by_record() {
        let run_for = Duration::from_secs(1);
        for every_micros in [100, 500, 1_000, 1_700] {
            let every = Duration::from_micros(every_micros);
            let fixed = objects_for_trickle(LingerMode::Fixed, every, run_for);
            let when_busy = objects_for_trickle(LingerMode::WhenBusy, every, run_for);
            // Only the very first record goes alone.
            assert!(
                when_busy <= fixed + 1,
                "{every:?}: {when_busy} > {fixed} + 1"
            );
        }
        let slow = objects_for_trickle(LingerMode::WhenBusy, ms(5), run_for);
        assert_eq!(slow, 200);
    }
}
