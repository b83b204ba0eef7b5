//! Attestations attached to an image as BuildKit attaches them (docs/attestations/attestation-storage.md):
//! an OCI index whose first entry is the image and whose second is an attestation manifest, a manifest
//! whose layers are in-toto statements (`application/vnd.in-toto+json`, annotated with their predicate
//! type), with platform `unknown/unknown` and the annotations `vnd.docker.reference.type =
//! attestation-manifest` and `vnd.docker.reference.digest = <the image manifest's digest>`.
//!
//! `--annotation` values land here too: on the image manifest (`manifest:`), the index (`index:`), or the
//! index's descriptor of the image (`manifest-descriptor:`), as buildx places them.

use std::collections::BTreeMap;

use oci_spec::image::{Descriptor, MediaType};
use serde_json::{json, Value};

use crate::assemble::{descriptor_json, indented, Assembled};
use crate::error::RegistryError;
use crate::manifest::media;
use crate::store::ImageStore;

/// The media type of an in-toto statement layer.
pub const IN_TOTO: &str = "application/vnd.in-toto+json";
/// The layer annotation naming a statement's predicate type.
pub const PREDICATE_TYPE: &str = "in-toto.io/predicate-type";

/// One in-toto statement to attach.
#[derive(Debug, Clone, PartialEq)]
pub struct Statement {
    /// `https://slsa.dev/provenance/v1`, `https://spdx.dev/Document`.
    pub predicate_type: String,
    /// The statement JSON (subject, predicate), exactly as stored.
    pub bytes: Vec<u8>,
}

/// Where `--annotation` values go.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Annotations {
    pub manifest: BTreeMap<String, String>,
    pub index: BTreeMap<String, String>,
    pub manifest_descriptor: BTreeMap<String, String>,
}

/// What [`attach`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct Attached {
    /// The index (the image, then its attestation manifest).
    pub index: Descriptor,
    /// The image manifest (rewritten when it got annotations).
    pub manifest: Descriptor,
    /// The attestation manifest, when there were statements.
    pub attestation: Option<Descriptor>,
}

fn descriptor(media_type: &str, bytes: &[u8], digest: oci_spec::image::Digest) -> Descriptor {
    Descriptor::new(MediaType::from(media_type), bytes.len() as u64, digest)
}

/// Writes an image manifest with `annotations` added (the original when there are none).
pub fn annotate_manifest(
    store: &ImageStore,
    manifest: &Descriptor,
    annotations: &BTreeMap<String, String>,
) -> Result<Descriptor, RegistryError> {
    if annotations.is_empty() {
        return Ok(manifest.clone());
    }
    let raw = store.read_manifest(manifest)?;
    let mut v: Value = serde_json::from_slice(&raw.bytes)
        .map_err(|e| RegistryError::Protocol(format!("image manifest {}: {e}", manifest.digest())))?;
    let obj = v.as_object_mut().ok_or_else(|| RegistryError::Protocol("image manifest is not an object".into()))?;
    let entry = obj.entry("annotations").or_insert_with(|| json!({}));
    for (k, val) in annotations {
        entry[k] = json!(val);
    }
    let bytes = indented(&v);
    let mt = manifest.media_type().to_string();
    let digest = store.write_bytes(&bytes, &mt)?;
    Ok(descriptor(&mt, &bytes, digest))
}

/// Writes the attestation manifest for `statements` about `image`, and the index holding both. The image
/// must use OCI media types (an OCI index names it).
pub fn attach(
    store: &ImageStore,
    image: &Assembled,
    platform: (&str, &str, Option<&str>),
    statements: &[Statement],
    annotations: &Annotations,
) -> Result<Attached, RegistryError> {
    let e = entries(store, image, platform, statements, annotations)?;
    let index = write_index(store, std::slice::from_ref(&e), &annotations.index, true)?;
    Ok(Attached { index, manifest: e.manifest, attestation: e.attestation })
}

/// One platform's image in an index, and its attestation manifest when it has statements.
#[derive(Debug, Clone, PartialEq)]
pub struct Entries {
    image: Value,
    attestation_entry: Option<Value>,
    /// The image manifest (rewritten when it got annotations).
    pub manifest: Descriptor,
    /// The attestation manifest, when there were statements.
    pub attestation: Option<Descriptor>,
}

/// Writes what `image` needs to be an entry of an index for `platform`: its manifest with the
/// `manifest:` annotations, and an attestation manifest for `statements` (none without statements).
pub fn entries(
    store: &ImageStore,
    image: &Assembled,
    platform: (&str, &str, Option<&str>),
    statements: &[Statement],
    annotations: &Annotations,
) -> Result<Entries, RegistryError> {
    let manifest = annotate_manifest(store, &image.manifest, &annotations.manifest)?;
    let mut platform_json = json!({"architecture": platform.1, "os": platform.0});
    if let Some(v) = platform.2 {
        platform_json["variant"] = json!(v);
    }
    let mut image_entry = descriptor_json(manifest.media_type().as_ref(), manifest.digest(), manifest.size());
    image_entry["platform"] = platform_json;
    if !annotations.manifest_descriptor.is_empty() {
        image_entry["annotations"] = json!(annotations.manifest_descriptor);
    }

    let mut attestation = None;
    let mut attestation_entry = None;
    if !statements.is_empty() {
        let mut layers = Vec::new();
        let mut diff_ids = Vec::new();
        for s in statements {
            let d = store.write_bytes(&s.bytes, IN_TOTO)?;
            let mut l = descriptor_json(IN_TOTO, &d, s.bytes.len() as u64);
            l["annotations"] = json!({ PREDICATE_TYPE: s.predicate_type });
            layers.push(l);
            diff_ids.push(d.to_string());
        }
        // BuildKit's attestation config: an unknown platform and the statements as "layers".
        let config = serde_json::to_vec(&json!({
            "architecture": "unknown",
            "os": "unknown",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }))
        .map_err(|e| RegistryError::Protocol(format!("attestation config: {e}")))?;
        let config_digest = store.write_bytes(&config, media::OCI_CONFIG)?;
        let m = json!({
            "schemaVersion": 2,
            "mediaType": media::OCI_MANIFEST,
            "config": descriptor_json(media::OCI_CONFIG, &config_digest, config.len() as u64),
            "layers": layers,
        });
        let bytes = indented(&m);
        let digest = store.write_bytes(&bytes, media::OCI_MANIFEST)?;
        let desc = descriptor(media::OCI_MANIFEST, &bytes, digest);
        let mut entry = descriptor_json(media::OCI_MANIFEST, desc.digest(), desc.size());
        entry["annotations"] = json!({
            "vnd.docker.reference.digest": manifest.digest().to_string(),
            "vnd.docker.reference.type": "attestation-manifest",
        });
        entry["platform"] = json!({"architecture": "unknown", "os": "unknown"});
        attestation_entry = Some(entry);
        attestation = Some(desc);
    }
    Ok(Entries { image: image_entry, attestation_entry, manifest, attestation })
}

/// Writes the index of `images` (one per platform), as BuildKit orders it: every platform's image first,
/// then their attestation manifests. An OCI index, or a Docker manifest list when `oci` is false (which
/// cannot hold attestation manifests: those need OCI media types).
pub fn write_index(
    store: &ImageStore,
    images: &[Entries],
    annotations: &BTreeMap<String, String>,
    oci: bool,
) -> Result<Descriptor, RegistryError> {
    let mut manifests: Vec<Value> = images.iter().map(|e| e.image.clone()).collect();
    manifests.extend(images.iter().filter_map(|e| e.attestation_entry.clone()));
    let media_type = if oci { media::OCI_INDEX } else { media::DOCKER_MANIFEST_LIST };
    let mut index = json!({
        "schemaVersion": 2,
        "mediaType": media_type,
        "manifests": manifests,
    });
    if !annotations.is_empty() {
        index["annotations"] = json!(annotations);
    }
    let bytes = indented(&index);
    let digest = store.write_bytes(&bytes, media_type)?;
    Ok(descriptor(media_type, &bytes, digest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use snapshotter::content::LocalStore;
    use snapshotter::meta::MetaDb;
    use std::sync::Arc;

    fn store() -> (tempfile::TempDir, ImageStore) {
        let dir = tempfile::tempdir().unwrap();
        let content = LocalStore::open(dir.path().join("content")).unwrap();
        let meta = Arc::new(MetaDb::open(dir.path().join("meta.redb")).unwrap());
        (dir, ImageStore::new(content, meta))
    }

    /// A stand-in image: a manifest blob (the index only names it).
    fn image(store: &ImageStore, n: u8, media_type: &str) -> Assembled {
        let bytes = format!(r#"{{"schemaVersion":2,"mediaType":"{media_type}","n":{n}}}"#).into_bytes();
        let d = store.write_bytes(&bytes, media_type).unwrap();
        let manifest = descriptor(media_type, &bytes, d);
        Assembled { manifest: manifest.clone(), config: manifest, layers: Vec::new() }
    }

    fn statement() -> Statement {
        Statement { predicate_type: "https://slsa.dev/provenance/v1".into(), bytes: br#"{"_type":"x"}"#.to_vec() }
    }

    #[test]
    fn an_index_lists_every_platform_then_their_attestations() {
        let (_d, s) = store();
        let none = Annotations::default();
        let amd =
            entries(&s, &image(&s, 1, media::OCI_MANIFEST), ("linux", "amd64", None), &[statement()], &none).unwrap();
        let arm = entries(&s, &image(&s, 2, media::OCI_MANIFEST), ("linux", "arm", Some("v7")), &[statement()], &none)
            .unwrap();
        let index = write_index(&s, &[amd.clone(), arm.clone()], &BTreeMap::new(), true).unwrap();
        assert_eq!(index.media_type().to_string(), media::OCI_INDEX);
        let v: Value = serde_json::from_slice(&s.read_blob(index.digest()).unwrap()).unwrap();
        let m = v["manifests"].as_array().unwrap();
        let platforms: Vec<String> = m
            .iter()
            .map(|e| {
                let p = &e["platform"];
                format!(
                    "{}/{}{}",
                    p["os"].as_str().unwrap(),
                    p["architecture"].as_str().unwrap(),
                    p["variant"].as_str().map(|v| format!("/{v}")).unwrap_or_default()
                )
            })
            .collect();
        assert_eq!(platforms, ["linux/amd64", "linux/arm/v7", "unknown/unknown", "unknown/unknown"]);
        assert_eq!(m[2]["annotations"]["vnd.docker.reference.digest"], amd.manifest.digest().to_string());
        assert_eq!(m[3]["annotations"]["vnd.docker.reference.digest"], arm.manifest.digest().to_string());
        assert_eq!(m[3]["digest"], arm.attestation.unwrap().digest().to_string());
    }

    #[test]
    fn without_oci_media_types_the_index_is_a_docker_manifest_list() {
        let (_d, s) = store();
        let none = Annotations::default();
        let images: Vec<Entries> = [(1, "amd64"), (2, "arm64")]
            .iter()
            .map(|(n, arch)| {
                entries(&s, &image(&s, *n, media::DOCKER_MANIFEST), ("linux", arch, None), &[], &none).unwrap()
            })
            .collect();
        let index = write_index(&s, &images, &BTreeMap::new(), false).unwrap();
        let v: Value = serde_json::from_slice(&s.read_blob(index.digest()).unwrap()).unwrap();
        assert_eq!(v["mediaType"], media::DOCKER_MANIFEST_LIST);
        assert_eq!(index.media_type().to_string(), media::DOCKER_MANIFEST_LIST);
        let m = v["manifests"].as_array().unwrap();
        assert_eq!(m.len(), 2, "no attestation without statements");
        assert!(m.iter().all(|e| e["mediaType"] == media::DOCKER_MANIFEST));
        // The same images give the same index bytes.
        assert_eq!(write_index(&s, &images, &BTreeMap::new(), false).unwrap(), index);
    }
}
