//! The rules BuildKit runs while it converts: the FROM lines against the global ARGs
//! (`validateBaseImagesWithDefaultArgs`, `reportUnusedFromArgs`, `reportRedundantTargetPlatform`,
//! `reportConstPlatformDisallowed`), then each stage's instructions in order with the variables, SHELL and
//! WORKDIR it has at that point (`reportUnmatchedVariables`, `validateNoSecretKey`, `validateUsedOnce`,
//! the WORKDIR, CMD/ENTRYPOINT, ENV/LABEL and EXPOSE rules, `validateBaseImagePlatform`).

use std::collections::{BTreeMap, BTreeSet};

use llb::Platform;

use super::rules::*;
use super::syntax::written_keyword;
use super::{ignore, Linter};
use crate::convert::{ConvertOptions, ImageResolver};
use crate::diag::Span;
use crate::instructions::{Command, Dockerfile, Instruction, Stage};
use crate::parser::{Ast, Node};
use crate::shell::{Env, Lexer};

/// BuildKit's default PATH for Linux containers, set when the base image has none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Variables in order, a later set replacing in place (llb's `EnvList.AddOrReplace`).
#[derive(Clone, Debug, Default)]
struct Vars(Vec<(String, String)>);

impl Vars {
    fn set(&mut self, k: &str, v: &str) {
        match self.0.iter_mut().find(|(key, _)| key == k) {
            Some(slot) => slot.1 = v.to_string(),
            None => self.0.push((k.to_string(), v.to_string())),
        }
    }

    fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(k, _)| k.as_str())
    }
}

impl Env for Vars {
    fn get(&self, name: &str) -> Option<String> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    }
}

/// What a stage leaves for a stage built on it.
#[derive(Clone, Debug, Default)]
struct StageEnd {
    env: Vars,
    build_args: Vec<String>,
    workdir_set: bool,
    shell_set: bool,
}

/// BuildKit's `suggest.Search` (case-sensitive): the closest option at edit distance below 3.
fn suggest<'a>(val: &str, options: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let mut best = None;
    let mut min = 3;
    for opt in options {
        if opt == val {
            return None;
        }
        let d = strsim::levenshtein(val, opt);
        if d < min {
            best = Some(opt);
            min = d;
        }
    }
    best
}

/// `getSecretsRegex`: a `_`-separated word of the key names a secret, and none says `public`.
pub fn looks_secret(key: &str) -> bool {
    const DENY: [&str; 10] =
        ["apikey", "auth", "credential", "credentials", "key", "password", "pword", "passwd", "secret", "token"];
    let words: Vec<String> = key.split('_').map(|w| w.to_lowercase()).collect();
    words.iter().any(|w| DENY.contains(&w.as_str())) && !words.iter().any(|w| w == "public")
}

/// `defaultArgs`: the platform args every FROM line sees.
fn default_args(opts: &ConvertOptions, target_stage: &str) -> Vars {
    let b = &opts.build_platform;
    let t = opts.target_platform.clone().unwrap_or_else(|| b.clone());
    let mut v = Vars::default();
    for (k, val) in [
        ("BUILDPLATFORM", b.to_string()),
        ("BUILDOS", b.os.clone()),
        ("BUILDOSVERSION", String::new()),
        ("BUILDARCH", b.architecture.clone()),
        ("BUILDVARIANT", b.variant.clone().unwrap_or_default()),
        ("TARGETPLATFORM", t.to_string()),
        ("TARGETOS", t.os.clone()),
        ("TARGETOSVERSION", String::new()),
        ("TARGETARCH", t.architecture.clone()),
        ("TARGETVARIANT", t.variant.clone().unwrap_or_default()),
        ("TARGETSTAGE", target_stage.to_string()),
    ] {
        v.set(k, opts.build_args.get(k).map_or(val.as_str(), |o| o.as_str()));
    }
    v
}

pub(super) fn check(
    ast: &Ast,
    df: &Dockerfile,
    opts: &ConvertOptions,
    resolver: &dyn ImageResolver,
    stages: Option<&BTreeSet<usize>>,
    lint: &mut Linter,
) {
    let lexer = Lexer::new(df.escape);
    let nodes: BTreeMap<usize, &Node> = ast.nodes.iter().map(|n| (n.span.start, n)).collect();
    let target = opts.target.clone().or_else(|| df.stages.last().and_then(|s| s.name.clone()));
    let defaults = default_args(opts, target.as_deref().unwrap_or("default"));

    // FROM lines with the global ARGs' defaults only: does every base still name an image?
    let mut meta = defaults.clone();
    let mut ok = true;
    for cmd in &df.meta_args {
        let Instruction::Arg(decls) = &cmd.instruction else { continue };
        for d in decls {
            if let Some(v) = &d.value {
                match lexer.process_word(v, &meta) {
                    Ok(e) => meta.set(&d.key, &e.value),
                    Err(_) => ok = false,
                }
            }
        }
    }
    if ok {
        for st in &df.stages {
            let Ok(e) = lexer.process_word(&st.base, &meta) else { break };
            if llb::normalize_reference(&e.value).is_err() {
                lint.report(
                    &INVALID_DEFAULT_ARG_IN_FROM,
                    st.span,
                    format!("Default value for ARG {} results in empty or invalid base image name", st.base),
                );
            }
        }
    }

    // The global ARGs with the build args applied (BuildKit's `buildMetaArgs`).
    let mut global = defaults;
    let mut declared: BTreeSet<String> = BTreeSet::new();
    for cmd in &df.meta_args {
        let Instruction::Arg(decls) = &cmd.instruction else { continue };
        for d in decls {
            declared.insert(d.key.clone());
            let value = match (opts.build_args.get(&d.key), &d.value) {
                (Some(v), _) => Some(v.clone()),
                (None, Some(v)) => lexer.process_word(v, &global).ok().map(|e| e.value),
                (None, None) => None,
            };
            if let Some(v) = value {
                global.set(&d.key, &v);
            }
        }
    }
    let arg_keys: BTreeSet<&str> = declared.iter().map(|s| s.as_str()).chain(global.keys()).collect();
    let unused_from_args = |unset: &BTreeSet<String>, span: Span, lint: &mut Linter| {
        for arg in unset {
            if arg_keys.contains(arg.as_str()) {
                continue;
            }
            let mut msg = format!("FROM argument '{arg}' is not declared");
            if let Some(s) = suggest(arg, arg_keys.iter().copied()) {
                msg.push_str(&format!(" (did you mean {s}?)"));
            }
            lint.report(&UNDEFINED_ARG_IN_FROM, span, msg);
        }
    };

    let target_platform = opts.target_platform.clone().unwrap_or_else(|| opts.build_platform.clone());
    let mut bases = Vec::with_capacity(df.stages.len());
    for st in &df.stages {
        let base = lexer.process_word(&st.base, &global).ok();
        if let Some(e) = &base {
            unused_from_args(&e.unset, st.span, lint);
        }
        let mut platform = None;
        if let Some(p) = &st.platform {
            if let Ok(e) = lexer.process_word(p, &global) {
                unused_from_args(&e.unset, st.span, lint);
                let only_target = e.used.len() == 1 && e.unset.is_empty() && e.used.contains("TARGETPLATFORM");
                if only_target && global.get("TARGETPLATFORM").as_deref() == Some(e.value.as_str()) {
                    lint.report(
                        &REDUNDANT_TARGET_PLATFORM,
                        st.span,
                        format!(
                            "Setting platform to predefined {p} in FROM is redundant as this is the default behavior"
                        ),
                    );
                }
                if e.used.is_empty() && e.unset.is_empty() {
                    if let Ok(parsed) = e.value.parse::<Platform>() {
                        let name = st.name.as_deref().unwrap_or("");
                        if !name.contains(&parsed.os) && !name.contains(&parsed.architecture) {
                            lint.report(
                                &FROM_PLATFORM_FLAG_CONST_DISALLOWED,
                                st.span,
                                format!("FROM --platform flag should not use constant value \"{}\"", e.value),
                            );
                        }
                    }
                }
                platform = e.value.parse::<Platform>().ok();
            }
        }
        bases.push((base.map(|e| e.value), platform));
    }

    // Each stage's instructions, bases before the stages built on them.
    let mut ends: BTreeMap<usize, StageEnd> = BTreeMap::new();
    for (i, st) in df.stages.iter().enumerate() {
        if stages.is_some_and(|s| !s.contains(&i)) {
            continue;
        }
        let (base, platform) = &bases[i];
        let Some(base) = base else { continue };
        let lower = base.to_lowercase();
        let parent = df.stages[..i].iter().position(|s| s.name.as_deref() == Some(lower.as_str()));
        let mut start = match parent {
            Some(j) => ends.get(&j).cloned().unwrap_or_default(),
            None => StageEnd::default(),
        };
        if parent.is_none() && lower != "scratch" && !opts.named_contexts.contains_key(&lower) {
            let expected = platform.clone().unwrap_or_else(|| target_platform.clone());
            // A base that cannot be resolved is conversion's error to report, not a check's.
            if let Ok(Some(img)) = resolver.resolve(base, &expected) {
                start.env = Vars(
                    img.config
                        .config
                        .env
                        .iter()
                        .flatten()
                        .map(|kv| match kv.split_once('=') {
                            Some((k, v)) => (k.to_string(), v.to_string()),
                            None => (kv.clone(), String::new()),
                        })
                        .collect(),
                );
                start.shell_set = img.config.config.shell.as_ref().is_some_and(|s| !s.is_empty());
                let actual = (&img.config.os, &img.config.architecture);
                if !actual.0.is_empty() && (actual.0 != &expected.os || actual.1 != &expected.architecture) {
                    let actual = Platform {
                        os: img.config.os.clone(),
                        architecture: img.config.architecture.clone(),
                        variant: img.config.variant.clone(),
                    };
                    lint.report(
                        &INVALID_BASE_IMAGE_PLATFORM,
                        st.span,
                        format!(
                            "Base image {base} was pulled with platform \"{actual}\", expected \"{expected}\" for current build"
                        ),
                    );
                }
            }
        }
        if start.env.get("PATH").is_none() {
            start.env.set("PATH", DEFAULT_PATH);
        }
        let mut s =
            StageWalk { lexer: &lexer, opts, global: &global, nodes: &nodes, end: start, once: Once::default() };
        s.stage(st, lint);
        ends.insert(i, s.end);
    }
}

/// Where CMD, ENTRYPOINT and HEALTHCHECK were last set in a stage.
#[derive(Default)]
struct Once {
    cmd: Option<Span>,
    entrypoint: Option<Span>,
    healthcheck: Option<Span>,
}

struct StageWalk<'a> {
    lexer: &'a Lexer,
    opts: &'a ConvertOptions,
    global: &'a Vars,
    nodes: &'a BTreeMap<usize, &'a Node>,
    end: StageEnd,
    once: Once,
}

impl StageWalk<'_> {
    fn stage(&mut self, st: &Stage, lint: &mut Linter) {
        for cmd in &st.commands {
            self.command(cmd, lint);
        }
    }

    /// `reportUnmatchedVariables` for one word in the current scope.
    fn expand(&self, word: &str, span: Span, lint: &mut Linter) -> String {
        let Ok(e) = self.lexer.process_word(word, &self.end.env) else { return word.to_string() };
        for var in &e.unset {
            if self.end.build_args.iter().any(|a| a == var) {
                continue;
            }
            let mut msg = format!("Usage of undefined variable '${var}'");
            if let Some(s) = suggest(var, self.end.env.keys()) {
                msg.push_str(&format!(" (did you mean ${s}?)"));
            }
            lint.report(&UNDEFINED_VAR, span, msg);
        }
        e.value
    }

    fn used_once(&mut self, which: fn(&mut Once) -> &mut Option<Span>, kw: &str, span: Span, lint: &mut Linter) {
        if let Some(prev) = which(&mut self.once).replace(span) {
            // BuildKit points at the earlier instruction: that is the one ignored.
            lint.report(
                &MULTIPLE_INSTRUCTIONS_DISALLOWED,
                prev,
                format!(
                    "Multiple {kw} instructions should not be used in the same stage because only the last one will be used"
                ),
            );
        }
    }

    fn secret(&self, instruction: &str, key: &str, span: Span, lint: &mut Linter) {
        if looks_secret(key) {
            lint.report(
                &SECRETS_USED_IN_ARG_OR_ENV,
                span,
                format!("Do not use ARG or ENV instructions for sensitive data ({instruction} \"{key}\")"),
            );
        }
    }

    fn legacy(&self, cmd: &Command, kw: &str, lint: &mut Linter) {
        let Some(node) = self.nodes.get(&cmd.span.start) else { return };
        // The parser's `key value sep` triples: an empty separator is the `KEY name value` form.
        for triple in node.args.chunks(3) {
            if triple.get(2).is_some_and(|sep| sep.is_empty()) {
                lint.report(
                    &LEGACY_KEY_VALUE_FORMAT,
                    cmd.span,
                    format!("\"{kw} key=value\" should be used instead of legacy \"{kw} key value\" format"),
                );
            }
        }
    }

    fn command(&mut self, cmd: &Command, lint: &mut Linter) {
        let span = cmd.span;
        let kw = written_keyword(&cmd.original);
        match &cmd.instruction {
            Instruction::Env(pairs) => {
                let expanded: Vec<(String, String)> = pairs
                    .iter()
                    .map(|p| (self.expand(&p.key, span, lint), self.expand(&p.value, span, lint)))
                    .collect();
                self.legacy(cmd, kw, lint);
                for (k, v) in expanded {
                    self.secret("ENV", &k, span, lint);
                    self.end.env.set(&k, &v);
                }
            }
            Instruction::Label(pairs) => {
                for p in pairs {
                    self.expand(&p.key, span, lint);
                    self.expand(&p.value, span, lint);
                }
                self.legacy(cmd, kw, lint);
            }
            Instruction::Copy(c) => {
                for w in c.chown.iter().chain(&c.chmod) {
                    self.expand(w, span, lint);
                }
                if c.is_add {
                    if let Some(w) = &c.checksum {
                        self.expand(w, span, lint);
                    }
                }
                let sources: Vec<String> = c.sources.iter().map(|w| self.expand(w, span, lint)).collect();
                for content in c.contents.iter().filter(|c| c.expand) {
                    self.expand(&content.data, span, lint);
                }
                self.expand(&c.dest, span, lint);
                if c.from.is_none() {
                    let cmd_name = if c.is_add { "Add" } else { "Copy" };
                    for src in sources.iter().filter(|s| !s.contains("://") && !s.starts_with("git@")) {
                        if ignore::matches_or_parent(&self.opts.excludes, src) {
                            lint.report(
                                &COPY_IGNORED_FILE,
                                span,
                                format!("Attempting to {cmd_name} file \"{src}\" that is excluded by .dockerignore"),
                            );
                        }
                    }
                }
            }
            Instruction::Workdir(p) => {
                let p = self.expand(p, span, lint);
                if !self.end.workdir_set && !p.starts_with('/') {
                    lint.report(
                        &WORKDIR_RELATIVE_PATH,
                        span,
                        format!("Relative workdir \"{p}\" can have unexpected results if the base image changes"),
                    );
                }
                self.end.workdir_set = true;
            }
            Instruction::Run(r) => {
                for m in &r.mounts {
                    self.expand(m, span, lint);
                }
            }
            Instruction::User(u) | Instruction::StopSignal(u) => {
                self.expand(u, span, lint);
            }
            Instruction::Volume(vs) => {
                for v in vs {
                    self.expand(v, span, lint);
                }
            }
            Instruction::Cmd(c) | Instruction::Entrypoint(c) => {
                let which: fn(&mut Once) -> &mut Option<Span> =
                    if matches!(cmd.instruction, Instruction::Cmd(_)) { |o| &mut o.cmd } else { |o| &mut o.entrypoint };
                self.used_once(which, kw, span, lint);
                if c.prepend_shell && !self.end.shell_set {
                    lint.report(
                        &JSON_ARGS_RECOMMENDED,
                        span,
                        format!(
                            "JSON arguments recommended for {kw} to prevent unintended behavior related to OS signals"
                        ),
                    );
                }
            }
            Instruction::Healthcheck(_) => self.used_once(|o| &mut o.healthcheck, kw, span, lint),
            Instruction::Shell(_) => self.end.shell_set = true,
            Instruction::Expose(ports) => {
                let Ok(words) = self.lexer.process_words(&ports.join(" "), &self.end.env) else { return };
                for raw in &words.words {
                    expose(raw, span, lint);
                }
            }
            Instruction::Arg(decls) => {
                for d in decls {
                    self.secret("ARG", &d.key, span, lint);
                    let value = if let Some(v) = self.opts.build_args.get(&d.key) {
                        Some(v.clone())
                    } else if let Some(default) = &d.value {
                        Some(self.expand(default, span, lint))
                    } else {
                        self.global.get(&d.key)
                    };
                    if let Some(v) = value {
                        self.end.env.set(&d.key, &v);
                    }
                    self.end.build_args.push(d.key.clone());
                }
            }
            Instruction::From(_) | Instruction::Maintainer(_) | Instruction::Onbuild(_) => {}
        }
    }
}

/// `portSpecs.parsePort`'s checks on `[ip:][hostPort:]containerPort[/proto]`.
fn expose(raw: &str, span: Span, lint: &mut Linter) {
    let parts: Vec<&str> = raw.split(':').collect();
    let n = parts.len();
    let (ip, host, container) = match n {
        1 => ("".to_string(), "", parts[0]),
        2 => ("".to_string(), parts[0], parts[1]),
        3 => (parts[0].to_string(), parts[1], parts[2]),
        _ => (parts[..n - 2].join(":"), parts[n - 2], parts[n - 1]),
    };
    let proto = match container.split_once('/') {
        Some((port, proto)) if !port.is_empty() && !proto.is_empty() => proto.split('/').next().unwrap_or(proto),
        _ => "tcp",
    };
    if proto != proto.to_lowercase() {
        lint.report(
            &EXPOSE_PROTO_CASING,
            span,
            format!("Defined protocol '{raw}' in EXPOSE instruction should be lowercase"),
        );
    }
    if !ip.is_empty() || !host.is_empty() {
        lint.report(
            &EXPOSE_INVALID_FORMAT,
            span,
            format!("EXPOSE instruction should not define an IP address or host-port mapping, found '{raw}'"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_words() {
        for k in ["API_KEY", "DATABASE_PASSWORD", "GITHUB_TOKEN", "secret_MESSAGE", "AUTH", "aws_credentials"] {
            assert!(looks_secret(k), "{k}");
        }
        for k in ["KEYS", "PUBLIC_KEY", "TOKENIZER", "monkey", "NPM_AUTHOR"] {
            assert!(!looks_secret(k), "{k}");
        }
    }

    #[test]
    fn suggestions_below_distance_three() {
        assert_eq!(suggest("VERSON", ["VERSION", "PATH"]), Some("VERSION"));
        assert_eq!(suggest("X", ["VERSION"]), None);
        assert_eq!(suggest("PATH", ["PATH", "PATX"]), None);
    }
}
