//! Host TCP: `std::net::TcpStream` as a [`StreamIo`], plus a host clock.
//!
//! Put the stream in non-blocking mode (`set_nonblocking(true)`) and drive it
//! with [`pump`](super::pump); a blocking stream works too but then `pump`
//! blocks in `read` until data arrives.

use std::io::{self, Read, Write};
use std::net::TcpStream;

use super::{IoError, StreamIo};
use crate::time::Instant;

fn map(e: io::Error) -> IoError {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted | io::ErrorKind::TimedOut => {
            IoError::WouldBlock
        }
        _ => IoError::Broken,
    }
}

impl StreamIo for TcpStream {
    fn write(&mut self, buf: &[u8]) -> Result<usize, IoError> {
        Write::write(self, buf).map_err(map)
    }

    fn read(&mut self, buf: &mut [u8]) -> Result<usize, IoError> {
        Read::read(self, buf).map_err(map)
    }
}

/// Maps `std::time::Instant` onto the core's [`Instant`] (milliseconds since
/// this clock was created). The only place the crate reads a clock, and only
/// with `std`.
#[derive(Clone, Copy, Debug)]
pub struct HostClock {
    start: std::time::Instant,
}

impl Default for HostClock {
    fn default() -> Self {
        Self::new()
    }
}

impl HostClock {
    /// A clock whose epoch is now.
    pub fn new() -> Self {
        HostClock {
            start: std::time::Instant::now(),
        }
    }

    /// Milliseconds since creation as a core [`Instant`].
    pub fn now(&self) -> Instant {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        Instant::from_millis(ms)
    }
}
