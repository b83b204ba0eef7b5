//! The container's filesystem view: spec mounts inside the rootfs, a minimal /dev, pivot_root, masked
//! and read-only paths. Follows runc `libcontainer/rootfs_linux.go`; every call goes through
//! [`Syscall`] so the sequence is unit-tested without root.

use std::io;
use std::path::{Component, Path, PathBuf};

use oci_spec::runtime::{Mount as OciMount, Spec};

use crate::sys::{MountFlags, Syscall};

#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("cannot resolve {path} inside the rootfs: {source}")]
    Resolve { path: PathBuf, source: io::Error },
    #[error("cannot create mount point {path}: {source}")]
    MountPoint { path: PathBuf, source: io::Error },
    #[error("cannot mount {kind} on {target}: {source}")]
    Mount { kind: String, target: PathBuf, source: io::Error },
    #[error("cannot pivot_root into {root}: {source}")]
    Pivot { root: PathBuf, source: io::Error },
    #[error("cannot mask {path}: {source}")]
    Mask { path: PathBuf, source: io::Error },
    #[error("cannot create working directory {path}: {source}")]
    Workdir { path: PathBuf, source: io::Error },
    #[error("the spec has no {0}; build it with sandbox::spec::build_spec")]
    Incomplete(&'static str),
}

const MAX_SYMLINKS: usize = 255;

/// Resolves `path` inside `root` the way the container will see it: `..` cannot climb above the root and
/// absolute symlinks restart at the root (filepath-securejoin, which runc uses for mount destinations).
pub fn secure_join(sys: &dyn Syscall, root: &Path, path: &Path) -> Result<PathBuf, RootfsError> {
    let err = |source| RootfsError::Resolve { path: path.to_path_buf(), source };
    let mut resolved = PathBuf::new();
    let mut pending: Vec<PathBuf> = components_rev(path);
    let mut links = 0;
    while let Some(c) = pending.pop() {
        if c.as_os_str() == ".." {
            resolved.pop();
            continue;
        }
        let candidate = resolved.join(&c);
        match sys.read_link(&root.join(&candidate)).map_err(err)? {
            Some(target) => {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(err(io::Error::from_raw_os_error(libc::ELOOP)));
                }
                if target.is_absolute() {
                    resolved = PathBuf::new();
                }
                pending.extend(components_rev(&target));
            }
            None => resolved = candidate,
        }
    }
    Ok(root.join(resolved))
}

/// The normal and `..` components of `p`, last first (a stack).
fn components_rev(p: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = p
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(PathBuf::from(n)),
            Component::ParentDir => Some(PathBuf::from("..")),
            _ => None,
        })
        .collect();
    v.reverse();
    v
}

/// Creates `path` and its missing parents as directories, appending what it created to `created`.
pub fn mkdir_all(sys: &dyn Syscall, path: &Path, created: &mut Vec<PathBuf>) -> io::Result<()> {
    match sys.stat_is_dir(path)? {
        Some(true) => return Ok(()),
        Some(false) => return Err(io::Error::from_raw_os_error(libc::ENOTDIR)),
        None => {}
    }
    if let Some(parent) = path.parent() {
        mkdir_all(sys, parent, created)?;
    }
    match sys.mkdir(path, 0o755) {
        Ok(()) => {
            created.push(path.to_path_buf());
            Ok(())
        }
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
        Err(e) => Err(e),
    }
}

/// mount(2) flags and the filesystem data for fstab-style options.
pub fn parse_options(options: &[String]) -> (MountFlags, String) {
    let mut flags: MountFlags = 0;
    let mut data = Vec::new();
    for o in options {
        let (set, clear) = match o.as_str() {
            "ro" => (libc::MS_RDONLY, 0),
            "rw" => (0, libc::MS_RDONLY),
            "nosuid" => (libc::MS_NOSUID, 0),
            "nodev" => (libc::MS_NODEV, 0),
            "noexec" => (libc::MS_NOEXEC, 0),
            "sync" => (libc::MS_SYNCHRONOUS, 0),
            "bind" => (libc::MS_BIND, 0),
            "rbind" => (libc::MS_BIND | libc::MS_REC, 0),
            "strictatime" => (libc::MS_STRICTATIME, 0),
            "relatime" => (libc::MS_RELATIME, 0),
            "noatime" => (libc::MS_NOATIME, 0),
            "nodiratime" => (libc::MS_NODIRATIME, 0),
            _ => {
                data.push(o.as_str());
                continue;
            }
        };
        flags = (flags | set) & !clear;
    }
    (flags, data.join(","))
}

/// Where the spec mounts and device binds were set up; the stubs list says which mount points did not
/// exist before (BuildKit removes those after the run so they never reach the layer).
#[derive(Debug, Default)]
pub struct Prepared {
    pub stubs: Vec<PathBuf>,
}

/// Devices made in the container's /dev tmpfs (runc's default device list; ptmx comes from devpts): nodes
/// of the host's device numbers, or bind mounts of the host's nodes where mknod is not allowed.
pub const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

fn mount_one(sys: &dyn Syscall, root: &Path, m: &OciMount, stubs: &mut Vec<PathBuf>) -> Result<(), RootfsError> {
    let target = secure_join(sys, root, m.destination())?;
    let kind = m.typ().clone().unwrap_or_default();
    let source = m.source().as_ref().map(|s| s.display().to_string()).unwrap_or_default();
    let (flags, data) = parse_options(m.options().as_deref().unwrap_or(&[]));
    let is_bind = kind == "bind" || flags & libc::MS_BIND != 0;
    let merr = |source| RootfsError::Mount { kind: kind.clone(), target: target.clone(), source };
    let perr = |source| RootfsError::MountPoint { path: target.clone(), source };
    // A file bind mount needs a file to mount on; everything else a directory.
    let source_is_dir = if is_bind { sys.stat_is_dir(Path::new(&source)).map_err(merr)?.unwrap_or(true) } else { true };
    if source_is_dir {
        mkdir_all(sys, &target, stubs).map_err(perr)?;
    } else if sys.stat_is_dir(&target).map_err(perr)?.is_none() {
        if let Some(parent) = target.parent() {
            mkdir_all(sys, parent, stubs).map_err(perr)?;
        }
        sys.create_file(&target).map_err(perr)?;
        stubs.push(target.clone());
    }
    if is_bind {
        let bind_flags = libc::MS_BIND | (flags & libc::MS_REC);
        sys.mount(&source, &target, "", bind_flags, "").map_err(merr)?;
        // Bind mounts take their other flags only on a remount (mount(2)).
        let rest = flags & !(libc::MS_BIND | libc::MS_REC);
        if rest != 0 {
            sys.mount("", &target, "", libc::MS_REMOUNT | libc::MS_BIND | rest, "").map_err(merr)?;
        }
    } else {
        sys.mount(&source, &target, &kind, flags, &data).map_err(merr)?;
    }
    Ok(())
}

/// Mounts everything of `spec` inside its root, binds the devices, and pivots into the root.
/// Runs in the container's own mount namespace, before the command is started.
pub fn prepare(sys: &dyn Syscall, spec: &Spec) -> Result<Prepared, RootfsError> {
    let root = spec.root().as_ref().ok_or(RootfsError::Incomplete("root"))?.path().clone();
    let merr = |kind: &str, target: &Path| {
        let (kind, target) = (kind.to_string(), target.to_path_buf());
        move |source| RootfsError::Mount { kind, target, source }
    };
    // Nothing done here may propagate back to the host.
    sys.mount("", Path::new("/"), "", libc::MS_REC | libc::MS_PRIVATE, "").map_err(merr("private", Path::new("/")))?;
    // pivot_root needs the new root to be a mount point.
    sys.mount(&root.display().to_string(), &root, "", libc::MS_BIND | libc::MS_REC, "").map_err(merr("bind", &root))?;
    let mut prepared = Prepared::default();
    let mut dev = None;
    for m in spec.mounts().as_deref().unwrap_or(&[]) {
        if m.destination() == Path::new("/dev") {
            dev = Some(m.options().as_deref().unwrap_or(&[]).iter().any(|o| o == "nodev"));
        }
        mount_one(sys, &root, m, &mut prepared.stubs)?;
    }
    if let Some(nodev) = dev {
        setup_dev(sys, &root, nodev)?;
    }
    if let Some(p) = spec.process() {
        let cwd = secure_join(sys, &root, p.cwd())?;
        let mut created = Vec::new();
        mkdir_all(sys, &cwd, &mut created).map_err(|source| RootfsError::Workdir { path: p.cwd().clone(), source })?;
    }
    pivot(sys, &root)?;
    if let Some(linux) = spec.linux() {
        for p in linux.masked_paths().as_deref().unwrap_or(&[]) {
            mask(sys, Path::new(p))?;
        }
        for p in linux.readonly_paths().as_deref().unwrap_or(&[]) {
            readonly(sys, Path::new(p))?;
        }
    }
    Ok(prepared)
}

/// `nodev`: the /dev tmpfs cannot hold usable nodes, so the host's are bound (a bind mount keeps the
/// flags of the mount it comes from).
fn setup_dev(sys: &dyn Syscall, root: &Path, nodev: bool) -> Result<(), RootfsError> {
    for d in DEVICES {
        let host = Path::new("/dev").join(d);
        let target = root.join("dev").join(d);
        let perr = |source| RootfsError::MountPoint { path: target.clone(), source };
        // A node of our own, as runc makes outside user namespaces; a bind of the host's where mknod is
        // not allowed.
        if !nodev {
            match sys.copy_device(&host, &target) {
                Ok(()) => continue,
                Err(e) if e.raw_os_error() == Some(libc::EPERM) => {}
                Err(e) => return Err(perr(e)),
            }
        }
        sys.create_file(&target).map_err(perr)?;
        sys.mount(&host.display().to_string(), &target, "", libc::MS_BIND, "")
            .map_err(|source| RootfsError::Mount { kind: "bind".into(), target: target.clone(), source })?;
    }
    for (link, to) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
        ("core", "/proc/kcore"),
    ] {
        let path = root.join("dev").join(link);
        sys.symlink(Path::new(to), &path).map_err(|source| RootfsError::MountPoint { path, source })?;
    }
    Ok(())
}

/// runc's pivot_root(".", ".") dance: no temporary directory is needed in the rootfs, and the old root is
/// made a slave before the lazy unmount so the unmount cannot propagate to the host.
fn pivot(sys: &dyn Syscall, root: &Path) -> Result<(), RootfsError> {
    let err = |source| RootfsError::Pivot { root: root.to_path_buf(), source };
    sys.chdir(root).map_err(err)?;
    sys.pivot_root(Path::new("."), Path::new(".")).map_err(err)?;
    sys.mount("", Path::new("."), "", libc::MS_SLAVE | libc::MS_REC, "").map_err(err)?;
    sys.umount(Path::new("."), true).map_err(err)?;
    sys.chdir(Path::new("/")).map_err(err)
}

/// A masked directory gets an empty read-only tmpfs, a masked file /dev/null (runc maskPath).
fn mask(sys: &dyn Syscall, path: &Path) -> Result<(), RootfsError> {
    let err = |source| RootfsError::Mask { path: path.to_path_buf(), source };
    match sys.stat_is_dir(path).map_err(err)? {
        None => Ok(()),
        Some(true) => sys.mount("tmpfs", path, "tmpfs", libc::MS_RDONLY, "").map_err(err),
        Some(false) => sys.mount("/dev/null", path, "", libc::MS_BIND, "").map_err(err),
    }
}

fn readonly(sys: &dyn Syscall, path: &Path) -> Result<(), RootfsError> {
    let err = |source| RootfsError::Mask { path: path.to_path_buf(), source };
    if sys.stat_is_dir(path).map_err(err)?.is_none() {
        return Ok(());
    }
    let p = path.display().to_string();
    sys.mount(&p, path, "", libc::MS_BIND | libc::MS_REC, "").map_err(err)?;
    sys.mount(&p, path, "", libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_REC, "").map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::{NetworkMode, ProcessSpec};
    use crate::spec::{build_spec, EtcFiles};
    use crate::sys::recording::{Call, Node, RecordingSyscall};
    use crate::user::ResolvedUser;

    fn spec(network: NetworkMode, cwd: &str) -> Spec {
        let mut p = ProcessSpec::new(vec!["true".into()]);
        p.network = network;
        p.cwd = cwd.into();
        let etc = EtcFiles { resolv_conf: "/s/resolv".into(), ..EtcFiles::in_dir(Path::new("/s")) };
        build_spec(&p, &ResolvedUser::default(), Path::new("/r"), &etc).unwrap()
    }

    fn mount_call(source: &str, target: &str, fstype: &str, flags: MountFlags, data: &str) -> Call {
        Call::Mount { source: source.into(), target: target.into(), fstype: fstype.into(), flags, data: data.into() }
    }

    #[test]
    fn secure_join_stays_inside_the_root() {
        let sys = RecordingSyscall::with_dirs(&["/r", "/r/etc"]);
        sys.fs.borrow_mut().insert("/r/etc/hosts".into(), Node::Symlink("/../../host/hosts".into()));
        sys.fs.borrow_mut().insert("/r/proc".into(), Node::Symlink("../../../".into()));
        sys.fs.borrow_mut().insert("/r/loop".into(), Node::Symlink("/loop".into()));
        assert_eq!(secure_join(&sys, Path::new("/r"), Path::new("/etc/hosts")).unwrap(), Path::new("/r/host/hosts"));
        assert_eq!(secure_join(&sys, Path::new("/r"), Path::new("/proc/self")).unwrap(), Path::new("/r/self"));
        assert_eq!(secure_join(&sys, Path::new("/r"), Path::new("/../../a/./b")).unwrap(), Path::new("/r/a/b"));
        assert!(secure_join(&sys, Path::new("/r"), Path::new("/loop/x")).is_err());
    }

    #[test]
    fn options_become_flags_and_data() {
        let opts: Vec<String> =
            ["nosuid", "ro", "mode=755", "rw", "size=1k", "rbind"].iter().map(|s| s.to_string()).collect();
        let (flags, data) = parse_options(&opts);
        assert_eq!(flags, libc::MS_NOSUID | libc::MS_BIND | libc::MS_REC);
        assert_eq!(data, "mode=755,size=1k");
    }

    #[test]
    fn prepare_mounts_pivots_and_masks_in_order() {
        let sys = RecordingSyscall::with_dirs(&["/r", "/r/proc", "/r/etc", "/s", "/sys", "/r/proc/kcore"]);
        for f in ["/s/hosts", "/s/resolv"] {
            sys.fs.borrow_mut().insert(f.into(), Node::File);
        }
        // After the pivot the double sees the same map: make a masked file and a read-only dir exist.
        sys.fs.borrow_mut().insert("/proc/kcore".into(), Node::File);
        sys.fs.borrow_mut().insert("/proc/sys".into(), Node::Dir);
        let prepared = prepare(&sys, &spec(NetworkMode::None, "/work/dir")).unwrap();
        let calls = sys.calls();
        let nosuid_noexec_nodev = libc::MS_NOSUID | libc::MS_NOEXEC | libc::MS_NODEV;
        assert_eq!(calls[0], mount_call("", "/", "", libc::MS_REC | libc::MS_PRIVATE, ""));
        assert_eq!(calls[1], mount_call("/r", "/r", "", libc::MS_BIND | libc::MS_REC, ""));
        assert!(calls.contains(&mount_call("proc", "/r/proc", "proc", nosuid_noexec_nodev, "")));
        assert!(calls.contains(&mount_call("sysfs", "/r/sys", "sysfs", nosuid_noexec_nodev | libc::MS_RDONLY, "")));
        // File bind: a stub file is created and the read-only flag applied by a remount.
        assert!(calls.contains(&Call::CreateFile("/r/etc/hosts".into())));
        assert!(calls.contains(&mount_call("/s/hosts", "/r/etc/hosts", "", libc::MS_BIND | libc::MS_REC, "")));
        assert!(calls.contains(&mount_call(
            "",
            "/r/etc/hosts",
            "",
            libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY,
            ""
        )));
        assert!(calls.contains(&Call::CopyDevice { host: "/dev/null".into(), target: "/r/dev/null".into() }));
        assert!(calls.contains(&Call::Mkdir("/r/work/dir".into())));
        // Only what did not exist is a stub; the working directory is kept (WORKDIR persists).
        assert!(prepared.stubs.contains(&PathBuf::from("/r/sys")));
        assert!(prepared.stubs.contains(&PathBuf::from("/r/etc/resolv.conf")));
        // No /etc/hostname is mounted (BuildKit mounts none): a RUN may write its own.
        assert!(!calls.iter().any(|c| matches!(c, Call::Mount { target, .. } if target.ends_with("/etc/hostname"))));
        assert!(!prepared.stubs.contains(&PathBuf::from("/r/proc")));
        assert!(!prepared.stubs.iter().any(|s| s.starts_with("/r/work")));
        let pivot = calls.iter().position(|c| matches!(c, Call::PivotRoot { .. })).unwrap();
        assert_eq!(calls[pivot - 1], Call::Chdir("/r".into()));
        assert_eq!(calls[pivot + 1], mount_call("", ".", "", libc::MS_SLAVE | libc::MS_REC, ""));
        assert_eq!(calls[pivot + 2], Call::Umount { target: ".".into(), detach: true });
        let tail: Vec<Call> = calls[pivot + 4..].to_vec();
        assert_eq!(
            tail,
            vec![
                mount_call("/dev/null", "/proc/kcore", "", libc::MS_BIND, ""),
                mount_call("/proc/sys", "/proc/sys", "", libc::MS_BIND | libc::MS_REC, ""),
                mount_call(
                    "/proc/sys",
                    "/proc/sys",
                    "",
                    libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_REC,
                    ""
                ),
            ]
        );
    }

    #[test]
    fn host_network_binds_sys_and_failures_name_the_target() {
        let sys = RecordingSyscall::with_dirs(&["/r", "/sys"]);
        for f in ["/s/hosts", "/s/resolv"] {
            sys.fs.borrow_mut().insert(f.into(), Node::File);
        }
        prepare(&sys, &spec(NetworkMode::Host, "/")).unwrap();
        assert!(sys.mounts().contains(&mount_call("/sys", "/r/sys", "", libc::MS_BIND | libc::MS_REC, "")));

        let sys = RecordingSyscall::with_dirs(&["/r"]);
        sys.failing_mounts.borrow_mut().push("/r/proc".into());
        let err = prepare(&sys, &spec(NetworkMode::None, "/")).unwrap_err();
        assert_eq!(err.to_string(), "cannot mount proc on /r/proc: Operation not permitted (os error 1)");
    }
}
