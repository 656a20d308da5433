//! Identifiers and the record batch: the vocabulary of the public API.
//!
//! Every id is a newtype over `u64` so that a stream id can never be passed where an offset is
//! expected. Offsets count records, not bytes.

use std::fmt;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(
            Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
        )]
        #[serde(transparent)]
        pub struct $name(pub u64);

        impl $name {
            /// The raw number.
            pub const fn get(self) -> u64 {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, "{}"), self.0)
            }
        }

        impl From<u64> for $name {
            fn from(v: u64) -> Self {
                Self(v)
            }
        }
    };
}

id_type!(
    /// A stream, allocated by the manifest and never reused.
    StreamId,
    "stream-"
);
id_type!(
    /// A record position within a stream. Offsets count records, are dense, and are never reused.
    Offset,
    ""
);
id_type!(
    /// An ownership generation. Stream epochs rise on every open; node epochs on every start of a
    /// node; a write carrying an older epoch than the manifest's is fenced.
    Epoch,
    "epoch-"
);
id_type!(
    /// A node: one `Store` instance. Several nodes may share one object store prefix.
    NodeId,
    "node-"
);
id_type!(
    /// An object in object storage, allocated in order through the manifest and never reused.
    ObjectId,
    "object-"
);

impl Offset {
    /// The offset `n` records later.
    pub const fn add(self, n: u64) -> Offset {
        Offset(self.0 + n)
    }
}

impl Epoch {
    /// The next epoch.
    pub const fn next(self) -> Epoch {
        Epoch(self.0 + 1)
    }
}

/// A batch of records appended as one unit.
///
/// The payload is opaque to the store (a Kafka record batch, newline-separated JSON events, …);
/// `count` says how many offsets the batch occupies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordBatch {
    /// The number of records, and so of offsets, the batch takes. At least 1.
    pub count: u32,
    /// A timestamp the caller attaches (milliseconds since the epoch, by convention).
    pub base_timestamp: i64,
    /// The records' bytes.
    pub payload: Bytes,
}

impl RecordBatch {
    /// A batch of `count` records carried in `payload`.
    ///
    /// ```
    /// use objstream::RecordBatch;
    /// // Three newline-separated JSON events, stamped with the producer's clock:
    /// let events = "{\"kind\":\"prompt\"}\n{\"kind\":\"response\"}\n{\"kind\":\"score\"}\n";
    /// let batch = RecordBatch::new(3, 1_764_000_000_000, events);
    /// assert_eq!(batch.count, 3);
    /// ```
    pub fn new(count: u32, base_timestamp: i64, payload: impl Into<Bytes>) -> Self {
        RecordBatch {
            count,
            base_timestamp,
            payload: payload.into(),
        }
    }
}

/// A batch as stored: its first offset and the batch itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredBatch {
    /// The offset of the batch's first record.
    pub base_offset: Offset,
    /// The batch.
    pub batch: RecordBatch,
}

impl StoredBatch {
    /// The offset just past the batch's last record.
    pub fn next_offset(&self) -> Offset {
        self.base_offset.add(u64::from(self.batch.count))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_display_with_their_kind() {
        assert_eq!(StreamId(7).to_string(), "stream-7");
        assert_eq!(ObjectId(3).to_string(), "object-3");
        assert_eq!(Offset(9).to_string(), "9");
    }

    #[test]
    fn stored_batch_knows_its_end() {
        let b = StoredBatch {
            base_offset: Offset(10),
            batch: RecordBatch::new(5, 0, Bytes::from_static(b"x")),
        };
        assert_eq!(b.next_offset(), Offset(15));
    }
}
