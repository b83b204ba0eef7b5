//! Foreign-platform builds (issue 15): RUN steps of linux/arm64 under QEMU user emulation through
//! binfmt_misc (scripts/install-test-deps registers Debian's qemu-user-static handlers with the F flag),
//! linux/386 in the kernel's 32-bit mode under the seccomp profile, and the errors where a platform cannot
//! run or a base image lacks it. Base images come from the seeded multi-platform `busybox` and
//! `debian:bookworm-slim` indexes (scripts/seed-images); results are checked with skopeo and umoci.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use support::{Rbuild, TestRegistry};

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false)
}

/// A seeded registry whose indexes hold arm64 and 386 images (seed-images marks them `seeded-v3`).
fn seeded() -> Option<TestRegistry> {
    if !is_root() {
        support::skip("foreign-platform builds need root (overlay mounts and namespaces)");
        return None;
    }
    if !cfg!(target_arch = "x86_64") {
        support::skip("scripts/seed-images makes the arm64 and 386 seeds on amd64 hosts only");
        return None;
    }
    let storage = support::seeded_storage()?;
    if !storage.join("seeded-v3").is_file() {
        support::skip(&format!(
            "{} has no multi-platform seeds (arm64, 386): run scripts/seed-images (it adds them)",
            storage.display()
        ));
        return None;
    }
    TestRegistry::seeded()
}

fn tool(name: &str) -> bool {
    if support::which(name).is_some() {
        return true;
    }
    support::skip(&format!("{name} is not installed: run scripts/install-test-deps"));
    false
}

/// Whether `rbuild debug platforms` says this host runs `platform` by emulation.
fn emulated(rb: &Rbuild, platform: &str) -> bool {
    let out = rb.ok(&["debug", "platforms"]);
    let ok = out.lines().any(|l| l.split_whitespace().next() == Some(platform) && l.contains("emulated:"));
    if !ok {
        support::skip(&format!(
            "no binfmt_misc emulator for {platform} (rbuild debug platforms:\n{out}): run scripts/install-test-deps"
        ));
    }
    ok
}

fn context(dockerfile: &str) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("Dockerfile"), dockerfile).unwrap();
    d
}

fn show(what: &str, out: &Output) -> String {
    format!(
        "{what} ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Builds `dockerfile` for `platform` into an OCI layout tar.
fn build_oci(rb: &Rbuild, dockerfile: &str, platform: &str, extra: &[&str]) -> (tempfile::TempDir, PathBuf) {
    let ctx = context(dockerfile);
    let tar = ctx.path().join("image.tar");
    let dest = format!("type=oci,dest={}", tar.display());
    let mut args = vec!["build", "--progress", "plain", "--platform", platform, "-o", &dest];
    args.extend_from_slice(extra);
    let ctx_s = ctx.path().to_str().unwrap().to_string();
    args.push(&ctx_s);
    rb.ok(&args);
    (ctx, tar)
}

/// The image for `arch` (`variant`) in an OCI archive, copied by skopeo into a one-image layout and
/// unpacked by umoci: its config and its rootfs.
fn unpack(tar: &Path, arch: &str, variant: Option<&str>, dir: &Path) -> (serde_json::Value, PathBuf) {
    let layout = dir.join("layout");
    let mut copy = Command::new("skopeo");
    copy.args(["--override-os", "linux", "--override-arch", arch]);
    if let Some(v) = variant {
        copy.args(["--override-variant", v]);
    }
    let out = copy
        .args(["copy", "--quiet"])
        .arg(format!("oci-archive:{}", tar.display()))
        .arg(format!("oci:{}:img", layout.display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show("skopeo copy", &out));
    let out = Command::new("skopeo")
        .args(["inspect", "--config"])
        .arg(format!("oci:{}:img", layout.display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show("skopeo inspect --config", &out));
    let config: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let bundle = dir.join("bundle");
    let out = Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:img", layout.display()))
        .arg(&bundle)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show("umoci unpack", &out));
    (config, bundle.join("rootfs"))
}

/// The ELF class (1: 32-bit, 2: 64-bit) and machine of an executable.
fn elf(path: &Path) -> (u8, u16) {
    let b = std::fs::read(path).unwrap();
    assert_eq!(&b[..4], b"\x7fELF", "{} is not ELF", path.display());
    (b[4], u16::from_le_bytes([b[18], b[19]]))
}

#[test]
fn arm64_run_under_qemu_gives_an_arm64_image() {
    let Some(reg) = seeded() else { return };
    let rb = Rbuild::new(&reg);
    if !emulated(&rb, "linux/arm64") || !tool("skopeo") || !tool("umoci") {
        return;
    }
    for runtime in ["namespace", "runc"] {
        if runtime == "runc" && !has_runc() {
            continue;
        }
        let dockerfile = "FROM busybox\nRUN uname -m > /arch\n";
        let (ctx, tar) = build_oci(&rb, dockerfile, "linux/arm64", &["--no-cache", "--oci-runtime", runtime]);
        let (config, rootfs) = unpack(&tar, "arm64", Some("v8"), ctx.path());
        assert_eq!(config["architecture"], "arm64", "{runtime}: {config}");
        assert_eq!(config["os"], "linux", "{runtime}: {config}");
        assert_eq!(std::fs::read_to_string(rootfs.join("arch")).unwrap(), "aarch64\n", "{runtime}");
        // The base is the index's arm64 image (EM_AARCH64), not the host's.
        assert_eq!(elf(&rootfs.join("bin/busybox")), (2, 0xb7), "{runtime}");
    }
}

fn has_runc() -> bool {
    if support::which("runc").is_some() || Path::new("/usr/sbin/runc").exists() {
        return true;
    }
    support::skip("runc is not installed: run scripts/install-test-deps");
    false
}

#[test]
fn arm64_debian_runs_its_own_dpkg() {
    let Some(reg) = seeded() else { return };
    let rb = Rbuild::new(&reg);
    if !emulated(&rb, "linux/arm64") || !tool("skopeo") || !tool("umoci") {
        return;
    }
    let dockerfile = "FROM debian:bookworm-slim\nARG TARGETARCH\n\
                      RUN dpkg --print-architecture > /dpkg-arch && echo \"$TARGETARCH\" > /target-arch\n";
    let (ctx, tar) = build_oci(&rb, dockerfile, "linux/arm64", &[]);
    let (config, rootfs) = unpack(&tar, "arm64", Some("v8"), ctx.path());
    assert_eq!(config["architecture"], "arm64", "{config}");
    assert_eq!(std::fs::read_to_string(rootfs.join("dpkg-arch")).unwrap(), "arm64\n");
    assert_eq!(std::fs::read_to_string(rootfs.join("target-arch")).unwrap(), "arm64\n");
    assert_eq!(elf(&rootfs.join("usr/bin/dpkg")), (2, 0xb7));
}

/// linux/386 runs without an emulator, in the kernel's 32-bit mode: its system calls reach the seccomp
/// filters as i386 calls, which the profile must allow by their i386 numbers (an x86_64-only filter
/// answers every one with EPERM, and the shell cannot even start), and still deny what it denies.
#[test]
fn linux_386_runs_under_the_seccomp_profile() {
    let Some(reg) = seeded() else { return };
    let rb = Rbuild::new(&reg);
    if !tool("skopeo") || !tool("umoci") {
        return;
    }
    if std::env::consts::ARCH != "x86_64" {
        support::skip("linux/386 runs natively on amd64 hosts only");
        return;
    }
    let dockerfile = "FROM busybox\n\
         RUN ls / > /dev/null && wget --help > /dev/null 2>&1; grep -c . /etc/passwd > /lines \
             && grep Seccomp: /proc/self/status > /seccomp \
             && if mount -t tmpfs none /mnt 2>/dev/null; then echo mounted > /mount; else echo denied > /mount; fi\n";
    for runtime in ["namespace", "runc"] {
        if runtime == "runc" && !has_runc() {
            continue;
        }
        let (ctx, tar) = build_oci(&rb, dockerfile, "linux/386", &["--no-cache", "--oci-runtime", runtime]);
        let (config, rootfs) = unpack(&tar, "386", None, ctx.path());
        assert_eq!(config["architecture"], "386", "{runtime}: {config}");
        assert_eq!(elf(&rootfs.join("bin/busybox")), (1, 0x03), "{runtime}: the base is the index's i386 image");
        assert_eq!(std::fs::read_to_string(rootfs.join("lines")).unwrap(), "3\n", "{runtime}");
        // Filter mode (2): the profile was on, and mount(2) stayed denied for the 32-bit ABI too.
        assert_eq!(std::fs::read_to_string(rootfs.join("seccomp")).unwrap(), "Seccomp:\t2\n", "{runtime}");
        assert_eq!(std::fs::read_to_string(rootfs.join("mount")).unwrap(), "denied\n", "{runtime}");
    }
}

/// Runs rbuild in a mount namespace of its own where /proc/sys/fs/binfmt_misc shows `binfmt` instead of
/// the kernel's handlers (the kernel's registrations are untouched; only what rbuild reads differs).
fn rbuild_seeing(rb: &Rbuild, binfmt: &Path, args: &[&str]) -> Output {
    let cmd = rb.command();
    let mut c = Command::new("unshare");
    c.args([
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        "mount --bind \"$0\" /proc/sys/fs/binfmt_misc && exec \"$@\"",
    ])
    .arg(binfmt)
    .arg(cmd.get_program())
    .args(cmd.get_args())
    .args(args);
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    c.output().unwrap()
}

#[test]
fn a_platform_without_an_emulator_names_the_package_to_install() {
    let Some(reg) = seeded() else { return };
    let rb = Rbuild::new(&reg);
    if !tool("unshare") {
        return;
    }
    let ctx = context("FROM scratch\nRUN true\n");
    let ctx_s = ctx.path().to_str().unwrap();
    let args = ["build", "--progress", "plain", "--platform", "linux/riscv64", ctx_s];

    // binfmt_misc as the host has it, less any riscv64 handler (whatever name registered it).
    let registered = tempfile::tempdir().unwrap();
    std::fs::write(registered.path().join("register"), "").unwrap();
    std::fs::write(registered.path().join("status"), "enabled\n").unwrap();
    let riscv_magic = "7f454c460201010000000000000000000200f300";
    for e in std::fs::read_dir("/proc/sys/fs/binfmt_misc").into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name == "register" || name == "status" {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(e.path()) else { continue };
        if !text.contains(riscv_magic) {
            std::fs::write(registered.path().join(&name), text).unwrap();
        }
    }
    let out = rbuild_seeing(&rb, registered.path(), &args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{}", show("riscv64 build", &out));
    assert!(
        err.contains(
            "Dockerfile:2 [2/2] RUN true: cannot run a step for linux/riscv64: no emulator registered; install \
             Debian's qemu-user-static"
        ),
        "{err}"
    );
    assert!(err.contains("(this host runs linux/amd64") || !cfg!(target_arch = "x86_64"), "{err}");
    assert!(!err.contains("not mounted"), "{err}");

    // No binfmt_misc at all: the message also says how to mount it.
    let empty = tempfile::tempdir().unwrap();
    let out = rbuild_seeing(&rb, empty.path(), &args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{}", show("riscv64 build without binfmt_misc", &out));
    assert!(err.contains("linux/riscv64: no emulator registered (binfmt_misc is not mounted at"), "{err}");
    assert!(err.contains("qemu-user-static"), "{err}");
}

#[test]
fn a_base_without_the_platform_names_the_platforms_it_has() {
    let Some(reg) = seeded() else { return };
    let rb = Rbuild::new(&reg);
    let ctx = context("FROM busybox\nRUN true\n");
    let out = rb.run(&["build", "--progress", "plain", "--platform", "linux/s390x", ctx.path().to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{}", show("s390x build", &out));
    assert!(err.contains("no manifest for platform linux/s390x in index sha256:"), "{err}");
    assert!(err.contains("(it has: linux/amd64, linux/arm64, linux/386)"), "{err}");
}

#[test]
fn debug_platforms_lists_emulators_and_says_when_binfmt_misc_is_missing() {
    if !is_root() {
        support::skip("a mount namespace of its own needs root");
        return;
    }
    if !tool("unshare") {
        return;
    }
    let rb = Rbuild::with_config(Path::new("/nonexistent/rbuild.toml"));
    // A binfmt_misc with one handler as Debian's qemu-user-static registers it, and one without F.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("register"), "").unwrap();
    std::fs::write(dir.path().join("status"), "enabled\n").unwrap();
    std::fs::write(
        dir.path().join("qemu-aarch64"),
        "enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: POF\noffset 0\n\
         magic 7f454c460201010000000000000000000200b700\nmask ffffffffffffff00fffffffffffffffffeffffff\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("qemu-s390x"),
        "enabled\ninterpreter /usr/bin/qemu-s390x\nflags: \noffset 0\n\
         magic 7f454c4602020100000000000000000000020016\nmask ffffffffffffff00fffffffffffffffffffeffff\n",
    )
    .unwrap();
    let out = rbuild_seeing(&rb, dir.path(), &["debug", "platforms"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", show("debug platforms", &out));
    let line = |p: &str| text.lines().find(|l| l.split_whitespace().next() == Some(p)).unwrap_or("").to_string();
    assert!(line("linux/arm64").contains("emulated: binfmt_misc qemu-aarch64"), "{text}");
    assert!(line("linux/s390x").contains("not usable") && line("linux/s390x").contains("fix-binary flag F"), "{text}");
    if cfg!(target_arch = "x86_64") {
        assert!(line("linux/amd64").contains("native"), "{text}");
        assert!(line("linux/386").contains("32-bit"), "{text}");
    }
    assert!(!text.contains("not mounted"), "{text}");

    let empty = tempfile::tempdir().unwrap();
    let out = rbuild_seeing(&rb, empty.path(), &["debug", "platforms"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("binfmt_misc is not mounted at /proc/sys/fs/binfmt_misc"), "{text}");
    assert!(!text.contains("emulated"), "{text}");
}
