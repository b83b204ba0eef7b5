//! `rbuild fleet status`: every daemon `--host` names, with its readiness, load and cache size.

use std::process::ExitCode;

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use serde_json::json;

use super::route::Member;
use crate::images::Globals;

/// `rbuild fleet ...`.
#[derive(Subcommand, Debug)]
pub enum FleetCommand {
    /// List each daemon of the fleet (`--host`) with its readiness, builds running and total, and the size
    /// of its state root (layers, snapshots, cache mounts, blobs).
    Status(StatusArgs),
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Print JSON (one object per daemon) instead of a table.
    #[arg(long)]
    json: bool,
}

/// What one daemon said, or why it said nothing.
struct Row {
    member: Member,
    state: Result<State, String>,
}

struct State {
    ready: bool,
    version: String,
    running: u64,
    total: u64,
    cache_bytes: u64,
}

pub fn run(cmd: FleetCommand, g: &Globals) -> Result<ExitCode> {
    let FleetCommand::Status(a) = cmd;
    let Some(host) = &g.host else { bail!("rbuild fleet status needs --host (or RBUILD_HOST): the fleet's daemons") };
    let tls = crate::remote::tls_of(g)?;
    let members = super::members(host)?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let rows: Vec<Row> = rt.block_on(async {
        let asks = members.into_iter().map(|m| {
            let tls = tls.clone();
            tokio::spawn(async move {
                let state = ask(&m, tls.as_ref()).await.map_err(|e| format!("{e:#}"));
                Row { member: m, state }
            })
        });
        let mut rows = Vec::new();
        for a in asks.collect::<Vec<_>>() {
            if let Ok(r) = a.await {
                rows.push(r);
            }
        }
        rows
    });
    if a.json {
        let out: Vec<_> = rows.iter().map(row_json).collect();
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!("{:<28} {:<10} {:>7} {:>7} {:>10}  VERSION", "DAEMON", "STATE", "RUNNING", "BUILDS", "CACHE");
        for r in &rows {
            match &r.state {
                Ok(s) => println!(
                    "{:<28} {:<10} {:>7} {:>7} {:>10}  {}",
                    r.member.addr.to_string(),
                    if s.ready { "ready" } else { "not-ready" },
                    s.running,
                    s.total,
                    human(s.cache_bytes),
                    s.version
                ),
                Err(e) => println!("{:<28} {:<10} {e}", r.member.addr.to_string(), "down"),
            }
        }
    }
    // Non-zero when no daemon takes builds: scripts can wait on it.
    let any_ready = rows.iter().any(|r| matches!(&r.state, Ok(s) if s.ready));
    Ok(if any_ready { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

async fn ask(m: &Member, tls: Option<&daemon::TlsFiles>) -> Result<State> {
    let mut c = m.connect(tls).await?;
    let ready = c.ready().await?;
    let info = c.info().await?;
    let du = c.disk_usage().await?;
    Ok(State {
        ready,
        version: info.version,
        running: info.builds_running,
        total: info.builds_total,
        cache_bytes: du.total,
    })
}

fn row_json(r: &Row) -> serde_json::Value {
    let daemon = r.member.addr.to_string();
    match &r.state {
        Ok(s) => json!({
            "daemon": daemon,
            "server_name": r.member.server_name,
            "state": if s.ready { "ready" } else { "not-ready" },
            "version": s.version,
            "builds_running": s.running,
            "builds_total": s.total,
            "cache_bytes": s.cache_bytes,
        }),
        Err(e) => json!({ "daemon": daemon, "server_name": r.member.server_name, "state": "down", "error": e }),
    }
}

/// `1.5GB` as docker prints sizes (decimal units).
fn human(n: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1000.0 && i < units.len() - 1 {
        v /= 1000.0;
        i += 1;
    }
    if i == 0 {
        format!("{n}B")
    } else {
        format!("{v:.1}{}", units[i])
    }
}
