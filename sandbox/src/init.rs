//! The helper: `/proc/self/exe` started with [`HELPER_ARG`], or a fork of an executor whose process has a
//! single thread. Either way it is a single-threaded process, so unlike the multithreaded tokio parent it
//! may fork freely.
//!
//! helper (new mount/uts/ipc/net/cgroup namespaces; mounts the rootfs; resolves the user; builds the spec)
//!   └─ init, PID 1 of the new pid namespace (own mount namespace; mounts, pivot_root; reaps, forwards
//!      signals; its death kills the namespace)
//!        └─ the command (session leader; ids, capabilities, no_new_privs, seccomp; no inherited fds)
//!
//! The parent hands the [`HelperConfig`] over stdin (a socket; a forked helper has it in memory already)
//! and reads the [`HelperReport`] back from it.

use std::ffi::CString;
use std::io::{self, BufRead, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use oci_spec::runtime::Spec;
use seccompiler::BpfProgram;
use serde::{Deserialize, Serialize};
use snapshotter::mount::Mount;

use crate::process::ProcessSpec;
use crate::spec::{capability_mask, EtcFiles};
use crate::sys::{self, Ended, Forked, LinuxSyscall, Syscall};

/// The hidden first argument that turns the binary into the sandbox helper.
pub const HELPER_ARG: &str = "__rbuild-sandbox-helper";

/// What the helper is asked to run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HelperConfig {
    /// The snapshot's mounts, mounted on `rootfs_dir` inside the helper's mount namespace only.
    pub rootfs: Vec<Mount>,
    pub rootfs_dir: PathBuf,
    /// An empty directory on which the helper mounts a tmpfs of its own mount namespace (concurrent runs
    /// share it) holding `rootfs_dir` and the secrets' directory of `etc`: they vanish with the namespace.
    pub run_dir: PathBuf,
    pub process: ProcessSpec,
    pub etc: EtcFiles,
    /// The step's network namespace (the default network, prepared by the executor's pool): a path that
    /// opens it, which the helper joins.
    #[serde(default)]
    pub netns: Option<PathBuf>,
    /// The run's cgroup v2 directory: init is started in it (the helper itself stays outside).
    #[serde(default)]
    pub cgroup: Option<PathBuf>,
}

/// How the run ended, as the helper reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HelperReport {
    Exited(i32),
    Signaled(i32),
    /// Setting up the sandbox or starting the command failed; the message says what to do.
    Failed(String),
}

/// What init tells the helper.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum InitMessage {
    Stubs(Vec<PathBuf>),
    Done(HelperReport),
}

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("cannot read the helper configuration: {0}")]
    Config(String),
    #[error("cannot create the sandbox namespaces: {0} (the namespace executor needs root)")]
    Unshare(io::Error),
    #[error("cannot mount the rootfs: {0}")]
    Rootfs(#[from] snapshotter::mount::MountError),
    #[error(transparent)]
    User(#[from] crate::user::UserError),
    #[error(transparent)]
    Spec(#[from] crate::spec::SpecError),
    #[error(transparent)]
    Prepare(#[from] crate::rootfs::RootfsError),
    #[error("cannot {step}: {source}")]
    Step { step: &'static str, source: io::Error },
}

fn step(step: &'static str) -> impl FnOnce(io::Error) -> InitError {
    move |source| InitError::Step { step, source }
}

/// Runs the helper and exits when this process was started as one; returns otherwise. Call it first in
/// `main`, before any thread is started.
pub fn maybe_run() {
    if std::env::args_os().nth(1).is_some_and(|a| a == HELPER_ARG) {
        helper_main()
    }
}

/// The environment variable that carries the pid of the process that started the helper.
pub const PARENT_ENV: &str = "RBUILD_SANDBOX_PARENT";

fn helper_main() -> ! {
    let expected = std::env::var(PARENT_ENV).ok().and_then(|p| p.parse::<u32>().ok());
    let mut report = start_helper(expected);
    let result = read_config(&mut report).and_then(|cfg| run_helper(&cfg));
    finish_helper(report, result)
}

/// The helper as a fork of the executor's single-threaded process (see [`crate::NamespaceExecutor`]),
/// with `cfg` at hand: the report socket, stdout and stderr go onto 0, 1 and 2 and every other descriptor
/// of the parent is closed, so it runs as the re-executed helper does from there on.
pub(crate) fn forked_helper_main(
    parent: u32,
    report: BorrowedFd<'_>,
    stdout: BorrowedFd<'_>,
    stderr: BorrowedFd<'_>,
    cfg: &HelperConfig,
) -> ! {
    // The parent's descriptors 0-2 are open (std opens /dev/null for missing ones), so these three are
    // all above 2 and none is overwritten before it is duplicated.
    for (fd, target) in [(report, 0), (stdout, 1), (stderr, 2)] {
        if sys::dup_onto(fd, target).is_err() {
            sys::exit_now(120);
        }
    }
    if sys::close_fds_from(3).is_err() {
        sys::exit_now(120);
    }
    let report = start_helper(Some(parent));
    finish_helper(report, run_helper(cfg))
}

/// The helper's first steps: it dies with the process that started it, and takes the report socket off
/// stdin (the command must not see it).
fn start_helper(expected_parent: Option<u32>) -> std::fs::File {
    // The helper dies with the process that started it (a killed daemon or CLI leaves no RUN behind): the
    // parent-death signal, and a check for a parent that died before it was set. The starting thread waits
    // for the helper, so it outlives it unless the process dies.
    let _ = sys::set_parent_death_signal(libc::SIGKILL);
    if expected_parent.is_some_and(|p| p != std::os::unix::process::parent_id()) {
        sys::exit_now(123);
    }
    // The socket on stdin carries the config in and the report out; the command must not see it.
    let Ok(report_fd) = io::stdin().as_fd().try_clone_to_owned() else { sys::exit_now(120) };
    std::fs::File::from(report_fd)
}

fn finish_helper(mut report: std::fs::File, result: Result<HelperReport, InitError>) -> ! {
    let out = match result {
        Ok(r) => r,
        Err(e) => HelperReport::Failed(e.to_string()),
    };
    // One write: a JSON writer on the socket itself would make a syscall per token.
    let ok = serde_json::to_vec(&out).is_ok_and(|bytes| report.write_all(&bytes).is_ok());
    sys::exit_now(if ok { 0 } else { 121 })
}

fn read_config(src: &mut std::fs::File) -> Result<HelperConfig, InitError> {
    let mut buf = Vec::new();
    src.read_to_end(&mut buf).map_err(|e| InitError::Config(e.to_string()))?;
    serde_json::from_slice(&buf).map_err(|e| InitError::Config(e.to_string()))
}

fn run_helper(cfg: &HelperConfig) -> Result<HelperReport, InitError> {
    let devnull = std::fs::File::open("/dev/null").map_err(step("open /dev/null"))?;
    sys::dup_onto(devnull.as_fd(), 0).map_err(step("replace stdin"))?;
    let linux = LinuxSyscall;
    // The prepared namespace is opened through the host's /proc, before anything is unshared.
    let netns = match &cfg.netns {
        Some(p) => Some(std::fs::File::open(p).map_err(step("open the step's network namespace"))?),
        None => None,
    };
    // The cgroup namespace is init's (made in its own cgroup), so the step sees its cgroup as the root.
    let mut flags = libc::CLONE_NEWNS | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC | libc::CLONE_NEWPID;
    if !cfg.process.network.is_host() && netns.is_none() {
        flags |= libc::CLONE_NEWNET;
    }
    linux.unshare(flags).map_err(InitError::Unshare)?;
    if let Some(ns) = &netns {
        sys::join_network_namespace(ns.as_fd()).map_err(step("join the step's network namespace"))?;
    }
    drop(netns);
    linux
        .mount("", Path::new("/"), "", libc::MS_REC | libc::MS_PRIVATE, "")
        .map_err(step("make the mounts private"))?;
    mount_run_dir(&linux, cfg).map_err(step("mount the run's tmpfs"))?;
    crate::stubs::write_secrets(&linux, &cfg.etc, &cfg.process).map_err(step("put the secrets on a tmpfs"))?;
    snapshotter::mount::mount_all(&cfg.rootfs, &cfg.rootfs_dir)?;
    // Only the default devices open (Docker's list): the step keeps CAP_MKNOD, as under Docker, but the
    // rootfs, /dev and every mount it can write are `nodev`, so a node it makes (a host disk, a loop
    // device, kvm) cannot be opened (EACCES); /dev holds binds of the host's null, zero, full, random,
    // urandom and tty. Mount flags need no device cgroup, which would cost a cgroup per RUN (runc's
    // device cgroup does the same for the runc executor). A bind remount changes only the flags.
    linux
        .mount("", &cfg.rootfs_dir, "", libc::MS_REMOUNT | libc::MS_BIND | libc::MS_NODEV, "")
        .map_err(step("mount the rootfs nodev"))?;
    let user = crate::user::resolve_in_rootfs(&cfg.rootfs_dir, &cfg.process.user)?;
    let mut spec = crate::spec::build_spec(&cfg.process, &user, &cfg.rootfs_dir, &cfg.etc)?;
    crate::spec::make_nodev(&mut spec);
    if !cfg.process.network.is_host() {
        linux.loopback_up().map_err(step("bring the loopback interface up"))?;
    }
    if let Some(h) = spec.hostname() {
        linux.sethostname(h).map_err(step("set the hostname"))?;
    }
    let filters = match spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()) {
        Some(profile) => crate::seccomp::compile(profile).map_err(crate::spec::SpecError::from)?,
        None => Vec::new(),
    };
    let mtimes = crate::stubs::parent_mtimes(&linux, &spec, &cfg.rootfs_dir)?;
    let (rx, tx) = sys::pipe().map_err(step("create the status pipe"))?;
    let forked = match &cfg.cgroup {
        Some(dir) => {
            let cg = std::fs::File::open(dir).map_err(step("open the run's cgroup"))?;
            match sys::fork_into_cgroup(cg.as_fd()) {
                // Kernels before 5.7 have no clone3 or CLONE_INTO_CGROUP: enter the cgroup, then fork.
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSYS) | Some(libc::EINVAL) | Some(libc::E2BIG)) => {
                    crate::cgroup::enter(dir, std::process::id()).map_err(step("enter the run's cgroup"))?;
                    sys::fork().map_err(step("fork init"))?
                }
                other => other.map_err(step("start init in the run's cgroup"))?,
            }
        }
        None => sys::fork().map_err(step("fork init"))?,
    };
    let init = match forked {
        Forked::Child => {
            drop(rx);
            init_main(&spec, &filters, tx)
        }
        Forked::Parent(pid) => pid,
    };
    drop(tx);
    let mut stubs = Vec::new();
    let mut done = None;
    for line in io::BufReader::new(std::fs::File::from(rx)).lines() {
        let line = line.map_err(step("read init's status"))?;
        match serde_json::from_str::<InitMessage>(&line) {
            Ok(InitMessage::Stubs(s)) => stubs = s,
            Ok(InitMessage::Done(r)) => done = Some(r),
            Err(e) => done = Some(HelperReport::Failed(format!("garbled status from init: {e}"))),
        }
    }
    let init_end = sys::waitpid(init, false).map_err(step("wait for init"))?;
    crate::stubs::remove_stubs(&cfg.rootfs_dir, &stubs, &mtimes).map_err(step("remove the mount stubs"))?;
    Ok(done.unwrap_or_else(|| {
        HelperReport::Failed(format!("sandbox init ended without a status ({init_end:?}); this is a bug in rbuild"))
    }))
}

/// Mounts the run's tmpfs on `run_dir` (the mounts are private already) and makes the secrets' directory
/// and the rootfs mount point on it. An overlay whose upper and work directories lie under `run_dir` (a
/// throwaway `debug run`, see [`crate::Executor::throwaway_overlay_dir`]) gets them made here, the upper
/// with the owner and mode of the lower's root (the overlay's root takes the upper's); the tmpfs then has
/// the kernel's default size limit (half the RAM) instead of 64 KiB.
fn mount_run_dir(sys: &dyn Syscall, cfg: &HelperConfig) -> io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    fn inside<'a>(dir: Option<&'a str>, run_dir: &Path) -> Option<&'a Path> {
        dir.map(Path::new).filter(|d| d.starts_with(run_dir))
    }
    let scratch: Vec<(&Mount, &Path, &Path)> = cfg
        .rootfs
        .iter()
        .filter(|m| m.kind == "overlay")
        .filter_map(|m| {
            Some((m, inside(m.option("upperdir"), &cfg.run_dir)?, inside(m.option("workdir"), &cfg.run_dir)?))
        })
        .collect();
    let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    let options = if scratch.is_empty() { "mode=0755,size=64k" } else { "mode=0755" };
    sys.mount("tmpfs", &cfg.run_dir, "tmpfs", flags, options)?;
    std::fs::DirBuilder::new().mode(0o700).create(&cfg.etc.secrets)?;
    for (mount, upper, work) in scratch {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(work)?;
        std::fs::DirBuilder::new().recursive(true).mode(0o755).create(upper)?;
        // The topmost lower directory is the overlay's root as the step sees it.
        if let Some(lower) = mount.option("lowerdir").and_then(|l| l.split(':').next()) {
            let meta = std::fs::metadata(lower)?;
            std::os::unix::fs::chown(upper, Some(meta.uid()), Some(meta.gid()))?;
            std::fs::set_permissions(upper, std::fs::Permissions::from_mode(meta.mode() & 0o7777))?;
        }
    }
    std::fs::create_dir(&cfg.rootfs_dir)
}

fn send(tx: &OwnedFd, msg: &InitMessage) {
    let mut line = serde_json::to_vec(msg).unwrap_or_default();
    line.push(b'\n');
    let _ = std::fs::File::from(tx.try_clone().unwrap_or_else(|_| sys::exit_now(122))).write_all(&line);
}

/// PID 1 of the new pid namespace. Never returns.
fn init_main(spec: &Spec, filters: &[BpfProgram], tx: OwnedFd) -> ! {
    let linux = LinuxSyscall;
    // If the helper is killed (cancellation), init dies, and with it every process of the namespace.
    let _ = sys::set_parent_death_signal(libc::SIGKILL);
    let report = match init_setup(&linux, spec, filters, &tx) {
        Ok(r) => r,
        Err(e) => HelperReport::Failed(e.to_string()),
    };
    send(&tx, &InitMessage::Done(report));
    sys::exit_now(0)
}

fn init_setup(
    linux: &LinuxSyscall,
    spec: &Spec,
    filters: &[BpfProgram],
    tx: &OwnedFd,
) -> Result<HelperReport, InitError> {
    // A mount namespace of its own: pivot_root must not move the helper's root.
    linux.unshare(libc::CLONE_NEWNS | libc::CLONE_NEWCGROUP).map_err(InitError::Unshare)?;
    let prepared = crate::rootfs::prepare(linux, spec);
    if let Ok(p) = &prepared {
        send(tx, &InitMessage::Stubs(p.stubs.clone()));
    }
    prepared?;
    sys::block_all_signals(true).map_err(step("block signals"))?;
    let (err_rx, err_tx) = sys::pipe().map_err(step("create the exec pipe"))?;
    let child = match sys::fork().map_err(step("fork the command"))? {
        Forked::Child => {
            drop(err_rx);
            let e = exec_command(spec, filters, err_tx.as_raw_fd());
            let _ = std::fs::File::from(err_tx).write_all(e.to_string().as_bytes());
            sys::exit_now(127)
        }
        Forked::Parent(pid) => pid,
    };
    drop(err_tx);
    let mut msg = String::new();
    let _ = std::fs::File::from(err_rx).read_to_string(&mut msg);
    if !msg.is_empty() {
        let _ = sys::waitpid(child, false);
        return Ok(HelperReport::Failed(msg));
    }
    loop {
        let sig = sys::wait_signal().map_err(step("wait for signals"))?;
        if sig != libc::SIGCHLD {
            let _ = sys::kill(child, sig);
            continue;
        }
        // Reap every zombie: orphans of the command are reparented to us.
        while let Some((pid, ended)) = sys::waitpid(-1, true).map_err(step("reap"))? {
            if pid == child {
                return Ok(match ended {
                    Ended::Exited(c) => HelperReport::Exited(c),
                    Ended::Signaled(s) => HelperReport::Signaled(s),
                });
            }
        }
    }
}

/// Finds `name` in the PATH of the process environment, as runc does (`exec.LookPath`).
pub fn look_path(name: &str, env: &[String]) -> Result<PathBuf, String> {
    let is_exec = |p: &Path| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if name.contains('/') {
        return Ok(PathBuf::from(name));
    }
    let path = env.iter().rev().find_map(|e| e.strip_prefix("PATH=")).unwrap_or("");
    for dir in path.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let candidate = Path::new(dir).join(name);
        if is_exec(&candidate) {
            return Ok(candidate);
        }
    }
    Err(format!("exec: {name:?}: executable file not found in $PATH"))
}

fn cstrings<'a>(items: impl IntoIterator<Item = &'a String>) -> Result<Vec<CString>, String> {
    items.into_iter().map(|s| CString::new(s.as_bytes()).map_err(|_| format!("{s:?} contains a NUL byte"))).collect()
}

/// The command's last steps before exec; returns only the reason it failed.
fn exec_command(spec: &Spec, filters: &[BpfProgram], keep_fd: i32) -> String {
    match prepare_exec(spec, keep_fd) {
        Ok((path, args, env)) => {
            // Last: from here on only execve runs, which the profile allows.
            if let Err(e) = sys::apply_seccomp(filters) {
                return format!("cannot apply the seccomp profile: {e}");
            }
            format!("exec {}: {}", path.to_string_lossy(), sys::execve(&path, &args, &env))
        }
        Err(e) => e,
    }
}

fn prepare_exec(spec: &Spec, keep_fd: i32) -> Result<(CString, Vec<CString>, Vec<CString>), String> {
    let process = spec.process().as_ref().ok_or("the spec has no process")?;
    let io_err = |what: &str| {
        let what = what.to_string();
        move |e: io::Error| format!("cannot {what}: {e}")
    };
    sys::reset_signal_dispositions();
    sys::block_all_signals(false).map_err(io_err("unblock signals"))?;
    sys::setsid().map_err(io_err("start a session"))?;
    for r in process.rlimits().as_deref().unwrap_or(&[]) {
        let typ = crate::rlimit::RlimitType::from_oci(r.typ())
            .ok_or_else(|| format!("rlimit {} is not supported", r.typ()))?;
        let resource = typ.resource();
        let (mut soft, mut hard) = (r.soft(), r.hard());
        if resource == libc::RLIMIT_NOFILE {
            // The kernel refuses more than fs.nr_open; hosts that lower it still get the most they allow.
            let max = sys::nr_open();
            (soft, hard) = (soft.min(max), hard.min(max));
        }
        if let Err(e) = sys::set_rlimit(resource, soft, hard) {
            // Raising a hard limit needs CAP_SYS_RESOURCE, which some hosts withhold even from root:
            // keep the hard limit we have and raise the soft one as far as it goes.
            let current_hard = sys::rlimit_hard(resource).map_err(io_err("read rlimits"))?;
            if e.raw_os_error() != Some(libc::EPERM) || hard <= current_hard {
                return Err(format!("cannot set the {typ} limit to {}:{}: {e}", r.soft(), r.hard()));
            }
            sys::set_rlimit(resource, soft.min(current_hard), current_hard).map_err(io_err("set rlimits"))?;
        }
    }
    // No descriptor of ours may survive into the command: a WORKDIR of /proc/self/fd/N must not reach the
    // host (CVE-2024-21626). Only the exec-error pipe stays, close-on-exec.
    sys::close_fds_except(keep_fd).map_err(io_err("close inherited descriptors"))?;
    let caps = process.capabilities().as_ref();
    let set = |s: Option<&oci_spec::runtime::Capabilities>| s.map_or(0, capability_mask);
    let bounding = set(caps.and_then(|c| c.bounding().as_ref()));
    sys::limit_bounding_set(bounding).map_err(io_err("limit the capability bounding set"))?;
    let user = process.user();
    sys::set_keep_caps(true).map_err(io_err("keep capabilities"))?;
    let groups = user.additional_gids().clone().unwrap_or_default();
    sys::set_ids(user.uid(), user.gid(), &groups).map_err(io_err("switch to the user"))?;
    sys::set_keep_caps(false).map_err(io_err("keep capabilities"))?;
    sys::set_capabilities(
        set(caps.and_then(|c| c.effective().as_ref())),
        set(caps.and_then(|c| c.permitted().as_ref())),
        set(caps.and_then(|c| c.inheritable().as_ref())),
    )
    .map_err(io_err("set capabilities"))?;
    sys::set_umask(0o022);
    let cwd = process.cwd();
    sys::chdir_checked(cwd).map_err(|e| format!("cannot change to working directory {}: {e}", cwd.display()))?;
    let env = process.env().clone().unwrap_or_default();
    let args = process.args().clone().unwrap_or_default();
    let first = args.first().ok_or("no command given")?;
    let path = look_path(first, &env)?;
    if process.no_new_privileges() == Some(true) {
        sys::set_no_new_privs().map_err(io_err("set no_new_privs"))?;
    }
    let path = CString::new(path.as_os_str().as_bytes()).map_err(|_| "the command path contains a NUL byte")?;
    let (args, env) = (cstrings(&args)?, cstrings(&env)?);
    Ok((path, args, env))
}
