//! The `rbuild` binary: wiring of the concrete parts, flags, output. The only crate that prints.

mod debug;
mod debug_run;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// rbuild: a Dockerfile build engine and OCI image toolchain.
#[derive(Parser, Debug)]
#[command(name = "rbuild", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Commands for looking inside the build: the parsed Dockerfile, the build definition.
    #[command(subcommand)]
    Debug(debug::DebugCommand),
}

fn main() -> ExitCode {
    // A re-executed sandbox helper takes over here, before anything else runs.
    sandbox::init::maybe_run();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Debug(cmd) => debug::run(cmd),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
