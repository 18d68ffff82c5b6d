//! Grants: bounded IPC channels and device capabilities, checked per task.
//!
//! A handle is an index into the grant table; every call checks that the
//! grant is live and owned by the calling task. When a task ends, all its
//! grants are revoked: its channel ends close (peers see `Closed`) and its
//! devices stop being usable.

use alloc::collections::VecDeque;
use alloc::vec::Vec;
use core::task::Waker;

use nexus_abi::device::{DeviceError, DmaRegion};
use nexus_abi::ipc::{IpcError, MAX_MESSAGE, QUEUE_DEPTH};
use nexus_abi::layout::{self, PAGE};
use nexus_abi::sys::{Handle, PROT_EXEC, WAIT_IRQ, WAIT_READ, WAIT_WRITE};
use spin::Mutex;

use crate::arch::apic;
use crate::sched::{self, Pid as TaskId};
use crate::{frames, kprintln};

/// Most grants (channel ends + devices) in the system.
pub const MAX_GRANTS: usize = 256;
/// Most DMA pages one request may take.
pub const MAX_DMA_PAGES: u64 = 256;
/// Size of a device's register window (one virtio-mmio slot).
pub const WINDOW: u64 = crate::virtio::SLOT_SIZE;
/// virtio-mmio `Status` register; writing 0 resets the device.
const VIRTIO_STATUS: u64 = 0x70;

#[derive(Clone, Copy)]
enum Kind {
    Chan { chan: usize, side: usize },
    Device { dev: usize },
}

struct Grant {
    owner: TaskId,
    kind: Kind,
    live: bool,
}

#[derive(Default)]
struct Chan {
    /// `queue[s]`: messages waiting for side `s`.
    queue: [VecDeque<Vec<u8>>; 2],
    recv_waker: [Option<Waker>; 2],
    send_waker: [Option<Waker>; 2],
    closed: [bool; 2],
}

struct DeviceRec {
    base: u64,
    irq: Option<u8>,
    pending: bool,
    waker: Option<Waker>,
}

struct State {
    grants: Vec<Grant>,
    chans: Vec<Chan>,
    devices: Vec<DeviceRec>,
}

static STATE: Mutex<State> = Mutex::new(State {
    grants: Vec::new(),
    chans: Vec::new(),
    devices: Vec::new(),
});

/// Owner of the kernel's own channel ends (each process's `init` channel,
/// over which init delivers grants made after the process started).
pub const KERNEL: TaskId = usize::MAX - 1;

/// The grant table is full.
#[derive(Debug)]
pub struct GrantsFull;

/// Create a channel between two tasks; returns each side's handle.
pub fn channel(a: TaskId, b: TaskId) -> Result<(Handle, Handle), GrantsFull> {
    let mut st = STATE.lock();
    if st.grants.len() + 2 > MAX_GRANTS {
        return Err(GrantsFull);
    }
    let chan = st.chans.len();
    st.chans.push(Chan::default());
    let ha = Handle(st.grants.len() as u32);
    st.grants.push(Grant {
        owner: a,
        kind: Kind::Chan { chan, side: 0 },
        live: true,
    });
    let hb = Handle(st.grants.len() as u32);
    st.grants.push(Grant {
        owner: b,
        kind: Kind::Chan { chan, side: 1 },
        live: true,
    });
    Ok((ha, hb))
}

/// Grant a discovered device to `owner`.
pub fn device(owner: TaskId, base: u64, irq: Option<u8>) -> Result<Handle, GrantsFull> {
    let mut st = STATE.lock();
    if st.grants.len() == MAX_GRANTS {
        return Err(GrantsFull);
    }
    let dev = st.devices.len();
    st.devices.push(DeviceRec {
        base,
        irq,
        pending: false,
        waker: None,
    });
    let h = Handle(st.grants.len() as u32);
    st.grants.push(Grant {
        owner,
        kind: Kind::Device { dev },
        live: true,
    });
    Ok(h)
}

fn lookup(st: &State, h: Handle) -> Option<Kind> {
    let g = st.grants.get(h.0 as usize)?;
    (g.live && Some(g.owner) == sched::current()).then_some(g.kind)
}

/// `wait`: which of `interest` hold for `h` now; for those that do not,
/// `waker` is registered. A handle that is not the caller's reports every
/// interest ready, so the caller's next call sees the error.
pub fn poll_ready(h: Handle, interest: u32, waker: &Waker) -> u32 {
    let mut st = STATE.lock();
    match lookup(&st, h) {
        Some(Kind::Chan { chan, side }) => {
            let peer = 1 - side;
            let c = &mut st.chans[chan];
            let mut ready = 0;
            if interest & WAIT_READ != 0 {
                if !c.queue[side].is_empty() || c.closed[peer] {
                    ready |= WAIT_READ;
                } else {
                    c.recv_waker[side] = Some(waker.clone());
                }
            }
            if interest & WAIT_WRITE != 0 {
                if c.queue[peer].len() < QUEUE_DEPTH || c.closed[peer] {
                    ready |= WAIT_WRITE;
                } else {
                    c.send_waker[side] = Some(waker.clone());
                }
            }
            ready
        }
        Some(Kind::Device { dev }) => {
            let d = &mut st.devices[dev];
            if interest & WAIT_IRQ == 0 {
                0
            } else if d.pending {
                WAIT_IRQ
            } else {
                d.waker = Some(waker.clone());
                0
            }
        }
        None => interest,
    }
}

fn chan_of(st: &State, h: Handle) -> Result<(usize, usize), IpcError> {
    match lookup(st, h) {
        Some(Kind::Chan { chan, side }) => Ok((chan, side)),
        _ => Err(IpcError::BadHandle),
    }
}

/// `chan_send` for the calling process.
pub fn send(h: Handle, msg: &[u8], waker: Option<&Waker>) -> Result<(), IpcError> {
    send_as(sched::current(), h, msg, waker)
}

/// Queue `msg` on one of the kernel's own channel ends (never waits).
pub fn send_from_kernel(h: Handle, msg: &[u8]) -> Result<(), IpcError> {
    send_as(Some(KERNEL), h, msg, None)
}

/// Close one of the kernel's own channel ends.
pub fn close_kernel_end(h: Handle) {
    let mut wakes = Vec::new();
    {
        let mut st = STATE.lock();
        let ours = st
            .grants
            .get(h.0 as usize)
            .is_some_and(|g| g.owner == KERNEL);
        if ours {
            close_locked(&mut st, h.0 as usize, &mut wakes);
        }
    }
    wakes.into_iter().for_each(Waker::wake);
}

fn send_as(
    owner: Option<TaskId>,
    h: Handle,
    msg: &[u8],
    waker: Option<&Waker>,
) -> Result<(), IpcError> {
    if msg.len() > MAX_MESSAGE {
        return Err(IpcError::TooLarge);
    }
    let wake = {
        let mut st = STATE.lock();
        let (chan, side) = match st.grants.get(h.0 as usize) {
            Some(g) if g.live && Some(g.owner) == owner => match g.kind {
                Kind::Chan { chan, side } => (chan, side),
                Kind::Device { .. } => return Err(IpcError::BadHandle),
            },
            _ => return Err(IpcError::BadHandle),
        };
        let peer = 1 - side;
        let c = &mut st.chans[chan];
        if c.closed[peer] {
            return Err(IpcError::Closed);
        }
        if c.queue[peer].len() >= QUEUE_DEPTH {
            if let Some(w) = waker {
                c.send_waker[side] = Some(w.clone());
            }
            return Err(IpcError::WouldBlock);
        }
        c.queue[peer].push_back(msg.to_vec());
        c.recv_waker[peer].take()
    };
    if let Some(w) = wake {
        w.wake();
    }
    Ok(())
}

/// `chan_recv` for the calling process.
pub fn recv(h: Handle, waker: Option<&Waker>) -> Result<Vec<u8>, IpcError> {
    let (msg, wake) = {
        let mut st = STATE.lock();
        let (chan, side) = chan_of(&st, h)?;
        let peer = 1 - side;
        let c = &mut st.chans[chan];
        match c.queue[side].pop_front() {
            Some(m) => (m, c.send_waker[peer].take()),
            None if c.closed[peer] => return Err(IpcError::Closed),
            None => {
                if let Some(w) = waker {
                    c.recv_waker[side] = Some(w.clone());
                }
                return Err(IpcError::WouldBlock);
            }
        }
    };
    if let Some(w) = wake {
        w.wake();
    }
    Ok(msg)
}

fn close_locked(st: &mut State, idx: usize, wakes: &mut Vec<Waker>) {
    let Some(g) = st.grants.get_mut(idx) else {
        return;
    };
    if !g.live {
        return;
    }
    g.live = false;
    match g.kind {
        Kind::Chan { chan, side } => {
            let peer = 1 - side;
            let c = &mut st.chans[chan];
            c.closed[side] = true;
            c.queue[side].clear();
            wakes.extend(c.recv_waker[peer].take());
            wakes.extend(c.send_waker[peer].take());
        }
        Kind::Device { dev } => {
            let d = &mut st.devices[dev];
            if let Some(pin) = d.irq {
                apic::mask_gsi(pin);
            }
            d.waker = None;
            d.pending = false;
            // Stop the device before its holder's frames (queues, buffers)
            // go back to the allocator: a live device would keep writing
            // into them.
            // SAFETY: the device window is mapped for the kernel
            // (uncached); writing 0 to Status is the virtio reset.
            unsafe { core::ptr::write_volatile((d.base + VIRTIO_STATUS) as usize as *mut u32, 0) };
        }
    }
}

/// `chan_close` for the calling process.
pub fn close(h: Handle) {
    let mut wakes = Vec::new();
    {
        let mut st = STATE.lock();
        if matches!(lookup(&st, h), Some(Kind::Chan { .. })) {
            close_locked(&mut st, h.0 as usize, &mut wakes);
        }
    }
    wakes.into_iter().for_each(Waker::wake);
}

/// Revoke every grant a finished task held.
pub fn task_exited(task: TaskId) {
    let mut wakes = Vec::new();
    {
        let mut st = STATE.lock();
        for idx in 0..st.grants.len() {
            if st.grants[idx].owner == task {
                close_locked(&mut st, idx, &mut wakes);
            }
        }
    }
    wakes.into_iter().for_each(Waker::wake);
}

fn device_of(st: &State, h: Handle) -> Result<usize, DeviceError> {
    match lookup(st, h) {
        Some(Kind::Device { dev }) => Ok(dev),
        _ => Err(DeviceError::NotGranted),
    }
}

fn denied(why: &str) {
    let name = sched::current().map_or("?", sched::name_of);
    kprintln!("kernel: mmio denied ({why}) task={name}");
}

/// `mmio_map(handle, offset, len, prot)`: map `[offset, offset + len)` of
/// the granted device's register window into the caller, uncached, RW, NX.
/// Refused, and logged, without the grant, outside the window, or with
/// execute asked. Mapping is page-granular: the page holding the window is
/// mapped, so a window may not share its page with another process's grant.
pub fn mmio_map(h: Handle, offset: u64, len: u64, prot: u64) -> Result<u64, DeviceError> {
    let base = {
        let st = STATE.lock();
        match device_of(&st, h) {
            Ok(dev) => {
                let base = st.devices[dev].base;
                let page = base & !(PAGE - 1);
                let shared = st.grants.iter().any(|g| {
                    g.live
                        && Some(g.owner) != sched::current()
                        && matches!(g.kind, Kind::Device { dev: o } if st.devices[o].base & !(PAGE - 1) == page)
                });
                if shared {
                    drop(st);
                    denied("page shared with another grant");
                    return Err(DeviceError::OutsideWindow);
                }
                base
            }
            Err(e) => {
                drop(st);
                denied("no grant");
                return Err(e);
            }
        }
    };
    if prot & PROT_EXEC != 0 {
        denied("exec attempt");
        return Err(DeviceError::ExecDenied);
    }
    if len == 0 || offset.checked_add(len).is_none_or(|end| end > WINDOW) {
        denied("outside window");
        return Err(DeviceError::OutsideWindow);
    }
    let page = base & !(PAGE - 1);
    let last = (base + offset + len - 1) & !(PAGE - 1);
    let pages = (last - page) / PAGE + 1;
    sched::with_current(|p| {
        let at = p.mmio_next;
        if at + pages * PAGE > layout::MMIO_END {
            return Err(DeviceError::OutOfMemory);
        }
        p.space
            .map_phys(at, page, pages, false)
            .map_err(|_| DeviceError::OutOfMemory)?;
        p.mmio_next = at + pages * PAGE;
        Ok(at + (base - page) + offset)
    })
    .unwrap_or(Err(DeviceError::NotGranted))
}

/// `irq_take`. The pin stays masked from the interrupt until the
/// driver asks for the next one, so a level-triggered line that is still
/// asserted cannot storm.
pub fn irq_take(h: Handle, waker: &Waker) -> Result<bool, DeviceError> {
    let mut st = STATE.lock();
    let dev = device_of(&st, h)?;
    let d = &mut st.devices[dev];
    let pin = d.irq.ok_or(DeviceError::NoIrq)?;
    if d.pending {
        d.pending = false;
        return Ok(true);
    }
    d.waker = Some(waker.clone());
    apic::route_gsi(pin);
    Ok(false)
}

/// Mark devices on the fired pins pending and wake their drivers.
pub fn wake_device_pins(pins: u64) {
    let mut wakes = Vec::new();
    {
        let mut st = STATE.lock();
        for d in st.devices.iter_mut() {
            if let Some(pin) = d.irq {
                if pins & (1 << pin) != 0 {
                    d.pending = true;
                    wakes.extend(d.waker.take());
                }
            }
        }
    }
    wakes.into_iter().for_each(Waker::wake);
}

/// `dma_alloc`: physically contiguous zeroed frames, mapped into the
/// caller's DMA range and charged to its quota. The physical address is
/// returned because the device needs it; the process learns nothing about
/// memory it was not given.
pub fn dma_alloc(h: Handle, pages: u64) -> Result<DmaRegion, DeviceError> {
    {
        let st = STATE.lock();
        device_of(&st, h)?;
    }
    if pages == 0 || pages > MAX_DMA_PAGES {
        return Err(DeviceError::InvalidArgument);
    }
    sched::with_current(|p| {
        let at = p.dma_next;
        if at + pages * PAGE > layout::DMA_END {
            return Err(DeviceError::OutOfMemory);
        }
        // The frames and up to two new page tables.
        if !p.space.can_charge(pages as usize + 2) {
            return Err(DeviceError::OutOfMemory);
        }
        let paddr = frames::alloc_contiguous(pages as usize).ok_or(DeviceError::OutOfMemory)?;
        if p.space.map_phys(at, paddr, pages, true).is_err() {
            // Whatever got mapped is freed with the space; the rest now.
            for i in 0..pages {
                if p.space.translate(at + i * PAGE).is_none() {
                    frames::free(paddr + i * PAGE);
                }
            }
            p.dma_next = at + pages * PAGE;
            return Err(DeviceError::OutOfMemory);
        }
        p.dma_next = at + pages * PAGE;
        Ok(DmaRegion {
            paddr,
            vaddr: at as usize,
            pages: pages as usize,
        })
    })
    .unwrap_or(Err(DeviceError::NotGranted))
}

/// `dma_free`: unmap and free DMA pages from [`dma_alloc`].
pub fn dma_free(h: Handle, vaddr: u64, pages: u64) -> Result<(), DeviceError> {
    {
        let st = STATE.lock();
        device_of(&st, h)?;
    }
    if pages == 0 || pages > MAX_DMA_PAGES || !vaddr.is_multiple_of(PAGE) {
        return Err(DeviceError::InvalidArgument);
    }
    if layout::user_range(vaddr, pages * PAGE).is_err()
        || vaddr < layout::DMA_START
        || vaddr + pages * PAGE > layout::DMA_END
    {
        return Err(DeviceError::InvalidArgument);
    }
    sched::with_current(|p| {
        let (paddr, _) = p
            .space
            .translate(vaddr)
            .ok_or(DeviceError::InvalidArgument)?;
        if p.space.unmap_owned(vaddr, paddr, pages) {
            Ok(())
        } else {
            Err(DeviceError::InvalidArgument)
        }
    })
    .unwrap_or(Err(DeviceError::NotGranted))
}
