//! Recovery of the file WAL from damaged segments: torn tails are cut, everything else is
//! corruption that fails the open and names the file and offset.

mod common;

use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use objstream_wal::{FileWal, Wal, WalErrorKind, WalRecord};

use common::{copy_dir, payload, payloads, reopen, segment_base, segment_files, small_segments};

const HEADER_LEN: usize = objstream_wal::frame::HEADER_LEN;
/// The size of the last record of the test log: its frame ends in 7 bytes of padding.
const LAST_LEN: usize = 41;

/// Writes a log of two segments, one record per write batch, the last one `LAST_LEN` bytes,
/// and returns its records as replayed.
async fn write_log(dir: &Path) -> Vec<WalRecord> {
    let wal = FileWal::open(dir, small_segments()).unwrap();
    for i in 0..30 {
        wal.append(payload(i, 3000)).await.unwrap();
    }
    wal.append(payload(30, LAST_LEN)).await.unwrap();
    drop(wal);
    let (_wal, records) = reopen(dir, small_segments()).await;
    assert_eq!(segment_files(dir).len(), 2);
    records
}

/// The segment file holding `record`, and the record's byte offset in it.
fn locate(dir: &Path, record: &WalRecord) -> (PathBuf, u64) {
    let file = segment_files(dir)
        .into_iter()
        .rev()
        .find(|f| segment_base(f) <= record.position.0)
        .unwrap();
    let offset = record.position.0 - segment_base(&file);
    (file, offset)
}

fn overwrite(path: &Path, at: u64, bytes: &[u8]) {
    let file = OpenOptions::new().write(true).open(path).unwrap();
    file.write_all_at(bytes, at).unwrap();
}

#[derive(Clone, Copy, Debug)]
enum Damage {
    /// The write stopped at the cut and left zeros after it.
    Zeros,
    /// The write stopped at the cut and left junk after it, past the frame's end.
    Junk,
    /// The file ends at the cut.
    Truncated,
}

#[tokio::test]
async fn a_torn_last_record_is_cut_at_every_byte_and_appends_continue_after_it() {
    let pristine = tempfile::tempdir().unwrap();
    let records = write_log(pristine.path()).await;
    let all = payloads(&records);
    let last = records.last().unwrap();
    let frame_len = (last.end.0 - last.position.0) as usize;
    let body_end = HEADER_LEN + LAST_LEN;
    assert!(frame_len > body_end, "the last frame has padding");

    for cut in 0..frame_len {
        for damage in [Damage::Zeros, Damage::Junk, Damage::Truncated] {
            let dir = tempfile::tempdir().unwrap();
            copy_dir(pristine.path(), dir.path());
            let (file, offset) = locate(dir.path(), last);
            let from = offset + cut as u64;
            match damage {
                Damage::Zeros => overwrite(&file, from, &vec![0; frame_len - cut]),
                Damage::Junk => overwrite(&file, from, &vec![0xA5; frame_len - cut + 100]),
                Damage::Truncated => {
                    OpenOptions::new()
                        .write(true)
                        .open(&file)
                        .unwrap()
                        .set_len(from)
                        .unwrap();
                }
            }
            // A cut inside the header or body loses the record; one inside the padding loses it
            // only if the file itself ends there.
            let survives = cut >= body_end && !matches!(damage, Damage::Truncated);
            let kept = if survives { all.len() } else { all.len() - 1 };
            let context = format!("cut {cut}, {damage:?}");

            let (wal, replayed) = reopen(dir.path(), small_segments()).await;
            assert_eq!(payloads(&replayed), all[..kept], "{context}");
            let extra = Bytes::from_static(b"after recovery");
            let position = wal.append(extra.clone()).await.unwrap();
            assert_eq!(position, records[kept - 1].end, "{context}");
            drop(wal);

            let (_wal, replayed) = reopen(dir.path(), small_segments()).await;
            let mut expected = all[..kept].to_vec();
            expected.push(extra);
            assert_eq!(payloads(&replayed), expected, "{context}");
        }
    }
}

#[tokio::test]
async fn a_flipped_byte_in_an_earlier_record_of_the_last_segment_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let records = write_log(dir.path()).await;
    let victim = &records[records.len() - 3];
    let (file, offset) = locate(dir.path(), victim);
    assert_eq!(file, *segment_files(dir.path()).last().unwrap());
    let before = fs::read(&file).unwrap();
    overwrite(
        &file,
        offset + HEADER_LEN as u64 + 5,
        &[!before[offset as usize + HEADER_LEN + 5]],
    );
    let damaged = fs::read(&file).unwrap();

    let err = FileWal::open(dir.path(), small_segments()).unwrap_err();
    assert_eq!(err.kind(), WalErrorKind::Corruption);
    let message = err.to_string();
    assert!(message.contains(&file.display().to_string()), "{message}");
    assert!(message.contains(&format!("at byte {offset}")), "{message}");
    assert_eq!(
        fs::read(&file).unwrap(),
        damaged,
        "a failed open changes nothing"
    );
}

#[tokio::test]
async fn a_zeroed_record_before_the_last_batch_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let records = write_log(dir.path()).await;
    let victim = &records[records.len() - 2];
    let (file, offset) = locate(dir.path(), victim);
    let len = (victim.end.0 - victim.position.0) as usize;
    overwrite(&file, offset, &vec![0; len]);

    let err = FileWal::open(dir.path(), small_segments()).unwrap_err();
    assert_eq!(err.kind(), WalErrorKind::Corruption);
    assert!(
        err.to_string().contains(&format!("at byte {offset}")),
        "{err}"
    );
}

#[tokio::test]
async fn a_flipped_byte_in_a_sealed_segment_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let records = write_log(dir.path()).await;
    let first = segment_files(dir.path())[0].clone();
    let second_base = segment_base(&segment_files(dir.path())[1]);
    // The last record of the sealed segment: no later frame in that file vouches for it.
    let victim = records
        .iter()
        .rfind(|r| r.position.0 < second_base)
        .unwrap();
    let (file, offset) = locate(dir.path(), victim);
    assert_eq!(file, first);
    let at = offset + HEADER_LEN as u64 + 100;
    let old = fs::read(&file).unwrap()[at as usize];
    overwrite(&file, at, &[old ^ 0x10]);

    let err = FileWal::open(dir.path(), small_segments()).unwrap_err();
    assert_eq!(err.kind(), WalErrorKind::Corruption);
    let message = err.to_string();
    assert!(message.contains(&first.display().to_string()), "{message}");
    assert!(message.contains(&format!("at byte {offset}")), "{message}");
}

#[tokio::test]
async fn a_zeroed_tail_of_a_sealed_segment_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let records = write_log(dir.path()).await;
    let second_base = segment_base(&segment_files(dir.path())[1]);
    let victim = records
        .iter()
        .rfind(|r| r.position.0 < second_base)
        .unwrap();
    let (file, offset) = locate(dir.path(), victim);
    overwrite(
        &file,
        offset,
        &vec![0; (victim.end.0 - victim.position.0) as usize],
    );

    let err = FileWal::open(dir.path(), small_segments()).unwrap_err();
    assert_eq!(err.kind(), WalErrorKind::Corruption);
    assert!(err.to_string().contains("the data before it ends"), "{err}");
}

#[tokio::test]
async fn a_missing_segment_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let wal = FileWal::open(dir.path(), small_segments()).unwrap();
    for i in 0..60 {
        wal.append(payload(i, 3000)).await.unwrap();
    }
    drop(wal);
    let files = segment_files(dir.path());
    assert!(files.len() >= 3);
    fs::remove_file(&files[1]).unwrap();
    let err = FileWal::open(dir.path(), small_segments()).unwrap_err();
    assert_eq!(err.kind(), WalErrorKind::Corruption);
    assert!(
        err.to_string().contains(&files[2].display().to_string()),
        "{err}"
    );
}

#[tokio::test]
async fn leftover_spare_files_are_removed_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let records = write_log(dir.path()).await;
    fs::write(dir.path().join("spare-7.wal.tmp"), vec![1; 4096]).unwrap();
    let (_wal, replayed) = reopen(dir.path(), small_segments()).await;
    assert_eq!(replayed, records);
    assert!(!dir.path().join("spare-7.wal.tmp").exists());
}
