//! The physical frame allocator: 4 KiB frames for page tables, user memory
//! and DMA, kept apart from the kernel heap.
//!
//! A bitmap over one contiguous RAM region (bit set = free). Single frames
//! come from a rotating cursor; contiguous runs (DMA) from a first-fit scan.
//! Every frame handed out is zeroed, so no process ever sees another's data.
//! The free count is what the harness compares before and after a process
//! dies (no leak).

use alloc::vec;
use alloc::vec::Vec;

use spin::Mutex;
use x86_64::structures::paging::{FrameAllocator, PhysFrame, Size4KiB};
use x86_64::PhysAddr;

/// Frame size.
pub const FRAME: u64 = 4096;

struct Bitmap {
    base: u64,
    frames: usize,
    free: usize,
    bits: Vec<u64>,
    cursor: usize,
}

impl Bitmap {
    fn is_free(&self, i: usize) -> bool {
        self.bits[i / 64] & (1 << (i % 64)) != 0
    }
    fn set(&mut self, i: usize, free: bool) {
        if free {
            self.bits[i / 64] |= 1 << (i % 64);
        } else {
            self.bits[i / 64] &= !(1 << (i % 64));
        }
    }
}

static MAP: Mutex<Option<Bitmap>> = Mutex::new(None);

/// Hand the region `[base, base + len)` (page-aligned, identity-mapped) to
/// the allocator. Called once at boot.
pub fn init(base: u64, len: u64) {
    let frames = (len / FRAME) as usize;
    let mut bits = vec![0u64; frames.div_ceil(64)];
    for i in 0..frames {
        bits[i / 64] |= 1 << (i % 64);
    }
    *MAP.lock() = Some(Bitmap {
        base,
        frames,
        free: frames,
        bits,
        cursor: 0,
    });
}

fn zero(addr: u64, frames: usize) {
    // SAFETY: the frames were just taken from the allocator (nobody else
    // holds them) and RAM is identity-mapped for the kernel.
    unsafe { core::ptr::write_bytes(addr as usize as *mut u8, 0, frames * FRAME as usize) };
}

/// One zeroed frame's physical address.
pub fn alloc() -> Option<u64> {
    let addr = {
        let mut g = MAP.lock();
        let m = g.as_mut()?;
        if m.free == 0 {
            return None;
        }
        let n = m.frames;
        let start = m.cursor;
        let i = (0..n).map(|k| (start + k) % n).find(|&i| m.is_free(i))?;
        m.set(i, false);
        m.free -= 1;
        m.cursor = (i + 1) % n;
        m.base + i as u64 * FRAME
    };
    zero(addr, 1);
    Some(addr)
}

/// `count` physically contiguous zeroed frames (first fit).
pub fn alloc_contiguous(count: usize) -> Option<u64> {
    if count == 0 {
        return None;
    }
    let addr = {
        let mut g = MAP.lock();
        let m = g.as_mut()?;
        if m.free < count {
            return None;
        }
        let mut run = 0;
        let mut found = None;
        for i in 0..m.frames {
            if m.is_free(i) {
                run += 1;
                if run == count {
                    found = Some(i + 1 - count);
                    break;
                }
            } else {
                run = 0;
            }
        }
        let first = found?;
        for i in first..first + count {
            m.set(i, false);
        }
        m.free -= count;
        m.base + first as u64 * FRAME
    };
    zero(addr, count);
    Some(addr)
}

/// Return a frame. Addresses outside the region or already free are
/// ignored (and reported once as a kernel bug would be: loudly).
pub fn free(addr: u64) {
    let mut g = MAP.lock();
    let Some(m) = g.as_mut() else { return };
    if addr < m.base || !addr.is_multiple_of(FRAME) {
        return;
    }
    let i = ((addr - m.base) / FRAME) as usize;
    if i >= m.frames || m.is_free(i) {
        crate::kprintln!("kernel: BUG frame {addr:#x} freed twice or not ours");
        return;
    }
    m.set(i, true);
    m.free += 1;
}

/// `(free, total)` frames.
pub fn counts() -> (usize, usize) {
    MAP.lock().as_ref().map_or((0, 0), |m| (m.free, m.frames))
}

/// The `x86_64` crate's allocator trait over this allocator, for page-table
/// frames. `taken` records every frame handed out so the caller can charge
/// them to a process.
pub struct TableFrames<'a> {
    /// Frames handed out through this adapter.
    pub taken: &'a mut usize,
    /// Frames the caller may still take.
    pub budget: usize,
}

// SAFETY: every frame returned is unused, zeroed and identity-mapped.
unsafe impl FrameAllocator<Size4KiB> for TableFrames<'_> {
    fn allocate_frame(&mut self) -> Option<PhysFrame<Size4KiB>> {
        if *self.taken >= self.budget {
            return None;
        }
        let a = alloc()?;
        *self.taken += 1;
        Some(PhysFrame::containing_address(PhysAddr::new(a)))
    }
}
