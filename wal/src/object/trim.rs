//! Trim: deletes the slot objects below a position.
//!
//! The caller has recorded `before` durably (it becomes the next open's floor) before it trims,
//! so no open will look below `slot_of(before)` again. Trim deletes every slot object below that
//! slot which this instance knows of: objects found at open (including ones below the floor
//! left by an interrupted trim), its fences, and its own acknowledged objects. It never deletes
//! at or above `slot_of(before)`: the slot holding `before` may still hold records at or after
//! it. Deletes are retried; a delete that still fails leaves the slot known, so the next trim
//! tries again, and the call reports [`WalErrorKind::Retry`].

use std::sync::Arc;

use futures::StreamExt;

use super::layout::{self, slot_of};
use super::{invalid, ready, store, Shared};
use crate::{WalError, WalErrorKind, WalFuture, WalPosition};

/// Trims the WAL of `shared` below `before`.
pub(crate) fn trim(shared: &Arc<Shared>, before: WalPosition) -> WalFuture<()> {
    let slots: Vec<u64> = {
        let mut st = shared.state.lock();
        if let Some(err) = &st.failed {
            return ready(Err(err.clone()));
        }
        let end = layout::position_in(st.acked, 0);
        if before > end {
            return ready(Err(invalid(format!(
                "trim to {before} is past the acknowledged end of the WAL at {end}"
            ))));
        }
        st.replay.retain(|r| r.position >= before);
        st.known.range(..slot_of(before)).copied().collect()
    };
    let shared = shared.clone();
    Box::pin(async move {
        let parallelism = shared.options.replay_parallelism;
        let results: Vec<_> = futures::stream::iter(slots)
            .map(|slot| {
                let shared = shared.clone();
                async move {
                    let key = layout::slot_key(&shared.prefix, slot);
                    let r = store::delete(&*shared.store, shared.options.retry, slot, &key).await;
                    (slot, r)
                }
            })
            .buffer_unordered(parallelism)
            .collect()
            .await;
        let mut first_error = None;
        {
            let mut st = shared.state.lock();
            for (slot, r) in results {
                match r {
                    Ok(()) => {
                        st.known.remove(&slot);
                    }
                    Err(e) => {
                        first_error.get_or_insert(e);
                    }
                }
            }
        }
        match first_error {
            None => Ok(()),
            Some(e) => Err(WalError::new(
                WalErrorKind::Retry,
                format!("trim left objects behind: {e}"),
            )),
        }
    })
}
