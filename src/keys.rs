//! Object keys. Numbers are zero-padded to 20 digits so keys sort as numbers do; data objects
//! are spread over 4096 prefixes by a hash of their id, so no single prefix takes all the load.

use object_store::path::Path;

use crate::types::{NodeId, ObjectId};

/// `{prefix}/wal/{node:020}`: the slots of a node's object WAL live below it.
pub fn wal_prefix(prefix: &Path, node: NodeId) -> Path {
    prefix
        .clone()
        .join("wal")
        .join(format!("{:020}", node.0).as_str())
}

/// `{prefix}/objects/{hash:03x}/{id:020}`.
pub fn object_path(prefix: &Path, id: ObjectId) -> Path {
    // Fibonacci hashing: consecutive ids land on far-apart prefixes.
    let hash = id.0.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 52;
    prefix
        .clone()
        .join("objects")
        .join(format!("{hash:03x}").as_str())
        .join(format!("{:020}", id.0).as_str())
}

/// The object id of a data object key, if `path` is one (for listing objects).
#[cfg_attr(not(test), allow(dead_code))]
pub fn parse_object_path(path: &Path) -> Option<ObjectId> {
    let name = path.filename()?;
    if name.len() != 20 || !name.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    name.parse().ok().map(ObjectId)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn object_keys_spread_and_sort_within_a_prefix() {
        let p = Path::from("tenant/a");
        let k = object_path(&p, ObjectId(42));
        assert!(k.as_ref().starts_with("tenant/a/objects/"));
        assert!(k.as_ref().ends_with("/00000000000000000042"));
        assert_ne!(
            object_path(&p, ObjectId(1)).parts().nth(3),
            object_path(&p, ObjectId(2)).parts().nth(3)
        );
    }

    proptest! {
        #[test]
        fn object_keys_round_trip(id in any::<u64>()) {
            let k = object_path(&Path::from("x"), ObjectId(id));
            prop_assert_eq!(parse_object_path(&k), Some(ObjectId(id)));
        }
    }
}
