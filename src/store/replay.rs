//! Which records of a replayed WAL still have to be committed, and trimming the WAL once they
//! are: shared by restart recovery and by the takeover of a failed node.

use std::collections::HashMap;

use objstream_wal::{Wal, WalPosition, WalRecord};

use super::StoreInner;
use crate::error::{Error, Result};
use crate::manifest::Change;
use crate::types::{Epoch, NodeId, Offset, StreamId};
use crate::wal_record::{self, WalBatch};

/// The records of `records` to commit, in order. `open` gives, for each stream whose records
/// count, its current epoch and committed end. A record is kept when its stream is in `open`, it
/// was written under that epoch, and it ends past what is committed; records of other epochs
/// belong to an ownership that ended. A kept record that starts past the next expected offset
/// means the WAL lost records in between: corruption, named with `log` (whose WAL it is).
pub(crate) fn uncommitted(
    records: &[WalRecord],
    open: &HashMap<StreamId, (Epoch, Offset)>,
    log: &str,
) -> Result<Vec<WalBatch>> {
    let mut next: HashMap<StreamId, Offset> =
        open.iter().map(|(id, (_, end))| (*id, *end)).collect();
    let mut kept = Vec::new();
    for record in records {
        let logged = wal_record::decode(&record.payload, &record.position)?;
        let (Some((epoch, _)), Some(expected)) =
            (open.get(&logged.stream), next.get_mut(&logged.stream))
        else {
            continue;
        };
        if logged.epoch != *epoch || logged.batch.next_offset() <= *expected {
            continue;
        }
        if logged.batch.base_offset != *expected {
            return Err(Error::corruption(
                format!("{log} record at {}", record.position),
                format!(
                    "{} resumes at offset {} but the log holds nothing from {}",
                    logged.stream, logged.batch.base_offset, expected
                ),
            ));
        }
        *expected = logged.batch.next_offset();
        kept.push(logged);
    }
    Ok(kept)
}

/// Trims `owner`'s WAL below `before` after recording `before` as its floor in the manifest: an
/// object WAL must never lose a slot at or above the floor a recovering node will read.
pub(crate) async fn trim_recorded(
    inner: &StoreInner,
    owner: NodeId,
    wal: &dyn Wal,
    before: WalPosition,
) -> Result<()> {
    inner
        .meta
        .commit(Change::TrimWal {
            node: inner.node,
            node_epoch: inner.node_epoch,
            owner,
            floor: before.0,
        })
        .await?;
    wal.trim(before).await?;
    Ok(())
}
