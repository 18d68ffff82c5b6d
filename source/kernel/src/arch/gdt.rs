//! The long-mode GDT and the TSS whose interrupt stacks (IST) every gate uses.
//!
//! Code built for x86_64-unknown-linux-gnu keeps data in the 128-byte red
//! zone below `rsp`; an interrupt taken on the current stack would overwrite
//! it. Every IDT gate therefore switches to an IST stack (DESIGN §3).

use core::arch::asm;
use core::mem::size_of;

/// IST index for device and timer interrupts.
pub const IST_IRQ: u8 = 1;
/// IST index for CPU exceptions.
pub const IST_FAULT: u8 = 2;
/// IST index for double fault, NMI and machine check.
pub const IST_CRITICAL: u8 = 3;

const IST_STACK_SIZE: usize = 32 * 1024;

#[repr(C, align(16))]
struct Stack([u8; IST_STACK_SIZE]);

static mut IST_STACKS: [Stack; 3] = [const { Stack([0; IST_STACK_SIZE]) }; 3];

#[repr(C, packed)]
struct Tss {
    _reserved0: u32,
    rsp: [u64; 3],
    _reserved1: u64,
    ist: [u64; 7],
    _reserved2: u64,
    _reserved3: u16,
    iomap_base: u16,
}

static mut TSS: Tss = Tss {
    _reserved0: 0,
    rsp: [0; 3],
    _reserved1: 0,
    ist: [0; 7],
    _reserved2: 0,
    _reserved3: 0,
    iomap_base: size_of::<Tss>() as u16,
};

/// null, code64 (0x08), data (0x10), TSS (0x18, two slots).
static mut GDT: [u64; 5] = [0, 0x00AF_9A00_0000_FFFF, 0x00CF_9200_0000_FFFF, 0, 0];

#[repr(C, packed)]
struct DescriptorPointer {
    limit: u16,
    base: u64,
}

/// Load the final GDT and the TSS. Called once, early, with interrupts off.
pub fn init() {
    // SAFETY: single-threaded early boot; these statics are only touched here
    // and by the CPU afterwards.
    unsafe {
        let tss = &raw mut TSS;
        let stacks = &raw mut IST_STACKS;
        for i in 0..3 {
            let top = (&raw mut (*stacks)[i]) as u64 + IST_STACK_SIZE as u64;
            (*tss).ist[i] = top;
        }
        let base = tss as u64;
        let limit = (size_of::<Tss>() - 1) as u64;
        let low = (limit & 0xFFFF)
            | ((base & 0xFF_FFFF) << 16)
            | (0x89u64 << 40)
            | (((limit >> 16) & 0xF) << 48)
            | (((base >> 24) & 0xFF) << 56);
        let gdt = &raw mut GDT;
        (*gdt)[3] = low;
        (*gdt)[4] = base >> 32;

        let ptr = DescriptorPointer {
            limit: (size_of::<[u64; 5]>() - 1) as u16,
            base: gdt as u64,
        };
        asm!(
            "lgdt [{ptr}]",
            "push 0x08",
            "lea {tmp}, [rip + 2f]",
            "push {tmp}",
            "retfq",
            "2:",
            "mov {sel:x}, 0x10",
            "mov ds, {sel:x}",
            "mov es, {sel:x}",
            "mov ss, {sel:x}",
            "mov {sel:x}, 0x18",
            "ltr {sel:x}",
            ptr = in(reg) &ptr,
            tmp = out(reg) _,
            sel = out(reg) _,
        );
    }
}
