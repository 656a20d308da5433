//! Fuzzes the block WAL's header decoder (the bytes come from a device another node may have
//! written). Nothing may panic; a header that decodes must re-encode to the same slot image.

#![no_main]

use libfuzzer_sys::fuzz_target;
use objstream_wal::block::{Header, BLOCK};

fuzz_target!(|data: &[u8]| {
    // Short inputs are padded with zeros to a whole slot, as a device read would return them;
    // the first byte chooses whether to pad or to keep the input as it is.
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut slot = rest.to_vec();
    if mode & 1 == 1 && slot.len() < BLOCK {
        slot.resize(BLOCK, 0);
    }
    let Ok(Some(header)) = Header::decode(&slot) else {
        return;
    };
    let mut again = vec![0u8; BLOCK];
    header.encode(&mut again);
    assert_eq!(&again[..], &slot[..BLOCK], "a decoded header re-encodes differently");
});
