//! Every system call the sandbox makes, and the only module with unsafe code.
//!
//! Following youki (`libcontainer/src/syscall`), the calls that shape the container (mounts, pivot_root,
//! namespaces, hostname) go through the [`Syscall`] trait: [`LinuxSyscall`] makes them, and the recording
//! double in `recording.rs` lets the rootfs logic be unit-tested without root. The process-lifecycle calls
//! (fork, exec, signals, wait) are free functions here because they cannot be meaningfully recorded.
#![allow(unsafe_code)]

pub mod netlink;
#[cfg(test)]
pub mod recording;

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Mount flags as mount(2) takes them (`libc::MS_*`).
pub type MountFlags = libc::c_ulong;

/// The calls that build a container's view of the world.
pub trait Syscall {
    /// mount(2). `source`/`fstype`/`data` may be empty.
    fn mount(&self, source: &str, target: &Path, fstype: &str, flags: MountFlags, data: &str) -> io::Result<()>;
    /// umount2(2), lazily when `detach`.
    fn umount(&self, target: &Path, detach: bool) -> io::Result<()>;
    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> io::Result<()>;
    fn chdir(&self, path: &Path) -> io::Result<()>;
    /// unshare(2) with `CLONE_*` flags.
    fn unshare(&self, flags: libc::c_int) -> io::Result<()>;
    fn sethostname(&self, name: &str) -> io::Result<()>;
    /// Brings the loopback interface of the current network namespace up.
    fn loopback_up(&self) -> io::Result<()>;
    /// The symlink target of `path`, or `None` when it is not a symlink or does not exist.
    fn read_link(&self, path: &Path) -> io::Result<Option<PathBuf>>;
    /// What is at `path`: `None` when nothing, else whether it is a directory.
    fn stat_is_dir(&self, path: &Path) -> io::Result<Option<bool>>;
    fn mkdir(&self, path: &Path, mode: u32) -> io::Result<()>;
    /// Creates an empty regular file (a mount point for a file bind mount).
    fn create_file(&self, path: &Path) -> io::Result<()>;
    fn symlink(&self, target: &Path, link: &Path) -> io::Result<()>;
    /// Creates at `target` a character device node with the device number of `host`, mode 0666, owned
    /// by root (runc's default devices).
    fn copy_device(&self, host: &Path, target: &Path) -> io::Result<()>;
}

/// The real calls.
#[derive(Debug, Default, Clone, Copy)]
pub struct LinuxSyscall;

/// setns(2): moves the calling thread into the network namespace open as `ns`.
pub fn join_network_namespace(ns: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: setns only changes which network namespace this thread belongs to; `ns` is a valid open
    // descriptor for the duration of the call and CLONE_NEWNET makes the kernel check it is one.
    check(unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) }).map(drop)
}

fn cstr(s: &[u8]) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

fn cpath(p: &Path) -> io::Result<CString> {
    cstr(p.as_os_str().as_bytes())
}

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

impl Syscall for LinuxSyscall {
    fn mount(&self, source: &str, target: &Path, fstype: &str, flags: MountFlags, data: &str) -> io::Result<()> {
        let source = cstr(source.as_bytes())?;
        let target = cpath(target)?;
        let fstype = cstr(fstype.as_bytes())?;
        let data_c = cstr(data.as_bytes())?;
        let nullable = |s: &CString| if s.as_bytes().is_empty() { std::ptr::null() } else { s.as_ptr() };
        // SAFETY: every pointer is either null or a NUL-terminated CString that outlives the call; the
        // kernel only reads them.
        check(unsafe {
            libc::mount(
                nullable(&source),
                target.as_ptr(),
                nullable(&fstype),
                flags,
                nullable(&data_c) as *const libc::c_void,
            )
        })
        .map(drop)
    }

    fn umount(&self, target: &Path, detach: bool) -> io::Result<()> {
        let target = cpath(target)?;
        let flags = if detach { libc::MNT_DETACH } else { 0 };
        // SAFETY: `target` is a NUL-terminated CString that outlives the call.
        check(unsafe { libc::umount2(target.as_ptr(), flags) }).map(drop)
    }

    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> io::Result<()> {
        rustix::process::pivot_root(new_root, put_old).map_err(io::Error::from)
    }

    fn chdir(&self, path: &Path) -> io::Result<()> {
        rustix::process::chdir(path).map_err(io::Error::from)
    }

    fn unshare(&self, flags: libc::c_int) -> io::Result<()> {
        // SAFETY: unshare only changes this process's namespace membership; callers pass namespace flags
        // (never CLONE_FILES/CLONE_FS tricks that would invalidate Rust's view of memory or fds).
        check(unsafe { libc::unshare(flags) }).map(drop)
    }

    fn sethostname(&self, name: &str) -> io::Result<()> {
        rustix::system::sethostname(name.as_bytes()).map_err(io::Error::from)
    }

    fn loopback_up(&self) -> io::Result<()> {
        // SAFETY: socket(2) with constant arguments; the result is checked before it is owned.
        let fd = check(unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) })?;
        // SAFETY: `fd` was just returned by socket(2) and nothing else owns it.
        let sock = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: ifreq is plain old data for which all-zero bytes are a valid value.
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
            *dst = *src as libc::c_char;
        }
        // SAFETY: SIOCGIFFLAGS reads and writes only within `req`, a valid ifreq naming "lo".
        check(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) })?;
        // SAFETY: the kernel filled ifru_flags, the union member SIOCGIFFLAGS defines.
        unsafe { req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short };
        // SAFETY: SIOCSIFFLAGS reads `req`, a valid ifreq with name and flags set.
        check(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) }).map(drop)
    }

    fn read_link(&self, path: &Path) -> io::Result<Option<PathBuf>> {
        match std::fs::read_link(path) {
            Ok(t) => Ok(Some(t)),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOENT)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn stat_is_dir(&self, path: &Path) -> io::Result<Option<bool>> {
        match std::fs::metadata(path) {
            Ok(m) => Ok(Some(m.is_dir())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn mkdir(&self, path: &Path, mode: u32) -> io::Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new().mode(mode).create(path)
    }

    fn create_file(&self, path: &Path) -> io::Result<()> {
        std::fs::OpenOptions::new().write(true).create_new(true).open(path).map(drop)
    }

    fn symlink(&self, target: &Path, link: &Path) -> io::Result<()> {
        std::os::unix::fs::symlink(target, link)
    }

    fn copy_device(&self, host: &Path, target: &Path) -> io::Result<()> {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        let meta = std::fs::metadata(host)?;
        if !meta.file_type().is_char_device() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{} is not a device", host.display())));
        }
        rustix::fs::mknodat(
            rustix::fs::CWD,
            target,
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::from_bits_retain(0o666),
            meta.rdev(),
        )?;
        // mknod applies the umask; the mode must be exactly 0666.
        rustix::fs::chmod(target, rustix::fs::Mode::from_bits_retain(0o666))?;
        std::os::unix::fs::lchown(target, Some(0), Some(0))
    }
}

/// What fork returned to this process.
pub enum Forked {
    Parent(libc::pid_t),
    Child,
}

/// fork(2). Only called from single-threaded processes: the helper (a fresh exec of /proc/self/exe that
/// never starts a thread) and its children, or through [`fork_if_single_threaded`]; so the child may run
/// arbitrary code.
pub fn fork() -> io::Result<Forked> {
    // SAFETY: the calling process is single-threaded (see above), so no lock can be held by a thread that
    // does not exist in the child; memory is copied, not shared.
    let pid = check(unsafe { libc::fork() })?;
    Ok(if pid == 0 { Forked::Child } else { Forked::Parent(pid) })
}

/// The number of threads of this process (`/proc/self/stat`, field 20), `None` when it cannot be read.
pub fn thread_count() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) is in parentheses and may hold spaces or parentheses itself.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(17)?.parse().ok()
}

/// [`fork`] when this process has exactly one thread, the caller's; `None` (and no fork) otherwise. No
/// thread can appear between the check and the fork, since only the calling thread could start one.
pub fn fork_if_single_threaded() -> io::Result<Option<Forked>> {
    if thread_count() != Some(1) {
        return Ok(None);
    }
    fork().map(Some)
}

/// `struct clone_args` up to `cgroup` (CLONE_ARGS_SIZE_VER2).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// fork(2) into the cgroup v2 directory open as `cgroup` (clone3 with CLONE_INTO_CGROUP, Linux 5.7):
/// the child starts in the cgroup, so nothing has to be migrated (a migration waits for an RCU grace
/// period, milliseconds per run). Single-threaded callers only, as [`fork`].
pub fn fork_into_cgroup(cgroup: BorrowedFd<'_>) -> io::Result<Forked> {
    let mut args = CloneArgs {
        flags: CLONE_INTO_CGROUP,
        exit_signal: libc::SIGCHLD as u64,
        cgroup: cgroup.as_raw_fd() as u64,
        ..CloneArgs::default()
    };
    // SAFETY: without CLONE_VM and with no stack given, clone3 behaves as fork: the child gets a copy of
    // this single-threaded process's memory (so no lock can be held by a missing thread) and returns 0
    // here; `args` is a valid clone_args of the size passed.
    let ret = unsafe { libc::syscall(libc::SYS_clone3, &mut args as *mut CloneArgs, std::mem::size_of::<CloneArgs>()) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(if ret == 0 { Forked::Child } else { Forked::Parent(ret as libc::pid_t) })
}

/// _exit(2): leaves without running destructors or atexit handlers (for forked children).
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit never returns and touches no Rust state.
    unsafe { libc::_exit(code) }
}

/// execve(2) with a path, argv and envp; returns only on failure.
pub fn execve(path: &CStr, args: &[CString], env: &[CString]) -> io::Error {
    let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = env.iter().map(|a| a.as_ptr()).collect();
    envp.push(std::ptr::null());
    // SAFETY: `path`, and every element of the NULL-terminated `argv`/`envp` arrays, are NUL-terminated
    // strings owned by the caller that live across the call.
    unsafe { libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    io::Error::last_os_error()
}

/// The signal mask with every signal blocked, or the empty one.
fn sigset(full: bool) -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigfillset/sigemptyset initialise it fully before use.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        if full {
            libc::sigfillset(&mut set);
        } else {
            libc::sigemptyset(&mut set);
        }
        set
    }
}

/// Blocks (or unblocks) every signal for the calling thread.
pub fn block_all_signals(block: bool) -> io::Result<()> {
    let set = sigset(true);
    let how = if block { libc::SIG_BLOCK } else { libc::SIG_UNBLOCK };
    // SAFETY: `set` is an initialised sigset_t; the old mask is not requested.
    check(unsafe { libc::sigprocmask(how, &set, std::ptr::null_mut()) }).map(drop)
}

/// Restores the default disposition of every catchable signal (before exec in a child).
pub fn reset_signal_dispositions() {
    for sig in 1..libc::SIGRTMAX() {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: SIG_DFL is always a valid disposition; errors (invalid signal numbers) are ignored.
        unsafe { libc::signal(sig, libc::SIG_DFL) };
    }
}

/// Waits for the next signal while all are blocked (sigwaitinfo), returning its number.
pub fn wait_signal() -> io::Result<i32> {
    let set = sigset(true);
    // SAFETY: `set` is an initialised sigset_t and the siginfo output is not requested.
    check(unsafe { libc::sigwaitinfo(&set, std::ptr::null_mut()) })
}

/// kill(2).
pub fn kill(pid: libc::pid_t, sig: i32) -> io::Result<()> {
    // SAFETY: kill only sends a signal; a stale pid is reported as ESRCH.
    check(unsafe { libc::kill(pid, sig) }).map(drop)
}

/// How a waited-for process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    Exited(i32),
    Signaled(i32),
}

/// waitpid(2) for `pid` (-1: any child); `None` with `nohang` when nothing has ended.
pub fn waitpid(pid: libc::pid_t, nohang: bool) -> io::Result<Option<(libc::pid_t, Ended)>> {
    let mut status = 0;
    let flags = if nohang { libc::WNOHANG } else { 0 };
    loop {
        // SAFETY: `status` is a valid out-pointer for the call's duration.
        let ret = unsafe { libc::waitpid(pid, &mut status, flags) };
        if ret < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(e);
        }
        if ret == 0 {
            return Ok(None);
        }
        let ended = if libc::WIFSIGNALED(status) {
            Ended::Signaled(libc::WTERMSIG(status))
        } else if libc::WIFEXITED(status) {
            Ended::Exited(libc::WEXITSTATUS(status))
        } else {
            continue;
        };
        return Ok(Some((ret, ended)));
    }
}

/// PR_SET_PDEATHSIG: the signal this process gets when its parent dies.
pub fn set_parent_death_signal(sig: i32) -> io::Result<()> {
    // SAFETY: PR_SET_PDEATHSIG takes a signal number and changes only this process's attributes.
    check(unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, sig as libc::c_ulong, 0, 0, 0) }).map(drop)
}

/// PR_SET_NO_NEW_PRIVS: execve can no longer grant privileges (setuid bits, file capabilities).
pub fn set_no_new_privs() -> io::Result<()> {
    rustix::thread::set_no_new_privs(true).map_err(io::Error::from)
}

/// Closes every file descriptor from `first` up (close_range(2)).
pub fn close_fds_from(first: RawFd) -> io::Result<()> {
    // SAFETY: closing descriptors is safe for memory; callers invoke this right before exec in a forked
    // child, where no Rust object still uses the closed descriptors.
    let ret = unsafe { libc::syscall(libc::SYS_close_range, first as libc::c_uint, libc::c_uint::MAX, 0) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Marks every descriptor from `first` up close-on-exec.
pub fn cloexec_fds_from(first: RawFd) -> io::Result<()> {
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    // SAFETY: CLOSE_RANGE_CLOEXEC only sets a flag on descriptors; nothing is closed.
    let ret =
        unsafe { libc::syscall(libc::SYS_close_range, first as libc::c_uint, libc::c_uint::MAX, CLOSE_RANGE_CLOEXEC) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// dup2(2) of `fd` onto `target` (e.g. /dev/null onto stdin).
pub fn dup_onto(fd: BorrowedFd<'_>, target: RawFd) -> io::Result<()> {
    // SAFETY: dup2 replaces `target` atomically; callers pass the standard descriptors, which this
    // process owns and no Rust object wraps.
    check(unsafe { libc::dup2(fd.as_raw_fd(), target) }).map(drop)
}

/// Sets supplementary groups, gid and uid (in that order, as runc does).
pub fn set_ids(uid: u32, gid: u32, groups: &[u32]) -> io::Result<()> {
    let groups: Vec<libc::gid_t> = groups.to_vec();
    // SAFETY: `groups` is a valid array of `len` gids for the call's duration.
    check(unsafe { libc::setgroups(groups.len(), groups.as_ptr()) })?;
    // SAFETY: setresgid/setresuid change only this process's credentials (it is single-threaded, so
    // there is no other thread whose credentials would diverge).
    check(unsafe { libc::setresgid(gid, gid, gid) })?;
    // SAFETY: as above.
    check(unsafe { libc::setresuid(uid, uid, uid) }).map(drop)
}

/// Drops every capability not in `keep` (a bitmask of `CAP_*` numbers) from the bounding set.
pub fn limit_bounding_set(keep: u64) -> io::Result<()> {
    let last = last_cap();
    for cap in 0..=last {
        if keep & (1 << cap) != 0 {
            continue;
        }
        // SAFETY: PR_CAPBSET_DROP takes a capability number and changes only this thread's bounding set.
        let ret = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
        if ret < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINVAL) {
                return Err(e);
            }
        }
    }
    Ok(())
}

/// The highest capability number this kernel knows.
pub fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap").ok().and_then(|s| s.trim().parse().ok()).unwrap_or(40)
}

/// Sets the effective, permitted and inheritable sets (bitmasks of `CAP_*` numbers); ambient is cleared.
pub fn set_capabilities(effective: u64, permitted: u64, inheritable: u64) -> io::Result<()> {
    use rustix::thread::{CapabilitySet, CapabilitySets};
    rustix::thread::clear_ambient_capability_set().map_err(io::Error::from)?;
    let sets = CapabilitySets {
        effective: CapabilitySet::from_bits_retain(effective),
        permitted: CapabilitySet::from_bits_retain(permitted),
        inheritable: CapabilitySet::from_bits_retain(inheritable),
    };
    rustix::thread::set_capabilities(None, sets).map_err(io::Error::from)
}

/// setrlimit(2) for a `RLIMIT_*` number.
pub fn set_rlimit(resource: u32, soft: u64, hard: u64) -> io::Result<()> {
    let lim = libc::rlimit { rlim_cur: soft, rlim_max: hard };
    // SAFETY: `lim` is a valid rlimit for the call's duration.
    check(unsafe { libc::setrlimit(resource as _, &lim) }).map(drop)
}

/// setsid(2): the command gets its own session, as under runc.
pub fn setsid() -> io::Result<()> {
    rustix::process::setsid().map(drop).map_err(io::Error::from)
}

/// The current directory as the kernel reports it; `(unreachable)` prefixes mean outside the root.
pub fn getcwd() -> io::Result<PathBuf> {
    std::env::current_dir()
}

/// A pipe whose ends are close-on-exec.
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).map_err(io::Error::from)
}

/// umask(2).
pub fn set_umask(mask: u32) {
    rustix::process::umask(rustix::fs::Mode::from_bits_retain(mask));
}

/// Reads `path` inside `root` with every symlink and `..` resolved as if `root` were `/`
/// (openat2 RESOLVE_IN_ROOT), so a hostile rootfs cannot point the read at a host file.
/// `Ok(None)` when the file does not exist.
pub fn read_in_root(root: &Path, path: &Path) -> io::Result<Option<Vec<u8>>> {
    use rustix::fs::{Mode, OFlags, ResolveFlags};
    use std::io::Read;
    let dir = rustix::fs::open(root, OFlags::DIRECTORY | OFlags::PATH | OFlags::CLOEXEC, Mode::empty())?;
    let rel = path.strip_prefix("/").unwrap_or(path);
    match rustix::fs::openat2(&dir, rel, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty(), ResolveFlags::IN_ROOT) {
        Ok(fd) => {
            let mut buf = Vec::new();
            std::fs::File::from(fd).read_to_end(&mut buf)?;
            Ok(Some(buf))
        }
        Err(rustix::io::Errno::NOENT) | Err(rustix::io::Errno::NOTDIR) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Removes a mount stub `path` (absolute, inside `root`) if it is still an empty file or empty directory,
/// resolving it scoped to `root` so a symlink planted by the process cannot redirect the removal.
pub fn remove_stub_in_root(root: &Path, path: &Path) -> io::Result<()> {
    use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags};
    let rel = path.strip_prefix(root).map_err(|_| io::Error::from_raw_os_error(libc::EXDEV))?;
    let (Some(parent), Some(name)) = (rel.parent(), rel.file_name()) else {
        return Ok(());
    };
    let rootfd = rustix::fs::open(root, OFlags::DIRECTORY | OFlags::PATH | OFlags::CLOEXEC, Mode::empty())?;
    let parent_path = if parent.as_os_str().is_empty() { Path::new(".") } else { parent };
    let dir = rustix::fs::openat2(
        &rootfd,
        parent_path,
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT,
    )?;
    let st = rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW)?;
    match FileType::from_raw_mode(st.st_mode) {
        FileType::Directory => match rustix::fs::unlinkat(&dir, name, AtFlags::REMOVEDIR) {
            Err(rustix::io::Errno::NOTEMPTY) | Err(rustix::io::Errno::EXIST) => Ok(()),
            other => other.map_err(io::Error::from),
        },
        FileType::RegularFile if st.st_size == 0 => {
            rustix::fs::unlinkat(&dir, name, AtFlags::empty()).map_err(io::Error::from)
        }
        _ => Ok(()),
    }
}

/// Closes every descriptor from 3 up except `keep` (which stays close-on-exec).
pub fn close_fds_except(keep: RawFd) -> io::Result<()> {
    if keep > 3 {
        // SAFETY: as in close_fds_from: called in a forked child right before exec, where no Rust object
        // uses the closed descriptors; `keep` is left open.
        let ret = unsafe { libc::syscall(libc::SYS_close_range, 3 as libc::c_uint, (keep - 1) as libc::c_uint, 0) };
        if ret < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    close_fds_from(keep.max(2) + 1)
}

/// PR_SET_KEEPCAPS, so the permitted set survives the switch to a non-root uid until capset.
pub fn set_keep_caps(keep: bool) -> io::Result<()> {
    rustix::thread::set_keep_capabilities(keep).map_err(io::Error::from)
}

/// A pidfd for `pid` (a child of this process), so a later kill cannot hit a recycled pid.
pub fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    let pid = rustix::process::Pid::from_raw(pid as i32).ok_or_else(|| io::Error::from_raw_os_error(libc::ESRCH))?;
    rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).map_err(io::Error::from)
}

/// poll(2) for input on `fds`: which of them have data, end of file or an error to read (retried on EINTR).
pub fn poll_readable(fds: &[BorrowedFd<'_>]) -> io::Result<Vec<bool>> {
    let mut polls: Vec<libc::pollfd> =
        fds.iter().map(|fd| libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 }).collect();
    loop {
        // SAFETY: `polls` is a valid array of `polls.len()` pollfd structs that outlives the call, and every
        // fd in it is borrowed, so open, for the call's duration.
        let n = unsafe { libc::poll(polls.as_mut_ptr(), polls.len() as libc::nfds_t, -1) };
        if n >= 0 {
            return Ok(polls.iter().map(|p| p.revents != 0).collect());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// SIGKILL through a pidfd.
pub fn pidfd_kill(fd: BorrowedFd<'_>) -> io::Result<()> {
    rustix::process::pidfd_send_signal(fd, rustix::process::Signal::KILL).map_err(io::Error::from)
}

/// chdir(2), then a check that the result is inside the root: the kernel reports a directory outside
/// the current root as `(unreachable)/...`.
pub fn chdir_checked(path: &Path) -> io::Result<()> {
    rustix::process::chdir(path)?;
    let cwd = rustix::process::getcwd(Vec::new())?;
    if !cwd.to_bytes().starts_with(b"/") {
        return Err(io::Error::new(io::ErrorKind::PermissionDenied, "the directory is outside the container root"));
    }
    Ok(())
}

/// fs.nr_open: the most file descriptors a process may be allowed.
pub fn nr_open() -> u64 {
    std::fs::read_to_string("/proc/sys/fs/nr_open").ok().and_then(|s| s.trim().parse().ok()).unwrap_or(1024 * 1024)
}

/// The current hard limit of a `RLIMIT_*` resource.
pub fn rlimit_hard(resource: u32) -> io::Result<u64> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `lim` is a valid out-pointer for the call's duration.
    check(unsafe { libc::getrlimit(resource as _, &mut lim) })?;
    Ok(lim.rlim_max)
}

/// The modification time of the directory `path` (not following a final symlink), if it is one.
pub fn dir_mtime(path: &Path) -> Option<(i64, i64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(path).ok()?;
    m.is_dir().then(|| (m.mtime(), m.mtime_nsec()))
}

/// Sets the modification time of the directory `path` (absolute, inside `root`), resolved scoped to `root`;
/// the access time is left alone.
pub fn set_dir_mtime_in_root(root: &Path, path: &Path, mtime: (i64, i64)) -> io::Result<()> {
    use rustix::fs::{Mode, OFlags, ResolveFlags, Timespec, Timestamps, UTIME_OMIT};
    let rel = path.strip_prefix(root).map_err(|_| io::Error::from_raw_os_error(libc::EXDEV))?;
    let rel = if rel.as_os_str().is_empty() { Path::new(".") } else { rel };
    let rootfd = rustix::fs::open(root, OFlags::DIRECTORY | OFlags::PATH | OFlags::CLOEXEC, Mode::empty())?;
    let dir = rustix::fs::openat2(
        &rootfd,
        rel,
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT,
    )?;
    let times = Timestamps {
        last_access: Timespec { tv_sec: 0, tv_nsec: UTIME_OMIT },
        last_modification: Timespec { tv_sec: mtime.0, tv_nsec: mtime.1 as _ },
    };
    rustix::fs::futimens(&dir, &times).map_err(io::Error::from)
}

/// Installs seccomp filters in order (seccomp(2) SECCOMP_SET_MODE_FILTER through seccompiler, which also
/// sets no_new_privs).
pub fn apply_seccomp(programs: &[seccompiler::BpfProgram]) -> io::Result<()> {
    for p in programs {
        seccompiler::apply_filter(p).map_err(|e| io::Error::other(e.to_string()))?;
    }
    Ok(())
}

/// Whether this process has capability number `cap` (`CAP_*`) in its effective set.
pub fn has_effective_capability(cap: u32) -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("CapEff:").map(|v| v.trim().to_string())))
        .and_then(|hex| u64::from_str_radix(&hex, 16).ok())
        .is_some_and(|mask| mask & (1 << cap) != 0)
}

/// Makes the process `cmd` starts get SIGKILL when the thread that spawns it ends (PR_SET_PDEATHSIG), so
/// a helper we run in the foreground (the OCI runtime) does not outlive a killed rbuild. A child whose
/// parent died before the signal was set (it would never come) kills itself instead.
pub fn kill_with_parent(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure runs in the child between fork and exec, where only async-signal-safe calls are
    // allowed: it makes three syscalls (prctl, getppid, kill), allocates nothing and takes no lock.
    unsafe {
        cmd.pre_exec(move || {
            check(libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0))?;
            if libc::getppid() != parent {
                libc::kill(libc::getpid(), libc::SIGKILL);
            }
            Ok(())
        });
    }
}
