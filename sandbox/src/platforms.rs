//! Which platforms this host can run RUN steps for: its own, the 32-bit one its 64-bit kernel runs
//! natively (linux/386 on amd64, linux/arm/v7 on arm64), and every platform a binfmt_misc handler is
//! registered for (QEMU user emulation: Debian's `qemu-user-static` registers them with the `F`
//! fix-binary flag, so the interpreter works inside a RUN step's root). Read from
//! `/proc/sys/fs/binfmt_misc`; a handler is recognised by the ELF header its magic matches, not by its
//! name, so any registration tool's entries count.

use std::path::{Path, PathBuf};

use llb::Platform;

/// How a platform runs here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum How {
    /// The host's own.
    Native,
    /// The 32-bit sibling of the host's architecture, run by the kernel itself.
    Compat,
    /// Through a registered interpreter. `fix_binary` (flag `F`) means the kernel opened it at
    /// registration, so it need not exist inside the step's root; without it, RUN steps cannot use it.
    Emulated { handler: String, interpreter: PathBuf, fix_binary: bool },
}

/// A platform and how it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Runnable {
    pub platform: Platform,
    pub how: How,
}

/// Where the kernel shows binfmt_misc handlers.
pub const BINFMT_MISC: &str = "/proc/sys/fs/binfmt_misc";

/// The platforms this host runs: native first, then compat, then emulated ones (enabled handlers only,
/// one per platform, sorted).
pub fn runnable() -> Vec<Runnable> {
    runnable_with(&Platform::host(), Path::new(BINFMT_MISC))
}

/// [`runnable`] for a host platform and a binfmt_misc directory (for tests).
pub fn runnable_with(host: &Platform, binfmt: &Path) -> Vec<Runnable> {
    let mut out = vec![Runnable { platform: host.clone(), how: How::Native }];
    if let Some(p) = compat(host) {
        out.push(Runnable { platform: p, how: How::Compat });
    }
    let mut emulated: Vec<Runnable> = Vec::new();
    let mut names: Vec<PathBuf> =
        std::fs::read_dir(binfmt).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default();
    names.sort();
    for path in names {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if name == "register" || name == "status" {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&path) else { continue };
        let Some(entry) = Handler::parse(&text) else { continue };
        let Some(platform) = entry.platform() else { continue };
        if !entry.enabled || out.iter().chain(&emulated).any(|r| r.platform == platform) {
            continue;
        }
        let how =
            How::Emulated { handler: name, interpreter: entry.interpreter, fix_binary: entry.flags.contains('F') };
        emulated.push(Runnable { platform, how });
    }
    emulated.sort_by_key(|r| r.platform.to_string());
    out.extend(emulated);
    out
}

/// Why RUN steps for a platform cannot run here, and what to install or change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unrunnable {
    /// No handler for the platform's executables (or binfmt_misc is not mounted at all).
    #[error(
        "{target}: no emulator registered{}; install Debian's qemu-user-static (it registers binfmt_misc \
         handlers with the fix-binary flag), or build on a {target} machine (this host runs {})",
        if *.binfmt_mounted { String::new() } else { format!(" (binfmt_misc is not mounted at {BINFMT_MISC}: `mount -t binfmt_misc binfmt_misc {BINFMT_MISC}`)") },
        .runs.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(", ")
    )]
    NoEmulator { target: Platform, runs: Vec<Platform>, binfmt_mounted: bool },
    /// A handler exists but without the `F` flag, so the interpreter is looked up inside the step's root.
    #[error(
        "{target}: the emulator ({handler}: {}) is registered without the fix-binary flag (F), so a RUN step's \
         root cannot reach it; register it with F (Debian's qemu-user-static does), e.g. \
         `apt-get install --reinstall qemu-user-static binfmt-support`",
        .interpreter.display()
    )]
    NoFixBinary { target: Platform, handler: String, interpreter: PathBuf },
}

/// Whether RUN steps for `target` can run here, and if not, what to do.
pub fn check(target: &Platform) -> Result<How, Unrunnable> {
    check_in(target, &Platform::host(), Path::new(BINFMT_MISC))
}

/// [`check`] for a host platform and a binfmt_misc directory (for tests).
pub fn check_in(target: &Platform, host: &Platform, binfmt: &Path) -> Result<How, Unrunnable> {
    check_with(target, &runnable_with(host, binfmt)).map_err(|e| match e {
        Unrunnable::NoEmulator { target, runs, .. } => {
            Unrunnable::NoEmulator { target, runs, binfmt_mounted: binfmt.join("register").exists() }
        }
        e => e,
    })
}

/// [`check`] against a list from [`runnable_with`] (binfmt_misc taken as mounted).
pub fn check_with(target: &Platform, runnable: &[Runnable]) -> Result<How, Unrunnable> {
    let found = runnable.iter().find(|r| r.platform.runs(target));
    match found {
        Some(Runnable { how: How::Emulated { handler, interpreter, fix_binary: false }, .. }) => {
            Err(Unrunnable::NoFixBinary {
                target: target.clone(),
                handler: handler.clone(),
                interpreter: interpreter.clone(),
            })
        }
        Some(r) => Ok(r.how.clone()),
        None => Err(Unrunnable::NoEmulator {
            target: target.clone(),
            runs: runnable.iter().map(|r| r.platform.clone()).collect(),
            binfmt_mounted: true,
        }),
    }
}

/// The 32-bit platform a 64-bit host's kernel runs natively.
fn compat(host: &Platform) -> Option<Platform> {
    match host.architecture.as_str() {
        "amd64" => Some(Platform::new(&host.os, "386", None)),
        "arm64" => Some(Platform::new(&host.os, "arm", Some("v7"))),
        _ => None,
    }
}

/// One binfmt_misc handler as the kernel prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Handler {
    enabled: bool,
    interpreter: PathBuf,
    flags: String,
    offset: usize,
    magic: Vec<u8>,
    mask: Option<Vec<u8>>,
}

impl Handler {
    /// `enabled` / `interpreter PATH` / `flags: F` / `offset 0` / `magic HEX` / `mask HEX`; extension
    /// handlers (no magic) are not ELF handlers and give `None`.
    fn parse(text: &str) -> Option<Handler> {
        let mut h = Handler {
            enabled: false,
            interpreter: PathBuf::new(),
            flags: String::new(),
            offset: 0,
            magic: Vec::new(),
            mask: None,
        };
        for line in text.lines() {
            let line = line.trim();
            if line == "enabled" {
                h.enabled = true;
            } else if let Some(p) = line.strip_prefix("interpreter ") {
                h.interpreter = PathBuf::from(p.trim());
            } else if let Some(f) = line.strip_prefix("flags:") {
                h.flags = f.trim().to_string();
            } else if let Some(o) = line.strip_prefix("offset ") {
                h.offset = o.trim().parse().ok()?;
            } else if let Some(m) = line.strip_prefix("magic ") {
                h.magic = hex::decode(m.trim()).ok()?;
            } else if let Some(m) = line.strip_prefix("mask ") {
                h.mask = Some(hex::decode(m.trim()).ok()?);
            }
        }
        (!h.magic.is_empty()).then_some(h)
    }

    /// The platform of the ELF executables the handler's magic matches: class (byte 4), data (byte 5)
    /// and machine (bytes 18-19) of the ELF header.
    fn platform(&self) -> Option<Platform> {
        if self.offset != 0 || self.magic.len() < 20 || !self.magic.starts_with(b"\x7fELF") {
            return None;
        }
        let class = self.magic[4];
        let little = self.magic[5] == 1;
        let machine = if little {
            u16::from_le_bytes([self.magic[18], self.magic[19]])
        } else {
            u16::from_be_bytes([self.magic[18], self.magic[19]])
        };
        let arch = match (machine, class, little) {
            (0x3e, 2, true) => "amd64",
            (0x03, 1, true) => "386",
            (0xb7, 2, true) => "arm64",
            (0x28, 1, true) => return Some(Platform::new("linux", "arm", Some("v7"))),
            (0xf3, 2, true) => "riscv64",
            (0x15, 2, true) => "ppc64le",
            (0x15, 2, false) => "ppc64",
            (0x16, 2, false) => "s390x",
            (0x08, 2, true) => "mips64le",
            (0x08, 2, false) => "mips64",
            (0x102, 2, true) => "loong64",
            _ => return None,
        };
        Some(Platform::new("linux", arch, None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What Debian's qemu-user-static registers for aarch64 and riscv64 (bookworm), and an extension
    /// handler.
    const AARCH64: &str = "enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: POCF\noffset 0\n\
        magic 7f454c460201010000000000000000000200b700\nmask ffffffffffffff00fffffffffffffffffeffffff\n";
    const RISCV64: &str = "enabled\ninterpreter /usr/libexec/qemu-binfmt/riscv64-binfmt-P\nflags: POC\noffset 0\n\
        magic 7f454c460201010000000000000000000200f300\nmask ffffffffffffff00fffffffffffffffffeffffff\n";
    const ARM: &str = "disabled\ninterpreter /usr/bin/qemu-arm-static\nflags: F\noffset 0\n\
        magic 7f454c4601010100000000000000000002002800\nmask ffffffffffffff00fffffffffffffffffeffffff\n";
    const EXTENSION: &str = "enabled\ninterpreter /usr/bin/wine\nflags: \nextension .exe\n";

    fn dir(entries: &[(&str, &str)]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("register"), "").unwrap();
        for (name, text) in entries {
            std::fs::write(d.path().join(name), text).unwrap();
        }
        std::fs::write(d.path().join("status"), "enabled\n").unwrap();
        d
    }

    #[test]
    fn native_compat_and_registered_emulators() {
        let amd64: Platform = "linux/amd64".parse().unwrap();
        let d = dir(&[("qemu-aarch64", AARCH64), ("qemu-riscv64", RISCV64), ("qemu-arm", ARM), ("wine", EXTENSION)]);
        let r = runnable_with(&amd64, d.path());
        let names: Vec<String> = r.iter().map(|r| r.platform.to_string()).collect();
        // The disabled arm handler and the extension handler do not count.
        assert_eq!(names, ["linux/amd64", "linux/386", "linux/arm64", "linux/riscv64"]);
        assert_eq!(r[0].how, How::Native);
        assert_eq!(r[1].how, How::Compat);
        assert!(matches!(&r[2].how, How::Emulated { fix_binary: true, handler, .. } if handler == "qemu-aarch64"));

        assert_eq!(check_with(&"linux/arm64".parse().unwrap(), &r), Ok(r[2].how.clone()));
        // An emulator without F cannot serve a chroot.
        let e = check_with(&"linux/riscv64".parse().unwrap(), &r).unwrap_err().to_string();
        assert!(e.starts_with("linux/riscv64: the emulator (qemu-riscv64: "), "{e}");
        assert!(e.contains("without the fix-binary flag (F)"), "{e}");
        let e = check_with(&"linux/s390x".parse().unwrap(), &r).unwrap_err().to_string();
        assert!(e.starts_with("linux/s390x: no emulator registered; install Debian's qemu-user-static"), "{e}");
        assert!(e.contains("(this host runs linux/amd64, linux/386, linux/arm64, linux/riscv64)"), "{e}");
    }

    #[test]
    fn no_binfmt_misc_means_native_and_compat_only() {
        let arm64: Platform = "linux/arm64".parse().unwrap();
        let r = runnable_with(&arm64, Path::new("/nonexistent/binfmt_misc"));
        let names: Vec<String> = r.iter().map(|r| r.platform.to_string()).collect();
        assert_eq!(names, ["linux/arm64", "linux/arm/v7"]);
        // arm/v7 runs arm/v6 binaries too.
        assert_eq!(check_with(&"linux/arm/v6".parse().unwrap(), &r), Ok(How::Compat));
    }

    #[test]
    fn check_in_reads_the_binfmt_directory() {
        let amd64: Platform = "linux/amd64".parse().unwrap();
        let riscv: Platform = "linux/riscv64".parse().unwrap();
        let arm64: Platform = "linux/arm64".parse().unwrap();
        // Only aarch64 registered: riscv64 names itself and the package; the host's own needs nothing.
        let d = dir(&[("qemu-aarch64", AARCH64)]);
        assert!(matches!(check_in(&arm64, &amd64, d.path()), Ok(How::Emulated { fix_binary: true, .. })));
        assert_eq!(check_in(&amd64, &amd64, d.path()), Ok(How::Native));
        assert_eq!(check_in(&"linux/386".parse().unwrap(), &amd64, d.path()), Ok(How::Compat));
        let e = check_in(&riscv, &amd64, d.path()).unwrap_err();
        assert!(matches!(&e, Unrunnable::NoEmulator { target, binfmt_mounted: true, .. } if *target == riscv));
        let e = e.to_string();
        assert!(e.starts_with("linux/riscv64: no emulator registered; install Debian's qemu-user-static"), "{e}");
        // binfmt_misc not mounted: the message says so and how to mount it.
        let e = check_in(&riscv, &amd64, Path::new("/nonexistent/binfmt_misc")).unwrap_err().to_string();
        assert!(e.contains("binfmt_misc is not mounted at /proc/sys/fs/binfmt_misc"), "{e}");
        assert!(e.contains("qemu-user-static"), "{e}");
    }
}
