//! `rbuild build` (and `rbuild -t app .`): reads the Dockerfile and .dockerignore, resolves base images
//! through the registry client, converts with the frontend, solves with the solver on the snapshotter and
//! sandbox, then exports: the local image store (`-t`), OCI/docker archives, a directory, a tar, a push.

mod outputs;
mod progress;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use frontend::convert::{ConvertOptions, ImageResolver, NamedContext, ResolvedImage};
use llb::Platform;
use registry::auth::DockerConfig;
use registry::{Client, Config, ImageStore, Reference};
use snapshotter::diff::Compression;
use snapshotter::snapshot::Snapshotter;
use snapshotter::store::{SnapshotterKind, Store};

use self::outputs::{parse_output, Dest, OutputKind, OutputSpec};
pub use self::progress::ProgressMode;
use self::progress::Renderer;
use crate::images::Globals;

/// `rbuild build [OPTIONS] PATH`: docker build / buildx build flags.
#[derive(Args, Debug)]
pub struct BuildArgs {
    /// The build context: a directory.
    #[arg(value_name = "PATH")]
    context: PathBuf,
    /// Name and optionally a tag (`name:tag`); repeatable.
    #[arg(short = 't', long = "tag", value_name = "NAME[:TAG]")]
    tags: Vec<String>,
    /// The Dockerfile (default: PATH/Dockerfile); `-` reads it from standard input.
    #[arg(short = 'f', long = "file", value_name = "PATH")]
    file: Option<String>,
    /// A build-time variable; `KEY` alone takes the value from the environment.
    #[arg(long = "build-arg", value_name = "KEY[=VALUE]")]
    build_args: Vec<String>,
    /// The stage to build.
    #[arg(long)]
    target: Option<String>,
    /// Do not use the cache.
    #[arg(long)]
    no_cache: bool,
    /// Do not use the cache for these stages.
    #[arg(long = "no-cache-filter", value_delimiter = ',', value_name = "STAGE")]
    no_cache_filter: Vec<String>,
    /// Check the registry for newer versions of base images.
    #[arg(long)]
    pull: bool,
    /// The network of RUN steps: default (the host's network), host or none.
    #[arg(long, default_value = "default")]
    network: String,
    /// A secret for RUN --mount=type=secret: `id=ID[,src=FILE|,env=VAR]`; repeatable.
    #[arg(long = "secret", value_name = "id=ID,src=PATH")]
    secrets: Vec<String>,
    /// An ssh agent socket for RUN --mount=type=ssh: `default` or `ID[=SOCKET]`; repeatable.
    #[arg(long = "ssh", value_name = "default|ID[=SOCKET]")]
    ssh: Vec<String>,
    /// Metadata for the image: `KEY=VALUE`; repeatable.
    #[arg(long = "label", value_name = "KEY=VALUE")]
    labels: Vec<String>,
    /// The target platform (`os/arch[/variant]`).
    #[arg(long)]
    platform: Option<String>,
    /// Where the result goes: `type=local,dest=DIR`, `type=oci|docker|tar,dest=FILE`, `type=image,name=...`.
    #[arg(short = 'o', long = "output", value_name = "SPEC")]
    outputs: Vec<String>,
    /// Push the tagged image to its registry (shorthand for `--output type=registry`).
    #[arg(long)]
    push: bool,
    /// Load the image into docker (shorthand for `--output type=docker`).
    #[arg(long)]
    load: bool,
    /// Print only the image ID.
    #[arg(short, long)]
    quiet: bool,
    /// Progress output: auto, tty, plain, rawjson or quiet.
    #[arg(long, value_enum, default_value_t = ProgressMode::Auto)]
    progress: ProgressMode,
    /// An additional build context: `NAME=DIR` or `NAME=docker-image://REF`; repeatable.
    #[arg(long = "build-context", value_name = "NAME=VALUE")]
    build_contexts: Vec<String>,
    /// Write the image ID to this file.
    #[arg(long, value_name = "FILE")]
    iidfile: Option<PathBuf>,
    /// Write build result metadata (buildx keys) to this JSON file.
    #[arg(long = "metadata-file", value_name = "FILE")]
    metadata_file: Option<PathBuf>,
    /// How many steps run at once (default: the number of cores).
    #[arg(long = "max-parallelism", value_name = "N")]
    max_parallelism: Option<usize>,
    /// Also write the full, untruncated build log to this file.
    #[arg(long = "log-file", value_name = "FILE")]
    log_file: Option<PathBuf>,
    /// An /etc/hosts entry for RUN steps: `HOST:IP`; repeatable.
    #[arg(long = "add-host", value_name = "HOST:IP")]
    add_hosts: Vec<String>,
    /// What runs RUN steps: `namespace` (rbuild's own executor, the default) or an OCI runtime on a bundle of
    /// the same spec: `runc`, `crun`, or a path to one.
    #[arg(long = "oci-runtime", value_name = "RUNTIME", default_value = "namespace")]
    oci_runtime: String,
}

/// The `docker build` convention: KEY=VALUE, or KEY taken from the environment (skipped when unset).
fn parse_build_args(raw: &[String]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for a in raw {
        match a.split_once('=') {
            Some((k, v)) => {
                out.insert(k.to_string(), v.to_string());
            }
            None => {
                if let Ok(v) = std::env::var(a) {
                    out.insert(a.clone(), v);
                }
            }
        }
    }
    out
}

/// `--add-host host:ip` (docker's form; `host=ip` too, as buildx accepts).
fn parse_add_hosts(raw: &[String]) -> Result<Vec<llb::HostIp>> {
    raw.iter()
        .map(|h| {
            let (host, ip) = h
                .split_once('=')
                .or_else(|| h.split_once(':'))
                .filter(|(host, ip)| !host.is_empty() && !ip.is_empty())
                .ok_or_else(|| anyhow!("invalid --add-host {h:?}: expected HOST:IP"))?;
            let ip = ip.trim_start_matches('[').trim_end_matches(']');
            ip.parse::<std::net::IpAddr>()
                .with_context(|| format!("invalid --add-host {h:?}: {ip} is not an IP address"))?;
            Ok(llb::HostIp { host: host.to_string(), ip: ip.to_string() })
        })
        .collect()
}

/// `--label KEY=VALUE` (a bare `KEY` is an empty label, as docker does).
fn parse_labels(raw: &[String]) -> BTreeMap<String, String> {
    raw.iter()
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap_or((l, ""));
            (k.to_string(), v.to_string())
        })
        .collect()
}

/// `--secret id=x,src=path` / `id=x,env=VAR` / `type=file|env`, as buildx reads them; a bare `id=x` takes
/// the environment variable `x`.
fn parse_secrets(raw: &[String]) -> Result<BTreeMap<String, Vec<u8>>> {
    let mut out = BTreeMap::new();
    for s in raw {
        let mut id = None;
        let mut src = None;
        let mut env = None;
        let mut ty = None;
        for f in s.split(',') {
            let (k, v) = f.split_once('=').ok_or_else(|| anyhow!("invalid --secret {s:?}: expected key=value"))?;
            match k {
                "id" => id = Some(v.to_string()),
                "src" | "source" => src = Some(v.to_string()),
                "env" => env = Some(v.to_string()),
                "type" => ty = Some(v.to_string()),
                other => bail!("invalid --secret {s:?}: unknown key {other:?} (use id, src, env or type)"),
            }
        }
        let id = id.or_else(|| src.clone()).or_else(|| env.clone()).ok_or_else(|| {
            anyhow!("invalid --secret {s:?}: give it an id, e.g. --secret id=mytoken,src=./token.txt")
        })?;
        let value = match (ty.as_deref(), src, env) {
            (Some("env"), src, env) | (None, src @ None, env @ Some(_)) => {
                let var = env.or(src).unwrap_or_else(|| id.clone());
                std::env::var_os(&var)
                    .map(|v| v.into_encoded_bytes())
                    .ok_or_else(|| anyhow!("--secret {id}: environment variable {var} is not set"))?
            }
            (Some("file") | None, Some(path), _) => {
                std::fs::read(&path).with_context(|| format!("--secret {id}: cannot read {path}"))?
            }
            (None, None, None) => match std::env::var_os(&id) {
                Some(v) => v.into_encoded_bytes(),
                None => bail!("--secret {id}: no src= file or env= variable given, and ${id} is not set"),
            },
            (Some(t), _, _) => bail!("--secret {id}: unknown type {t:?} (use file or env)"),
        };
        out.insert(id, value);
    }
    Ok(out)
}

fn parse_ssh(raw: &[String]) -> Result<BTreeMap<String, PathBuf>> {
    let mut out = BTreeMap::new();
    for s in raw {
        let (id, path) = match s.split_once('=') {
            Some((id, p)) => (id.to_string(), PathBuf::from(p)),
            None => {
                let sock = std::env::var_os("SSH_AUTH_SOCK").ok_or_else(|| {
                    anyhow!("--ssh {s}: SSH_AUTH_SOCK is not set; pass --ssh {s}=/path/to/agent.sock")
                })?;
                (s.to_string(), PathBuf::from(sock))
            }
        };
        if !path.exists() {
            bail!("--ssh {id}: {} does not exist", path.display());
        }
        out.insert(id, path);
    }
    Ok(out)
}

fn parse_build_contexts(raw: &[String], base: &Path) -> Result<BTreeMap<String, NamedContext>> {
    let mut out = BTreeMap::new();
    for c in raw {
        let (name, value) =
            c.split_once('=').ok_or_else(|| anyhow!("invalid --build-context {c:?}: expected NAME=VALUE"))?;
        let ctx = if let Some(r) = value.strip_prefix("docker-image://") {
            NamedContext::Image(r.to_string())
        } else if value.contains("://") {
            bail!("--build-context {name}: only local directories and docker-image:// are supported, not {value}");
        } else {
            let dir = base.join(value);
            let dir = dir.canonicalize().with_context(|| format!("--build-context {name}: {}", dir.display()))?;
            NamedContext::Local(dir.display().to_string())
        };
        out.insert(name.to_string(), ctx);
    }
    Ok(out)
}

/// SOURCE_DATE_EPOCH from the build args or the environment, as BuildKit reads it.
fn source_date_epoch(args: &BTreeMap<String, String>) -> Result<Option<i64>> {
    let v = match args.get("SOURCE_DATE_EPOCH") {
        Some(v) => Some(v.clone()),
        None => std::env::var("SOURCE_DATE_EPOCH").ok(),
    };
    match v.as_deref() {
        None | Some("") => Ok(None),
        Some(v) => Ok(Some(v.parse().with_context(|| format!("SOURCE_DATE_EPOCH={v} is not a number of seconds"))?)),
    }
}

/// The frontend's view of base images, backed by the registry client and the local image store.
struct RegistryResolver<'a> {
    rt: &'a tokio::runtime::Runtime,
    client: &'a Client,
    store: &'a ImageStore,
    pull: bool,
    /// Every config resolved, to find the target's base history for the exporter.
    seen: std::cell::RefCell<Vec<llb::image::Image>>,
}

impl ImageResolver for RegistryResolver<'_> {
    fn resolve(&self, reference: &str, platform: &Platform) -> Result<Option<ResolvedImage>, String> {
        let fut = registry::unpack::resolve_config(self.client, self.store, reference, platform, self.pull);
        let (pinned, config) = self.rt.block_on(fut).map_err(|e| e.to_string())?;
        self.seen.borrow_mut().push(config.clone());
        Ok(Some(ResolvedImage { reference: pinned, config }))
    }
}

/// The solver's image source, backed by the registry client, content store and snapshotter.
struct RegistryImages {
    handle: tokio::runtime::Handle,
    client: Arc<Client>,
    store: ImageStore,
    snapshotter: Arc<dyn Snapshotter>,
}

impl solver::ImageProvider for RegistryImages {
    fn unpack(
        &self,
        reference: &str,
        platform: &Platform,
        pull: bool,
        status: &dyn Fn(u64, Option<u64>),
    ) -> Result<Option<String>, String> {
        let fut = registry::unpack::unpack_image(
            &self.client,
            &self.store,
            &*self.snapshotter,
            reference,
            platform,
            pull,
            status,
        );
        self.handle.block_on(fut).map_err(|e| e.to_string())
    }
}

/// The distribution client with the registry configuration and docker's credentials.
pub(crate) fn registry_client(g: &Globals) -> Result<Arc<Client>> {
    let creds = DockerConfig::load(&DockerConfig::default_path())?;
    Ok(Arc::new(Client::new(load_config(g)?, Arc::new(creds))))
}

/// Resolves and unpacks `reference` for this host into committed snapshots; returns the top snapshot (`None`
/// for an image without layers) and the image config.
pub(crate) fn unpack_for_host(
    g: &Globals,
    store: &Store,
    reference: &str,
) -> Result<(Option<String>, llb::image::Image)> {
    let images = ImageStore::new(store.content.clone(), store.meta.clone());
    let client = registry_client(g)?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let platform = Platform::host();
    let (pinned, config) = rt
        .block_on(registry::unpack::resolve_config(&client, &images, reference, &platform, false))
        .with_context(|| format!("resolving image {reference}"))?;
    let top = rt
        .block_on(registry::unpack::unpack_image(
            &client,
            &images,
            &*store.snapshotter,
            &pinned,
            &platform,
            false,
            &|_, _| {},
        ))
        .with_context(|| format!("unpacking image {reference}"))?;
    Ok((top, config))
}

/// The executor `--oci-runtime` names: rbuild's namespace executor, or an OCI runtime (`runc`, `crun`, a path)
/// run on a bundle of the same spec.
pub(crate) fn executor(runtime: &str, state_dir: &Path) -> Result<Arc<dyn sandbox::Executor>> {
    if runtime == "namespace" {
        return Ok(Arc::new(sandbox::NamespaceExecutor::new(state_dir)));
    }
    let runc = sandbox::RuncExecutor::new(state_dir).with_runtime(runtime);
    runc.version().map_err(|e| anyhow!("--oci-runtime {runtime}: {e}"))?;
    Ok(Arc::new(runc))
}

fn load_config(g: &Globals) -> Result<Config> {
    let is_root = rustix::process::geteuid().is_root();
    match Config::default_path(g.config.as_deref(), is_root) {
        Some((path, required)) => Ok(Config::load(&path, required)?),
        None => Ok(Config::default()),
    }
}

/// Reads the Dockerfile and finds its .dockerignore (`<Dockerfile>.dockerignore` beside it first, then
/// `<context>/.dockerignore`).
fn read_dockerfile(a: &BuildArgs, context: &Path) -> Result<(String, Vec<u8>, Vec<String>)> {
    let (name, bytes, beside) = match a.file.as_deref() {
        Some("-") => {
            let mut b = Vec::new();
            std::io::stdin().read_to_end(&mut b).context("reading the Dockerfile from standard input")?;
            ("Dockerfile".to_string(), b, None)
        }
        Some(f) => {
            let p = PathBuf::from(f);
            let bytes = std::fs::read(&p).with_context(|| format!("cannot read Dockerfile {}", p.display()))?;
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| f.to_string());
            (name, bytes, Some(p))
        }
        None => {
            let p = context.join("Dockerfile");
            let bytes = std::fs::read(&p).with_context(|| {
                format!("cannot read {}: put a Dockerfile in the context or pass -f PATH", p.display())
            })?;
            ("Dockerfile".to_string(), bytes, Some(p))
        }
    };
    let mut ignore_file = None;
    if let Some(p) = &beside {
        let candidate = PathBuf::from(format!("{}.dockerignore", p.display()));
        if candidate.is_file() {
            ignore_file = Some(candidate);
        }
    }
    let ignore_file = ignore_file.or_else(|| Some(context.join(".dockerignore")).filter(|p| p.is_file()));
    let excludes = match ignore_file {
        Some(p) => {
            let text = std::fs::read_to_string(&p).with_context(|| format!("cannot read {}", p.display()))?;
            solver::context::parse_dockerignore(&text)
        }
        None => Vec::new(),
    };
    Ok((name, bytes, excludes))
}

/// Renders a frontend diagnostic or a failed step against the Dockerfile's lines, as BuildKit does.
fn show_source(filename: &str, source: &[u8], locations: &[llb::SourceLocation]) -> String {
    let text = String::from_utf8_lossy(source);
    let lines: Vec<&str> = text.lines().collect();
    let mut out = String::new();
    for loc in locations.iter().filter(|l| l.file == filename || l.file.is_empty()).take(1) {
        let start = loc.start_line.max(1) as usize;
        let end = (loc.end_line as usize).max(start).min(lines.len());
        out.push_str(&format!("{filename}:{start}\n--------------------\n"));
        let from = start.saturating_sub(3).max(1);
        let to = (end + 2).min(lines.len());
        for n in from..=to {
            let mark = if n >= start && n <= end { ">>>" } else { "   " };
            out.push_str(&format!(" {n:>3} | {mark} {}\n", lines.get(n - 1).unwrap_or(&"")));
        }
        out.push_str("--------------------\n");
    }
    out
}

pub fn run(a: BuildArgs, g: &Globals) -> Result<ExitCode> {
    let context =
        a.context.canonicalize().with_context(|| format!("build context {} does not exist", a.context.display()))?;
    if !context.is_dir() {
        bail!("build context {} is not a directory", context.display());
    }
    let (filename, dockerfile, excludes) = read_dockerfile(&a, &context)?;
    let build_args = parse_build_args(&a.build_args);
    let epoch = source_date_epoch(&build_args)?;
    let network: sandbox::NetworkMode = a.network.parse().map_err(|e: String| anyhow!("--network: {e}"))?;
    let platform = a.platform.as_deref().map(str::parse::<Platform>).transpose().context("--platform")?;
    let secrets = parse_secrets(&a.secrets)?;
    let ssh = parse_ssh(&a.ssh)?;
    let named_contexts = parse_build_contexts(&a.build_contexts, &std::env::current_dir()?)?;

    let mut outputs: Vec<OutputSpec> = a.outputs.iter().map(|o| parse_output(o)).collect::<Result<_>>()?;
    if a.push {
        outputs.push(OutputSpec {
            kind: OutputKind::Image { names: vec![], push: true },
            compression: None,
            oci_mediatypes: None,
        });
    }
    if a.load {
        outputs.push(OutputSpec {
            kind: OutputKind::Docker { dest: None, names: vec![] },
            compression: None,
            oci_mediatypes: None,
        });
    }
    if !a.tags.is_empty() && !outputs.iter().any(|o| matches!(o.kind, OutputKind::Image { .. })) {
        outputs.push(OutputSpec {
            kind: OutputKind::Image { names: vec![], push: false },
            compression: None,
            oci_mediatypes: None,
        });
    }
    if (a.push
        || outputs.iter().any(|o| matches!(&o.kind, OutputKind::Image { push: true, names } if names.is_empty())))
        && a.tags.is_empty()
    {
        bail!("--push needs an image name: add -t registry.example.com/app:tag");
    }

    let root_path = g.root.clone().unwrap_or_else(snapshotter::root::StateRoot::default_path);
    let store = Store::open(&root_path, SnapshotterKind::Auto, &mut |w| eprintln!("{w}"))
        .with_context(|| format!("opening state root {}", root_path.display()))?;
    let images = ImageStore::new(store.content.clone(), store.meta.clone());
    let client = registry_client(g)?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;

    let mut no_cache = std::collections::BTreeSet::new();
    for s in &a.no_cache_filter {
        no_cache.insert(s.to_ascii_lowercase());
    }
    let opts = ConvertOptions {
        filename: filename.clone(),
        target: a.target.clone(),
        build_args,
        target_platform: platform.clone(),
        build_platform: Platform::host(),
        labels: parse_labels(&a.labels),
        excludes,
        named_contexts: named_contexts.clone(),
        source_date_epoch: epoch,
        no_cache,
        extra_hosts: parse_add_hosts(&a.add_hosts)?,
    };
    let resolver =
        RegistryResolver { rt: &rt, client: &client, store: &images, pull: a.pull, seen: Default::default() };
    let converted = match frontend::convert::convert(&dockerfile, &opts, &resolver) {
        Ok(c) => c,
        Err(d) => {
            eprintln!("{}", d.render(&filename, &String::from_utf8_lossy(&dockerfile)));
            return Ok(ExitCode::FAILURE);
        }
    };
    for w in &converted.warnings {
        eprintln!("{}", w.render(&filename, &String::from_utf8_lossy(&dockerfile)));
    }
    let base_history = base_history(&resolver.seen.borrow(), &converted.image);

    let mut locals = BTreeMap::new();
    locals.insert("context".to_string(), context.clone());
    for c in named_contexts.values() {
        if let NamedContext::Local(dir) = c {
            locals.insert(dir.clone(), PathBuf::from(dir));
        }
    }
    let worker = solver::Worker {
        snapshotter: store.snapshotter.clone(),
        meta: store.meta.clone(),
        executor: executor(&a.oci_runtime, &store.root.tmp_dir().join("sandbox"))?,
        images: Arc::new(RegistryImages {
            handle: rt.handle().clone(),
            client: client.clone(),
            store: images.clone(),
            snapshotter: store.snapshotter.clone(),
        }),
        state_dir: store.root.path().to_path_buf(),
    };
    let mode = if a.quiet { ProgressMode::Quiet } else { a.progress };
    let log = match &a.log_file {
        Some(p) => Some(std::fs::File::create(p).with_context(|| format!("cannot create log file {}", p.display()))?),
        None => None,
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let solve_opts = solver::SolveOptions {
        locals,
        secrets,
        ssh,
        no_cache: a.no_cache,
        pull: a.pull,
        max_parallelism: a
            .max_parallelism
            .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2))
            .max(1),
        network,
        source_date_epoch: epoch,
        progress: tx,
    };
    let solver = solver::Solver::new(worker);
    let definition = converted.definition.clone();
    let solved = rt.block_on(async {
        let render = tokio::spawn(async move {
            let mut r = Renderer::new(mode, log);
            let mut tick = tokio::time::interval(std::time::Duration::from_millis(150));
            loop {
                tokio::select! {
                    e = rx.recv() => match e {
                        Some(e) => r.event(&e),
                        None => break,
                    },
                    _ = tick.tick() => r.tick(),
                }
            }
            r.finish();
        });
        let res = solver.solve(&definition, solve_opts).await;
        drop(solver);
        let _ = render.await;
        res
    });
    let solved = match solved {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{}", render_solve_error(&e, &filename, &dockerfile));
            return Ok(ExitCode::FAILURE);
        }
    };

    // Exports.
    let root_snapshot = solved.root.clone();
    let mut image: Option<registry::assemble::Assembled> = None;
    let mut metadata = serde_json::Map::new();
    let sdk = epoch.map(|e| e.max(0) as u64);
    for o in &outputs {
        let assembled = if o.needs_image() {
            let compression = o.compression.unwrap_or(Compression::Gzip);
            let aopts = registry::assemble::AssembleOptions {
                compression,
                source_date_epoch: epoch,
                oci: o.oci(),
                base_history: base_history.clone(),
            };
            let img = registry::assemble::assemble_image(
                &images,
                &*store.snapshotter,
                &store.meta,
                root_snapshot.as_deref(),
                &converted.image,
                &aopts,
            )
            .context("assembling the image")?;
            image.get_or_insert_with(|| img.clone());
            Some(img)
        } else {
            None
        };
        match &o.kind {
            OutputKind::Image { names, push } => {
                let img = assembled.as_ref().unwrap_or_else(|| unreachable!("needs_image"));
                let names: Vec<String> = if names.is_empty() { a.tags.clone() } else { names.clone() };
                for n in &names {
                    let r = Reference::parse(n).with_context(|| format!("invalid image name {n}"))?;
                    images.tag(&r, &img.manifest)?;
                    if !a.quiet {
                        eprintln!("naming to {r} done");
                    }
                    if *push {
                        let report = rt
                            .block_on(client.push(&images, &img.manifest, &r))
                            .with_context(|| format!("pushing {r}"))?;
                        if !a.quiet {
                            eprintln!(
                                "pushed {r}: {} uploaded, {} mounted, {} already present",
                                report.uploaded.len(),
                                report.mounted.len(),
                                report.existed.len()
                            );
                        }
                    }
                }
                if !names.is_empty() {
                    metadata.insert("image.name".into(), serde_json::json!(names.join(",")));
                }
            }
            OutputKind::Oci { dest, tar, names } => {
                let img = assembled.as_ref().unwrap_or_else(|| unreachable!("needs_image"));
                let refs = named(names, &a.tags, img)?;
                match (dest, tar) {
                    (Dest::Path(p), false) => registry::export::write_oci_dir(&images, &refs, p)
                        .with_context(|| format!("writing OCI layout {}", p.display()))?,
                    (dest, _) => write_dest(dest, |w| {
                        Ok(registry::export::save(&images, &refs, registry::export::ArchiveFormat::Oci, w)?)
                    })?,
                }
            }
            OutputKind::Docker { dest, names } => {
                let img = assembled.as_ref().unwrap_or_else(|| unreachable!("needs_image"));
                let refs = named(names, &a.tags, img)?;
                let save = |w: &mut dyn Write| -> Result<()> {
                    Ok(registry::export::save(&images, &refs, registry::export::ArchiveFormat::Docker, w)?)
                };
                match dest {
                    Some(d) => write_dest(d, save)?,
                    None => docker_load(save)?,
                }
            }
            OutputKind::Local { dest } => match &root_snapshot {
                Some(key) => snapshotter::export::export_dir(&*store.snapshotter, key, dest)
                    .with_context(|| format!("exporting the filesystem to {}", dest.display()))?,
                None => std::fs::create_dir_all(dest).with_context(|| format!("creating {}", dest.display()))?,
            },
            OutputKind::Tar { dest } => {
                let scratch = store.root.tmp_dir();
                write_dest(dest, |w| match &root_snapshot {
                    Some(key) => {
                        snapshotter::export::export_tar(&*store.snapshotter, key, &scratch, w, sdk)?;
                        Ok(())
                    }
                    None => {
                        tar::Builder::new(w).finish()?;
                        Ok(())
                    }
                })?
            }
        }
    }
    let id = image.as_ref().map(|i| i.config.digest().to_string());
    if let Some(img) = &image {
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
    if let Some(p) = &a.iidfile {
        let id = id
            .clone()
            .ok_or_else(|| anyhow!("--iidfile: this build made no image (add -t NAME or an image output)"))?;
        std::fs::write(p, &id).with_context(|| format!("writing {}", p.display()))?;
    }
    if let Some(p) = &a.metadata_file {
        let text = serde_json::to_string_pretty(&serde_json::Value::Object(metadata))?;
        std::fs::write(p, text).with_context(|| format!("writing {}", p.display()))?;
    }
    if a.quiet {
        if let Some(id) = &id {
            println!("{id}");
        }
    } else if let Some(id) = &id {
        eprintln!("writing image {id} done");
    }
    Ok(ExitCode::SUCCESS)
}

/// The history the target stage inherited: the longest resolved base history that prefixes the image's.
fn base_history(seen: &[llb::image::Image], image: &llb::image::Image) -> Vec<llb::image::History> {
    let mine = &image.history;
    seen.iter()
        .map(|i| &i.history)
        .filter(|h| !h.is_empty() && mine.starts_with(h))
        .max_by_key(|h| h.len())
        .cloned()
        .unwrap_or_default()
}

fn named(
    names: &[String],
    tags: &[String],
    img: &registry::assemble::Assembled,
) -> Result<Vec<(Option<Reference>, oci_spec::image::Descriptor)>> {
    let names = if names.is_empty() { tags } else { names };
    if names.is_empty() {
        return Ok(vec![(None, img.manifest.clone())]);
    }
    names
        .iter()
        .map(|n| {
            Ok((Some(Reference::parse(n).with_context(|| format!("invalid image name {n}"))?), img.manifest.clone()))
        })
        .collect()
}

/// Writes to a file atomically (temp file + rename), or to standard output.
fn write_dest(dest: &Dest, write: impl FnOnce(&mut dyn Write) -> Result<()>) -> Result<()> {
    match dest {
        Dest::Stdout => {
            let stdout = std::io::stdout();
            let mut lock = stdout.lock();
            write(&mut lock)?;
            lock.flush()?;
            Ok(())
        }
        Dest::Path(p) => {
            let dir = p.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
            let mut tmp =
                tempfile::NamedTempFile::new_in(dir).with_context(|| format!("cannot write in {}", dir.display()))?;
            write(tmp.as_file_mut())?;
            tmp.as_file().sync_all()?;
            tmp.persist(p).with_context(|| format!("cannot write {}", p.display()))?;
            Ok(())
        }
    }
}

/// Pipes a docker archive into `docker load`.
fn docker_load(save: impl FnOnce(&mut dyn Write) -> Result<()>) -> Result<()> {
    let mut child = std::process::Command::new("docker")
        .arg("load")
        .stdin(std::process::Stdio::piped())
        .spawn()
        .context(
        "--load needs the docker CLI and a running daemon; install docker or use --output type=docker,dest=image.tar",
    )?;
    let mut stdin = child.stdin.take().ok_or_else(|| anyhow!("docker load has no stdin"))?;
    let res = save(&mut stdin);
    drop(stdin);
    let status = child.wait()?;
    res?;
    if !status.success() {
        bail!("docker load failed ({status})");
    }
    Ok(())
}

fn render_solve_error(e: &solver::SolveError, filename: &str, dockerfile: &[u8]) -> String {
    let mut out = String::new();
    match e {
        solver::SolveError::Run(f) => {
            out.push_str(&format!("------\n > {}:\n", f.vertex));
            for l in &f.tail {
                out.push_str(&format!("{l}\n"));
            }
            out.push_str("------\n");
            out.push_str(&show_source(filename, dockerfile, &f.locations));
            out.push_str(&format!(
                "ERROR: failed to solve: process \"{}\" did not complete successfully: {}",
                f.command, f.status
            ));
        }
        e => out.push_str(&format!("ERROR: failed to solve: {e}")),
    }
    out
}
