//! HTTP sources end to end: `ADD --checksum` and plain `ADD http://...` against a real HTTP server on a
//! loopback port (started by the test), built through the frontend and the solver on the real store.

#[path = "solve_support.rs"]
mod support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::sync::{Arc, Mutex};

use llb::{DefinitionBuilder, Digest, Metadata, SourceOp};
use support::{definition, executed_names, Env};

/// What the server answers for one path.
#[derive(Clone, Default)]
struct Resource {
    body: Vec<u8>,
    etag: Option<String>,
    last_modified: Option<String>,
    content_disposition: Option<String>,
    status: Option<u16>,
    /// The Authorization header the server insists on (401 otherwise).
    authorization: Option<String>,
}

#[derive(Default)]
struct State {
    resources: HashMap<String, Resource>,
    /// (method, path, status answered)
    requests: Vec<(String, String, u16)>,
}

/// A minimal HTTP/1.1 server (one request per connection) honouring If-None-Match and
/// If-Modified-Since, recording every request.
struct Server {
    port: u16,
    state: Arc<Mutex<State>>,
}

impl Server {
    fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(State::default()));
        let st = state.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let st = st.clone();
                std::thread::spawn(move || serve(conn, &st));
            }
        });
        Server { port, state }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn set(&self, path: &str, r: Resource) {
        self.state.lock().unwrap().resources.insert(path.into(), r);
    }

    /// The requests so far, and forget them.
    fn take(&self) -> Vec<(String, String, u16)> {
        std::mem::take(&mut self.state.lock().unwrap().requests)
    }
}

fn serve(conn: TcpStream, st: &Mutex<State>) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or("").to_string(), parts.next().unwrap_or("").to_string());
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let res = st.lock().unwrap().resources.get(&path).cloned();
    let (status, res) = match res {
        None => (404, Resource { body: b"not found\n".to_vec(), ..Resource::default() }),
        Some(r) => {
            let etag_hit = match (&r.etag, headers.get("if-none-match")) {
                (Some(e), Some(want)) => want.split(',').any(|w| w.trim() == e),
                _ => false,
            };
            let date_hit = match (&r.last_modified, headers.get("if-modified-since")) {
                (Some(l), Some(want)) => l == want,
                _ => false,
            };
            let denied = r.authorization.as_ref().is_some_and(|a| headers.get("authorization") != Some(a));
            let status = if denied {
                401
            } else if etag_hit || date_hit {
                304
            } else {
                200
            };
            (r.status.unwrap_or(status), r)
        }
    };
    st.lock().unwrap().requests.push((method.clone(), path, status));
    let mut out = format!("HTTP/1.1 {status} X\r\nConnection: close\r\nContent-Length: {}\r\n", res.body.len());
    for (k, v) in
        [("ETag", &res.etag), ("Last-Modified", &res.last_modified), ("Content-Disposition", &res.content_disposition)]
    {
        if let Some(v) = v {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
    }
    out.push_str("\r\n");
    let mut conn = conn;
    let _ = conn.write_all(out.as_bytes());
    if method == "GET" && status != 304 {
        let _ = conn.write_all(&res.body);
    }
    let _ = conn.flush();
    let mut rest = Vec::new();
    let _ = reader.read_to_end(&mut rest);
}

fn sha256(b: &[u8]) -> Digest {
    use sha2::Digest as _;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(b))).parse().unwrap()
}

fn dockerfile(url: &str, checksum: Option<&Digest>) -> String {
    let flag = checksum.map(|c| format!("--checksum={c} ")).unwrap_or_default();
    format!("FROM busybox\nADD {flag}{url} /x\nRUN cat /x > /copy\n")
}

fn gets(reqs: &[(String, String, u16)]) -> usize {
    reqs.iter().filter(|(m, _, s)| m == "GET" && *s == 200).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn add_with_checksum_downloads_once_and_a_cached_build_makes_no_request() {
    require_root!();
    let server = Server::start();
    let body = b"hello over http\n".to_vec();
    server.set("/f.txt", Resource { body: body.clone(), ..Resource::default() });
    let env = Env::new();
    let def = definition(&dockerfile(&server.url("/f.txt"), Some(&sha256(&body))), &[]);

    let (opts, _) = env.options();
    let solved = env.solver.solve(&def, opts).await.unwrap();
    assert_eq!(gets(&server.take()), 1);
    let out = env.export(&solved.root);
    assert_eq!(std::fs::read(out.path().join("x")).unwrap(), body);
    assert_eq!(std::fs::read(out.path().join("copy")).unwrap(), body);

    let (opts, _) = env.options();
    let again = env.solver.solve(&def, opts).await.unwrap();
    assert_eq!(again.executed, 0, "{again:?}");
    assert!(server.take().is_empty(), "a cached build with a checksum must not touch the network");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_checksum_mismatch_names_the_url_and_both_digests() {
    require_root!();
    let server = Server::start();
    server.set("/f", Resource { body: b"actual".to_vec(), ..Resource::default() });
    let env = Env::new();
    let wrong = sha256(b"expected");
    let def = definition(&dockerfile(&server.url("/f"), Some(&wrong)), &[]);
    let (opts, _) = env.options();
    let e = env.solver.solve(&def, opts).await.unwrap_err().to_string();
    assert!(e.contains(&server.url("/f")), "{e}");
    assert!(e.contains(&wrong.to_string()), "{e}");
    assert!(e.contains(&sha256(b"actual").to_string()), "{e}");
    assert!(e.contains("ADD http://"), "the error names the step: {e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_http_error_names_the_url_and_the_status() {
    require_root!();
    let server = Server::start();
    let env = Env::new();
    for checksum in [None, Some(sha256(b"x"))] {
        let def = definition(&dockerfile(&server.url("/missing"), checksum.as_ref()), &[]);
        let (opts, _) = env.options();
        let e = env.solver.solve(&def, opts).await.unwrap_err().to_string();
        assert!(e.contains(&server.url("/missing")) && e.contains("404"), "{e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unchanged_url_with_an_etag_revalidates_and_the_steps_after_it_are_cached() {
    require_root!();
    let server = Server::start();
    let v1 = Resource { body: b"one\n".to_vec(), etag: Some("\"v1\"".into()), ..Resource::default() };
    server.set("/f", v1);
    let env = Env::new();
    let def = definition(&dockerfile(&server.url("/f"), None), &[]);

    let (opts, _) = env.options();
    env.solver.solve(&def, opts).await.unwrap();
    assert_eq!(gets(&server.take()), 1);

    let (opts, _events) = env.options();
    let again = env.solver.solve(&def, opts).await.unwrap();
    let reqs = server.take();
    assert_eq!(gets(&reqs), 0, "revalidated, not downloaded: {reqs:?}");
    assert!(reqs.iter().any(|(m, _, _)| m == "HEAD"), "{reqs:?}");
    assert_eq!(again.executed, 0, "{again:?} ran {:?}", executed_names(&again));

    // A new version: downloaded, and the ADD and the RUN after it run again.
    server.set("/f", Resource { body: b"two\n".to_vec(), etag: Some("\"v2\"".into()), ..Resource::default() });
    let (opts, _events) = env.options();
    let third = env.solver.solve(&def, opts).await.unwrap();
    assert_eq!(gets(&server.take()), 1);
    let ran = executed_names(&third);
    assert!(ran.iter().any(|n| n.contains("RUN cat")), "{ran:?}");
    let out = env.export(&third.root);
    assert_eq!(std::fs::read_to_string(out.path().join("copy")).unwrap(), "two\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_an_etag_last_modified_revalidates_and_content_keys_the_rest() {
    require_root!();
    let server = Server::start();
    let lm = "Sun, 06 Nov 1994 08:49:37 GMT";
    server.set("/dated", Resource { body: b"d\n".to_vec(), last_modified: Some(lm.into()), ..Resource::default() });
    server.set("/plain", Resource { body: b"p\n".to_vec(), ..Resource::default() });
    let env = Env::new();
    for (path, downloads_again) in [("/dated", 0), ("/plain", 1)] {
        let def = definition(&dockerfile(&server.url(path), None), &[]);
        let (opts, _) = env.options();
        let first = env.solver.solve(&def, opts).await.unwrap();
        assert_eq!(gets(&server.take()), 1);
        let (opts, _) = env.options();
        let again = env.solver.solve(&def, opts).await.unwrap();
        assert_eq!(gets(&server.take()), downloads_again, "{path}");
        assert_eq!(again.executed, 0, "{path}: the same bytes key the same: {again:?}");
        if path == "/dated" {
            let out = env.export(&first.root);
            let mtime = std::fs::metadata(out.path().join("x")).unwrap().mtime();
            assert_eq!(mtime, 784111777, "the file carries Last-Modified");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_file_gets_its_name_mode_and_owner() {
    require_root!();
    let server = Server::start();
    server.set(
        "/download?id=7",
        Resource {
            body: b"named\n".to_vec(),
            content_disposition: Some("attachment; filename=\"report.txt\"".into()),
            ..Resource::default()
        },
    );
    let env = Env::new();
    let mut b = DefinitionBuilder::new();
    let op = SourceOp::Http {
        url: server.url("/download?id=7"),
        checksum: None,
        filename: None,
        perm: Some(0o750),
        uid: Some(1000),
        gid: Some(1001),
        headers: Default::default(),
        auth_header_secret: None,
    };
    let src = b.source(op.clone(), None, Metadata::described("ADD")).unwrap();
    let def = b.finish(Some(src)).unwrap();
    let (opts, _) = env.options();
    let solved = env.solver.solve(&def, opts).await.unwrap();
    let out = env.export(&solved.root);
    let md = std::fs::metadata(out.path().join("report.txt")).unwrap();
    assert_eq!(md.permissions().mode() & 0o7777, 0o750);
    assert_eq!((md.uid(), md.gid()), (1000, 1001));
    assert_eq!(md.mtime(), 0, "no Last-Modified: the epoch, as BuildKit");

    // The default mode is 0600 and the op's filename wins over Content-Disposition.
    let mut b = DefinitionBuilder::new();
    let op = match op {
        SourceOp::Http { url, headers, .. } => SourceOp::Http {
            url,
            checksum: Some(sha256(b"named\n")),
            filename: Some("given".into()),
            perm: None,
            uid: None,
            gid: None,
            headers,
            auth_header_secret: None,
        },
        _ => unreachable!(),
    };
    let src = b.source(op, None, Metadata::described("ADD")).unwrap();
    let def = b.finish(Some(src)).unwrap();
    let (opts, _) = env.options();
    let solved = env.solver.solve(&def, opts).await.unwrap();
    let out = env.export(&solved.root);
    let md = std::fs::metadata(out.path().join("given")).unwrap();
    assert_eq!(md.permissions().mode() & 0o7777, 0o600);
    assert_eq!((md.uid(), md.gid()), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn add_host_reaches_etc_hosts_and_ulimits_apply() {
    require_root!();
    let env = Env::new();
    let build = |hosts: Vec<llb::HostIp>, ulimits: Vec<llb::Ulimit>, cmd: &str| {
        let mut b = DefinitionBuilder::new();
        let base =
            b.source(SourceOp::image("docker.io/library/busybox:latest", None), None, Metadata::default()).unwrap();
        let mut e = llb::ExecOp::new(vec!["/bin/sh".into(), "-c".into(), cmd.into()], Some(0));
        e.meta.extra_hosts = hosts;
        e.meta.ulimits = ulimits;
        let run = b.add_op(llb::Op::Exec(e), &[base], None, Metadata::described("RUN sh")).unwrap();
        b.finish(Some(run)).unwrap()
    };
    let def =
        build(vec![llb::HostIp { host: "db".into(), ip: "10.0.0.2".into() }], vec![], "grep -w db /etc/hosts > /seen");
    let (opts, _) = env.options();
    let solved = env.solver.solve(&def, opts).await.unwrap();
    let out = env.export(&solved.root);
    assert_eq!(std::fs::read_to_string(out.path().join("seen")).unwrap(), "10.0.0.2\tdb\n");

    let limits = |soft, hard| vec![llb::Ulimit { name: "nofile".into(), soft, hard }];
    let cmd = "{ ulimit -Sn; ulimit -Hn; } > /seen";
    let def = build(vec![], limits(1024, 2048), cmd);
    let (opts, _) = env.options();
    let solved = env.solver.solve(&def, opts).await.unwrap();
    assert_eq!(std::fs::read_to_string(env.export(&solved.root).path().join("seen")).unwrap(), "1024\n2048\n");
    // Another limit is another step (the ulimit is part of the definition, so of the cache key).
    let def = build(vec![], limits(512, 512), cmd);
    let (opts, _) = env.options();
    let solved = env.solver.solve(&def, opts).await.unwrap();
    assert_eq!(std::fs::read_to_string(env.export(&solved.root).path().join("seen")).unwrap(), "512\n512\n");

    let def = build(vec![], vec![llb::Ulimit { name: "bogus".into(), soft: 1, hard: 1 }], "true");
    let (opts, _) = env.options();
    let err = env.solver.solve(&def, opts).await.unwrap_err().to_string();
    assert!(err.contains("invalid ulimit \"bogus=1:1\": unknown type \"bogus\""), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn credentials_come_from_the_host_named_secrets() {
    require_root!();
    let server = Server::start();
    let r =
        Resource { body: b"private\n".to_vec(), authorization: Some("Bearer s3cret".into()), ..Resource::default() };
    server.set("/private", r);
    let env = Env::new();
    let def = definition(&dockerfile(&server.url("/private"), None), &[]);
    let (opts, _) = env.options();
    let e = env.solver.solve(&def, opts).await.unwrap_err().to_string();
    assert!(e.contains("401") && e.contains(&server.url("/private")), "{e}");

    let (mut opts, _) = env.options();
    opts.secrets = std::sync::Arc::new(solver::StaticSecrets(
        [("HTTP_AUTH_TOKEN_127.0.0.1".to_string(), b"s3cret\n".to_vec())].into(),
    ));
    let solved = env.solver.solve(&def, opts).await.unwrap();
    let out = env.export(&solved.root);
    assert_eq!(std::fs::read_to_string(out.path().join("x")).unwrap(), "private\n");
}
