//! Transports: the I/O seam and its implementations.
//!
//! The protocol core is sans-IO; a transport only moves bytes. [`StreamIo`]
//! is the seam a session stream needs — the OS daemon implements it over the
//! netstackd sockets facade, [`pipe`] implements it in memory for
//! deterministic tests, and (with `std`) `TcpStream` implements it for hosts.
//! [`pump`] drives one [`Connection`] over any of them, so all transports
//! share one session state machine.

use crate::connection::{ConnError, Connection};
use crate::handshake::IdentityBindings;
use crate::time::Instant;

pub mod pipe;
#[cfg(feature = "std")]
pub mod tcp;
#[cfg(feature = "std")]
pub mod udp;

/// Transport-level failures, reduced to what the driver acts on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoError {
    /// Nothing can be read / written right now; try again later.
    WouldBlock,
    /// The stream is gone (reset, error).
    Broken,
}

/// A non-blocking byte stream.
pub trait StreamIo {
    /// Writes some prefix of `buf`; returns how much. `Err(WouldBlock)` when
    /// nothing can be written now.
    fn write(&mut self, buf: &[u8]) -> Result<usize, IoError>;
    /// Reads into `buf`. `Ok(0)` means end of stream; `Err(WouldBlock)`
    /// means nothing available now.
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, IoError>;
}

/// What one [`pump`] call did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pumped {
    /// Bytes written to the stream.
    pub written: usize,
    /// Bytes read from the stream and fed to the connection.
    pub read: usize,
    /// The stream reached end of file.
    pub eof: bool,
}

/// Bound on bytes one [`pump`] call reads, so one busy stream cannot starve a
/// single-threaded daemon's other work.
pub const PUMP_READ_BUDGET: usize = 64 * 1024;

/// Moves bytes between `conn` and `io` until neither side can make progress
/// (or the read budget is spent): flushes queued output, reads at most what
/// the connection has room for, feeds it, repeats. Never blocks if `io`
/// does not. Events are left for the caller's [`Connection::poll_event`].
pub fn pump<S: StreamIo + ?Sized, B: IdentityBindings + ?Sized>(
    conn: &mut Connection,
    io: &mut S,
    now: Instant,
    bindings: &B,
) -> Result<Pumped, ConnError> {
    let mut p = Pumped::default();
    let mut scratch = [0u8; 2048];
    conn.handle_timeout(now)?;
    loop {
        let mut progress = false;
        while !conn.transmit_buf().is_empty() {
            match io.write(conn.transmit_buf()) {
                Ok(0) | Err(IoError::WouldBlock) => break,
                Ok(n) => {
                    conn.consume_transmit(n);
                    p.written += n;
                    progress = true;
                }
                Err(IoError::Broken) => return conn.handle_eof().map(|_| p),
            }
        }
        if conn.is_closed() || conn.error().is_some() {
            return Ok(p);
        }
        let room = conn.recv_space().min(scratch.len());
        if room > 0 && p.read < PUMP_READ_BUDGET {
            match io.read(&mut scratch[..room]) {
                Ok(0) => {
                    p.eof = true;
                    conn.handle_eof()?;
                    return Ok(p);
                }
                Ok(n) => {
                    // `room` bounds the read, so the connection takes it all.
                    let used = conn.handle_input(&scratch[..n], now, bindings)?;
                    p.read += used;
                    progress = true;
                }
                Err(IoError::WouldBlock) => {}
                Err(IoError::Broken) => {
                    conn.handle_eof()?;
                    return Ok(p);
                }
            }
        }
        if !progress {
            return Ok(p);
        }
    }
}
