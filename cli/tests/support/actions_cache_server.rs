//! A local test server of the GitHub Actions cache service, version 2, as the actions/toolkit cache client
//! speaks it: twirp JSON calls `POST /twirp/github.actions.results.api.v1.CacheService/{CreateCacheEntry,
//! FinalizeCacheEntryUpload,GetCacheEntryDownloadURL}` with a bearer token, and signed blob URLs that
//! take Azure Blob Storage's uploads (`Put Blob` with `x-ms-blob-type: BlockBlob`, or `Put Block` with
//! `comp=block&blockid=…` and a `Put Block List` with `comp=blocklist`) and plain GETs.
//!
//! Its rules are the service's: entries are immutable (a second create of a key and version is refused
//! with twirp `already_exists`), an entry is readable only once finalized with its size, and a lookup
//! takes the exact key, else the newest entry whose key starts with a restore key. One thread per
//! connection, `Connection: close`; the server stops when dropped.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use serde_json::{json, Value};

const PREFIX: &str = "/twirp/github.actions.results.api.v1.CacheService/";

#[derive(Debug, Default)]
struct Entry {
    key: String,
    version: String,
    /// Creation order (the newest wins a restore-key match).
    seq: u64,
    signature: String,
    data: Option<Vec<u8>>,
    blocks: BTreeMap<String, Vec<u8>>,
    finalized: bool,
}

/// What the server saw, for assertions.
#[derive(Debug, Default, Clone)]
pub struct Counts {
    pub calls: BTreeMap<String, usize>,
    pub single_uploads: usize,
    pub block_uploads: usize,
    pub block_lists: usize,
    pub downloads: usize,
    pub refused_tokens: usize,
}

#[derive(Default)]
struct State {
    entries: Vec<Entry>,
    counts: Counts,
}

/// The GitHub Actions cache service's local test server.
pub struct ActionsCacheTestServer {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ActionsCacheTestServer {
    /// Starts on a free loopback port; requests must carry `Authorization: Bearer <token>`.
    pub fn start(token: &str) -> ActionsCacheTestServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let addr = listener.local_addr().expect("address");
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp, token) = (state.clone(), stop.clone(), token.to_string());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if sp.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (st, token) = (st.clone(), token.clone());
                std::thread::spawn(move || {
                    let _ = serve(conn, &st, &token, addr);
                });
            }
        });
        ActionsCacheTestServer { addr, state, stop, thread: Some(thread) }
    }

    /// `ACTIONS_RESULTS_URL` for this server.
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    pub fn counts(&self) -> Counts {
        self.state.lock().unwrap().counts.clone()
    }

    /// The keys of the finalized entries.
    pub fn keys(&self) -> Vec<String> {
        self.state.lock().unwrap().entries.iter().filter(|e| e.finalized).map(|e| e.key.clone()).collect()
    }
}

impl Drop for ActionsCacheTestServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Request {
    method: String,
    path: String,
    query: BTreeMap<String, String>,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn read_request(conn: &mut BufReader<TcpStream>) -> std::io::Result<Request> {
    let mut line = String::new();
    conn.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let target = parts.next().unwrap_or_default().to_string();
    let mut headers = BTreeMap::new();
    loop {
        let mut h = String::new();
        conn.read_line(&mut h)?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let len: usize = headers.get("content-length").and_then(|l| l.parse().ok()).unwrap_or(0);
    let mut body = vec![0; len];
    conn.read_exact(&mut body)?;
    let (path, q) = target.split_once('?').unwrap_or((&target, ""));
    let query = q
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect();
    Ok(Request { method, path: path.to_string(), query, headers, body })
}

fn respond(conn: &mut TcpStream, status: &str, content_type: &str, body: &[u8]) -> std::io::Result<()> {
    write!(
        conn,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    conn.write_all(body)?;
    conn.flush()
}

fn twirp_error(conn: &mut TcpStream, status: &str, code: &str, msg: &str) -> std::io::Result<()> {
    respond(conn, status, "application/json", json!({"code": code, "msg": msg}).to_string().as_bytes())
}

fn serve(conn: TcpStream, state: &Mutex<State>, token: &str, addr: SocketAddr) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let req = read_request(&mut reader)?;
    let mut conn = conn;
    if let Some(method) = req.path.strip_prefix(PREFIX) {
        if req.method != "POST" {
            return twirp_error(&mut conn, "405 Method Not Allowed", "bad_route", "twirp calls are POSTs");
        }
        if req.headers.get("authorization").map(String::as_str) != Some(&format!("Bearer {token}")) {
            state.lock().unwrap().counts.refused_tokens += 1;
            return twirp_error(&mut conn, "401 Unauthorized", "unauthenticated", "invalid runtime token");
        }
        let Ok(body) = serde_json::from_slice::<Value>(&req.body) else {
            return twirp_error(&mut conn, "400 Bad Request", "malformed", "the body is not JSON");
        };
        let mut st = state.lock().unwrap();
        *st.counts.calls.entry(method.to_string()).or_default() += 1;
        let key = body["key"].as_str().unwrap_or_default().to_string();
        let version = body["version"].as_str().unwrap_or_default().to_string();
        if key.is_empty() || version.is_empty() {
            return twirp_error(&mut conn, "400 Bad Request", "invalid_argument", "key and version are required");
        }
        let answer = match method {
            "CreateCacheEntry" => {
                if st.entries.iter().any(|e| e.key == key && e.version == version) {
                    return twirp_error(&mut conn, "409 Conflict", "already_exists", "cache entry already exists");
                }
                let seq = st.entries.len() as u64;
                let signature = format!("sig{}", seq * 7919 + 17);
                let url = format!("http://{addr}/blob/{seq}?sv=2020-10-02&sr=b&sp=cw&sig={signature}");
                st.entries.push(Entry { key, version, seq, signature, ..Default::default() });
                json!({"ok": true, "signed_upload_url": url})
            }
            "FinalizeCacheEntryUpload" => {
                let size: Option<u64> = match &body["size_bytes"] {
                    Value::String(s) => s.parse().ok(),
                    v => v.as_u64(),
                };
                let Some(e) = st.entries.iter_mut().find(|e| e.key == key && e.version == version && !e.finalized)
                else {
                    return twirp_error(&mut conn, "404 Not Found", "not_found", "no entry is being uploaded");
                };
                match (&e.data, size) {
                    (Some(d), Some(s)) if d.len() as u64 == s => {
                        e.finalized = true;
                        json!({"ok": true, "entry_id": e.seq.to_string()})
                    }
                    _ => return twirp_error(&mut conn, "400 Bad Request", "invalid_argument", "size_bytes differs"),
                }
            }
            "GetCacheEntryDownloadURL" => {
                let restore: Vec<String> = body["restore_keys"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|k| k.as_str().map(str::to_string))
                    .collect();
                let usable = |e: &&Entry| e.finalized && e.version == version;
                let found = st.entries.iter().filter(usable).find(|e| e.key == key).or_else(|| {
                    restore.iter().find_map(|p| {
                        st.entries.iter().filter(usable).filter(|e| e.key.starts_with(p.as_str())).max_by_key(|e| e.seq)
                    })
                });
                match found {
                    Some(e) => json!({
                        "ok": true,
                        "signed_download_url": format!("http://{addr}/blob/{}?sv=2020-10-02&sr=b&sp=r&sig={}", e.seq, e.signature),
                        "matched_key": e.key,
                    }),
                    None => json!({"ok": false}),
                }
            }
            _ => return twirp_error(&mut conn, "404 Not Found", "bad_route", "no such method"),
        };
        drop(st);
        return respond(&mut conn, "200 OK", "application/json", answer.to_string().as_bytes());
    }
    if let Some(id) = req.path.strip_prefix("/blob/") {
        let mut st = state.lock().unwrap();
        let Some(e) = id.parse::<usize>().ok().and_then(|i| st.entries.get_mut(i)) else {
            drop(st);
            return respond(&mut conn, "404 Not Found", "text/plain", b"BlobNotFound");
        };
        if req.query.get("sig") != Some(&e.signature) {
            drop(st);
            return respond(&mut conn, "403 Forbidden", "text/plain", b"AuthenticationFailed");
        }
        match (req.method.as_str(), req.query.get("comp").map(String::as_str)) {
            ("PUT", Some("block")) => {
                let id = req.query.get("blockid").cloned().unwrap_or_default();
                e.blocks.insert(id, req.body);
                st.counts.block_uploads += 1;
            }
            ("PUT", Some("blocklist")) => {
                let xml = String::from_utf8_lossy(&req.body).into_owned();
                let mut data = Vec::new();
                for part in xml.split("<Latest>").skip(1) {
                    let id = part.split("</Latest>").next().unwrap_or_default();
                    let Some(b) = e.blocks.get(id) else {
                        drop(st);
                        return respond(&mut conn, "400 Bad Request", "text/plain", b"InvalidBlockList");
                    };
                    data.extend_from_slice(b);
                }
                e.data = Some(data);
                e.blocks.clear();
                st.counts.block_lists += 1;
            }
            ("PUT", None) => {
                if req.headers.get("x-ms-blob-type").map(String::as_str) != Some("BlockBlob") {
                    drop(st);
                    return respond(&mut conn, "400 Bad Request", "text/plain", b"MissingRequiredHeader");
                }
                e.data = Some(req.body);
                st.counts.single_uploads += 1;
            }
            ("GET", None) => {
                let data = match (&e.data, e.finalized) {
                    (Some(d), true) => d.clone(),
                    _ => {
                        drop(st);
                        return respond(&mut conn, "404 Not Found", "text/plain", b"BlobNotFound");
                    }
                };
                st.counts.downloads += 1;
                drop(st);
                return respond(&mut conn, "200 OK", "application/octet-stream", &data);
            }
            _ => {
                drop(st);
                return respond(&mut conn, "400 Bad Request", "text/plain", b"UnsupportedOperation");
            }
        }
        drop(st);
        return respond(&mut conn, "201 Created", "text/plain", b"");
    }
    respond(&mut conn, "404 Not Found", "text/plain", b"not found")
}
