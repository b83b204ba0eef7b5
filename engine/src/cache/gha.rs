//! `type=gha`: the GitHub Actions cache service as a cache store, spoken as the actions/toolkit cache
//! client speaks its version 2: twirp JSON calls to `github.actions.results.api.v1.CacheService` at
//! `$ACTIONS_RESULTS_URL` (bearer `$ACTIONS_RUNTIME_TOKEN`), and the data itself sent to and read from the
//! signed blob URLs the service hands out (Azure Blob Storage: one `Put Blob`, or `Put Block`s and a
//! `Put Block List` for large blobs; a plain GET to read).
//!
//! - `CreateCacheEntry {key, version}` -> `{ok, signed_upload_url}`; the upload; then
//!   `FinalizeCacheEntryUpload {key, version, size_bytes}` -> `{ok, entry_id}`. Entries are immutable: a
//!   second create of a key is refused (`ok: false`, or twirp `already_exists`).
//! - `GetCacheEntryDownloadURL {key, restore_keys, version}` -> `{ok, signed_download_url, matched_key}`:
//!   the exact key, else the newest entry whose key starts with a restore key.
//!
//! rbuild's cache artifact (see [`super::record`]) maps onto entries so: every blob (the record, each
//! layer) is the entry `rbuild-blob-<hex>`, shared by every scope and uploaded once; the manifest that
//! names them is `rbuild-index-<scope>-<manifest hex>`, and an import asks for `rbuild-index-<scope>` with
//! the restore key `rbuild-index-<scope>-`, so it gets the newest export of its scope (entries cannot be
//! overwritten). Every blob read is verified against its digest.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use oci_spec::image::Descriptor;
use registry::manifest::{Parsed, RawManifest};
use reqwest::{StatusCode, Url};
use serde::Deserialize;
use serde_json::json;
use snapshotter::content::{ContentWriter, Ingester, Provider};

use super::record::CacheRecord;
use crate::error::ExportError;
use crate::Engine;

/// The twirp service the toolkit's cache client calls.
const SERVICE: &str = "github.actions.results.api.v1.CacheService";
/// The environment the runner gives actions (and the action exports to rbuild).
pub const URL_VAR: &str = "ACTIONS_RESULTS_URL";
pub const TOKEN_VAR: &str = "ACTIONS_RUNTIME_TOKEN";
/// Blobs up to this size go up in one request; larger ones in blocks of this size.
const BLOCK: u64 = 32 * 1024 * 1024;
/// The `x-ms-version` of the blob requests.
const BLOB_API_VERSION: &str = "2020-10-02";

/// Where the cache service is: `url=` (or `url_v2=`) and `token=` of the flag, else the runner's environment
/// at the time of the build.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Service {
    pub url: Option<String>,
    pub token: Option<String>,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        f.debug_struct("Service").field("url", &self.url).field("token", &self.token.as_ref().map(|_| "…")).finish()
    }
}

/// The key of a blob entry.
fn blob_key(digest: &str) -> String {
    format!("rbuild-blob-{}", digest.strip_prefix("sha256:").unwrap_or(digest))
}

/// The lookup key and restore prefix of a scope's manifest entries.
fn index_prefix(scope: &str) -> String {
    format!("rbuild-index-{scope}-")
}

/// The `version` of every entry (the toolkit hashes paths and compression into it; a fixed value keeps
/// rbuild's entries apart from other tools').
fn version() -> String {
    llb::Digest::of(b"rbuild gha cache v1").to_string().trim_start_matches("sha256:").to_string()
}

#[derive(Debug, Deserialize)]
struct TwirpError {
    #[serde(default)]
    code: String,
    #[serde(default)]
    msg: String,
}

#[derive(Debug, Default, Deserialize)]
struct CreateResponse {
    #[serde(default)]
    ok: bool,
    #[serde(default, alias = "signedUploadUrl")]
    signed_upload_url: String,
}

#[derive(Debug, Default, Deserialize)]
struct FinalizeResponse {
    #[serde(default)]
    ok: bool,
}

#[derive(Debug, Default, Deserialize)]
struct DownloadResponse {
    #[serde(default)]
    ok: bool,
    #[serde(default, alias = "signedDownloadUrl")]
    signed_download_url: String,
    #[serde(default, alias = "matchedKey")]
    matched_key: String,
}

/// A call's answer: the response, or the service's refusal (a twirp error code and message).
enum Answer<T> {
    Ok(T),
    Refused { code: String, msg: String },
}

/// A client of one scope of the cache service.
pub(crate) struct GhaCache {
    http: reqwest::Client,
    base: Url,
    token: String,
    scope: String,
    version: String,
    /// Signed download URLs of blobs known to exist.
    urls: Mutex<HashMap<String, String>>,
}

impl GhaCache {
    pub(crate) fn new(service: &Service, scope: &str) -> Result<GhaCache, String> {
        let env = |v: &str| std::env::var(v).ok().filter(|s| !s.is_empty());
        let url = service.url.clone().or_else(|| env(URL_VAR)).ok_or_else(|| {
            format!(
                "type=gha needs the cache service's address: {URL_VAR} is not set (the runner gives it to actions; \
                 in a `run:` step pass url=… and token=…, or use the rbuild action)"
            )
        })?;
        let token = service
            .token
            .clone()
            .or_else(|| env(TOKEN_VAR))
            .ok_or_else(|| format!("type=gha needs a token: {TOKEN_VAR} is not set"))?;
        let base = Url::parse(&url).map_err(|e| format!("type=gha: invalid service URL {url:?}: {e}"))?;
        let http = reqwest::Client::builder()
            .user_agent(concat!("rbuild/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| format!("type=gha: {e}"))?;
        Ok(GhaCache { http, base, token, scope: scope.to_string(), version: version(), urls: Mutex::default() })
    }

    /// One twirp call, retried on a transport error or a 5xx/429 answer as the toolkit does.
    async fn call<T: for<'de> Deserialize<'de> + Default>(
        &self,
        method: &str,
        body: serde_json::Value,
    ) -> Result<Answer<T>, String> {
        // As the toolkit resolves it: an absolute path on the service's host.
        let url = self.base.join(&format!("/twirp/{SERVICE}/{method}")).map_err(|e| e.to_string())?;
        let mut delay = Duration::from_millis(500);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let sent = self
                .http
                .post(url.clone())
                .bearer_auth(&self.token)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.to_string())
                .send()
                .await;
            let retry = |m: String| -> Result<(), String> {
                if attempt >= 3 {
                    Err(format!("{method}: {m}"))
                } else {
                    Ok(())
                }
            };
            match sent {
                Err(e) => retry(e.to_string())?,
                Ok(r) => {
                    let status = r.status();
                    let bytes = r.bytes().await.map_err(|e| format!("{method}: {e}"))?;
                    if status.is_success() {
                        let v = if bytes.is_empty() {
                            T::default()
                        } else {
                            serde_json::from_slice(&bytes).map_err(|e| format!("{method}: unexpected answer: {e}"))?
                        };
                        return Ok(Answer::Ok(v));
                    }
                    let e: TwirpError = serde_json::from_slice(&bytes)
                        .unwrap_or(TwirpError { code: String::new(), msg: String::from_utf8_lossy(&bytes).into() });
                    if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
                        retry(format!("{status}: {}", e.msg))?;
                    } else {
                        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
                            return Err(format!("{method}: the cache service refused the token ({status}: {})", e.msg));
                        }
                        return Ok(Answer::Refused { code: e.code, msg: e.msg });
                    }
                }
            }
            tokio::time::sleep(delay).await;
            delay *= 2;
        }
    }

    /// The signed URL of the entry `key`, or of the newest whose key starts with one of `restore`.
    async fn download_url(&self, key: &str, restore: &[String]) -> Result<Option<(String, String)>, String> {
        let body = json!({"key": key, "restore_keys": restore, "version": self.version});
        match self.call::<DownloadResponse>("GetCacheEntryDownloadURL", body).await? {
            Answer::Ok(r) if r.ok && !r.signed_download_url.is_empty() => {
                let matched = if r.matched_key.is_empty() { key.to_string() } else { r.matched_key };
                Ok(Some((matched, r.signed_download_url)))
            }
            Answer::Ok(_) => Ok(None),
            Answer::Refused { code, .. } if code == "not_found" => Ok(None),
            Answer::Refused { code, msg } => Err(format!("GetCacheEntryDownloadURL: {code}: {msg}")),
        }
    }

    /// Whether the blob is in the cache (its download URL is kept for a fetch).
    pub(crate) async fn has_blob(&self, digest: &str) -> Result<bool, String> {
        if self.urls.lock().unwrap_or_else(|e| e.into_inner()).contains_key(digest) {
            return Ok(true);
        }
        match self.download_url(&blob_key(digest), &[]).await? {
            Some((_, url)) => {
                self.urls.lock().unwrap_or_else(|e| e.into_inner()).insert(digest.to_string(), url);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn blob_url(&self, digest: &str) -> Result<String, String> {
        if !self.has_blob(digest).await? {
            return Err(format!("blob {digest} is not in the GitHub Actions cache"));
        }
        let urls = self.urls.lock().unwrap_or_else(|e| e.into_inner());
        urls.get(digest).cloned().ok_or_else(|| format!("blob {digest}: no download URL"))
    }

    async fn get(&self, url: &str) -> Result<reqwest::Response, String> {
        let r = self
            .http
            .get(url)
            .header("x-ms-version", BLOB_API_VERSION)
            .send()
            .await
            .map_err(|e| format!("downloading from the cache: {e}"))?;
        if !r.status().is_success() {
            return Err(format!("downloading from the cache: {}", r.status()));
        }
        Ok(r)
    }

    /// A small blob (a manifest, the record), verified against `digest`.
    async fn read_small(&self, url: &str, digest: &str) -> Result<Vec<u8>, String> {
        let bytes = self.get(url).await?.bytes().await.map_err(|e| format!("downloading from the cache: {e}"))?;
        let got = llb::Digest::of(&bytes).to_string();
        if got != digest {
            return Err(format!("the cache's copy of {digest} is corrupted (its digest is {got})"));
        }
        Ok(bytes.to_vec())
    }

    /// The record of the newest export of this scope.
    pub(crate) async fn read_record(&self) -> Result<CacheRecord, String> {
        let prefix = index_prefix(&self.scope);
        let lookup = prefix.trim_end_matches('-').to_string();
        let Some((matched, url)) = self.download_url(&lookup, std::slice::from_ref(&prefix)).await? else {
            return Err(format!("the GitHub Actions cache has no rbuild cache of scope {:?} yet", self.scope));
        };
        let hex = matched.strip_prefix(&prefix).unwrap_or_default();
        let manifest = self.read_small(&url, &format!("sha256:{hex}")).await?;
        let raw = RawManifest::new(None, manifest);
        let Parsed::Manifest(m) = raw.parse().map_err(|e| format!("{matched}: {e}"))? else {
            return Err(format!("{matched} is an index, not an rbuild cache manifest"));
        };
        super::import::check_config_type(m.config(), &format!("the GitHub Actions cache entry {matched}"))?;
        let config = m.config().digest().to_string();
        let url = self.blob_url(&config).await?;
        CacheRecord::parse(&self.read_small(&url, &config).await?)
    }

    /// Fetches `d` into the content store (streamed, verified by the store's commit).
    pub(crate) async fn fetch(&self, engine: &Arc<Engine>, d: &Descriptor) -> Result<(), String> {
        let digest = d.digest().to_string();
        let url = self.blob_url(&digest).await?;
        let mut r = self.get(&url).await?;
        let content = engine.images.content().clone();
        let mut w =
            content.writer(&format!("gha-{digest}"), Some(d.size())).map_err(|e| format!("blob {digest}: {e}"))?;
        while let Some(chunk) = r.chunk().await.map_err(|e| format!("downloading {digest}: {e}"))? {
            std::io::Write::write_all(&mut w, &chunk).map_err(|e| format!("writing {digest}: {e}"))?;
        }
        let (size, want) = (d.size(), d.digest().clone());
        tokio::task::spawn_blocking(move || w.commit(Some(size), Some(&want)))
            .await
            .map_err(|e| format!("blob {digest}: {e}"))?
            .map_err(|e| format!("blob {digest} from the GitHub Actions cache: {e}"))?;
        Ok(())
    }

    /// Creates the entry `key` and uploads `size` bytes read by `read(offset, len)`; `false` when the entry
    /// exists already (or another job is writing it).
    async fn save(
        &self,
        key: &str,
        size: u64,
        read: &(dyn Fn(u64, u64) -> Result<Vec<u8>, String> + Sync),
    ) -> Result<bool, String> {
        let body = json!({"key": key, "version": self.version});
        let url = match self.call::<CreateResponse>("CreateCacheEntry", body).await? {
            Answer::Ok(r) if r.ok && !r.signed_upload_url.is_empty() => r.signed_upload_url,
            Answer::Ok(_) => return Ok(false),
            Answer::Refused { code, .. } if code == "already_exists" => return Ok(false),
            Answer::Refused { code, msg } => return Err(format!("CreateCacheEntry {key}: {code}: {msg}")),
        };
        let url = Url::parse(&url).map_err(|e| format!("CreateCacheEntry {key}: invalid upload URL: {e}"))?;
        if size <= BLOCK {
            let r = self
                .http
                .put(url)
                .header("x-ms-blob-type", "BlockBlob")
                .header("x-ms-version", BLOB_API_VERSION)
                .body(read(0, size)?)
                .send()
                .await
                .map_err(|e| format!("uploading {key}: {e}"))?;
            check_upload(key, r.status())?;
        } else {
            let mut ids = Vec::new();
            let mut offset = 0;
            while offset < size {
                let len = BLOCK.min(size - offset);
                // Every block id of a blob has the same length (Azure's rule).
                let id = base64::engine::general_purpose::STANDARD.encode(format!("block-{:08}", ids.len()));
                let mut block = url.clone();
                block.query_pairs_mut().append_pair("comp", "block").append_pair("blockid", &id);
                let r = self
                    .http
                    .put(block)
                    .header("x-ms-version", BLOB_API_VERSION)
                    .body(read(offset, len)?)
                    .send()
                    .await
                    .map_err(|e| format!("uploading {key}: {e}"))?;
                check_upload(key, r.status())?;
                ids.push(id);
                offset += len;
            }
            let mut list = url.clone();
            list.query_pairs_mut().append_pair("comp", "blocklist");
            let xml = format!(
                "<?xml version=\"1.0\" encoding=\"utf-8\"?><BlockList>{}</BlockList>",
                ids.iter().map(|i| format!("<Latest>{i}</Latest>")).collect::<String>()
            );
            let r = self
                .http
                .put(list)
                .header("x-ms-version", BLOB_API_VERSION)
                .header("content-type", "application/xml")
                .body(xml)
                .send()
                .await
                .map_err(|e| format!("uploading {key}: {e}"))?;
            check_upload(key, r.status())?;
        }
        let body = json!({"key": key, "version": self.version, "size_bytes": size.to_string()});
        match self.call::<FinalizeResponse>("FinalizeCacheEntryUpload", body).await? {
            Answer::Ok(r) if r.ok => Ok(true),
            Answer::Ok(_) => Err(format!("FinalizeCacheEntryUpload {key}: the service did not accept the upload")),
            Answer::Refused { code, msg } => Err(format!("FinalizeCacheEntryUpload {key}: {code}: {msg}")),
        }
    }

    /// Uploads the artifact `top` (a manifest) and the blobs it names that the cache lacks: (blobs sent,
    /// bytes sent).
    pub(crate) async fn push(
        &self,
        engine: &Arc<Engine>,
        top: &Descriptor,
        blobs: &[(String, u64)],
    ) -> Result<(usize, u64), ExportError> {
        let fail = |m: String| ExportError::Other(format!("exporting cache to {}: {m}", describe(&self.scope)));
        let (mut new, mut bytes) = (0, 0);
        let top_digest = top.digest().to_string();
        for (digest, size) in blobs.iter().filter(|(d, _)| *d != top_digest) {
            if self.has_blob(digest).await.map_err(fail)? {
                continue;
            }
            if self.save(&blob_key(digest), *size, &reader(engine, digest)).await.map_err(fail)? {
                new += 1;
                bytes += size;
            }
        }
        let key = format!("{}{}", index_prefix(&self.scope), top_digest.trim_start_matches("sha256:"));
        if self.download_url(&key, &[]).await.map_err(fail)?.is_none()
            && self.save(&key, top.size(), &reader(engine, &top_digest)).await.map_err(fail)?
        {
            new += 1;
            bytes += top.size();
        }
        Ok((new, bytes))
    }
}

/// `gha:<scope>`, how messages name a scope.
pub(crate) fn describe(scope: &str) -> String {
    format!("gha:{scope}")
}

fn check_upload(key: &str, status: StatusCode) -> Result<(), String> {
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("uploading {key}: the blob store answered {status}"))
    }
}

/// Reads ranges of a blob of the content store.
fn reader(engine: &Arc<Engine>, digest: &str) -> impl Fn(u64, u64) -> Result<Vec<u8>, String> + Sync {
    let content = engine.images.content().clone();
    let digest = digest.to_string();
    move |offset, len| {
        let d: oci_spec::image::Digest = digest.parse().map_err(|e| format!("{digest}: {e}"))?;
        let mut r = content.reader(&d).map_err(|e| format!("reading {digest}: {e}"))?;
        r.seek(SeekFrom::Start(offset)).map_err(|e| format!("reading {digest}: {e}"))?;
        let mut buf = vec![0; len as usize];
        r.read_exact(&mut buf).map_err(|e| format!("reading {digest}: {e}"))?;
        Ok(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_version_are_stable() {
        assert_eq!(blob_key("sha256:abc"), "rbuild-blob-abc");
        assert_eq!(index_prefix("main"), "rbuild-index-main-");
        assert_eq!(version().len(), 64);
        assert_eq!(version(), version());
    }

    #[test]
    fn a_missing_service_says_what_to_set() {
        let none = Service { url: Some("http://127.0.0.1:1/".into()), token: None };
        if std::env::var_os(TOKEN_VAR).is_none() {
            let e = GhaCache::new(&none, "s").err().unwrap_or_default();
            assert!(e.contains(TOKEN_VAR), "{e}");
        }
        let bad = Service { url: Some("not a url".into()), token: Some("t".into()) };
        assert!(GhaCache::new(&bad, "s").err().unwrap_or_default().contains("invalid service URL"));
        assert!(!format!("{:?}", Service { url: None, token: Some("secret".into()) }).contains("secret"));
    }
}
