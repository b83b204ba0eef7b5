//! Git sources end to end: a repository made by the test, reached by path and over `git daemon`
//! (`ADD git://127.0.0.1:PORT/repo.git#ref:subdir`), with the system git.

#[path = "solve_support.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use llb::{DefinitionBuilder, Metadata, SourceOp};
use support::{definition, executed_names, Env};

fn have_git() -> bool {
    Command::new("git").arg("--version").output().is_ok_and(|o| o.status.success())
}

macro_rules! require_git {
    () => {
        require_root!();
        if !have_git() {
            testkit::skip("git is not installed (apt-get install git)");
            return;
        }
    };
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A repository with `a.txt` and `docs/guide.md` on `main`, an annotated tag `v1` on the first
/// commit, and a second commit changing `a.txt`. Returns (dir, first commit).
fn repo(root: &Path) -> (PathBuf, String) {
    let dir = root.join("repo.git");
    std::fs::create_dir_all(dir.join("docs")).unwrap();
    git(&dir, &["init", "-q", "-b", "main"]);
    std::fs::write(dir.join("a.txt"), "one\n").unwrap();
    std::fs::write(dir.join("docs/guide.md"), "# guide\n").unwrap();
    std::fs::write(dir.join("run.sh"), "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(dir.join("run.sh"), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    git(&dir, &["add", "."]);
    git(&dir, &["commit", "-q", "-m", "first"]);
    let first = git(&dir, &["rev-parse", "HEAD"]);
    git(&dir, &["tag", "-a", "v1", "-m", "v1"]);
    std::fs::write(dir.join("a.txt"), "two\n").unwrap();
    git(&dir, &["commit", "-q", "-am", "second"]);
    (dir, first)
}

fn git_source(remote: &Path, reference: Option<&str>, subdir: Option<&str>, keep: bool) -> llb::Definition {
    let mut b = DefinitionBuilder::new();
    let op = SourceOp::Git {
        remote: remote.display().to_string(),
        reference: reference.map(str::to_string),
        subdir: subdir.map(str::to_string),
        keep_git_dir: keep,
        checksum: None,
        auth_token_secret: None,
        auth_header_secret: None,
        known_ssh_hosts: None,
        mount_ssh_sock: None,
    };
    let src = b.source(op, None, Metadata::described("ADD git")).unwrap();
    b.finish(Some(src)).unwrap()
}

async fn files(env: &Env, def: &llb::Definition) -> (tempfile::TempDir, solver::Solved) {
    let (opts, _) = env.options();
    let solved = env.solver.solve(def, opts).await.unwrap_or_else(|e| panic!("{e}"));
    (env.export(&solved.root), solved)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn branches_tags_commits_and_subdirs_check_out() {
    require_git!();
    let env = Env::new();
    let (dir, first) = repo(env.dir.path());

    let (out, _) = files(&env, &git_source(&dir, Some("main"), None, false)).await;
    assert_eq!(std::fs::read_to_string(out.path().join("a.txt")).unwrap(), "two\n");
    assert!(!out.path().join(".git").exists(), "no .git without keep_git_dir");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(out.path().join("run.sh")).unwrap().permissions());
    assert_eq!(mode & 0o111, 0o111, "executable bits survive");

    let (out, _) = files(&env, &git_source(&dir, Some("v1"), None, false)).await;
    assert_eq!(std::fs::read_to_string(out.path().join("a.txt")).unwrap(), "one\n", "the tag's commit");

    let (out, _) = files(&env, &git_source(&dir, Some(&first), Some("docs"), false)).await;
    assert_eq!(std::fs::read_to_string(out.path().join("guide.md")).unwrap(), "# guide\n");
    assert!(!out.path().join("a.txt").exists());

    let (out, _) = files(&env, &git_source(&dir, None, None, true)).await;
    assert_eq!(std::fs::read_to_string(out.path().join("a.txt")).unwrap(), "two\n", "HEAD");
    let kept = out.path();
    assert!(kept.join(".git").is_dir(), "keep_git_dir keeps .git");
    assert_eq!(git(kept, &["rev-parse", "HEAD"]), git(&dir, &["rev-parse", "HEAD"]));
    assert_eq!(git(kept, &["remote", "get-url", "origin"]), dir.display().to_string());

    // Named by a branch: detached at its commit too, as BuildKit leaves it (it checks out FETCH_HEAD).
    let (out, _) = files(&env, &git_source(&dir, Some("main"), None, true)).await;
    let head = std::fs::read_to_string(out.path().join(".git/HEAD")).unwrap();
    assert_eq!(head.trim(), git(&dir, &["rev-parse", "main"]), ".git/HEAD");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_key_follows_the_commit_a_branch_names() {
    require_git!();
    let env = Env::new();
    let (dir, _) = repo(env.dir.path());
    let def = git_source(&dir, Some("main"), None, false);
    files(&env, &def).await;
    let (_, again) = files(&env, &def).await;
    assert_eq!(again.executed, 0, "an unchanged branch is a cache hit: {again:?}");

    std::fs::write(dir.join("a.txt"), "three\n").unwrap();
    git(&dir, &["commit", "-q", "-am", "third"]);
    let (out, moved) = files(&env, &def).await;
    assert_eq!(moved.executed, 1, "{moved:?}");
    assert_eq!(std::fs::read_to_string(out.path().join("a.txt")).unwrap(), "three\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn errors_name_the_remote_and_what_is_wrong() {
    require_git!();
    let env = Env::new();
    let (dir, first) = repo(env.dir.path());
    let head = git(&dir, &["rev-parse", "HEAD"]);

    let (opts, _) = env.options();
    let e = env.solver.solve(&git_source(&dir, Some("nope"), None, false), opts).await.unwrap_err().to_string();
    assert!(e.contains("\"nope\"") && e.contains(&dir.display().to_string()), "{e}");

    let (opts, _) = env.options();
    let e = env.solver.solve(&git_source(&dir, Some("main"), Some("missing"), false), opts).await.unwrap_err();
    assert!(e.to_string().contains("\"missing\" does not exist"), "{e}");

    // ADD --checksum for git: the commit the reference resolves to.
    let mut def = git_source(&dir, Some("main"), None, false);
    set_checksum(&mut def, &first);
    let (opts, _) = env.options();
    let e = env.solver.solve(&def, opts).await.unwrap_err().to_string();
    assert!(e.contains(&head) && e.contains(&first), "both commits named: {e}");
    let mut def = git_source(&dir, Some("main"), None, false);
    set_checksum(&mut def, &head[..12]);
    let (opts, _) = env.options();
    env.solver.solve(&def, opts).await.unwrap();
}

fn set_checksum(def: &mut llb::Definition, sum: &str) {
    let mut b = DefinitionBuilder::new();
    let root = def.root.unwrap().digest;
    let SourceOp::Git { remote, reference, subdir, keep_git_dir, .. } = (match &def.vertices[&root].op {
        llb::Op::Source(s) => s.clone(),
        _ => unreachable!(),
    }) else {
        unreachable!()
    };
    let op = SourceOp::Git {
        remote,
        reference,
        subdir,
        keep_git_dir,
        checksum: Some(sum.into()),
        auth_token_secret: None,
        auth_header_secret: None,
        known_ssh_hosts: None,
        mount_ssh_sock: None,
    };
    let src = b.source(op, None, Metadata::described("ADD git")).unwrap();
    *def = b.finish(Some(src)).unwrap();
}

/// `git daemon` serving `base` on a free loopback port; killed on drop.
struct Daemon {
    port: u16,
    child: Child,
}

impl Daemon {
    fn start(base: &Path) -> Daemon {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        // git-daemon itself, not `git daemon`: killing the `git` wrapper would leave the daemon running.
        let exec_path = git(Path::new("."), &["--exec-path"]);
        let child = Command::new(Path::new(&exec_path).join("git-daemon"))
            .args(["--export-all", "--reuseaddr", "--listen=127.0.0.1"])
            .arg(format!("--port={port}"))
            .arg(format!("--base-path={}", base.display()))
            .arg(base)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "git daemon did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Daemon { port, child }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn add_of_a_git_url_builds_through_the_frontend() {
    require_git!();
    let env = Env::new();
    let (dir, _) = repo(env.dir.path());
    let daemon = Daemon::start(dir.parent().unwrap());
    let url = format!("git://127.0.0.1:{}/repo.git", daemon.port);
    let df = format!("FROM busybox\nADD {url}#main:docs /docs\nRUN cat /docs/guide.md > /out\n");
    let def = definition(&df, &[]);
    let (opts, _) = env.options();
    let solved = env.solver.solve(&def, opts).await.unwrap_or_else(|e| panic!("{e}"));
    let out = env.export(&solved.root);
    assert_eq!(std::fs::read_to_string(out.path().join("out")).unwrap(), "# guide\n");

    let (opts, _events) = env.options();
    let again = env.solver.solve(&def, opts).await.unwrap();
    assert_eq!(again.executed, 0, "ran {:?}", executed_names(&again));
}
