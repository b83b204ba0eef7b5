//! What the engine promises a caller, end to end with the rbuild binary: cache keys that do not depend on
//! where a project is checked out, every step of a cached build reported as cached, and Ctrl-C stopping a
//! build within 2 s with nothing left behind.

mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use support::{Rbuild, TestRegistry};

fn setup() -> Option<(TestRegistry, Rbuild)> {
    use std::os::unix::fs::MetadataExt;
    if std::fs::metadata("/proc/self").map(|m| m.uid() != 0).unwrap_or(true) {
        support::skip("end-to-end builds need root (overlay mounts and namespaces)");
        return None;
    }
    let reg = TestRegistry::seeded()?;
    let rb = Rbuild::new(&reg);
    Some((reg, rb))
}

fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/build").join(name)
}

/// Copies `testdata/build/<name>` to `dest` (created), with fresh inodes and times.
fn checkout(name: &str, dest: &Path) {
    std::fs::create_dir_all(dest).unwrap();
    let st = Command::new("cp").arg("-r").arg(format!("{}/.", testdata(name).display())).arg(dest).status().unwrap();
    assert!(st.success());
}

/// The step names of a plain-progress log, split into those that ran and those that were cached.
fn steps(plain: &str) -> (Vec<String>, Vec<String>) {
    let mut names: std::collections::BTreeMap<String, String> = std::collections::BTreeMap::new();
    let (mut ran, mut cached) = (Vec::new(), Vec::new());
    for line in plain.lines() {
        let Some((n, what)) = line.strip_prefix('#').and_then(|r| r.split_once(' ')) else { continue };
        if what == "CACHED" {
            cached.extend(names.get(n).cloned());
        } else if what.starts_with("DONE") {
            if let Some(name) = names.get(n) {
                if !cached.contains(name) {
                    ran.push(name.clone());
                }
            }
        } else if what.starts_with('[') && !names.contains_key(n) {
            names.insert(n.to_string(), what.to_string());
        }
    }
    (ran, cached)
}

fn build(rb: &Rbuild, dir: &Path, extra: &[&str]) -> (String, String) {
    let iid = dir.join("iid");
    let assets = dir.join("assets");
    let mut args = vec!["build", "--progress", "plain", "-t", "checkout", "--iidfile", iid.to_str().unwrap()];
    let named = format!("assets={}", assets.display());
    args.extend(["--build-context", &named]);
    args.extend(extra);
    args.push(dir.to_str().unwrap());
    let out = rb.command().current_dir(dir).args(&args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "build in {} failed:\n{stderr}", dir.display());
    (stderr, std::fs::read_to_string(iid).unwrap())
}

#[test]
fn one_project_from_two_checkout_paths_is_all_cache_hits_the_second_time() {
    let Some((_reg, rb)) = setup() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a/project"), tmp.path().join("elsewhere/deeper/checkout"));
    checkout("checkout", &a);
    checkout("checkout", &b);
    // Different times too: keys hold content, never mtimes.
    let later = std::time::SystemTime::now() + Duration::from_secs(3600);
    for f in ["app/main.txt", "assets/logo.txt"] {
        std::fs::File::options().write(true).open(b.join(f)).unwrap().set_modified(later).unwrap();
    }

    let (first, id_a) = build(&rb, &a, &[]);
    let (ran, _) = steps(&first);
    assert!(ran.iter().any(|s| s.contains("RUN cat")), "{first}");

    let (second, id_b) = build(&rb, &b, &[]);
    let (ran, cached) = steps(&second);
    let ran: Vec<&String> = ran.iter().filter(|s| !s.contains("[internal]") && !s.contains("[context")).collect();
    assert!(ran.is_empty(), "the second checkout re-ran {ran:?}:\n{second}");
    for step in ["FROM", "RUN echo base", "COPY app/", "COPY --from=assets", "RUN cat"] {
        assert!(cached.iter().any(|s| s.contains(step)), "{step} was not reported CACHED:\n{second}");
    }
    assert_eq!(id_a, id_b, "the same project made different images");
}

#[test]
fn a_cached_build_reports_every_step_as_cached() {
    let Some((_reg, rb)) = setup() else { return };
    let tmp = tempfile::tempdir().unwrap();
    checkout("checkout", tmp.path());
    build(&rb, tmp.path(), &[]);
    let (again, _) = build(&rb, tmp.path(), &[]);
    let (_, cached) = steps(&again);
    // Every Dockerfile step: FROM, two RUNs, two COPYs (BuildKit shows them all, not just the last).
    let dockerfile_steps = cached.iter().filter(|s| s.contains("/5]")).count();
    assert_eq!(dockerfile_steps, 5, "{cached:?}\n{again}");
}

/// Processes whose command line contains `needle`.
fn processes_with(needle: &str) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmd) = std::fs::read(entry.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(needle) {
                out.push(format!("{}: {cmd}", entry.file_name().to_string_lossy()));
            }
        }
    }
    out
}

fn mounts_under(root: &Path) -> Vec<String> {
    let root = root.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(&root))
        .map(str::to_string)
        .collect()
}

#[test]
fn sigint_during_a_long_run_exits_130_within_two_seconds_and_leaves_nothing() {
    let Some((_reg, rb)) = setup() else { return };
    let ctx = tempfile::tempdir().unwrap();
    // A sleep long enough to be unmistakable, and unique to this test.
    let marker = "sleep 3517";
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!("FROM busybox\nARG PAUSE=1\nRUN echo started-the-long-step && if [ $PAUSE = 1 ]; then {marker}; fi\n"),
    )
    .unwrap();
    let mut child = rb
        .command()
        .args(["build", "--progress", "plain", "-t", "interrupted", ctx.path().to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut seen = String::new();
    loop {
        let line = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())).unwrap_or_else(|_| {
            let _ = child.kill();
            panic!("the long step never started:\n{seen}")
        });
        seen.push_str(&line);
        seen.push('\n');
        if line.contains("started-the-long-step") && !line.contains("RUN") {
            break;
        }
    }
    // The step's process is running now.
    let t = Instant::now();
    while processes_with(marker).is_empty() && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!processes_with(marker).is_empty(), "the RUN's process was not found");

    let sent = Instant::now();
    let st = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(st.success());
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if sent.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            panic!("rbuild did not stop within 10 s of SIGINT");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let took = sent.elapsed();
    while let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
        seen.push_str(&line);
        seen.push('\n');
    }
    assert_eq!(status.code(), Some(130), "{seen}");
    assert!(took < Duration::from_secs(2), "rbuild took {took:?} to stop:\n{seen}");
    assert!(seen.contains("CANCELED"), "the running step was not reported cancelled:\n{seen}");
    assert!(processes_with(marker).is_empty(), "left running: {:?}", processes_with(marker));
    assert!(mounts_under(rb.root()).is_empty(), "left mounted: {:#?}", mounts_under(rb.root()));

    // The next build succeeds on the same state root, and nothing was half-committed: the step runs.
    let out = rb
        .command()
        .args(["build", "--progress", "plain", "--build-arg", "PAUSE=0", "-t", "after", ctx.path().to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the build after the interrupted one failed:\n{stderr}");
    assert!(stderr.contains("started-the-long-step"), "{stderr}");
}
