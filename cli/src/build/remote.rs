//! A build run by a daemon (`--host`, or the daemon that holds the default state root): the same flags,
//! progress and results; contexts, secrets, agents and output files stay on this machine.

use anyhow::Result;
use daemon::client::{RemoteBuild, RemoteError, RemoteFailure};
use tokio_util::sync::CancellationToken;

use super::progress::Renderer;
use super::{render, until_done, Outcome, Stop};
use crate::remote::Target;

pub(crate) async fn run(target: Target, request: RemoteBuild, renderer: Renderer) -> Result<(Outcome, Option<Stop>)> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let rendering = render(renderer, rx);
    let cancel = CancellationToken::new();
    let stop = cancel.clone();
    // On a fleet, the project's daemon (rendezvous order, skipping daemons that are down or draining).
    let tls = target.tls.clone();
    let build = crate::fleet::build(&target.members, tls.as_ref(), request, move |e| drop(tx.send(e)), cancel);
    let (result, stopped) = until_done(build, move || stop.cancel()).await;
    let _ = rendering.await;
    let outcome = match result {
        Ok(r) => Outcome::Done { image_id: r.image_id, metadata: r.metadata },
        Err(RemoteError::Failed(RemoteFailure::Cancelled)) => Outcome::Cancelled,
        Err(RemoteError::Failed(RemoteFailure::Dockerfile(d))) => Outcome::Dockerfile(d),
        Err(RemoteError::Failed(RemoteFailure::Run(f))) => Outcome::Run(f),
        Err(RemoteError::Failed(RemoteFailure::Solve(m))) => Outcome::Solve(m),
        Err(RemoteError::Failed(RemoteFailure::Other(m))) => Outcome::Other(anyhow::anyhow!(m)),
        Err(e) => Outcome::Other(e.into()),
    };
    Ok((outcome, stopped))
}
