//! `POST /build`, dockerd's classic build protocol: the query names the options, the body is the context
//! as a tar. Everything the request says is checked before the body is read; the context is unpacked
//! ([`super::context`]) into a directory under the state root's tmp/ that lives as long as the build;
//! then the build runs on the daemon's engine as `rbuild build` would run it (the same Dockerfile, context
//! and options make the same image), its progress streamed as `{"stream": ...}` lines, its image ID as
//! `{"aux": {"ID": ...}}` and `Successfully built`, a failure as `{"error": ...}` naming the Dockerfile line.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use engine::export::{OutputKind, OutputSpec};
use engine::{BuildError, BuildRequest, CacheOptions, Entitlement, Event, ExportEvent, LocalDir};
use hyper::body::Incoming;
use hyper::header::CONTENT_LENGTH;
use hyper::{HeaderMap, Request, Response, StatusCode};
use registry::Reference;
use serde_json::json;

use super::error::ApiError;
use super::images::{is_untagged, UNTAGGED};
use super::reply::{Body, JsonStream, Query};
use super::State;
use crate::server::Daemon;

/// The largest Dockerfile or .dockerignore read.
const DOCKERFILE_LIMIT: u64 = 16 << 20;

/// The declared body length, if any.
pub(crate) fn content_length(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    match headers.get(CONTENT_LENGTH) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .map(Some)
            .ok_or_else(|| ApiError::bad_request("invalid Content-Length")),
    }
}

/// `dockerfile=sub/Dockerfile` as clean components inside the context.
fn dockerfile_path(v: &str) -> Result<String, ApiError> {
    if v.contains("://") {
        return Err(ApiError::bad_request(format!(
            "dockerfile {v:?}: a Dockerfile is a path inside the build context, not a URL"
        )));
    }
    let mut parts: Vec<&str> = Vec::new();
    for c in v.split('/') {
        match c {
            "" | "." => {}
            ".." if parts.pop().is_some() => {}
            ".." => {
                return Err(ApiError::bad_request(format!(
                    "dockerfile {v:?}: the Dockerfile must be inside the build context (forbidden path outside \
                     the build context)"
                )))
            }
            c => parts.push(c),
        }
    }
    if v.starts_with('/') || parts.is_empty() {
        return Err(ApiError::bad_request(format!("dockerfile {v:?}: give a path relative to the build context")));
    }
    Ok(parts.join("/"))
}

/// What the query asks for, checked.
struct Params {
    dockerfile: String,
    tags: Vec<Reference>,
    build_args: BTreeMap<String, String>,
    labels: BTreeMap<String, String>,
    target: Option<String>,
    platform: Option<llb::Platform>,
    no_cache: bool,
    pull: bool,
    quiet: bool,
    network: sandbox::NetworkMode,
    add_hosts: Vec<llb::HostIp>,
    cache_from: Vec<engine::cache::CacheFrom>,
    run: engine::RunSettings,
}

/// Resource limits a classic build may ask for; rbuild sets none, so only the values that mean "none" are
/// accepted. (`shmsize`, `ulimits` and `cgroupparent` are applied: see [`run_settings`].)
const LIMITS: &[&str] = &["memory", "memswap", "cpushares", "cpuperiod", "cpuquota", "cpusetcpus", "cpusetmems"];

/// `ulimits` (a JSON list of `{"Name", "Soft", "Hard"}`, go-units' Ulimit), `shmsize` (bytes) and
/// `cgroupparent`, as dockerd's build route reads them.
fn run_settings(q: &Query) -> Result<engine::RunSettings, ApiError> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Ulimit {
        name: String,
        #[serde(default)]
        soft: i64,
        #[serde(default)]
        hard: i64,
    }
    let bad = |key: &str, why: String| ApiError::bad_request(format!("{key}: {why}"));
    let mut ulimits = Vec::new();
    if let Some(v) = q.json("ulimits")?.filter(|v| !v.is_null()) {
        let list: Vec<Ulimit> = serde_json::from_value(v)
            .map_err(|e| bad("ulimits", format!("expected [{{\"Name\",\"Soft\",\"Hard\"}}]: {e}")))?;
        for u in list {
            let u = llb::Ulimit { name: u.name, soft: u.soft, hard: u.hard };
            ulimits.push(sandbox::Rlimit::from_llb(&u).map_err(|e| bad("ulimits", e.to_string()))?);
        }
    }
    let shm_size = match q.non_empty("shmsize") {
        None => None,
        Some(v) => match v.parse::<i64>() {
            Ok(n) if n >= 0 => Some(n as u64).filter(|n| *n > 0),
            _ => return Err(bad("shmsize", format!("{v:?} is not a number of bytes"))),
        },
    };
    let run = engine::RunSettings { ulimits, shm_size, cgroup_parent: q.non_empty("cgroupparent").map(str::to_string) };
    run.check().map_err(|e| bad("cgroupparent", e.to_string()))?;
    Ok(run)
}

fn parse(q: &Query, daemon: &Daemon) -> Result<Params, ApiError> {
    if let Some(r) = q.non_empty("remote") {
        return Err(ApiError::not_implemented(format!(
            "remote={r}: rbuild's Docker API does not fetch contexts; send the context as the request body (a tar)"
        )));
    }
    match q.non_empty("version") {
        None | Some("1") => {}
        Some("2") => {
            return Err(ApiError::bad_request(
                "version=2 asks for BuildKit's session protocol, which this API does not serve: build with \
                 DOCKER_BUILDKIT=0 (the classic protocol), or with rbuild's own client",
            ))
        }
        Some(v) => return Err(ApiError::bad_request(format!("version={v}: unknown builder version (use 1)"))),
    }
    if q.bool("squash")? {
        return Err(ApiError::not_implemented("squash: rbuild does not squash layers"));
    }
    if let Some(o) = q.non_empty("outputs").filter(|o| *o != "null" && *o != "[]") {
        return Err(ApiError::bad_request(format!("outputs={o}: outputs need BuildKit; this API stores the image")));
    }
    for key in LIMITS {
        if let Some(v) = q.non_empty(key) {
            let none = matches!(v, "0" | "-1") || v.is_empty();
            if !none {
                return Err(ApiError::bad_request(format!(
                    "{key}={v}: rbuild does not limit the resources of builds; leave it unset"
                )));
            }
        }
    }
    if let Some(i) = q.non_empty("isolation").filter(|i| *i != "default") {
        return Err(ApiError::bad_request(format!("isolation={i}: builds run in rbuild's sandbox (use default)")));
    }
    // Accepted for the clients that send them: there are no intermediate containers to remove.
    q.bool("rm")?;
    q.bool("forcerm")?;
    let mut tags = Vec::new();
    for t in q.all("t").into_iter().filter(|t| !t.is_empty()) {
        let r = Reference::parse(t).map_err(|e| ApiError::bad_request(format!("invalid tag {t:?}: {e}")))?;
        if r.digest().is_some() {
            return Err(ApiError::bad_request(format!("invalid tag {t:?}: a tag cannot hold a digest")));
        }
        if is_untagged(&r) {
            return Err(ApiError::bad_request(format!("invalid tag {t:?}: {UNTAGGED} is reserved")));
        }
        tags.push(r);
    }
    let network = match q.get("networkmode").unwrap_or("") {
        "" | "default" | "bridge" => sandbox::NetworkMode::Default,
        "none" => sandbox::NetworkMode::None,
        "host" if daemon.allowed().contains(&Entitlement::NetworkHost) => sandbox::NetworkMode::Host,
        "host" => {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "networkmode=host needs the network.host entitlement: start the daemon with `rbuild serve --allow \
                 network.host`",
            ))
        }
        other => {
            return Err(ApiError::bad_request(format!(
                "networkmode={other:?}: rbuild builds use the default network, host or none"
            )))
        }
    };
    let mut add_hosts = Vec::new();
    for h in q.all("extrahosts").into_iter().flat_map(|v| v.split(',')).filter(|h| !h.is_empty()) {
        let (host, ip) = h
            .split_once(':')
            .or_else(|| h.split_once('='))
            .filter(|(host, ip)| !host.is_empty() && !ip.is_empty())
            .ok_or_else(|| ApiError::bad_request(format!("extrahosts {h:?}: expected HOST:IP")))?;
        let ip = ip.trim_start_matches('[').trim_end_matches(']');
        ip.parse::<std::net::IpAddr>()
            .map_err(|_| ApiError::bad_request(format!("extrahosts {h:?}: {ip} is not an IP address")))?;
        add_hosts.push(llb::HostIp { host: host.to_string(), ip: ip.to_string() });
    }
    let mut cache_from = Vec::new();
    if let Some(v) = q.json("cachefrom")? {
        let list = match v {
            serde_json::Value::Array(a) => a,
            serde_json::Value::Null => Vec::new(),
            other => {
                return Err(ApiError::bad_request(format!("cachefrom: expected a JSON list of images, not {other}")))
            }
        };
        for c in list {
            let s = c.as_str().ok_or_else(|| ApiError::bad_request(format!("cachefrom: {c} is not a string")))?;
            match engine::cache::parse_cache_from(s).map_err(|e| ApiError::bad_request(format!("cachefrom: {e}")))? {
                engine::cache::CacheFrom::Local { .. } => {
                    return Err(ApiError::bad_request(format!(
                        "cachefrom {s}: a daemon cannot read the client's directories; use an image in a registry"
                    )))
                }
                c => cache_from.push(c),
            }
        }
    }
    Ok(Params {
        dockerfile: dockerfile_path(q.non_empty("dockerfile").unwrap_or("Dockerfile"))?,
        tags,
        build_args: q.string_map("buildargs")?,
        labels: q.string_map("labels")?,
        target: q.non_empty("target").map(str::to_string),
        platform: platform(q)?,
        no_cache: q.bool("nocache")?,
        pull: q.bool("pull")?,
        quiet: q.bool("q")?,
        network,
        add_hosts,
        cache_from,
        run: run_settings(q)?,
    })
}

/// `platform=os/arch[/variant]`: a Linux one, as a Linux dockerd answers "operating system is not
/// supported" for others (rbuild's sandbox runs Linux processes).
fn platform(q: &Query) -> Result<Option<llb::Platform>, ApiError> {
    let Some(v) = q.non_empty("platform") else { return Ok(None) };
    let p: llb::Platform = v.parse().map_err(|e| ApiError::bad_request(format!("invalid platform {v:?}: {e}")))?;
    if p.os != "linux" {
        return Err(ApiError::bad_request(format!(
            "platform {v:?}: operating system {} is not supported (rbuild builds linux images)",
            p.os
        )));
    }
    Ok(Some(p))
}

static BUILDS: AtomicU64 = AtomicU64::new(0);

pub(crate) async fn build(state: &State, req: Request<Incoming>, q: Query) -> Result<Response<Body>, ApiError> {
    let daemon = state.daemon.clone();
    let p = parse(&q, &daemon)?;
    // Admitted as the daemon's own builds are: counted for a drain, queued under `--max-builds`.
    let Some(admitted) = daemon.fleet().health.admit().await else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "this rbuild daemon is draining (shutting down): build on another",
        ));
    };
    let logins = super::bases::registry_config(req.headers())?;
    let declared = content_length(req.headers())?;
    let engine = daemon.engine().clone();
    let tmp = engine.store().root.tmp_dir();
    let dir = tempfile::Builder::new()
        .prefix("docker-context-")
        .tempdir_in(&tmp)
        .map_err(|e| ApiError::internal(format!("cannot make a context directory in {}: {e}", tmp.display())))?;
    let reader = super::context::pump(req.into_body(), declared);
    let root = dir.path().to_path_buf();
    tokio::task::spawn_blocking(move || super::context::unpack(reader, &root))
        .await
        .map_err(|e| ApiError::internal(format!("unpacking the context failed: {e}")))?
        .map_err(|e| match e.is_client_error() {
            true => ApiError::bad_request(e.to_string()),
            false => ApiError::internal(e.to_string()),
        })?;
    let read = |rel: &str| {
        super::context::read_in_root(dir.path(), rel, DOCKERFILE_LIMIT)
            .map_err(|e| ApiError::bad_request(format!("cannot read {rel} from the build context: {e}")))
    };
    let dockerfile = read(&p.dockerfile)?
        .ok_or_else(|| ApiError::bad_request(format!("Cannot locate specified Dockerfile: {}", p.dockerfile)))?;
    // `<Dockerfile>.dockerignore` beside it first, then the context's, as `rbuild build` reads them.
    let ignore = match read(&format!("{}.dockerignore", p.dockerfile))? {
        Some(b) => Some(b),
        None => read(".dockerignore")?,
    };
    let dockerignore = ignore.map(|b| String::from_utf8_lossy(&b).into_owned());
    let name = p.dockerfile.rsplit('/').next().unwrap_or("Dockerfile").to_string();

    let mut r = BuildRequest::new(dockerfile.clone(), Arc::new(LocalDir(dir.path().to_path_buf())));
    r.dockerfile_name = name.clone();
    r.dockerignore = dockerignore;
    // Why steps ran is told against the last build of the same image name and Dockerfile through this API.
    let image = p.tags.first().map(|t| t.name()).unwrap_or_else(|| UNTAGGED.to_string());
    r.explain_key = Some(format!("docker-api/{image}/{}", p.dockerfile));
    r.source_date_epoch = match p.build_args.get("SOURCE_DATE_EPOCH").map(String::as_str) {
        None | Some("") => None,
        Some(v) => Some(v.parse().map_err(|_| {
            ApiError::bad_request(format!("buildargs: SOURCE_DATE_EPOCH={v} is not a number of seconds"))
        })?),
    };
    r.build_args = p.build_args;
    r.target = p.target;
    // The Engine API's `platform` is one `os[/arch[/variant]]` (docker's own daemon rejects a list).
    r.platforms = p.platform.into_iter().collect();
    r.labels = p.labels;
    // A build without a name is kept as an untagged image: named for now by this build, then by its ID.
    let pending = (p.tags.is_empty()).then(|| {
        let n = BUILDS.fetch_add(1, Ordering::Relaxed);
        format!("{UNTAGGED}:build-{}-{n}", std::process::id())
    });
    r.tags = match &pending {
        Some(t) => vec![t.clone()],
        None => p.tags.iter().map(|t| t.to_string()).collect(),
    };
    r.outputs = vec![OutputSpec {
        kind: OutputKind::Image { names: Vec::new(), push: false },
        compression: None,
        oci_mediatypes: None,
    }];
    r.cache = CacheOptions { no_cache: p.no_cache, no_cache_filter: Vec::new(), pull: p.pull };
    r.network = p.network;
    if p.network == sandbox::NetworkMode::Host {
        r.entitlements.insert(Entitlement::NetworkHost);
    }
    r.add_hosts = p.add_hosts;
    r.cache_from = p.cache_from;
    r.run = p.run;

    // The bases to pull with the client's logins first (see `bases`): only when it sent some.
    let bases = match logins.is_empty() {
        true => Vec::new(),
        false => {
            let opts = frontend::convert::ConvertOptions {
                filename: name.clone(),
                target: r.target.clone(),
                build_args: r.build_args.clone(),
                target_platform: r.platforms.first().cloned(),
                ..Default::default()
            };
            let df = dockerfile.clone();
            tokio::task::spawn_blocking(move || super::bases::base_images(&df, &opts))
                .await
                .map_err(|e| ApiError::internal(format!("reading the Dockerfile's base images failed: {e}")))?
        }
    };

    let (out, resp) = JsonStream::start();
    let source = String::from_utf8_lossy(&dockerfile).into_owned();
    let creds = state.creds.clone();
    let run = Run { daemon, out, quiet: p.quiet, pending, dockerfile: (name, source) };
    tokio::spawn(async move {
        match super::bases::pull(&run.daemon, &creds, &logins, &bases, p.pull, run.quiet, &run.out).await {
            // Every base was pulled just now: the build need not resolve them again with the daemon's logins.
            Ok(true) if !bases.is_empty() => r.cache.pull = false,
            Ok(_) => {}
            Err(e) => {
                run.out.error(&e).await;
                return;
            }
        }
        run.run(r).await;
        drop(admitted);
        // The context is removed once the build is over.
        drop(dir);
    });
    Ok(resp)
}

/// One running build and its response stream.
struct Run {
    daemon: Daemon,
    out: JsonStream,
    quiet: bool,
    /// The temporary name of a build without `-t`.
    pending: Option<String>,
    /// The Dockerfile's name and text, for error messages.
    dockerfile: (String, String),
}

impl Run {
    async fn run(self, req: BuildRequest) {
        let c = self.daemon.counters().clone();
        c.builds_running.fetch_add(1, Ordering::Relaxed);
        c.builds_total.fetch_add(1, Ordering::Relaxed);
        let engine = self.daemon.engine().clone();
        let mut handle = engine.build(req);
        let canceller = handle.canceller();
        let mut steps = Steps::default();
        let mut named = Vec::new();
        if let Some(mut events) = handle.events() {
            loop {
                let e = tokio::select! {
                    e = events.recv() => e,
                    // The client went away (Ctrl-C of `docker build`): the build stops, as dockerd's does.
                    _ = self.out.closed() => { canceller.cancel(); break; }
                };
                let Some(e) = e else { break };
                self.daemon.fleet().metrics.event(&e);
                if let Event::Export(ExportEvent::Named { reference }) = &e {
                    named.push(reference.clone());
                }
                if self.quiet {
                    continue;
                }
                if let Some(text) = steps.render(&e, &self.dockerfile.0) {
                    if !self.out.stream(text).await {
                        canceller.cancel();
                    }
                }
            }
        }
        let result = handle.wait().await;
        self.daemon.fleet().metrics.build_done(result.as_ref().ok().map(|r| r.steps.as_slice()));
        match result {
            Ok(res) => self.succeeded(res.image_id(), res.image.map(|i| i.manifest), &named).await,
            Err(e) => {
                let message = match &e {
                    BuildError::Dockerfile { filename, diagnostic } => {
                        diagnostic.render(filename, &self.dockerfile.1).trim_end().to_string()
                    }
                    e => e.to_string(),
                };
                self.out.error(&message).await;
            }
        }
        c.builds_running.fetch_sub(1, Ordering::Relaxed);
    }

    async fn succeeded(&self, id: Option<String>, manifest: Option<oci_spec::image::Descriptor>, named: &[String]) {
        let Some(id) = id else {
            self.out.error("the build made no image").await;
            return;
        };
        if let (Some(tmp), Some(m)) = (&self.pending, manifest) {
            if let Err(e) = self.keep_untagged(tmp, &id, &m).await {
                self.out.error(&format!("keeping the untagged image {id}: {e}")).await;
                return;
            }
        }
        self.out.send(json!({ "aux": { "ID": id } })).await;
        if self.quiet {
            self.out.stream(format!("{id}\n")).await;
            return;
        }
        let short: String = id.trim_start_matches("sha256:").chars().take(12).collect();
        self.out.stream(format!("Successfully built {short}\n")).await;
        for n in named {
            if let Ok(r) = Reference::parse(n) {
                if !is_untagged(&r) {
                    let tag = r.tag().map(|t| format!(":{t}")).unwrap_or_default();
                    self.out.stream(format!("Successfully tagged {}{tag}\n", r.familiar_name())).await;
                }
            }
        }
    }

    /// Renames the build's temporary name to `UNTAGGED:<id>`, which the image endpoints find by ID.
    async fn keep_untagged(&self, tmp: &str, id: &str, m: &oci_spec::image::Descriptor) -> Result<(), ApiError> {
        let store = self.daemon.engine().images().clone();
        let (tmp, id, m) = (tmp.to_string(), id.to_string(), m.clone());
        tokio::task::spawn_blocking(move || {
            let final_name = Reference::parse(&format!("{UNTAGGED}:{}", id.trim_start_matches("sha256:")))?;
            store.tag(&final_name, &m)?;
            store.untag(&Reference::parse(&tmp)?)?;
            Ok(())
        })
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
    }
}

/// Numbers steps as they start and renders events as build output lines.
#[derive(Default)]
struct Steps {
    numbers: BTreeMap<llb::Digest, usize>,
    /// A first build's steps all miss for one reason, said once.
    first_build_said: bool,
}

impl Steps {
    fn number(&mut self, v: &llb::Digest) -> usize {
        let next = self.numbers.len() + 1;
        *self.numbers.entry(*v).or_insert(next)
    }

    fn render(&mut self, e: &Event, dockerfile: &str) -> Option<String> {
        use solver::EventKind;
        match e {
            Event::Step(s) => {
                let n = self.number(&s.vertex);
                match &s.kind {
                    EventKind::Started { name } => Some(format!("#{n} {name}\n")),
                    EventKind::Cached { source: None } => Some(format!("#{n} CACHED\n")),
                    EventKind::Cached { source: Some(from) } => Some(format!("#{n} CACHED (from {from})\n")),
                    EventKind::Log { line, .. } => Some(format!("#{n} {}\n", String::from_utf8_lossy(line))),
                    EventKind::Status { .. } => None,
                    EventKind::Completed { duration } => Some(format!("#{n} DONE {:.1}s\n", duration.as_secs_f64())),
                    EventKind::Failed { error } => Some(format!("#{n} ERROR: {error}\n")),
                    EventKind::Canceled => Some(format!("#{n} CANCELED\n")),
                }
            }
            Event::Warning(d) => Some(format!("[Warning] {dockerfile}: {d}\n")),
            Event::Export(ExportEvent::Named { .. }) => None,
            Event::Export(ExportEvent::Pushed { reference, .. }) => Some(format!("pushed {reference}\n")),
            Event::Cache(c) => Some(cache_line(c)),
            // Why a step ran, after the steps, as `rbuild build` prints it.
            Event::Miss(m) if m.first_build => {
                let said = std::mem::replace(&mut self.first_build_said, true);
                (!said).then(|| format!("MISS: {}\n", m.reason))
            }
            Event::Miss(m) => Some(format!("MISS {}: {}\n", m.name, m.reason)),
        }
    }
}

fn cache_line(c: &engine::CacheEvent) -> String {
    use engine::CacheEvent::*;
    match c {
        Importing { from } => format!("importing cache from {from}\n"),
        Imported { from, results } => format!("imported {results} cached results from {from}\n"),
        ImportFailed { from, error } => format!("[Warning] cannot import cache from {from}: {error}\n"),
        Miss { from, key, error } => format!("[Warning] cache {from} has no usable {key}: {error}\n"),
        Fetched { from, blobs, bytes } => format!("fetched {blobs} cached layers ({bytes} bytes) from {from}\n"),
        Exporting { to } => format!("exporting cache to {to}\n"),
        Exported { to, results, .. } => format!("exported {results} cached results to {to}\n"),
        ExportFailed { to, error } => format!("[Warning] cannot export cache to {to}: {error}\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dockerfile_paths_stay_inside_the_context() {
        assert_eq!(dockerfile_path("Dockerfile").unwrap(), "Dockerfile");
        assert_eq!(dockerfile_path("./sub/Dockerfile").unwrap(), "sub/Dockerfile");
        assert_eq!(dockerfile_path("sub/../other/Dockerfile").unwrap(), "other/Dockerfile");
        for bad in ["../Dockerfile", "sub/../../x", "/etc/passwd", "http://example.com/Dockerfile", ""] {
            let e = dockerfile_path(bad).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{bad}");
        }
    }

    fn query(pairs: &[(&str, &str)]) -> Query {
        let q = form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish();
        Query::parse(Some(&q))
    }

    #[test]
    fn run_settings_as_dockerd_reads_them() {
        let q = query(&[
            ("ulimits", r#"[{"Name":"nofile","Soft":512,"Hard":1024},{"Name":"core","Soft":-1,"Hard":-1}]"#),
            ("shmsize", "134217728"),
            ("cgroupparent", "builds"),
        ]);
        let run = run_settings(&q).unwrap();
        let shown: Vec<String> = run.ulimits.iter().map(|u| u.to_string()).collect();
        assert_eq!(shown, ["nofile=512:1024", "core=-1:-1"]);
        assert_eq!(run.shm_size, Some(128 << 20));
        assert_eq!(run.cgroup_parent.as_deref(), Some("builds"));
        // What clients send for "unset".
        let unset = query(&[("ulimits", "null"), ("shmsize", "0"), ("cgroupparent", "")]);
        assert_eq!(run_settings(&unset).unwrap(), engine::RunSettings::default());
        assert_eq!(run_settings(&query(&[("ulimits", "[]")])).unwrap(), engine::RunSettings::default());
        for (key, value, says) in [
            ("ulimits", r#"[{"Name":"nofiles","Soft":1,"Hard":1}]"#, "ulimits: invalid ulimit \"nofiles=1:1\""),
            ("ulimits", r#"{"nofile":1}"#, "ulimits: expected"),
            ("shmsize", "64m", "shmsize: \"64m\" is not a number of bytes"),
            ("cgroupparent", "../x", "\"../x\" is not a cgroup path"),
        ] {
            let e = run_settings(&query(&[(key, value)])).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST);
            assert!(e.message.contains(says), "{key}={value}: {}", e.message);
        }
    }
}
