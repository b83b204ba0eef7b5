//! The GitHub Actions step and what rbuild does for every CI: the action's script run as the runner runs it
//! (INPUT_* variables, GITHUB_OUTPUT, GITHUB_STEP_SUMMARY, RUNNER_TEMP, GITHUB_ACTIONS=true) against a real
//! registry and checked with skopeo; Dockerfile errors as annotations; miss explanations for a changed
//! file, build arg and base image; `type=gha` through a local test server of the cache service's protocol;
//! the action's own unit tests; actionlint and the JSON schemas on action.yml and the workflows.

mod support;

#[path = "support/actions_cache_server.rs"]
mod actions_cache_server;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use actions_cache_server::ActionsCacheTestServer;
use support::{skip, which, Rbuild, TestRegistry};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false)
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn python() -> Option<PathBuf> {
    let p = which("python3");
    if p.is_none() {
        skip("python3 is not installed (the action's script needs it): apt-get install python3");
    }
    p
}

/// The action's own tests: input parsing, the command, installation from a local fake release server.
#[test]
fn action_script_unit_tests_pass() {
    let Some(py) = python() else { return };
    let out = Command::new(py)
        .args(["-m", "unittest", "discover", "-s", "action", "-p", "test_*.py", "-v"])
        .current_dir(repo())
        // No __pycache__ in the work tree.
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .unwrap();
    assert!(out.status.success(), "the action's unit tests failed:\n{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("OK"), "{}", text(&out));
}

/// actionlint on the workflows (and, through `uses: ./`, the action's inputs), and the schemas of both.
#[test]
fn action_and_workflows_pass_actionlint_and_the_schemas() {
    let (Some(actionlint), Some(schema)) = (which("actionlint"), which("check-jsonschema")) else {
        skip("actionlint and check-jsonschema are not installed: run scripts/install-test-deps (as root)");
        return;
    };
    let workflows: Vec<PathBuf> = std::fs::read_dir(repo().join(".github/workflows"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yml"))
        .collect();
    assert!(workflows.len() >= 2, "{workflows:?}");
    let out = Command::new(&actionlint).args(&workflows).current_dir(repo()).output().unwrap();
    assert!(out.status.success(), "actionlint:\n{}", text(&out));
    let out = Command::new(&schema)
        .args(["--builtin-schema", "vendor.github-actions", "action.yml"])
        .current_dir(repo())
        .output()
        .unwrap();
    assert!(out.status.success(), "check-jsonschema action.yml:\n{}", text(&out));
    let out = Command::new(&schema)
        .args(["--builtin-schema", "vendor.github-workflows"])
        .args(&workflows)
        .current_dir(repo())
        .output()
        .unwrap();
    assert!(out.status.success(), "check-jsonschema workflows:\n{}", text(&out));
}

/// A runner's environment for the action: temp files for its outputs, summary and temp dir, rbuild given
/// through the `rbuild` input, on a fresh state root with the test registry as configuration.
struct Runner {
    tmp: tempfile::TempDir,
    config: PathBuf,
}

impl Runner {
    fn new(reg: &TestRegistry) -> Runner {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("runner-temp")).unwrap();
        Runner { tmp, config: reg.config_path().to_path_buf() }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.tmp.path().join(p)
    }

    /// Runs action/rbuild_action.py with these inputs (`build-args` -> INPUT_BUILD-ARGS), from `workspace`.
    fn run(&self, workspace: &Path, inputs: &[(&str, &str)]) -> Output {
        let py = which("python3").unwrap();
        let mut c = Command::new(py);
        c.arg(repo().join("action/rbuild_action.py"))
            .current_dir(workspace)
            .env("GITHUB_ACTIONS", "true")
            .env("GITHUB_WORKSPACE", workspace)
            .env("GITHUB_OUTPUT", self.path("output"))
            .env("GITHUB_STEP_SUMMARY", self.path("summary.md"))
            .env("RUNNER_TEMP", self.path("runner-temp"))
            .env("RBUILD_ROOT", self.path("root"))
            .env("RBUILD_CONFIG", &self.config)
            .env("DOCKER_CONFIG", self.path("docker-config"))
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .env_remove("RBUILD_HOST")
            .env("INPUT_RBUILD", env!("CARGO_BIN_EXE_rbuild"));
        for (k, v) in inputs {
            c.env(format!("INPUT_{}", k.to_uppercase()), v);
        }
        c.output().unwrap()
    }

    /// $GITHUB_OUTPUT as the runner reads it (`name<<DELIMITER` ... `DELIMITER`).
    fn outputs(&self) -> BTreeMap<String, String> {
        let text = std::fs::read_to_string(self.path("output")).unwrap_or_default();
        let mut out = BTreeMap::new();
        let mut lines = text.lines();
        while let Some(l) = lines.next() {
            let (name, delim) = l.split_once("<<").unwrap_or_else(|| panic!("not a heredoc output line: {l}"));
            let mut value = Vec::new();
            for v in lines.by_ref() {
                if v == delim {
                    break;
                }
                value.push(v);
            }
            out.insert(name.to_string(), value.join("\n"));
        }
        out
    }
}

fn skopeo(args: &[&str]) -> Vec<u8> {
    let out = Command::new("skopeo").args(args).output().unwrap();
    assert!(out.status.success(), "skopeo {args:?}: {}", text(&out));
    out.stdout
}

fn sha256(bytes: &[u8]) -> String {
    llb::Digest::of(bytes).to_string()
}

fn project(dir: &Path, dockerfile: &str) -> PathBuf {
    let ctx = dir.join("project");
    std::fs::create_dir_all(ctx.join("src")).unwrap();
    std::fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
    std::fs::write(ctx.join("src/main.rs"), "fn main() {}\n").unwrap();
    ctx
}

/// The action with tags, build args, a secret and `push: true`: its outputs are what skopeo sees in the
/// registry, the summary has the step table, and an unsupported input is a warning.
#[test]
fn the_action_builds_pushes_and_outputs_what_the_registry_holds() {
    if !is_root() {
        skip("the action's build needs root (overlay mounts and namespaces)");
        return;
    }
    if python().is_none() || which("skopeo").is_none() {
        skip("skopeo is not installed: run scripts/install-test-deps");
        return;
    }
    let Some(reg) = TestRegistry::seeded() else { return };
    let runner = Runner::new(&reg);
    let ctx = project(
        runner.tmp.path(),
        "FROM busybox\n\
         ARG FLAVOR=plain\n\
         COPY src/ /app/\n\
         RUN --mount=type=secret,id=token test \"$(md5sum < /run/secrets/token)\" = \"33e1b232a4e6fa0028a6670753749a17  -\" && test \"$FLAVOR\" = blue && echo $FLAVOR > /flavor\n",
    );
    let image = format!("{}/team/app", reg.host());
    let tags = format!("{image}:1\n{image}:latest");
    let out = runner.run(
        &ctx,
        &[
            ("context", "."),
            ("tags", &tags),
            ("build-args", "FLAVOR=blue"),
            ("secrets", "token=s3cret"),
            ("push", "true"),
            ("labels", "org.opencontainers.image.title=app"),
            ("github-token", "unused"),
        ],
    );
    let all = text(&out);
    assert!(out.status.success(), "the action failed:\n{all}");
    assert!(
        all.contains("::warning title=rbuild action::input \"github-token\" is not supported by rbuild"),
        "no warning for the unsupported input:\n{all}"
    );
    assert!(all.contains("::group::stage main"), "plain progress is not grouped:\n{all}");

    let outputs = runner.outputs();
    let (imageid, digest) = (&outputs["imageid"], &outputs["digest"]);
    let metadata: serde_json::Value = serde_json::from_str(&outputs["metadata"]).unwrap();
    let reference = format!("docker://{image}:1");
    let inspect: serde_json::Value =
        serde_json::from_slice(&skopeo(&["inspect", "--tls-verify=false", &reference])).unwrap();
    assert_eq!(inspect["Digest"].as_str(), Some(digest.as_str()), "digest output vs the registry");
    let manifest = skopeo(&["inspect", "--tls-verify=false", "--raw", &reference]);
    assert_eq!(sha256(&manifest), *digest);
    let config = skopeo(&["inspect", "--tls-verify=false", "--config", "--raw", &reference]);
    assert_eq!(sha256(&config), *imageid, "imageid output vs the pushed config");
    assert_eq!(metadata["containerimage.digest"].as_str(), Some(digest.as_str()));
    assert_eq!(metadata["containerimage.config.digest"].as_str(), Some(imageid.as_str()));
    let manifest: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    assert_eq!(metadata["containerimage.descriptor"]["mediaType"], manifest["mediaType"]);
    assert!(metadata["image.name"].as_str().unwrap_or_default().contains(&format!("{image}:1")), "{metadata}");
    let config: serde_json::Value = serde_json::from_slice(&config).unwrap();
    assert_eq!(config["config"]["Labels"]["org.opencontainers.image.title"], "app");
    let latest: serde_json::Value =
        serde_json::from_slice(&skopeo(&["inspect", "--tls-verify=false", &format!("docker://{image}:latest")]))
            .unwrap();
    assert_eq!(latest["Digest"], inspect["Digest"]);

    let summary = std::fs::read_to_string(runner.path("summary.md")).unwrap();
    assert!(summary.contains("| Step | Result | Time | Why it ran |"), "{summary}");
    assert!(summary.contains("| `[4/4] RUN --mount=type=secret,id=token"), "{summary}");
    assert!(summary.contains(&format!("| Digest | `{digest}` |")), "{summary}");
    // The secret reaches neither the summary, nor the outputs, nor the log; its temporary file is gone.
    assert!(!summary.contains("s3cret"), "{summary}");
    assert!(!std::fs::read_to_string(runner.path("output")).unwrap().contains("s3cret"));
    assert!(!all.contains("s3cret"), "{all}");
    let left: Vec<_> =
        std::fs::read_dir(runner.path("runner-temp")).unwrap().flatten().map(|e| e.file_name()).collect();
    assert!(left.is_empty(), "the action left files in RUNNER_TEMP: {left:?}");
}

/// A Dockerfile error is an annotation on its line; so is a failed RUN.
#[test]
fn the_action_annotates_dockerfile_errors_on_their_line() {
    if !is_root() {
        skip("the action's build needs root (overlay mounts and namespaces)");
        return;
    }
    if python().is_none() {
        return;
    }
    let Some(reg) = TestRegistry::seeded() else { return };
    let runner = Runner::new(&reg);
    let ctx = project(runner.tmp.path(), "FROM busybox\nRUN true\nRUNN false\n");
    let out = runner.run(&ctx, &[("tags", "app:1")]);
    let all = text(&out);
    assert!(!out.status.success(), "a broken Dockerfile built:\n{all}");
    assert!(
        all.contains("::error file=Dockerfile,line=3,title=Dockerfile error::unknown instruction: RUNN"),
        "no annotation on line 3:\n{all}"
    );
    let summary = std::fs::read_to_string(runner.path("summary.md")).unwrap();
    assert!(summary.contains("rbuild: build failed") && summary.contains("unknown instruction"), "{summary}");

    std::fs::write(ctx.join("Dockerfile"), "FROM busybox\nCOPY src/ /app/\nRUN echo failing; exit 3\n").unwrap();
    let out = runner.run(&ctx, &[]);
    let all = text(&out);
    assert!(!out.status.success());
    assert!(
        all.contains("::error file=Dockerfile,line=3,title=[3/3] RUN echo failing; exit 3 failed::process"),
        "no annotation for the failed RUN:\n{all}"
    );
    assert!(all.contains("exit code: 3"), "{all}");
}

/// MISS lines name what changed: a file of a COPY, a build arg of a RUN, the base image of a FROM.
#[test]
fn misses_name_the_changed_file_build_arg_and_base_image() {
    if !is_root() {
        skip("builds need root (overlay mounts and namespaces)");
        return;
    }
    let Some(reg) = TestRegistry::seeded() else { return };
    let rb = Rbuild::new(&reg);
    let tmp = tempfile::tempdir().unwrap();
    let base_ctx = tmp.path().join("base");
    std::fs::create_dir_all(&base_ctx).unwrap();
    let base = format!("{}/base:1", reg.host());
    let push_base = |content: &str| {
        std::fs::write(base_ctx.join("Dockerfile"), format!("FROM busybox\nRUN echo {content} > /base\n")).unwrap();
        rb.ok(&["build", "--progress", "plain", "-t", &base, "--push", base_ctx.to_str().unwrap()]);
    };
    push_base("one");
    let ctx =
        project(tmp.path(), &format!("FROM {base}\nARG FLAVOR=plain\nCOPY src/ /app/\nRUN echo $FLAVOR > /flavor\n"));
    let build = |args: &[&str]| -> String {
        let mut all = vec!["build"];
        all.extend_from_slice(args);
        all.push(ctx.to_str().unwrap());
        let out = rb.run(&all);
        assert!(out.status.success(), "{}", text(&out));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let first = build(&["--progress", "plain", "--build-arg", "FLAVOR=a"]);
    assert!(first.contains("MISS: no earlier build of this Dockerfile target on this machine"), "{first}");

    std::fs::write(ctx.join("src/main.rs"), "fn main() { println!(\"changed\"); }\n").unwrap();
    let changed = build(&["--progress", "plain", "--build-arg", "FLAVOR=a"]);
    assert!(changed.contains("MISS [3/4] COPY src/ /app/: src/main.rs changed"), "{changed}");
    assert!(
        changed.contains("MISS [4/4] RUN echo $FLAVOR > /flavor: input [3/4] COPY src/ /app/ changed"),
        "{changed}"
    );
    assert!(!changed.contains("MISS [1/4]"), "{changed}");

    // tty progress says it too, below the steps.
    let arg = build(&["--progress", "tty", "--build-arg", "FLAVOR=b"]);
    assert!(arg.contains("MISS [4/4] RUN echo $FLAVOR > /flavor: build arg FLAVOR changed"), "{arg}");
    assert!(!arg.contains("MISS [3/4]"), "the COPY was cached: {arg}");

    push_base("two");
    let pulled = build(&["--progress", "plain", "--build-arg", "FLAVOR=b", "--pull"]);
    let line = pulled.lines().find(|l| l.starts_with("MISS [1/4]")).unwrap_or_else(|| panic!("{pulled}"));
    assert!(
        line.starts_with(&format!("MISS [1/4] FROM {base}: base image {}/base changed (sha256:", reg.host())),
        "{line}"
    );
    assert!(pulled.contains("MISS [3/4] COPY src/ /app/: input [1/4] FROM"), "{pulled}");

    let same = build(&["--progress", "plain", "--build-arg", "FLAVOR=b"]);
    assert!(!same.contains("MISS"), "a no-op rebuild explains nothing: {same}");
}

/// A file that gzip cannot shrink, larger than one upload block.
fn incompressible(path: &Path, len: usize) {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut data = Vec::with_capacity(len);
    while data.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        data.extend_from_slice(&x.to_le_bytes());
    }
    std::fs::write(path, &data[..len]).unwrap();
}

/// `--cache-to type=gha` on one runner, `--cache-from type=gha` on a fresh one: every step a hit, the same
/// image; a re-export sends nothing; a wrong token is a warning; a fresh runner's miss is explained.
#[test]
fn gha_cache_round_trips_through_the_cache_service_protocol() {
    if !is_root() {
        skip("builds need root (overlay mounts and namespaces)");
        return;
    }
    let Some(reg) = TestRegistry::seeded() else { return };
    let service = ActionsCacheTestServer::start("runtime-token");
    let tmp = tempfile::tempdir().unwrap();
    let ctx = project(tmp.path(), "FROM busybox\nCOPY big.bin /big.bin\nRUN echo built > /built\nRUN wc -c /big.bin\n");
    incompressible(&ctx.join("big.bin"), 33 * 1024 * 1024);
    let build = |root: &str, token: &str, args: &[&str]| -> (Output, Option<String>) {
        let iid = tmp.path().join(format!("{root}.iid"));
        let out = Command::new(env!("CARGO_BIN_EXE_rbuild"))
            .arg("--root")
            .arg(tmp.path().join(root))
            .arg("--config")
            .arg(reg.config_path())
            .env("ACTIONS_RESULTS_URL", service.url())
            .env("ACTIONS_RUNTIME_TOKEN", token)
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .env_remove("RBUILD_HOST")
            .args(["build", "--progress", "plain", "-t", "app:1", "--iidfile"])
            .arg(&iid)
            .args(args)
            .arg(&ctx)
            .output()
            .unwrap();
        (out, std::fs::read_to_string(&iid).ok())
    };
    let (a, id_a) =
        build("runner-a", "runtime-token", &["--cache-to", "type=gha,scope=main,mode=max,compression=uncompressed"]);
    assert!(a.status.success(), "{}", text(&a));
    let a_text = text(&a);
    let exported = a_text
        .lines()
        .find_map(|l| l.strip_prefix("exporting cache to gha:main: "))
        .and_then(|r| r.split(' ').next())
        .unwrap_or_else(|| panic!("no export line:\n{a_text}"))
        .to_string();
    let counts = service.counts();
    assert!(counts.block_uploads >= 2 && counts.block_lists >= 1, "the big layer went up in blocks: {counts:?}");
    assert!(counts.single_uploads >= 2, "{counts:?}");
    assert!(service.keys().iter().any(|k| k.starts_with("rbuild-index-main-")), "{:?}", service.keys());

    let (b, id_b) = build(
        "runner-b",
        "runtime-token",
        &["--cache-from", "type=gha,scope=main", "--cache-to", "type=gha,scope=main,mode=max"],
    );
    let b_text = text(&b);
    assert!(b.status.success(), "{b_text}");
    assert!(b_text.contains(&format!("importing cache manifest from gha:main: {exported} cached results")), "{b_text}");
    for step in ["[2/4] COPY big.bin /big.bin", "[3/4] RUN echo built > /built", "[4/4] RUN wc -c /big.bin"] {
        let n = b_text
            .lines()
            .find_map(|l| l.strip_suffix(&format!(" {step}")).and_then(|p| p.strip_prefix('#')))
            .unwrap_or_else(|| panic!("{step} not shown:\n{b_text}"));
        // Steps below the imported result are not even looked at: they show as cached.
        assert!(b_text.contains(&format!("#{n} CACHED")), "{step} ran:\n{b_text}");
    }
    assert!(b_text.contains("CACHED (imported from gha:main)"), "{b_text}");
    assert_eq!(id_a, id_b, "the same image on both runners");
    assert!(b_text.contains(&format!("exporting cache to gha:main: {exported} results, ")), "{b_text}");
    assert!(b_text.contains(" 0 new, 0B sent"), "a re-export sent blobs:\n{b_text}");

    let (c, _) = build("runner-c", "wrong-token", &["--cache-from", "type=gha,scope=main"]);
    let c_text = text(&c);
    assert!(c.status.success(), "{c_text}");
    assert!(c_text.contains("WARNING: cannot import cache from gha:main"), "{c_text}");
    assert!(c_text.contains("refused the token"), "{c_text}");
    assert!(service.counts().refused_tokens >= 1);

    // A fresh runner's misses are explained against the build that exported (its record rides in the cache).
    let mut data = std::fs::read(ctx.join("big.bin")).unwrap();
    data[0] ^= 0xff;
    std::fs::write(ctx.join("big.bin"), data).unwrap();
    let (d, _) = build("runner-d", "runtime-token", &["--cache-from", "type=gha,scope=main"]);
    let d_text = text(&d);
    assert!(d.status.success(), "{d_text}");
    assert!(d_text.contains("MISS [2/4] COPY big.bin /big.bin: big.bin changed"), "{d_text}");
    assert!(
        d_text.contains("MISS [3/4] RUN echo built > /built: input [2/4] COPY big.bin /big.bin changed"),
        "{d_text}"
    );
    assert!(!d_text.contains("no earlier build"), "{d_text}");
}
