//! `rbuild serve --docker-api`: the Docker Engine API's image endpoints, driven by real clients. The docker
//! CLI (`DOCKER_HOST`, `DOCKER_BUILDKIT=0`: the classic build protocol) builds, lists, tags, pushes, saves
//! and removes, and what it pushes equals what `rbuild build` makes; docker-py builds, lists, gets, pushes
//! and raises `BuildError` with the Dockerfile's line; the same CLI over TCP with mutual TLS from another
//! network namespace (ip netns + veth); malformed requests get clear 4xx answers and the daemon keeps
//! serving. Every test points its clients at its own daemon (never at a dockerd on the machine).

mod support;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::{skip, which, Rbuild, TestRegistry};

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false)
}

fn out_text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// The docker CLI: Debian's (`docker.io`, /usr/bin/docker) where installed, else the one on `$PATH`.
fn docker_cli() -> Option<PathBuf> {
    let debian = PathBuf::from("/usr/bin/docker");
    if debian.is_file() {
        return Some(debian);
    }
    which("docker")
}

/// `rbuild serve` (killed on drop), optionally inside a network namespace.
struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn start(netns: Option<&str>, root: &Path, config: &Path, args: &[String], log: PathBuf) -> Daemon {
        let mut c = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(env!("CARGO_BIN_EXE_rbuild"));
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_rbuild")),
        };
        c.env("DOCKER_CONFIG", root.with_extension("docker-config"));
        c.arg("--root").arg(root).arg("--config").arg(config).arg("serve").args(args);
        let f = std::fs::File::create(&log).unwrap();
        let child = c.stdin(Stdio::null()).stdout(f.try_clone().unwrap()).stderr(f).spawn().unwrap();
        let mut d = Daemon { child, log };
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

/// A daemon serving its gRPC API and the Docker API on unix sockets of a temp dir, with its registry.
struct Local {
    reg: TestRegistry,
    tmp: tempfile::TempDir,
    daemon: Daemon,
    docker_sock: PathBuf,
    /// `--health-addr`: /readyz and /metrics.
    health: String,
}

impl Local {
    fn new() -> Option<Local> {
        Local::with_config("")
    }

    /// With `extra` appended to the registry's rbuild config (more registries).
    fn with_config(extra: &str) -> Option<Local> {
        if !is_root() {
            skip("Docker API tests need root (the daemon mounts overlays and makes namespaces)");
            return None;
        }
        let reg = TestRegistry::seeded()?;
        let tmp = tempfile::tempdir().unwrap();
        let docker_sock = tmp.path().join("docker.sock");
        let health =
            format!("127.0.0.1:{}", std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port());
        let args = vec![
            "--addr".to_string(),
            format!("unix://{}", tmp.path().join("rbuild.sock").display()),
            "--docker-api".to_string(),
            format!("unix://{}", docker_sock.display()),
            "--health-addr".to_string(),
            health.clone(),
        ];
        let config = tmp.path().join("rbuild.toml");
        std::fs::write(&config, std::fs::read_to_string(reg.config_path()).unwrap() + "\n" + extra).unwrap();
        let daemon = Daemon::start(None, &tmp.path().join("root"), &config, &args, tmp.path().join("daemon.log"));
        Some(Local { reg, tmp, daemon, docker_sock, health })
    }

    /// The docker CLI pointed at this daemon, with a config dir of its own (no logins, no contexts).
    fn docker(&self, cli: &Path) -> Command {
        let mut c = Command::new(cli);
        c.env("DOCKER_HOST", format!("unix://{}", self.docker_sock.display()))
            .env("DOCKER_BUILDKIT", "0")
            .env("DOCKER_CONFIG", self.tmp.path().join("docker-config"))
            .env_remove("DOCKER_CONTEXT")
            .env_remove("DOCKER_TLS_VERIFY")
            .env_remove("DOCKER_CERT_PATH")
            .env_remove("DOCKER_API_VERSION");
        c
    }
}

const APP: &str = "FROM busybox\n\
    ARG V\n\
    COPY . /ctx/\n\
    RUN echo \"v=$V\" > /v && cat /ctx/a.txt\n\
    LABEL purpose=docker-api\n";

/// A context with the Dockerfile in `sub/` and a .dockerignore.
fn app_context(dir: &Path) -> PathBuf {
    let ctx = dir.join("ctx");
    std::fs::create_dir_all(ctx.join("sub")).unwrap();
    std::fs::write(ctx.join("sub/Dockerfile"), APP).unwrap();
    std::fs::write(ctx.join("a.txt"), "hello from the docker api\n").unwrap();
    std::fs::write(ctx.join("ignored.txt"), "never sent\n").unwrap();
    std::fs::write(ctx.join(".dockerignore"), "ignored.txt\n").unwrap();
    ctx
}

fn ok(c: &mut Command, what: &str) -> String {
    let out = c.output().unwrap();
    assert!(out.status.success(), "{what} failed ({}):\n{}", out.status, out_text(&out));
    out_text(&out)
}

fn skopeo(args: &[&str]) -> Vec<u8> {
    let out = Command::new("skopeo").args(args).output().unwrap();
    assert!(out.status.success(), "skopeo {args:?}: {}", out_text(&out));
    out.stdout
}

/// The digest a push printed (`TAG: digest: sha256:... size: N`).
fn pushed_digest(text: &str) -> String {
    let i = text.find("digest: sha256:").unwrap_or_else(|| panic!("no digest in:\n{text}"));
    text[i + "digest: ".len()..].split_whitespace().next().unwrap().to_string()
}

#[test]
fn the_docker_cli_builds_tags_pushes_pulls_saves_loads_and_removes_images_as_rbuild_build_makes_them() {
    let Some(cli) = docker_cli() else {
        skip("the docker CLI is not installed: run scripts/install-test-deps (docker.io)");
        return;
    };
    if which("skopeo").is_none() || which("umoci").is_none() {
        skip("skopeo and umoci are not installed: run scripts/install-test-deps");
        return;
    }
    let Some(l) = Local::new() else { return };
    let ctx = app_context(l.tmp.path());
    let reg = l.reg.host();
    let app = format!("{reg}/app");
    let iid = l.tmp.path().join("docker.iid");
    let build = ok(
        l.docker(&cli)
            .current_dir(&ctx)
            .args(["build", "-t", &app, "--build-arg", "V=1", "--build-arg", "SOURCE_DATE_EPOCH=1700000000"])
            .arg("--iidfile")
            .arg(&iid)
            .args(["-f", "sub/Dockerfile", "."]),
        "docker build",
    );
    assert!(build.contains("hello from the docker api"), "the RUN output is not shown:\n{build}");
    assert!(build.contains("Successfully built "), "{build}");
    assert!(build.contains(&format!("Successfully tagged {app}:latest")), "{build}");
    let id = std::fs::read_to_string(&iid).unwrap().trim().to_string();
    assert!(id.starts_with("sha256:") && id.len() == 71, "{id}");

    let images = ok(l.docker(&cli).args(["images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}"]), "docker images");
    assert!(images.contains(&format!("{app}:latest {}", &id[7..19])), "{images}");
    let inspect = ok(l.docker(&cli).args(["image", "inspect", &app]), "docker image inspect");
    let inspect: serde_json::Value = serde_json::from_str(inspect.trim()).unwrap();
    assert_eq!(inspect[0]["Id"], id.as_str());
    assert_eq!(inspect[0]["Config"]["Labels"]["purpose"], "docker-api");

    ok(l.docker(&cli).args(["tag", &app, &format!("{app}:v2")]), "docker tag");
    let images = ok(l.docker(&cli).args(["images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}"]), "docker images");
    assert!(images.contains(&format!("{app}:v2 {}", &id[7..19])), "{images}");
    let history = ok(l.docker(&cli).args(["history", "--no-trunc", &format!("{app}:v2")]), "docker history");
    assert!(history.contains("echo \"v=$V\""), "{history}");

    let pushed = ok(l.docker(&cli).args(["push", &format!("{app}:v2")]), "docker push");
    let docker_digest = pushed_digest(&pushed);
    // What the registry holds, seen by skopeo: the manifest the push named, the config of the image ID,
    // the RUN's file in its top layer.
    let remote = format!("docker://{app}:v2");
    let seen: serde_json::Value = serde_json::from_slice(&skopeo(&["inspect", "--tls-verify=false", &remote])).unwrap();
    assert_eq!(seen["Digest"], docker_digest.as_str(), "{seen}");
    assert_eq!(seen["Labels"]["purpose"], "docker-api", "{seen}");
    let config = skopeo(&["inspect", "--tls-verify=false", "--config", "--raw", &remote]);
    assert_eq!(format!("sha256:{}", llb::Digest::of(&config).hex()), id, "the registry's config is not the image ID's");
    let oci = l.tmp.path().join("pulled-oci");
    skopeo(&["copy", "--src-tls-verify=false", &remote, &format!("oci:{}:v2", oci.display())]);
    let unpacked = l.tmp.path().join("unpacked");
    let st = Command::new("umoci")
        .args(["raw", "unpack", "--rootless", "--image"])
        .arg(format!("{}:v2", oci.display()))
        .arg(&unpacked)
        .status()
        .unwrap();
    assert!(st.success(), "umoci unpack");
    assert_eq!(std::fs::read_to_string(unpacked.join("v")).unwrap(), "v=1\n");
    assert_eq!(std::fs::read_to_string(unpacked.join("ctx/a.txt")).unwrap(), "hello from the docker api\n");
    assert!(!unpacked.join("ctx/ignored.txt").exists(), ".dockerignore was not applied");

    let save = format!(
        "DOCKER_HOST=unix://{} DOCKER_CONFIG={} {} save {app}:v2 | tar t",
        l.docker_sock.display(),
        l.tmp.path().join("docker-config").display(),
        cli.display()
    );
    let listing = ok(Command::new("sh").args(["-c", &save]), "docker save | tar t");
    assert!(listing.lines().any(|e| e == "manifest.json"), "{listing}");
    assert!(listing.lines().any(|e| e.starts_with(&format!("blobs/sha256/{}", &id[7..]))), "{listing}");

    let rmi = ok(l.docker(&cli).args(["rmi", &format!("{app}:v2"), &app]), "docker rmi");
    assert!(rmi.contains(&format!("Untagged: {app}:v2")) && rmi.contains(&format!("Deleted: {id}")), "{rmi}");
    let images = ok(l.docker(&cli).args(["images", "-q"]), "docker images -q");
    assert!(!images.contains(&id[7..19]), "{images}");
    let missing = l.docker(&cli).args(["image", "inspect", &app]).output().unwrap();
    assert!(!missing.status.success() && out_text(&missing).contains("No such image"), "{}", out_text(&missing));

    // Back from the registry (POST /images/create), and from an archive `docker save` wrote (POST /images/load).
    let pulled = ok(l.docker(&cli).args(["pull", &format!("{app}:v2")]), "docker pull");
    assert!(pulled.contains(&format!("Digest: {docker_digest}")), "{pulled}");
    let inspect = ok(l.docker(&cli).args(["image", "inspect", "--format", "{{.Id}}", &format!("{app}:v2")]), "inspect");
    assert_eq!(inspect.trim(), id, "the pulled image has another ID");
    let archive = l.tmp.path().join("app.tar");
    ok(l.docker(&cli).args(["save", "-o"]).arg(&archive).arg(format!("{app}:v2")), "docker save -o");
    ok(l.docker(&cli).args(["rmi", &format!("{app}:v2")]), "docker rmi (pulled)");
    let loaded = ok(l.docker(&cli).args(["load", "-i"]).arg(&archive), "docker load");
    assert!(loaded.contains(&format!("Loaded image: {app}:v2")), "{loaded}");
    let inspect = ok(l.docker(&cli).args(["image", "inspect", "--format", "{{.Id}}", &format!("{app}:v2")]), "inspect");
    assert_eq!(inspect.trim(), id, "the loaded image has another ID");
    let version =
        ok(l.docker(&cli).args(["version", "--format", "{{.Server.Version}} {{.Server.APIVersion}}"]), "version");
    assert_eq!(version.trim(), format!("{} 1.41", env!("CARGO_PKG_VERSION")));
    let df = ok(l.docker(&cli).args(["system", "df"]), "docker system df");
    assert!(df.contains("Images") && df.contains("Build Cache"), "{df}");

    // Containers are not rbuild's business, and it says so.
    let run = l.docker(&cli).args(["run", "--rm", "busybox", "true"]).output().unwrap();
    assert!(!run.status.success());
    assert!(out_text(&run).contains("does not run containers"), "{}", out_text(&run));

    // `rbuild build` on another state root, from the same directory, makes the same image and pushes the
    // same manifest.
    let rb = Rbuild::new(&l.reg);
    let cli_iid = l.tmp.path().join("rbuild.iid");
    let same = format!("{reg}/app-by-rbuild:v2");
    rb.ok(&[
        "build",
        "--progress",
        "quiet",
        "-t",
        &same,
        "--build-arg",
        "V=1",
        "--build-arg",
        "SOURCE_DATE_EPOCH=1700000000",
        "--iidfile",
        cli_iid.to_str().unwrap(),
        "-f",
        ctx.join("sub/Dockerfile").to_str().unwrap(),
        ctx.to_str().unwrap(),
    ]);
    assert_eq!(std::fs::read_to_string(&cli_iid).unwrap().trim(), id, "rbuild build made another image");
    let out = rb.command().args(["push", &same]).output().unwrap();
    assert!(out.status.success(), "{}", out_text(&out));
    assert_eq!(pushed_digest(&out_text(&out)), docker_digest, "the two pushes sent different manifests");
    assert!(l.daemon.log().contains("Docker API"), "{}", l.daemon.log());

    // A rebuild says why its steps ran, as `rbuild build` does.
    std::fs::write(ctx.join("a.txt"), "changed\n").unwrap();
    let rebuild = ok(
        l.docker(&cli).current_dir(&ctx).args(["build", "-t", &app, "--build-arg", "V=1"]).args([
            "--build-arg",
            "SOURCE_DATE_EPOCH=1700000000",
            "-f",
            "sub/Dockerfile",
            ".",
        ]),
        "docker build (again)",
    );
    assert!(rebuild.contains("MISS [") && rebuild.contains("a.txt changed"), "{rebuild}");
}

#[test]
fn docker_py_builds_lists_gets_pushes_and_raises_build_errors_with_the_line() {
    let Some(python) = docker_py() else { return };
    let Some(l) = Local::new() else { return };
    let ctx = app_context(l.tmp.path());
    let broken = l.tmp.path().join("broken");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(broken.join("Dockerfile"), "FROM busybox\nRUN true\nRUNN echo hi\n").unwrap();
    let script = r#"
import json, os, sys
import docker
c = docker.DockerClient(base_url=os.environ["RBUILD_DOCKER_HOST"], version="auto")
out = {"api": c.api._version}
img, logs = c.images.build(path=sys.argv[1], dockerfile="sub/Dockerfile", tag="pyapp:1",
                           buildargs={"V": "7"}, rm=True)
out["id"] = img.id
out["tags"] = img.tags
out["labels"] = img.labels
out["log"] = "".join(l.get("stream", "") for l in logs)
out["list"] = sorted(t for i in c.images.list() for t in i.tags)
out["get"] = c.images.get("pyapp:1").id
untagged, _ = c.images.build(path=sys.argv[1], dockerfile="sub/Dockerfile", buildargs={"V": "8"})
out["untagged"] = [untagged.id, untagged.tags, c.images.get(untagged.short_id).id]
out["dangling"] = [i.id for i in c.images.list(filters={"dangling": True})]
out["labelled"] = sorted(i.id for i in c.images.list(filters={"label": "purpose=docker-api"}))
out["named"] = [i.id for i in c.images.list(name="pyapp")]
out["pruned"] = [d.get("Deleted") for d in c.images.prune(filters={"dangling": True})["ImagesDeleted"] or []]
out["after_prune"] = [i.id for i in c.images.list(filters={"dangling": True})]
target = sys.argv[3] + "/py/app"
assert img.tag(target, tag="1")
out["push"] = [json.loads(l) if isinstance(l, str) else l
               for l in c.images.push(target, tag="1", stream=True, decode=True)]
try:
    c.images.build(path=sys.argv[2])
    out["build_error"] = None
except docker.errors.BuildError as e:
    out["build_error"] = e.msg
print(json.dumps(out))
"#;
    let out = Command::new(&python)
        .arg("-c")
        .arg(script)
        .arg(&ctx)
        .arg(&broken)
        .arg(l.reg.host())
        .env("RBUILD_DOCKER_HOST", format!("unix://{}", l.docker_sock.display()))
        .env("DOCKER_CONFIG", l.tmp.path().join("docker-config"))
        .env_remove("DOCKER_HOST")
        .output()
        .unwrap();
    assert!(out.status.success(), "the docker-py script failed:\n{}\ndaemon:\n{}", out_text(&out), l.daemon.log());
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["api"], "1.41");
    let id = r["id"].as_str().unwrap();
    assert!(id.starts_with("sha256:"), "{r}");
    assert_eq!(r["tags"], serde_json::json!(["pyapp:1"]));
    assert_eq!(r["labels"]["purpose"], "docker-api");
    assert!(r["log"].as_str().unwrap().contains("Successfully built"), "{r}");
    assert!(r["list"].as_array().unwrap().iter().any(|t| t == "pyapp:1"), "{r}");
    assert_eq!(r["get"], id);
    // A build without a tag is kept as an untagged image, found by its short ID.
    let u = &r["untagged"];
    assert_ne!(u[0], id);
    assert_eq!(u[1], serde_json::json!([]));
    assert_eq!(u[2], u[0]);
    // Filters as dockerd's: dangling finds the untagged one, label both, a reference the named one; a prune
    // of dangling images removes the untagged one only.
    assert_eq!(r["dangling"], serde_json::json!([u[0]]), "{r}");
    let mut both = vec![id.to_string(), u[0].as_str().unwrap().to_string()];
    both.sort();
    assert_eq!(r["labelled"], serde_json::json!(both), "{r}");
    assert_eq!(r["named"], serde_json::json!([id]), "{r}");
    assert_eq!(r["pruned"], serde_json::json!([u[0]]), "{r}");
    assert_eq!(r["after_prune"], serde_json::json!([]), "{r}");
    let push = r["push"].as_array().unwrap();
    assert!(push.iter().all(|m| m.get("error").is_none()), "{push:?}");
    assert!(push.iter().any(|m| m["aux"]["Digest"].as_str().is_some_and(|d| d.starts_with("sha256:"))), "{push:?}");
    let e = r["build_error"].as_str().unwrap_or_else(|| panic!("a broken Dockerfile built: {r}"));
    assert!(e.contains("Dockerfile:3") && e.contains("RUNN"), "{e}");
}

/// A python with docker-py: scripts/install-test-deps puts it in a venv of its own.
fn docker_py() -> Option<PathBuf> {
    let venv = PathBuf::from("/opt/rbuild-docker-py/bin/python");
    let Some(python) = venv.is_file().then_some(venv).or_else(|| which("python3")) else {
        skip("python3 is not installed");
        return None;
    };
    let has_docker_py = Command::new(&python).args(["-c", "import docker"]).output().is_ok_and(|o| o.status.success());
    if !has_docker_py {
        skip("docker-py is not installed: run scripts/install-test-deps (pip install docker)");
        return None;
    }
    Some(python)
}

/// One request over the daemon's unix socket; the whole answer (the connection is closed after it).
fn raw(sock: &Path, head: &str, body: &[u8], half_close: bool) -> (u16, String) {
    let mut s = UnixStream::connect(sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    // The daemon may answer (and stop reading) before a bad body is all sent.
    let _ = s.write_all(body);
    if half_close {
        s.shutdown(std::net::Shutdown::Write).unwrap();
    }
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, text)
}

fn post_build(sock: &Path, query: &str, body: &[u8]) -> (u16, String) {
    let head = format!(
        "POST /v1.41/build{query} HTTP/1.1\r\nHost: rbuild\r\nContent-Type: application/x-tar\r\nContent-Length: \
         {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    raw(sock, &head, body, false)
}

/// A tar of `(path, data)` files, written raw so that hostile names survive.
fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data) in files {
        let mut h = tar::Header::new_gnu();
        h.as_gnu_mut().unwrap().name[..path.len()].copy_from_slice(path.as_bytes());
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        b.append(&h, *data).unwrap();
    }
    b.into_inner().unwrap()
}

#[test]
fn malformed_requests_get_clear_4xx_answers_and_the_daemon_keeps_serving() {
    let Some(l) = Local::new() else { return };
    let sock = &l.docker_sock;
    let dockerfile: &[u8] = b"FROM busybox\nRUN echo built-after-abuse\n";

    let (st, text) = post_build(sock, "", &[b'x'; 4096]);
    assert_eq!(st, 400, "{text}");
    assert!(text.contains("not a tar archive"), "{text}");

    let (st, text) = post_build(sock, "", &tar_of(&[("Dockerfile", dockerfile), ("../escape", b"x")]));
    assert_eq!(st, 400, "{text}");
    assert!(text.contains("../escape") && text.contains("parent directory"), "{text}");
    assert!(!l.tmp.path().join("root/tmp/escape").exists());

    for (query, named) in [
        ("?networkmode=bogus", "networkmode"),
        ("?nocache=maybe", "nocache"),
        ("?buildargs=%7Bnot-json", "buildargs"),
        ("?platform=windows%2Fsparc64%2Fx", "platform"),
        ("?t=Bad%20Tag", "Bad Tag"),
        ("?dockerfile=..%2F..%2Fetc%2Fpasswd", "outside the build context"),
        ("?memory=1073741824", "memory"),
    ] {
        let (st, text) = post_build(sock, query, &tar_of(&[("Dockerfile", dockerfile)]));
        assert_eq!(st, 400, "{query}: {text}");
        assert!(text.contains(named), "{query}: {text}");
    }
    let (st, text) = post_build(sock, "?dockerfile=missing%2FDockerfile", &tar_of(&[("Dockerfile", dockerfile)]));
    assert_eq!(st, 400, "{text}");
    assert!(text.contains("Cannot locate specified Dockerfile: missing/Dockerfile"), "{text}");

    // A 2 GB body that stops after 1 MB: the client shuts its side, the daemon says what happened.
    let mut start = tar::Header::new_gnu();
    start.set_path("big.bin").unwrap();
    start.set_size(3 << 30);
    start.set_mode(0o644);
    start.set_cksum();
    let mut body = start.as_bytes().to_vec();
    body.extend(vec![0u8; 1 << 20]);
    let head = "POST /v1.41/build HTTP/1.1\r\nHost: rbuild\r\nContent-Type: application/x-tar\r\nContent-Length: \
                2147483648\r\n\r\n";
    let (st, text) = raw(sock, head, &body, true);
    assert_eq!(st, 400, "{text}");
    assert!(text.contains("ended after") && text.contains("2147483648"), "{text}");

    let (st, text) =
        raw(sock, "GET /v1.99/images/json HTTP/1.1\r\nHost: rbuild\r\nConnection: close\r\n\r\n", b"", false);
    assert_eq!(st, 400, "{text}");
    assert!(text.contains("too new"), "{text}");
    for path in ["/v1.41/containers/json", "/containers/create", "/v1.41/volumes", "/v1.41/exec/x/start"] {
        let (st, text) =
            raw(sock, &format!("GET {path} HTTP/1.1\r\nHost: rbuild\r\nConnection: close\r\n\r\n"), b"", false);
        assert_eq!(st, 501, "{path}: {text}");
        assert!(text.contains("\"message\"") && text.contains("does not run containers"), "{path}: {text}");
    }
    let (st, text) = raw(
        sock,
        "GET /v1.41/images/nothing:here/json HTTP/1.1\r\nHost: rbuild\r\nConnection: close\r\n\r\n",
        b"",
        false,
    );
    assert_eq!(st, 404, "{text}");
    assert!(text.contains("No such image: nothing:here"), "{text}");

    // Nothing of the refused contexts is left, and the daemon still builds.
    let (st, text) = post_build(sock, "?t=after%3A1", &tar_of(&[("Dockerfile", dockerfile)]));
    assert_eq!(st, 200, "{text}");
    assert!(text.contains("built-after-abuse") && text.contains("Successfully tagged after:1"), "{text}");
    let (st, text) = raw(sock, "HEAD /_ping HTTP/1.1\r\nHost: rbuild\r\nConnection: close\r\n\r\n", b"", false);
    assert_eq!(st, 200, "{text}");
    assert!(text.to_ascii_lowercase().contains("api-version: 1.41"), "{text}");
    let leftovers: Vec<_> =
        walk(&l.tmp.path().join("root/tmp")).into_iter().filter(|p| p.contains("docker-context-")).collect();
    assert!(leftovers.is_empty(), "contexts left behind: {leftovers:?}");

    // Builds through the Docker API count in the daemon's metrics like its own (the refused requests never
    // started one).
    let metrics =
        Command::new("curl").args(["-s", "-m", "10"]).arg(format!("http://{}/metrics", l.health)).output().unwrap();
    let metrics = String::from_utf8_lossy(&metrics.stdout);
    assert!(metrics.contains("rbuild_builds_total{result=\"success\"} 1\n"), "{metrics}");
    assert!(metrics.contains("rbuild_builds_running 0\n"), "{metrics}");
}

fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            out.push(e.path().display().to_string());
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                out.extend(walk(&e.path()));
            }
        }
    }
    out
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
        let pair = NetPair { daemon: d.clone(), client: c.clone(), daemon_ip: format!("10.232.{subnet}.1") };
        let ip = |args: &[&str]| {
            let st = Command::new("ip").args(args).status().unwrap();
            assert!(st.success(), "ip {}", args.join(" "));
        };
        ip(&["netns", "add", &d]);
        ip(&["netns", "add", &c]);
        ip(&["link", "add", &vd, "type", "veth", "peer", "name", &vc]);
        ip(&["link", "set", &vd, "netns", &d]);
        ip(&["link", "set", &vc, "netns", &c]);
        ip(&["-n", &d, "addr", "add", &format!("10.232.{subnet}.1/24"), "dev", &vd]);
        ip(&["-n", &c, "addr", "add", &format!("10.232.{subnet}.2/24"), "dev", &vc]);
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

/// A CA and the certificates it signs (openssl), laid out as docker's `DOCKER_CERT_PATH` wants them.
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
        let csr = format!("{name}.csr");
        self.openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            &format!("/CN={name}"),
        ]);
        let ext = match ip {
            Some(ip) => format!("subjectAltName=IP:{ip}\nextendedKeyUsage=serverAuth\n"),
            None => "extendedKeyUsage=clientAuth\n".to_string(),
        };
        std::fs::write(self.dir.join(format!("{name}.ext")), ext).unwrap();
        let cert = format!("{name}.pem");
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca-key.pem",
            "-CAcreateserial",
            "-out",
            &cert,
            "-days",
            "2",
            "-extfile",
            &format!("{name}.ext"),
        ]);
        (self.dir.join(cert), self.dir.join(key))
    }

    /// A `DOCKER_CERT_PATH` directory: `ca.pem`, `cert.pem`, `key.pem`.
    fn cert_path(&self, name: &str, cert: &Path, key: &Path, ca: &Path) -> PathBuf {
        let d = self.dir.join(format!("docker-{name}"));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::copy(ca, d.join("ca.pem")).unwrap();
        std::fs::copy(cert, d.join("cert.pem")).unwrap();
        std::fs::copy(key, d.join("key.pem")).unwrap();
        d
    }

    fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
}

#[test]
fn the_docker_cli_and_docker_py_build_and_push_over_mutual_tls_from_another_network_namespace() {
    let Some(cli) = docker_cli() else {
        skip("the docker CLI is not installed: run scripts/install-test-deps (docker.io)");
        return;
    };
    if !is_root() || which("ip").is_none() || which("openssl").is_none() || which("curl").is_none() {
        skip("the TLS test needs root, ip (iproute2), openssl and curl");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    // A TCP Docker API without TLS is refused before anything is opened.
    let out = Command::new(env!("CARGO_BIN_EXE_rbuild"))
        .arg("--root")
        .arg(tmp.path().join("unused-root"))
        .args(["serve", "--addr"])
        .arg(format!("unix://{}", tmp.path().join("unused.sock").display()))
        .args(["--docker-api", "tcp://127.0.0.1:1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(out_text(&out).contains("--insecure-tcp"), "{}", out_text(&out));
    assert!(!tmp.path().join("unused-root").exists(), "the refused daemon opened its state root");

    let net = NetPair::new("k");
    let Some(reg) = TestRegistry::seeded_in_netns(&net.daemon) else { return };
    let pki = Pki::new(tmp.path(), "rbuild-ca");
    let (server, server_key) = pki.issue("daemon", Some(&net.daemon_ip));
    let (client, client_key) = pki.issue("client", None);
    let rogue = Pki::new(tmp.path(), "other-ca");
    let (rogue_cert, rogue_key) = rogue.issue("intruder", None);
    let addr = format!("tcp://{}:2376", net.daemon_ip);
    let args: Vec<String> = vec![
        "--tlscacert".into(),
        pki.ca().display().to_string(),
        "--tlscert".into(),
        server.display().to_string(),
        "--tlskey".into(),
        server_key.display().to_string(),
        "--addr".into(),
        format!("unix://{}", tmp.path().join("rbuild.sock").display()),
        "--docker-api".into(),
        addr.clone(),
    ];
    let daemon = Daemon::start(
        Some(&net.daemon),
        &tmp.path().join("root"),
        reg.config_path(),
        &args,
        tmp.path().join("daemon.log"),
    );
    let ctx = app_context(tmp.path());
    let good = pki.cert_path("client", &client, &client_key, &pki.ca());
    let bad = rogue.cert_path("intruder", &rogue_cert, &rogue_key, &pki.ca());
    let docker = |certs: &Path, args: &[&str]| {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &net.client]).arg(&cli).args(args);
        c.current_dir(&ctx)
            .env("DOCKER_HOST", &addr)
            .env("DOCKER_TLS_VERIFY", "1")
            .env("DOCKER_CERT_PATH", certs)
            .env("DOCKER_BUILDKIT", "0")
            .env("DOCKER_CONFIG", tmp.path().join("docker-config"))
            .env_remove("DOCKER_CONTEXT")
            .env_remove("DOCKER_API_VERSION");
        c.output().unwrap()
    };
    let app = format!("{}/tls/app:1", reg.host());
    // `--compress`: the context arrives gzipped.
    let out = docker(&good, &["build", "--compress", "-t", &app, "--build-arg", "V=tls", "-f", "sub/Dockerfile", "."]);
    assert!(out.status.success(), "the build over TLS failed:\n{}\ndaemon:\n{}", out_text(&out), daemon.log());
    assert!(out_text(&out).contains(&format!("Successfully tagged {app}")), "{}", out_text(&out));
    let out = docker(&good, &["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert!(out.status.success() && out_text(&out).contains(&app), "{}", out_text(&out));
    let out = docker(&good, &["push", &app]);
    assert!(out.status.success(), "the push over TLS failed:\n{}", out_text(&out));
    assert!(out_text(&out).contains("digest: sha256:"), "{}", out_text(&out));

    // A client whose certificate another CA signed gets nothing; neither does plain HTTP.
    let out = docker(&bad, &["images"]);
    assert!(!out.status.success(), "a client of another CA was served:\n{}", out_text(&out));
    assert!(!out_text(&out).contains(&app), "{}", out_text(&out));
    let plain = Command::new("ip")
        .args(["netns", "exec", &net.client, "curl", "-s", "-m", "10"])
        .arg(format!("http://{}:2376/_ping", net.daemon_ip))
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&plain.stdout).contains("OK"), "plain HTTP was answered");

    // docker-py over the same TLS, with the client's certificate.
    let Some(python) = docker_py() else { return };
    let script = r#"
import json, os, sys
import docker
certs = sys.argv[2]
tls = docker.tls.TLSConfig(client_cert=(certs + "/cert.pem", certs + "/key.pem"), ca_cert=certs + "/ca.pem", verify=True)
c = docker.DockerClient(base_url=sys.argv[1], tls=tls, version="auto")
img, logs = c.images.build(path=sys.argv[3], dockerfile="sub/Dockerfile", tag="py-over-tls:1", buildargs={"V": "py"})
print(json.dumps({"id": img.id, "tags": img.tags, "list": sorted(t for i in c.images.list() for t in i.tags)}))
"#;
    let out = Command::new("ip")
        .args(["netns", "exec", &net.client])
        .arg(&python)
        .arg("-c")
        .arg(script)
        .arg(format!("https://{}:2376", net.daemon_ip))
        .arg(&good)
        .arg(&ctx)
        .env_remove("DOCKER_HOST")
        // requests prefers these to the CA docker-py names (psf/requests#3829), and would proxy the daemon.
        .env_remove("REQUESTS_CA_BUNDLE")
        .env_remove("CURL_CA_BUNDLE")
        .env_remove("HTTPS_PROXY")
        .env_remove("https_proxy")
        .env_remove("ALL_PROXY")
        .env_remove("all_proxy")
        .output()
        .unwrap();
    assert!(out.status.success(), "docker-py over TLS failed:\n{}\ndaemon:\n{}", out_text(&out), daemon.log());
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["tags"], serde_json::json!(["py-over-tls:1"]), "{r}");
    assert!(r["list"].as_array().unwrap().iter().any(|t| t == app.as_str()), "{r}");
}

/// A docker-registry that wants a login (htpasswd) over TLS on a loopback port; killed on drop.
struct PrivateRegistry {
    child: Child,
    host: String,
    ca: PathBuf,
}

impl PrivateRegistry {
    fn start(dir: &Path, user: &str, password: &str) -> Option<PrivateRegistry> {
        let Some(bin) = which("docker-registry").or_else(|| which("registry")) else {
            skip("docker-registry is not installed: run scripts/install-test-deps (as root)");
            return None;
        };
        if which("htpasswd").is_none() || which("openssl").is_none() {
            skip("htpasswd and openssl are not installed: run scripts/install-test-deps");
            return None;
        }
        let dir = dir.join("private-registry");
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let pki = Pki::new(&dir, "registry-ca");
        let (cert, key) = pki.issue("registry", Some("127.0.0.1"));
        let htpasswd = Command::new("htpasswd").args(["-Bbn", user, password]).output().unwrap();
        assert!(htpasswd.status.success(), "htpasswd: {}", out_text(&htpasswd));
        std::fs::write(dir.join("htpasswd"), &htpasswd.stdout).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let yaml = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    \
             rootdirectory: {}\nauth:\n  htpasswd:\n    realm: rbuild-test\n    path: {}\nhttp:\n  addr: \
             127.0.0.1:{port}\n  secret: rbuild-test\n  tls:\n    certificate: {}\n    key: {}\n",
            dir.join("data").display(),
            dir.join("htpasswd").display(),
            cert.display(),
            key.display()
        );
        std::fs::write(dir.join("registry.yml"), yaml).unwrap();
        let log = std::fs::File::create(dir.join("registry.log")).unwrap();
        let child = Command::new(bin)
            .arg("serve")
            .arg(dir.join("registry.yml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut reg = PrivateRegistry { child, host: format!("127.0.0.1:{port}"), ca: pki.ca() };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&reg.host).is_err() {
            if let Ok(Some(st)) = reg.child.try_wait() {
                panic!(
                    "the private registry exited ({st}): {}",
                    std::fs::read_to_string(dir.join("registry.log")).unwrap()
                );
            }
            assert!(Instant::now() < deadline, "the private registry did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(reg)
    }

    /// rbuild.toml lines that make the daemon trust its certificate.
    fn config(&self) -> String {
        format!("[registry.\"{}\"]\nca = [\"{}\"]\n", self.host, self.ca.display())
    }
}

impl Drop for PrivateRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn docker_login_and_the_logins_a_build_sends_reach_a_private_registry() {
    let Some(cli) = docker_cli() else {
        skip("the docker CLI is not installed: run scripts/install-test-deps (docker.io)");
        return;
    };
    if !is_root() {
        skip("Docker API tests need root (the daemon mounts overlays and makes namespaces)");
        return;
    }
    let outer = tempfile::tempdir().unwrap();
    let Some(private) = PrivateRegistry::start(outer.path(), "alice", "wonderland") else { return };
    let Some(l) = Local::with_config(&private.config()) else { return };
    let host = &private.host;
    let login = |password: &str| {
        let mut c = l.docker(&cli);
        c.args(["login", host, "-u", "alice", "--password-stdin"]).stdin(Stdio::piped());
        c.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        child.stdin.take().unwrap().write_all(password.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    };
    // `docker login` asks the daemon (POST /auth), which asks the registry.
    let wrong = login("nope");
    assert!(!wrong.status.success(), "a wrong password logged in: {}", out_text(&wrong));
    assert!(out_text(&wrong).contains(&format!("login to {host} failed")), "{}", out_text(&wrong));
    let ok_login = login("wonderland");
    assert!(ok_login.status.success(), "docker login: {}\n{}", out_text(&ok_login), l.daemon.log());
    assert!(out_text(&ok_login).contains("Login Succeeded"), "{}", out_text(&ok_login));

    // A base image in the private registry, pushed with the login (X-Registry-Auth), then forgotten
    // locally so that the next build has to pull it.
    let base_ctx = l.tmp.path().join("base");
    std::fs::create_dir_all(&base_ctx).unwrap();
    std::fs::write(base_ctx.join("Dockerfile"), "FROM busybox\nRUN echo from-the-private-base > /private\n").unwrap();
    let base = format!("{host}/team/base:1");
    ok(l.docker(&cli).current_dir(&base_ctx).args(["build", "-t", &base, "."]), "docker build (base)");
    let pushed = ok(l.docker(&cli).args(["push", &base]), "docker push to the private registry");
    assert!(pushed.contains("digest: sha256:"), "{pushed}");
    ok(l.docker(&cli).args(["rmi", &base]), "docker rmi");

    let app_ctx = l.tmp.path().join("app");
    std::fs::create_dir_all(&app_ctx).unwrap();
    std::fs::write(app_ctx.join("Dockerfile"), format!("FROM {base}\nRUN cat /private\n")).unwrap();
    // Without the login (another client config), the daemon has none for that registry: refused.
    let anonymous = l
        .docker(&cli)
        .env("DOCKER_CONFIG", l.tmp.path().join("no-logins"))
        .current_dir(&app_ctx)
        .args(["build", "-t", "app-from-private", "."])
        .output()
        .unwrap();
    assert!(!anonymous.status.success(), "built from a private base without a login:\n{}", out_text(&anonymous));
    assert!(out_text(&anonymous).to_lowercase().contains("unauthorized"), "{}", out_text(&anonymous));
    // With it, the CLI sends its logins with the build (X-Registry-Config) and the base is pulled with them.
    let built = ok(l.docker(&cli).current_dir(&app_ctx).args(["build", "-t", "app-from-private", "."]), "docker build");
    assert!(built.contains(&format!("Pulling {base}")) && built.contains("this client's login"), "{built}");
    assert!(built.contains("from-the-private-base"), "{built}");
    assert!(built.contains("Successfully tagged app-from-private:latest"), "{built}");
    // `--pull` pulls again with the login, and the build does not ask with the daemon's.
    let again = ok(
        l.docker(&cli).current_dir(&app_ctx).args(["build", "--pull", "-t", "app-from-private", "."]),
        "docker build --pull",
    );
    assert!(again.contains(&format!("Pulling {base}")), "{again}");
}
