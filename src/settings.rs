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
}

fn default_segment_bytes() -> u64 {
    64 << 20
}

impl WalSettings {
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
    /// Bytes of decoded blocks kept in memory for reads from objects. Default 64 MiB.
    pub block_cache_bytes: u64,
    /// Write a manifest checkpoint every this many records. Default 64. Fewer records to read at
    /// open versus more checkpoint PUTs.
    pub manifest_checkpoint_every: u64,
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
            manifest_checkpoint_every: 64,
            object_id_batch: 64,
        }
    }
}

impl Settings {
    /// Checks that the settings make sense together; `Store::open` calls it and refuses to start
    /// otherwise.
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
        }
        if self.max_uploads_in_flight == 0 {
            return fail("max_uploads_in_flight must be at least 1".into());
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
    fn wal_backend_is_chosen_by_tag() {
        let w: WalSettings = serde_json::from_str(r#"{"backend":"file","dir":"/x"}"#).unwrap();
        assert_eq!(w, WalSettings::file("/x"));
    }
}
