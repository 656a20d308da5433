//! Restart recovery: what the last run of this node acknowledged but did not commit is in its
//! WAL. Replay it into the log cache, upload and commit it, then close the streams that run had
//! open so they can be opened again (by this node or another).
//!
//! A WAL record is replayed only if its stream is still open on this node under the record's
//! epoch and it starts at or after the stream's committed end: records below were committed
//! already; records of an older epoch, a closed or a deleted stream belong to an ownership that
//! ended. A record that starts past the next expected offset means the WAL lost records in
//! between: that is corruption, reported, never skipped.

use std::collections::HashMap;

use crate::error::Result;
use crate::manifest::Change;
use crate::store::{StoreInner, StreamState, StreamStatus};
use crate::types::StreamId;

#[tracing::instrument(
    name = "restart_recovery",
    skip_all,
    fields(node = %inner.node, node_epoch = %inner.node_epoch)
)]
pub(crate) async fn recover(inner: &StoreInner) -> Result<()> {
    let started = std::time::Instant::now();
    let state = inner.meta.refresh().await?;
    let owned: Vec<_> = state
        .streams_owned_by(inner.node)
        .into_iter()
        .filter_map(|id| state.stream(id).map(|s| (id, s.clone())))
        .collect();
    let records = inner.wal.replay().await?;
    let open: HashMap<StreamId, _> = owned
        .iter()
        .map(|(id, s)| (*id, (s.epoch, s.end)))
        .collect();
    let mut replayed = 0usize;
    let mut replayed_bytes = 0usize;
    {
        let mut core = inner.core.lock();
        for (id, s) in &owned {
            core.streams.insert(
                *id,
                StreamState {
                    epoch: s.epoch,
                    status: StreamStatus::Open,
                    start: s.start,
                    next: s.end,
                    confirmed: s.end,
                },
            );
        }
        for logged in super::replay::uncommitted(&records, &open, "WAL")? {
            let next = logged.batch.next_offset();
            replayed += 1;
            replayed_bytes += logged.batch.batch.payload.len();
            let seq = core.cache.insert(
                logged.stream.0,
                logged.batch.base_offset.0,
                logged.batch.batch,
            );
            core.cache.mark_durable(seq + 1);
            if let Some(s) = core.streams.get_mut(&logged.stream) {
                s.next = next;
                s.confirmed = next;
            }
        }
        let last = records.last().map(|r| r.position);
        let durable = core.cache.durable_seq();
        if let Some(position) = last {
            // Trimming below one past the last record drops every replayed record once it is
            // committed.
            core.last_durable = Some((durable.saturating_sub(1), position));
        }
        inner.durable.send_replace(durable);
    }
    if !owned.is_empty() || !records.is_empty() {
        tracing::info!(
            node = %inner.node,
            wal_records = records.len(),
            replayed,
            replayed_bytes,
            streams = owned.len(),
            "replaying the WAL of the last run"
        );
    }
    inner.flush_all().await?;
    for (id, s) in owned {
        inner
            .meta
            .commit(Change::CloseStream {
                stream: id,
                epoch: s.epoch,
                node: inner.node,
                node_epoch: inner.node_epoch,
            })
            .await?;
        if let Some(local) = inner.core.lock().streams.get_mut(&id) {
            local.status = StreamStatus::Closed;
        }
    }
    if let Some(last) = records.last() {
        super::replay::trim_recorded(inner, inner.node, inner.wal.as_ref(), last.end).await?;
    }
    inner
        .metrics
        .restart
        .record(started.elapsed(), replayed as u64, replayed_bytes as u64);
    Ok(())
}
