//! The executor side of `RUN --mount`: secrets, ssh-agent forwarding and cache directories, and that
//! none of their mount points reach the layer.

mod common;

use std::os::unix::net::UnixListener;

use common::{Fixture, Kind};
use sandbox::cache::{CacheMounts, Sharing};
use sandbox::{RunMount, RunMountKind};

fn secret_is_readable_owned_read_only_on_tmpfs_and_absent_from_the_layer(kind: Kind) {
    require_root!(kind);
    let f = Fixture::with(kind);
    let secret = RunMount {
        destination: "/run/secrets/token".into(),
        kind: RunMountKind::Secret { contents: b"s3cr3t-value".to_vec(), uid: 1000, gid: 1000, mode: 0o400 },
    };
    let script = "cat /run/secrets/token; echo; stat -c '%u %g %a' /run/secrets/token; \
                  awk '$5==\"/run/secrets/token\"{print $9}' /proc/self/mountinfo; \
                  echo x > /run/secrets/token 2>/dev/null && echo writable; \
                  grep -c s3cr3t /proc/self/mountinfo";
    let (r, out, err) = f.sh(script, |p| {
        p.user = "app".into();
        p.mounts.push(secret.clone());
    });
    assert_eq!(r.unwrap().status.code(), 1, "grep finds nothing, so it fails; stderr: {err}");
    assert_eq!(out, "s3cr3t-value\n1000 1000 400\ntmpfs\n0\n");
    assert!(!f.upper().join("run").exists(), "the secret's mount point reached the layer");
    let mut found = Vec::new();
    for entry in walk(f.dir.path()) {
        if std::fs::read(&entry).is_ok_and(|b| b.windows(6).any(|w| w == b"s3cr3t")) {
            found.push(entry);
        }
    }
    assert!(found.is_empty(), "secret bytes on disk: {found:?}");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let ft = e.file_type().unwrap();
        if ft.is_dir() {
            out.extend(walk(&e.path()));
        } else if ft.is_file() {
            out.push(e.path());
        }
    }
    out
}

fn ssh_agent_socket_is_forwarded_with_the_mount_owner_and_mode(kind: Kind) {
    require_root!(kind);
    let f = Fixture::with(kind);
    let agent_path = f.dir.path().join("agent.sock");
    let _agent = UnixListener::bind(&agent_path).unwrap();
    let ssh = RunMount {
        destination: "/run/buildkit/ssh_agent.0".into(),
        kind: RunMountKind::Ssh { socket: agent_path.clone(), uid: 1000, gid: 10, mode: 0o600 },
    };
    let (r, out, err) = f.sh("stat -c '%F %u %g %a' /run/buildkit/ssh_agent.0", |p| p.mounts.push(ssh.clone()));
    assert!(r.unwrap().status.success(), "stderr: {err}");
    assert_eq!(out, "socket 1000 10 600\n");
    assert!(!f.upper().join("run").exists(), "the ssh mount point reached the layer");

    let missing = RunMount {
        destination: "/ssh".into(),
        kind: RunMountKind::Ssh { socket: f.dir.path().join("nope"), uid: 0, gid: 0, mode: 0o600 },
    };
    let (r, _, _) = f.sh("true", |p| p.mounts.push(missing));
    assert!(r.unwrap_err().to_string().contains("cannot forward the ssh agent to /ssh"));
}

fn cache_directory_persists_between_runs_and_private_users_are_apart(kind: Kind) {
    require_root!(kind);
    let f = Fixture::with(kind);
    let caches = CacheMounts::new(f.dir.path().join("caches"));
    let mount = |path: &std::path::Path| RunMount {
        destination: "/root/.cache".into(),
        kind: RunMountKind::Bind { source: path.to_path_buf(), readonly: false },
    };
    let lease = caches.acquire("pip", Sharing::Locked, 0o755, 0, 0, None).unwrap();
    let (r, _, err) = f.sh("echo one >> /root/.cache/log", |p| p.mounts.push(mount(&lease.path)));
    assert!(r.unwrap().status.success(), "stderr: {err}");
    drop(lease);
    f.reset();
    let lease = caches.acquire("pip", Sharing::Shared, 0o755, 0, 0, None).unwrap();
    let private = caches.acquire("pip", Sharing::Private, 0o755, 0, 0, None).unwrap();
    let (r, out, err) =
        f.sh("echo two >> /root/.cache/log; cat /root/.cache/log", |p| p.mounts.push(mount(&lease.path)));
    assert!(r.unwrap().status.success(), "stderr: {err}");
    assert_eq!(out, "one\ntwo\n");
    let (r, out, _) = f.sh("ls -A /root/.cache | wc -l", |p| p.mounts.push(mount(&private.path)));
    assert!(r.unwrap().status.success());
    assert_eq!(out.trim(), "0", "a private user sees a fresh directory");
    assert!(!f.upper().join("root/.cache/log").exists(), "cache content reached the layer");
}

both_executors!(
    secret_is_readable_owned_read_only_on_tmpfs_and_absent_from_the_layer,
    ssh_agent_socket_is_forwarded_with_the_mount_owner_and_mode,
    cache_directory_persists_between_runs_and_private_users_are_apart,
);
