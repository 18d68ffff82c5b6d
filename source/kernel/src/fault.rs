//! Fault containment: a CPU exception raised in ring 3 ends only the
//! process that raised it.
//!
//! The line names the kind, the process, the instruction and the address,
//! then the process is marked dead and the scheduler returns its grants
//! (channel peers see `Closed`, its device is masked and reset) and frames.
//! init decides what happens next (restart, failed run, expected probe).
//! A fault in ring 0 is a kernel bug and still stops the system (arch::idt).

use alloc::format;

use crate::arch::idt::exception_name;
use crate::kprintln;
use crate::sched::{self, Exit};

const PAGE_FAULT: u8 = 14;
/// Page-fault error code: the access was an instruction fetch.
const PF_FETCH: u64 = 1 << 4;
/// Page-fault error code: the page was present (a protection violation).
const PF_PRESENT: u64 = 1 << 0;

/// Report and kill the current process for exception `vector`.
pub fn user_fault(vector: u8, err: u64, rip: u64, cr2: u64) -> ! {
    let name = sched::current().map_or("?", sched::name_of);
    let kind = if vector == PAGE_FAULT && err & (PF_FETCH | PF_PRESENT) == PF_FETCH | PF_PRESENT {
        "nx-violation"
    } else {
        exception_name(vector)
    };
    let addr = if vector == PAGE_FAULT { cr2 } else { rip };
    kprintln!(
        "kernel: fault {kind} task={name} rip={rip:#x} addr={addr:#x} err={err:#x}; process killed"
    );
    sched::exit_current(Exit::Killed(format!("{kind} at rip={rip:#x}")))
}
