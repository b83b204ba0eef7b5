//! Conversion: a parsed Dockerfile and build options -> an [`llb::Definition`] and the image config of
//! the target stage (BuildKit's `dockerfile2llb`).
//!
//! Only the stages reachable from the target are converted. Base-image configs come from an
//! [`ImageResolver`] supplied by the caller: this module does no I/O.

mod dispatch;
mod history;
mod ops;
mod scope;
mod stages;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};

use llb::image::Image;
use llb::{Definition, Platform};

use crate::diag::Diagnostic;
use crate::instructions::{parse_dockerfile, Instruction};
use crate::parser;
use crate::shell::Lexer;

pub use history::{go_duration, go_quote_list};

/// What a base image resolves to.
#[derive(Clone, Debug)]
pub struct ResolvedImage {
    /// The reference to pull, normalised; pinned (`name@sha256:...`) when the resolver knows the digest,
    /// so the definition's digest changes when the tag moves.
    pub reference: String,
    pub config: Image,
}

/// Why a base image could not be resolved (the registry's error, boxed: the frontend does no I/O and
/// does not know the resolver's types).
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct ResolveError(pub Box<dyn std::error::Error + Send + Sync>);

impl ResolveError {
    /// An error from a message.
    pub fn msg(message: impl Into<String>) -> ResolveError {
        ResolveError(message.into().into())
    }
}

/// Answers "what is this image's config" for FROM lines. The engine backs it with the registry client;
/// `Ok(None)` means "unknown here" and the stage starts from an empty config (used by `rbuild debug llb`
/// when it runs offline).
pub trait ImageResolver {
    fn resolve(&self, reference: &str, platform: &Platform) -> Result<Option<ResolvedImage>, ResolveError>;
}

/// A resolver that knows no image: FROM lines keep their references and start from an empty config.
pub struct OfflineResolver;

impl ImageResolver for OfflineResolver {
    fn resolve(&self, _reference: &str, _platform: &Platform) -> Result<Option<ResolvedImage>, ResolveError> {
        Ok(None)
    }
}

/// A resolver that answers each (reference, platform) from the inner one once.
struct Memo<'a> {
    inner: &'a dyn ImageResolver,
    seen: std::cell::RefCell<BTreeMap<(String, String), Option<ResolvedImage>>>,
}

impl ImageResolver for Memo<'_> {
    fn resolve(&self, reference: &str, platform: &Platform) -> Result<Option<ResolvedImage>, ResolveError> {
        let key = (reference.to_string(), platform.to_string());
        if let Some(hit) = self.seen.borrow().get(&key) {
            return Ok(hit.clone());
        }
        let r = self.inner.resolve(reference, platform)?;
        self.seen.borrow_mut().insert(key, r.clone());
        Ok(r)
    }
}

/// A `--build-context name=...` value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NamedContext {
    /// Files the client provides, as the local source named like the context (BuildKit's and buildx's
    /// naming). The source's name, never its path, is in the definition: two checkouts key the same.
    Local,
    /// `docker-image://ref`.
    Image(String),
}

/// Build options that shape the definition.
#[derive(Clone, Debug)]
pub struct ConvertOptions {
    /// File name used in diagnostics and source locations.
    pub filename: String,
    pub target: Option<String>,
    pub build_args: BTreeMap<String, String>,
    /// `--platform`; `None` builds for the build platform.
    pub target_platform: Option<Platform>,
    pub build_platform: Platform,
    /// `--label` values added to the final image.
    pub labels: BTreeMap<String, String>,
    /// .dockerignore patterns for the build context.
    pub excludes: Vec<String>,
    pub named_contexts: BTreeMap<String, NamedContext>,
    /// SOURCE_DATE_EPOCH in seconds: history times and file timestamps are clamped to it.
    pub source_date_epoch: Option<i64>,
    /// Stages (lower-case names) whose ops ignore the cache (`--no-cache-filter`); `*` for all.
    pub no_cache: BTreeSet<String>,
    /// `--add-host` entries every RUN sees in /etc/hosts.
    pub extra_hosts: Vec<llb::HostIp>,
    /// `--ulimit` values of every RUN (BuildKit's `ulimit` frontend option, in each ExecOp's meta).
    pub ulimits: Vec<llb::Ulimit>,
    /// `--shm-size` in bytes: every RUN gets a tmpfs of this size at /dev/shm (as BuildKit's dockerfile
    /// frontend adds it).
    pub shm_size: Option<u64>,
    /// `--cgroup-parent` of every RUN.
    pub cgroup_parent: Option<String>,
    /// One of several platforms of a build: step names say their stage's platform
    /// (`[linux/arm64 build 2/3] RUN make`), as BuildKit names them in a multi-platform build.
    pub platform_in_names: bool,
}

impl Default for ConvertOptions {
    fn default() -> ConvertOptions {
        ConvertOptions {
            filename: "Dockerfile".into(),
            target: None,
            build_args: BTreeMap::new(),
            target_platform: None,
            build_platform: Platform::host(),
            labels: BTreeMap::new(),
            excludes: Vec::new(),
            named_contexts: BTreeMap::new(),
            source_date_epoch: None,
            no_cache: BTreeSet::new(),
            extra_hosts: Vec::new(),
            ulimits: Vec::new(),
            shm_size: None,
            cgroup_parent: None,
            platform_in_names: false,
        }
    }
}

/// The result of converting a Dockerfile.
#[derive(Clone, Debug)]
pub struct Converted {
    pub definition: Definition,
    /// The target stage's image config, with history.
    pub image: Image,
    /// The history the target stage inherited from its base image (empty for scratch): the exporter
    /// keeps those entries as they are.
    pub base_history: Vec<llb::image::History>,
    /// Names (or indices) of the stages converted, dependencies first.
    pub stages: Vec<String>,
    pub warnings: Vec<Diagnostic>,
    /// The build checks' findings on the converted stages ([`crate::checks`]).
    pub checks: crate::checks::CheckResult,
}

/// Parse and convert a Dockerfile.
pub fn convert(source: &[u8], opts: &ConvertOptions, resolver: &dyn ImageResolver) -> Result<Converted, Diagnostic> {
    let ast = parser::parse(source)?;
    let df = parse_dockerfile(&ast)?;
    let lexer = Lexer::new(df.escape);
    // The parser's warnings (empty continuation lines) are the NoEmptyContinuation check's.
    let mut warnings = Vec::new();

    let target_platform = opts.target_platform.clone().unwrap_or_else(|| opts.build_platform.clone());
    let mut global = scope::GlobalScope::default();
    for (k, v) in scope::builtin_args(&opts.build_platform, &target_platform) {
        global.values.set(&k, &v);
    }
    for cmd in &df.meta_args {
        let Instruction::Arg(decls) = &cmd.instruction else { continue };
        for decl in decls {
            let value = if let Some(v) = opts.build_args.get(&decl.key) {
                global.consumed.insert(decl.key.clone());
                Some(v.clone())
            } else if let Some(default) = &decl.value {
                let e =
                    lexer.process_word(default, &global).map_err(|e| Diagnostic::spanned(e.to_string(), cmd.span))?;
                Some(e.value)
            } else {
                None
            };
            match value {
                Some(v) => global.values.set(&decl.key, &v),
                None => global.declared_unset.push(decl.key.clone()),
            }
        }
    }

    let plans = stages::plan(&df, opts, &global, &lexer)?;
    let target = stages::target_index(&df, opts.target.as_deref())?;
    let order = stages::order(&df, &plans, target)?;

    // Checks and conversion ask for the same base images: ask the caller once.
    let resolver = &Memo { inner: resolver, seen: Default::default() };
    let converted: BTreeSet<usize> = order.iter().copied().collect();
    let checks = crate::checks::run(source, &ast, &df, opts, resolver, Some(&converted))?;

    let mut conv = dispatch::Converter::new(&df, opts, &plans, &global, &lexer, resolver);
    for &i in &order {
        conv.dispatch_stage(i)?;
    }
    let (definition, image, base_history, consumed) = conv.finish(target)?;

    let mut unused: Vec<&String> = opts
        .build_args
        .keys()
        .filter(|k| !consumed.contains(*k) && !global.consumed.contains(*k))
        .filter(|k| !scope::PROXY_ARGS.contains(&k.as_str()))
        .collect();
    unused.sort();
    if !unused.is_empty() {
        let names: Vec<&str> = unused.iter().map(|s| s.as_str()).collect();
        warnings.push(Diagnostic::new(format!("build-args were not consumed by any ARG: {}", names.join(", "))));
    }

    let stage_names =
        order.iter().map(|&i| df.stages[i].name.clone().unwrap_or_else(|| format!("stage-{i}"))).collect();
    Ok(Converted { definition, image, base_history, stages: stage_names, warnings, checks })
}
