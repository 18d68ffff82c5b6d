//! `netstackd`: the network daemon.
//!
//! The only service granted the NIC. It drives virtio-net (virtio-drivers)
//! as a smoltcp device, runs the `nexus-net` engine (DHCP, ICMP, loopback,
//! TCP/UDP) and serves the sockets facade to its clients, one IPC channel
//! each. It sleeps until the NIC interrupts, a client writes, or the engine's
//! next timer is due — it never polls in a loop.
//!
//! Clients are identified by their channel; when a channel closes (the
//! client ended), all its sockets are torn down.
#![no_std]

extern crate alloc;

mod phy;

use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::format;
use alloc::vec::Vec;
use core::future::{poll_fn, Future};
use core::pin::Pin;
use core::ptr::NonNull;
use core::task::Poll;
use core::time::Duration;

use nexus_abi::device::{Device, DeviceError, DeviceKind, MmioRegion, PAGE_SIZE, WINDOW_LEN};
use nexus_abi::sys::{PROT_EXEC, PROT_RW};
use nexus_abi::time::{self, Instant};
use nexus_abi::{entropy, Caps, Channel, IpcError, ServiceError, ServiceFuture};
use nexus_net::facade::{decode_request, encode_response, Response};
use nexus_net::{ClientId, Engine, EngineConfig, NetEvent, Submit};
use smoltcp::time::Instant as NetInstant;
use virtio_drivers::transport::mmio::{MmioTransport, VirtIOHeader};

use crate::phy::{Net, VirtioPhy, RX_BUF_LEN};

/// Responses queued for a client whose channel is full. A client that lets
/// more pile up is not reading its answers and is disconnected.
pub const MAX_OUTBOX: usize = 64;
/// Wake-up interval when the NIC has no interrupt line (fallback only).
pub const NO_IRQ_TICK: Duration = Duration::from_millis(5);

/// Entry point in the init table.
pub fn main(caps: Caps) -> ServiceFuture {
    Box::pin(run(caps))
}

struct Client {
    id: ClientId,
    name: &'static str,
    chan: Channel,
    outbox: VecDeque<Vec<u8>>,
    open: bool,
    /// Requests that could not be decoded (dropped, no id to answer to).
    malformed: u64,
}

enum Wake {
    Message(usize, Result<Vec<u8>, IpcError>),
    Irq,
    Timer,
    /// A queued answer went out.
    Sent,
    /// init delivered a grant.
    Grant(Vec<u8>),
}

fn err(what: &str, e: impl core::fmt::Display) -> ServiceError {
    ServiceError::new(format!("{what}: {e}"))
}

fn net_now() -> NetInstant {
    NetInstant::from_micros(time::now().as_micros() as i64)
}

fn to_instant(t: NetInstant) -> Instant {
    let target_us = u64::try_from(t.total_micros()).unwrap_or(0);
    let now = time::now();
    now.saturating_add(Duration::from_micros(
        target_us.saturating_sub(now.as_micros()),
    ))
}

fn mac_string(mac: &[u8; 6]) -> alloc::string::String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]
    )
}

/// The virtio-mmio magic value ("virt").
const VIRTIO_MAGIC: u32 = 0x7472_6976;

/// Map the NIC's register window, after checking on every boot that the
/// capability's bounds hold: one page past the window and an executable
/// mapping must both be refused (the kernel logs each refusal).
fn map_registers(nic: &Device) -> Result<MmioRegion, ServiceError> {
    let past = nic.map_mmio_range(0, WINDOW_LEN + PAGE_SIZE, PROT_RW);
    let exec = nic.map_mmio_range(0, WINDOW_LEN, PROT_RW | PROT_EXEC);
    if past != Err(DeviceError::OutsideWindow) || exec != Err(DeviceError::ExecDenied) {
        log::error!("SELFTEST: mmio map FAIL (past window: {past:?}, exec: {exec:?})");
        return Err(ServiceError::new(
            "the NIC capability's bounds did not hold",
        ));
    }
    let mmio = nic.map_mmio().map_err(|e| err("map NIC registers", e))?;
    // SAFETY: the kernel just mapped the window (uncached) at this address.
    let magic = unsafe { core::ptr::read_volatile(mmio.vaddr as *const u32) };
    if magic != VIRTIO_MAGIC {
        log::error!("SELFTEST: mmio map FAIL (magic {magic:#x})");
        return Err(ServiceError::new("NIC window does not read as virtio-mmio"));
    }
    log::info!(
        "SELFTEST: mmio map ok (window {:#x}+{:#x} mapped at {:#x}, magic {magic:#x}; past-window and exec requests refused)",
        nic.mmio_base(),
        mmio.len,
        mmio.vaddr
    );
    Ok(mmio)
}

async fn run(mut caps: Caps) -> Result<(), ServiceError> {
    let nic = caps
        .take_device(DeviceKind::Net)
        .ok_or_else(|| ServiceError::new("no NIC granted"))?;
    let mut seed = [0u8; 8];
    entropy::fill(&mut seed).map_err(|e| err("entropy for the stack's seed", e))?;
    let mmio = map_registers(&nic)?;
    let irq = nic.irq();
    let nic = nexus_virtio::install(nic);

    let header = NonNull::new(mmio.vaddr as *mut VirtIOHeader)
        .ok_or_else(|| ServiceError::new("NIC at address 0"))?;
    // SAFETY: the kernel mapped this virtio-mmio window for us alone (we hold
    // the only NIC capability) and it stays mapped for the life of the system.
    let transport = unsafe { MmioTransport::new(header, mmio.len) }
        .map_err(|e| err("virtio-mmio transport", e))?;
    let net = Net::new(transport, RX_BUF_LEN).map_err(|e| err("virtio-net init", e))?;
    let mac = net.mac_address();
    log::info!(
        "net: virtio-net up mac={} irq={}",
        mac_string(&mac),
        irq.map_or_else(|| "none (polling every 5 ms)".into(), |i| format!("{i}"))
    );

    let config = EngineConfig::new(mac, u64::from_le_bytes(seed));
    let mut engine = Engine::new(VirtioPhy::new(net), config, net_now())
        .map_err(|e| err("network engine", e))?;

    let mut clients: Vec<Client> = Vec::new();
    for (role, chan) in caps.take_channels("client:") {
        add_client(&mut clients, role, chan);
    }
    // Grants made after we started (a restarted client's new channel).
    let init = caps.take_channel("init");
    let crash_after_dhcp =
        caps.config("crash") == Some("after-dhcp") && caps.config("restart").is_none();
    log::info!("netstackd: facade up ({} clients)", clients.len());
    if let Err(e) =
        nexus_samgrclient::register_self(&mut caps, "network stack (virtio-net, smoltcp)").await
    {
        log::warn!("netstackd: samgrd registration refused ({e})");
    }

    let mut pending_msgs: Vec<(usize, Result<Vec<u8>, IpcError>)> = Vec::new();
    loop {
        if let Some(init) = init.as_ref() {
            while let Ok(msg) = init.try_recv() {
                take_grant(&mut clients, &msg);
            }
        }
        // Requests: the one that woke us, then whatever else is queued.
        for (i, c) in clients.iter().enumerate() {
            if !c.open {
                continue;
            }
            loop {
                match c.chan.try_recv() {
                    Err(IpcError::WouldBlock) => break,
                    r => {
                        let stop = r.is_err();
                        pending_msgs.push((i, r));
                        if stop {
                            break;
                        }
                    }
                }
            }
        }
        for (i, msg) in pending_msgs.drain(..) {
            let now = net_now();
            let Some(c) = clients.get_mut(i) else {
                continue;
            };
            match msg {
                Ok(bytes) => match decode_request(&bytes) {
                    Ok((req_id, request)) => {
                        if let Submit::Done(resp) = engine.submit(now, c.id, req_id, request) {
                            queue_response(c, req_id, &resp);
                        }
                    }
                    Err(e) => {
                        c.malformed += 1;
                        log::warn!(
                            "netstackd: dropped malformed request from {} ({e:?})",
                            c.name
                        );
                    }
                },
                Err(_) => disconnect(&mut engine, c),
            }
        }

        let out = engine.poll(net_now());
        for ev in out.events {
            match ev {
                NetEvent::DhcpBound(l) | NetEvent::DhcpChanged(l) => {
                    let gw = l.gateway.map_or_else(|| "none".into(), |g| format!("{g}"));
                    log::info!(
                        "net: dhcp bound {}/{} gw={}",
                        l.address.address(),
                        l.address.prefix_len(),
                        gw
                    );
                    if crash_after_dhcp {
                        return Err(crash("after-dhcp"));
                    }
                }
                NetEvent::DhcpDeconfigured => log::info!("net: dhcp deconfigured"),
                NetEvent::LinkLocalClaimed(c) => log::info!(
                    "net: dhcp unavailable; link-local {}/{}",
                    c.address(),
                    c.prefix_len()
                ),
                NetEvent::LinkLocalConflict { addr, claimed } => log::info!(
                    "net: link-local conflict {addr} ({}); probing another address",
                    if claimed {
                        "claimed address lost to another host"
                    } else {
                        "candidate in use"
                    }
                ),
                NetEvent::LinkLocalReplaced(c) => log::info!(
                    "net: link-local {}/{} replaced by a dhcp lease",
                    c.address(),
                    c.prefix_len()
                ),
            }
        }
        for done in out.completions {
            if let Some(c) = clients.iter_mut().find(|c| c.id == done.client) {
                queue_response(c, done.req_id, &done.response);
            }
        }
        for c in clients.iter_mut() {
            flush_outbox(&mut engine, c);
        }

        let deadline = engine.poll_at(net_now()).map(to_instant);
        let fallback = irq
            .is_none()
            .then(|| time::now().saturating_add(NO_IRQ_TICK));
        let deadline = match (deadline, fallback) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let woke = wait(nic, irq.is_some(), deadline, &mut clients, init.as_ref()).await;
        match woke {
            Wake::Grant(msg) => take_grant(&mut clients, &msg),
            Wake::Irq => {
                engine.device_mut().net().ack_interrupt();
            }
            Wake::Message(i, m) => pending_msgs.push((i, m)),
            Wake::Timer | Wake::Sent => {}
        }
    }
}

fn add_client(clients: &mut Vec<Client>, role: &'static str, chan: Channel) {
    clients.push(Client {
        id: ClientId(clients.len() as u32),
        name: role.trim_start_matches("client:"),
        chan,
        outbox: VecDeque::new(),
        open: true,
        malformed: 0,
    });
}

/// A grant from init: a (restarted) client's new channel.
fn take_grant(clients: &mut Vec<Client>, msg: &[u8]) {
    match Caps::decode_grant(msg) {
        Some(grants) => {
            for (role, chan) in grants {
                if role.starts_with("client:") {
                    add_client(clients, role, chan);
                    log::info!(
                        "netstackd: new client {} (granted by init)",
                        role.trim_start_matches("client:")
                    );
                }
            }
        }
        None => log::warn!("netstackd: undecodable grant from init"),
    }
}

/// `netstackd.crash=after-dhcp` (first start only): fault on purpose so the
/// restart path is exercised (test-all). Returns only if the read did not
/// fault, which is itself a failure.
fn crash(when: &str) -> ServiceError {
    log::info!("netstackd: crashing on purpose (netstackd.crash={when})");
    // SAFETY: none: this read must fault (nothing is mapped below 1 GiB).
    let v = unsafe { core::ptr::read_volatile(0x1000 as *const u64) };
    ServiceError::new(format!("the deliberate fault did not fault ({v:#x})"))
}

fn queue_response(c: &mut Client, req_id: u32, resp: &Response) {
    match encode_response(req_id, resp) {
        Ok(bytes) => c.outbox.push_back(bytes),
        Err(e) => log::warn!("netstackd: response to {} not encodable ({e:?})", c.name),
    }
}

fn flush_outbox<D: smoltcp::phy::Device>(engine: &mut Engine<D>, c: &mut Client) {
    while let Some(front) = c.outbox.front() {
        match c.chan.try_send(front) {
            Ok(()) => {
                c.outbox.pop_front();
            }
            Err(IpcError::WouldBlock) => break,
            Err(_) => {
                disconnect(engine, c);
                return;
            }
        }
    }
    if c.outbox.len() > MAX_OUTBOX {
        log::warn!(
            "netstackd: client {} is not reading its answers; disconnecting",
            c.name
        );
        disconnect(engine, c);
    }
}

fn disconnect<D: smoltcp::phy::Device>(engine: &mut Engine<D>, c: &mut Client) {
    if c.open {
        c.open = false;
        c.outbox.clear();
        engine.close_client(c.id);
        log::info!(
            "netstackd: client {} gone; its sockets are torn down",
            c.name
        );
    }
}

/// Sleep until the NIC interrupts, a client sends (or has room for queued
/// answers), or `deadline` passes.
async fn wait(
    nic: &nexus_abi::device::Device,
    use_irq: bool,
    deadline: Option<Instant>,
    clients: &mut [Client],
    init: Option<&Channel>,
) -> Wake {
    let mut sleep = deadline.map(time::sleep_until);
    poll_fn(|cx| {
        if let Some(Poll::Ready(Ok(msg))) = init.map(|c| c.poll_recv(cx)) {
            return Poll::Ready(Wake::Grant(msg));
        }
        for (i, c) in clients.iter().enumerate().filter(|(_, c)| c.open) {
            if let Poll::Ready(m) = c.chan.poll_recv(cx) {
                return Poll::Ready(Wake::Message(i, m));
            }
        }
        for (i, c) in clients.iter_mut().enumerate().filter(|(_, c)| c.open) {
            if let Some(front) = c.outbox.front() {
                // Sends if there is room now, else registers for room.
                match c.chan.poll_send(cx, front) {
                    Poll::Ready(Ok(())) => {
                        c.outbox.pop_front();
                        return Poll::Ready(Wake::Sent);
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Wake::Message(i, Err(e))),
                    Poll::Pending => {}
                }
            }
        }
        if use_irq && nic.poll_irq(cx).is_ready() {
            return Poll::Ready(Wake::Irq);
        }
        if let Some(s) = sleep.as_mut() {
            if Pin::new(s).poll(cx).is_ready() {
                return Poll::Ready(Wake::Timer);
            }
        }
        Poll::Pending
    })
    .await
}
