//! Virtual memory: the kernel's page tables and one address space per process.
//!
//! The kernel maps RAM below 1 GiB (identity) and the device window at
//! 0xfe00_0000..4 GiB (uncached, NX), supervisor-only, **W^X**: the 2 MiB
//! regions that hold the kernel image are split into 4 KiB pages so its text
//! is read + execute, its read-only data (including the embedded service
//! images) read-only and NX, and everything else (data, bss, heap, frames)
//! read-write and NX; the rest of RAM uses 2 MiB pages, read-write and NX.
//! CR0.WP makes the read-only pages hold against the kernel itself, and
//! [`check_kernel_wx`] walks the live tables at boot to prove it. Every
//! address space shares those two page directories and adds its own user
//! pages in the ranges of `nexus_abi::layout`, with 4 KiB pages, U/S set and
//! W^X. Page tables are edited with the `x86_64` crate's `OffsetPageTable`
//! (offset 0: every frame is reachable through the kernel's identity map).
//!
//! The kernel never dereferences a user pointer: [`AddressSpace::copy_in`]
//! and [`AddressSpace::copy_out`] check the range (`layout::user_range`),
//! translate every page through the process's tables, require U/S (and W for
//! writes), refuse device pages, and copy through the frame's kernel mapping.

use alloc::vec::Vec;

use nexus_abi::layout::{self, PAGE};
use spin::Once;
use x86_64::registers::control::{Cr0, Cr0Flags, Cr3, Cr3Flags, Cr4, Cr4Flags};
use x86_64::registers::model_specific::{Efer, EferFlags};
use x86_64::structures::paging::mapper::{MapToError, TranslateResult};
use x86_64::structures::paging::{
    Mapper, OffsetPageTable, Page, PageTable, PageTableFlags as F, PhysFrame, Size4KiB, Translate,
};
use x86_64::{PhysAddr, VirtAddr};

use crate::frames::{self, TableFrames};

/// RAM the kernel maps (and the frame allocator may use): below 1 GiB.
pub const RAM_LIMIT: u64 = 1 << 30;
/// Start of the device window the kernel maps (APICs, virtio-mmio).
const DEVICE_WINDOW: u64 = 0xfe00_0000;
const HUGE: u64 = 2 << 20;
/// PTE bit marking a page that maps a device, not a frame the process owns
/// (never freed, never copied through).
const DEVICE_PAGE: F = F::BIT_9;

struct KernelTables {
    pml4: u64,
    pd_ram: u64,
    pd_dev: u64,
    /// Directory of the kernel-stack region (its 4 KiB tables are made at
    /// boot and never change).
    pd_kstack: u64,
    /// Frames of all the kernel's tables (PML4, PDPT, two directories and
    /// the 4 KiB tables of the image's regions).
    frames: usize,
}

/// Kernel stacks live at `KSTACK_BASE..` (PDPT slot 2, supervisor-only,
/// shared by every address space): one [`KSTACK_SLOT`]-byte slot per
/// process id, whose lower half is never mapped (the guard) and upper half
/// is the [`KSTACK_SIZE`] stack. An overflow faults on the guard instead of
/// running into the kernel heap.
pub const KSTACK_BASE: u64 = 0x8000_0000;
/// Address space per kernel stack (guard + stack).
pub const KSTACK_SLOT: u64 = 128 * 1024;
/// Bytes of one kernel stack.
pub const KSTACK_SIZE: u64 = 64 * 1024;
/// Kernel stacks at most (one per process id; `sched::MAX_PROCS`).
pub const KSTACK_SLOTS: usize = 64;
/// The 4 KiB tables the kernel-stack region needs.
const KSTACK_TABLES: usize = (KSTACK_SLOTS * KSTACK_SLOT as usize).div_ceil(HUGE as usize);

/// PDPT slots every address space shares with the kernel (RAM, kernel
/// stacks, device window): never freed with a process.
const KERNEL_PDPT_SLOTS: [usize; 3] = [0, 2, 3];

/// Frames mapped as kernel stacks right now.
static KSTACK_FRAMES: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);

extern "C" {
    static boot_stack_guard: u8;
    static __text_start: u8;
    static __text_end: u8;
    static __rodata_end: u8;
    static __kernel_end: u8;
}

/// The kernel image's protection boundaries (linker.ld; page-aligned).
#[derive(Clone, Copy, Debug)]
pub struct ImageLayout {
    /// First byte of text.
    pub text_start: u64,
    /// End of text = start of read-only data.
    pub text_end: u64,
    /// End of read-only data = start of writable data.
    pub rodata_end: u64,
    /// End of the image (after bss).
    pub end: u64,
    /// The unmapped page below the boot stack (which the scheduler runs on).
    pub boot_guard: u64,
}

/// Where the linker put text, read-only data and the rest.
pub fn image_layout() -> ImageLayout {
    // SAFETY: linker symbols; only their addresses are taken.
    unsafe {
        ImageLayout {
            text_start: &__text_start as *const u8 as u64,
            text_end: &__text_end as *const u8 as u64,
            rodata_end: &__rodata_end as *const u8 as u64,
            end: &__kernel_end as *const u8 as u64,
            boot_guard: &boot_stack_guard as *const u8 as u64,
        }
    }
}

/// What the kernel page at `addr` is: one classification for the tables
/// [`init_kernel`] builds and the walk [`check_kernel_wx`] makes of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Region {
    /// The unmapped page below the boot stack.
    BootGuard,
    /// Kernel text: read + execute.
    Text,
    /// Read-only data (with the embedded service images): read only.
    ReadOnly,
    /// Everything else (data, bss, heap, frames): read-write, never executed.
    Data,
}

impl Region {
    fn of(addr: u64, l: &ImageLayout) -> Region {
        if (l.boot_guard..l.boot_guard + PAGE).contains(&addr) {
            Region::BootGuard
        } else if (l.text_start..l.text_end).contains(&addr) {
            Region::Text
        } else if (l.text_end..l.rodata_end).contains(&addr) {
            Region::ReadOnly
        } else {
            Region::Data
        }
    }

    fn name(self) -> &'static str {
        match self {
            Region::BootGuard => "stack guard",
            Region::Text => "text",
            Region::ReadOnly => "rodata",
            Region::Data => "data",
        }
    }
}

/// The kernel's flags for the 4 KiB page at `addr` in an image region:
/// text R+X, read-only data R, the boot stack's guard not present,
/// everything else RW+NX.
fn kernel_page_flags(addr: u64, l: &ImageLayout) -> F {
    let base = F::PRESENT | F::GLOBAL;
    match Region::of(addr, l) {
        Region::BootGuard => F::empty(),
        Region::Text => base,
        Region::ReadOnly => base | F::NO_EXECUTE,
        Region::Data => base | F::WRITABLE | F::NO_EXECUTE,
    }
}

static KERNEL: Once<KernelTables> = Once::new();

/// Why a mapping failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmError {
    /// Over the process's frame quota.
    Quota,
    /// The frame allocator is empty.
    NoFrames,
    /// The page is already mapped.
    Mapped,
    /// A user pointer outside the caller's mapped memory.
    BadAddress,
}

fn table(phys: u64) -> &'static mut PageTable {
    // SAFETY: `phys` is a page-table frame from the frame allocator,
    // identity-mapped; tables are only edited with interrupts off on one CPU.
    unsafe { &mut *(phys as usize as *mut PageTable) }
}

/// Frames the kernel's own tables hold (PML4, PDPT, two directories, and
/// one 4 KiB table per 2 MiB region of the kernel image).
pub fn kernel_table_frames() -> usize {
    KERNEL.get().map_or(0, |k| k.frames)
}

/// Build the kernel's tables (W^X, module docs), turn on NX and CR0.WP (and
/// SMEP/SMAP when the CPU has them) and switch to them. Needs the frame
/// allocator.
pub fn init_kernel(ram_end: u64) -> Result<(), VmError> {
    let pml4 = frames::alloc().ok_or(VmError::NoFrames)?;
    let pdpt = frames::alloc().ok_or(VmError::NoFrames)?;
    let pd_ram = frames::alloc().ok_or(VmError::NoFrames)?;
    let pd_dev = frames::alloc().ok_or(VmError::NoFrames)?;
    let mut table_frames = 4;
    let rw = F::PRESENT | F::WRITABLE;
    let image = image_layout();
    let ram_pages = ram_end.min(RAM_LIMIT).div_ceil(HUGE);
    // The regions holding the image get 4 KiB tables; the rest 2 MiB pages.
    let split = image.end.div_ceil(HUGE).min(ram_pages);
    for i in 0..split {
        let pt = frames::alloc().ok_or(VmError::NoFrames)?;
        table_frames += 1;
        for (j, e) in table(pt).iter_mut().enumerate() {
            let addr = i * HUGE + j as u64 * PAGE;
            e.set_addr(PhysAddr::new(addr), kernel_page_flags(addr, &image));
        }
        // Directory entries stay permissive; the 4 KiB entries decide.
        table(pd_ram)[i as usize].set_addr(PhysAddr::new(pt), rw);
    }
    for i in split..ram_pages {
        table(pd_ram)[i as usize].set_addr(
            PhysAddr::new(i * HUGE),
            rw | F::HUGE_PAGE | F::GLOBAL | F::NO_EXECUTE,
        );
    }
    let first_dev = ((DEVICE_WINDOW - 3 * RAM_LIMIT) / HUGE) as usize;
    for i in first_dev..512 {
        let addr = 3 * RAM_LIMIT + i as u64 * HUGE;
        table(pd_dev)[i].set_addr(
            PhysAddr::new(addr),
            rw | F::HUGE_PAGE | F::NO_CACHE | F::WRITE_THROUGH | F::NO_EXECUTE,
        );
    }
    let pd_kstack = frames::alloc().ok_or(VmError::NoFrames)?;
    table_frames += 1;
    for i in 0..KSTACK_TABLES {
        let pt = frames::alloc().ok_or(VmError::NoFrames)?;
        table_frames += 1;
        table(pd_kstack)[i].set_addr(PhysAddr::new(pt), rw);
    }
    table(pdpt)[0].set_addr(PhysAddr::new(pd_ram), rw);
    table(pdpt)[2].set_addr(PhysAddr::new(pd_kstack), rw);
    table(pdpt)[3].set_addr(PhysAddr::new(pd_dev), rw);
    table(pml4)[0].set_addr(PhysAddr::new(pdpt), rw);
    // SAFETY: NXE only adds a meaning to bit 63, which no live entry sets
    // until these tables are loaded; the new tables map everything the
    // kernel touches (image, heap, frames, stacks, devices) as before.
    unsafe {
        Efer::update(|f| f.insert(EferFlags::NO_EXECUTE_ENABLE));
        let (_, ecx, ebx) = {
            let r = core::arch::x86_64::__cpuid_count(7, 0);
            (r.eax, r.ecx, r.ebx)
        };
        let _ = ecx;
        let mut cr4 = Cr4::read();
        if ebx & (1 << 7) != 0 {
            cr4.insert(Cr4Flags::SUPERVISOR_MODE_EXECUTION_PROTECTION);
        }
        if ebx & (1 << 20) != 0 {
            cr4.insert(Cr4Flags::SUPERVISOR_MODE_ACCESS_PREVENTION);
        }
        cr4.insert(Cr4Flags::PAGE_GLOBAL);
        Cr4::write(cr4);
        // Without WP, ring 0 writes straight through read-only pages.
        Cr0::update(|f| f.insert(Cr0Flags::WRITE_PROTECT));
        Cr3::write(
            PhysFrame::containing_address(PhysAddr::new(pml4)),
            Cr3Flags::empty(),
        );
    }
    KERNEL.call_once(|| KernelTables {
        pml4,
        pd_ram,
        pd_dev,
        pd_kstack,
        frames: table_frames,
    });
    Ok(())
}

/// The page-table entry of kernel-stack address `addr` (in the region).
fn kstack_pte(
    k: &KernelTables,
    addr: u64,
) -> &'static mut x86_64::structures::paging::page_table::PageTableEntry {
    let off = addr - KSTACK_BASE;
    let pt = table(k.pd_kstack)[(off / HUGE) as usize].addr().as_u64();
    &mut table(pt)[((off / PAGE) % 512) as usize]
}

/// Maps a fresh, zeroed kernel stack in slot `slot` (a process id) and
/// returns its top. The guard half of the slot stays unmapped.
pub fn map_kernel_stack(slot: usize) -> Result<u64, VmError> {
    let k = KERNEL.get().ok_or(VmError::NoFrames)?;
    if slot >= KSTACK_SLOTS {
        return Err(VmError::Quota);
    }
    let top = KSTACK_BASE + (slot as u64 + 1) * KSTACK_SLOT;
    let bottom = top - KSTACK_SIZE;
    for a in (bottom..top).step_by(PAGE as usize) {
        let Some(frame) = frames::alloc() else {
            unmap_kernel_stack(slot);
            return Err(VmError::NoFrames);
        };
        kstack_pte(k, a).set_addr(
            PhysAddr::new(frame),
            F::PRESENT | F::WRITABLE | F::NO_EXECUTE | F::GLOBAL,
        );
        KSTACK_FRAMES.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
    }
    Ok(top)
}

/// Unmaps slot `slot`'s kernel stack and frees its frames. Never called
/// while running on that stack (the scheduler reaps on its own stack).
pub fn unmap_kernel_stack(slot: usize) {
    let Some(k) = KERNEL.get() else { return };
    if slot >= KSTACK_SLOTS {
        return;
    }
    let top = KSTACK_BASE + (slot as u64 + 1) * KSTACK_SLOT;
    for a in (top - KSTACK_SIZE..top).step_by(PAGE as usize) {
        let e = kstack_pte(k, a);
        if e.flags().contains(F::PRESENT) {
            let frame = e.addr().as_u64();
            e.set_unused();
            x86_64::instructions::tlb::flush(VirtAddr::new(a));
            frames::free(frame);
            KSTACK_FRAMES.fetch_sub(1, core::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// Frames held by kernel stacks.
pub fn kernel_stack_frames() -> usize {
    KSTACK_FRAMES.load(core::sync::atomic::Ordering::Relaxed)
}

/// If `addr` is in a kernel stack's guard, which stack: `None` for the boot
/// stack, `Some(slot)` for a process's. For the fault handler's message.
pub fn stack_guard_hit(addr: u64) -> Option<Option<usize>> {
    if Region::of(addr, &image_layout()) == Region::BootGuard {
        return Some(None);
    }
    let end = KSTACK_BASE + KSTACK_SLOTS as u64 * KSTACK_SLOT;
    if !(KSTACK_BASE..end).contains(&addr) {
        return None;
    }
    let off = addr - KSTACK_BASE;
    (off % KSTACK_SLOT < KSTACK_SLOT - KSTACK_SIZE).then_some(Some((off / KSTACK_SLOT) as usize))
}

/// What [`check_kernel_wx`] found in the live tables.
#[derive(Clone, Copy, Debug)]
pub struct WxReport {
    /// Executable 4 KiB pages (all inside the image's text).
    pub exec_pages: u64,
    /// Read-only, non-executable pages (the image's read-only data).
    pub ro_pages: u64,
    /// Pages (4 KiB, or 2 MiB counted as 512) mapped read-write and NX.
    pub rw_pages: u64,
    /// Stack guard pages checked unmapped (the boot stack's and every
    /// kernel-stack slot's).
    pub guard_pages: u64,
}

/// Where the live tables break W^X: an address and its flags.
#[derive(Clone, Copy, Debug)]
pub struct WxViolation {
    /// The page.
    pub addr: u64,
    /// Its effective writable bit.
    pub writable: bool,
    /// Its effective executable bit.
    pub executable: bool,
    /// What the page is (text, rodata, data).
    pub what: &'static str,
}

impl core::fmt::Display for WxViolation {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "{} page {:#x} writable={} executable={}",
            self.what, self.addr, self.writable, self.executable
        )
    }
}

/// Walks the kernel's RAM mappings as the MMU would (directory and table
/// flags combined) and checks: no page both writable and executable, text
/// executable and read-only, read-only data neither writable nor
/// executable, nothing executable outside text; and that CR0.WP and
/// EFER.NXE are on.
pub fn check_kernel_wx() -> Result<WxReport, WxViolation> {
    let k = KERNEL.get().ok_or(WxViolation {
        addr: 0,
        writable: true,
        executable: true,
        what: "no kernel tables",
    })?;
    let l = image_layout();
    let enforced = Cr0::read().contains(Cr0Flags::WRITE_PROTECT)
        && Efer::read().contains(EferFlags::NO_EXECUTE_ENABLE);
    if !enforced {
        return Err(WxViolation {
            addr: 0,
            writable: true,
            executable: true,
            what: "CR0.WP or EFER.NXE off",
        });
    }
    let mut r = WxReport {
        exec_pages: 0,
        ro_pages: 0,
        rw_pages: 0,
        guard_pages: 0,
    };
    let mut check = |addr: u64, f: F, huge: bool| -> Result<(), WxViolation> {
        let writable = f.contains(F::WRITABLE);
        let executable = !f.contains(F::NO_EXECUTE);
        let region = Region::of(addr, &l);
        let ok = match region {
            // Present at all is wrong.
            Region::BootGuard => false,
            Region::Text => executable && !writable,
            Region::ReadOnly => !executable && !writable,
            // Never executable; a 2 MiB page must not cover any of the image.
            Region::Data => !(executable || (huge && addr < l.end)),
        };
        if !ok {
            return Err(WxViolation {
                addr,
                writable,
                executable,
                what: region.name(),
            });
        }
        let n = if huge { 512 } else { 1 };
        match (executable, writable) {
            (true, _) => r.exec_pages += n,
            (false, false) => r.ro_pages += n,
            (false, true) => r.rw_pages += n,
        }
        Ok(())
    };
    for (i, de) in table(k.pd_ram).iter().enumerate() {
        let df = de.flags();
        if !df.contains(F::PRESENT) {
            continue;
        }
        let base = i as u64 * HUGE;
        if df.contains(F::HUGE_PAGE) {
            check(base, df, true)?;
            continue;
        }
        for (j, e) in table(de.addr().as_u64()).iter().enumerate() {
            let f = e.flags();
            if !f.contains(F::PRESENT) {
                continue;
            }
            // Effective rights: W needs W at both levels; NX at either
            // level forbids execution.
            let mut eff = f & !(F::WRITABLE | F::NO_EXECUTE);
            if f.contains(F::WRITABLE) && df.contains(F::WRITABLE) {
                eff |= F::WRITABLE;
            }
            if f.contains(F::NO_EXECUTE) || df.contains(F::NO_EXECUTE) {
                eff |= F::NO_EXECUTE;
            }
            check(base + j as u64 * PAGE, eff, false)?;
        }
    }
    // Guards: the boot stack's page and the lower half of every kernel-stack
    // slot must be unmapped; mapped kernel-stack pages must be NX.
    let boot = &table(k.pd_ram)[(l.boot_guard / HUGE) as usize];
    let boot_mapped = boot.flags().contains(F::HUGE_PAGE)
        || table(boot.addr().as_u64())[((l.boot_guard / PAGE) % 512) as usize]
            .flags()
            .contains(F::PRESENT);
    let guard_violation = |addr: u64| WxViolation {
        addr,
        writable: true,
        executable: false,
        what: "stack guard mapped",
    };
    if boot_mapped {
        return Err(guard_violation(l.boot_guard));
    }
    r.guard_pages += 1;
    for slot in 0..KSTACK_SLOTS as u64 {
        let start = KSTACK_BASE + slot * KSTACK_SLOT;
        for a in (start..start + KSTACK_SLOT).step_by(PAGE as usize) {
            let f = kstack_pte(k, a).flags();
            let guard = a < start + KSTACK_SLOT - KSTACK_SIZE;
            if guard && f.contains(F::PRESENT) {
                return Err(guard_violation(a));
            }
            if guard {
                r.guard_pages += 1;
            } else if f.contains(F::PRESENT) && !f.contains(F::NO_EXECUTE) {
                return Err(WxViolation {
                    addr: a,
                    writable: f.contains(F::WRITABLE),
                    executable: true,
                    what: "kernel stack",
                });
            }
        }
    }
    Ok(r)
}

/// Switch to the kernel's own tables (before an address space is freed).
pub fn activate_kernel() {
    if let Some(k) = KERNEL.get() {
        activate(k.pml4);
    }
}

fn activate(pml4: u64) {
    let (cur, _) = Cr3::read();
    if cur.start_address().as_u64() != pml4 {
        // SAFETY: every address space maps the kernel identically.
        unsafe {
            Cr3::write(
                PhysFrame::containing_address(PhysAddr::new(pml4)),
                Cr3Flags::empty(),
            )
        };
    }
}

/// Page flags for user memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prot {
    /// Writable.
    pub write: bool,
    /// Executable.
    pub exec: bool,
}

impl Prot {
    /// Read-write data.
    pub const RW: Prot = Prot {
        write: true,
        exec: false,
    };

    fn flags(self) -> F {
        let mut f = F::PRESENT | F::USER_ACCESSIBLE;
        if self.write {
            f |= F::WRITABLE;
        }
        if !self.exec {
            f |= F::NO_EXECUTE;
        }
        f
    }
}

/// One process's page tables and the frames charged to it.
pub struct AddressSpace {
    pml4: u64,
    /// Frames charged (pages and page tables).
    used: usize,
    /// Most frames this space may hold.
    quota: usize,
}

impl AddressSpace {
    /// A space holding only the kernel's (supervisor) mappings.
    pub fn new(quota_frames: usize) -> Result<Self, VmError> {
        let k = KERNEL.get().ok_or(VmError::NoFrames)?;
        if quota_frames < 2 {
            return Err(VmError::Quota);
        }
        let pml4 = frames::alloc().ok_or(VmError::NoFrames)?;
        let Some(pdpt) = frames::alloc() else {
            frames::free(pml4);
            return Err(VmError::NoFrames);
        };
        let rw = F::PRESENT | F::WRITABLE;
        table(pdpt)[0].set_addr(PhysAddr::new(k.pd_ram), rw);
        table(pdpt)[2].set_addr(PhysAddr::new(k.pd_kstack), rw);
        table(pdpt)[3].set_addr(PhysAddr::new(k.pd_dev), rw);
        table(pml4)[0].set_addr(PhysAddr::new(pdpt), rw | F::USER_ACCESSIBLE);
        Ok(AddressSpace {
            pml4,
            used: 2,
            quota: quota_frames,
        })
    }

    /// Load this space into CR3.
    pub fn activate(&self) {
        activate(self.pml4);
    }

    /// Frames charged to this space (pages, page tables, DMA).
    pub fn used_frames(&self) -> usize {
        self.used
    }

    fn mapper(&self) -> OffsetPageTable<'static> {
        // SAFETY: offset 0 is right because every table frame is
        // identity-mapped in the kernel half every space shares.
        unsafe { OffsetPageTable::new(table(self.pml4), VirtAddr::new(0)) }
    }

    fn map_one(&mut self, vaddr: u64, frame: u64, flags: F) -> Result<(), VmError> {
        let mut taken = 0;
        let budget = self.quota.saturating_sub(self.used);
        let r = {
            let mut alloc = TableFrames {
                taken: &mut taken,
                budget,
            };
            let page = Page::<Size4KiB>::containing_address(VirtAddr::new(vaddr));
            let frame = PhysFrame::containing_address(PhysAddr::new(frame));
            let parent = F::PRESENT | F::WRITABLE | F::USER_ACCESSIBLE;
            // SAFETY: the page is in user space (callers check) and the frame
            // is either freshly allocated for this space or a device window
            // the caller was granted.
            unsafe {
                self.mapper()
                    .map_to_with_table_flags(page, frame, flags, parent, &mut alloc)
            }
        };
        self.used += taken;
        match r {
            Ok(flush) => {
                flush.flush();
                Ok(())
            }
            Err(MapToError::FrameAllocationFailed) if taken >= budget => Err(VmError::Quota),
            Err(MapToError::FrameAllocationFailed) => Err(VmError::NoFrames),
            Err(_) => Err(VmError::Mapped),
        }
    }

    /// Map `pages` fresh zeroed frames at `vaddr` (page-aligned, user range
    /// checked by the caller), charged to the quota. On failure nothing of
    /// this call stays mapped... except frames already mapped, which remain
    /// charged and are freed with the space.
    pub fn map_zeroed(&mut self, vaddr: u64, pages: u64, prot: Prot) -> Result<(), VmError> {
        for i in 0..pages {
            if self.used >= self.quota {
                return Err(VmError::Quota);
            }
            let frame = frames::alloc().ok_or(VmError::NoFrames)?;
            self.used += 1;
            if let Err(e) = self.map_one(vaddr + i * PAGE, frame, prot.flags()) {
                frames::free(frame);
                self.used -= 1;
                return Err(e);
            }
        }
        Ok(())
    }

    /// Map physical pages the process is given: DMA frames (`owned`: freed
    /// with the space, charged to the quota) or a device window (uncached,
    /// never freed).
    pub fn map_phys(
        &mut self,
        vaddr: u64,
        paddr: u64,
        pages: u64,
        owned: bool,
    ) -> Result<(), VmError> {
        let mut flags = Prot::RW.flags();
        if owned {
            self.used += pages as usize;
        } else {
            flags |= DEVICE_PAGE | F::NO_CACHE | F::WRITE_THROUGH;
        }
        for i in 0..pages {
            self.map_one(vaddr + i * PAGE, paddr + i * PAGE, flags)?;
        }
        Ok(())
    }

    /// Charge `frames` to the quota up front (before allocating them).
    pub fn can_charge(&self, frames: usize) -> bool {
        self.used.saturating_add(frames) <= self.quota
    }

    /// Unmap `pages` DMA pages at `vaddr` and free their frames, if they are
    /// mapped, owned and physically contiguous from `paddr`.
    pub fn unmap_owned(&mut self, vaddr: u64, paddr: u64, pages: u64) -> bool {
        for i in 0..pages {
            match self.translate(vaddr + i * PAGE) {
                Some((p, f)) if p == paddr + i * PAGE && !f.contains(DEVICE_PAGE) => {}
                _ => return false,
            }
        }
        let mut m = self.mapper();
        for i in 0..pages {
            let page = Page::<Size4KiB>::containing_address(VirtAddr::new(vaddr + i * PAGE));
            if let Ok((frame, flush)) = m.unmap(page) {
                flush.flush();
                frames::free(frame.start_address().as_u64());
                self.used = self.used.saturating_sub(1);
            }
        }
        true
    }

    /// The frame and flags behind a user page.
    pub fn translate(&self, vaddr: u64) -> Option<(u64, F)> {
        match self.mapper().translate(VirtAddr::new(vaddr)) {
            TranslateResult::Mapped {
                frame,
                offset,
                flags,
            } => Some((frame.start_address().as_u64() + offset, flags)),
            _ => None,
        }
    }

    /// Check a user range and walk it page by page as kernel-mapped slices.
    fn walk(
        &self,
        addr: u64,
        len: u64,
        write: bool,
        mut f: impl FnMut(u64, usize, usize),
    ) -> Result<(), VmError> {
        let (start, end) = layout::user_range(addr, len).map_err(|_| VmError::BadAddress)?;
        // Check every page first, so a copy never stops half-way.
        let mut page = start & !(PAGE - 1);
        while page < end {
            let (_, flags) = self.translate(page).ok_or(VmError::BadAddress)?;
            if !flags.contains(F::USER_ACCESSIBLE)
                || flags.contains(DEVICE_PAGE)
                || (write && !flags.contains(F::WRITABLE))
            {
                return Err(VmError::BadAddress);
            }
            page += PAGE;
        }
        let mut at = start;
        let mut done = 0usize;
        while at < end {
            let chunk = (PAGE - at % PAGE).min(end - at) as usize;
            let (phys, _) = self.translate(at).ok_or(VmError::BadAddress)?;
            f(phys, done, chunk);
            done += chunk;
            at += chunk as u64;
        }
        Ok(())
    }

    /// Check that `[addr, addr + len)` is writable user memory.
    pub fn check_writable(&self, addr: u64, len: u64) -> Result<(), VmError> {
        self.walk(addr, len, true, |_, _, _| {})
    }

    /// Copy `len` bytes in from user memory.
    pub fn copy_in(&self, addr: u64, len: usize) -> Result<Vec<u8>, VmError> {
        let mut out = alloc::vec![0u8; len];
        self.walk(addr, len as u64, false, |phys, off, n| {
            // SAFETY: `phys..phys+n` lies in one user frame the walk checked,
            // reachable through the kernel's identity map.
            let src = unsafe { core::slice::from_raw_parts(phys as usize as *const u8, n) };
            out[off..off + n].copy_from_slice(src);
        })?;
        Ok(out)
    }

    /// Copy `data` out to user memory (pages must be writable).
    pub fn copy_out(&self, addr: u64, data: &[u8]) -> Result<(), VmError> {
        self.walk(addr, data.len() as u64, true, |phys, off, n| {
            // SAFETY: as in `copy_in`; the page is writable user memory.
            let dst = unsafe { core::slice::from_raw_parts_mut(phys as usize as *mut u8, n) };
            dst.copy_from_slice(&data[off..off + n]);
        })
    }

    /// Write bytes into already-mapped user pages regardless of their
    /// protection (the loader filling text and rodata).
    pub fn fill(&self, vaddr: u64, data: &[u8]) -> Result<(), VmError> {
        let mut at = 0usize;
        while at < data.len() {
            let va = vaddr + at as u64;
            let (phys, _) = self.translate(va).ok_or(VmError::BadAddress)?;
            let n = ((PAGE - va % PAGE) as usize).min(data.len() - at);
            // SAFETY: the frame was just mapped for this space by the loader.
            let dst = unsafe { core::slice::from_raw_parts_mut(phys as usize as *mut u8, n) };
            dst.copy_from_slice(&data[at..at + n]);
            at += n;
        }
        Ok(())
    }
}

impl Drop for AddressSpace {
    /// Return every owned frame and every table frame.
    fn drop(&mut self) {
        activate_kernel();
        let pml4 = table(self.pml4);
        let pdpt_phys = pml4[0].addr().as_u64();
        if pml4[0].flags().contains(F::PRESENT) {
            let pdpt = table(pdpt_phys);
            for (i, e) in pdpt.iter().enumerate() {
                if KERNEL_PDPT_SLOTS.contains(&i) || !e.flags().contains(F::PRESENT) {
                    continue;
                }
                let pd_phys = e.addr().as_u64();
                for pde in table(pd_phys).iter() {
                    if !pde.flags().contains(F::PRESENT) {
                        continue;
                    }
                    let pt_phys = pde.addr().as_u64();
                    for pte in table(pt_phys).iter() {
                        let f = pte.flags();
                        if f.contains(F::PRESENT) && !f.contains(DEVICE_PAGE) {
                            frames::free(pte.addr().as_u64());
                        }
                    }
                    frames::free(pt_phys);
                }
                frames::free(pd_phys);
            }
            frames::free(pdpt_phys);
        }
        frames::free(self.pml4);
    }
}
