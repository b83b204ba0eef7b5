//! Helpers shared by the integration tests: root/overlay detection, state roots, tree summaries.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::sync::Arc;

use snapshotter::meta::MetaDb;
use snapshotter::root::StateRoot;

/// True when this process may mount; skips (prints why, or fails in CI: `testkit::skip`) otherwise.
pub fn can_mount(test: &str) -> bool {
    if !rustix::process::geteuid().is_root() {
        testkit::skip(&format!("{test}: needs root to mount (run the tests as root, as CI does)"));
        return false;
    }
    true
}

/// True when overlayfs can be mounted here; skips otherwise, as [`can_mount`].
pub fn can_overlay(test: &str) -> bool {
    if !can_mount(test) {
        return false;
    }
    let fss = fs::read_to_string("/proc/filesystems").unwrap_or_default();
    if !fss.lines().any(|l| l.trim_end().ends_with("overlay")) {
        testkit::skip(&format!("{test}: the kernel has no overlayfs (modprobe overlay)"));
        return false;
    }
    true
}

/// A fresh state root with its metadata database.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub root: StateRoot,
    pub meta: Arc<MetaDb>,
}

pub fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let root = StateRoot::open(dir.path().join("root"), &mut |w| panic!("{w}")).unwrap();
    let meta = Arc::new(MetaDb::open(root.meta_path()).unwrap());
    Env { dir, root, meta }
}

/// One line per path: type, mode, owner, size/content digest or link target, nlink for files, xattrs
/// (except overlay's private ones). Directory times are left out (they change with any write).
pub fn summary(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    snapshotter::fsutil::walk_sorted(root, &mut |rel, m| {
        let p = root.join(rel);
        let ft = m.file_type();
        let what = if ft.is_dir() {
            "dir".to_string()
        } else if ft.is_file() {
            let data = fs::read(&p)?;
            format!("file {} nlink={}", snapshotter::digest::of_bytes(&data), m.nlink())
        } else if ft.is_symlink() {
            format!("symlink {}", fs::read_link(&p)?.display())
        } else if ft.is_char_device() || ft.is_block_device() {
            let kind = if ft.is_char_device() { "char" } else { "block" };
            format!("{kind} {}:{}", rustix::fs::major(m.rdev()), rustix::fs::minor(m.rdev()))
        } else if ft.is_fifo() {
            "fifo".into()
        } else {
            "other".into()
        };
        let mut xattrs: Vec<String> = snapshotter::sys::list_xattrs(&p)?
            .into_iter()
            .filter(|n| !n.starts_with("trusted.overlay."))
            .map(|n| {
                let v = snapshotter::sys::get_xattr(&p, &n).unwrap().unwrap_or_default();
                format!("{n}={}", String::from_utf8_lossy(&v))
            })
            .collect();
        xattrs.sort();
        let mode = if ft.is_symlink() { 0 } else { m.mode() & 0o7777 };
        out.insert(
            rel.display().to_string(),
            format!("{what} {mode:o} {}:{} [{}]", m.uid(), m.gid(), xattrs.join(",")),
        );
        Ok(())
    })
    .unwrap();
    out
}
