//! A fleet of rbuild daemons sharing one registry cache, without Kubernetes: a registry and three daemons,
//! each in a network namespace of its own, and a client in a fourth, all joined by a bridge in a fifth
//! (every namespace, veth pair and address is made here). 12 builds of 4 projects land one daemon per
//! project (rendezvous hashing over `--host a,b,c`); a project whose daemon is killed continues on another
//! with every step a hit from the fleet cache; a daemon sent SIGTERM mid-build finishes that build,
//! reports not ready, and the next build goes elsewhere at once; /metrics agrees with all of it.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::{seeded_storage, skip, which};

const SUBNET: &str = "10.77.0";
const DAEMONS: usize = 3;

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

/// Namespaces `sw` (a bridge), `reg`, `d0`..`d2` and `cl`, each node on the bridge with 10.77.0.N/24.
struct Net {
    prefix: String,
}

impl Net {
    fn new() -> Net {
        let prefix = format!("rbf{}", std::process::id() % 100_000);
        let net = Net { prefix };
        let sw = net.ns("sw");
        ip(&["netns", "add", &sw]);
        ip(&["-n", &sw, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &sw, "link", "set", "br0", "up"]);
        for (i, node) in net.nodes().iter().enumerate() {
            let ns = net.ns(node);
            ip(&["netns", "add", &ns]);
            let (inner, outer) = (format!("eth{i}"), format!("p{i}"));
            ip(&["-n", &sw, "link", "add", &outer, "type", "veth", "peer", "name", &inner, "netns", &ns]);
            ip(&["-n", &sw, "link", "set", &outer, "master", "br0", "up"]);
            ip(&["-n", &ns, "addr", "add", &format!("{}/24", net.addr(node)), "dev", &inner]);
            ip(&["-n", &ns, "link", "set", &inner, "up"]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
        }
        net
    }

    fn nodes(&self) -> Vec<String> {
        let mut v = vec!["reg".to_string(), "cl".to_string()];
        v.extend((0..DAEMONS).map(|i| format!("d{i}")));
        v
    }

    fn ns(&self, node: &str) -> String {
        format!("{}-{node}", self.prefix)
    }

    fn addr(&self, node: &str) -> String {
        match node {
            "reg" => format!("{SUBNET}.2"),
            "cl" => format!("{SUBNET}.3"),
            d => format!("{SUBNET}.{}", 10 + d.trim_start_matches('d').parse::<u8>().unwrap()),
        }
    }

    /// `argv` run in `node`'s namespace.
    fn command(&self, node: &str, argv0: &Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns(node)]).arg(argv0);
        c
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for node in self.nodes().iter().chain([&"sw".to_string()]) {
            let _ = Command::new("ip").args(["netns", "del", &self.ns(node)]).status();
        }
    }
}

/// A child killed (and reaped) on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// The fleet under test.
struct Fleet {
    net: Net,
    dir: tempfile::TempDir,
    _registry: Proc,
    daemons: Vec<Option<Proc>>,
    curl: PathBuf,
}

impl Fleet {
    fn daemon_addr(&self, i: usize) -> String {
        format!("tcp://{}:1234", self.net.addr(&format!("d{i}")))
    }

    fn host(&self) -> String {
        (0..DAEMONS).map(|i| self.daemon_addr(i)).collect::<Vec<_>>().join(",")
    }

    /// GET `path` of daemon `i`'s health listener, from the client's namespace: status code and body.
    fn get(&self, i: usize, path: &str) -> (u16, String) {
        let url = format!("http://{}:9090{path}", self.net.addr(&format!("d{i}")));
        let out =
            self.net.command("cl", &self.curl).args(["-s", "-m", "2", "-w", "\n%{http_code}", &url]).output().unwrap();
        let t = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = t.rsplit_once('\n').unwrap_or(("", "0"));
        (code.parse().unwrap_or(0), body.to_string())
    }

    fn metric(&self, i: usize, name: &str) -> f64 {
        let (code, body) = self.get(i, "/metrics");
        assert_eq!(code, 200, "d{i} /metrics: {body}");
        daemon::metrics::sample(&body, name).unwrap_or_else(|| panic!("d{i}: no {name} in\n{body}"))
    }

    fn successes(&self) -> Vec<f64> {
        (0..DAEMONS)
            .map(|i| match self.daemons[i] {
                Some(_) => self.metric(i, "rbuild_builds_total{result=\"success\"}"),
                None => -1.0,
            })
            .collect()
    }

    fn client(&self) -> Command {
        let mut c = self.net.command("cl", Path::new(env!("CARGO_BIN_EXE_rbuild")));
        c.env("XDG_STATE_HOME", self.dir.path().join("client-state"));
        c.args(["--host", &self.host()]);
        c
    }

    fn build(&self, ctx: &Path, extra: &[&str]) -> Output {
        let out = self.client().args(["build", "--progress", "plain"]).args(extra).arg(ctx).output().unwrap();
        assert!(out.status.success(), "build of {}: {}", ctx.display(), text(&out));
        out
    }

    /// Builds and returns which daemon ran it (the one whose success count rose by one).
    fn build_where(&self, ctx: &Path, extra: &[&str]) -> (usize, Output) {
        let before = self.successes();
        let out = self.build(ctx, extra);
        let after = self.successes();
        let rose: Vec<usize> = (0..DAEMONS).filter(|i| after[*i] > before[*i]).collect();
        assert_eq!(rose.len(), 1, "one daemon ran the build: {before:?} -> {after:?}\n{}", text(&out));
        assert_eq!(after[rose[0]], before[rose[0]] + 1.0);
        (rose[0], out)
    }
}

fn start_daemon(net: &Net, dir: &Path, config: &Path, i: usize) -> Proc {
    let node = format!("d{i}");
    let log = std::fs::File::create(dir.join(format!("{node}.log"))).unwrap();
    let addr = net.addr(&node);
    let child = net
        .command(&node, Path::new(env!("CARGO_BIN_EXE_rbuild")))
        .arg("--root")
        .arg(dir.join(format!("{node}-root")))
        .arg("--config")
        .arg(config)
        .args(["serve", "--insecure-tcp", "--addr", &format!("tcp://{addr}:1234")])
        .args(["--health-addr", &format!("{addr}:9090")])
        .args(["--cache-backend", &format!("type=registry,ref={}:5000/fleet/cache", net.addr("reg"))])
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    Proc(child)
}

fn setup() -> Option<Fleet> {
    if !rustix::process::geteuid().is_root() {
        skip("the fleet test needs root (network namespaces, overlay mounts)");
        return None;
    }
    let (Some(_), Some(registry), Some(curl)) = (which("ip"), which("docker-registry"), which("curl")) else {
        skip("ip, docker-registry and curl are needed: run scripts/install-test-deps (as root)");
        return None;
    };
    let Some(seed) = seeded_storage() else {
        skip("no seeded base images: run scripts/seed-images");
        return None;
    };
    let net = Net::new();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("registry-data");
    let st = Command::new("cp").arg("-a").arg(&seed).arg(&data).status().unwrap();
    assert!(st.success(), "copying {}", seed.display());
    let reg = net.addr("reg");
    let yaml = format!(
        "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: \
         true\nhttp:\n  addr: {reg}:5000\n  secret: rbuild-test\n",
        data.display()
    );
    std::fs::write(dir.path().join("registry.yml"), yaml).unwrap();
    let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
    let registry = Proc(
        net.command("reg", &registry)
            .arg("serve")
            .arg(dir.path().join("registry.yml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let config = dir.path().join("rbuild.toml");
    std::fs::write(
        &config,
        format!("[registry.\"docker.io\"]\nmirrors = [\"{reg}:5000\"]\n\n[registry.\"{reg}:5000\"]\nhttp = true\n"),
    )
    .unwrap();
    let daemons = (0..DAEMONS).map(|i| Some(start_daemon(&net, dir.path(), &config, i))).collect();
    let fleet = Fleet { net, dir, _registry: registry, daemons, curl };
    let deadline = Instant::now() + Duration::from_secs(30);
    for i in 0..DAEMONS {
        while fleet.get(i, "/readyz").0 != 200 {
            assert!(Instant::now() < deadline, "d{i} not ready: {}", log_of(&fleet, i));
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Some(fleet)
}

fn log_of(f: &Fleet, i: usize) -> String {
    std::fs::read_to_string(f.dir.path().join(format!("d{i}.log"))).unwrap_or_default()
}

/// A project: a context with its own file, a Dockerfile that copies it and runs a step on it.
fn project(dir: &Path, n: usize) -> PathBuf {
    let ctx = dir.join(format!("project-{n}"));
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("data.txt"), format!("project {n}\n")).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox\nCOPY data.txt /data.txt\nRUN wc -c /data.txt > /size\nARG SLEEP=0\nRUN sleep $SLEEP && cat \
         /data.txt /size > /out\n",
    )
    .unwrap();
    ctx
}

#[test]
fn a_fleet_routes_projects_shares_its_cache_and_drains() {
    let Some(mut fleet) = setup() else { return };
    let projects: Vec<PathBuf> = (0..4).map(|n| project(fleet.dir.path(), n)).collect();

    // 12 builds of 4 projects: each project's builds land on one daemon.
    let mut home: BTreeMap<usize, usize> = BTreeMap::new();
    for round in 0..3 {
        for (p, ctx) in projects.iter().enumerate() {
            let (d, out) = fleet.build_where(ctx, &[]);
            assert_eq!(*home.entry(p).or_insert(d), d, "project {p} moved in round {round}: {}", text(&out));
        }
    }
    // Metrics agree: 12 successes in all; the first build of each project ran its two RUN steps, and
    // every later build ran nothing.
    let total: f64 = fleet.successes().iter().sum();
    assert_eq!(total, 12.0);
    let executed: f64 = (0..DAEMONS).map(|i| fleet.metric(i, "rbuild_steps_total{status=\"executed\"}")).sum();
    let exports: f64 = (0..DAEMONS).map(|i| fleet.metric(i, "rbuild_cache_exports_total")).sum();
    assert_eq!(exports, 12.0, "every build exported to the fleet cache");
    // COPY and two RUNs per project (the base image's pull may count as one more).
    assert!((12.0..=16.0).contains(&executed), "executed {executed}");
    for i in 0..DAEMONS {
        let builds = home.values().filter(|d| **d == i).count() as f64 * 3.0;
        assert_eq!(fleet.metric(i, "rbuild_builds_total{result=\"success\"}"), builds, "d{i}");
        let ctx_bytes = fleet.metric(i, "rbuild_context_bytes_total");
        assert_eq!(ctx_bytes > 0.0, builds > 0.0, "d{i} context bytes {ctx_bytes}");
    }

    // Kill project 0's daemon: its next build runs elsewhere, every step a hit from the fleet cache.
    let gone = home[&0];
    fleet.daemons[gone] = None;
    let executed_now: Vec<f64> = (0..DAEMONS)
        .map(|i| if i == gone { 0.0 } else { fleet.metric(i, "rbuild_steps_total{status=\"executed\"}") })
        .collect();
    let (d, out) = fleet.build_where(&projects[0], &[]);
    assert_ne!(d, gone);
    assert!(text(&out).contains(&format!("fleet: skipping {}", fleet.daemon_addr(gone))), "{}", text(&out));
    let executed_after = fleet.metric(d, "rbuild_steps_total{status=\"executed\"}");
    assert_eq!(executed_after, executed_now[d], "d{d} ran steps of project 0:\n{}", text(&out));
    let imported = fleet.metric(d, "rbuild_steps_total{status=\"cached\",source=\"import\"}");
    assert!(imported >= 1.0, "steps from the fleet cache on d{d}: {imported}\n{}", text(&out));
    // It stays there while the fleet is stable.
    let (again, _) = fleet.build_where(&projects[0], &[]);
    assert_eq!(again, d);

    // SIGTERM mid-build: a project on a live daemon starts a 4 s step; the daemon drains.
    // (Homes follow the hash of the projects' temporary paths: all four may share the killed daemon, and
    // then project 0, rebuilt on `d` above, is the one.)
    let (p, busy) = match (0..4).find(|p| home[p] != gone) {
        Some(p) => (p, home[&p]),
        None => (0, d),
    };
    let mut long = Proc(
        fleet
            .client()
            .args(["build", "--progress", "plain", "--build-arg", "SLEEP=4"])
            .arg(&projects[p])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while fleet.metric(busy, "rbuild_builds_running") < 1.0 {
        assert!(Instant::now() < deadline, "the long build did not start on d{busy}");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    let pid = fleet.daemons[busy].as_ref().unwrap().0.id();
    let term = Instant::now();
    rustix::process::kill_process(rustix::process::Pid::from_raw(pid as i32).unwrap(), rustix::process::Signal::TERM)
        .unwrap();
    // Not ready at once, while the build runs.
    let (code, body) = fleet.get(busy, "/readyz");
    assert_eq!((code, body.trim()), (503, "draining"));
    assert_eq!(fleet.metric(busy, "rbuild_draining"), 1.0);
    assert_eq!(fleet.metric(busy, "rbuild_builds_running"), 1.0);
    // Asked alone (no health check to pass it over), it refuses a new build, saying why.
    let alone = fleet
        .net
        .command("cl", Path::new(env!("CARGO_BIN_EXE_rbuild")))
        .env("XDG_STATE_HOME", fleet.dir.path().join("client-state"))
        .args(["--host", &fleet.daemon_addr(busy), "build", "--progress", "plain"])
        .arg(&projects[p])
        .output()
        .unwrap();
    assert!(!alone.status.success() && text(&alone).contains("draining"), "{}", text(&alone));
    // The project's next build goes elsewhere, and starts within 2 s of the signal.
    let others: Vec<usize> = (0..DAEMONS).filter(|i| *i != busy && fleet.daemons[*i].is_some()).collect();
    let done_before: Vec<f64> =
        others.iter().map(|i| fleet.metric(*i, "rbuild_builds_total{result=\"success\"}")).collect();
    let mut next = Proc(
        fleet.client().args(["build", "--progress", "plain"]).arg(&projects[p]).stderr(Stdio::piped()).spawn().unwrap(),
    );
    'wait: loop {
        for (k, i) in others.iter().enumerate() {
            let running = fleet.metric(*i, "rbuild_builds_running");
            if running >= 1.0 || fleet.metric(*i, "rbuild_builds_total{result=\"success\"}") > done_before[k] {
                break 'wait;
            }
        }
        assert!(term.elapsed() < Duration::from_secs(2), "the next build did not start elsewhere within 2 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    let next_out = std::mem::replace(&mut next.0, Command::new("true").spawn().unwrap()).wait_with_output().unwrap();
    assert!(next_out.status.success(), "{}", text(&next_out));
    let skipped = format!("fleet: skipping {}: not ready", fleet.daemon_addr(busy));
    assert!(text(&next_out).contains(&skipped), "{}", text(&next_out));
    // The drained build finished, and the daemon exited by itself.
    let out = std::mem::replace(&mut long.0, Command::new("true").spawn().unwrap()).wait_with_output().unwrap();
    assert!(out.status.success(), "the build of the draining daemon: {}", text(&out));
    let mut d = fleet.daemons[busy].take().unwrap();
    let status = d.0.wait().unwrap();
    assert!(status.success(), "d{busy} after its drain: {status}: {}", log_of(&fleet, busy));
    assert!(log_of(&fleet, busy).contains("rbuild daemon stopped"));

    // rbuild fleet status: one daemon down, the rest ready.
    let st = fleet.client().args(["fleet", "status"]).output().unwrap();
    let t = text(&st);
    assert!(st.status.success(), "{t}");
    assert_eq!(t.matches(" ready ").count(), DAEMONS - 2, "{t}");
    assert_eq!(t.matches(" down ").count(), 2, "{t}");
}
