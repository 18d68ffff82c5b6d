//! Physical memory: the PVH start info, its memory map, and the split of the
//! largest RAM region between the kernel heap (first [`HEAP_SIZE`]) and the
//! frame allocator (the rest, below `vm::RAM_LIMIT`), which alone feeds
//! page tables, process memory and DMA.

use alloc::string::String;

use linked_list_allocator::LockedHeap;

#[global_allocator]
static HEAP: LockedHeap = LockedHeap::empty();

/// `hvm_start_info.magic`.
pub const PVH_MAGIC: u32 = 0x336e_c578;
/// The kernel heap: IPC queues, tables, boot info (kernel stacks are frames
/// mapped with guard pages, `vm::map_kernel_stack`).
pub const HEAP_SIZE: u64 = 32 * 1024 * 1024;
/// Fewest frames we accept for processes.
pub const MIN_FRAMES: u64 = 16 * 1024 * 1024;
/// Longest command line read.
pub const MAX_CMDLINE: usize = 4096;
/// Most memory-map entries read.
pub const MAX_MEMMAP: u32 = 128;
const PAGE: usize = 4096;
const IDENTITY_LIMIT: u64 = crate::vm::RAM_LIMIT;

extern "C" {
    static __kernel_end: u8;
}

/// What boot found out about memory.
#[derive(Debug)]
pub struct MemInfo {
    /// Heap start (physical = virtual).
    pub heap_start: u64,
    /// Heap length in bytes.
    pub heap_len: u64,
    /// Start of the frame allocator's region.
    pub frames_start: u64,
    /// Its length in bytes.
    pub frames_len: u64,
    /// End of the highest usable RAM (the kernel maps up to here).
    pub ram_end: u64,
    /// Total usable RAM reported by the memory map.
    pub ram_total: u64,
}

/// Why memory setup failed.
#[derive(Debug)]
pub enum MemError {
    /// `ebx` did not point at a PVH start info.
    BadMagic,
    /// No memory map (start info version 0).
    NoMemoryMap,
    /// No usable region large enough after the kernel image.
    NoHeapRegion,
}

#[repr(C)]
struct StartInfo {
    magic: u32,
    version: u32,
    flags: u32,
    nr_modules: u32,
    modlist_paddr: u64,
    cmdline_paddr: u64,
    rsdp_paddr: u64,
    memmap_paddr: u64,
    memmap_entries: u32,
    reserved: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct MemmapEntry {
    addr: u64,
    size: u64,
    kind: u32,
    reserved: u32,
}

fn start_info(addr: u32) -> Result<&'static StartInfo, MemError> {
    // SAFETY: QEMU's PVH loader passes the physical address of a start info
    // below 4 GiB (identity-mapped); we check the magic before trusting it.
    let info = unsafe { &*(addr as usize as *const StartInfo) };
    if info.magic != PVH_MAGIC {
        return Err(MemError::BadMagic);
    }
    Ok(info)
}

/// Whether the loader passed an ACPI RSDP (QEMU microvm with `acpi=on`).
pub fn has_acpi(start_info_addr: u32) -> bool {
    start_info(start_info_addr).is_ok_and(|i| i.rsdp_paddr != 0)
}

/// Read the command line from the start info (lossy UTF-8, bounded).
pub fn cmdline(start_info_addr: u32) -> String {
    let Ok(info) = start_info(start_info_addr) else {
        return String::new();
    };
    if info.cmdline_paddr == 0 || info.cmdline_paddr >= IDENTITY_LIMIT {
        return String::new();
    }
    let base = info.cmdline_paddr as usize as *const u8;
    let mut len = 0;
    // SAFETY: NUL-terminated string provided by the loader, read up to a bound.
    while len < MAX_CMDLINE && unsafe { *base.add(len) } != 0 {
        len += 1;
    }
    // SAFETY: `len` bytes were just read successfully.
    let bytes = unsafe { core::slice::from_raw_parts(base, len) };
    String::from_utf8_lossy(bytes).into_owned()
}

/// Find RAM for the heap from the PVH memory map and hand it to the allocator.
pub fn init(start_info_addr: u32) -> Result<MemInfo, MemError> {
    let info = start_info(start_info_addr)?;
    if info.version < 1 || info.memmap_paddr == 0 || info.memmap_entries == 0 {
        return Err(MemError::NoMemoryMap);
    }
    // SAFETY: address of a linker symbol.
    let kernel_end = unsafe { &__kernel_end as *const u8 as u64 };
    // Keep clear of the start info and command line the loader placed.
    let count = info.memmap_entries.min(MAX_MEMMAP) as usize;
    // SAFETY: the loader provides `memmap_entries` entries at `memmap_paddr`.
    let entries = unsafe {
        core::slice::from_raw_parts(info.memmap_paddr as usize as *const MemmapEntry, count)
    };
    let mut ram_total = 0;
    let mut ram_end = 0;
    let mut best: Option<(u64, u64)> = None;
    for e in entries.iter().filter(|e| e.kind == 1) {
        ram_total += e.size;
        ram_end = ram_end.max(e.addr.saturating_add(e.size).min(IDENTITY_LIMIT));
        let end = e.addr.saturating_add(e.size).min(IDENTITY_LIMIT);
        let start = e.addr.max(kernel_end).next_multiple_of(PAGE as u64);
        if end > start && best.is_none_or(|(_, len)| end - start > len) {
            best = Some((start, end - start));
        }
    }
    let (start, len) = best.ok_or(MemError::NoHeapRegion)?;
    if len < HEAP_SIZE + MIN_FRAMES {
        return Err(MemError::NoHeapRegion);
    }
    // SAFETY: [start, start+HEAP_SIZE) is usable RAM past the kernel image,
    // identity mapped, and handed to the allocator exactly once.
    unsafe {
        HEAP.lock()
            .init(start as usize as *mut u8, HEAP_SIZE as usize)
    };
    Ok(MemInfo {
        heap_start: start,
        heap_len: HEAP_SIZE,
        frames_start: start + HEAP_SIZE,
        frames_len: (len - HEAP_SIZE) & !(PAGE as u64 - 1),
        ram_end,
        ram_total,
    })
}

/// Heap bytes in use and free.
pub fn heap_usage() -> (usize, usize) {
    let heap = HEAP.lock();
    (heap.used(), heap.free())
}
