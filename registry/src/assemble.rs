//! The build's image exporter: a snapshot chain and the frontend's image config become a manifest, a
//! config and layer blobs in the content store.
//!
//! Snapshots unpacked from a base image carry [`LAYER_LABEL`] and are exported as that very blob (so a
//! push mounts or skips it); the others are diffed once by [`Differ`] (memoised per compression and
//! epoch). History and layers are reconciled exactly as BuildKit's exporter does
//! (`exporter/containerimage/writer.go`: `normalizeLayersAndHistory`, `patchImageConfig`): entries
//! marked `empty_layer` own no layer, an empty diff is still a layer, missing entries are added for
//! unaccounted layers, missing times are filled from the layer and then from neighbours, and
//! SOURCE_DATE_EPOCH clamps every time after the base image's history.

use oci_spec::image::{Descriptor, Digest, MediaType};
use serde::Serialize;
use serde_json::{json, Map, Value};
use snapshotter::diff::{Compression, DiffOptions, Differ, Layer};
use snapshotter::meta::MetaDb;
use snapshotter::snapshot::Snapshotter;
use snapshotter::LAYER_LABEL;

use crate::error::RegistryError;
use crate::manifest::media;
use crate::store::ImageStore;
use llb::image::{parse_rfc3339, rfc3339, History, Image};

/// How to write the image.
#[derive(Debug, Clone, PartialEq)]
pub struct AssembleOptions {
    /// Compression of layers that have to be diffed (base-image layers keep theirs).
    pub compression: Compression,
    /// SOURCE_DATE_EPOCH: clamps layer entry times, history and `created`, for bit-for-bit rebuilds.
    pub source_date_epoch: Option<i64>,
    /// OCI media types (true) or Docker v2 schema2 ones.
    pub oci: bool,
    /// The base image's history: its leading entries keep their times under an epoch (BuildKit
    /// moby/buildkit#4614). Empty for `FROM scratch`.
    pub base_history: Vec<History>,
}

impl Default for AssembleOptions {
    fn default() -> Self {
        AssembleOptions { compression: Compression::Gzip, source_date_epoch: None, oci: true, base_history: Vec::new() }
    }
}

/// What [`assemble_image`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct Assembled {
    pub manifest: Descriptor,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

/// One layer of a snapshot chain as it is exported: the blob (the one the snapshot was unpacked from, else
/// diffed once and remembered per compression) and when the snapshot was made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainLayer {
    /// The snapshot.
    pub snapshot: String,
    pub layer: Layer,
    /// Unix seconds.
    pub created_at: u64,
}

/// The layers of the snapshot chain ending at `top`, base first (empty for `None`).
pub fn chain_layers(
    store: &ImageStore,
    snapshotter: &dyn Snapshotter,
    meta: &MetaDb,
    top: Option<&str>,
    compression: Compression,
    source_date_epoch: Option<i64>,
) -> Result<Vec<ChainLayer>, RegistryError> {
    let differ = Differ { snapshotter, content: store.content(), meta };
    let diff_opts = DiffOptions { compression, source_date_epoch: source_date_epoch.map(|e| e.max(0) as u64) };
    let mut chain = Vec::new();
    for info in chain_of(snapshotter, top)? {
        let layer = match labelled_layer(store, &info)? {
            Some(l) => l,
            None => differ.layer(&info.name, diff_opts)?,
        };
        chain.push(ChainLayer { snapshot: info.name.clone(), layer, created_at: info.created_at });
    }
    Ok(chain)
}

/// A layer of [`stored_chain`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoredLayer {
    /// In the store as it is exported: with the compression asked for, or a base image's layer.
    Ready(ChainLayer),
    /// In the store uncompressed, to be compressed on its way out
    /// ([`crate::export::ArchiveFile::compress_layer`]).
    Uncompressed(ChainLayer),
}

/// The chain [`chain_layers`] would give with `compression` when no layer has to be diffed: each one is in
/// the store with that compression, uncompressed (an image built with `-t`), or as a base image's layer.
/// `None` when some layer is in none of these forms.
pub fn stored_chain(
    store: &ImageStore,
    snapshotter: &dyn Snapshotter,
    meta: &MetaDb,
    top: Option<&str>,
    compression: Compression,
    source_date_epoch: Option<i64>,
) -> Result<Option<Vec<StoredLayer>>, RegistryError> {
    let differ = Differ { snapshotter, content: store.content(), meta };
    let opts = DiffOptions { compression, source_date_epoch: source_date_epoch.map(|e| e.max(0) as u64) };
    let plain = DiffOptions { compression: Compression::None, ..opts };
    let mut chain = Vec::new();
    for info in chain_of(snapshotter, top)? {
        let at = |layer| ChainLayer { snapshot: info.name.clone(), layer, created_at: info.created_at };
        let layer = if let Some(l) = labelled_layer(store, &info)? {
            StoredLayer::Ready(at(l))
        } else if let Some(l) = differ.stored(&info.name, opts)? {
            StoredLayer::Ready(at(l))
        } else if let Some(p) = differ.stored(&info.name, plain)? {
            match snapshotter::diff::stored_variant(store.content(), meta, &p.digest, compression)? {
                Some(l) => StoredLayer::Ready(at(l)),
                None => StoredLayer::Uncompressed(at(p)),
            }
        } else {
            return Ok(None);
        };
        chain.push(layer);
    }
    Ok(Some(chain))
}

/// The snapshots from the base to `top`.
fn chain_of(
    snapshotter: &dyn Snapshotter,
    top: Option<&str>,
) -> Result<Vec<snapshotter::snapshot::Info>, RegistryError> {
    let mut out = Vec::new();
    let mut next = top.map(str::to_string);
    while let Some(name) = next {
        let info = snapshotter.stat(&name)?;
        next = info.parent.clone();
        out.push(info);
    }
    out.reverse();
    Ok(out)
}

/// The blob a snapshot was unpacked from, when the label names one that is still in the store.
fn labelled_layer(store: &ImageStore, info: &snapshotter::snapshot::Info) -> Result<Option<Layer>, RegistryError> {
    let Some(l) = info.labels.get(LAYER_LABEL).and_then(|j| serde_json::from_str::<Layer>(j).ok()) else {
        return Ok(None);
    };
    Ok(store.has_blob(&l.digest)?.then_some(l))
}

/// BuildKit's `ConvertAllLayerMediaTypes`: layer types follow the manifest's family. zstd has no Docker
/// type and stays OCI.
pub fn convert_layer_media_type(m: &str, oci: bool) -> String {
    let out = if oci {
        match m {
            media::DOCKER_LAYER_GZIP => media::OCI_LAYER_GZIP,
            media::DOCKER_LAYER => media::OCI_LAYER,
            media::DOCKER_FOREIGN_LAYER => media::OCI_NONDISTRIBUTABLE_GZIP,
            other => other,
        }
    } else {
        match m {
            media::OCI_LAYER_GZIP => media::DOCKER_LAYER_GZIP,
            media::OCI_LAYER => media::DOCKER_LAYER,
            media::OCI_NONDISTRIBUTABLE_GZIP => media::DOCKER_FOREIGN_LAYER,
            other => other,
        }
    };
    out.to_string()
}

/// Reconciles history with the layers (BuildKit's `normalizeLayersAndHistory`).
pub fn normalize_history(mut history: Vec<History>, layer_times: &[Option<String>]) -> Vec<History> {
    let n = layer_times.len();
    let history_layers = history.iter().filter(|h| !h.empty_layer).count();
    if history_layers > n {
        // More non-empty entries than layers: the surplus ones, from the bottom, become empty.
        let mut count = 0;
        for h in &mut history {
            if count >= n {
                h.empty_layer = true;
            }
            if !h.empty_layer {
                count += 1;
            }
        }
    }
    if n > history_layers {
        for t in &layer_times[history_layers..] {
            history.push(History {
                created: t.clone(),
                created_by: Some("created by buildkit".to_string()),
                comment: Some("buildkit.exporter.image.v0".to_string()),
                ..History::default()
            });
        }
    }
    let mut layer_index = 0;
    for h in &mut history {
        if !h.empty_layer {
            if h.created.is_none() {
                h.created = layer_times.get(layer_index).cloned().flatten();
            }
            layer_index += 1;
        }
    }
    // The first time after an entry without one (else the last time): a metadata step at the start
    // must not take a base layer's time.
    let mut created: Option<String> = None;
    let mut missing = false;
    for h in &history {
        if h.created.is_some() {
            created = h.created.clone();
            if missing {
                break;
            }
        } else {
            missing = true;
        }
    }
    missing = false;
    for h in &mut history {
        if h.created.is_some() {
            if missing {
                created = h.created.clone();
            }
        } else {
            missing = true;
            h.created = created.clone();
        }
    }
    history
}

fn after(t: &str, epoch: i64) -> bool {
    parse_rfc3339(t).is_some_and(|(secs, nanos)| secs > epoch || (secs == epoch && nanos > 0))
}

/// BuildKit's `patchImageConfig`: diff_ids, history clamped to the epoch past the base's history,
/// `created` clamped, or taken from the last history entry when unset.
fn patch_config(image: &Image, diff_ids: Vec<llb::Digest>, mut history: Vec<History>, opts: &AssembleOptions) -> Image {
    let mut img = image.clone();
    img.rootfs.kind = "layers".to_string();
    img.rootfs.diff_ids = diff_ids;
    if let Some(epoch) = opts.source_date_epoch {
        let stamp = rfc3339(epoch);
        let mut diverged = false;
        for (i, h) in history.iter_mut().enumerate() {
            if !diverged && opts.base_history.get(i) == Some(h) {
                continue;
            }
            diverged = true;
            if h.created.as_deref().is_none_or(|t| after(t, epoch)) {
                h.created = Some(stamp.clone());
            }
        }
        if img.created.as_deref().is_some_and(|t| after(t, epoch)) {
            img.created = Some(stamp);
        }
    }
    if img.created.is_none() {
        img.created = history.iter().rev().find_map(|h| h.created.clone());
    }
    img.history = history;
    img
}

/// Go's `json.Marshal` of a map: keys sorted. BuildKit patches the config through one.
fn sorted_json(image: &Image) -> Result<Vec<u8>, RegistryError> {
    let v = serde_json::to_value(image).map_err(|e| RegistryError::Protocol(format!("image config: {e}")))?;
    let Value::Object(m) = v else { return Ok(image.to_json()) };
    let mut keys: Vec<&String> = m.keys().collect();
    keys.sort();
    let mut sorted = Map::new();
    for k in keys {
        sorted.insert(k.clone(), m[k].clone());
    }
    serde_json::to_vec(&Value::Object(sorted)).map_err(|e| RegistryError::Protocol(format!("image config: {e}")))
}

/// `json.MarshalIndent(v, "", "  ")`, as BuildKit v0.24 writes manifests and indexes (exporter/containerimage's
/// writer; older BuildKit indented with three spaces).
pub(crate) fn indented(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    let mut ser =
        serde_json::Serializer::with_formatter(&mut out, serde_json::ser::PrettyFormatter::with_indent(b"  "));
    v.serialize(&mut ser).unwrap_or_else(|e| unreachable!("a json value always serialises: {e}"));
    out
}

pub(crate) fn descriptor_json(media_type: &str, digest: &Digest, size: u64) -> Value {
    json!({ "mediaType": media_type, "digest": digest.to_string(), "size": size })
}

/// Writes the image of the snapshot chain ending at `top` (`None`: no layers) with `image`'s config
/// into the store: layer blobs (reused or diffed), config, manifest. Nothing is named; tag the
/// returned manifest with [`ImageStore::tag`] or export it.
pub fn assemble_image(
    store: &ImageStore,
    snapshotter: &dyn Snapshotter,
    meta: &MetaDb,
    top: Option<&str>,
    image: &Image,
    opts: &AssembleOptions,
) -> Result<Assembled, RegistryError> {
    let chain = chain_layers(store, snapshotter, meta, top, opts.compression, opts.source_date_epoch)?;
    assemble_chain(store, &chain, image, opts)
}

/// Writes the image of `chain` (layers base first, which need not be in the store: a push mounts them from
/// where they are) with `image`'s config: config and manifest. Nothing is named.
pub fn assemble_chain(
    store: &ImageStore,
    chain: &[ChainLayer],
    image: &Image,
    opts: &AssembleOptions,
) -> Result<Assembled, RegistryError> {
    let layer_times: Vec<Option<String>> = chain.iter().map(|c| Some(rfc3339(c.created_at as i64))).collect();
    let history = normalize_history(image.history.clone(), &layer_times);
    let diff_ids = chain
        .iter()
        .map(|c| c.layer.diff_id.to_string().parse::<llb::Digest>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| RegistryError::Protocol(format!("layer diffID is not sha256: {e}")))?;
    let config = patch_config(image, diff_ids, history, opts);
    if config.os.is_empty() || config.architecture.is_empty() {
        return Err(RegistryError::Protocol("invalid image config for export: missing os or architecture".to_string()));
    }
    let config_bytes = sorted_json(&config)?;
    let (manifest_type, config_type) = if opts.oci {
        (media::OCI_MANIFEST, media::OCI_CONFIG)
    } else {
        (media::DOCKER_MANIFEST, media::DOCKER_CONFIG)
    };
    let config_digest = store.write_bytes(&config_bytes, config_type)?;
    let config_desc = Descriptor::new(MediaType::from(config_type), config_bytes.len() as u64, config_digest);

    let layers: Vec<Descriptor> = chain
        .iter()
        .map(|c| {
            let mt = convert_layer_media_type(&c.layer.media_type, opts.oci);
            Descriptor::new(MediaType::from(mt.as_str()), c.layer.size, c.layer.digest.clone())
        })
        .collect();
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": manifest_type,
        "config": descriptor_json(config_type, config_desc.digest(), config_desc.size()),
        "layers": layers
            .iter()
            .map(|d| descriptor_json(d.media_type().as_ref(), d.digest(), d.size()))
            .collect::<Vec<_>>(),
    });
    let manifest_bytes = indented(&manifest);
    let manifest_digest = store.write_bytes(&manifest_bytes, manifest_type)?;
    Ok(Assembled {
        manifest: Descriptor::new(MediaType::from(manifest_type), manifest_bytes.len() as u64, manifest_digest),
        config: config_desc,
        layers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(by: &str, created: Option<&str>, empty: bool) -> History {
        History {
            created: created.map(str::to_string),
            created_by: Some(by.to_string()),
            empty_layer: empty,
            ..History::default()
        }
    }

    #[test]
    fn history_gets_entries_for_unaccounted_layers_and_times_from_layers() {
        let t = |s: &str| Some(s.to_string());
        let out = normalize_history(
            vec![h("ENV a=b", None, true), h("RUN x", None, false)],
            &[t("2024-01-01T00:00:00Z"), t("2024-01-02T00:00:00Z")],
        );
        assert_eq!(out.len(), 3);
        // ENV takes the first later time, the RUN its layer's, the added entry its layer's.
        assert_eq!(out[0].created.as_deref(), Some("2024-01-01T00:00:00Z"));
        assert_eq!(out[1].created.as_deref(), Some("2024-01-01T00:00:00Z"));
        assert_eq!(out[2].comment.as_deref(), Some("buildkit.exporter.image.v0"));
        assert_eq!(out[2].created.as_deref(), Some("2024-01-02T00:00:00Z"));
    }

    #[test]
    fn surplus_history_layers_become_empty_from_the_bottom() {
        let out = normalize_history(
            vec![h("a", Some("2020-01-01T00:00:00Z"), false), h("b", Some("2020-01-01T00:00:00Z"), false)],
            &[Some("2024-01-01T00:00:00Z".to_string())],
        );
        assert!(!out[0].empty_layer);
        assert!(out[1].empty_layer);
    }

    #[test]
    fn epoch_clamps_after_the_base_history() {
        let base = vec![h("base", Some("2030-01-01T00:00:00Z"), false)];
        let img = Image {
            created: Some("2031-01-01T00:00:00.5Z".into()),
            os: "linux".into(),
            architecture: "amd64".into(),
            ..Image::default()
        };
        let opts = AssembleOptions { source_date_epoch: Some(0), base_history: base.clone(), ..Default::default() };
        let hist = vec![
            base[0].clone(),
            h("RUN x", Some("2031-01-01T00:00:00Z"), false),
            h("old", Some("1960-01-01T00:00:00Z"), true),
        ];
        let out = patch_config(&img, vec![], hist, &opts);
        assert_eq!(out.history[0].created.as_deref(), Some("2030-01-01T00:00:00Z"));
        assert_eq!(out.history[1].created.as_deref(), Some("1970-01-01T00:00:00Z"));
        assert_eq!(out.history[2].created.as_deref(), Some("1960-01-01T00:00:00Z"));
        assert_eq!(out.created.as_deref(), Some("1970-01-01T00:00:00Z"));
    }

    #[test]
    fn media_types_follow_the_manifest_family() {
        assert_eq!(convert_layer_media_type(media::OCI_LAYER_GZIP, false), media::DOCKER_LAYER_GZIP);
        assert_eq!(convert_layer_media_type(media::DOCKER_LAYER_GZIP, true), media::OCI_LAYER_GZIP);
        assert_eq!(convert_layer_media_type(media::OCI_LAYER_ZSTD, false), media::OCI_LAYER_ZSTD);
    }
}
