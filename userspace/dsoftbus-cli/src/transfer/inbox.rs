//! The inbox on disk: owner-only partial files, moves that never replace
//! (`renameat2(RENAME_NOREPLACE)`), `name.N` on a collision, directories
//! made with `mkdir` only, and the clean-up of partial files a killed
//! daemon left.

use super::*;

// Name rules live in the core, in one place (shared with the core's
// transfer protocol, `dsoftbus::transfer::name`).
pub use dsoftbus::transfer::name::{candidate_name, sanitize_name};

/// Most names tried (`name`, `name.1` … `name.999`) before giving up.
pub const MAX_NAME_TRIES: u32 = 1000;

/// Moves `from` to `to` only if `to` does not exist, atomically:
/// `renameat2(RENAME_NOREPLACE)`, or `link` + `unlink` where the file
/// system lacks it. `AlreadyExists` when the name is taken.
fn rename_noreplace(from: &Path, to: &Path) -> std::io::Result<()> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use nix::errno::Errno;
        use nix::fcntl::{renameat2, RenameFlags};
        match renameat2(None, from, None, to, RenameFlags::RENAME_NOREPLACE) {
            Ok(()) => return Ok(()),
            Err(Errno::EEXIST) => return Err(std::io::ErrorKind::AlreadyExists.into()),
            // Not supported by this file system: fall back to link + unlink.
            Err(Errno::EINVAL) | Err(Errno::ENOSYS) | Err(Errno::EOPNOTSUPP) => {}
            Err(e) => return Err(e.into()),
        }
    }
    fs::hard_link(from, to)?;
    // The verified data now has its final name; a stale partial name is
    // harmless (and removed at the next start) if this unlink fails.
    let _ = fs::remove_file(from);
    Ok(())
}

/// Stores the verified partial file `part` in `dir` under `name`, or the
/// first free `name.N`, never replacing an existing file (even one created
/// concurrently by another transfer). Returns the final path.
pub fn store_no_replace(part: &Path, dir: &Path, name: &str) -> std::io::Result<PathBuf> {
    for i in 0..MAX_NAME_TRIES {
        let dest = dir.join(candidate_name(name, i));
        match rename_noreplace(part, &dest) {
            Ok(()) => return Ok(dest),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AlreadyExists,
        format!(
            "no free file name ({name:?} and {} variants are taken)",
            MAX_NAME_TRIES - 1
        ),
    ))
}

/// True for our partial-file names (`.dsoftbus-<id>-<rand>.part`).
pub fn is_part_name(name: &str) -> bool {
    name.starts_with(".dsoftbus-") && name.ends_with(".part")
}

/// Deletes partial files left in `inbox` by a daemon that was killed (no
/// transfer is in progress when the daemon starts). Returns how many.
pub fn remove_stale_parts(inbox: &Path) -> std::io::Result<usize> {
    let mut n = 0;
    for e in fs::read_dir(inbox)? {
        let e = e?;
        let stale = e.file_name().to_str().is_some_and(is_part_name)
            && e.file_type().is_ok_and(|t| t.is_file());
        if stale && fs::remove_file(e.path()).is_ok() {
            n += 1;
        }
    }
    Ok(n)
}

/// Creates the inbox (mode 0700, like the state directory) if it is missing.
pub fn create_inbox(inbox: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if inbox.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(inbox)
}

/// Creates directory `name` (or the first free `name.N`) in `parent`, mode
/// 0700, never reusing an existing one. Returns its path.
pub fn create_dir_noreplace(parent: &Path, name: &str) -> std::io::Result<PathBuf> {
    for i in 0..MAX_NAME_TRIES {
        let dest = parent.join(candidate_name(name, i));
        match fs::DirBuilder::new().mode(0o700).create(&dest) {
            Ok(()) => return Ok(dest),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AlreadyExists,
        format!("no free directory name ({name:?} and its variants are taken)"),
    ))
}
