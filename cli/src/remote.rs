//! Which daemon a command talks to: `--host` (or `RBUILD_HOST`), else the daemon that holds the default
//! state root on its default socket, else none (the command runs in this process).

use std::path::PathBuf;

use anyhow::{bail, Result};
use daemon::address::DEFAULT_SOCKET;
use daemon::{Address, TlsFiles};

use crate::fleet::Member;
use crate::images::Globals;

/// A daemon to talk to, or a fleet of them (`--host` with several addresses or a DNS name).
pub(crate) struct Target {
    /// The first daemon `--host` names.
    pub(crate) addr: Address,
    pub(crate) tls: Option<TlsFiles>,
    /// Every daemon `--host` names (one for a single daemon).
    pub(crate) members: Vec<Member>,
}

impl Target {
    fn single(addr: Address, tls: Option<TlsFiles>) -> Target {
        Target { members: vec![Member { addr: addr.clone(), server_name: None, stable: None }], addr, tls }
    }

    /// The daemon for commands that are not a project's build: the first in `--host`'s order that
    /// takes builds.
    pub(crate) async fn connect(&self) -> Result<daemon::client::Connection> {
        let order: Vec<&Member> = self.members.iter().collect();
        Ok(crate::fleet::first_ready(&order, self.tls.as_ref()).await?.0)
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
        let members = crate::fleet::members(host)?;
        if members.iter().any(|m| matches!(m.addr, Address::Tcp(_))) && tls.is_none() {
            eprintln!("warning: {host} without TLS: the connection is neither authenticated nor encrypted");
        }
        return Ok(Some(Target { addr: members[0].addr.clone(), tls, members }));
    }
    // A daemon on the default socket holds the default state root: use it rather than wait for its lock.
    let default_root =
        g.root.is_none() || g.root.as_deref() == Some(snapshotter::root::StateRoot::default_path().as_path());
    let socket = PathBuf::from(DEFAULT_SOCKET);
    if default_root && socket.exists() && std::os::unix::net::UnixStream::connect(&socket).is_ok() {
        return Ok(Some(Target::single(Address::Unix(socket), None)));
    }
    Ok(None)
}

/// `--builder NAME` (else `BUILDX_BUILDER`): the daemon of `[builders.NAME]` in rbuild.toml, given as the
/// flags `--host` and `--tls*` would give it. `--host` (or `RBUILD_HOST`) wins. Returns the flags to use
/// and a note when the name chooses nothing (buildx's `default` builder is this machine: no note).
pub(crate) fn with_builder(g: &Globals, flag: Option<&str>) -> Result<(Globals, Option<String>)> {
    let (name, from) = match flag {
        Some(n) => (n.to_string(), format!("--builder {n}")),
        None => match std::env::var("BUILDX_BUILDER") {
            Ok(n) if !n.is_empty() => (n.clone(), format!("BUILDX_BUILDER={n}")),
            _ => return Ok((g.clone(), None)),
        },
    };
    let (builders, path) =
        match registry::Config::default_path(g.config.as_deref(), rustix::process::geteuid().is_root()) {
            Some((path, required)) => (daemon::builders::Builders::load(&path, required)?, path.display().to_string()),
            None => (daemon::builders::Builders::default(), "rbuild.toml".to_string()),
        };
    let Some(builder) = builders.get(&name) else {
        if name == "default" {
            return Ok((g.clone(), None));
        }
        let note = format!(
            "WARNING: {from}: no [builders.{name}] in {path}; this build runs on this machine, or on the daemon of \
             --host / RBUILD_HOST"
        );
        return Ok((g.clone(), Some(note)));
    };
    if let Some(host) = &g.host {
        return Ok((g.clone(), Some(format!("WARNING: {from}: --host {host} wins over [builders.{name}] of {path}"))));
    }
    let mut out = g.clone();
    out.host = Some(builder.host.clone());
    if let Some(tls) = builders.tls(&name)? {
        (out.tlscacert, out.tlscert, out.tlskey) = (Some(tls.ca), Some(tls.cert), Some(tls.key));
    }
    Ok((out, None))
}
