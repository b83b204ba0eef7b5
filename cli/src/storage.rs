//! `rbuild du` and `rbuild prune`: disk usage of the state root and garbage collection.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use snapshotter::gc::{Item, PruneOptions};
use snapshotter::root::StateRoot;
use snapshotter::store::{SnapshotterKind, Store};

#[derive(Args, Debug)]
pub struct DuArgs {}

#[derive(Args, Debug)]
pub struct PruneArgs {
    /// Remove every unreferenced item, not only the least recently used ones over the limit.
    #[arg(short, long)]
    all: bool,
    /// Keep at most this much storage, e.g. `10g`, `512m` (least recently used items go first).
    #[arg(long, value_name = "SIZE")]
    keep_storage: Option<String>,
    /// `until=DURATION`: only items unused for longer than this, e.g. `until=24h`.
    #[arg(long, value_name = "FILTER")]
    filter: Vec<String>,
}

fn open(root: Option<&Path>) -> Result<Store> {
    let path = root.map(Path::to_path_buf).unwrap_or_else(StateRoot::default_path);
    Store::open(&path, SnapshotterKind::Auto, &mut |w| eprintln!("{w}"))
        .with_context(|| format!("opening state root {}", path.display()))
}

/// Bytes in the units `docker system df` uses (decimal, two decimals).
fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1000.0 && unit < UNITS.len() - 1 {
        v /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes}B")
    } else {
        format!("{v:.2}{}", UNITS[unit])
    }
}

pub fn du(_args: &DuArgs, root: Option<&Path>) -> Result<ExitCode> {
    let store = open(root)?;
    let report = store.collector().usage().context("measuring usage")?;
    println!("{:<14}{:>8}{:>14}{:>14}", "TYPE", "COUNT", "SIZE", "RECLAIMABLE");
    let rows: [(&str, Item); 4] = [
        ("Layers", report.layers),
        ("Snapshots", report.snapshots),
        ("Cache mounts", report.cache_mounts),
        ("Blobs", report.blobs),
    ];
    for (name, item) in rows {
        println!("{name:<14}{:>8}{:>14}{:>14}", item.count, human(item.size), human(item.reclaimable));
    }
    println!("{:<14}{:>8}{:>14}", "Total", "", human(report.total()));
    Ok(ExitCode::SUCCESS)
}

fn parse_filters(filters: &[String]) -> Result<Option<Duration>> {
    let mut until = None;
    for f in filters {
        match f.split_once('=') {
            Some(("until", d)) => {
                let ns = frontend::instructions::parse_go_duration(d)?;
                if ns < 0 {
                    bail!("--filter until={d}: the duration must not be negative");
                }
                until = Some(Duration::from_nanos(ns as u64));
            }
            _ => bail!("unsupported --filter {f:?}: use until=DURATION (e.g. until=24h)"),
        }
    }
    Ok(until)
}

pub fn prune(args: &PruneArgs, root: Option<&Path>) -> Result<ExitCode> {
    let keep_storage = args
        .keep_storage
        .as_deref()
        .map(|s| frontend::instructions::parse_size(s).map_err(|e| anyhow::anyhow!("--keep-storage: {e}")))
        .transpose()?;
    let opts = PruneOptions { all: args.all, keep_storage, until: parse_filters(&args.filter)? };
    let store = open(root)?;
    let report = store.collector().prune(opts).context("pruning")?;
    println!(
        "Deleted {} snapshots and {} blobs\nTotal reclaimed space: {}\nRemaining: {}",
        report.snapshots.len(),
        report.blobs.len(),
        human(report.freed),
        human(report.remaining)
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_filters() {
        assert_eq!(human(999), "999B");
        assert_eq!(human(1_500_000), "1.50MB");
        assert_eq!(parse_filters(&["until=24h".into()]).unwrap(), Some(Duration::from_secs(86_400)));
        assert!(parse_filters(&["label=x".into()]).is_err());
    }
}
