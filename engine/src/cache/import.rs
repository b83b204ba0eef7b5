//! `--cache-from`: a cache artifact read as a [`CacheStore`] the solver asks after its own. Importing reads
//! the manifest and the record only; a hit fetches the chain's blobs (from the registry, or the layout
//! directory) into the content store, verified against their digests, and unpacks them as snapshots named
//! by chainID. A blob that is gone or does not verify makes the hit a miss: the step runs.

use std::path::PathBuf;
use std::sync::Arc;

use llb::Digest;
use oci_spec::image::{Descriptor, MediaType};
use registry::manifest::{media, Parsed, RawManifest};
use registry::unpack::PulledImage;
use registry::Reference;
use snapshotter::content::{ContentWriter, Ingester};
use solver::op::{BoxFuture, CacheStore, Hit};
use solver::{ChainUnpacker, ImageError, LazyChain, LazyLayer, SolveError, WorkerRef};

use super::record::{CacheRecord, CONFIG_MEDIA_TYPE};
use super::{layout, CacheFrom};
use crate::progress::{CacheEvent, Event, EventSink};
use crate::Engine;

enum Source {
    Registry(Reference),
    Local(PathBuf),
    Gha(Arc<super::gha::GhaCache>),
}

/// An imported cache.
pub struct ImportedCache {
    name: String,
    record: CacheRecord,
    unpacker: Arc<Unpacker>,
    /// The registry and repository that hold the blobs (a push there mounts them).
    origin: Option<(String, String)>,
}

/// Gets an imported cache's layers: from its registry or layout directory, verified, into the content
/// store, and unpacked when asked.
struct Unpacker {
    name: String,
    source: Source,
    engine: Arc<Engine>,
    events: EventSink,
    /// One chain at a time per base layer: chains on the same base share its layers (unpacked once, not
    /// twice at once), chains on different bases unpack side by side.
    locks: std::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Blobs known to be there (checked, or in the content store).
    present: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl ImportedCache {
    /// The entries the record holds.
    pub fn results(&self) -> usize {
        self.record.results.len()
    }

    /// The miss-explanation record the exporting build carried, if any.
    pub(crate) fn explain(&self) -> Option<&serde_json::Value> {
        self.record.explain.as_ref()
    }

    /// The entry of `key`: per output, its layers (base first).
    pub(crate) fn entry(&self, key: &str) -> Option<Vec<Option<Vec<super::record::LayerEntry>>>> {
        let outputs = self.record.results.get(key)?;
        Some(
            outputs
                .iter()
                .map(|o| o.as_ref().map(|c| c.iter().map(|i| self.record.layers[*i].clone()).collect()))
                .collect(),
        )
    }

    /// Makes `layers` of this cache available to a push to `target`: mounted from the cache's repository
    /// when `target` is in the same registry (their source is recorded), else fetched into the content store.
    pub(crate) async fn provide(
        &self,
        layers: &[super::record::LayerEntry],
        target: Option<&Reference>,
    ) -> Result<(), String> {
        let e = &self.unpacker.engine;
        let mut missing = Vec::new();
        for l in layers {
            let d = oci_digest(&l.digest)?;
            if !e.images.has_blob(&d).map_err(|e| e.to_string())? {
                missing.push((d, l));
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        if let (Some(t), Some((registry, repository))) = (target, &self.origin) {
            if t.registry() == registry {
                for (d, l) in &missing {
                    e.images.add_source(d, l.size, registry, repository).map_err(|e| e.to_string())?;
                }
                return Ok(());
            }
        }
        let lazy: Vec<LazyLayer> = missing
            .iter()
            .map(|(_, l)| LazyLayer {
                digest: l.digest.clone(),
                diff_id: l.diff_id.clone(),
                size: l.size,
                media_type: l.media_type.clone(),
                created: l.created,
                epoch: l.epoch,
            })
            .collect();
        let (descs, _) = descriptors(&lazy)?;
        self.unpacker.fetch_blobs(&descs).await
    }
}

fn oci_digest(s: &str) -> Result<oci_spec::image::Digest, String> {
    s.parse().map_err(|e| format!("invalid digest {s}: {e}"))
}

/// Reads the manifest and the record of `from`.
pub async fn import(engine: &Arc<Engine>, from: &CacheFrom, events: EventSink) -> Result<ImportedCache, String> {
    let name = from.describe();
    let (record, source) = match from {
        CacheFrom::Registry { reference } => {
            let r = Reference::parse(reference).map_err(|e| e.to_string())?;
            let client = &engine.client;
            let (ep, top) = client.resolve(&r).await.map_err(|e| e.to_string())?;
            let manifest = match top.parse().map_err(|e| e.to_string())? {
                Parsed::Manifest(m) => *m,
                Parsed::Index(ix) => {
                    let entry = ix
                        .manifests()
                        .iter()
                        .find(|d| media::is_manifest(d.media_type().as_ref()))
                        .ok_or_else(|| format!("{reference} is an index without a manifest"))?;
                    let raw =
                        client.fetch_manifest(&ep, &r, entry.digest().as_ref()).await.map_err(|e| e.to_string())?;
                    match raw.parse().map_err(|e| e.to_string())? {
                        Parsed::Manifest(m) => *m,
                        Parsed::Index(_) => {
                            return Err(format!("{reference} nests indexes; it is not an rbuild cache"))
                        }
                    }
                }
            };
            let config = manifest.config().clone();
            let image_config = [media::OCI_CONFIG, media::DOCKER_CONFIG].contains(&config.media_type().as_ref());
            if !image_config {
                check_config_type(&config, reference)?;
            }
            let pinned = r.digest_only(top.digest.clone());
            client
                .fetch_missing(&pinned, std::slice::from_ref(&config), &engine.images, None)
                .await
                .map_err(|e| e.to_string())?;
            let bytes = engine.images.read_blob(config.digest()).map_err(|e| e.to_string())?;
            let record = if image_config {
                // An image pushed with `--cache-to type=inline`: the record is in its config.
                let v: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| format!("{reference}: {e}"))?;
                let inline = v.get(super::INLINE_KEY).ok_or_else(|| {
                    format!("{reference} is an image without an inline cache (build it with --cache-to type=inline)")
                })?;
                CacheRecord::parse(inline.to_string().as_bytes())?
            } else {
                CacheRecord::parse(&bytes)?
            };
            (record, Source::Registry(pinned))
        }
        CacheFrom::Local { src, tag } => {
            let (src2, tag) = (src.clone(), tag.clone());
            let record = tokio::task::spawn_blocking(move || read_local(&src2, &tag))
                .await
                .map_err(|e| format!("reading the cache failed: {e}"))??;
            (record, Source::Local(src.clone()))
        }
        CacheFrom::Gha { scope, service } => {
            let g = Arc::new(super::gha::GhaCache::new(service, scope)?);
            (g.read_record().await?, Source::Gha(g))
        }
    };
    let origin = match &source {
        Source::Registry(r) => Some((r.registry().to_string(), r.repository().to_string())),
        Source::Local(_) | Source::Gha(_) => None,
    };
    let unpacker = Arc::new(Unpacker {
        name: name.clone(),
        source,
        engine: engine.clone(),
        events,
        locks: Default::default(),
        present: Default::default(),
    });
    Ok(ImportedCache { name, record, unpacker, origin })
}

pub(super) fn check_config_type(config: &Descriptor, what: &str) -> Result<(), String> {
    if config.media_type().as_ref() != CONFIG_MEDIA_TYPE {
        return Err(format!(
            "{what} is not an rbuild cache (its config is {}, not {CONFIG_MEDIA_TYPE})",
            config.media_type()
        ));
    }
    Ok(())
}

/// The record of the layout at `dir`, tag `tag`. Blocking.
fn read_local(dir: &std::path::Path, tag: &str) -> Result<CacheRecord, String> {
    let read = |digest: &str| {
        let p = layout::blob_path(dir, digest)?;
        std::fs::read(&p).map_err(|e| format!("cannot read {}: {e}", p.display()))
    };
    let top = layout::lookup(dir, tag)?;
    let digest = top["digest"].as_str().ok_or("index.json entry without a digest")?;
    let media_type = top["mediaType"].as_str().unwrap_or(media::OCI_MANIFEST).to_string();
    let mut raw = RawManifest::new(Some(&media_type), read(digest)?);
    if let Parsed::Index(ix) = raw.parse().map_err(|e| e.to_string())? {
        let entry = ix.manifests().first().ok_or("the cache index is empty")?;
        raw = RawManifest::new(Some(entry.media_type().as_ref()), read(entry.digest().as_ref())?);
    }
    let Parsed::Manifest(m) = raw.parse().map_err(|e| e.to_string())? else {
        return Err("the cache index nests another index".into());
    };
    check_config_type(m.config(), &dir.display().to_string())?;
    CacheRecord::parse(&read(m.config().digest().as_ref())?)
}

fn descriptors(layers: &[LazyLayer]) -> Result<(Vec<Descriptor>, Vec<oci_spec::image::Digest>), String> {
    let descs = layers
        .iter()
        .map(|l| Ok(Descriptor::new(MediaType::from(l.media_type.as_str()), l.size, oci_digest(&l.digest)?)))
        .collect::<Result<Vec<_>, String>>()?;
    let diff_ids = layers.iter().map(|l| oci_digest(&l.diff_id)).collect::<Result<Vec<_>, String>>()?;
    Ok((descs, diff_ids))
}

impl Unpacker {
    /// Checks that a hit can be used: a layout's blobs are copied in and verified now (cheap, and a corrupted
    /// one is a miss); a registry's are asked for with a HEAD (a blob that is gone is a miss), fetched and
    /// verified only when needed.
    async fn verify(&self, layers: &[LazyLayer]) -> Result<(), String> {
        let (descs, _) = descriptors(layers)?;
        let todo: Vec<Descriptor> = {
            let present = self.present.lock().unwrap_or_else(|e| e.into_inner());
            descs.into_iter().filter(|d| !present.contains(d.digest().as_ref())).collect()
        };
        if todo.is_empty() {
            return Ok(());
        }
        match &self.source {
            Source::Local(_) => self.fetch_blobs(&todo).await?,
            Source::Registry(r) => {
                for d in &todo {
                    if self.engine.images.has_blob(d.digest()).map_err(|e| e.to_string())? {
                        continue;
                    }
                    let there = self.engine.client.blob_exists(r, d.digest()).await.map_err(|e| e.to_string())?;
                    if !there {
                        return Err(format!("blob {} is gone from {}", d.digest(), r.name()));
                    }
                }
            }
            Source::Gha(g) => {
                for d in &todo {
                    if self.engine.images.has_blob(d.digest()).map_err(|e| e.to_string())? {
                        continue;
                    }
                    if !g.has_blob(d.digest().as_ref()).await? {
                        return Err(format!("blob {} is gone from the GitHub Actions cache", d.digest()));
                    }
                }
            }
        }
        let mut present = self.present.lock().unwrap_or_else(|e| e.into_inner());
        present.extend(todo.iter().map(|d| d.digest().to_string()));
        Ok(())
    }

    /// Fetches the blobs of `layers` into the content store, each verified, and reports what was fetched
    /// (blobs already there cost nothing and are not counted).
    async fn fetch_blobs(&self, descs: &[Descriptor]) -> Result<(), String> {
        let e = &self.engine;
        let fetched: Vec<(String, u64)> = match &self.source {
            Source::Registry(r) => {
                let got = e.client.fetch_missing(r, descs, &e.images, None).await.map_err(|e| e.to_string())?;
                descs.iter().filter(|d| got.contains(d.digest())).map(|d| (d.digest().to_string(), d.size())).collect()
            }
            Source::Local(dir) => {
                let (e, dir, descs) = (e.clone(), dir.clone(), descs.to_vec());
                tokio::task::spawn_blocking(move || copy_in(&e, &dir, &descs))
                    .await
                    .map_err(|e| format!("copying cache blobs failed: {e}"))??
            }
            Source::Gha(g) => {
                let mut got = Vec::new();
                for d in descs {
                    if !e.images.has_blob(d.digest()).map_err(|e| e.to_string())? {
                        g.fetch(e, d).await?;
                        got.push((d.digest().to_string(), d.size()));
                    }
                }
                got
            }
        };
        if !fetched.is_empty() {
            let bytes = fetched.iter().map(|(_, n)| n).sum();
            let event = CacheEvent::Fetched { from: self.name.clone(), blobs: fetched.len(), bytes };
            let _ = self.events.send(Event::Cache(event));
        }
        Ok(())
    }

    async fn unpack_chain(&self, layers: &[LazyLayer]) -> Result<Option<String>, String> {
        let (descs, diff_ids) = descriptors(layers)?;
        let base = layers.first().map(|l| l.digest.clone()).unwrap_or_default();
        let lock = self.locks.lock().unwrap_or_else(|e| e.into_inner()).entry(base).or_default().clone();
        let _one = lock.lock().await;
        self.fetch_blobs(&descs).await?;
        let e = self.engine.clone();
        let pulled = PulledImage::new(self.name.clone(), descs, diff_ids);
        tokio::task::spawn_blocking(move || registry::unpack::unpack_pulled(&e.images, &*e.store.snapshotter, &pulled))
            .await
            .map_err(|e| format!("unpacking cache layers failed: {e}"))?
            .map_err(|e| e.to_string())
    }
}

impl ChainUnpacker for Unpacker {
    fn unpack<'a>(&'a self, layers: &'a [LazyLayer]) -> BoxFuture<'a, Result<Option<String>, ImageError>> {
        Box::pin(async move { self.unpack_chain(layers).await.map_err(|m| ImageError(m.into())) })
    }

    fn fetch<'a>(&'a self, layers: &'a [LazyLayer]) -> BoxFuture<'a, Result<(), ImageError>> {
        Box::pin(async move {
            let (descs, _) = descriptors(layers).map_err(|m| ImageError(m.into()))?;
            self.fetch_blobs(&descs).await.map_err(|m| ImageError(m.into()))
        })
    }
}

impl ImportedCache {
    fn warn(&self, key: &Digest, message: String) {
        let e = CacheEvent::Miss { from: self.name.clone(), key: key.to_string(), error: message };
        let _ = self.unpacker.events.send(Event::Cache(e));
    }

    /// The record's chain as lazy layers.
    fn chain(&self, indexes: &[usize]) -> LazyChain {
        let layers = indexes
            .iter()
            .map(|i| {
                let l = &self.record.layers[*i];
                LazyLayer {
                    digest: l.digest.clone(),
                    diff_id: l.diff_id.clone(),
                    size: l.size,
                    media_type: l.media_type.clone(),
                    created: l.created,
                    epoch: l.epoch,
                }
            })
            .collect();
        LazyChain { layers, source: self.name.clone(), origin: self.origin.clone(), unpacker: self.unpacker.clone() }
    }
}

/// Copies the blobs a layout holds into the content store, each verified against its digest; returns the
/// ones copied (digest, size). Blocking.
fn copy_in(engine: &Engine, dir: &std::path::Path, descs: &[Descriptor]) -> Result<Vec<(String, u64)>, String> {
    let mut copied = Vec::new();
    for d in descs {
        if engine.images.has_blob(d.digest()).map_err(|e| e.to_string())? {
            continue;
        }
        let p = layout::blob_path(dir, d.digest().as_ref())?;
        let mut f = std::fs::File::open(&p).map_err(|e| format!("blob {} is gone: {e}", d.digest()))?;
        let content = engine.images.content();
        let mut w = content.writer(&format!("cache-{}", d.digest()), Some(d.size())).map_err(|e| e.to_string())?;
        std::io::copy(&mut f, &mut w).map_err(|e| format!("cannot read {}: {e}", p.display()))?;
        w.commit(Some(d.size()), Some(d.digest())).map_err(|e| format!("blob {}: {e}", d.digest()))?;
        copied.push((d.digest().to_string(), d.size()));
    }
    Ok(copied)
}

impl CacheStore<WorkerRef> for ImportedCache {
    /// A hit is lazy: nothing is unpacked until a step or an exporter needs the files or the blobs; see
    /// [`Unpacker::verify`] for what is checked now.
    fn load<'a>(&'a self, key: &'a Digest) -> BoxFuture<'a, Result<Option<Hit<WorkerRef>>, SolveError>> {
        Box::pin(async move {
            let Some(outputs) = self.record.results.get(&key.to_string()) else { return Ok(None) };
            let mut refs = Vec::new();
            for out in outputs {
                refs.push(match out {
                    None => WorkerRef::Snapshot(None),
                    Some(chain) => {
                        let lazy = self.chain(chain);
                        if let Err(m) = self.unpacker.verify(&lazy.layers).await {
                            self.warn(key, m);
                            return Ok(None);
                        }
                        WorkerRef::Lazy(lazy)
                    }
                });
            }
            Ok(Some(Hit { outputs: refs, source: Some(self.name.clone()) }))
        })
    }

    fn contains<'a>(&'a self, key: &'a Digest) -> BoxFuture<'a, Result<bool, SolveError>> {
        Box::pin(async move { Ok(self.record.results.contains_key(&key.to_string())) })
    }

    fn save<'a>(&'a self, _key: &'a Digest, _results: &'a [WorkerRef]) -> BoxFuture<'a, Result<(), SolveError>> {
        // Read only: results go to this machine's cache, and to a `--cache-to` at the end.
        Box::pin(async { Ok(()) })
    }
}
