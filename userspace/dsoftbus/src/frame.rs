//! Session-stream framing: a 2-byte big-endian length `N` (1..=65535), then
//! `N` bytes (`docs/protocol/wire.md` §3 "Session framing").
//!
//! [`FrameDecoder`] turns an arbitrary byte stream (TCP segments, IPC chunks,
//! a test pipe) into frames without ever holding more than one maximal frame
//! plus one header: its buffer is bounded by `2 + max_frame_len`, the caller
//! asks [`FrameDecoder::space`] how much it may feed next, and a frame header
//! that announces more than `max_frame_len` is refused as soon as the two
//! header bytes arrive — before its body is buffered. Errors are sticky: a
//! stream that once desynchronised is never parsed again.

use alloc::vec::Vec;
use core::fmt;

/// Largest frame body the 2-byte length can describe.
pub const MAX_FRAME_LEN: usize = u16::MAX as usize;
/// Header length.
pub const HEADER_LEN: usize = 2;

/// Framing failures. All are fatal for the stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// A header announced a zero-length frame (outside 1..=65535).
    Empty,
    /// A header announced more than the decoder's current limit.
    TooLong {
        /// Announced length.
        len: usize,
        /// The limit in force.
        max: usize,
    },
    /// The caller fed more bytes than [`FrameDecoder::space`] allowed.
    Overflow,
    /// A payload to encode was empty or longer than 65535 bytes.
    BadPayload,
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Empty => f.write_str("zero-length frame"),
            FrameError::TooLong { len, max } => write!(f, "frame of {len} bytes exceeds {max}"),
            FrameError::Overflow => f.write_str("decoder buffer overflow"),
            FrameError::BadPayload => f.write_str("payload length outside 1..=65535"),
        }
    }
}

/// Appends `payload` as one frame to `out`.
pub fn encode_frame(payload: &[u8], out: &mut Vec<u8>) -> Result<(), FrameError> {
    let len = u16::try_from(payload.len()).map_err(|_| FrameError::BadPayload)?;
    if len == 0 {
        return Err(FrameError::BadPayload);
    }
    out.reserve(HEADER_LEN + payload.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(payload);
    Ok(())
}

/// Incremental, bounded frame decoder.
#[derive(Debug)]
pub struct FrameDecoder {
    /// Bytes `start..end` are buffered; `..start` were consumed. The vector
    /// is the window itself (its length only grows, to at most one header
    /// plus one frame): popping a frame moves no memory, and consumed bytes
    /// are dropped by resetting the indices when nothing is left, or by
    /// moving the unconsumed tail down only when new bytes would not fit.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Bytes last handed out by `spare_mut` and not yet committed.
    lent: usize,
    max_frame_len: usize,
    error: Option<FrameError>,
}

impl FrameDecoder {
    /// A decoder refusing frames longer than `max_frame_len` (clamped to
    /// 1..=65535).
    pub fn new(max_frame_len: usize) -> Self {
        FrameDecoder {
            buf: Vec::new(),
            start: 0,
            end: 0,
            lent: 0,
            max_frame_len: max_frame_len.clamp(1, MAX_FRAME_LEN),
            error: None,
        }
    }

    /// The current frame-length limit.
    pub fn max_frame_len(&self) -> usize {
        self.max_frame_len
    }

    /// Raises or lowers the frame-length limit (clamped to 1..=65535); used
    /// when a connection moves from the small handshake frames to transport
    /// frames. Bytes already buffered are kept.
    pub fn set_max_frame_len(&mut self, max: usize) {
        self.max_frame_len = max.clamp(1, MAX_FRAME_LEN);
    }

    /// Bytes currently buffered.
    pub fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// The buffer bound: one header plus one maximal frame.
    pub fn capacity(&self) -> usize {
        HEADER_LEN + self.max_frame_len
    }

    /// How many bytes the next [`feed`](Self::feed) may carry. Zero means a
    /// complete frame is waiting in [`next_frame`](Self::next_frame) (or the
    /// stream has failed).
    pub fn space(&self) -> usize {
        if self.error.is_some() {
            return 0;
        }
        self.capacity().saturating_sub(self.buffered())
    }

    /// Bytes still missing before the next frame is complete: the rest of
    /// its header, or of its body once the header is known (at most
    /// [`space`](Self::space)). Zero when a complete frame is buffered or the
    /// stream has failed. Feeding exactly this much at a time leaves nothing
    /// behind a popped frame, so the buffer never moves.
    pub fn need(&self) -> usize {
        if self.error.is_some() {
            return 0;
        }
        let want = match self.header() {
            Some(len) => HEADER_LEN + len,
            None => HEADER_LEN,
        };
        want.saturating_sub(self.buffered()).min(self.space())
    }

    /// The sticky error, if the stream has failed.
    pub fn error(&self) -> Option<FrameError> {
        self.error
    }

    /// Makes `n` bytes (≤ `space()`) writable at `end`.
    fn make_room(&mut self, n: usize) {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        if self.end + n > self.buf.len() {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            if self.end + n > self.buf.len() {
                self.buf.resize(self.end + n, 0);
            }
        }
    }

    /// Buffers `data`. Feeding more than [`space`](Self::space) is refused
    /// with [`FrameError::Overflow`] (and nothing is buffered). Header checks
    /// run here too, so an oversized or empty frame is refused before its
    /// body arrives.
    pub fn feed(&mut self, data: &[u8]) -> Result<(), FrameError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        if data.len() > self.space() {
            return Err(FrameError::Overflow);
        }
        self.lent = 0;
        self.make_room(data.len());
        self.buf[self.end..self.end + data.len()].copy_from_slice(data);
        self.end += data.len();
        self.check_header()
    }

    /// Up to `max` (and at most [`space`](Self::space)) writable bytes where
    /// the next input goes: read from the stream straight into it, then
    /// [`commit`](Self::commit) what was written — no copy through a
    /// caller's buffer.
    pub fn spare_mut(&mut self, max: usize) -> &mut [u8] {
        let n = max.min(self.space());
        self.make_room(n);
        self.lent = n;
        &mut self.buf[self.end..self.end + n]
    }

    /// Marks `n` bytes written into [`spare_mut`](Self::spare_mut) as
    /// buffered (at most what it returned). Header checks as in
    /// [`feed`](Self::feed).
    pub fn commit(&mut self, n: usize) -> Result<(), FrameError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        if n > self.lent {
            return Err(FrameError::Overflow);
        }
        self.lent = 0;
        self.end += n;
        self.check_header()
    }

    /// Feeds as much of `data` as fits and returns how many bytes were taken.
    pub fn feed_partial(&mut self, data: &[u8]) -> Result<usize, FrameError> {
        let n = data.len().min(self.space());
        self.feed(&data[..n])?;
        Ok(n)
    }

    fn check_header(&mut self) -> Result<(), FrameError> {
        if let Some(len) = self.header() {
            let err = if len == 0 {
                Some(FrameError::Empty)
            } else if len > self.max_frame_len {
                Some(FrameError::TooLong {
                    len,
                    max: self.max_frame_len,
                })
            } else {
                None
            };
            if let Some(e) = err {
                self.error = Some(e);
                self.start = 0;
                self.end = 0;
                return Err(e);
            }
        }
        Ok(())
    }

    /// The length announced by the buffered header, if two bytes are there.
    fn header(&self) -> Option<usize> {
        if self.buffered() < HEADER_LEN {
            return None;
        }
        match self.buf.get(self.start..self.start + HEADER_LEN) {
            Some(&[hi, lo]) => Some(usize::from(u16::from_be_bytes([hi, lo]))),
            _ => None,
        }
    }

    /// Pops the next complete frame body, if one is buffered.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        Ok(self.pop_frame()?.map(|r| self.buf[r].to_vec()))
    }

    /// Like [`next_frame`](Self::next_frame) but borrowing the body from the
    /// decoder's buffer (valid until the next `feed` or `spare_mut`), so a
    /// bulk stream's messages are not copied once more on the way in.
    pub fn next_frame_ref(&mut self) -> Result<Option<&[u8]>, FrameError> {
        let r = self.pop_frame()?;
        Ok(r.and_then(|r| self.buf.get(r)))
    }

    /// Like [`next_frame`](Self::next_frame) but without copying: returns
    /// where the frame body lies; read it with [`frame`](Self::frame) before
    /// the next `feed`.
    pub(crate) fn pop_frame(&mut self) -> Result<Option<core::ops::Range<usize>>, FrameError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        // Re-check in case the limit was lowered since the header arrived.
        self.check_header()?;
        let Some(len) = self.header() else {
            return Ok(None);
        };
        let body = self.start + HEADER_LEN;
        let end = body + len;
        if self.end < end {
            return Ok(None);
        }
        self.start = end;
        // The next header is checked when it is popped (or fed first), not
        // now: the caller may raise the limit in between — a transport frame
        // sent right behind handshake frame 3 must not be judged by the
        // handshake limit.
        Ok(Some(body..end))
    }

    /// The bytes of a range returned by [`pop_frame`](Self::pop_frame),
    /// writable (the session decrypts in place).
    pub(crate) fn frame_mut(&mut self, r: core::ops::Range<usize>) -> &mut [u8] {
        self.buf.get_mut(r).unwrap_or(&mut [])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn roundtrip_byte_by_byte() {
        let mut wire = Vec::new();
        encode_frame(b"abc", &mut wire).unwrap();
        encode_frame(&[7u8; 300], &mut wire).unwrap();
        assert_eq!(&wire[..5], &[0x00, 0x03, b'a', b'b', b'c']);
        let mut d = FrameDecoder::new(MAX_FRAME_LEN);
        let mut got = Vec::new();
        for b in &wire {
            d.feed(core::slice::from_ref(b)).unwrap();
            while let Some(f) = d.next_frame().unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got, vec![b"abc".to_vec(), vec![7u8; 300]]);
        assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn refuses_empty_and_long_headers_early() {
        let mut d = FrameDecoder::new(10);
        assert_eq!(
            d.feed(&[0, 11]),
            Err(FrameError::TooLong { len: 11, max: 10 })
        );
        assert_eq!(
            d.feed(&[0, 1, 1]),
            Err(FrameError::TooLong { len: 11, max: 10 })
        );
        assert_eq!(d.space(), 0);
        let mut d = FrameDecoder::new(10);
        assert_eq!(d.feed(&[0, 0]), Err(FrameError::Empty));
        assert!(d.next_frame().is_err());
    }

    #[test]
    fn bounded_buffer() {
        let mut d = FrameDecoder::new(4);
        assert_eq!(d.capacity(), 6);
        assert_eq!(d.feed(&[0; 7]), Err(FrameError::Overflow));
        assert_eq!(d.feed_partial(&[0, 4, 1, 2, 3, 4, 0, 1, 9]), Ok(6));
        assert_eq!(d.space(), 0);
        assert_eq!(d.next_frame(), Ok(Some(vec![1, 2, 3, 4])));
        assert_eq!(d.space(), 6);
    }

    /// Feeding `need()` at a time pops every frame without a leftover, and
    /// reading through `spare_mut`/`commit` decodes the same frames.
    #[test]
    fn need_and_spare_mut() {
        let mut wire = Vec::new();
        for n in [1usize, 5, 300, 2, 1000] {
            encode_frame(&vec![n as u8; n], &mut wire).unwrap();
        }
        let mut d = FrameDecoder::new(MAX_FRAME_LEN);
        let (mut off, mut got) = (0, Vec::new());
        while off < wire.len() {
            let n = d.need();
            assert!(n > 0);
            d.feed(&wire[off..off + n]).unwrap();
            off += n;
            if let Some(f) = d.next_frame().unwrap() {
                assert_eq!(d.buffered(), 0);
                got.push(f.len());
            }
        }
        assert_eq!(got, vec![1, 5, 300, 2, 1000]);
        let mut d = FrameDecoder::new(MAX_FRAME_LEN);
        let (mut off, mut got) = (0, Vec::new());
        while off < wire.len() {
            let spare = d.spare_mut(7);
            let n = spare.len().min(wire.len() - off);
            spare[..n].copy_from_slice(&wire[off..off + n]);
            d.commit(n).unwrap();
            off += n;
            while let Some(f) = d.next_frame().unwrap() {
                got.push(f.len());
            }
        }
        assert_eq!(got, vec![1, 5, 300, 2, 1000]);
        assert_eq!(d.commit(1), Err(FrameError::Overflow));
        let mut d = FrameDecoder::new(4);
        d.spare_mut(2).copy_from_slice(&[0, 5]);
        assert_eq!(d.commit(2), Err(FrameError::TooLong { len: 5, max: 4 }));
    }

    #[test]
    fn encode_refuses_bad_lengths() {
        let mut v = Vec::new();
        assert_eq!(encode_frame(&[], &mut v), Err(FrameError::BadPayload));
        assert_eq!(
            encode_frame(&vec![0; 65536], &mut v),
            Err(FrameError::BadPayload)
        );
        assert!(encode_frame(&vec![0; 65535], &mut v).is_ok());
    }
}
