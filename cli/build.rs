//! Link options for the `rbuild` binary.
//!
//! Every `RUN` step and `rbuild debug run` starts this binary again, so its start-up is on the per-step
//! path. A PIE this size carries ~40,000 relative relocations (~1 MB of RELA entries) that the dynamic
//! loader reads and applies on every start; `-z pack-relative-relocs` stores them as a few kilobytes of
//! RELR instead. GNU ld 2.38+ and lld accept the option, and ld emits RELR only when the C library
//! supports it (glibc 2.36+), so an older toolchain links as before. It is probed once, with the same C
//! compiler rustc links through, rather than assumed.

use std::process::{Command, Stdio};

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let target_os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let target_env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if target_os != "linux" || target_env != "gnu" {
        return;
    }
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let src = out.join("relr-probe.c");
    let bin = out.join("relr-probe");
    if std::fs::write(&src, "int main(void) { return 0; }\n").is_err() {
        return;
    }
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let linked = Command::new(cc)
        .arg(&src)
        .arg("-o")
        .arg(&bin)
        .arg("-Wl,-z,pack-relative-relocs")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if linked {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}
