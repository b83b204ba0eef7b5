//! One build's session on the daemon: the outgoing stream, the replies the client owes, and the providers
//! the engine asks (contexts synced into mirrors, secrets asked for when a step needs them, ssh agents
//! relayed through a socket per build), plus the writers of client-side outputs.

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use engine::{Canceller, LocalSource, SecretSource, SessionError, SshSource};
use solver::op::BoxFuture;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tonic::{Status, Streaming};

use super::Counters;
use crate::mirror::{Listing, Mirror, Peer, Synced};
use crate::proto::{client_message, server_message, ClientMessage, FileData, ServerMessage, SshData, StatBatch};
use crate::proto::{ContextQuery, FileQuery, HashBatch, HashQuery, OutputData, SecretRequest, SshOpen};

pub(crate) type Outbound = mpsc::Sender<Result<ServerMessage, Status>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

enum Reply {
    Stats(mpsc::UnboundedSender<StatBatch>),
    Hashes(mpsc::UnboundedSender<HashBatch>),
    Files(mpsc::UnboundedSender<FileData>),
}

/// The daemon's end of one build stream.
pub(crate) struct Session {
    out: Outbound,
    next: AtomicU64,
    replies: Mutex<HashMap<u64, Reply>>,
    secrets: Mutex<HashMap<u64, oneshot::Sender<Option<Vec<u8>>>>>,
    ssh: Mutex<HashMap<u64, mpsc::UnboundedSender<SshData>>>,
    closed: AtomicBool,
}

impl Session {
    pub(crate) fn new(out: Outbound) -> Arc<Session> {
        Arc::new(Session {
            out,
            next: AtomicU64::new(1),
            replies: Mutex::default(),
            secrets: Mutex::default(),
            ssh: Mutex::default(),
            closed: AtomicBool::new(false),
        })
    }

    /// The outgoing stream, for writers on blocking threads.
    pub(crate) fn outbound(&self) -> Outbound {
        self.out.clone()
    }

    pub(crate) async fn send(&self, msg: server_message::Msg) -> Result<(), String> {
        self.out.send(Ok(ServerMessage { msg: Some(msg) })).await.map_err(|_| "the client went away".to_string())
    }

    fn id(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    fn check_open(&self) -> Result<(), String> {
        if self.closed.load(Ordering::SeqCst) {
            return Err("the client went away".into());
        }
        Ok(())
    }

    /// Reads the client's messages until the stream ends, routing replies; the end of the stream (or an
    /// explicit cancel) cancels the build.
    pub(crate) async fn read(self: Arc<Self>, mut inbound: Streaming<ClientMessage>, cancel: Canceller) {
        loop {
            let msg = match inbound.message().await {
                Ok(Some(m)) => m,
                Ok(None) | Err(_) => break,
            };
            match msg.msg {
                Some(client_message::Msg::Stats(b)) => self.route(b.request_id, |r| match r {
                    Reply::Stats(tx) => tx.send(b).is_ok(),
                    _ => false,
                }),
                Some(client_message::Msg::Hashes(b)) => self.route(b.request_id, |r| match r {
                    Reply::Hashes(tx) => tx.send(b).is_ok(),
                    _ => false,
                }),
                Some(client_message::Msg::File(b)) => self.route(b.request_id, |r| match r {
                    Reply::Files(tx) => tx.send(b).is_ok(),
                    _ => false,
                }),
                Some(client_message::Msg::Secret(v)) => {
                    if let Some(tx) = lock(&self.secrets).remove(&v.request_id) {
                        let _ = tx.send(v.found.then_some(v.value));
                    }
                }
                Some(client_message::Msg::Ssh(d)) => {
                    let tx = lock(&self.ssh).get(&d.conn_id).cloned();
                    if let Some(tx) = tx {
                        let _ = tx.send(d);
                    }
                }
                Some(client_message::Msg::Cancel(_)) => cancel.cancel(),
                Some(client_message::Msg::Start(_)) | None => {}
            }
        }
        // The client is gone: stop the build and fail whatever waits for it.
        self.closed.store(true, Ordering::SeqCst);
        cancel.cancel();
        lock(&self.replies).clear();
        lock(&self.secrets).clear();
        lock(&self.ssh).clear();
    }

    fn route(&self, id: u64, send: impl FnOnce(&Reply) -> bool) {
        let replies = lock(&self.replies);
        if let Some(r) = replies.get(&id) {
            send(r);
        }
    }

    fn expect(&self, id: u64, r: Reply) {
        lock(&self.replies).insert(id, r);
    }

    fn done(&self, id: u64) {
        lock(&self.replies).remove(&id);
    }
}

/// The client of a session as the mirror's sync sees it.
pub(crate) struct SessionPeer(pub(crate) Arc<Session>);

impl Peer for SessionPeer {
    fn stats<'a>(
        &'a self,
        key: &'a str,
        include: &'a [String],
        exclude: &'a [String],
        known: Option<&'a [u8]>,
    ) -> BoxFuture<'a, Result<Listing, String>> {
        Box::pin(async move {
            let s = &self.0;
            s.check_open()?;
            let id = s.id();
            let (tx, mut rx) = mpsc::unbounded_channel();
            s.expect(id, Reply::Stats(tx));
            let q = ContextQuery {
                request_id: id,
                key: key.into(),
                include: include.to_vec(),
                exclude: exclude.to_vec(),
                listing_digest: known.map(<[u8]>::to_vec).unwrap_or_default(),
            };
            s.send(server_message::Msg::ContextQuery(q)).await?;
            let mut out = Vec::new();
            let result = loop {
                let Some(b) = rx.recv().await else { break Err("the client went away".to_string()) };
                if !b.error.is_empty() {
                    break Err(b.error);
                }
                if b.unchanged {
                    if known.is_none() || !out.is_empty() || !b.done {
                        break Err("the client answered \"unchanged\" where it had to list the context".into());
                    }
                    break Ok(Listing::Unchanged);
                }
                out.extend(b.entries);
                if b.done {
                    break Ok(Listing::Entries(out));
                }
            };
            s.done(id);
            result
        })
    }

    fn hashes<'a>(&'a self, key: &'a str, paths: Vec<String>) -> BoxFuture<'a, Result<Vec<Vec<u8>>, String>> {
        Box::pin(async move {
            let s = &self.0;
            s.check_open()?;
            let id = s.id();
            let (tx, mut rx) = mpsc::unbounded_channel();
            s.expect(id, Reply::Hashes(tx));
            let want: Vec<String> = paths.clone();
            s.send(server_message::Msg::HashQuery(HashQuery { request_id: id, key: key.into(), paths })).await?;
            let mut got: HashMap<String, Vec<u8>> = HashMap::new();
            let result = loop {
                let Some(b) = rx.recv().await else { break Err("the client went away".to_string()) };
                if !b.error.is_empty() {
                    break Err(b.error);
                }
                got.extend(b.hashes.into_iter().map(|h| (h.path, h.sha256)));
                if b.done {
                    break want
                        .iter()
                        .map(|p| got.remove(p).ok_or_else(|| format!("the client sent no hash of {p}")))
                        .collect();
                }
            };
            s.done(id);
            result
        })
    }

    fn files<'a>(
        &'a self,
        key: &'a str,
        paths: Vec<String>,
    ) -> BoxFuture<'a, Result<mpsc::UnboundedReceiver<FileData>, String>> {
        Box::pin(async move {
            let s = self.0.clone();
            s.check_open()?;
            let id = s.id();
            let (tx, mut rx) = mpsc::unbounded_channel();
            s.expect(id, Reply::Files(tx));
            s.send(server_message::Msg::FileQuery(FileQuery { request_id: id, key: key.into(), paths })).await?;
            // Forward until the answer is complete, then stop routing it.
            let (fwd, out) = mpsc::unbounded_channel();
            tokio::spawn(async move {
                while let Some(d) = rx.recv().await {
                    let done = d.done || !d.error.is_empty();
                    let _ = fwd.send(d);
                    if done {
                        break;
                    }
                }
                s.done(id);
            });
            Ok(out)
        })
    }
}

/// A context of the client, synced into its mirror when the build first reads it; the mirror stays held
/// (read-locked) until the build ends.
pub(crate) struct RemoteContext {
    pub(crate) session: Arc<Session>,
    pub(crate) mirrors: Arc<crate::mirror::Mirrors>,
    pub(crate) client: String,
    pub(crate) key: String,
    pub(crate) counters: Arc<Counters>,
    pub(crate) held: Mutex<Vec<Synced>>,
}

impl RemoteContext {
    fn mirror(&self, include: &[String], exclude: &[String]) -> Arc<Mirror> {
        // Filters are part of a mirror's identity: two sources of one context with different filters never
        // wait for each other's lock.
        let filters = serde_json::json!([include, exclude]).to_string();
        self.mirrors.get(&self.client, &format!("{}\0{filters}", self.key))
    }
}

impl LocalSource for RemoteContext {
    fn directory<'a>(
        &'a self,
        include: &'a [String],
        exclude: &'a [String],
        status: &'a (dyn Fn(&str, u64, Option<u64>) + Send + Sync),
    ) -> BoxFuture<'a, Result<PathBuf, SessionError>> {
        Box::pin(async move {
            let mirror = self.mirror(include, exclude);
            let peer = SessionPeer(self.session.clone());
            let synced = mirror.sync(&peer, &self.key, include, exclude).await.map_err(SessionError::new)?;
            let r = synced.report;
            self.counters.context_bytes.fetch_add(r.bytes, Ordering::Relaxed);
            self.counters.context_files.fetch_add(r.files_sent, Ordering::Relaxed);
            status(
                &format!("transferring context: {} of {} files sent", r.files_sent, r.entries),
                r.bytes,
                Some(r.bytes),
            );
            let path = synced.path.clone();
            lock(&self.held).push(synced);
            Ok(path)
        })
    }
}

/// Secrets asked of the client when a step needs them; never stored.
pub(crate) struct RemoteSecrets {
    pub(crate) session: Arc<Session>,
    pub(crate) ids: BTreeSet<String>,
}

impl SecretSource for RemoteSecrets {
    fn secret<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>, SessionError>> {
        Box::pin(async move {
            if !self.ids.contains(id) {
                return Ok(None);
            }
            let s = &self.session;
            s.check_open().map_err(SessionError::new)?;
            let rid = s.id();
            let (tx, rx) = oneshot::channel();
            lock(&s.secrets).insert(rid, tx);
            s.send(server_message::Msg::SecretRequest(SecretRequest { request_id: rid, id: id.into() }))
                .await
                .map_err(SessionError::new)?;
            rx.await.map_err(|_| SessionError::new(format!("secret {id:?}: the client went away")))
        })
    }
}

/// ssh agents of the client: a socket per agent on the daemon, each connection relayed over the stream.
pub(crate) struct RemoteSsh {
    pub(crate) session: Arc<Session>,
    pub(crate) ids: BTreeSet<String>,
    pub(crate) dir: tempfile::TempDir,
    pub(crate) conns: Arc<AtomicU64>,
    pub(crate) tasks: Mutex<HashMap<String, (PathBuf, tokio::task::JoinHandle<()>)>>,
}

impl Drop for RemoteSsh {
    fn drop(&mut self) {
        for (_, (_, t)) in lock(&self.tasks).drain() {
            t.abort();
        }
    }
}

impl SshSource for RemoteSsh {
    fn agent<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<PathBuf>, SessionError>> {
        Box::pin(async move {
            if !self.ids.contains(id) {
                return Ok(None);
            }
            let mut tasks = lock(&self.tasks);
            // One socket per agent id for the whole build.
            if let Some((path, _)) = tasks.get(id) {
                return Ok(Some(path.clone()));
            }
            let path = self.dir.path().join(format!("agent-{}.sock", tasks.len()));
            let listener = tokio::net::UnixListener::bind(&path).map_err(|e| {
                SessionError::new(format!("cannot create the ssh agent socket {}: {e}", path.display()))
            })?;
            let (session, conns, id2) = (self.session.clone(), self.conns.clone(), id.to_string());
            let task = tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let conn = conns.fetch_add(1, Ordering::Relaxed);
                    tokio::spawn(relay(session.clone(), conn, id2.clone(), stream));
                }
            });
            tasks.insert(id.to_string(), (path.clone(), task));
            Ok(Some(path))
        })
    }
}

/// Relays one agent connection of a RUN step to the client.
async fn relay(session: Arc<Session>, conn: u64, id: String, stream: tokio::net::UnixStream) {
    let (tx, mut rx) = mpsc::unbounded_channel::<SshData>();
    lock(&session.ssh).insert(conn, tx);
    if session.send(server_message::Msg::SshOpen(SshOpen { conn_id: conn, id })).await.is_err() {
        return;
    }
    let (mut r, mut w) = stream.into_split();
    let up = {
        let session = session.clone();
        async move {
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                let n = r.read(&mut buf).await.unwrap_or(0);
                let data = SshData { conn_id: conn, data: buf[..n].to_vec(), eof: n == 0 };
                if session.send(server_message::Msg::Ssh(data)).await.is_err() || n == 0 {
                    break;
                }
            }
        }
    };
    let down = async move {
        while let Some(d) = rx.recv().await {
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
    lock(&session.ssh).remove(&conn);
}

/// Bytes of a client-side output, sent in chunks from the exporter's blocking thread.
pub(crate) struct OutputWriter {
    pub(crate) index: u32,
    pub(crate) out: Outbound,
    pub(crate) buf: Vec<u8>,
}

const OUTPUT_CHUNK: usize = 1 << 20;

impl OutputWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let data = std::mem::take(&mut self.buf);
        let msg = server_message::Msg::Output(OutputData { index: self.index, data, eof: false });
        self.out
            .blocking_send(Ok(ServerMessage { msg: Some(msg) }))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client went away"))
    }
}

impl Write for OutputWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= OUTPUT_CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}
