//! The per-session transfer engine: routes transfer messages between the
//! carrier (stream or data messages) and the core's `Sender`s and
//! `Receiver`s, asks consent, and drives the writer and reader threads.

use super::*;

/// Progress of an outgoing transfer, for the control client.
#[derive(Clone, Debug, Default)]
pub struct SendProgress {
    pub accepted: bool,
    /// Bytes of all files.
    pub total: u64,
    /// Bytes the receiver already held (resumed).
    pub resumed: u64,
    /// Data bytes sent since the accept, and acknowledged.
    pub sent: u64,
    pub acked: u64,
    /// Everything (END included) was handed to the carrier.
    pub all_sent: bool,
}

/// How an outgoing transfer ended, with a local detail (a read error).
pub type SendDone = (Outcome, Option<String>);

/// A `send` request handed to the session.
pub struct SendReq {
    /// The transfer version the entries' digests were computed for.
    pub version: Version,
    pub entries: Vec<Entry>,
    /// Per entry: the local file and its size (None for directories).
    pub files: Vec<Option<(PathBuf, u64)>>,
    pub progress: watch::Sender<SendProgress>,
    pub done: oneshot::Sender<SendDone>,
}

struct Outgoing {
    tx: Sender,
    files: Vec<Option<(PathBuf, u64)>>,
    pieces: Option<mpsc::Receiver<Result<Piece, String>>>,
    held: Option<(Piece, usize)>,
    /// The reader's buffers, given back once sent.
    buffers: ReadBuffers,
    progress: watch::Sender<SendProgress>,
    done: Option<oneshot::Sender<SendDone>>,
    detail: Option<String>,
    /// Its row on the transfer board.
    key: u64,
}

struct Incoming {
    rx: Receiver,
    writer: Option<mpsc::Sender<WriterMsg>>,
    held_end: Option<Vec<u8>>,
    /// File bytes taken from the receiver and not yet handed to the writer
    /// (one entry's, in order, at most [`WRITE_BATCH`] bytes).
    batch: Option<(u16, Vec<u8>)>,
    /// The writer's buffers, given back once written.
    buffers: WriteBuffers,
    /// Messages went to the writer after the last barrier: END waits for
    /// another one (DONE means every file is stored).
    barrier_stale: bool,
    last: StdInstant,
    name: String,
    total: u64,
    /// Its row on the transfer board, and the bytes it holds so far.
    key: u64,
    done: u64,
    /// Its place among the accepted incoming transfers (consent).
    _slot: SlotGuard,
}

impl Incoming {
    /// Queues file bytes for the writer; hands them over once the batch is
    /// [`WRITE_BATCH`] bytes or another entry's bytes come.
    async fn batch_data(&mut self, entry: u16, data: &[u8]) {
        if self.batch.as_ref().is_some_and(|(e, _)| *e != entry) {
            self.flush_batch().await;
        }
        let (_, b) = self.batch.get_or_insert_with(|| {
            let mut b = self.buffers.take();
            b.clear();
            (entry, b)
        });
        b.extend_from_slice(data);
        if b.len() >= WRITE_BATCH {
            self.flush_batch().await;
        }
    }

    async fn flush_batch(&mut self) {
        if let (Some((entry, data)), Some(w)) = (self.batch.take(), &self.writer) {
            // Bounded: a slow disk slows the peer, not memory. Time spent
            // here is not the peer's idleness.
            let _ = w.send(WriterMsg::Data { entry, data }).await;
            self.last = StdInstant::now();
            self.barrier_stale = true;
        }
    }

    /// Sends `m` to the writer after the batched bytes (order kept).
    async fn send_writer(&mut self, m: WriterMsg) {
        self.flush_batch().await;
        if let Some(w) = &self.writer {
            self.barrier_stale = !matches!(m, WriterMsg::Barrier);
            let _ = w.send(m).await;
            self.last = StdInstant::now();
        }
    }
}

/// Where [`Engine::pump`] puts the next DATA message.
pub enum Sink<'a> {
    /// On [`Engine::out`], as a whole message.
    Queue,
    /// Written by `write(header, file bytes)` as one message, from where
    /// the bytes lie (no message is built), when the chunk is at most
    /// `room` bytes.
    Direct {
        room: usize,
        write: &'a mut dyn FnMut(&[u8], &[u8]),
    },
}

/// An offer waiting for consent (`ask`).
struct Waiting {
    rx: Receiver,
    id: OfferId,
    /// The offer as received (to start over when a resume fails).
    msg: Vec<u8>,
    since: StdInstant,
    ttl: Duration,
}

/// Most finished transfers (and refused offers) `dsoftbus transfers`
/// remembers; the oldest is dropped first.
pub const HISTORY: usize = 32;
/// Most answered offer ids remembered, so `accept` of one already answered
/// says so.
pub const ANSWERED: usize = 256;

/// A transfer in flight, for `dsoftbus transfers`.
#[derive(Clone, Debug)]
pub struct Active {
    pub incoming: bool,
    pub peer: String,
    pub name: String,
    pub total: u64,
    /// Bytes done (received and handed to the writer, or acknowledged by
    /// the receiver), resumed bytes included.
    pub done: u64,
    /// Bytes resumed at the start (not counted in the rate).
    pub resumed: u64,
    pub started: StdInstant,
}

/// The transfers of one session.
pub struct Engine {
    cfg: Arc<TransferCfg>,
    counters: Arc<Counters>,
    limiter: Arc<RateLimiter>,
    peers: Peers,
    clock: HostClock,
    cmd: mpsc::Sender<SessionCmd>,
    /// The peer's name for logs.
    pub peer: String,
    /// The peer, once the session is confirmed.
    pub peer_id: Option<DeviceId>,
    inbound: HashMap<Carrier, Incoming>,
    waiting: HashMap<Carrier, Waiting>,
    outbound: HashMap<Carrier, Outgoing>,
    /// Messages to send, in order.
    pub out: VecDeque<(Carrier, Vec<u8>)>,
    /// Carriers whose transfer ended (the session closes their streams).
    pub ended: Vec<Carrier>,
    report_tx: mpsc::Sender<Report>,
    /// Poked when a reader has bytes.
    pub wake: Arc<Notify>,
}

impl Engine {
    pub fn new(
        cx: &SessionCtx,
        cmd: mpsc::Sender<SessionCmd>,
        report_tx: mpsc::Sender<Report>,
    ) -> Self {
        Engine {
            cfg: cx.transfer.clone(),
            counters: cx.counters.clone(),
            limiter: cx.limiter.clone(),
            peers: cx.peers.clone(),
            clock: cx.clock,
            cmd,
            peer: "?".into(),
            peer_id: None,
            inbound: HashMap::new(),
            waiting: HashMap::new(),
            outbound: HashMap::new(),
            out: VecDeque::new(),
            ended: Vec::new(),
            report_tx,
            wake: Arc::new(Notify::new()),
        }
    }

    /// Carriers of outgoing transfers.
    pub fn outgoing(&self) -> Vec<Carrier> {
        self.outbound.keys().copied().collect()
    }

    /// A transfer id not used by an outgoing transfer on the data carrier.
    pub fn new_id(&self) -> u32 {
        loop {
            let id = fastrand::u32(..);
            if !self.outbound.contains_key(&Carrier::Data(id)) {
                return id;
            }
        }
    }

    /// Starts an outgoing transfer on `carrier`.
    pub fn start_send(&mut self, carrier: Carrier, id: u32, req: SendReq) {
        let total = req.entries.iter().map(|e| e.size()).sum();
        let cfg = SenderConfig {
            chunk: CHUNK,
            version: req.version,
        };
        let tx = match Sender::new(id, req.entries, cfg) {
            Ok(tx) => tx,
            Err(e) => {
                let _ = req
                    .done
                    .send((Outcome::Failed(TransferError::Offer(e)), None));
                return;
            }
        };
        req.progress.send_modify(|p| p.total = total);
        let name = summary(tx.entries());
        let key = self.board().start(false, &self.peer, &name, total, 0);
        self.outbound.insert(
            carrier,
            Outgoing {
                tx,
                files: req.files,
                pieces: None,
                held: None,
                buffers: ReadBuffers::default(),
                progress: req.progress,
                done: Some(req.done),
                detail: None,
                key,
            },
        );
        self.drain_outgoing(carrier);
    }

    /// One transfer message from the peer (on a stream, or a data message).
    pub async fn on_message(&mut self, stream: Option<StreamId>, msg: &[u8]) {
        let wire::Header { kind, id, .. } = match wire::header(msg) {
            Ok(h) => h,
            Err(e) => {
                // An offer in an unknown version (id readable): a fresh
                // receiver answers it by id. Anything else is dropped.
                if msg.first() == Some(&wire::KIND_OFFER) {
                    let id = msg
                        .get(2..6)
                        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
                        .unwrap_or(0);
                    let carrier = stream.map(Carrier::Stream).unwrap_or(Carrier::Data(id));
                    let mut rx = Receiver::new(self.receiver_config());
                    let _ = rx.handle(msg);
                    while let Some(m) = rx.poll_transmit() {
                        self.out.push_back((carrier, m));
                    }
                }
                self.log_decode(&format!("transfer message: {e:?}"));
                return;
            }
        };
        let carrier = stream.map(Carrier::Stream).unwrap_or(Carrier::Data(id));
        if wire::from_sender(kind) {
            if let Some(w) = self.waiting.get_mut(&carrier) {
                // A pending offer: only a CANCEL (or garbage) can come.
                let _ = w.rx.handle(msg);
                while let Some(m) = w.rx.poll_transmit() {
                    self.out.push_back((carrier, m));
                }
                if w.rx.outcome().is_some() {
                    self.drop_waiting(carrier, "cancelled by the sender");
                }
                return;
            }
            if !self.inbound.contains_key(&carrier) {
                if kind == wire::KIND_OFFER {
                    self.new_incoming(carrier, msg).await;
                }
                return;
            }
            if let Some(inc) = self.inbound.get_mut(&carrier) {
                if kind == wire::KIND_END && inc.held_end.is_none() && !inc.rx.is_pending() {
                    // DONE only once the writer has stored every file.
                    if inc.writer.is_some() {
                        inc.held_end = Some(msg.to_vec());
                        inc.send_writer(WriterMsg::Barrier).await;
                        return;
                    }
                }
                // File bytes straight from the message into the batch (no
                // copy into an event).
                match inc.rx.handle_ref(msg) {
                    Ok(Some(d)) => {
                        inc.done += d.data.len() as u64;
                        inc.batch_data(d.entry, d.data).await;
                    }
                    Ok(None) => {}
                    Err(e) => {
                        if e.is_fatal() {
                            self.log_receive_error(carrier, e);
                        }
                    }
                }
            }
            self.drain_incoming(carrier).await;
        } else {
            if let Some(o) = self.outbound.get_mut(&carrier) {
                let _ = o.tx.handle(msg);
            }
            self.drain_outgoing(carrier);
        }
    }

    fn receiver_config(&self) -> ReceiverConfig {
        ReceiverConfig {
            max_total_size: self.cfg.max_receive_bytes,
            // The writer thread hashes as it writes (WriterMsg::Hash).
            caller_hashes: true,
            ..ReceiverConfig::default()
        }
    }

    fn log_decode(&self, what: &str) {
        if let Some(n) = self.limiter.allow(LogKind::AppDecode) {
            debug!(
                "peer={}: ignoring a {what}{}",
                LogSafe(&self.peer),
                suppressed(n)
            );
        }
    }

    fn log_receive_error(&self, carrier: Carrier, e: TransferError) {
        let name = self
            .inbound
            .get(&carrier)
            .map(|i| i.name.clone())
            .unwrap_or_default();
        if let Some(n) = self.limiter.allow(LogKind::ChunkOrder) {
            warn!(
                "transfer {name} from peer={}: {e}; aborted, partial files deleted{}",
                LogSafe(&self.peer),
                suppressed(n)
            );
        }
    }

    async fn new_incoming(&mut self, carrier: Carrier, msg: &[u8]) {
        let mut rx = Receiver::new(self.receiver_config());
        let res = rx.handle(msg);
        let peer = self.peer.clone();
        if !rx.is_pending() {
            // Malformed, or over a bound, or a bad name: the core denied it.
            while let Some(m) = rx.poll_transmit() {
                self.out.push_back((carrier, m));
            }
            if let Some(n) = self.limiter.allow(LogKind::NoInbox) {
                info!(
                    "refused a transfer from peer={peer}: {}{}",
                    res.err()
                        .map(|e| e.to_string())
                        .unwrap_or_else(|| "invalid offer".into()),
                    suppressed(n),
                    peer = LogSafe(&peer)
                );
            }
            return;
        }
        let entries = rx.offer().map(|e| e.to_vec()).unwrap_or_default();
        let name = summary(&entries);
        let total: u64 = entries.iter().map(|e| e.size()).sum();
        let files = entries.iter().filter(|e| !e.is_dir()).count();
        if self.cfg.inbox.is_none() {
            return self.refuse(carrier, rx, Reason::Declined, "no --inbox configured");
        }
        let Some(peer_id) = self.peer_id.clone() else {
            return self.refuse(carrier, rx, Reason::Declined, "peer not confirmed");
        };
        // Consent is the core's (dsoftbus::node::consent): the policy, the
        // pending table and the incoming slots, daemon-wide.
        let user_pinned = self
            .peers
            .lock()
            .known
            .pin(&peer_id)
            .is_some_and(|p| p.is_user());
        let payload = OfferRef {
            cmd: self.cmd.clone(),
            carrier,
            name: name.clone(),
            files,
            bytes: total,
        };
        let now = self.clock.now();
        let verdict = self
            .cfg
            .consent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .offer(&peer_id, user_pinned, payload, now);
        match verdict {
            Verdict::Accept(slot) => {
                let slot = SlotGuard::new(self.cfg.consent.clone(), slot);
                self.accept_incoming(carrier, rx, msg.to_vec(), slot).await;
            }
            Verdict::Pending(id) => {
                let ttl = self
                    .cfg
                    .consent
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .config()
                    .ask_ttl;
                if let Some(n) = self.limiter.allow(LogKind::OfferPending) {
                    info!(
                        "offer {id} from peer={peer}: {name} ({files} files, {total} bytes) waits for an answer: `dsoftbus accept {id}` or `dsoftbus deny {id}` (expires in {} s){}",
                        ttl.as_secs(),
                        suppressed(n), peer = LogSafe(&peer)
                    );
                }
                self.waiting.insert(
                    carrier,
                    Waiting {
                        rx,
                        id,
                        msg: msg.to_vec(),
                        since: StdInstant::now(),
                        ttl,
                    },
                );
            }
            Verdict::Deny(d) => {
                let why = d.as_str();
                self.board().record(Record::offer(&peer, &name, total, why));
                self.refuse(carrier, rx, d.reason(), why)
            }
        }
    }

    /// Forgets a pending offer (the peer cancelled it, or went away): out
    /// of the consent table, into the history.
    fn drop_waiting(&mut self, carrier: Carrier, why: &str) {
        let Some(w) = self.waiting.remove(&carrier) else {
            return;
        };
        self.cfg
            .consent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .deny(w.id);
        let name = w.rx.offer().map(summary).unwrap_or_default();
        let total =
            w.rx.offer()
                .map(|e| e.iter().map(|e| e.size()).sum())
                .unwrap_or(0);
        let mut b = self.board();
        b.answered(w.id.0, "withdrawn");
        b.record(Record::offer(&self.peer, &name, total, why));
    }

    fn board(&self) -> std::sync::MutexGuard<'_, Board> {
        self.cfg.board.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn refuse(&mut self, carrier: Carrier, mut rx: Receiver, reason: Reason, why: &str) {
        let _ = rx.deny(reason);
        while let Some(m) = rx.poll_transmit() {
            self.out.push_back((carrier, m));
        }
        let name = rx.offer().map(summary).unwrap_or_default();
        if let Some(n) = self.limiter.allow(LogKind::NoInbox) {
            info!(
                "refused a transfer of {name} from peer={}: {why}{}",
                LogSafe(&self.peer),
                suppressed(n)
            );
        }
    }

    /// The answer to an offer that waited (`dsoftbus accept` / `deny`, or
    /// expiry).
    pub async fn on_answer(&mut self, carrier: Carrier, answer: Answer) {
        let Some(w) = self.waiting.remove(&carrier) else {
            return; // gone meanwhile (cancelled by the peer): a slot is released
        };
        match answer {
            Answer::Accept(slot) => self.accept_incoming(carrier, w.rx, w.msg, slot).await,
            Answer::Deny(d) => {
                let name = w.rx.offer().map(summary).unwrap_or_default();
                let total =
                    w.rx.offer()
                        .map(|e| e.iter().map(|e| e.size()).sum())
                        .unwrap_or(0);
                let peer = self.peer.clone();
                self.board()
                    .record(Record::offer(&peer, &name, total, d.as_str()));
                self.refuse(carrier, w.rx, d.reason(), d.as_str());
            }
        }
    }

    /// Accepts an offer (with its slot): resumes what an interrupted
    /// transfer left, starts the writer, sends ACCEPT.
    async fn accept_incoming(
        &mut self,
        carrier: Carrier,
        mut rx: Receiver,
        msg: Vec<u8>,
        slot: SlotGuard,
    ) {
        let msg = &msg[..];
        let peer = self.peer.clone();
        let entries = rx.offer().map(|e| e.to_vec()).unwrap_or_default();
        let name = summary(&entries);
        let total: u64 = entries.iter().map(|e| e.size()).sum();
        let Some(inbox) = self.cfg.inbox.clone() else {
            return self.refuse(carrier, rx, Reason::Declined, "no --inbox configured");
        };
        // The same peer offering the same entries again resumes what an
        // interrupted transfer left (RESUME_TTL, RESUME_MAX_BYTES).
        let held = self
            .cfg
            .resume
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take(&peer, &entries);
        let mut resumed = None;
        let mut hashers = HashMap::new();
        let mut held = match held {
            Some(mut h) => {
                let fed = tokio::task::spawn_blocking(move || {
                    let mut hashers = HashMap::new();
                    let f = feed_prefix(&mut rx, &mut h, &mut hashers);
                    (rx, h, f, hashers)
                })
                .await;
                match fed {
                    Ok((r, h, Some(n), hs)) => {
                        rx = r;
                        resumed = Some(n);
                        hashers = hs;
                        Some(h)
                    }
                    _ => {
                        // Start over without the resume.
                        rx = Receiver::new(self.receiver_config());
                        let _ = rx.handle(msg);
                        None
                    }
                }
            }
            None => None,
        };
        let job = WriteJob::new(carrier, &inbox, entries, rx.version()).and_then(|j| {
            match held.as_mut() {
                Some(h) => j.resume_from(h),
                None => Ok(j),
            }
        });
        drop(held);
        let job = match job {
            Ok(j) => j
                .hold_to(self.cfg.resume.clone(), peer.clone())
                .with_hashes(hashers),
            Err(e) => {
                if let Some(n) = self.limiter.allow(LogKind::InboxError) {
                    warn!(
                        "cannot store files from peer={peer} in {}: {e}{}",
                        inbox.display(),
                        suppressed(n),
                        peer = LogSafe(&peer)
                    );
                }
                return self.refuse(carrier, rx, Reason::Io, &format!("inbox: {e}"));
            }
        };
        let (wtx, wrx) = mpsc::channel(WRITER_QUEUE);
        let buffers = job.buffers();
        let report = self.report_tx.clone();
        tokio::task::spawn_blocking(move || job.run(wrx, report));
        if let Some(n) = self.limiter.allow(LogKind::Receiving) {
            let resumed = match resumed {
                Some(b) => format!(", resuming: {b} bytes held"),
                None => String::new(),
            };
            info!(
                "receiving {name} ({total} bytes) from peer={peer} on {}{resumed}{}",
                carrier.describe(),
                suppressed(n),
                peer = LogSafe(&peer)
            );
        }
        let _ = rx.accept();
        let key = self
            .board()
            .start(true, &peer, &name, total, resumed.unwrap_or(0));
        self.inbound.insert(
            carrier,
            Incoming {
                rx,
                writer: Some(wtx),
                held_end: None,
                batch: None,
                buffers,
                barrier_stale: false,
                last: StdInstant::now(),
                name,
                total,
                key,
                done: resumed.unwrap_or(0),
                _slot: slot,
            },
        );
        self.drain_incoming(carrier).await;
    }

    /// Moves an incoming transfer's messages out and its events to its
    /// writer; removes it once it has ended.
    async fn drain_incoming(&mut self, carrier: Carrier) {
        let Some(inc) = self.inbound.get_mut(&carrier) else {
            return;
        };
        let mut finished = None;
        loop {
            while let Some(m) = inc.rx.poll_transmit() {
                self.out.push_back((carrier, m));
            }
            let Some(ev) = inc.rx.poll_event() else { break };
            let w = match ev {
                ReceiverEvent::Offered => None,
                ReceiverEvent::Dir { entry } => Some(WriterMsg::Dir(entry)),
                ReceiverEvent::Data { entry, data, .. } => {
                    inc.done += data.len() as u64;
                    inc.batch_data(entry, &data).await;
                    None
                }
                ReceiverEvent::Complete { entry } => Some(WriterMsg::Hash(entry)),
                ReceiverEvent::FileVerified { entry } => Some(WriterMsg::Verified(entry)),
                ReceiverEvent::Finished(o) => {
                    finished = Some(o);
                    None
                }
            };
            if let Some(m) = w {
                inc.send_writer(m).await;
            }
        }
        let Some(o) = finished else {
            let (key, done) = (inc.key, inc.done);
            self.board().progress(key, done);
            return;
        };
        let Some(inc) = self.inbound.remove(&carrier) else {
            return;
        };
        self.ended.push(carrier);
        let result = outcome_text(&o);
        self.board().finish(inc.key, o == Outcome::Done, result);
        let peer = &self.peer;
        match o {
            Outcome::Done => {
                if let Some(n) = self.limiter.allow(LogKind::Received) {
                    info!(
                        "received {} ({} bytes) from peer={peer}: every file {}-verified and stored{}",
                        inc.name,
                        inc.total,
                        inc.rx.version().hash_name(),
                        suppressed(n), peer = LogSafe(peer)
                    );
                }
            }
            Outcome::Cancelled { by: Side::Peer, .. } => {
                bump(&self.counters.transfers_failed);
                if let Some(n) = self.limiter.allow(LogKind::PeerCancel) {
                    info!(
                        "transfer {} cancelled by peer={peer}; partial files deleted{}",
                        inc.name,
                        suppressed(n),
                        peer = LogSafe(peer)
                    );
                }
            }
            o => {
                bump(&self.counters.transfers_failed);
                if let Some(n) = self.limiter.allow(LogKind::ReceiveFailed) {
                    warn!(
                        "receive of {} from peer={peer} failed: {o:?}; partial files deleted{}",
                        inc.name,
                        suppressed(n),
                        peer = LogSafe(peer)
                    );
                }
            }
        }
        // Dropping the writer's channel ends it; what it did not store is
        // deleted.
    }

    /// A report from a writer thread.
    pub async fn on_report(&mut self, r: Report) {
        match r {
            Report::Stored {
                carrier,
                path,
                bytes,
            } => {
                bump(&self.counters.files_received);
                if let Some(inc) = self.inbound.get_mut(&carrier) {
                    inc.last = StdInstant::now();
                }
                debug!(
                    "stored {} ({bytes} bytes) from peer={}",
                    path.display(),
                    LogSafe(&self.peer)
                );
            }
            Report::Hashed {
                carrier,
                entry,
                digest,
            } => {
                if let Some(inc) = self.inbound.get_mut(&carrier) {
                    if let Err(e) = inc.rx.file_hashed(entry, digest) {
                        if e.is_fatal() {
                            self.log_receive_error(carrier, e);
                        }
                    }
                }
                self.drain_incoming(carrier).await;
            }
            Report::Flushed(carrier) => {
                if let Some(inc) = self.inbound.get_mut(&carrier) {
                    if inc.barrier_stale && inc.held_end.is_some() {
                        // Files were verified (and sent to be stored)
                        // after the barrier: wait for those too.
                        inc.send_writer(WriterMsg::Barrier).await;
                        return;
                    }
                    if let Some(end) = inc.held_end.take() {
                        if let Err(e) = inc.rx.handle(&end) {
                            if e.is_fatal() {
                                self.log_receive_error(carrier, e);
                            }
                        }
                    }
                }
                self.drain_incoming(carrier).await;
            }
            Report::Failed { carrier, error } => {
                if let Some(inc) = self.inbound.get_mut(&carrier) {
                    inc.writer = None;
                    inc.rx.cancel(Reason::Io);
                    if let Some(n) = self.limiter.allow(LogKind::InboxError) {
                        warn!(
                            "receive of {} from peer={}: {error}; cancelled{}",
                            inc.name,
                            LogSafe(&self.peer),
                            suppressed(n)
                        );
                    }
                }
                self.drain_incoming(carrier).await;
            }
        }
    }

    fn drain_outgoing(&mut self, carrier: Carrier) {
        let Some(o) = self.outbound.get_mut(&carrier) else {
            return;
        };
        let mut finished = None;
        loop {
            while let Some(m) = o.tx.poll_transmit() {
                self.out.push_back((carrier, m));
            }
            let Some(ev) = o.tx.poll_event() else { break };
            match ev {
                SenderEvent::Accepted { offsets } => {
                    let resumed =
                        o.tx.entries()
                            .iter()
                            .zip(&offsets)
                            .map(|(e, off)| (*off).min(e.size()))
                            .sum();
                    o.progress.send_modify(|p| {
                        p.accepted = true;
                        p.resumed = resumed;
                    });
                    let (ptx, prx) = mpsc::channel(READ_AHEAD);
                    let files = std::mem::take(&mut o.files);
                    let wake = self.wake.clone();
                    let buffers = o.buffers.clone();
                    tokio::task::spawn_blocking(move || {
                        read_files(files, offsets, ptx, wake, buffers)
                    });
                    o.pieces = Some(prx);
                }
                SenderEvent::FileSent { .. } => {}
                SenderEvent::Finished(out) => finished = Some(out),
            }
        }
        let (sent, acked) = o.tx.progress();
        let all_sent = o.tx.poll_need().is_none() && o.pieces.is_some();
        let (key, resumed) = (o.key, o.progress.borrow().resumed);
        if let Some(a) = self
            .cfg
            .board
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .active
            .get_mut(&key)
        {
            a.resumed = resumed;
            a.done = resumed + acked;
        }
        o.progress.send_if_modified(|p| {
            let changed = p.sent != sent || p.acked != acked || (all_sent && !p.all_sent);
            p.sent = sent;
            p.acked = acked;
            p.all_sent |= all_sent && p.accepted;
            changed
        });
        if let Some(out) = finished {
            if let Some(mut o) = self.outbound.remove(&carrier) {
                let text = match &o.detail {
                    Some(d) => d.clone(),
                    None => outcome_text(&out),
                };
                self.board().finish(o.key, out == Outcome::Done, text);
                if out == Outcome::Done {
                    bump(&self.counters.files_sent);
                } else {
                    bump(&self.counters.transfers_failed);
                }
                if let Some(d) = o.done.take() {
                    let _ = d.send((out, o.detail.take()));
                }
            }
            self.ended.push(carrier);
        }
    }

    /// Hands the next file bytes of the transfer on `carrier` to its sender
    /// (the caller checked the carrier has room), as a message queued on
    /// [`Engine::out`] or, with [`Sink::Direct`], written where the caller
    /// says. False when nothing was ready (waiting for the window, the
    /// reader or, for a direct sink, room for the whole chunk).
    pub fn pump(&mut self, carrier: Carrier, sink: Sink<'_>) -> bool {
        let Some(o) = self.outbound.get_mut(&carrier) else {
            return false;
        };
        let Some(need) = o.tx.poll_need() else {
            return false;
        };
        let (piece, start) = match o.held.take() {
            Some(h) => h,
            None => {
                let Some(rx) = o.pieces.as_mut() else {
                    return false;
                };
                match rx.try_recv() {
                    Ok(Ok(p)) => (p, 0),
                    Ok(Err(e)) => {
                        o.detail = Some(e);
                        o.tx.cancel(Reason::Io);
                        self.drain_outgoing(carrier);
                        return true;
                    }
                    Err(mpsc::error::TryRecvError::Empty) => return false,
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        o.detail = Some("the file reader stopped".into());
                        o.tx.cancel(Reason::Io);
                        self.drain_outgoing(carrier);
                        return true;
                    }
                }
            }
        };
        let offset = piece.offset + start as u64;
        if piece.entry != need.entry || offset != need.offset {
            o.detail = Some("file reader out of step".into());
            o.tx.cancel(Reason::Io);
            self.drain_outgoing(carrier);
            return true;
        }
        let n = need.len.min(piece.data.len() - start);
        let data = &piece.data[start..start + n];
        let pushed = match sink {
            Sink::Direct { room, .. } if n > room => {
                o.held = Some((piece, start));
                return false;
            }
            Sink::Direct { write, .. } => match o.tx.push_data_header(need.entry, need.offset, n) {
                Ok(h) => {
                    write(&h, data);
                    Ok(())
                }
                // Messages are queued (they go first): this one joins them.
                Err(_) => o.tx.push_data(need.entry, need.offset, data),
            },
            Sink::Queue => o.tx.push_data(need.entry, need.offset, data),
        };
        if pushed.is_err() {
            o.detail = Some("sender refused the data".into());
            o.tx.cancel(Reason::Protocol);
        } else if start + n < piece.data.len() {
            o.held = Some((piece, start + n));
        } else {
            o.buffers.give(piece.data);
        }
        self.drain_outgoing(carrier);
        true
    }

    /// The carrier of a transfer went away (its stream was reset or closed
    /// early): the transfer ends without further messages.
    pub async fn carrier_gone(&mut self, carrier: Carrier) {
        if self.waiting.contains_key(&carrier) {
            self.drop_waiting(carrier, "its stream closed");
        }
        if let Some(mut inc) = self.inbound.remove(&carrier) {
            self.board().finish(
                inc.key,
                false,
                "interrupted: its stream closed (partial files kept for a resume)".into(),
            );
            bump(&self.counters.transfers_failed);
            inc.send_writer(WriterMsg::Hold).await;
            if let Some(n) = self.limiter.allow(LogKind::TransfersAborted) {
                info!(
                    "transfer {} from peer={}: its stream closed early; partial files kept {} min for a resume{}",
                    inc.name,
                    LogSafe(&self.peer),
                    RESUME_TTL.as_secs() / 60,
                    suppressed(n)
                );
            }
        }
        if let Some(mut o) = self.outbound.remove(&carrier) {
            bump(&self.counters.transfers_failed);
            self.board()
                .finish(o.key, false, "the receiver closed the stream".into());
            if let Some(d) = o.done.take() {
                let detail = Some("the receiver closed the transfer's stream".to_string());
                let _ = d.send((
                    Outcome::Cancelled {
                        by: Side::Peer,
                        reason: Reason::Protocol,
                        entry: None,
                    },
                    detail,
                ));
            }
        }
    }

    /// Periodic work: hands batched bytes to the writers (so a paused
    /// sender's bytes reach the partial file within a tick), cancels
    /// accepted incoming transfers idle for the configured time, and
    /// outgoing ones whose control client went away.
    pub async fn tick(&mut self) {
        for inc in self.inbound.values_mut() {
            inc.flush_batch().await;
        }
        self.cfg
            .resume
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .expire();
        // The daemon's expiry task answers expired offers; should its
        // answer be lost, an offer still waiting well past its TTL is
        // denied here.
        let late: Vec<Carrier> = self
            .waiting
            .iter()
            .filter(|(_, w)| w.since.elapsed() > w.ttl + Duration::from_secs(10))
            .map(|(c, _)| *c)
            .collect();
        for c in late {
            if let Some(w) = self.waiting.get(&c) {
                let id = w.id;
                self.cfg
                    .consent
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .deny(id);
            }
            self.on_answer(c, Answer::Deny(dsoftbus::node::Deny::Expired))
                .await;
        }
        let idle = self.cfg.idle;
        let stale: Vec<Carrier> = self
            .inbound
            .iter()
            .filter(|(_, i)| i.held_end.is_none() && i.last.elapsed() >= idle)
            .map(|(c, _)| *c)
            .collect();
        for c in stale {
            if let Some(inc) = self.inbound.get_mut(&c) {
                inc.rx.cancel(Reason::Expired);
                if let Some(n) = self.limiter.allow(LogKind::TransferIdle) {
                    warn!(
                        "transfer {} from peer={}: no data for {} s; cancelled, partial files deleted{}",
                        inc.name,
                        LogSafe(&self.peer),
                        idle.as_secs(),
                        suppressed(n)
                    );
                }
            }
            self.drain_incoming(c).await;
        }
        let gone: Vec<Carrier> = self
            .outbound
            .iter()
            .filter(|(_, o)| o.done.as_ref().is_none_or(|d| d.is_closed()))
            .map(|(c, _)| *c)
            .collect();
        for c in gone {
            if let Some(o) = self.outbound.get_mut(&c) {
                o.tx.cancel(Reason::Declined);
            }
            self.drain_outgoing(c);
        }
    }

    /// The session is gone: incoming transfers keep their partial files in
    /// the resume store; outgoing ones learn it when the engine is dropped.
    pub async fn session_lost(&mut self) {
        let waiting: Vec<Carrier> = self.waiting.keys().copied().collect();
        for c in waiting {
            self.drop_waiting(c, "the session ended");
        }
        for c in self.outgoing() {
            if let Some(o) = self.outbound.get(&c) {
                let key = o.key;
                self.board().finish(key, false, "the session ended".into());
            }
        }
        if self.inbound.is_empty() {
            return;
        }
        for inc in self.inbound.values_mut() {
            inc.send_writer(WriterMsg::Hold).await;
            self.cfg
                .board
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .finish(
                    inc.key,
                    false,
                    "interrupted: the session ended (partial files kept for a resume)".into(),
                );
        }
        if let Some(n) = self.limiter.allow(LogKind::TransfersAborted) {
            info!(
                "{} incoming transfer(s) from peer={} interrupted; partial files kept {} min for a resume (send again){}",
                self.inbound.len(),
                LogSafe(&self.peer),
                RESUME_TTL.as_secs() / 60,
                suppressed(n)
            );
        }
    }
}
