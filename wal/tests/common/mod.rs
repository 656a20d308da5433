//! Helpers shared by the file WAL's integration tests.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use objstream_wal::{FileWal, FileWalOptions, Wal, WalRecord};

/// 64 KiB segments, so that a few hundred small records roll over several times.
pub fn small_segments() -> FileWalOptions {
    FileWalOptions {
        segment_bytes: 64 << 10,
        max_record_bytes: 16 << 10,
    }
}

/// A record of `len` bytes that says which record it is.
pub fn payload(i: u64, len: usize) -> Bytes {
    let mut v: Vec<u8> = (0..len).map(|j| (i as usize * 31 + j) as u8).collect();
    let tag = i.to_le_bytes();
    let n = tag.len().min(len);
    v[..n].copy_from_slice(&tag[..n]);
    Bytes::from(v)
}

/// The segment files in `dir`, sorted by name (and so by position).
pub fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let stem = p.file_stem().unwrap().to_str().unwrap();
            p.extension().is_some_and(|e| e == "wal")
                && stem.len() == 20
                && stem.bytes().all(|b| b.is_ascii_digit())
        })
        .collect();
    files.sort();
    files
}

/// The base position in a segment file's name.
pub fn segment_base(path: &Path) -> u64 {
    path.file_stem().unwrap().to_str().unwrap().parse().unwrap()
}

/// Copies every file of `from` into the empty directory `to`.
pub fn copy_dir(from: &Path, to: &Path) {
    for entry in fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
    }
}

/// Opens `dir` with `options` and returns what it replays.
pub async fn reopen(dir: &Path, options: FileWalOptions) -> (FileWal, Vec<WalRecord>) {
    let wal = FileWal::open(dir, options).unwrap();
    let records = wal.replay().await.unwrap();
    (wal, records)
}

/// The payloads of `records`.
pub fn payloads(records: &[WalRecord]) -> Vec<Bytes> {
    records.iter().map(|r| r.payload.clone()).collect()
}
