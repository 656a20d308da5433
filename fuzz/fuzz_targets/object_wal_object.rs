//! Fuzzes the object WAL's object decoder (the bytes come back from an object store). Nothing
//! may panic; an object that decodes must re-encode to exactly the same bytes, and its records
//! must sit at dense positions inside its slot.
//!
//! The first input byte picks a mode. Even: the rest is raw bytes, decoded as slot 7. Odd: the
//! rest becomes a valid data object (each chunk a record), then one byte is changed and the
//! object cut where the input says, so damage reaches past the header check.

#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use object_store::path::Path;
use objstream_wal::object::layout::{decode_object, encode_data, encode_fence, Kind, Writer};
use objstream_wal::object::slot_of;

const SLOT: u64 = 7;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        check(Bytes::copy_from_slice(rest));
        return;
    }
    let Some((control, bodies)) = rest.split_first_chunk::<5>() else {
        return;
    };
    let writer = Writer {
        kind: Kind::Data,
        owner: 1,
        epoch: 2,
        actor: 1,
        actor_epoch: 2,
    };
    let records: Vec<Bytes> = bodies
        .chunks(usize::from(control[0]) + 1)
        .map(Bytes::copy_from_slice)
        .collect();
    let mut buf = if records.is_empty() {
        encode_fence(
            Writer {
                kind: Kind::Fence,
                ..writer
            },
            SLOT,
            8,
        )
    } else {
        encode_data(writer, SLOT, 8, &records).unwrap().0
    };
    let at = usize::from(u16::from_le_bytes([control[1], control[2]])) % buf.len();
    buf[at] ^= control[3];
    let cut = buf.len() - usize::from(control[4]).min(buf.len());
    buf.truncate(cut);
    check(Bytes::from(buf));
});

fn check(bytes: Bytes) {
    let key = Path::from("fuzz/wal/00000000000000000007");
    let Ok(object) = decode_object(&bytes, &key, SLOT) else {
        return;
    };
    let header = object.header;
    assert_eq!(header.slot, SLOT);
    assert_eq!(object.records.len(), header.record_count as usize);
    let again = match header.writer.kind {
        Kind::Fence => {
            assert!(object.records.is_empty());
            encode_fence(header.writer, SLOT, header.max_in_flight)
        }
        Kind::Data => {
            let payloads: Vec<Bytes> = object.records.iter().map(|r| r.payload.clone()).collect();
            encode_data(header.writer, SLOT, header.max_in_flight, &payloads)
                .unwrap()
                .0
        }
    };
    assert_eq!(&again[..], &bytes[..], "a decoded object re-encodes differently");
    let mut previous_end = None;
    for r in &object.records {
        assert_eq!(slot_of(r.position), SLOT);
        assert!(r.end > r.position);
        if let Some(end) = previous_end {
            assert_eq!(r.position, end, "records are not dense");
        }
        previous_end = Some(r.end);
    }
}
