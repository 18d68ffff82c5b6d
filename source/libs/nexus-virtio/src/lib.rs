//! The DMA HAL for `virtio-drivers`, shared by the driver processes
//! (netstackd for the NIC, blkd for the disk).
//!
//! A driver is a process: its heap is virtual memory whose frames the
//! device cannot be told about (they are not contiguous, and no call reveals
//! their physical addresses). Memory the device touches therefore comes only
//! from the kernel's DMA allocator through the NIC capability, which maps
//! physically contiguous frames into this process and tells it their
//! physical address:
//! - virtqueues: `dma_alloc` straight from the kernel;
//! - buffers (`share`): bounced through a pool of DMA slots — copied in
//!   before the device reads, copied out after it wrote. A network frame is
//!   at most 2 KiB, so one slot each; larger buffers (disk sectors in bulk)
//!   get their own pages, kept for reuse.
//!
//! The pool grows by [`POOL_CHUNK_PAGES`] up to [`POOL_MAX_PAGES`]; past
//! that `share` cannot succeed and (the trait has no error path) the daemon
//! stops with a clear message. 2 × 16 descriptors in flight need 16 pages.
//! One process drives one device: [`install`] it once before creating the
//! driver.
#![no_std]

extern crate alloc;

use alloc::vec::Vec;
use core::ptr::NonNull;

use nexus_abi::device::{Device, DmaRegion, PAGE_SIZE};
use spin::Mutex;
use virtio_drivers::{BufferDirection, Hal, PhysAddr};

/// The device capability, set once before the driver is created. The HAL's
/// functions are associated functions (no `self`), hence the static.
static DEVICE: spin::Once<Device> = spin::Once::new();

/// Hand the HAL the device whose DMA memory it allocates; returns it back
/// for the driver's own use (interrupts, diagnostics).
pub fn install(device: Device) -> &'static Device {
    DEVICE.call_once(|| device)
}

/// Bounce slot size (a frame plus the virtio-net header fits).
pub const SLOT: usize = 2048;
/// Pages added to the pool at a time.
pub const POOL_CHUNK_PAGES: usize = 8;
/// Most pages the pool holds.
pub const POOL_MAX_PAGES: usize = 64;

struct Slot {
    region: DmaRegion,
    offset: usize,
    len: usize,
    busy: bool,
}

/// Bounce slots and dedicated large buffers.
struct Pool {
    slots: Vec<Slot>,
    pages: usize,
}

static POOL: Mutex<Pool> = Mutex::new(Pool {
    slots: Vec::new(),
    pages: 0,
});

fn nic() -> &'static Device {
    match DEVICE.get() {
        Some(d) => d,
        None => panic!("virtio HAL: DMA requested before the device capability was installed"),
    }
}

impl Pool {
    fn take(&mut self, len: usize) -> &mut Slot {
        if len <= SLOT {
            if let Some(i) = self.slots.iter().position(|s| !s.busy && s.len == SLOT) {
                self.slots[i].busy = true;
                return &mut self.slots[i];
            }
            self.grow(POOL_CHUNK_PAGES, SLOT);
        } else {
            self.grow(len.div_ceil(PAGE_SIZE), len);
        }
        match self.slots.iter().rposition(|s| !s.busy && s.len >= len) {
            Some(i) => {
                self.slots[i].busy = true;
                &mut self.slots[i]
            }
            None => panic!("virtio HAL: no DMA bounce slot for {len} bytes"),
        }
    }

    fn grow(&mut self, pages: usize, slot_len: usize) {
        if self.pages + pages > POOL_MAX_PAGES {
            panic!(
                "virtio HAL: DMA bounce pool full ({} pages, bound {POOL_MAX_PAGES})",
                self.pages
            );
        }
        let region = match nic().dma_alloc(pages) {
            Ok(r) => r,
            Err(e) => panic!("virtio HAL: DMA bounce pool of {pages} pages: {e}"),
        };
        self.pages += pages;
        let mut offset = 0;
        while offset + slot_len <= pages * PAGE_SIZE {
            self.slots.push(Slot {
                region,
                offset,
                len: slot_len,
                busy: false,
            });
            offset += slot_len;
        }
    }
}

/// The HAL type handed to `virtio-drivers`.
pub struct NexusHal;

// SAFETY: queue memory is zeroed, page-aligned, physically contiguous and
// mapped for us by the kernel with its physical address; every buffer the
// device sees is a bounce slot inside such memory, exclusively ours from
// `share` to `unshare`.
unsafe impl Hal for NexusHal {
    fn dma_alloc(pages: usize, _direction: BufferDirection) -> (PhysAddr, NonNull<u8>) {
        match nic().dma_alloc(pages) {
            Ok(r) => match NonNull::new(r.vaddr as *mut u8) {
                Some(ptr) => (r.paddr as PhysAddr, ptr),
                None => panic!("virtio HAL: kernel returned a null DMA region"),
            },
            // The trait offers no error path; this only happens while the
            // driver is being created, and the daemon cannot run without it.
            Err(e) => panic!("virtio HAL: DMA allocation of {pages} pages failed: {e}"),
        }
    }

    unsafe fn dma_dealloc(paddr: PhysAddr, vaddr: NonNull<u8>, pages: usize) -> i32 {
        nic().dma_free(DmaRegion {
            paddr,
            vaddr: vaddr.as_ptr() as usize,
            pages,
        });
        0
    }

    unsafe fn mmio_phys_to_virt(_paddr: PhysAddr, _size: usize) -> NonNull<u8> {
        // Only PCI transports ask; drivers map their virtio-mmio window
        // through the kernel's `mmio_map` and hand the mapping over themselves.
        panic!("virtio HAL: mmio_phys_to_virt is not supported (no PCI)")
    }

    unsafe fn share(buffer: NonNull<[u8]>, direction: BufferDirection) -> PhysAddr {
        let len = buffer.len();
        let mut pool = POOL.lock();
        let slot = pool.take(len);
        let at = slot.region.vaddr + slot.offset;
        if direction != BufferDirection::DeviceToDriver {
            // SAFETY: `buffer` is valid for `len` bytes (the trait's
            // contract) and the slot is ours and at least `len` long.
            unsafe {
                core::ptr::copy_nonoverlapping(buffer.as_ptr() as *const u8, at as *mut u8, len)
            };
        }
        slot.region.paddr + slot.offset as u64
    }

    unsafe fn unshare(paddr: PhysAddr, buffer: NonNull<[u8]>, direction: BufferDirection) {
        let mut pool = POOL.lock();
        let Some(slot) = pool
            .slots
            .iter_mut()
            .find(|s| s.busy && s.region.paddr + s.offset as u64 == paddr)
        else {
            return;
        };
        if direction != BufferDirection::DriverToDevice {
            let at = slot.region.vaddr + slot.offset;
            // SAFETY: the device has finished with the slot; `buffer` is the
            // same buffer `share` was given.
            unsafe {
                core::ptr::copy_nonoverlapping(
                    at as *const u8,
                    buffer.as_ptr() as *mut u8,
                    buffer.len().min(slot.len),
                )
            };
        }
        slot.busy = false;
    }
}
