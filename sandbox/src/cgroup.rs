//! Resource limits through cgroup v2: each run that asks for limits gets a child cgroup
//! `<root>/rbuild/<name>` with `memory.max`, `pids.max` and `cpu.max` written (the files runc writes for
//! the spec's `linux.resources` on a unified hierarchy), and the run's init is started in it (clone3 with
//! CLONE_INTO_CGROUP, see `init`), so every process of the run is inside. After the run the cgroup is
//! killed (`cgroup.kill`) and removed.
//!
//! Without a writable cgroup2 hierarchy at `/sys/fs/cgroup` that offers the controllers (cgroup v1 or
//! hybrid hosts, read-only mounts in unprivileged containers), the run goes on without limits and the
//! outcome carries a warning, as BuildKit's rootless mode does.
//!
//! A run without limits gets no cgroup: making one, moving into it and removing it costs about a
//! millisecond per RUN, and nothing needs it (devices are kept out by `nodev` mounts, see `rootfs`; the
//! run's processes die with its pid namespace). Names are `<pid>.<start time>.<run>` of the process that
//! made them: [`sweep_orphans`] kills and removes the cgroups of processes that are gone (a build killed
//! with SIGKILL).

use std::io;
use std::path::{Path, PathBuf};

use crate::process::Limits;

/// cgroup2's filesystem magic (linux/magic.h CGROUP2_SUPER_MAGIC).
const CGROUP2_SUPER_MAGIC: u64 = 0x6367_7270;

/// The parent of every run's cgroup, below the hierarchy's root.
const PARENT: &str = "rbuild";

/// A cgroup v2 hierarchy the sandbox may create run cgroups in.
#[derive(Debug, Clone)]
pub struct CgroupV2 {
    root: PathBuf,
}

/// The controllers a set of limits needs.
pub fn controllers_for(limits: &Limits) -> Vec<&'static str> {
    let mut out = Vec::new();
    if limits.memory.is_some() {
        out.push("memory");
    }
    if limits.pids.is_some() {
        out.push("pids");
    }
    if limits.cpu_quota.is_some() {
        out.push("cpu");
    }
    out
}

fn read_words(path: &Path) -> io::Result<Vec<String>> {
    Ok(std::fs::read_to_string(path)?.split_whitespace().map(str::to_string).collect())
}

impl CgroupV2 {
    /// The host's hierarchy at /sys/fs/cgroup, when it is cgroup2; the error says why not.
    pub fn host() -> Result<CgroupV2, String> {
        let root = Path::new("/sys/fs/cgroup");
        let fs = rustix::fs::statfs(root).map_err(|e| format!("cannot inspect {}: {e}", root.display()))?;
        if fs.f_type as u64 != CGROUP2_SUPER_MAGIC {
            return Err(format!("{} is not a cgroup2 mount (cgroup v1 or hybrid host)", root.display()));
        }
        Ok(CgroupV2 { root: root.to_path_buf() })
    }

    /// A hierarchy mounted (or, in tests, imitated) at `root`.
    pub fn at(root: impl Into<PathBuf>) -> CgroupV2 {
        CgroupV2 { root: root.into() }
    }

    /// The hierarchy's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Creates the cgroup `name` for a run with `limits`, below `parent` (`--cgroup-parent`) when given,
    /// enabling the controllers it needs on the way.
    pub fn create(&self, parent: Option<&str>, name: &str, limits: &Limits) -> Result<RunCgroup, String> {
        let mut chain = vec![self.root.clone()];
        if let Some(p) = parent {
            for c in parent_components(p)? {
                chain.push(chain[chain.len() - 1].join(c));
            }
        }
        chain.push(chain[chain.len() - 1].join(PARENT));
        let wanted = controllers_for(limits);
        let available = read_words(&self.root.join("cgroup.controllers"))
            .map_err(|e| format!("cannot read the controllers of {}: {e}", self.root.display()))?;
        let missing: Vec<&str> = wanted.iter().copied().filter(|c| !available.iter().any(|a| a == c)).collect();
        if !missing.is_empty() {
            return Err(format!("{} does not offer the {} controller(s)", self.root.display(), missing.join(", ")));
        }
        let werr = |p: &Path, e: io::Error| format!("cannot write {}: {e}", p.display());
        let enable: String = wanted.iter().map(|c| format!("+{c} ")).collect();
        for dir in &chain {
            if dir != &self.root {
                match std::fs::create_dir(dir) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(format!("cannot create cgroup {}: {e}", dir.display())),
                }
            }
            let control = dir.join("cgroup.subtree_control");
            if wanted.is_empty() {
                continue;
            }
            let enabled = read_words(&control).unwrap_or_default();
            if wanted.iter().any(|c| !enabled.iter().any(|e| e == c)) {
                std::fs::write(&control, enable.trim_end()).map_err(|e| werr(&control, e))?;
            }
        }
        let path = chain[chain.len() - 1].join(name);
        std::fs::create_dir(&path).map_err(|e| format!("cannot create cgroup {}: {e}", path.display()))?;
        let cg = RunCgroup { path: path.clone(), removed: false };
        let write = |file: &str, value: String| {
            let p = path.join(file);
            std::fs::write(&p, value).map_err(|e| werr(&p, e))
        };
        if let Some(m) = limits.memory {
            write("memory.max", m.to_string())?;
            // As runc: no swap beyond the memory limit unless asked.
            if path.join("memory.swap.max").exists() {
                write("memory.swap.max", "0".into())?;
            }
        }
        if let Some(p) = limits.pids {
            write("pids.max", if p <= 0 { "max".into() } else { p.to_string() })?;
        }
        if let Some(q) = limits.cpu_quota {
            let period = limits.cpu_period.unwrap_or(100_000);
            write("cpu.max", if q <= 0 { format!("max {period}") } else { format!("{q} {period}") })?;
        }
        Ok(cg)
    }
}

/// The directories of a `--cgroup-parent` path below the hierarchy's root: `builds/ci` or `/builds/ci`.
/// systemd's `NAME.slice:PREFIX:NAME` form needs runc's systemd cgroup driver, which rbuild does not use.
pub fn parent_components(parent: &str) -> Result<Vec<&str>, String> {
    if parent.contains(':') {
        return Err(format!(
            "{parent:?} is systemd's slice form, which needs a systemd cgroup driver; give a path below the \
             cgroup root instead (e.g. system.slice/builds)"
        ));
    }
    let parts: Vec<&str> = parent.split('/').filter(|c| !c.is_empty()).collect();
    if parts.is_empty() || parts.iter().any(|c| *c == "." || *c == "..") {
        return Err(format!("{parent:?} is not a cgroup path (directories below the cgroup root, no . or ..)"));
    }
    Ok(parts)
}

/// One run's cgroup; [`RunCgroup::remove`] kills what is left in it and removes it (drop does the same,
/// ignoring errors).
#[derive(Debug)]
pub struct RunCgroup {
    path: PathBuf,
    removed: bool,
}

impl RunCgroup {
    /// The cgroup's directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Moves the process `pid` (and so every process it starts afterwards) into the cgroup.
    pub fn add(&self, pid: u32) -> io::Result<()> {
        enter(&self.path, pid)
    }

    /// Kills whatever is still in the cgroup and removes it.
    pub fn remove(mut self) -> io::Result<()> {
        self.removed = true;
        remove(&self.path)
    }
}

/// Writes `pid` into the cgroup `dir`.
pub fn enter(dir: &Path, pid: u32) -> io::Result<()> {
    std::fs::write(dir.join("cgroup.procs"), pid.to_string())
        .map_err(|e| io::Error::new(e.kind(), format!("cannot enter {}: {e}", dir.display())))
}

/// The name of a new run cgroup of this process: `<pid>.<start time>.<run>`.
pub fn run_name(run: &str) -> String {
    let pid = std::process::id();
    format!("{pid}.{}.{run}", start_time(pid).unwrap_or(0))
}

/// A process's start time in clock ticks since boot (`/proc/<pid>/stat` field 22): with the pid, it
/// names one process for the life of the system.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses; the fields after its last ')' do not.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Whether the process a run cgroup's name points at is gone.
fn owner_gone(name: &str) -> bool {
    let mut parts = name.splitn(3, '.');
    let (Some(pid), Some(start)) = (parts.next().and_then(|p| p.parse().ok()), parts.next()) else {
        return false;
    };
    start_time(pid).is_none_or(|t| t.to_string() != start)
}

/// Kills and removes the run cgroups whose process is gone (a SIGKILLed build; its helper and their
/// processes normally die with it, through the parent-death signal and the pid namespace, and this is
/// what makes sure). Best effort: what cannot be removed is tried again next time.
pub fn sweep_orphans(cgroup_parent: Option<&str>) {
    let Ok(v2) = CgroupV2::host() else { return };
    let mut parent = v2.root.clone();
    if let Some(p) = cgroup_parent {
        let Ok(parts) = parent_components(p) else { return };
        parent.extend(parts);
    }
    let Ok(entries) = std::fs::read_dir(parent.join(PARENT)) else { return };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if e.path().is_dir() && owner_gone(&name) {
            let _ = remove(&e.path());
        }
    }
}

fn remove(path: &Path) -> io::Result<()> {
    // cgroup.kill exists from Linux 5.14; the run's processes are normally gone already.
    let _ = std::fs::write(path.join("cgroup.kill"), "1");
    let mut last = None;
    for _ in 0..200 {
        match std::fs::remove_dir(path) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            // EBUSY while dying processes are still being reaped.
            Err(e) => last = Some(e),
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    Err(last.unwrap_or_else(|| io::Error::other("cgroup busy")))
}

impl Drop for RunCgroup {
    fn drop(&mut self) {
        if !self.removed {
            let _ = remove(&self.path);
        }
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    fn fake_root(controllers: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cgroup.controllers"), controllers).unwrap();
        std::fs::write(dir.path().join("cgroup.subtree_control"), "").unwrap();
        dir
    }

    #[test]
    fn writes_the_limit_files_and_enables_controllers() {
        let root = fake_root("cpuset cpu io memory hugetlb pids rdma misc\n");
        let cg = CgroupV2::at(root.path());
        let limits = Limits { memory: Some(64 << 20), pids: Some(32), cpu_quota: Some(50_000), cpu_period: None };
        let run = cg.create(None, "run-1", &limits).unwrap();
        let read = |p: &str| std::fs::read_to_string(run.path().join(p)).unwrap();
        assert_eq!(read("memory.max"), "67108864");
        assert_eq!(read("pids.max"), "32");
        assert_eq!(read("cpu.max"), "50000 100000");
        let enabled = std::fs::read_to_string(root.path().join("cgroup.subtree_control")).unwrap();
        assert_eq!(enabled, "+memory +pids +cpu");
        run.add(4242).unwrap();
        assert_eq!(read("cgroup.procs"), "4242");
        // A plain directory with files in it cannot be removed like a cgroup; the kernel's cgroupfs can.
        assert!(run.path().starts_with(root.path().join("rbuild")));
        // A plain directory is no cgroupfs: removing it fails, and the test's tempdir cleans up.
        std::mem::forget(run);
    }

    #[test]
    fn a_parent_holds_the_run_cgroups() {
        let root = fake_root("cpu memory pids\n");
        let cg = CgroupV2::at(root.path());
        // No limits: the cgroup only places the run (and kills what is left of it); no controller is enabled.
        let run = cg.create(Some("/builds/ci"), "run-1", &Limits::default()).unwrap();
        assert_eq!(run.path(), root.path().join("builds/ci/rbuild/run-1"));
        assert_eq!(std::fs::read_to_string(root.path().join("cgroup.subtree_control")).unwrap(), "");
        std::mem::forget(run);
        // With limits, every level down to the run enables their controllers (cgroup v2's rule).
        std::fs::write(root.path().join("builds/cgroup.subtree_control"), "").unwrap();
        std::fs::write(root.path().join("builds/ci/cgroup.subtree_control"), "").unwrap();
        let limits = Limits { pids: Some(10), ..Limits::default() };
        let run = cg.create(Some("builds/ci"), "run-2", &limits).unwrap();
        for dir in ["", "builds", "builds/ci"] {
            let control = root.path().join(dir).join("cgroup.subtree_control");
            assert_eq!(std::fs::read_to_string(control).unwrap(), "+pids", "{dir}");
        }
        assert_eq!(std::fs::read_to_string(run.path().join("pids.max")).unwrap(), "10");
        std::mem::forget(run);
        for bad in ["..", "a/../b", "", "/", "machine.slice:rbuild:x"] {
            let err = cg.create(Some(bad), "r", &Limits::default()).unwrap_err();
            assert!(err.contains(&format!("{bad:?}")), "{bad}: {err}");
        }
    }

    #[test]
    fn run_names_point_at_their_process() {
        let ours = run_name("run-1");
        assert!(ours.starts_with(&format!("{}.", std::process::id())), "{ours}");
        assert!(!owner_gone(&ours));
        let start = start_time(std::process::id()).unwrap();
        assert!(owner_gone(&format!("{}.{}.run-1", std::process::id(), start + 1)), "another process, same pid");
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert!(owner_gone(&format!("{pid}.1.run")));
        // Names of another form are never taken for orphans.
        assert!(!owner_gone("run-abc"));
    }

    #[test]
    fn missing_controllers_are_named() {
        let root = fake_root("hugetlb\n");
        let limits = Limits { memory: Some(1 << 20), ..Limits::default() };
        let err = CgroupV2::at(root.path()).create(None, "r", &limits).unwrap_err();
        assert!(err.contains("does not offer the memory controller"), "{err}");
        assert_eq!(controllers_for(&Limits::default()), Vec::<&str>::new());
    }
}
