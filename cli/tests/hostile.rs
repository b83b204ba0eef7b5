//! Hostile builds (issue 18): what a Dockerfile must not be able to do to the host, and what a busy CI host
//! does to rbuild (several builds on one state root, builds killed mid-step). Each test builds real
//! Dockerfiles with the rbuild binary against the seeded local registry (see `support`).
//!
//! Network traffic goes only to loopback and to a network namespace the test makes itself
//! ([`NetnsServer`]).

#[path = "hostile_support/registry.rs"]
mod registry;
mod support;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::{Rbuild, TestRegistry};

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false)
}

/// The registry and a fresh root, or `None` (skipped) where builds cannot run here.
fn env() -> Option<(TestRegistry, Rbuild)> {
    if !is_root() {
        support::skip("hostile builds need root (overlay mounts and namespaces)");
        return None;
    }
    let reg = TestRegistry::seeded()?;
    let rb = Rbuild::new(&reg);
    Some((reg, rb))
}

/// A context directory holding `dockerfile`.
fn context(dockerfile: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("Dockerfile"), dockerfile).unwrap();
    dir
}

fn build(rb: &Rbuild, ctx: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["build", "--progress", "plain"];
    args.extend_from_slice(extra);
    let ctx = ctx.to_str().unwrap();
    args.push(ctx);
    rb.run(&args)
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[track_caller]
fn build_ok(rb: &Rbuild, ctx: &Path, extra: &[&str]) -> String {
    let out = build(rb, ctx, extra);
    let t = text(&out);
    assert!(out.status.success(), "build failed ({}):\n{t}", out.status);
    t
}

/// Failure 1: A step can open none of the host's devices: making a node for a loop device (7:0), a disk (8:0),
/// kvm (10:232), fuse (10:229) or /dev/mem (1:1) fails with EPERM, as opening one does under Docker's device
/// cgroup (and a node that gets there another way, in a layer, is on a nodev mount). Files, fifos, the
/// default devices' nodes and the default devices themselves work.
#[test]
fn device_nodes_of_the_host_cannot_be_opened() {
    let Some((_reg, rb)) = env() else { return };
    let ctx = context(
        "FROM busybox\n\
         RUN for n in 'b 7 0' 'b 8 0' 'c 10 232' 'c 10 229' 'c 1 1'; do \
               if mknod /tmp/dev $n 2>/tmp/err; then \
                 if dd if=/tmp/dev of=/dev/null bs=1 count=1 2>/tmp/err; then echo \"OPENED $n\"; exit 1; fi; \
                 rm /tmp/dev; \
               fi; \
               grep -q 'Operation not permitted' /tmp/err || { cat /tmp/err; exit 2; }; \
               echo \"refused $n\"; \
             done; \
             mknod /tmp/null c 1 3 && mkfifo /tmp/fifo && mknod /tmp/fifo2 p && \
             echo x > /dev/null && head -c 4 /dev/urandom | wc -c && echo devices-ok-$((6*7))\n",
    );
    let out = build_ok(&rb, ctx.path(), &[]);
    for n in ["b 7 0", "b 8 0", "c 10 232", "c 10 229", "c 1 1"] {
        assert!(out.contains(&format!("refused {n}")), "{out}");
    }
    assert!(out.contains("devices-ok-42"), "{out}");
}

/// A server on the host's loopback that counts its connections.
struct LoopbackServer {
    port: u16,
    hits: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LoopbackServer {
    fn start(reply: &'static str) -> LoopbackServer {
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (h, s) = (hits.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut c, _)) => {
                        h.fetch_add(1, Ordering::Relaxed);
                        // Read the request before answering: closing a socket with unread bytes sends a
                        // reset, which can reach the client before it has read the reply.
                        let _ = c.set_nonblocking(false);
                        let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
                        let (mut req, mut buf) = (Vec::new(), [0u8; 1024]);
                        while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                            match std::io::Read::read(&mut c, &mut buf) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => req.extend_from_slice(&buf[..n]),
                            }
                        }
                        let _ = write!(c, "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{reply}", reply.len());
                        let _ = c.shutdown(std::net::Shutdown::Write);
                        while let Ok(1..) = std::io::Read::read(&mut c, &mut buf) {}
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        LoopbackServer { port, hits, stop, thread: Some(thread) }
    }

    fn hits(&self) -> usize {
        self.hits.load(std::sync::atomic::Ordering::Relaxed)
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

/// Failure 2: A Dockerfile cannot take the host network for itself: `RUN --network=host` fails without
/// `--allow network.host`, naming the entitlement (also under `--network none`), and works with it.
#[test]
fn the_host_network_needs_the_entitlement() {
    let Some((_reg, rb)) = env() else { return };
    let server = LoopbackServer::start("host-secret");
    let ctx =
        context(&format!("FROM busybox\nRUN --network=host wget -q -O - http://127.0.0.1:{}/ && echo\n", server.port));
    for extra in [&[][..], &["--network", "none"][..]] {
        let out = build(&rb, ctx.path(), extra);
        let t = text(&out);
        assert!(!out.status.success(), "RUN --network=host ran without the entitlement ({extra:?}):\n{t}");
        assert!(t.contains("network.host") && t.contains("--allow network.host"), "{t}");
    }
    assert_eq!(server.hits(), 0, "the host's loopback was reached without the entitlement");
    let out = build_ok(&rb, ctx.path(), &["--allow", "network.host"]);
    assert!(out.contains("host-secret"), "{out}");
    assert_eq!(server.hits(), 1);

    // `--security=insecure` likewise.
    let ctx = context("FROM busybox\nRUN --security=insecure true\n");
    let out = build(&rb, ctx.path(), &[]);
    assert!(!out.status.success(), "{}", text(&out));
}

/// An HTTP server (busybox httpd) in a network namespace of the test's own, joined to the host by a veth
/// pair with addresses the test assigns (10.215.0.0/16, a /30 per test process); removed on drop, and it
/// stops by itself after two minutes.
struct NetnsServer {
    ns: String,
    host_if: String,
    addr: std::net::Ipv4Addr,
    server: Option<std::process::Child>,
    _www: tempfile::TempDir,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip (apt-get install iproute2)");
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

impl NetnsServer {
    fn start(file: &str, contents: &str) -> Option<NetnsServer> {
        let (Some(_), Some(bb)) = (support::which("ip"), support::which("busybox")) else {
            support::skip("the network test needs ip (iproute2) and busybox");
            return None;
        };
        let pid = std::process::id();
        let ns = format!("rbh-{pid}");
        let (host_if, peer) = (format!("rbhh{}", pid % 100_000), format!("rbhs{}", pid % 100_000));
        let base = u32::from(std::net::Ipv4Addr::new(10, 215, 0, 0)) + (pid % 16_384) * 4;
        let (host_addr, addr) = (std::net::Ipv4Addr::from(base + 1), std::net::Ipv4Addr::from(base + 2));
        let www = tempfile::tempdir().unwrap();
        std::fs::write(www.path().join(file), contents).unwrap();
        let _ = Command::new("ip").args(["netns", "del", &ns]).output();
        let _ = Command::new("ip").args(["link", "del", &host_if]).output();
        let mut s = NetnsServer { ns: ns.clone(), host_if: host_if.clone(), addr, server: None, _www: www };
        ip(&["netns", "add", &ns]);
        ip(&["link", "add", &host_if, "type", "veth", "peer", "name", &peer]);
        ip(&["link", "set", &peer, "netns", &ns]);
        ip(&["addr", "add", &format!("{host_addr}/30"), "dev", &host_if]);
        ip(&["link", "set", &host_if, "up"]);
        ip(&["-n", &ns, "addr", "add", &format!("{addr}/30"), "dev", &peer]);
        ip(&["-n", &ns, "link", "set", &peer, "up"]);
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        let child = Command::new("ip")
            .args(["netns", "exec", &ns, "timeout", "120"])
            .arg(bb)
            .args(["httpd", "-f", "-p", &format!("{addr}:8080"), "-h"])
            .arg(s._www.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        s.server = Some(child);
        for _ in 0..100 {
            if std::net::TcpStream::connect((addr, 8080)).is_ok() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the test's httpd in {ns} did not start");
    }
}

impl Drop for NetnsServer {
    fn drop(&mut self) {
        if let Some(mut c) = self.server.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
        let _ = Command::new("ip").args(["link", "del", &self.host_if]).output();
    }
}

/// Failure 3: The default network is a namespace of the step's own: it reaches a server elsewhere through NAT, but
/// not the host's loopback services (neither as 127.0.0.1 nor through its gateway), and it sees only its
/// own interfaces, so a packet socket (CAP_NET_RAW) captures only its own traffic.
#[test]
fn the_default_network_is_the_steps_own_with_nat() {
    let Some((_reg, rb)) = env() else { return };
    let Some(remote) = NetnsServer::start("marker", "through-nat") else { return };
    let local = LoopbackServer::start("host-loopback");
    let ctx = context(&format!(
        "FROM busybox\n\
         RUN echo \"ifaces: $(cut -d: -f1 /proc/net/dev | tail -n +3 | tr -d ' ' | sort | tr '\\n' ' ')\"; \
             echo \"remote: $(timeout 10 wget -q -O - http://{}:8080/marker)\"; \
             timeout 3 wget -q -O - http://127.0.0.1:{port}/ && echo loopback-reached-$((6*7)); \
             gw=$(ip route | sed -n 's/^default via \\([0-9.]*\\).*/\\1/p'); \
             timeout 3 wget -q -O - http://$gw:{port}/ && echo host-reached-$((6*7)); \
             echo net-done-$((6*7))\n",
        remote.addr,
        port = local.port
    ));
    let out = build_ok(&rb, ctx.path(), &[]);
    assert!(out.contains("ifaces: eth0 lo"), "{out}");
    assert!(out.contains("remote: through-nat"), "{out}");
    assert!(out.contains("net-done-42"), "{out}");
    assert!(!out.contains("loopback-reached-42") && !out.contains("host-reached-42"), "{out}");
    assert_eq!(local.hits(), 0, "a default-network step reached the host's loopback");

    // `--network none`: loopback only, the remote server is out of reach.
    let ctx = context(&format!(
        "FROM busybox\nRUN timeout 3 wget -q -O - http://{}:8080/marker && echo remote-reached-$((6*7)); echo none-done-$((6*7))\n",
        remote.addr
    ));
    let out = build_ok(&rb, ctx.path(), &["--network", "none"]);
    assert!(out.contains("none-done-42") && !out.contains("remote-reached-42"), "{out}");
}

/// Failure 4: Eight builds on one state root at once all succeed, and `rbuild images` answers within a second
/// while they run (one test: two of them at once would be sixteen builds on the machine).
#[test]
fn concurrent_builds_share_one_root_and_images_answers_while_they_run() {
    concurrent_builds(Duration::from_secs(5));
}

/// Eight builds at once on one root, `rbuild images` every 200 ms meanwhile, each answering within `reads`
/// (a bound for a loaded machine) and at least one answering while builds still run: reads never wait for
/// the builds.
fn concurrent_builds(reads: Duration) {
    let Some((_reg, rb)) = env() else { return };
    let contexts: Vec<_> = (0..8)
        .map(|i| {
            context(&format!(
                "FROM busybox\nRUN echo build-{i} > /id && sleep 1\nRUN cat /id\nCOPY Dockerfile /Dockerfile.{i}\n"
            ))
        })
        .collect();
    let mut children: Vec<_> = contexts
        .iter()
        .enumerate()
        .map(|(i, ctx)| {
            let tag = format!("conc:{i}");
            rb.command()
                .args(["build", "--progress", "plain", "-t", &tag])
                .arg(ctx.path())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut slowest = Duration::ZERO;
    let mut while_building = 0;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        let t = Instant::now();
        let out = rb.run(&["images"]);
        slowest = slowest.max(t.elapsed());
        assert!(out.status.success(), "rbuild images during builds: {}", text(&out));
        if children.iter_mut().any(|c| c.try_wait().unwrap().is_none()) {
            while_building += 1;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(while_building > 0, "no rbuild images answered while the builds ran (slowest {slowest:?})");
    for (i, c) in children.into_iter().enumerate() {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success(), "build {i} of 8 failed:\n{}", text(&out));
    }
    eprintln!("the slowest rbuild images during the builds took {slowest:?}");
    assert!(slowest < reads, "rbuild images took {slowest:?} during the builds");
    let images = rb.ok(&["images"]);
    for i in 0..8 {
        let tagged = images.lines().any(|l| l.split_whitespace().take(2).eq(["conc".to_string(), i.to_string()]));
        assert!(tagged, "conc:{i} missing from:\n{images}");
    }
    // And the root is still consistent for the next build: everything cached (no step prints its output).
    let out = build_ok(&rb, contexts[3].path(), &[]);
    assert!(!out.lines().any(|l| l.ends_with(" build-3")), "{out}");
}

/// Processes whose command line holds `marker` as one argument.
fn processes_with(marker: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else { continue };
        if cmd.split(|b| *b == 0).any(|a| a == marker.as_bytes()) {
            out.push(pid);
        }
    }
    out
}

/// Failure 5: `kill -9` of rbuild mid-RUN: no process of the step is left after 2 s, and the step's
/// `sharing=locked` cache mount is free for the next build at once.
#[test]
fn a_killed_build_leaves_no_process_and_no_lock() {
    killed_build(&[]);
}

/// The same with the OCI runtime executor (`--oci-runtime runc`): runc's container dies with the build.
#[test]
fn a_killed_runc_build_leaves_no_process_and_no_lock() {
    if support::which("runc").is_none() {
        support::skip("runc is not installed: run scripts/install-test-deps");
        return;
    }
    killed_build(&["--oci-runtime", "runc"]);
}

fn killed_build(extra: &[&str]) {
    let Some((_reg, rb)) = env() else { return };
    // A number no other test sleeps for, as the step's marker.
    let marker = format!("{}", 7_000_000 + std::process::id() % 1_000_000);
    let ctx = context(&format!(
        "FROM busybox\nRUN --mount=type=cache,id=hostile-locked,target=/c,sharing=locked \
         (sleep {marker} &) ; echo started > /c/state; sleep {marker}\n"
    ));
    let mut child = rb
        .command()
        .args(["build", "--progress", "plain"])
        .args(extra)
        .arg(ctx.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while processes_with(&marker).len() < 2 {
        assert!(t.elapsed() < Duration::from_secs(60), "the step never started");
        assert!(child.try_wait().unwrap().is_none(), "the build ended before its step ran");
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let left = processes_with(&marker);
    assert!(left.is_empty(), "processes of the killed build's step still run: {left:?}");

    // The locked cache mount is free: the next build on the root takes it without waiting.
    let ctx = context(
        "FROM busybox\nRUN --mount=type=cache,id=hostile-locked,target=/c,sharing=locked cat /c/state; echo next-$((6*7))\n",
    );
    let t = Instant::now();
    let out = build_ok(&rb, ctx.path(), extra);
    assert!(out.contains("next-42"), "{out}");
    assert!(t.elapsed() < Duration::from_secs(30), "the next build waited {:?}", t.elapsed());
}

/// Secrets stay out of the image, its history and the build log (a probe that passed before issue 18;
/// kept so it stays so).
#[test]
fn secrets_are_absent_from_layers_history_and_logs() {
    let Some((_reg, rb)) = env() else { return };
    let secret = tempfile::NamedTempFile::new().unwrap();
    let value = format!("s3cr3t-{}", std::process::id());
    std::fs::write(secret.path(), &value).unwrap();
    let ctx = context(
        "FROM busybox\nRUN --mount=type=secret,id=tok test \"$(cat /run/secrets/tok)\" != '' && echo used-$((6*7))\n",
    );
    let out_dir = tempfile::tempdir().unwrap();
    let dest = out_dir.path().join("image.tar");
    let log = build_ok(
        &rb,
        ctx.path(),
        &[
            "--secret",
            &format!("id=tok,src={}", secret.path().display()),
            "-o",
            &format!("type=oci,dest={}", dest.display()),
        ],
    );
    assert!(log.contains("used-42") && !log.contains(&value), "{log}");
    let tar = std::fs::read(&dest).unwrap();
    assert!(!tar.windows(value.len()).any(|w| w == value.as_bytes()), "the secret is in the exported image");
    let found = Command::new("grep").args(["-rl", &value]).arg(rb.root()).output().unwrap();
    assert!(found.stdout.is_empty(), "the secret is in the state root: {}", String::from_utf8_lossy(&found.stdout));
}

/// A context path leading out of the context (a symlink to `/`, `..`) reads nothing of the host (a probe
/// that passed before issue 18).
#[test]
fn context_paths_cannot_leave_the_context() {
    let Some((_reg, rb)) = env() else { return };
    let ctx = context("FROM busybox\nCOPY escape/etc/hostname /h\nRUN cat /h\n");
    std::os::unix::fs::symlink("/", ctx.path().join("escape")).unwrap();
    let out = build(&rb, ctx.path(), &[]);
    assert!(!out.status.success(), "COPY through a symlink to / succeeded:\n{}", text(&out));
    let ctx = context("FROM busybox\nCOPY ../../../../etc/hostname /h\n");
    let out = build(&rb, ctx.path(), &[]);
    assert!(!out.status.success(), "COPY of a path above the context succeeded:\n{}", text(&out));
}

/// The row of `rbuild du` named `kind`: (count, bytes as printed, reclaimable as printed).
fn du_row(rb: &Rbuild, kind: &str) -> (u64, String, String) {
    let du = rb.ok(&["du"]);
    let line = du.lines().find(|l| l.starts_with(kind)).unwrap_or_else(|| panic!("no {kind} row in:\n{du}"));
    let cols: Vec<&str> = line[kind.len()..].split_whitespace().collect();
    (cols[0].parse().unwrap(), cols[1].to_string(), cols[2].to_string())
}

fn ingests(rb: &Rbuild) -> Vec<std::path::PathBuf> {
    let dir = rb.root().join("content").join("ingest");
    std::fs::read_dir(&dir).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default()
}

/// Failure 6: a pull killed mid-download leaves its partial blob (an ingest); `du` counts it and `prune`
/// removes it, but never one that a live pull is still writing.
#[test]
fn prune_frees_the_leftovers_of_a_killed_pull() {
    use registry::{layer, sha256, Blob, Entry, HostileRegistry, Image};
    if !is_root() {
        support::skip("pulls into a state root need root");
        return;
    }
    let big: Vec<u8> = (0..8u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    let tar = layer(&[Entry::File("big", &big)]);
    let mut image = Image::of_layers(std::slice::from_ref(&tar));
    image.blobs.insert(sha256(&tar), Blob::Stall { bytes: tar.clone(), sent: 3 << 20 });
    let reg = HostileRegistry::start(image);
    let rb = Rbuild::with_config(&reg.config_path());
    let mut pull =
        rb.command().args(["pull", &reg.reference()]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let partial = |rb: &Rbuild| {
        ingests(rb).iter().map(|d| std::fs::metadata(d.join("data")).map(|m| m.len()).unwrap_or(0)).sum::<u64>()
    };
    let t = Instant::now();
    // Until the layer's ingest has data and the config's (committed) is gone.
    while partial(&rb) == 0 || ingests(&rb).len() != 1 {
        assert!(t.elapsed() < Duration::from_secs(60), "the pull never wrote its blob");
        assert!(pull.try_wait().unwrap().is_none(), "the pull ended although its blob never completes");
        std::thread::sleep(Duration::from_millis(50));
    }
    // A live pull's ingest stays, and du does not offer it as reclaimable.
    let (count, _, reclaimable) = du_row(&rb, "Partial pulls");
    assert_eq!((count, reclaimable.as_str()), (1, "0B"), "{}", rb.ok(&["du"]));
    let out = rb.ok(&["prune", "-a"]);
    assert!(out.contains("0 partial pulls"), "{out}");
    assert_eq!(ingests(&rb).len(), 1, "prune removed the ingest of a live pull");

    pull.kill().unwrap();
    pull.wait().unwrap();
    let (count, size, reclaimable) = du_row(&rb, "Partial pulls");
    assert_eq!(count, 1);
    assert!(size != "0B" && reclaimable == size, "du after the kill: {}", rb.ok(&["du"]));
    let out = rb.ok(&["prune", "-a"]);
    assert!(out.contains("1 partial pulls"), "{out}");
    assert!(ingests(&rb).is_empty(), "the killed pull's ingest is still there: {:?}", ingests(&rb));
    assert_eq!(du_row(&rb, "Partial pulls").0, 0);
}

/// A blob whose bytes do not match its digest: the pull fails saying so, and nothing of it is stored (a
/// probe that passed before issue 18).
#[test]
fn a_tampered_blob_is_refused_and_nothing_is_stored() {
    use registry::{layer, sha256, Blob, Entry, HostileRegistry, Image};
    if !is_root() {
        support::skip("pulls into a state root need root");
        return;
    }
    let honest = layer(&[Entry::File("f", b"honest")]);
    let evil = layer(&[Entry::File("f", b"tampered")]);
    let mut image = Image::of_layers(std::slice::from_ref(&honest));
    image.blobs.insert(sha256(&honest), Blob::Bytes(evil.clone()));
    let reg = HostileRegistry::start(image);
    let rb = Rbuild::with_config(&reg.config_path());
    let out = rb.run(&["pull", &reg.reference()]);
    let t = text(&out);
    assert!(!out.status.success(), "a tampered blob was accepted:\n{t}");
    assert!(t.contains(&sha256(&honest)) && t.contains("digest"), "the error does not name the digest:\n{t}");
    let blobs = rb.root().join("content/blobs/sha256");
    let stored: Vec<_> =
        std::fs::read_dir(&blobs).map(|d| d.flatten().map(|e| e.file_name()).collect()).unwrap_or_default();
    for d in [sha256(&honest), sha256(&evil)] {
        let hex = d.trim_start_matches("sha256:");
        assert!(!stored.iter().any(|n| n == hex), "{d} was stored");
    }
    // The tampered download is gone (another blob's, interrupted by the failure, may stay for resumption).
    for d in ingests(&rb) {
        let data = std::fs::read(d.join("data")).unwrap_or_default();
        assert!(data.is_empty() || !evil.starts_with(&data), "the tampered download was kept in {}", d.display());
    }
    assert!(!rb.ok(&["images"]).contains("hostile"), "the image was named");
}

/// Builds `FROM <the registry's image>` exported to a directory; the output and the directory.
fn export_image(reg: &registry::HostileRegistry) -> (Output, tempfile::TempDir) {
    let rb = Rbuild::with_config(&reg.config_path());
    let ctx = context(&format!("FROM {}\n", reg.reference()));
    let dest = tempfile::tempdir().unwrap();
    let out = build(&rb, ctx.path(), &["-o", &format!("type=local,dest={}", dest.path().display())]);
    (out, dest)
}

/// Layer entries that lead out of the root (`..`, absolute names, a symlink to a host directory and a
/// file written through it) land inside it; a hardlink to a host file fails the build (probes that passed
/// before issue 18).
#[test]
fn hostile_layer_tars_stay_inside_the_root() {
    use registry::{layer, Entry, HostileRegistry, Image};
    if !is_root() {
        support::skip("unpacking layers needs root");
        return;
    }
    let host = tempfile::tempdir().unwrap();
    let host_dir = host.path().join("dir");
    std::fs::create_dir(&host_dir).unwrap();
    let secret = host.path().join("secret");
    std::fs::write(&secret, "host secret").unwrap();
    let up = format!("../../../../../../../..{}", host.path().display());
    let (dir_abs, dotdot) = (host_dir.display().to_string(), format!("{up}/dotdot"));
    let abs = format!("{}/abs", host.path().display());
    let (via_up, up_dir) = ("up/pwned-up".to_string(), format!("{up}/dir"));
    // The host directory's path exists inside the image too: a write through a symlink to it lands there.
    let inside: Vec<String> = host_dir
        .ancestors()
        .filter_map(|a| a.strip_prefix("/").ok().filter(|a| !a.as_os_str().is_empty()))
        .map(|a| a.display().to_string())
        .collect();
    let mut entries: Vec<Entry<'_>> = inside.iter().rev().map(|d| Entry::Dir(d)).collect();
    entries.extend([
        Entry::Dir("d"),
        Entry::File(&dotdot, b"x"),
        Entry::File(&abs, b"y"),
        Entry::Symlink("esc", &dir_abs),
        Entry::File("esc/pwned", b"p"),
        Entry::Symlink("up", &up_dir),
        Entry::File(&via_up, b"q"),
    ]);
    let image = Image::of_layers(&[layer(&entries)]);
    let reg = HostileRegistry::start(image);
    let (out, dest) = export_image(&reg);
    assert!(out.status.success(), "{}", text(&out));
    let host_names: Vec<_> = std::fs::read_dir(host.path()).unwrap().flatten().map(|e| e.file_name()).collect();
    assert_eq!(host_names.len(), 2, "a layer wrote beside the host's files: {host_names:?}");
    assert_eq!(std::fs::read_dir(&host_dir).unwrap().count(), 0, "a layer wrote into a host directory");
    assert!(dest.path().join("d").is_dir(), "the image's own files are missing");
    let landed = dest.path().join(&inside[0]);
    assert!(
        landed.join("pwned").is_file() && landed.join("pwned-up").is_file(),
        "writes through the links went elsewhere"
    );
    drop(reg);

    for target in [secret.display().to_string(), format!("{up}/secret")] {
        let image = Image::of_layers(&[layer(&[Entry::Hardlink("h", &target)])]);
        let reg = HostileRegistry::start(image);
        let (out, dest) = export_image(&reg);
        let t = text(&out);
        assert!(!out.status.success(), "a hardlink to {target} was unpacked:\n{t}");
        assert!(t.contains("link"), "the error does not say what was refused:\n{t}");
        use std::os::unix::fs::MetadataExt;
        assert_eq!(std::fs::metadata(&secret).unwrap().nlink(), 1, "the host file gained a link");
        assert!(!dest.path().join("h").exists());
    }
}

/// Whiteouts across layers: an opaque directory hides everything below it, a file whiteout removes one
/// file, and no whiteout marker reaches the image (a probe that passed before issue 18).
#[test]
fn whiteouts_across_layers() {
    use registry::{layer, Entry, HostileRegistry, Image};
    if !is_root() {
        support::skip("unpacking layers needs root");
        return;
    }
    let image = Image::of_layers(&[
        layer(&[
            Entry::Dir("d"),
            Entry::File("d/a", b"a"),
            Entry::Dir("d/sub"),
            Entry::File("d/sub/b", b"b"),
            Entry::File("f", b"f"),
            Entry::Dir("keep"),
            Entry::File("keep/x", b"x"),
            Entry::File("keep/y", b"y"),
        ]),
        layer(&[
            Entry::Dir("d"),
            Entry::File("d/.wh..wh..opq", b""),
            Entry::File("d/c", b"c"),
            Entry::File(".wh.f", b""),
            Entry::File("keep/.wh.x", b""),
        ]),
    ]);
    let reg = HostileRegistry::start(image);
    let (out, dest) = export_image(&reg);
    assert!(out.status.success(), "{}", text(&out));
    let names = |p: &str| {
        let mut n: Vec<String> = std::fs::read_dir(dest.path().join(p))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        n.sort();
        n
    };
    assert_eq!(names("d"), ["c"], "the opaque directory kept lower files");
    assert_eq!(names("keep"), ["y"], "the file whiteout did not remove keep/x");
    assert!(!names(".").iter().any(|n| n == "f" || n.starts_with(".wh.")), "{:?}", names("."));
}
