//! Shared harness of the CLI's end-to-end tests (`mod support;` in a test file).
//!
//! [`TestRegistry::seeded`] starts a real docker-registry on a free loopback port over a copy of the
//! storage that `scripts/seed-images` filled with `busybox` and `debian:bookworm-slim`, and writes an
//! rbuild config that makes it the docker.io mirror, so Dockerfiles say `FROM busybox` unchanged.
//! [`Rbuild`] runs the real binary with `--root <tempdir> --config <that file>`.
//!
//! Tests skip (the constructors return `None` and print why) where the seeded storage or
//! docker-registry is missing; `scripts/test` installs and seeds both, and in CI a skip fails the test.

#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Where `scripts/seed-images` keeps its cache (`$RBUILD_TEST_CACHE`, default `/var/cache/rbuild-test`).
pub fn test_cache() -> PathBuf {
    std::env::var_os("RBUILD_TEST_CACHE").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/var/cache/rbuild-test"))
}

/// The seeded registry storage, when seeding finished.
pub fn seeded_storage() -> Option<PathBuf> {
    let s = test_cache().join("registry");
    s.join("seeded-v1").is_file().then_some(s)
}

/// The path of a program on `$PATH`.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file())
}

/// Prints why a test is skipped (cargo shows it with `--nocapture`, and in the failure output); a failure
/// where skips are (`RBUILD_TEST_NO_SKIP`, set in CI: see `testkit::skip`).
#[track_caller]
pub fn skip(reason: &str) {
    testkit::skip(reason);
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("bind a loopback port")
}

/// Copies a directory tree (the registry's storage is a few files and directories, no links).
fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let t = e.file_type()?;
        let dest = to.join(e.file_name());
        if t.is_dir() {
            copy_tree(&e.path(), &dest)?;
        } else if t.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(e.path())?, &dest)?;
        } else {
            std::fs::copy(e.path(), &dest)?;
        }
    }
    Ok(())
}

thread_local! {
    /// Whether the registry being started logs every request.
    static ACCESS_LOG: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// A docker-registry on a loopback port, killed (and its files removed) on drop.
pub struct TestRegistry {
    addr: SocketAddr,
    child: Child,
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl TestRegistry {
    /// A registry over a copy of the seeded storage, configured as the docker.io mirror.
    pub fn seeded() -> Option<TestRegistry> {
        let Some(storage) = seeded_storage() else {
            skip(&format!(
                "no seeded base images in {}: run scripts/seed-images (scripts/test does)",
                test_cache().display()
            ));
            return None;
        };
        TestRegistry::start(Some(&storage), None)
    }

    /// Like [`TestRegistry::seeded`], with its access log on (see [`TestRegistry::log`]), to count requests.
    pub fn seeded_logging() -> Option<TestRegistry> {
        let Some(storage) = seeded_storage() else {
            skip(&format!("no seeded base images in {}: run scripts/seed-images", test_cache().display()));
            return None;
        };
        ACCESS_LOG.with(|a| a.set(true));
        let r = TestRegistry::start(Some(&storage), None);
        ACCESS_LOG.with(|a| a.set(false));
        r
    }

    /// Like [`TestRegistry::seeded`], listening on the loopback of network namespace `netns` (for a daemon
    /// that runs there).
    pub fn seeded_in_netns(netns: &str) -> Option<TestRegistry> {
        let Some(storage) = seeded_storage() else {
            skip(&format!("no seeded base images in {}: run scripts/seed-images", test_cache().display()));
            return None;
        };
        TestRegistry::start(Some(&storage), Some(netns))
    }

    /// A registry with empty storage (also the docker.io mirror, which then has nothing).
    pub fn empty() -> Option<TestRegistry> {
        TestRegistry::start(None, None)
    }

    fn start(seed: Option<&Path>, netns: Option<&str>) -> Option<TestRegistry> {
        let Some(bin) = which("docker-registry").or_else(|| which("registry")) else {
            skip("docker-registry is not installed: run scripts/install-test-deps (as root)");
            return None;
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        match seed {
            Some(s) => {
                copy_tree(s, &data).unwrap_or_else(|e| panic!("copying {} to {}: {e}", s.display(), data.display()))
            }
            None => std::fs::create_dir_all(&data).expect("registry data dir"),
        }
        let port = free_port();
        let access = ACCESS_LOG.with(|a| a.get());
        let yaml = format!(
            "version: 0.1\nlog:\n  level: {}\n  accesslog:\n    disabled: {}\nstorage:\n  filesystem:\n    \
             rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: rbuild-test\n",
            if access { "info" } else { "error" },
            !access,
            data.display()
        );
        let cfg = dir.path().join("registry.yml");
        std::fs::write(&cfg, yaml).expect("write registry config");
        let log = std::fs::File::create(dir.path().join("registry.log")).expect("registry log");
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&bin);
                c
            }
            None => Command::new(&bin),
        };
        let child = cmd
            .arg("serve")
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
        let config = dir.path().join("rbuild.toml");
        std::fs::write(
            &config,
            format!("[registry.\"docker.io\"]\nmirrors = [\"127.0.0.1:{port}\"]\n\n[registry.\"127.0.0.1:{port}\"]\nhttp = true\n"),
        )
        .expect("write rbuild config");
        let mut reg = TestRegistry { addr, child, dir, config };
        let deadline = Instant::now() + Duration::from_secs(20);
        let listening = |ns: Option<&str>| match ns {
            None => TcpStream::connect(addr).is_ok(),
            Some(ns) => Command::new("ip")
                .args(["netns", "exec", ns, "curl", "-s", "-o", "/dev/null", &format!("http://{addr}/v2/")])
                .status()
                .is_ok_and(|s| s.success()),
        };
        while !listening(netns) {
            if let Ok(Some(status)) = reg.child.try_wait() {
                panic!("docker-registry exited with {status}: {}", reg.log());
            }
            assert!(Instant::now() < deadline, "docker-registry did not listen on {addr}: {}", reg.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(reg)
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `127.0.0.1:PORT`, the registry part of references pushed straight to it.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// The rbuild config file naming this registry the docker.io mirror.
    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// The registry's own log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// A scratch directory that lives as long as the registry.
    pub fn scratch(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The rbuild binary on a fresh state root with a registry config.
pub struct Rbuild {
    root: tempfile::TempDir,
    config: PathBuf,
}

impl Rbuild {
    /// A fresh `--root` and `--config <registry's config>`.
    pub fn new(registry: &TestRegistry) -> Rbuild {
        Rbuild::with_config(registry.config_path())
    }

    pub fn with_config(config: &Path) -> Rbuild {
        Rbuild { root: tempfile::tempdir().expect("tempdir"), config: config.to_path_buf() }
    }

    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// A command with the global flags set, for tests that need stdin or extra environment.
    pub fn command(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_rbuild"));
        c.arg("--root").arg(self.root.path()).arg("--config").arg(&self.config);
        // No credentials from the machine's docker config leak into tests.
        c.env("DOCKER_CONFIG", self.root.path().join("docker-config"));
        c
    }

    /// Runs `rbuild <args>` and returns its output whatever the status.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command().args(args).output().expect("run rbuild")
    }

    /// Runs `rbuild <args>`, panics with its stderr unless it succeeds, returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "rbuild {} failed ({}):\n{}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}
