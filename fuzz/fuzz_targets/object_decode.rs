//! Arbitrary bytes as a whole object: decode the tail, then the index, then every block, as a
//! reader would. Nothing may panic, and nothing may allocate more than the input or the format's
//! per-block limit allows.
//!
//! The first input byte picks a mode. Bit 0 reseals the checksums (blocks, index, footer, at the
//! places the layout in `objstream::format` gives) so that mutations reach the parsers behind
//! them instead of stopping at a crc mismatch. Bit 1 fetches only the footer first, so the index
//! takes the second-request path.

#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use objstream::format::{
    decode_block, decode_tail, TailDecode, BLOCK_HEADER_LEN, FOOTER_LEN, INDEX_ENTRY_LEN,
    INDEX_HEADER_LEN, MAX_BLOCK_RAW_BYTES, TAIL_READ_HINT,
};
use objstream::ObjectId;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut object = rest.to_vec();
    if mode & 1 == 1 {
        reseal(&mut object);
    }
    let tail_len = if mode & 2 == 2 {
        FOOTER_LEN
    } else {
        TAIL_READ_HINT
    };
    read_object(Bytes::from(object), tail_len);
});

fn read_object(bytes: Bytes, tail_len: usize) {
    let id = ObjectId(1);
    let size = bytes.len() as u64;
    let tail = &bytes[bytes.len() - tail_len.min(bytes.len())..];
    let index = match decode_tail(id, size, tail) {
        Ok(TailDecode::Complete { index, .. }) => index,
        Ok(TailDecode::NeedIndex { footer, range }) => {
            let Some(raw) = bytes.get(range.start as usize..range.end as usize) else {
                panic!("index range {range:?} outside an object of {size} bytes");
            };
            match footer.decode_index(id, raw) {
                Ok(index) => index,
                Err(_) => return,
            }
        }
        Err(_) => return,
    };
    for entry in index.entries() {
        let r = entry.byte_range();
        assert!(r.end <= size, "{entry:?} outside an object of {size} bytes");
        let block = bytes.slice(r.start as usize..r.end as usize);
        if let Ok(batches) = decode_block(id, entry, block) {
            let records: u64 = batches.iter().map(|b| u64::from(b.batch.count)).sum();
            assert_eq!(records, entry.record_count());
            let payload: usize = batches.iter().map(|b| b.batch.payload.len()).sum();
            assert!(payload <= MAX_BLOCK_RAW_BYTES);
        }
    }
}

fn le_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn le_u64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

fn put_crc(b: &mut [u8], at: usize, crc: u32) {
    b[at..at + 4].copy_from_slice(&crc.to_le_bytes());
}

/// Rewrites every checksum the footer, index and blocks carry, wherever the (possibly garbled)
/// footer and index say they are.
fn reseal(b: &mut [u8]) {
    let Some(footer_at) = b.len().checked_sub(FOOTER_LEN) else {
        return;
    };
    // Footer: index_position u64 at 0, index_len u32 at 8, crc32c at 36 over bytes 0..36.
    let (Some(index_at), Some(index_len)) = (le_u64(b, footer_at), le_u32(b, footer_at + 8)) else {
        return;
    };
    let index = usize::try_from(index_at)
        .ok()
        .and_then(|at| Some(at..at.checked_add(index_len as usize)?))
        .filter(|r| r.end <= footer_at && r.len() >= INDEX_HEADER_LEN + 4);
    if let Some(index) = index {
        // Blocks: each entry's position u64 at 24 and size u32 at 32; a block's crc32c at 44 covers
        // header bytes 0..44 and the stored body after the header.
        let entries = (index.len() - INDEX_HEADER_LEN - 4) / INDEX_ENTRY_LEN;
        for i in 0..entries {
            let at = index.start + INDEX_HEADER_LEN + i * INDEX_ENTRY_LEN;
            let (Some(pos), Some(size)) = (le_u64(b, at + 24), le_u32(b, at + 32)) else {
                continue;
            };
            let Ok(pos) = usize::try_from(pos) else {
                continue;
            };
            let Some(end) = pos.checked_add(size as usize) else {
                continue;
            };
            if end <= index.start && size as usize >= BLOCK_HEADER_LEN {
                let crc = crc32c(&b[pos..pos + 44], &b[pos + BLOCK_HEADER_LEN..end]);
                put_crc(b, pos + 44, crc);
            }
        }
        // Index: crc32c in its last four bytes over everything before.
        let crc_at = index.end - 4;
        let crc = crc32c(&b[index.start..crc_at], &[]);
        put_crc(b, crc_at, crc);
    }
    let crc = crc32c(&b[footer_at..footer_at + 36], &[]);
    put_crc(b, footer_at + 36, crc);
}

/// crc32c (Castagnoli, reflected) of `a` then `b`, bit by bit: slow, and independent of the
/// library the format uses.
fn crc32c(a: &[u8], b: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in a.iter().chain(b) {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82f6_3b78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}
