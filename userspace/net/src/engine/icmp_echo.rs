//! ICMP echo (`ping`): one request in flight per call, identified by a
//! fresh ident. Methods of [`Engine`].

use super::*;

impl<D: Device> Engine<D> {
    pub(super) fn ping(
        &mut self,
        now: Instant,
        client: ClientId,
        req_id: u32,
        target: Ipv4Address,
        timeout_ms: u32,
    ) -> Result<Option<Response>, Error> {
        // A ping names one host: an answer to a broadcast or multicast echo
        // would come from some other address and could not be matched.
        let subnet_broadcast = self.nic_cidr().and_then(|c| c.broadcast());
        if timeout_ms == 0
            || target.is_unspecified()
            || target.is_broadcast()
            || target.is_multicast()
            || Some(target) == subnet_broadcast
        {
            return Err(Error::InvalidArgument);
        }
        let timeout = Duration::from_millis(u64::from(timeout_ms)).min(MAX_PING_TIMEOUT);
        let iface = loopback::route(target, self.nic_addr());
        if iface == IfaceId::Nic {
            self.nic_route(target)?;
        }
        self.check_pending_room(client)?;
        self.stacks.check_room(1)?;
        let ident = self.fresh_ident();
        let op = PingOp::new(self.stacks.set(iface), iface, target, ident, now, timeout);
        self.pending.push(Pending {
            client,
            req_id,
            op: Op::Ping(Box::new(op)),
        });
        Ok(None)
    }

    /// An ICMP identifier no running ping uses.
    pub(super) fn fresh_ident(&mut self) -> u16 {
        loop {
            let ident = self.next_ident;
            self.next_ident = self.next_ident.wrapping_add(1);
            let used = self
                .pending
                .iter()
                .any(|p| matches!(&p.op, Op::Ping(op) if op.ident() == ident));
            // At most MAX_PENDING_TOTAL idents are in use, so this ends.
            if ident != 0 && !used {
                return ident;
            }
        }
    }
}
