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
    /// Bytes `start..` are buffered; `..start` were consumed and are dropped
    /// lazily (on the next feed), so popping a frame moves no memory.
    buf: Vec<u8>,
    start: usize,
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
        self.buf.len() - self.start
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

    /// The sticky error, if the stream has failed.
    pub fn error(&self) -> Option<FrameError> {
        self.error
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
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(data);
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
                self.buf.clear();
                self.start = 0;
                return Err(e);
            }
        }
        Ok(())
    }

    /// The length announced by the buffered header, if two bytes are there.
    fn header(&self) -> Option<usize> {
        match self.buf.get(self.start..self.start + HEADER_LEN) {
            Some(&[hi, lo]) => Some(usize::from(u16::from_be_bytes([hi, lo]))),
            _ => None,
        }
    }

    /// Pops the next complete frame body, if one is buffered.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        Ok(self.pop_frame()?.map(|r| self.buf[r].to_vec()))
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
        if self.buf.len() < end {
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
