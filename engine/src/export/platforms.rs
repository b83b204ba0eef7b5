//! The results of a multi-platform build (`--platform linux/amd64,linux/arm64`), one [`ExportContext`] per
//! platform, exported as buildx exports them: one image index with a manifest per platform (`-t`, a push,
//! `type=oci`; a Docker manifest list with `oci-mediatypes=false`; each image's attestation manifest
//! after the images, as BuildKit orders them), one subdirectory per platform named as buildx names it
//! (`type=local`, `type=tar`: `linux_amd64/`, `linux_arm_v7/`), and the host's platform alone for
//! `type=docker`, which holds one image. A single platform is exported exactly as before.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

use llb::Platform;
use registry::assemble::Assembled;
use registry::attest::Annotations;
use snapshotter::diff::Compression;

use super::{blocking, lock, parse_name, write_dest, ArchiveExporter, Descriptor, Dest, ExportContext, ImageExporter};
use crate::error::ExportError;
use crate::progress::Event;

/// What the exporters of one build share: the result of every target platform, in the order asked.
pub struct Exports {
    pub(crate) images: Vec<ExportContext>,
    /// The first index written (the build's result when there are several platforms).
    index: Mutex<Option<Descriptor>>,
}

/// The directory buildx puts a platform's files in: `linux_amd64`, `linux_arm_v7`.
pub fn platform_dir(p: &Platform) -> String {
    p.to_string().replace('/', "_")
}

impl Exports {
    /// The results of a build: one per target platform, at least one.
    pub(crate) fn new(images: Vec<ExportContext>) -> Exports {
        assert!(!images.is_empty(), "a build exports at least one platform's result");
        Exports { images, index: Mutex::new(None) }
    }

    /// The result of a single-platform build, exported as ever (no index where there was none).
    pub fn single(&self) -> Option<&ExportContext> {
        match &self.images[..] {
            [one] => Some(one),
            _ => None,
        }
    }

    /// The first platform's result.
    pub fn first(&self) -> &ExportContext {
        &self.images[0]
    }

    /// The index a multi-platform export wrote first, if any.
    pub(crate) fn index(&self) -> Option<Descriptor> {
        lock(&self.index).clone()
    }

    /// The first image assembled, if any.
    pub(crate) fn first_image(&self) -> Option<Assembled> {
        self.images.iter().find_map(|cx| cx.first_image())
    }

    /// Names given to the result in the local store.
    pub(crate) fn names(&self) -> Vec<String> {
        self.first().names()
    }

    /// (results, layers) of the inline cache record put in an image's config, if one was.
    pub(crate) fn inlined(&self) -> Option<(usize, usize)> {
        self.images.iter().find_map(|cx| cx.inlined())
    }

    /// The one platform `type=docker` exports: the host's when it was built, else the first; the build
    /// says which, as `docker buildx build --load` of several platforms does.
    pub(crate) fn for_docker(&self) -> &ExportContext {
        let host = Platform::host();
        let cx = self.images.iter().find(|cx| cx.platform == host).unwrap_or(self.first());
        let built: Vec<String> = self.images.iter().map(|cx| cx.platform.to_string()).collect();
        let why = if cx.platform == host { "this machine's platform" } else { "the first platform asked" };
        let message = format!(
            "--output type=docker holds one platform: exporting {} ({why}) of {}; use type=oci or --push for \
             all of them",
            cx.platform,
            built.join(", ")
        );
        let _ = cx.events.send(Event::Warning(frontend::diag::Diagnostic::new(message)));
        cx
    }

    /// Assembles every platform's image and writes the index naming them. With `attest`, each image
    /// carries its plan's annotations and, when the plan attests, an attestation manifest about it.
    async fn index_of(
        &self,
        compression: impl Fn(&ExportContext) -> Compression,
        oci: bool,
        attest: bool,
        names: &[String],
    ) -> Result<Descriptor, ExportError> {
        let mut entries = Vec::new();
        let mut index_annotations = BTreeMap::new();
        for cx in &self.images {
            let img = cx.image(compression(cx), oci).await?;
            let e = match cx.attest.as_ref().filter(|_| attest) {
                Some(plan) => {
                    index_annotations = plan.options.annotations.index.clone();
                    crate::attest::entries(cx, plan, &img, names).await?
                }
                None => {
                    let (images, p) = (cx.engine.images.clone(), cx.platform.clone());
                    blocking(move || {
                        let platform = (p.os.as_str(), p.architecture.as_str(), p.variant.as_deref());
                        registry::attest::entries(&images, &img, platform, &[], &Annotations::default())
                            .map_err(ExportError::registry("writing the image index"))
                    })
                    .await?
                }
            };
            entries.push(e);
        }
        let images = self.first().engine.images.clone();
        let index = blocking(move || {
            registry::attest::write_index(&images, &entries, &index_annotations, oci)
                .map_err(ExportError::registry("writing the image index"))
        })
        .await?;
        lock(&self.index).get_or_insert_with(|| index.clone());
        Ok(index)
    }
}

impl ImageExporter {
    /// Every platform's image under one index in the local store, pushed when asked (with each image's
    /// attestations, as buildx pushes them).
    pub(super) async fn export_index(&self, set: &Exports) -> Result<(), ExportError> {
        let first = set.first();
        let attest = self.push && set.images.iter().any(|cx| cx.attest.is_some());
        // Attestation manifests live in an OCI index only.
        let oci =
            self.oci || (attest && set.images.iter().any(|cx| cx.attest.as_ref().is_some_and(|p| p.options.attests())));
        let names: Vec<String> = if self.names.is_empty() { first.tags.clone() } else { self.names.clone() };
        let index = set.index_of(|cx| self.compression(cx), oci, attest, &names).await?;
        for n in &names {
            let r = parse_name(n)?;
            for cx in &set.images {
                // A cached result pushed to its cache's registry needs no blob here.
                cx.blobs_for(if self.push { Some(&r) } else { None }).await?;
            }
            first.name_and_push(&r, &index, &index, self.push).await?;
        }
        lock(&first.names).extend(names);
        Ok(())
    }
}

impl ArchiveExporter {
    /// `type=oci` of several platforms: an OCI layout whose index.json names the image index.
    pub(super) async fn export_index(&self, set: &Exports) -> Result<(), ExportError> {
        let index = set.index_of(|_| self.compression, self.oci, false, &[]).await?;
        for cx in &set.images {
            cx.blobs_for(None).await?;
        }
        let refs = set.first().references(&self.names, &index)?;
        self.write(set.first(), refs).await
    }
}

/// `type=local` of several platforms: each platform's filesystem in `dest/<os>_<arch>[_<variant>]`.
pub(super) async fn export_local_split(set: &Exports, dest: &Path) -> Result<(), ExportError> {
    for cx in &set.images {
        let (e, root) = (cx.engine.clone(), cx.snapshot().await?);
        let dir = dest.join(platform_dir(&cx.platform));
        blocking(move || write_tree(&e, root.as_deref(), &dir)).await?;
    }
    Ok(())
}

/// `type=tar` of several platforms: one tar whose top directories are the platforms, as in
/// [`export_local_split`].
pub(super) async fn export_tar_split(set: &Exports, dest: &Dest) -> Result<(), ExportError> {
    let first = set.first();
    let scratch = first.engine.store.root.tmp_dir();
    let tmp = tempfile::Builder::new()
        .prefix("export-platforms-")
        .tempdir_in(&scratch)
        .map_err(ExportError::io(format!("creating a directory in {}", scratch.display())))?;
    for cx in &set.images {
        let (e, root) = (cx.engine.clone(), cx.snapshot().await?);
        let dir = tmp.path().join(platform_dir(&cx.platform));
        blocking(move || write_tree(&e, root.as_deref(), &dir)).await?;
    }
    let epoch = first.source_date_epoch.map(|e| e.max(0) as u64);
    let (dest, tree) = (dest.clone(), tmp.path().to_path_buf());
    blocking(move || {
        write_dest(&dest, |mut w| {
            let mut tw = snapshotter::diff::TarWriter::new(&mut w, epoch);
            snapshotter::diff::changes::tree_changes(None, &tree, &mut |c| tw.change(&c))
                .and_then(|()| tw.finish().map(drop))
                .map_err(ExportError::io("writing the filesystem tar"))
        })
    })
    .await?;
    drop(tmp);
    Ok(())
}

/// The filesystem of snapshot `root` (`None`: empty) as the directory `dir`.
fn write_tree(e: &crate::Engine, root: Option<&str>, dir: &Path) -> Result<(), ExportError> {
    match root {
        Some(key) => snapshotter::export::export_dir(&*e.store.snapshotter, key, dir)
            .map_err(ExportError::snapshot(format!("exporting the filesystem to {}", dir.display()))),
        None => std::fs::create_dir_all(dir).map_err(ExportError::io(format!("creating {}", dir.display()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platform_directories_are_named_as_buildx_names_them() {
        let dir = |s: &str| platform_dir(&s.parse().unwrap());
        assert_eq!(dir("linux/amd64"), "linux_amd64");
        assert_eq!(dir("linux/arm64"), "linux_arm64");
        assert_eq!(dir("linux/arm/v7"), "linux_arm_v7");
    }
}
