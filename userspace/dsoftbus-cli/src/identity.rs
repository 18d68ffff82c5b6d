//! This node's static key and the known-peers file.
//!
//! - `<state>/static.key`: 64 hex digits of the X25519 secret, mode 0600,
//!   created from OS entropy on first use. A key file readable by group or
//!   others is refused (as ssh does), so a leaked mode is noticed.
//! - `<state>/known_peers.toml`: `[peers]` table of device id = public key
//!   hex. Written atomically (temp file + rename), mode 0600.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::Context;
use dsoftbus::node::{Pin, PinConfig, PinError, PinKind, PinStore, Pinned};
use dsoftbus::{DeviceId, PublicKey, SecretKey, StaticKeypair};
use rand_core::{OsRng, TryRngCore};
use serde::{Deserialize, Serialize};
use zeroize::Zeroize;

use crate::exit::{Failure, WithCode, CONFIG};

/// Most pinned peers in the known-peers file.
pub const MAX_KNOWN: usize = 1024;

/// Key file name inside the state directory.
pub const KEY_FILE: &str = "static.key";
/// Known-peers file name inside the state directory.
pub const KNOWN_FILE: &str = "known_peers.toml";

/// Short, printable fingerprint of a public key: its first 8 bytes in hex
/// (the same prefix the core's `Debug` and the OS logs print).
pub fn fingerprint(k: &PublicKey) -> String {
    hex::encode(&k.as_bytes()[..8])
}

/// Parses 64 hex digits into a public key, refusing weak keys.
pub fn parse_public_key(s: &str) -> anyhow::Result<PublicKey> {
    let mut b = [0u8; 32];
    hex::decode_to_slice(s.trim(), &mut b)
        .map_err(|e| anyhow::anyhow!("key must be 64 hex digits: {e}"))?;
    let k = PublicKey::from_bytes(b);
    if k.is_weak() {
        anyhow::bail!("refusing a small-order (weak) public key");
    }
    Ok(k)
}

/// Creates the state directory (mode 0700) if needed.
pub fn ensure_state_dir(dir: &Path) -> Result<(), Failure> {
    if !dir.exists() {
        fs::create_dir_all(dir)
            .with_context(|| format!("creating state directory {}", dir.display()))
            .code(CONFIG)?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .with_context(|| format!("chmod 700 {}", dir.display()))
            .code(CONFIG)?;
    }
    Ok(())
}

/// Loads the static key, creating it on first use. Returns the pair and
/// whether it was just created.
pub fn load_or_create_key(state_dir: &Path) -> Result<(StaticKeypair, bool), Failure> {
    ensure_state_dir(state_dir)?;
    let path = state_dir.join(KEY_FILE);
    match fs::metadata(&path) {
        Ok(meta) => {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(Failure::new(
                    CONFIG,
                    format!(
                        "key file {} has mode {mode:03o}; it must be readable by its owner only (chmod 600 it)",
                        path.display()
                    ),
                ));
            }
            let mut text = fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))
                .code(CONFIG)?;
            let mut b = [0u8; 32];
            let r = hex::decode_to_slice(text.trim(), &mut b);
            text.zeroize();
            if r.is_err() {
                b.zeroize();
                return Err(Failure::new(
                    CONFIG,
                    format!("key file {} is not 64 hex digits", path.display()),
                ));
            }
            let pair = StaticKeypair::from_secret(SecretKey::from_bytes(b));
            b.zeroize();
            Ok((pair, false))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut b = [0u8; 32];
            OsRng
                .try_fill_bytes(&mut b)
                .map_err(|e| anyhow::anyhow!("OS entropy unavailable: {e}"))?;
            let mut text = hex::encode(b);
            text.push('\n');
            let written = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .and_then(|mut f| {
                    f.write_all(text.as_bytes())?;
                    f.sync_all()
                });
            text.zeroize();
            if let Err(e) = written {
                b.zeroize();
                return Err(anyhow::Error::new(e))
                    .with_context(|| format!("creating {}", path.display()))
                    .code(CONFIG);
            }
            let pair = StaticKeypair::from_secret(SecretKey::from_bytes(b));
            b.zeroize();
            Ok((pair, true))
        }
        Err(e) => Err(anyhow::Error::new(e))
            .with_context(|| format!("reading {}", path.display()))
            .code(CONFIG),
    }
}

/// The device id: configured, else the hostname, else `linux-<fingerprint>`.
pub fn device_id(configured: Option<&str>, key: &PublicKey) -> Result<DeviceId, Failure> {
    if let Some(s) = configured {
        return DeviceId::new(s).map_err(|e| {
            Failure::new(
                CONFIG,
                format!("device id {s:?} is invalid ({e}): 1..=64 bytes of UTF-8, no control characters"),
            )
        });
    }
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok());
    if let Some(id) = host.and_then(|h| DeviceId::new(&h).ok()) {
        return Ok(id);
    }
    DeviceId::new(&format!("linux-{}", fingerprint(key)))
        .map_err(|e| Failure::new(CONFIG, format!("cannot make a device id: {e}")))
}

/// The error for a refused `trust`: another key needs `--replace`
/// (exit 2); a store full of user pins is a configuration problem (exit 3).
pub fn trust_failure(id: &DeviceId, e: &PinError) -> Failure {
    match e {
        PinError::KeyConflict { pinned, user } => Failure::new(
            crate::exit::USAGE,
            format!(
                "{id} is pinned to another key {} ({}); if its key really changed, run `dsoftbus trust {id} <key> --replace`",
                fingerprint(pinned),
                if *user { "trusted by the user" } else { "pinned on first sight" }
            ),
        ),
        other => Failure::new(CONFIG, format!("cannot pin {id}: {other}")),
    }
}

#[derive(Serialize, Deserialize, Default)]
struct KnownFile {
    /// User-trusted pins (`dsoftbus trust`), and every pin of files written
    /// before automatic pins were kept apart (they were never evicted then,
    /// so they are not now).
    #[serde(default)]
    peers: BTreeMap<String, String>,
    /// Automatic (trust-on-first-use) pins.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    auto: BTreeMap<String, AutoEntry>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct AutoEntry {
    key: String,
    /// The address the first session came from.
    source: std::net::IpAddr,
    /// Unix seconds.
    created: u64,
    /// Unix seconds of the last authenticated session.
    last_used: u64,
}

/// Wall-clock milliseconds since the Unix epoch, as the core's clock type:
/// pin ages must survive restarts.
pub fn wall_now() -> dsoftbus::Instant {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    dsoftbus::Instant::from_millis(ms)
}

/// Pinned device id → key bindings, persisted in `known_peers.toml`: user
/// pins under `[peers]`, automatic ones under `[auto]`, with the policy of
/// `dsoftbus::node::pins` (automatic pins rate-limited and capped per
/// source, stale ones evicted, user pins never).
#[derive(Debug, Clone)]
pub struct KnownPeers {
    path: PathBuf,
    store: PinStore,
}

impl KnownPeers {
    /// Loads the file (a missing file is an empty set).
    pub fn load(state_dir: &Path) -> Result<Self, Failure> {
        let path = state_dir.join(KNOWN_FILE);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => {
                return Err(anyhow::Error::new(e))
                    .with_context(|| format!("reading {}", path.display()))
                    .code(CONFIG)
            }
        };
        let file: KnownFile = toml::from_str(&text)
            .with_context(|| format!("known-peers file {}", path.display()))
            .code(CONFIG)?;
        let mut store = PinStore::new(PinConfig {
            max_pins: MAX_KNOWN,
            ..PinConfig::default()
        });
        let bad = |id: &str, e: &dyn std::fmt::Display| {
            Failure::new(CONFIG, format!("{}: device id {id:?}: {e}", path.display()))
        };
        let full = || {
            Failure::new(
                CONFIG,
                format!("{}: more than {MAX_KNOWN} peers", path.display()),
            )
        };
        let secs = |s: u64| dsoftbus::Instant::from_millis(s.saturating_mul(1000));
        for (id, a) in file.auto {
            let dev = DeviceId::new(&id).map_err(|e| bad(&id, &e))?;
            let key = parse_public_key(&a.key)
                .with_context(|| format!("{}: key of {id:?}", path.display()))
                .code(CONFIG)?;
            let pin = Pin {
                key,
                kind: PinKind::Auto { source: a.source },
                created: secs(a.created),
                last_used: secs(a.last_used),
            };
            store.load(dev, pin).map_err(|_| full())?;
        }
        // User pins last: an id in both sections is a user pin.
        for (id, key) in file.peers {
            let dev = DeviceId::new(&id).map_err(|e| bad(&id, &e))?;
            let key = parse_public_key(&key)
                .with_context(|| format!("{}: key of {id:?}", path.display()))
                .code(CONFIG)?;
            let pin = Pin {
                key,
                kind: PinKind::User,
                created: dsoftbus::Instant::ZERO,
                last_used: dsoftbus::Instant::ZERO,
            };
            store.load(dev, pin).map_err(|_| full())?;
        }
        Ok(KnownPeers { path, store })
    }

    /// The pinned key of `id`.
    pub fn get(&self, id: &DeviceId) -> Option<&PublicKey> {
        self.store.get(id).map(|p| &p.key)
    }

    /// The pin of `id`, with its kind.
    pub fn pin(&self, id: &DeviceId) -> Option<&Pin> {
        self.store.get(id)
    }

    /// Number of pins.
    pub fn len(&self) -> usize {
        self.store.len()
    }

    /// Number of automatic pins.
    pub fn auto_count(&self) -> usize {
        self.store.iter().filter(|(_, p)| !p.is_user()).count()
    }

    /// All pins.
    pub fn iter(&self) -> impl Iterator<Item = (&DeviceId, &PublicKey)> {
        self.store.iter().map(|(i, p)| (i, &p.key))
    }

    /// The user pins `id` to `key`; another key needs `replace`.
    pub fn trust(
        &mut self,
        id: &DeviceId,
        key: PublicKey,
        replace: bool,
    ) -> Result<Pinned, PinError> {
        self.store.user_pin(id, &key, replace, wall_now())
    }

    /// Trust on first use from `source`.
    pub fn auto_pin(
        &mut self,
        id: &DeviceId,
        key: PublicKey,
        source: std::net::IpAddr,
    ) -> Result<Pinned, PinError> {
        self.store.auto_pin(id, &key, source, wall_now())
    }

    /// A session authenticated `id` under its pin.
    pub fn touch(&mut self, id: &DeviceId) {
        self.store.touch(id, wall_now());
    }

    /// Removes the pin of `id`.
    pub fn remove(&mut self, id: &DeviceId) -> Option<PublicKey> {
        self.store.remove(id).map(|p| p.key)
    }

    /// Removes every automatic pin.
    pub fn remove_auto(&mut self) -> Vec<DeviceId> {
        self.store.remove_auto()
    }

    /// Removes automatic pins unused for 30 days.
    pub fn evict_stale(&mut self) -> Vec<DeviceId> {
        self.store.evict_stale(wall_now())
    }

    /// Writes the file atomically (0600).
    pub fn save(&self) -> anyhow::Result<()> {
        let secs = |i: dsoftbus::Instant| i.as_millis() / 1000;
        let mut file = KnownFile::default();
        for (id, p) in self.store.iter() {
            let key = hex::encode(p.key.as_bytes());
            match p.kind {
                PinKind::User => {
                    file.peers.insert(id.as_str().to_string(), key);
                }
                PinKind::Auto { source } => {
                    file.auto.insert(
                        id.as_str().to_string(),
                        AutoEntry {
                            key,
                            source,
                            created: secs(p.created),
                            last_used: secs(p.last_used),
                        },
                    );
                }
            }
        }
        let mut text = String::from(
            "# dsoftbus known peers: device id = static public key (hex).\n\
             # [peers]: trusted by the user (`dsoftbus trust`), never evicted.\n\
             # [auto]: pinned on first sight (TOFU); capped per address, evicted when unused for 30 days.\n\
             # Managed by `dsoftbus trust` / `dsoftbus forget`.\n",
        );
        text.push_str(&toml::to_string(&file)?);
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let tmp = dir.join(format!(".{KNOWN_FILE}.tmp-{}", std::process::id()));
        {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .with_context(|| format!("writing {}", tmp.display()))?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
        }
        fs::rename(&tmp, &self.path)
            .with_context(|| format!("replacing {}", self.path.display()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_created_once_with_mode_600_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let (a, created) = load_or_create_key(&state).unwrap();
        assert!(created);
        let mode = fs::metadata(state.join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let (b, created) = load_or_create_key(&state).unwrap();
        assert!(!created);
        assert_eq!(a.public(), b.public());
        fs::set_permissions(state.join(KEY_FILE), fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(load_or_create_key(&state).unwrap_err().code, CONFIG);
    }

    #[test]
    fn known_peers_round_trip_and_reject_bad_entries() {
        let dir = tempfile::tempdir().unwrap();
        let mut k = KnownPeers::load(dir.path()).unwrap();
        let key = PublicKey::from_bytes([9; 32]);
        k.trust(&DeviceId::new("node a").unwrap(), key, false)
            .unwrap();
        k.save().unwrap();
        let k2 = KnownPeers::load(dir.path()).unwrap();
        assert_eq!(k2.get(&DeviceId::new("node a").unwrap()), Some(&key));
        fs::write(dir.path().join(KNOWN_FILE), "[peers]\nx = \"00\"\n").unwrap();
        assert_eq!(KnownPeers::load(dir.path()).unwrap_err().code, CONFIG);
        assert!(parse_public_key(&"00".repeat(32)).is_err(), "weak key");
    }

    /// Today's file (one `[peers]` table) still loads; its pins count as
    /// user pins. Automatic pins round-trip with their source and age.
    #[test]
    fn known_peers_reads_the_old_format_and_keeps_auto_apart() {
        let dir = tempfile::tempdir().unwrap();
        let key = |b: u8| hex::encode([b; 32]);
        fs::write(
            dir.path().join(KNOWN_FILE),
            format!("# old\n[peers]\n\"lab-pc\" = \"{}\"\n", key(9)),
        )
        .unwrap();
        let mut k = KnownPeers::load(dir.path()).unwrap();
        let lab = DeviceId::new("lab-pc").unwrap();
        assert!(k.pin(&lab).unwrap().is_user());
        let x = DeviceId::new("x").unwrap();
        k.auto_pin(
            &x,
            PublicKey::from_bytes([7; 32]),
            "10.0.0.5".parse().unwrap(),
        )
        .unwrap();
        k.save().unwrap();
        let k2 = KnownPeers::load(dir.path()).unwrap();
        assert_eq!(k2.len(), 2);
        assert_eq!(k2.auto_count(), 1);
        let p = k2.pin(&x).unwrap();
        assert!(matches!(p.kind, PinKind::Auto { source } if source.to_string() == "10.0.0.5"));
        assert!(p.last_used.as_millis() > 0);
        let mut k3 = k2.clone();
        assert!(matches!(
            k3.trust(&x, PublicKey::from_bytes([8; 32]), false),
            Err(PinError::KeyConflict { .. })
        ));
        assert_eq!(k3.remove_auto(), vec![x]);
        assert_eq!(k3.len(), 1);
    }
}
