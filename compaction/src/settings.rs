//! The compactor's tunables: [`CompactorSettings`], with retention per stream.
//!
//! Every field documents its default and what raising or lowering it trades. The settings are
//! checked together by [`CompactorSettings::validate`], which [`Compactor::open`](crate::Compactor::open)
//! calls and refuses to start on failure.
//!
//! # Object counts
//!
//! Stream set objects are merged by size tier: an object of `size` bytes is in tier `t` when
//! `min_object_bytes × fanout^t ≤ size < min_object_bytes × fanout^(t+1)` (everything smaller
//! than `min_object_bytes × fanout` is tier 0), and `fanout` objects of one tier merge, until
//! they reach `max_stream_set_object_bytes` and are split into stream objects.
//!
//! A stream's neighbouring stream objects merge once the newer ones together outgrow
//! `1 / (fanout - 1)` of the older one, so each object holds more than `fanout - 1` times all
//! newer ones: a stream keeps a number of objects logarithmic (base `fanout`) in its size, up to
//! `max_stream_object_bytes`, past which objects are no longer merged. Each byte is rewritten a
//! logarithmic number of times.

use std::collections::BTreeMap;

use objstream::{Compression, ErrorDetail, Result, StreamId};
use serde::{Deserialize, Serialize};

/// How much of a stream to keep. A stream is trimmed (its start offset moved forward with a
/// manifest `TrimStream`) to the oldest object part that must stay for both limits to hold.
/// Trimming is at object part granularity, so a stream keeps at least what the limits ask,
/// never less.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Retention {
    /// Keep at least the newest this many bytes (as stored, compressed). Default: `None`, no
    /// limit by size.
    pub max_bytes: Option<u64>,
    /// Keep data whose batches are younger than this many milliseconds, by their
    /// `base_timestamp` (milliseconds since the Unix epoch). Default: `None`, no limit by age.
    /// Checking the age of an object part costs two range GETs, once per part.
    pub max_age_ms: Option<u64>,
}

impl Retention {
    /// True when neither limit is set.
    pub fn is_unlimited(&self) -> bool {
        self.max_bytes.is_none() && self.max_age_ms.is_none()
    }
}

/// The compactor's tunables. See each field for its default and trade-off.
///
/// Settings load from JSON (or any serde format); missing fields take their defaults, and
/// [`CompactorSettings::validate`] names the field that makes no sense:
///
/// ```
/// use objstream::StreamId;
/// use objstream_compaction::CompactorSettings;
///
/// let settings: CompactorSettings = serde_json::from_str(r#"{
///     "grace_period_ms": 300000,
///     "bandwidth_bytes_per_sec": 33554432,
///     "retention": { "max_age_ms": 604800000 },
///     "stream_retention": { "7": { "max_bytes": 1073741824 } }
/// }"#).unwrap();
/// settings.validate().unwrap();
/// assert_eq!(settings.fanout, CompactorSettings::default().fanout);
/// // Stream 7 keeps a gigabyte whatever its age; every other stream keeps a week.
/// assert_eq!(settings.retention_of(StreamId(7)).max_bytes, Some(1 << 30));
/// assert_eq!(settings.retention_of(StreamId(8)).max_age_ms, Some(604_800_000));
///
/// let nonsense = CompactorSettings { fanout: 1, ..CompactorSettings::default() };
/// assert!(nonsense.validate().unwrap_err().to_string().contains("fanout"));
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CompactorSettings {
    /// Milliseconds between passes of a spawned compactor. Default 30 000. Shorter keeps
    /// object counts lower between passes, at the price of a manifest refresh and a LIST per
    /// pass.
    pub pass_interval_ms: u64,
    /// Milliseconds an object stays in the object store after it leaves the manifest (or, for
    /// an upload that was never committed, after it was written) before it is deleted.
    /// Default 600 000 (10 minutes). It must exceed the longest read of an old layout and the
    /// longest time between an upload's PUT and its commit; longer costs storage for replaced
    /// objects.
    pub grace_period_ms: u64,
    /// The size of tier 0's objects (see the module docs). Default 1 MiB. Smaller makes more
    /// tiers, so more rewrites; larger leaves more small objects unmerged in tier 0.
    pub min_object_bytes: u64,
    /// How many stream set objects of one tier merge into one, and the size ratio kept between
    /// a stream object and all newer ones (see the module docs). Default 4. Larger rewrites each
    /// byte fewer times, but leaves more objects per stream.
    pub fanout: usize,
    /// A stream with at least this many bytes in a merge of stream set objects gets stream
    /// objects of its own. Default 8 MiB. Smaller spreads streams out sooner (more PUTs);
    /// larger keeps them mixed longer (readers of one stream fetch more objects).
    pub stream_split_bytes: u64,
    /// Stream set objects at least this large are not merged further: every stream in them is
    /// split out into stream objects. Default 64 MiB. Larger means fewer PUTs per split, but
    /// more rewrites of stream set data before it gets there.
    pub max_stream_set_object_bytes: u64,
    /// Stream objects are merged only while the result stays below this. Default 256 MiB.
    /// Larger means fewer objects for long streams, and longer single rewrites; at most
    /// `max_plan_bytes`.
    pub max_stream_object_bytes: u64,
    /// The most source bytes one plan reads, and so the most one new object holds: the memory
    /// bound of compaction is about twice this (the object being built and the blocks being
    /// copied into it). Default 256 MiB.
    pub max_plan_bytes: u64,
    /// The most source bytes one pass reads; the rest waits for the next pass. Default 1 GiB.
    /// Bounds how long a pass takes and how much it spends at once.
    pub max_bytes_per_pass: u64,
    /// Object-store bandwidth of compaction, reads and writes together, in bytes per second
    /// (0: unlimited). Default 64 MiB/s. Lower leaves more of the network to appends and
    /// readers; higher catches up faster after a burst of small uploads.
    pub bandwidth_bytes_per_sec: u64,
    /// Most objects one plan removes (a deletion of dead objects or a merge). Default 64.
    /// Bounds the size of one manifest record.
    pub max_objects_per_plan: usize,
    /// Most objects deleted per pass. Default 1000 (one S3 batch delete).
    pub max_deletes_per_pass: usize,
    /// Uncompressed size of the blocks of new objects. Default 512 KiB, as uploads write them.
    pub block_bytes: usize,
    /// Compression of new objects. Default zstd level 1.
    pub compression: Compression,
    /// Records between manifest checkpoints for the compactor's own manifest handle. Default
    /// 64; use the stores' `Settings::manifest_checkpoint_every`.
    pub manifest_checkpoint_every: u64,
    /// Retention of every stream without an entry in `stream_retention`. Default: keep all.
    pub retention: Retention,
    /// Retention of single streams, by stream id; overrides `retention`. Default: empty.
    pub stream_retention: BTreeMap<u64, Retention>,
}

impl Default for CompactorSettings {
    fn default() -> Self {
        CompactorSettings {
            pass_interval_ms: 30_000,
            grace_period_ms: 600_000,
            min_object_bytes: 1 << 20,
            fanout: 4,
            stream_split_bytes: 8 << 20,
            max_stream_set_object_bytes: 64 << 20,
            max_stream_object_bytes: 256 << 20,
            max_plan_bytes: 256 << 20,
            max_bytes_per_pass: 1 << 30,
            bandwidth_bytes_per_sec: 64 << 20,
            max_objects_per_plan: 64,
            max_deletes_per_pass: 1000,
            block_bytes: 512 << 10,
            compression: Compression::Zstd { level: 1 },
            manifest_checkpoint_every: 64,
            retention: Retention::default(),
            stream_retention: BTreeMap::new(),
        }
    }
}

impl CompactorSettings {
    /// The retention that applies to `stream`.
    pub fn retention_of(&self, stream: StreamId) -> Retention {
        self.stream_retention
            .get(&stream.get())
            .copied()
            .unwrap_or(self.retention)
    }

    /// The size tier of an object of `size` bytes (see the module docs).
    pub fn tier(&self, size: u64) -> u32 {
        let fanout = self.fanout.max(2) as u64;
        let mut bound = self.min_object_bytes.max(1).saturating_mul(fanout);
        let mut tier = 0;
        while size >= bound && bound != u64::MAX {
            tier += 1;
            bound = bound.saturating_mul(fanout);
        }
        tier
    }

    /// Checks that the settings make sense together.
    pub fn validate(&self) -> Result<()> {
        let fail = |msg: String| -> Result<()> {
            Err(ErrorDetail::InvalidInput(format!("compactor settings: {msg}")).into())
        };
        if self.fanout < 2 {
            return fail(format!("fanout is {}; it must be at least 2", self.fanout));
        }
        if self.min_object_bytes == 0 {
            return fail("min_object_bytes must be positive".into());
        }
        if self.pass_interval_ms == 0 {
            return fail("pass_interval_ms must be positive".into());
        }
        if self.block_bytes == 0 || self.block_bytes > objstream::format::MAX_BLOCK_RAW_BYTES {
            return fail(format!(
                "block_bytes is {}; it must be in 1..={}",
                self.block_bytes,
                objstream::format::MAX_BLOCK_RAW_BYTES
            ));
        }
        if let Compression::Zstd { level } = self.compression {
            if !(1..=19).contains(&level) {
                return fail(format!("zstd level {level} is outside 1..=19"));
            }
        }
        if self.max_stream_object_bytes > self.max_plan_bytes {
            return fail(format!(
                "max_stream_object_bytes ({}) exceeds max_plan_bytes ({}): such merges could never run",
                self.max_stream_object_bytes, self.max_plan_bytes
            ));
        }
        if self.max_plan_bytes > self.max_bytes_per_pass {
            return fail(format!(
                "max_plan_bytes ({}) exceeds max_bytes_per_pass ({}): such plans could never run",
                self.max_plan_bytes, self.max_bytes_per_pass
            ));
        }
        if self.min_object_bytes > self.max_stream_object_bytes {
            return fail("min_object_bytes exceeds max_stream_object_bytes".into());
        }
        if self.max_objects_per_plan < self.fanout {
            return fail(format!(
                "max_objects_per_plan ({}) is below fanout ({})",
                self.max_objects_per_plan, self.fanout
            ));
        }
        if self.max_deletes_per_pass == 0 {
            return fail("max_deletes_per_pass must be positive".into());
        }
        let retentions = std::iter::once((None, &self.retention))
            .chain(self.stream_retention.iter().map(|(s, r)| (Some(*s), r)));
        for (stream, r) in retentions {
            if r.max_bytes == Some(0) || r.max_age_ms == Some(0) {
                let whose = stream.map_or("the default retention".to_string(), |s| {
                    format!("the retention of {}", StreamId(s))
                });
                return fail(format!(
                    "{whose} keeps nothing; leave a limit unset to keep everything"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_settings_are_valid() {
        CompactorSettings::default().validate().unwrap();
    }

    #[test]
    fn settings_round_trip_through_json_and_fill_missing_fields_with_defaults() {
        let s = CompactorSettings {
            fanout: 8,
            ..CompactorSettings::default()
        };
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<CompactorSettings>(&json).unwrap(), s);
        let partial: CompactorSettings =
            serde_json::from_str(r#"{"grace_period_ms": 5, "retention": {"max_bytes": 10}}"#)
                .unwrap();
        assert_eq!(partial.grace_period_ms, 5);
        assert_eq!(partial.retention.max_bytes, Some(10));
        assert_eq!(partial.fanout, 4);
    }

    #[test]
    fn nonsense_settings_are_refused_with_the_field_named() {
        let cases: Vec<(CompactorSettings, &str)> = vec![
            (
                CompactorSettings {
                    fanout: 1,
                    ..Default::default()
                },
                "fanout",
            ),
            (
                CompactorSettings {
                    max_stream_object_bytes: 1 << 40,
                    ..Default::default()
                },
                "max_stream_object_bytes",
            ),
            (
                CompactorSettings {
                    max_plan_bytes: 1 << 40,
                    max_stream_object_bytes: 1 << 40,
                    ..Default::default()
                },
                "max_bytes_per_pass",
            ),
            (
                CompactorSettings {
                    retention: Retention {
                        max_bytes: Some(0),
                        max_age_ms: None,
                    },
                    ..Default::default()
                },
                "keeps nothing",
            ),
            (
                CompactorSettings {
                    block_bytes: 0,
                    ..Default::default()
                },
                "block_bytes",
            ),
        ];
        for (settings, needle) in cases {
            let err = settings.validate().unwrap_err();
            assert_eq!(err.kind(), objstream::ErrorKind::InvalidInput);
            assert!(err.to_string().contains(needle), "{err} lacks {needle}");
        }
    }

    #[test]
    fn tiers_grow_by_fanout_from_the_minimum_size() {
        let s = CompactorSettings {
            min_object_bytes: 100,
            fanout: 4,
            ..Default::default()
        };
        assert_eq!(s.tier(0), 0);
        assert_eq!(s.tier(399), 0);
        assert_eq!(s.tier(400), 1);
        assert_eq!(s.tier(1599), 1);
        assert_eq!(s.tier(1600), 2);
        assert!(s.tier(u64::MAX) < 64);
    }

    #[test]
    fn a_stream_entry_overrides_the_default_retention() {
        let mut s = CompactorSettings::default();
        s.stream_retention.insert(
            3,
            Retention {
                max_bytes: Some(7),
                max_age_ms: None,
            },
        );
        assert_eq!(s.retention_of(StreamId(3)).max_bytes, Some(7));
        assert!(s.retention_of(StreamId(4)).is_unlimited());
    }
}
