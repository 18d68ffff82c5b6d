//! Link the kernel as a static, non-PIE ELF at 1 MiB with a PVH note, and
//! generate the 256 interrupt entry stubs (DESIGN §3).

use std::fmt::Write as _;
use std::path::PathBuf;

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
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap_or_default()).join("isr_stubs.s");
    if let Err(e) = std::fs::write(&out, s) {
        panic!("writing {}: {e}", out.display());
    }
}
