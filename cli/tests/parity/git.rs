//! A git repository served by git-daemon on a loopback port, for the cases that `ADD` a git source
//! (`{git}` in their build args). The repository is made the same way every time (fixed names, dates
//! and modes), so its commit id, and what both engines check out, never change.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `git` with a fixed identity and date, so commits are reproducible.
fn git(dir: &Path, args: &[&str]) -> Result<(), String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "parity")
        .env("GIT_AUTHOR_EMAIL", "parity@example.com")
        .env("GIT_AUTHOR_DATE", "1700000000 +0000")
        .env("GIT_COMMITTER_NAME", "parity")
        .env("GIT_COMMITTER_EMAIL", "parity@example.com")
        .env("GIT_COMMITTER_DATE", "1700000000 +0000")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .map_err(|e| format!("git: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("git {args:?}: {}", String::from_utf8_lossy(&out.stderr)))
    }
}

/// git-daemon serving `repo.git` (branch `main`, tag `v1`); killed on drop.
pub struct GitServer {
    child: Child,
    _dir: tempfile::TempDir,
    port: u16,
}

impl GitServer {
    pub fn start() -> Result<GitServer, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let repo = dir.path().join("repo.git");
        std::fs::create_dir_all(repo.join("sub")).map_err(|e| e.to_string())?;
        git(&repo, &["init", "-q", "-b", "main"])?;
        std::fs::write(repo.join("README"), "hello\n").map_err(|e| e.to_string())?;
        std::fs::write(repo.join("sub/run.sh"), "#!/bin/sh\necho run\n").map_err(|e| e.to_string())?;
        std::os::unix::fs::symlink("README", repo.join("link")).map_err(|e| e.to_string())?;
        git(&repo, &["add", "."])?;
        git(&repo, &["update-index", "--chmod=+x", "sub/run.sh"])?;
        git(&repo, &["commit", "-q", "-m", "first"])?;
        git(&repo, &["tag", "v1"])?;
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map_err(|e| e.to_string())?.port();
        // git-daemon itself, not `git daemon`: killing the `git` wrapper would leave the daemon running.
        let exec_path = Command::new("git").arg("--exec-path").output().map_err(|e| e.to_string())?;
        let exec_path = PathBuf::from(String::from_utf8_lossy(&exec_path.stdout).trim());
        let child = Command::new(exec_path.join("git-daemon"))
            .args(["--export-all", "--reuseaddr", "--listen=127.0.0.1"])
            .arg(format!("--port={port}"))
            .arg(format!("--base-path={}", dir.path().display()))
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("git-daemon: {e}"))?;
        let server = GitServer { child, _dir: dir, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return Err(format!("git-daemon did not listen on port {port}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(server)
    }

    /// `127.0.0.1:PORT`, what `{git}` stands for.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for GitServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
