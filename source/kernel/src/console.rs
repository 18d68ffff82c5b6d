//! The 16550 UART console and the kernel's line writer.
//!
//! Every line is `[ssss.uuuuuu] text`: a guest-monotonic timestamp, then the
//! text. A line is formatted into a bounded buffer first and written out
//! whole under one lock, so lines never interleave (docs/testing/index.md
//! relies on this format).

use core::fmt::{self, Write};

use spin::Mutex;

use crate::arch::clock;
use crate::arch::port::{inb, outb};

const COM1: u16 = 0x3F8;
/// Longest console line in bytes (longer text is truncated with `...`).
pub const MAX_LINE: usize = 512;

static LOCK: Mutex<()> = Mutex::new(());

/// Program COM1 for 115200 8N1 with FIFOs.
pub fn init() {
    outb(COM1 + 1, 0x00); // no UART interrupts
    outb(COM1 + 3, 0x80); // DLAB
    outb(COM1, 0x01); // divisor 1 = 115200 baud
    outb(COM1 + 1, 0x00);
    outb(COM1 + 3, 0x03); // 8N1
    outb(COM1 + 2, 0xC7); // FIFO on, cleared, 14-byte threshold
    outb(COM1 + 4, 0x03); // DTR | RTS
}

fn put(byte: u8) {
    let mut spins = 0u32;
    // Bounded wait for the transmit holding register: a wedged UART must not
    // hang the kernel forever.
    while inb(COM1 + 5) & 0x20 == 0 && spins < 100_000 {
        spins += 1;
    }
    outb(COM1, byte);
}

struct LineBuf {
    buf: [u8; MAX_LINE],
    len: usize,
    truncated: bool,
}

impl Write for LineBuf {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for &b in s.as_bytes() {
            if self.len == MAX_LINE {
                self.truncated = true;
                return Ok(());
            }
            // Keep one line one line: control characters become spaces.
            self.buf[self.len] = if b == b'\n' || b == b'\r' { b' ' } else { b };
            self.len += 1;
        }
        Ok(())
    }
}

fn format_line(args: fmt::Arguments<'_>) -> LineBuf {
    let mut line = LineBuf {
        buf: [0; MAX_LINE],
        len: 0,
        truncated: false,
    };
    let ns = clock::now_ns();
    let _ = write!(
        line,
        "[{:>4}.{:06}] ",
        ns / 1_000_000_000,
        (ns / 1_000) % 1_000_000
    );
    let _ = line.write_fmt(args);
    line
}

fn emit(line: &LineBuf) {
    for &b in &line.buf[..line.len] {
        put(b);
    }
    if line.truncated {
        for &b in b"..." {
            put(b);
        }
    }
    put(b'\r');
    put(b'\n');
}

/// Write one whole line.
pub fn line(args: fmt::Arguments<'_>) {
    let line = format_line(args);
    let _guard = LOCK.lock();
    emit(&line);
}

/// Write a line from a fault or panic: never waits for the lock, since the
/// code that broke may hold it.
pub fn emergency(args: fmt::Arguments<'_>) {
    let line = format_line(args);
    emit(&line);
}

/// `kprintln!("kernel: ...")` — one console line.
#[macro_export]
macro_rules! kprintln {
    ($($arg:tt)*) => { $crate::console::line(format_args!($($arg)*)) };
}
