//! `rbuild info`: what builds would run on, as JSON: the daemon's version, state root, entitlements and
//! counters when a daemon is used (`--host`, or the one holding the default root), else this machine's root.

use std::process::ExitCode;

use anyhow::Result;
use serde_json::json;

use crate::images::Globals;

pub fn run(g: &Globals) -> Result<ExitCode> {
    let out = match crate::remote::daemon_for(g)? {
        Some(target) => {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let i = rt.block_on(async { target.connect().await?.info().await.map_err(anyhow::Error::from) })?;
            json!({
                "daemon": target.addr.to_string(),
                "version": i.version,
                "root": i.root,
                "entitlements": i.entitlements,
                "builds_running": i.builds_running,
                "builds_total": i.builds_total,
                "context_bytes": i.context_bytes,
                "context_files_sent": i.context_files_sent,
            })
        }
        None => {
            let root = g.root.clone().unwrap_or_else(snapshotter::root::StateRoot::default_path);
            json!({ "daemon": null, "version": env!("CARGO_PKG_VERSION"), "root": root.display().to_string() })
        }
    };
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(ExitCode::SUCCESS)
}
