//! Builds real stores with the objstream API and runs the `objstream` binary against them.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use bytes::Bytes;
use objstream::config::{open_url_with_env, ObjectStoreOptions};
use objstream::{NodeId, RecordBatch, Settings, Store, WalSettings};

/// Which WAL backend the built store used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wal {
    File,
    Block,
    Object,
}

/// A store on a local directory, written and then left as a crashed node leaves it: the last
/// appends are in the WAL only.
pub struct Built {
    pub dir: tempfile::TempDir,
    /// `file:///…/objects`.
    pub url: String,
    /// The object directory.
    pub objects: PathBuf,
    /// The file WAL directory or the block WAL file (unused for the object WAL).
    pub wal_path: PathBuf,
    /// The node id that wrote it.
    pub node: u64,
}

/// Streams created by [`build`].
pub const STREAMS: u64 = 2;
/// Rounds of appends, each flushed into objects, by [`build`].
pub const ROUNDS: u64 = 3;
/// Batches per stream per round.
pub const BATCHES: u64 = 5;
/// Batches per stream appended after the last flush: in the WAL, in no object.
pub const UNFLUSHED: u64 = 2;

fn payload(stream: u64, n: u64) -> Bytes {
    let mut v = format!("{{\"stream\":{stream},\"n\":{n},\"text\":\"").into_bytes();
    v.resize(200 + (n as usize % 7) * 50, b'x');
    v.extend_from_slice(b"\"}");
    Bytes::from(v)
}

/// Builds a store with `wal` in a local directory: two streams, three flushed rounds of
/// appends (several objects, manifest records and checkpoints every 4 records), then a few
/// appends only in the WAL.
pub fn build(wal: Wal) -> Built {
    let dir = tempfile::tempdir().unwrap();
    let objects = dir.path().join("objects");
    std::fs::create_dir_all(&objects).unwrap();
    let url = format!("file://{}", objects.display());
    build_at(dir, url, wal, &HashMap::new())
}

/// Builds the store of [`build`] at `url`, the S3 settings taken from `env`.
pub fn build_at(
    dir: tempfile::TempDir,
    url: String,
    wal: Wal,
    env: &HashMap<String, String>,
) -> Built {
    let objects = dir.path().join("objects");
    let wal_path = match wal {
        Wal::File => dir.path().join("wal"),
        Wal::Block => dir.path().join("wal.block"),
        Wal::Object => PathBuf::new(),
    };
    let node = 7;
    let settings = Settings {
        node_id: NodeId(node),
        wal: match wal {
            Wal::File => WalSettings::File {
                dir: wal_path.clone(),
                segment_bytes: 1 << 20,
            },
            Wal::Block => WalSettings::block(&wal_path, Some(8 << 20)),
            Wal::Object => WalSettings::object(None),
        },
        max_batch_bytes: 64 << 10,
        upload_threshold_bytes: 64 << 20,
        upload_interval_ms: 3_600_000,
        block_bytes: 2 << 10,
        manifest_checkpoint_every: 4,
        object_id_batch: 2,
        ..Settings::default()
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let location = open_url_with_env(&url, &ObjectStoreOptions::default(), env).unwrap();
        let store = Store::open(settings, location.into_components())
            .await
            .unwrap();
        let mut streams = Vec::new();
        for _ in 0..STREAMS {
            streams.push(store.create_stream().await.unwrap());
        }
        let mut n = 0;
        for _ in 0..ROUNDS {
            for _ in 0..BATCHES {
                for (s, stream) in streams.iter().enumerate() {
                    let batch = RecordBatch::new(2, n as i64, payload(s as u64, n));
                    stream.append(batch).await.unwrap();
                }
                n += 1;
            }
            store.flush().await.unwrap();
        }
        for _ in 0..UNFLUSHED {
            for (s, stream) in streams.iter().enumerate() {
                let batch = RecordBatch::new(1, n as i64, payload(s as u64, n));
                stream.append(batch).await.unwrap();
            }
            n += 1;
        }
        // No shutdown: the node "crashes" here, its last appends only in the WAL.
        std::mem::forget(store);
    });
    runtime.shutdown_background();
    Built {
        dir,
        url,
        objects,
        wal_path,
        node,
    }
}

/// Runs the binary with `args`, without any AWS variable from the environment.
pub fn run(args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_objstream"));
    command.args(args);
    for (name, _) in std::env::vars() {
        if name.starts_with("AWS_") {
            command.env_remove(name);
        }
    }
    command.output().unwrap()
}

/// Stdout as text.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Stderr as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs the binary with `--json` and parses its stdout.
pub fn run_json(args: &[&str]) -> (Output, serde_json::Value) {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = run(&all);
    let value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}\nstderr: {}",
            stdout(&out),
            stderr(&out)
        )
    });
    (out, value)
}

/// Every file under `dir`, sorted.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// The data object files of a store, sorted by id.
pub fn object_files(built: &Built) -> Vec<PathBuf> {
    let mut files = files_under(&built.objects.join("objects"));
    files.sort_by_key(|p| p.file_name().unwrap().to_owned());
    files
}

/// Flips every bit of the byte at `at` (from the end when negative) of `path`.
pub fn flip(path: &Path, at: i64) {
    let mut bytes = std::fs::read(path).unwrap();
    let i = if at < 0 {
        bytes.len() - at.unsigned_abs() as usize
    } else {
        at as usize
    };
    bytes[i] ^= 0xff;
    std::fs::write(path, bytes).unwrap();
}
