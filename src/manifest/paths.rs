//! Keys of the manifest's objects.
//!
//! ```text
//! {prefix}/manifest/{seq:020}             log record number seq (the first is 1)
//! {prefix}/manifest-checkpoint/{seq:020}  the state after applying records 1..=seq
//! ```
//!
//! Numbers are zero-padded to 20 digits (every `u64` fits) so that keys sort like the numbers,
//! but nothing relies on that: LIST order is not lexicographic on every store, so checkpoint
//! keys are parsed and sorted by number.

use object_store::path::Path;

const SEQ_DIGITS: usize = 20;

/// The keys of one manifest under a prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ManifestPaths {
    records: Path,
    checkpoints: Path,
}

impl ManifestPaths {
    /// The manifest under `prefix`.
    pub(crate) fn new(prefix: &Path) -> Self {
        ManifestPaths {
            records: prefix.clone().join("manifest"),
            checkpoints: prefix.clone().join("manifest-checkpoint"),
        }
    }

    /// The key of log record `seq`.
    pub(crate) fn record(&self, seq: u64) -> Path {
        self.records.clone().join(format!("{seq:0SEQ_DIGITS$}"))
    }

    /// The key of the checkpoint as of `seq`.
    pub(crate) fn checkpoint(&self, seq: u64) -> Path {
        self.checkpoints.clone().join(format!("{seq:0SEQ_DIGITS$}"))
    }

    /// The folder holding the checkpoints (to LIST).
    pub(crate) fn checkpoints(&self) -> &Path {
        &self.checkpoints
    }

    /// The folder holding the log records (to LIST when pruning).
    pub(crate) fn records(&self) -> &Path {
        &self.records
    }

    /// The sequence number of a checkpoint key, or `None` when `key` is not one.
    pub(crate) fn checkpoint_seq(&self, key: &Path) -> Option<u64> {
        seq_under(&self.checkpoints, key)
    }

    /// The sequence number of a record key, or `None` when `key` is not one.
    pub(crate) fn record_seq(&self, key: &Path) -> Option<u64> {
        seq_under(&self.records, key)
    }
}

/// The number of a key directly under `folder` whose name is 20 digits.
fn seq_under(folder: &Path, key: &Path) -> Option<u64> {
    let mut rest = key.prefix_match(folder)?;
    let name = rest.next()?;
    if rest.next().is_some() {
        return None;
    }
    let name = name.as_ref();
    if name.len() != SEQ_DIGITS || !name.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    name.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_zero_padded_to_twenty_digits() {
        let paths = ManifestPaths::new(&Path::from("tenant/a"));
        assert_eq!(
            paths.record(7).as_ref(),
            "tenant/a/manifest/00000000000000000007"
        );
        assert_eq!(
            paths.checkpoint(u64::MAX).as_ref(),
            "tenant/a/manifest-checkpoint/18446744073709551615"
        );
    }

    #[test]
    fn a_checkpoint_key_parses_back_to_its_number() {
        let paths = ManifestPaths::new(&Path::from("p"));
        for seq in [1, 42, 1 << 40, u64::MAX] {
            assert_eq!(paths.checkpoint_seq(&paths.checkpoint(seq)), Some(seq));
            assert_eq!(paths.record_seq(&paths.record(seq)), Some(seq));
            assert_eq!(paths.record_seq(&paths.checkpoint(seq)), None);
            assert_eq!(paths.checkpoint_seq(&paths.record(seq)), None);
        }
    }

    #[test]
    fn other_keys_are_not_checkpoints() {
        let paths = ManifestPaths::new(&Path::from("p"));
        for key in [
            "p/manifest/00000000000000000001",
            "p/manifest-checkpoint/1",
            "p/manifest-checkpoint/0000000000000000000x",
            "p/manifest-checkpoint/00000000000000000001/extra",
            "p/manifest-checkpoint/99999999999999999999",
            "q/manifest-checkpoint/00000000000000000001",
        ] {
            assert_eq!(paths.checkpoint_seq(&Path::from(key)), None, "{key}");
        }
    }

    #[test]
    fn an_empty_prefix_puts_the_manifest_at_the_root() {
        let paths = ManifestPaths::new(&Path::default());
        assert_eq!(paths.record(1).as_ref(), "manifest/00000000000000000001");
    }
}
