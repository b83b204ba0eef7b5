//! The client of `rbuild serve`: connect (unix socket, or TCP with mutual TLS), run a build remotely, ask
//! for the daemon's info. During a build it answers the daemon's questions from this machine: context
//! listings, hashes and file contents (only for files the listing offered), secrets, ssh agent
//! connections; and it writes client-side outputs (`-o type=local|tar|oci|docker,dest=...`, `--load`).

mod health;
mod images;
mod outputs;

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use engine::export::OutputSpec;
use hyper_util::rt::TokioIo;
use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};

pub use crate::convert::RemoteFailure;
use crate::convert::{error_from_proto, event_from_proto, output_to_proto};
use crate::proto::builder_client::BuilderClient;
use crate::proto::{self, client_message, server_message, ClientMessage, FileData, HashBatch, StatBatch};
use crate::walk::{self, Offered};
use crate::{Address, DaemonError, TlsFiles};
pub use images::BlobEvent;
use outputs::OutputSinks;

/// A connection to a daemon.
pub struct Connection {
    addr: Address,
    client: BuilderClient<Channel>,
    /// The same channel, for grpc.health.v1 (boxed: a connection is held in enums beside small variants).
    channel: Box<Channel>,
}

/// Connects to the daemon at `addr` (TLS for TCP when `tls` is given).
pub async fn connect(addr: &Address, tls: Option<&TlsFiles>) -> Result<Connection, DaemonError> {
    connect_as(addr, tls, None).await
}

/// [`connect`], checking the daemon's certificate for `server_name` rather than the address's host (a
/// fleet member found by a DNS name is dialled at its IP address and named by the DNS name).
pub async fn connect_as(
    addr: &Address,
    tls: Option<&TlsFiles>,
    server_name: Option<&str>,
) -> Result<Connection, DaemonError> {
    let fail = |message: String| DaemonError::Connect { addr: addr.to_string(), message };
    let channel = match addr {
        Address::Unix(path) => {
            let path = path.clone();
            // The URI is required by the API and unused: the connector dials the socket.
            Endpoint::try_from("http://[::]:0")
                .map_err(|e| fail(e.to_string()))?
                .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
                    let path = path.clone();
                    async move { Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?)) }
                }))
                .await
                .map_err(|e| fail(chain(&e)))?
        }
        Address::Tcp(hp) => {
            let scheme = if tls.is_some() { "https" } else { "http" };
            let mut ep = Endpoint::from_shared(format!("{scheme}://{hp}")).map_err(|e| fail(e.to_string()))?;
            if let Some(tls) = tls {
                let domain = server_name.or(addr.host()).unwrap_or_default();
                ep = ep.tls_config(tls.client_config(domain)?).map_err(|e| fail(chain(&e)))?;
            }
            ep.connect().await.map_err(|e| fail(chain(&e)))?
        }
    };
    let client = BuilderClient::new(channel.clone()).max_decoding_message_size(16 << 20);
    Ok(Connection { addr: addr.clone(), client, channel: Box::new(channel) })
}

/// An error and its causes on one line (tonic's transport errors hide the useful part in a source).
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// A build to run remotely: the request, and where on this machine its contexts, secrets, agents and
/// outputs are.
pub struct RemoteBuild {
    /// Everything but `outputs`, `secret_ids` and `ssh_ids`, which come from the fields below.
    pub start: proto::BuildStart,
    /// Context directories by key (`start.context_key` and the named contexts' keys).
    pub contexts: BTreeMap<String, PathBuf>,
    pub secrets: BTreeMap<String, Vec<u8>>,
    pub ssh: BTreeMap<String, PathBuf>,
    /// Outputs with destinations on this machine.
    pub outputs: Vec<OutputSpec>,
}

/// A build a daemon refused before starting it (it is draining), given back to run elsewhere.
pub struct Refused {
    pub build: Box<RemoteBuild>,
    /// What the daemon said.
    pub message: String,
}

/// What a remote build produced.
#[derive(Debug, Clone)]
pub struct RemoteResult {
    pub image_id: Option<String>,
    pub metadata: serde_json::Map<String, serde_json::Value>,
    pub steps: serde_json::Value,
}

/// Why a remote build failed.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// The build failed on the daemon.
    #[error("{0}")]
    Failed(RemoteFailure),
    /// The connection or the protocol failed.
    #[error(transparent)]
    Daemon(#[from] DaemonError),
    /// An output could not be written here.
    #[error("{0}")]
    Output(String),
}

/// A stable id of this machine's user, so the daemon keeps this client's contexts between builds.
pub fn client_id() -> String {
    let dir = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(std::env::temp_dir)
        .join("rbuild");
    let path = dir.join("client-id");
    if let Ok(id) = std::fs::read_to_string(&path) {
        if !id.trim().is_empty() {
            return id.trim().to_string();
        }
    }
    let mut bytes = [0u8; 16];
    let random = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
    let id = match random {
        Ok(()) => hex::encode(bytes),
        // Without randomness the host and user still tell clients apart.
        Err(_) => hex::encode(&Sha256::digest(format!("{:?}", std::env::var_os("USER")).as_bytes())[..16]),
    };
    let _ = std::fs::create_dir_all(&dir).and_then(|_| std::fs::write(&path, &id));
    id
}

/// The key of a context directory: the same checkout path reuses what the daemon holds for it.
pub fn context_key(dir: &Path) -> String {
    hex::encode(&Sha256::digest(dir.as_os_str().as_encoded_bytes())[..16])
}

const STAT_BATCH: usize = 2000;
const FILE_CHUNK: usize = 1 << 20;

impl Connection {
    pub fn address(&self) -> &Address {
        &self.addr
    }

    /// The daemon's version, state root and counters.
    pub async fn info(&mut self) -> Result<proto::InfoResponse, DaemonError> {
        let r = self.client.info(proto::InfoRequest {}).await;
        r.map(|r| r.into_inner())
            .map_err(|status| DaemonError::Rpc { addr: self.addr.to_string(), status: Box::new(status) })
    }

    /// Runs `b` on the daemon. `on_event` gets every progress event; cancelling `cancel` asks the daemon
    /// to stop the build, which then ends with [`RemoteFailure::Cancelled`].
    pub async fn build(
        &mut self,
        b: RemoteBuild,
        on_event: impl FnMut(engine::Event),
        cancel: CancellationToken,
    ) -> Result<RemoteResult, RemoteError> {
        match self.try_build(b, on_event, cancel).await {
            Ok(r) => r,
            Err(refused) => Err(DaemonError::Rpc {
                addr: self.addr.to_string(),
                status: Box::new(tonic::Status::unavailable(refused.message)),
            }
            .into()),
        }
    }

    /// [`Connection::build`], except that a daemon refusing the build before it starts (UNAVAILABLE: it is
    /// draining) gives the build back untouched, for another daemon of the fleet.
    pub async fn try_build(
        &mut self,
        b: RemoteBuild,
        mut on_event: impl FnMut(engine::Event),
        cancel: CancellationToken,
    ) -> Result<Result<RemoteResult, RemoteError>, Refused> {
        let mut start = b.start.clone();
        start.outputs = b.outputs.iter().map(output_to_proto).collect();
        start.secret_ids = b.secrets.keys().cloned().collect();
        start.ssh_ids = b.ssh.keys().cloned().collect();
        let (tx, rx) = mpsc::channel::<ClientMessage>(64);
        let send_start = ClientMessage { msg: Some(client_message::Msg::Start(start)) };
        if tx.send(send_start).await.is_err() {
            return Ok(Err(RemoteError::Output("the build stream closed".into())));
        }
        let mut inbound = match self.client.build(ReceiverStream::new(rx)).await {
            Ok(r) => r.into_inner(),
            Err(status) if status.code() == tonic::Code::Unavailable => {
                return Err(Refused { build: Box::new(b), message: status.message().to_string() })
            }
            Err(status) => {
                return Ok(Err(DaemonError::Rpc { addr: self.addr.to_string(), status: Box::new(status) }.into()))
            }
        };
        Ok(self.run_build(b, &mut inbound, tx, &mut on_event, cancel).await)
    }

    async fn run_build(
        &mut self,
        b: RemoteBuild,
        inbound: &mut tonic::Streaming<proto::ServerMessage>,
        tx: mpsc::Sender<ClientMessage>,
        on_event: &mut impl FnMut(engine::Event),
        cancel: CancellationToken,
    ) -> Result<RemoteResult, RemoteError> {
        let mut sinks = OutputSinks::new(&b.outputs).map_err(RemoteError::Output)?;
        let rpc = |status: tonic::Status| DaemonError::Rpc { addr: self.addr.to_string(), status: Box::new(status) };
        let here = Arc::new(Here {
            contexts: b.contexts,
            offered: Mutex::default(),
            secrets: b.secrets,
            ssh: b.ssh,
            ssh_conns: Mutex::default(),
        });
        let mut cancel_sent = false;
        loop {
            let msg = tokio::select! {
                m = inbound.message() => m.map_err(rpc)?,
                _ = cancel.cancelled(), if !cancel_sent => {
                    cancel_sent = true;
                    let _ = tx.send(ClientMessage { msg: Some(client_message::Msg::Cancel(proto::Cancel {})) }).await;
                    continue;
                }
            };
            let Some(msg) = msg.and_then(|m| m.msg) else {
                return Err(DaemonError::Protocol("the daemon ended the build without a result".into()).into());
            };
            match msg {
                server_message::Msg::ContextQuery(q) => {
                    tokio::spawn(answer_stats(here.clone(), q, tx.clone()));
                }
                server_message::Msg::HashQuery(q) => {
                    tokio::spawn(answer_hashes(here.clone(), q, tx.clone()));
                }
                server_message::Msg::FileQuery(q) => {
                    let (here, tx) = (here.clone(), tx.clone());
                    tokio::task::spawn_blocking(move || answer_files(&here, q, &tx));
                }
                server_message::Msg::SecretRequest(r) => {
                    let value = here.secrets.get(&r.id).cloned();
                    let reply = proto::SecretValue {
                        request_id: r.request_id,
                        found: value.is_some(),
                        value: value.unwrap_or_default(),
                    };
                    let _ = tx.send(ClientMessage { msg: Some(client_message::Msg::Secret(reply)) }).await;
                }
                server_message::Msg::SshOpen(o) => {
                    tokio::spawn(relay_agent(here.clone(), o, tx.clone()));
                }
                server_message::Msg::Ssh(d) => {
                    let conn = here.ssh_conns.lock().unwrap_or_else(|e| e.into_inner()).get(&d.conn_id).cloned();
                    if let Some(c) = conn {
                        let _ = c.send(d);
                    }
                }
                server_message::Msg::Event(e) => {
                    if let Some(e) = event_from_proto(e) {
                        on_event(e);
                    }
                }
                server_message::Msg::Output(o) => sinks.data(o).map_err(RemoteError::Output)?,
                server_message::Msg::Result(r) => {
                    sinks.finish().map_err(RemoteError::Output)?;
                    let metadata = serde_json::from_str(&r.metadata_json).unwrap_or_default();
                    let steps = serde_json::from_str(&r.steps_json).unwrap_or_default();
                    return Ok(RemoteResult { image_id: r.image_id, metadata, steps });
                }
                server_message::Msg::Error(e) => {
                    sinks.abandon();
                    return Err(RemoteError::Failed(error_from_proto(e)));
                }
            }
        }
    }
}

/// What this machine holds for one build.
struct Here {
    contexts: BTreeMap<String, PathBuf>,
    /// What each context's listing offered, by key.
    offered: Mutex<HashMap<String, Arc<Offered>>>,
    secrets: BTreeMap<String, Vec<u8>>,
    ssh: BTreeMap<String, PathBuf>,
    ssh_conns: Mutex<HashMap<u64, mpsc::UnboundedSender<proto::SshData>>>,
}

impl Here {
    fn offered(&self, key: &str) -> Option<Arc<Offered>> {
        self.offered.lock().unwrap_or_else(|e| e.into_inner()).get(key).cloned()
    }
}

async fn answer_stats(here: Arc<Here>, q: proto::ContextQuery, tx: mpsc::Sender<ClientMessage>) {
    let send = |b: StatBatch| ClientMessage { msg: Some(client_message::Msg::Stats(b)) };
    let Some(root) = here.contexts.get(&q.key).cloned() else {
        let error = format!("the daemon asked for an unknown context {:?}", q.key);
        let _ = tx.send(send(StatBatch { request_id: q.request_id, done: true, error, ..Default::default() })).await;
        return;
    };
    let (include, exclude) = (q.include.clone(), q.exclude.clone());
    let listed = {
        let root = root.clone();
        tokio::task::spawn_blocking(move || walk::list(&root, &include, &exclude)).await
    };
    let entries = match listed {
        Ok(Ok(e)) => e,
        Ok(Err(error)) => {
            let _ =
                tx.send(send(StatBatch { request_id: q.request_id, done: true, error, ..Default::default() })).await;
            return;
        }
        Err(e) => {
            let error = format!("listing the context failed: {e}");
            let _ =
                tx.send(send(StatBatch { request_id: q.request_id, done: true, error, ..Default::default() })).await;
            return;
        }
    };
    let files = entries.iter().filter(|e| walk::kind(e.mode) == Some('f')).map(|e| e.path.clone()).collect();
    here.offered.lock().unwrap_or_else(|e| e.into_inner()).insert(q.key.clone(), Arc::new(Offered { root, files }));
    // The daemon holds this very listing: say so instead of sending it.
    if !q.listing_digest.is_empty() && walk::listing_digest(&entries) == q.listing_digest {
        let b = StatBatch { request_id: q.request_id, done: true, unchanged: true, ..Default::default() };
        let _ = tx.send(send(b)).await;
        return;
    }
    let mut chunks: Vec<Vec<proto::FileStat>> = entries.chunks(STAT_BATCH).map(|c| c.to_vec()).collect();
    if chunks.is_empty() {
        chunks.push(Vec::new());
    }
    let n = chunks.len();
    for (i, entries) in chunks.into_iter().enumerate() {
        let b = StatBatch { request_id: q.request_id, entries, done: i + 1 == n, ..Default::default() };
        if tx.send(send(b)).await.is_err() {
            return;
        }
    }
}

async fn answer_hashes(here: Arc<Here>, q: proto::HashQuery, tx: mpsc::Sender<ClientMessage>) {
    let send = |b: HashBatch| ClientMessage { msg: Some(client_message::Msg::Hashes(b)) };
    let Some(offered) = here.offered(&q.key) else {
        let error = format!("the daemon asked for hashes of context {:?} before listing it", q.key);
        let _ = tx.send(send(HashBatch { request_id: q.request_id, done: true, error, ..Default::default() })).await;
        return;
    };
    let paths = q.paths.clone();
    let hashed = tokio::task::spawn_blocking(move || {
        paths
            .into_iter()
            .map(|p| offered.hash(&p).map(|sha256| proto::FileHash { path: p, sha256 }))
            .collect::<Result<Vec<_>, String>>()
    })
    .await
    .unwrap_or_else(|e| Err(format!("hashing failed: {e}")));
    let b = match hashed {
        Ok(hashes) => HashBatch { request_id: q.request_id, hashes, done: true, error: String::new() },
        Err(error) => HashBatch { request_id: q.request_id, done: true, error, ..Default::default() },
    };
    let _ = tx.send(send(b)).await;
}

/// Streams the asked files, zstd-compressed per chunk (blocking).
fn answer_files(here: &Here, q: proto::FileQuery, tx: &mpsc::Sender<ClientMessage>) {
    let send = |d: FileData| tx.blocking_send(ClientMessage { msg: Some(client_message::Msg::File(d)) }).is_ok();
    let fail = |error: String| {
        send(FileData { request_id: q.request_id, done: true, error, ..Default::default() });
    };
    let Some(offered) = here.offered(&q.key) else {
        return fail(format!("the daemon asked for files of context {:?} before listing it", q.key));
    };
    let mut buf = vec![0u8; FILE_CHUNK];
    for path in &q.paths {
        let mut f = match offered.open(path) {
            Ok(f) => f,
            Err(e) => return fail(e),
        };
        loop {
            let n = match read_full(&mut f, &mut buf) {
                Ok(n) => n,
                Err(e) => return fail(format!("cannot read {path}: {e}")),
            };
            let zstd = match zstd::bulk::compress(&buf[..n], 1) {
                Ok(z) => z,
                Err(e) => return fail(format!("cannot compress {path}: {e}")),
            };
            let eof = n < buf.len();
            if !send(FileData {
                request_id: q.request_id,
                path: path.clone(),
                zstd,
                eof,
                done: false,
                error: String::new(),
            }) {
                return;
            }
            if eof {
                break;
            }
        }
    }
    send(FileData { request_id: q.request_id, done: true, ..Default::default() });
}

/// Reads until `buf` is full or the file ends.
fn read_full(f: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Connects a RUN step's agent connection to the agent on this machine.
async fn relay_agent(here: Arc<Here>, open: proto::SshOpen, tx: mpsc::Sender<ClientMessage>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let conn = open.conn_id;
    let eof = || ClientMessage {
        msg: Some(client_message::Msg::Ssh(proto::SshData { conn_id: conn, data: Vec::new(), eof: true })),
    };
    let Some(path) = here.ssh.get(&open.id).cloned() else {
        let _ = tx.send(eof()).await;
        return;
    };
    let Ok(stream) = tokio::net::UnixStream::connect(&path).await else {
        let _ = tx.send(eof()).await;
        return;
    };
    let (down_tx, mut down_rx) = mpsc::unbounded_channel::<proto::SshData>();
    here.ssh_conns.lock().unwrap_or_else(|e| e.into_inner()).insert(conn, down_tx);
    let (mut r, mut w) = stream.into_split();
    let up = async {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            let n = r.read(&mut buf).await.unwrap_or(0);
            let d = proto::SshData { conn_id: conn, data: buf[..n].to_vec(), eof: n == 0 };
            if tx.send(ClientMessage { msg: Some(client_message::Msg::Ssh(d)) }).await.is_err() || n == 0 {
                break;
            }
        }
    };
    let down = async {
        while let Some(d) = down_rx.recv().await {
            if !d.data.is_empty() && w.write_all(&d.data).await.is_err() {
                break;
            }
            if d.eof {
                let _ = w.shutdown().await;
                break;
            }
        }
    };
    tokio::join!(up, down);
    here.ssh_conns.lock().unwrap_or_else(|e| e.into_inner()).remove(&conn);
}
