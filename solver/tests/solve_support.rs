//! Shared pieces of the solver's integration tests: a real store (overlay where it works) in a tempdir,
//! the namespace executor, and a local image provider that commits a busybox rootfs as the image.
//! Included by the other `solve_*` tests with `#[path]`; as its own test target it has no tests.

#![allow(dead_code, clippy::new_without_default)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use llb::Platform;
use snapshotter::mount::TempMount;
use snapshotter::snapshot::Snapshotter;
use snapshotter::store::{SnapshotterKind, Store};
use solver::op::BoxFuture;
use solver::{Event, EventKind, ImageError, ImageProvider, LocalDir, LocalSource, SolveOptions, Solver, Worker};

/// Why these tests cannot run here: they need root (namespaces, mounts) and a static busybox.
pub fn skip_reason() -> Option<String> {
    if !rustix::process::geteuid().is_root() {
        return Some("not root".into());
    }
    if busybox().is_none() {
        return Some("no static busybox (apt-get install busybox-static)".into());
    }
    None
}

#[macro_export]
macro_rules! require_root {
    () => {
        if let Some(reason) = support::skip_reason() {
            testkit::skip(&format!("{reason}; the solver's integration tests need root and busybox-static"));
            return;
        }
    };
}

pub fn busybox() -> Option<PathBuf> {
    ["/bin/busybox", "/usr/bin/busybox"].iter().map(PathBuf::from).find(|p| p.exists())
}

/// Every image is a busybox rootfs, committed once as one snapshot. A local provider, as the CLI's is
/// for images already in the store; `unpacks` counts the calls so tests can see what was not pulled.
pub struct BusyboxImages {
    pub snapshotter: Arc<dyn Snapshotter>,
    pub tmp: PathBuf,
    pub unpacks: AtomicUsize,
    lock: Mutex<()>,
}

impl BusyboxImages {
    fn unpack_now(&self, status: &(dyn Fn(u64, Option<u64>) + Send + Sync)) -> Result<Option<String>, ImageError> {
        let err = |e: &dyn std::fmt::Display| ImageError(e.to_string().into());
        self.unpacks.fetch_add(1, Ordering::SeqCst);
        let _one = self.lock.lock().unwrap();
        let name = "test-busybox-image";
        if self.snapshotter.stat(name).is_ok() {
            return Ok(Some(name.into()));
        }
        let key = "test-busybox-image-active";
        let mounts = self.snapshotter.prepare(key, None).map_err(|e| err(&e))?;
        let m = TempMount::new(&mounts, &self.tmp).map_err(|e| err(&e))?;
        busybox_rootfs(m.path());
        status(1, Some(1));
        m.unmount().map_err(|e| err(&e))?;
        self.snapshotter.commit(name, key).map_err(|e| err(&e))?;
        Ok(Some(name.into()))
    }
}

impl ImageProvider for BusyboxImages {
    fn unpack<'a>(
        &'a self,
        _reference: &'a str,
        _platform: &'a Platform,
        _pull: bool,
        status: &'a (dyn Fn(u64, Option<u64>) + Send + Sync),
    ) -> BoxFuture<'a, Result<Option<String>, ImageError>> {
        Box::pin(async move { self.unpack_now(status) })
    }
}

/// busybox with its applets as symlinks, /etc/passwd and /etc/group.
pub fn busybox_rootfs(dir: &Path) {
    let bb = busybox().expect("busybox");
    for d in ["bin", "etc", "root", "tmp"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    std::fs::copy(&bb, dir.join("bin/busybox")).unwrap();
    let list = std::process::Command::new(&bb).arg("--list").output().unwrap();
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" {
            std::os::unix::fs::symlink("busybox", dir.join("bin").join(applet)).unwrap();
        }
    }
    std::fs::write(dir.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    std::fs::write(dir.join("etc/group"), "root:x:0:\n").unwrap();
}

/// A store, a solver over it and a build context directory.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub store: Store,
    pub images: Arc<BusyboxImages>,
    pub solver: Solver,
}

impl Env {
    pub fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("root"), SnapshotterKind::Auto, &mut |_| {}).unwrap();
        std::fs::create_dir_all(dir.path().join("tmp")).unwrap();
        std::fs::create_dir_all(dir.path().join("context")).unwrap();
        let images = Arc::new(BusyboxImages {
            snapshotter: store.snapshotter.clone(),
            tmp: dir.path().join("tmp"),
            unpacks: AtomicUsize::new(0),
            lock: Mutex::new(()),
        });
        let executor = sandbox::NamespaceExecutor::new(dir.path().join("exec"))
            .with_helper(env!("CARGO_BIN_EXE_solver-sandbox-helper"));
        let worker = Worker {
            snapshotter: store.snapshotter.clone(),
            meta: store.meta.clone(),
            executor: Arc::new(executor),
            images: images.clone(),
            state_dir: dir.path().join("root/solver"),
            scratch_dir: store.root.tmp_dir(),
        };
        Env { solver: Solver::new(worker).unwrap(), dir, store, images }
    }

    pub fn context(&self) -> PathBuf {
        self.dir.path().join("context")
    }

    /// Writes a context file.
    pub fn write(&self, rel: &str, contents: &str) {
        let p = self.context().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, contents).unwrap();
    }

    /// Options with the context as `context`, and a channel collecting events.
    pub fn options(&self) -> (SolveOptions, Events) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let mut opts = SolveOptions::new(tx);
        let context: Arc<dyn LocalSource> = Arc::new(LocalDir(self.context()));
        opts.locals.insert("context".to_string(), context);
        opts.max_parallelism = 4;
        opts.network = sandbox::NetworkMode::None;
        (opts, Events(rx))
    }

    /// The files of a committed snapshot, exported to a fresh directory.
    pub fn export(&self, snapshot: &Option<String>) -> tempfile::TempDir {
        let out = tempfile::tempdir().unwrap();
        if let Some(s) = snapshot {
            snapshotter::export::export_dir(&*self.store.snapshotter, s, out.path()).unwrap();
        }
        out
    }
}

/// Converts a Dockerfile with the offline resolver (FROM references stay as written).
pub fn definition(dockerfile: &str, excludes: &[&str]) -> llb::Definition {
    let opts = frontend::convert::ConvertOptions {
        excludes: excludes.iter().map(|s| s.to_string()).collect(),
        ..frontend::convert::ConvertOptions::default()
    };
    definition_with(dockerfile, &opts)
}

/// Converts a Dockerfile with the given options and the offline resolver.
pub fn definition_with(dockerfile: &str, opts: &frontend::convert::ConvertOptions) -> llb::Definition {
    frontend::convert::convert(dockerfile.as_bytes(), opts, &frontend::convert::OfflineResolver)
        .unwrap_or_else(|d| panic!("Dockerfile does not convert: {d:?}"))
        .definition
}

pub struct Events(pub tokio::sync::mpsc::UnboundedReceiver<Event>);

impl Events {
    pub fn drain(&mut self) -> Vec<Event> {
        let mut out = Vec::new();
        while let Ok(e) = self.0.try_recv() {
            out.push(e);
        }
        out
    }
}

/// The names of the steps a solve executed, from its step records.
pub fn executed_names(solved: &solver::Solved) -> Vec<String> {
    solved.steps.iter().filter(|s| s.status == solver::StepStatus::Executed).map(|s| s.name.clone()).collect()
}

/// (started, completed) times of the vertex whose name contains `needle`.
pub fn span_of(events: &[Event], needle: &str) -> (SystemTime, SystemTime) {
    let vertex = events
        .iter()
        .find_map(|e| match &e.kind {
            EventKind::Started { name } if name.contains(needle) => Some(e.vertex),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no vertex named like {needle:?}"));
    let at = |want: fn(&EventKind) -> bool| {
        events.iter().find(|e| e.vertex == vertex && want(&e.kind)).map(|e| e.time).expect("event")
    };
    (at(|k| matches!(k, EventKind::Started { .. })), at(|k| matches!(k, EventKind::Completed { .. })))
}
