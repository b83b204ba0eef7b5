//! The image commands (`images`, `tag`, `rmi`, `inspect`, `history`, `pull`, `push`, `save`, `load`) as data:
//! what each finds or does on an image store, for a caller to show. The CLI runs them in-process, the
//! daemon for its clients; both print the same from the same data.

use std::io::{Read, Write};

use llb::Platform;
use registry::export::ArchiveFormat;
use registry::{Client, ImageStore, Reference, RegistryError};
use serde::{Deserialize, Serialize};

/// Why an image command failed.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Reference(#[from] llb::ReferenceError),
    #[error("no such image: {0}")]
    NoSuchImage(String),
    #[error("{0}")]
    Other(String),
}

/// One line of `rbuild images`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageSummary {
    /// The familiar name (`busybox`, `registry.example.com/app`).
    pub repository: String,
    pub tag: Option<String>,
    /// The manifest (or index) digest.
    pub digest: String,
    /// The config digest (the image ID).
    pub id: String,
    /// RFC 3339.
    pub created: Option<String>,
    /// Layers and config as stored (layers rbuild built are kept uncompressed).
    pub size: u64,
}

/// Every named image.
pub fn list(store: &ImageStore) -> Result<Vec<ImageSummary>, ImageError> {
    let mut out = Vec::new();
    for img in store.list()? {
        let Ok(desc) = store.get(&img.name.to_string()) else { continue };
        let Ok(local) = store.image(&desc, None) else { continue };
        let size = local.manifest.layers().iter().map(|l| l.size()).sum::<u64>() + local.manifest.config().size();
        out.push(ImageSummary {
            repository: img.name.familiar_name(),
            tag: img.name.tag().map(str::to_string),
            digest: img.record.digest.clone(),
            id: local.manifest.config().digest().to_string(),
            created: local.config.created.clone(),
            size,
        });
    }
    Ok(out)
}

/// Names `target` as the image `source` names.
pub fn tag(store: &ImageStore, source: &str, target: &str) -> Result<(), ImageError> {
    let desc = store.get(source)?;
    store.tag(&Reference::parse(target)?, &desc)?;
    Ok(())
}

/// Removes names (content stays until garbage collection); returns them as `docker rmi` shows them.
pub fn untag(store: &ImageStore, references: &[String]) -> Result<Vec<String>, ImageError> {
    let mut out = Vec::new();
    for r in references {
        let name = Reference::parse(r)?;
        if !store.untag(&name)? {
            return Err(ImageError::NoSuchImage(r.clone()));
        }
        out.push(name.familiar_name() + &name.tag().map(|t| format!(":{t}")).unwrap_or_default());
    }
    Ok(out)
}

/// An image's manifest, config and layers in skopeo inspect's shape (or the raw manifest bytes).
pub fn inspect(store: &ImageStore, reference: &str, raw: bool) -> Result<Vec<u8>, ImageError> {
    let desc = store.get(reference)?;
    let local = store.image(&desc, None)?;
    if raw {
        let mut b = local.manifest_raw.bytes.clone();
        b.push(b'\n');
        return Ok(b);
    }
    let tags: Vec<String> = store
        .list()?
        .into_iter()
        .filter(|i| i.record.digest == desc.digest().to_string())
        .map(|i| i.name.to_string())
        .collect();
    let (name, tag) = match Reference::parse(reference) {
        Ok(r) => (r.name(), r.tag().map(str::to_string)),
        Err(_) => (String::new(), None),
    };
    let layers_data: Vec<serde_json::Value> = local
        .manifest
        .layers()
        .iter()
        .map(|l| {
            serde_json::json!({
                "MIMEType": l.media_type().to_string(),
                "Digest": l.digest().to_string(),
                "Size": l.size(),
                "Annotations": l.annotations(),
            })
        })
        .collect();
    let c = &local.config;
    let json = |b: &[u8]| serde_json::from_slice::<serde_json::Value>(b).map_err(|e| ImageError::Other(e.to_string()));
    // skopeo inspect's shape, plus the full config and the manifest.
    let mut out = serde_json::json!({
        "Name": name,
        "Tag": tag,
        "Digest": desc.digest().to_string(),
        "RepoTags": tags,
        "Created": c.created,
        "DockerVersion": c.extra.get("docker_version"),
        "Labels": c.config.labels,
        "Architecture": c.architecture,
        "Variant": c.variant,
        "Os": c.os,
        "Layers": local.manifest.layers().iter().map(|l| l.digest().to_string()).collect::<Vec<_>>(),
        "LayersData": layers_data,
        "Env": c.config.env,
        "Id": local.manifest.config().digest().to_string(),
        "MediaType": local.manifest_raw.media_type,
        "ManifestDigest": local.manifest_raw.digest.to_string(),
        "Config": json(&local.config_bytes)?,
        "Manifest": json(&local.manifest_raw.bytes)?,
    });
    // An index (a multi-platform build, a pulled base): the rest describes this machine's platform of it;
    // `Platforms` names every one it lists, each with whether the store holds it.
    let top = store.read_manifest(&desc)?;
    if let Ok(registry::manifest::Parsed::Index(ix)) = top.parse() {
        let platforms: Vec<serde_json::Value> = ix
            .manifests()
            .iter()
            .filter_map(|d| Some((registry::manifest::descriptor_platform(d)?, d)))
            .filter(|(p, _)| p.os != "unknown")
            .map(|(p, d)| {
                serde_json::json!({
                    "Platform": p.to_string(),
                    "Digest": d.digest().to_string(),
                    "Held": store.has_blob(d.digest()).unwrap_or(false),
                })
            })
            .collect();
        out["IndexMediaType"] = serde_json::json!(top.media_type);
        out["Platforms"] = serde_json::json!(platforms);
    }
    let mut text = serde_json::to_vec_pretty(&out).map_err(|e| ImageError::Other(e.to_string()))?;
    text.push(b'\n');
    Ok(text)
}

/// One history entry, newest first in [`history`]'s result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// The image ID for the newest entry, `None` (docker's `<missing>`) for the others.
    pub id: Option<String>,
    pub created: Option<String>,
    pub created_by: Option<String>,
    pub size: u64,
    pub comment: Option<String>,
}

/// An image's history, newest first.
pub fn history(store: &ImageStore, reference: &str) -> Result<Vec<HistoryEntry>, ImageError> {
    let desc = store.get(reference)?;
    let local = store.image(&desc, None)?;
    let mut layers = local.manifest.layers().iter();
    let n = local.config.history.len();
    let mut out: Vec<HistoryEntry> = local
        .config
        .history
        .iter()
        .enumerate()
        .map(|(i, h)| HistoryEntry {
            id: (i + 1 == n).then(|| local.manifest.config().digest().to_string()),
            created: h.created.clone(),
            created_by: h.created_by.clone(),
            size: if h.empty_layer { 0 } else { layers.next().map(|l| l.size()).unwrap_or(0) },
            comment: h.comment.clone(),
        })
        .collect();
    out.reverse();
    Ok(out)
}

/// What a pull did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullSummary {
    pub reference: String,
    pub digest: String,
    /// Whether anything was downloaded (else the image was up to date).
    pub fetched: bool,
}

/// Pulls `reference` for `platform` and names it; per-blob progress goes to the client's callback.
pub async fn pull(
    client: &Client,
    store: &ImageStore,
    reference: &str,
    platform: Option<&Platform>,
) -> Result<PullSummary, ImageError> {
    let r = Reference::parse(reference)?;
    let platform = platform.cloned().unwrap_or_else(Platform::host);
    let pulled = client.pull(&r, &platform, store).await?;
    store.tag(&r, &pulled.manifest.descriptor())?;
    Ok(PullSummary {
        reference: r.to_string(),
        digest: pulled.manifest.digest.to_string(),
        fetched: !pulled.fetched.is_empty(),
    })
}

/// What a push did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushSummary {
    pub repository: String,
    pub tag: Option<String>,
    pub digest: String,
    pub size: u64,
    pub uploaded: usize,
    pub mounted: usize,
    pub existed: usize,
    /// Platforms of a partly held index that are not pushed (see `registry::PushReport::left_out`).
    #[serde(default)]
    pub left_out: Vec<String>,
}

/// Pushes `reference`; per-blob progress goes to the client's callback. Layers the store keeps
/// uncompressed (the images rbuild built) are pushed gzip-compressed, as `docker push` does; each is
/// compressed once, and the image ID stays the same.
pub async fn push(client: &Client, store: &ImageStore, reference: &str) -> Result<PushSummary, ImageError> {
    let r = Reference::parse(reference)?;
    let stored = store.get(reference)?;
    let s = store.clone();
    let desc = tokio::task::spawn_blocking(move || {
        registry::compress::distributable(&s, &stored, snapshotter::diff::Compression::Gzip)
    })
    .await
    .map_err(|e| ImageError::Other(format!("compressing the layers of {reference} failed: {e}")))??;
    let report = client.push(store, &desc, &r).await?;
    Ok(PushSummary {
        repository: r.name(),
        tag: r.tag().map(str::to_string),
        digest: report.digest.map(|d| d.to_string()).unwrap_or_default(),
        size: desc.size(),
        uploaded: report.uploaded.len(),
        mounted: report.mounted.len(),
        existed: report.existed.len(),
        left_out: report.left_out,
    })
}

/// Writes `references` as a docker archive or an OCI layout tar.
pub fn save(store: &ImageStore, references: &[String], oci: bool, w: impl Write) -> Result<(), ImageError> {
    let (images, format) = save_args(store, references, oci)?;
    registry::export::save(store, &images, format, w)?;
    Ok(())
}

/// [`save`] into a file, whose blobs the kernel copies (`copy_file_range`).
pub fn save_file(
    store: &ImageStore,
    references: &[String],
    oci: bool,
    f: &mut std::fs::File,
) -> Result<(), ImageError> {
    let (images, format) = save_args(store, references, oci)?;
    registry::export::save_file(store, &images, format, f)?;
    Ok(())
}

type Named = (Option<Reference>, oci_spec::image::Descriptor);

fn save_args(store: &ImageStore, references: &[String], oci: bool) -> Result<(Vec<Named>, ArchiveFormat), ImageError> {
    let mut images = Vec::new();
    for r in references {
        images.push((Reference::parse(r).ok(), store.get(r)?));
    }
    Ok((images, if oci { ArchiveFormat::Oci } else { ArchiveFormat::Docker }))
}

/// Loads a docker archive or OCI layout tar; returns the names loaded.
pub fn load(store: &ImageStore, r: impl Read) -> Result<Vec<String>, ImageError> {
    Ok(registry::export::load(store, r)?.into_iter().map(|(name, _)| name).collect())
}
