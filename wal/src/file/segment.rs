//! Segment files: names, listing, zero-filled creation, and directory syncs.
//!
//! A segment is a file of a fixed size named after the logical position of its first frame,
//! zero-padded to 20 digits so that names sort like positions: `00000000000000000000.wal`,
//! `00000000000067108840.wal`. Frames fill it from offset 0; the frame at file offset `o`
//! has position `base + o`. A frame never spans two segments, so the next segment starts at
//! the position where the previous one's data ends and positions stay contiguous.
//!
//! Segments are born complete: a new one is written as a spare (`spare-N.wal.tmp`) full of
//! zeros and synced with its metadata, then renamed to its segment name and the directory is
//! synced. Zeros written in advance (rather than `fallocate`d, which leaves unwritten extents
//! whose conversion every `fdatasync` must journal, or a file grown by each write, whose size
//! every `fdatasync` must persist) let an append's `fdatasync` write data blocks only: on the
//! ext4 disk this was measured on, 4 KiB pwrite + fdatasync took 105 µs p50 into zeroed space,
//! 155 µs into fallocated space and 185 µs at the end of a growing file. Leftover spares are
//! deleted when a WAL opens.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// The extension of segment files.
const SEGMENT_EXT: &str = "wal";
/// The extension of spares being prepared.
const SPARE_EXT: &str = "wal.tmp";
/// Digits in a segment name.
const NAME_DIGITS: usize = 20;
/// Zeros are written this many bytes at a time.
pub(super) const ZERO_CHUNK: usize = 1 << 20;

static ZEROS: [u8; ZERO_CHUNK] = [0; ZERO_CHUNK];

/// A segment file that holds (or will hold) frames.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct SegmentFile {
    /// The position of its first frame.
    pub base: u64,
    /// Its path.
    pub path: PathBuf,
}

/// The file name of the segment whose first frame is at `base`.
pub(super) fn segment_name(base: u64) -> String {
    format!("{base:0NAME_DIGITS$}.{SEGMENT_EXT}")
}

/// The base position named by a segment file name, or `None` for any other name.
pub(super) fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SEGMENT_EXT)?.strip_suffix('.')?;
    if digits.len() != NAME_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The path of the `n`th spare prepared since the WAL opened.
pub(super) fn spare_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("spare-{n}.{SPARE_EXT}"))
}

/// The segments in `dir`, sorted by base, and the leftover spares.
pub(super) fn list(dir: &Path) -> io::Result<(Vec<SegmentFile>, Vec<PathBuf>)> {
    let mut segments = Vec::new();
    let mut spares = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(base) = parse_segment_name(name) {
            segments.push(SegmentFile {
                base,
                path: entry.path(),
            });
        } else if name.starts_with("spare-") && name.ends_with(SPARE_EXT) {
            spares.push(entry.path());
        }
    }
    segments.sort_by_key(|s| s.base);
    Ok((segments, spares))
}

/// A new file being filled with zeros a chunk at a time, so that the thread doing it can
/// answer other requests in between.
#[derive(Debug)]
pub(super) struct ZeroFill {
    file: File,
    path: PathBuf,
    len: u64,
    written: u64,
}

impl ZeroFill {
    /// Creates (or truncates) the file at `path`, to be filled to `len` bytes.
    pub fn create(path: PathBuf, len: u64) -> io::Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)?;
        Ok(ZeroFill {
            file,
            path,
            len,
            written: 0,
        })
    }

    /// Writes the next chunk; true once every byte is written.
    pub fn step(&mut self) -> io::Result<bool> {
        if self.written < self.len {
            let n = (self.len - self.written).min(ZERO_CHUNK as u64) as usize;
            self.file.write_all_at(&ZEROS[..n], self.written)?;
            self.written += n as u64;
        }
        Ok(self.written >= self.len)
    }

    /// Syncs data and metadata (size, allocation) and hands back the file.
    pub fn finish(self) -> io::Result<(File, PathBuf)> {
        self.file.sync_all()?;
        Ok((self.file, self.path))
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Fills the whole file at once, syncs it, and hands it back.
    pub fn run(mut self) -> io::Result<(File, PathBuf)> {
        while !self.step()? {}
        self.finish()
    }
}

/// Overwrites `from..to` of `file` with zeros and syncs the data.
pub(super) fn zero_range(file: &File, from: u64, to: u64) -> io::Result<()> {
    let mut at = from;
    while at < to {
        let n = (to - at).min(ZERO_CHUNK as u64) as usize;
        file.write_all_at(&ZEROS[..n], at)?;
        at += n as u64;
    }
    file.sync_data()
}

/// Makes creations, renames and deletions in the directory durable.
pub(super) fn sync_dir(dir: &File) -> io::Result<()> {
    dir.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_are_zero_padded_and_sort_like_positions() {
        assert_eq!(segment_name(0), "00000000000000000000.wal");
        assert_eq!(segment_name(67_108_840), "00000000000067108840.wal");
        assert_eq!(segment_name(u64::MAX), "18446744073709551615.wal");
        let mut names: Vec<_> = [9u64, 100, 8, 1 << 40].map(segment_name).into();
        names.sort();
        let bases: Vec<_> = names
            .iter()
            .map(|n| parse_segment_name(n).unwrap())
            .collect();
        assert_eq!(bases, vec![8, 9, 100, 1 << 40]);
    }

    #[test]
    fn only_exact_segment_names_parse() {
        assert_eq!(parse_segment_name("00000000000000004096.wal"), Some(4096));
        for bad in [
            "0000000000000004096.wal",
            "000000000000000004096.wal",
            "0000000000000000409a.wal",
            "00000000000000004096.wal.tmp",
            "00000000000000004096",
            "99999999999999999999.wal",
            "spare-1.wal.tmp",
            "LOCK",
        ] {
            assert_eq!(parse_segment_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn listing_sorts_segments_and_finds_spares() {
        let dir = tempfile::tempdir().unwrap();
        for name in [segment_name(4096), segment_name(0), "LOCK".into()] {
            fs::write(dir.path().join(name), b"").unwrap();
        }
        fs::write(spare_path(dir.path(), 3), b"").unwrap();
        let (segments, spares) = list(dir.path()).unwrap();
        let bases: Vec<_> = segments.iter().map(|s| s.base).collect();
        assert_eq!(bases, vec![0, 4096]);
        assert_eq!(spares, vec![spare_path(dir.path(), 3)]);
    }

    #[test]
    fn a_zero_fill_writes_exactly_the_requested_length() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("z");
        fs::write(&path, vec![1u8; 10]).unwrap();
        let len = ZERO_CHUNK as u64 + 24;
        let (file, _) = ZeroFill::create(path.clone(), len).unwrap().run().unwrap();
        assert_eq!(file.metadata().unwrap().len(), len);
        assert!(fs::read(&path).unwrap().iter().all(|&b| b == 0));
    }

    #[test]
    fn zero_range_clears_only_the_range() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("z");
        fs::write(&path, vec![7u8; 64]).unwrap();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        zero_range(&file, 16, 64).unwrap();
        let data = fs::read(&path).unwrap();
        assert!(data[..16].iter().all(|&b| b == 7));
        assert!(data[16..].iter().all(|&b| b == 0));
    }
}
