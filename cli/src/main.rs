//! The `rbuild` binary: wiring of the concrete parts, flags, output. The only crate that prints.

mod debug;
mod debug_run;
mod images;
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
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Commands for looking inside the build: the parsed Dockerfile, the build definition.
    #[command(subcommand)]
    Debug(debug::DebugCommand),
    #[command(flatten)]
    Image(images::ImageCommand),
    /// Show disk usage of the state root: layers, snapshots, cache mounts, blobs.
    Du(storage::DuArgs),
    /// Remove unreferenced build data, least recently used first.
    Prune(storage::PruneArgs),
}

fn main() -> ExitCode {
    // A re-executed sandbox helper takes over here, before anything else runs.
    sandbox::init::maybe_run();
    let cli = Cli::parse();
    let globals = images::Globals { config: cli.config.clone(), root: cli.root.clone() };
    let result = match cli.command {
        Command::Image(cmd) => images::run(cmd, &globals),
        Command::Debug(cmd) => debug::run(cmd),
        Command::Du(args) => storage::du(&args, cli.root.as_deref()),
        Command::Prune(args) => storage::prune(&args, cli.root.as_deref()),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
