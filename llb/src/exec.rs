//! Exec ops: run a process on mounted inputs (BuildKit `ExecOp`, `Meta`, `Mount`).

use serde::{Deserialize, Serialize};

use crate::serde_util::is_default;

/// A command to run. `mounts[0]` is the root filesystem.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ExecOp {
    pub meta: ExecMeta,
    pub mounts: Vec<Mount>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub network: NetworkMode,
    #[serde(default, skip_serializing_if = "is_default")]
    pub security: SecurityMode,
    /// Environment variables whose values come from secrets (`RUN --mount=type=secret,env=`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secret_env: Vec<SecretEnv>,
    /// CDI devices to expose (`RUN --device`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cdi_devices: Vec<CdiDevice>,
}

/// The process: BuildKit's `Meta`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ExecMeta {
    pub args: Vec<String>,
    /// `KEY=value` in order; later entries win as in execve.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cwd: String,
    /// `user[:group]` by name or id; empty is root.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Non-identity: proxy variables from the client (Docker's predefined proxy ARGs are not part of
    /// the cache key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_env: Option<ProxyEnv>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_hosts: Vec<HostIp>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ulimits: Vec<Ulimit>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup_parent: Option<String>,
    /// Exit codes that count as success; empty means only 0.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub valid_exit_codes: Vec<i32>,
    /// Remove the mount-point stubs the runtime created, recursively (BuildKit
    /// `removeMountStubsRecursive`).
    #[serde(default, skip_serializing_if = "is_default")]
    pub remove_mount_stubs_recursive: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ProxyEnv {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_proxy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub https_proxy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ftp_proxy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_proxy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub all_proxy: Option<String>,
}

/// An `/etc/hosts` entry (`--add-host`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HostIp {
    pub host: String,
    pub ip: String,
}

/// An rlimit (`--ulimit nofile=1024:2048`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Ulimit {
    pub name: String,
    pub soft: i64,
    pub hard: i64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NetworkMode {
    /// A private network namespace with the default network (BuildKit's UNSET).
    #[default]
    Sandbox,
    Host,
    None,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecurityMode {
    #[default]
    Sandbox,
    /// Privileged (`RUN --security=insecure`).
    Insecure,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SecretEnv {
    pub id: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "is_default")]
    pub optional: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CdiDevice {
    pub name: String,
    #[serde(default, skip_serializing_if = "is_default")]
    pub optional: bool,
}

/// One mount of an exec. `input` indexes the vertex's inputs (`None`: scratch); `output` is this
/// mount's output index among the exec's outputs (`None`: changes are thrown away).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Mount {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<usize>,
    /// Path inside the input to mount instead of its root.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub selector: String,
    pub dest: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<usize>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub readonly: bool,
    #[serde(default, skip_serializing_if = "is_default")]
    pub kind: MountKind,
    /// Whether the solver may compute a content key of this mount's input (BuildKit `contentCache`).
    #[serde(default, skip_serializing_if = "is_default")]
    pub content_cache: ContentCache,
}

impl Mount {
    /// The root filesystem mount: input 0 at `/`, written to output 0.
    pub fn rootfs(input: Option<usize>) -> Mount {
        Mount::bind(input, "/", Some(0))
    }

    /// A read-write bind of `input` at `dest`.
    pub fn bind(input: Option<usize>, dest: impl Into<String>, output: Option<usize>) -> Mount {
        Mount {
            input,
            selector: String::new(),
            dest: dest.into(),
            output,
            readonly: false,
            kind: MountKind::Bind,
            content_cache: ContentCache::Default,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum MountKind {
    #[default]
    Bind,
    /// A persistent cache directory (`RUN --mount=type=cache`); `input` seeds it when new.
    Cache {
        id: String,
        #[serde(default, skip_serializing_if = "is_default")]
        sharing: CacheSharing,
    },
    Tmpfs {
        /// Size limit in bytes; `None` is the kernel default.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        size: Option<u64>,
    },
    Secret(SecretOpt),
    /// An ssh-agent socket.
    Ssh(SecretOpt),
}

/// Options of a secret file or ssh socket mount.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SecretOpt {
    pub id: String,
    #[serde(default, skip_serializing_if = "is_default")]
    pub uid: u32,
    #[serde(default, skip_serializing_if = "is_default")]
    pub gid: u32,
    /// Permission bits: 0o400 for secrets and 0o600 for ssh sockets in BuildKit's frontend.
    pub mode: u32,
    #[serde(default, skip_serializing_if = "is_default")]
    pub optional: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CacheSharing {
    /// Concurrent writers share one directory.
    #[default]
    Shared,
    /// A second concurrent writer gets a fresh directory.
    Private,
    /// A second writer waits for the first.
    Locked,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContentCache {
    #[default]
    Default,
    On,
    Off,
}

impl ExecOp {
    /// A command on `rootfs_input` (usually input 0) with default options.
    pub fn new(args: Vec<String>, rootfs_input: Option<usize>) -> ExecOp {
        ExecOp {
            meta: ExecMeta { args, ..ExecMeta::default() },
            mounts: vec![Mount::rootfs(rootfs_input)],
            ..ExecOp::default()
        }
    }

    /// Number of outputs: one per mount with an output index.
    pub fn num_outputs(&self) -> usize {
        self.mounts.iter().filter_map(|m| m.output).map(|o| o + 1).max().unwrap_or(0)
    }

    pub(crate) fn blank_non_identity(&mut self) {
        self.meta.proxy_env = None;
    }
}
