//! Ownership and mode checks on the state directory and its files, in the
//! spirit of ssh's `StrictModes`: a state directory, static key or
//! known-peers file that another local user could write (or that another
//! user owns) is refused with exit 3, because whoever can write there can
//! plant a key or a pin and the daemon would adopt it.
//!
//! Rules (checked at every daemon start and by the client commands that read
//! the files themselves):
//!
//! | path | owner | mode |
//! | --- | --- | --- |
//! | `<state-dir>/` | the user running `dsoftbus` (or root) | not writable by group or others |
//! | `<state-dir>/static.key` | same | no group/other bits at all (checked in `identity`) and not writable by them |
//! | `<state-dir>/known_peers.toml` | same | not writable by group or others |
//!
//! Missing paths are fine: they are created owner-only.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use tracing::info;

use crate::exit::{Failure, CONFIG};
use crate::identity::{KEY_FILE, KNOWN_FILE};
use crate::transfer;

/// Why a path is not private enough, or `None` if it is fine. `uid` is the
/// user running `dsoftbus`.
fn problem(meta: &std::fs::Metadata, uid: u32) -> Option<String> {
    let mode = meta.mode() & 0o7777;
    if meta.uid() != uid && meta.uid() != 0 {
        return Some(format!(
            "is owned by uid {}, not by uid {uid} (the user running dsoftbus) or root",
            meta.uid()
        ));
    }
    if mode & 0o022 != 0 {
        return Some(format!(
            "is writable by {} (mode {:03o})",
            if mode & 0o002 != 0 {
                "everyone"
            } else {
                "its group"
            },
            mode & 0o777
        ));
    }
    None
}

/// Checks one path if it exists.
fn check(path: &Path, what: &str, fix: &str, uid: u32) -> Result<(), Failure> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(Failure::new(
                CONFIG,
                format!("cannot inspect {what} {}: {e}", path.display()),
            ))
        }
    };
    match problem(&meta, uid) {
        None => Ok(()),
        Some(p) => Err(Failure::new(
            CONFIG,
            format!(
                "refusing {what} {}: it {p}; another local user could plant a key or pin there. Fix: {fix} {}",
                path.display(),
                path.display()
            ),
        )),
    }
}

/// Refuses a state directory, static key or known-peers file that is
/// writable by others or owned by another user (exit 3).
pub fn check_state(state_dir: &Path) -> Result<(), Failure> {
    check_state_as(state_dir, nix::unistd::geteuid().as_raw())
}

fn check_state_as(state_dir: &Path, uid: u32) -> Result<(), Failure> {
    check(state_dir, "state directory", "chmod 700", uid)?;
    check(&state_dir.join(KEY_FILE), "key file", "chmod 600", uid)?;
    check(
        &state_dir.join(KNOWN_FILE),
        "known-peers file",
        "chmod 600",
        uid,
    )
}

/// Creates the inbox owner-only (0700) if missing and deletes partial files
/// a killed daemon left in it.
pub fn prepare_inbox(inbox: &Path) -> Result<(), Failure> {
    let fail = |what: &str, e: std::io::Error| {
        Failure::new(CONFIG, format!("{what} inbox {}: {e}", inbox.display()))
    };
    transfer::create_inbox(inbox).map_err(|e| fail("creating", e))?;
    let n = transfer::remove_stale_parts(inbox).map_err(|e| fail("reading", e))?;
    if n > 0 {
        info!(
            "removed {n} partial file(s) left in {} by an interrupted transfer",
            inbox.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    fn chmod(p: &Path, mode: u32) {
        fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn private_state_is_accepted_missing_state_too() {
        let dir = tempfile::tempdir().unwrap();
        let uid = nix::unistd::geteuid().as_raw();
        assert!(check_state_as(&dir.path().join("missing"), uid).is_ok());
        chmod(dir.path(), 0o700);
        fs::write(dir.path().join(KEY_FILE), "x").unwrap();
        chmod(&dir.path().join(KEY_FILE), 0o600);
        fs::write(dir.path().join(KNOWN_FILE), "x").unwrap();
        chmod(&dir.path().join(KNOWN_FILE), 0o644);
        assert!(check_state_as(dir.path(), uid).is_ok());
        // Readable by others is fine for the directory (not writable).
        chmod(dir.path(), 0o755);
        assert!(check_state_as(dir.path(), uid).is_ok());
    }

    #[test]
    fn writable_by_others_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let uid = nix::unistd::geteuid().as_raw();
        chmod(dir.path(), 0o777);
        let e = check_state_as(dir.path(), uid).unwrap_err();
        assert_eq!(e.code, CONFIG);
        let msg = format!("{:#}", e.error);
        assert!(msg.contains("writable by everyone (mode 777)"), "{msg}");
        assert!(msg.contains("chmod 700"), "{msg}");
        chmod(dir.path(), 0o770);
        assert!(
            format!("{:#}", check_state_as(dir.path(), uid).unwrap_err().error)
                .contains("writable by its group")
        );
        chmod(dir.path(), 0o700);
        let known = dir.path().join(KNOWN_FILE);
        fs::write(&known, "x").unwrap();
        chmod(&known, 0o666);
        let msg = format!("{:#}", check_state_as(dir.path(), uid).unwrap_err().error);
        assert!(msg.contains("known-peers file"), "{msg}");
        chmod(&known, 0o600);
        let key = dir.path().join(KEY_FILE);
        fs::write(&key, "x").unwrap();
        chmod(&key, 0o622);
        let msg = format!("{:#}", check_state_as(dir.path(), uid).unwrap_err().error);
        assert!(msg.contains("key file"), "{msg}");
    }

    #[test]
    fn owned_by_another_user_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        chmod(dir.path(), 0o700);
        let owner = fs::metadata(dir.path()).unwrap().uid();
        // Pretend we run as someone else (owner is neither us nor root unless
        // the test runs as root, in which case pick a non-root "us").
        let me = if owner == 0 { 4242 } else { owner + 1 };
        if owner == 0 {
            // A root-owned directory is accepted for any user; plant a file
            // owned by another uid instead (needs root).
            let key = dir.path().join(KEY_FILE);
            fs::write(&key, "x").unwrap();
            chmod(&key, 0o600);
            nix::unistd::chown(&key, Some(nix::unistd::Uid::from_raw(4343)), None).unwrap();
            let msg = format!("{:#}", check_state_as(dir.path(), me).unwrap_err().error);
            assert!(msg.contains("owned by uid 4343"), "{msg}");
        } else {
            let msg = format!("{:#}", check_state_as(dir.path(), me).unwrap_err().error);
            assert!(msg.contains(&format!("owned by uid {owner}")), "{msg}");
        }
    }
}
