//! End-to-end: `debug run` (the function behind `rbuild debug run`) against a busybox rootfs.

mod common;

use common::Fixture;
use sandbox::debug::{debug_run, DebugRun, DebugRunError};
use sandbox::executor::{CollectOutput, Stream};
use sandbox::{Cancel, NetworkMode, ProcessSpec};

fn run(
    f: &Fixture,
    args: &[&str],
    edit: impl FnOnce(&mut DebugRun),
) -> (Result<sandbox::RunOutcome, DebugRunError>, String) {
    let mut req = DebugRun {
        rootfs: f.lower(),
        keep: None,
        process: ProcessSpec::new(args.iter().map(|s| s.to_string()).collect()),
    };
    edit(&mut req);
    let out = CollectOutput::default();
    let r = debug_run(&*f.executor(), &req, &f.dir.path().join("state"), &out, &Cancel::default());
    (r, out.text(Stream::Stdout) + &out.text(Stream::Stderr))
}

#[test]
fn network_none_ip_link_shows_only_lo() {
    require_root!();
    let f = Fixture::new();
    let (r, out) = run(&f, &["ip", "link"], |r| r.process.network = NetworkMode::None);
    assert!(r.unwrap().status.success(), "{out}");
    let links: Vec<&str> = out.lines().filter(|l| !l.starts_with(' ')).collect();
    assert_eq!(links.len(), 1, "{out}");
    assert!(links[0].starts_with("1: lo: <LOOPBACK,UP"), "{out}");
}

#[test]
fn changes_are_discarded_or_kept() {
    require_root!();
    let f = Fixture::new();
    let etc_mtime = std::fs::metadata(f.lower().join("etc")).unwrap().modified().unwrap();
    let (r, out) = run(&f, &["sh", "-c", "echo hi > /etc/motd; mkdir /app"], |_| {});
    assert!(r.unwrap().status.success(), "{out}");
    assert!(!f.lower().join("etc/motd").exists());
    assert_eq!(common::leftover_state(&f.dir.path().join("state")), Vec::<String>::new(), "scratch left behind");

    let keep = f.dir.path().join("kept");
    let (r, out) = run(&f, &["sh", "-c", "echo hi > /created"], |r| r.keep = Some(keep.clone()));
    assert!(r.unwrap().status.success(), "{out}");
    assert_eq!(std::fs::read_to_string(keep.join("created")).unwrap(), "hi\n");
    // /etc was copied up to hold the /etc/hosts stub; the stub is gone and /etc's mtime restored, so the
    // layer would not record a change there.
    assert!(!keep.join("etc/hosts").exists());
    assert_eq!(std::fs::metadata(keep.join("etc")).unwrap().modified().unwrap(), etc_mtime);

    let (r, _) = run(&f, &["true"], |r| r.keep = Some(keep.clone()));
    assert!(matches!(r, Err(DebugRunError::KeepNotEmpty(_))));
    let (r, _) = run(&f, &["true"], |r| r.rootfs = f.dir.path().join("missing"));
    assert!(matches!(r, Err(DebugRunError::NotADirectory(_))));
}

#[test]
fn a_throwaway_overlay_is_in_memory_with_the_lowers_root() {
    require_root!();
    let f = Fixture::new();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(f.lower(), std::fs::Permissions::from_mode(0o751)).unwrap();
    // Past the run tmpfs's 64 KiB (the limit of a build step's run directory), and executable from there.
    let script = "dd if=/dev/zero of=/big bs=1024 count=512 2>/dev/null && ls -s /big && stat -c %a / && \
                  mkdir /x && cp /bin/busybox /x/true && /x/true && echo ran";
    let (r, out) = run(&f, &["sh", "-c", script], |_| {});
    assert!(r.unwrap().status.success(), "{out}");
    assert_eq!(out.split_whitespace().collect::<Vec<_>>(), ["512", "/big", "751", "ran"], "{out}");
    assert!(!f.lower().join("big").exists());
    // The namespace executor made the upper and work directories on its tmpfs: nothing on the host.
    let state = f.dir.path().join("state");
    assert_eq!(common::leftover_state(&state), Vec::<String>::new(), "scratch left behind");
    assert_eq!(std::fs::read_dir(state.join("mnt")).unwrap().count(), 0);
}
