//! Progress rendering for `rbuild build`, shaped like BuildKit's: `plain` prints `#N` lines as events
//! arrive, `tty` keeps a live view (a line per step with its timer, the last lines of running steps'
//! output, collapsed when done), `rawjson` prints one JSON object per event for tools, `quiet` prints
//! nothing. Every mode can also append the full, untruncated log to a file (`--log-file`). Dockerfile
//! warnings are shown against the Dockerfile's lines; after the steps, why each step ran (`MISS [3/7] COPY
//! src/ /app: src/main.rs changed`), then exporters' messages. In a GitHub Actions job ([`super::github`])
//! warnings are also annotations, plain progress is grouped per stage, and the renderer keeps a
//! [`Report`] for the job summary.

use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::ValueEnum;
use engine::{CacheEvent, ExportEvent};
use llb::Digest;
use solver::progress::LogStream;
use solver::{Event, EventKind};

use super::github::{self, Groups, Level, Place, Report, StepLine};

/// `--progress`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ProgressMode {
    /// tty when stderr is a terminal, else plain.
    Auto,
    Tty,
    Plain,
    Rawjson,
    /// `none` is buildx's other name for it.
    #[value(alias = "none")]
    Quiet,
}

impl ProgressMode {
    /// `auto` decided against stderr.
    pub fn resolve(self) -> ProgressMode {
        match self {
            ProgressMode::Auto if std::io::stderr().is_terminal() => ProgressMode::Tty,
            ProgressMode::Auto => ProgressMode::Plain,
            m => m,
        }
    }
}

/// How many output lines of a running step the tty view shows.
const TTY_TAIL: usize = 6;

#[derive(Debug)]
struct Step {
    number: usize,
    name: String,
    started: Instant,
    done: Option<Duration>,
    cached: bool,
    /// The imported cache the result came from.
    imported: Option<String>,
    canceled: bool,
    error: Option<String>,
    tail: VecDeque<String>,
    /// Status lines by id (layer pulls).
    status: BTreeMap<String, (u64, Option<u64>)>,
}

/// Consumes solver events and draws them.
pub struct Renderer {
    mode: ProgressMode,
    steps: BTreeMap<Digest, Step>,
    order: Vec<Digest>,
    start: Instant,
    log: Option<File>,
    /// Lines the tty view drew last time (to move the cursor back over them).
    drawn: usize,
    /// The Dockerfile's name and text, for warnings.
    filename: String,
    source: String,
    /// `--quiet`: no export messages either.
    quiet: bool,
    /// The step view is final (exports have begun).
    finished: bool,
    /// In a GitHub Actions job: the Dockerfile's path for annotations, and the stage groups.
    github: Option<String>,
    groups: Groups,
    /// Why steps ran, by vertex.
    misses: BTreeMap<Digest, String>,
    first_build: bool,
    imports: Vec<(String, Result<usize, String>)>,
    exports: Vec<(String, Result<String, String>)>,
    /// The latest [`Report`], for whoever renders a summary after the build.
    report: Arc<Mutex<Report>>,
    /// The build's warnings in buildx's short form, listed again once the build is over.
    warned: Vec<String>,
}

fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

fn unix(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

impl Renderer {
    pub fn new(mode: ProgressMode, log: Option<File>, filename: String, source: String, quiet: bool) -> Renderer {
        Renderer {
            mode: mode.resolve(),
            steps: BTreeMap::new(),
            order: Vec::new(),
            start: Instant::now(),
            log,
            drawn: 0,
            filename,
            source,
            quiet,
            finished: false,
            github: None,
            groups: Groups::default(),
            misses: BTreeMap::new(),
            first_build: false,
            imports: Vec::new(),
            exports: Vec::new(),
            report: Arc::default(),
            warned: Vec::new(),
        }
    }

    /// buildx's list after a build: ` 2 warnings found:` and ` - Rule: message (line N)` for each.
    pub fn warning_summary(&self) -> Option<String> {
        if self.warned.is_empty() || matches!(self.mode, ProgressMode::Quiet | ProgressMode::Rawjson) {
            return None;
        }
        let n = self.warned.len();
        let mut out = if n == 1 { "\n 1 warning found:\n".to_string() } else { format!("\n {n} warnings found:\n") };
        for w in &self.warned {
            out.push_str(&format!(" - {w}\n"));
        }
        Some(out)
    }

    /// GitHub Actions output: annotations on `dockerfile_path` (as the pull request names it) and stage groups.
    pub fn with_github(mut self, dockerfile_path: String) -> Renderer {
        self.github = Some(dockerfile_path);
        self
    }

    /// Where the renderer leaves its [`Report`] (complete once the event stream has ended).
    pub fn report(&self) -> Arc<Mutex<Report>> {
        self.report.clone()
    }

    fn build_report(&self) -> Report {
        let steps = self
            .order
            .iter()
            .map(|d| {
                let s = &self.steps[d];
                StepLine {
                    name: s.name.clone(),
                    cached: s.cached,
                    imported: s.imported.clone(),
                    duration: s.done,
                    failed: s.error.is_some(),
                    miss: self.misses.get(d).cloned(),
                }
            })
            .collect();
        Report {
            steps,
            imports: self.imports.clone(),
            exports: self.exports.clone(),
            first_build: self.first_build,
            elapsed: self.start.elapsed(),
        }
    }

    /// Why a step ran: a line after the steps (one line for all of a first build's).
    fn miss(&mut self, m: &engine::StepMiss) {
        self.finish();
        self.finished = true;
        self.misses.insert(m.vertex, m.reason.clone());
        if self.mode == ProgressMode::Rawjson {
            let v = serde_json::json!({
                "vertex": m.vertex.to_string(),
                "time": unix(SystemTime::now()),
                "kind": "miss",
                "name": m.name,
                "reason": m.reason,
            });
            println!("{v}");
        }
        let line = if m.first_build {
            if self.first_build {
                return;
            }
            self.first_build = true;
            format!("MISS: {}", m.reason)
        } else {
            format!("MISS {}: {}", m.name, m.reason)
        };
        self.log_line(&line);
        if !self.quiet {
            eprintln!("{line}");
        }
    }

    /// Handles one build event.
    pub fn event(&mut self, e: &engine::Event) {
        match e {
            engine::Event::Step(e) => self.step_event(e),
            engine::Event::Warning(d) => {
                eprintln!("{}", d.render(&self.filename, &self.source));
                self.warned.push(match d.span {
                    Some(s) => format!("{} (line {})", d.message, s.start),
                    None => d.message.clone(),
                });
                if let Some(file) = &self.github {
                    let place = Place {
                        file: Some(file.clone()),
                        line: d.span.map(|s| s.start),
                        end_line: d.span.map(|s| s.end),
                    };
                    // A build check's warning (`Rule: message`) is titled with its rule, as buildx does.
                    let rule = d.message.split_once(": ").and_then(|(r, _)| frontend::checks::rules::by_name(r));
                    let title = rule.map_or("Dockerfile warning", |r| r.name);
                    eprintln!("{}", github::annotation(Level::Warning, &place, title, &d.message));
                }
            }
            engine::Event::Cache(c) => self.cache_event(c),
            engine::Event::Miss(m) => self.miss(m),
            engine::Event::Export(x) => {
                // The steps are over: draw them a last time, then the exporters' lines below.
                self.finish();
                self.finished = true;
                if self.quiet {
                    return;
                }
                let line = match x {
                    ExportEvent::Named { reference } => format!("naming to {reference} done"),
                    ExportEvent::Pushed { reference, uploaded, mounted, existed } => {
                        format!("pushed {reference}: {uploaded} uploaded, {mounted} mounted, {existed} already present")
                    }
                };
                self.log_line(&line);
                eprintln!("{line}");
            }
        }
    }

    fn log_line(&mut self, s: &str) {
        if let Some(f) = &mut self.log {
            // The log file is best effort: a full disk must not fail the build.
            let _ = writeln!(f, "{s}");
        }
    }

    fn step(&mut self, v: Digest) -> &mut Step {
        if !self.steps.contains_key(&v) {
            self.order.push(v);
            let number = self.order.len();
            self.steps.insert(
                v,
                Step {
                    number,
                    name: v.short(),
                    started: Instant::now(),
                    done: None,
                    cached: false,
                    imported: None,
                    canceled: false,
                    error: None,
                    tail: VecDeque::new(),
                    status: BTreeMap::new(),
                },
            );
        }
        self.steps.get_mut(&v).unwrap_or_else(|| unreachable!("inserted above"))
    }

    /// A cache import or export: imports come before the steps, exports after them.
    fn cache_event(&mut self, c: &CacheEvent) {
        let line = match c {
            // The daemon's metrics count fetched bytes; the step's own time shows the wait.
            CacheEvent::Importing { .. } | CacheEvent::Fetched { .. } => return,
            CacheEvent::Imported { from, results } => {
                self.imports.push((from.clone(), Ok(*results)));
                format!("importing cache manifest from {from}: {results} cached results")
            }
            CacheEvent::ImportFailed { from, error } => {
                self.imports.push((from.clone(), Err(error.clone())));
                format!("WARNING: cannot import cache from {from}: {error}; building without it")
            }
            CacheEvent::Miss { from, key, error } => {
                let short = key.strip_prefix("sha256:").unwrap_or(key).chars().take(12).collect::<String>();
                format!("WARNING: cache {from}: entry {short} cannot be used ({error}); its step runs")
            }
            CacheEvent::Exporting { .. } => {
                self.finish();
                self.finished = true;
                return;
            }
            CacheEvent::Exported { to, results, layers, new, bytes } => {
                let figures = format!("{results} results, {layers} layers, {new} new, {} sent", human(*bytes));
                self.exports.push((to.clone(), Ok(figures.clone())));
                format!("exporting cache to {to}: {figures}")
            }
            CacheEvent::ExportFailed { to, error } => {
                self.exports.push((to.clone(), Err(error.clone())));
                format!("WARNING: exporting cache to {to} failed (ignore-error=true): {error}")
            }
        };
        self.log_line(&line);
        if !self.quiet || line.starts_with("WARNING") {
            eprintln!("{line}");
        }
    }

    /// Handles one step event.
    fn step_event(&mut self, e: &Event) {
        let plain = self.plain_text(e);
        if let Some(text) = &plain {
            for l in text.lines() {
                self.log_line(l);
            }
        }
        match self.mode {
            ProgressMode::Quiet | ProgressMode::Auto => {}
            ProgressMode::Plain => {
                if let Some(text) = plain {
                    if self.github.is_some() && !self.finished {
                        let name = match &e.kind {
                            EventKind::Started { name } => name.clone(),
                            _ => self.steps.get(&e.vertex).map(|s| s.name.clone()).unwrap_or_default(),
                        };
                        eprint!("{}", self.groups.enter(&github::stage_of(&name)));
                    }
                    eprint!("{text}");
                }
            }
            ProgressMode::Rawjson => {
                let v = raw_json(e);
                println!("{v}");
            }
            ProgressMode::Tty => {}
        }
        let step = self.step(e.vertex);
        match &e.kind {
            EventKind::Started { name } => {
                step.name = name.clone();
                step.started = Instant::now();
            }
            EventKind::Cached { source } => {
                step.cached = true;
                step.imported = source.clone();
                step.done.get_or_insert(Duration::ZERO);
            }
            EventKind::Log { line, .. } => {
                step.tail.push_back(String::from_utf8_lossy(line).into_owned());
                while step.tail.len() > TTY_TAIL {
                    step.tail.pop_front();
                }
            }
            EventKind::Status { id, current, total } => {
                step.status.insert(id.clone(), (*current, *total));
            }
            EventKind::Completed { duration } => step.done = Some(*duration),
            EventKind::Failed { error } => {
                step.error = Some(error.clone());
                step.done = Some(step.started.elapsed());
            }
            EventKind::Canceled => {
                step.canceled = true;
                step.done = Some(step.started.elapsed());
            }
        }
    }

    /// The plain-mode text of an event (also what goes to the log file).
    fn plain_text(&mut self, e: &Event) -> Option<String> {
        let n = self.step(e.vertex).number;
        let text = match &e.kind {
            EventKind::Started { name } => format!("\n#{n} {name}\n"),
            EventKind::Cached { source: None } => format!("#{n} CACHED\n"),
            EventKind::Cached { source: Some(from) } => format!("#{n} CACHED (imported from {from})\n"),
            EventKind::Log { line, .. } => {
                let started = self.steps.get(&e.vertex).map(|s| s.started.elapsed()).unwrap_or_default();
                format!("#{n} {:.3} {}\n", started.as_secs_f64(), String::from_utf8_lossy(line))
            }
            EventKind::Status { id, current, total } => match total {
                Some(t) if current == t => format!("#{n} {id} {} done\n", human(*t)),
                // Intermediate byte counts would flood plain output; BuildKit prints them rarely too.
                _ => return None,
            },
            EventKind::Completed { duration } => format!("#{n} DONE {}\n", secs(*duration)),
            EventKind::Failed { error } => format!("#{n} ERROR: {error}\n"),
            EventKind::Canceled => format!("#{n} CANCELED\n"),
        };
        Some(text)
    }

    /// Redraws the tty view (call on a timer and after events).
    pub fn tick(&mut self) {
        if self.mode != ProgressMode::Tty || self.finished {
            return;
        }
        let mut out = String::new();
        if self.drawn > 0 {
            out.push_str(&format!("\x1b[{}A", self.drawn));
        }
        let lines = self.tty_lines();
        for l in &lines {
            out.push_str("\x1b[2K");
            out.push_str(l);
            out.push('\n');
        }
        // Clear what the previous, longer view left below.
        if self.drawn > lines.len() {
            for _ in lines.len()..self.drawn {
                out.push_str("\x1b[2K\n");
            }
            out.push_str(&format!("\x1b[{}A", self.drawn - lines.len()));
        }
        self.drawn = lines.len();
        eprint!("{out}");
    }

    fn tty_lines(&self) -> Vec<String> {
        let width = terminal_width();
        let clip = |s: String| -> String {
            if s.chars().count() > width {
                s.chars().take(width.saturating_sub(1)).collect::<String>() + "…"
            } else {
                s
            }
        };
        let done = self.steps.values().filter(|s| s.done.is_some()).count();
        let mut lines = vec![format!(
            "[+] Building {} ({}/{}){}",
            secs(self.start.elapsed()),
            done,
            self.steps.len(),
            if done == self.steps.len() && !self.steps.is_empty() { " FINISHED" } else { "" }
        )];
        let mut shown = std::collections::BTreeSet::new();
        for d in &self.order {
            let s = &self.steps[d];
            // One Dockerfile step can be several vertices (COPY --link is a copy and a merge): one line each
            // name, as BuildKit's progress groups show them, unless the later one is still running.
            if !shown.insert(s.name.as_str()) && s.done.is_some() {
                continue;
            }
            let timer = match (s.cached, s.done) {
                (true, _) => "CACHED".to_string(),
                (false, Some(_)) if s.canceled => "CANCELED".to_string(),
                (false, Some(t)) => secs(t),
                (false, None) => secs(s.started.elapsed()),
            };
            let mark = if s.error.is_some() { " ERROR" } else { "" };
            let head = format!(" => {}{mark}", s.name);
            let pad = width.saturating_sub(head.chars().count() + timer.len() + 1).max(1);
            lines.push(clip(format!("{head}{}{timer}", " ".repeat(pad))));
            if s.done.is_none() {
                for (id, (cur, total)) in &s.status {
                    let t = total.map(human).unwrap_or_default();
                    lines.push(clip(format!(" => => {id} {} / {t}", human(*cur))));
                }
                for l in &s.tail {
                    lines.push(clip(format!(" => => # {l}")));
                }
            }
        }
        lines
    }

    /// Final draw (in plain mode: the end of the open stage group), and the report brought up to date.
    pub fn finish(&mut self) {
        self.tick();
        let close = self.groups.close();
        if !close.is_empty() {
            eprint!("{close}");
        }
        let report = self.build_report();
        *self.report.lock().unwrap_or_else(|e| e.into_inner()) = report;
    }
}

fn terminal_width() -> usize {
    std::env::var("COLUMNS").ok().and_then(|c| c.parse().ok()).unwrap_or(100)
}

fn human(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n}B")
    } else {
        format!("{v:.2}{}", UNITS[u])
    }
}

/// The rawjson line of an event: `{"vertex":"sha256:...","time":1.5,"kind":"log","stream":"stdout",...}`.
fn raw_json(e: &Event) -> serde_json::Value {
    use serde_json::json;
    let base = |kind: &str| json!({"vertex": e.vertex.to_string(), "time": unix(e.time), "kind": kind});
    let mut v = match &e.kind {
        EventKind::Started { name } => {
            let mut v = base("started");
            v["name"] = json!(name);
            v
        }
        EventKind::Cached { source } => {
            let mut v = base("cached");
            v["source"] = json!(source);
            v
        }
        EventKind::Log { stream, line } => {
            let mut v = base("log");
            v["stream"] = json!(if *stream == LogStream::Stdout { "stdout" } else { "stderr" });
            v["line"] = json!(String::from_utf8_lossy(line));
            v
        }
        EventKind::Status { id, current, total } => {
            let mut v = base("status");
            v["id"] = json!(id);
            v["current"] = json!(current);
            v["total"] = json!(total);
            v
        }
        EventKind::Completed { duration } => {
            let mut v = base("completed");
            v["duration"] = json!(duration.as_secs_f64());
            v
        }
        EventKind::Failed { error } => {
            let mut v = base("failed");
            v["error"] = json!(error);
            v
        }
        EventKind::Canceled => base("canceled"),
    };
    if let Some(o) = v.as_object_mut() {
        o.retain(|_, x| !x.is_null());
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(v: Digest, kind: EventKind) -> Event {
        Event { vertex: v, time: SystemTime::UNIX_EPOCH + Duration::from_secs(2), kind }
    }

    #[test]
    fn plain_numbers_steps_in_order_of_appearance() {
        let a = Digest::of(b"a");
        let b = Digest::of(b"b");
        let mut r = Renderer::new(ProgressMode::Quiet, None, "Dockerfile".into(), String::new(), true);
        assert_eq!(
            r.plain_text(&ev(a, EventKind::Started { name: "[1/2] FROM busybox".into() })).unwrap(),
            "\n#1 [1/2] FROM busybox\n"
        );
        assert_eq!(
            r.plain_text(&ev(b, EventKind::Started { name: "[2/2] RUN true".into() })).unwrap(),
            "\n#2 [2/2] RUN true\n"
        );
        assert_eq!(r.plain_text(&ev(a, EventKind::Cached { source: None })).unwrap(), "#1 CACHED\n");
        let done = r.plain_text(&ev(b, EventKind::Completed { duration: Duration::from_millis(1250) })).unwrap();
        assert_eq!(done, "#2 DONE 1.2s\n");
    }

    #[test]
    fn tty_view_shows_tail_of_running_steps_only() {
        let a = Digest::of(b"a");
        let mut r = Renderer::new(ProgressMode::Quiet, None, "Dockerfile".into(), String::new(), true);
        r.step_event(&ev(a, EventKind::Started { name: "[1/1] RUN x".into() }));
        for i in 0..10 {
            r.step_event(&ev(a, EventKind::Log { stream: LogStream::Stdout, line: format!("line {i}").into_bytes() }));
        }
        let lines = r.tty_lines();
        assert_eq!(lines.len(), 2 + TTY_TAIL);
        assert!(lines.last().unwrap().contains("line 9"));
        assert!(!lines.iter().any(|l| l.contains("line 3")));
        r.step_event(&ev(a, EventKind::Completed { duration: Duration::from_secs(1) }));
        let lines = r.tty_lines();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].contains("(1/1) FINISHED"));
    }

    #[test]
    fn the_report_has_steps_misses_and_cache_figures() {
        let (a, b) = (Digest::of(b"a"), Digest::of(b"b"));
        let mut r = Renderer::new(ProgressMode::Quiet, None, "Dockerfile".into(), String::new(), true);
        r.step_event(&ev(a, EventKind::Started { name: "[1/2] FROM busybox".into() }));
        r.step_event(&ev(a, EventKind::Cached { source: Some("gha:main".into()) }));
        r.step_event(&ev(b, EventKind::Started { name: "[2/2] COPY src/ /app".into() }));
        r.step_event(&ev(b, EventKind::Completed { duration: Duration::from_millis(300) }));
        r.event(&engine::Event::Cache(CacheEvent::Imported { from: "gha:main".into(), results: 3 }));
        let miss = |first_build| engine::StepMiss {
            vertex: b,
            name: "[2/2] COPY src/ /app".into(),
            reason: "src/main.rs changed".into(),
            first_build,
        };
        r.event(&engine::Event::Miss(miss(false)));
        r.finish();
        let report = r.report().lock().unwrap().clone();
        assert_eq!(report.steps.len(), 2);
        assert_eq!(report.steps[0].imported.as_deref(), Some("gha:main"));
        assert!(report.steps[0].cached && !report.steps[1].cached);
        assert_eq!(report.steps[1].miss.as_deref(), Some("src/main.rs changed"));
        assert_eq!(report.steps[1].duration, Some(Duration::from_millis(300)));
        assert_eq!(report.imports, vec![("gha:main".to_string(), Ok(3))]);
        assert!(!report.first_build);
        r.event(&engine::Event::Miss(miss(true)));
        r.finish();
        assert!(r.report().lock().unwrap().first_build);
    }

    #[test]
    fn rawjson_has_kind_and_payload() {
        let a = Digest::of(b"a");
        let v = raw_json(&ev(a, EventKind::Log { stream: LogStream::Stderr, line: b"oops".to_vec() }));
        assert_eq!(v["kind"], "log");
        assert_eq!(v["stream"], "stderr");
        assert_eq!(v["line"], "oops");
        assert_eq!(v["time"], 2.0);
    }
}
