//! An in-memory duplex byte pipe for deterministic tests and for wiring two
//! logical nodes inside one process (the dual-node bring-up).
//!
//! Each direction is a `VecDeque` bounded by the capacity given to
//! [`duplex`]; writes beyond it take what fits and then report
//! `WouldBlock`, exactly like a full socket buffer. Single-threaded by design
//! (`Rc<RefCell<…>>`), matching the OS daemon's executor.

use alloc::collections::VecDeque;
use alloc::rc::Rc;
use core::cell::RefCell;

use super::{IoError, StreamIo};

#[derive(Debug)]
struct Half {
    buf: VecDeque<u8>,
    /// The writer of this direction has closed.
    closed: bool,
}

#[derive(Debug)]
struct Shared {
    halves: [Half; 2],
    cap: usize,
}

/// One end of a [`duplex`] pipe. Dropping it closes its sending direction.
#[derive(Debug)]
pub struct PipeEnd {
    shared: Rc<RefCell<Shared>>,
    /// Index of the direction this end writes; it reads the other one.
    tx: usize,
}

/// Two connected ends; each direction buffers at most `capacity` bytes
/// (minimum 1).
pub fn duplex(capacity: usize) -> (PipeEnd, PipeEnd) {
    let half = || Half {
        buf: VecDeque::new(),
        closed: false,
    };
    let shared = Rc::new(RefCell::new(Shared {
        halves: [half(), half()],
        cap: capacity.max(1),
    }));
    (
        PipeEnd {
            shared: shared.clone(),
            tx: 0,
        },
        PipeEnd { shared, tx: 1 },
    )
}

impl PipeEnd {
    /// Closes our sending direction; the peer reads EOF once drained.
    pub fn close(&mut self) {
        self.shared.borrow_mut().halves[self.tx].closed = true;
    }

    /// Bytes written by us and not yet read by the peer.
    pub fn in_flight(&self) -> usize {
        self.shared.borrow().halves[self.tx].buf.len()
    }
}

impl Drop for PipeEnd {
    fn drop(&mut self) {
        self.close();
    }
}

impl StreamIo for PipeEnd {
    fn write(&mut self, buf: &[u8]) -> Result<usize, IoError> {
        let mut s = self.shared.borrow_mut();
        let cap = s.cap;
        let peer_closed = s.halves[1 - self.tx].closed;
        let h = &mut s.halves[self.tx];
        if h.closed || peer_closed {
            return Err(IoError::Broken);
        }
        let n = buf.len().min(cap.saturating_sub(h.buf.len()));
        if n == 0 && !buf.is_empty() {
            return Err(IoError::WouldBlock);
        }
        h.buf.extend(&buf[..n]);
        Ok(n)
    }

    fn read(&mut self, buf: &mut [u8]) -> Result<usize, IoError> {
        let mut s = self.shared.borrow_mut();
        let h = &mut s.halves[1 - self.tx];
        if h.buf.is_empty() {
            return if h.closed {
                Ok(0)
            } else {
                Err(IoError::WouldBlock)
            };
        }
        let n = buf.len().min(h.buf.len());
        for (dst, src) in buf.iter_mut().zip(h.buf.drain(..n)) {
            *dst = src;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_eof() {
        let (mut a, mut b) = duplex(4);
        assert_eq!(a.write(b"abcdef"), Ok(4));
        assert_eq!(a.write(b"x"), Err(IoError::WouldBlock));
        let mut buf = [0u8; 8];
        assert_eq!(b.read(&mut buf), Ok(4));
        assert_eq!(&buf[..4], b"abcd");
        assert_eq!(b.read(&mut buf), Err(IoError::WouldBlock));
        a.close();
        assert_eq!(b.read(&mut buf), Ok(0));
        assert_eq!(b.write(b"z"), Err(IoError::Broken));
    }
}
