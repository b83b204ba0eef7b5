//! Pull: resolve a reference to a manifest (mirrors first, then the origin), pick the platform from an
//! index, and stream the missing blobs into the content store with digest verification. An interrupted
//! blob resumes from the ingest's offset with a `Range` request.

use std::sync::Arc;

use futures_util::{stream, StreamExt, TryStreamExt};
use oci_spec::image::{Descriptor, Digest};
use reqwest::header::{ACCEPT, CONTENT_TYPE, RANGE};
use reqwest::{Method, StatusCode};
use snapshotter::content::{ContentError, ContentWriter, Ingester};

use super::{Client, Progress, ProgressKind, Req};

/// A per-call progress observer (besides the client's own callback), e.g. one build step's status.
pub type Observer<'a> = dyn Fn(&Progress) + Send + Sync + 'a;
use crate::auth::repository_scope;
use crate::config::Endpoint;
use crate::error::RegistryError;
use crate::manifest::{media, require_platform, Parsed, RawManifest};
use crate::reference::Reference;
use crate::store::ImageStore;
use llb::image::Image;
use llb::Platform;

/// Manifests are small; refuse absurd ones rather than buffering them (containerd uses 4 MiB).
const MAX_MANIFEST: usize = 8 << 20;

/// What a pull produced.
#[derive(Debug, Clone)]
pub struct Pulled {
    pub reference: Reference,
    /// The index the reference resolved to, when it was one.
    pub index: Option<RawManifest>,
    /// The platform manifest.
    pub manifest: RawManifest,
    pub config: Image,
    /// The endpoint that served it (`host`), a mirror or the origin.
    pub served_by: String,
    /// Blobs actually transferred (the others were present).
    pub fetched: Vec<Digest>,
}

impl Client {
    /// Resolves `r` to its top-level manifest or index, trying mirrors in order and then the origin.
    pub async fn resolve(&self, r: &Reference) -> Result<(Endpoint, RawManifest), RegistryError> {
        let mut errors = Vec::new();
        let mut unreachable = true;
        let endpoints = self.config().pull_endpoints(r.registry());
        let n = endpoints.len();
        for ep in endpoints {
            match self.fetch_manifest(&ep, r, &r.object()).await {
                Ok(m) => return Ok((ep, m)),
                // With only the origin there is no fallback: its error is the answer.
                Err(e) if n == 1 => return Err(e),
                Err(e) => {
                    unreachable &= e.is_unreachable();
                    errors.push(format!("{}: {e}", ep.host));
                }
            }
        }
        Err(RegistryError::AllEndpointsFailed { reference: r.to_string(), errors: errors.join("; "), unreachable })
    }

    /// GETs `/v2/<repo>/manifests/<object>` and checks its digest against the object (when it is one)
    /// and against `Docker-Content-Digest`.
    pub async fn fetch_manifest(
        &self,
        ep: &Endpoint,
        r: &Reference,
        object: &str,
    ) -> Result<RawManifest, RegistryError> {
        let scopes = [repository_scope(r.repository(), false)];
        let url = format!("{}{}/manifests/{object}", ep.base_url(), r.repository());
        let req = Req::new(Method::GET, url).header(ACCEPT, media::ACCEPT_MANIFESTS.join(", "));
        let what = format!("manifest {}", r.with_tag_or_digest(object));
        let resp = self.send_ok(ep, &scopes, &what, &req).await?;
        let content_type = resp.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_string);
        let header_digest = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<Digest>().ok());
        if resp.content_length().is_some_and(|n| n as usize > MAX_MANIFEST) {
            return Err(RegistryError::Protocol(format!("{what} is larger than {MAX_MANIFEST} bytes")));
        }
        let bytes = resp.bytes().await.map_err(|source| RegistryError::Transport {
            method: "GET".into(),
            url: req.url.clone(),
            cause: source,
        })?;
        let raw = RawManifest::new(content_type.as_deref(), bytes.to_vec());
        let expected = object.parse::<Digest>().ok().or(header_digest.filter(|d| d.algorithm().as_ref() == "sha256"));
        if let Some(expected) = expected {
            if expected != raw.digest {
                return Err(RegistryError::DigestMismatch { what, expected, actual: raw.digest });
            }
        }
        Ok(raw)
    }

    /// Streams one blob into the store unless it is there already; returns whether bytes moved.
    pub async fn fetch_blob(
        &self,
        ep: &Endpoint,
        repository: &str,
        desc: &Descriptor,
        store: &ImageStore,
    ) -> Result<bool, RegistryError> {
        self.fetch_blob_observed(ep, repository, desc, store, None).await
    }

    /// Whether the registry of `r` holds blob `digest` in `r`'s repository (a HEAD; mirrors are not asked:
    /// a cache or an image's blobs are where its reference names).
    pub async fn blob_exists(&self, r: &Reference, digest: &Digest) -> Result<bool, RegistryError> {
        let ep = self.config().origin(r.registry());
        let scopes = [repository_scope(r.repository(), false)];
        let url = format!("{}{}/blobs/{digest}", ep.base_url(), r.repository());
        let resp = self.send(&ep, &scopes, &Req::new(Method::HEAD, url)).await?;
        if resp.status().is_success() {
            return Ok(true);
        }
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(false);
        }
        let what = format!("blob {digest} of {}", r.repository());
        let req = Req::new(Method::HEAD, format!("{}{}/blobs/{digest}", ep.base_url(), r.repository()));
        self.check(&ep, &scopes, &what, &req, resp).await?;
        Ok(false)
    }

    /// [`Client::fetch_blob`] that also reports this transfer's progress to `observer` (besides the
    /// client's own progress callback).
    pub async fn fetch_blob_observed(
        &self,
        ep: &Endpoint,
        repository: &str,
        desc: &Descriptor,
        store: &ImageStore,
        observer: Option<&Observer<'_>>,
    ) -> Result<bool, RegistryError> {
        let digest = desc.digest().clone();
        let id = digest.to_string();
        let report = |p: Progress| {
            if let Some(o) = observer {
                o(&p);
            }
            self.report(p);
        };
        if store.has_blob(&digest)? {
            report(Progress { id, kind: ProgressKind::Exists, current: desc.size(), total: desc.size() });
            return Ok(false);
        }
        let scopes = [repository_scope(repository, false)];
        let url = format!("{}{repository}/blobs/{digest}", ep.base_url());
        let what = format!("blob {digest} of {repository}");
        let mut attempt = 0;
        loop {
            match self.fetch_blob_once(ep, &scopes, &url, &what, desc, store, &report).await {
                Ok(()) => break,
                // A dropped body: the ingest keeps what arrived; try again from there.
                Err(RegistryError::Transport { .. }) if attempt + 1 < self.options.retry.attempts => {
                    tokio::time::sleep(self.options.retry.delay(attempt)).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
        report(Progress { id, kind: ProgressKind::Done, current: desc.size(), total: desc.size() });
        Ok(true)
    }

    #[allow(clippy::too_many_arguments)]
    async fn fetch_blob_once(
        &self,
        ep: &Endpoint,
        scopes: &[String],
        url: &str,
        what: &str,
        desc: &Descriptor,
        store: &ImageStore,
        report: &(dyn Fn(Progress) + Sync),
    ) -> Result<(), RegistryError> {
        let digest = desc.digest().clone();
        let size = desc.size();
        let content = store.content().clone();
        let reference = format!("remote-{digest}");
        let mut writer = tokio::task::spawn_blocking(move || content.writer(&reference, Some(size)))
            .await
            .map_err(|e| RegistryError::Protocol(format!("ingest task failed: {e}")))??;
        let mut offset = writer.offset();
        let mut req = Req::new(Method::GET, url);
        if offset > 0 && offset < size {
            req = req.header(RANGE, format!("bytes={offset}-"));
        }
        let resp = self.send_ok(ep, scopes, what, &req).await?;
        let mut skip = 0u64;
        if offset > 0 && resp.status() != StatusCode::PARTIAL_CONTENT {
            // The server ignored the range: the body starts at 0, drop what we already have.
            skip = offset;
        }
        let mut body = resp.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|source| RegistryError::Transport {
                method: "GET".into(),
                url: url.to_string(),
                cause: source,
            })?;
            let mut data = &chunk[..];
            if skip > 0 {
                let n = (skip as usize).min(data.len());
                data = &data[n..];
                skip -= n as u64;
            }
            if data.is_empty() {
                continue;
            }
            std::io::Write::write_all(&mut writer, data)
                .map_err(|source| ContentError::Copy { reference: format!("remote-{digest}"), source })?;
            offset += data.len() as u64;
            report(Progress { id: digest.to_string(), kind: ProgressKind::Downloading, current: offset, total: size });
        }
        let expected = digest.clone();
        let committed = tokio::task::spawn_blocking(move || writer.commit(Some(size), Some(&expected)))
            .await
            .map_err(|e| RegistryError::Protocol(format!("commit task failed: {e}")))?;
        match committed {
            Ok(_) => Ok(()),
            Err(ContentError::DigestMismatch { expected, actual }) => {
                Err(RegistryError::DigestMismatch { what: what.to_string(), expected, actual })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Pulls `r` for `platform`: manifests first, then config and layers concurrently (only missing
    /// ones). Non-distributable layers are passed through without fetching. Records each blob's source
    /// repository for later cross-repository mounts. Does not name the image; see [`ImageStore::tag`].
    pub async fn pull(&self, r: &Reference, platform: &Platform, store: &ImageStore) -> Result<Pulled, RegistryError> {
        self.pull_observed(r, platform, store, None).await
    }

    /// [`Client::pull`] that also reports this pull's blob progress to `observer`.
    pub async fn pull_observed(
        &self,
        r: &Reference,
        platform: &Platform,
        store: &ImageStore,
        observer: Option<&Observer<'_>>,
    ) -> Result<Pulled, RegistryError> {
        let (ep, top) = self.resolve(r).await?;
        let (index, manifest) = match top.parse()? {
            Parsed::Manifest(_) => (None, top),
            Parsed::Index(ix) => {
                let d = require_platform(&ix, platform, &top.digest)?;
                let m = self.fetch_manifest(&ep, r, d.digest().as_ref()).await?;
                (Some(top), m)
            }
        };
        let parsed = manifest.manifest()?;
        let mut blobs = vec![parsed.config().clone()];
        blobs.extend(parsed.layers().iter().filter(|l| !media::is_non_distributable(l.media_type().as_ref())).cloned());
        let repo = r.repository().to_string();
        let ep = Arc::new(ep);
        let fetched: Vec<Option<Digest>> = stream::iter(blobs.iter().cloned())
            .map(|d| {
                let ep = ep.clone();
                let repo = repo.clone();
                async move {
                    let moved = self.fetch_blob_observed(&ep, &repo, &d, store, observer).await?;
                    Ok::<_, RegistryError>(moved.then(|| d.digest().clone()))
                }
            })
            .buffer_unordered(self.options.concurrency.max(1))
            .try_collect()
            .await?;
        // Manifests go in after their blobs so a stored manifest always has its content.
        if let Some(ix) = &index {
            store.write_bytes(&ix.bytes, &ix.media_type)?;
        }
        store.write_bytes(&manifest.bytes, &manifest.media_type)?;
        // Mount sources: the blobs are in the repository on the origin, and on a mirror that serves
        // repositories at its root (so a push to another repository there can mount them).
        for d in blobs.iter().chain(std::iter::once(&manifest.descriptor())) {
            store.add_source(d.digest(), d.size(), r.registry(), &repo)?;
            if ep.mirror && ep.path_prefix.is_empty() {
                store.add_source(d.digest(), d.size(), &ep.host, &repo)?;
            }
        }
        let config_bytes = store.read_blob(parsed.config().digest())?;
        let config = Image::from_json(&config_bytes)
            .map_err(|source| RegistryError::ImageConfig { digest: parsed.config().digest().clone(), source })?;
        Ok(Pulled {
            reference: r.clone(),
            index,
            manifest,
            config,
            served_by: ep.host.clone(),
            fetched: fetched.into_iter().flatten().collect(),
        })
    }
}

impl Client {
    /// Fetches the blobs of `r`'s repository that the store lacks, concurrently, each from the first
    /// endpoint that serves it (mirrors in order, then the origin), and records where they came from.
    /// For a manifest that is already local (a pinned reference resolved earlier): no manifest request.
    /// Returns the digests that were transferred.
    pub async fn fetch_missing(
        &self,
        r: &Reference,
        blobs: &[Descriptor],
        store: &ImageStore,
        observer: Option<&Observer<'_>>,
    ) -> Result<Vec<Digest>, RegistryError> {
        let endpoints = self.config().pull_endpoints(r.registry());
        let repo = r.repository().to_string();
        let fetched: Vec<Option<Digest>> = stream::iter(blobs.iter().cloned())
            .map(|d| {
                let endpoints = &endpoints;
                let repo = &repo;
                async move {
                    if media::is_non_distributable(d.media_type().as_ref()) && !store.has_blob(d.digest())? {
                        return Ok(None);
                    }
                    let mut errors = Vec::new();
                    let mut unreachable = true;
                    for (i, ep) in endpoints.iter().enumerate() {
                        match self.fetch_blob_observed(ep, repo, &d, store, observer).await {
                            Ok(moved) => {
                                if moved {
                                    store.add_source(d.digest(), d.size(), r.registry(), repo)?;
                                    if ep.mirror && ep.path_prefix.is_empty() {
                                        store.add_source(d.digest(), d.size(), &ep.host, repo)?;
                                    }
                                }
                                return Ok(moved.then(|| d.digest().clone()));
                            }
                            Err(e) if endpoints.len() == 1 => return Err(e),
                            Err(e) => {
                                unreachable &= e.is_unreachable();
                                errors.push(format!("{}: {e}", ep.host));
                                if i + 1 == endpoints.len() {
                                    break;
                                }
                            }
                        }
                    }
                    Err(RegistryError::AllEndpointsFailed {
                        reference: format!("{}@{}", r.name(), d.digest()),
                        errors: errors.join("; "),
                        unreachable,
                    })
                }
            })
            .buffer_unordered(self.options.concurrency.max(1))
            .try_collect()
            .await?;
        Ok(fetched.into_iter().flatten().collect())
    }
}

impl Reference {
    /// `name:tag` or `name@digest` for messages about one object of the repository.
    pub fn with_tag_or_digest(&self, object: &str) -> String {
        if object.contains(':') {
            format!("{}@{object}", self.name())
        } else {
            format!("{}:{object}", self.name())
        }
    }
}
