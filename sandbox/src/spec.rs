//! Builds the OCI runtime spec (oci-spec crate) for a [`ProcessSpec`]: the one description both executors
//! run. Defaults follow Docker/containerd (`oci/defaults.go`, moby `oci/caps`) and runc's masked paths.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxMemoryBuilder, LinuxNamespace,
    LinuxNamespaceBuilder, LinuxNamespaceType, LinuxPidsBuilder, LinuxResourcesBuilder, Mount as OciMount,
    MountBuilder, PosixRlimit, PosixRlimitBuilder, ProcessBuilder, RootBuilder, Spec, SpecBuilder, UserBuilder,
};

use crate::process::{ProcessSpec, RunMountKind, DEFAULT_PATH};
use crate::rlimit::{Rlimit, RlimitType};
use crate::user::ResolvedUser;

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("invalid process: {0}")]
    Invalid(String),
    #[error("cannot build the runtime spec: {0}")]
    Build(#[from] oci_spec::OciSpecError),
    #[error(transparent)]
    Seccomp(#[from] crate::seccomp::SeccompError),
}

/// Docker's default capability set (moby `oci/caps/defaults.go`), which BuildKit uses too.
pub const DEFAULT_CAPABILITIES: [Capability; 14] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

/// runc/moby default masked paths.
pub const MASKED_PATHS: [&str; 12] = [
    "/proc/asound",
    "/proc/acpi",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// runc/moby default read-only paths.
pub const READONLY_PATHS: [&str; 5] = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"];

/// Per-run host files: the sources of /etc/hosts and /etc/resolv.conf (bind-mounted, so they never reach
/// the layer; BuildKit mounts no /etc/hostname, so a RUN may write one), and the directories holding the
/// sources of secret and ssh mounts.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EtcFiles {
    pub hosts: PathBuf,
    pub resolv_conf: PathBuf,
    /// A directory on which the executor mounts a private tmpfs holding the secrets, one file per mount.
    pub secrets: PathBuf,
    /// A directory holding the forwarded ssh-agent sockets, one per mount.
    pub ssh: PathBuf,
}

impl EtcFiles {
    /// The per-run files under one state directory.
    pub fn in_dir(dir: &Path) -> EtcFiles {
        EtcFiles {
            hosts: dir.join("hosts"),
            resolv_conf: dir.join("resolv.conf"),
            secrets: dir.join("secrets"),
            ssh: dir.join("ssh"),
        }
    }

    /// The file holding the secret of `ProcessSpec::mounts[index]`.
    pub fn secret_file(&self, index: usize) -> PathBuf {
        self.secrets.join(index.to_string())
    }

    /// The socket forwarding the ssh agent of `ProcessSpec::mounts[index]`.
    pub fn ssh_socket(&self, index: usize) -> PathBuf {
        self.ssh.join(format!("{index}.sock"))
    }
}

/// The kernel capability number of `cap` (linux/capability.h).
pub fn capability_number(cap: Capability) -> u32 {
    use Capability::*;
    match cap {
        Chown => 0,
        DacOverride => 1,
        DacReadSearch => 2,
        Fowner => 3,
        Fsetid => 4,
        Kill => 5,
        Setgid => 6,
        Setuid => 7,
        Setpcap => 8,
        LinuxImmutable => 9,
        NetBindService => 10,
        NetBroadcast => 11,
        NetAdmin => 12,
        NetRaw => 13,
        IpcLock => 14,
        IpcOwner => 15,
        SysModule => 16,
        SysRawio => 17,
        SysChroot => 18,
        SysPtrace => 19,
        SysPacct => 20,
        SysAdmin => 21,
        SysBoot => 22,
        SysNice => 23,
        SysResource => 24,
        SysTime => 25,
        SysTtyConfig => 26,
        Mknod => 27,
        Lease => 28,
        AuditWrite => 29,
        AuditControl => 30,
        Setfcap => 31,
        MacOverride => 32,
        MacAdmin => 33,
        Syslog => 34,
        WakeAlarm => 35,
        BlockSuspend => 36,
        AuditRead => 37,
        Perfmon => 38,
        Bpf => 39,
        CheckpointRestore => 40,
    }
}

/// A set of capabilities as a bitmask of kernel numbers.
pub fn capability_mask<'a>(caps: impl IntoIterator<Item = &'a Capability>) -> u64 {
    caps.into_iter().fold(0, |m, c| m | 1 << capability_number(*c))
}

fn mount(dest: &str, typ: &str, source: &str, options: &[&str]) -> Result<OciMount, SpecError> {
    Ok(MountBuilder::default()
        .destination(dest)
        .typ(typ)
        .source(source)
        .options(options.iter().map(|o| o.to_string()).collect::<Vec<_>>())
        .build()?)
}

/// containerd's default mounts (what BuildKit's runc worker gets), without the cgroup filesystem.
fn default_mounts() -> Result<Vec<OciMount>, SpecError> {
    Ok(vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"])?,
        mount("/dev", "tmpfs", "tmpfs", &["nosuid", "strictatime", "mode=755", "size=65536k"])?,
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
        )?,
        mount("/dev/shm", "tmpfs", "shm", &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"])?,
        mount("/dev/mqueue", "mqueue", "mqueue", &["nosuid", "noexec", "nodev"])?,
        mount("/sys", "sysfs", "sysfs", &["nosuid", "noexec", "nodev", "ro"])?,
    ])
}

/// The process's rlimits: RLIMIT_NOFILE 1048576 (containerd's default, what BuildKit's runc worker gives
/// RUN steps), then each `--ulimit` in place of the default of its type.
fn rlimits(asked: &[Rlimit]) -> Result<Vec<PosixRlimit>, SpecError> {
    let mut out = vec![Rlimit { typ: RlimitType::Nofile, soft: 1024 * 1024, hard: 1024 * 1024 }];
    for r in asked {
        out.retain(|o| o.typ != r.typ);
        out.push(*r);
    }
    out.iter().map(|r| Ok(PosixRlimitBuilder::default().typ(r.typ.oci()).soft(r.soft).hard(r.hard).build()?)).collect()
}

/// One mount per destination: a later one takes the place of an earlier one (BuildKit's `dedupMounts`), so
/// `--shm-size`, which arrives as a tmpfs mount at /dev/shm, replaces the default /dev/shm.
fn dedup_mounts(mounts: Vec<OciMount>) -> Vec<OciMount> {
    let mut out: Vec<OciMount> = Vec::with_capacity(mounts.len());
    for m in mounts {
        match out.iter_mut().find(|o| o.destination() == m.destination()) {
            Some(o) => *o = m,
            None => out.push(m),
        }
    }
    out
}

fn has_env(env: &[String], key: &str) -> bool {
    env.iter().any(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) == key)
}

/// The environment with Docker's defaults: PATH when missing, HOME from the passwd entry when missing.
pub fn process_env(env: &[String], user: &ResolvedUser) -> Vec<String> {
    let mut out = env.to_vec();
    if !has_env(env, "PATH") {
        out.insert(0, format!("PATH={DEFAULT_PATH}"));
    }
    if !has_env(env, "HOME") {
        out.push(format!("HOME={}", user.home));
    }
    out
}

fn check_absolute(what: &str, p: &str) -> Result<(), SpecError> {
    if !p.starts_with('/') {
        return Err(SpecError::Invalid(format!("{what} {p:?} must be an absolute path")));
    }
    Ok(())
}

/// Adds `nodev` to /dev and every bind mount of `spec`, for the namespace executor, which limits devices
/// by mount flags rather than a device cgroup: device nodes a step creates on a writable mount must not
/// open (the default devices are then bound from the host's, see `rootfs::prepare`).
pub fn make_nodev(spec: &mut Spec) {
    let Some(mounts) = spec.mounts().clone() else { return };
    let mounts = mounts
        .into_iter()
        .map(|m| {
            let is_bind = m.typ().as_deref() == Some("bind");
            if !(is_bind || m.destination() == Path::new("/dev")) {
                return m;
            }
            let mut opts = m.options().clone().unwrap_or_default();
            if !opts.iter().any(|o| o == "nodev") {
                opts.push("nodev".into());
            }
            let mut m = m;
            m.set_options(Some(opts));
            m
        })
        .collect();
    spec.set_mounts(Some(mounts));
}

/// Builds the runtime spec for `process`, running as `user`, on the rootfs directory `rootfs`.
pub fn build_spec(
    process: &ProcessSpec,
    user: &ResolvedUser,
    rootfs: &Path,
    etc: &EtcFiles,
) -> Result<Spec, SpecError> {
    if process.args.is_empty() {
        return Err(SpecError::Invalid("no command given; pass at least the program to run".into()));
    }
    check_absolute("working directory", &process.cwd)?;
    let default_caps: oci_spec::runtime::Capabilities = DEFAULT_CAPABILITIES.iter().copied().collect();
    // Docker gives a non-root user an empty permitted/effective set; the bounding set stays the default.
    let running_caps = if user.uid == 0 { default_caps.clone() } else { Default::default() };
    let caps = LinuxCapabilitiesBuilder::default()
        .bounding(default_caps)
        .effective(running_caps.clone())
        .permitted(running_caps.clone())
        .inheritable(oci_spec::runtime::Capabilities::default())
        .ambient(oci_spec::runtime::Capabilities::default())
        .build()?;
    let mut oci_user = UserBuilder::default().uid(user.uid).gid(user.gid);
    if !user.additional_gids.is_empty() {
        oci_user = oci_user.additional_gids(user.additional_gids.clone());
    }
    let proc = ProcessBuilder::default()
        .terminal(false)
        .user(oci_user.build()?)
        .args(process.args.clone())
        .env(process_env(&process.env, user))
        .cwd(&process.cwd)
        .capabilities(caps)
        .rlimits(rlimits(&process.rlimits)?)
        .no_new_privileges(true)
        .build()?;

    let mut mounts = default_mounts()?;
    if process.network.is_host() {
        // sysfs cannot be mounted for a network namespace the mount does not own; bind the host's read-only
        // as runc does for a shared netns.
        mounts.retain(|m| m.destination() != Path::new("/sys"));
        mounts.push(mount("/sys", "bind", "/sys", &["rbind", "nosuid", "noexec", "nodev", "ro"])?);
    }
    for (dest, src) in [("/etc/hosts", &etc.hosts), ("/etc/resolv.conf", &etc.resolv_conf)] {
        mounts.push(mount(dest, "bind", &src.display().to_string(), &["rbind", "ro"])?);
    }
    for (index, m) in process.mounts.iter().enumerate() {
        check_absolute("mount destination", &m.destination)?;
        mounts.push(match &m.kind {
            RunMountKind::Bind { source, readonly } => {
                let rw = if *readonly { "ro" } else { "rw" };
                mount(&m.destination, "bind", &source.display().to_string(), &["rbind", rw])?
            }
            RunMountKind::Tmpfs { size } => {
                let size = size.map(|s| format!("size={s}"));
                let mut opts = vec!["nosuid", "nodev", "mode=1777"];
                if let Some(s) = &size {
                    opts.push(s);
                }
                mount(&m.destination, "tmpfs", "tmpfs", &opts)?
            }
            // The file is on the executor's private tmpfs, written with the mount's owner and mode.
            RunMountKind::Secret { .. } => mount(
                &m.destination,
                "bind",
                &etc.secret_file(index).display().to_string(),
                &["rbind", "ro", "nosuid", "nodev", "noexec"],
            )?,
            // A socket the executor forwards to the agent, created with the mount's owner and mode.
            RunMountKind::Ssh { .. } => mount(
                &m.destination,
                "bind",
                &etc.ssh_socket(index).display().to_string(),
                &["rbind", "nosuid", "nodev"],
            )?,
        });
    }
    let mounts = dedup_mounts(mounts);

    let ns = |t| -> Result<LinuxNamespace, SpecError> { Ok(LinuxNamespaceBuilder::default().typ(t).build()?) };
    let mut namespaces = vec![
        ns(LinuxNamespaceType::Pid)?,
        ns(LinuxNamespaceType::Ipc)?,
        ns(LinuxNamespaceType::Uts)?,
        ns(LinuxNamespaceType::Mount)?,
    ];
    namespaces.push(ns(LinuxNamespaceType::Cgroup)?);
    if !process.network.is_host() {
        namespaces.push(ns(LinuxNamespaceType::Network)?);
    }
    let l = &process.limits;
    let mut resources = LinuxResourcesBuilder::default();
    if let Some(m) = l.memory {
        resources = resources.memory(LinuxMemoryBuilder::default().limit(m).build()?);
    }
    if let Some(p) = l.pids {
        resources = resources.pids(LinuxPidsBuilder::default().limit(p).build()?);
    }
    if let Some(q) = l.cpu_quota {
        resources = resources.cpu(LinuxCpuBuilder::default().quota(q).period(l.cpu_period.unwrap_or(100_000)).build()?);
    }
    let mut linux = LinuxBuilder::default();
    if process.seccomp {
        // moby resolves the profile's capability groups against the bounding set.
        linux = linux.seccomp(crate::seccomp::default_profile(&DEFAULT_CAPABILITIES)?);
    }
    let linux = linux
        .namespaces(namespaces)
        .masked_paths(MASKED_PATHS.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .readonly_paths(READONLY_PATHS.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .resources(resources.build()?);
    Ok(SpecBuilder::default()
        .version("1.0.2")
        .root(RootBuilder::default().path(rootfs).readonly(false).build()?)
        .process(proc)
        .hostname(process.hostname.clone())
        .mounts(mounts)
        .linux(linux.build()?)
        .build()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::{Limits, NetworkMode, RunMount};
    use oci_spec::runtime::PosixRlimitType;

    fn etc() -> EtcFiles {
        EtcFiles::in_dir(Path::new("/s"))
    }

    fn root() -> ResolvedUser {
        ResolvedUser { home: "/root".into(), ..ResolvedUser::default() }
    }

    fn ns_types(spec: &Spec) -> Vec<LinuxNamespaceType> {
        spec.linux().as_ref().unwrap().namespaces().as_ref().unwrap().iter().map(|n| n.typ()).collect()
    }

    #[test]
    fn defaults_match_docker() {
        let p = ProcessSpec::new(vec!["true".into()]);
        let spec = build_spec(&p, &root(), Path::new("/r"), &etc()).unwrap();
        let proc = spec.process().as_ref().unwrap();
        assert_eq!(proc.env().as_ref().unwrap(), &vec![format!("PATH={DEFAULT_PATH}"), "HOME=/root".to_string()]);
        assert_eq!(proc.no_new_privileges(), Some(true));
        let caps = proc.capabilities().as_ref().unwrap();
        assert_eq!(capability_mask(caps.effective().as_ref().unwrap()), 0xa80425fb, "docker's CapEff");
        assert_eq!(capability_mask(caps.bounding().as_ref().unwrap()), 0xa80425fb);
        assert_eq!(spec.hostname().as_deref(), Some("buildkitsandbox"));
        // The default network is a namespace of the step's own, with its own sysfs.
        assert!(ns_types(&spec).contains(&LinuxNamespaceType::Network));
        let sys = spec.mounts().as_ref().unwrap().iter().find(|m| m.destination() == Path::new("/sys")).unwrap();
        assert_eq!(sys.typ().as_deref(), Some("sysfs"));
        // The host network: no namespace; /sys is the host's, bound read-only.
        let host = ProcessSpec { network: NetworkMode::Host, ..p.clone() };
        let spec = build_spec(&host, &root(), Path::new("/r"), &etc()).unwrap();
        assert!(!ns_types(&spec).contains(&LinuxNamespaceType::Network));
        let sys = spec.mounts().as_ref().unwrap().iter().find(|m| m.destination() == Path::new("/sys")).unwrap();
        assert_eq!(sys.typ().as_deref(), Some("bind"));
        assert!(sys.options().as_ref().unwrap().contains(&"ro".to_string()));
    }

    #[test]
    fn ulimits_replace_the_default_of_their_type() {
        let mut p = ProcessSpec::new(vec!["true".into()]);
        let limits = |p: &ProcessSpec| -> Vec<(PosixRlimitType, u64, u64)> {
            let spec = build_spec(p, &root(), Path::new("/r"), &etc()).unwrap();
            let proc = spec.process().clone().unwrap();
            proc.rlimits().clone().unwrap().iter().map(|r| (r.typ(), r.soft(), r.hard())).collect()
        };
        assert_eq!(limits(&p), vec![(PosixRlimitType::RlimitNofile, 1 << 20, 1 << 20)]);
        p.rlimits = vec!["nofile=512:512".parse().unwrap(), "nproc=100:200".parse().unwrap()];
        assert_eq!(
            limits(&p),
            vec![(PosixRlimitType::RlimitNofile, 512, 512), (PosixRlimitType::RlimitNproc, 100, 200)]
        );
        p.rlimits = vec!["core=-1".parse().unwrap()];
        assert_eq!(
            limits(&p),
            vec![(PosixRlimitType::RlimitNofile, 1 << 20, 1 << 20), (PosixRlimitType::RlimitCore, u64::MAX, u64::MAX)]
        );
    }

    #[test]
    fn a_tmpfs_at_dev_shm_replaces_the_default() {
        let shm = |p: &ProcessSpec| -> Vec<Vec<String>> {
            let spec = build_spec(p, &root(), Path::new("/r"), &etc()).unwrap();
            let mounts = spec.mounts().clone().unwrap();
            mounts
                .iter()
                .filter(|m| m.destination() == Path::new("/dev/shm"))
                .map(|m| m.options().clone().unwrap())
                .collect()
        };
        let mut p = ProcessSpec::new(vec!["true".into()]);
        let default = shm(&p);
        assert_eq!(default.len(), 1);
        assert!(default[0].contains(&"size=65536k".to_string()), "docker's 64 MiB: {default:?}");
        p.mounts.push(RunMount { destination: "/dev/shm".into(), kind: RunMountKind::Tmpfs { size: Some(128 << 20) } });
        let sized = shm(&p);
        assert_eq!(sized.len(), 1, "one /dev/shm: {sized:?}");
        assert!(sized[0].contains(&"size=134217728".to_string()), "{sized:?}");
        // In the default's place, after /dev (a mount over /dev later would hide it).
        let spec = build_spec(&p, &root(), Path::new("/r"), &etc()).unwrap();
        let order: Vec<_> = spec.mounts().clone().unwrap().iter().map(|m| m.destination().clone()).collect();
        let at = |d: &str| order.iter().position(|o| o == Path::new(d)).unwrap();
        assert!(at("/dev") < at("/dev/shm") && at("/dev/shm") < at("/sys"), "{order:?}");
    }

    #[test]
    fn non_root_has_no_effective_caps_and_keeps_env() {
        let mut p = ProcessSpec::new(vec!["id".into()]);
        p.env = vec!["PATH=/bin".into(), "HOME=/h".into()];
        p.network = NetworkMode::None;
        let user = ResolvedUser { uid: 1000, gid: 1000, additional_gids: vec![10], home: "/home/app".into() };
        let spec = build_spec(&p, &user, Path::new("/r"), &etc()).unwrap();
        let proc = spec.process().as_ref().unwrap();
        assert_eq!(proc.env().as_ref().unwrap(), &p.env);
        assert_eq!(proc.user().additional_gids().as_ref().unwrap(), &vec![10]);
        let caps = proc.capabilities().as_ref().unwrap();
        assert!(caps.effective().as_ref().unwrap().is_empty());
        assert!(ns_types(&spec).contains(&LinuxNamespaceType::Network));
        let sys = spec.mounts().as_ref().unwrap().iter().find(|m| m.destination() == Path::new("/sys")).unwrap();
        assert_eq!(sys.typ().as_deref(), Some("sysfs"));
    }

    #[test]
    fn nodev_covers_dev_and_binds() {
        let mut p = ProcessSpec::new(vec!["true".into()]);
        p.mounts.push(RunMount {
            destination: "/cache".into(),
            kind: RunMountKind::Bind { source: "/c".into(), readonly: false },
        });
        let mut spec = build_spec(&p, &root(), Path::new("/r"), &etc()).unwrap();
        make_nodev(&mut spec);
        let mounts = spec.mounts().as_ref().unwrap();
        let opts =
            |d: &str| mounts.iter().find(|m| m.destination() == Path::new(d)).unwrap().options().clone().unwrap();
        for d in ["/dev", "/cache", "/etc/hosts"] {
            assert!(opts(d).contains(&"nodev".to_string()), "{d}");
        }
        assert!(!opts("/proc").contains(&"rbind".to_string()));
    }

    #[test]
    fn run_mounts_limits_and_validation() {
        let mut p = ProcessSpec::new(vec!["sh".into()]);
        p.mounts = vec![
            RunMount {
                destination: "/src".into(),
                kind: RunMountKind::Bind { source: "/host/src".into(), readonly: true },
            },
            RunMount { destination: "/tmp".into(), kind: RunMountKind::Tmpfs { size: Some(1 << 20) } },
        ];
        p.limits = Limits { memory: Some(1 << 30), pids: Some(100), cpu_quota: Some(50_000), cpu_period: None };
        let spec = build_spec(&p, &root(), Path::new("/r"), &etc()).unwrap();
        let mounts = spec.mounts().as_ref().unwrap();
        let src = mounts.iter().find(|m| m.destination() == Path::new("/src")).unwrap();
        assert_eq!(src.options().as_ref().unwrap(), &vec!["rbind".to_string(), "ro".to_string()]);
        let tmp = mounts.iter().find(|m| m.destination() == Path::new("/tmp")).unwrap();
        assert!(tmp.options().as_ref().unwrap().contains(&"size=1048576".to_string()));
        let res = spec.linux().as_ref().unwrap().resources().as_ref().unwrap();
        assert_eq!(res.memory().as_ref().unwrap().limit(), Some(1 << 30));
        assert_eq!(res.pids().as_ref().unwrap().limit(), 100);
        assert_eq!(res.cpu().as_ref().unwrap().period(), Some(100_000));

        p.mounts.push(RunMount {
            destination: "/run/secrets/a".into(),
            kind: RunMountKind::Secret { contents: b"x".to_vec(), uid: 0, gid: 0, mode: 0o400 },
        });
        p.mounts.push(RunMount {
            destination: "/ssh".into(),
            kind: RunMountKind::Ssh { socket: "/agent".into(), uid: 0, gid: 0, mode: 0o600 },
        });
        let spec = build_spec(&p, &root(), Path::new("/r"), &etc()).unwrap();
        let mounts = spec.mounts().as_ref().unwrap();
        let secret = mounts.iter().find(|m| m.destination() == Path::new("/run/secrets/a")).unwrap();
        assert_eq!(secret.source().as_deref(), Some(Path::new("/s/secrets/2")));
        assert!(secret.options().as_ref().unwrap().contains(&"ro".to_string()));
        let ssh = mounts.iter().find(|m| m.destination() == Path::new("/ssh")).unwrap();
        assert_eq!(ssh.source().as_deref(), Some(Path::new("/s/ssh/3.sock")), "the forwarder, not the agent");

        p.cwd = "relative".into();
        assert!(build_spec(&p, &root(), Path::new("/r"), &etc()).is_err());
        p.cwd = "/".into();
        p.args.clear();
        assert!(build_spec(&p, &root(), Path::new("/r"), &etc()).is_err());
    }
}
