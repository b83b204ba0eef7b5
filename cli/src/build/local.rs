//! A build run by the engine in this process.

use std::sync::Arc;

use anyhow::{anyhow, Result};
use engine::{BuildError, BuildRequest, Engine, EngineOptions};

use super::progress::Renderer;
use super::{render, until_done, Outcome, Stop};
use crate::images::Globals;

/// The engine on the state root (waiting for its lock if another process holds it).
pub(crate) fn open(g: &Globals, oci_runtime: &str) -> Result<Arc<Engine>> {
    let root = g.root.clone().unwrap_or_else(snapshotter::root::StateRoot::default_path);
    let client = crate::images::registry_client(g)?;
    let opts = EngineOptions { root, client, oci_runtime: oci_runtime.to_string(), max_parallelism: None };
    Ok(Engine::open(opts, &mut |w| eprintln!("{w}"))?)
}

pub(crate) async fn run(
    engine: &Arc<Engine>,
    req: BuildRequest,
    renderer: Renderer,
) -> Result<(Outcome, Option<Stop>)> {
    let mut handle = engine.build(req);
    let events = handle.events().ok_or_else(|| anyhow!("the build's events were taken"))?;
    let rendering = render(renderer, events);
    let canceller = handle.canceller();
    let (result, stopped) = until_done(handle.wait(), move || canceller.cancel()).await;
    let _ = rendering.await;
    let outcome = match result {
        Ok(r) => Outcome::Done { image_id: r.image_id(), metadata: r.metadata },
        Err(BuildError::Cancelled) => Outcome::Cancelled,
        Err(BuildError::Dockerfile { diagnostic, .. }) => Outcome::Dockerfile(diagnostic),
        Err(BuildError::Solve(solver::SolveError::Run(f))) => Outcome::Run(*f),
        Err(BuildError::Solve(e)) => Outcome::Solve(e.to_string()),
        Err(BuildError::Export { source, .. }) => Outcome::Other(source.into()),
        Err(e) => Outcome::Other(e.into()),
    };
    Ok((outcome, stopped))
}
