//! Images in and out: pull (`POST /images/create`), push, save (`GET /images/get`, docker-archive) and
//! load, with the credentials a client sends (`X-Registry-Auth`: base64url JSON of docker's AuthConfig)
//! and dockerd's progress messages.

use std::sync::Arc;

use base64::Engine as _;
use hyper::body::Incoming;
use hyper::{HeaderMap, Request, Response, StatusCode};
use registry::auth::{CredentialError, CredentialSource, Credentials};
use registry::export::ArchiveFormat;
use registry::{Client, Progress, ProgressKind, Reference};
use serde_json::json;
use tokio::sync::mpsc;

use super::error::ApiError;
use super::images::{self, Found, UNTAGGED};
use super::reply::{Body, ByteStream, JsonStream, Query};
use super::State;
use crate::server::Daemon;

/// Docker's AuthConfig, as clients send it.
#[derive(Debug, Default, serde::Deserialize)]
pub(crate) struct AuthConfig {
    #[serde(default)]
    pub(crate) username: String,
    #[serde(default)]
    pub(crate) password: String,
    /// base64 of `user:password`, which some clients send instead.
    #[serde(default)]
    pub(crate) auth: String,
    #[serde(default)]
    pub(crate) serveraddress: String,
    #[serde(default)]
    pub(crate) identitytoken: String,
}

impl AuthConfig {
    /// The login it holds, if any.
    pub(crate) fn credentials(&self) -> Option<Credentials> {
        let (mut user, mut pass) = (self.username.clone(), self.password.clone());
        if user.is_empty() && !self.auth.is_empty() {
            let decoded = base64::engine::general_purpose::STANDARD.decode(self.auth.trim()).ok()?;
            let s = String::from_utf8(decoded).ok()?;
            let (u, p) = s.split_once(':')?;
            (user, pass) = (u.to_string(), p.to_string());
        }
        let token = (!self.identitytoken.is_empty()).then(|| self.identitytoken.clone());
        (!user.is_empty() || token.is_some()).then_some(Credentials {
            username: user,
            password: pass,
            identity_token: token,
        })
    }
}

/// base64url (padded or not; docker-py and the CLI differ) JSON from a header.
pub(crate) fn decode_header<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    name: &str,
) -> Result<Option<T>, ApiError> {
    let Some(v) = headers.get(name) else { return Ok(None) };
    let bad = |why: String| ApiError::bad_request(format!("invalid {name} header: {why}"));
    let text = v.to_str().map_err(|_| bad("not ASCII".into()))?.trim();
    if text.is_empty() {
        return Ok(None);
    }
    use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
    let bytes = URL_SAFE
        .decode(text)
        .or_else(|_| URL_SAFE_NO_PAD.decode(text))
        .or_else(|_| STANDARD.decode(text))
        .map_err(|e| bad(format!("not base64 ({e})")))?;
    serde_json::from_slice(&bytes).map(Some).map_err(|e| bad(format!("not the JSON expected ({e})")))
}

/// The client's login for one registry, over the daemon's own.
struct ClientCredentials {
    registry: String,
    given: Option<Credentials>,
    daemon: Arc<dyn CredentialSource>,
}

pub(crate) fn is_hub(host: &str) -> bool {
    matches!(host, "docker.io" | "index.docker.io" | "registry-1.docker.io")
}

impl CredentialSource for ClientCredentials {
    fn credentials(&self, registry: &str) -> Result<Option<Credentials>, CredentialError> {
        let same = registry == self.registry || (is_hub(registry) && is_hub(&self.registry));
        match &self.given {
            Some(c) if same => Ok(Some(c.clone())),
            _ => self.daemon.credentials(registry),
        }
    }
}

/// A registry client for requests to `registry` with the login `given` for it (the daemon's logins for
/// other registries, and for it too when `given` is `None`), reporting blob progress to `progress`.
pub(crate) fn registry_client(
    daemon: &Daemon,
    daemon_creds: Arc<dyn CredentialSource>,
    registry: &str,
    given: Option<Credentials>,
    progress: mpsc::UnboundedSender<Progress>,
) -> Client {
    let creds = ClientCredentials { registry: registry.to_string(), given, daemon: daemon_creds };
    let config = daemon.engine().client().config().clone();
    Client::new(config, Arc::new(creds)).with_progress(Arc::new(move |p: &Progress| {
        let _ = progress.send(p.clone());
    }))
}

/// A registry client for one request to `registry`: the client's `X-Registry-Auth` login for it, else the
/// daemon's.
fn client_for(
    state: &State,
    headers: &HeaderMap,
    registry: &str,
    progress: mpsc::UnboundedSender<Progress>,
) -> Result<Client, ApiError> {
    let auth: Option<AuthConfig> = decode_header(headers, "X-Registry-Auth")?;
    let given = auth.and_then(|a| a.credentials());
    Ok(registry_client(&state.daemon, state.creds.clone(), registry, given, progress))
}

fn short(digest: &str) -> String {
    digest.trim_start_matches("sha256:").chars().take(12).collect()
}

/// Forwards blob progress as dockerd's per-layer status lines until the sender goes.
pub(crate) fn forward(
    mut rx: mpsc::UnboundedReceiver<Progress>,
    out: JsonStream,
    push: bool,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(p) = rx.recv().await {
            let status = match (p.kind, push) {
                (ProgressKind::Exists, false) => "Already exists",
                (ProgressKind::Exists, true) => "Layer already exists",
                (ProgressKind::Mounted, _) => "Mounted from another repository",
                (ProgressKind::Done, false) => "Pull complete",
                (ProgressKind::Done, true) => "Pushed",
                (ProgressKind::Downloading | ProgressKind::Uploading, _) => {
                    let what = if push { "Pushing" } else { "Downloading" };
                    let v = json!({
                        "status": what,
                        "progressDetail": { "current": p.current, "total": p.total },
                        "id": short(&p.id),
                    });
                    out.send(v).await;
                    continue;
                }
            };
            out.status(status, Some(&short(&p.id))).await;
        }
    })
}

/// `name:tag` in the familiar form docker prints.
fn familiar(r: &Reference) -> String {
    let mut s = r.familiar_name();
    if let Some(t) = r.tag() {
        s.push(':');
        s.push_str(t);
    }
    if let Some(d) = r.digest() {
        s.push('@');
        s.push_str(d.as_ref());
    }
    s
}

/// `POST /images/create?fromImage=NAME&tag=TAG&platform=P`: a pull, streamed.
pub(crate) async fn pull(state: &State, req: Request<Incoming>, q: &Query) -> Result<Response<Body>, ApiError> {
    if q.non_empty("fromSrc").is_some() {
        return Err(ApiError::not_implemented(
            "rbuild does not import root filesystems (docker import): build the image from a Dockerfile",
        ));
    }
    let from = q.non_empty("fromImage").ok_or_else(|| ApiError::bad_request("fromImage is missing"))?;
    let name = match q.non_empty("tag") {
        Some(t) if t.starts_with("sha256:") => format!("{from}@{t}"),
        Some(t) => format!("{from}:{t}"),
        None => from.to_string(),
    };
    let r = Reference::parse(&name).map_err(|e| ApiError::bad_request(format!("fromImage {name}: {e}")))?;
    let platform = q
        .non_empty("platform")
        .map(str::parse::<llb::Platform>)
        .transpose()
        .map_err(|e| ApiError::bad_request(format!("invalid platform: {e}")))?;
    let (ptx, prx) = mpsc::unbounded_channel();
    let client = client_for(state, req.headers(), r.registry(), ptx)?;
    let store = state.daemon.engine().images().clone();
    let (out, resp) = JsonStream::start();
    tokio::spawn(async move {
        let shown = r.tag().or(r.digest().map(|_| "")).unwrap_or("latest").to_string();
        out.status(&format!("Pulling from {}", r.repository()), Some(&shown)).await;
        let forwarding = forward(prx, out.clone(), false);
        let result = engine::images::pull(&client, &store, &r.to_string(), platform.as_ref()).await;
        drop(client);
        let _ = forwarding.await;
        match result {
            Ok(s) => {
                out.status(&format!("Digest: {}", s.digest), None).await;
                let what = if s.fetched { "Downloaded newer image for" } else { "Image is up to date for" };
                out.status(&format!("Status: {what} {}", familiar(&r)), None).await;
            }
            Err(e) => {
                out.error(&e.to_string()).await;
            }
        }
    });
    Ok(resp)
}

/// `POST /images/{name}/push?tag=T`: every tag of the repository when no tag is given, as dockerd.
pub(crate) async fn push(
    state: &State,
    req: Request<Incoming>,
    name: &str,
    q: &Query,
) -> Result<Response<Body>, ApiError> {
    let base = Reference::parse(name).map_err(|e| ApiError::bad_request(format!("push {name}: {e}")))?;
    let store = state.daemon.engine().images().clone();
    let targets: Vec<Reference> = match q.non_empty("tag") {
        Some(t) => vec![base.with_tag(t)],
        None if name.contains('@') || name.rsplit('/').next().is_some_and(|l| l.contains(':')) => vec![base.clone()],
        None => {
            let s = store.clone();
            let wanted = base.name();
            let all = tokio::task::spawn_blocking(move || s.list())
                .await
                .map_err(|e| ApiError::internal(e.to_string()))??;
            all.into_iter().map(|n| n.name).filter(|n| n.name() == wanted && n.tag().is_some()).collect()
        }
    };
    if targets.is_empty() {
        return Err(ApiError::no_such_image(name));
    }
    for t in &targets {
        if store.get(&t.to_string()).is_err() {
            return Err(ApiError::no_such_image(&familiar(t)));
        }
    }
    let (ptx, prx) = mpsc::unbounded_channel();
    let client = client_for(state, req.headers(), base.registry(), ptx)?;
    let (out, resp) = JsonStream::start();
    tokio::spawn(async move {
        out.status(&format!("The push refers to repository [{}]", base.name()), None).await;
        let forwarding = forward(prx, out.clone(), true);
        let mut failed = None;
        let mut done = Vec::new();
        for t in &targets {
            match engine::images::push(&client, &store, &t.to_string()).await {
                Ok(s) => done.push((t.tag().unwrap_or("latest").to_string(), s)),
                Err(e) => {
                    failed = Some(e.to_string());
                    break;
                }
            }
        }
        drop(client);
        let _ = forwarding.await;
        for (tag, s) in done {
            out.status(&format!("{tag}: digest: {} size: {}", s.digest, s.size), None).await;
            out.send(json!({ "progressDetail": {}, "aux": { "Tag": tag, "Digest": s.digest, "Size": s.size } })).await;
        }
        if let Some(e) = failed {
            out.error(&e).await;
        }
    });
    Ok(resp)
}

/// `GET /images/get?names=...` and `GET /images/{name}/get`: a docker-archive tar of the images, named as
/// they were asked for (an image asked for by ID carries no name).
pub(crate) async fn save(state: &State, names: &[&str]) -> Result<Response<Body>, ApiError> {
    if names.is_empty() {
        return Err(ApiError::bad_request("names is missing: say which images to save"));
    }
    let store = state.daemon.engine().images().clone();
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let s = store.clone();
    let images = tokio::task::spawn_blocking(move || {
        names
            .iter()
            .map(|n| {
                let (img, found) = images::find(&s, n)?;
                let name = match found {
                    Found::Name(r) => Some(r),
                    Found::Id => None,
                };
                Ok((name, img.desc))
            })
            .collect::<Result<Vec<_>, ApiError>>()
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))??;
    let (mut w, resp) = ByteStream::start("application/x-tar");
    tokio::task::spawn_blocking(move || {
        if let Err(e) = registry::export::save(&store, &images, ArchiveFormat::Docker, &mut w) {
            w.fail(format!("saving the images failed: {e}"));
        }
    });
    Ok(resp)
}

/// `POST /images/load`: a docker-archive or OCI layout tar (compressed or not); images without a name are
/// kept as untagged ones.
pub(crate) async fn load(state: &State, req: Request<Incoming>, q: &Query) -> Result<Response<Body>, ApiError> {
    // Nothing is shown while loading, quiet or not: the names come at the end.
    q.bool("quiet")?;
    let declared = super::build::content_length(req.headers())?;
    let reader = super::context::pump(req.into_body(), declared);
    let store = state.daemon.engine().images().clone();
    let lines = tokio::task::spawn_blocking(move || -> Result<Vec<String>, ApiError> {
        let r = super::context::decompressed(reader).map_err(|e| ApiError::bad_request(e.to_string()))?;
        let loaded = registry::export::load(&store, r)
            .map_err(|e| ApiError::bad_request(format!("the archive cannot be loaded: {e}")))?;
        let mut lines = Vec::new();
        for (name, desc) in loaded {
            match Reference::parse(&name) {
                Ok(r) if r.digest().is_none() => lines.push(format!("Loaded image: {}", familiar(&r))),
                _ => {
                    let id = store.image(&desc, None)?.manifest.config().digest().to_string();
                    let untagged = Reference::parse(&format!("{UNTAGGED}:{}", id.trim_start_matches("sha256:")))?;
                    store.tag(&untagged, &desc)?;
                    lines.push(format!("Loaded image ID: {id}"));
                }
            }
        }
        Ok(lines)
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))??;
    let (out, resp) = JsonStream::start();
    tokio::spawn(async move {
        for l in lines {
            out.stream(format!("{l}\n")).await;
        }
    });
    Ok(resp)
}

/// `POST /auth`: checks a login against its registry (`docker login`); nothing is stored.
pub(crate) async fn auth(state: &State, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    use http_body_util::BodyExt;
    let body = http_body_util::Limited::new(req.into_body(), 64 << 10)
        .collect()
        .await
        .map_err(|e| ApiError::bad_request(format!("reading the login: {e}")))?
        .to_bytes();
    let a: AuthConfig = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("the login is not docker's AuthConfig JSON: {e}")))?;
    let server = a.serveraddress.trim();
    let host = server.trim_start_matches("https://").trim_start_matches("http://");
    let host = host.split('/').next().unwrap_or("");
    let host = if host.is_empty() || is_hub(host) { "docker.io" } else { host };
    let creds = a.credentials().ok_or_else(|| ApiError::bad_request("the login has no username"))?;
    let source = ClientCredentials {
        registry: host.to_string(),
        given: Some(creds),
        daemon: Arc::new(registry::auth::Anonymous),
    };
    let client = Client::new(state.daemon.engine().client().config().clone(), Arc::new(source));
    client
        .ping(host)
        .await
        .map_err(|e| ApiError::new(StatusCode::UNAUTHORIZED, format!("login to {host} failed: {e}")))?;
    Ok(super::reply::json(StatusCode::OK, &json!({ "Status": "Login Succeeded", "IdentityToken": "" })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_auth_headers_decode_in_every_spelling() {
        let json = br#"{"username":"u","password":"p","serveraddress":"127.0.0.1:5000"}"#;
        for enc in [
            base64::engine::general_purpose::URL_SAFE.encode(json),
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json),
        ] {
            let mut h = HeaderMap::new();
            h.insert("X-Registry-Auth", enc.parse().unwrap());
            let a: AuthConfig = decode_header(&h, "X-Registry-Auth").unwrap().unwrap();
            let c = a.credentials().unwrap();
            assert_eq!((c.username.as_str(), c.password.as_str()), ("u", "p"));
        }
        let auth = AuthConfig { auth: base64::engine::general_purpose::STANDARD.encode("x:y"), ..Default::default() };
        assert_eq!(auth.credentials().unwrap().username, "x");
        assert!(AuthConfig::default().credentials().is_none());
        let mut h = HeaderMap::new();
        h.insert("X-Registry-Auth", "!!!".parse().unwrap());
        let e = decode_header::<AuthConfig>(&h, "X-Registry-Auth").unwrap_err();
        assert!(e.message.contains("X-Registry-Auth"), "{}", e.message);
    }
}
