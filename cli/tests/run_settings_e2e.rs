//! `--ulimit`, `--shm-size` and `--cgroup-parent` end to end: seen from inside a RUN step (`ulimit -n`,
//! `df /dev/shm`, /proc/mounts), with both executors, through `rbuild serve`, and refused with a message
//! that names the value when it is bad.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::{skip, Rbuild, TestRegistry};

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false)
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// What a RUN step sees of its limits and /dev/shm, one fact a line.
const PROBE: &str = "FROM busybox\n\
RUN { echo nofile $(ulimit -Sn) $(ulimit -Hn); echo nproc $(ulimit -Su) $(ulimit -Hu); \
df -k /dev/shm | tail -n 1 | awk '{print \"df\", $2}'; \
awk '$2 == \"/dev/shm\" {print \"mount\", $4}' /proc/mounts; } > /seen\n";

fn probe_context() -> tempfile::TempDir {
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("Dockerfile"), PROBE).unwrap();
    ctx
}

/// The lines of /seen as (fact, value) pairs.
fn seen(dest: &Path) -> Vec<(String, String)> {
    let s = std::fs::read_to_string(dest.join("seen")).unwrap();
    s.lines().map(|l| l.split_once(' ').map(|(k, v)| (k.to_string(), v.to_string())).unwrap()).collect()
}

fn fact(seen: &[(String, String)], key: &str) -> String {
    seen.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone()).unwrap_or_else(|| panic!("no {key} in {seen:?}"))
}

/// Builds the probe with `flags` into a local directory and returns what the step saw.
fn probe(rb: &Rbuild, host: Option<&str>, flags: &[&str]) -> (Vec<(String, String)>, String) {
    let ctx = probe_context();
    let out = tempfile::tempdir().unwrap();
    let dest = format!("type=local,dest={}", out.path().join("fs").display());
    let mut c = rb.command();
    c.env_remove("RBUILD_HOST");
    if let Some(h) = host {
        c.args(["--host", h]);
    }
    c.args(["build", "--progress", "plain", "-o", &dest]).args(flags).arg(ctx.path());
    let o = c.output().unwrap();
    assert!(o.status.success(), "rbuild build {flags:?} failed:\n{}", text(&o));
    (seen(&out.path().join("fs")), text(&o))
}

fn setup() -> Option<(TestRegistry, Rbuild)> {
    if !is_root() {
        skip("RUN steps need root (overlay mounts and namespaces)");
        return None;
    }
    let reg = TestRegistry::seeded()?;
    let rb = Rbuild::new(&reg);
    Some((reg, rb))
}

fn check_settings(rb: &Rbuild, host: Option<&str>, runtime: &[&str]) {
    let with = |extra: &[&str]| {
        let mut flags = runtime.to_vec();
        flags.extend_from_slice(extra);
        probe(rb, host, &flags).0
    };
    let s = with(&["--ulimit", "nofile=512:512", "--ulimit", "nproc=300:400", "--shm-size", "64m"]);
    assert_eq!(fact(&s, "nofile"), "512 512");
    assert_eq!(fact(&s, "nproc"), "300 400");
    assert_eq!(fact(&s, "df"), "65536");
    assert!(fact(&s, "mount").contains("size=65536k"), "{s:?}");
    // Other values are another step, not the cached one.
    let s = with(&["--ulimit", "nofile=1000:2000", "--shm-size", "128m"]);
    assert_eq!(fact(&s, "nofile"), "1000 2000");
    assert_eq!(fact(&s, "df"), "131072");
    assert!(fact(&s, "mount").contains("size=131072k"), "{s:?}");
    // Without them, Docker's 64 MiB /dev/shm and rbuild's own open-file limit.
    let s = with(&[]);
    assert_ne!(fact(&s, "nofile"), "1000 2000");
    assert_eq!(fact(&s, "df"), "65536");
}

#[test]
fn ulimit_and_shm_size_are_visible_inside_a_run() {
    let Some((_reg, rb)) = setup() else { return };
    check_settings(&rb, None, &[]);
}

#[test]
fn the_runc_executor_applies_them_too() {
    let Some((_reg, rb)) = setup() else { return };
    if !sandbox::runc::runtime_available(Path::new("runc")) {
        skip("runc is not installed (scripts/install-test-deps installs it)");
        return;
    }
    check_settings(&rb, None, &["--oci-runtime", "runc"]);
}

#[test]
fn bad_values_are_refused_naming_them() {
    let rb = Rbuild::with_config(Path::new("/nonexistent-rbuild-config"));
    let ctx = probe_context();
    for (flag, value, says) in [
        ("--ulimit", "nofile=lots", "invalid ulimit \"nofile=lots\": \"lots\" is not a whole number"),
        ("--ulimit", "files=1", "invalid ulimit \"files=1\": unknown type \"files\"; use one of as, core"),
        ("--ulimit", "nofile=2:1", "the soft limit must be less than or equal to the hard limit"),
        ("--ulimit", "nofile", "invalid ulimit \"nofile\": expected TYPE=SOFT[:HARD]"),
        ("--shm-size", "64q", "--shm-size \"64q\": unknown unit \"q\""),
        ("--shm-size", "lots", "--shm-size \"lots\": no number"),
        ("--cgroup-parent", "../out", "--cgroup-parent: \"../out\" is not a cgroup path"),
    ] {
        let mut c = rb.command();
        c.env_remove("RBUILD_HOST").args(["build", flag, value]).arg(ctx.path());
        let o = c.output().unwrap();
        assert!(!o.status.success(), "{flag} {value} was taken:\n{}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(says), "{flag} {value}: {err}");
        assert!(!err.contains("unexpected argument"), "{err}");
    }
}

/// Whether the namespace executor can make cgroups here: a cgroup2 hierarchy at /sys/fs/cgroup.
fn cgroup2_root() -> Option<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    root.join("cgroup.controllers").is_file().then(|| root.to_path_buf())
}

/// The hierarchies a cgroup path exists in: the cgroup2 root, or each cgroup v1 controller's.
fn hierarchies() -> Vec<PathBuf> {
    match cgroup2_root() {
        Some(root) => vec![root],
        None => std::fs::read_dir("/sys/fs/cgroup")
            .map(|d| d.flatten().map(|e| e.path()).filter(|p| p.join("cgroup.procs").is_file()).collect())
            .unwrap_or_default(),
    }
}

/// Removes `<hierarchy>/<parent>` and the `rbuild` directory in it (what a test made), deepest first.
fn remove_parent(parent: &str) {
    for h in hierarchies() {
        let _ = std::fs::remove_dir(h.join(parent).join("rbuild"));
        let _ = std::fs::remove_dir(h.join(parent));
    }
}

/// Builds a RUN that sleeps with `--cgroup-parent <parent>` and `flags`; returns the build's output and
/// whether a run cgroup appeared below `<hierarchy>/<parent>/rbuild/` while it slept.
fn build_under_parent(rb: &Rbuild, parent: &str, flags: &[&str]) -> (Output, bool) {
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("Dockerfile"), "FROM busybox\nRUN sleep 3 && echo slept\n").unwrap();
    let mut c = rb.command();
    c.env_remove("RBUILD_HOST").args(["build", "--progress", "plain", "--cgroup-parent", parent]).args(flags);
    let mut child: Child = c.arg(ctx.path()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let runs: Vec<PathBuf> = hierarchies().iter().map(|h| h.join(parent).join("rbuild")).collect();
    let has_run = |r: &PathBuf| std::fs::read_dir(r).map(|d| d.flatten().any(|e| e.path().is_dir())).unwrap_or(false);
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut placed = false;
    // Until a run cgroup shows or the build ends (its pipes are small: the plain output of one step fits).
    while Instant::now() < deadline && !placed && child.try_wait().unwrap().is_none() {
        placed = runs.iter().any(has_run);
        std::thread::sleep(Duration::from_millis(20));
    }
    let o = child.wait_with_output().unwrap();
    remove_parent(parent);
    assert!(o.status.success(), "{}", text(&o));
    (o, placed)
}

#[test]
fn cgroup_parent_places_run_steps_or_says_why_not() {
    let Some((_reg, rb)) = setup() else { return };
    let parent = format!("rbuild-test-{}/ns", std::process::id());
    let (o, placed) = build_under_parent(&rb, &parent, &[]);
    let out = text(&o);
    let _ = std::fs::remove_dir(cgroup2_root().unwrap_or_default().join(format!("rbuild-test-{}", std::process::id())));
    if cgroup2_root().is_some() {
        assert!(placed, "no run cgroup appeared under {parent}/rbuild:\n{out}");
        assert!(!out.contains("not applied"), "{out}");
    } else {
        // cgroup v1 or hybrid: the step runs, and says in one line why the parent was not honoured.
        assert!(!placed, "{out}");
        let warning = out.lines().find(|l| l.contains("WARNING: --cgroup-parent")).unwrap_or_else(|| {
            panic!("no warning about --cgroup-parent:\n{out}");
        });
        assert!(warning.contains(&format!("--cgroup-parent {parent} not applied: ")), "{warning}");
        assert!(warning.contains("not a cgroup2 mount"), "{warning}");
    }
}

#[test]
fn with_runc_the_cgroup_parent_holds_run_steps_on_v1_and_v2() {
    let Some((_reg, rb)) = setup() else { return };
    if !sandbox::runc::runtime_available(Path::new("runc")) {
        skip("runc is not installed (scripts/install-test-deps installs it)");
        return;
    }
    let parent = format!("rbuild-test-runc-{}", std::process::id());
    let (o, placed) = build_under_parent(&rb, &parent, &["--oci-runtime", "runc"]);
    assert!(placed, "runc made no cgroup under {parent}/rbuild:\n{}", text(&o));
    assert!(!text(&o).contains("not applied"), "{}", text(&o));
}

/// `rbuild serve` on a unix socket in a temp dir, killed on drop.
struct Serve {
    child: Child,
    dir: tempfile::TempDir,
    addr: String,
}

impl Serve {
    fn docker_sock(&self) -> PathBuf {
        self.dir.path().join("docker.sock")
    }
}

impl Serve {
    /// Serving its gRPC API at `addr` and the Docker API at `docker_sock`.
    fn start(reg: &TestRegistry) -> Serve {
        let dir = tempfile::tempdir().unwrap();
        let addr = format!("unix://{}", dir.path().join("rbuild.sock").display());
        let docker = format!("unix://{}", dir.path().join("docker.sock").display());
        let log = dir.path().join("serve.log");
        let f = std::fs::File::create(&log).unwrap();
        let mut c = Command::new(env!("CARGO_BIN_EXE_rbuild"));
        c.arg("--root").arg(dir.path().join("root")).arg("--config").arg(reg.config_path());
        c.args(["serve", "--addr", &addr, "--docker-api", &docker]).env_remove("RBUILD_HOST");
        let child = c.stdin(Stdio::null()).stdout(f.try_clone().unwrap()).stderr(f).spawn().unwrap();
        let mut s = Serve { child, dir, addr };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let logged = std::fs::read_to_string(&log).unwrap_or_default();
            if logged.contains("serving") {
                return s;
            }
            if let Ok(Some(st)) = s.child.try_wait() {
                panic!("rbuild serve exited ({st}):\n{logged}");
            }
            assert!(Instant::now() < deadline, "rbuild serve did not start:\n{logged}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_daemon_applies_them_for_its_clients() {
    let Some((reg, rb)) = setup() else { return };
    let serve = Serve::start(&reg);
    check_settings(&rb, Some(&serve.addr), &[]);
    // The daemon checks what a client sends as well; the client refuses first.
    let ctx = probe_context();
    let o =
        rb.command().args(["--host", &serve.addr, "build", "--ulimit", "nofile=x"]).arg(ctx.path()).output().unwrap();
    assert!(!o.status.success());
    assert!(text(&o).contains("invalid ulimit \"nofile=x\""), "{}", text(&o));
}

/// `POST /build` on the Docker API socket with a context of one Dockerfile; the status and the body.
fn docker_build(sock: &Path, query: &str, dockerfile: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut tar = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_path("Dockerfile").unwrap();
    h.set_size(dockerfile.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    tar.append(&h, dockerfile.as_bytes()).unwrap();
    let body = tar.into_inner().unwrap();
    let head = format!(
        "POST /v1.41/build{query} HTTP/1.1\r\nHost: rbuild\r\nContent-Type: application/x-tar\r\nContent-Length: \
         {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let mut s = std::os::unix::net::UnixStream::connect(sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    // A request refused on its query is answered before its body is read, and the connection closed:
    // the body's write may then fail with EPIPE, while the answer waits to be read.
    let _ = s.write_all(head.as_bytes()).and_then(|()| s.write_all(&body));
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    (text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0), text)
}

#[test]
fn the_docker_api_build_takes_ulimits_and_shmsize() {
    let Some((reg, _rb)) = setup() else { return };
    let serve = Serve::start(&reg);
    let dockerfile = "FROM busybox\nRUN echo \"nofile $(ulimit -Sn) $(ulimit -Hn)\"; df -k /dev/shm | tail -n 1\n";
    // As the docker CLI sends them (`docker build --ulimit nofile=512:512 --shm-size 128m`).
    let ulimits = "%5B%7B%22Name%22%3A%22nofile%22%2C%22Hard%22%3A512%2C%22Soft%22%3A512%7D%5D";
    let (st, text) = docker_build(&serve.docker_sock(), &format!("?ulimits={ulimits}&shmsize=134217728"), dockerfile);
    assert_eq!(st, 200, "{text}");
    assert!(text.contains("nofile 512 512"), "{text}");
    assert!(text.contains("131072"), "a 128 MiB /dev/shm: {text}");
    assert!(text.contains("Successfully built"), "{text}");
    let (st, text) = docker_build(&serve.docker_sock(), "?shmsize=64m", dockerfile);
    assert_eq!(st, 400, "{text}");
    assert!(text.contains("shmsize: \\\"64m\\\" is not a number of bytes"), "{text}");
    let (st, text) = docker_build(&serve.docker_sock(), "?cgroupparent=..%2Fx", dockerfile);
    assert_eq!(st, 400, "{text}");
    assert!(text.contains("is not a cgroup path"), "{text}");

    // The docker CLI's own classic build sends the same parameters.
    let Some(docker) =
        ["/usr/bin/docker", "/usr/local/bin/docker"].into_iter().map(PathBuf::from).find(|p| p.is_file())
    else {
        skip("the docker CLI is not installed (scripts/install-test-deps installs docker.io)");
        return;
    };
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("Dockerfile"), dockerfile.replace("nofile", "cli nofile")).unwrap();
    let o = Command::new(docker)
        .env("DOCKER_HOST", format!("unix://{}", serve.docker_sock().display()))
        .env("DOCKER_BUILDKIT", "0")
        .env("DOCKER_CONFIG", ctx.path().join("docker-config"))
        .env_remove("DOCKER_CONTEXT")
        .args(["build", "--ulimit", "nofile=700:900", "--shm-size", "96m"])
        .arg(ctx.path())
        .output()
        .unwrap();
    let shown = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "{shown}");
    assert!(shown.contains("nofile 700 900"), "{shown}");
    assert!(shown.contains("98304"), "a 96 MiB /dev/shm: {shown}");
}

#[test]
fn builder_names_a_daemon_of_rbuild_toml() {
    let Some((reg, _rb)) = setup() else { return };
    let serve = Serve::start(&reg);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("rbuild.toml");
    let registry = std::fs::read_to_string(reg.config_path()).unwrap();
    std::fs::write(&config, format!("{registry}\n[builders.remote]\nhost = \"{}\"\n", serve.addr)).unwrap();
    let rb = Rbuild::with_config(&config);
    let builds = || {
        let o = rb.command().args(["--host", &serve.addr, "info"]).output().unwrap();
        assert!(o.status.success(), "{}", text(&o));
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()["builds_total"].as_u64().unwrap()
    };
    let before = builds();
    let (s, out) = probe(&rb, None, &["--builder", "remote", "--ulimit", "nofile=600:700"]);
    assert_eq!(fact(&s, "nofile"), "600 700");
    assert_eq!(builds(), before + 1, "the build ran on the builder's daemon:\n{out}");
    assert!(!out.contains("WARNING: --builder"), "{out}");
    // A name the file does not define: this machine, and one line saying so; `default` is this machine too.
    let (_, out) = probe(&rb, None, &["--builder", "elsewhere"]);
    assert_eq!(builds(), before + 1);
    let note = out.lines().find(|l| l.starts_with("WARNING: --builder elsewhere")).unwrap_or_else(|| panic!("{out}"));
    assert!(note.contains(&format!("no [builders.elsewhere] in {}", config.display())), "{note}");
    let (_, out) = probe(&rb, None, &["--builder", "default"]);
    assert!(!out.contains("WARNING: --builder"), "{out}");
}
