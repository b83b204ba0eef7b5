//! `rbuild du` and `rbuild prune`: disk usage of the state root and garbage collection.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::images::Globals;
use snapshotter::gc::{Item, PruneOptions, UsageReport};
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

/// A daemon to ask, and the runtime to ask it on.
fn daemon(g: &Globals) -> Result<Option<(daemon::client::Connection, tokio::runtime::Runtime)>> {
    let Some(target) = crate::remote::daemon_for(g)? else { return Ok(None) };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let conn = rt.block_on(target.connect())?;
    Ok(Some((conn, rt)))
}

pub fn du(_args: &DuArgs, g: &Globals) -> Result<ExitCode> {
    let report = match daemon(g)? {
        Some((mut c, rt)) => {
            let r = rt.block_on(c.disk_usage())?;
            let item = |i: Option<daemon::proto::ItemUsage>| {
                let i = i.unwrap_or_default();
                Item { count: i.count, size: i.size, reclaimable: i.reclaimable }
            };
            UsageReport {
                layers: item(r.layers),
                snapshots: item(r.snapshots),
                cache_mounts: item(r.cache_mounts),
                blobs: item(r.blobs),
                ingests: item(r.ingests),
            }
        }
        None => open(g.root.as_deref())?.collector().usage().context("measuring usage")?,
    };
    println!("{:<14}{:>8}{:>14}{:>14}", "TYPE", "COUNT", "SIZE", "RECLAIMABLE");
    let rows: [(&str, Item); 5] = [
        ("Layers", report.layers),
        ("Snapshots", report.snapshots),
        ("Cache mounts", report.cache_mounts),
        ("Blobs", report.blobs),
        ("Partial pulls", report.ingests),
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

pub fn prune(args: &PruneArgs, g: &Globals) -> Result<ExitCode> {
    let keep_storage = args
        .keep_storage
        .as_deref()
        .map(|s| frontend::instructions::parse_size(s).map_err(|e| anyhow::anyhow!("--keep-storage: {e}")))
        .transpose()?;
    let opts = PruneOptions { all: args.all, keep_storage, until: parse_filters(&args.filter)? };
    let (snapshots, blobs, ingests, freed, remaining) = match daemon(g)? {
        Some((mut c, rt)) => {
            let req = daemon::proto::PruneRequest {
                all: opts.all,
                keep_storage: opts.keep_storage,
                until_ns: opts.until.map(|d| d.as_nanos() as u64),
            };
            let r = rt.block_on(c.prune(req))?;
            (r.snapshots as usize, r.blobs as usize, r.ingests as usize, r.freed, r.remaining)
        }
        None => {
            let report = open(g.root.as_deref())?.collector().prune(opts).context("pruning")?;
            (report.snapshots.len(), report.blobs.len(), report.ingests.len(), report.freed, report.remaining)
        }
    };
    println!(
        "Deleted {snapshots} snapshots, {blobs} blobs and {ingests} partial pulls\nTotal reclaimed space: {}\nRemaining: {}",
        human(freed),
        human(remaining)
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
