//! The OCI runtime executor: the same spec as the namespace executor, written to a bundle and run by
//! `runc run` (or crun, which takes the same command line), for users who want the battle-tested runtime.
//!
//! We prepare what the runtime does not: the rootfs (the snapshot's overlay, mounted by us on the bundle's
//! `rootfs`), the user (resolved from the rootfs's /etc/passwd before the spec is written), the secrets'
//! tmpfs, the ssh-agent forwarding, and afterwards the removal of the mount points the runtime created.
//! Seccomp, capabilities, namespaces, masked paths and cgroups are the runtime's work, from the spec.
//!
//! `runc run` runs as the init of a pid namespace of our own (see [`RuncExecutor::run`]), so a killed
//! rbuild takes the container with it.
//!
//! Exit status: `runc run` exits with the process's code, or 128 + the signal that killed it, so a code
//! above 128 that names a signal is reported as that signal (as shells do).

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use snapshotter::mount::Mount;

use crate::executor::{
    forward_agents, pump, write_state, Cancel, ExecError, Executor, ExitStatus, OutputSink, RunOutcome, Stream,
};
use crate::process::ProcessSpec;
use crate::sys::LinuxSyscall;

/// Runs each step with an OCI runtime binary (`runc` by default).
#[derive(Debug, Clone)]
pub struct RuncExecutor {
    runtime: PathBuf,
    state_dir: PathBuf,
}

/// Unmounts on drop what was mounted for one run in the host's mount namespace.
struct Mounted {
    target: PathBuf,
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = snapshotter::mount::unmount_all(&self.target);
    }
}

impl RuncExecutor {
    /// Uses `runc` from PATH; bundles and the runtime's state go under `state_dir`.
    pub fn new(state_dir: impl Into<PathBuf>) -> RuncExecutor {
        RuncExecutor { runtime: "runc".into(), state_dir: state_dir.into() }
    }

    /// Uses another runtime binary with runc's command line (e.g. `crun`).
    pub fn with_runtime(mut self, runtime: impl Into<PathBuf>) -> RuncExecutor {
        self.runtime = runtime.into();
        self
    }

    /// The runtime's version line, or why it cannot be run.
    pub fn version(&self) -> Result<String, ExecError> {
        let out = Command::new(&self.runtime)
            .arg("--version")
            .output()
            .map_err(|source| ExecError::Runtime { runtime: self.runtime.clone(), source })?;
        Ok(String::from_utf8_lossy(&out.stdout).lines().next().unwrap_or_default().to_string())
    }

    fn runtime_root(&self) -> PathBuf {
        self.state_dir.join("runtime")
    }

    fn delete(&self, id: &str) {
        let _ = Command::new(&self.runtime)
            .arg("--root")
            .arg(self.runtime_root())
            .args(["delete", "--force", id])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Lowers the spec's RLIMIT_NOFILE to the hard limit this process has when it cannot raise it (no
/// CAP_SYS_RESOURCE on some hosts, even for root): runc would fail to start the process otherwise; the
/// namespace executor does the same at exec time.
fn clamp_nofile(spec: &mut oci_spec::runtime::Spec) {
    let Ok(hard) = crate::sys::rlimit_hard(libc::RLIMIT_NOFILE) else { return };
    let can_raise = crate::sys::has_effective_capability(24);
    let max = if can_raise { crate::sys::nr_open() } else { hard.min(crate::sys::nr_open()) };
    let Some(process) = spec.process_mut().as_mut() else { return };
    let Some(limits) = process.rlimits().clone() else { return };
    let limits = limits
        .into_iter()
        .map(|l| {
            if l.typ() != oci_spec::runtime::PosixRlimitType::RlimitNofile {
                return l;
            }
            oci_spec::runtime::PosixRlimitBuilder::default()
                .typ(l.typ())
                .hard(l.hard().min(max))
                .soft(l.soft().min(max))
                .build()
                .unwrap_or(l)
        })
        .collect();
    process.set_rlimits(Some(limits));
}

/// Points the spec's network namespace at `path`.
fn join_network(spec: &mut oci_spec::runtime::Spec, path: &Path) -> Result<(), oci_spec::OciSpecError> {
    use oci_spec::runtime::{LinuxNamespaceBuilder, LinuxNamespaceType};
    let Some(linux) = spec.linux_mut().as_mut() else { return Ok(()) };
    let mut namespaces = linux.namespaces().clone().unwrap_or_default();
    namespaces.retain(|n| n.typ() != LinuxNamespaceType::Network);
    namespaces.push(LinuxNamespaceBuilder::default().typ(LinuxNamespaceType::Network).path(path).build()?);
    linux.set_namespaces(Some(namespaces));
    Ok(())
}

/// runc's status convention back to ours.
pub fn status_from_code(code: i32) -> ExitStatus {
    if code > 128 && code - 128 < libc::SIGRTMIN() && code - 128 != libc::SIGSTOP {
        ExitStatus::Signaled(code - 128)
    } else {
        ExitStatus::Exited(code)
    }
}

impl Executor for RuncExecutor {
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
        std::fs::create_dir_all(self.runtime_root()).map_err(state_err)?;
        let state = tempfile::Builder::new().prefix("run-").tempdir_in(&self.state_dir).map_err(state_err)?;
        let bundle = state.path().to_path_buf();
        let (etc, rootfs_dir) = write_state(&bundle, process).map_err(state_err)?;
        let agents = forward_agents(process, &etc)?;
        let setup = |what: &str| {
            let what = what.to_string();
            move |e: io::Error| ExecError::Setup(format!("cannot {what}: {e}"))
        };

        snapshotter::mount::mount_all(rootfs, &rootfs_dir)
            .map_err(|e| ExecError::Setup(format!("cannot mount the rootfs: {e}")))?;
        let rootfs_mount = Mounted { target: rootfs_dir.clone() };
        let linux = LinuxSyscall;
        let secrets_mount = crate::stubs::write_secrets(&linux, &etc, process)
            .map_err(setup("put the secrets on a tmpfs"))?
            .then(|| Mounted { target: etc.secrets.clone() });

        let user =
            crate::user::resolve_in_rootfs(&rootfs_dir, &process.user).map_err(|e| ExecError::Setup(e.to_string()))?;
        let mut spec =
            crate::spec::build_spec(process, &user, &rootfs_dir, &etc).map_err(|e| ExecError::Setup(e.to_string()))?;
        clamp_nofile(&mut spec);
        let mut warnings = Vec::new();
        let id = format!("rbuild-{}", bundle.file_name().map(|n| n.to_string_lossy()).unwrap_or_default());
        // `--cgroup-parent`: runc makes the cgroup (v1 or v2) at the spec's path, `/<parent>/rbuild/<id>`
        // (BuildKit's `/<parent>/buildkit/<id>`).
        if let Some(parent) = &process.cgroup_parent {
            match crate::cgroup::parent_components(parent) {
                Ok(parts) => {
                    if let Some(linux) = spec.linux_mut().as_mut() {
                        linux.set_cgroups_path(Some(PathBuf::from(format!("/{}/rbuild/{id}", parts.join("/")))));
                    }
                }
                Err(why) => warnings.push(format!("--cgroup-parent {parent} not applied: {why}")),
            }
        }
        // The default network: a namespace we make and address (runc only makes empty ones), joined by path.
        let mut network = None;
        if process.network == crate::NetworkMode::Default {
            crate::network::ensure_nat()?;
            let lease = crate::network::Lease::take()?;
            let netns = crate::network::NetnsMount::create(&bundle.join("netns"), &lease.plan)
                .map_err(setup("set up the step's network"))?;
            join_network(&mut spec, netns.path()).map_err(|e| ExecError::Setup(e.to_string()))?;
            network = Some((netns, lease));
        }
        let stubs =
            crate::stubs::planned_stubs(&linux, &spec, &rootfs_dir).map_err(|e| ExecError::Setup(e.to_string()))?;
        let mtimes =
            crate::stubs::parent_mtimes(&linux, &spec, &rootfs_dir).map_err(|e| ExecError::Setup(e.to_string()))?;
        spec.save(bundle.join("config.json"))
            .map_err(|e| ExecError::Setup(format!("cannot write {}: {e}", bundle.join("config.json").display())))?;

        // The container outlives a killed `runc run`, so runc runs as the init of a pid namespace of its own
        // (`unshare --pid --fork --kill-child`, with /proc remounted for it): when rbuild dies, unshare
        // gets its parent-death signal, its child runc is killed with it, and the kernel kills everything
        // in the namespace, the container's nested one included.
        let mut cmd = Command::new("unshare");
        cmd.args(["--pid", "--fork", "--mount-proc", "--kill-child=SIGKILL", "--"]).arg(&self.runtime);
        crate::sys::kill_with_parent(&mut cmd);
        let mut child = cmd
            .arg("--root")
            .arg(self.runtime_root())
            .arg("run")
            .arg("--bundle")
            .arg(&bundle)
            .arg(&id)
            .env_clear()
            .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| ExecError::Spawn { helper: "unshare".into(), source })?;
        let reg = crate::sys::pidfd_open(child.id()).ok().map(|fd| cancel.register(fd));
        let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
        let waited = std::thread::scope(|s| {
            if let Some(out) = stdout {
                s.spawn(move || pump(out, Stream::Stdout, output));
            }
            if let Some(err) = stderr {
                s.spawn(move || pump(err, Stream::Stderr, output));
            }
            let waited = child.wait();
            // A killed runtime leaves the container running (and our pipes open): remove it.
            if cancel.is_cancelled() || self.runtime_root().join(&id).exists() {
                self.delete(&id);
            }
            waited
        });
        if let Some(r) = reg {
            cancel.unregister(r);
        }
        let removed = crate::stubs::remove_stubs(&rootfs_dir, &stubs, &mtimes);
        drop(secrets_mount);
        drop(rootfs_mount);
        drop(agents);
        drop(network);
        drop(state);
        if cancel.is_cancelled() {
            return Err(ExecError::Cancelled);
        }
        removed.map_err(setup("remove the mount stubs"))?;
        let waited = waited.map_err(|e| ExecError::Protocol(format!("waiting for {}: {e}", self.runtime.display())))?;
        let status = match (waited.code(), std::os::unix::process::ExitStatusExt::signal(&waited)) {
            (Some(code), _) => status_from_code(code),
            (None, Some(sig)) => ExitStatus::Signaled(sig),
            (None, None) => {
                return Err(ExecError::Protocol(format!("{} ended without a status", self.runtime.display())))
            }
        };
        Ok(RunOutcome { status, warnings })
    }
}

/// Whether `path` is an executable runtime on PATH or a path (for skipping tests where it is missing).
pub fn runtime_available(runtime: &Path) -> bool {
    Command::new(runtime)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runc_codes_become_signals_where_they_name_one() {
        assert_eq!(status_from_code(0), ExitStatus::Exited(0));
        assert_eq!(status_from_code(128), ExitStatus::Exited(128));
        assert_eq!(status_from_code(137), ExitStatus::Signaled(9));
        assert_eq!(status_from_code(143), ExitStatus::Signaled(15));
        assert_eq!(status_from_code(255), ExitStatus::Exited(255));
    }

    #[test]
    fn a_missing_runtime_says_what_to_do() {
        let exec = RuncExecutor::new("/nonexistent").with_runtime("/nonexistent/runc");
        let err = exec.version().unwrap_err().to_string();
        assert!(err.contains("apt-get install runc"), "{err}");
        assert!(!runtime_available(Path::new("/nonexistent/runc")));
    }
}
