//! Ending the machine with a status QEMU reports to the harness.
//!
//! QEMU's `isa-debug-exit` device (port 0xf4) exits with `(value << 1) | 1`:
//! we write 0 for success (QEMU status 1) and 1 for failure (status 3). Without
//! that device the CPU halts with interrupts off.

use crate::arch::port::{halt_forever, outl};

/// How the run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Every finite service finished successfully.
    Success,
    /// A service failed, the kernel faulted or panicked.
    Failure,
}

/// Print the final line and end QEMU.
pub fn exit(status: Status) -> ! {
    let (word, code) = match status {
        Status::Success => ("ok", 0),
        Status::Failure => ("failed", 1),
    };
    crate::console::emergency(format_args!("kernel: shutdown status={word}"));
    outl(0xF4, code);
    halt_forever()
}
