//! GitHub Actions: when `GITHUB_ACTIONS=true`, Dockerfile errors and warnings are also printed as
//! workflow commands (`::error file=Dockerfile,line=3,title=…::…`) so GitHub shows them on the line of the
//! pull request, plain progress is folded into one `::group::` per stage, and a job summary (image, digest,
//! time, a table of steps with why each one ran, cache figures) is appended to `$GITHUB_STEP_SUMMARY`.
//!
//! The runner reads workflow commands from both output streams; they go to stderr with the progress, so
//! a group holds exactly the lines of its stage. Escaping follows the runner's command format: `%`, CR and
//! LF in the message, and also `:` and `,` in property values.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Whether this process runs in a GitHub Actions job.
pub fn active() -> bool {
    std::env::var("GITHUB_ACTIONS").is_ok_and(|v| v == "true")
}

fn escape_data(s: &str) -> String {
    s.replace('%', "%25").replace('\r', "%0D").replace('\n', "%0A")
}

fn escape_property(s: &str) -> String {
    escape_data(s).replace(':', "%3A").replace(',', "%2C")
}

/// An annotation's severity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Error,
    Warning,
}

/// Where an annotation points: a file and its lines.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Place {
    pub file: Option<String>,
    pub line: Option<usize>,
    pub end_line: Option<usize>,
}

/// `::error file=F,line=L,endLine=E,title=T::message`.
pub fn annotation(level: Level, place: &Place, title: &str, message: &str) -> String {
    let mut props = Vec::new();
    if let Some(f) = &place.file {
        props.push(format!("file={}", escape_property(f)));
    }
    if let Some(l) = place.line {
        props.push(format!("line={l}"));
        if let Some(e) = place.end_line.filter(|e| *e > l) {
            props.push(format!("endLine={e}"));
        }
    }
    props.push(format!("title={}", escape_property(title)));
    let cmd = match level {
        Level::Error => "error",
        Level::Warning => "warning",
    };
    format!("::{cmd} {}::{}", props.join(","), escape_data(message))
}

/// The Dockerfile's path as GitHub names files in a pull request: relative to the workspace (the checkout),
/// else to the current directory, else as it is.
pub fn annotation_path(dockerfile: &Path) -> String {
    let abs = std::path::absolute(dockerfile).unwrap_or_else(|_| dockerfile.to_path_buf());
    let abs = abs.canonicalize().unwrap_or(abs);
    let bases: Vec<PathBuf> = std::env::var_os("GITHUB_WORKSPACE")
        .map(PathBuf::from)
        .into_iter()
        .chain(std::env::current_dir().ok())
        .map(|b| b.canonicalize().unwrap_or(b))
        .collect();
    for b in bases {
        if let Ok(rel) = abs.strip_prefix(&b) {
            return rel.to_string_lossy().into_owned();
        }
    }
    abs.to_string_lossy().into_owned()
}

/// The stage of a step from its name: `[build 2/4] RUN make` -> `build`, `[2/4] RUN make` -> the only
/// stage, `[internal] load build context` -> `internal`.
pub fn stage_of(name: &str) -> String {
    let inside = name.strip_prefix('[').and_then(|r| r.split_once(']')).map(|(i, _)| i).unwrap_or("");
    let words: Vec<&str> =
        inside.split(' ').filter(|w| !(w.contains('/') && w.split('/').all(|n| n.parse::<u32>().is_ok()))).collect();
    let stage = words.join(" ");
    if stage.is_empty() {
        "main".to_string()
    } else {
        stage
    }
}

/// `::group::TITLE` / `::endgroup::` around plain progress, one group per stage in the order the lines come.
#[derive(Debug, Default)]
pub struct Groups {
    open: Option<String>,
}

impl Groups {
    /// The commands to print before a line of `stage`.
    pub fn enter(&mut self, stage: &str) -> String {
        if self.open.as_deref() == Some(stage) {
            return String::new();
        }
        let mut out = self.close();
        out.push_str(&format!("::group::stage {}\n", escape_data(stage)));
        self.open = Some(stage.to_string());
        out
    }

    /// The command that ends the open group, if one is open.
    pub fn close(&mut self) -> String {
        match self.open.take() {
            Some(_) => "::endgroup::\n".to_string(),
            None => String::new(),
        }
    }
}

/// One step as the summary shows it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StepLine {
    pub name: String,
    pub cached: bool,
    /// The imported cache it came from.
    pub imported: Option<String>,
    pub duration: Option<Duration>,
    pub failed: bool,
    /// Why it ran.
    pub miss: Option<String>,
}

/// What a build did, gathered from its events, for the job summary.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub steps: Vec<StepLine>,
    /// Cache imports: (from, results), or (from, error).
    pub imports: Vec<(String, Result<usize, String>)>,
    /// Cache exports: (to, text), e.g. `5 results, 3 layers, 1 new, 1.20MB sent`.
    pub exports: Vec<(String, Result<String, String>)>,
    /// Set when the last build of this target was not there to compare with.
    pub first_build: bool,
    pub elapsed: Duration,
}

/// How the build ended, for the summary's head.
pub struct Ending<'a> {
    pub image_names: Option<&'a str>,
    pub digest: Option<&'a str>,
    pub image_id: Option<&'a str>,
    pub error: Option<&'a str>,
}

fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

fn code(s: &str) -> String {
    format!("`{}`", cell(&s.replace('`', "'")))
}

/// The Markdown of the job summary.
pub fn summary(report: &Report, end: &Ending) -> String {
    let mut md = String::new();
    let title = match (end.error, end.image_names) {
        (Some(_), _) => "rbuild: build failed".to_string(),
        (None, Some(n)) => format!("rbuild: {}", n.split(',').next().unwrap_or(n)),
        (None, None) => "rbuild: build done".to_string(),
    };
    let _ = writeln!(md, "### {}\n", cell(&title));
    let _ = writeln!(md, "| | |\n|---|---|");
    if let Some(e) = end.error {
        let _ = writeln!(md, "| Error | {} |", cell(e));
    }
    if let Some(n) = end.image_names {
        let names: Vec<String> = n.split(',').map(code).collect();
        let _ = writeln!(md, "| Image | {} |", names.join(", "));
    }
    if let Some(d) = end.digest {
        let _ = writeln!(md, "| Digest | {} |", code(d));
    }
    if let Some(id) = end.image_id {
        let _ = writeln!(md, "| Image ID | {} |", code(id));
    }
    let _ = writeln!(md, "| Total time | {:.1}s |", report.elapsed.as_secs_f64());
    let counted: Vec<&StepLine> = report.steps.iter().filter(|s| !s.name.starts_with("[internal]")).collect();
    let cached = counted.iter().filter(|s| s.cached).count();
    if !counted.is_empty() {
        let _ = writeln!(
            md,
            "| Cache hits | {cached} of {} steps ({:.0}%) |",
            counted.len(),
            100.0 * cached as f64 / counted.len() as f64
        );
    }
    for (from, r) in &report.imports {
        let text = match r {
            Ok(n) => format!("{n} cached results"),
            Err(e) => format!("could not be read: {}", cell(e)),
        };
        let _ = writeln!(md, "| Cache import {} | {text} |", code(from));
    }
    for (to, r) in &report.exports {
        let text = match r {
            Ok(t) => cell(t),
            Err(e) => format!("failed: {}", cell(e)),
        };
        let _ = writeln!(md, "| Cache export {} | {text} |", code(to));
    }
    if !report.steps.is_empty() {
        let _ = writeln!(md, "\n| Step | Result | Time | Why it ran |\n|---|---|---|---|");
        for s in &report.steps {
            let result = match (s.failed, s.cached, &s.imported) {
                (true, _, _) => "**failed**".to_string(),
                (false, true, Some(from)) => format!("cached ({})", cell(from)),
                (false, true, None) => "cached".to_string(),
                (false, false, _) => "run".to_string(),
            };
            let time = s.duration.map(|d| format!("{:.1}s", d.as_secs_f64())).unwrap_or_default();
            let why = s.miss.as_deref().map(cell).unwrap_or_default();
            let _ = writeln!(md, "| {} | {result} | {time} | {why} |", code(&s.name));
        }
        if report.first_build {
            let _ = writeln!(
                md,
                "\nNo earlier build of this Dockerfile target on this machine: the steps that ran have nothing \
                 to be compared with."
            );
        }
    }
    md.push('\n');
    md
}

/// Appends the summary to `$GITHUB_STEP_SUMMARY`, when the runner set it.
pub fn write_summary(report: &Report, end: &Ending) -> std::io::Result<()> {
    use std::io::Write;
    let Some(path) = std::env::var_os("GITHUB_STEP_SUMMARY").filter(|p| !p.is_empty()) else { return Ok(()) };
    let mut f = std::fs::OpenOptions::new().append(true).create(true).open(path)?;
    f.write_all(summary(report, end).as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotations_are_escaped_as_the_runner_reads_them() {
        let place = Place { file: Some("docker/Dockerfile,prod".into()), line: Some(3), end_line: Some(4) };
        assert_eq!(
            annotation(Level::Error, &place, "Dockerfile: error", "unknown instruction: RUNN\n100% sure"),
            "::error file=docker/Dockerfile%2Cprod,line=3,endLine=4,title=Dockerfile%3A error::unknown instruction: RUNN%0A100%25 sure"
        );
        assert_eq!(annotation(Level::Warning, &Place::default(), "t", "m"), "::warning title=t::m");
    }

    #[test]
    fn stages_come_from_step_names_and_groups_switch_on_them() {
        assert_eq!(stage_of("[build 2/4] RUN make"), "build");
        assert_eq!(stage_of("[2/4] RUN make"), "main");
        assert_eq!(stage_of("[internal] load build context"), "internal");
        let mut g = Groups::default();
        assert_eq!(g.enter("build"), "::group::stage build\n");
        assert_eq!(g.enter("build"), "");
        assert_eq!(g.enter("main"), "::endgroup::\n::group::stage main\n");
        assert_eq!(g.close(), "::endgroup::\n");
        assert_eq!(g.close(), "");
    }

    #[test]
    fn summary_has_the_image_the_step_table_and_the_cache_figures() {
        let report = Report {
            steps: vec![
                StepLine { name: "[1/3] FROM busybox".into(), cached: true, ..Default::default() },
                StepLine {
                    name: "[2/3] COPY src/ /app".into(),
                    duration: Some(Duration::from_millis(1500)),
                    miss: Some("src/main.rs changed".into()),
                    ..Default::default()
                },
                StepLine { name: "[3/3] RUN a | b".into(), failed: true, ..Default::default() },
            ],
            imports: vec![("gha:main".into(), Ok(4))],
            exports: vec![("gha:main".into(), Ok("3 results, 2 layers, 1 new, 1.00MB sent".into()))],
            first_build: false,
            elapsed: Duration::from_secs(12),
        };
        let md = summary(
            &report,
            &Ending {
                image_names: Some("r/app:1,r/app:latest"),
                digest: Some("sha256:abc"),
                image_id: None,
                error: None,
            },
        );
        assert!(md.starts_with("### rbuild: r/app:1\n"), "{md}");
        assert!(md.contains("| Image | `r/app:1`, `r/app:latest` |"), "{md}");
        assert!(md.contains("| Digest | `sha256:abc` |"), "{md}");
        assert!(md.contains("| Cache hits | 1 of 3 steps (33%) |"), "{md}");
        assert!(md.contains("| `[2/3] COPY src/ /app` | run | 1.5s | src/main.rs changed |"), "{md}");
        assert!(md.contains("| `[3/3] RUN a \\| b` | **failed** |"), "{md}");
        assert!(md.contains("| Cache import `gha:main` | 4 cached results |"), "{md}");
        assert!(md.contains("| Total time | 12.0s |"), "{md}");
    }
}
