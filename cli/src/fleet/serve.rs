//! `rbuild serve`'s fleet flags: the fleet cache, the HTTP health listener, the build limit.

use anyhow::Result;
use clap::Args;
use daemon::fleet::{Fleet, FleetCache, FleetConfig};
use daemon::health::HealthListener;
use daemon::server::Daemon;
use tokio_util::sync::CancellationToken;

use crate::images::Globals;

#[derive(Args, Debug)]
pub struct FleetServeArgs {
    /// The fleet's cache, which every build imports from and exports to (mode=max, ignore-error=true
    /// unless given): `type=registry,ref=REGISTRY/REPOSITORY[,...]`. Default: `[fleet] cache-backend` of
    /// rbuild.toml, else none.
    #[arg(long = "cache-backend", value_name = "SPEC")]
    cache_backend: Option<String>,
    /// Serve GET /healthz, /readyz and /metrics over plain HTTP on HOST:PORT (default: none; a pod uses
    /// 0.0.0.0:9090 for its probes and Prometheus).
    #[arg(long = "health-addr", value_name = "HOST:PORT")]
    health_addr: Option<String>,
    /// Builds running at once; more wait (queued). Default: no limit.
    #[arg(long = "max-builds", value_name = "N")]
    max_builds: Option<usize>,
}

impl FleetServeArgs {
    /// The fleet settings: the flag, else the config file's `[fleet]` table.
    pub fn fleet(&self, g: &Globals) -> Result<Fleet> {
        let cache = match &self.cache_backend {
            Some(spec) => Some(FleetCache::parse("--cache-backend", spec)?),
            None => match registry::config::Config::default_path(g.config.as_deref(), is_root()) {
                Some((path, required)) => match FleetConfig::load(&path, required)?.cache_backend {
                    Some(spec) => Some(FleetCache::parse(&format!("{} [fleet] cache-backend", path.display()), &spec)?),
                    None => None,
                },
                None => None,
            },
        };
        if let Some(c) = &cache {
            eprintln!("fleet cache: every build imports from and exports to {}", c.reference);
        }
        Ok(Fleet::new(cache, self.max_builds))
    }

    /// Starts the HTTP health listener, when asked for, until `stop`.
    pub async fn serve_health(
        &self,
        daemon: &Daemon,
        stop: CancellationToken,
    ) -> Result<Option<tokio::task::JoinHandle<()>>, daemon::DaemonError> {
        let Some(addr) = &self.health_addr else { return Ok(None) };
        let listener = HealthListener::bind(addr).await?;
        let at = listener.local_addr().map(|a| a.to_string()).unwrap_or_else(|| addr.clone());
        eprintln!("health and metrics on http://{at}/ (/healthz, /readyz, /metrics)");
        let daemon = daemon.clone();
        Ok(Some(tokio::spawn(async move { listener.serve(daemon, stop.cancelled_owned()).await })))
    }
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}
