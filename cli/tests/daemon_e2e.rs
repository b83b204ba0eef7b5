//! `rbuild serve` and remote clients, end to end: mutual TLS between two network namespaces the test makes
//! (ip netns + veth), context sync that sends only what changed (asserted from the daemon's counters),
//! concurrent builds, a client killed mid-RUN, a daemon killed mid-build.

mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::{skip, which, TestRegistry};

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false)
}

fn rbuild() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_rbuild"));
    c.env_remove("RBUILD_HOST").env("DOCKER_CONFIG", "/nonexistent-rbuild-test");
    c
}

fn out_text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// A daemon process, killed on drop.
struct Daemon {
    child: Child,
    log: PathBuf,
    root: PathBuf,
}

impl Daemon {
    /// `rbuild serve` with `args`, optionally inside a network namespace; waits until `ready` says so.
    fn start(netns: Option<&str>, root: &Path, config: &Path, args: &[&str], log: PathBuf) -> Daemon {
        let mut c = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(env!("CARGO_BIN_EXE_rbuild"));
                c
            }
            None => rbuild(),
        };
        c.arg("--root").arg(root).arg("--config").arg(config).arg("serve").args(args);
        let f = std::fs::File::create(&log).unwrap();
        let child = c.stdin(Stdio::null()).stdout(f.try_clone().unwrap()).stderr(f).spawn().unwrap();
        let mut d = Daemon { child, log, root: root.to_path_buf() };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !d.log().contains("serving") {
            if let Ok(Some(st)) = d.child.try_wait() {
                panic!("the daemon exited ({st}):\n{}", d.log());
            }
            assert!(Instant::now() < deadline, "the daemon did not start:\n{}", d.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        d
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Two network namespaces joined by a veth pair: the daemon's at .1, the client's at .2. Removed on drop.
struct NetPair {
    daemon: String,
    client: String,
    daemon_ip: String,
}

impl NetPair {
    fn new(tag: &str) -> NetPair {
        let n = std::process::id() % 100_000;
        let subnet = 10 + (std::process::id() % 200);
        let (d, c) = (format!("rbd-{tag}-{n}"), format!("rbc-{tag}-{n}"));
        let (vd, vc) = (format!("vd{tag}{n}"), format!("vc{tag}{n}"));
        let pair = NetPair { daemon: d.clone(), client: c.clone(), daemon_ip: format!("10.231.{subnet}.1") };
        let ip = |args: &[&str]| {
            let st = Command::new("ip").args(args).status().unwrap();
            assert!(st.success(), "ip {}", args.join(" "));
        };
        ip(&["netns", "add", &d]);
        ip(&["netns", "add", &c]);
        ip(&["link", "add", &vd, "type", "veth", "peer", "name", &vc]);
        ip(&["link", "set", &vd, "netns", &d]);
        ip(&["link", "set", &vc, "netns", &c]);
        ip(&["-n", &d, "addr", "add", &format!("10.231.{subnet}.1/24"), "dev", &vd]);
        ip(&["-n", &c, "addr", "add", &format!("10.231.{subnet}.2/24"), "dev", &vc]);
        for (ns, dev) in [(&d, &vd), (&c, &vc)] {
            ip(&["-n", ns, "link", "set", dev, "up"]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        pair
    }
}

impl Drop for NetPair {
    fn drop(&mut self) {
        for ns in [&self.daemon, &self.client] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// A CA and certificates it signs (openssl).
struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn new(dir: &Path, ca: &str) -> Pki {
        let dir = dir.join(ca);
        std::fs::create_dir_all(&dir).unwrap();
        let pki = Pki { dir };
        pki.openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca-key.pem",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            &format!("/CN={ca}"),
        ]);
        pki
    }

    fn openssl(&self, args: &[&str]) {
        let out = Command::new("openssl").args(args).current_dir(&self.dir).output().unwrap();
        assert!(out.status.success(), "openssl {}: {}", args.join(" "), out_text(&out));
    }

    /// `name.pem` and `name-key.pem`, for a server at `ip` or a client.
    fn issue(&self, name: &str, ip: Option<&str>) -> (PathBuf, PathBuf) {
        let key = format!("{name}-key.pem");
        self.openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &format!("/CN={name}"),
        ]);
        let ext = match ip {
            Some(ip) => format!("subjectAltName=IP:{ip}\nextendedKeyUsage=serverAuth\n"),
            None => "extendedKeyUsage=clientAuth\n".to_string(),
        };
        std::fs::write(self.dir.join(format!("{name}.ext")), ext).unwrap();
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca-key.pem",
            "-CAcreateserial",
            "-out",
            &format!("{name}.pem"),
            "-days",
            "2",
            "-extfile",
            &format!("{name}.ext"),
        ]);
        (self.dir.join(format!("{name}.pem")), self.dir.join(key))
    }

    fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
}

fn tls_args<'a>(ca: &'a Path, cert: &'a Path, key: &'a Path) -> Vec<String> {
    vec![
        "--tlscacert".into(),
        ca.display().to_string(),
        "--tlscert".into(),
        cert.display().to_string(),
        "--tlskey".into(),
        key.display().to_string(),
    ]
}

const MULTISTAGE: &str = "FROM busybox AS build\n\
    COPY src/ /src/\n\
    RUN --mount=type=secret,id=tok wc -c < /run/secrets/tok > /src/toklen && tr a-z A-Z < /src/a.txt > /src/out.txt\n\
    FROM busybox\n\
    COPY --from=build /src/out.txt /src/toklen /result/\n";

#[test]
fn a_remote_build_over_mutual_tls_between_two_network_namespaces() {
    if !is_root() || which("ip").is_none() || which("openssl").is_none() || which("curl").is_none() {
        skip("the daemon test needs root, ip (iproute2), openssl and curl");
        return;
    }
    let net = NetPair::new("t");
    let Some(reg) = TestRegistry::seeded_in_netns(&net.daemon) else { return };
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new(tmp.path(), "rbuild-ca");
    let (server, server_key) = pki.issue("daemon", Some(&net.daemon_ip));
    let (client, client_key) = pki.issue("client", None);
    let rogue = Pki::new(tmp.path(), "other-ca");
    let (rogue_cert, rogue_key) = rogue.issue("intruder", None);

    // A TCP address without TLS is refused before anything is opened.
    let out = rbuild()
        .arg("--root")
        .arg(tmp.path().join("unused-root"))
        .args(["serve", "--addr", "tcp://127.0.0.1:1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(out_text(&out).contains("--insecure-tcp"), "{}", out_text(&out));
    assert!(!tmp.path().join("unused-root").exists(), "the refused daemon opened its state root");

    let addr = format!("tcp://{}:7443", net.daemon_ip);
    let mut args = vec!["--addr".to_string(), addr.clone()];
    args.extend(tls_args(&pki.ca(), &server, &server_key));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let daemon = Daemon::start(
        Some(&net.daemon),
        &tmp.path().join("root"),
        reg.config_path(),
        &args,
        tmp.path().join("daemon.log"),
    );

    let ctx = tmp.path().join("ctx");
    std::fs::create_dir_all(ctx.join("src")).unwrap();
    std::fs::write(ctx.join("Dockerfile"), MULTISTAGE).unwrap();
    std::fs::write(ctx.join("src/a.txt"), "hello over tls\n").unwrap();
    std::fs::write(tmp.path().join("token"), "s3cr3t-value").unwrap();
    let out_dir = tmp.path().join("out");
    let client_build = |cert: &Path, key: &Path| {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &net.client]).arg(env!("CARGO_BIN_EXE_rbuild"));
        c.env_remove("RBUILD_HOST").args(["--host", &addr]).args(tls_args(&pki.ca(), cert, key));
        c.args(["build", "--progress", "plain", "--secret"])
            .arg(format!("id=tok,src={}", tmp.path().join("token").display()))
            .arg("-o")
            .arg(format!("type=local,dest={}", out_dir.display()))
            .arg(&ctx);
        c.output().unwrap()
    };
    let out = client_build(&client, &client_key);
    assert!(out.status.success(), "the remote build failed:\n{}\ndaemon:\n{}", out_text(&out), daemon.log());
    assert_eq!(std::fs::read_to_string(out_dir.join("result/out.txt")).unwrap(), "HELLO OVER TLS\n");
    assert_eq!(std::fs::read_to_string(out_dir.join("result/toklen")).unwrap().trim(), "12");
    assert!(out_text(&out).contains("transferring context"), "{}", out_text(&out));
    let stored = Command::new("grep").args(["-r", "-l", "s3cr3t-value"]).arg(&daemon.root).output().unwrap();
    assert!(stored.stdout.is_empty(), "the secret was stored on the daemon: {}", out_text(&stored));

    // A client whose certificate another CA signed gets nothing.
    std::fs::remove_dir_all(&out_dir).unwrap();
    let out = client_build(&rogue_cert, &rogue_key);
    assert!(!out.status.success(), "a client of another CA was served:\n{}", out_text(&out));
    assert!(!out_dir.exists(), "a client of another CA got output");
    let text = out_text(&out);
    assert!(text.contains("cannot reach the rbuild daemon") || text.contains("daemon at"), "{text}");
}

/// A daemon on a unix socket in a temp dir, with its registry.
struct Local {
    _reg: TestRegistry,
    tmp: tempfile::TempDir,
    daemon: Option<Daemon>,
    sock: String,
}

impl Local {
    fn new(extra: &[&str]) -> Option<Local> {
        if !is_root() {
            skip("daemon tests need root (overlay mounts and namespaces)");
            return None;
        }
        let reg = TestRegistry::seeded()?;
        let tmp = tempfile::tempdir().unwrap();
        let sock = format!("unix://{}", tmp.path().join("rbuild.sock").display());
        let mut l = Local { _reg: reg, tmp, daemon: None, sock };
        l.start(extra);
        Some(l)
    }

    fn start(&mut self, extra: &[&str]) {
        let mut args = vec!["--addr", &self.sock];
        args.extend_from_slice(extra);
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let log = self.tmp.path().join(format!("daemon-{n}.log"));
        self.daemon = Some(Daemon::start(None, &self.tmp.path().join("root"), self._reg.config_path(), &args, log));
    }

    fn client(&self) -> Command {
        let mut c = rbuild();
        c.args(["--host", &self.sock]);
        c
    }

    fn info(&self) -> serde_json::Value {
        let out = self.client().arg("info").output().unwrap();
        assert!(out.status.success(), "{}", out_text(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn context_bytes(&self) -> u64 {
        self.info()["context_bytes"].as_u64().unwrap()
    }
}

/// Steps that ran (not cached, not loading a context), from plain progress.
fn ran_steps(plain: &str) -> Vec<String> {
    let mut names = std::collections::BTreeMap::new();
    let mut cached = std::collections::BTreeSet::new();
    let mut ran = Vec::new();
    for line in plain.lines() {
        let Some((n, what)) = line.strip_prefix('#').and_then(|r| r.split_once(' ')) else { continue };
        if what == "CACHED" {
            cached.insert(n.to_string());
        } else if what.starts_with("DONE") && !cached.contains(n) {
            if let Some(name) = names.get(n) {
                ran.push(String::clone(name));
            }
        } else if what.starts_with('[') && !names.contains_key(n) {
            names.insert(n.to_string(), what.to_string());
        }
    }
    ran.retain(|n| !n.contains("[internal]") && !n.contains("[context"));
    ran
}

#[test]
fn only_what_changed_crosses_the_wire() {
    let Some(l) = Local::new(&[]) else { return };
    let ctx = l.tmp.path().join("big");
    // 10,000 files, 200 MB: 100 directories of 100 files of 20 kB each, every file different.
    for d in 0..100 {
        let dir = ctx.join(format!("d{d:03}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..100 {
            let mut data = format!("file {d}/{f}\n").into_bytes();
            let mut x: u64 = (d * 100 + f + 1) as u64;
            while data.len() < 20 * 1024 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                data.extend_from_slice(&x.to_le_bytes());
            }
            data.truncate(20 * 1024);
            std::fs::write(dir.join(format!("f{f:03}.bin")), data).unwrap();
        }
    }
    std::fs::write(ctx.join("Dockerfile"), "FROM busybox\nCOPY . /ctx/\nRUN ls /ctx | wc -l > /count\n").unwrap();
    let build = || {
        let out = l.client().args(["build", "--progress", "plain", "-t", "big"]).arg(&ctx).output().unwrap();
        assert!(out.status.success(), "{}", out_text(&out));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let before = l.context_bytes();
    build();
    let first = l.context_bytes() - before;
    assert!(first > 150 << 20, "the first build sent only {first} bytes of a 200 MB context");

    let before = l.context_bytes();
    let plain = build();
    let noop = l.context_bytes() - before;
    assert!(noop <= 2 << 20, "a no-op build sent {noop} bytes");
    // The client's listing had the digest of the one the daemon holds: only that was said, no stat records.
    assert!(noop <= 1 << 10, "a no-op build sent {noop} bytes: the stat records went again");
    assert!(ran_steps(&plain).is_empty(), "a no-op build ran {:?}", ran_steps(&plain));

    // 4 kB of one file change.
    let mut changed = std::fs::read(ctx.join("d042/f007.bin")).unwrap();
    changed[100..4196].iter_mut().for_each(|b| *b = b.wrapping_add(1));
    std::fs::write(ctx.join("d042/f007.bin"), &changed).unwrap();
    let before = l.context_bytes();
    let plain = build();
    let one = l.context_bytes() - before;
    assert!(one <= 1 << 20, "changing one 4 kB file sent {one} bytes");
    let ran = ran_steps(&plain);
    assert!(ran.iter().any(|s| s.contains("COPY")), "{ran:?}");
}

#[test]
fn eight_builds_at_once_make_the_images_a_serial_run_makes() {
    let Some(l) = Local::new(&["--max-parallelism", "4"]) else { return };
    let ctx = l.tmp.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("data.txt"), "shared\n").unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox\nCOPY data.txt /data.txt\nRUN echo base >> /data.txt\nARG N\nRUN echo $N > /n && sleep 0.2\n",
    )
    .unwrap();
    let build = |c: &mut Command, n: usize| {
        c.args([
            "build",
            "--progress",
            "plain",
            "--build-arg",
            &format!("N={n}"),
            "--build-arg",
            "SOURCE_DATE_EPOCH=1700000000",
        ]);
        c.arg("-t").arg(format!("app:{n}")).arg("--iidfile").arg(l.tmp.path().join(format!("iid-{n}"))).arg(&ctx);
    };
    // Serially, in this process, on another state root.
    let serial_root = l.tmp.path().join("serial-root");
    let mut serial = Vec::new();
    for n in 0..8 {
        let mut c = rbuild();
        c.arg("--root").arg(&serial_root).arg("--config").arg(l._reg.config_path());
        build(&mut c, n);
        let out = c.output().unwrap();
        assert!(out.status.success(), "{}", out_text(&out));
        serial.push(std::fs::read_to_string(l.tmp.path().join(format!("iid-{n}"))).unwrap());
    }
    // All at once through the daemon.
    let children: Vec<Child> = (0..8)
        .map(|n| {
            let mut c = l.client();
            build(&mut c, n);
            c.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
        })
        .collect();
    for (n, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "build {n} failed:\n{}", out_text(&out));
        let id = std::fs::read_to_string(l.tmp.path().join(format!("iid-{n}"))).unwrap();
        assert_eq!(id, serial[n], "build {n} made another image than the serial run");
    }
    assert_eq!(l.info()["builds_running"], 0);
}

/// Processes whose command line contains `needle`.
fn processes_with(needle: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(needle))
        .collect()
}

fn mounts_under(root: &Path) -> Vec<String> {
    let root = root.display().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(&root))
        .map(str::to_string)
        .collect()
}

/// Starts a remote build whose RUN sleeps (`marker` in its command line) and waits until it runs.
fn start_long_build(l: &Local, ctx: &Path, marker: &str) -> Child {
    std::fs::create_dir_all(ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), format!("FROM busybox\nARG P=1\nRUN if [ $P = 1 ]; then {marker}; fi\n"))
        .unwrap();
    let mut child = l
        .client()
        .args(["build", "--progress", "plain"])
        .arg(ctx)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || for _ in BufReader::new(stderr).lines() {});
    let deadline = Instant::now() + Duration::from_secs(120);
    while processes_with(marker).is_empty() {
        assert!(Instant::now() < deadline, "the long RUN never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

#[test]
fn a_client_killed_mid_run_leaves_nothing_and_a_killed_daemon_restarts_on_a_usable_store() {
    let Some(mut l) = Local::new(&[]) else { return };
    let ctx = l.tmp.path().join("ctx");
    let marker = "sleep 3471";
    let mut client = start_long_build(&l, &ctx, marker);
    client.kill().unwrap();
    let _ = client.wait();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !processes_with(marker).is_empty() {
        assert!(Instant::now() < deadline, "the RUN outlived its client: {:?}", processes_with(marker));
        std::thread::sleep(Duration::from_millis(50));
    }
    let root = l.daemon.as_ref().unwrap().root.clone();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !mounts_under(&root.join("mnt")).is_empty() || l.info()["builds_running"] != 0 {
        assert!(Instant::now() < deadline, "left behind: {:#?} {}", mounts_under(&root), l.info());
        std::thread::sleep(Duration::from_millis(50));
    }
    // Nothing stayed locked: the context changes (the mirror is written) and the build runs.
    std::fs::write(ctx.join("extra"), "x").unwrap();
    let out = l.client().args(["build", "--progress", "plain", "--build-arg", "P=0"]).arg(&ctx).output().unwrap();
    assert!(out.status.success(), "{}", out_text(&out));

    // kill -9 of the daemon mid-build, then a restart on the same root.
    let marker = "sleep 3472";
    let mut client = start_long_build(&l, &l.tmp.path().join("ctx2"), marker);
    let pid = l.daemon.as_ref().unwrap().child.id();
    Command::new("kill").args(["-9", &pid.to_string()]).status().unwrap();
    let st = client.wait().unwrap();
    assert!(!st.success(), "the client did not notice its daemon died");
    l.daemon.take();
    l.start(&[]);
    let out = l
        .client()
        .args(["build", "--progress", "plain", "--build-arg", "P=0"])
        .arg(l.tmp.path().join("ctx2"))
        .output()
        .unwrap();
    assert!(out.status.success(), "a build after the restart failed:\n{}", out_text(&out));
    let out = l.client().args(["build", "--progress", "plain", "--build-arg", "P=0"]).arg(&ctx).output().unwrap();
    assert!(out.status.success(), "{}", out_text(&out));
    assert!(ran_steps(&String::from_utf8_lossy(&out.stderr)).is_empty(), "the cache did not survive the kill");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !processes_with(marker).is_empty() {
        assert!(Instant::now() < deadline, "the RUN outlived its daemon: {:?}", processes_with(marker));
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_image_commands_work_through_the_daemon() {
    let Some(l) = Local::new(&[]) else { return };
    let ctx = l.tmp.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), "FROM busybox\nRUN echo hi > /hi\nLABEL purpose=remote\n").unwrap();
    let ok = |args: &[&str]| {
        let out = l.client().args(args).output().unwrap();
        assert!(out.status.success(), "rbuild {}: {}", args.join(" "), out_text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    ok(&["build", "--progress", "quiet", "-t", "app:1", ctx.to_str().unwrap()]);
    ok(&["tag", "app:1", "app:2"]);
    let images = ok(&["images"]);
    assert!(images.contains("app") && images.contains(" 1 ") && images.contains(" 2 "), "{images}");
    let inspect: serde_json::Value = serde_json::from_str(&ok(&["inspect", "app:2"])).unwrap();
    assert_eq!(inspect["Labels"]["purpose"], "remote");
    let history = ok(&["history", "app:1"]);
    assert!(history.contains("RUN /bin/sh -c echo hi > /hi"), "{history}");

    let archive = l.tmp.path().join("app.tar");
    ok(&["save", "-o", archive.to_str().unwrap(), "app:1"]);
    assert!(std::fs::metadata(&archive).unwrap().len() > 1000);
    let rmi = ok(&["rmi", "app:1", "app:2"]);
    assert!(rmi.contains("Untagged: app:1") && rmi.contains("Untagged: app:2"), "{rmi}");
    assert!(!ok(&["images"]).contains("app"));
    let loaded = ok(&["load", "-i", archive.to_str().unwrap()]);
    assert!(loaded.contains("Loaded image: docker.io/library/app:1"), "{loaded}");
    assert_eq!(serde_json::from_str::<serde_json::Value>(&ok(&["inspect", "app:1"])).unwrap()["Id"], inspect["Id"]);

    let pulled = ok(&["pull", "busybox"]);
    assert!(pulled.contains("Status: ") && pulled.contains("docker.io/library/busybox:latest"), "{pulled}");
    let target = format!("127.0.0.1:{}/team/app:1", l._reg.port());
    ok(&["tag", "app:1", &target]);
    let pushed = ok(&["push", &target]);
    assert!(pushed.contains("digest: sha256:"), "{pushed}");
    let du = ok(&["du"]);
    assert!(du.contains("Layers") && du.contains("Total"), "{du}");
    let missing = l.client().args(["inspect", "nothing:here"]).output().unwrap();
    assert!(!missing.status.success());
    assert!(out_text(&missing).contains("nothing"), "{}", out_text(&missing));
}
