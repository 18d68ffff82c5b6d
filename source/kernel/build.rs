//! Link the kernel as a static, non-PIE ELF at 1 MiB with a PVH note,
//! generate the 256 interrupt entry stubs (DESIGN §3), and build and embed
//! the user programs.
//!
//! The user programs (services, apps, probes) are separate executables of
//! this workspace. Cargo's artifact dependencies are unstable, so this
//! script builds them itself with a nested `cargo build --release` into
//! `target/user` (its own target directory, so the nested build never waits
//! for the outer one's lock) and embeds each ELF with `include_bytes!`. The
//! kernel crate depends on none of them; `init.rs` names images.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// (package, executables) built and embedded, in init-table order.
const PROGRAMS: &[(&str, &[&str])] = &[
    ("ipc-selftest", &["ipc-selftest", "ipc-echo"]),
    ("netstackd", &["netstackd"]),
    ("blkd", &["blkd"]),
    ("keystored", &["keystored"]),
    ("samgrd", &["samgrd"]),
    ("selftest-client", &["selftest-client"]),
    ("dsoftbusd", &["dsoftbusd"]),
    (
        "probes",
        &[
            "probe-mmio",
            "probe-kread",
            "probe-textwrite",
            "probe-stackexec",
            "probe-stackguard",
            "probe-quota",
            "probe-spin",
        ],
    ),
];

const TARGET: &str = "x86_64-unknown-linux-gnu";

fn out_dir() -> PathBuf {
    PathBuf::from(std::env::var("OUT_DIR").unwrap_or_default())
}

fn isr_stubs() {
    // Vectors that push an error code themselves.
    const WITH_ERROR: [u32; 10] = [8, 10, 11, 12, 13, 14, 17, 21, 29, 30];
    let mut s = String::from(".section .text\n.code64\n");
    for v in 0..256u32 {
        let _ = writeln!(s, ".p2align 4\nisr_stub_{v}:");
        if !WITH_ERROR.contains(&v) {
            let _ = writeln!(s, "    pushq $0");
        }
        let _ = writeln!(s, "    pushq ${v}\n    jmp isr_common");
    }
    s.push_str(".section .rodata\n.p2align 3\n.global isr_stub_table\nisr_stub_table:\n");
    for v in 0..256u32 {
        let _ = writeln!(s, "    .quad isr_stub_{v}");
    }
    let out = out_dir().join("isr_stubs.s");
    if let Err(e) = std::fs::write(&out, s) {
        panic!("writing {}: {e}", out.display());
    }
}

/// Environment a nested cargo may inherit: where the toolchain and the
/// registry live, proxies, terminal. Everything else (this build script's
/// CARGO_*/TARGET/PROFILE variables, clippy's RUSTC_WORKSPACE_WRAPPER, the
/// jobserver) belongs to the outer build.
fn keep_env(key: &str) -> bool {
    matches!(
        key,
        "PATH" | "HOME" | "USER" | "TERM" | "CARGO_HOME" | "RUSTUP_HOME" | "RUSTUP_TOOLCHAIN"
    ) || key.starts_with("CARGO_NET_")
        || key.starts_with("CARGO_HTTP_")
        || key.starts_with("CARGO_REGISTRIES_")
        || key.starts_with("CARGO_REGISTRY_")
        || key.ends_with("_proxy")
        || key.ends_with("_PROXY")
}

fn build_user(workspace: &Path) -> PathBuf {
    let target_dir = workspace.join("target").join("user");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.env_clear()
        .envs(std::env::vars().filter(|(k, _)| keep_env(k)))
        // The embedded images carry symbols but no debug info: the kernel
        // image stays small (about 3 MB of programs instead of 29 MB) and the
        // loader copies less. Debug builds of a program are a `cargo build`
        // of it away.
        .env("CARGO_PROFILE_RELEASE_STRIP", "debuginfo")
        .current_dir(workspace)
        .args(["build", "--release", "--target", TARGET, "--target-dir"])
        .arg(&target_dir);
    for (package, bins) in PROGRAMS {
        cmd.args(["-p", package]);
        for b in *bins {
            cmd.args(["--bin", b]);
        }
    }
    match cmd.status() {
        Ok(s) if s.success() => {}
        Ok(s) => panic!("building the user programs failed ({s}); see the cargo output above"),
        Err(e) => panic!("running cargo for the user programs: {e}"),
    }
    target_dir.join(TARGET).join("release")
}

fn embed(bin_dir: &Path) {
    let mut s = String::from(
        "/// Embedded user programs: (name, ELF image).\n\
         pub static IMAGES: &[(&str, &[u8])] = &[\n",
    );
    for (_, bins) in PROGRAMS {
        for b in *bins {
            let path = bin_dir.join(b);
            println!("cargo:rerun-if-changed={}", path.display());
            let _ = writeln!(
                s,
                "    ({b:?}, include_bytes!({:?})),",
                path.display().to_string()
            );
        }
    }
    s.push_str("];\n");
    let out = out_dir().join("images.rs");
    if let Err(e) = std::fs::write(&out, s) {
        panic!("writing {}: {e}", out.display());
    }
}

fn main() {
    let dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default());
    let script = dir.join("linker.ld");
    println!("cargo:rerun-if-changed={}", script.display());
    println!("cargo:rerun-if-changed=build.rs");
    for arg in [
        "-nostartfiles",
        "-static",
        "-no-pie",
        "-Wl,--build-id=none",
        "-Wl,-n",
    ] {
        println!("cargo:rustc-link-arg-bins={arg}");
    }
    println!("cargo:rustc-link-arg-bins=-T{}", script.display());
    isr_stubs();

    let workspace = dir.parent().map(Path::to_path_buf).unwrap_or_default();
    // The nested build is incremental; these paths decide when it reruns.
    for p in ["services", "apps", "libs", "Cargo.lock", "Cargo.toml"] {
        println!("cargo:rerun-if-changed={}", workspace.join(p).display());
    }
    let userspace = workspace.join("..").join("userspace");
    for p in [
        "net/src",
        "net/Cargo.toml",
        "dsoftbus/src",
        "dsoftbus/Cargo.toml",
    ] {
        println!("cargo:rerun-if-changed={}", userspace.join(p).display());
    }
    let bin_dir = build_user(&workspace);
    embed(&bin_dir);
}
