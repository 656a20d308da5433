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

#[cfg(test)]
mod tests {
    use super::*;

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
