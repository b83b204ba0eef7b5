//! Per-stage dispatch: walk a stage's instructions in order, accumulate the image config and history,
//! and add ops to the definition (BuildKit's `dispatch*` functions in dockerfile2llb).

use std::collections::{BTreeMap, BTreeSet};

use llb::image::{rfc3339, Healthcheck, History, Image};
use llb::{DefinitionBuilder, Metadata, Output, Platform, SourceOp};

use super::history::{go_duration, go_list, go_quote_list};
use super::scope::{GlobalScope, StageScope, VarList};
use super::stages::{Base, StagePlan};
use super::{ConvertOptions, ImageResolver, NamedContext};
use crate::diag::{Diagnostic, Span};
use crate::instructions::{self, parse_dockerfile, Command, Dockerfile, Instruction};
use crate::parser;
use crate::shell::Lexer;

/// BuildKit's default PATH for Linux containers.
pub(crate) const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The state of a stage once dispatched: what later stages and the exporter use.
#[derive(Clone, Debug)]
pub(crate) struct StageResult {
    /// `None` for an empty filesystem (scratch).
    pub output: Option<Output>,
    pub image: Image,
    /// The history of the base image the stage (or the stage it is based on) started from.
    pub base_history: Vec<History>,
    /// The variables at the end of the stage: a stage built on it starts from them (BuildKit's
    /// `dispatchState.init` takes the base's llb state, whose env holds its ARG values, and its build args).
    pub scope: StageScope,
}

/// The state of the stage being dispatched.
/// How many characters of an instruction a step's name keeps.
const STEP_NAME_WIDTH: usize = 1024;

pub(crate) struct StageState {
    pub index: usize,
    pub output: Option<Output>,
    pub image: Image,
    pub scope: StageScope,
    pub platform: Platform,
    /// CMD was set in this stage (an ENTRYPOINT then keeps it).
    pub cmd_set: bool,
    /// `[name N/M] ` for op descriptions.
    pub prefix_name: String,
    pub step: usize,
    pub steps: usize,
    pub ignore_cache: bool,
}

impl StageState {
    pub fn workdir(&self) -> String {
        match self.image.config.working_dir.as_deref() {
            Some(w) if !w.is_empty() => w.to_string(),
            _ => "/".to_string(),
        }
    }

    pub fn shell(&self) -> Vec<String> {
        match &self.image.config.shell {
            Some(s) if !s.is_empty() => s.clone(),
            _ => vec!["/bin/sh".into(), "-c".into()],
        }
    }

    pub fn user(&self) -> String {
        self.image.config.user.clone().unwrap_or_default()
    }
}

pub(crate) struct Converter<'a> {
    pub df: &'a Dockerfile,
    pub opts: &'a ConvertOptions,
    pub plans: &'a [StagePlan],
    pub global: &'a GlobalScope,
    pub lexer: &'a Lexer,
    pub resolver: &'a dyn ImageResolver,
    pub builder: DefinitionBuilder,
    pub results: BTreeMap<usize, StageResult>,
    /// The build context source, created on first use.
    pub context: Option<Output>,
    /// Build args consumed by stage ARGs.
    pub consumed: BTreeSet<String>,
}

impl<'a> Converter<'a> {
    pub fn new(
        df: &'a Dockerfile,
        opts: &'a ConvertOptions,
        plans: &'a [StagePlan],
        global: &'a GlobalScope,
        lexer: &'a Lexer,
        resolver: &'a dyn ImageResolver,
    ) -> Converter<'a> {
        Converter {
            df,
            opts,
            plans,
            global,
            lexer,
            resolver,
            builder: DefinitionBuilder::new(),
            results: BTreeMap::new(),
            context: None,
            consumed: BTreeSet::new(),
        }
    }

    pub fn metadata(&self, st: &StageState, text: &str, span: Span) -> Metadata {
        let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
        // A step's name is shown in progress and errors: an instruction of megabytes is not echoed whole.
        let text = crate::diag::clip(&text, STEP_NAME_WIDTH);
        let width = st.steps.to_string().len();
        let mut m = Metadata::described(format!("[{}{:>width$}/{}] {text}", st.prefix_name, st.step, st.steps)).at(
            self.opts.filename.clone(),
            span.start as u32,
            span.end as u32,
        );
        m.ignore_cache = st.ignore_cache;
        m
    }

    pub fn add(
        &mut self,
        op: llb::Op,
        inputs: &[Output],
        platform: &Platform,
        metadata: Metadata,
        span: Span,
    ) -> Result<Output, Diagnostic> {
        self.builder
            .add_op(op, inputs, Some(platform.clone()), metadata)
            .map_err(|e| Diagnostic::spanned(format!("internal error building the definition: {e}"), span))
    }

    /// The image source for a reference, normalised.
    pub fn image_source(
        &mut self,
        reference: &str,
        platform: &Platform,
        metadata: Metadata,
        span: Span,
    ) -> Result<Output, Diagnostic> {
        let normalized = llb::normalize_reference(reference)
            .map_err(|e| Diagnostic::spanned(format!("invalid image reference \"{reference}\": {e}"), span))?;
        self.builder
            .source(SourceOp::image(normalized, Some(platform.clone())), Some(platform.clone()), metadata)
            .map_err(|e| Diagnostic::spanned(format!("internal error building the definition: {e}"), span))
    }

    /// The build context (a local source named `context` with the .dockerignore excludes).
    pub fn context_source(&mut self) -> Result<Output, Diagnostic> {
        if let Some(o) = self.context {
            return Ok(o);
        }
        let op = SourceOp::Local {
            name: "context".into(),
            include_patterns: Vec::new(),
            exclude_patterns: self.opts.excludes.clone(),
            follow_paths: Vec::new(),
            shared_key_hint: Some("context".into()),
            differ: Default::default(),
        };
        let out = self
            .builder
            .source(op, None, Metadata::described("[internal] load build context"))
            .map_err(|e| Diagnostic::new(format!("internal error building the definition: {e}")))?;
        self.context = Some(out);
        Ok(out)
    }

    /// A named build context used as a filesystem.
    pub fn named_context(&mut self, name: &str, platform: &Platform, span: Span) -> Result<Option<Output>, Diagnostic> {
        match self.opts.named_contexts.get(name) {
            Some(NamedContext::Image(r)) => {
                let m = Metadata::described(format!("[context {name}] load {r}"));
                self.image_source(r, platform, m, span).map(Some)
            }
            Some(NamedContext::Local) => {
                let op = SourceOp::local(name);
                let m = Metadata::described(format!("[context {name}] load from client"));
                self.builder
                    .source(op, None, m)
                    .map(Some)
                    .map_err(|e| Diagnostic::spanned(format!("internal error building the definition: {e}"), span))
            }
            None => Ok(None),
        }
    }

    pub fn expand(&self, st: &StageState, word: &str, span: Span) -> Result<String, Diagnostic> {
        self.lexer.process_word(word, &st.scope).map(|e| e.value).map_err(|e| Diagnostic::spanned(e.to_string(), span))
    }

    /// Start a stage from its base and run its (and its base image's ONBUILD) instructions.
    pub fn dispatch_stage(&mut self, index: usize) -> Result<(), Diagnostic> {
        let stage = &self.df.stages[index];
        let plan = &self.plans[index];
        let platform = plan.platform.clone();
        let steps = stage.commands.len() + 1;
        let mut prefix_name = match &stage.name {
            Some(n) => format!("{n} "),
            None if self.df.stages.len() > 1 => format!("stage-{index} "),
            None => String::new(),
        };
        if self.opts.platform_in_names {
            prefix_name = format!("{platform} {prefix_name}");
        }
        let ignore_cache =
            self.opts.no_cache.contains("*") || stage.name.as_ref().is_some_and(|n| self.opts.no_cache.contains(n));
        let mut st = StageState {
            index,
            output: None,
            image: empty_image(&platform),
            scope: StageScope::default(),
            platform: platform.clone(),
            cmd_set: false,
            prefix_name,
            step: 1,
            steps,
            ignore_cache,
        };
        let from_meta = self.metadata(&st, &stage.original, stage.span);
        let mut base_history = Vec::new();
        let mut inherited: Option<StageScope> = None;
        match &plan.base {
            Base::Scratch => {}
            Base::Stage(j) => {
                let base = self.results.get(j).cloned().ok_or_else(|| {
                    Diagnostic::spanned("internal error: base stage was not converted first", stage.span)
                })?;
                st.output = base.output;
                st.image = base.image;
                base_history = base.base_history;
                inherited = Some(base.scope);
            }
            Base::Named(name) => {
                st.output = self.named_context(name, &platform, stage.span)?;
            }
            Base::Image(reference) => {
                let resolved = self.resolver.resolve(reference, &platform).map_err(|e| {
                    Diagnostic::spanned(format!("failed to resolve base image {reference}: {e}"), stage.span)
                })?;
                let (source_ref, config) = match resolved {
                    Some(r) => (r.reference, Some(r.config)),
                    None => (reference.clone(), None),
                };
                st.output = Some(self.image_source(&source_ref, &platform, from_meta, stage.span)?);
                if let Some(config) = config {
                    // The base's history and rootfs stay: history entries line up with layers, and the
                    // exporter appends this build's layers to the base's diff_ids.
                    base_history = config.history.clone();
                    st.image = config;
                }
                set_platform(&mut st.image, &platform);
            }
        }
        // The image config's Env is applied over the inherited variables (BuildKit re-adds it to the state).
        st.scope = inherited.unwrap_or_default();
        for (k, v) in VarList::from_env(st.image.config.env.as_deref().unwrap_or_default()).0 {
            st.scope.env.set(&k, &v);
        }

        // ONBUILD triggers of the base run first, then are cleared (BuildKit's dispatchOnBuildTriggers).
        let triggers = st.image.config.on_build.take().unwrap_or_default();
        let mut commands: Vec<Command> = Vec::new();
        for trigger in &triggers {
            commands.extend(parse_trigger(trigger, stage.span)?);
        }
        st.steps += commands.len();
        commands.extend(stage.commands.iter().cloned());
        for cmd in &commands {
            st.step += 1;
            self.dispatch(&mut st, cmd)?;
        }
        self.results.insert(index, StageResult { output: st.output, image: st.image, base_history, scope: st.scope });
        Ok(())
    }

    fn dispatch(&mut self, st: &mut StageState, cmd: &Command) -> Result<(), Diagnostic> {
        let span = cmd.span;
        match &cmd.instruction {
            Instruction::From(_) => {
                return Err(Diagnostic::spanned("internal error: FROM inside a stage", span));
            }
            Instruction::Run(run) => return self.dispatch_run(st, cmd, run),
            Instruction::Copy(copy) => return self.dispatch_copy(st, cmd, copy),
            Instruction::Workdir(w) => return self.dispatch_workdir(st, cmd, w),
            Instruction::Arg(decls) => {
                let mut commit = Vec::new();
                for decl in decls {
                    let value = if let Some(v) = self.opts.build_args.get(&decl.key) {
                        self.consumed.insert(decl.key.clone());
                        Some(v.clone())
                    } else if let Some(default) = &decl.value {
                        Some(self.expand(st, default, span)?)
                    } else {
                        self.global.values.get(&decl.key).map(str::to_string)
                    };
                    commit.push(match &value {
                        Some(v) => format!("{}={v}", decl.key),
                        None => decl.key.clone(),
                    });
                    st.scope.declare(&decl.key, value);
                }
                self.history(st, format!("ARG {}", commit.join(" ")), true);
            }
            Instruction::Env(pairs) => {
                // All words are expanded before any is applied: `ENV a=1 b=$a` sees the old $a.
                let mut expanded = Vec::new();
                for kv in pairs {
                    expanded.push((self.expand(st, &kv.key, span)?, self.expand(st, &kv.value, span)?));
                }
                let mut commit = Vec::new();
                let mut image_env = VarList::from_env(st.image.config.env.as_deref().unwrap_or_default());
                for (k, v) in expanded {
                    st.scope.env.set(&k, &v);
                    image_env.set(&k, &v);
                    commit.push(format!("{k}={v}"));
                }
                st.image.config.env = Some(image_env.to_env());
                self.history(st, format!("ENV {}", commit.join(" ")), true);
            }
            Instruction::Label(pairs) => {
                let mut commit = Vec::new();
                for kv in pairs {
                    let (k, v) = (self.expand(st, &kv.key, span)?, self.expand(st, &kv.value, span)?);
                    commit.push(format!("{k}={v}"));
                    st.image.config.labels.get_or_insert_with(Default::default).insert(k, v);
                }
                self.history(st, format!("LABEL {}", commit.join(" ")), true);
            }
            Instruction::Maintainer(m) => {
                st.image.author = Some(m.clone());
                self.history(st, format!("MAINTAINER {m}"), true);
            }
            Instruction::Cmd(c) => {
                let args = self.command_args(st, c);
                st.image.config.cmd = Some(args.clone());
                // BuildKit sets it on every CMD (kept for Docker compatibility).
                st.image.config.args_escaped = Some(true);
                st.cmd_set = true;
                self.history(st, format!("CMD {}", go_quote_list(&args)), true);
            }
            Instruction::Entrypoint(c) => {
                let args = c.args.as_ref().map(|_| self.command_args(st, c));
                st.image.config.entrypoint = args.clone();
                if !st.cmd_set {
                    st.image.config.cmd = None;
                }
                self.history(st, format!("ENTRYPOINT {}", go_quote_list(&args.unwrap_or_default())), true);
            }
            Instruction::Shell(shell) => {
                st.image.config.shell = Some(shell.clone());
                self.history(st, format!("SHELL {}", go_list(shell)), true);
            }
            Instruction::Expose(ports) => {
                let mut specs = Vec::new();
                for p in ports {
                    let words =
                        self.lexer.process_words(p, &st.scope).map_err(|e| Diagnostic::spanned(e.to_string(), span))?;
                    for w in words.words {
                        specs.extend(parse_port_spec(&w).map_err(|e| Diagnostic::spanned(e, span))?);
                    }
                }
                for s in &specs {
                    st.image.config.exposed_ports.get_or_insert_with(Default::default).insert(s.clone());
                }
                // Go's %v of the parsed []string, in the order written: `EXPOSE [80/tcp 53/udp]`. BuildKit
                // v0.24.0 printed its parser struct instead, pointer included (fixed upstream by moby/buildkit
                // 98eab3257, "dockerfile: fix history config for EXPOSE instruction").
                self.history(st, format!("EXPOSE [{}]", specs.join(" ")), true);
            }
            Instruction::Volume(vols) => {
                let mut expanded = Vec::new();
                for v in vols {
                    let v = self.expand(st, v, span)?;
                    if v.trim().is_empty() {
                        return Err(Diagnostic::spanned("VOLUME specified can not be an empty string", span));
                    }
                    st.image.config.volumes.get_or_insert_with(Default::default).insert(v.clone());
                    expanded.push(v);
                }
                self.history(st, format!("VOLUME {}", go_list(&expanded)), true);
            }
            Instruction::User(u) => {
                let u = self.expand(st, u, span)?;
                st.image.config.user = Some(u.clone());
                self.history(st, format!("USER {u}"), true);
            }
            Instruction::StopSignal(s) => {
                let s = self.expand(st, s, span)?;
                validate_signal(&s).map_err(|e| Diagnostic::spanned(e, span))?;
                st.image.config.stop_signal = Some(s.clone());
                self.history(st, format!("STOPSIGNAL {s}"), true);
            }
            Instruction::Healthcheck(h) => {
                let hc = Healthcheck {
                    test: Some(h.test.clone()),
                    interval: nonzero(h.interval),
                    timeout: nonzero(h.timeout),
                    start_period: nonzero(h.start_period),
                    start_interval: nonzero(h.start_interval),
                    retries: (h.retries != 0).then_some(h.retries),
                    ..Default::default()
                };
                st.image.config.healthcheck = Some(hc);
                // Go's %q of *HealthConfig: &{["CMD-SHELL" "curl x"] "30s" "5s" "0s" "0s" '\x03'}
                let text = format!(
                    "HEALTHCHECK &{{{} \"{}\" \"{}\" \"{}\" \"{}\" {}}}",
                    go_quote_list(&h.test),
                    go_duration(h.interval),
                    go_duration(h.timeout),
                    go_duration(h.start_period),
                    go_duration(h.start_interval),
                    go_rune(h.retries)
                );
                self.history(st, text, true);
            }
            Instruction::Onbuild(expr) => {
                // BuildKit records no history entry for ONBUILD.
                st.image.config.on_build.get_or_insert_with(Default::default).push(expr.clone());
            }
        }
        Ok(())
    }

    /// CMD/ENTRYPOINT/RUN arguments: the shell form runs through SHELL.
    pub fn command_args(&self, st: &StageState, c: &instructions::CmdLine) -> Vec<String> {
        let args = c.args.clone().unwrap_or_default();
        if c.prepend_shell {
            let mut shell = st.shell();
            shell.push(args.join(" "));
            shell
        } else {
            args
        }
    }

    pub fn history(&self, st: &mut StageState, created_by: String, empty_layer: bool) {
        st.image.history.push(History {
            created: self.opts.source_date_epoch.map(rfc3339),
            created_by: Some(created_by),
            comment: Some("buildkit.dockerfile.v0".into()),
            empty_layer,
            ..Default::default()
        });
    }

    /// The definition rooted at the target stage, its image config, its base's history, and the build
    /// args used.
    #[allow(clippy::type_complexity)]
    pub fn finish(
        mut self,
        target: usize,
    ) -> Result<(llb::Definition, Image, Vec<History>, BTreeSet<String>), Diagnostic> {
        let result = self
            .results
            .remove(&target)
            .ok_or_else(|| Diagnostic::new("internal error: the target stage was not converted"))?;
        let mut image = result.image;
        // The exporter stamps the creation time; with SOURCE_DATE_EPOCH it is fixed here.
        image.created = self.opts.source_date_epoch.map(rfc3339);
        for (k, v) in &self.opts.labels {
            image.config.labels.get_or_insert_with(Default::default).insert(k.clone(), v.clone());
        }
        let def = self
            .builder
            .finish(result.output)
            .map_err(|e| Diagnostic::new(format!("internal error: invalid definition: {e}")))?;
        Ok((def, image, result.base_history, self.consumed))
    }
}

fn nonzero(v: i64) -> Option<i64> {
    (v != 0).then_some(v)
}

/// Go's `%q` of an int: a quoted rune (`'\x03'`, `'\a'`), as strconv.QuoteRune writes it.
fn go_rune(v: i64) -> String {
    let named = |c: char| match c {
        '\x07' => Some("\\a"),
        '\x08' => Some("\\b"),
        '\x0c' => Some("\\f"),
        '\n' => Some("\\n"),
        '\r' => Some("\\r"),
        '\t' => Some("\\t"),
        '\x0b' => Some("\\v"),
        '\\' => Some("\\\\"),
        '\'' => Some("\\'"),
        _ => None,
    };
    let Some(c) = u32::try_from(v).ok().and_then(char::from_u32) else { return format!("%!q(int={v})") };
    match named(c) {
        Some(n) => format!("'{n}'"),
        None if !c.is_control() => format!("'{c}'"),
        None if (c as u32) < 0x80 => format!("'\\x{:02x}'", c as u32),
        None => format!("'\\u{:04x}'", c as u32),
    }
}

/// The config of an empty (scratch) image for a platform, as BuildKit's emptyImage.
pub(crate) fn empty_image(platform: &Platform) -> Image {
    let mut image = Image::default();
    set_platform(&mut image, platform);
    image.rootfs.kind = "layers".into();
    image.config.working_dir = Some("/".into());
    image.config.env = Some(vec![format!("PATH={DEFAULT_PATH}")]);
    image
}

fn set_platform(image: &mut Image, platform: &Platform) {
    image.architecture = platform.architecture.clone();
    image.os = platform.os.clone();
    image.variant = platform.variant.clone();
}

/// Parse an ONBUILD trigger from a base image into commands.
fn parse_trigger(trigger: &str, span: Span) -> Result<Vec<Command>, Diagnostic> {
    let wrapped = format!("FROM scratch\n{trigger}\n");
    let fail = |e: Diagnostic| {
        Diagnostic::spanned(
            format!("failed to parse ONBUILD trigger {trigger:?} of the base image: {}", e.message),
            span,
        )
    };
    let ast = parser::parse(wrapped.as_bytes()).map_err(fail)?;
    let df = parse_dockerfile(&ast).map_err(fail)?;
    let mut commands = df.stages.into_iter().next().map(|s| s.commands).unwrap_or_default();
    for c in &mut commands {
        c.span = span;
        if matches!(c.instruction, Instruction::Onbuild(_)) {
            return Err(Diagnostic::spanned("chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed", span));
        }
    }
    Ok(commands)
}

/// Docker's `nat.ParsePortSpecs` for EXPOSE: `80`, `80/udp`, `8000-8002/tcp` -> `80/tcp`, ...
fn parse_port_spec(spec: &str) -> Result<Vec<String>, String> {
    let (ports, proto) = match spec.split_once('/') {
        Some((p, proto)) => (p, proto.to_ascii_lowercase()),
        None => (spec, "tcp".to_string()),
    };
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(format!("invalid proto \"{proto}\" in EXPOSE {spec}: use tcp, udp or sctp"));
    }
    // An ip:host:container mapping is not allowed in EXPOSE; Docker takes the container port.
    let ports = ports.rsplit(':').next().unwrap_or(ports);
    let bad = || format!("invalid containerPort: {ports} (EXPOSE takes a port or a range like 8000-8010)");
    let parse = |p: &str| p.parse::<u16>().map_err(|_| bad());
    let (lo, hi) = match ports.split_once('-') {
        Some((a, b)) => (parse(a)?, parse(b)?),
        None => (parse(ports)?, parse(ports)?),
    };
    if hi < lo {
        return Err(bad());
    }
    Ok((lo..=hi).map(|p| format!("{p}/{proto}")).collect())
}

/// STOPSIGNAL takes a signal name (`SIGTERM`, `TERM`), a number, or `SIGRTMIN+3`-style names.
fn validate_signal(s: &str) -> Result<(), String> {
    const NAMES: [&str; 31] = [
        "ABRT", "ALRM", "BUS", "CHLD", "CLD", "CONT", "FPE", "HUP", "ILL", "INT", "IO", "IOT", "KILL", "PIPE", "POLL",
        "PROF", "PWR", "QUIT", "SEGV", "STKFLT", "STOP", "SYS", "TERM", "TRAP", "TSTP", "TTIN", "TTOU", "URG", "USR1",
        "USR2", "VTALRM",
    ];
    if s.parse::<u32>().is_ok_and(|n| (1..=64).contains(&n)) {
        return Ok(());
    }
    let upper = s.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    if NAMES.contains(&name)
        || ["WINCH", "XCPU", "XFSZ"].contains(&name)
        || name.starts_with("RTMIN")
        || name.starts_with("RTMAX")
    {
        return Ok(());
    }
    Err(format!("invalid signal: {s}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports() {
        assert_eq!(parse_port_spec("80").unwrap(), vec!["80/tcp"]);
        assert_eq!(parse_port_spec("53/UDP").unwrap(), vec!["53/udp"]);
        assert_eq!(parse_port_spec("8000-8002").unwrap(), vec!["8000/tcp", "8001/tcp", "8002/tcp"]);
        assert!(parse_port_spec("80/foo").is_err());
        assert!(parse_port_spec("eighty").is_err());
    }

    #[test]
    fn retries_print_as_go_runes() {
        assert_eq!(go_rune(3), "'\\x03'");
        assert_eq!(go_rune(7), "'\\a'");
        assert_eq!(go_rune(9), "'\\t'");
        assert_eq!(go_rune(10), "'\\n'");
        assert_eq!(go_rune(65), "'A'");
        assert_eq!(go_rune(0x7f), "'\\x7f'");
    }

    #[test]
    fn signals() {
        assert!(validate_signal("SIGTERM").is_ok());
        assert!(validate_signal("9").is_ok());
        assert!(validate_signal("SIGRTMIN+3").is_ok());
        assert!(validate_signal("SIGFOO").is_err());
    }
}
