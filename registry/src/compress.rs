//! Distributable images: the local image store keeps the layers of images it built uncompressed (a
//! rebuild never recompresses a changed layer it may never push, as Docker's graph driver), so a push
//! or an export first writes the image with compressed layers. Each layer is compressed once per
//! compression ([`snapshotter::diff::compress_blob`] remembers it by the blob's digest); the config, and
//! so the image ID, stays the same. An image assembled with compressed layers from the start comes out
//! bit for bit identical, manifest included.

use oci_spec::image::{Descriptor, MediaType};
use serde_json::Value;
use snapshotter::diff::{compress_blob, Compression};

use crate::assemble::{descriptor_json, indented};
use crate::error::RegistryError;
use crate::manifest::{media, Parsed};
use crate::store::ImageStore;

/// The compressed media type for an uncompressed layer type, `None` for any other type.
fn compressed_type(m: &str, compression: Compression) -> Option<&'static str> {
    match (m, compression) {
        (media::OCI_LAYER, Compression::Gzip) | (media::DOCKER_LAYER, Compression::Gzip) => {
            Some(if m == media::OCI_LAYER { media::OCI_LAYER_GZIP } else { media::DOCKER_LAYER_GZIP })
        }
        // zstd has no Docker type: the layer becomes OCI's, as BuildKit's exporter does.
        (media::OCI_LAYER, Compression::Zstd) | (media::DOCKER_LAYER, Compression::Zstd) => Some(media::OCI_LAYER_ZSTD),
        _ => None,
    }
}

/// `target` (a manifest or an index in `store`) with its uncompressed layers compressed with
/// `compression`; `target` itself when it has none (or `compression` is none). Blocking.
pub fn distributable(
    store: &ImageStore,
    target: &Descriptor,
    compression: Compression,
) -> Result<Descriptor, RegistryError> {
    if compression == Compression::None {
        return Ok(target.clone());
    }
    let raw = store.read_manifest(target)?;
    let mut doc: Value = serde_json::from_slice(&raw.bytes)
        .map_err(|e| RegistryError::Protocol(format!("manifest {}: {e}", target.digest())))?;
    let mut changed = false;
    match raw.parse()? {
        Parsed::Index(ix) => {
            for (i, child) in ix.manifests().iter().enumerate() {
                if !media::is_manifest(child.media_type().as_ref()) || !store.has_blob(child.digest())? {
                    continue;
                }
                let converted = distributable(store, child, compression)?;
                if converted.digest() != child.digest() {
                    let entry = &mut doc["manifests"][i];
                    entry["digest"] = Value::String(converted.digest().to_string());
                    entry["size"] = Value::from(converted.size());
                    changed = true;
                }
            }
        }
        Parsed::Manifest(m) => {
            for (i, layer) in m.layers().iter().enumerate() {
                let Some(mt) = compressed_type(layer.media_type().as_ref(), compression) else { continue };
                let c = compress_blob(store.content(), store.meta(), layer.digest(), layer.size(), compression)?;
                doc["layers"][i] = descriptor_json(mt, &c.digest, c.size);
                changed = true;
            }
        }
    }
    if !changed {
        return Ok(target.clone());
    }
    let bytes = indented(&doc);
    let digest = store.write_bytes(&bytes, &raw.media_type)?;
    Ok(Descriptor::new(MediaType::from(raw.media_type.as_str()), bytes.len() as u64, digest))
}
