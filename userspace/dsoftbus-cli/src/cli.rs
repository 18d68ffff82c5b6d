//! Command line (clap derive). Every daemon setting can also come from the
//! environment (`DSOFTBUS_*`) or the TOML config file; precedence is
//! flag > environment > file > built-in default.

use std::net::{IpAddr, SocketAddrV4};
use std::path::PathBuf;

use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};
use serde::{Deserialize, Serialize};

const AFTER_HELP: &str = "\
Files:
  <state-dir>/static.key         this node's Noise static secret (created on first start, mode 0600)
  <state-dir>/known_peers.toml   pinned device id -> public key (trust on first use)
  <state-dir>/control.sock       the daemon's control socket (mode 0600)
  $XDG_CONFIG_HOME/dsoftbus/config.toml   optional settings (see docs/dsoftbus-cli.md)
  The state dir, key and known-peers file must be owned by you (or root) and
  not writable by group/others, else exit 3 (like ssh's StrictModes).

Exit status:
  0 ok   1 failure   2 usage   3 bad config/state files   4 no daemon
  5 unknown device or no session   6 timeout   7 transfer failed   8 port or socket in use

Quick start:
  dsoftbus daemon --inbox ~/Downloads/dsoftbus &
  dsoftbus peers
  dsoftbus ping <device>
  dsoftbus send <device> ./file.bin ./folder";

/// Run a Nexus soft-bus node on Linux and talk to its peers.
///
/// `dsoftbus daemon` announces this machine on the local network (UDP 37020,
/// multicast 239.42.0.1 with broadcast fallback), finds other nodes (Linux or
/// Nexus), and holds a mutually authenticated Noise XK session with each.
/// The other commands talk to the running daemon through its control socket.
#[derive(Parser, Debug)]
#[command(name = "dsoftbus", version, after_help = AFTER_HELP, max_term_width = 100)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalOpts,
    #[command(subcommand)]
    pub cmd: Command,
}

/// Options every command understands.
#[derive(Args, Debug, Clone)]
pub struct GlobalOpts {
    /// State directory (key, known peers, control socket)
    /// [default: $XDG_STATE_HOME/dsoftbus or ~/.local/state/dsoftbus]
    #[arg(long, global = true, env = "DSOFTBUS_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// Config file (TOML) [default: $XDG_CONFIG_HOME/dsoftbus/config.toml, if present]
    #[arg(long, global = true, env = "DSOFTBUS_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Control socket path [default: <state-dir>/control.sock]
    #[arg(
        long,
        global = true,
        env = "DSOFTBUS_CONTROL_SOCKET",
        value_name = "PATH"
    )]
    pub control_socket: Option<PathBuf>,

    /// More log output: -v debug, -vv trace. Filter precedence: DSOFTBUS_LOG,
    /// then -v, then RUST_LOG, then the config file's `log`
    #[arg(short, long, global = true, action = ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a node in the foreground: discovery, sessions, control socket
    Daemon(DaemonArgs),
    /// List peers: device id, address, key fingerprint, pinned?, session?, last seen
    Peers {
        /// Machine-readable output (one JSON object)
        #[arg(long)]
        json: bool,
    },
    /// Measure round-trip time to a peer over its authenticated session
    Ping {
        /// Device id of the peer
        device: String,
        /// Number of pings (at least 1; `-c 0` is a usage error)
        #[arg(short = 'c', long, default_value_t = 3, value_name = "N",
              value_parser = clap::value_parser!(u32).range(1..))]
        count: u32,
        /// Seconds between pings
        #[arg(short = 'i', long, default_value_t = 0.5, value_name = "SECS")]
        interval: f64,
        /// Seconds to wait for each pong
        #[arg(short = 'W', long, default_value_t = 5.0, value_name = "SECS")]
        timeout: f64,
        /// Machine-readable output (one JSON object at the end)
        #[arg(long)]
        json: bool,
    },
    /// Send files and folders to a peer; its daemon stores them in its --inbox
    ///
    /// Folders are sent with everything below them (symbolic links are
    /// skipped, never followed). Sending the same files again after an
    /// interrupted send resumes it.
    Send {
        /// Device id of the receiver
        device: String,
        /// Files and folders to send
        #[arg(required = true, num_args = 1..)]
        paths: Vec<PathBuf>,
        /// No progress bar (also off when stderr is not a terminal)
        #[arg(long)]
        no_progress: bool,
        /// Machine-readable output (one JSON object at the end)
        #[arg(long)]
        json: bool,
    },
    /// Pin a device id to a static public key (64 hex digits)
    Trust {
        /// Device id to pin
        device: String,
        /// Its static public key, as printed by `dsoftbus id` on that machine
        /// [default: the key the running daemon heard announced (pending devices)]
        key: Option<String>,
        /// Replace a pin to a different key (the device's key changed)
        #[arg(long)]
        replace: bool,
    },
    /// Remove pins; sessions are closed and devices are learned anew
    Forget {
        /// Device ids to forget
        devices: Vec<String>,
        /// Also forget every automatic (first-sight) pin
        #[arg(long)]
        auto: bool,
    },
    /// Call SERVICE on DEVICE with PAYLOAD (the argument's bytes; none:
    /// empty) and print the answer; the peer's remote ACL decides
    Call {
        device: String,
        service: String,
        payload: Option<String>,
        /// Give up after SECS
        #[arg(short = 'W', long, default_value_t = 5.0, value_name = "SECS")]
        timeout: f64,
        /// Machine-readable output (one JSON object: device, service, bytes,
        /// answer as text if it is UTF-8 else null, answer_hex)
        #[arg(long)]
        json: bool,
    },
    /// Expose the local service NAME (a Unix stream socket: request bytes
    /// in, then EOF; answer bytes out) to peers the daemon's remote ACL
    /// allows, until this command exits
    Serve {
        name: String,
        /// The service's Unix socket
        #[arg(long, value_name = "PATH")]
        unix: PathBuf,
    },
    /// Print this node's device id and public key (creates the key if needed)
    Id {
        /// Machine-readable output (one JSON object)
        #[arg(long)]
        json: bool,
    },
    /// List offers waiting for an answer, transfers in flight, recent ones
    Transfers {
        /// Machine-readable output (one JSON object)
        #[arg(long)]
        json: bool,
    },
    /// Accept a pending offer (its id from `dsoftbus transfers`)
    Accept {
        /// Offer id
        id: u32,
    },
    /// Deny a pending offer (its id from `dsoftbus transfers`)
    Deny {
        /// Offer id
        id: u32,
    },
    /// Show the daemon's status: identity, interfaces, counters
    Status {
        /// Machine-readable output (one JSON object)
        #[arg(long)]
        json: bool,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell)
    Completions {
        /// The shell
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff; e.g. `dsoftbus man | man -l -`)
    Man,
}

/// `--trust-mode`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrustModeArg {
    /// Trust on first use: the first session pins the key
    Tofu,
    /// Only pinned devices (as --require-known)
    Known,
    /// New devices are listed as pending until `dsoftbus trust <device>`
    Pending,
}

impl From<TrustModeArg> for dsoftbus::node::TrustMode {
    fn from(m: TrustModeArg) -> Self {
        match m {
            TrustModeArg::Tofu => dsoftbus::node::TrustMode::Tofu,
            TrustModeArg::Known => dsoftbus::node::TrustMode::Known,
            TrustModeArg::Pending => dsoftbus::node::TrustMode::Pending,
        }
    }
}

/// `--accept`: who may send this node files (`dsoftbus::node::AcceptPolicy`).
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AcceptArg {
    /// Peers you pinned with `dsoftbus trust` are accepted; every other
    /// offer waits for `dsoftbus accept <id>` / `dsoftbus deny <id>`
    Ask,
    /// Peers you pinned with `dsoftbus trust` are accepted; others denied
    Known,
    /// Every authenticated peer is accepted
    Any,
    /// Every offer is denied
    None,
}

impl From<AcceptArg> for dsoftbus::node::AcceptPolicy {
    fn from(a: AcceptArg) -> Self {
        use dsoftbus::node::AcceptPolicy;
        match a {
            AcceptArg::Ask => AcceptPolicy::Ask,
            AcceptArg::Known => AcceptPolicy::Known,
            AcceptArg::Any => AcceptPolicy::Any,
            AcceptArg::None => AcceptPolicy::None,
        }
    }
}

/// How announces leave the machine.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DiscoveryMode {
    /// Multicast to 239.42.0.1; broadcast on interfaces where multicast fails
    #[default]
    Auto,
    /// Multicast only
    Multicast,
    /// Subnet broadcast only
    Broadcast,
    /// Multicast and broadcast on every interface
    Both,
    /// Only the --announce-to addresses (no interface scan)
    Unicast,
}

impl DiscoveryMode {
    pub fn name(self) -> &'static str {
        match self {
            DiscoveryMode::Auto => "auto",
            DiscoveryMode::Multicast => "multicast",
            DiscoveryMode::Broadcast => "broadcast",
            DiscoveryMode::Both => "both",
            DiscoveryMode::Unicast => "unicast",
        }
    }
}

/// `dsoftbus daemon` settings. Unset values fall back to the config file,
/// then to the defaults shown.
#[derive(Args, Debug, Clone, Default)]
pub struct DaemonArgs {
    /// Device id announced to peers (1..=64 bytes UTF-8) [default: the hostname]
    #[arg(long, env = "DSOFTBUS_DEVICE_ID", value_name = "ID")]
    pub device_id: Option<String>,

    /// Session TCP port to listen on (0: any free port) [default: 34567]
    #[arg(short, long, env = "DSOFTBUS_PORT", value_name = "PORT")]
    pub port: Option<u16>,

    /// Address the session listener binds [default: 0.0.0.0]
    #[arg(long, env = "DSOFTBUS_LISTEN", value_name = "IP")]
    pub listen: Option<IpAddr>,

    /// Interfaces to announce on, comma-separated or repeated
    /// [default: all up, non-loopback interfaces with IPv4]
    #[arg(
        short,
        long = "interface",
        env = "DSOFTBUS_INTERFACES",
        value_delimiter = ',',
        value_name = "IFACE"
    )]
    pub interfaces: Vec<String>,

    /// How announces are sent [default: auto]
    #[arg(long, env = "DSOFTBUS_DISCOVERY", value_name = "MODE")]
    pub discovery: Option<DiscoveryMode>,

    /// UDP discovery port [default: 37020]
    #[arg(long, env = "DSOFTBUS_DISCOVERY_PORT", value_name = "PORT")]
    pub discovery_port: Option<u16>,

    /// Extra unicast announce targets, IP:PORT, comma-separated or repeated
    #[arg(
        long,
        env = "DSOFTBUS_ANNOUNCE_TO",
        value_delimiter = ',',
        value_name = "ADDR"
    )]
    pub announce_to: Vec<SocketAddrV4>,

    /// Mean announce interval in milliseconds (jittered ±25%) [default: 1000]
    #[arg(long, env = "DSOFTBUS_ANNOUNCE_INTERVAL_MS", value_name = "MS")]
    pub announce_interval_ms: Option<u64>,

    /// Directory where received files are stored (no inbox: transfers are refused)
    #[arg(long, env = "DSOFTBUS_INBOX", value_name = "DIR")]
    pub inbox: Option<PathBuf>,

    /// Devices without a pin: tofu (pin on first session), known (ignored),
    /// pending (listed until `dsoftbus trust`) [default: tofu]
    #[arg(long, env = "DSOFTBUS_TRUST_MODE", value_name = "MODE")]
    pub trust_mode: Option<TrustModeArg>,

    /// Who may send files: ask (user-pinned peers accepted, others wait for
    /// `dsoftbus accept`), known (user-pinned only), any, none [default: ask]
    #[arg(long, env = "DSOFTBUS_ACCEPT", value_name = "POLICY")]
    pub accept: Option<AcceptArg>,

    /// Strict mode: only devices pinned in known_peers.toml may connect
    /// (= --trust-mode known; `--require-known=false` or
    /// DSOFTBUS_REQUIRE_KNOWN=0 turns off a `require_known = true` from the
    /// config file) [default: false]
    #[arg(
        long,
        env = "DSOFTBUS_REQUIRE_KNOWN",
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub require_known: Option<bool>,

    /// Services to advertise (names, comma-separated)
    #[arg(
        long = "service",
        env = "DSOFTBUS_SERVICES",
        value_delimiter = ',',
        value_name = "NAME"
    )]
    pub services: Vec<String>,

    /// Who may call which served service: `peer:service` entries separated
    /// by commas or spaces (`*` for the peer or the service, not both)
    /// [default: nobody]
    #[arg(long, env = "DSOFTBUS_REMOTE_ACL", value_name = "ACL")]
    pub remote_acl: Option<String>,

    /// Most peers held in the discovery table [default: 32]
    #[arg(long, env = "DSOFTBUS_MAX_PEERS", value_name = "N")]
    pub max_peers: Option<usize>,

    /// Most authenticated sessions at once [default: 32]
    #[arg(long, env = "DSOFTBUS_MAX_SESSIONS", value_name = "N")]
    pub max_sessions: Option<usize>,

    /// Most handshakes in progress at once, incoming and outgoing each [default: 16]
    #[arg(long, env = "DSOFTBUS_MAX_HALF_OPEN", value_name = "N")]
    pub max_half_open: Option<usize>,
}
