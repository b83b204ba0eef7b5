//! The local image store: image names in the metadata database's `images` table (full normalised
//! reference -> manifest descriptor), content in the content store. Blob records carry
//! `distribution.source.<registry>` labels (containerd's convention) naming the repositories a blob was
//! pulled from or pushed to, so a push to another repository of that registry can mount instead of upload.

use std::io::Read;
use std::sync::Arc;

use oci_spec::image::{Descriptor, Digest, ImageManifest, MediaType};
use snapshotter::content::{self, ContentError, InfoProvider, LocalStore, Provider};
use snapshotter::meta::{self, BlobRecord, ImageRecord, MetaDb, BLOBS, IMAGES};

use crate::error::RegistryError;
use crate::manifest::{media, Parsed, RawManifest};
use crate::reference::Reference;
use llb::image::Image;

/// The label prefix of the repositories a blob is known to exist in.
pub const SOURCE_LABEL: &str = "distribution.source.";

/// The label prefix recording when a tag last resolved to a manifest or index (`rbuild.resolved.<name>` =
/// seconds since the epoch), so that a build can use it while the registry cannot be reached.
pub const RESOLVED_LABEL: &str = "rbuild.resolved.";

/// Content store + metadata database, the two halves of local images.
#[derive(Debug, Clone)]
pub struct ImageStore {
    content: LocalStore,
    meta: Arc<MetaDb>,
}

/// One named image.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedImage {
    pub name: Reference,
    pub record: ImageRecord,
}

/// A manifest resolved from the store with its config.
#[derive(Debug, Clone)]
pub struct LocalImage {
    pub manifest_raw: RawManifest,
    pub manifest: ImageManifest,
    pub config: Image,
    pub config_bytes: Vec<u8>,
}

impl ImageStore {
    pub fn new(content: LocalStore, meta: Arc<MetaDb>) -> ImageStore {
        ImageStore { content, meta }
    }

    pub fn content(&self) -> &LocalStore {
        &self.content
    }

    pub fn meta(&self) -> &MetaDb {
        &self.meta
    }

    pub fn has_blob(&self, d: &Digest) -> Result<bool, RegistryError> {
        match self.content.info(d) {
            Ok(_) => Ok(true),
            Err(ContentError::NotFound(_)) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// The whole blob in memory (manifests and configs; layers are streamed with [`Provider`]).
    pub fn read_blob(&self, d: &Digest) -> Result<Vec<u8>, RegistryError> {
        let mut r = self.content.reader(d)?;
        let mut v = Vec::new();
        r.read_to_end(&mut v).map_err(RegistryError::io(format!("reading blob {d}")))?;
        Ok(v)
    }

    /// Writes bytes whose digest is known (a manifest, a config) and records the blob.
    pub fn write_bytes(&self, bytes: &[u8], media_type: &str) -> Result<Digest, RegistryError> {
        let d = snapshotter::digest::of_bytes(bytes);
        if !self.has_blob(&d)? {
            content::write_blob(&self.content, &format!("bytes-{d}"), bytes, Some(bytes.len() as u64), Some(&d))?;
        }
        self.meta.touch_blob(d.as_ref(), bytes.len() as u64, Some(media_type))?;
        Ok(d)
    }

    /// Reads a manifest or index by descriptor.
    pub fn read_manifest(&self, d: &Descriptor) -> Result<RawManifest, RegistryError> {
        let bytes = self.read_blob(d.digest())?;
        Ok(RawManifest::new(Some(d.media_type().as_ref()), bytes))
    }

    /// Adds `repository` to the blob's source label for `registry`.
    pub fn add_source(&self, d: &Digest, size: u64, registry: &str, repository: &str) -> Result<(), RegistryError> {
        let mut rec: BlobRecord = self.meta.get(BLOBS, d.as_ref())?.unwrap_or_default();
        let key = format!("{SOURCE_LABEL}{registry}");
        let mut repos: Vec<String> =
            rec.labels.get(&key).map(|s| s.split(',').map(str::to_string).collect()).unwrap_or_default();
        if repos.iter().any(|r| r == repository) && rec.size == size && meta::fresh_use(rec.last_used) {
            // Known already, and used lately: nothing to write.
            return Ok(());
        }
        if !repos.iter().any(|r| r == repository) {
            repos.push(repository.to_string());
        }
        rec.labels.insert(key, repos.join(","));
        rec.size = size;
        rec.last_used = meta::now();
        self.meta.put(BLOBS, d.as_ref(), &rec)?;
        Ok(())
    }

    /// Records that the tag `name` resolved to the manifest or index `d` (`size` bytes) just now (to
    /// within [`meta::TOUCH_EVERY`]: a resolution as recent as that is not written again).
    pub fn note_resolved(&self, name: &Reference, d: &Digest, size: u64) -> Result<(), RegistryError> {
        let mut rec: BlobRecord = self.meta.get(BLOBS, d.as_ref())?.unwrap_or_default();
        let label = format!("{RESOLVED_LABEL}{name}");
        let noted = rec.labels.get(&label).and_then(|t| t.parse::<u64>().ok());
        if rec.size == size && noted.is_some_and(meta::fresh_use) && meta::fresh_use(rec.last_used) {
            return Ok(());
        }
        let now = meta::now();
        rec.labels.insert(label, now.to_string());
        rec.size = size;
        rec.last_used = now;
        self.meta.put(BLOBS, d.as_ref(), &rec)?;
        Ok(())
    }

    /// The manifest or index the tag `name` resolved to most recently, with when (seconds since the
    /// epoch), if its blob is still in the store. Reads every blob record: for the rare offline path.
    pub fn last_resolved(&self, name: &Reference) -> Result<Option<(Digest, u64)>, RegistryError> {
        let key = format!("{RESOLVED_LABEL}{name}");
        let mut best: Option<(Digest, u64)> = None;
        for (digest, rec) in self.meta.list::<BlobRecord>(BLOBS)? {
            let Some(at) = rec.labels.get(&key).and_then(|t| t.parse::<u64>().ok()) else { continue };
            if best.as_ref().is_some_and(|(_, b)| *b >= at) {
                continue;
            }
            if let Ok(d) = digest.parse::<Digest>() {
                if self.has_blob(&d)? {
                    best = Some((d, at));
                }
            }
        }
        Ok(best)
    }

    /// Repositories of `registry` known to hold the blob.
    pub fn sources(&self, d: &Digest, registry: &str) -> Result<Vec<String>, RegistryError> {
        let rec: Option<BlobRecord> = self.meta.get(BLOBS, d.as_ref())?;
        let key = format!("{SOURCE_LABEL}{registry}");
        Ok(rec
            .and_then(|r| r.labels.get(&key).cloned())
            .map(|s| s.split(',').filter(|x| !x.is_empty()).map(str::to_string).collect())
            .unwrap_or_default())
    }

    /// Names `target` as `name` (replacing what the name pointed at).
    pub fn tag(&self, name: &Reference, target: &Descriptor) -> Result<(), RegistryError> {
        if let Some(old) = self.meta.image(&name.to_string())? {
            let same = old.digest == target.digest().to_string()
                && old.media_type == target.media_type().to_string()
                && old.size == target.size();
            if same {
                // Already so (a rebuild that changed nothing): keep the record and its time.
                return Ok(());
            }
        }
        let rec = ImageRecord {
            digest: target.digest().to_string(),
            media_type: target.media_type().to_string(),
            size: target.size(),
            created_at: meta::now(),
        };
        self.meta.set_image(&name.to_string(), &rec)?;
        Ok(())
    }

    /// The descriptor `name` points at. `name` may also be a manifest digest or a unique prefix of one
    /// (`rbuild inspect 1a2b3c`), like docker's image ids.
    pub fn get(&self, name: &str) -> Result<Descriptor, RegistryError> {
        if let Ok(r) = Reference::parse(name) {
            if r.digest().is_none() {
                if let Some(rec) = self.meta.image(&r.to_string())? {
                    return descriptor_of(&rec);
                }
            } else if let Some(d) = r.digest() {
                let found =
                    self.list()?.into_iter().find(|i| i.record.digest == d.to_string() && i.name.name() == r.name());
                if let Some(i) = found {
                    return descriptor_of(&i.record);
                }
            }
        }
        let hex = name.strip_prefix("sha256:").unwrap_or(name);
        if hex.len() >= 6 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            let matches: Vec<NamedImage> =
                self.list()?.into_iter().filter(|i| i.record.digest["sha256:".len()..].starts_with(hex)).collect();
            if let Some(i) = matches.first() {
                if matches.iter().all(|m| m.record.digest == i.record.digest) {
                    return descriptor_of(&i.record);
                }
            }
        }
        Err(RegistryError::NoSuchImage(name.to_string()))
    }

    /// Every named image, sorted by name.
    pub fn list(&self) -> Result<Vec<NamedImage>, RegistryError> {
        let mut out = Vec::new();
        for (k, record) in self.meta.list::<ImageRecord>(IMAGES)? {
            if let Ok(name) = Reference::parse(&k) {
                out.push(NamedImage { name, record });
            }
        }
        Ok(out)
    }

    /// Removes a name; the content stays until garbage collection.
    pub fn untag(&self, name: &Reference) -> Result<bool, RegistryError> {
        Ok(self.meta.delete(IMAGES, &name.to_string())?)
    }

    /// Loads the image (platform manifest + config) a descriptor names; for an index the entry for
    /// `platform` (or the first present one) is used.
    pub fn image(&self, target: &Descriptor, platform: Option<&llb::Platform>) -> Result<LocalImage, RegistryError> {
        let raw = self.read_manifest(target)?;
        let manifest_raw = match raw.parse()? {
            Parsed::Manifest(_) => raw,
            Parsed::Index(ix) => {
                let host = llb::Platform::host();
                let wanted = platform.unwrap_or(&host);
                let d = crate::manifest::select_platform(&ix, wanted)
                    .or_else(|| {
                        ix.manifests().iter().find(|d| {
                            media::is_manifest(d.media_type().as_ref()) && self.has_blob(d.digest()).unwrap_or(false)
                        })
                    })
                    .ok_or_else(|| {
                        RegistryError::Manifest(crate::manifest::ManifestError::NoPlatform {
                            wanted: format!("{}/{}", wanted.os, wanted.architecture),
                            digest: raw.digest.clone(),
                            available: crate::manifest::platforms_of(&ix),
                        })
                    })?;
                self.read_manifest(d)?
            }
        };
        let manifest = manifest_raw.manifest()?;
        let config_bytes = self.read_blob(manifest.config().digest())?;
        let config = Image::from_json(&config_bytes)
            .map_err(|source| RegistryError::ImageConfig { digest: manifest.config().digest().clone(), source })?;
        Ok(LocalImage { manifest_raw, manifest, config, config_bytes })
    }
}

fn descriptor_of(rec: &ImageRecord) -> Result<Descriptor, RegistryError> {
    let d: Digest = rec
        .digest
        .parse()
        .map_err(|_| RegistryError::Protocol(format!("corrupt image record with digest {:?}", rec.digest)))?;
    Ok(Descriptor::new(MediaType::from(rec.media_type.as_str()), rec.size, d))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, ImageStore) {
        let dir = tempfile::tempdir().unwrap();
        let content = LocalStore::open(dir.path().join("content")).unwrap();
        let meta = Arc::new(MetaDb::open(dir.path().join("meta.redb")).unwrap());
        (dir, ImageStore::new(content, meta))
    }

    #[test]
    fn names_and_sources() {
        let (_d, s) = store();
        let bytes = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}"#;
        let d = s.write_bytes(bytes, media::OCI_MANIFEST).unwrap();
        let desc = Descriptor::new(MediaType::ImageManifest, bytes.len() as u64, d.clone());
        s.tag(&Reference::parse("app").unwrap(), &desc).unwrap();
        assert_eq!(s.get("app:latest").unwrap(), desc);
        assert_eq!(s.get("docker.io/library/app").unwrap(), desc);
        assert_eq!(s.get(&d.digest()[..12]).unwrap(), desc);
        assert!(matches!(s.get("other"), Err(RegistryError::NoSuchImage(_))));
        s.add_source(&d, 1, "127.0.0.1:5000", "a").unwrap();
        s.add_source(&d, 1, "127.0.0.1:5000", "b").unwrap();
        s.add_source(&d, 1, "127.0.0.1:5000", "a").unwrap();
        assert_eq!(s.sources(&d, "127.0.0.1:5000").unwrap(), vec!["a", "b"]);
        assert!(s.sources(&d, "ghcr.io").unwrap().is_empty());
        assert!(s.untag(&Reference::parse("app").unwrap()).unwrap());
        assert!(s.list().unwrap().is_empty());
    }

    #[test]
    fn a_rebuild_that_changes_nothing_writes_nothing() {
        let (_d, s) = store();
        let bytes = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}"#;
        let d = s.write_bytes(bytes, media::OCI_MANIFEST).unwrap();
        let desc = Descriptor::new(MediaType::ImageManifest, bytes.len() as u64, d.clone());
        let name = Reference::parse("app").unwrap();
        // Records as an earlier build left them; the same tag, sources and resolution again keep them.
        let set_times = |at: u64| {
            s.meta
                .put(
                    IMAGES,
                    &name.to_string(),
                    &ImageRecord { created_at: at, ..s.meta.image(&name.to_string()).unwrap().unwrap() },
                )
                .unwrap();
            let mut rec: BlobRecord = s.meta.get(BLOBS, d.as_ref()).unwrap().unwrap();
            rec.last_used = at;
            for v in rec.labels.values_mut().filter(|v| v.parse::<u64>().is_ok()) {
                *v = at.to_string();
            }
            s.meta.put(BLOBS, d.as_ref(), &rec).unwrap();
        };
        s.tag(&name, &desc).unwrap();
        s.add_source(&d, desc.size(), "127.0.0.1:5000", "app").unwrap();
        s.note_resolved(&name, &d, desc.size()).unwrap();
        let lately = meta::now() - 60;
        set_times(lately);
        s.tag(&name, &desc).unwrap();
        s.add_source(&d, desc.size(), "127.0.0.1:5000", "app").unwrap();
        s.note_resolved(&name, &d, desc.size()).unwrap();
        assert_eq!(s.meta.image(&name.to_string()).unwrap().unwrap().created_at, lately);
        let rec: BlobRecord = s.meta.get(BLOBS, d.as_ref()).unwrap().unwrap();
        assert_eq!(rec.last_used, lately);
        assert_eq!(s.last_resolved(&name).unwrap(), Some((d.clone(), lately)));
        // Long enough ago: the resolution is noted again; a new repository is always recorded.
        set_times(lately - meta::TOUCH_EVERY);
        s.note_resolved(&name, &d, desc.size()).unwrap();
        assert!(s.last_resolved(&name).unwrap().unwrap().1 > lately);
        s.add_source(&d, desc.size(), "127.0.0.1:5000", "other").unwrap();
        assert_eq!(s.sources(&d, "127.0.0.1:5000").unwrap(), vec!["app", "other"]);
    }
}
