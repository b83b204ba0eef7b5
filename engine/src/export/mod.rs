//! Exporters: where a build's result goes, one [`Exporter`] per `--output` type (buildx's names):
//! `image`/`registry` (the local image store, maybe pushed), `oci` and `docker` (archives or a layout
//! directory, or `docker load`), `local` (the filesystem as a directory) and `tar`.
//!
//! Exporters that need the image share one [`ExportContext`], which assembles it once per compression and
//! media type. File outputs are written to a temporary name and renamed, so a failed or cancelled export
//! leaves nothing half-written.

mod platforms;
mod spec;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use llb::image::{History, Image};
use registry::assemble::{AssembleOptions, Assembled, StoredLayer};
use registry::export::ArchiveFormat;
use registry::Reference;
use snapshotter::diff::Compression;
use solver::op::BoxFuture;

pub use platforms::{platform_dir, Exports};
pub use spec::{parse_output, Dest, OutputError, OutputKind, OutputSpec, SharedWriter};

use crate::error::ExportError;
use crate::progress::{Event, EventSink, ExportEvent};
use crate::Engine;

/// Writes a build's result somewhere.
pub trait Exporter: Send + Sync {
    /// What progress and errors call it, e.g. `exporting to oci image format`.
    fn describe(&self) -> String;

    /// Exports the build's result: one platform's, or every platform's of a multi-platform build.
    fn export<'a>(&'a self, set: &'a Exports) -> BoxFuture<'a, Result<(), ExportError>>;
}

/// The compression a layer media type names.
fn compression_of(media_type: &str) -> Option<Compression> {
    if media_type.ends_with("+gzip") || media_type.ends_with(".tar.gzip") {
        Some(Compression::Gzip)
    } else if media_type.ends_with("+zstd") {
        Some(Compression::Zstd)
    } else if media_type.ends_with(".tar") {
        Some(Compression::None)
    } else {
        None
    }
}

/// The exporter for one `--output`.
pub fn exporter(spec: &OutputSpec) -> Box<dyn Exporter> {
    let compression = spec.compression.unwrap_or(Compression::Gzip);
    let oci = spec.oci();
    match &spec.kind {
        OutputKind::Image { names, push } => {
            Box::new(ImageExporter { names: names.clone(), push: *push, compression: spec.compression, oci })
        }
        OutputKind::Oci { dest, tar, names } => Box::new(ArchiveExporter {
            dest: Some(dest.clone()),
            dir: !*tar,
            names: names.clone(),
            compression,
            oci,
            docker: false,
        }),
        OutputKind::Docker { dest, names } => Box::new(ArchiveExporter {
            dest: dest.clone(),
            dir: false,
            names: names.clone(),
            // `docker load` stores layers uncompressed: compressing them for it is wasted work.
            compression: match (spec.compression, dest) {
                (Some(c), _) => c,
                (None, None) => Compression::None,
                (None, Some(_)) => Compression::Gzip,
            },
            oci,
            docker: true,
        }),
        OutputKind::Local { dest } => Box::new(LocalExporter { dest: dest.clone() }),
        OutputKind::Tar { dest } => Box::new(TarExporter { dest: dest.clone() }),
    }
}

/// What an inline cache record is made of.
pub(crate) struct Inline {
    pub(crate) steps: Vec<solver::StepRecord>,
    pub(crate) imports: Vec<Arc<crate::cache::ImportedCache>>,
}

/// What every exporter of one build shares: the result, the image config, the names, the engine.
pub struct ExportContext {
    pub(crate) engine: Arc<Engine>,
    /// The committed snapshot of the result (`None`: an empty filesystem, or a lazy result).
    root: Option<String>,
    /// A result that came from an imported cache and was not unpacked: exporters fetch or unpack its layers
    /// only as they need (a push to the cache's registry needs neither).
    lazy: Option<solver::LazyChain>,
    /// The lazy result, once unpacked.
    unpacked: tokio::sync::OnceCell<Option<String>>,
    pub(crate) config: Image,
    pub(crate) base_history: Vec<History>,
    pub(crate) source_date_epoch: Option<i64>,
    /// `-t` names, for outputs without names of their own.
    pub(crate) tags: Vec<String>,
    pub(crate) events: EventSink,
    assembled: Mutex<Vec<((Compression, bool), Assembled)>>,
    first: Mutex<Option<Assembled>>,
    /// `--cache-to type=inline`: the build's steps and imports, for the record put in the image's config.
    inline: Option<Inline>,
    /// (results, layers) of the inline record written into an image, if one was.
    inlined: Mutex<Option<(usize, usize)>>,
    names: Mutex<Vec<String>>,
    /// Attestations and annotations for pushed images (`--provenance`, `--sbom`, `--annotation`).
    pub(crate) attest: Option<crate::attest::Plan>,
    /// The platform the result was built for (its entry's platform in an index).
    pub(crate) platform: llb::Platform,
}

impl ExportContext {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        engine: Arc<Engine>,
        root: Option<String>,
        lazy: Option<solver::LazyChain>,
        config: Image,
        base_history: Vec<History>,
        source_date_epoch: Option<i64>,
        tags: Vec<String>,
        events: EventSink,
        inline: Option<Inline>,
    ) -> ExportContext {
        ExportContext {
            engine,
            root,
            lazy,
            unpacked: tokio::sync::OnceCell::new(),
            config,
            base_history,
            source_date_epoch,
            tags,
            events,
            assembled: Mutex::new(Vec::new()),
            first: Mutex::new(None),
            inline,
            inlined: Mutex::new(None),
            names: Mutex::new(Vec::new()),
            attest: None,
            platform: llb::Platform::host(),
        }
    }

    /// The committed snapshot of the result, unpacking a lazy result first.
    pub async fn snapshot(&self) -> Result<Option<String>, ExportError> {
        let Some(lazy) = &self.lazy else { return Ok(self.root.clone()) };
        let top = self
            .unpacked
            .get_or_try_init(|| async {
                lazy.unpacker.unpack(&lazy.layers).await.map_err(|e| {
                    ExportError::Other(format!("cannot unpack the cached result from {}: {e}", lazy.source))
                })
            })
            .await?;
        Ok(top.clone())
    }

    /// The lazy result's layers as they are, when they have `compression` and were written with this
    /// build's SOURCE_DATE_EPOCH: the image needs no new blob.
    fn lazy_chain(&self, compression: Compression) -> Option<Vec<registry::assemble::ChainLayer>> {
        let lazy = self.lazy.as_ref()?;
        let usable = |l: &solver::LazyLayer| {
            compression_of(&l.media_type) == Some(compression) && l.epoch == self.source_date_epoch
        };
        if self.unpacked.initialized() || !lazy.layers.iter().all(usable) {
            return None;
        }
        lazy.layers
            .iter()
            .map(|l| {
                Some(registry::assemble::ChainLayer {
                    snapshot: String::new(),
                    layer: snapshotter::diff::Layer {
                        digest: l.digest.parse().ok()?,
                        size: l.size,
                        diff_id: l.diff_id.parse().ok()?,
                        media_type: l.media_type.clone(),
                    },
                    created_at: l.created.unwrap_or(0),
                })
            })
            .collect()
    }

    /// The compression of a lazy result's layers, when one compression serves them all as they are.
    fn lazy_compression(&self) -> Option<Compression> {
        let first = self.lazy.as_ref()?.layers.first()?;
        let c = compression_of(&first.media_type)?;
        self.lazy_chain(c).map(|_| c)
    }

    /// Makes the blobs of a lazy result's image available for `purpose`: a push to the registry that holds
    /// them mounts them (their source is recorded); anything else fetches them into the content store.
    pub async fn blobs_for(&self, push_to: Option<&Reference>) -> Result<(), ExportError> {
        let Some(lazy) = &self.lazy else { return Ok(()) };
        if self.unpacked.initialized() {
            return Ok(());
        }
        if let (Some(r), Some((registry, repository))) = (push_to, &lazy.origin) {
            if r.registry() == registry {
                for l in &lazy.layers {
                    let d: oci_spec::image::Digest =
                        l.digest.parse().map_err(|e| ExportError::Other(format!("{}: {e}", l.digest)))?;
                    self.engine
                        .images
                        .add_source(&d, l.size, registry, repository)
                        .map_err(ExportError::registry("recording where the cached layers are"))?;
                }
                return Ok(());
            }
        }
        lazy.unpacker
            .fetch(&lazy.layers)
            .await
            .map_err(|e| ExportError::Other(format!("cannot fetch the cached layers from {}: {e}", lazy.source)))
    }

    /// The image (config, layers, manifest in the content store), assembled once per compression and
    /// media types; the first one assembled is the build's image. A lazy result's image names its cached
    /// layers (fetched or mounted later, see [`ExportContext::blobs_for`]) when their compression is the one
    /// asked for, else the result is unpacked and diffed.
    pub async fn image(&self, compression: Compression, oci: bool) -> Result<Assembled, ExportError> {
        if let Some((_, a)) = lock(&self.assembled).iter().find(|(k, _)| *k == (compression, oci)) {
            return Ok(a.clone());
        }
        let e = self.engine.clone();
        let config = self.config_for(compression, oci).await?;
        if let Some(chain) = self.lazy_chain(compression) {
            let opts = AssembleOptions {
                compression,
                source_date_epoch: self.source_date_epoch,
                oci,
                base_history: self.base_history.clone(),
            };
            let img = blocking(move || {
                registry::assemble::assemble_chain(&e.images, &chain, &config, &opts)
                    .map_err(ExportError::registry("assembling the image"))
            })
            .await?;
            lock(&self.assembled).push(((compression, oci), img.clone()));
            lock(&self.first).get_or_insert_with(|| img.clone());
            return Ok(img);
        }
        let root = self.snapshot().await?;
        let opts = AssembleOptions {
            compression,
            source_date_epoch: self.source_date_epoch,
            oci,
            base_history: self.base_history.clone(),
        };
        let img = blocking(move || {
            registry::assemble::assemble_image(
                &e.images,
                &*e.store.snapshotter,
                &e.store.meta,
                root.as_deref(),
                &config,
                &opts,
            )
            .map_err(ExportError::registry("assembling the image"))
        })
        .await?;
        lock(&self.assembled).push(((compression, oci), img.clone()));
        lock(&self.first).get_or_insert_with(|| img.clone());
        Ok(img)
    }

    /// (results, layers) of the inline cache record put in an image's config, if one was.
    pub(crate) fn inlined(&self) -> Option<(usize, usize)> {
        *lock(&self.inlined)
    }

    /// The image config, with the inline cache record when `--cache-to type=inline` asks for one.
    async fn config_for(&self, compression: Compression, oci: bool) -> Result<Image, ExportError> {
        let mut config = self.config.clone();
        let Some(inline) = &self.inline else { return Ok(config) };
        let (e, steps, imports) = (self.engine.clone(), inline.steps.clone(), inline.imports.clone());
        let (root, epoch) = (self.root.clone(), self.source_date_epoch);
        let record = blocking(move || {
            crate::cache::inline_record(&e, &steps, root.as_deref(), &imports, compression, oci, epoch)
        })
        .await?;
        let counts = (
            record["results"].as_object().map(|r| r.len()).unwrap_or(0),
            record["layers"].as_array().map(|l| l.len()).unwrap_or(0),
        );
        lock(&self.inlined).get_or_insert(counts);
        config.extra.insert(crate::cache::INLINE_KEY.to_string(), record);
        Ok(config)
    }

    /// The first image assembled, if any.
    pub(crate) fn first_image(&self) -> Option<Assembled> {
        lock(&self.first).clone()
    }

    /// Names given to the image in the local store (`image.name` in the metadata).
    pub(crate) fn names(&self) -> Vec<String> {
        lock(&self.names).clone()
    }

    fn emit(&self, e: ExportEvent) {
        let _ = self.events.send(Event::Export(e));
    }

    /// Names `named` `r` in the local store and, with `push`, pushes `pushed` (the image, or the index
    /// holding it and its attestations) to `r`, saying each as it is done.
    pub(crate) async fn name_and_push(
        &self,
        r: &Reference,
        named: &Descriptor,
        pushed: &Descriptor,
        push: bool,
    ) -> Result<(), ExportError> {
        let (e, r2, target) = (self.engine.clone(), r.clone(), named.clone());
        blocking(move || e.images.tag(&r2, &target).map_err(ExportError::registry(format!("naming {r2}")))).await?;
        self.emit(ExportEvent::Named { reference: r.to_string() });
        if push {
            let report = self
                .engine
                .client
                .push(&self.engine.images, pushed, r)
                .await
                .map_err(ExportError::registry(format!("pushing {r}")))?;
            self.emit(ExportEvent::Pushed {
                reference: r.to_string(),
                uploaded: report.uploaded.len(),
                mounted: report.mounted.len(),
                existed: report.existed.len(),
            });
        }
        Ok(())
    }

    /// `names`, else the `-t` names, parsed; no name at all is one unnamed entry.
    fn references(
        &self,
        names: &[String],
        target: &Descriptor,
    ) -> Result<Vec<(Option<Reference>, Descriptor)>, ExportError> {
        Ok(self.reference_names(names)?.into_iter().map(|n| (n, target.clone())).collect())
    }

    /// The names an output gives its image: its own, else the `-t` names, else one unnamed entry.
    fn reference_names(&self, names: &[String]) -> Result<Vec<Option<Reference>>, ExportError> {
        let names = if names.is_empty() { &self.tags } else { names };
        if names.is_empty() {
            return Ok(vec![None]);
        }
        names.iter().map(|n| Ok(Some(parse_name(n)?))).collect()
    }
}

type Descriptor = oci_spec::image::Descriptor;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn parse_name(n: &str) -> Result<Reference, ExportError> {
    Reference::parse(n).map_err(|e| ExportError::Other(format!("invalid image name {n}: {e}")))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ExportError> + Send + 'static,
) -> Result<T, ExportError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| ExportError::Other(format!("an export task failed: {e}")))?
}

/// `-t` / `type=image` / `type=registry`: the image in the local store under its names, pushed when asked.
struct ImageExporter {
    names: Vec<String>,
    push: bool,
    /// As asked; by default gzip for a push or an inline cache (whose record names the pushed layers),
    /// else none: the local store keeps layers uncompressed and `rbuild push` compresses them once.
    compression: Option<Compression>,
    oci: bool,
}

impl ImageExporter {
    fn compression(&self, cx: &ExportContext) -> Compression {
        match self.compression {
            Some(c) => c,
            None if self.push || cx.inline.is_some() => Compression::Gzip,
            // A cached result's layers as they came, rather than unpacking and diffing them again.
            None => cx.lazy_compression().unwrap_or(Compression::None),
        }
    }
}

impl Exporter for ImageExporter {
    fn describe(&self) -> String {
        "exporting to image".into()
    }

    fn export<'a>(&'a self, set: &'a Exports) -> BoxFuture<'a, Result<(), ExportError>> {
        Box::pin(async move {
            let Some(cx) = set.single() else { return self.export_index(set).await };
            // An index of attestations names the image with OCI media types, as buildx makes it.
            let attest = cx.attest.as_ref().filter(|_| self.push);
            let oci = self.oci || attest.is_some_and(|p| p.options.wants_index());
            let img = cx.image(self.compression(cx), oci).await?;
            let names: Vec<String> = if self.names.is_empty() { cx.tags.clone() } else { self.names.clone() };
            let pushed = match attest {
                Some(plan) if plan.options.wants_index() => crate::attest::attach(cx, plan, &img, &names).await?.index,
                Some(plan) => {
                    let (images, m, a) =
                        (cx.engine.images.clone(), img.manifest.clone(), plan.options.annotations.clone());
                    blocking(move || {
                        registry::attest::annotate_manifest(&images, &m, &a.manifest)
                            .map_err(ExportError::registry("annotating the image manifest"))
                    })
                    .await?
                }
                None => img.manifest.clone(),
            };
            for n in &names {
                let r = parse_name(n)?;
                // A cached result pushed to its cache's registry needs no blob here.
                cx.blobs_for(if self.push { Some(&r) } else { None }).await?;
                cx.name_and_push(&r, &img.manifest, &pushed, self.push).await?;
            }
            lock(&cx.names).extend(names);
            Ok(())
        })
    }
}

/// `type=oci` and `type=docker`: an archive (or an OCI layout directory with `tar=false`) at `dest`, on
/// standard output, or (docker without a dest) piped into `docker load`.
struct ArchiveExporter {
    dest: Option<Dest>,
    dir: bool,
    names: Vec<String>,
    compression: Compression,
    oci: bool,
    docker: bool,
}

impl Exporter for ArchiveExporter {
    fn describe(&self) -> String {
        if self.docker { "exporting to docker image format" } else { "exporting to oci image format" }.into()
    }

    fn export<'a>(&'a self, set: &'a Exports) -> BoxFuture<'a, Result<(), ExportError>> {
        Box::pin(async move {
            let cx = match set.single() {
                Some(cx) => cx,
                None if self.docker => set.for_docker(),
                None => return self.export_index(set).await,
            };
            if self.write_compressing(cx).await? {
                return Ok(());
            }
            let img = cx.image(self.compression, self.oci).await?;
            cx.blobs_for(None).await?;
            let refs = cx.references(&self.names, &img.manifest)?;
            self.write(cx, refs).await
        })
    }
}

impl ArchiveExporter {
    /// The archive file of an image whose layers the store keeps uncompressed (built with `-t`), each
    /// such layer compressed straight into the archive rather than into the content store and then
    /// copied: the compressed bytes are written once and not fsynced, as `tar | zstd > file` writes them
    /// (the store's copy would cost a second write and the disk's time for its fsync). The image is
    /// the one [`ExportContext::image`] assembles, manifest for manifest; its compressed layers are not
    /// kept, so a later push compresses them again. False (nothing written) where this does not
    /// apply: no file destination, a layer that still has to be diffed or none left to compress, a
    /// lazy result, an inline cache record.
    async fn write_compressing(&self, cx: &ExportContext) -> Result<bool, ExportError> {
        let Some(dest @ Dest::Path(_)) = &self.dest else { return Ok(false) };
        let compression = self.compression;
        if self.dir || self.docker || compression == Compression::None || !is_file_dest(dest) {
            return Ok(false);
        }
        if cx.lazy.is_some() || cx.inline.is_some() {
            return Ok(false);
        }
        let (e, root, epoch) = (cx.engine.clone(), cx.root.clone(), cx.source_date_epoch);
        let chain = blocking(move || {
            registry::assemble::stored_chain(
                &e.images,
                &*e.store.snapshotter,
                &e.store.meta,
                root.as_deref(),
                compression,
                epoch,
            )
            .map_err(ExportError::registry("assembling the image"))
        })
        .await?;
        let Some(chain) = chain.filter(|c| c.iter().any(|l| matches!(l, StoredLayer::Uncompressed(_)))) else {
            return Ok(false);
        };
        let config = cx.config_for(compression, self.oci).await?;
        let opts = AssembleOptions {
            compression,
            source_date_epoch: cx.source_date_epoch,
            oci: self.oci,
            base_history: cx.base_history.clone(),
        };
        let names = cx.reference_names(&self.names)?;
        let (images, dest) = (cx.engine.images.clone(), dest.clone());
        let img = blocking(move || {
            let mut assembled = None;
            write_dest(&dest, |sink| {
                let Sink::File(f) = sink else {
                    return Err(ExportError::Other("the archive destination is not a file".into()));
                };
                let reg = |e| ExportError::registry("writing the archive")(e);
                let mut archive = registry::export::ArchiveFile::start(f).map_err(&reg)?;
                let mut layers = Vec::with_capacity(chain.len());
                for l in chain {
                    layers.push(match l {
                        StoredLayer::Ready(c) => c,
                        StoredLayer::Uncompressed(mut c) => {
                            c.layer = archive.compress_layer(&images, &c.layer, compression).map_err(&reg)?;
                            c
                        }
                    });
                }
                let img = registry::assemble::assemble_chain(&images, &layers, &config, &opts)
                    .map_err(ExportError::registry("assembling the image"))?;
                let refs: Vec<_> = names.into_iter().map(|n| (n, img.manifest.clone())).collect();
                archive.finish(&images, &refs, ArchiveFormat::Oci).map_err(reg)?;
                assembled = Some(img);
                Ok(())
            })?;
            assembled.ok_or_else(|| ExportError::Other("the archive was not written".into()))
        })
        .await?;
        // Not remembered as the image for this compression: its layers are in the archive only, and
        // another output (a push) must assemble one whose layers are in the store.
        lock(&cx.first).get_or_insert(img);
        Ok(true)
    }

    /// Writes the archive of `refs` (names and the manifest or index each names).
    async fn write(&self, cx: &ExportContext, refs: Vec<(Option<Reference>, Descriptor)>) -> Result<(), ExportError> {
        let images = cx.engine.images.clone();
        let format = if self.docker { ArchiveFormat::Docker } else { ArchiveFormat::Oci };
        let (dest, dir) = (self.dest.clone(), self.dir);
        blocking(move || {
            let save = |sink: Sink<'_>| {
                match sink {
                    Sink::File(f) => registry::export::save_file(&images, &refs, format, f),
                    Sink::Stream(w) => registry::export::save(&images, &refs, format, w),
                }
                .map_err(ExportError::registry("writing the archive"))
            };
            match (dest, dir) {
                (Some(Dest::Path(p)), true) => registry::export::write_oci_dir(&images, &refs, &p)
                    .map_err(ExportError::registry(format!("writing OCI layout {}", p.display()))),
                (Some(d), _) => write_dest(&d, save),
                (None, _) => docker_load(save),
            }
        })
        .await
    }
}

/// `type=local`: the result's filesystem as a directory.
struct LocalExporter {
    dest: PathBuf,
}

impl Exporter for LocalExporter {
    fn describe(&self) -> String {
        "exporting to client directory".into()
    }

    fn export<'a>(&'a self, set: &'a Exports) -> BoxFuture<'a, Result<(), ExportError>> {
        Box::pin(async move {
            let Some(cx) = set.single() else { return platforms::export_local_split(set, &self.dest).await };
            let (e, root, dest) = (cx.engine.clone(), cx.snapshot().await?, self.dest.clone());
            blocking(move || match &root {
                Some(key) => snapshotter::export::export_dir(&*e.store.snapshotter, key, &dest)
                    .map_err(ExportError::snapshot(format!("exporting the filesystem to {}", dest.display()))),
                None => std::fs::create_dir_all(&dest).map_err(ExportError::io(format!("creating {}", dest.display()))),
            })
            .await
        })
    }
}

/// `type=tar`: the result's filesystem as a tar.
struct TarExporter {
    dest: Dest,
}

impl Exporter for TarExporter {
    fn describe(&self) -> String {
        "exporting to client tarball".into()
    }

    fn export<'a>(&'a self, set: &'a Exports) -> BoxFuture<'a, Result<(), ExportError>> {
        Box::pin(async move {
            let Some(cx) = set.single() else { return platforms::export_tar_split(set, &self.dest).await };
            let epoch = cx.source_date_epoch.map(|e| e.max(0) as u64);
            let (e, root, dest) = (cx.engine.clone(), cx.snapshot().await?, self.dest.clone());
            blocking(move || {
                let scratch = e.store.root.tmp_dir();
                write_dest(&dest, |mut w| match &root {
                    Some(key) => snapshotter::export::export_tar(&*e.store.snapshotter, key, &scratch, &mut w, epoch)
                        .map(drop)
                        .map_err(ExportError::snapshot("writing the filesystem tar")),
                    None => tar::Builder::new(&mut w).finish().map_err(ExportError::io("writing an empty tar")),
                })
            })
            .await
        })
    }
}

/// Where [`write_dest`] writes: a file (which an archive fills with `copy_file_range`) or a stream.
pub(crate) enum Sink<'a> {
    File(&'a mut std::fs::File),
    Stream(&'a mut dyn Write),
}

impl Write for Sink<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Sink::File(f) => f.write(buf),
            Sink::Stream(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Sink::File(f) => f.flush(),
            Sink::Stream(w) => w.flush(),
        }
    }
}

/// Writes to a file atomically (temp file + rename), or to standard output. The file is not fsynced:
/// like `buildctl --output type=oci,dest=…` and `docker save -o`, the rename makes it whole or absent,
/// and the kernel writes it back as it writes any other file.
fn write_dest(dest: &Dest, write: impl FnOnce(Sink<'_>) -> Result<(), ExportError>) -> Result<(), ExportError> {
    match dest {
        Dest::Stdout => {
            let stdout = std::io::stdout();
            let mut lock = stdout.lock();
            write(Sink::Stream(&mut lock))?;
            lock.flush().map_err(ExportError::io("writing to standard output"))
        }
        Dest::Writer(w) => {
            let mut w = w.0.lock().unwrap_or_else(|e| e.into_inner());
            write(Sink::Stream(&mut *w))?;
            w.flush().map_err(ExportError::io("writing the output stream"))
        }
        // A device or a pipe (`dest=/dev/null`, a FIFO) is written in place: renaming a file over it would
        // replace the device node itself.
        Dest::Path(p) if !is_file_dest(dest) => {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .open(p)
                .map_err(ExportError::io(format!("cannot write {}", p.display())))?;
            write(Sink::Stream(&mut f))?;
            f.flush().map_err(ExportError::io(format!("cannot write {}", p.display())))
        }
        Dest::Path(p) => {
            let dir = p.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
            remove_stale_partials(dir);
            // Mode 0666 less the umask, as any file the user writes (a temp file's 0600 would stay).
            let mut tmp = tempfile::Builder::new()
                .prefix(&format!("{PARTIAL_PREFIX}{}-", std::process::id()))
                .permissions(std::fs::Permissions::from_mode(0o666))
                .tempfile_in(dir)
                .map_err(ExportError::io(format!("cannot write in {}", dir.display())))?;
            write(Sink::File(tmp.as_file_mut()))?;
            tmp.persist(p)
                .map_err(|e| ExportError::Io { what: format!("cannot write {}", p.display()), cause: e.error })?;
            Ok(())
        }
    }
}

/// Whether [`write_dest`] writes `dest` as a file of its own (a temporary file renamed into place), the
/// destination it hands a [`Sink::File`].
fn is_file_dest(dest: &Dest) -> bool {
    match dest {
        Dest::Path(p) => !std::fs::metadata(p).is_ok_and(|m| !m.is_file() && !m.is_dir()),
        Dest::Stdout | Dest::Writer(_) => false,
    }
}

/// The name of an export being written beside its destination: `.rbuild-partial-<pid>-<random>`.
const PARTIAL_PREFIX: &str = ".rbuild-partial-";

/// Removes what a killed export left in `dir`: partial files whose process is gone. Best effort: a file
/// that cannot be removed now is tried again by the next export into `dir`.
fn remove_stale_partials(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(PARTIAL_PREFIX)) else { continue };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else { continue };
        if pid != std::process::id() && !Path::new("/proc").join(pid.to_string()).exists() {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Pipes a docker archive into `docker load`.
fn docker_load(save: impl FnOnce(Sink<'_>) -> Result<(), ExportError>) -> Result<(), ExportError> {
    let mut child = std::process::Command::new("docker")
        .arg("load")
        .stdin(std::process::Stdio::piped())
        .spawn()
        .map_err(ExportError::io(
        "--load needs the docker CLI and a running daemon; install docker or use --output type=docker,dest=image.tar",
    ))?;
    let mut stdin = child.stdin.take().ok_or_else(|| ExportError::Other("docker load has no stdin".into()))?;
    let res = save(Sink::Stream(&mut stdin));
    drop(stdin);
    let status = child.wait().map_err(ExportError::io("waiting for docker load"))?;
    res?;
    if !status.success() {
        return Err(ExportError::Other(format!("docker load failed ({status})")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pipe_destination_is_written_in_place_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("out.fifo");
        let st = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
        assert!(st.success(), "mkfifo");
        let reader = {
            let fifo = fifo.clone();
            std::thread::spawn(move || std::fs::read(fifo).unwrap())
        };
        write_dest(&Dest::Path(fifo.clone()), |mut w| w.write_all(b"archive bytes").map_err(ExportError::io("test")))
            .unwrap();
        // Checked before joining: a reader of a replaced FIFO would wait forever.
        use std::os::unix::fs::FileTypeExt;
        assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo(), "the FIFO is still a FIFO");
        assert_eq!(reader.join().unwrap(), b"archive bytes");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no partial file left beside it");
    }
}
