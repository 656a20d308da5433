//! Little-endian field access shared by the block, index and footer codecs.
//!
//! Fixed-size headers are read with the `get_*` functions at offsets the layout constants give;
//! callers hold a slice whose length they have already checked against the header length, so an
//! out-of-range offset is a bug in a constant (the snapshot tests would catch it), never a
//! property of the input. Variable-length parts go through [`Cursor`], whose every read is checked.

/// Reads the little-endian `u16` at `at`.
pub(super) fn get_u16(buf: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(array(buf, at))
}

/// Reads the little-endian `u32` at `at`.
pub(super) fn get_u32(buf: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(array(buf, at))
}

/// Reads the little-endian `u64` at `at`.
pub(super) fn get_u64(buf: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(array(buf, at))
}

/// Writes `v` little-endian at `at`.
pub(super) fn put_u16(buf: &mut [u8], at: usize, v: u16) {
    buf[at..at + 2].copy_from_slice(&v.to_le_bytes());
}

/// Writes `v` little-endian at `at`.
pub(super) fn put_u32(buf: &mut [u8], at: usize, v: u32) {
    buf[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

/// Writes `v` little-endian at `at`.
pub(super) fn put_u64(buf: &mut [u8], at: usize, v: u64) {
    buf[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

fn array<const N: usize>(buf: &[u8], at: usize) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(&buf[at..at + N]);
    a
}

/// A checked reader over a variable-length part. Every read returns `None` past the end.
pub(super) struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    pub(super) fn new(buf: &'a [u8]) -> Self {
        Cursor { buf, pos: 0 }
    }

    /// Bytes read so far.
    pub(super) fn position(&self) -> usize {
        self.pos
    }

    /// Bytes left.
    pub(super) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// The next `n` bytes.
    pub(super) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }

    pub(super) fn u32(&mut self) -> Option<u32> {
        self.take(4).map(|s| get_u32(s, 0))
    }

    pub(super) fn u64(&mut self) -> Option<u64> {
        self.take(8).map(|s| get_u64(s, 0))
    }

    pub(super) fn i64(&mut self) -> Option<i64> {
        self.u64().map(|v| v as i64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_round_trip_little_endian() {
        let mut b = [0u8; 14];
        put_u16(&mut b, 0, 0x0102);
        put_u32(&mut b, 2, 0x0304_0506);
        put_u64(&mut b, 6, 0x0708_090a_0b0c_0d0e);
        assert_eq!(b[0..2], [0x02, 0x01]);
        assert_eq!(get_u16(&b, 0), 0x0102);
        assert_eq!(get_u32(&b, 2), 0x0304_0506);
        assert_eq!(get_u64(&b, 6), 0x0708_090a_0b0c_0d0e);
    }

    #[test]
    fn cursor_refuses_to_read_past_the_end() {
        let mut c = Cursor::new(&[1, 0, 0, 0, 9]);
        assert_eq!(c.u32(), Some(1));
        assert_eq!(c.remaining(), 1);
        assert_eq!(c.u32(), None);
        assert_eq!(c.take(usize::MAX), None);
        assert_eq!(c.position(), 4);
        assert_eq!(c.take(1), Some(&[9u8][..]));
    }
}
