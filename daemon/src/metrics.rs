//! Prometheus metrics of the daemon (`GET /metrics` on the health listener), in the text exposition
//! format 0.0.4: builds running and queued, builds by result, steps by what happened to them, step
//! duration, cache imports and exports (with the bytes sent), context bytes received.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use engine::{CacheEvent, Event};
use solver::progress::{StepRecord, StepStatus};

use crate::server::Counters;

/// Upper bounds (seconds) of the step duration histogram's buckets.
const BUCKETS: [f64; 12] = [0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0];

/// What builds did, since the daemon started.
#[derive(Default)]
pub struct Metrics {
    builds_succeeded: AtomicU64,
    builds_failed: AtomicU64,
    steps_executed: AtomicU64,
    steps_cached_local: AtomicU64,
    steps_cached_imported: AtomicU64,
    steps_shared: AtomicU64,
    cache_imports: AtomicU64,
    cache_import_failures: AtomicU64,
    cache_import_bytes: AtomicU64,
    cache_exports: AtomicU64,
    cache_export_failures: AtomicU64,
    cache_export_bytes: AtomicU64,
    durations: Mutex<Histogram>,
}

#[derive(Default)]
struct Histogram {
    /// Counts per bucket (not cumulative), the last one for +Inf.
    counts: [u64; BUCKETS.len() + 1],
    sum: f64,
}

impl Metrics {
    /// Counts what an event of a running build says (cache imports and exports).
    pub fn event(&self, e: &Event) {
        let Event::Cache(c) = e else { return };
        let add = |a: &AtomicU64, n: u64| a.fetch_add(n, Ordering::Relaxed);
        match c {
            CacheEvent::Imported { .. } => add(&self.cache_imports, 1),
            CacheEvent::ImportFailed { .. } => add(&self.cache_import_failures, 1),
            CacheEvent::Fetched { bytes, .. } => add(&self.cache_import_bytes, *bytes),
            CacheEvent::Exported { bytes, .. } => {
                add(&self.cache_exports, 1);
                add(&self.cache_export_bytes, *bytes)
            }
            CacheEvent::ExportFailed { .. } => add(&self.cache_export_failures, 1),
            _ => 0,
        };
    }

    /// Counts a finished build: its steps (from a success's step records) or its failure.
    pub fn build_done(&self, steps: Option<&[StepRecord]>) {
        let Some(steps) = steps else {
            self.builds_failed.fetch_add(1, Ordering::Relaxed);
            return;
        };
        self.builds_succeeded.fetch_add(1, Ordering::Relaxed);
        for s in steps {
            let counter = match (s.status, &s.cache_source) {
                (StepStatus::Executed, _) => &self.steps_executed,
                (StepStatus::Cached, None) => &self.steps_cached_local,
                (StepStatus::Cached, Some(_)) => &self.steps_cached_imported,
                (StepStatus::Shared, _) => &self.steps_shared,
                _ => continue,
            };
            counter.fetch_add(1, Ordering::Relaxed);
            if s.status == StepStatus::Executed {
                if let (Some(a), Some(b)) = (s.started, s.completed) {
                    self.observe(b.duration_since(a).unwrap_or_default());
                }
            }
        }
    }

    fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let mut h = self.durations.lock().unwrap_or_else(|e| e.into_inner());
        let i = BUCKETS.iter().position(|b| secs <= *b).unwrap_or(BUCKETS.len());
        h.counts[i] += 1;
        h.sum += secs;
    }

    /// The exposition text, with the daemon's own gauges (`running`, `queued`, readiness).
    pub fn render(&self, counters: &Counters, queued: u64, ready: bool, draining: bool) -> String {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut out = String::new();
        let mut one = |name: &str, kind: &str, help: &str, samples: &[(&str, u64)]| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, v) in samples {
                let _ = writeln!(out, "{name}{labels} {v}");
            }
        };
        // Queued builds wait before the build starts, so they are not among the running ones.
        let running = load(&counters.builds_running);
        one("rbuild_builds_running", "gauge", "Builds running now.", &[("", running)]);
        one("rbuild_builds_queued", "gauge", "Builds waiting for a slot (--max-builds).", &[("", queued)]);
        one("rbuild_ready", "gauge", "1 when the daemon takes builds.", &[("", ready as u64)]);
        one("rbuild_draining", "gauge", "1 after SIGTERM, until the daemon exits.", &[("", draining as u64)]);
        one(
            "rbuild_builds_total",
            "counter",
            "Builds finished, by result.",
            &[
                ("{result=\"success\"}", load(&self.builds_succeeded)),
                ("{result=\"failure\"}", load(&self.builds_failed)),
            ],
        );
        one(
            "rbuild_steps_total",
            "counter",
            "Steps of successful builds: run, found in this daemon's cache, found in an imported cache \
             (the fleet's), or run by a concurrent build.",
            &[
                ("{status=\"executed\"}", load(&self.steps_executed)),
                ("{status=\"cached\",source=\"local\"}", load(&self.steps_cached_local)),
                ("{status=\"cached\",source=\"import\"}", load(&self.steps_cached_imported)),
                ("{status=\"shared\"}", load(&self.steps_shared)),
            ],
        );
        one("rbuild_cache_imports_total", "counter", "Cache imports read.", &[("", load(&self.cache_imports))]);
        one(
            "rbuild_cache_import_failures_total",
            "counter",
            "Cache imports that could not be read (the build went on without).",
            &[("", load(&self.cache_import_failures))],
        );
        one(
            "rbuild_cache_import_bytes_total",
            "counter",
            "Blob bytes fetched from imported caches for steps and outputs that needed them (blobs already \
             held are not fetched).",
            &[("", load(&self.cache_import_bytes))],
        );
        one("rbuild_cache_exports_total", "counter", "Cache exports written.", &[("", load(&self.cache_exports))]);
        one(
            "rbuild_cache_export_failures_total",
            "counter",
            "Cache exports that failed (ignore-error).",
            &[("", load(&self.cache_export_failures))],
        );
        one(
            "rbuild_cache_export_bytes_total",
            "counter",
            "Blob bytes cache exports sent (blobs the cache already held are not sent).",
            &[("", load(&self.cache_export_bytes))],
        );
        one(
            "rbuild_context_bytes_total",
            "counter",
            "Build context bytes received from clients (stat and hash records, compressed file data).",
            &[("", load(&counters.context_bytes))],
        );
        let h = self.durations.lock().unwrap_or_else(|e| e.into_inner());
        let name = "rbuild_step_duration_seconds";
        let _ = writeln!(out, "# HELP {name} Duration of steps that ran.\n# TYPE {name} histogram");
        let mut total = 0;
        for (i, b) in BUCKETS.iter().enumerate() {
            total += h.counts[i];
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {total}");
        }
        total += h.counts[BUCKETS.len()];
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {total}\n{name}_sum {}\n{name}_count {total}", h.sum);
        out
    }
}

/// The value of the sample `name` (with its labels, as rendered) in exposition `text`.
pub fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    fn step(status: StepStatus, secs: u64, source: Option<&str>) -> StepRecord {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        StepRecord {
            vertex: llb::Digest::of(b"v"),
            name: "s".into(),
            key: llb::Digest::of(b"k"),
            status,
            started: Some(t),
            completed: Some(t + Duration::from_secs(secs)),
            ingredients: Default::default(),
            cache_source: source.map(String::from),
            error: None,
        }
    }

    #[test]
    fn metrics_count_steps_builds_and_exports() {
        let m = Metrics::default();
        m.build_done(Some(&[
            step(StepStatus::Executed, 3, None),
            step(StepStatus::Executed, 100, None),
            step(StepStatus::Cached, 0, None),
            step(StepStatus::Cached, 0, Some("r/c")),
            step(StepStatus::Ready, 0, None),
        ]));
        m.build_done(None);
        m.event(&Event::Cache(CacheEvent::Exported { to: "r/c".into(), results: 2, layers: 2, new: 1, bytes: 42 }));
        m.event(&Event::Cache(CacheEvent::Fetched { from: "r/c".into(), blobs: 2, bytes: 1000 }));
        m.event(&Event::Cache(CacheEvent::Fetched { from: "r/c".into(), blobs: 1, bytes: 24 }));
        let c = Counters::default();
        c.builds_running.store(3, Ordering::Relaxed);
        c.context_bytes.store(7, Ordering::Relaxed);
        let t = m.render(&c, 1, true, false);
        let want = [
            ("rbuild_builds_running", 3.0),
            ("rbuild_builds_queued", 1.0),
            ("rbuild_ready", 1.0),
            ("rbuild_builds_total{result=\"success\"}", 1.0),
            ("rbuild_builds_total{result=\"failure\"}", 1.0),
            ("rbuild_steps_total{status=\"executed\"}", 2.0),
            ("rbuild_steps_total{status=\"cached\",source=\"local\"}", 1.0),
            ("rbuild_steps_total{status=\"cached\",source=\"import\"}", 1.0),
            ("rbuild_cache_export_bytes_total", 42.0),
            ("rbuild_cache_import_bytes_total", 1024.0),
            ("rbuild_context_bytes_total", 7.0),
            ("rbuild_step_duration_seconds_bucket{le=\"2.5\"}", 0.0),
            ("rbuild_step_duration_seconds_bucket{le=\"5\"}", 1.0),
            ("rbuild_step_duration_seconds_bucket{le=\"120\"}", 2.0),
            ("rbuild_step_duration_seconds_count", 2.0),
            ("rbuild_step_duration_seconds_sum", 103.0),
        ];
        for (name, v) in want {
            assert_eq!(sample(&t, name), Some(v), "{name} in\n{t}");
        }
    }
}
