//! What a run leaves in the rootfs besides the command's own changes, and how it is taken back: mount
//! points created for the spec's mounts ("stubs") are removed after the run, and the modification times
//! of their parents restored, so none of it reaches the layer (BuildKit removes stubs the same way,
//! `executor/stubs.go`). Also the secrets' tmpfs, shared by both executors.

use std::collections::HashMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use oci_spec::runtime::Spec;

use crate::process::{ProcessSpec, RunMountKind};
use crate::rootfs::{secure_join, RootfsError};
use crate::spec::EtcFiles;
use crate::sys::{self, Syscall};

/// Modification times of directories, by absolute path.
pub type Mtimes = HashMap<PathBuf, (i64, i64)>;

/// The modification times of every existing directory on the way to a mount destination, before the
/// mount points are created.
pub fn parent_mtimes(sys: &dyn Syscall, spec: &Spec, root: &Path) -> Result<Mtimes, RootfsError> {
    let mut out = HashMap::new();
    for m in spec.mounts().as_deref().unwrap_or(&[]) {
        let target = secure_join(sys, root, m.destination())?;
        for dir in target.ancestors().filter(|a| a.starts_with(root)) {
            if let Some(t) = sys::dir_mtime(dir) {
                out.insert(dir.to_path_buf(), t);
            }
        }
    }
    Ok(out)
}

/// The paths a runtime will create as mount points because they do not exist yet, parents first (for a
/// runtime that creates them itself, such as runc).
pub fn planned_stubs(sys: &dyn Syscall, spec: &Spec, root: &Path) -> Result<Vec<PathBuf>, RootfsError> {
    let mut out: Vec<PathBuf> = Vec::new();
    for m in spec.mounts().as_deref().unwrap_or(&[]) {
        let target = secure_join(sys, root, m.destination())?;
        let mut missing: Vec<PathBuf> = target
            .ancestors()
            .filter(|a| a.starts_with(root) && *a != root)
            .take_while(|a| matches!(sys.stat_is_dir(a), Ok(None)))
            .map(Path::to_path_buf)
            .collect();
        missing.reverse();
        for p in missing {
            if !out.contains(&p) {
                out.push(p);
            }
        }
    }
    Ok(out)
}

/// Removes the stubs (last first) that are still an empty file or directory, and restores the
/// modification time of each one's parent.
pub fn remove_stubs(root: &Path, stubs: &[PathBuf], mtimes: &Mtimes) -> io::Result<()> {
    for s in stubs.iter().rev() {
        match sys::remove_stub_in_root(root, s) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
            Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", s.display()))),
        }
        let parent = s.parent().unwrap_or(root);
        if let Some(mtime) = mtimes.get(parent) {
            sys::set_dir_mtime_in_root(root, parent, *mtime)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", parent.display())))?;
        }
    }
    Ok(())
}

/// Puts the secrets of `process` on a tmpfs mounted at `etc.secrets`, one file per mount with its owner
/// and mode: their bytes never touch a disk. Returns whether anything was mounted.
pub fn write_secrets(sys: &dyn Syscall, etc: &EtcFiles, process: &ProcessSpec) -> io::Result<bool> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let secrets: Vec<(usize, &[u8], u32, u32, u32)> = process
        .mounts
        .iter()
        .enumerate()
        .filter_map(|(i, m)| match &m.kind {
            RunMountKind::Secret { contents, uid, gid, mode } => Some((i, contents.as_slice(), *uid, *gid, *mode)),
            _ => None,
        })
        .collect();
    if secrets.is_empty() {
        return Ok(false);
    }
    let size: usize = secrets.iter().map(|s| s.1.len() + 4096).sum::<usize>() + 65536;
    let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    sys.mount("tmpfs", &etc.secrets, "tmpfs", flags, &format!("mode=0700,size={size}"))?;
    for (index, contents, uid, gid, mode) in secrets {
        let path = etc.secret_file(index);
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path)?;
        f.write_all(contents)?;
        std::os::unix::fs::fchown(&f, Some(uid), Some(gid))?;
        f.set_permissions(std::fs::Permissions::from_mode(mode & 0o7777))?;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::NetworkMode;
    use crate::sys::recording::RecordingSyscall;
    use crate::user::ResolvedUser;

    #[test]
    fn planned_stubs_are_the_missing_paths_parents_first() {
        let sys = RecordingSyscall::with_dirs(&["/r", "/r/etc", "/r/proc"]);
        sys.fs.borrow_mut().insert("/r/etc/hosts".into(), crate::sys::recording::Node::File);
        let mut p = ProcessSpec::new(vec!["true".into()]);
        p.network = NetworkMode::None;
        let spec =
            crate::spec::build_spec(&p, &ResolvedUser::default(), Path::new("/r"), &EtcFiles::in_dir(Path::new("/s")))
                .unwrap();
        let stubs = planned_stubs(&sys, &spec, Path::new("/r")).unwrap();
        let has = |s: &str| stubs.iter().position(|p| p == Path::new(s));
        assert!(has("/r/proc").is_none() && has("/r/etc/hosts").is_none(), "{stubs:?}");
        assert!(has("/r/dev").unwrap() < has("/r/dev/pts").unwrap(), "{stubs:?}");
        assert!(has("/r/etc/resolv.conf").is_some() && has("/r/sys").is_some(), "{stubs:?}");
    }
}
