//! The long-mode GDT and TSS (`x86_64` crate structures).
//!
//! Selectors are laid out for `syscall`/`sysret`: kernel code 0x08, kernel
//! data 0x10, user data 0x18 (0x1b with RPL 3), user code 0x20 (0x23), TSS
//! 0x28. STAR's sysret base is 0x10, so `sysretq` loads SS = 0x1b and
//! CS = 0x23.
//!
//! Interrupts and exceptions from ring 3 switch to `TSS.rsp0`, the running
//! process's kernel stack (set at every switch). The kernel runs with
//! interrupts off except in the scheduler's idle halt, so ordinary gates need
//! no IST; NMI, double fault and machine check keep one (`IST_CRITICAL`) so
//! they work even on a broken stack.

use x86_64::instructions::segmentation::{Segment, CS, DS, ES, SS};
use x86_64::instructions::tables::load_tss;
use x86_64::registers::segmentation::SegmentSelector;
use x86_64::structures::gdt::{Descriptor, GlobalDescriptorTable};
use x86_64::structures::tss::TaskStateSegment;
use x86_64::{PrivilegeLevel, VirtAddr};

/// IST index (1-based, as the IDT gate encodes it) for NMI, #DF and #MC.
pub const IST_CRITICAL: u8 = 1;
/// Kernel code selector.
pub const KERNEL_CODE: u16 = 0x08;
/// User data selector with RPL 3.
pub const USER_DATA: u16 = 0x1b;
/// User code selector with RPL 3.
pub const USER_CODE: u16 = 0x23;

const CRITICAL_STACK_SIZE: usize = 32 * 1024;

#[repr(C, align(16))]
struct Stack([u8; CRITICAL_STACK_SIZE]);

static mut CRITICAL_STACK: Stack = Stack([0; CRITICAL_STACK_SIZE]);
static mut TSS: TaskStateSegment = TaskStateSegment::new();
static mut GDT: GlobalDescriptorTable<8> = GlobalDescriptorTable::empty();

/// Load the GDT and TSS. Called once, early, with interrupts off.
pub fn init() {
    // SAFETY: single-threaded early boot; these statics are written here
    // once and afterwards only read by the CPU (rsp0 via set_kernel_stack).
    unsafe {
        let tss = &raw mut TSS;
        let top = (&raw mut CRITICAL_STACK) as u64 + CRITICAL_STACK_SIZE as u64;
        (*tss).interrupt_stack_table[usize::from(IST_CRITICAL - 1)] = VirtAddr::new(top);
        let gdt = &raw mut GDT;
        let kcode = (*gdt).append(Descriptor::kernel_code_segment());
        let kdata = (*gdt).append(Descriptor::kernel_data_segment());
        (*gdt).append(Descriptor::user_data_segment());
        (*gdt).append(Descriptor::user_code_segment());
        let tss_sel = (*gdt).append(Descriptor::tss_segment_unchecked(tss));
        (*gdt).load_unsafe();
        CS::set_reg(kcode);
        DS::set_reg(kdata);
        ES::set_reg(kdata);
        SS::set_reg(kdata);
        load_tss(tss_sel);
        debug_assert_eq!(kcode, SegmentSelector::new(1, PrivilegeLevel::Ring0));
    }
}

/// The stack the CPU switches to on an interrupt from ring 3.
pub fn set_kernel_stack(top: u64) {
    // SAFETY: one CPU, interrupts off; the CPU reads rsp0 only on the next
    // privilege change.
    unsafe { TSS.privilege_stack_table[0] = VirtAddr::new(top) };
}
