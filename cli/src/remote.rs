//! Which daemon a command talks to: `--host` (or `RBUILD_HOST`), else the daemon that holds the default
//! state root on its default socket, else none (the command runs in this process).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use daemon::address::DEFAULT_SOCKET;
use daemon::{Address, TlsFiles};

use crate::images::Globals;

/// A daemon to talk to.
pub(crate) struct Target {
    pub(crate) addr: Address,
    pub(crate) tls: Option<TlsFiles>,
}

impl Target {
    pub(crate) async fn connect(&self) -> Result<daemon::client::Connection> {
        Ok(daemon::client::connect(&self.addr, self.tls.as_ref()).await?)
    }
}

/// The TLS files of the global flags: all three or none.
pub(crate) fn tls_of(g: &Globals) -> Result<Option<TlsFiles>> {
    match (&g.tlscacert, &g.tlscert, &g.tlskey) {
        (Some(ca), Some(cert), Some(key)) => {
            Ok(Some(TlsFiles { ca: ca.clone(), cert: cert.clone(), key: key.clone() }))
        }
        (None, None, None) => Ok(None),
        _ => bail!("TLS needs all three of --tlscacert, --tlscert and --tlskey"),
    }
}

/// The daemon this command uses, if any.
pub(crate) fn daemon_for(g: &Globals) -> Result<Option<Target>> {
    let tls = tls_of(g)?;
    if let Some(host) = &g.host {
        let addr: Address = host.parse().context("--host")?;
        if matches!(addr, Address::Tcp(_)) && tls.is_none() {
            eprintln!("warning: {addr} without TLS: the connection is neither authenticated nor encrypted");
        }
        return Ok(Some(Target { addr, tls }));
    }
    // A daemon on the default socket holds the default state root: use it rather than wait for its lock.
    let default_root =
        g.root.is_none() || g.root.as_deref() == Some(snapshotter::root::StateRoot::default_path().as_path());
    let socket = PathBuf::from(DEFAULT_SOCKET);
    if default_root && socket.exists() && std::os::unix::net::UnixStream::connect(&socket).is_ok() {
        return Ok(Some(Target { addr: Address::Unix(socket), tls: None }));
    }
    Ok(None)
}
