//! What the store writes into its WAL: one record per appended batch.
//!
//! The WAL frame already carries a length and a crc32c; this is the body inside it.
//!
//! ```text
//! offset  size  field
//!      0     1  version (1)
//!      1     8  stream id        u64 LE
//!      9     8  stream epoch     u64 LE
//!     17     8  base offset      u64 LE
//!     25     4  record count     u32 LE
//!     29     8  base timestamp   i64 LE
//!     37     …  payload (the rest of the record)
//! ```

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::{Error, Result};
use crate::types::{Epoch, Offset, RecordBatch, StoredBatch, StreamId};

const VERSION: u8 = 1;
const STREAM_AT: usize = 1;
const EPOCH_AT: usize = STREAM_AT + size_of::<u64>();
const BASE_AT: usize = EPOCH_AT + size_of::<u64>();
const COUNT_AT: usize = BASE_AT + size_of::<u64>();
const TIMESTAMP_AT: usize = COUNT_AT + size_of::<u32>();
/// Bytes before the payload.
pub(crate) const HEADER_LEN: usize = TIMESTAMP_AT + size_of::<i64>();

/// A batch as logged: which stream, under which epoch, at which offset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalBatch {
    /// The stream the batch was appended to.
    pub stream: StreamId,
    /// The stream epoch it was appended under.
    pub epoch: Epoch,
    /// The batch and its base offset.
    pub batch: StoredBatch,
}

pub(crate) fn encode(stream: StreamId, epoch: Epoch, base: Offset, batch: &RecordBatch) -> Bytes {
    let mut buf = BytesMut::with_capacity(HEADER_LEN + batch.payload.len());
    buf.put_u8(VERSION);
    buf.put_u64_le(stream.0);
    buf.put_u64_le(epoch.0);
    buf.put_u64_le(base.0);
    buf.put_u32_le(batch.count);
    buf.put_i64_le(batch.base_timestamp);
    buf.put_slice(&batch.payload);
    buf.freeze()
}

/// Decodes a record; `location` names it in errors. The payload is a slice of `record`.
pub fn decode(record: &Bytes, location: &dyn std::fmt::Display) -> Result<WalBatch> {
    if record.len() < HEADER_LEN {
        return Err(Error::corruption(
            location.to_string(),
            format!(
                "WAL record of {} bytes is shorter than its header",
                record.len()
            ),
        ));
    }
    if record[0] != VERSION {
        return Err(Error::corruption(
            location.to_string(),
            format!("unknown WAL record version {}", record[0]),
        ));
    }
    let u64_at = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&record[at..at + 8]);
        u64::from_le_bytes(b)
    };
    let mut count = [0u8; 4];
    count.copy_from_slice(&record[COUNT_AT..COUNT_AT + 4]);
    let count = u32::from_le_bytes(count);
    if count == 0 {
        return Err(Error::corruption(
            location.to_string(),
            "WAL record with a record count of 0",
        ));
    }
    Ok(WalBatch {
        stream: StreamId(u64_at(STREAM_AT)),
        epoch: Epoch(u64_at(EPOCH_AT)),
        batch: StoredBatch {
            base_offset: Offset(u64_at(BASE_AT)),
            batch: RecordBatch {
                count,
                base_timestamp: u64_at(TIMESTAMP_AT) as i64,
                payload: record.slice(HEADER_LEN..),
            },
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let batch = RecordBatch::new(3, -5, Bytes::from_static(b"hello"));
        let bytes = encode(StreamId(7), Epoch(2), Offset(40), &batch);
        assert_eq!(bytes.len(), HEADER_LEN + 5);
        let back = decode(&bytes, &"here").unwrap();
        assert_eq!(back.stream, StreamId(7));
        assert_eq!(back.epoch, Epoch(2));
        assert_eq!(back.batch.base_offset, Offset(40));
        assert_eq!(back.batch.batch, batch);
    }

    #[test]
    fn short_or_unknown_records_are_corruption() {
        let e = decode(&Bytes::from_static(b"\x01abc"), &"wal@9").unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Corruption);
        assert!(e.to_string().contains("wal@9"));
        let mut b = encode(
            StreamId(1),
            Epoch(1),
            Offset(0),
            &RecordBatch::new(1, 0, "x"),
        )
        .to_vec();
        b[0] = 9;
        assert!(decode(&Bytes::from(b), &"w").is_err());
    }
}
