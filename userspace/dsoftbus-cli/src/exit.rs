//! Exit codes and the error type that carries one.
//!
//! Every command ends with one of these statuses (documented in
//! `docs/dsoftbus-cli.md` and in `dsoftbus --help`).

use std::fmt;

// 0 is success (`ExitCode::SUCCESS`).
/// A runtime failure not covered below (I/O error, daemon-side failure).
pub const FAILURE: u8 = 1;
/// Bad command line (clap's own status for usage errors).
pub const USAGE: u8 = 2;
/// Bad configuration: config file, state directory, key or known-peers file.
pub const CONFIG: u8 = 3;
/// No daemon answers on the control socket.
pub const NO_DAEMON: u8 = 4;
/// The device is unknown or has no authenticated session.
pub const NO_PEER: u8 = 5;
/// The peer did not answer in time (ping, transfer).
pub const TIMEOUT: u8 = 6;
/// A file transfer was refused or failed (including the integrity check).
pub const TRANSFER: u8 = 7;
/// The daemon could not start: a port or the control socket is in use.
pub const IN_USE: u8 = 8;

/// An error with the exit status it should produce.
pub struct Failure {
    /// Process exit status.
    pub code: u8,
    /// What went wrong (printed with its causes).
    pub error: anyhow::Error,
}

impl Failure {
    /// A failure with `code` and a message.
    pub fn new(code: u8, msg: impl fmt::Display) -> Self {
        Failure {
            code,
            error: anyhow::anyhow!("{msg}"),
        }
    }
}

impl fmt::Debug for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#} (exit {})", self.error, self.code)
    }
}

impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Self {
        Failure {
            code: FAILURE,
            error,
        }
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        Failure {
            code: FAILURE,
            error: e.into(),
        }
    }
}

/// Attach an exit code to any error.
pub trait WithCode<T> {
    /// Maps the error to a [`Failure`] with `code`.
    fn code(self, code: u8) -> Result<T, Failure>;
}

impl<T, E: Into<anyhow::Error>> WithCode<T> for Result<T, E> {
    fn code(self, code: u8) -> Result<T, Failure> {
        self.map_err(|e| Failure {
            code,
            error: e.into(),
        })
    }
}
