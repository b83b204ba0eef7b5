//! Exporters and the importer: an OCI image layout (directory or tar, image-spec `image-layout.md`) and
//! the docker-archive tar that `docker load` reads. A saved tar is both at once, like Docker 25's
//! `docker save`: `oci-layout`, `index.json` and `blobs/sha256/*`, plus `manifest.json` whose `Config`
//! and `Layers` point into `blobs/`. Blobs are copied byte for byte, so digests survive a save/load.
//!
//! [`load`] takes either shape; entries are only ever read into memory or the content store (never
//! written to paths taken from the archive), so a hostile tar cannot escape anywhere.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::path::Path;

use oci_spec::image::{Descriptor, Digest};
use serde_json::{json, Value};
use snapshotter::content::{self, Provider};

use crate::error::RegistryError;
use crate::manifest::{media, Parsed, RawManifest};
use crate::reference::Reference;
use crate::store::ImageStore;

/// The annotation containerd and Docker put on index entries for the full image name.
pub const IMAGE_NAME_ANNOTATION: &str = "io.containerd.image.name";
/// The OCI annotation for the tag (`ref.name`).
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";

/// Which archive to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveFormat {
    /// OCI layout plus `manifest.json` (loads with `docker load` and `skopeo copy docker-archive:`).
    Docker,
    /// OCI layout only.
    Oci,
}

fn archive_err(e: impl std::fmt::Display) -> RegistryError {
    RegistryError::Archive(e.to_string())
}

/// Every blob an image needs, manifests first, each once.
fn image_blobs(store: &ImageStore, target: &Descriptor, out: &mut Vec<Descriptor>) -> Result<(), RegistryError> {
    if out.iter().any(|d| d.digest() == target.digest()) {
        return Ok(());
    }
    out.push(target.clone());
    let raw = store.read_manifest(target)?;
    match raw.parse()? {
        Parsed::Index(ix) => {
            for d in ix.manifests() {
                if store.has_blob(d.digest())? {
                    image_blobs(store, d, out)?;
                }
            }
        }
        Parsed::Manifest(m) => {
            for d in std::iter::once(m.config()).chain(m.layers().iter()) {
                if media::is_non_distributable(d.media_type().as_ref()) && !store.has_blob(d.digest())? {
                    continue;
                }
                if !out.iter().any(|x| x.digest() == d.digest()) {
                    out.push(d.clone());
                }
            }
        }
    }
    Ok(())
}

fn index_entry(name: Option<&Reference>, desc: &Descriptor) -> Value {
    let mut v = serde_json::to_value(desc).unwrap_or(Value::Null);
    if let (Some(n), Value::Object(map)) = (name, &mut v) {
        let mut ann = serde_json::Map::new();
        ann.insert(IMAGE_NAME_ANNOTATION.into(), Value::String(n.to_string()));
        if let Some(t) = n.tag() {
            ann.insert(REF_NAME_ANNOTATION.into(), Value::String(t.to_string()));
        }
        map.insert("annotations".into(), Value::Object(ann));
    }
    v
}

/// The files of the archive other than blobs: `oci-layout`, `index.json`, maybe `manifest.json`.
fn metadata_files(
    store: &ImageStore,
    images: &[(Option<Reference>, Descriptor)],
    format: ArchiveFormat,
) -> Result<Vec<(String, Vec<u8>)>, RegistryError> {
    let manifests: Vec<Value> = images.iter().map(|(n, d)| index_entry(n.as_ref(), d)).collect();
    let index = json!({"schemaVersion": 2, "mediaType": media::OCI_INDEX, "manifests": manifests});
    let mut files = vec![
        ("oci-layout".to_string(), br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec()),
        ("index.json".to_string(), serde_json::to_vec(&index).map_err(archive_err)?),
    ];
    if format == ArchiveFormat::Docker {
        let mut entries = Vec::new();
        for (name, desc) in images {
            let local = store.image(desc, None)?;
            let blob = |d: &Digest| format!("blobs/sha256/{}", d.digest());
            let tags: Vec<String> = name
                .iter()
                .filter(|n| n.tag().is_some())
                .map(|n| format!("{}:{}", n.familiar_name(), n.tag().unwrap_or("latest")))
                .collect();
            entries.push(json!({
                "Config": blob(local.manifest.config().digest()),
                "RepoTags": tags,
                "Layers": local.manifest.layers().iter().map(|l| blob(l.digest())).collect::<Vec<_>>(),
            }));
        }
        files.push(("manifest.json".to_string(), serde_json::to_vec(&entries).map_err(archive_err)?));
    }
    Ok(files)
}

/// Writes `images` as a tar to `w`.
pub fn save(
    store: &ImageStore,
    images: &[(Option<Reference>, Descriptor)],
    format: ArchiveFormat,
    w: impl Write,
) -> Result<(), RegistryError> {
    save_with(store, images, format, w, copy_buffered)
}

/// [`save`] into a file: each blob is copied by the kernel (`copy_file_range`), never through this
/// process's memory, which halves the cost of writing an archive of large layers.
pub fn save_file(
    store: &ImageStore,
    images: &[(Option<Reference>, Descriptor)],
    format: ArchiveFormat,
    f: &mut std::fs::File,
) -> Result<(), RegistryError> {
    // std's io::copy between two files is copy_file_range (falling back to read/write where the kernel
    // or the filesystems cannot).
    save_with(store, images, format, f, io::copy)
}

/// Copies through a 1 MiB buffer: a pipe or a socket then sees a few large writes, not one per 8 KiB.
fn copy_buffered<W: Write>(src: &mut std::fs::File, dst: &mut W) -> io::Result<u64> {
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        match src.read(&mut buf) {
            Ok(0) => return Ok(n),
            Ok(k) => {
                dst.write_all(&buf[..k])?;
                n += k as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

fn save_with<W: Write>(
    store: &ImageStore,
    images: &[(Option<Reference>, Descriptor)],
    format: ArchiveFormat,
    w: W,
    copy: impl FnMut(&mut std::fs::File, &mut W) -> io::Result<u64>,
) -> Result<(), RegistryError> {
    let mut tar = tar::Builder::new(w);
    let io_err = |e: io::Error| archive_err(format!("writing archive: {e}"));
    for path in BLOB_DIRS {
        let mut h = header(0, tar::EntryType::Directory, 0o755);
        tar.append_data(&mut h, path, io::empty()).map_err(io_err)?;
    }
    save_rest(store, images, format, tar, copy, &[])
}

/// The directories every archive starts with.
const BLOB_DIRS: [&str; 2] = ["blobs/", "blobs/sha256/"];

/// The blobs of `images` but those in `written` (already in the archive), then the metadata files and the
/// end of the archive.
fn save_rest<W: Write>(
    store: &ImageStore,
    images: &[(Option<Reference>, Descriptor)],
    format: ArchiveFormat,
    mut tar: tar::Builder<W>,
    mut copy: impl FnMut(&mut std::fs::File, &mut W) -> io::Result<u64>,
    written: &[Digest],
) -> Result<(), RegistryError> {
    let mut blobs = Vec::new();
    for (_, d) in images {
        image_blobs(store, d, &mut blobs)?;
    }
    let io_err = |e: io::Error| archive_err(format!("writing archive: {e}"));
    for d in blobs.iter().filter(|d| !written.contains(d.digest())) {
        let info = snapshotter::content::InfoProvider::info(store.content(), d.digest())?;
        let mut r = store.content().reader(d.digest())?;
        // The entry written by hand (header, data, padding to 512 bytes), as tar::Builder::append_data
        // does, so the data goes through `copy` rather than the builder's 8 KiB dyn-Write loop.
        let h = blob_header(d.digest(), info.size)?;
        let out = tar.get_mut();
        out.write_all(h.as_bytes()).map_err(io_err)?;
        let copied = copy(&mut r, out).map_err(io_err)?;
        if copied != info.size {
            return Err(archive_err(format!(
                "blob {} changed while it was archived ({} bytes read, {} expected)",
                d.digest(),
                copied,
                info.size
            )));
        }
        out.write_all(padding(info.size)).map_err(io_err)?;
    }
    for (name, bytes) in metadata_files(store, images, format)? {
        let mut h = header(bytes.len() as u64, tar::EntryType::Regular, 0o644);
        tar.append_data(&mut h, name, &bytes[..]).map_err(io_err)?;
    }
    tar.into_inner().map_err(io_err)?.flush().map_err(io_err)?;
    Ok(())
}

/// The header of the entry of blob `d`, `size` bytes.
fn blob_header(d: &Digest, size: u64) -> Result<tar::Header, RegistryError> {
    let mut h = header(size, tar::EntryType::Regular, 0o444);
    h.set_path(format!("blobs/sha256/{}", d.digest())).map_err(|e| archive_err(format!("writing archive: {e}")))?;
    h.set_cksum();
    Ok(h)
}

/// The zeros that pad an entry of `size` bytes to a 512-byte block.
fn padding(size: u64) -> &'static [u8] {
    &[0u8; 512][..((512 - size % 512) % 512) as usize]
}

/// An archive written into a file in two steps, so that layers stored uncompressed are compressed
/// straight into it: [`ArchiveFile::compress_layer`] for each of them (their digests are known only
/// once they are written), then [`ArchiveFile::finish`] with the image assembled from those digests. The
/// compressed bytes are written once, into the archive, as `tar | zstd > file` writes them; they are not
/// kept in the content store, whose copy would be a second write and an fsync.
pub struct ArchiveFile<'a> {
    file: &'a mut std::fs::File,
    /// (uncompressed blob, compression, the layer written for it).
    compressed: Vec<(Digest, snapshotter::diff::Compression, snapshotter::diff::Layer)>,
}

impl<'a> ArchiveFile<'a> {
    /// Starts the archive at the current position of `file`.
    pub fn start(file: &'a mut std::fs::File) -> Result<ArchiveFile<'a>, RegistryError> {
        let io_err = |e: io::Error| archive_err(format!("writing archive: {e}"));
        for path in BLOB_DIRS {
            let mut h = header(0, tar::EntryType::Directory, 0o755);
            h.set_path(path).map_err(io_err)?;
            h.set_cksum();
            file.write_all(h.as_bytes()).map_err(io_err)?;
        }
        Ok(ArchiveFile { file, compressed: Vec::new() })
    }

    /// Writes the stored uncompressed layer `plain` compressed with `compression` as a blob of the
    /// archive, verifying it as it is read; returns the layer written (a layer asked for twice is
    /// written once).
    pub fn compress_layer(
        &mut self,
        store: &ImageStore,
        plain: &snapshotter::diff::Layer,
        compression: snapshotter::diff::Compression,
    ) -> Result<snapshotter::diff::Layer, RegistryError> {
        use std::io::Seek;
        use std::os::unix::fs::FileExt;
        if let Some((_, _, l)) = self.compressed.iter().find(|(d, c, _)| *d == plain.digest && *c == compression) {
            return Ok(l.clone());
        }
        let io_err = |e: io::Error| archive_err(format!("writing archive: {e}"));
        let at = self.file.stream_position().map_err(io_err)?;
        // The header goes in once the blob's digest and size are known.
        self.file.write_all(&[0u8; 512]).map_err(io_err)?;
        let out = io::BufWriter::with_capacity(1 << 20, &mut *self.file);
        let (layer, out) =
            snapshotter::diff::compress_blob_into(store.content(), &plain.digest, plain.size, compression, out)?;
        out.into_inner().map_err(|e| io_err(e.into_error()))?;
        self.file.write_all_at(blob_header(&layer.digest, layer.size)?.as_bytes(), at).map_err(io_err)?;
        self.file.write_all(padding(layer.size)).map_err(io_err)?;
        self.compressed.push((plain.digest.clone(), compression, layer.clone()));
        Ok(layer)
    }

    /// Writes the rest of `images` (the blobs not written yet, the metadata files) and ends the archive.
    pub fn finish(
        self,
        store: &ImageStore,
        images: &[(Option<Reference>, Descriptor)],
        format: ArchiveFormat,
    ) -> Result<(), RegistryError> {
        let written: Vec<Digest> = self.compressed.iter().map(|(_, _, l)| l.digest.clone()).collect();
        save_rest(store, images, format, tar::Builder::new(self.file), io::copy, &written)
    }
}

fn header(size: u64, kind: tar::EntryType, mode: u32) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    // Fixed times and owners: the same images give the same archive.
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h
}

/// Writes `images` as an OCI layout directory (created if missing; existing blobs are kept).
pub fn write_oci_dir(
    store: &ImageStore,
    images: &[(Option<Reference>, Descriptor)],
    dir: &Path,
) -> Result<(), RegistryError> {
    let mut blobs = Vec::new();
    for (_, d) in images {
        image_blobs(store, d, &mut blobs)?;
    }
    let blob_dir = dir.join("blobs").join("sha256");
    std::fs::create_dir_all(&blob_dir).map_err(RegistryError::io(format!("creating {}", blob_dir.display())))?;
    for d in &blobs {
        let path = blob_dir.join(d.digest().digest());
        if path.exists() {
            continue;
        }
        let mut r = store.content().reader(d.digest())?;
        let mut tmp = tempfile::Builder::new()
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666))
            .tempfile_in(&blob_dir)
            .map_err(RegistryError::io("creating a blob file"))?;
        io::copy(&mut r, tmp.as_file_mut()).map_err(RegistryError::io(format!("writing {}", path.display())))?;
        tmp.persist(&path).map_err(|e| RegistryError::io(format!("writing {}", path.display()))(e.error))?;
    }
    for (name, bytes) in metadata_files(store, images, ArchiveFormat::Oci)? {
        let path = dir.join(name);
        std::fs::write(&path, bytes).map_err(RegistryError::io(format!("writing {}", path.display())))?;
    }
    Ok(())
}

/// Reads a docker-archive or OCI layout tar into the store and names its images. Returns the names (or
/// digests of unnamed images) with their descriptors.
pub fn load(store: &ImageStore, r: impl Read) -> Result<Vec<(String, Descriptor)>, RegistryError> {
    let mut small: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut blob_files: BTreeMap<String, Digest> = BTreeMap::new();
    let mut tar = tar::Archive::new(r);
    for entry in tar.entries().map_err(archive_err)? {
        let mut entry = entry.map_err(archive_err)?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry.path().map_err(archive_err)?.to_string_lossy().trim_start_matches("./").to_string();
        if path.split('/').any(|c| c == "..") || path.starts_with('/') {
            return Err(archive_err(format!("unsafe path {path:?} in archive")));
        }
        let size = entry.header().size().map_err(archive_err)?;
        if path.ends_with(".json") || path == "oci-layout" || path.ends_with("/json") || path.ends_with("VERSION") {
            let mut v = Vec::new();
            entry.read_to_end(&mut v).map_err(archive_err)?;
            if path.starts_with("blobs/") {
                let d = content::write_blob(store.content(), &format!("load-{path}"), &v[..], Some(size), None)?;
                blob_files.insert(path.clone(), d);
            }
            small.insert(path, v);
        } else {
            // Blobs and layer tars stream into the content store; the name of an OCI blob is its digest.
            let expected: Option<Digest> =
                path.strip_prefix("blobs/").map(|p| p.replacen('/', ":", 1)).and_then(|s| s.parse().ok());
            let d = content::write_blob(
                store.content(),
                &format!("load-{path}"),
                &mut entry,
                Some(size),
                expected.as_ref(),
            )?;
            blob_files.insert(path, d);
        }
    }
    let mut loaded = Vec::new();
    if let Some(index) = small.get("index.json") {
        let ix: oci_spec::image::ImageIndex = serde_json::from_slice(index).map_err(archive_err)?;
        for d in ix.manifests() {
            let raw = RawManifest::new(Some(d.media_type().as_ref()), store.read_blob(d.digest())?);
            if raw.digest != *d.digest() {
                return Err(RegistryError::DigestMismatch {
                    what: "index.json entry".into(),
                    expected: d.digest().clone(),
                    actual: raw.digest,
                });
            }
            let ann = d.annotations().clone().unwrap_or_default();
            let name = ann
                .get(IMAGE_NAME_ANNOTATION)
                .or_else(|| ann.get(REF_NAME_ANNOTATION).filter(|n| n.contains(['/', ':'])))
                .and_then(|n| Reference::parse(n).ok());
            let desc = raw.descriptor();
            match name {
                Some(n) => {
                    store.tag(&n, &desc)?;
                    loaded.push((n.to_string(), desc));
                }
                None => loaded.push((desc.digest().to_string(), desc)),
            }
        }
        return Ok(loaded);
    }
    let Some(manifest) = small.get("manifest.json") else {
        return Err(archive_err("neither index.json nor manifest.json in the archive: not an image archive"));
    };
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Entry {
        config: String,
        #[serde(default)]
        repo_tags: Option<Vec<String>>,
        layers: Vec<String>,
    }
    let entries: Vec<Entry> = serde_json::from_slice(manifest).map_err(archive_err)?;
    for e in entries {
        let config =
            small.get(&e.config).ok_or_else(|| archive_err(format!("config {} missing from the archive", e.config)))?;
        let cd = store.write_bytes(config, media::DOCKER_CONFIG)?;
        let mut layers = Vec::new();
        for l in &e.layers {
            let d = blob_files.get(l).ok_or_else(|| archive_err(format!("layer {l} missing from the archive")))?;
            let mut head = [0u8; 4];
            let n = store.content().reader(d)?.read(&mut head).map_err(archive_err)?;
            let mt = match &head[..n] {
                [0x1f, 0x8b, ..] => media::DOCKER_LAYER_GZIP,
                [0x28, 0xb5, 0x2f, 0xfd] => media::OCI_LAYER_ZSTD,
                _ => "application/vnd.docker.image.rootfs.diff.tar",
            };
            let size = snapshotter::content::InfoProvider::info(store.content(), d)?.size;
            layers.push(json!({"mediaType": mt, "size": size, "digest": d.to_string()}));
        }
        let m = json!({
            "schemaVersion": 2,
            "mediaType": media::DOCKER_MANIFEST,
            "config": {"mediaType": media::DOCKER_CONFIG, "size": config.len(), "digest": cd.to_string()},
            "layers": layers,
        });
        let bytes = serde_json::to_vec(&m).map_err(archive_err)?;
        store.write_bytes(&bytes, media::DOCKER_MANIFEST)?;
        let desc = RawManifest::new(Some(media::DOCKER_MANIFEST), bytes).descriptor();
        let tags = e.repo_tags.unwrap_or_default();
        if tags.is_empty() {
            loaded.push((desc.digest().to_string(), desc.clone()));
        }
        for t in tags {
            let n = Reference::parse(&t)?;
            store.tag(&n, &desc)?;
            loaded.push((n.to_string(), desc.clone()));
        }
    }
    Ok(loaded)
}
