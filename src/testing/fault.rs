//! What a [`FaultyObjectStore`](super::FaultyObjectStore) can do to a call, which calls a rule
//! picks, and what it records about each call.
//!
//! A call is classified into one [`OpKind`] and named by its key. A [`FaultRule`] picks calls by
//! kind and key prefix and applies its [`Fault`] to the next `n` of them; [`RandomFaults`] picks
//! calls by a seeded coin. Every call ends as one [`Call`] in the store's record.

use std::fmt;
use std::time::Duration;

/// The kind of an object store call, as the wrapper classifies it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum OpKind {
    /// `put_opts` (and `ObjectStoreExt::put`): a single-request upload.
    Put,
    /// `put_multipart_opts`: the start of a multipart upload.
    PutMultipart,
    /// One part of a multipart upload.
    PutPart,
    /// The completion of a multipart upload.
    CompleteMultipart,
    /// `get_opts` without a range (`get`).
    Get,
    /// `get_opts` with a range (`get_range`, `get_ranges`).
    GetRange,
    /// `get_opts` with `head` set (`head`).
    Head,
    /// One location of `delete_stream` (`delete`).
    Delete,
    /// `list`, `list_with_offset` or `list_with_delimiter`.
    List,
    /// `copy_opts` (`copy`, `copy_if_not_exists`).
    Copy,
    /// `rename_opts` (`rename`, `rename_if_not_exists`).
    Rename,
}

impl OpKind {
    /// True for the kinds that write an object (what a request-cost model counts as a PUT).
    pub fn is_write(self) -> bool {
        matches!(
            self,
            OpKind::Put | OpKind::PutMultipart | OpKind::PutPart | OpKind::CompleteMultipart
        )
    }

    /// True for the kinds that read an object's bytes or metadata (a GET in a cost model).
    pub fn is_read(self) -> bool {
        matches!(self, OpKind::Get | OpKind::GetRange | OpKind::Head)
    }
}

/// What happens to a call a rule picked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// The store throttles: fails with a generic error whose message contains `503 Slow Down`,
    /// as S3 answers when a prefix gets more requests than it can serve. Nothing is done.
    SlowDown,
    /// The request times out before the store did anything. Nothing is done.
    Timeout,
    /// The connection is reset before the store did anything. Nothing is done.
    ConnectionReset,
    /// The call waits this long, then goes through untouched.
    Latency(Duration),
    /// A read (`Get`, `GetRange`) returns fewer bytes than it asked for: the first half of them,
    /// while the result still claims the whole range, as when a response body is cut short.
    /// Other kinds are never picked by it.
    TruncatedRead,
    /// A `Put` is done on the inner store, then an error is reported to the caller (the response
    /// was lost): the ambiguous write. Other kinds are never picked by it.
    PutSucceedsButErrors,
    /// A `Put` fails with `AlreadyExists` although nothing was written: S3 answers
    /// `409 ConditionalRequestConflict` to a conditional PUT that races another request on the
    /// same key, and object_store reports that as `AlreadyExists`. Other kinds are never
    /// picked by it.
    ConditionalConflict,
}

impl Fault {
    /// True when this fault can apply to a call of `op`.
    pub fn applies_to(self, op: OpKind) -> bool {
        match self {
            Fault::TruncatedRead => matches!(op, OpKind::Get | OpKind::GetRange),
            Fault::PutSucceedsButErrors | Fault::ConditionalConflict => op == OpKind::Put,
            _ => true,
        }
    }

    /// The message of the error this fault reports, if it reports one.
    pub(crate) fn message(self) -> Option<&'static str> {
        match self {
            Fault::SlowDown => Some("503 Slow Down: please reduce your request rate"),
            Fault::Timeout => Some("operation timed out"),
            Fault::ConnectionReset => Some("connection reset by peer"),
            Fault::PutSucceedsButErrors => {
                Some("operation timed out (the request reached the store; its response was lost)")
            }
            Fault::ConditionalConflict => Some(
                "409 ConditionalRequestConflict: a conflicting conditional operation is in progress",
            ),
            Fault::Latency(_) | Fault::TruncatedRead => None,
        }
    }
}

/// Which calls a rule or a gate picks: of one kind (or any) and under one key prefix (or any).
///
/// The prefix is compared as a string, so `"p/manifest/0000"` picks `p/manifest/00001` too.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CallFilter {
    /// Only calls of this kind; `None`: every kind.
    pub op: Option<OpKind>,
    /// Only keys that start with this; `None`: every key.
    pub prefix: Option<String>,
}

impl CallFilter {
    /// True when the call of `op` on `key` is picked.
    pub fn matches(&self, op: OpKind, key: &str) -> bool {
        self.op.is_none_or(|o| o == op)
            && self
                .prefix
                .as_deref()
                .is_none_or(|prefix| key.starts_with(prefix))
    }
}

/// Apply `fault` to the next `times` calls the filter picks (and the fault can apply to).
///
/// ```
/// use objstream::testing::{Fault, FaultRule, OpKind};
/// let rule = FaultRule::new(Fault::SlowDown).times(3).on(OpKind::Put).under("p/manifest/");
/// assert_eq!(rule.remaining(), 3);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultRule {
    pub(crate) fault: Fault,
    pub(crate) remaining: u64,
    pub(crate) filter: CallFilter,
}

impl FaultRule {
    /// `fault` on the next call of any kind, on any key.
    pub fn new(fault: Fault) -> Self {
        FaultRule {
            fault,
            remaining: 1,
            filter: CallFilter::default(),
        }
    }

    /// On the next `n` picked calls instead of one.
    pub fn times(mut self, n: u64) -> Self {
        self.remaining = n;
        self
    }

    /// Only calls of kind `op`.
    pub fn on(mut self, op: OpKind) -> Self {
        self.filter.op = Some(op);
        self
    }

    /// Only calls on keys starting with `prefix`.
    pub fn under(mut self, prefix: impl AsRef<str>) -> Self {
        self.filter.prefix = Some(prefix.as_ref().to_string());
        self
    }

    /// How many more calls this rule will pick.
    pub fn remaining(&self) -> u64 {
        self.remaining
    }

    /// Picks the call if it matches; counts it.
    pub(crate) fn take(&mut self, op: OpKind, key: &str) -> Option<Fault> {
        if self.remaining > 0 && self.fault.applies_to(op) && self.filter.matches(op, key) {
            self.remaining -= 1;
            Some(self.fault)
        } else {
            None
        }
    }
}

/// Faults at random: each call the filter picks draws from a generator seeded with `seed`, and
/// with `probability` gets one of `faults` (drawn uniformly from those that can apply to it).
///
/// Deterministic given the seed and the order of calls: the n-th picked call makes the n-th draws.
#[derive(Clone, Debug, PartialEq)]
pub struct RandomFaults {
    /// Seeds the generator.
    pub seed: u64,
    /// Chance of a fault per picked call, 0.0 to 1.0.
    pub probability: f64,
    /// The faults to choose from.
    pub faults: Vec<Fault>,
    /// Which calls may get one.
    pub filter: CallFilter,
}

impl RandomFaults {
    /// Faults from `faults` with `probability` per call of any kind, seeded by `seed`.
    pub fn new(seed: u64, probability: f64, faults: impl Into<Vec<Fault>>) -> Self {
        RandomFaults {
            seed,
            probability,
            faults: faults.into(),
            filter: CallFilter::default(),
        }
    }

    /// Only calls of kind `op`.
    pub fn on(mut self, op: OpKind) -> Self {
        self.filter.op = Some(op);
        self
    }

    /// Only calls on keys starting with `prefix`.
    pub fn under(mut self, prefix: impl AsRef<str>) -> Self {
        self.filter.prefix = Some(prefix.as_ref().to_string());
        self
    }
}

/// The random source of [`RandomFaults`] (SplitMix64: tiny, fast, good enough to pick faults).
#[derive(Debug)]
pub(crate) struct SeededRng(u64);

impl SeededRng {
    pub(crate) fn new(seed: u64) -> Self {
        SeededRng(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub(crate) fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// One call as the wrapper saw it end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    /// Its kind.
    pub op: OpKind,
    /// Its key (for a LIST, the prefix; empty for none).
    pub key: String,
    /// The fault injected into it, if any.
    pub injected: Option<Fault>,
    /// The error its caller got, if any (injected or from the inner store).
    pub error: Option<String>,
}

impl Call {
    /// True when the caller got no error.
    pub fn succeeded(&self) -> bool {
        self.error.is_none()
    }
}

impl fmt::Display for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} {}", self.op, self.key)?;
        if let Some(fault) = self.injected {
            write!(f, " [{fault:?}]")?;
        }
        match &self.error {
            Some(e) => write!(f, " -> error: {e}"),
            None => write!(f, " -> ok"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rule_picks_only_matching_calls_and_only_as_often_as_told() {
        let mut rule = FaultRule::new(Fault::Timeout)
            .times(2)
            .on(OpKind::Put)
            .under("a/");
        assert_eq!(rule.take(OpKind::Get, "a/1"), None);
        assert_eq!(rule.take(OpKind::Put, "b/1"), None);
        assert_eq!(rule.take(OpKind::Put, "a/1"), Some(Fault::Timeout));
        assert_eq!(rule.take(OpKind::Put, "a/2"), Some(Fault::Timeout));
        assert_eq!(rule.take(OpKind::Put, "a/3"), None);
    }

    #[test]
    fn read_and_write_faults_skip_calls_they_cannot_apply_to() {
        let mut truncate = FaultRule::new(Fault::TruncatedRead);
        assert_eq!(truncate.take(OpKind::Put, "k"), None);
        assert_eq!(truncate.take(OpKind::Head, "k"), None);
        assert_eq!(
            truncate.take(OpKind::GetRange, "k"),
            Some(Fault::TruncatedRead)
        );
        let mut ambiguous = FaultRule::new(Fault::PutSucceedsButErrors);
        assert_eq!(ambiguous.take(OpKind::Get, "k"), None);
        assert_eq!(
            ambiguous.take(OpKind::Put, "k"),
            Some(Fault::PutSucceedsButErrors)
        );
    }

    #[test]
    fn the_seeded_generator_repeats_itself_and_stays_in_range() {
        let mut a = SeededRng::new(42);
        let mut b = SeededRng::new(42);
        for _ in 0..1000 {
            let x = a.next_f64();
            assert!((0.0..1.0).contains(&x));
            assert_eq!(x, b.next_f64());
        }
        assert_ne!(SeededRng::new(1).next_u64(), SeededRng::new(2).next_u64());
    }

    #[test]
    fn error_faults_carry_the_message_a_real_store_would_send() {
        assert!(Fault::SlowDown.message().unwrap().contains("503 Slow Down"));
        assert_eq!(Fault::Latency(Duration::from_millis(1)).message(), None);
        assert_eq!(Fault::TruncatedRead.message(), None);
    }
}
