//! The `log` facade for services.
//!
//! Services write `log::info!("netstackd: facade up")`; the line goes to the
//! kernel console whole, never interleaved with another. Messages longer than
//! [`MAX_LINE`] bytes are truncated (marked with `...`), never split.

use alloc::string::String;
use core::fmt::Write;

use crate::sys::{nr, syscall};

/// Longest log message in bytes.
pub const MAX_LINE: usize = 480;

struct Logger;

static LOGGER: Logger = Logger;

/// Library crates linked into services whose chatter is kept below the
/// console unless verbose logging was asked for (`log=debug`).
const QUIET_TARGETS: &[&str] = &["virtio_drivers", "smoltcp"];

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        let quiet = QUIET_TARGETS
            .iter()
            .any(|t| metadata.target().starts_with(t));
        !quiet
            || metadata.level() <= log::Level::Warn
            || log::max_level() >= log::LevelFilter::Debug
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let mut line = Bounded(String::new());
        // A formatting error only means the line hit the bound.
        let truncated = write!(line, "{}", record.args()).is_err();
        if truncated {
            line.0.push_str("...");
        }
        let level = match record.level() {
            log::Level::Error => 1,
            log::Level::Warn => 2,
            log::Level::Info => 3,
            log::Level::Debug | log::Level::Trace => 4,
        };
        // SAFETY: a live string; the kernel copies it in.
        unsafe {
            syscall(
                nr::LOG,
                level,
                line.0.as_ptr() as u64,
                line.0.len() as u64,
                0,
                0,
            )
        };
    }

    fn flush(&self) {}
}

struct Bounded(String);

impl Write for Bounded {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let room = MAX_LINE.saturating_sub(self.0.len());
        if s.len() <= room {
            self.0.push_str(s);
            Ok(())
        } else {
            let mut cut = room;
            while cut > 0 && !s.is_char_boundary(cut) {
                cut -= 1;
            }
            self.0.push_str(&s[..cut]);
            Err(core::fmt::Error)
        }
    }
}

/// Route the `log` macros to the kernel console at `max` verbosity.
/// Called once by the runtime at process start.
pub fn init(max: log::LevelFilter) {
    // Only fails if a logger is already set, in which case it stays.
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(max);
}
