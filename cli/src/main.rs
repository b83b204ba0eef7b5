//! The `rbuild` binary: wiring of the concrete parts, flags, output. The only crate that prints.

mod build;
mod debug;
mod debug_run;
mod fleet;
mod images;
mod info;
mod remote;
mod report;
mod serve;
mod storage;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// rbuild: a Dockerfile build engine and OCI image toolchain.
#[derive(Parser, Debug)]
#[command(name = "rbuild", version, about, propagate_version = true)]
struct Cli {
    /// Registry configuration file (default: $RBUILD_CONFIG, else /etc/rbuild/rbuild.toml for root,
    /// $XDG_CONFIG_HOME/rbuild/rbuild.toml otherwise).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// State root (default: $RBUILD_ROOT, else /var/lib/rbuild).
    #[arg(long, global = true, value_name = "DIR")]
    root: Option<PathBuf>,
    /// The daemon to build with: `unix:///run/rbuild/rbuild.sock` or `tcp://HOST:PORT` (default: none, or the
    /// daemon on the default socket when one holds the default state root). A fleet: several, comma-separated,
    /// or a DNS name with one A/AAAA record per daemon; each project builds on its own daemon of them.
    #[arg(long, global = true, env = "RBUILD_HOST", value_name = "ADDRESS")]
    host: Option<String>,
    /// CA certificate that signed the other side's certificate (TCP with mutual TLS).
    #[arg(long, global = true, env = "RBUILD_TLS_CACERT", value_name = "FILE")]
    tlscacert: Option<PathBuf>,
    /// This side's TLS certificate.
    #[arg(long, global = true, env = "RBUILD_TLS_CERT", value_name = "FILE")]
    tlscert: Option<PathBuf>,
    /// This side's TLS key.
    #[arg(long, global = true, env = "RBUILD_TLS_KEY", value_name = "FILE")]
    tlskey: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Build an image from a Dockerfile (`rbuild -t app .` is short for `rbuild build -t app .`).
    Build(Box<build::BuildArgs>),
    /// Commands for looking inside the build: the parsed Dockerfile, the build definition.
    #[command(subcommand)]
    Debug(debug::DebugCommand),
    #[command(flatten)]
    Image(images::ImageCommand),
    /// Show disk usage of the state root: layers, snapshots, cache mounts, blobs.
    Du(storage::DuArgs),
    /// Remove unreferenced build data, least recently used first.
    Prune(storage::PruneArgs),
    /// Run the build daemon: builds for local and remote clients on one state root.
    Serve(serve::ServeArgs),
    /// Show what builds run on (the daemon's version, root and counters, or this machine's root), as JSON.
    Info,
    /// Commands for a fleet of daemons (`--host` with several addresses or a DNS name).
    #[command(subcommand)]
    Fleet(fleet::FleetCommand),
}

fn main() -> ExitCode {
    // A re-executed sandbox helper takes over here, before anything else runs.
    sandbox::init::maybe_run();
    let cli = Cli::parse_from(with_default_command(std::env::args_os().collect()));
    let globals = images::Globals {
        config: cli.config.clone(),
        root: cli.root.clone(),
        host: cli.host.clone(),
        tlscacert: cli.tlscacert.clone(),
        tlscert: cli.tlscert.clone(),
        tlskey: cli.tlskey.clone(),
    };
    let result = match cli.command {
        Command::Build(args) => build::run(*args, &globals),
        Command::Image(cmd) => images::run(cmd, &globals),
        Command::Debug(cmd) => debug::run(cmd, &globals),
        Command::Du(args) => storage::du(&args, &globals),
        Command::Prune(args) => storage::prune(&args, &globals),
        Command::Serve(args) => serve::run(args, &globals),
        Command::Info => info::run(&globals),
        Command::Fleet(cmd) => fleet::run(cmd, &globals),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {}", report::error_line(&err));
            ExitCode::FAILURE
        }
    }
}

/// `rbuild -t app .` means `rbuild build -t app .`: when the first argument after the global flags is not a
/// subcommand (or help/version), `build` is inserted there.
fn with_default_command(mut args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    use clap::CommandFactory;
    let cmd = Cli::command();
    let mut i = 1;
    while i < args.len() {
        let a = args[i].to_string_lossy();
        let with_value = ["--config", "--root", "--host", "--tlscacert", "--tlscert", "--tlskey"];
        if with_value.contains(&a.as_ref()) {
            i += 2;
        } else if with_value.iter().any(|f| a.starts_with(&format!("{f}="))) {
            i += 1;
        } else {
            break;
        }
    }
    let Some(first) = args.get(i).map(|a| a.to_string_lossy().into_owned()) else { return args };
    let known = first == "help"
        || ["-h", "--help", "-V", "--version"].contains(&first.as_str())
        || cmd.get_subcommands().any(|s| s.get_name() == first || s.get_all_aliases().any(|al| al == first));
    if !known {
        args.insert(i, "build".into());
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewrite(args: &[&str]) -> Vec<String> {
        with_default_command(args.iter().map(|a| a.into()).collect())
            .into_iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn build_is_the_default_command() {
        assert_eq!(rewrite(&["rbuild", "-t", "app", "."]), ["rbuild", "build", "-t", "app", "."]);
        assert_eq!(rewrite(&["rbuild", "--root", "/r", "."]), ["rbuild", "--root", "/r", "build", "."]);
        assert_eq!(rewrite(&["rbuild", "build", "."]), ["rbuild", "build", "."]);
        assert_eq!(rewrite(&["rbuild", "images"]), ["rbuild", "images"]);
        assert_eq!(rewrite(&["rbuild", "--help"]), ["rbuild", "--help"]);
        assert_eq!(rewrite(&["rbuild"]), ["rbuild"]);
    }
}
