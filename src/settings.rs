//! Tunables, in one serde struct.
//!
//! Every field documents its default and the trade-off it controls. A `Settings` can be built in
//! code (`Settings::default()` and field updates) or read from JSON; missing fields take their
//! defaults.
//!
//! ```
//! let s: objstream::Settings = serde_json::from_str(r#"{ "upload_threshold_bytes": 1048576 }"#).unwrap();
//! assert_eq!(s.upload_threshold_bytes, 1 << 20);
//! assert_eq!(s.max_batch_bytes, objstream::Settings::default().max_batch_bytes);
//! ```

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::types::NodeId;

/// Which write-ahead log a store uses.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "backend", rename_all = "snake_case")]
#[non_exhaustive]
pub enum WalSettings {
    /// A directory of preallocated segment files on a local disk (NVMe). Survives crashes and
    /// restarts of the process on the same machine; another node can take over only with the disk.
    File {
        /// The directory. Created if missing.
        dir: PathBuf,
        /// Size of each preallocated segment file. Default 64 MiB. Larger segments mean fewer
        /// files and rollovers; space is reclaimed a whole segment at a time.
        #[serde(default = "default_segment_bytes")]
        segment_bytes: u64,
    },
    /// A ring on a block device (an EBS volume, a raw NVMe namespace) or a preallocated file,
    /// written with O_DIRECT. Its header carries the writing node's id and epoch, so another node
    /// that reaches the device (a reattached volume) can take it over and fence the old writer.
    Block {
        /// The device or file.
        path: PathBuf,
        /// When `path` does not exist, create a file of this many bytes. Default: none (the
        /// device or preallocated file must exist). Larger rings absorb longer upload stalls.
        #[serde(default)]
        create_bytes: Option<u64>,
        /// The most writes a second the WAL sends to the device; 0 (the default) for no
        /// limit. Past a volume's IOPS (EBS gp3: 3 000 at baseline) more, smaller writes only
        /// queue in the device; with a budget, appends share fewer, larger writes instead.
        /// Each write also reads the 8 KiB header, so half the volume's IOPS at most (1 200 on
        /// a gp3 baseline). See `objstream_wal::BlockWalOptions::max_writes_per_sec`.
        #[serde(default)]
        max_writes_per_sec: u32,
    },
    /// WAL objects in an object store: S3 Express One Zone for single-digit-millisecond acks, or
    /// any store. Reachable from every node, so any node can take over a failed one (it seals
    /// the WAL first: see docs/protocols.md). Appends are batched into one object per
    /// `batch_bytes` or `linger_micros`, whichever comes first.
    Object {
        /// The store holding the WAL, as a URL (`s3://bucket/prefix`, `file:///dir`). Default:
        /// none, the data store under `{prefix}/wal`. A separate low-latency bucket (S3 Express)
        /// gives faster acks while data stays in S3 Standard.
        #[serde(default)]
        url: Option<String>,
        /// Close a WAL object at this many bytes. Default 4 MiB. Larger means fewer PUTs per GB
        /// at saturation; under light load objects close on `linger_micros` and stay small.
        #[serde(default = "default_wal_object_bytes")]
        batch_bytes: usize,
        /// The longest a record waits for others to share its WAL object, in microseconds.
        /// Default 2000 (2 ms). A record goes at once when no WAL object started in the linger
        /// before it arrived (the WAL is idle); otherwise it waits this long for company.
        /// Trade-off: a steady trickle of appends faster than 1 / linger always finds the WAL
        /// busy and costs at most 1 / linger PUTs per second (500 at the default), as a fixed
        /// linger did; a slower trickle costs one PUT per append whatever the linger. A lone
        /// append waits only when the previous object started less than a linger before it,
        /// so on a store whose PUTs take longer than the linger an appender that awaits each
        /// append never waits. Longer means fewer PUTs for fast trickles and more latency
        /// there; shorter the reverse. Objects at saturation close on `batch_bytes`, never on
        /// the linger. Nothing is written while idle. (`objstream_wal::ObjectWalOptions`
        /// also offers group commit, a lone append never waiting at up to one PUT per PUT
        /// latency, and the fixed linger added to every append.)
        #[serde(default = "default_wal_linger_micros")]
        linger_micros: u64,
        /// When a record waits for `linger_micros`. Default `when_busy`: only when a WAL object
        /// started within the linger before it (the request cost of a fixed linger, a lone
        /// append never delayed on an idle WAL). `group_commit`: only while PUTs are in flight
        /// (an awaited lone append costs one PUT latency, at up to one PUT per PUT latency for
        /// a trickle: 2-3x the PUTs of `when_busy` on a fast store). `fixed`: always.
        #[serde(default)]
        linger_mode: WalLinger,
        /// WAL objects uploading at once. Default 8, at most 64. Throughput is about
        /// `max_in_flight * batch_bytes / PUT latency`. Every node should use the same value: a
        /// node taking over seals this many slots past the failed writer.
        #[serde(default = "default_wal_in_flight")]
        max_in_flight: usize,
    },
}

/// When an object WAL's record waits for company: see `WalSettings::Object::linger_mode`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum WalLinger {
    /// Wait only when a WAL object started within the linger before the record arrived.
    #[default]
    WhenBusy,
    /// Wait only while WAL objects are being written.
    GroupCommit,
    /// Always wait the whole linger.
    Fixed,
}

fn default_wal_object_bytes() -> usize {
    4 << 20
}

fn default_wal_linger_micros() -> u64 {
    2000
}

fn default_wal_in_flight() -> usize {
    8
}

fn default_segment_bytes() -> u64 {
    64 << 20
}

impl WalSettings {
    /// A block WAL on `path`, creating a file of `create_bytes` there if it does not exist.
    pub fn block(path: impl Into<PathBuf>, create_bytes: Option<u64>) -> Self {
        WalSettings::Block {
            path: path.into(),
            create_bytes,
            max_writes_per_sec: 0,
        }
    }

    /// An object WAL with default batching, in the data store (`url` none) or in the store at
    /// `url`.
    ///
    /// ```
    /// use objstream::WalSettings;
    /// // WAL objects in a separate low-latency bucket, batched by 1 MiB or 1 ms:
    /// let wal = match WalSettings::object(Some("s3://wal-bucket--usw2-az1--x-s3/node-1".into())) {
    ///     WalSettings::Object { url, max_in_flight, linger_mode, .. } => WalSettings::Object {
    ///         url, batch_bytes: 1 << 20, linger_micros: 1_000, linger_mode, max_in_flight,
    ///     },
    ///     other => other,
    /// };
    /// let settings = objstream::Settings { wal, ..Default::default() };
    /// assert!(settings.validate().is_ok());
    /// ```
    pub fn object(url: Option<String>) -> Self {
        WalSettings::Object {
            url,
            batch_bytes: default_wal_object_bytes(),
            linger_micros: default_wal_linger_micros(),
            linger_mode: WalLinger::default(),
            max_in_flight: default_wal_in_flight(),
        }
    }

    /// A file WAL in `dir` with default segment size.
    pub fn file(dir: impl Into<PathBuf>) -> Self {
        WalSettings::File {
            dir: dir.into(),
            segment_bytes: default_segment_bytes(),
        }
    }
}

/// Compression of data blocks in objects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "codec", rename_all = "snake_case")]
pub enum Compression {
    /// Blocks are stored as they are.
    None,
    /// zstd at `level` (default 1: about 400 MB/s per core, typically 2-4x on JSON events).
    Zstd {
        /// zstd level, 1..=19.
        level: i32,
    },
}

/// The store's tunables. See each field for its default and trade-off.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// This node's id. Default 0. Every store sharing one object store prefix must have its own.
    pub node_id: NodeId,
    /// The write-ahead log. Default: a file WAL in `./data/wal`.
    pub wal: WalSettings,
    /// Largest batch payload `append` accepts. Default 8 MiB. Larger batches are rejected with
    /// an invalid-input error.
    pub max_batch_bytes: usize,
    /// Upload when this many bytes wait in the log cache. Default 32 MiB. Larger means fewer,
    /// larger objects (fewer PUTs per GB) but more WAL to replay after a crash.
    pub upload_threshold_bytes: u64,
    /// Upload whatever waits at least this often, in milliseconds. Default 5000. Shorter means
    /// faster WAL reclaim and recovery, and more, smaller objects when ingest is slow.
    pub upload_interval_ms: u64,
    /// A stream with at least this many bytes in one upload gets its own stream object instead
    /// of sharing the stream set object. Default 8 MiB.
    pub stream_split_bytes: u64,
    /// Uploads in flight at once. Default 4. Throughput against a slow store is
    /// `in flight × object size / PUT latency`.
    pub max_uploads_in_flight: usize,
    /// Uncompressed size at which a data block is cut. Default 512 KiB. Larger blocks compress
    /// better; smaller blocks make point reads cheaper.
    pub block_bytes: usize,
    /// Compression of data blocks. Default zstd level 1.
    pub compression: Compression,
    /// Bytes of appended batches held in memory until they are uploaded and committed (the log
    /// cache). Default 256 MiB. When it is full of not-yet-uploaded data, appends wait.
    pub log_cache_bytes: u64,
    /// Bytes of decoded blocks kept in memory for reads from objects: the block cache's memory
    /// tier. Default 64 MiB. Must hold at least four blocks of `block_bytes` (the tier has four
    /// shards and a block must fit one). Catch-up reads and read-ahead fill it at low priority,
    /// so a scan of old data evicts its own blocks before those of tail readers.
    pub block_cache_bytes: u64,
    /// Directory of the block cache's disk tier, used only by this store and emptied when it
    /// opens. Default none: no disk tier. A local NVMe disk turns re-reads of old data (replays
    /// of the same window) into local reads instead of GETs.
    pub block_cache_disk_dir: Option<PathBuf>,
    /// Bytes of disk the disk tier may use. Default 8 GiB; at least 32 MiB when the tier is on.
    /// Ignored without `block_cache_disk_dir`. The tier also holds up to 24 MiB of write
    /// buffers in memory.
    pub block_cache_disk_bytes: u64,
    /// Bytes of decoded object indexes kept in memory. Default 16 MiB (about 400,000 blocks'
    /// worth). Too small means an extra GET per object for readers of old data.
    pub index_cache_bytes: u64,
    /// Most bytes a sequential reader of old data has prefetched ahead of it, and most bytes of
    /// read-ahead in flight across readers. Default 32 MiB; 0 turns read-ahead off. The window
    /// in effect is at most a quarter of `block_cache_bytes`. Larger hides more GET latency on
    /// a slow store, at the cost of memory and of reads wasted when a reader stops.
    pub read_ahead_bytes: u64,
    /// Object-store bandwidth, in bytes per second, shared by uploads and reads of old data.
    /// Default 0: unlimited. When set, uploads and reads near the tail take from it without
    /// waiting, and catch-up reads (then read-ahead) wait for what is left, so a backfill
    /// cannot starve uploads (and with them appends) on a shared link. Set it to what the
    /// link sustains minus headroom.
    pub catch_up_bytes_per_sec: u64,
    /// Write a manifest checkpoint every this many records. Default 64. Fewer records to read at
    /// open versus more checkpoint PUTs.
    pub manifest_checkpoint_every: u64,
    /// Seconds a manifest checkpoint must have existed before the log records it covers (and
    /// older checkpoints) are deleted. Default 600; 0 keeps every record; otherwise at least
    /// 180 (`manifest::prune::MIN_LOG_RETENTION`). Without pruning the log grows by one small
    /// object per commit forever; the node that writes a checkpoint prunes below it.
    pub manifest_log_retention_secs: u64,
    /// Object ids reserved from the manifest at a time. Default 64: one manifest commit per 64
    /// uploads rather than one per upload. Unused ids are skipped, never reused.
    pub object_id_batch: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            node_id: NodeId(0),
            wal: WalSettings::file("data/wal"),
            max_batch_bytes: 8 << 20,
            upload_threshold_bytes: 32 << 20,
            upload_interval_ms: 5000,
            stream_split_bytes: 8 << 20,
            max_uploads_in_flight: 4,
            block_bytes: 512 << 10,
            compression: Compression::Zstd { level: 1 },
            log_cache_bytes: 256 << 20,
            block_cache_bytes: 64 << 20,
            block_cache_disk_dir: None,
            block_cache_disk_bytes: 8 << 30,
            index_cache_bytes: 16 << 20,
            read_ahead_bytes: 32 << 20,
            catch_up_bytes_per_sec: 0,
            manifest_checkpoint_every: 64,
            manifest_log_retention_secs: 600,
            object_id_batch: 64,
        }
    }
}

/// Memory the store uses beyond what [`Settings::memory_bound_bytes`] counts: code, runtime,
/// WAL buffers, allocator slack, decode scratch. `tests/memory_bounds.rs` measures it (about
/// 36 MiB). It assumes an allocator that returns freed memory: glibc's malloc with its mmap
/// threshold fixed (`MALLOC_MMAP_THRESHOLD_=65536`), jemalloc or mimalloc. With glibc's default
/// dynamic threshold, freed payload buffers can stay in its arenas, up to about 100 MiB more in
/// that test.
pub const MEMORY_OVERHEAD_BYTES: u64 = 64 << 20;

impl Settings {
    /// The memory the store's caches and pipelines may hold, by the settings:
    ///
    /// - the log cache (`log_cache_bytes`), which holds every append until its upload commits;
    /// - encoded objects in flight to the object store: they copy sealed log cache entries, so
    ///   at most `log_cache_bytes` more;
    /// - the block cache's memory tier (`block_cache_bytes`) and, with a disk tier, its write
    ///   buffers;
    /// - the index cache (`index_cache_bytes`);
    /// - read-ahead in flight (`read_ahead_bytes`, at most a quarter of the memory tier);
    /// - idle receive buffers kept for reuse by catch-up reads: at most as much again as the
    ///   read-ahead cap, freed a second after they were last used;
    /// - one merged range read per fetch in progress (not counted: it scales with readers).
    ///
    /// The process stays under this plus [`MEMORY_OVERHEAD_BYTES`] (and what readers keep of
    /// the batches they were given).
    ///
    /// ```
    /// let s = objstream::Settings { log_cache_bytes: 64 << 20, block_cache_bytes: 128 << 20, ..Default::default() };
    /// assert!(s.memory_bound_bytes() >= 2 * (64 << 20) + (128 << 20));
    /// ```
    pub fn memory_bound_bytes(&self) -> u64 {
        let disk_buffers = if self.block_cache_disk_dir.is_some() {
            objstream_cache::DiskTierConfig::buffer_bytes()
        } else {
            0
        };
        2 * self.log_cache_bytes
            + self.block_cache_bytes
            + disk_buffers
            + self.index_cache_bytes
            + 2 * crate::read::read_ahead_cap(self)
    }

    /// Checks that the settings make sense together; `Store::open` calls it and refuses to start
    /// otherwise.
    ///
    /// ```
    /// use objstream::{ErrorKind, Settings, WalSettings};
    /// let mut s = Settings { wal: WalSettings::block("/dev/nvme1n1", None), ..Settings::default() };
    /// assert!(s.validate().is_ok());
    /// s.max_uploads_in_flight = 0;
    /// let e = s.validate().unwrap_err();
    /// assert_eq!(e.kind(), ErrorKind::InvalidInput);
    /// assert!(e.to_string().contains("max_uploads_in_flight"), "{e}");
    /// ```
    pub fn validate(&self) -> crate::Result<()> {
        let fail = |msg: String| Err(crate::Error::invalid(format!("settings: {msg}")));
        // A batch larger than a block is a block of its own, so it must fit the largest block.
        let max_batch = crate::format::MAX_BLOCK_RAW_BYTES - crate::format::BATCH_HEADER_LEN;
        if self.max_batch_bytes == 0 || self.max_batch_bytes > max_batch {
            return fail(format!("max_batch_bytes must be between 1 and {max_batch}"));
        }
        match &self.wal {
            WalSettings::File { segment_bytes, .. } => {
                let record = self.max_batch_bytes as u64 + 128;
                if *segment_bytes < record {
                    return fail(format!(
                        "a WAL segment of {segment_bytes} bytes cannot hold a batch of max_batch_bytes = {} bytes",
                        self.max_batch_bytes
                    ));
                }
            }
            WalSettings::Block { create_bytes, .. } => {
                if let Some(bytes) = create_bytes {
                    // Two header blocks, and room for at least two of the largest writes.
                    let needed = 8192 + 4 * (self.max_batch_bytes as u64 + 4096);
                    if *bytes < needed {
                        return fail(format!(
                            "a block WAL of {bytes} bytes is too small for batches of {} bytes (at least {needed})",
                            self.max_batch_bytes
                        ));
                    }
                }
            }
            WalSettings::Object {
                url,
                batch_bytes,
                linger_micros,
                max_in_flight,
                ..
            } => {
                if *batch_bytes == 0 {
                    return fail("the object WAL's batch_bytes must be at least 1".into());
                }
                if *linger_micros > 10_000_000 {
                    return fail(format!(
                        "the object WAL's linger_micros of {linger_micros} is over 10 s: appends would wait that long"
                    ));
                }
                if !(1..=64).contains(max_in_flight) {
                    return fail(format!(
                        "the object WAL's max_in_flight must be between 1 and 64, not {max_in_flight}"
                    ));
                }
                if url.as_deref().is_some_and(|u| u.trim().is_empty()) {
                    return fail("the object WAL's url is empty".into());
                }
            }
        }
        if self.max_uploads_in_flight == 0 {
            return fail("max_uploads_in_flight must be at least 1".into());
        }
        let min_retention = crate::manifest::prune::MIN_LOG_RETENTION.as_secs();
        if self.manifest_log_retention_secs != 0 && self.manifest_log_retention_secs < min_retention
        {
            return fail(format!(
                "manifest_log_retention_secs must be 0 (keep every record) or at least {min_retention}, not {}",
                self.manifest_log_retention_secs
            ));
        }
        if self.block_bytes == 0 || self.block_bytes > crate::format::MAX_BLOCK_RAW_BYTES {
            return fail(format!(
                "block_bytes must be between 1 and {}",
                crate::format::MAX_BLOCK_RAW_BYTES
            ));
        }
        if let Compression::Zstd { level } = self.compression {
            if !(1..=19).contains(&level) {
                return fail(format!("zstd level {level} is outside 1..=19"));
            }
        }
        if self.upload_interval_ms == 0 {
            return fail("upload_interval_ms must be at least 1".into());
        }
        if self.block_cache_bytes < 4 * self.block_bytes as u64 {
            return fail(format!(
                "block_cache_bytes ({}) must hold at least four blocks of block_bytes ({})",
                self.block_cache_bytes, self.block_bytes
            ));
        }
        let min_disk = 4 * objstream_cache::DISK_BLOCK_BYTES as u64;
        if self.block_cache_disk_dir.is_some() && self.block_cache_disk_bytes < min_disk {
            return fail(format!(
                "block_cache_disk_bytes ({}) must be at least {min_disk} when the disk tier is on",
                self.block_cache_disk_bytes
            ));
        }
        if self.index_cache_bytes < 64 << 10 {
            return fail(format!(
                "index_cache_bytes ({}) must be at least 64 KiB",
                self.index_cache_bytes
            ));
        }
        if self.log_cache_bytes < self.max_batch_bytes as u64 {
            return fail(format!(
                "log_cache_bytes ({}) must hold at least one batch of max_batch_bytes ({})",
                self.log_cache_bytes, self.max_batch_bytes
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_valid() {
        Settings::default().validate().unwrap();
    }

    #[test]
    fn settings_that_cannot_work_are_refused_with_the_reason() {
        let bad = [
            Settings {
                max_batch_bytes: 0,
                ..Settings::default()
            },
            Settings {
                wal: WalSettings::File {
                    dir: "w".into(),
                    segment_bytes: 1 << 20,
                },
                ..Settings::default()
            },
            Settings {
                max_uploads_in_flight: 0,
                ..Settings::default()
            },
            Settings {
                compression: Compression::Zstd { level: 40 },
                ..Settings::default()
            },
            Settings {
                log_cache_bytes: 1024,
                ..Settings::default()
            },
            Settings {
                block_cache_bytes: 1 << 20,
                ..Settings::default()
            },
            Settings {
                block_cache_disk_dir: Some("cache".into()),
                block_cache_disk_bytes: 1 << 20,
                ..Settings::default()
            },
            Settings {
                index_cache_bytes: 0,
                ..Settings::default()
            },
            Settings {
                wal: WalSettings::Object {
                    url: None,
                    batch_bytes: 4 << 20,
                    linger_micros: 2000,
                    linger_mode: WalLinger::WhenBusy,
                    max_in_flight: 65,
                },
                ..Settings::default()
            },
            Settings {
                wal: WalSettings::Object {
                    url: None,
                    batch_bytes: 0,
                    linger_micros: 2000,
                    linger_mode: WalLinger::WhenBusy,
                    max_in_flight: 8,
                },
                ..Settings::default()
            },
            Settings {
                wal: WalSettings::Object {
                    url: Some(" ".into()),
                    batch_bytes: 1 << 20,
                    linger_micros: 2000,
                    linger_mode: WalLinger::WhenBusy,
                    max_in_flight: 8,
                },
                ..Settings::default()
            },
        ];
        for s in bad {
            let e = s.validate().unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::InvalidInput);
            assert!(e.to_string().starts_with("invalid input: settings:"), "{e}");
        }
    }

    #[test]
    fn settings_round_trip_through_json() {
        let s = Settings::default();
        let json = serde_json::to_string(&s).unwrap();
        let back: Settings = serde_json::from_str(&json).unwrap();
        assert_eq!(s, back);
    }

    #[test]
    fn the_memory_bound_adds_up_every_cache_and_the_uploads() {
        let s = Settings::default();
        let expected = 2 * (256 << 20) + (64 << 20) + (16 << 20) + 2 * (16 << 20);
        assert_eq!(
            s.memory_bound_bytes(),
            expected,
            "read-ahead capped at a quarter of 64 MiB, and as much again of idle receive buffers"
        );
        let with_disk = Settings {
            block_cache_disk_dir: Some("cache".into()),
            ..Settings::default()
        };
        assert_eq!(
            with_disk.memory_bound_bytes(),
            expected + objstream_cache::DiskTierConfig::buffer_bytes()
        );
    }

    #[test]
    fn wal_backend_is_chosen_by_tag() {
        let w: WalSettings = serde_json::from_str(r#"{"backend":"file","dir":"/x"}"#).unwrap();
        assert_eq!(w, WalSettings::file("/x"));
        let w: WalSettings =
            serde_json::from_str(r#"{"backend":"block","path":"/dev/x"}"#).unwrap();
        assert_eq!(w, WalSettings::block("/dev/x", None));
        let w: WalSettings = serde_json::from_str(
            r#"{"backend":"block","path":"/dev/x","max_writes_per_sec":1200}"#,
        )
        .unwrap();
        assert!(matches!(
            w,
            WalSettings::Block {
                max_writes_per_sec: 1200,
                ..
            }
        ));
        let w: WalSettings = serde_json::from_str(r#"{"backend":"object"}"#).unwrap();
        assert_eq!(w, WalSettings::object(None));
        Settings {
            wal: w,
            ..Settings::default()
        }
        .validate()
        .unwrap();
    }
}
