//! End-to-end builds with named contexts (`--build-context name=DIR|docker-image://REF`, used by
//! `COPY --from=name` and `FROM name`) and `ADD --checksum` of an http URL, by the rbuild binary against
//! the seeded docker.io mirror. Dockerfiles and contexts are in testdata/sources.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use support::{Rbuild, TestRegistry};

fn testdata(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/sources").join(rel)
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false)
}

/// A seeded registry and rbuild on a fresh root, or `None` (with the reason printed) where they cannot run.
fn setup() -> Option<(TestRegistry, Rbuild)> {
    if !is_root() {
        support::skip("end-to-end builds need root (overlay mounts and namespaces)");
        return None;
    }
    let reg = TestRegistry::seeded()?;
    let rb = Rbuild::new(&reg);
    Some((reg, rb))
}

/// `rbuild build --progress plain -f <dockerfile> -o type=local,dest=<new dir> <extra...> <context>`;
/// returns the output directory and stderr (the progress).
fn build(rb: &Rbuild, dockerfile: &Path, context: &Path, extra: &[&str]) -> (tempfile::TempDir, String) {
    let dest = tempfile::tempdir().unwrap();
    let out_flag = format!("type=local,dest={}", dest.path().display());
    let mut args = vec!["build", "--progress", "plain", "-f", dockerfile.to_str().unwrap(), "-o", &out_flag];
    args.extend_from_slice(extra);
    args.push(context.to_str().unwrap());
    let out = rb.command().args(&args).env_remove("SOURCE_DATE_EPOCH").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "rbuild {} failed:\n{stderr}", args.join(" "));
    (dest, stderr)
}

fn read(dir: &Path, rel: &str) -> String {
    std::fs::read_to_string(dir.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

#[test]
fn copy_from_a_named_directory_context() {
    let Some((_reg, rb)) = setup() else { return };
    let ctx = tempfile::tempdir().unwrap();
    let extra = format!("extra={}", testdata("named/extra").display());
    let (out, _) = build(&rb, &testdata("named/Dockerfile.copy"), ctx.path(), &["--build-context", &extra]);
    assert_eq!(read(out.path(), "hello.txt"), "hello from a named context\n");
    assert_eq!(read(out.path(), "seen.txt"), "hello from a named context\n");
    assert!(out.path().join("bin/busybox").exists(), "the image's own FROM busybox");
}

#[test]
fn a_named_image_context_replaces_a_stage_and_a_named_directory_is_a_from() {
    let Some((_reg, rb)) = setup() else { return };
    let ctx = tempfile::tempdir().unwrap();
    let base = "base=docker-image://busybox".to_string();
    let files = format!("files={}", testdata("named/rootfs").display());
    let (out, _) = build(
        &rb,
        &testdata("named/Dockerfile.from"),
        ctx.path(),
        &["--build-context", &base, "--build-context", &files],
    );
    assert_eq!(read(out.path(), "motd"), "a directory as a stage\n");
    assert_eq!(read(out.path(), "motd.size").trim(), "23");
    assert!(out.path().join("bin/busybox").exists(), "FROM base is busybox");

    let (out, _) = build(&rb, &testdata("named/Dockerfile.fromdir"), ctx.path(), &["--build-context", &files]);
    assert_eq!(read(out.path(), "etc/motd"), "a directory as a stage\n");

    let tools = "tools=docker-image://busybox";
    let (out, _) = build(&rb, &testdata("named/Dockerfile.bin"), ctx.path(), &["--build-context", tools]);
    let bb = std::fs::metadata(out.path().join("busybox")).unwrap();
    assert!(bb.len() > 100_000, "busybox copied out of the named image: {} bytes", bb.len());
}

/// `sha256:<hex>` of `data`, by coreutils' sha256sum (the CLI crate has no hashing dependency).
fn sha256(data: &[u8]) -> String {
    let mut child = std::process::Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("sha256sum");
    child.stdin.take().unwrap().write_all(data).unwrap();
    let out = child.wait_with_output().unwrap();
    let hex = String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap().to_string();
    format!("sha256:{hex}")
}

/// Serves `body` at every path over HTTP/1.1 on a loopback port; counts the GETs.
fn serve(body: &'static [u8]) -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let gets = Arc::new(AtomicUsize::new(0));
    let counter = gets.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut request = String::new();
            let _ = reader.read_line(&mut request);
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                    break;
                }
            }
            if request.starts_with("GET ") {
                counter.fetch_add(1, Ordering::SeqCst);
            }
            let head = format!("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: {}\r\n\r\n", body.len());
            let _ = conn.write_all(head.as_bytes());
            if request.starts_with("GET ") {
                let _ = conn.write_all(body);
            }
        }
    });
    (port, gets)
}

#[test]
fn add_with_a_checksum_downloads_checks_and_caches() {
    let Some((_reg, rb)) = setup() else { return };
    const BODY: &[u8] = b"#!/bin/sh\necho downloaded\n";
    let (port, gets) = serve(BODY);
    let sum = sha256(BODY);
    let ctx = tempfile::tempdir().unwrap();
    let df = ctx.path().join("Dockerfile");
    let url = format!("http://127.0.0.1:{port}/tool.sh");
    std::fs::write(
        &df,
        format!("FROM busybox\nADD --checksum={sum} --chmod=755 {url} /usr/local/bin/tool\nRUN tool > /out\n"),
    )
    .unwrap();
    let (out, _) = build(&rb, &df, ctx.path(), &[]);
    assert_eq!(read(out.path(), "out"), "downloaded\n");
    assert_eq!(gets.load(Ordering::SeqCst), 1);

    let (_, progress) = build(&rb, &df, ctx.path(), &[]);
    assert_eq!(gets.load(Ordering::SeqCst), 1, "a cached build with a checksum does not download:\n{progress}");
    assert!(progress.contains("CACHED"), "{progress}");

    // A wrong checksum fails, naming the URL and both digests.
    let wrong = format!("sha256:{}", "0".repeat(64));
    std::fs::write(&df, format!("FROM busybox\nADD --checksum={wrong} {url} /tool\n")).unwrap();
    let o = rb
        .command()
        .args(["build", "--progress", "plain", "-f", df.to_str().unwrap(), ctx.path().to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(stderr.contains(&url) && stderr.contains(&wrong) && stderr.contains(&sum), "{stderr}");
}

#[test]
fn add_of_an_unchanged_url_without_a_checksum_keeps_the_steps_after_it_cached() {
    let Some((_reg, rb)) = setup() else { return };
    let (port, gets) = serve(b"plain\n");
    let ctx = tempfile::tempdir().unwrap();
    let df = ctx.path().join("Dockerfile");
    let url = format!("http://127.0.0.1:{port}/plain.txt");
    std::fs::write(&df, format!("FROM busybox\nADD {url} /plain.txt\nRUN cat /proc/sys/kernel/random/uuid > /stamp\n"))
        .unwrap();
    let (first, _) = build(&rb, &df, ctx.path(), &[]);
    assert_eq!(read(first.path(), "plain.txt"), "plain\n");
    let (second, progress) = build(&rb, &df, ctx.path(), &[]);
    assert_eq!(gets.load(Ordering::SeqCst), 2, "no ETag or Last-Modified: downloaded again to compare");
    assert_eq!(read(first.path(), "stamp"), read(second.path(), "stamp"), "the RUN re-ran:\n{progress}");
}

fn git(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .output()
        .expect("git");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn add_of_a_git_repository_over_git_daemon() {
    let Some((_reg, rb)) = setup() else { return };
    if support::which("git").is_none() {
        support::skip("git is not installed");
        return;
    }
    let base = tempfile::tempdir().unwrap();
    let repo = base.path().join("repo.git");
    std::fs::create_dir_all(repo.join("docs")).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    std::fs::write(repo.join("docs/guide.md"), "# guide\n").unwrap();
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-q", "-m", "first"]);
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    // git-daemon itself, not `git daemon`: killing the `git` wrapper would leave the daemon running.
    let exec_path = std::process::Command::new("git").arg("--exec-path").output().expect("git --exec-path");
    let exec_path = PathBuf::from(String::from_utf8_lossy(&exec_path.stdout).trim());
    let mut daemon = std::process::Command::new(exec_path.join("git-daemon"))
        .args(["--export-all", "--reuseaddr", "--listen=127.0.0.1"])
        .arg(format!("--port={port}"))
        .arg(format!("--base-path={}", base.path().display()))
        .arg(base.path())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let ctx = tempfile::tempdir().unwrap();
    let df = ctx.path().join("Dockerfile");
    let url = format!("git://127.0.0.1:{port}/repo.git#main:docs");
    std::fs::write(&df, format!("FROM busybox\nADD {url} /docs\nRUN cat /docs/guide.md > /out\n")).unwrap();
    let result = std::panic::catch_unwind(|| build(&rb, &df, ctx.path(), &[]));
    let _ = daemon.kill();
    let _ = daemon.wait();
    let (out, _) = result.unwrap_or_else(|e| std::panic::resume_unwind(e));
    assert_eq!(read(out.path(), "out"), "# guide\n");
}
