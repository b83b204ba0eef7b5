//! The image endpoints on the local store, in dockerd's shapes: list (with `reference`, `dangling` and
//! `label` filters), inspect, history, tag, remove and prune.
//!
//! Docker names an image by its ID (the config digest); the store names manifests. [`catalog`] groups the
//! store's names by config digest, so `docker images` shows one line per image with all its tags, and an
//! image is found by name, full ID or unique ID prefix as dockerd finds it. A build without `-t` makes
//! what Docker calls a dangling image: it is kept under the reserved name `UNTAGGED/image:<id>` (a host
//! under `.invalid`, which no registry can have), listed as `<none>:<none>`.

use std::collections::BTreeMap;

use hyper::{Response, StatusCode};
use oci_spec::image::Descriptor;
use registry::store::LocalImage;
use registry::{ImageStore, Reference};
use serde_json::{json, Value};

use super::error::ApiError;
use super::reply::{json, Body, Query};
use super::State;

/// The repository of images built without a name.
pub(crate) const UNTAGGED: &str = "untagged.rbuild.invalid/image";

pub(crate) fn is_untagged(r: &Reference) -> bool {
    r.name() == UNTAGGED
}

/// One image as Docker sees it: a config digest and the names that point at it.
pub(crate) struct Img {
    /// `sha256:` of the config.
    pub(crate) id: String,
    /// Real names, sorted.
    pub(crate) names: Vec<Reference>,
    /// Reserved names of a build without `-t`.
    pub(crate) untagged: Vec<Reference>,
    pub(crate) desc: Descriptor,
    pub(crate) local: LocalImage,
}

impl Img {
    /// `name:tag` as `docker images` shows it (`busybox:latest`, `127.0.0.1:5000/app:1`).
    pub(crate) fn repo_tags(&self) -> Vec<String> {
        self.names.iter().filter_map(|r| r.tag().map(|t| format!("{}:{t}", r.familiar_name()))).collect()
    }

    /// `name@digest` for names whose manifest a registry can serve: its layers are compressed (pulled,
    /// pushed or loaded). A manifest of the uncompressed layers a build keeps has no registry digest.
    fn repo_digests(&self) -> Vec<String> {
        let distributable = self.local.manifest.layers().iter().all(|l| {
            let mt = l.media_type().to_string();
            mt.ends_with("gzip") || mt.ends_with("zstd")
        });
        if !distributable {
            return Vec::new();
        }
        let mut out: Vec<String> =
            self.names.iter().map(|r| format!("{}@{}", r.familiar_name(), self.desc.digest())).collect();
        out.dedup();
        out
    }

    pub(crate) fn size(&self) -> u64 {
        self.local.manifest.layers().iter().map(|l| l.size()).sum::<u64>() + self.local.manifest.config().size()
    }

    fn created_unix(&self) -> i64 {
        self.local.config.created.as_deref().and_then(llb::image::parse_rfc3339).map(|(s, _)| s).unwrap_or(0)
    }

    pub(crate) fn labels(&self) -> BTreeMap<String, String> {
        self.local.config.config.labels.clone().unwrap_or_default().into_iter().collect()
    }

    /// The first 12 hex digits, as docker prints IDs.
    pub(crate) fn short_id(&self) -> String {
        self.id.trim_start_matches("sha256:").chars().take(12).collect()
    }

    /// `GET /images/json`'s entry.
    pub(crate) fn summary(&self) -> Value {
        let (tags, digests) = (self.repo_tags(), self.repo_digests());
        let dangling = self.names.is_empty();
        json!({
            "Id": self.id,
            "ParentId": "",
            "RepoTags": if dangling { vec!["<none>:<none>".to_string()] } else { tags },
            "RepoDigests": if dangling { vec!["<none>@<none>".to_string()] } else { digests },
            "Created": self.created_unix(),
            "Size": self.size(),
            "SharedSize": -1,
            "VirtualSize": self.size(),
            "Labels": self.labels(),
            "Containers": -1,
        })
    }
}

/// Every image of the store, newest first.
pub(crate) fn catalog(store: &ImageStore) -> Result<Vec<Img>, ApiError> {
    let mut by_id: BTreeMap<String, Img> = BTreeMap::new();
    for named in store.list()? {
        // An entry whose content is gone (pruned) is not an image anyone can use.
        let Ok(desc) = store.get(&named.name.to_string()) else { continue };
        let Ok(local) = store.image(&desc, None) else { continue };
        let id = local.manifest.config().digest().to_string();
        let img = by_id.entry(id.clone()).or_insert_with(|| Img {
            id,
            names: Vec::new(),
            untagged: Vec::new(),
            desc: desc.clone(),
            local,
        });
        if is_untagged(&named.name) {
            img.untagged.push(named.name);
        } else {
            img.names.push(named.name);
        }
    }
    let mut out: Vec<Img> = by_id.into_values().collect();
    out.sort_by(|a, b| b.created_unix().cmp(&a.created_unix()).then(a.id.cmp(&b.id)));
    Ok(out)
}

/// How a name matched.
pub(crate) enum Found {
    /// By one of its names.
    Name(Reference),
    /// By ID or ID prefix.
    Id,
}

fn hex_of(s: &str) -> Option<&str> {
    let h = s.strip_prefix("sha256:").unwrap_or(s);
    (!h.is_empty() && h.len() <= 64 && h.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())).then_some(h)
}

/// The image `name` means, as dockerd looks it up: a full ID, then a name, then a unique ID prefix.
pub(crate) fn find(store: &ImageStore, name: &str) -> Result<(Img, Found), ApiError> {
    let mut all = catalog(store)?;
    if let Some(h) = hex_of(name).filter(|h| h.len() == 64) {
        if let Some(i) = all.iter().position(|i| i.id.ends_with(h)) {
            return Ok((all.swap_remove(i), Found::Id));
        }
    }
    if let Ok(r) = Reference::parse(name) {
        let hit = all.iter().position(|i| match r.digest() {
            Some(d) => i.desc.digest() == d && i.names.iter().any(|n| n.name() == r.name()),
            None => i.names.contains(&r),
        });
        if let Some(i) = hit {
            return Ok((all.swap_remove(i), Found::Name(r)));
        }
    }
    if let Some(h) = hex_of(name).filter(|h| h.len() >= 4) {
        let hits: Vec<usize> =
            all.iter().enumerate().filter(|(_, i)| i.id["sha256:".len()..].starts_with(h)).map(|(n, _)| n).collect();
        if hits.len() == 1 {
            return Ok((all.swap_remove(hits[0]), Found::Id));
        }
    }
    Err(ApiError::no_such_image(name))
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, ApiError> + Send + 'static) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| ApiError::internal(format!("a task failed: {e}")))?
}

/// `filters` of `GET /images/json` and `POST /images/prune`: dockerd's `{"key": {"value": true}}`, or
/// the older `{"key": ["value"]}`.
pub(crate) fn filters(q: &Query) -> Result<BTreeMap<String, Vec<String>>, ApiError> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let Some(v) = q.json("filters")? else { return Ok(out) };
    let Value::Object(m) = v else {
        return Err(ApiError::bad_request(format!("invalid filters: expected a JSON object, not {v}")));
    };
    for (k, v) in m {
        let values = match v {
            Value::Object(o) => o.into_iter().filter(|(_, on)| on.as_bool().unwrap_or(false)).map(|(k, _)| k).collect(),
            Value::Array(a) => a.into_iter().filter_map(|x| x.as_str().map(str::to_string)).collect(),
            other => return Err(ApiError::bad_request(format!("invalid filter {k:?}: {other}"))),
        };
        out.insert(k, values);
    }
    Ok(out)
}

/// Shell-style `*` and `?` (not across `/`), as Go's `path.Match` that dockerd's reference filter uses.
fn glob(pattern: &str, s: &str) -> bool {
    fn go(p: &[u8], s: &[u8]) -> bool {
        match (p.first(), s.first()) {
            (None, None) => true,
            (Some(b'*'), _) => go(&p[1..], s) || (!s.is_empty() && s[0] != b'/' && go(p, &s[1..])),
            (Some(b'?'), Some(c)) if *c != b'/' => go(&p[1..], &s[1..]),
            (Some(a), Some(b)) if a == b => go(&p[1..], &s[1..]),
            _ => false,
        }
    }
    go(pattern.as_bytes(), s.as_bytes())
}

fn bool_filter(key: &str, values: &[String]) -> Result<Option<bool>, ApiError> {
    match values {
        [] => Ok(None),
        [v] => match v.as_str() {
            "true" | "1" => Ok(Some(true)),
            "false" | "0" => Ok(Some(false)),
            _ => Err(ApiError::bad_request(format!("invalid filter '{key}={v}': use true or false"))),
        },
        _ => Err(ApiError::bad_request(format!("invalid filter '{key}': give one value"))),
    }
}

fn label_matches(img: &Img, want: &str) -> bool {
    let labels = img.labels();
    match want.split_once('=') {
        Some((k, v)) => labels.get(k).is_some_and(|x| x == v),
        None => labels.contains_key(want),
    }
}

/// `GET /images/json`.
pub(crate) async fn list(state: &State, q: &Query) -> Result<Response<Body>, ApiError> {
    let f = filters(q)?;
    for k in f.keys() {
        if !matches!(k.as_str(), "reference" | "dangling" | "label") {
            return Err(ApiError::bad_request(format!(
                "invalid filter '{k}': rbuild filters images by reference, dangling and label"
            )));
        }
    }
    let dangling = bool_filter("dangling", f.get("dangling").map(Vec::as_slice).unwrap_or(&[]))?;
    let store = state.daemon.engine().images().clone();
    let imgs = blocking(move || catalog(&store)).await?;
    let refs = f.get("reference").cloned().unwrap_or_default();
    let labels = f.get("label").cloned().unwrap_or_default();
    let out: Vec<Value> = imgs
        .iter()
        .filter(|i| dangling.is_none_or(|d| d == i.names.is_empty()))
        .filter(|i| labels.iter().all(|l| label_matches(i, l)))
        .filter(|i| {
            refs.is_empty()
                || i.names.iter().any(|n| {
                    let familiar = n.familiar_name();
                    let tagged = n.tag().map(|t| format!("{familiar}:{t}")).unwrap_or_else(|| familiar.clone());
                    refs.iter().any(|p| glob(p, &tagged) || glob(p, &familiar))
                })
        })
        .map(Img::summary)
        .collect();
    Ok(json(StatusCode::OK, &Value::Array(out)))
}

/// The container config Docker's inspect shows, from the image config's `config`.
fn container_config(cfg: &Value) -> Value {
    let mut out = json!({
        "Hostname": "", "Domainname": "", "User": "", "AttachStdin": false, "AttachStdout": false,
        "AttachStderr": false, "Tty": false, "OpenStdin": false, "StdinOnce": false, "Env": null, "Cmd": null,
        "Image": "", "Volumes": null, "WorkingDir": "", "Entrypoint": null, "OnBuild": null, "Labels": null,
    });
    if let (Some(o), Some(c)) = (out.as_object_mut(), cfg.as_object()) {
        for (k, v) in c {
            o.insert(k.clone(), v.clone());
        }
    }
    out
}

/// `GET /images/{name}/json`.
pub(crate) async fn inspect(state: &State, name: &str) -> Result<Response<Body>, ApiError> {
    let store = state.daemon.engine().images().clone();
    let kind = state.daemon.engine().store().kind;
    let name = name.to_string();
    let (img, _) = blocking(move || find(&store, &name)).await?;
    let cfg: Value = serde_json::from_slice(&img.local.config_bytes).unwrap_or_else(|_| json!({}));
    let s = |k: &str| cfg.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let mut v = json!({
        "Id": img.id,
        "RepoTags": img.repo_tags(),
        "RepoDigests": img.repo_digests(),
        "Parent": "",
        "Comment": s("comment"),
        "Created": s("created"),
        "Container": "",
        "ContainerConfig": container_config(&Value::Null),
        "DockerVersion": s("docker_version"),
        "Author": s("author"),
        "Config": container_config(cfg.get("config").unwrap_or(&Value::Null)),
        "Architecture": s("architecture"),
        "Os": s("os"),
        "Size": img.size(),
        "VirtualSize": img.size(),
        "GraphDriver": { "Data": null, "Name": format!("{kind:?}").to_ascii_lowercase() },
        "RootFS": { "Type": "layers", "Layers": cfg.pointer("/rootfs/diff_ids").cloned().unwrap_or(json!([])) },
        "Metadata": { "LastTagTime": "0001-01-01T00:00:00Z" },
    });
    if let Some(variant) = cfg.get("variant") {
        v["Variant"] = variant.clone();
    }
    Ok(json(StatusCode::OK, &v))
}

/// `GET /images/{name}/history`: newest first; entries below the top have no ID of their own.
pub(crate) async fn history(state: &State, name: &str) -> Result<Response<Body>, ApiError> {
    let store = state.daemon.engine().images().clone();
    let name = name.to_string();
    let (img, _) = blocking(move || find(&store, &name)).await?;
    let mut layers = img.local.manifest.layers().iter();
    let n = img.local.config.history.len();
    let mut out: Vec<Value> = img
        .local
        .config
        .history
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let top = i + 1 == n;
            json!({
                "Id": if top { img.id.clone() } else { "<missing>".to_string() },
                "Created": h.created.as_deref().and_then(llb::image::parse_rfc3339).map(|(s, _)| s).unwrap_or(0),
                "CreatedBy": h.created_by.clone().unwrap_or_default(),
                "Tags": if top { json!(img.repo_tags()) } else { Value::Null },
                "Size": if h.empty_layer { 0 } else { layers.next().map(|l| l.size()).unwrap_or(0) },
                "Comment": h.comment.clone().unwrap_or_default(),
            })
        })
        .collect();
    out.reverse();
    Ok(json(StatusCode::OK, &Value::Array(out)))
}

/// Names the image of `img` as `target`, and drops its reserved untagged names: it has a name now.
pub(crate) fn name_image(store: &ImageStore, img: &Img, target: &Reference) -> Result<(), ApiError> {
    store.tag(target, &img.desc)?;
    for u in &img.untagged {
        store.untag(u)?;
    }
    Ok(())
}

/// `POST /images/{name}/tag?repo=R&tag=T`.
pub(crate) async fn tag(state: &State, name: &str, q: &Query) -> Result<Response<Body>, ApiError> {
    let repo = q
        .non_empty("repo")
        .ok_or_else(|| ApiError::bad_request("tag: the repo parameter (the new name) is missing"))?;
    let target = match q.non_empty("tag") {
        Some(t) => format!("{repo}:{t}"),
        None => repo.to_string(),
    };
    let r = Reference::parse(&target).map_err(|e| ApiError::bad_request(format!("tag {target}: {e}")))?;
    if r.digest().is_some() {
        return Err(ApiError::bad_request(format!("refusing to create a tag with a digest reference: {target}")));
    }
    if is_untagged(&r) {
        return Err(ApiError::bad_request(format!("{UNTAGGED} is the name rbuild keeps untagged images under")));
    }
    let store = state.daemon.engine().images().clone();
    let name = name.to_string();
    blocking(move || {
        let (img, _) = find(&store, &name)?;
        name_image(&store, &img, &r)
    })
    .await?;
    Ok(super::reply::empty(StatusCode::CREATED))
}

/// The `{"Untagged": ...}` / `{"Deleted": ...}` entries of removing `img`'s names (all of them, or the
/// one it was found by); the content stays until a prune.
fn untag(store: &ImageStore, img: &Img, only: Option<&Reference>) -> Result<Vec<Value>, ApiError> {
    let mut out = Vec::new();
    let names: Vec<&Reference> = match only {
        Some(r) => vec![r],
        None => img.names.iter().collect(),
    };
    for n in &names {
        store.untag(n)?;
        let shown = n.familiar_name() + &n.tag().map(|t| format!(":{t}")).unwrap_or_default();
        out.push(json!({ "Untagged": shown }));
    }
    if names.len() == img.names.len() {
        for u in &img.untagged {
            store.untag(u)?;
        }
        out.push(json!({ "Deleted": img.id }));
    }
    Ok(out)
}

/// `DELETE /images/{name}?force=1`: by name, that name goes; by ID, every name, which needs `force` when
/// there are several (dockerd's rule).
pub(crate) async fn remove(state: &State, name: &str, q: &Query) -> Result<Response<Body>, ApiError> {
    let force = q.bool("force")?;
    q.bool("noprune")?;
    let store = state.daemon.engine().images().clone();
    let name = name.to_string();
    let out = blocking(move || {
        let (img, found) = find(&store, &name)?;
        match found {
            Found::Name(r) => untag(&store, &img, Some(&r)),
            Found::Id if img.names.len() > 1 && !force => Err(ApiError::conflict(format!(
                "conflict: unable to delete {} (must be forced) - image is referenced in multiple repositories",
                img.short_id()
            ))),
            Found::Id => untag(&store, &img, None),
        }
    })
    .await?;
    Ok(json(StatusCode::OK, &Value::Array(out)))
}

/// `POST /images/prune`: untagged images (with `dangling=false`, every image: rbuild runs no containers,
/// so none is in use). Their content is freed by the next build-cache prune (`docker builder prune`).
pub(crate) async fn prune(state: &State, q: &Query) -> Result<Response<Body>, ApiError> {
    let f = filters(q)?;
    for k in f.keys() {
        if !matches!(k.as_str(), "dangling" | "label") {
            return Err(ApiError::bad_request(format!("invalid filter '{k}': rbuild prunes by dangling and label")));
        }
    }
    let all = bool_filter("dangling", f.get("dangling").map(Vec::as_slice).unwrap_or(&[]))? == Some(false);
    let labels = f.get("label").cloned().unwrap_or_default();
    let store = state.daemon.engine().images().clone();
    let deleted = blocking(move || {
        let mut out = Vec::new();
        for img in catalog(&store)? {
            if (all || img.names.is_empty()) && labels.iter().all(|l| label_matches(&img, l)) {
                out.extend(untag(&store, &img, None)?);
            }
        }
        Ok(out)
    })
    .await?;
    Ok(json(StatusCode::OK, &json!({ "ImagesDeleted": deleted, "SpaceReclaimed": 0 })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_filters_match_as_dockerd() {
        assert!(glob("app", "app"));
        assert!(glob("app:*", "app:1"));
        assert!(!glob("app:*", "other/app:1"));
        assert!(glob("*/app:*", "team/app:1"));
        assert!(glob("127.0.0.1:5000/*", "127.0.0.1:5000/app"));
        assert!(!glob("a?p", "a/p"));
        assert!(glob("a?p", "abp"));
    }

    #[test]
    fn ids_are_hex() {
        assert_eq!(hex_of("sha256:abc123"), Some("abc123"));
        assert_eq!(hex_of("busybox"), None);
        assert_eq!(hex_of("ABC123"), None);
    }
}
