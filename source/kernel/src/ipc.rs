//! Grants: bounded IPC channels and device capabilities, checked per task.
//!
//! A handle is an index into the grant table; every call checks that the
//! grant is live and owned by the calling task. When a task ends, all its
//! grants are revoked: its channel ends close (peers see `Closed`) and its
//! devices stop being usable.

use alloc::collections::VecDeque;
use alloc::vec::Vec;
use core::task::Waker;

use nexus_abi::device::{DeviceError, DmaRegion, MmioRegion};
use nexus_abi::ipc::{IpcError, MAX_MESSAGE, QUEUE_DEPTH};
use nexus_abi::sys::Handle;
use spin::Mutex;

use crate::arch::apic;
use crate::exec::{self, TaskId};
use crate::mem;

/// Most grants (channel ends + devices) in the system.
pub const MAX_GRANTS: usize = 256;
/// Most DMA pages one request may take.
pub const MAX_DMA_PAGES: usize = 256;

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
    (g.live && Some(g.owner) == exec::current()).then_some(g.kind)
}

fn chan_of(st: &State, h: Handle) -> Result<(usize, usize), IpcError> {
    match lookup(st, h) {
        Some(Kind::Chan { chan, side }) => Ok((chan, side)),
        _ => Err(IpcError::BadHandle),
    }
}

/// `KernelOps::chan_send`.
pub fn send(h: Handle, msg: &[u8], waker: Option<&Waker>) -> Result<(), IpcError> {
    if msg.len() > MAX_MESSAGE {
        return Err(IpcError::TooLarge);
    }
    let wake = {
        let mut st = STATE.lock();
        let (chan, side) = chan_of(&st, h)?;
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

/// `KernelOps::chan_recv`.
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
            if let Some(pin) = st.devices[dev].irq {
                apic::mask_gsi(pin);
            }
            st.devices[dev].waker = None;
        }
    }
}

/// `KernelOps::chan_close`.
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

/// `KernelOps::mmio_map`: the window is identity-mapped already.
pub fn mmio_map(h: Handle) -> Result<MmioRegion, DeviceError> {
    let st = STATE.lock();
    let dev = device_of(&st, h)?;
    Ok(MmioRegion {
        vaddr: st.devices[dev].base as usize,
        len: crate::virtio::SLOT_SIZE as usize,
    })
}

/// `KernelOps::irq_take`. The pin stays masked from the interrupt until the
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

/// `KernelOps::dma_alloc`.
pub fn dma_alloc(h: Handle, pages: usize) -> Result<DmaRegion, DeviceError> {
    {
        let st = STATE.lock();
        device_of(&st, h)?;
    }
    if pages == 0 || pages > MAX_DMA_PAGES {
        return Err(DeviceError::InvalidArgument);
    }
    let addr = mem::dma_alloc(pages).ok_or(DeviceError::OutOfMemory)?;
    Ok(DmaRegion {
        paddr: addr as u64,
        vaddr: addr,
        pages,
    })
}

/// `KernelOps::dma_free`.
pub fn dma_free(h: Handle, region: DmaRegion) {
    let owned = {
        let st = STATE.lock();
        device_of(&st, h).is_ok()
    };
    if owned
        && region.paddr == region.vaddr as u64
        && region.pages > 0
        && region.pages <= MAX_DMA_PAGES
    {
        // SAFETY: the region came from `dma_alloc` (identity address, same
        // page count); a driver freeing twice is its own bug, as with any
        // allocator.
        unsafe { mem::dma_free(region.vaddr, region.pages) };
    }
}
