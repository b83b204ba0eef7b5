//! Which handler answers a request: API version negotiation as dockerd does it (`/v1.41/...` or an
//! unversioned path; a version newer than [`API_VERSION`] or older than [`MIN_API_VERSION`] is refused),
//! then the method and path. Image names in paths may hold slashes and a registry port
//! (`/images/127.0.0.1:5000/team/app/push`), so the action is the last segment.

use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::{Method, Request, Response, StatusCode};
use percent_encoding::percent_decode_str;

use super::error::ApiError;
use super::reply::{Body, Query};
use super::{build, images, system, transfer, State, API_VERSION, MIN_API_VERSION};

/// Answers one request; every failure becomes dockerd's error body with its status.
pub(crate) async fn handle(state: &State, req: Request<Incoming>) -> Response<Body> {
    let mut resp = match route(state, req).await {
        Ok(r) => r,
        Err(e) => e.response(),
    };
    let h = resp.headers_mut();
    h.insert("Api-Version", HeaderValue::from_static(API_VERSION));
    h.insert("Docker-Experimental", HeaderValue::from_static("false"));
    h.insert("Ostype", HeaderValue::from_static("linux"));
    if let Ok(v) = HeaderValue::from_str(&format!("rbuild/{} (linux)", env!("CARGO_PKG_VERSION"))) {
        h.insert(hyper::header::SERVER, v);
    }
    resp
}

/// `(major, minor)` of `1.41`.
fn parse_version(v: &str) -> Option<(u32, u32)> {
    let (a, b) = v.split_once('.')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// Splits `/v1.41/images/json` into the version and the path, refusing versions this API does not speak.
pub(crate) fn negotiate(path: &str) -> Result<String, ApiError> {
    let Some(rest) = path.strip_prefix("/v") else { return Ok(path.to_string()) };
    let (version, tail) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let Some(v) = parse_version(version) else { return Ok(path.to_string()) };
    let max = parse_version(API_VERSION).unwrap_or_default();
    let min = parse_version(MIN_API_VERSION).unwrap_or_default();
    if v > max {
        return Err(ApiError::bad_request(format!(
            "client version {version} is too new. Maximum supported API version is {API_VERSION}"
        )));
    }
    if v < min {
        return Err(ApiError::bad_request(format!(
            "client version {version} is too old. Minimum supported API version is {MIN_API_VERSION}, please \
             upgrade your client to a newer version"
        )));
    }
    Ok(tail.to_string())
}

/// What rbuild does not do, for every endpoint family of a container engine.
const NOT_SERVED: &[(&str, &str)] = &[
    ("containers", "containers"),
    ("exec", "exec sessions"),
    ("volumes", "volumes"),
    ("networks", "networks"),
    ("plugins", "plugins"),
    ("swarm", "swarm"),
    ("services", "swarm services"),
    ("nodes", "swarm nodes"),
    ("tasks", "swarm tasks"),
    ("secrets", "swarm secrets"),
    ("configs", "swarm configs"),
    ("events", "container events"),
    ("session", "BuildKit sessions (use DOCKER_BUILDKIT=0 for the classic build protocol)"),
    ("distribution", "distribution inspection"),
    ("grpc", "BuildKit's gRPC endpoint (use DOCKER_BUILDKIT=0, or rbuild's own client)"),
    ("commit", "commits of containers"),
];

fn not_served(first: &str) -> Option<ApiError> {
    NOT_SERVED.iter().find(|(p, _)| *p == first).map(|(_, what)| {
        ApiError::not_implemented(format!(
            "rbuild serves the Docker API's image endpoints: it builds and stores images and does not run \
             containers, so it has no {what}"
        ))
    })
}

async fn route(state: &State, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let raw = req.uri().path().to_string();
    let decoded = percent_decode_str(&raw)
        .decode_utf8()
        .map_err(|_| ApiError::bad_request(format!("the path {raw} is not UTF-8")))?
        .into_owned();
    let path = negotiate(&decoded)?;
    let q = Query::parse(req.uri().query());
    let method = req.method().clone();
    let trimmed = path.trim_end_matches('/');
    let segments: Vec<&str> = trimmed.trim_start_matches('/').split('/').collect();
    let wrong_method =
        || ApiError::new(StatusCode::METHOD_NOT_ALLOWED, format!("{method} is not allowed on {trimmed}"));
    match (segments.first().copied().unwrap_or(""), trimmed) {
        (_, "/_ping") => match method {
            Method::GET | Method::HEAD => Ok(system::ping(&method)),
            _ => Err(wrong_method()),
        },
        (_, "/version") if method == Method::GET => system::version(state).await,
        (_, "/info") if method == Method::GET => system::info(state).await,
        (_, "/system/df") if method == Method::GET => system::df(state).await,
        (_, "/auth") if method == Method::POST => transfer::auth(state, req).await,
        (_, "/build") if method == Method::POST => build::build(state, req, q).await,
        (_, "/build/prune") if method == Method::POST => system::build_prune(state, &q).await,
        (_, "/images/json") if method == Method::GET => images::list(state, &q).await,
        (_, "/images/create") if method == Method::POST => transfer::pull(state, req, &q).await,
        (_, "/images/load") if method == Method::POST => transfer::load(state, req, &q).await,
        (_, "/images/get") if method == Method::GET => transfer::save(state, &q.all("names")).await,
        (_, "/images/prune") if method == Method::POST => images::prune(state, &q).await,
        (_, "/images/search") => Err(ApiError::not_implemented(
            "rbuild does not search registries: name the image, e.g. docker pull busybox",
        )),
        ("images", p) if p.len() > "/images/".len() => {
            let rest = &p["/images/".len()..];
            let (name, action) = rest.rsplit_once('/').unwrap_or((rest, ""));
            match (&method, action) {
                (&Method::GET, "json") => images::inspect(state, name).await,
                (&Method::GET, "history") => images::history(state, name).await,
                (&Method::POST, "tag") => images::tag(state, name, &q).await,
                (&Method::POST, "push") => transfer::push(state, req, name, &q).await,
                (&Method::GET, "get") => transfer::save(state, &[name]).await,
                (&Method::DELETE, _) => images::remove(state, rest, &q).await,
                _ => Err(ApiError::not_found(format!("page not found: {method} {trimmed}"))),
            }
        }
        (first, _) => match not_served(first) {
            Some(e) => Err(e),
            None => match trimmed {
                "/_ping" | "/version" | "/info" | "/system/df" | "/auth" | "/build" | "/build/prune"
                | "/images/json" | "/images/create" | "/images/load" | "/images/get" | "/images/prune" => {
                    Err(wrong_method())
                }
                _ => Err(ApiError::not_found(format!("page not found: {method} {trimmed}"))),
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_negotiate_as_dockerd() {
        assert_eq!(negotiate("/v1.41/images/json").unwrap(), "/images/json");
        assert_eq!(negotiate("/v1.24/_ping").unwrap(), "/_ping");
        assert_eq!(negotiate("/images/json").unwrap(), "/images/json");
        assert_eq!(negotiate("/version").unwrap(), "/version");
        let e = negotiate("/v1.45/images/json").unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(e.message.contains("1.45 is too new") && e.message.contains("1.41"), "{}", e.message);
        assert!(negotiate("/v1.12/version").unwrap_err().message.contains("too old"));
        assert!(negotiate("/v2.0/version").unwrap_err().message.contains("too new"));
    }

    #[test]
    fn container_endpoints_say_what_rbuild_is() {
        let e = not_served("containers").unwrap();
        assert_eq!(e.status, StatusCode::NOT_IMPLEMENTED);
        assert!(e.message.contains("does not run containers"), "{}", e.message);
        assert!(not_served("images").is_none());
    }
}
