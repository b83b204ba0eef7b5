//! Microbenchmark of one trivial RUN (`/bin/true` on a busybox overlay, network none): the time from
//! `Executor::run` to its outcome, per executor. The goal for the namespace executor is under
//! 5 ms on the project's machines; this reports the numbers and asserts nothing about time.
//!
//! `cargo bench -p sandbox --bench trivial_run` (root and busybox-static needed; `SANDBOX_BENCH_RUNS`
//! sets the iterations).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{Fixture, Kind};
use sandbox::executor::{Cancel, CollectOutput};
use sandbox::{NetworkMode, ProcessSpec};

fn measure(kind: Kind, runs: usize) -> Option<Vec<Duration>> {
    if let Some(reason) = common::skip_reason().or_else(|| common::kind_skip_reason(kind)) {
        eprintln!("{kind:?}: skipped ({reason})");
        return None;
    }
    let f = Fixture::with(kind);
    let exec = f.executor();
    let mounts = f.mounts();
    let mut p = ProcessSpec::new(vec!["/bin/true".into()]);
    p.network = NetworkMode::None;
    let mut times = Vec::with_capacity(runs);
    for i in 0..runs + 5 {
        let start = Instant::now();
        let outcome = exec.run(&mounts, &p, &CollectOutput::default(), &Cancel::default()).expect("run");
        let elapsed = start.elapsed();
        assert!(outcome.status.success());
        if i >= 5 {
            times.push(elapsed);
        }
    }
    times.sort();
    Some(times)
}

fn main() {
    // `cargo test --benches` passes --bench-less flags; only run when benchmarking.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let runs: usize = std::env::var("SANDBOX_BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(200);
    for (kind, runs) in [(Kind::Namespace, runs), (Kind::Runc, runs.div_ceil(4))] {
        let Some(t) = measure(kind, runs) else { continue };
        let mean = t.iter().sum::<Duration>() / t.len() as u32;
        let pct = |p: usize| t[(t.len() * p / 100).min(t.len() - 1)];
        println!(
            "trivial RUN, {kind:?} executor, {} runs: median {:.2} ms, p90 {:.2} ms, min {:.2} ms, mean {:.2} ms",
            t.len(),
            pct(50).as_secs_f64() * 1e3,
            pct(90).as_secs_f64() * 1e3,
            t[0].as_secs_f64() * 1e3,
            mean.as_secs_f64() * 1e3
        );
    }
}
