//! `rbuild build` (and `rbuild -t app .`): flags, the mapping from flags to a build ([`request`]), run by
//! the engine in this process ([`local`]) or by a daemon ([`remote`]), progress rendering ([`progress`]),
//! Ctrl-C, and what is printed or written at the end (errors against the Dockerfile, `--iidfile`,
//! `--metadata-file`). The build itself is the engine's.

mod buildx_flags;
mod github;
mod local;
mod progress;
mod remote;
mod request;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use frontend::diag::Diagnostic;
use solver::RunFailure;

pub use self::progress::ProgressMode;
use self::progress::Renderer;
use crate::images::Globals;

/// `rbuild build [OPTIONS] PATH`: docker build / buildx build flags.
#[derive(Args, Debug)]
pub struct BuildArgs {
    /// The build context: a directory.
    #[arg(value_name = "PATH")]
    pub(crate) context: PathBuf,
    /// Name and optionally a tag (`name:tag`); repeatable.
    #[arg(short = 't', long = "tag", value_name = "NAME[:TAG]")]
    pub(crate) tags: Vec<String>,
    /// The Dockerfile (default: PATH/Dockerfile); `-` reads it from standard input.
    #[arg(short = 'f', long = "file", value_name = "PATH")]
    pub(crate) file: Option<String>,
    /// A build-time variable; `KEY` alone takes the value from the environment.
    #[arg(long = "build-arg", value_name = "KEY[=VALUE]")]
    pub(crate) build_args: Vec<String>,
    /// The stage to build.
    #[arg(long)]
    pub(crate) target: Option<String>,
    /// Do not use the cache.
    #[arg(long)]
    pub(crate) no_cache: bool,
    /// Do not use the cache for these stages.
    #[arg(long = "no-cache-filter", value_delimiter = ',', value_name = "STAGE")]
    pub(crate) no_cache_filter: Vec<String>,
    /// Check the registry for newer versions of base images.
    #[arg(long)]
    pub(crate) pull: bool,
    /// The network of RUN steps: default (a network namespace of each step's own, with NAT), host (implies
    /// `--allow network.host`) or none.
    #[arg(long, default_value = "default")]
    pub(crate) network: String,
    /// A secret for RUN --mount=type=secret: `id=ID[,src=FILE|,env=VAR]`; repeatable.
    #[arg(long = "secret", value_name = "id=ID,src=PATH")]
    pub(crate) secrets: Vec<String>,
    /// An ssh agent socket for RUN --mount=type=ssh: `default` or `ID[=SOCKET]`; repeatable.
    #[arg(long = "ssh", value_name = "default|ID[=SOCKET]")]
    pub(crate) ssh: Vec<String>,
    /// Metadata for the image: `KEY=VALUE`; repeatable.
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub(crate) labels: Vec<String>,
    /// The target platforms (`os/arch[/variant]`), comma-separated or repeated: several build one image
    /// index with a manifest per platform (`linux/amd64,linux/arm64`).
    #[arg(long = "platform", value_name = "PLATFORM[,PLATFORM...]", value_delimiter = ',')]
    pub(crate) platforms: Vec<String>,
    /// Where the result goes: `type=local,dest=DIR`, `type=oci|docker|tar,dest=FILE`, `type=image,name=...`.
    #[arg(short = 'o', long = "output", value_name = "SPEC")]
    pub(crate) outputs: Vec<String>,
    /// Push the tagged image to its registry (shorthand for `--output type=registry`).
    #[arg(long)]
    pub(crate) push: bool,
    /// Load the image into docker (shorthand for `--output type=docker`).
    #[arg(long)]
    pub(crate) load: bool,
    /// Print only the image ID.
    #[arg(short, long)]
    pub(crate) quiet: bool,
    /// Progress output: auto, tty, plain, rawjson or quiet.
    #[arg(long, value_enum, default_value_t = ProgressMode::Auto)]
    pub(crate) progress: ProgressMode,
    /// An additional build context: `NAME=DIR` or `NAME=docker-image://REF`; repeatable.
    #[arg(long = "build-context", value_name = "NAME=VALUE")]
    pub(crate) build_contexts: Vec<String>,
    /// Write the image ID to this file.
    #[arg(long, value_name = "FILE")]
    pub(crate) iidfile: Option<PathBuf>,
    /// Write build result metadata (buildx keys) to this JSON file.
    #[arg(long = "metadata-file", value_name = "FILE")]
    pub(crate) metadata_file: Option<PathBuf>,
    /// How many steps run at once (default: four per core).
    #[arg(long = "max-parallelism", value_name = "N")]
    pub(crate) max_parallelism: Option<usize>,
    /// Also write the full, untruncated build log to this file.
    #[arg(long = "log-file", value_name = "FILE")]
    pub(crate) log_file: Option<PathBuf>,
    /// An /etc/hosts entry for RUN steps: `HOST:IP`; repeatable.
    #[arg(long = "add-host", value_name = "HOST:IP")]
    pub(crate) add_hosts: Vec<String>,
    /// Import build cache: `type=registry,ref=REG/REPO:TAG`, `type=local,src=DIR[,tag=T]`, or a bare
    /// reference; repeatable. One that cannot be read is a warning.
    #[arg(long = "cache-from", value_name = "SPEC")]
    pub(crate) cache_from: Vec<String>,
    /// Export build cache: `type=registry,ref=REG/REPO:TAG[,mode=min|max]` or `type=local,dest=DIR` (with
    /// `compression=`, `image-manifest=`, `oci-mediatypes=`, `ignore-error=`); repeatable.
    #[arg(long = "cache-to", value_name = "SPEC")]
    pub(crate) cache_to: Vec<String>,
    /// Ask for an entitlement: `network.host` (RUN --network=host) or `security.insecure`; repeatable. A daemon
    /// grants only what its own `--allow` flags allow.
    #[arg(long = "allow", value_name = "ENTITLEMENT")]
    pub(crate) allow: Vec<String>,
    /// What runs RUN steps: `namespace` (rbuild's own executor, the default) or an OCI runtime on a bundle of
    /// the same spec: `runc`, `crun`, or a path to one.
    #[arg(long = "oci-runtime", value_name = "RUNTIME", default_value = "namespace")]
    pub(crate) oci_runtime: String,
    /// The rest of `docker buildx build`'s flags.
    #[command(flatten)]
    pub(crate) buildx: buildx_flags::BuildxFlags,
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
        for n in frontend::diag::excerpt_lines(from, to, start, end) {
            let Some(n) = n else {
                let more = end - start + 1 - frontend::diag::EXCERPT_LINES;
                out.push_str(&format!("     | ... ({more} more lines)\n"));
                continue;
            };
            let mark = if n >= start && n <= end { ">>>" } else { "   " };
            let line = frontend::diag::clip(lines.get(n - 1).unwrap_or(&""), frontend::diag::EXCERPT_WIDTH);
            out.push_str(&format!(" {n:>3} | {mark} {line}\n"));
        }
        out.push_str("--------------------\n");
    }
    out
}

/// What ended the build early.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    Interrupt,
    Terminate,
}

/// How a build ended, wherever it ran.
pub(crate) enum Outcome {
    Done {
        image_id: Option<String>,
        metadata: serde_json::Map<String, serde_json::Value>,
    },
    Cancelled,
    Dockerfile(Diagnostic),
    Run(RunFailure),
    /// Another failure of a step (the message names it).
    Solve(String),
    /// The request, an export or the machinery failed.
    Other(anyhow::Error),
}

pub fn run(a: BuildArgs, g: &Globals) -> Result<ExitCode> {
    let context =
        a.context.canonicalize().with_context(|| format!("build context {} does not exist", a.context.display()))?;
    if !context.is_dir() {
        bail!("build context {} is not a directory", context.display());
    }
    let dockerfile = request::read_dockerfile(a.file.as_deref(), &context)?;
    let parsed = request::parse(&a, &context, &dockerfile)?;
    let call = a.buildx.call()?;
    // Bad --ulimit/--shm-size/--cgroup-parent values end the build before anything starts.
    a.buildx.run_settings()?;
    // `--builder NAME`: the daemon rbuild.toml names, as if given by --host.
    let (builder_globals, note) = crate::remote::with_builder(g, a.buildx.builder.as_deref())?;
    let g = &builder_globals;
    if let Some(note) = note {
        eprintln!("{note}");
    }
    for note in a.buildx.notes() {
        eprintln!("{note}");
    }
    let mode = if a.quiet { ProgressMode::Quiet } else { a.progress };
    let log = match &a.log_file {
        Some(p) => Some(std::fs::File::create(p).with_context(|| format!("cannot create log file {}", p.display()))?),
        None => None,
    };
    let source = String::from_utf8_lossy(&dockerfile.bytes).into_owned();
    let mut renderer = Renderer::new(mode, log, dockerfile.name.clone(), source.clone(), a.quiet);
    // In a GitHub Actions job, errors point at the Dockerfile as the pull request names it.
    let annotate = github::active().then(|| match a.file.as_deref() {
        Some("-") | None => github::annotation_path(&context.join("Dockerfile")),
        Some(f) => github::annotation_path(std::path::Path::new(f)),
    });
    if let Some(path) = &annotate {
        renderer = renderer.with_github(path.clone());
    }
    let report = renderer.report();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let (outcome, stopped) = match crate::remote::daemon_for(g)? {
        Some(_) if call.call != engine::Call::Build => {
            bail!("--check runs on this machine only: unset --host / RBUILD_HOST")
        }
        Some(target) => {
            for note in a.buildx.remote_notes()? {
                eprintln!("{note}");
            }
            let mut request = parsed.remote();
            a.buildx.apply_remote(&mut request.start)?;
            rt.block_on(remote::run(target, request, renderer))?
        }
        None => {
            let engine = local::open(g, &a.oci_runtime)?;
            let mut req = parsed.local();
            for note in a.buildx.apply(&mut req)? {
                eprintln!("{note}");
            }
            let r = rt.block_on(local::run(&engine, req, renderer))?;
            drop(engine);
            r
        }
    };

    if let Some(path) = &annotate {
        github_ending(path, &outcome, &report.lock().unwrap_or_else(|e| e.into_inner()));
    }
    let (image_id, metadata) = match outcome {
        Outcome::Done { metadata, .. } if call.call == engine::Call::Check => {
            return Ok(ExitCode::from(buildx_flags::print_check(&metadata, call.json, annotate.as_deref())));
        }
        Outcome::Done { image_id, metadata } => (image_id, metadata),
        Outcome::Cancelled => {
            eprintln!(
                "ERROR: the build was cancelled; nothing half-written was kept, and the next build reuses what finished"
            );
            return Ok(ExitCode::from(exit_code_of(stopped.or(Some(Stop::Interrupt))) as u8));
        }
        Outcome::Dockerfile(diagnostic) => {
            eprintln!("{}", diagnostic.render(&dockerfile.name, &source));
            return Ok(ExitCode::FAILURE);
        }
        Outcome::Run(f) => {
            eprintln!("{}", render_run_failure(&f, &dockerfile.name, &dockerfile.bytes));
            return Ok(ExitCode::FAILURE);
        }
        Outcome::Solve(message) => {
            eprintln!("ERROR: failed to solve: {message}");
            return Ok(ExitCode::FAILURE);
        }
        Outcome::Other(e) => return Err(e),
    };
    if let Some(p) = &a.iidfile {
        let id = image_id
            .clone()
            .ok_or_else(|| anyhow!("--iidfile: this build made no image (add -t NAME or an image output)"))?;
        std::fs::write(p, &id).with_context(|| format!("writing {}", p.display()))?;
    }
    if let Some(p) = &a.metadata_file {
        let text = serde_json::to_string_pretty(&serde_json::Value::Object(metadata))?;
        std::fs::write(p, text).with_context(|| format!("writing {}", p.display()))?;
    }
    if a.quiet {
        if let Some(id) = &image_id {
            println!("{id}");
        }
    } else if let Some(id) = &image_id {
        eprintln!("writing image {id} done");
    }
    Ok(ExitCode::SUCCESS)
}

/// In a GitHub Actions job: the failure as an annotation on the Dockerfile's line, and the job summary.
fn github_ending(path: &str, outcome: &Outcome, report: &github::Report) {
    use github::{annotation, Level, Place};
    let at = |line: Option<usize>, end: Option<usize>| Place { file: Some(path.to_string()), line, end_line: end };
    let error = match outcome {
        Outcome::Done { .. } => None,
        Outcome::Cancelled => Some("the build was cancelled".to_string()),
        Outcome::Dockerfile(d) => {
            let place = at(d.span.map(|s| s.start), d.span.map(|s| s.end));
            eprintln!("{}", annotation(Level::Error, &place, "Dockerfile error", &d.message));
            Some(format!("{path}: {}", d.message))
        }
        Outcome::Run(f) => {
            let message = format!("process \"{}\" did not complete successfully: {}", f.command, f.status);
            let loc = f.locations.first();
            let place = at(loc.map(|l| l.start_line as usize), loc.map(|l| l.end_line as usize));
            eprintln!("{}", annotation(Level::Error, &place, &format!("{} failed", f.vertex), &message));
            Some(format!("{}: {message}", f.vertex))
        }
        Outcome::Solve(m) => {
            eprintln!("{}", annotation(Level::Error, &Place::default(), "rbuild build failed", m));
            Some(m.clone())
        }
        Outcome::Other(e) => {
            let m = format!("{e:#}");
            eprintln!("{}", annotation(Level::Error, &Place::default(), "rbuild build failed", &m));
            Some(m)
        }
    };
    let (image_id, metadata) = match outcome {
        Outcome::Done { image_id, metadata } => (image_id.as_deref(), Some(metadata)),
        _ => (None, None),
    };
    let field = |k: &str| metadata.and_then(|m| m.get(k)).and_then(|v| v.as_str());
    let end = github::Ending {
        image_names: field("image.name"),
        digest: field("containerimage.digest"),
        image_id,
        error: error.as_deref(),
    };
    // The summary is a courtesy: a runner that cannot take it does not fail the build.
    if let Err(e) = github::write_summary(report, &end) {
        eprintln!("WARNING: cannot append the job summary to $GITHUB_STEP_SUMMARY: {e}");
    }
}

/// Renders progress events from `events` until it closes.
pub(crate) fn render(
    mut r: Renderer,
    mut events: tokio::sync::mpsc::UnboundedReceiver<engine::Event>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(150));
        loop {
            tokio::select! {
                e = events.recv() => match e {
                    Some(e) => r.event(&e),
                    None => break,
                },
                _ = tick.tick() => r.tick(),
            }
        }
        r.finish();
        if let Some(summary) = r.warning_summary() {
            eprint!("{summary}");
        }
    })
}

/// Waits for `wait`; on SIGINT or SIGTERM calls `cancel` and waits again (a second signal exits at once).
pub(crate) async fn until_done<T>(
    wait: impl std::future::Future<Output = T>,
    cancel: impl FnOnce(),
) -> (T, Option<Stop>) {
    tokio::pin!(wait);
    let signals = tokio::spawn(stop_signal());
    tokio::select! {
        r = &mut wait => (r, None),
        s = signals => {
            // Stop the build; it kills its RUN processes, removes its mounts and returns.
            let stopped = s.ok().flatten();
            cancel();
            let again = tokio::spawn(stop_signal());
            tokio::select! {
                r = &mut wait => (r, stopped),
                _ = again => std::process::exit(exit_code_of(stopped)),
            }
        }
    }
}

/// 130 for SIGINT, 143 for SIGTERM, as a shell reports a process they killed.
fn exit_code_of(stop: Option<Stop>) -> i32 {
    match stop {
        Some(Stop::Terminate) => 143,
        _ => 130,
    }
}

/// The first SIGINT or SIGTERM (`None` if they cannot be watched).
async fn stop_signal() -> Option<Stop> {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => Some(Stop::Interrupt),
        _ = term.recv() => Some(Stop::Terminate),
    }
}

/// A failed RUN: its last output lines, the Dockerfile lines, the command and status (BuildKit's form).
fn render_run_failure(f: &RunFailure, filename: &str, dockerfile: &[u8]) -> String {
    let mut out = format!("------\n > {}:\n", f.vertex);
    for l in &f.tail {
        out.push_str(&format!("{l}\n"));
    }
    out.push_str("------\n");
    out.push_str(&show_source(filename, dockerfile, &f.locations));
    out.push_str(&format!(
        "ERROR: failed to solve: process \"{}\" did not complete successfully: {}",
        frontend::diag::clip(&f.command, frontend::diag::EXCERPT_WIDTH),
        f.status
    ));
    out
}
