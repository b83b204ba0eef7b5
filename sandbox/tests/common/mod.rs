//! Shared pieces of the isolation tests: a busybox rootfs, an overlay over it, and the executor.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use sandbox::executor::{Cancel, CollectOutput, ExecError, Executor, RunOutcome, Stream};
use sandbox::{NamespaceExecutor, ProcessSpec, RuncExecutor};

/// Which executor a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Namespace,
    Runc,
}

/// Why `kind` cannot run here, beyond [`skip_reason`].
pub fn kind_skip_reason(kind: Kind) -> Option<String> {
    if kind == Kind::Runc && !sandbox::runc::runtime_available(Path::new("runc")) {
        return Some("runc is not installed (apt-get install runc)".into());
    }
    None
}
use snapshotter::mount::Mount;

/// Why these tests cannot run here, if they cannot: they need root (namespaces, mounts) and a static
/// busybox (Debian's busybox-static).
pub fn skip_reason() -> Option<String> {
    if !rustix::process::geteuid().is_root() {
        return Some("not root".into());
    }
    if busybox().is_none() {
        return Some("no static busybox (apt-get install busybox-static)".into());
    }
    None
}

/// Skips the calling test with a printed reason when root or busybox are missing (a failure in CI: see
/// `testkit::skip`).
#[macro_export]
macro_rules! require_root {
    () => {
        if let Some(reason) = common::skip_reason() {
            testkit::skip(&format!("{reason}; these isolation tests need root and busybox-static"));
            return;
        }
    };
    ($kind:expr) => {
        require_root!();
        if let Some(reason) = common::kind_skip_reason($kind) {
            testkit::skip(&reason);
            return;
        }
    };
}

/// Defines `name` as a test per executor: `namespace::name` and `runc::name`, each calling `name(kind)`.
#[macro_export]
macro_rules! both_executors {
    ($($name:ident),* $(,)?) => {
        mod namespace {
            $(#[test] fn $name() { super::$name(super::common::Kind::Namespace) })*
        }
        mod runc {
            $(#[test] fn $name() { super::$name(super::common::Kind::Runc) })*
        }
    };
}

pub fn busybox() -> Option<PathBuf> {
    ["/bin/busybox", "/usr/bin/busybox"].iter().map(PathBuf::from).find(|p| p.exists())
}

pub const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n";
pub const GROUP: &str = "root:x:0:\napp:x:1000:\nwheel:x:10:app\n";

/// A rootfs directory with busybox and its applets, /etc/passwd and /etc/group.
pub fn busybox_rootfs(dir: &Path) {
    let bb = busybox().expect("busybox");
    for d in ["bin", "etc", "root", "tmp", "home/app"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    std::fs::copy(&bb, dir.join("bin/busybox")).unwrap();
    let list = std::process::Command::new(&bb).arg("--list").output().unwrap();
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" {
            std::os::unix::fs::symlink("busybox", dir.join("bin").join(applet)).unwrap();
        }
    }
    std::fs::write(dir.join("etc/passwd"), PASSWD).unwrap();
    std::fs::write(dir.join("etc/group"), GROUP).unwrap();
}

/// A busybox rootfs with an overlay's upper and work directories beside it.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub kind: Kind,
}

impl Fixture {
    /// A fixture for the namespace executor.
    pub fn new() -> Fixture {
        Fixture::with(Kind::Namespace)
    }

    pub fn with(kind: Kind) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        busybox_rootfs(&dir.path().join("lower"));
        let f = Fixture { dir, kind };
        f.reset();
        f
    }

    /// Empties the upper layer.
    pub fn reset(&self) {
        for d in ["upper", "work"] {
            let p = self.dir.path().join(d);
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir(&p).unwrap();
        }
    }

    pub fn lower(&self) -> PathBuf {
        self.dir.path().join("lower")
    }

    pub fn upper(&self) -> PathBuf {
        self.dir.path().join("upper")
    }

    pub fn mounts(&self) -> Vec<Mount> {
        let p = |d: &str| self.dir.path().join(d);
        vec![Mount::overlay(&p("lower"), &p("upper"), &p("work"))]
    }

    pub fn executor(&self) -> Box<dyn Executor> {
        let state = self.dir.path().join("state");
        match self.kind {
            Kind::Namespace => {
                Box::new(NamespaceExecutor::new(state).with_helper(env!("CARGO_BIN_EXE_rbuild-sandbox-helper")))
            }
            Kind::Runc => Box::new(RuncExecutor::new(state)),
        }
    }

    /// The per-run state entries left under the state directory (the runc executor keeps the runtime's
    /// own state directory there, the namespace executor the empty mount point of its runs' tmpfs).
    pub fn leftover_state(&self) -> Vec<String> {
        leftover_state(&self.dir.path().join("state"))
    }

    /// Runs `sh -c script` with `edit` applied to the process; returns the outcome, stdout and stderr.
    pub fn sh(
        &self,
        script: &str,
        edit: impl FnOnce(&mut ProcessSpec),
    ) -> (Result<RunOutcome, ExecError>, String, String) {
        let mut p = ProcessSpec::new(vec!["/bin/sh".into(), "-c".into(), script.into()]);
        edit(&mut p);
        let out = CollectOutput::default();
        let r = self.executor().run(&self.mounts(), &p, &out, &Cancel::default());
        (r, out.text(Stream::Stdout), out.text(Stream::Stderr))
    }
}

/// An HTTP server (busybox httpd) in a network namespace of the test's own, joined to the host by a veth
/// pair with addresses the test assigns (`10.214.0.0/16`, one /30 per test process): the only place the
/// network tests send traffic besides loopback. Everything is removed when dropped; the server also
/// stops by itself after two minutes.
pub struct NetnsServer {
    ns: String,
    host_if: String,
    pub addr: std::net::Ipv4Addr,
    pub port: u16,
    server: Option<std::process::Child>,
    _www: tempfile::TempDir,
}

fn ip(args: &[&str]) {
    let out = std::process::Command::new("ip").args(args).output().expect("run ip (apt-get install iproute2)");
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

impl NetnsServer {
    /// Serves `files` (name, contents).
    pub fn start(files: &[(&str, &str)]) -> NetnsServer {
        let pid = std::process::id();
        let ns = format!("rbt-{pid}");
        let (host_if, peer) = (format!("rbth{}", pid % 100_000), format!("rbts{}", pid % 100_000));
        let base = u32::from(std::net::Ipv4Addr::new(10, 214, 0, 0)) + (pid % 16_384) * 4;
        let (host_addr, addr) = (std::net::Ipv4Addr::from(base + 1), std::net::Ipv4Addr::from(base + 2));
        let www = tempfile::tempdir().unwrap();
        for (name, contents) in files {
            std::fs::write(www.path().join(name), contents).unwrap();
        }
        let _ = std::process::Command::new("ip").args(["netns", "del", &ns]).output();
        let _ = std::process::Command::new("ip").args(["link", "del", &host_if]).output();
        let mut s = NetnsServer { ns: ns.clone(), host_if: host_if.clone(), addr, port: 8080, server: None, _www: www };
        ip(&["netns", "add", &ns]);
        ip(&["link", "add", &host_if, "type", "veth", "peer", "name", &peer]);
        ip(&["link", "set", &peer, "netns", &ns]);
        ip(&["addr", "add", &format!("{host_addr}/30"), "dev", &host_if]);
        ip(&["link", "set", &host_if, "up"]);
        ip(&["-n", &ns, "addr", "add", &format!("{addr}/30"), "dev", &peer]);
        ip(&["-n", &ns, "link", "set", &peer, "up"]);
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        let bb = busybox().expect("busybox");
        let child = std::process::Command::new("ip")
            .args(["netns", "exec", &ns, "timeout", "120"])
            .arg(bb)
            .args(["httpd", "-f", "-p", &format!("{addr}:{}", s.port), "-h"])
            .arg(s._www.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        s.server = Some(child);
        // Ready when the port answers from the host.
        for _ in 0..100 {
            if std::net::TcpStream::connect((addr, s.port)).is_ok() {
                return s;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("the test's httpd in {ns} did not start");
    }

    pub fn url(&self, file: &str) -> String {
        format!("http://{}:{}/{file}", self.addr, self.port)
    }
}

impl Drop for NetnsServer {
    fn drop(&mut self) {
        if let Some(mut c) = self.server.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::process::Command::new("ip").args(["netns", "del", &self.ns]).output();
        let _ = std::process::Command::new("ip").args(["link", "del", &self.host_if]).output();
    }
}

/// A TCP server on the host's loopback that answers every connection with `reply` and stops when dropped.
pub struct LoopbackServer {
    pub port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<usize>>,
}

impl LoopbackServer {
    pub fn start(reply: &'static str) -> LoopbackServer {
        use std::io::Write;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut served = 0;
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut c, _)) => {
                        served += 1;
                        let _ = write!(c, "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{reply}", reply.len());
                    }
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(10)),
                }
            }
            served
        });
        LoopbackServer { port, stop, thread: Some(thread) }
    }

    /// Stops the server; returns how many connections it answered.
    pub fn stop(mut self) -> usize {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.take().map(|t| t.join().unwrap_or(0)).unwrap_or(0)
    }
}

impl Drop for LoopbackServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The entries of a state directory that a finished run should not have left: anything but the runc
/// runtime's directory, the namespace executor's mount point (which must be empty) and its /etc sources
/// shared by content (a run's own copies, `run-*`, must be gone).
pub fn leftover_state(dir: &Path) -> Vec<String> {
    let names = |p: &Path| -> Vec<String> {
        std::fs::read_dir(p)
            .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default()
    };
    let mut out = Vec::new();
    for name in names(dir) {
        match name.as_str() {
            "runtime" => {}
            "mnt" if names(&dir.join("mnt")).is_empty() => {}
            "etc" => out.extend(
                names(&dir.join("etc"))
                    .into_iter()
                    .filter(|n| n.starts_with("run-") || n.starts_with('.'))
                    .map(|n| format!("etc/{n}")),
            ),
            _ => out.push(name),
        }
    }
    out
}
