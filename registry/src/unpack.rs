//! Image sources for the build: a reference becomes a chain of committed snapshots, one per layer,
//! each named by its chainID (image-spec `config.md`, "Layer ChainID") so a layer shared by two images
//! is unpacked once. A pinned reference whose manifest is already local costs no request at all; only
//! missing blobs are fetched, concurrently.
//!
//! Each snapshot carries [`snapshotter::LAYER_LABEL`] naming the blob it came from, so the exporter
//! reuses the base image's layers byte for byte instead of diffing them again.

use std::collections::HashMap;
use std::sync::Mutex;

use oci_spec::image::{Descriptor, Digest, ImageManifest};
use snapshotter::content::Provider;
use snapshotter::diff::Layer;
use snapshotter::snapshot::{SnapshotError, Snapshotter};
use snapshotter::LAYER_LABEL;

use crate::client::pull::Observer;
use crate::client::{Client, Progress};
use crate::error::RegistryError;
use crate::manifest::{media, require_platform, Parsed, RawManifest};
use crate::reference::Reference;
use crate::store::ImageStore;
use llb::image::Image;
use llb::Platform;

/// The chainIDs of a layer stack: `chain[0] = diff[0]`, `chain[n] = sha256(chain[n-1] + " " + diff[n])`.
pub fn chain_ids(diff_ids: &[Digest]) -> Vec<Digest> {
    let mut out: Vec<Digest> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(prev) => snapshotter::digest::of_bytes(format!("{prev} {d}").as_bytes()),
        };
        out.push(next);
    }
    out
}

/// A platform manifest with its config, as found locally or fetched.
struct Resolved {
    /// The digest the reference is pinned to (the index's when it resolved to one).
    top: Digest,
    manifest: ImageManifest,
    config: Image,
    /// Why the registry was not asked: it could not be reached, and the store's last resolution
    /// (`resolved_at`, seconds since the epoch) stands in.
    offline: Option<RegistryError>,
    resolved_at: Option<u64>,
}

/// The platform manifest below `top` (itself when it is a manifest), read from the store only.
fn local_platform_manifest(
    store: &ImageStore,
    top: &RawManifest,
    platform: &Platform,
) -> Result<Option<RawManifest>, RegistryError> {
    match top.parse()? {
        Parsed::Manifest(_) => Ok(Some(top.clone())),
        Parsed::Index(ix) => {
            let d = require_platform(&ix, platform, &top.digest)?;
            if store.has_blob(d.digest())? {
                Ok(Some(store.read_manifest(d)?))
            } else {
                Ok(None)
            }
        }
    }
}

/// The top-level manifest or index the reference names locally, without any request: a pinned digest
/// present in the content store, or (unless `pull`) a tag the local image store names.
fn local_top(store: &ImageStore, r: &Reference, pull: bool) -> Result<Option<RawManifest>, RegistryError> {
    if let Some(d) = r.digest() {
        if !store.has_blob(d)? {
            return Ok(None);
        }
        let bytes = store.read_blob(d)?;
        return Ok(Some(RawManifest::new(None, bytes)));
    }
    if pull {
        return Ok(None);
    }
    match store.get(&r.to_string()) {
        Ok(desc) if store.has_blob(desc.digest())? => Ok(Some(store.read_manifest(&desc)?)),
        Ok(_) | Err(RegistryError::NoSuchImage(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

fn read_config(store: &ImageStore, m: &ImageManifest) -> Result<Image, RegistryError> {
    let bytes = store.read_blob(m.config().digest())?;
    Image::from_json(&bytes)
        .map_err(|source| RegistryError::ImageConfig { digest: m.config().digest().clone(), source })
}

/// Resolves `r` to its platform manifest and config, from the store when it has them (and `pull` does
/// not ask to re-resolve a tag), else from the registry. Manifests and the config end up in the store.
async fn resolve(
    client: &Client,
    store: &ImageStore,
    r: &Reference,
    platform: &Platform,
    pull: bool,
    observer: Option<&Observer<'_>>,
) -> Result<Resolved, RegistryError> {
    if let Some(top) = local_top(store, r, pull)? {
        if let Some(m) = local_platform_manifest(store, &top, platform)? {
            let manifest = m.manifest()?;
            if !store.has_blob(manifest.config().digest())? {
                client.fetch_missing(r, std::slice::from_ref(manifest.config()), store, observer).await?;
            }
            let config = read_config(store, &manifest)?;
            return Ok(Resolved { top: top.digest, manifest, config, offline: None, resolved_at: None });
        }
    }
    let (ep, top) = match client.resolve(r).await {
        Ok(found) => found,
        // A tag the store resolved before stands in while its registry cannot be asked (not with --pull,
        // which asks for the registry's answer).
        Err(e) if e.is_unreachable() && r.digest().is_none() && !pull => match last_resolved(store, r, platform)? {
            Some(mut local) => {
                local.offline = Some(e);
                return Ok(local);
            }
            None => return Err(e),
        },
        Err(e) => return Err(e),
    };
    let m = match top.parse()? {
        Parsed::Manifest(_) => top.clone(),
        Parsed::Index(ix) => {
            let d = require_platform(&ix, platform, &top.digest)?;
            client.fetch_manifest(&ep, r, d.digest().as_ref()).await?
        }
    };
    let manifest = m.manifest()?;
    let pinned = r.digest_only(top.digest.clone());
    client.fetch_missing(&pinned, std::slice::from_ref(manifest.config()), store, observer).await?;
    let config = read_config(store, &manifest)?;
    // The platform manifest first: whoever finds the index locally also finds what it points at.
    store.write_bytes(&m.bytes, &m.media_type)?;
    if top.digest != m.digest {
        store.write_bytes(&top.bytes, &top.media_type)?;
    }
    store.add_source(&m.digest, m.bytes.len() as u64, r.registry(), r.repository())?;
    if r.digest().is_none() {
        store.note_resolved(r, &top.digest, top.bytes.len() as u64)?;
    }
    Ok(Resolved { top: top.digest, manifest, config, offline: None, resolved_at: None })
}

/// What the tag `r` last resolved to, for `platform`, from the store alone.
fn last_resolved(store: &ImageStore, r: &Reference, platform: &Platform) -> Result<Option<Resolved>, RegistryError> {
    let Some((digest, at)) = store.last_resolved(r)? else { return Ok(None) };
    let top = RawManifest::new(None, store.read_blob(&digest)?);
    let Some(m) = local_platform_manifest(store, &top, platform)? else { return Ok(None) };
    let manifest = m.manifest()?;
    if !store.has_blob(manifest.config().digest())? {
        return Ok(None);
    }
    let config = read_config(store, &manifest)?;
    Ok(Some(Resolved { top: digest, manifest, config, offline: None, resolved_at: Some(at) }))
}

/// Resolves `reference` for `platform` to its pinned name (`registry/repo@sha256:...`, the index's
/// digest when it is an index) and its image config. The manifests and the config are stored locally,
/// so a later [`unpack_image`] of the pinned name sends no manifest request. Used by the frontend's
/// image resolver (`FROM busybox` needs the base's config to convert the Dockerfile).
pub async fn resolve_config(
    client: &Client,
    store: &ImageStore,
    reference: &str,
    platform: &Platform,
    pull: bool,
) -> Result<(String, Image), RegistryError> {
    let c = resolve_base(client, store, reference, platform, pull).await?;
    Ok((c.pinned, c.config))
}

/// A base image's pinned name and config, and whether the store's copy stood in for the registry.
#[derive(Debug)]
pub struct ResolvedBase {
    /// `registry/repo@sha256:...` (the index's digest when the tag names one).
    pub pinned: String,
    pub config: Image,
    /// Set when the registry could not be reached and the tag's last resolution was used instead.
    pub offline: Option<Offline>,
}

/// The registry's failure, and when the tag last resolved (seconds since the epoch).
#[derive(Debug)]
pub struct Offline {
    pub error: RegistryError,
    pub resolved_at: u64,
}

/// [`resolve_config`], saying when the store's copy stood in for an unreachable registry.
pub async fn resolve_base(
    client: &Client,
    store: &ImageStore,
    reference: &str,
    platform: &Platform,
    pull: bool,
) -> Result<ResolvedBase, RegistryError> {
    let r = Reference::parse(reference)?;
    let resolved = resolve(client, store, &r, platform, pull, None).await?;
    let offline = match (resolved.offline, resolved.resolved_at) {
        (Some(error), Some(resolved_at)) => Some(Offline { error, resolved_at }),
        _ => None,
    };
    Ok(ResolvedBase { pinned: format!("{}@{}", r.name(), resolved.top), config: resolved.config, offline })
}

/// An image whose layers are in the content store (or already unpacked), ready for [`unpack_pulled`].
#[derive(Debug, Clone)]
pub struct PulledImage {
    reference: String,
    layers: Vec<Descriptor>,
    diff_ids: Vec<Digest>,
}

impl PulledImage {
    /// A chain of layers (base first) with their diffIDs, fetched by the caller; `reference` names it in
    /// errors.
    pub fn new(reference: impl Into<String>, layers: Vec<Descriptor>, diff_ids: Vec<Digest>) -> PulledImage {
        PulledImage { reference: reference.into(), layers, diff_ids }
    }
}

/// Resolves `reference` for `platform` and fetches the blobs of the layers that are not unpacked yet.
///
/// A pinned reference whose manifest is local needs no request (and with `pull`, a tag is re-resolved
/// against its registry first); only missing blobs are fetched, concurrently. `status(current, total)`
/// reports the bytes of the image's blobs present so far. Snapshot lookups are metadata reads; the
/// unpacking itself is [`unpack_pulled`], which blocks.
pub async fn pull_image(
    client: &Client,
    store: &ImageStore,
    snapshotter: &dyn Snapshotter,
    reference: &str,
    platform: &Platform,
    pull: bool,
    status: &(dyn Fn(u64, Option<u64>) + Sync),
) -> Result<PulledImage, RegistryError> {
    let r = Reference::parse(reference)?;
    let resolved = resolve(client, store, &r, platform, pull, None).await?;
    let layers = resolved.manifest.layers().clone();
    let diff_ids: Vec<Digest> = resolved.config.rootfs.diff_ids.iter().map(oci_digest).collect();
    if layers.len() != diff_ids.len() {
        return Err(RegistryError::Protocol(format!(
            "image {reference}: the manifest has {} layers but the config lists {} diff_ids",
            layers.len(),
            diff_ids.len()
        )));
    }
    let chain = chain_ids(&diff_ids);
    // Layers whose snapshot exists need no blob at all (a later GC may have dropped it).
    let mut needed = Vec::new();
    for (l, c) in layers.iter().zip(&chain) {
        if !snapshot_exists(snapshotter, c.as_ref())? {
            needed.push(l.clone());
        }
    }
    let total: u64 = needed.iter().map(Descriptor::size).sum();
    // Transfers report into a shared map; `status` is called from this task only (a tick while the
    // fetch runs).
    let done: Mutex<HashMap<String, u64>> = Mutex::new(HashMap::new());
    let observe = |p: &Progress| {
        done.lock().unwrap_or_else(|e| e.into_inner()).insert(p.id.clone(), p.current);
    };
    let sum = || done.lock().unwrap_or_else(|e| e.into_inner()).values().sum::<u64>();
    let pinned = r.digest_only(resolved.top.clone());
    let fetch = client.fetch_missing(&pinned, &needed, store, Some(&observe));
    tokio::pin!(fetch);
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(200));
    loop {
        tokio::select! {
            fetched = &mut fetch => {
                fetched?;
                break;
            }
            _ = tick.tick() => status(sum(), Some(total)),
        }
    }
    status(sum(), Some(total));
    Ok(PulledImage { reference: reference.to_string(), layers, diff_ids })
}

/// Unpacks a pulled image as a chain of committed snapshots and returns the top one's name (`None` for
/// an image without layers). Each layer is unpacked once into a snapshot named by its chainID, its
/// diffID checked against the config's `rootfs.diff_ids`, and labelled with [`LAYER_LABEL`]. Blocking.
pub fn unpack_pulled(
    store: &ImageStore,
    snapshotter: &dyn Snapshotter,
    pulled: &PulledImage,
) -> Result<Option<String>, RegistryError> {
    let reference = &pulled.reference;
    let chain = chain_ids(&pulled.diff_ids);
    let mut parent: Option<String> = None;
    for ((layer, diff_id), chain_id) in pulled.layers.iter().zip(&pulled.diff_ids).zip(&chain) {
        let name = chain_id.to_string();
        if !snapshot_exists(snapshotter, &name)? {
            if media::is_non_distributable(layer.media_type().as_ref()) && !store.has_blob(layer.digest())? {
                return Err(RegistryError::Protocol(format!(
                    "image {reference}: layer {} is non-distributable and not in the local store; \
                     load it with `rbuild load` first",
                    layer.digest()
                )));
            }
            let reader = store.content().reader(layer.digest())?;
            snapshotter::apply::unpack_layer(snapshotter, &name, parent.as_deref(), reader, Some(diff_id)).map_err(
                |source| RegistryError::Unpack {
                    reference: reference.to_string(),
                    layer: layer.digest().clone(),
                    source: Box::new(source),
                },
            )?;
        }
        label_layer(snapshotter, store, &name, layer, diff_id)?;
        parent = Some(name);
    }
    Ok(parent)
}

/// [`pull_image`] then [`unpack_pulled`]: blocks the calling thread while unpacking, so call it from a
/// blocking thread (`Handle::block_on`) or accept that one runtime worker is busy meanwhile.
pub async fn unpack_image(
    client: &Client,
    store: &ImageStore,
    snapshotter: &dyn Snapshotter,
    reference: &str,
    platform: &Platform,
    pull: bool,
    status: &(dyn Fn(u64, Option<u64>) + Sync),
) -> Result<Option<String>, RegistryError> {
    let pulled = pull_image(client, store, snapshotter, reference, platform, pull, status).await?;
    unpack_pulled(store, snapshotter, &pulled)
}

/// The config's diffIDs are [`llb::Digest`]s (always sha256); the content store speaks oci-spec's.
pub(crate) fn oci_digest(d: &llb::Digest) -> Digest {
    d.to_string().parse().unwrap_or_else(|e| unreachable!("a sha256 digest always parses: {e}"))
}

fn snapshot_exists(s: &dyn Snapshotter, name: &str) -> Result<bool, RegistryError> {
    match s.stat(name) {
        Ok(_) => Ok(true),
        Err(SnapshotError::NotFound(_)) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Sets [`LAYER_LABEL`] unless the snapshot already names a blob that is in the store (the same layer
/// may come compressed differently in another image; the first blob stays the one exported).
fn label_layer(
    s: &dyn Snapshotter,
    store: &ImageStore,
    name: &str,
    layer: &Descriptor,
    diff_id: &Digest,
) -> Result<(), RegistryError> {
    let info = s.stat(name)?;
    if let Some(old) = info.labels.get(LAYER_LABEL).and_then(|j| serde_json::from_str::<Layer>(j).ok()) {
        if old.diff_id == *diff_id && store.has_blob(&old.digest)? {
            return Ok(());
        }
    }
    if !store.has_blob(layer.digest())? {
        return Ok(());
    }
    let value = Layer {
        digest: layer.digest().clone(),
        size: layer.size(),
        diff_id: diff_id.clone(),
        media_type: layer.media_type().to_string(),
    };
    let json = serde_json::to_string(&value).map_err(|e| RegistryError::Protocol(e.to_string()))?;
    s.set_label(name, LAYER_LABEL, Some(&json))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_follow_the_image_spec() {
        let a: Digest = format!("sha256:{}", "a".repeat(64)).parse().unwrap();
        let b: Digest = format!("sha256:{}", "b".repeat(64)).parse().unwrap();
        let c = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(c[0], a);
        assert_eq!(c[1], snapshotter::digest::of_bytes(format!("{a} {b}").as_bytes()));
        assert!(chain_ids(&[]).is_empty());
    }
}
