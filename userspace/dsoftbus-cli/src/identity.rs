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

#[derive(Serialize, Deserialize, Default)]
struct KnownFile {
    #[serde(default)]
    peers: BTreeMap<String, String>,
}

/// Pinned device id → key bindings, persisted in `known_peers.toml`.
#[derive(Debug, Clone)]
pub struct KnownPeers {
    path: PathBuf,
    map: BTreeMap<DeviceId, PublicKey>,
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
        let mut map = BTreeMap::new();
        for (id, key) in file.peers {
            let dev = DeviceId::new(&id).map_err(|e| {
                Failure::new(CONFIG, format!("{}: device id {id:?}: {e}", path.display()))
            })?;
            let k = parse_public_key(&key)
                .with_context(|| format!("{}: key of {id:?}", path.display()))
                .code(CONFIG)?;
            map.insert(dev, k);
        }
        if map.len() > MAX_KNOWN {
            return Err(Failure::new(
                CONFIG,
                format!("{}: more than {MAX_KNOWN} peers", path.display()),
            ));
        }
        Ok(KnownPeers { path, map })
    }

    /// The pinned key of `id`.
    pub fn get(&self, id: &DeviceId) -> Option<&PublicKey> {
        self.map.get(id)
    }

    /// Number of pins.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// All pins.
    pub fn iter(&self) -> impl Iterator<Item = (&DeviceId, &PublicKey)> {
        self.map.iter()
    }

    /// Pins `id` to `key` (replacing an older pin). Returns the old key.
    pub fn insert(&mut self, id: DeviceId, key: PublicKey) -> anyhow::Result<Option<PublicKey>> {
        if !self.map.contains_key(&id) && self.map.len() >= MAX_KNOWN {
            anyhow::bail!("known-peers file is full ({MAX_KNOWN} peers)");
        }
        Ok(self.map.insert(id, key))
    }

    /// Removes the pin of `id`.
    pub fn remove(&mut self, id: &DeviceId) -> Option<PublicKey> {
        self.map.remove(id)
    }

    /// Writes the file atomically (0600).
    pub fn save(&self) -> anyhow::Result<()> {
        let file = KnownFile {
            peers: self
                .map
                .iter()
                .map(|(k, v)| (k.as_str().to_string(), hex::encode(v.as_bytes())))
                .collect(),
        };
        let mut text = String::from(
            "# dsoftbus known peers: device id = static public key (hex).\n\
             # Managed by `dsoftbus trust` / `dsoftbus forget`; first sight pins a key (TOFU).\n",
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
        k.insert(DeviceId::new("node a").unwrap(), key).unwrap();
        k.save().unwrap();
        let k2 = KnownPeers::load(dir.path()).unwrap();
        assert_eq!(k2.get(&DeviceId::new("node a").unwrap()), Some(&key));
        fs::write(dir.path().join(KNOWN_FILE), "[peers]\nx = \"00\"\n").unwrap();
        assert_eq!(KnownPeers::load(dir.path()).unwrap_err().code, CONFIG);
        assert!(parse_public_key(&"00".repeat(32)).is_err(), "weak key");
    }
}
