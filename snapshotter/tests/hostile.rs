//! Hostile layer tars: whatever an entry says, nothing is written, linked or removed outside the root.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use snapshotter::apply::apply_layer;
use snapshotter::snapshot::ApplyTarget;
use tar::{EntryType, Header};

enum E<'a> {
    File(&'a str, &'a [u8]),
    Symlink(&'a str, &'a str),
    Hardlink(&'a str, &'a str),
    Dir(&'a str),
    Xattr(&'a str, &'a str, &'a [u8]),
}

/// A tar whose names are written raw, bypassing the tar crate's own path checks.
fn hostile_tar(entries: &[E<'_>]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = Header::new_gnu();
        let (name, kind, link, data): (&str, EntryType, &str, &[u8]) = match e {
            E::File(n, d) => (n, EntryType::Regular, "", d),
            E::Symlink(n, t) => (n, EntryType::Symlink, *t, b""),
            E::Hardlink(n, t) => (n, EntryType::Link, *t, b""),
            E::Dir(n) => (n, EntryType::Directory, "", b""),
            E::Xattr(n, k, v) => {
                b.append_pax_extensions([(format!("SCHILY.xattr.{k}").as_str(), *v)]).unwrap();
                (n, EntryType::Regular, "", b"")
            }
        };
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_cksum();
        b.append(&h, data).unwrap();
    }
    b.into_inner().unwrap()
}

struct Case {
    outer: tempfile::TempDir,
    root: PathBuf,
    lower: PathBuf,
}

impl Case {
    fn new() -> Case {
        let outer = tempfile::tempdir().unwrap();
        let root = outer.path().join("root");
        let lower = outer.path().join("lower");
        fs::create_dir(&root).unwrap();
        fs::create_dir(&lower).unwrap();
        fs::write(outer.path().join("secret"), b"host secret").unwrap();
        Case { outer, root, lower }
    }

    fn secret(&self) -> PathBuf {
        self.outer.path().join("secret")
    }

    /// The outer directory holds only what the case made, and the secret is untouched.
    fn assert_contained(&self) {
        let mut names: Vec<String> = fs::read_dir(self.outer.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["lower", "root", "secret"]);
        assert_eq!(fs::read(self.secret()).unwrap(), b"host secret");
        assert_eq!(fs::metadata(self.secret()).unwrap().nlink(), 1);
        assert_eq!(fs::read_dir(&self.lower).unwrap().count(), 0);
    }
}

fn targets(c: &Case) -> [ApplyTarget; 2] {
    [ApplyTarget::Tree(c.root.clone()), ApplyTarget::Upper { upper: c.root.clone(), lowers: vec![c.lower.clone()] }]
}

fn each(entries: &[E<'_>], check: impl Fn(&Case, bool)) {
    for i in 0..2 {
        let c = Case::new();
        let tar = hostile_tar(entries);
        let ok = apply_layer(&targets(&c)[i], &tar[..]).is_ok();
        c.assert_contained();
        check(&c, ok);
    }
}

fn outer_abs(c: &Case) -> String {
    c.outer.path().display().to_string()
}

#[test]
fn dot_dot_entries_stay_inside() {
    each(&[E::File("../escape", b"x"), E::File("a/../../../escape2", b"y"), E::File("/abs", b"z")], |c, ok| {
        assert!(ok);
        assert_eq!(fs::read(c.root.join("escape")).unwrap(), b"x");
        assert_eq!(fs::read(c.root.join("escape2")).unwrap(), b"y");
        assert_eq!(fs::read(c.root.join("abs")).unwrap(), b"z");
    });
}

#[test]
fn file_through_symlink_stays_inside() {
    // A relative symlink climbing out resolves to the root itself.
    each(&[E::Symlink("up", "../../../.."), E::File("up/pwned", b"p")], |c, ok| {
        assert!(ok);
        assert_eq!(fs::read(c.root.join("pwned")).unwrap(), b"p");
    });
    // An absolute symlink to the host directory points at a path inside the root that does not exist:
    // the write is refused or lands inside, never outside.
    let c = Case::new();
    let abs = outer_abs(&c);
    drop(c);
    each(&[E::Symlink("out", &abs), E::File("out/pwned", b"p")], |c, ok| {
        assert!(!c.outer.path().join("pwned").exists());
        if ok {
            assert!(c.root.join(c.outer.path().strip_prefix("/").unwrap()).join("pwned").exists());
        }
    });
}

#[test]
fn symlink_then_file_replaces_the_link() {
    each(&[E::Symlink("f", "/proc/self/cwd/../secret"), E::File("f", b"mine")], |c, ok| {
        assert!(ok);
        assert_eq!(fs::read(c.root.join("f")).unwrap(), b"mine");
        assert!(!fs::symlink_metadata(c.root.join("f")).unwrap().file_type().is_symlink());
    });
}

#[test]
fn absolute_hardlink_is_rejected() {
    let c = Case::new();
    let secret = c.secret().display().to_string();
    drop(c);
    each(&[E::Hardlink("h", &secret)], |c, ok| {
        assert!(!ok, "a hardlink to a host path must fail");
        assert!(!c.root.join("h").exists());
    });
    each(&[E::Hardlink("h", "../secret")], |_, ok| assert!(!ok));
    each(&[E::Hardlink("h", "/etc/passwd")], |_, ok| assert!(!ok));
}

#[test]
fn hardlink_through_symlink_is_rejected() {
    let c = Case::new();
    let abs = outer_abs(&c);
    drop(c);
    each(&[E::Symlink("sl", &abs), E::Hardlink("h", "sl/secret")], |_, ok| assert!(!ok));
    each(&[E::Symlink("sl", "../"), E::Hardlink("h", "sl/secret")], |_, ok| assert!(!ok));
}

#[test]
fn whiteouts_cannot_delete_outside() {
    let c = Case::new();
    let abs = outer_abs(&c);
    drop(c);
    each(&[E::File("../.wh.secret", b""), E::Symlink("sl", &abs), E::File("sl/.wh.secret", b"")], |_, _| {});
    each(&[E::Symlink("up", "../"), E::File("up/.wh.secret", b""), E::File("up/.wh..wh..opq", b"")], |_, _| {});
}

#[test]
fn overlay_private_xattrs_are_dropped() {
    if !rustix::process::geteuid().is_root() {
        testkit::skip("overlay_private_xattrs_are_dropped: trusted.* xattrs need root");
        return;
    }
    each(&[E::Dir("d/"), E::Xattr("d/f", "trusted.overlay.opaque", b"y"), E::Xattr("g", "user.ok", b"1")], |c, ok| {
        assert!(ok);
        let p = Path::new(&c.root).join("d/f");
        assert_eq!(snapshotter::sys::get_xattr(&p, "trusted.overlay.opaque").unwrap(), None);
        assert_eq!(snapshotter::sys::get_xattr(&c.root.join("g"), "user.ok").unwrap().as_deref(), Some(&b"1"[..]));
    });
}

#[test]
fn garbage_is_an_error_not_a_panic() {
    let c = Case::new();
    let target = ApplyTarget::Tree(c.root.clone());
    let mut junk = vec![0x1f, 0x8b];
    junk.extend((0..5000u32).map(|i| (i * 31 % 256) as u8));
    assert!(apply_layer(&target, &junk[..]).is_err());
    let mut not_tar: Vec<u8> = (0..5000u32).map(|i| (i * 17 % 251) as u8 | 1).collect();
    not_tar[0] = b'x';
    assert!(apply_layer(&target, &not_tar[..]).is_err());
    c.assert_contained();
}
