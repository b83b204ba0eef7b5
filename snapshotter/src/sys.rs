//! The syscalls of this crate, in one place: locking, mounting, xattrs, device nodes and scoped opens.
//!
//! Everything goes through rustix's safe wrappers except `sync_file_range`, which rustix lacks: that one
//! call is raw libc, with its `// SAFETY:` comment; any other raw call belongs here too.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use rustix::fs::{self as rfs, AtFlags, FileType, FlockOperation, Mode, OFlags, ResolveFlags};
use rustix::mount::{
    self as rmount, FsMountFlags, FsOpenFlags, MountAttrFlags, MountFlags, MoveMountFlags, UnmountFlags,
};

/// Takes an exclusive flock on `f`. Returns false when `nonblocking` and another holder has it.
pub fn flock_exclusive(f: &File, nonblocking: bool) -> io::Result<bool> {
    let op = if nonblocking { FlockOperation::NonBlockingLockExclusive } else { FlockOperation::LockExclusive };
    match rfs::flock(f, op) {
        Ok(()) => Ok(true),
        Err(e) if nonblocking && e == rustix::io::Errno::WOULDBLOCK => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Legacy mount(2) with a data string.
pub fn mount(source: &str, target: &Path, fstype: &str, flags: MountFlags, data: &str) -> io::Result<()> {
    let data = std::ffi::CString::new(data)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "mount options contain a NUL byte"))?;
    rmount::mount(source, target, fstype, flags, Some(data.as_c_str())).map_err(io::Error::from)
}

/// A bind mount, made read-only with a remount when asked.
pub fn bind_mount(source: &Path, target: &Path, readonly: bool, recursive: bool) -> io::Result<()> {
    if recursive {
        rmount::mount_bind_recursive(source, target)?;
    } else {
        rmount::mount_bind(source, target)?;
    }
    if readonly {
        let flags = MountFlags::BIND | MountFlags::RDONLY;
        rmount::mount_remount(target, flags, "")?;
    }
    Ok(())
}

/// Whether the kernel's overlayfs understands `lowerdir+` through the new mount API (Linux 6.8+).
pub fn overlay_supports_lowerdir_plus() -> bool {
    let Ok(fs) = rmount::fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC) else {
        return false;
    };
    rmount::fsconfig_set_string(fs.as_fd(), "lowerdir+", "/").is_ok()
}

/// Mounts overlayfs with the new mount API, one `lowerdir+` per layer (top first) so that the layer
/// count is not limited by the page-sized legacy option string.
pub fn mount_overlay_fsconfig(
    lowers: &[&str],
    upper: Option<&str>,
    work: Option<&str>,
    flags: &[(&str, Option<&str>)],
    readonly: bool,
    target: &Path,
) -> io::Result<()> {
    let fs: OwnedFd = rmount::fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC)?;
    for (k, v) in flags {
        match v {
            Some(v) => rmount::fsconfig_set_string(fs.as_fd(), *k, *v)?,
            None => rmount::fsconfig_set_flag(fs.as_fd(), *k)?,
        }
    }
    for l in lowers {
        rmount::fsconfig_set_string(fs.as_fd(), "lowerdir+", *l)?;
    }
    if let (Some(u), Some(w)) = (upper, work) {
        rmount::fsconfig_set_string(fs.as_fd(), "upperdir", u)?;
        rmount::fsconfig_set_string(fs.as_fd(), "workdir", w)?;
    }
    rmount::fsconfig_create(fs.as_fd())?;
    let attrs = if readonly { MountAttrFlags::MOUNT_ATTR_RDONLY } else { MountAttrFlags::empty() };
    let mnt = rmount::fsmount(fs.as_fd(), FsMountFlags::FSMOUNT_CLOEXEC, attrs)?;
    rmount::move_mount(mnt.as_fd(), "", rfs::CWD, target, MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH)?;
    Ok(())
}

/// umount(2); `detach` makes it lazy.
pub fn unmount(target: &Path, detach: bool) -> io::Result<()> {
    let flags = if detach { UnmountFlags::DETACH } else { UnmountFlags::empty() };
    rmount::unmount(target, flags).map_err(io::Error::from)
}

/// Creates a device node, fifo or overlay whiteout (char 0/0) named `name` in `dir`.
pub fn mknodat(dir: impl AsFd, name: &str, kind: FileType, mode: u32, major: u32, minor: u32) -> io::Result<()> {
    let dev = rfs::makedev(major, minor);
    rfs::mknodat(dir, name, kind, Mode::from_raw_mode(mode & 0o7777), dev).map_err(io::Error::from)
}

/// Major and minor numbers of a device id.
pub fn dev_numbers(rdev: u64) -> (u32, u32) {
    (rfs::major(rdev), rfs::minor(rdev))
}

/// Opens `path` below `root` with every component (`..`, absolute symlinks included) resolved as if
/// `root` were `/`, so the result can never be outside it (openat2 RESOLVE_IN_ROOT, Linux 5.6+).
pub fn open_in_root(root: impl AsFd, path: &str, flags: OFlags) -> io::Result<OwnedFd> {
    let path = if path.is_empty() { "." } else { path };
    rfs::openat2(
        root,
        path,
        flags | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    )
    .map_err(io::Error::from)
}

/// Names of the extended attributes of `path` (not following a final symlink).
pub fn list_xattrs(path: &Path) -> io::Result<Vec<String>> {
    let mut buf = vec![0u8; 1024];
    loop {
        match rfs::llistxattr(path, &mut buf[..]) {
            Ok(n) => {
                return Ok(buf[..n]
                    .split(|b| *b == 0)
                    .filter(|s| !s.is_empty())
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .collect())
            }
            Err(e) if e == rustix::io::Errno::RANGE => {
                let need = rfs::llistxattr_query(path)?;
                buf.resize(need.max(buf.len() * 2), 0);
            }
            Err(e) if e == rustix::io::Errno::NOTSUP => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        }
    }
}

/// The value of one extended attribute, `None` when absent.
pub fn get_xattr(path: &Path, name: &str) -> io::Result<Option<Vec<u8>>> {
    let mut buf = vec![0u8; 256];
    loop {
        match rfs::lgetxattr(path, name, &mut buf[..]) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(Some(buf));
            }
            Err(e) if e == rustix::io::Errno::RANGE => {
                let need = rfs::lgetxattr_query(path, name)?;
                buf.resize(need.max(buf.len() * 2), 0);
            }
            Err(e) if e == rustix::io::Errno::NODATA || e == rustix::io::Errno::NOTSUP => return Ok(None),
            Err(e) => return Err(e.into()),
        }
    }
}

/// Sets one extended attribute (not following a final symlink).
pub fn set_xattr(path: &Path, name: &str, value: &[u8]) -> io::Result<()> {
    rfs::lsetxattr(path, name, value, rfs::XattrFlags::empty()).map_err(io::Error::from)
}

/// lchown relative to a directory.
pub fn lchownat(dir: impl AsFd, name: &str, uid: u32, gid: u32) -> io::Result<()> {
    // rustix's id constructors assert the id is not -1 (meaning "unchanged"): reject it instead.
    if uid == u32::MAX || gid == u32::MAX {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "uid or gid 4294967295 is reserved"));
    }
    let (u, g) = (rfs::Uid::from_raw(uid), rfs::Gid::from_raw(gid));
    rfs::chownat(dir, name, Some(u), Some(g), AtFlags::SYMLINK_NOFOLLOW).map_err(io::Error::from)
}

/// fchown of an open file.
pub fn fchown(f: impl AsFd, uid: u32, gid: u32) -> io::Result<()> {
    // As lchownat: -1 means "unchanged" to the kernel, never an owner a layer may set.
    if uid == u32::MAX || gid == u32::MAX {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "uid or gid 4294967295 is reserved"));
    }
    let (u, g) = (rfs::Uid::from_raw(uid), rfs::Gid::from_raw(gid));
    rfs::fchown(f, Some(u), Some(g)).map_err(io::Error::from)
}

/// The stat of `name` in `dir`, not following a final symlink.
pub fn lstatat(dir: impl AsFd, name: &str) -> io::Result<rfs::Stat> {
    rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW).map_err(io::Error::from)
}

/// Starts writeback of `len` bytes of `f` from `offset` without waiting for it
/// (`sync_file_range(SYNC_FILE_RANGE_WRITE)`): a large blob written in one go is then mostly on disk by
/// the time its `fsync` comes. A hint: errors are the caller's to ignore.
#[allow(unsafe_code)]
pub fn start_writeback(f: &File, offset: u64, len: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else { return Ok(()) };
    // SAFETY: sync_file_range only reads its integer arguments; the descriptor is borrowed from a live
    // `File` for the duration of the call, and the flag asks for nothing but initiating writeback.
    let r = unsafe { libc::sync_file_range(f.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
