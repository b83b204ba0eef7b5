//! Engine types to their wire form and back: progress events, outputs, errors.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use engine::export::{OutputKind, OutputSpec};
use engine::{BuildError, CacheEvent, Event as EngineEvent, ExportEvent as EngineExport};
use frontend::diag::{Diagnostic, Span};
use snapshotter::diff::Compression;
use solver::progress::LogStream;
use solver::{EventKind, RunFailure, SolveError};

use crate::proto::{self, build_error, event, output, step_event};

fn nanos(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0)
}

fn time_of(ns: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(ns.max(0) as u64)
}

pub(crate) fn event_to_proto(e: &EngineEvent) -> proto::Event {
    let kind = match e {
        EngineEvent::Step(s) => {
            let kind = match &s.kind {
                EventKind::Started { name } => step_event::Kind::Started(name.clone()),
                EventKind::Cached { source: None } => step_event::Kind::Cached(true),
                EventKind::Cached { source: Some(from) } => step_event::Kind::CachedFrom(from.clone()),
                EventKind::Log { stream, line } => {
                    step_event::Kind::Log(proto::LogLine { stderr: *stream == LogStream::Stderr, line: line.clone() })
                }
                EventKind::Status { id, current, total } => {
                    step_event::Kind::Status(proto::Status { id: id.clone(), current: *current, total: *total })
                }
                EventKind::Completed { duration } => step_event::Kind::CompletedNs(duration.as_nanos() as u64),
                EventKind::Failed { error } => step_event::Kind::Failed(error.clone()),
                EventKind::Canceled => step_event::Kind::Canceled(true),
            };
            event::Kind::Step(proto::StepEvent {
                vertex: s.vertex.to_string(),
                time_ns: nanos(s.time),
                kind: Some(kind),
            })
        }
        EngineEvent::Warning(d) => event::Kind::Warning(proto::Warning {
            message: d.message.clone(),
            span_start: d.span.map(|s| s.start as u64),
            span_end: d.span.map(|s| s.end as u64),
        }),
        EngineEvent::Cache(c) => event::Kind::Cache(cache_to_proto(c)),
        EngineEvent::Miss(m) => event::Kind::Miss(proto::StepMiss {
            vertex: m.vertex.to_string(),
            name: m.name.clone(),
            reason: m.reason.clone(),
            first_build: m.first_build,
        }),
        EngineEvent::Export(EngineExport::Named { reference }) => {
            event::Kind::Export(proto::ExportEvent { reference: reference.clone(), ..Default::default() })
        }
        EngineEvent::Export(EngineExport::Pushed { reference, uploaded, mounted, existed }) => {
            event::Kind::Export(proto::ExportEvent {
                reference: reference.clone(),
                pushed: true,
                uploaded: *uploaded as u64,
                mounted: *mounted as u64,
                existed: *existed as u64,
            })
        }
    };
    proto::Event { kind: Some(kind) }
}

fn span(start: Option<u64>, end: Option<u64>) -> Option<Span> {
    Some(Span::new(start? as usize, end? as usize))
}

/// The engine event a client renders; `None` for a malformed message.
pub(crate) fn event_from_proto(e: proto::Event) -> Option<EngineEvent> {
    Some(match e.kind? {
        event::Kind::Step(s) => {
            let kind = match s.kind? {
                step_event::Kind::Started(name) => EventKind::Started { name },
                step_event::Kind::Cached(_) => EventKind::Cached { source: None },
                step_event::Kind::CachedFrom(from) => EventKind::Cached { source: Some(from) },
                step_event::Kind::Log(l) => EventKind::Log {
                    stream: if l.stderr { LogStream::Stderr } else { LogStream::Stdout },
                    line: l.line,
                },
                step_event::Kind::Status(st) => EventKind::Status { id: st.id, current: st.current, total: st.total },
                step_event::Kind::CompletedNs(ns) => EventKind::Completed { duration: Duration::from_nanos(ns) },
                step_event::Kind::Failed(error) => EventKind::Failed { error },
                step_event::Kind::Canceled(_) => EventKind::Canceled,
            };
            EngineEvent::Step(solver::Event { vertex: s.vertex.parse().ok()?, time: time_of(s.time_ns), kind })
        }
        event::Kind::Warning(w) => {
            EngineEvent::Warning(Diagnostic { message: w.message, span: span(w.span_start, w.span_end) })
        }
        event::Kind::Cache(c) => EngineEvent::Cache(cache_from_proto(c)?),
        event::Kind::Miss(m) => EngineEvent::Miss(engine::StepMiss {
            vertex: m.vertex.parse().ok()?,
            name: m.name,
            reason: m.reason,
            first_build: m.first_build,
        }),
        event::Kind::Export(x) if x.pushed => EngineEvent::Export(EngineExport::Pushed {
            reference: x.reference,
            uploaded: x.uploaded as usize,
            mounted: x.mounted as usize,
            existed: x.existed as usize,
        }),
        event::Kind::Export(x) => EngineEvent::Export(EngineExport::Named { reference: x.reference }),
    })
}

fn cache_to_proto(c: &CacheEvent) -> proto::CacheEvent {
    let mut p = proto::CacheEvent::default();
    let (kind, reference) = match c {
        CacheEvent::Importing { from } => ("importing", from),
        CacheEvent::Imported { from, results } => {
            p.results = *results as u64;
            ("imported", from)
        }
        CacheEvent::ImportFailed { from, error } => {
            p.error = error.clone();
            ("import_failed", from)
        }
        CacheEvent::Miss { from, key, error } => {
            p.key = key.clone();
            p.error = error.clone();
            ("miss", from)
        }
        CacheEvent::Fetched { from, blobs, bytes } => {
            (p.layers, p.bytes) = (*blobs as u64, *bytes);
            ("fetched", from)
        }
        CacheEvent::Exporting { to } => ("exporting", to),
        CacheEvent::Exported { to, results, layers, new, bytes } => {
            (p.results, p.layers, p.new, p.bytes) = (*results as u64, *layers as u64, *new as u64, *bytes);
            ("exported", to)
        }
        CacheEvent::ExportFailed { to, error } => {
            p.error = error.clone();
            ("export_failed", to)
        }
    };
    p.kind = kind.into();
    p.reference = reference.clone();
    p
}

fn cache_from_proto(p: proto::CacheEvent) -> Option<CacheEvent> {
    let r = p.reference;
    Some(match p.kind.as_str() {
        "importing" => CacheEvent::Importing { from: r },
        "imported" => CacheEvent::Imported { from: r, results: p.results as usize },
        "import_failed" => CacheEvent::ImportFailed { from: r, error: p.error },
        "miss" => CacheEvent::Miss { from: r, key: p.key, error: p.error },
        "fetched" => CacheEvent::Fetched { from: r, blobs: p.layers as usize, bytes: p.bytes },
        "exporting" => CacheEvent::Exporting { to: r },
        "exported" => CacheEvent::Exported {
            to: r,
            results: p.results as usize,
            layers: p.layers as usize,
            new: p.new as usize,
            bytes: p.bytes,
        },
        "export_failed" => CacheEvent::ExportFailed { to: r, error: p.error },
        _ => return None,
    })
}

fn compression_name(c: Option<Compression>) -> &'static str {
    match c {
        None => "",
        Some(Compression::Gzip) => "gzip",
        Some(Compression::Zstd) => "zstd",
        Some(Compression::None) => "uncompressed",
    }
}

pub(crate) fn compression_of(s: &str) -> Result<Option<Compression>, String> {
    match s {
        "" => Ok(None),
        "gzip" => Ok(Some(Compression::Gzip)),
        "zstd" => Ok(Some(Compression::Zstd)),
        "uncompressed" => Ok(Some(Compression::None)),
        other => Err(format!("unknown compression {other:?}")),
    }
}

/// An output as the daemon is asked for it (destinations stay with the client).
pub(crate) fn output_to_proto(o: &OutputSpec) -> proto::Output {
    let (kind, names, push) = match &o.kind {
        OutputKind::Image { names, push } => (output::Kind::Image, names.clone(), *push),
        OutputKind::Oci { names, .. } => (output::Kind::Oci, names.clone(), false),
        OutputKind::Docker { names, .. } => (output::Kind::Docker, names.clone(), false),
        OutputKind::Local { .. } => (output::Kind::Local, Vec::new(), false),
        OutputKind::Tar { .. } => (output::Kind::Tar, Vec::new(), false),
    };
    proto::Output {
        kind: kind as i32,
        names,
        push,
        compression: compression_name(o.compression).into(),
        oci_mediatypes: o.oci_mediatypes,
    }
}

/// A build error on the wire.
pub(crate) fn error_to_proto(e: &BuildError) -> proto::BuildError {
    use build_error::Kind;
    let mut out = proto::BuildError { message: e.to_string(), ..Default::default() };
    let kind = match e {
        BuildError::Request(m) => {
            out.message = m.clone();
            Kind::Request
        }
        BuildError::Dockerfile { diagnostic, .. } => {
            out.message = diagnostic.message.clone();
            out.span_start = diagnostic.span.map(|s| s.start as u64);
            out.span_end = diagnostic.span.map(|s| s.end as u64);
            Kind::Dockerfile
        }
        BuildError::Solve(SolveError::Run(f)) => {
            out.run = Some(proto::RunFailure {
                vertex: f.vertex.clone(),
                locations: f
                    .locations
                    .iter()
                    .map(|l| proto::SourceLocation {
                        file: l.file.clone(),
                        start_line: l.start_line,
                        end_line: l.end_line,
                    })
                    .collect(),
                command: f.command.clone(),
                exit_code: f.exit_code,
                status: f.status.clone(),
                tail: f.tail.clone(),
            });
            Kind::Solve
        }
        BuildError::Solve(s) => {
            out.message = s.to_string();
            Kind::Solve
        }
        BuildError::Export { source, .. } => {
            out.message = source.to_string();
            Kind::Export
        }
        BuildError::Cancelled => Kind::Cancelled,
        BuildError::Internal(_) => Kind::Internal,
    };
    out.kind = kind as i32;
    out
}

/// How a remote build failed, as a client shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteFailure {
    /// The Dockerfile does not parse or convert.
    Dockerfile(Diagnostic),
    /// A RUN failed.
    Run(RunFailure),
    /// Another step failed (the message names it).
    Solve(String),
    /// The build was cancelled.
    Cancelled,
    /// The request, an export or the daemon failed.
    Other(String),
}

impl std::fmt::Display for RemoteFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RemoteFailure::Dockerfile(d) => f.write_str(&d.message),
            RemoteFailure::Run(r) => write!(f, "{r}"),
            RemoteFailure::Solve(m) | RemoteFailure::Other(m) => f.write_str(m),
            RemoteFailure::Cancelled => f.write_str("the build was cancelled"),
        }
    }
}

pub(crate) fn error_from_proto(e: proto::BuildError) -> RemoteFailure {
    use build_error::Kind;
    match Kind::try_from(e.kind).unwrap_or(Kind::Internal) {
        Kind::Dockerfile => {
            RemoteFailure::Dockerfile(Diagnostic { message: e.message, span: span(e.span_start, e.span_end) })
        }
        Kind::Solve => match e.run {
            Some(r) => RemoteFailure::Run(RunFailure {
                vertex: r.vertex,
                locations: r
                    .locations
                    .into_iter()
                    .map(|l| llb::SourceLocation { file: l.file, start_line: l.start_line, end_line: l.end_line })
                    .collect(),
                command: r.command,
                exit_code: r.exit_code,
                status: r.status,
                tail: r.tail,
            }),
            None => RemoteFailure::Solve(e.message),
        },
        Kind::Cancelled => RemoteFailure::Cancelled,
        Kind::Request | Kind::Export | Kind::Internal => RemoteFailure::Other(e.message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_survive_the_wire() {
        let v = llb::Digest::of(b"v");
        let t = UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789);
        let events = [
            EngineEvent::Step(solver::Event {
                vertex: v,
                time: t,
                kind: EventKind::Started { name: "[1/2] RUN x".into() },
            }),
            EngineEvent::Step(solver::Event {
                vertex: v,
                time: t,
                kind: EventKind::Log { stream: LogStream::Stderr, line: b"oops".to_vec() },
            }),
            EngineEvent::Step(solver::Event {
                vertex: v,
                time: t,
                kind: EventKind::Status { id: "pulling".into(), current: 3, total: Some(9) },
            }),
            EngineEvent::Step(solver::Event {
                vertex: v,
                time: t,
                kind: EventKind::Completed { duration: Duration::from_millis(1500) },
            }),
            EngineEvent::Step(solver::Event { vertex: v, time: t, kind: EventKind::Canceled }),
            EngineEvent::Warning(Diagnostic { message: "unused".into(), span: Some(Span::new(3, 4)) }),
            EngineEvent::Export(EngineExport::Pushed {
                reference: "r/a:1".into(),
                uploaded: 1,
                mounted: 2,
                existed: 3,
            }),
            EngineEvent::Export(EngineExport::Named { reference: "r/a:1".into() }),
            EngineEvent::Cache(CacheEvent::Fetched { from: "r/c:main".into(), blobs: 2, bytes: 4096 }),
        ];
        for e in events {
            assert_eq!(event_from_proto(event_to_proto(&e)), Some(e.clone()));
        }
    }

    #[test]
    fn a_failed_run_keeps_what_the_client_shows() {
        let f = RunFailure {
            vertex: "[2/2] RUN false".into(),
            locations: vec![llb::SourceLocation { file: "Dockerfile".into(), start_line: 2, end_line: 2 }],
            command: "/bin/sh -c false".into(),
            exit_code: 1,
            status: "exit code: 1".into(),
            tail: vec!["x".into()],
        };
        let back = error_from_proto(error_to_proto(&BuildError::Solve(SolveError::Run(Box::new(f.clone())))));
        assert_eq!(back, RemoteFailure::Run(f));
        let d = Diagnostic { message: "unknown instruction".into(), span: Some(Span::new(1, 1)) };
        let e = BuildError::Dockerfile { filename: "Dockerfile".into(), diagnostic: d.clone() };
        assert_eq!(error_from_proto(error_to_proto(&e)), RemoteFailure::Dockerfile(d));
        assert_eq!(error_from_proto(error_to_proto(&BuildError::Cancelled)), RemoteFailure::Cancelled);
    }
}
