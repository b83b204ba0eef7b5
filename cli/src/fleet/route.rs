//! Which daemon of a fleet a command talks to. `--host` names one daemon, several (`tcp://a:1234,tcp://b:1234`)
//! or a DNS name whose A/AAAA records are the daemons (a headless Service). A build goes to the first
//! daemon that takes builds in its project's rendezvous order (highest random weight: each daemon's
//! score is a hash of the project key and the daemon), so a project sticks to one daemon while the fleet
//! is stable, and only the projects of a daemon that goes away (or drains, or refuses) move, each to its
//! next daemon.

use std::net::{IpAddr, ToSocketAddrs};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use daemon::client::{Connection, RemoteBuild, RemoteError, RemoteResult};
use daemon::{Address, DaemonError, TlsFiles};
use sha2::{Digest as _, Sha256};
use tokio_util::sync::CancellationToken;

/// How long a daemon may take to accept a connection or answer the health check before the next one is
/// tried.
const PATIENCE: Duration = Duration::from_secs(3);

/// One daemon of the fleet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Member {
    /// Where to dial.
    pub(crate) addr: Address,
    /// The name its certificate must carry when that is not the address's host (found by a DNS name).
    pub(crate) server_name: Option<String>,
    /// The `--host` entry, when it names this daemon alone (a StatefulSet pod's own DNS name,
    /// `rbuild-0.rbuild:1234`): rendezvous scores it instead of the address, so a pod restarted with a new
    /// IP keeps its projects.
    pub(crate) stable: Option<String>,
}

impl Member {
    /// What rendezvous hashing scores: the name that stands for this daemon alone, else the dialled address.
    fn id(&self) -> String {
        self.stable.clone().unwrap_or_else(|| self.addr.to_string())
    }

    pub(crate) async fn connect(&self, tls: Option<&TlsFiles>) -> Result<Connection> {
        let c = daemon::client::connect_as(&self.addr, tls, self.server_name.as_deref());
        match tokio::time::timeout(PATIENCE, c).await {
            Ok(r) => Ok(r?),
            Err(_) => bail!("cannot reach the rbuild daemon at {}: no answer in {}s", self.addr, PATIENCE.as_secs()),
        }
    }
}

impl std::fmt::Display for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.server_name {
            Some(name) => write!(f, "{} ({name})", self.addr),
            None => write!(f, "{}", self.addr),
        }
    }
}

/// The daemons `--host` names: comma-separated addresses; a TCP address whose host is a name (not an IP
/// address) stands for every address it resolves to.
pub(crate) fn members(host: &str) -> Result<Vec<Member>> {
    let mut out: Vec<Member> = Vec::new();
    for part in host.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let addr: Address = part.parse().with_context(|| format!("--host {part}"))?;
        let name = addr.host().filter(|h| h.parse::<IpAddr>().is_err()).map(String::from);
        match (&addr, name) {
            (Address::Tcp(hp), Some(name)) => {
                let resolved: Vec<_> =
                    hp.to_socket_addrs().with_context(|| format!("--host {part}: cannot resolve {name}"))?.collect();
                if resolved.is_empty() {
                    bail!("--host {part}: {name} has no A or AAAA record");
                }
                for m in named(hp, &name, &resolved) {
                    if !out.contains(&m) {
                        out.push(m);
                    }
                }
            }
            _ => {
                let m = Member { addr, server_name: None, stable: None };
                if !out.contains(&m) {
                    out.push(m);
                }
            }
        }
    }
    if out.is_empty() {
        bail!("--host {host:?}: no daemon address");
    }
    Ok(out)
}

/// The daemons a DNS name `name` (`hp` = `name:port`) resolved to: one member per address; a name with one
/// address stands for that daemon alone and keeps its place in rendezvous order across address changes.
fn named(hp: &str, name: &str, resolved: &[std::net::SocketAddr]) -> Vec<Member> {
    let stable = (resolved.len() == 1).then(|| hp.to_string());
    resolved
        .iter()
        .map(|sa| Member {
            addr: Address::Tcp(sa.to_string()),
            server_name: Some(name.to_string()),
            stable: stable.clone(),
        })
        .collect()
}

/// The project a build belongs to (context, Dockerfile path, target); the daemon tags the project's
/// fleet cache record with the same key.
pub(crate) fn project_key(start: &daemon::proto::BuildStart) -> String {
    daemon::fleet::project_key(start)
}

/// `members` in the order `project` tries them: highest rendezvous score first.
pub(crate) fn rendezvous<'a>(members: &'a [Member], project: &str) -> Vec<&'a Member> {
    let score = |m: &Member| {
        let d = Sha256::new().chain_update(project.as_bytes()).chain_update([0]).chain_update(m.id()).finalize();
        u64::from_be_bytes(d[..8].try_into().unwrap_or_default())
    };
    let mut order: Vec<(u64, &Member)> = members.iter().map(|m| (score(m), m)).collect();
    order.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.id().cmp(&b.1.id())));
    order.into_iter().map(|(_, m)| m).collect()
}

/// The first daemon in `order` that accepts a connection and, when there is a choice, says it takes
/// builds (grpc.health.v1 SERVING: not starting, not draining). Each one passed over is said on stderr.
pub(crate) async fn first_ready(order: &[&Member], tls: Option<&TlsFiles>) -> Result<(Connection, Member)> {
    let check = order.len() > 1;
    let mut why = Vec::new();
    for m in order {
        let reason = match m.connect(tls).await {
            Err(e) => format!("{e:#}"),
            Ok(c) if !check => return Ok((c, (*m).clone())),
            Ok(mut c) => match tokio::time::timeout(PATIENCE, c.ready()).await {
                Ok(Ok(true)) => {
                    if !why.is_empty() {
                        eprintln!("fleet: building on {m}");
                    }
                    return Ok((c, (*m).clone()));
                }
                Ok(Ok(false)) => "not ready (starting or draining)".to_string(),
                Ok(Err(e)) => format!("{e}"),
                Err(_) => format!("no health answer in {}s", PATIENCE.as_secs()),
            },
        };
        eprintln!("fleet: skipping {m}: {reason}");
        why.push(format!("{m}: {reason}"));
    }
    bail!("no rbuild daemon takes builds:\n  {}", why.join("\n  "))
}

/// Runs `b` on its project's daemon: the first in rendezvous order that takes builds; a daemon that
/// refuses it at the start (it began draining after its health check) hands it to the next one.
pub(crate) async fn build(
    members: &[Member],
    tls: Option<&TlsFiles>,
    mut b: RemoteBuild,
    mut on_event: impl FnMut(engine::Event),
    cancel: CancellationToken,
) -> Result<RemoteResult, RemoteError> {
    let project = project_key(&b.start);
    let order = rendezvous(members, &project);
    let mut from = 0;
    loop {
        let (mut conn, m) = first_ready(&order[from..], tls)
            .await
            .map_err(|e| RemoteError::Daemon(DaemonError::Protocol(format!("{e:#}"))))?;
        match conn.try_build(b, &mut on_event, cancel.clone()).await {
            Ok(r) => return r,
            Err(refused) if from + 1 < order.len() => {
                eprintln!("fleet: {m} refused the build ({}): trying the next daemon", refused.message);
                from = order.iter().position(|o| **o == m).unwrap_or(from) + 1;
                b = *refused.build;
            }
            Err(refused) => return Err(DaemonError::Protocol(format!("{m}: {}", refused.message)).into()),
        }
        if from >= order.len() {
            return Err(DaemonError::Protocol("every rbuild daemon of the fleet refused the build".into()).into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(i: u8) -> Member {
        Member { addr: Address::Tcp(format!("10.0.0.{i}:1234")), server_name: None, stable: None }
    }

    #[test]
    fn projects_stick_and_only_a_gone_daemons_projects_move() {
        let fleet: Vec<Member> = (1..=4).map(tcp).collect();
        let projects: Vec<String> = (0..400).map(|i| format!("project-{i}")).collect();
        let first = |ms: &[Member], p: &str| rendezvous(ms, p)[0].clone();
        // Spread: every daemon gets a fair share (400 projects, 4 daemons: 100 expected each).
        for m in &fleet {
            let n = projects.iter().filter(|p| first(&fleet, p) == *m).count();
            assert!((60..=140).contains(&n), "{m}: {n} projects");
        }
        // Member order in --host does not matter.
        let mut reversed = fleet.clone();
        reversed.reverse();
        assert!(projects.iter().all(|p| first(&fleet, p) == first(&reversed, p)));
        // Without daemon 2, its projects go to their second choice and no other project moves.
        let without: Vec<Member> = fleet.iter().filter(|m| **m != tcp(2)).cloned().collect();
        for p in &projects {
            let before = rendezvous(&fleet, p);
            let after = first(&without, p);
            if *before[0] == tcp(2) {
                assert_eq!(after, *before[1], "{p}");
            } else {
                assert_eq!(after, *before[0], "{p}");
            }
        }
    }

    #[test]
    fn the_project_key_is_context_dockerfile_and_target() {
        let start = |ctx: &str, file: &str, target: Option<&str>| daemon::proto::BuildStart {
            context_key: ctx.into(),
            dockerfile_name: file.into(),
            target: target.map(String::from),
            ..Default::default()
        };
        let k = project_key(&start("c", "Dockerfile", None));
        assert_eq!(k, project_key(&start("c", "Dockerfile", Some(""))));
        assert_ne!(k, project_key(&start("c", "Dockerfile", Some("test"))));
        assert_ne!(k, project_key(&start("c", "other/Dockerfile", None)));
        assert_ne!(k, project_key(&start("d", "Dockerfile", None)));
        // Parts are length-prefixed: moving a boundary changes the key.
        assert_ne!(project_key(&start("ab", "c", None)), project_key(&start("a", "bc", None)));
    }

    #[test]
    fn host_lists_and_names_become_members() {
        let ms = members("tcp://10.0.0.1:1234, tcp://10.0.0.2:1234,unix:///run/x.sock,tcp://10.0.0.1:1234").unwrap();
        assert_eq!(ms.len(), 3);
        assert_eq!(ms[2].addr, Address::Unix("/run/x.sock".into()));
        let local = members("tcp://localhost:1234").unwrap();
        assert!(local.iter().all(|m| m.server_name.as_deref() == Some("localhost")), "{local:?}");
        assert!(local.iter().any(|m| m.addr.host() == Some("127.0.0.1")), "{local:?}");
        let e = members("tcp://no-such-host.invalid:1234").unwrap_err().to_string();
        assert!(e.contains("cannot resolve no-such-host.invalid"), "{e}");
        assert!(members(" , ").unwrap_err().to_string().contains("no daemon address"));
    }

    #[test]
    fn a_pods_own_name_keeps_its_projects_when_its_address_changes() {
        let sa = |s: &str| s.parse::<std::net::SocketAddr>().unwrap();
        let fleet = |pod0: &str| {
            let mut ms = named("rbuild-0.rbuild:1234", "rbuild-0.rbuild", &[sa(pod0)]);
            ms.extend(named("rbuild-1.rbuild:1234", "rbuild-1.rbuild", &[sa("10.0.0.2:1234")]));
            ms.extend(named("rbuild-2.rbuild:1234", "rbuild-2.rbuild", &[sa("10.0.0.3:1234")]));
            ms
        };
        let (before, after) = (fleet("10.0.0.1:1234"), fleet("10.0.0.9:1234"));
        for p in (0..50).map(|i| format!("project-{i}")) {
            let pick = |ms: &[Member]| rendezvous(ms, &p)[0].stable.clone();
            assert_eq!(pick(&before), pick(&after), "{p} moved when rbuild-0 came back on a new address");
        }
        // A name with several addresses (a headless Service) stands for several daemons: each is its address.
        let service = named("rbuild:1234", "rbuild", &[sa("10.0.0.1:1234"), sa("10.0.0.2:1234")]);
        assert!(service.iter().all(|m| m.stable.is_none() && m.id() == m.addr.to_string()));
    }
}
