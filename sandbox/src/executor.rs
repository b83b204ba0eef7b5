//! The [`Executor`] trait and the namespace executor.

use std::io::{self, BufRead, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use snapshotter::mount::Mount;

use crate::cgroup::{controllers_for, CgroupV2, RunCgroup};
use crate::init::{HelperConfig, HelperReport, HELPER_ARG};
use crate::network::NetworkError;
use crate::process::{NetworkMode, ProcessSpec, RunMountKind};
use crate::spec::EtcFiles;
use crate::ssh::AgentForward;
use crate::sys::Forked;

/// How the command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    Exited(i32),
    /// Killed by this signal.
    Signaled(i32),
}

impl ExitStatus {
    pub fn success(self) -> bool {
        self == ExitStatus::Exited(0)
    }

    /// The shell's view: the exit code, or 128 + the signal.
    pub fn code(self) -> i32 {
        match self {
            ExitStatus::Exited(c) => c,
            ExitStatus::Signaled(s) => 128 + s,
        }
    }
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitStatus::Exited(c) => write!(f, "exit code {c}"),
            ExitStatus::Signaled(s) => write!(f, "signal {s}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// One line of the command's output (without its newline; a last unterminated line comes as is).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputLine {
    pub stream: Stream,
    pub time: SystemTime,
    pub line: Vec<u8>,
}

/// Where output lines go (the progress channel).
pub trait OutputSink: Send + Sync {
    fn line(&self, line: OutputLine);
}

impl OutputSink for std::sync::mpsc::Sender<OutputLine> {
    fn line(&self, line: OutputLine) {
        // A dropped receiver means nobody watches the output; the run goes on.
        let _ = self.send(line);
    }
}

/// Collects lines in memory (tests, small tools).
#[derive(Debug, Default)]
pub struct CollectOutput(pub Mutex<Vec<OutputLine>>);

impl CollectOutput {
    /// The lines of one stream, as text.
    pub fn text(&self, stream: Stream) -> String {
        let lines = self.0.lock().unwrap_or_else(|e| e.into_inner());
        lines.iter().filter(|l| l.stream == stream).map(|l| String::from_utf8_lossy(&l.line) + "\n").collect()
    }
}

impl OutputSink for CollectOutput {
    fn line(&self, line: OutputLine) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(line);
    }
}

#[derive(Default)]
struct CancelState {
    cancelled: bool,
    running: Vec<(u64, OwnedFd)>,
    next: u64,
}

/// Cancels runs: [`Cancel::cancel`] kills every run registered with it, and with each its whole
/// namespace. Clones share the state.
#[derive(Clone, Default)]
pub struct Cancel(Arc<Mutex<CancelState>>);

impl std::fmt::Debug for Cancel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cancel").field("cancelled", &self.is_cancelled()).finish()
    }
}

impl Cancel {
    pub fn cancel(&self) {
        let mut st = self.0.lock().unwrap_or_else(|e| e.into_inner());
        st.cancelled = true;
        for (_, fd) in &st.running {
            let _ = crate::sys::pidfd_kill(std::os::fd::AsFd::as_fd(fd));
        }
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).cancelled
    }

    pub(crate) fn register(&self, pidfd: OwnedFd) -> u64 {
        let mut st = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if st.cancelled {
            let _ = crate::sys::pidfd_kill(std::os::fd::AsFd::as_fd(&pidfd));
        }
        st.next += 1;
        let id = st.next;
        st.running.push((id, pidfd));
        id
    }

    pub(crate) fn unregister(&self, id: u64) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).running.retain(|(i, _)| *i != id);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("cannot prepare the sandbox state in {dir}: {source}")]
    State { dir: PathBuf, source: io::Error },
    #[error("cannot start the sandbox helper {helper}: {source}")]
    Spawn { helper: PathBuf, source: io::Error },
    #[error("cannot talk to the sandbox helper: {0}")]
    Protocol(String),
    #[error("{0}")]
    Setup(String),
    #[error("the run was cancelled")]
    Cancelled,
    #[error("cannot run {}: {source}; install runc (apt-get install runc) or choose --oci-runtime namespace", runtime.display())]
    Runtime { runtime: PathBuf, source: io::Error },
    #[error(transparent)]
    Network(#[from] NetworkError),
}

/// The result of one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOutcome {
    pub status: ExitStatus,
    /// Things that were not applied but did not stop the run (e.g. limits without cgroups).
    pub warnings: Vec<String>,
}

/// Runs one process on a rootfs given as snapshot mounts. Implementations block; async callers use
/// `spawn_blocking`.
pub trait Executor: Send + Sync {
    fn run(
        &self,
        rootfs: &[Mount],
        process: &ProcessSpec,
        output: &dyn OutputSink,
        cancel: &Cancel,
    ) -> Result<RunOutcome, ExecError>;

    /// A directory for a throwaway overlay's upper and work directories that the run itself makes in
    /// memory and that vanish with it (`rbuild debug run`), or `None` when the caller must make them.
    /// Nothing exists there on the host: an overlay [`Mount`] naming `DIR/upper` and `DIR/work` is the
    /// whole request.
    fn throwaway_overlay_dir(&self) -> Option<PathBuf> {
        None
    }
}

/// BuildKit's /etc/hosts for build containers, with `--add-host` entries after the defaults (as BuildKit's
/// executor/oci/hosts.go writes them).
pub fn hosts_file(hostname: &str, extra: &[(String, String)]) -> String {
    let mut s = format!("127.0.0.1\tlocalhost {hostname}\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    for (host, ip) in extra {
        s.push_str(&format!("{ip}\t{host}\n"));
    }
    s
}

/// The host's resolv.conf; without the host network, loopback nameservers cannot work and are dropped,
/// falling back to public resolvers when none remain (BuildKit/libnetwork behaviour).
pub fn resolv_conf(host: &str, network: NetworkMode) -> String {
    if network.is_host() {
        return host.to_string();
    }
    let mut out = String::new();
    let mut servers = 0;
    for line in host.lines() {
        let mut fields = line.split_whitespace();
        if fields.next() == Some("nameserver") {
            let addr = fields.next().unwrap_or("");
            if addr.starts_with("127.") || addr == "::1" {
                continue;
            }
            servers += 1;
        }
        out.push_str(line);
        out.push('\n');
    }
    if servers == 0 {
        out.push_str("nameserver 8.8.8.8\nnameserver 8.8.4.4\n");
    }
    out
}

/// Whether every nameserver of a resolv.conf is a loopback address (a local stub resolver).
fn only_loopback_servers(conf: &str) -> bool {
    let mut servers = conf.lines().filter_map(|l| {
        let mut f = l.split_whitespace();
        (f.next() == Some("nameserver")).then(|| f.next().unwrap_or(""))
    });
    servers.all(|a| a.starts_with("127.") || a == "::1")
}

/// The contents of the run's /etc/hosts and /etc/resolv.conf.
pub(crate) fn etc_contents(process: &ProcessSpec) -> (String, String) {
    let hosts = hosts_file(&process.hostname, &process.extra_hosts);
    let mut host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    if !process.network.is_host() && only_loopback_servers(&host_resolv) {
        // systemd-resolved's stub (127.0.0.53) is out of a namespace's reach; its upstream servers are not
        // (what Docker does).
        if let Ok(upstream) = std::fs::read_to_string("/run/systemd/resolve/resolv.conf") {
            if !only_loopback_servers(&upstream) {
                host_resolv = upstream;
            }
        }
    }
    (hosts, resolv_conf(&host_resolv, process.network))
}

/// Writes the per-run files: /etc/hosts and /etc/resolv.conf sources, the (empty) secret and
/// ssh directories and the rootfs mount point.
pub(crate) fn write_state(dir: &Path, process: &ProcessSpec) -> io::Result<(EtcFiles, PathBuf)> {
    let etc = EtcFiles::in_dir(dir);
    let (hosts, resolv) = etc_contents(process);
    std::fs::write(&etc.hosts, hosts)?;
    std::fs::write(&etc.resolv_conf, resolv)?;
    for d in [&etc.secrets, &etc.ssh] {
        std::fs::DirBuilder::new().mode(0o700).create(d)?;
    }
    let rootfs = dir.join("rootfs");
    std::fs::create_dir(&rootfs)?;
    Ok((etc, rootfs))
}

/// Starts the ssh-agent forwarding of every ssh mount; they stop when the returned values are dropped.
pub(crate) fn forward_agents(process: &ProcessSpec, etc: &EtcFiles) -> Result<Vec<AgentForward>, ExecError> {
    let mut out = Vec::new();
    for (index, m) in process.mounts.iter().enumerate() {
        if let RunMountKind::Ssh { socket, uid, gid, mode } = &m.kind {
            let fwd = AgentForward::start(&etc.ssh_socket(index), socket, *uid, *gid, *mode)
                .map_err(|e| ExecError::Setup(format!("cannot forward the ssh agent to {}: {e}", m.destination)))?;
            out.push(fwd);
        }
    }
    Ok(out)
}

/// The run's cgroup when the process asks for limits or a `--cgroup-parent` and the host can make it; a
/// warning otherwise (the run goes on without it, as BuildKit's rootless mode does).
pub(crate) fn run_cgroup(run: &str, process: &ProcessSpec, warnings: &mut Vec<String>) -> Option<RunCgroup> {
    let parent = process.cgroup_parent.as_deref();
    if controllers_for(&process.limits).is_empty() && parent.is_none() {
        return None;
    }
    static SWEPT: Mutex<Vec<Option<String>>> = Mutex::new(Vec::new());
    {
        let mut swept = SWEPT.lock().unwrap_or_else(|e| e.into_inner());
        let key = parent.map(str::to_string);
        if !swept.contains(&key) {
            crate::cgroup::sweep_orphans(parent);
            swept.push(key);
        }
    }
    match CgroupV2::host().and_then(|c| c.create(parent, &crate::cgroup::run_name(run), &process.limits)) {
        Ok(cg) => Some(cg),
        Err(why) => {
            let mut what = Vec::new();
            if !controllers_for(&process.limits).is_empty() {
                what.push("resource limits (memory, pids, cpu)".to_string());
            }
            if let Some(p) = parent {
                what.push(format!("--cgroup-parent {p}"));
            }
            warnings.push(format!("{} not applied: {why}", what.join(" and ")));
            None
        }
    }
}

/// Streams `src` to `sink` line by line.
pub(crate) fn pump(src: impl Read, stream: Stream, sink: &dyn OutputSink) {
    let mut reader = io::BufReader::new(src);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                if buf.last() == Some(&b'\n') {
                    buf.pop();
                }
                sink.line(OutputLine { stream, time: SystemTime::now(), line: buf.clone() });
            }
        }
    }
}

/// Output bytes cut into lines for a sink; a last unterminated line goes out at the end, as [`pump`] does.
struct LineCutter {
    stream: Stream,
    pending: Vec<u8>,
}

impl LineCutter {
    fn push(&mut self, bytes: &[u8], sink: &dyn OutputSink) {
        self.pending.extend_from_slice(bytes);
        let mut start = 0;
        while let Some(nl) = self.pending[start..].iter().position(|&b| b == b'\n') {
            let line = self.pending[start..start + nl].to_vec();
            sink.line(OutputLine { stream: self.stream, time: SystemTime::now(), line });
            start += nl + 1;
        }
        self.pending.drain(..start);
    }

    fn finish(&mut self, sink: &dyn OutputSink) {
        if !self.pending.is_empty() {
            let line = std::mem::take(&mut self.pending);
            sink.line(OutputLine { stream: self.stream, time: SystemTime::now(), line });
        }
    }
}

/// Reads the helper's stdout and stderr into `sink` line by line and its report to the end, all on this
/// thread with poll(2), until all three are at end of file; returns the report. A read error on an output
/// pipe ends that stream (as [`pump`]); one on the report is returned.
fn read_helper(
    stdout: std::fs::File,
    stderr: std::fs::File,
    report: &mut UnixStream,
    sink: &dyn OutputSink,
) -> io::Result<Vec<u8>> {
    let mut outputs = [
        (Some(stdout), LineCutter { stream: Stream::Stdout, pending: Vec::new() }),
        (Some(stderr), LineCutter { stream: Stream::Stderr, pending: Vec::new() }),
    ];
    let mut report_open = true;
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let mut fds = Vec::with_capacity(3);
        let mut which = Vec::with_capacity(3);
        for (i, (file, _)) in outputs.iter().enumerate() {
            if let Some(f) = file {
                fds.push(f.as_fd());
                which.push(i);
            }
        }
        if report_open {
            fds.push(report.as_fd());
            which.push(2);
        }
        if fds.is_empty() {
            return Ok(got);
        }
        let ready = crate::sys::poll_readable(&fds)?;
        drop(fds);
        for (&i, _) in which.iter().zip(ready).filter(|(_, r)| *r) {
            if i == 2 {
                match report.read(&mut buf) {
                    Ok(0) => report_open = false,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
                continue;
            }
            let (file, cutter) = &mut outputs[i];
            let read = file.as_mut().map_or(Ok(0), |f| f.read(&mut buf));
            match read {
                Ok(n) if n > 0 => cutter.push(&buf[..n], sink),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                _ => {
                    cutter.finish(sink);
                    *file = None;
                }
            }
        }
    }
}

/// The directory under the state directory on which each run's helper mounts its tmpfs.
const RUN_DIR: &str = "mnt";
/// The directory under the state directory holding the /etc/hosts and /etc/resolv.conf sources.
const ETC_DIR: &str = "etc";

/// The /etc/hosts and /etc/resolv.conf sources of a run. With the seccomp profile (which keeps a step from
/// remounting its read-only binds) they are files named by the digest of their contents, written by the
/// first run that needs them and kept for the others; a step without it gets copies of its own, removed on
/// drop, so it cannot change the next step's files.
struct EtcSources {
    hosts: PathBuf,
    resolv_conf: PathBuf,
    own: bool,
}

impl EtcSources {
    fn write(dir: &Path, process: &ProcessSpec, run_name: &str) -> io::Result<EtcSources> {
        std::fs::create_dir_all(dir)?;
        let (hosts, resolv_conf) = etc_contents(process);
        let own = !process.seccomp;
        let file = |name: &str, contents: &str| -> io::Result<PathBuf> {
            let path = if own {
                dir.join(format!("{run_name}-{name}"))
            } else {
                let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(contents.as_bytes()));
                dir.join(format!("{}-{name}", &digest[..32]))
            };
            if own || std::fs::symlink_metadata(&path).is_err() {
                // Complete or absent under its name: a concurrent run writing the same bytes replaces it.
                let mut tmp = tempfile::Builder::new().prefix(".new-").tempfile_in(dir)?;
                tmp.write_all(contents.as_bytes())?;
                tmp.as_file().set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
                tmp.persist(&path).map_err(|e| e.error)?;
            }
            Ok(path)
        };
        Ok(EtcSources { hosts: file("hosts", &hosts)?, resolv_conf: file("resolv.conf", &resolv_conf)?, own })
    }
}

impl Drop for EtcSources {
    fn drop(&mut self) {
        if self.own {
            let _ = std::fs::remove_file(&self.hosts);
            let _ = std::fs::remove_file(&self.resolv_conf);
        }
    }
}

/// The default executor: namespaces set up by a helper process (see [`crate::init`]).
#[derive(Debug, Clone)]
pub struct NamespaceExecutor {
    helper: PathBuf,
    /// Whether the helper may be a fork of this process when it has a single thread.
    may_fork: bool,
    state_dir: PathBuf,
    networks: Arc<crate::network::NetPool>,
}

/// A started helper: its pid and the read ends of its stdout and stderr.
struct Helper {
    pid: libc::pid_t,
    stdout: std::fs::File,
    stderr: std::fs::File,
}

impl NamespaceExecutor {
    /// Re-executes this binary (`/proc/self/exe`), whose `main` must call [`crate::init::maybe_run`] first;
    /// per-run state goes under `state_dir`. A process with a single thread (`rbuild debug run`) forks the
    /// helper instead: a fork may run any code there, and it spares the run loading the binary again (its
    /// relocations and page faults, 1-2 ms per run for rbuild's); a multithreaded one (the tokio engine)
    /// must re-execute.
    pub fn new(state_dir: impl Into<PathBuf>) -> NamespaceExecutor {
        NamespaceExecutor {
            helper: "/proc/self/exe".into(),
            may_fork: true,
            state_dir: state_dir.into(),
            networks: Default::default(),
        }
    }

    /// Uses another binary as the helper (one whose `main` calls [`crate::init::maybe_run`]), always.
    pub fn with_helper(mut self, helper: impl Into<PathBuf>) -> NamespaceExecutor {
        self.helper = helper.into();
        self.may_fork = false;
        self
    }

    /// The helper as a fork of this process, when allowed and this process has a single thread.
    fn fork_helper(&self, config: &HelperConfig, report: BorrowedFd<'_>) -> Result<Option<Helper>, ExecError> {
        if !self.may_fork {
            return Ok(None);
        }
        let spawn_err = |source| ExecError::Spawn { helper: "a fork of this process".into(), source };
        let (out_r, out_w) = crate::sys::pipe().map_err(spawn_err)?;
        let (err_r, err_w) = crate::sys::pipe().map_err(spawn_err)?;
        let parent = std::process::id();
        match crate::sys::fork_if_single_threaded().map_err(spawn_err)? {
            None => Ok(None),
            Some(Forked::Child) => {
                crate::init::forked_helper_main(parent, report, out_w.as_fd(), err_w.as_fd(), config)
            }
            Some(Forked::Parent(pid)) => Ok(Some(Helper { pid, stdout: out_r.into(), stderr: err_r.into() })),
        }
    }

    /// The helper as a new execution of the helper binary; the config goes over `report` after it.
    fn exec_helper(&self, report: UnixStream) -> Result<Helper, ExecError> {
        let spawn_err = |source| ExecError::Spawn { helper: self.helper.clone(), source };
        let mut child = Command::new(&self.helper)
            .arg(HELPER_ARG)
            .env_clear()
            .env(crate::init::PARENT_ENV, std::process::id().to_string())
            .stdin(Stdio::from(OwnedFd::from(report)))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(spawn_err)?;
        let missing = || ExecError::Protocol("the helper's output pipes are missing".into());
        let stdout = child.stdout.take().ok_or_else(missing)?;
        let stderr = child.stderr.take().ok_or_else(missing)?;
        Ok(Helper {
            pid: child.id() as libc::pid_t,
            stdout: OwnedFd::from(stdout).into(),
            stderr: OwnedFd::from(stderr).into(),
        })
    }
}

impl Executor for NamespaceExecutor {
    /// On the tmpfs the helper mounts on the run directory in its own mount namespace (see
    /// [`crate::init::HelperConfig::run_dir`]): no directory made or removed on the host.
    fn throwaway_overlay_dir(&self) -> Option<PathBuf> {
        Some(self.state_dir.join(RUN_DIR).join("scratch"))
    }

    fn run(
        &self,
        rootfs: &[Mount],
        process: &ProcessSpec,
        output: &dyn OutputSink,
        cancel: &Cancel,
    ) -> Result<RunOutcome, ExecError> {
        if cancel.is_cancelled() {
            return Err(ExecError::Cancelled);
        }
        let state_err = |source| ExecError::State { dir: self.state_dir.clone(), source };
        static RUNS: AtomicU64 = AtomicU64::new(0);
        let run_name = format!("run-{}", RUNS.fetch_add(1, Ordering::Relaxed));
        // A run makes and removes nothing on the host's filesystem for itself (on a busy ext4 each costs up
        // to a millisecond): the secrets' directory and the rootfs mount point are on a tmpfs the helper
        // mounts on `run_dir`, in its own mount namespace (concurrent runs share the empty mount point), and
        // the /etc/hosts and /etc/resolv.conf sources are shared by the runs that have the same contents.
        // Only the ssh-agent sockets, which this process serves, need a directory of the run's own.
        let run_dir = self.state_dir.join(RUN_DIR);
        std::fs::create_dir_all(&run_dir).map_err(state_err)?;
        let etc_sources = EtcSources::write(&self.state_dir.join(ETC_DIR), process, &run_name).map_err(state_err)?;
        let ssh_dir = if process.mounts.iter().any(|m| matches!(m.kind, RunMountKind::Ssh { .. })) {
            Some(tempfile::Builder::new().prefix("ssh-").tempdir_in(&self.state_dir).map_err(state_err)?)
        } else {
            None
        };
        let etc = EtcFiles {
            hosts: etc_sources.hosts.clone(),
            resolv_conf: etc_sources.resolv_conf.clone(),
            ssh: ssh_dir.as_ref().map_or_else(|| run_dir.join("ssh"), |d| d.path().to_path_buf()),
            ..EtcFiles::in_dir(&run_dir)
        };
        let rootfs_dir = run_dir.join("rootfs");
        let agents = forward_agents(process, &etc)?;
        let mut warnings = Vec::new();
        // A network namespace with NAT that no other running step has (the host's side set up once per
        // process, namespaces pooled: see crate::network), held until the helper is gone.
        let mut network = match process.network {
            NetworkMode::Default => Some(self.networks.take()?),
            NetworkMode::None | NetworkMode::Host => None,
        };
        if !process.seccomp {
            // Without the profile a step could change its namespace for the next one.
            network.iter_mut().for_each(|n| n.discard());
        }
        let cgroup = run_cgroup(&run_name, process, &mut warnings);
        let config = HelperConfig {
            rootfs: rootfs.to_vec(),
            rootfs_dir,
            run_dir,
            process: process.clone(),
            etc,
            netns: network.as_ref().map(|n| n.path()),
            cgroup: cgroup.as_ref().map(|c| c.path().to_path_buf()),
        };
        let (mut ours, theirs) = UnixStream::pair().map_err(|e| ExecError::Protocol(e.to_string()))?;
        let (helper, config) = match self.fork_helper(&config, theirs.as_fd())? {
            Some(helper) => {
                // The report's EOF comes when the helper's end is closed everywhere.
                drop(theirs);
                (helper, None)
            }
            None => {
                let bytes = serde_json::to_vec(&config).map_err(|e| ExecError::Protocol(e.to_string()))?;
                (self.exec_helper(theirs)?, Some(bytes))
            }
        };
        let reg = crate::sys::pidfd_open(helper.pid as u32).ok().map(|fd| cancel.register(fd));
        let (stdout, stderr) = (helper.stdout, helper.stderr);
        let report = (|| -> io::Result<Vec<u8>> {
            if let Some(config) = &config {
                ours.write_all(config)?;
            }
            ours.shutdown(std::net::Shutdown::Write)?;
            // One thread reads the output and the report (no threads started per run).
            read_helper(stdout, stderr, &mut ours, output)
        })();
        let waited = crate::sys::waitpid(helper.pid, false);
        if let Some(id) = reg {
            cancel.unregister(id);
        }
        if cancel.is_cancelled() {
            return Err(ExecError::Cancelled);
        }
        let waited = match waited.map_err(|e| ExecError::Protocol(e.to_string()))? {
            Some((_, crate::sys::Ended::Exited(c))) => format!("exit code {c}"),
            Some((_, crate::sys::Ended::Signaled(s))) => format!("signal {s}"),
            None => "still running".to_string(),
        };
        let report = report.map_err(|e| ExecError::Protocol(e.to_string()))?;
        let report: HelperReport = serde_json::from_slice(&report)
            .map_err(|e| ExecError::Protocol(format!("the helper ended ({waited}) without a report: {e}")))?;
        drop(agents);
        if let Some(cg) = cgroup {
            let path = cg.path().to_path_buf();
            if let Err(e) = cg.remove() {
                warnings.push(format!("cannot remove cgroup {}: {e}", path.display()));
            }
        }
        drop(network);
        drop(ssh_dir);
        drop(etc_sources);
        match report {
            HelperReport::Exited(c) => Ok(RunOutcome { status: ExitStatus::Exited(c), warnings }),
            HelperReport::Signaled(s) => Ok(RunOutcome { status: ExitStatus::Signaled(s), warnings }),
            HelperReport::Failed(m) => Err(ExecError::Setup(m)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_drops_loopback_servers_without_host_network() {
        let host = "search example\nnameserver 127.0.0.53\nnameserver 10.0.0.1\noptions ndots:1\n";
        assert_eq!(resolv_conf(host, NetworkMode::Host), host);
        assert_eq!(resolv_conf(host, NetworkMode::None), "search example\nnameserver 10.0.0.1\noptions ndots:1\n");
        assert_eq!(
            resolv_conf("nameserver 127.0.0.53\n", NetworkMode::None),
            "nameserver 8.8.8.8\nnameserver 8.8.4.4\n"
        );
    }

    #[test]
    fn pump_splits_lines_and_keeps_a_last_partial_one() {
        let sink = CollectOutput::default();
        pump(&b"one\ntwo\n\nthree"[..], Stream::Stderr, &sink);
        assert_eq!(sink.text(Stream::Stderr), "one\ntwo\n\nthree\n");
        assert_eq!(sink.text(Stream::Stdout), "");
    }

    #[test]
    fn cutting_chunks_gives_the_lines_pump_gives() {
        let bytes = b"one\ntwo\n\nthree";
        for chunk in 1..bytes.len() {
            let sink = CollectOutput::default();
            let mut cut = LineCutter { stream: Stream::Stderr, pending: Vec::new() };
            bytes.chunks(chunk).for_each(|c| cut.push(c, &sink));
            cut.finish(&sink);
            assert_eq!(sink.text(Stream::Stderr), "one\ntwo\n\nthree\n", "chunks of {chunk}");
        }
    }

    #[test]
    fn cancel_before_run_is_reported() {
        let cancel = Cancel::default();
        cancel.cancel();
        let exec = NamespaceExecutor::new(std::env::temp_dir().join("rbuild-sandbox-test-unused"));
        let err = exec.run(&[], &ProcessSpec::new(vec!["true".into()]), &CollectOutput::default(), &cancel);
        assert!(matches!(err, Err(ExecError::Cancelled)));
    }

    #[test]
    fn exit_status_codes() {
        assert_eq!(ExitStatus::Signaled(9).code(), 137);
        assert!(ExitStatus::Exited(0).success());
        assert_eq!(ExitStatus::Exited(3).to_string(), "exit code 3");
    }
}
