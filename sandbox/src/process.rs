//! The process description every executor takes: what to run, as whom, where, with which mounts,
//! network and limits. It is data (serde), so the namespace executor can hand it to its helper process.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The network a RUN step sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// A new network namespace with only the loopback interface, up.
    None,
    /// The host's network namespace.
    Host,
    /// A network namespace of the step's own with a veth pair to the host and outbound NAT (Docker's
    /// builder, BuildKit with its CNI bridge): the step reaches what the host reaches, but not the host's
    /// loopback services, its interfaces or its traffic. See [`crate::network`].
    #[default]
    Default,
}

impl NetworkMode {
    /// Whether the process shares the host's network namespace.
    pub fn is_host(self) -> bool {
        self == NetworkMode::Host
    }
}

/// A network mode that is not one of `none`, `host`, `default`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown network mode {0:?}; expected none, host or default")]
pub struct UnknownNetworkMode(pub String);

impl std::str::FromStr for NetworkMode {
    type Err = UnknownNetworkMode;
    fn from_str(s: &str) -> Result<Self, UnknownNetworkMode> {
        match s {
            "none" => Ok(NetworkMode::None),
            "host" => Ok(NetworkMode::Host),
            "default" | "" => Ok(NetworkMode::Default),
            other => Err(UnknownNetworkMode(other.to_string())),
        }
    }
}

/// A mount the step adds on top of its rootfs (the executor side of `RUN --mount`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunMount {
    /// Absolute path inside the container.
    pub destination: String,
    pub kind: RunMountKind,
}

/// What is mounted. `Debug` never shows a secret's bytes, only their length.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunMountKind {
    /// A host directory or file; read-only unless `readonly` is false.
    Bind { source: PathBuf, readonly: bool },
    /// A fresh tmpfs, optionally limited to `size` bytes.
    Tmpfs { size: Option<u64> },
    /// A secret file (`RUN --mount=type=secret`): the bytes are put on a private tmpfs outside the rootfs
    /// and mounted read-only at the destination; nothing reaches the snapshot.
    Secret { contents: Vec<u8>, uid: u32, gid: u32, mode: u32 },
    /// A forwarded ssh-agent socket (`RUN --mount=type=ssh`) at the destination.
    Ssh { socket: PathBuf, uid: u32, gid: u32, mode: u32 },
}

impl std::fmt::Debug for RunMountKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunMountKind::Bind { source, readonly } => {
                f.debug_struct("Bind").field("source", source).field("readonly", readonly).finish()
            }
            RunMountKind::Tmpfs { size } => f.debug_struct("Tmpfs").field("size", size).finish(),
            RunMountKind::Secret { contents, uid, gid, mode } => f
                .debug_struct("Secret")
                .field("contents", &format_args!("<{} bytes redacted>", contents.len()))
                .field("uid", uid)
                .field("gid", gid)
                .field("mode", &format_args!("{mode:#o}"))
                .finish(),
            RunMountKind::Ssh { socket, uid, gid, mode } => f
                .debug_struct("Ssh")
                .field("socket", socket)
                .field("uid", uid)
                .field("gid", gid)
                .field("mode", &format_args!("{mode:#o}"))
                .finish(),
        }
    }
}

/// Resource limits, applied through cgroups where the host has them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Memory limit in bytes.
    pub memory: Option<i64>,
    /// Maximum number of processes.
    pub pids: Option<i64>,
    /// CPU quota in microseconds per `cpu_period` (default period 100000).
    pub cpu_quota: Option<i64>,
    pub cpu_period: Option<u64>,
}

/// One process to run in the sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessSpec {
    /// argv; `args[0]` is looked up in the PATH of `env` when it has no slash.
    pub args: Vec<String>,
    /// `KEY=VALUE` entries; PATH and HOME get Docker's defaults when missing.
    pub env: Vec<String>,
    /// Absolute working directory, created when missing (as WORKDIR does).
    pub cwd: String,
    /// The `USER` string: `name`, `uid`, `uid:gid`, `name:group`; empty means root.
    pub user: String,
    pub hostname: String,
    pub network: NetworkMode,
    pub mounts: Vec<RunMount>,
    pub limits: Limits,
    /// Apply Docker's default seccomp profile (on unless the step is privileged).
    pub seccomp: bool,
    /// Extra /etc/hosts entries (`--add-host host:ip`), as (host, ip).
    #[serde(default)]
    pub extra_hosts: Vec<(String, String)>,
    /// `--ulimit` values: they replace the default of their type (RLIMIT_NOFILE 1048576); other types are
    /// inherited.
    #[serde(default)]
    pub rlimits: Vec<crate::rlimit::Rlimit>,
    /// `--cgroup-parent`: the run's cgroup is made below this path of the cgroup hierarchy
    /// (`<parent>/rbuild/<run>`, as BuildKit's `<parent>/buildkit/<id>`).
    #[serde(default)]
    pub cgroup_parent: Option<String>,
}

/// BuildKit's default hostname for build containers.
pub const DEFAULT_HOSTNAME: &str = "buildkitsandbox";

/// Docker's default PATH (`system.DefaultPathEnv` on Linux).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

impl ProcessSpec {
    /// A process running `args` as root in `/`, with the default network, hostname and seccomp.
    pub fn new(args: Vec<String>) -> ProcessSpec {
        ProcessSpec {
            args,
            env: Vec::new(),
            cwd: "/".into(),
            user: String::new(),
            hostname: DEFAULT_HOSTNAME.into(),
            network: NetworkMode::Default,
            mounts: Vec::new(),
            limits: Limits::default(),
            seccomp: true,
            extra_hosts: Vec::new(),
            rlimits: Vec::new(),
            cgroup_parent: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_secret_bytes() {
        let mut p = ProcessSpec::new(vec!["true".into()]);
        p.mounts.push(RunMount {
            destination: "/run/secrets/token".into(),
            kind: RunMountKind::Secret { contents: b"hunter2-SECRET".to_vec(), uid: 0, gid: 0, mode: 0o400 },
        });
        let shown = format!("{p:?} {p:#?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains("104, 117"), "{shown}");
        assert!(shown.contains("<14 bytes redacted>"), "{shown}");
        assert!(shown.contains("0o400"), "{shown}");
    }
}
