//! Build checks: BuildKit v0.24's Dockerfile lint rules ([`rules`]), run on every build and alone for
//! `--check` / `--call=check`.
//!
//! The rules read the parsed Dockerfile ([`syntax`]: casing, stage names, legacy forms, comments) and a
//! walk of the stages that tracks what conversion knows about variables, SHELL, WORKDIR and the base
//! images ([`walk`]: undefined variables, secrets in ARG/ENV, relative WORKDIR, shell-form CMD, platforms).
//! Base images come from the caller's [`ImageResolver`], as for conversion: this module does no I/O.
//!
//! Which rules run follows the `# check=skip=…;experimental=…;error=true` directive, or the
//! `BUILDKIT_DOCKERFILE_CHECK` build arg when given (BuildKit's dockerui reads that one first).

mod ignore;
pub mod rules;
mod syntax;
mod walk;

use std::collections::BTreeSet;

use crate::convert::{ConvertOptions, ImageResolver};
use crate::diag::{Diagnostic, Span};
use crate::instructions::Dockerfile;
use crate::parser::{self, Ast};
pub use rules::Rule;
/// Whether a build arg or ENV name looks like it holds a secret (the `SecretsUsedInArgOrEnv` rule's test).
pub use walk::looks_secret;

/// The build arg that overrides the `# check=` directive.
pub const CHECK_BUILD_ARG: &str = "BUILDKIT_DOCKERFILE_CHECK";

/// Which rules run and whether a violation fails the build (BuildKit's `linter.Config`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckConfig {
    pub skip_all: bool,
    pub skip: BTreeSet<String>,
    pub experimental_all: bool,
    pub experimental: BTreeSet<String>,
    /// `error=true`: a build with a violation fails after its checks.
    pub error: bool,
}

/// A `# check=` value that does not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CheckConfigError {
    #[error("failed to parse check options: invalid check option {0:?}")]
    Option(String),
    #[error("failed to parse check options: failed to parse check option {option:?}: invalid boolean {value:?}")]
    Bool { option: String, value: String },
}

impl CheckConfig {
    /// BuildKit's `linter.ParseLintOptions`: up to three `;`-separated `key=value` parts.
    pub fn parse(s: &str) -> Result<CheckConfig, CheckConfigError> {
        let mut c = CheckConfig::default();
        let s = s.trim();
        if s.is_empty() {
            return Ok(c);
        }
        let list = |v: &str| v.split(',').map(|r| r.trim().to_string()).collect::<BTreeSet<_>>();
        for part in s.splitn(3, ';') {
            let Some((k, v)) = part.split_once('=') else { return Err(CheckConfigError::Option(part.to_string())) };
            let v = v.trim();
            match k.trim() {
                "skip" if v == "all" => c.skip_all = true,
                "skip" => c.skip = list(v),
                "experimental" if v == "all" => c.experimental_all = true,
                "experimental" => c.experimental = list(v),
                "error" => {
                    c.error = go_parse_bool(v)
                        .ok_or_else(|| CheckConfigError::Bool { option: part.to_string(), value: v.to_string() })?
                }
                other => return Err(CheckConfigError::Option(other.to_string())),
            }
        }
        Ok(c)
    }

    /// The configuration of a build: the build arg when set, else the directive.
    pub fn for_build(source: &[u8], opts: &ConvertOptions) -> Result<CheckConfig, Diagnostic> {
        if let Some(v) = opts.build_args.get(CHECK_BUILD_ARG) {
            return CheckConfig::parse(v)
                .map_err(|e| Diagnostic::new(format!("{e} (from build arg {CHECK_BUILD_ARG})")));
        }
        match parser::find_directive(source, "check") {
            Some(d) => CheckConfig::parse(&d.value).map_err(|e| Diagnostic::spanned(e.to_string(), d.span)),
            None => Ok(CheckConfig::default()),
        }
    }

    fn enabled(&self, rule: &Rule) -> bool {
        if rule.experimental {
            self.experimental_all || self.experimental.contains(rule.name)
        } else {
            !(self.skip_all || self.skip.contains(rule.name))
        }
    }
}

/// Go's `strconv.ParseBool`.
fn go_parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// One violation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning {
    pub rule: &'static Rule,
    /// The formatted message (BuildKit's `Detail`).
    pub message: String,
    pub span: Span,
}

impl Warning {
    /// BuildKit's `LintFormatShort`: `Rule: message (line N)`, the line buildx lists after a build.
    pub fn short(&self) -> String {
        format!("{}: {} (line {})", self.rule.name, self.message, self.span.start)
    }

    /// As a frontend diagnostic: `Rule: message` at the instruction's lines.
    pub fn diagnostic(&self) -> Diagnostic {
        Diagnostic::spanned(format!("{}: {}", self.rule.name, self.message), self.span)
    }

    /// BuildKit's `lint.Warning.PrintTo` (what `--check` prints for each warning).
    pub fn render(&self, file: &str, source: &str) -> String {
        let mut out = format!("\nWARNING: {}", self.rule.name);
        if !self.rule.url.is_empty() {
            out.push_str(&format!(" - {}", self.rule.url));
        }
        out.push_str(&format!("\n{}\n", self.message));
        out.push_str(&print_source(file, source, self.span));
        out
    }
}

/// BuildKit's `errdefs.Source.Print`: the lines with two (four for one line) lines of padding in all.
pub fn print_source(file: &str, source: &str, span: Span) -> String {
    let lines: Vec<&str> = source.split('\n').collect();
    let (mut start, mut end) = (span.start, span.end.max(span.start));
    if start > lines.len() || start < 1 {
        return String::new();
    }
    end = end.min(lines.len());
    let pad = if end == start { 4 } else { 2 };
    let first_line = start;
    let mut p = 0;
    while p < pad {
        if start > 1 {
            start -= 1;
            p += 1;
        }
        if end != lines.len() {
            end += 1;
            p += 1;
        }
        p += 1;
    }
    let mut out = format!("{file}:{first_line}\n--------------------\n");
    for i in start..=end {
        let pfx = if i >= span.start && i <= span.end.max(span.start) { ">>>" } else { "   " };
        out.push_str(&format!(" {i:>3} | {pfx} {}\n", lines[i - 1]));
    }
    out.push_str("--------------------\n");
    out
}

/// The warnings of a check run, with the configuration that chose them.
#[derive(Clone, Debug, Default)]
pub struct CheckResult {
    pub config: CheckConfig,
    pub warnings: Vec<Warning>,
}

impl CheckResult {
    /// With `error=true` and a violation: BuildKit's "lint violation found for rules: …" (rules sorted here;
    /// BuildKit prints them in map order).
    pub fn error(&self) -> Option<Diagnostic> {
        if !self.config.error || self.warnings.is_empty() {
            return None;
        }
        let rules: BTreeSet<&str> = self.warnings.iter().map(|w| w.rule.name).collect();
        Some(Diagnostic::new(format!(
            "lint violation found for rules: {}",
            rules.into_iter().collect::<Vec<_>>().join(", ")
        )))
    }
}

/// Collects warnings, dropping those of rules the configuration turns off.
pub(crate) struct Linter<'a> {
    config: &'a CheckConfig,
    pub warnings: Vec<Warning>,
}

impl Linter<'_> {
    pub fn report(&mut self, rule: &'static Rule, span: Span, message: String) {
        if self.config.enabled(rule) {
            self.warnings.push(Warning { rule, message, span });
        }
    }
}

/// Runs every rule. `stages`: the stages a build converts (the walk skips the others, as BuildKit's
/// dispatch does); `None` for `--check`, which looks at every stage. The parse-level rules always cover
/// the whole file.
pub fn run(
    source: &[u8],
    ast: &Ast,
    df: &Dockerfile,
    opts: &ConvertOptions,
    resolver: &dyn ImageResolver,
    stages: Option<&BTreeSet<usize>>,
) -> Result<CheckResult, Diagnostic> {
    let config = CheckConfig::for_build(source, opts)?;
    let mut lint = Linter { config: &config, warnings: Vec::new() };
    syntax::check(ast, df, &mut lint);
    walk::check(ast, df, opts, resolver, stages, &mut lint);
    let warnings = lint.warnings;
    Ok(CheckResult { config, warnings })
}

/// Parses a Dockerfile and runs every rule on every stage: `--check`.
pub fn check(source: &[u8], opts: &ConvertOptions, resolver: &dyn ImageResolver) -> Result<CheckResult, Diagnostic> {
    let ast = parser::parse(source)?;
    let df = crate::instructions::parse_dockerfile(&ast)?;
    let mut result = run(source, &ast, &df, opts, resolver, None)?;
    // BuildKit's `LintResults.PrintTo` lists them by line (a stable sort keeps a line's own order).
    result.warnings.sort_by_key(|w| w.span.start);
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_parses_like_buildkit() {
        let c = CheckConfig::parse("skip=JSONArgsRecommended, StageNameCasing;error=true").unwrap();
        assert_eq!(c.skip, BTreeSet::from(["JSONArgsRecommended".to_string(), "StageNameCasing".to_string()]));
        assert!(c.error);
        assert!(CheckConfig::parse("skip=all").unwrap().skip_all);
        assert!(CheckConfig::parse("experimental=all").unwrap().experimental_all);
        assert_eq!(CheckConfig::parse("").unwrap(), CheckConfig::default());
        assert_eq!(
            CheckConfig::parse("error=maybe").unwrap_err().to_string(),
            "failed to parse check options: failed to parse check option \"error=maybe\": invalid boolean \"maybe\""
        );
        assert_eq!(
            CheckConfig::parse("skip").unwrap_err().to_string(),
            "failed to parse check options: invalid check option \"skip\""
        );
        assert_eq!(
            CheckConfig::parse("color=red").unwrap_err().to_string(),
            "failed to parse check options: invalid check option \"color\""
        );
    }

    #[test]
    fn experimental_rules_need_asking_for() {
        let c = CheckConfig::default();
        assert!(!c.enabled(&rules::COPY_IGNORED_FILE));
        assert!(c.enabled(&rules::FROM_AS_CASING));
        let c = CheckConfig::parse("skip=all;experimental=CopyIgnoredFile").unwrap();
        assert!(c.enabled(&rules::COPY_IGNORED_FILE));
        assert!(!c.enabled(&rules::FROM_AS_CASING));
    }

    #[test]
    fn source_printing_pads_like_buildkit() {
        let src = "FROM a\nRUN b\nRUN c\nRUN d\nRUN e\nRUN f\n";
        assert_eq!(
            print_source("Dockerfile", src, Span::line(1)),
            "Dockerfile:1\n--------------------\n   1 | >>> FROM a\n   2 |     RUN b\n   3 |     RUN c\n--------------------\n"
        );
        assert_eq!(
            print_source("Dockerfile", src, Span::line(4)),
            "Dockerfile:4\n--------------------\n   2 |     RUN b\n   3 |     RUN c\n   4 | >>> RUN d\n   5 |     RUN e\n   6 |     RUN f\n--------------------\n"
        );
    }
}
