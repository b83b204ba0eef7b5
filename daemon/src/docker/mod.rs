//! The Docker Engine API's image endpoints (`rbuild serve --docker-api ADDRESS`), so that the clients CI
//! systems already have (the `docker` CLI with `DOCKER_HOST` and `DOCKER_BUILDKIT=0`, docker-py,
//! dockerode, docker-compose) build, list, tag, push, save, load and remove images with rbuild.
//!
//! HTTP/1.1 with hyper on unix sockets (mode 0660) and TCP, which needs mutual TLS as the gRPC API does
//! (`--tlscacert`, `--tlscert`, `--tlskey`; `--insecure-tcp` to serve without). Paths are versioned as
//! dockerd's are (`/v1.41/images/json`, or unversioned): [`router`] negotiates. Builds run on the daemon's
//! one [`engine::Engine`], from a context the client sends as a tar ([`context`]); long answers (builds,
//! pulls, pushes, loads) are streams of dockerd's JSON messages ([`reply::JsonStream`]). Container, volume,
//! network and exec endpoints answer 501: rbuild builds and stores images, it does not run containers.

mod bases;
mod build;
mod context;
mod error;
mod images;
mod reply;
mod router;
mod system;
mod transfer;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use registry::auth::CredentialSource;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::server::Daemon;
use crate::{Address, DaemonError, TlsFiles};

/// The API version served (Docker 20.10's), and the oldest one accepted (dockerd's minimum).
pub const API_VERSION: &str = "1.41";
pub const MIN_API_VERSION: &str = "1.24";

/// How long a client may take to send its request's headers, or to send more of a request body.
const HEADER_TIMEOUT: Duration = Duration::from_secs(60);
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// Where and how to serve the Docker API.
#[derive(Debug, Clone)]
pub struct DockerApiOptions {
    pub addrs: Vec<Address>,
    /// Required for TCP unless `insecure_tcp`.
    pub tls: Option<TlsFiles>,
    pub insecure_tcp: bool,
}

/// Refuses what cannot be served before anything is opened: a TCP address without TLS.
pub fn check(opts: &DockerApiOptions) -> Result<(), DaemonError> {
    for a in &opts.addrs {
        if matches!(a, Address::Tcp(_)) && opts.tls.is_none() && !opts.insecure_tcp {
            return Err(DaemonError::InsecureTcp { addr: a.to_string() });
        }
    }
    Ok(())
}

/// What every request handler shares: the daemon (its engine, counters and entitlements) and the
/// daemon's own registry logins, used where a client sends none.
pub(crate) struct State {
    pub(crate) daemon: Daemon,
    pub(crate) creds: Arc<dyn CredentialSource>,
}

/// The Docker API of one daemon.
#[derive(Clone)]
pub struct DockerApi {
    state: Arc<State>,
}

impl DockerApi {
    /// Serves `daemon`'s engine; registry requests without credentials from the client use `creds` (the
    /// daemon's docker config).
    pub fn new(daemon: Daemon, creds: Arc<dyn CredentialSource>) -> DockerApi {
        DockerApi { state: Arc::new(State { daemon, creds }) }
    }
}

enum Listener {
    Unix(tokio::net::UnixListener),
    Tcp(tokio::net::TcpListener, Option<tokio_rustls::TlsAcceptor>),
}

/// The bound sockets, before serving (bind first, so that "serving" is printed only once every address
/// listens).
pub struct Listeners {
    listeners: Vec<(Address, Listener)>,
}

/// Binds every address of `opts`.
pub async fn bind(opts: &DockerApiOptions) -> Result<Listeners, DaemonError> {
    check(opts)?;
    let mut listeners = Vec::new();
    for a in &opts.addrs {
        let l = match a {
            Address::Unix(path) => Listener::Unix(crate::server::bind_unix(path)?),
            Address::Tcp(hp) => {
                let l = crate::server::bind_tcp(a, hp).await?;
                let tls = match &opts.tls {
                    Some(t) => Some(tokio_rustls::TlsAcceptor::from(t.rustls_server_config()?)),
                    None => None,
                };
                Listener::Tcp(l, tls)
            }
        };
        listeners.push((a.clone(), l));
    }
    Ok(Listeners { listeners })
}

impl Listeners {
    /// Unix socket paths, for the caller to remove when the daemon stops.
    pub fn socket_paths(&self) -> Vec<PathBuf> {
        self.listeners
            .iter()
            .filter_map(|(a, _)| match a {
                Address::Unix(p) => Some(p.clone()),
                Address::Tcp(_) => None,
            })
            .collect()
    }

    /// Serves until `shutdown` resolves; then stops accepting and lets the requests in flight (a running
    /// build among them) finish.
    pub async fn serve(self, api: DockerApi, shutdown: impl Future<Output = ()> + Send + 'static) {
        let stop = CancellationToken::new();
        let conns = TaskTracker::new();
        let mut accepting = Vec::new();
        for (addr, l) in self.listeners {
            let (state, stop, conns) = (api.state.clone(), stop.clone(), conns.clone());
            accepting.push(tokio::spawn(accept_loop(addr, l, state, stop, conns)));
        }
        shutdown.await;
        stop.cancel();
        for a in accepting {
            let _ = a.await;
        }
        conns.close();
        conns.wait().await;
    }
}

async fn accept_loop(addr: Address, l: Listener, state: Arc<State>, stop: CancellationToken, conns: TaskTracker) {
    loop {
        match &l {
            Listener::Unix(u) => {
                let accepted = tokio::select! {
                    a = u.accept() => a,
                    _ = stop.cancelled() => return,
                };
                match accepted {
                    Ok((s, _)) => {
                        conns.spawn(serve_connection(s, state.clone(), stop.clone()));
                    }
                    Err(e) => accept_failed(&addr, e).await,
                }
            }
            Listener::Tcp(t, tls) => {
                let accepted = tokio::select! {
                    a = t.accept() => a,
                    _ = stop.cancelled() => return,
                };
                match accepted {
                    Ok((s, _)) => {
                        let _ = s.set_nodelay(true);
                        let (state, stop) = (state.clone(), stop.clone());
                        match tls.clone() {
                            None => {
                                conns.spawn(serve_connection(s, state, stop));
                            }
                            Some(acceptor) => {
                                conns.spawn(async move {
                                    // A client without a certificate of the CA fails here, before any request.
                                    let handshake = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(s));
                                    if let Ok(Ok(s)) = handshake.await {
                                        serve_connection(s, state, stop).await;
                                    }
                                });
                            }
                        }
                    }
                    Err(e) => accept_failed(&addr, e).await,
                }
            }
        }
    }
}

/// A failed accept (out of file descriptors, mostly; the client of that connection sees it closed): wait a
/// little rather than spin, and keep serving the others.
async fn accept_failed(_addr: &Address, _e: std::io::Error) {
    tokio::time::sleep(Duration::from_millis(100)).await;
}

async fn serve_connection<S>(io: S, state: Arc<State>, stop: CancellationToken)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = service_fn(move |req| {
        let state = state.clone();
        async move { Ok::<_, std::convert::Infallible>(router::handle(&state, req).await) }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        // A client that shuts its side down after a short body still gets the answer saying so.
        .half_close(true)
        .serve_connection(TokioIo::new(io), svc);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}
