//! `rbuild serve`: the gRPC service on unix sockets and mutual-TLS TCP, running every client's builds on one
//! engine (one state root, one cache, identical steps run once).

mod images;
mod session;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use engine::export::{Dest, OutputKind, OutputSpec, SharedWriter};
use engine::{BuildRequest, CacheOptions, Engine, Entitlement, NamedContext};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::{ReceiverStream, UnixListenerStream};
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

use crate::convert::{compression_of, error_to_proto, event_to_proto};
use crate::mirror::Mirrors;
use crate::proto::builder_server::{Builder, BuilderServer};
use crate::proto::{self, client_message, output, server_message, BuildStart, ClientMessage, ServerMessage};
use crate::{Address, DaemonError, TlsFiles};
use session::{OutputWriter, RemoteContext, RemoteSecrets, RemoteSsh, Session};

/// How to serve.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub addrs: Vec<Address>,
    /// Required for TCP unless `insecure_tcp`.
    pub tls: Option<TlsFiles>,
    pub insecure_tcp: bool,
    /// Entitlements builds may ask for (`--allow network.host`).
    pub allow: BTreeSet<Entitlement>,
}

/// The daemon's counters (the `Info` call reports them).
#[derive(Debug, Default)]
pub struct Counters {
    pub builds_running: AtomicU64,
    pub builds_total: AtomicU64,
    /// Context bytes received from clients: stat and hash records and compressed file data.
    pub context_bytes: AtomicU64,
    /// Context files whose content was sent.
    pub context_files: AtomicU64,
}

/// The service.
#[derive(Clone)]
pub struct Daemon {
    engine: Arc<Engine>,
    mirrors: Arc<Mirrors>,
    allow: BTreeSet<Entitlement>,
    counters: Arc<Counters>,
    fleet: Arc<crate::fleet::Fleet>,
}

impl Daemon {
    /// A daemon over `engine`; client contexts are mirrored under the state root (`contexts/`).
    pub fn new(engine: Arc<Engine>, allow: BTreeSet<Entitlement>) -> Daemon {
        let mirrors = Arc::new(Mirrors::new(engine.store().root.path().join("contexts")));
        Daemon { engine, mirrors, allow, counters: Arc::default(), fleet: Arc::default() }
    }

    /// This daemon as one of a fleet: its cache backend, `--max-builds`.
    pub fn with_fleet(mut self, fleet: crate::fleet::Fleet) -> Daemon {
        self.fleet = Arc::new(fleet);
        self
    }

    /// Readiness, drain and metrics.
    pub fn fleet(&self) -> &Arc<crate::fleet::Fleet> {
        &self.fleet
    }

    pub fn counters(&self) -> &Arc<Counters> {
        &self.counters
    }

    /// The engine every build runs on (the Docker API's too).
    pub(crate) fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// The entitlements builds may use.
    pub(crate) fn allowed(&self) -> &BTreeSet<Entitlement> {
        &self.allow
    }
}

/// Validates `opts` before anything listens: a TCP address needs TLS unless `--insecure-tcp`.
pub fn check(opts: &ServeOptions) -> Result<(), DaemonError> {
    for a in &opts.addrs {
        if matches!(a, Address::Tcp(_)) && opts.tls.is_none() && !opts.insecure_tcp {
            return Err(DaemonError::InsecureTcp { addr: a.to_string() });
        }
    }
    Ok(())
}

/// Serves `daemon` on every address until `shutdown` resolves, then lets running calls finish. `ready` is
/// called once every address listens.
pub async fn serve(
    daemon: Daemon,
    opts: &ServeOptions,
    ready: impl FnOnce(),
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), DaemonError> {
    check(opts)?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut servers = Vec::new();
    for a in &opts.addrs {
        let svc = BuilderServer::new(daemon.clone()).max_decoding_message_size(16 << 20);
        let mut stop = stop_rx.clone();
        let stopped = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        match a {
            Address::Unix(path) => {
                let listener = bind_unix(path)?;
                let incoming = UnixListenerStream::new(listener);
                let server = tonic::transport::Server::builder()
                    .add_service(svc)
                    .add_service(daemon.fleet.health.grpc_service());
                servers.push(tokio::spawn(async move { server.serve_with_incoming_shutdown(incoming, stopped).await }));
            }
            Address::Tcp(hp) => {
                let listener = bind_tcp(a, hp).await?;
                // No Nagle: a reply's small frames (headers, then a context query) must not wait for the
                // client's delayed ACK, which costs ~40 ms a round trip.
                let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
                let mut builder = tonic::transport::Server::builder();
                if let Some(tls) = &opts.tls {
                    builder = builder.tls_config(tls.server_config()?).map_err(|e| DaemonError::Tls(e.to_string()))?;
                }
                let server = builder.add_service(svc).add_service(daemon.fleet.health.grpc_service());
                servers.push(tokio::spawn(async move { server.serve_with_incoming_shutdown(incoming, stopped).await }));
            }
        }
    }
    daemon.fleet.health.listening().await;
    ready();
    shutdown.await;
    let _ = stop_tx.send(true);
    for s in servers {
        match s.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(DaemonError::Protocol(format!("the server failed: {e}"))),
            Err(e) => return Err(DaemonError::Protocol(format!("a server task failed: {e}"))),
        }
    }
    Ok(())
}

/// Resolves `hp` (`HOST:PORT` of the address `a`) and listens on its first address.
pub(crate) async fn bind_tcp(a: &Address, hp: &str) -> Result<tokio::net::TcpListener, DaemonError> {
    let sock = tokio::net::lookup_host(hp)
        .await
        .map_err(DaemonError::io(format!("resolving {hp}")))?
        .next()
        .ok_or_else(|| DaemonError::Address(a.to_string()))?;
    tokio::net::TcpListener::bind(sock).await.map_err(DaemonError::io(format!("listening on {a}")))
}

/// Binds the socket (replacing a stale one) with mode 0660.
pub(crate) fn bind_unix(path: &PathBuf) -> Result<tokio::net::UnixListener, DaemonError> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(DaemonError::io(format!("creating {}", dir.display())))?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(DaemonError::Io {
                what: format!("listening on {}", path.display()),
                source: std::io::Error::new(std::io::ErrorKind::AddrInUse, "another daemon answers there"),
            });
        }
        // Left by a daemon that died: nobody answers it.
        std::fs::remove_file(path).map_err(DaemonError::io(format!("removing the stale socket {}", path.display())))?;
    }
    let l =
        tokio::net::UnixListener::bind(path).map_err(DaemonError::io(format!("listening on {}", path.display())))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .map_err(DaemonError::io(format!("chmod {}", path.display())))?;
    Ok(l)
}

type BuildStream = Pin<Box<dyn Stream<Item = Result<ServerMessage, Status>> + Send>>;

#[tonic::async_trait]
impl Builder for Daemon {
    type BuildStream = BuildStream;

    async fn build(&self, req: Request<Streaming<ClientMessage>>) -> Result<Response<BuildStream>, Status> {
        let mut inbound = req.into_inner();
        let first = inbound.message().await?.ok_or_else(|| Status::invalid_argument("an empty build stream"))?;
        let Some(client_message::Msg::Start(start)) = first.msg else {
            return Err(Status::invalid_argument("a build stream starts with `start`"));
        };
        // A draining daemon takes no new build: the client moves to another daemon of the fleet.
        let Some(admitted) = self.fleet.health.admit().await else {
            return Err(Status::unavailable("this rbuild daemon is draining (shutting down): use another"));
        };
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(self.clone().run(start, inbound, tx, admitted));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type PullStream = images::TransferStream;
    type PushStream = images::TransferStream;
    type SaveStream = images::ChunkStream;

    async fn list_images(
        &self,
        _req: Request<proto::ListImagesRequest>,
    ) -> Result<Response<proto::ListImagesResponse>, Status> {
        self.list_images().await.map(Response::new)
    }

    async fn tag_image(
        &self,
        req: Request<proto::TagImageRequest>,
    ) -> Result<Response<proto::TagImageResponse>, Status> {
        Daemon::tag_image(self, req.into_inner()).await.map(Response::new)
    }

    async fn remove_images(
        &self,
        req: Request<proto::RemoveImagesRequest>,
    ) -> Result<Response<proto::RemoveImagesResponse>, Status> {
        Daemon::remove_images(self, req.into_inner()).await.map(Response::new)
    }

    async fn inspect_image(
        &self,
        req: Request<proto::InspectImageRequest>,
    ) -> Result<Response<proto::InspectImageResponse>, Status> {
        Daemon::inspect_image(self, req.into_inner()).await.map(Response::new)
    }

    async fn image_history(
        &self,
        req: Request<proto::ImageHistoryRequest>,
    ) -> Result<Response<proto::ImageHistoryResponse>, Status> {
        Daemon::image_history(self, req.into_inner()).await.map(Response::new)
    }

    async fn pull(&self, req: Request<proto::PullRequest>) -> Result<Response<Self::PullStream>, Status> {
        Daemon::pull(self, req.into_inner())
    }

    async fn push(&self, req: Request<proto::PushRequest>) -> Result<Response<Self::PushStream>, Status> {
        Daemon::push(self, req.into_inner())
    }

    async fn save(&self, req: Request<proto::SaveRequest>) -> Result<Response<Self::SaveStream>, Status> {
        Daemon::save(self, req.into_inner())
    }

    async fn load(&self, req: Request<Streaming<proto::Chunk>>) -> Result<Response<proto::LoadResponse>, Status> {
        Daemon::load(self, req.into_inner()).await.map(Response::new)
    }

    async fn disk_usage(
        &self,
        _req: Request<proto::DiskUsageRequest>,
    ) -> Result<Response<proto::DiskUsageResponse>, Status> {
        Daemon::disk_usage(self).await.map(Response::new)
    }

    async fn prune(&self, req: Request<proto::PruneRequest>) -> Result<Response<proto::PruneResponse>, Status> {
        Daemon::prune(self, req.into_inner()).await.map(Response::new)
    }

    async fn info(&self, _req: Request<proto::InfoRequest>) -> Result<Response<proto::InfoResponse>, Status> {
        let c = &self.counters;
        Ok(Response::new(proto::InfoResponse {
            version: env!("CARGO_PKG_VERSION").into(),
            root: self.engine.store().root.path().display().to_string(),
            builds_running: c.builds_running.load(Ordering::Relaxed),
            builds_total: c.builds_total.load(Ordering::Relaxed),
            context_bytes: c.context_bytes.load(Ordering::Relaxed),
            context_files_sent: c.context_files.load(Ordering::Relaxed),
            entitlements: self.allow.iter().map(|e| e.to_string()).collect(),
        }))
    }
}

/// Which outputs stream to the client (their indexes), to end them when the build is over.
type Streamed = Vec<u32>;

impl Daemon {
    async fn run(
        self,
        start: BuildStart,
        inbound: Streaming<ClientMessage>,
        tx: session::Outbound,
        _admitted: crate::health::BuildGuard,
    ) {
        let c = self.counters.clone();
        c.builds_running.fetch_add(1, Ordering::Relaxed);
        c.builds_total.fetch_add(1, Ordering::Relaxed);
        let session = Session::new(tx.clone());
        let outcome = match self.request(&start, &session) {
            Err(message) => {
                Err(proto::BuildError { kind: proto::build_error::Kind::Request as i32, message, ..Default::default() })
            }
            Ok((req, streamed)) => {
                let mut handle = self.engine.build(req);
                let reader = tokio::spawn(session.clone().read(inbound, handle.canceller()));
                if let Some(mut events) = handle.events() {
                    while let Some(e) = events.recv().await {
                        self.fleet.metrics.event(&e);
                        let _ = session.send(server_message::Msg::Event(event_to_proto(&e))).await;
                    }
                }
                let result = handle.wait().await;
                self.fleet.metrics.build_done(result.as_ref().ok().map(|r| r.steps.as_slice()));
                reader.abort();
                for index in streamed {
                    let end = proto::OutputData { index, data: Vec::new(), eof: true };
                    let _ = session.send(server_message::Msg::Output(end)).await;
                }
                match result {
                    Ok(r) => Ok(proto::BuildResult {
                        image_id: r.image_id(),
                        metadata_json: serde_json::Value::Object(r.metadata.clone()).to_string(),
                        steps_json: serde_json::to_string(&r.steps).unwrap_or_default(),
                    }),
                    Err(e) => Err(error_to_proto(&e)),
                }
            }
        };
        let last = match outcome {
            Ok(r) => server_message::Msg::Result(r),
            Err(e) => server_message::Msg::Error(e),
        };
        let _ = session.send(last).await;
        c.builds_running.fetch_sub(1, Ordering::Relaxed);
    }

    /// The engine request `start` describes, with the client's contexts, secrets and agents as providers.
    fn request(&self, start: &BuildStart, session: &Arc<Session>) -> Result<(BuildRequest, Streamed), String> {
        let context = |key: &str| -> Arc<dyn engine::LocalSource> {
            Arc::new(RemoteContext {
                session: session.clone(),
                mirrors: self.mirrors.clone(),
                client: start.client_id.clone(),
                key: key.to_string(),
                counters: self.counters.clone(),
                held: Mutex::default(),
            })
        };
        let mut req = BuildRequest::new(start.dockerfile.clone(), context(&start.context_key));
        req.dockerfile_name =
            if start.dockerfile_name.is_empty() { "Dockerfile".into() } else { start.dockerfile_name.clone() };
        req.dockerignore = start.dockerignore.clone();
        // Miss explanations compare with the last build of this client's context and Dockerfile.
        req.explain_key = Some(format!("{}/{}/{}", start.client_id, start.context_key, req.dockerfile_name));
        for (name, c) in &start.named_contexts {
            let nc = match &c.source {
                Some(proto::named_context::Source::LocalKey(k)) => NamedContext::Local(context(k)),
                Some(proto::named_context::Source::Image(r)) => NamedContext::Image(r.clone()),
                None => return Err(format!("--build-context {name}: no source")),
            };
            req.named_contexts.insert(name.clone(), nc);
        }
        req.build_args = start.build_args.clone().into_iter().collect::<BTreeMap<_, _>>();
        req.target = start.target.clone();
        // `platforms` from a client that has multi-platform builds; `platform` alone from one before them.
        let platforms: Vec<&str> = match start.platforms.is_empty() {
            true => start.platform.as_deref().into_iter().collect(),
            false => start.platforms.iter().map(String::as_str).collect(),
        };
        req.platforms = platforms
            .into_iter()
            .map(|p| p.parse().map_err(|e| format!("--platform {p}: {e}")))
            .collect::<Result<_, _>>()?;
        req.labels = start.labels.clone().into_iter().collect();
        req.tags = start.tags.clone();
        let mut streamed = Vec::new();
        for (i, o) in start.outputs.iter().enumerate() {
            let mut writer = || {
                streamed.push(i as u32);
                Dest::Writer(SharedWriter::new(OutputWriter {
                    index: i as u32,
                    out: session.outbound(),
                    buf: Vec::new(),
                }))
            };
            let kind = match output::Kind::try_from(o.kind).map_err(|_| format!("unknown output kind {}", o.kind))? {
                output::Kind::Image => OutputKind::Image { names: o.names.clone(), push: o.push },
                output::Kind::Oci => OutputKind::Oci { dest: writer(), tar: true, names: o.names.clone() },
                output::Kind::Docker => OutputKind::Docker { dest: Some(writer()), names: o.names.clone() },
                output::Kind::Local | output::Kind::Tar => OutputKind::Tar { dest: writer() },
            };
            let compression = compression_of(&o.compression)?;
            req.outputs.push(OutputSpec { kind, compression, oci_mediatypes: o.oci_mediatypes });
        }
        req.secrets =
            Arc::new(RemoteSecrets { session: session.clone(), ids: start.secret_ids.iter().cloned().collect() });
        let dir = tempfile::Builder::new()
            .prefix("ssh-")
            .tempdir_in(self.engine.store().root.tmp_dir())
            .map_err(|e| format!("cannot make a directory for ssh agent sockets: {e}"))?;
        req.ssh = Arc::new(RemoteSsh {
            session: session.clone(),
            ids: start.ssh_ids.iter().cloned().collect(),
            dir,
            conns: Arc::default(),
            tasks: Mutex::default(),
        });
        req.cache =
            CacheOptions { no_cache: start.no_cache, no_cache_filter: start.no_cache_filter.clone(), pull: start.pull };
        req.network = start.network.parse().map_err(|e| format!("--network: {e}"))?;
        for e in &start.entitlements {
            let e: Entitlement = e.parse().map_err(|e| format!("{e}"))?;
            if !self.allow.contains(&e) {
                return Err(format!(
                    "the build asks for the {e} entitlement, which this daemon does not grant; start it with \
                     `rbuild serve --allow {e}`"
                ));
            }
            req.entitlements.insert(e);
        }
        req.add_hosts =
            start.add_hosts.iter().map(|h| llb::HostIp { host: h.host.clone(), ip: h.ip.clone() }).collect();
        req.source_date_epoch = start.source_date_epoch;
        req.max_parallelism = start.max_parallelism.map(|n| n as usize);
        req.run = engine::RunSettings {
            ulimits: start
                .ulimits
                .iter()
                .map(|u| u.parse())
                .collect::<Result<_, _>>()
                .map_err(|e| format!("--ulimit: {e}"))?,
            shm_size: start.shm_size.filter(|s| *s > 0),
            cgroup_parent: start.cgroup_parent.clone().filter(|p| !p.is_empty()),
        };
        req.run.check().map_err(|e| e.to_string())?;
        let local_cache =
            || "a daemon cannot reach the client's directories: use a registry cache (type=registry,ref=...)";
        for s in &start.cache_from {
            match engine::cache::parse_cache_from(s).map_err(|e| e.to_string())? {
                engine::cache::CacheFrom::Local { .. } => return Err(format!("--cache-from {s}: {}", local_cache())),
                c => req.cache_from.push(c),
            }
        }
        for s in &start.cache_to {
            match engine::cache::parse_cache_to(s).map_err(|e| e.to_string())? {
                engine::cache::CacheTo::Local { .. } => return Err(format!("--cache-to {s}: {}", local_cache())),
                c => req.cache_to.push(c),
            }
        }
        if let Some(fleet) = &self.fleet.cache {
            fleet.apply(&mut req, &crate::fleet::project_key(start));
        }
        Ok((req, streamed))
    }
}
