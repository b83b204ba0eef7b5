//! Resource limits through cgroup v2: each run that asks for limits gets a child cgroup
//! `<root>/rbuild/<run>` with `memory.max`, `pids.max` and `cpu.max` written (the files runc writes for
//! the spec's `linux.resources` on a unified hierarchy), and the helper is moved into it before it starts
//! anything, so every process of the run is inside. After the run the cgroup is killed (`cgroup.kill`) and
//! removed.
//!
//! Without a writable cgroup2 hierarchy at `/sys/fs/cgroup` that offers the controllers (cgroup v1 or
//! hybrid hosts, read-only mounts in unprivileged containers), the run goes on without limits and the
//! outcome carries a warning, as the issue and BuildKit's rootless mode do.

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

/// One run's cgroup; [`RunCgroup::remove`] kills what is left in it and removes it (drop does the same,
/// ignoring errors).
#[derive(Debug)]
pub struct RunCgroup {
    path: PathBuf,
    removed: bool,
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

    /// Creates the cgroup `name` for a run with `limits`, enabling the controllers it needs on the way.
    pub fn create(&self, name: &str, limits: &Limits) -> Result<RunCgroup, String> {
        let wanted = controllers_for(limits);
        let available = read_words(&self.root.join("cgroup.controllers"))
            .map_err(|e| format!("cannot read the controllers of {}: {e}", self.root.display()))?;
        let missing: Vec<&str> = wanted.iter().copied().filter(|c| !available.iter().any(|a| a == c)).collect();
        if !missing.is_empty() {
            return Err(format!("{} does not offer the {} controller(s)", self.root.display(), missing.join(", ")));
        }
        let parent = self.root.join(PARENT);
        let werr = |p: &Path, e: io::Error| format!("cannot write {}: {e}", p.display());
        let enable: String = wanted.iter().map(|c| format!("+{c} ")).collect();
        for dir in [&self.root, &parent] {
            if dir != &self.root {
                match std::fs::create_dir(dir) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(format!("cannot create cgroup {}: {e}", dir.display())),
                }
            }
            let control = dir.join("cgroup.subtree_control");
            let enabled = read_words(&control).unwrap_or_default();
            if wanted.iter().any(|c| !enabled.iter().any(|e| e == c)) {
                std::fs::write(&control, enable.trim_end()).map_err(|e| werr(&control, e))?;
            }
        }
        let path = parent.join(name);
        std::fs::create_dir(&path).map_err(|e| format!("cannot create cgroup {}: {e}", path.display()))?;
        let cg = RunCgroup { path, removed: false };
        let write = |file: &str, value: String| {
            let p = cg.path.join(file);
            std::fs::write(&p, value).map_err(|e| werr(&p, e))
        };
        if let Some(m) = limits.memory {
            write("memory.max", m.to_string())?;
            // As runc: no swap beyond the memory limit unless asked.
            if cg.path.join("memory.swap.max").exists() {
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

impl RunCgroup {
    /// The cgroup's directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Moves the process `pid` (and so every process it starts afterwards) into the cgroup.
    pub fn add(&self, pid: u32) -> io::Result<()> {
        std::fs::write(self.path.join("cgroup.procs"), pid.to_string())
    }

    /// Kills whatever is still in the cgroup and removes it.
    pub fn remove(mut self) -> io::Result<()> {
        self.removed = true;
        remove(&self.path)
    }
}

fn remove(path: &Path) -> io::Result<()> {
    // cgroup.kill exists from Linux 5.14; the run's processes are normally gone already.
    let _ = std::fs::write(path.join("cgroup.kill"), "1");
    let mut last = None;
    for _ in 0..100 {
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
        let run = cg.create("run-1", &limits).unwrap();
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
    }

    #[test]
    fn missing_controllers_are_named() {
        let root = fake_root("hugetlb\n");
        let limits = Limits { memory: Some(1 << 20), ..Limits::default() };
        let err = CgroupV2::at(root.path()).create("r", &limits).unwrap_err();
        assert!(err.contains("does not offer the memory controller"), "{err}");
        assert_eq!(controllers_for(&Limits::default()), Vec::<&str>::new());
    }
}
