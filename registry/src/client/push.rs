//! Push, per the distribution spec: every blob is checked with HEAD first; a blob known to live in another
//! repository of the same registry is mounted (`POST /blobs/uploads/?mount=<digest>&from=<repo>` with a
//! token for both repositories; a 202 answer is the spec's fallback to a normal upload in the session it
//! opened); small blobs go in one PUT, large ones in PATCH chunks. Manifests go last, children before
//! their index. A blob upload that fails midway is started over (after a HEAD) a bounded number of times.

use std::io::{Read, Seek, SeekFrom};

use bytes::Bytes;
use futures_util::{stream, StreamExt, TryStreamExt};
use oci_spec::image::{Descriptor, Digest};
use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, LOCATION, RANGE};
use reqwest::{Method, Response, StatusCode};
use snapshotter::content::Provider;

use super::{resolve_location, Client, Progress, ProgressKind, Req};
use crate::auth::repository_scope;
use crate::config::Endpoint;
use crate::error::RegistryError;
use crate::manifest::{media, Parsed, RawManifest};
use crate::reference::Reference;
use crate::store::ImageStore;

/// What happened to each blob of a push.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PushReport {
    /// The digest of the pushed top-level manifest or index.
    pub digest: Option<Digest>,
    pub uploaded: Vec<Digest>,
    pub mounted: Vec<Digest>,
    pub existed: Vec<Digest>,
    /// Platforms of an index the store holds only in part (a pull keeps the platforms builds used) that
    /// the destination did not have either: the index pushed names the platforms held, without these.
    pub left_out: Vec<String>,
}

enum BlobOutcome {
    Existed,
    Mounted,
    Uploaded,
}

impl Client {
    /// Pushes the image `target` (a manifest or an index, with everything it references in `store`) to
    /// `dst`: by tag when `dst` has one, else by digest.
    pub async fn push(
        &self,
        store: &ImageStore,
        target: &Descriptor,
        dst: &Reference,
    ) -> Result<PushReport, RegistryError> {
        let ep = self.config().origin(dst.registry());
        let mut report = PushReport::default();
        let mut top = store.read_manifest(target)?;
        let children = match top.parse()? {
            Parsed::Manifest(_) => Vec::new(),
            Parsed::Index(ix) => {
                let mut v = Vec::new();
                let mut missing = Vec::new();
                for d in ix.manifests() {
                    if store.has_blob(d.digest())? && media::is_manifest(d.media_type().as_ref()) {
                        v.push(store.read_manifest(d)?);
                    } else if !self.manifest_exists(&ep, dst, d.digest()).await? {
                        missing.push(d.clone());
                    }
                }
                // Entries never pulled (other platforms) cannot be pushed: the index goes as it is when the
                // destination has them already (the spec allows it), else it names what is held.
                if !missing.is_empty() {
                    top = held_index(store, &top, &missing)?;
                    report.left_out = missing
                        .iter()
                        .filter_map(crate::manifest::descriptor_platform)
                        .filter(|p| p.os != "unknown")
                        .map(|p| p.to_string())
                        .collect();
                }
                v
            }
        };
        for child in &children {
            self.push_manifest_tree(&ep, store, child, dst, child.digest.as_ref(), &mut report).await?;
        }
        let object = match (dst.tag(), dst.digest()) {
            (Some(t), _) => t.to_string(),
            (None, Some(d)) => d.to_string(),
            (None, None) => "latest".to_string(),
        };
        if children.is_empty() {
            self.push_manifest_tree(&ep, store, &top, dst, &object, &mut report).await?;
        } else {
            self.put_manifest(&ep, dst, &top, &object).await?;
        }
        report.digest = Some(top.digest.clone());
        Ok(report)
    }

    async fn push_manifest_tree(
        &self,
        ep: &Endpoint,
        store: &ImageStore,
        raw: &RawManifest,
        dst: &Reference,
        object: &str,
        report: &mut PushReport,
    ) -> Result<(), RegistryError> {
        let m = raw.manifest()?;
        let mut blobs = vec![m.config().clone()];
        blobs.extend(m.layers().iter().filter(|l| !media::is_non_distributable(l.media_type().as_ref())).cloned());
        let outcomes: Vec<(Digest, BlobOutcome)> = stream::iter(blobs.iter().cloned())
            .map(|d| async move {
                let o = self.push_blob(ep, store, dst, &d).await?;
                Ok::<_, RegistryError>((d.digest().clone(), o))
            })
            .buffer_unordered(self.options.concurrency.max(1))
            .try_collect()
            .await?;
        for (d, o) in outcomes {
            match o {
                BlobOutcome::Existed => report.existed.push(d),
                BlobOutcome::Mounted => report.mounted.push(d),
                BlobOutcome::Uploaded => report.uploaded.push(d),
            }
        }
        self.put_manifest(ep, dst, raw, object).await?;
        for d in &blobs {
            store.add_source(d.digest(), d.size(), dst.registry(), dst.repository())?;
        }
        Ok(())
    }

    /// Whether `dst`'s repository holds the manifest `digest` (a HEAD).
    async fn manifest_exists(&self, ep: &Endpoint, dst: &Reference, digest: &Digest) -> Result<bool, RegistryError> {
        let scopes = [repository_scope(dst.repository(), true)];
        let url = format!("{}{}/manifests/{digest}", ep.base_url(), dst.repository());
        let req = Req::new(Method::HEAD, url).header(reqwest::header::ACCEPT, media::ACCEPT_MANIFESTS.join(", "));
        let resp = self.send(ep, &scopes, &req).await?;
        if resp.status().is_success() {
            return Ok(true);
        }
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(false);
        }
        self.check(ep, &scopes, &format!("repository {}", dst.name()), &req, resp).await?;
        Ok(false)
    }

    /// PUTs manifest bytes exactly as stored.
    async fn put_manifest(
        &self,
        ep: &Endpoint,
        dst: &Reference,
        raw: &RawManifest,
        object: &str,
    ) -> Result<(), RegistryError> {
        let scopes = [repository_scope(dst.repository(), true)];
        let url = format!("{}{}/manifests/{object}", ep.base_url(), dst.repository());
        let req = Req::new(Method::PUT, url)
            .header(CONTENT_TYPE, raw.media_type.clone())
            .body(Bytes::from(raw.bytes.clone()));
        let what = format!("repository {}", dst.name());
        let resp = self.send_ok(ep, &scopes, &what, &req).await?;
        if let Some(d) = resp.headers().get("docker-content-digest").and_then(|v| v.to_str().ok()) {
            if let Ok(d) = d.parse::<Digest>() {
                if d != raw.digest {
                    return Err(RegistryError::DigestMismatch {
                        what: format!("manifest pushed to {}", dst.with_tag_or_digest(object)),
                        expected: raw.digest.clone(),
                        actual: d,
                    });
                }
            }
        }
        self.report(Progress {
            id: raw.digest.to_string(),
            kind: ProgressKind::Done,
            current: raw.bytes.len() as u64,
            total: raw.bytes.len() as u64,
        });
        Ok(())
    }

    async fn push_blob(
        &self,
        ep: &Endpoint,
        store: &ImageStore,
        dst: &Reference,
        desc: &Descriptor,
    ) -> Result<BlobOutcome, RegistryError> {
        let mut attempt = 0;
        loop {
            match self.push_blob_once(ep, store, dst, desc).await {
                Ok(o) => return Ok(o),
                Err(e) if attempt + 1 < self.options.retry.attempts && is_transient(&e) => {
                    tokio::time::sleep(self.options.retry.delay(attempt)).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn push_blob_once(
        &self,
        ep: &Endpoint,
        store: &ImageStore,
        dst: &Reference,
        desc: &Descriptor,
    ) -> Result<BlobOutcome, RegistryError> {
        let digest = desc.digest();
        let id = digest.to_string();
        let repo = dst.repository();
        let scopes = vec![repository_scope(repo, true)];
        let what = format!("repository {}", dst.name());
        let base = format!("{}{repo}/blobs/", ep.base_url());
        let head = Req::new(Method::HEAD, format!("{base}{digest}"));
        let resp = self.send(ep, &scopes, &head).await?;
        if resp.status().is_success() {
            self.report(Progress { id, kind: ProgressKind::Exists, current: desc.size(), total: desc.size() });
            return Ok(BlobOutcome::Existed);
        }
        if resp.status() != StatusCode::NOT_FOUND {
            self.check(ep, &scopes, &what, &head, resp).await?;
        }
        let mut location = None;
        for from in store.sources(digest, dst.registry())?.into_iter().filter(|r| r != repo) {
            let mut mount_scopes = scopes.clone();
            mount_scopes.push(repository_scope(&from, false));
            let url = format!("{base}uploads/?mount={digest}&from={from}");
            let req = Req::new(Method::POST, url).header(CONTENT_LENGTH, "0").body(Bytes::new());
            let resp = self.send(ep, &mount_scopes, &req).await?;
            match resp.status() {
                StatusCode::CREATED => {
                    self.report(Progress { id, kind: ProgressKind::Mounted, current: desc.size(), total: desc.size() });
                    return Ok(BlobOutcome::Mounted);
                }
                // The spec's fallback: the registry opened a normal upload session instead.
                StatusCode::ACCEPTED => {
                    location = Some(self.location(&req.url, &resp)?);
                    break;
                }
                // No access to the source repository: try the next one, then upload.
                _ => continue,
            }
        }
        let location = match location {
            Some(l) => l,
            None => {
                let req =
                    Req::new(Method::POST, format!("{base}uploads/")).header(CONTENT_LENGTH, "0").body(Bytes::new());
                let resp = self.send_ok(ep, &scopes, &what, &req).await?;
                self.location(&req.url, &resp)?
            }
        };
        if desc.size() <= self.options.monolithic_max {
            let bytes = Bytes::from(store.read_blob(digest)?);
            let req = Req::new(Method::PUT, with_digest(&location, digest)?)
                .header(CONTENT_TYPE, "application/octet-stream")
                .body(bytes);
            self.report(Progress { id: id.clone(), kind: ProgressKind::Uploading, current: 0, total: desc.size() });
            self.send_ok(ep, &scopes, &what, &req).await?;
        } else {
            self.upload_chunks(ep, &scopes, &what, store, desc, location).await?;
        }
        self.report(Progress { id, kind: ProgressKind::Done, current: desc.size(), total: desc.size() });
        Ok(BlobOutcome::Uploaded)
    }

    /// PATCHes `chunk_size` pieces. A chunk is never resent blindly: after a failure the upload's status
    /// (`GET <location>`, whose `Range` says how much the registry has) tells where to go on from.
    async fn upload_chunks(
        &self,
        ep: &Endpoint,
        scopes: &[String],
        what: &str,
        store: &ImageStore,
        desc: &Descriptor,
        mut location: String,
    ) -> Result<(), RegistryError> {
        let digest = desc.digest();
        let size = desc.size();
        let mut reader = store.content().reader(digest)?;
        let read_err = RegistryError::io;
        let mut offset = 0u64;
        let mut failures = 0u32;
        let mut buf = vec![0u8; self.options.chunk_size.max(1)];
        while offset < size {
            reader.seek(SeekFrom::Start(offset)).map_err(read_err(format!("reading blob {digest}")))?;
            let want = (size - offset).min(buf.len() as u64) as usize;
            reader.read_exact(&mut buf[..want]).map_err(read_err(format!("reading blob {digest}")))?;
            let req = Req::new(Method::PATCH, location.clone())
                .header(CONTENT_TYPE, "application/octet-stream")
                .header(CONTENT_RANGE, format!("{offset}-{}", offset + want as u64 - 1))
                .body(Bytes::copy_from_slice(&buf[..want]));
            let result = match self.send_attempts(ep, scopes, &req, 1).await {
                Ok(resp) => self.check(ep, scopes, what, &req, resp).await,
                Err(e) => Err(e),
            };
            match result {
                Ok(resp) => {
                    location = self.location(&req.url, &resp)?;
                    offset += want as u64;
                    self.report(Progress {
                        id: digest.to_string(),
                        kind: ProgressKind::Uploading,
                        current: offset,
                        total: size,
                    });
                }
                Err(e) if is_transient(&e) && failures < self.options.retry.attempts * 4 => {
                    tokio::time::sleep(self.options.retry.delay(failures.min(8))).await;
                    failures += 1;
                    let status = Req::new(Method::GET, location.clone());
                    let resp = self.send_ok(ep, scopes, what, &status).await?;
                    offset = uploaded_bytes(&resp).min(size);
                    location = self.location(&status.url, &resp)?;
                }
                Err(e) => return Err(e),
            }
        }
        let req = Req::new(Method::PUT, with_digest(&location, digest)?).header(CONTENT_LENGTH, "0").body(Bytes::new());
        self.send_ok(ep, scopes, what, &req).await?;
        Ok(())
    }

    fn location(&self, request_url: &str, resp: &Response) -> Result<String, RegistryError> {
        let l = resp
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| RegistryError::Protocol(format!("{request_url}: upload response without Location")))?;
        resolve_location(request_url, l)
    }
}

/// How many bytes an upload session holds, from its status response's `Range: 0-<last>` header.
/// distribution answers `0-0` for an empty session as well as for one byte; taking it as empty is safe
/// (a resent byte gets a 416 and the blob starts over).
fn uploaded_bytes(resp: &Response) -> u64 {
    let range = resp.headers().get(RANGE).and_then(|v| v.to_str().ok()).unwrap_or("");
    match range.split_once('-').map(|(_, end)| end.parse::<i64>()) {
        Some(Ok(end)) if end > 0 => end as u64 + 1,
        _ => 0,
    }
}

fn with_digest(location: &str, digest: &Digest) -> Result<String, RegistryError> {
    let mut u = url::Url::parse(location)
        .map_err(|e| RegistryError::Protocol(format!("invalid upload url {location}: {e}")))?;
    u.query_pairs_mut().append_pair("digest", digest.as_ref());
    Ok(u.to_string())
}

/// Failures worth starting a blob upload over for: broken connections, server errors that outlived the
/// request retries, and upload sessions the registry lost (404/416 on a PATCH/PUT).
fn is_transient(e: &RegistryError) -> bool {
    match e {
        RegistryError::Transport { .. } => true,
        RegistryError::Status { status, .. } => *status >= 500 || *status == 416 || *status == 429,
        RegistryError::NotFound { message, .. } => message.contains("BLOB_UPLOAD_"),
        _ => false,
    }
}

/// `index` without the entries `missing` (and without attestation manifests about them), written to the
/// store: what an index the store holds in part can be pushed as.
fn held_index(store: &ImageStore, index: &RawManifest, missing: &[Descriptor]) -> Result<RawManifest, RegistryError> {
    let mut doc: serde_json::Value = serde_json::from_slice(&index.bytes)
        .map_err(|e| RegistryError::Protocol(format!("index {}: {e}", index.digest)))?;
    let gone: Vec<String> = missing.iter().map(|d| d.digest().to_string()).collect();
    if let Some(entries) = doc.get_mut("manifests").and_then(|m| m.as_array_mut()) {
        entries.retain(|e| {
            let digest = e["digest"].as_str().unwrap_or_default();
            let about = e["annotations"]["vnd.docker.reference.digest"].as_str().unwrap_or_default();
            !gone.iter().any(|g| g == digest || g == about)
        });
    }
    let bytes = crate::assemble::indented(&doc);
    store.write_bytes(&bytes, &index.media_type)?;
    Ok(RawManifest::new(Some(&index.media_type), bytes))
}
