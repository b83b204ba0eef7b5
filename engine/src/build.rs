//! One build, start to end: check the request, convert the Dockerfile (resolving base images), solve,
//! export, and collect the metadata.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use frontend::convert::{ConvertOptions, Converted};
use llb::Platform;
use solver::{LocalSource, SolveOptions};
use tokio_util::sync::CancellationToken;

use crate::bases::RegistryResolver;
use crate::cache;
use crate::error::BuildError;
use crate::export::{exporter, ExportContext, OutputKind};
use crate::progress::{CacheEvent, Event, EventSink};
use crate::request::{BuildRequest, Entitlement, NamedContext};
use crate::result::{BuildResult, ExportedImage};
use crate::Engine;

/// The local source name of the build context (the frontend's name for it).
const CONTEXT: &str = "context";

pub(crate) async fn run(
    engine: Arc<Engine>,
    req: BuildRequest,
    events: EventSink,
    cancel: CancellationToken,
) -> Result<BuildResult, BuildError> {
    check(&req)?;
    let started = std::time::SystemTime::now();
    if req.call == crate::check::Call::Check {
        return crate::check::run(&engine, &req, &events).await;
    }
    // One conversion per target platform (one for a single-platform build), solved together. The
    // `--cache-from` manifests are read meanwhile: neither waits for the other's registry round trips, and
    // the imported hits (and the unpacking of their layers) start sooner.
    let targets = crate::platforms::targets(&req);
    let converting = async {
        let mut all = Vec::with_capacity(targets.len());
        for target in &targets {
            all.push(tokio::select! {
                c = convert(&engine, &req, target.clone(), &events) => c?,
                _ = cancel.cancelled() => return Err(BuildError::Cancelled),
            });
        }
        Ok(all)
    };
    let (all, imports) = tokio::join!(converting, import_caches(&engine, &req, &events));
    let all = all?;
    for w in crate::platforms::warnings(&all) {
        let _ = events.send(Event::Warning(w));
    }
    if let Some(diagnostic) = all.iter().find_map(|c| c.checks.error()) {
        return Err(BuildError::Dockerfile { filename: req.dockerfile_name.clone(), diagnostic });
    }
    let (definition, roots) = crate::platforms::merge(&all);
    let explain_id = crate::explain::history_id(&req);
    // A state root without a record of this target (a fresh CI runner) compares with the imported one.
    if let Some(carried) = imports.iter().find_map(|c| c.explain().cloned()) {
        let (e, id) = (engine.clone(), explain_id.clone());
        let _ = tokio::task::spawn_blocking(move || crate::explain::adopt(&e, &id, &carried)).await;
    }
    let stores = imports.iter().map(|c| c.clone() as Arc<dyn solver::op::CacheStore<solver::WorkerRef>>).collect();
    let dirs = crate::explain::Directories::default();
    let solved = solve(&engine, &req, &definition, &roots, stores, &events, &cancel, &dirs).await?;
    for miss in crate::explain::explain(&engine, &req, &definition, &solved.steps, &dirs).await {
        let _ = events.send(Event::Miss(miss));
    }

    let mut contexts = Vec::with_capacity(all.len());
    for ((converted, result), target) in all.iter().zip(&solved.roots).zip(&targets) {
        let mut cx = ExportContext::new(
            engine.clone(),
            result.root.clone(),
            result.lazy_root.clone(),
            converted.image.clone(),
            converted.base_history.clone(),
            req.source_date_epoch,
            req.tags.clone(),
            events.clone(),
            req.cache_to
                .iter()
                .any(|c| matches!(c, cache::CacheTo::Inline { .. }))
                .then(|| crate::export::Inline { steps: solved.steps.clone(), imports: imports.clone() }),
        );
        cx.platform = target.clone().unwrap_or_else(Platform::host);
        cx.attest = crate::attest::Plan::new(&req, converted, &solved.steps, started, &cx.platform);
        contexts.push(cx);
    }
    let cx = crate::export::Exports::new(contexts);
    for spec in &req.outputs {
        if cancel.is_cancelled() {
            return Err(BuildError::Cancelled);
        }
        let e = exporter(spec);
        e.export(&cx).await.map_err(|source| BuildError::Export { output: e.describe(), source })?;
    }
    let first_root = solved.roots.first().and_then(|r| r.root.clone());
    let all_roots: Vec<String> = solved.roots.iter().filter_map(|r| r.root.clone()).collect();

    for to in &req.cache_to {
        if cancel.is_cancelled() {
            return Err(BuildError::Cancelled);
        }
        if let cache::CacheTo::Inline { .. } = to {
            let e = match cx.inlined() {
                Some((results, layers)) => {
                    CacheEvent::Exported { to: to.describe(), results, layers, new: 0, bytes: 0 }
                }
                None => {
                    CacheEvent::ExportFailed { to: to.describe(), error: "no image was exported to hold it".into() }
                }
            };
            let _ = events.send(Event::Cache(e));
            continue;
        }
        let _ = events.send(Event::Cache(CacheEvent::Exporting { to: to.describe() }));
        let epoch = req.source_date_epoch;
        let (e, id) = (engine.clone(), explain_id.clone());
        let explain = tokio::task::spawn_blocking(move || crate::explain::carried(&e, &id)).await.ok().flatten();
        match cache::export(&engine, &solved.steps, &all_roots, to, &imports, epoch, explain).await {
            Ok(r) => {
                let e = CacheEvent::Exported {
                    to: to.describe(),
                    results: r.results,
                    layers: r.layers,
                    new: r.new,
                    bytes: r.bytes,
                };
                let _ = events.send(Event::Cache(e));
            }
            Err(e) if to.options().ignore_error => {
                let _ = events.send(Event::Cache(CacheEvent::ExportFailed { to: to.describe(), error: e.to_string() }));
            }
            Err(source) => {
                return Err(BuildError::Export { output: format!("exporting cache to {}", to.describe()), source })
            }
        }
    }

    let mut metadata = serde_json::Map::new();
    let names = cx.names();
    if !names.is_empty() {
        metadata.insert("image.name".into(), serde_json::json!(names.join(",")));
    }
    let image = cx.first_image().map(|a| ExportedImage { manifest: a.manifest, config: a.config });
    let index = cx.index();
    if let Some(index) = &index {
        // buildx's keys for an index: its digest and descriptor, no config digest (there is one per platform).
        metadata.insert("containerimage.digest".into(), serde_json::json!(index.digest().to_string()));
        metadata.insert(
            "containerimage.descriptor".into(),
            serde_json::json!({
                "mediaType": index.media_type().to_string(),
                "digest": index.digest().to_string(),
                "size": index.size(),
            }),
        );
    } else if let Some(img) = &image {
        metadata.insert("containerimage.config.digest".into(), serde_json::json!(img.config.digest().to_string()));
        metadata.insert("containerimage.digest".into(), serde_json::json!(img.manifest.digest().to_string()));
        metadata.insert(
            "containerimage.descriptor".into(),
            serde_json::json!({
                "mediaType": img.manifest.media_type().to_string(),
                "digest": img.manifest.digest().to_string(),
                "size": img.manifest.size(),
            }),
        );
    }
    Ok(BuildResult { image, index, metadata, steps: solved.steps, root: first_root })
}

/// What the request asks that cannot work, before anything runs.
fn check(req: &BuildRequest) -> Result<(), BuildError> {
    let pushes_unnamed =
        req.outputs.iter().any(|o| matches!(&o.kind, OutputKind::Image { push: true, names } if names.is_empty()));
    if pushes_unnamed && req.tags.is_empty() {
        return Err(BuildError::Request("--push needs an image name: add -t registry.example.com/app:tag".into()));
    }
    if req.named_contexts.contains_key(CONTEXT) {
        return Err(BuildError::Request(
            "--build-context context=...: `context` is the name of the build context itself; choose another name"
                .into(),
        ));
    }
    Ok(())
}

/// Parses and converts the Dockerfile. Base images are resolved while converting (the frontend asks for
/// their configs), so conversion runs on a blocking thread.
async fn convert(
    engine: &Arc<Engine>,
    req: &BuildRequest,
    target: Option<Platform>,
    events: &EventSink,
) -> Result<Converted, BuildError> {
    let (mut opts, mut resolver) = convert_setup(engine, req);
    opts.target_platform = target;
    opts.platform_in_names = crate::platforms::targets(req).len() > 1;
    resolver.events = Some(events.clone());
    let (dockerfile, filename) = (req.dockerfile.clone(), req.dockerfile_name.clone());
    tokio::task::spawn_blocking(move || frontend::convert::convert(&dockerfile, &opts, &resolver))
        .await
        .map_err(|e| BuildError::Internal(format!("converting the Dockerfile failed: {e}")))?
        .map_err(|diagnostic| BuildError::Dockerfile { filename, diagnostic })
}

/// The frontend's options for a request, and the resolver that answers its base images.
pub(crate) fn convert_setup(engine: &Arc<Engine>, req: &BuildRequest) -> (ConvertOptions, RegistryResolver) {
    let excludes = match &req.dockerignore {
        Some(text) => solver::context::parse_dockerignore(text),
        None => Vec::new(),
    };
    let named_contexts = req
        .named_contexts
        .iter()
        .map(|(name, c)| {
            let c = match c {
                NamedContext::Local(_) => frontend::convert::NamedContext::Local,
                NamedContext::Image(r) => frontend::convert::NamedContext::Image(r.clone()),
            };
            (name.clone(), c)
        })
        .collect();
    let no_cache: BTreeSet<String> = req.cache.no_cache_filter.iter().map(|s| s.to_ascii_lowercase()).collect();
    let opts = ConvertOptions {
        filename: req.dockerfile_name.clone(),
        target: req.target.clone(),
        build_args: req.build_args.clone(),
        target_platform: req.platforms.first().cloned(),
        build_platform: Platform::host(),
        labels: req.labels.clone(),
        excludes,
        named_contexts,
        source_date_epoch: req.source_date_epoch,
        no_cache,
        extra_hosts: req.add_hosts.clone(),
        ulimits: req.run.llb_ulimits(),
        shm_size: req.run.shm_size,
        cgroup_parent: req.run.cgroup_parent.clone(),
        platform_in_names: false,
    };
    let resolver = RegistryResolver {
        handle: tokio::runtime::Handle::current(),
        client: engine.client.clone(),
        store: engine.images.clone(),
        pull: req.cache.pull,
        events: None,
    };
    (opts, resolver)
}

/// Reads every `--cache-from`; one that cannot be read is a warning, never a failure.
async fn import_caches(engine: &Arc<Engine>, req: &BuildRequest, events: &EventSink) -> Vec<Arc<cache::ImportedCache>> {
    let mut out = Vec::new();
    for from in &req.cache_from {
        let name = from.describe();
        let _ = events.send(Event::Cache(CacheEvent::Importing { from: name.clone() }));
        match cache::import(engine, from, events.clone()).await {
            Ok(c) => {
                let _ = events.send(Event::Cache(CacheEvent::Imported { from: name, results: c.results() }));
                out.push(Arc::new(c));
            }
            Err(error) => {
                let _ = events.send(Event::Cache(CacheEvent::ImportFailed { from: name, error }));
            }
        }
    }
    out
}

/// Solves every root of the definition (`None`: an empty result), forwarding the solver's progress as
/// [`Event::Step`]s.
#[allow(clippy::too_many_arguments)]
async fn solve(
    engine: &Arc<Engine>,
    req: &BuildRequest,
    definition: &llb::Definition,
    roots: &[Option<llb::Output>],
    imports: Vec<Arc<dyn solver::op::CacheStore<solver::WorkerRef>>>,
    events: &EventSink,
    cancel: &CancellationToken,
    dirs: &crate::explain::Directories,
) -> Result<solver::SolvedRoots, BuildError> {
    let mut locals: BTreeMap<String, Arc<dyn LocalSource>> = BTreeMap::new();
    locals.insert(CONTEXT.into(), dirs.remember(CONTEXT, req.context.clone()));
    for (name, c) in &req.named_contexts {
        if let NamedContext::Local(source) = c {
            locals.insert(name.clone(), dirs.remember(name, source.clone()));
        }
    }
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let opts = SolveOptions {
        locals,
        secrets: req.secrets.clone(),
        ssh: req.ssh.clone(),
        no_cache: req.cache.no_cache,
        pull: req.cache.pull,
        max_parallelism: req.max_parallelism.unwrap_or_else(solver::default_max_parallelism).max(1),
        network: req.network,
        allow_network_host: req.entitlements.contains(&Entitlement::NetworkHost),
        imports,
        progress: tx,
        cancel: cancel.clone(),
    };
    let present: Vec<llb::Output> = roots.iter().flatten().copied().collect();
    let solve = engine.solver.solve_roots(definition, &present, opts);
    tokio::pin!(solve);
    let result = loop {
        tokio::select! {
            r = &mut solve => break r,
            Some(e) = rx.recv() => { let _ = events.send(Event::Step(e)); }
        }
    };
    // What was queued before the solve returned; a step another build still runs may send more, which
    // this build no longer shows.
    while let Ok(e) = rx.try_recv() {
        let _ = events.send(Event::Step(e));
    }
    let mut solved = result?;
    // Each root's result where the request had it; a root-less conversion is an empty result.
    let mut results = std::mem::take(&mut solved.roots).into_iter();
    solved.roots = roots.iter().map(|r| r.and_then(|_| results.next()).unwrap_or_default()).collect();
    Ok(solved)
}
