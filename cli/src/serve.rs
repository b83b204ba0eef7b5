//! `rbuild serve`: the build daemon on a unix socket (default `/run/rbuild/rbuild.sock`) and/or TCP with
//! mutual TLS, running every client's builds on one state root; with `--docker-api`, the Docker Engine
//! API's image endpoints too.

use std::collections::BTreeSet;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;
use daemon::docker::{DockerApi, DockerApiOptions};
use daemon::server::{Daemon, ServeOptions};
use daemon::Address;
use engine::{Engine, EngineOptions, Entitlement};
use tokio_util::sync::CancellationToken;

use crate::images::Globals;

/// `rbuild serve [OPTIONS]`.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Where to listen: `unix:///PATH` or `tcp://HOST:PORT`; repeatable (default:
    /// unix:///run/rbuild/rbuild.sock). TCP needs --tlscacert, --tlscert and --tlskey.
    #[arg(long = "addr", value_name = "ADDRESS")]
    addrs: Vec<String>,
    /// Also serve the Docker Engine API's image endpoints (for `DOCKER_HOST`, docker-py, ...) on
    /// `unix:///PATH` or `tcp://HOST:PORT`; repeatable. TCP has the same TLS rules as --addr.
    #[arg(long = "docker-api", value_name = "ADDRESS")]
    docker_api: Vec<String>,
    /// Serve TCP without TLS: anyone who reaches the port can run builds as root.
    #[arg(long)]
    insecure_tcp: bool,
    /// Let builds use an entitlement they ask for: `network.host` or `security.insecure`; repeatable.
    #[arg(long = "allow", value_name = "ENTITLEMENT")]
    allow: Vec<String>,
    /// Steps running at once across all builds (default: four per core).
    #[arg(long = "max-parallelism", value_name = "N")]
    max_parallelism: Option<usize>,
    /// What runs RUN steps: `namespace`, `runc`, `crun` or a path to an OCI runtime.
    #[arg(long = "oci-runtime", value_name = "RUNTIME", default_value = "namespace")]
    oci_runtime: String,
    #[command(flatten)]
    fleet: crate::fleet::FleetServeArgs,
}

pub fn run(a: ServeArgs, g: &Globals) -> Result<ExitCode> {
    let addrs: Vec<Address> = if a.addrs.is_empty() {
        vec![Address::default_socket()]
    } else {
        a.addrs.iter().map(|s| s.parse()).collect::<Result<_, _>>().context("--addr")?
    };
    let allow: BTreeSet<Entitlement> =
        a.allow.iter().map(|e| e.parse()).collect::<Result<_, _>>().context("--allow")?;
    let opts =
        ServeOptions { addrs, tls: crate::remote::tls_of(g)?, insecure_tcp: a.insecure_tcp, allow: allow.clone() };
    let docker_addrs: Vec<Address> =
        a.docker_api.iter().map(|s| s.parse()).collect::<Result<_, _>>().context("--docker-api")?;
    let docker_opts = DockerApiOptions { addrs: docker_addrs, tls: opts.tls.clone(), insecure_tcp: a.insecure_tcp };
    // Refused before anything is opened: a TCP address without TLS.
    daemon::server::check(&opts)?;
    daemon::docker::check(&docker_opts)?;
    for addr in opts.addrs.iter().chain(&docker_opts.addrs) {
        if matches!(addr, Address::Tcp(_)) && opts.tls.is_none() {
            eprintln!("warning: serving {addr} without TLS (--insecure-tcp): anyone who reaches it can build as root");
        }
    }
    let root = g.root.clone().unwrap_or_else(snapshotter::root::StateRoot::default_path);
    let client = crate::images::registry_client(g)?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let eopts = EngineOptions {
        root: root.clone(),
        client,
        oci_runtime: a.oci_runtime.clone(),
        max_parallelism: Some(a.max_parallelism.unwrap_or_else(solver::default_max_parallelism).max(1)),
    };
    let engine = Engine::open(eopts, &mut |w| eprintln!("{w}"))?;
    let daemon = Daemon::new(engine, allow).with_fleet(a.fleet.fleet(g)?);
    let mut listening: Vec<String> = opts.addrs.iter().map(|a| a.to_string()).collect();
    listening.extend(docker_opts.addrs.iter().map(|a| format!("{a} (Docker API)")));
    let ready = || {
        eprintln!("rbuild daemon {} serving {} on {}", env!("CARGO_PKG_VERSION"), root.display(), listening.join(", "))
    };
    // Registry requests of Docker API clients that send no login use the daemon's, as its builds do.
    let creds = registry::auth::DockerConfig::load(&registry::auth::DockerConfig::default_path())?;
    let docker = DockerApi::new(daemon.clone(), Arc::new(creds));
    rt.block_on(async {
        let stop = CancellationToken::new();
        let signalled = stop.clone();
        let fleet = daemon.fleet().clone();
        tokio::spawn(async move {
            stopped().await;
            // Not ready from now on; builds in flight (their cache exports included) finish first.
            fleet.health.drain().await;
            fleet.health.idle().await;
            signalled.cancel();
        });
        let health_stop = CancellationToken::new();
        let health_served = a.fleet.serve_health(&daemon, health_stop.clone()).await?;
        let docker_served = match docker_opts.addrs.is_empty() {
            true => None,
            false => {
                let listeners = daemon::docker::bind(&docker_opts).await?;
                Some(tokio::spawn(listeners.serve(docker, stop.clone().cancelled_owned())))
            }
        };
        let served = daemon::server::serve(daemon, &opts, ready, stop.clone().cancelled_owned()).await;
        // The gRPC side stopped (or failed): so does the Docker API, after its requests in flight.
        stop.cancel();
        if let Some(d) = docker_served {
            let _ = d.await;
        }
        health_stop.cancel();
        if let Some(h) = health_served {
            let _ = h.await;
        }
        served
    })?;
    for addr in opts.addrs.iter().chain(&docker_opts.addrs) {
        if let Address::Unix(p) = addr {
            let _ = std::fs::remove_file(p);
        }
    }
    eprintln!("rbuild daemon stopped");
    Ok(ExitCode::SUCCESS)
}

/// The first SIGINT or SIGTERM: stop accepting, let running builds finish. A second one exits at once.
async fn stopped() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
    eprintln!("rbuild daemon stopping: running builds finish first (signal again to exit now)");
    tokio::spawn(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        std::process::exit(130);
    });
}
