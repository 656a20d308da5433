//! Fuzzes the WAL frame decoder, walking a buffer frame by frame as recovery does. Nothing may
//! panic, and whatever decodes as a frame must be exactly what `encode` writes for its fields.
//!
//! The first input byte picks a mode. Even: the rest is raw bytes read at position 0. Odd: the
//! rest is turned into valid frames first (each input chunk becomes a body), then one byte is
//! changed and the buffer cut at places the input picks, so that damage reaches past the crc
//! check into the walk.
//!
//! Every frame body that decodes is also decoded as the store's WAL record (`wal_record`), the
//! body the store writes into each frame: it must not panic either, and what it accepts must
//! account for every byte of the body.

#![no_main]

use libfuzzer_sys::fuzz_target;
use objstream_wal::frame::{self, Decoded};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        walk(rest);
        return;
    }
    let Some((control, bodies)) = rest.split_first_chunk::<5>() else {
        return;
    };
    let mut buf = Vec::new();
    let mut batch_start = 0u64;
    for (i, body) in bodies.chunks(usize::from(control[0]) + 1).enumerate() {
        let position = buf.len() as u64;
        if i % 3 == 0 {
            batch_start = position;
        }
        let delta = (position - batch_start) as u32;
        frame::encode(position, delta, body, &mut buf).unwrap();
    }
    if buf.is_empty() {
        return;
    }
    let at = usize::from(u16::from_le_bytes([control[1], control[2]])) % buf.len();
    buf[at] ^= control[3];
    let cut = buf.len() - usize::from(control[4]).min(buf.len());
    walk(&buf[..cut]);
});

fn walk(buf: &[u8]) {
    let mut at = 0;
    loop {
        match frame::decode(&buf[at..], at as u64) {
            Ok(Decoded::Frame(f)) => {
                assert!(f.len >= frame::HEADER_LEN && f.len <= buf.len() - at);
                assert_eq!(f.len % frame::ALIGN, 0);
                assert!(f.batch_start() <= f.position);
                let mut again = Vec::new();
                let len = frame::encode(f.position, f.batch_delta, f.body, &mut again).unwrap();
                assert_eq!(len, f.len);
                let covered = frame::HEADER_LEN + f.body.len();
                assert_eq!(&again[..covered], &buf[at..at + covered]);
                let body = bytes::Bytes::copy_from_slice(f.body);
                if let Ok(logged) = objstream::wal_record::decode(&body, &"fuzz") {
                    assert!(logged.batch.batch.payload.len() < body.len());
                    assert!(body.ends_with(&logged.batch.batch.payload));
                }
                at += f.len;
            }
            Ok(Decoded::End) | Err(_) => return,
        }
    }
}
