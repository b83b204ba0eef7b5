//! The conformance suite every snapshotter passes (after containerd's `core/snapshots/testsuite`):
//! each case writes layers through real mounts, commits them, and checks what a child or view sees.

mod common;

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;

use snapshotter::mount::TempMount;
use snapshotter::snapshot::{Kind, NativeSnapshotter, OverlaySnapshotter, SnapshotError, Snapshotter};

/// Prepares `key` on `parent`, lets `f` write through the mount, commits it as `name`.
pub fn layer(s: &dyn Snapshotter, tmp: &Path, name: &str, parent: Option<&str>, f: impl FnOnce(&Path)) {
    let key = format!("{name}-active");
    let mounts = s.prepare(&key, parent).unwrap();
    let m = TempMount::new(&mounts, tmp).unwrap();
    f(m.path());
    m.unmount().unwrap();
    s.commit(name, &key).unwrap();
}

/// The tree a read-only view of `parent` shows.
pub fn view_summary(s: &dyn Snapshotter, tmp: &Path, parent: &str) -> std::collections::BTreeMap<String, String> {
    let key = format!("view-of-{parent}");
    let mounts = s.view(&key, Some(parent)).unwrap();
    let m = TempMount::new(&mounts, tmp).unwrap();
    let out = common::summary(m.path());
    assert!(fs::write(m.path().join("probe"), b"x").is_err(), "a view must be read-only");
    m.unmount().unwrap();
    s.remove(&key).unwrap();
    out
}

fn chown(p: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(p, Some(uid), Some(gid)).unwrap();
}

pub fn basic(s: &dyn Snapshotter, tmp: &Path) {
    layer(s, tmp, "base", None, |r| {
        fs::create_dir_all(r.join("etc")).unwrap();
        fs::write(r.join("etc/hosts"), b"127.0.0.1 localhost\n").unwrap();
        fs::write(r.join("etc/keep"), b"k").unwrap();
    });
    layer(s, tmp, "child", Some("base"), |r| {
        fs::write(r.join("etc/hosts"), b"changed\n").unwrap();
        fs::create_dir(r.join("new")).unwrap();
        fs::write(r.join("new/file"), b"n").unwrap();
    });
    let v = view_summary(s, tmp, "child");
    assert_eq!(v.keys().cloned().collect::<Vec<_>>(), ["etc", "etc/hosts", "etc/keep", "new", "new/file"]);
    assert!(v["etc/hosts"].contains(snapshotter::digest::of_bytes(b"changed\n").as_ref()));
    let base = view_summary(s, tmp, "base");
    assert!(base["etc/hosts"].contains(snapshotter::digest::of_bytes(b"127.0.0.1 localhost\n").as_ref()));
    assert!(!base.contains_key("new"));
    assert_eq!(s.stat("child").unwrap().kind, Kind::Committed);
    assert_eq!(s.stat("child").unwrap().parent.as_deref(), Some("base"));
    assert!(s.usage("child").unwrap().inodes >= 3);
}

pub fn deleted_files_in_child(s: &dyn Snapshotter, tmp: &Path) {
    layer(s, tmp, "base", None, |r| {
        fs::write(r.join("a"), b"a").unwrap();
        fs::write(r.join("b"), b"b").unwrap();
    });
    layer(s, tmp, "child", Some("base"), |r| fs::remove_file(r.join("a")).unwrap());
    let v = view_summary(s, tmp, "child");
    assert_eq!(v.keys().cloned().collect::<Vec<_>>(), ["b"]);
    assert!(view_summary(s, tmp, "base").contains_key("a"));
}

pub fn removed_dir_in_lower(s: &dyn Snapshotter, tmp: &Path) {
    layer(s, tmp, "base", None, |r| {
        fs::create_dir_all(r.join("d/sub")).unwrap();
        fs::write(r.join("d/sub/f"), b"f").unwrap();
        fs::write(r.join("top"), b"t").unwrap();
    });
    layer(s, tmp, "child", Some("base"), |r| fs::remove_dir_all(r.join("d")).unwrap());
    layer(s, tmp, "grandchild", Some("child"), |r| fs::write(r.join("later"), b"l").unwrap());
    let v = view_summary(s, tmp, "grandchild");
    assert_eq!(v.keys().cloned().collect::<Vec<_>>(), ["later", "top"]);
}

pub fn opaque_dirs(s: &dyn Snapshotter, tmp: &Path) {
    layer(s, tmp, "base", None, |r| {
        fs::create_dir(r.join("d")).unwrap();
        fs::write(r.join("d/old1"), b"1").unwrap();
        fs::write(r.join("d/old2"), b"2").unwrap();
    });
    // Removing a directory and recreating it makes it opaque in overlay.
    layer(s, tmp, "child", Some("base"), |r| {
        fs::remove_dir_all(r.join("d")).unwrap();
        fs::create_dir(r.join("d")).unwrap();
        fs::write(r.join("d/new"), b"n").unwrap();
    });
    let v = view_summary(s, tmp, "child");
    assert_eq!(v.keys().cloned().collect::<Vec<_>>(), ["d", "d/new"]);
}

pub fn many_layers(s: &dyn Snapshotter, tmp: &Path) {
    let n = 500;
    let mut parent: Option<String> = None;
    for i in 0..n {
        let name = format!("l{i}");
        layer(s, tmp, &name, parent.as_deref(), |r| {
            fs::write(r.join(format!("f{i}")), i.to_string()).unwrap();
            if i > 0 {
                fs::remove_file(r.join(format!("f{}", i - 1))).unwrap_or(());
            }
            fs::write(r.join("last"), i.to_string()).unwrap();
        });
        parent = Some(name);
    }
    let v = view_summary(s, tmp, &format!("l{}", n - 1));
    assert_eq!(v.keys().cloned().collect::<Vec<_>>(), [format!("f{}", n - 1), "last".to_string()]);
    assert!(v["last"].contains(snapshotter::digest::of_bytes((n - 1).to_string().as_bytes()).as_ref()));
}

pub fn hardlinks(s: &dyn Snapshotter, tmp: &Path) {
    layer(s, tmp, "base", None, |r| {
        fs::write(r.join("orig"), b"data").unwrap();
        fs::hard_link(r.join("orig"), r.join("link")).unwrap();
    });
    layer(s, tmp, "child", Some("base"), |r| {
        fs::write(r.join("new"), b"x").unwrap();
        fs::hard_link(r.join("new"), r.join("new-link")).unwrap();
    });
    let v = view_summary(s, tmp, "child");
    assert!(v["new"].contains("nlink=2") && v["new-link"].contains("nlink=2"), "{v:?}");
    let b = view_summary(s, tmp, "base");
    assert!(b["orig"].contains("nlink=2") && b["link"].contains("nlink=2"), "{b:?}");
}

pub fn xattrs(s: &dyn Snapshotter, tmp: &Path) {
    layer(s, tmp, "base", None, |r| {
        fs::write(r.join("f"), b"x").unwrap();
        snapshotter::sys::set_xattr(&r.join("f"), "user.color", b"blue").unwrap();
        snapshotter::sys::set_xattr(
            &r.join("f"),
            "security.capability",
            &[1, 0, 0, 2, 0, 32, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        )
        .unwrap();
    });
    layer(s, tmp, "child", Some("base"), |r| {
        snapshotter::sys::set_xattr(&r.join("f"), "user.size", b"big").unwrap();
    });
    let v = view_summary(s, tmp, "child");
    assert!(v["f"].contains("user.color=blue") && v["f"].contains("user.size=big"), "{v:?}");
    assert!(v["f"].contains("security.capability="), "{v:?}");
}

pub fn special_bits(s: &dyn Snapshotter, tmp: &Path) {
    layer(s, tmp, "base", None, |r| {
        fs::write(r.join("suid"), b"#!").unwrap();
        fs::set_permissions(r.join("suid"), fs::Permissions::from_mode(0o4755)).unwrap();
        fs::create_dir(r.join("sticky")).unwrap();
        fs::set_permissions(r.join("sticky"), fs::Permissions::from_mode(0o1777)).unwrap();
        fs::create_dir(r.join("sgid")).unwrap();
        fs::set_permissions(r.join("sgid"), fs::Permissions::from_mode(0o2750)).unwrap();
        symlink("/does/not/exist", r.join("dangling")).unwrap();
        snapshotter::sys::mknodat(
            fs::File::open(r).unwrap(),
            "null",
            rustix::fs::FileType::CharacterDevice,
            0o666,
            1,
            3,
        )
        .unwrap();
        snapshotter::sys::mknodat(fs::File::open(r).unwrap(), "fifo", rustix::fs::FileType::Fifo, 0o600, 0, 0).unwrap();
    });
    layer(s, tmp, "child", Some("base"), |_| {});
    let v = view_summary(s, tmp, "child");
    assert!(v["suid"].starts_with("file") && v["suid"].contains(" 4755 "), "{v:?}");
    assert!(v["sticky"].contains(" 1777 ") && v["sgid"].contains(" 2750 "), "{v:?}");
    assert!(v["dangling"].contains("symlink /does/not/exist"), "{v:?}");
    assert!(v["null"].starts_with("char 1:3") && v["fifo"].starts_with("fifo"), "{v:?}");
}

pub fn ownership(s: &dyn Snapshotter, tmp: &Path) {
    layer(s, tmp, "base", None, |r| {
        fs::create_dir(r.join("home")).unwrap();
        chown(&r.join("home"), 1000, 1000);
        fs::write(r.join("home/f"), b"f").unwrap();
        chown(&r.join("home/f"), 1000, 100);
        symlink("f", r.join("home/l")).unwrap();
        chown(&r.join("home/l"), 33, 33);
    });
    layer(s, tmp, "child", Some("base"), |r| chown(&r.join("home/f"), 2000, 2000));
    let v = view_summary(s, tmp, "child");
    assert!(v["home"].contains(" 1000:1000 "), "{v:?}");
    assert!(v["home/f"].contains(" 2000:2000 "), "{v:?}");
    assert!(v["home/l"].contains(" 33:33 "), "{v:?}");
}

/// Metadata rules, no mounting needed.
pub fn lifecycle(s: &dyn Snapshotter) {
    s.prepare("a", None).unwrap();
    assert!(matches!(s.prepare("a", None), Err(SnapshotError::AlreadyExists(_))));
    assert!(matches!(s.prepare("b", Some("a")), Err(SnapshotError::ParentNotCommitted(_))));
    s.commit("A", "a").unwrap();
    assert!(matches!(s.stat("a"), Err(SnapshotError::NotFound(_))));
    assert!(matches!(s.commit("A2", "A"), Err(SnapshotError::NotActive { .. })));
    s.prepare("b", Some("A")).unwrap();
    s.view("v", Some("A")).unwrap();
    assert!(matches!(s.commit("V", "v"), Err(SnapshotError::NotActive { .. })));
    assert!(matches!(s.remove("A"), Err(SnapshotError::HasChildren(_))));
    let names: Vec<String> = s.walk().unwrap().into_iter().map(|i| i.name).collect();
    assert_eq!(names, ["A", "b", "v"]);
    s.remove("b").unwrap();
    s.remove("v").unwrap();
    s.remove("A").unwrap();
    assert!(s.walk().unwrap().is_empty());
    assert!(matches!(s.remove("A"), Err(SnapshotError::NotFound(_))));
}

macro_rules! suite {
    ($module:ident, $ty:ty, $check:path) => {
        mod $module {
            use super::*;

            fn run(name: &str, case: fn(&dyn Snapshotter, &Path)) {
                if !$check(name) {
                    return;
                }
                let env = common::env();
                let s = <$ty>::new(&env.root, env.meta.clone()).unwrap();
                case(&s, &env.root.tmp_dir());
            }

            #[test]
            fn lifecycle() {
                let env = common::env();
                let s = <$ty>::new(&env.root, env.meta.clone()).unwrap();
                super::lifecycle(&s);
            }

            #[test]
            fn basic() {
                run("basic", super::basic);
            }

            #[test]
            fn deleted_files_in_child() {
                run("deleted_files_in_child", super::deleted_files_in_child);
            }

            #[test]
            fn removed_dir_in_lower() {
                run("removed_dir_in_lower", super::removed_dir_in_lower);
            }

            #[test]
            fn opaque_dirs() {
                run("opaque_dirs", super::opaque_dirs);
            }

            #[test]
            fn many_layers() {
                run("many_layers", super::many_layers);
            }

            #[test]
            fn hardlinks() {
                run("hardlinks", super::hardlinks);
            }

            #[test]
            fn xattrs() {
                run("xattrs", super::xattrs);
            }

            #[test]
            fn special_bits() {
                run("special_bits", super::special_bits);
            }

            #[test]
            fn ownership() {
                run("ownership", super::ownership);
            }
        }
    };
}

suite!(overlay, OverlaySnapshotter, common::can_overlay);
suite!(native, NativeSnapshotter, common::can_mount);
