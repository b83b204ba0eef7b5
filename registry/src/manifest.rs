//! Manifests and indexes as pulled: the raw bytes are kept and hashed (never a re-serialisation), the
//! parsed form comes from oci-spec. Both media-type families are accepted: OCI and Docker v2 schema2.

use oci_spec::image::{Descriptor, Digest, ImageIndex, ImageManifest, MediaType};

use llb::Platform;

/// Media types of the Docker v2 schema2 family and the OCI ones spelled out as strings.
pub mod media {
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
    pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
    pub const OCI_NONDISTRIBUTABLE_GZIP: &str = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";
    pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
    pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
    pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
    pub const DOCKER_FOREIGN_LAYER: &str = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";

    /// Every manifest and index type, for the `Accept` header (most preferred first).
    pub const ACCEPT_MANIFESTS: [&str; 4] = [OCI_INDEX, DOCKER_MANIFEST_LIST, OCI_MANIFEST, DOCKER_MANIFEST];

    pub fn is_index(m: &str) -> bool {
        m == OCI_INDEX || m == DOCKER_MANIFEST_LIST
    }

    pub fn is_manifest(m: &str) -> bool {
        m == OCI_MANIFEST || m == DOCKER_MANIFEST
    }

    /// Foreign (Windows base) and OCI non-distributable layers: referenced, never pushed or pulled
    /// unless they carry URLs; they are passed through untouched.
    pub fn is_non_distributable(m: &str) -> bool {
        m == DOCKER_FOREIGN_LAYER || m.contains(".nondistributable.") || m.contains(".foreign.")
    }
}

/// [`select_platform`], or an error naming the index (`index_digest`) and the platforms it has.
pub fn require_platform<'a>(
    index: &'a ImageIndex,
    wanted: &Platform,
    index_digest: &Digest,
) -> Result<&'a Descriptor, ManifestError> {
    select_platform(index, wanted).ok_or_else(|| ManifestError::NoPlatform {
        wanted: wanted.to_string(),
        digest: index_digest.clone(),
        available: platforms_of(index),
    })
}

/// The errors of reading manifests.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("unsupported manifest media type {0:?} (expected an OCI or Docker v2 schema2 manifest or index)")]
    MediaType(String),
    #[error("invalid {media_type} {digest}: {source}")]
    Parse { media_type: String, digest: Digest, source: serde_json::Error },
    #[error("no manifest for platform {wanted} in index {digest} (it has: {available})")]
    NoPlatform { wanted: String, digest: Digest, available: String },
}

/// A manifest or index with the bytes it was fetched as.
#[derive(Debug, Clone, PartialEq)]
pub struct RawManifest {
    pub media_type: String,
    pub bytes: Vec<u8>,
    pub digest: Digest,
}

/// What a manifest-typed blob is.
#[derive(Debug, Clone, PartialEq)]
pub enum Parsed {
    Manifest(Box<ImageManifest>),
    Index(Box<ImageIndex>),
}

impl RawManifest {
    /// Wraps `bytes`; the media type comes from the `Content-Type`/descriptor, or from the JSON's own
    /// `mediaType` field when the registry sent none useful.
    pub fn new(media_type: Option<&str>, bytes: Vec<u8>) -> RawManifest {
        let digest = snapshotter::digest::of_bytes(&bytes);
        let declared = media_type.map(|m| m.split(';').next().unwrap_or(m).trim().to_string());
        let media_type = match declared {
            Some(m) if media::is_index(&m) || media::is_manifest(&m) => m,
            _ => sniff_media_type(&bytes).unwrap_or_else(|| declared_or_empty(media_type)),
        };
        RawManifest { media_type, bytes, digest }
    }

    pub fn is_index(&self) -> bool {
        media::is_index(&self.media_type)
    }

    pub fn parse(&self) -> Result<Parsed, ManifestError> {
        let err =
            |source| ManifestError::Parse { media_type: self.media_type.clone(), digest: self.digest.clone(), source };
        if media::is_index(&self.media_type) {
            Ok(Parsed::Index(serde_json::from_slice(&self.bytes).map_err(err)?))
        } else if media::is_manifest(&self.media_type) {
            Ok(Parsed::Manifest(serde_json::from_slice(&self.bytes).map_err(err)?))
        } else {
            Err(ManifestError::MediaType(self.media_type.clone()))
        }
    }

    pub fn manifest(&self) -> Result<ImageManifest, ManifestError> {
        match self.parse()? {
            Parsed::Manifest(m) => Ok(*m),
            Parsed::Index(_) => Err(ManifestError::MediaType(self.media_type.clone())),
        }
    }

    /// The descriptor that points at these bytes.
    pub fn descriptor(&self) -> Descriptor {
        Descriptor::new(MediaType::from(self.media_type.as_str()), self.bytes.len() as u64, self.digest.clone())
    }
}

fn declared_or_empty(m: Option<&str>) -> String {
    m.unwrap_or_default().to_string()
}

/// The `mediaType` field of a manifest, or its shape when the field is absent (OCI allows that).
fn sniff_media_type(bytes: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    if let Some(m) = v.get("mediaType").and_then(|m| m.as_str()) {
        return Some(m.to_string());
    }
    if v.get("manifests").is_some() {
        Some(media::OCI_INDEX.to_string())
    } else if v.get("config").is_some() {
        Some(media::OCI_MANIFEST.to_string())
    } else {
        None
    }
}

/// The platform an index entry declares, normalised like [`llb::Platform`].
pub fn descriptor_platform(d: &Descriptor) -> Option<Platform> {
    let p = d.platform().as_ref()?;
    Some(Platform::new(&p.os().to_string(), &p.architecture().to_string(), p.variant().as_deref()))
}

/// Picks the manifest for `wanted` from an index the way containerd's platform matcher does: an exact
/// match first, else the newest compatible arm variant (arm/v7 runs v6 and v5). Attestation manifests
/// (`unknown/unknown`) never match.
pub fn select_platform<'a>(index: &'a ImageIndex, wanted: &Platform) -> Option<&'a Descriptor> {
    let candidates = index.manifests().iter().filter(|d| media::is_manifest(d.media_type().as_ref()));
    let mut best: Option<(&Descriptor, Platform)> = None;
    for d in candidates {
        let Some(p) = descriptor_platform(d) else { continue };
        if &p == wanted {
            return Some(d);
        }
        if wanted.runs(&p) {
            let better = match &best {
                None => true,
                Some((_, b)) => p.variant > b.variant,
            };
            if better {
                best = Some((d, p));
            }
        }
    }
    best.map(|(d, _)| d)
}

/// `os/arch[/variant]` of every entry, for error messages.
pub fn platforms_of(index: &ImageIndex) -> String {
    let v: Vec<String> = index
        .manifests()
        .iter()
        .filter_map(descriptor_platform)
        .map(|p| match p.variant {
            Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
            None => format!("{}/{}", p.os, p.architecture),
        })
        .collect();
    if v.is_empty() {
        "no platforms".to_string()
    } else {
        v.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIST: &str = r#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json",
 "manifests":[
  {"mediaType":"application/vnd.docker.distribution.manifest.v2+json","size":1,"digest":"sha256:1111111111111111111111111111111111111111111111111111111111111111","platform":{"architecture":"amd64","os":"linux"}},
  {"mediaType":"application/vnd.docker.distribution.manifest.v2+json","size":1,"digest":"sha256:2222222222222222222222222222222222222222222222222222222222222222","platform":{"architecture":"arm","os":"linux","variant":"v6"}},
  {"mediaType":"application/vnd.docker.distribution.manifest.v2+json","size":1,"digest":"sha256:3333333333333333333333333333333333333333333333333333333333333333","platform":{"architecture":"arm","os":"linux","variant":"v5"}},
  {"mediaType":"application/vnd.docker.distribution.manifest.v2+json","size":1,"digest":"sha256:4444444444444444444444444444444444444444444444444444444444444444","platform":{"architecture":"arm64","os":"linux","variant":"v8"}},
  {"mediaType":"application/vnd.oci.image.manifest.v1+json","size":1,"digest":"sha256:5555555555555555555555555555555555555555555555555555555555555555","platform":{"architecture":"unknown","os":"unknown"}}
 ]}"#;

    #[test]
    fn raw_bytes_are_hashed_not_reserialised() {
        let raw = RawManifest::new(Some("application/vnd.docker.distribution.manifest.list.v2+json"), LIST.into());
        assert_eq!(raw.digest, snapshotter::digest::of_bytes(LIST.as_bytes()));
        assert!(raw.is_index());
        let Parsed::Index(ix) = raw.parse().unwrap() else { panic!("expected an index") };
        assert_eq!(ix.manifests().len(), 5);
    }

    #[test]
    fn selects_platforms() {
        let ix: ImageIndex = serde_json::from_str(LIST).unwrap();
        let pick = |p: &str| select_platform(&ix, &p.parse().unwrap()).map(|d| d.digest().digest()[..1].to_string());
        assert_eq!(pick("linux/amd64").as_deref(), Some("1"));
        assert_eq!(pick("linux/arm64").as_deref(), Some("4"));
        assert_eq!(pick("linux/arm/v7").as_deref(), Some("2"));
        assert_eq!(pick("linux/arm/v5").as_deref(), Some("3"));
        assert_eq!(pick("linux/s390x"), None);
        assert!(platforms_of(&ix).contains("linux/arm/v6"));
    }

    #[test]
    fn media_type_from_body_when_header_is_generic() {
        let m = r#"{"schemaVersion":2,"config":{"mediaType":"application/vnd.oci.image.config.v1+json","size":2,"digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"},"layers":[]}"#;
        let raw = RawManifest::new(Some("application/json"), m.into());
        assert_eq!(raw.media_type, media::OCI_MANIFEST);
        assert_eq!(raw.manifest().unwrap().layers().len(), 0);
    }
}
