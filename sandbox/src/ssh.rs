//! Forwarding an ssh agent into a run (`RUN --mount=type=ssh`). As BuildKit does (`session/sshforward`),
//! the process does not get the agent's own socket: it gets a new socket, owned by the mount's uid/gid with
//! the mount's mode, and every connection to it is relayed to the agent. The agent's socket keeps its own
//! owner and mode, and the forwarding ends with the run.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// A listening socket relaying to an agent; dropping it stops accepting and removes the socket.
#[derive(Debug)]
pub struct AgentForward {
    path: PathBuf,
    /// The listener, kept to shut it down: that wakes the blocked accept even when the socket file is gone.
    listener: UnixListener,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl AgentForward {
    /// Listens on `path` (owned by `uid`:`gid`, with `mode`) and relays each connection to the agent socket
    /// `agent`. The agent is checked to exist now; connections are made to it as they come.
    pub fn start(path: &Path, agent: &Path, uid: u32, gid: u32, mode: u32) -> io::Result<AgentForward> {
        let meta = std::fs::metadata(agent)
            .map_err(|e| io::Error::new(e.kind(), format!("ssh agent socket {}: {e}", agent.display())))?;
        if !std::os::unix::fs::FileTypeExt::is_socket(&meta.file_type()) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("ssh agent {} is not a socket; pass the path of SSH_AUTH_SOCK", agent.display()),
            ));
        }
        let listener = UnixListener::bind(path)?;
        std::os::unix::fs::chown(path, Some(uid), Some(gid))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & 0o777))?;
        let stop = Arc::new(AtomicBool::new(false));
        let (stop2, agent) = (stop.clone(), agent.to_path_buf());
        let ours = listener.try_clone()?;
        let acceptor = std::thread::Builder::new().name("ssh-forward".into()).spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = conn else {
                    // A shut-down listener fails every accept: stop instead of spinning.
                    if stop2.load(Ordering::SeqCst) {
                        return;
                    }
                    continue;
                };
                let agent = agent.clone();
                let _ = std::thread::Builder::new().name("ssh-relay".into()).spawn(move || relay(client, &agent));
            }
        })?;
        Ok(AgentForward { path: path.to_path_buf(), listener: ours, stop, acceptor: Some(acceptor) })
    }
}

/// Copies both ways between a client and a new connection to the agent until either side closes.
fn relay(client: UnixStream, agent: &Path) {
    let Ok(upstream) = UnixStream::connect(agent) else { return };
    let (Ok(mut c_read), Ok(mut u_write)) = (client.try_clone(), upstream.try_clone()) else { return };
    let back = std::thread::spawn(move || {
        let (mut u_read, mut c_write) = (upstream, client);
        let _ = io::copy(&mut u_read, &mut c_write);
        let _ = c_write.shutdown(std::net::Shutdown::Write);
    });
    let _ = io::copy(&mut c_read, &mut u_write);
    let _ = u_write.shutdown(std::net::Shutdown::Write);
    let _ = back.join();
}

impl Drop for AgentForward {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Shutting a listening socket down makes a blocked accept fail (Linux), so the thread sees the flag.
        let _ = rustix::net::shutdown(&self.listener, rustix::net::Shutdown::Both);
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn relays_to_the_agent_with_its_own_owner_and_mode() {
        let dir = tempfile::tempdir().unwrap();
        let agent_path = dir.path().join("agent.sock");
        let agent = UnixListener::bind(&agent_path).unwrap();
        let echo = std::thread::spawn(move || {
            let (mut s, _) = agent.accept().unwrap();
            let mut buf = Vec::new();
            s.read_to_end(&mut buf).unwrap();
            buf.reverse();
            s.write_all(&buf).unwrap();
        });
        let uid = rustix::process::geteuid().as_raw();
        let gid = rustix::process::getegid().as_raw();
        let fwd_path = dir.path().join("fwd.sock");
        let fwd = AgentForward::start(&fwd_path, &agent_path, uid, gid, 0o600).unwrap();
        assert_eq!(std::fs::metadata(&fwd_path).unwrap().mode() & 0o777, 0o600);
        let mut c = UnixStream::connect(&fwd_path).unwrap();
        c.write_all(b"abc").unwrap();
        c.shutdown(std::net::Shutdown::Write).unwrap();
        let mut got = String::new();
        c.read_to_string(&mut got).unwrap();
        assert_eq!(got, "cba");
        echo.join().unwrap();
        drop(fwd);
        assert!(!fwd_path.exists());
        let err = AgentForward::start(&fwd_path, &dir.path().join("none"), uid, gid, 0o600).unwrap_err();
        assert!(err.to_string().contains("ssh agent socket"), "{err}");
    }
}
