//! Settings: the TOML file, merged under flags and environment.

use std::net::{IpAddr, Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde::Deserialize;

use crate::cli::{DaemonArgs, DiscoveryMode, GlobalOpts};
use crate::exit::{Failure, WithCode, CONFIG};

/// Default session TCP port.
pub const DEFAULT_PORT: u16 = 34567;
/// Default announce interval.
pub const DEFAULT_INTERVAL_MS: u64 = 1000;
/// Default bounds.
pub const DEFAULT_MAX_PEERS: usize = 32;
pub const DEFAULT_MAX_SESSIONS: usize = 32;
pub const DEFAULT_MAX_HALF_OPEN: usize = 16;
pub const DEFAULT_MAX_INCOMING: usize = 4;
/// An accepted incoming transfer that receives nothing for this long is
/// cancelled and its slot freed.
pub const DEFAULT_TRANSFER_IDLE_SECS: u64 = 30;
/// Largest file the inbox accepts by default (64 GiB).
pub const DEFAULT_MAX_RECEIVE: u64 = 64 << 30;

/// The config file. Every key is optional; unknown keys are an error (typos
/// should not silently do nothing).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub state_dir: Option<PathBuf>,
    pub control_socket: Option<PathBuf>,
    pub device_id: Option<String>,
    pub port: Option<u16>,
    pub listen: Option<IpAddr>,
    pub interfaces: Option<Vec<String>>,
    pub discovery: Option<DiscoveryMode>,
    pub discovery_port: Option<u16>,
    pub announce_to: Option<Vec<SocketAddrV4>>,
    pub announce_interval_ms: Option<u64>,
    pub inbox: Option<PathBuf>,
    pub require_known: Option<bool>,
    pub trust_mode: Option<crate::cli::TrustModeArg>,
    pub services: Option<Vec<String>>,
    /// Remote-call ACL entries, `peer:service` (see `dsoftbus::rpc::Acl`).
    pub remote_acl: Option<Vec<String>>,
    pub max_peers: Option<usize>,
    pub max_sessions: Option<usize>,
    pub max_half_open: Option<usize>,
    pub max_incoming_transfers: Option<usize>,
    pub max_incoming_per_peer: Option<usize>,
    pub transfer_idle_timeout_secs: Option<u64>,
    pub max_receive_bytes: Option<u64>,
    /// `ask`, `known`, `any` or `none` (see `--accept`).
    pub accept: Option<crate::cli::AcceptArg>,
    /// How long an offer waits for `dsoftbus accept` (ask).
    pub offer_ttl_secs: Option<u64>,
    /// Offers waiting for an answer, in all and from one peer.
    pub max_pending_offers: Option<usize>,
    pub max_pending_per_peer: Option<usize>,
    pub multicast_loop: Option<bool>,
    pub log: Option<String>,
}

/// Where things live, for every command.
#[derive(Debug, Clone)]
pub struct Paths {
    pub state_dir: PathBuf,
    pub control_socket: PathBuf,
}

/// Everything the daemon needs, fully resolved.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    pub paths: Paths,
    pub device_id: Option<String>,
    pub port: u16,
    pub listen: IpAddr,
    pub interfaces: Vec<String>,
    pub discovery: DiscoveryMode,
    pub discovery_port: u16,
    pub announce_to: Vec<SocketAddrV4>,
    pub announce_interval: Duration,
    pub inbox: Option<PathBuf>,
    pub require_known: bool,
    /// Resolved: `--trust-mode`/`DSOFTBUS_TRUST_MODE` > `require_known`
    /// (flag, env or file: `known`) > file `trust_mode` > `tofu`.
    pub trust_mode: dsoftbus::node::TrustMode,
    pub services: Vec<String>,
    /// Remote-call ACL: `--remote-acl` > file `remote_acl` > deny all.
    pub remote_acl: dsoftbus::rpc::Acl,
    pub max_peers: usize,
    pub max_sessions: usize,
    pub max_half_open: usize,
    pub max_incoming_transfers: usize,
    /// Incoming transfers one peer may hold at once (less than all slots).
    pub max_incoming_per_peer: usize,
    /// Idle timeout of an accepted incoming transfer.
    pub transfer_idle: Duration,
    pub max_receive_bytes: u64,
    pub multicast_loop: bool,
    /// Accept policy and its bounds: `--accept`/`DSOFTBUS_ACCEPT` > file
    /// `accept` > `ask`; active caps from `max_incoming_transfers` /
    /// `max_incoming_per_peer`.
    pub consent: dsoftbus::node::ConsentConfig,
}

fn env_dir(var: &str) -> Option<PathBuf> {
    std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
}

fn home() -> Option<PathBuf> {
    env_dir("HOME")
}

/// The default config file path (may not exist).
pub fn default_config_path() -> Option<PathBuf> {
    env_dir("XDG_CONFIG_HOME")
        .or_else(|| home().map(|h| h.join(".config")))
        .map(|d| d.join("dsoftbus").join("config.toml"))
}

/// Loads the config file: the explicit one must exist; the default one is
/// optional.
pub fn load_file(global: &GlobalOpts) -> Result<(FileConfig, Option<PathBuf>), Failure> {
    let (path, required) = match &global.config {
        Some(p) => (Some(p.clone()), true),
        None => (default_config_path(), false),
    };
    let Some(path) = path else {
        return Ok((FileConfig::default(), None));
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let cfg: FileConfig = toml::from_str(&text)
                .with_context(|| format!("config file {}", path.display()))
                .code(CONFIG)?;
            Ok((cfg, Some(path)))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
            Ok((FileConfig::default(), None))
        }
        Err(e) => Err(anyhow::Error::new(e))
            .with_context(|| format!("config file {}", path.display()))
            .code(CONFIG),
    }
}

/// State directory and control socket from flags/env, then file, then XDG.
pub fn resolve_paths(global: &GlobalOpts, file: &FileConfig) -> Result<Paths, Failure> {
    let state_dir = global
        .state_dir
        .clone()
        .or_else(|| file.state_dir.clone())
        .or_else(|| env_dir("XDG_STATE_HOME").map(|d| d.join("dsoftbus")))
        .or_else(|| home().map(|h| h.join(".local/state/dsoftbus")))
        .ok_or_else(|| {
            Failure::new(
                CONFIG,
                "no state directory: set --state-dir, DSOFTBUS_STATE_DIR, XDG_STATE_HOME or HOME",
            )
        })?;
    let control_socket = global
        .control_socket
        .clone()
        .or_else(|| file.control_socket.clone())
        .unwrap_or_else(|| state_dir.join("control.sock"));
    Ok(Paths {
        state_dir,
        control_socket,
    })
}

fn pick<T>(cli: Option<T>, file: Option<T>, default: T) -> T {
    cli.or(file).unwrap_or(default)
}

fn pick_vec<T>(cli: Vec<T>, file: Option<Vec<T>>) -> Vec<T> {
    if cli.is_empty() {
        file.unwrap_or_default()
    } else {
        cli
    }
}

/// Merges flags/env over the file over defaults and checks the result.
pub fn daemon_config(
    paths: Paths,
    args: DaemonArgs,
    file: FileConfig,
) -> Result<DaemonConfig, Failure> {
    let interval_ms = pick(
        args.announce_interval_ms,
        file.announce_interval_ms,
        DEFAULT_INTERVAL_MS,
    );
    if !(100..=60_000).contains(&interval_ms) {
        return Err(Failure::new(
            CONFIG,
            format!("announce interval {interval_ms} ms is outside 100..=60000"),
        ));
    }
    let acl_text = args
        .remote_acl
        .clone()
        .or_else(|| file.remote_acl.as_ref().map(|v| v.join(",")))
        .unwrap_or_default();
    let remote_acl = dsoftbus::rpc::Acl::parse(&acl_text)
        .map_err(|e| Failure::new(CONFIG, format!("remote ACL: {e}")))?;
    let file_trust_mode = file.trust_mode;
    let cli_trust_mode = args.trust_mode;
    let mut cfg = DaemonConfig {
        trust_mode: dsoftbus::node::TrustMode::Tofu,
        paths,
        device_id: args.device_id.or(file.device_id),
        port: pick(args.port, file.port, DEFAULT_PORT),
        listen: pick(args.listen, file.listen, IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
        interfaces: pick_vec(args.interfaces, file.interfaces),
        discovery: pick(args.discovery, file.discovery, DiscoveryMode::Auto),
        discovery_port: pick(
            args.discovery_port,
            file.discovery_port,
            dsoftbus::DISCOVERY_PORT,
        ),
        announce_to: pick_vec(args.announce_to, file.announce_to),
        announce_interval: Duration::from_millis(interval_ms),
        inbox: args.inbox.or(file.inbox),
        require_known: pick(args.require_known, file.require_known, false),
        services: pick_vec(args.services, file.services),
        remote_acl,
        max_peers: pick(args.max_peers, file.max_peers, DEFAULT_MAX_PEERS),
        max_sessions: pick(args.max_sessions, file.max_sessions, DEFAULT_MAX_SESSIONS),
        max_half_open: pick(
            args.max_half_open,
            file.max_half_open,
            DEFAULT_MAX_HALF_OPEN,
        ),
        max_incoming_transfers: file.max_incoming_transfers.unwrap_or(DEFAULT_MAX_INCOMING),
        max_incoming_per_peer: file
            .max_incoming_per_peer
            .unwrap_or((file.max_incoming_transfers.unwrap_or(DEFAULT_MAX_INCOMING) / 2).max(1)),
        transfer_idle: Duration::from_secs(
            file.transfer_idle_timeout_secs
                .unwrap_or(DEFAULT_TRANSFER_IDLE_SECS),
        ),
        max_receive_bytes: file.max_receive_bytes.unwrap_or(DEFAULT_MAX_RECEIVE),
        multicast_loop: file.multicast_loop.unwrap_or(true),
        consent: dsoftbus::node::ConsentConfig::default(),
    };
    {
        let d = dsoftbus::node::ConsentConfig::default();
        cfg.consent = dsoftbus::node::ConsentConfig {
            policy: args
                .accept
                .or(file.accept)
                .map(Into::into)
                .unwrap_or_default(),
            max_pending: file.max_pending_offers.unwrap_or(d.max_pending),
            max_pending_per_peer: file.max_pending_per_peer.unwrap_or(d.max_pending_per_peer),
            ask_ttl: Duration::from_secs(file.offer_ttl_secs.unwrap_or(d.ask_ttl.as_secs())),
            max_active: cfg.max_incoming_transfers,
            max_active_per_peer: cfg.max_incoming_per_peer,
        };
    }
    // Flags/env beat the file, both ways: an explicit `require_known=false`
    // also turns off a `trust_mode = "known"` from the file (to tofu).
    use dsoftbus::node::TrustMode;
    let file_mode: Option<TrustMode> = file_trust_mode.map(Into::into);
    cfg.trust_mode = match (
        cli_trust_mode,
        args.require_known,
        file.require_known,
        file_mode,
    ) {
        (Some(m), _, _, _) => m.into(),
        (None, Some(true), _, _) => TrustMode::Known,
        (None, Some(false), _, Some(m)) if m != TrustMode::Known => m,
        (None, Some(false), _, _) => TrustMode::Tofu,
        (None, None, Some(true), _) => TrustMode::Known,
        (None, None, _, Some(m)) => m,
        (None, None, _, None) => TrustMode::Tofu,
    };
    cfg.require_known = cfg.trust_mode == dsoftbus::node::TrustMode::Known;
    for (name, v, max) in [
        ("max_peers", cfg.max_peers, 4096),
        ("max_sessions", cfg.max_sessions, 4096),
        ("max_half_open", cfg.max_half_open, 1024),
        ("max_incoming_transfers", cfg.max_incoming_transfers, 64),
    ] {
        if v == 0 || v > max {
            return Err(Failure::new(
                CONFIG,
                format!("{name} = {v} is outside 1..={max}"),
            ));
        }
    }
    // One peer never holds every slot (unless there is only one).
    let per_peer_max = (cfg.max_incoming_transfers - 1).max(1);
    if cfg.max_incoming_per_peer == 0 || cfg.max_incoming_per_peer > per_peer_max {
        return Err(Failure::new(
            CONFIG,
            format!(
                "max_incoming_per_peer = {} is outside 1..={per_peer_max} (max_incoming_transfers - 1)",
                cfg.max_incoming_per_peer
            ),
        ));
    }
    let c = cfg.consent;
    if c.max_pending == 0 || c.max_pending > 1024 {
        return Err(Failure::new(
            CONFIG,
            format!("max_pending_offers = {} is outside 1..=1024", c.max_pending),
        ));
    }
    if c.max_pending_per_peer == 0 || c.max_pending_per_peer > c.max_pending {
        return Err(Failure::new(
            CONFIG,
            format!(
                "max_pending_per_peer = {} is outside 1..={} (max_pending_offers)",
                c.max_pending_per_peer, c.max_pending
            ),
        ));
    }
    if !(1..=86_400).contains(&c.ask_ttl.as_secs()) {
        return Err(Failure::new(
            CONFIG,
            format!(
                "offer_ttl_secs = {} is outside 1..=86400",
                c.ask_ttl.as_secs()
            ),
        ));
    }
    if !(1..=3600).contains(&cfg.transfer_idle.as_secs()) {
        return Err(Failure::new(
            CONFIG,
            format!(
                "transfer_idle_timeout_secs = {} is outside 1..=3600",
                cfg.transfer_idle.as_secs()
            ),
        ));
    }
    if cfg.discovery == DiscoveryMode::Unicast && cfg.announce_to.is_empty() {
        return Err(Failure::new(
            CONFIG,
            "--discovery unicast needs at least one --announce-to address",
        ));
    }
    if cfg.discovery_port == 0 {
        return Err(Failure::new(CONFIG, "discovery port 0 is not allowed"));
    }
    Ok(cfg)
}

/// The log filter from the config file, if any.
pub fn file_log_filter(file: &FileConfig) -> Option<String> {
    file.log.clone()
}

/// Makes `p` absolute against the current directory (for paths sent to the
/// daemon, which may run elsewhere).
pub fn absolute(p: &Path) -> std::io::Result<PathBuf> {
    std::path::absolute(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_keys_parse_and_unknown_keys_fail() {
        let cfg: FileConfig = toml::from_str(
            r#"
device_id = "laptop"
port = 4000
interfaces = ["eth0", "wlan0"]
discovery = "both"
announce_to = ["192.0.2.1:37020"]
require_known = true
"#,
        )
        .unwrap();
        assert_eq!(cfg.port, Some(4000));
        assert_eq!(cfg.discovery, Some(DiscoveryMode::Both));
        assert!(toml::from_str::<FileConfig>("prot = 1").is_err());
    }

    #[test]
    fn flags_win_over_file_over_defaults() {
        let paths = Paths {
            state_dir: "/s".into(),
            control_socket: "/s/c".into(),
        };
        let file: FileConfig = toml::from_str("port = 4000\ninterfaces = [\"eth0\"]").unwrap();
        let args = DaemonArgs {
            port: Some(5000),
            ..Default::default()
        };
        let cfg = daemon_config(paths.clone(), args, file).unwrap();
        assert_eq!(cfg.port, 5000);
        assert_eq!(cfg.interfaces, vec!["eth0".to_string()]);
        assert_eq!(cfg.discovery_port, 37020);
        // require_known: flag/env (Some) beats the file, both ways.
        let strict: FileConfig = toml::from_str("require_known = true").unwrap();
        let off = DaemonArgs {
            require_known: Some(false),
            ..Default::default()
        };
        assert!(
            !daemon_config(paths.clone(), off, strict)
                .unwrap()
                .require_known
        );
        let strict: FileConfig = toml::from_str("require_known = true").unwrap();
        let unset = DaemonArgs::default();
        assert!(
            daemon_config(paths.clone(), unset, strict)
                .unwrap()
                .require_known
        );
        // An explicit require_known=false also turns off the file's
        // trust_mode = "known" (to tofu); other file modes stay.
        use dsoftbus::node::TrustMode;
        let mode = |file: &str, require_known: Option<bool>| {
            let file: FileConfig = toml::from_str(file).unwrap();
            let args = DaemonArgs {
                require_known,
                ..Default::default()
            };
            daemon_config(paths.clone(), args, file).unwrap().trust_mode
        };
        assert_eq!(mode("trust_mode = \"known\"", Some(false)), TrustMode::Tofu);
        assert_eq!(
            mode("trust_mode = \"pending\"", Some(false)),
            TrustMode::Pending
        );
        assert_eq!(mode("trust_mode = \"known\"", None), TrustMode::Known);
        assert_eq!(
            mode("trust_mode = \"pending\"", Some(true)),
            TrustMode::Known
        );
        // Per-peer transfer cap below the total; idle timeout in range.
        let cfg =
            daemon_config(paths.clone(), DaemonArgs::default(), FileConfig::default()).unwrap();
        assert_eq!(
            (cfg.max_incoming_transfers, cfg.max_incoming_per_peer),
            (4, 2)
        );
        let all: FileConfig = toml::from_str("max_incoming_per_peer = 4").unwrap();
        assert_eq!(
            daemon_config(paths.clone(), DaemonArgs::default(), all)
                .unwrap_err()
                .code,
            CONFIG
        );
        let idle: FileConfig = toml::from_str("transfer_idle_timeout_secs = 0").unwrap();
        assert_eq!(
            daemon_config(paths.clone(), DaemonArgs::default(), idle)
                .unwrap_err()
                .code,
            CONFIG
        );
        let bad: FileConfig = toml::from_str("announce_interval_ms = 5").unwrap();
        let e = daemon_config(paths.clone(), DaemonArgs::default(), bad).unwrap_err();
        assert_eq!(e.code, CONFIG);
    }

    #[test]
    fn accept_policy_flag_over_file_over_ask() {
        use crate::cli::AcceptArg;
        use dsoftbus::node::AcceptPolicy;
        let paths = Paths {
            state_dir: "/s".into(),
            control_socket: "/s/c".into(),
        };
        let resolve = |file: &str, flag: Option<AcceptArg>| {
            let file: FileConfig = toml::from_str(file).unwrap();
            let args = DaemonArgs {
                accept: flag,
                ..Default::default()
            };
            daemon_config(paths.clone(), args, file).map(|c| c.consent)
        };
        let d = resolve("", None).unwrap();
        assert_eq!(d.policy, AcceptPolicy::Ask);
        // The active caps are the incoming-transfer settings.
        assert_eq!((d.max_active, d.max_active_per_peer), (4, 2));
        assert_eq!((d.max_pending, d.max_pending_per_peer), (16, 4));
        assert_eq!(d.ask_ttl.as_secs(), 120);
        assert_eq!(
            resolve("accept = \"known\"", None).unwrap().policy,
            AcceptPolicy::Known
        );
        assert_eq!(
            resolve("accept = \"known\"", Some(AcceptArg::Any))
                .unwrap()
                .policy,
            AcceptPolicy::Any
        );
        assert!(toml::from_str::<FileConfig>("accept = \"maybe\"").is_err());
        for bad in [
            "offer_ttl_secs = 0",
            "max_pending_offers = 0",
            "max_pending_offers = 4\nmax_pending_per_peer = 5",
        ] {
            assert_eq!(resolve(bad, None).unwrap_err().code, CONFIG, "{bad}");
        }
        let c = resolve("offer_ttl_secs = 30\nmax_pending_offers = 8", None).unwrap();
        assert_eq!((c.ask_ttl.as_secs(), c.max_pending), (30, 8));
    }

    #[test]
    fn remote_acl_from_flag_or_file_deny_by_default() {
        use dsoftbus::{DeviceId, ServiceName};
        let paths = Paths {
            state_dir: "/s".into(),
            control_socket: "/s/c".into(),
        };
        let (a, echo) = (
            DeviceId::new("a").unwrap(),
            ServiceName::new("echo").unwrap(),
        );
        let acl = |file: &str, flag: Option<&str>| {
            let args = DaemonArgs {
                remote_acl: flag.map(str::to_string),
                ..Default::default()
            };
            daemon_config(paths.clone(), args, toml::from_str(file).unwrap()).map(|c| c.remote_acl)
        };
        assert!(acl("", None).unwrap().is_empty());
        let f = acl("remote_acl = [\"a:echo\", \"b:*\"]", None).unwrap();
        assert!(f.allows(&a, &echo));
        assert_eq!(f.to_string(), "a:echo,b:*");
        // The flag replaces the file's list.
        let f = acl("remote_acl = [\"a:echo\"]", Some("b:echo")).unwrap();
        assert!(!f.allows(&a, &echo));
        // A bad entry refuses the config (exit 3), never "allow all".
        assert_eq!(
            acl("remote_acl = [\"*:*\"]", None).unwrap_err().code,
            CONFIG
        );
        assert_eq!(acl("", Some("a")).unwrap_err().code, CONFIG);
    }
}
