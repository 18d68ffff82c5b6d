//! The control socket protocol: one JSON object per line, each way.
//!
//! A client sends one [`Request`] and reads [`Response`] lines until a final
//! one (`Accepted`, `Progress` and `Warning` are not final; the others are). The socket is a unix stream
//! socket with mode 0600 inside the state directory (mode 0700), so only its
//! owner (and root) can talk to the daemon.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::exit::{Failure, NO_DAEMON};

/// Longest request line the daemon reads.
pub const MAX_LINE: usize = 64 * 1024;
/// A control client must send each request line within this time after
/// connecting (or after its previous answer); an idle one is disconnected so
/// idle clients cannot hold every control slot.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// A control client must take each answer line within this time.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    Status,
    Peers,
    Ping {
        device: String,
        timeout_ms: u64,
    },
    /// Send files (absolute paths) to a device.
    Send {
        device: String,
        paths: Vec<PathBuf>,
    },
    /// `key` None: the key the daemon's table holds (pending devices).
    Trust {
        device: String,
        #[serde(default)]
        key: Option<String>,
        /// Replace a pin to another key.
        #[serde(default)]
        replace: bool,
    },
    /// `device` and/or `devices`; `auto`: every automatic pin.
    /// A remote service call (`dsoftbus call`); payload in hex.
    Call {
        device: String,
        service: String,
        payload: String,
        timeout_ms: u64,
    },
    /// Expose a local Unix-socket service while this connection is open.
    Serve {
        service: String,
        unix: PathBuf,
    },
    /// Pending offers, transfers in flight, recent ones.
    Transfers,
    /// Answer a pending offer (`dsoftbus accept <id>` / `deny <id>`).
    Accept {
        id: u32,
    },
    Deny {
        id: u32,
    },
    Forget {
        #[serde(default)]
        device: Option<String>,
        #[serde(default)]
        devices: Vec<String>,
        #[serde(default)]
        auto: bool,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeerInfo {
    pub device: String,
    /// Session address (announce source IP : announced port), if known.
    pub addr: Option<String>,
    /// Full public key, hex.
    pub key: String,
    pub fingerprint: String,
    pub pinned: bool,
    pub session: bool,
    /// Milliseconds since the last accepted announce (None: not in the table).
    pub last_seen_ms: Option<u64>,
    pub services: Vec<String>,
    /// `user` (trusted) or `auto` (pinned on first sight), if pinned.
    #[serde(default)]
    pub pin: Option<String>,
    /// `session`, `ok`, `pending`, or why it is refused (key changed, ...).
    #[serde(default)]
    pub state: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IfaceInfo {
    pub name: String,
    pub addr: String,
    pub delivery: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusInfo {
    pub device: String,
    pub key: String,
    pub fingerprint: String,
    pub port: u16,
    pub discovery_port: u16,
    pub discovery: String,
    pub interfaces: Vec<IfaceInfo>,
    pub peers: usize,
    pub sessions: usize,
    pub known: usize,
    pub require_known: bool,
    /// `tofu`, `known` or `pending`.
    #[serde(default)]
    pub trust_mode: String,
    pub inbox: Option<String>,
    /// The accept policy (`ask`, `known`, `any`, `none`).
    #[serde(default)]
    pub accept: String,
    pub uptime_s: u64,
    pub counters: Vec<(String, u64)>,
}

/// An offer waiting for `dsoftbus accept` / `deny`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PendingInfo {
    pub id: u32,
    pub peer: String,
    /// The first path (and how many more).
    pub name: String,
    pub files: usize,
    pub bytes: u64,
    pub age_s: u64,
    pub expires_in_s: u64,
}

/// A transfer in flight.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ActiveInfo {
    /// `in` (receiving) or `out` (sending).
    pub direction: String,
    pub peer: String,
    pub name: String,
    /// Bytes done (resumed bytes included) and in all.
    pub done: u64,
    pub total: u64,
    pub resumed: u64,
    /// Bytes per second since it started (resumed bytes not counted).
    pub rate: u64,
    pub secs: f64,
}

/// A finished transfer, or a refused offer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DoneInfo {
    pub direction: String,
    pub peer: String,
    pub name: String,
    pub done: u64,
    pub total: u64,
    pub ok: bool,
    pub result: String,
    pub secs: f64,
    pub ago_s: u64,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Response {
    /// `dsoftbus transfers`.
    Transfers {
        /// The accept policy in force.
        policy: String,
        pending: Vec<PendingInfo>,
        active: Vec<ActiveInfo>,
        /// Most recent last; at most `transfer::HISTORY`.
        recent: Vec<DoneInfo>,
    },
    Status(StatusInfo),
    Peers {
        peers: Vec<PeerInfo>,
    },
    Pong {
        device: String,
        rtt_us: u64,
    },
    /// Send accepted by the receiver; `total` bytes will follow.
    Accepted {
        total: u64,
        name: String,
    },
    /// Bytes the receiver has written so far (not final).
    Progress {
        acked: u64,
        total: u64,
    },
    /// Every file verified and stored by the receiver.
    Sent {
        /// Bytes of all files.
        bytes: u64,
        secs: f64,
        /// SHA-256 of the file when one file was sent in transfer v1, else
        /// empty (kept for clients of v1; see `hash` and `digest`).
        sha256: String,
        /// The hash that named the files: `sha256` (transfer v1) or
        /// `blake3` (v2, to a peer that announced `transfer/2`).
        #[serde(default)]
        hash: String,
        /// That hash of the file when one file was sent, else empty.
        #[serde(default)]
        digest: String,
        message: String,
        /// Files sent (directories not counted).
        #[serde(default)]
        files: usize,
        /// Data bytes that went over the wire (the rest was resumed).
        #[serde(default)]
        sent: u64,
        /// Bytes the receiver already held from an interrupted send.
        #[serde(default)]
        resumed: u64,
    },
    /// Something the client should show (a skipped file); not final.
    Warning {
        message: String,
    },
    Ok {
        message: String,
    },
    /// The answer of a remote call (hex).
    Reply {
        payload: String,
    },
    Error {
        code: u8,
        message: String,
    },
}

impl Response {
    pub fn error(code: u8, message: impl Into<String>) -> Self {
        Response::Error {
            code,
            message: message.into(),
        }
    }
}

/// Writes one response line to a control client (daemon side), within
/// [`WRITE_TIMEOUT`].
pub async fn write_resp<W: tokio::io::AsyncWrite + Unpin>(
    w: &mut W,
    r: &Response,
) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(r).map_err(std::io::Error::other)?;
    line.push(b'\n');
    // A control client that stops reading is dropped instead of holding
    // its slot (and a transfer) forever.
    tokio::time::timeout(WRITE_TIMEOUT, tokio::io::AsyncWriteExt::write_all(w, &line))
        .await
        .map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::TimedOut, "control client not reading")
        })?
}

/// Tells a client over the limit why it is refused (best effort, never
/// blocks the accept loop).
pub fn refuse_busy(stream: tokio::net::UnixStream, message: String) {
    tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        let r = Response::error(crate::exit::FAILURE, message);
        if let Ok(mut line) = serde_json::to_vec(&r) {
            line.push(b'\n');
            let mut stream = stream;
            let _ = tokio::time::timeout(Duration::from_secs(1), async {
                stream.write_all(&line).await?;
                // Take the client's request before closing, so its write
                // does not fail with EPIPE before it reads our answer.
                let mut sink = [0u8; 1024];
                use tokio::io::AsyncReadExt;
                let _ = stream.read(&mut sink).await?;
                stream.shutdown().await
            })
            .await;
        }
    });
}

/// A blocking client connection.
pub struct Client {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Client {
    /// Connects to the daemon's socket; exit 4 when nobody answers.
    pub fn connect(path: &Path) -> Result<Client, Failure> {
        let s = UnixStream::connect(path).map_err(|e| {
            Failure::new(
                NO_DAEMON,
                format!(
                    "no daemon on {} ({e}); start one with `dsoftbus daemon`",
                    path.display()
                ),
            )
        })?;
        s.set_write_timeout(Some(Duration::from_secs(10)))?;
        Ok(Client {
            reader: BufReader::new(s.try_clone()?),
            writer: s,
        })
    }

    /// Sends a request.
    pub fn send(&mut self, req: &Request) -> Result<(), Failure> {
        let mut line = serde_json::to_vec(req).map_err(anyhow::Error::from)?;
        line.push(b'\n');
        self.writer.write_all(&line)?;
        Ok(())
    }

    /// True once a response can be read (or the daemon closed), false if
    /// nothing came within `timeout`. Consumes nothing.
    pub fn readable(&mut self, timeout: Duration) -> Result<bool, Failure> {
        if !self.reader.buffer().is_empty() {
            return Ok(true);
        }
        self.reader.get_ref().set_read_timeout(Some(timeout))?;
        let mut b = [std::mem::MaybeUninit::<u8>::uninit(); 1];
        match socket2::SockRef::from(self.reader.get_ref()).peek(&mut b) {
            Ok(_) => Ok(true),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                Ok(false)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Reads the next response; `timeout` bounds the wait.
    pub fn recv(&mut self, timeout: Option<Duration>) -> Result<Response, Failure> {
        self.reader.get_ref().set_read_timeout(timeout)?;
        let mut line = String::new();
        let n = match self.reader.read_line(&mut line) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(Failure::new(
                    crate::exit::TIMEOUT,
                    "the daemon did not answer in time",
                ))
            }
            Err(e) => return Err(e.into()),
        };
        if n == 0 {
            return Err(Failure::new(
                crate::exit::FAILURE,
                "the daemon closed the control connection",
            ));
        }
        serde_json::from_str(&line)
            .map_err(|e| Failure::new(crate::exit::FAILURE, format!("bad daemon reply: {e}")))
    }

    /// One request, one final response.
    pub fn call(&mut self, req: &Request, timeout: Duration) -> Result<Response, Failure> {
        if let Err(e) = self.send(req) {
            // The daemon may have answered before reading (e.g. "busy").
            return self.recv(Some(Duration::from_secs(1))).map_err(|_| e);
        }
        self.recv(Some(timeout))
    }
}
