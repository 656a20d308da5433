//! The linger rule: when the writer cuts an object that is not full.
//!
//! A full object (`batch_bytes` of frames queued) is cut as soon as the window has room, and so
//! is everything queued once the handle is dropped. For the rest, waiting trades latency
//! against request cost: each object is one PUT, and records that wait for company share it.
//! A fixed linger (cut when the oldest queued record has waited `linger`) makes every lone
//! append wait it out, even when the WAL was idle and nothing could have joined it.
//!
//! The first two modes below cut a record that finds the WAL quiet at once; no mode holds a
//! record longer than `linger` after it was queued (`first_queued + linger` bounds every
//! deadline). They differ in what "quiet" means:
//!
//! ```text
//! Paced (default):  due = max(first_queued, last_cut + linger)
//!                   objects that are not full start at most once per linger: a trickle costs
//!                   no more PUTs per second than a fixed linger did (about 1 / linger at most);
//!                   a lone append waits only if the previous object started less than linger
//!                   ago, i.e. only when the store answers faster than linger.
//! GroupCommit:      due = first_queued            when no PUT is in flight
//!                   due = first_queued + linger   while PUTs are in flight
//!                   a lone append never waits; appends that arrive while a PUT is in the air
//!                   gather behind it. A trickle faster than PUTs complete costs about one PUT
//!                   per PUT latency: more than Paced when PUTs are faster than linger.
//! Fixed:            due = first_queued + linger
//!                   every object that is not full waits the whole linger: the most batching,
//!                   and every lone append pays the linger on top of its PUT.
//! ```
//!
//! No mode writes anything while nothing is queued, and neither changes which records an
//! object holds (module `writer` cuts them), their slots, or the order of acknowledgements.

use std::time::Duration;

use tokio::time::Instant;

/// How the writer decides when to cut an object that is not full. See the module docs of
/// [`crate::object`] and [`crate::ObjectWalOptions::linger_mode`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum LingerMode {
    /// Objects that are not full start at most once per `linger`. A record goes at once when
    /// the previous object started `linger` ago or more, otherwise when that much time has
    /// passed since it started. PUTs per second for a trickle of appends are no more than with
    /// a fixed linger; a lone append waits only when the previous PUT returned in less than
    /// `linger`. The default.
    #[default]
    Paced,
    /// Group commit: a record goes at once when no PUT is in flight, and waits up to `linger`
    /// for company only while PUTs are in flight. The lowest latency for a lone appender (one
    /// PUT), at the cost of up to one PUT per PUT latency for a trickle of appends: more than
    /// [`LingerMode::Paced`] when PUTs return faster than `linger`.
    GroupCommit,
    /// Every object that is not full goes out `linger` after its first record arrived, however
    /// quiet the WAL: the most batching for a given `linger`, and every lone append waits the
    /// whole `linger` on top of its PUT.
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
    let latest = quiet.first_queued + linger;
    let wanted = match mode {
        LingerMode::Paced => match quiet.last_cut {
            Some(cut) => (cut + linger).max(quiet.first_queued),
            None => quiet.first_queued,
        },
        LingerMode::GroupCommit if quiet.puts_in_flight => latest,
        LingerMode::GroupCommit => quiet.first_queued,
        LingerMode::Fixed => latest,
    };
    wanted.min(latest)
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
    fn a_first_record_goes_at_once_in_either_mode() {
        let t0 = Instant::now();
        for mode in [LingerMode::Paced, LingerMode::GroupCommit] {
            assert_eq!(due_at(mode, LINGER, quiet(t0, 5, None, false)), t0 + ms(5));
        }
    }

    #[test]
    fn paced_sends_at_once_when_the_previous_object_started_a_linger_ago_or_more() {
        let t0 = Instant::now();
        let q = quiet(t0, 10, Some(3), true);
        assert_eq!(due_at(LingerMode::Paced, LINGER, q), t0 + ms(10));
    }

    #[test]
    fn paced_waits_until_a_linger_after_the_previous_object_started() {
        let t0 = Instant::now();
        let q = quiet(t0, 11, Some(10), false);
        assert_eq!(due_at(LingerMode::Paced, LINGER, q), t0 + ms(12));
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
            LingerMode::Paced,
            LingerMode::GroupCommit,
            LingerMode::Fixed,
        ] {
            assert_eq!(due_at(mode, LINGER, q), t0 + ms(6), "{mode:?}");
        }
    }

    #[test]
    fn paced_starts_at_most_one_object_that_is_not_full_per_linger() {
        // A paced trickle of one record per 500 µs for 100 ms, every cut taking all queued.
        let t0 = Instant::now();
        let arrivals: Vec<Instant> = (0..200)
            .map(|i| t0 + Duration::from_micros(500 * i))
            .collect();
        let mut cuts: Vec<Instant> = Vec::new();
        let mut next = 0;
        while next < arrivals.len() {
            let q = Quiet {
                first_queued: arrivals[next],
                last_cut: cuts.last().copied(),
                puts_in_flight: false,
            };
            let at = due_at(LingerMode::Paced, LINGER, q);
            cuts.push(at);
            while next < arrivals.len() && arrivals[next] <= at {
                next += 1;
            }
        }
        assert!(cuts.windows(2).all(|w| w[1] - w[0] >= LINGER));
        assert!(cuts.len() <= 51, "{} objects in 100 ms", cuts.len());
    }
}
