//! The daemon's health as a fleet sees it: `grpc.health.v1` on the gRPC addresses (service "" and
//! "rbuild.v1.Builder"), and a plain HTTP listener (`rbuild serve --health-addr`, default none) with
//! `GET /healthz` (the process answers), `GET /readyz` (it takes builds: listening and not draining) and
//! `GET /metrics` (Prometheus). The HTTP listener carries no build and no data beyond those, which is why
//! it may go without TLS where a kubelet and Prometheus reach it.
//!
//! Draining (the first SIGTERM): not ready at once, new builds refused with UNAVAILABLE so clients move
//! to another daemon, running builds (and their cache exports) finish, then the daemon exits.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::{HealthReporter, HealthService};
use tonic_health::ServingStatus;

use crate::server::Daemon;
use crate::DaemonError;

/// The gRPC service name clients check.
pub const BUILDER_SERVICE: &str = "rbuild.v1.Builder";

/// Readiness, drain and admission of builds.
pub struct Health {
    listening: AtomicBool,
    draining: AtomicBool,
    reporter: HealthReporter,
    service: HealthServer<HealthService>,
    /// Builds admitted or waiting (from request to result); a drain waits for zero.
    active: watch::Sender<u64>,
    /// `--max-builds`: builds beyond it wait (queued).
    slots: Option<Arc<Semaphore>>,
    queued: AtomicU64,
}

impl Default for Health {
    fn default() -> Health {
        Health::new(None)
    }
}

/// One build from request to result: counted as active until dropped.
pub struct BuildGuard {
    active: watch::Sender<u64>,
    _slot: Option<OwnedSemaphorePermit>,
}

impl Drop for BuildGuard {
    fn drop(&mut self) {
        self.active.send_modify(|n| *n = n.saturating_sub(1));
    }
}

impl Health {
    pub fn new(max_builds: Option<usize>) -> Health {
        let reporter = HealthReporter::new();
        let service = HealthServer::new(HealthService::from_health_reporter(reporter.clone()));
        Health {
            listening: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            reporter,
            service,
            active: watch::channel(0).0,
            slots: max_builds.map(|n| Arc::new(Semaphore::new(n.max(1)))),
            queued: AtomicU64::new(0),
        }
    }

    /// The `grpc.health.v1.Health` service to add beside the builder.
    pub fn grpc_service(&self) -> HealthServer<HealthService> {
        self.service.clone()
    }

    /// Listening on every address: ready unless draining.
    pub async fn listening(&self) {
        self.listening.store(true, Ordering::SeqCst);
        self.publish().await;
    }

    /// Starts the drain: not ready from now on, new builds refused.
    pub async fn drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
        self.publish().await;
    }

    pub fn is_ready(&self) -> bool {
        self.listening.load(Ordering::SeqCst) && !self.is_draining()
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    pub fn queued(&self) -> u64 {
        self.queued.load(Ordering::Relaxed)
    }

    async fn publish(&self) {
        let status = if self.is_ready() { ServingStatus::Serving } else { ServingStatus::NotServing };
        self.reporter.set_service_status("", status).await;
        self.reporter.set_service_status(BUILDER_SERVICE, status).await;
    }

    /// Admits a build: waits for a slot under `--max-builds` (counted as queued meanwhile). `None` when
    /// draining: the caller refuses the build.
    pub async fn admit(&self) -> Option<BuildGuard> {
        if self.is_draining() {
            return None;
        }
        self.active.send_modify(|n| *n += 1);
        let mut guard = BuildGuard { active: self.active.clone(), _slot: None };
        if let Some(slots) = &self.slots {
            self.queued.fetch_add(1, Ordering::Relaxed);
            let permit = slots.clone().acquire_owned().await;
            self.queued.fetch_sub(1, Ordering::Relaxed);
            guard._slot = permit.ok();
        }
        Some(guard)
    }

    /// Resolves when no build is active (after [`Health::drain`], none starts again).
    pub async fn idle(&self) {
        let mut rx = self.active.subscribe();
        let _ = rx.wait_for(|n| *n == 0).await;
    }
}

/// The HTTP health listener, bound.
pub struct HealthListener {
    listener: TcpListener,
}

impl HealthListener {
    /// Binds `addr` (`HOST:PORT`).
    pub async fn bind(addr: &str) -> Result<HealthListener, DaemonError> {
        let sock: SocketAddr = tokio::net::lookup_host(addr)
            .await
            .map_err(DaemonError::io(format!("resolving --health-addr {addr}")))?
            .next()
            .ok_or_else(|| DaemonError::Address(addr.to_string()))?;
        let listener = TcpListener::bind(sock).await.map_err(DaemonError::io(format!("listening on {addr}")))?;
        Ok(HealthListener { listener })
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// Answers until `shutdown` resolves (serve stops it after the gRPC side, so a drain shows as not
    /// ready until the end).
    pub async fn serve(self, daemon: Daemon, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                conn = self.listener.accept() => {
                    if let Ok((stream, _)) = conn {
                        tokio::spawn(answer(stream, daemon.clone()));
                    }
                }
            }
        }
    }
}

/// One request, one response, then the connection closes. Only `GET` of the three paths is served.
async fn answer(mut stream: TcpStream, daemon: Daemon) {
    let mut buf = Vec::with_capacity(1024);
    let read = tokio::time::timeout(Duration::from_secs(5), async {
        let mut chunk = [0u8; 1024];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 8192 {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    });
    if read.await.is_err() {
        return;
    }
    let line = buf.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut words = line.split_whitespace();
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    let health = &daemon.fleet().health;
    let (status, body, kind) = match (method, path) {
        ("GET", "/healthz") => ("200 OK", "ok\n".to_string(), "text/plain"),
        ("GET", "/readyz") if health.is_ready() => ("200 OK", "ready\n".to_string(), "text/plain"),
        ("GET", "/readyz") if health.is_draining() => {
            ("503 Service Unavailable", "draining\n".to_string(), "text/plain")
        }
        ("GET", "/readyz") => ("503 Service Unavailable", "starting\n".to_string(), "text/plain"),
        ("GET", "/metrics") => {
            let fleet = daemon.fleet();
            let text =
                fleet.metrics.render(daemon.counters(), health.queued(), health.is_ready(), health.is_draining());
            ("200 OK", text, "text/plain; version=0.0.4")
        }
        ("GET", _) => ("404 Not Found", "not found: use /healthz, /readyz or /metrics\n".to_string(), "text/plain"),
        _ => ("405 Method Not Allowed", "only GET\n".to_string(), "text/plain"),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(body.as_bytes()).await;
    let _ = stream.shutdown().await;
}
