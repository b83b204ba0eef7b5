//! `rbuild debug run`: one command in the sandbox on an overlay over a rootfs, changes discarded (or kept
//! with `--keep`). Users debug failing steps with it; tests drive it.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Args;
use sandbox::debug::{debug_run, DebugRun};
use sandbox::executor::{OutputLine, Stream};
use sandbox::{Cancel, Executor, NamespaceExecutor, NetworkMode, OutputSink, ProcessSpec, RuncExecutor};

#[derive(Args, Debug)]
pub struct RunArgs {
    /// An unpacked root filesystem to run on (read-only; changes go to a throwaway overlay).
    #[arg(long, value_name = "DIR", required_unless_present = "image", conflicts_with = "image")]
    rootfs: Option<PathBuf>,
    /// An image to run on.
    #[arg(long, value_name = "REF")]
    image: Option<String>,
    /// The network: `none` (loopback only), `host`, or `default` (the host's, as BuildKit without CNI).
    #[arg(long, default_value = "default", value_parser = parse_network)]
    network: NetworkMode,
    /// The user, as in USER: `name`, `uid`, `uid:gid`, `name:group`.
    #[arg(long, short = 'u', default_value = "")]
    user: String,
    /// The working directory (created when missing).
    #[arg(long, short = 'w', default_value = "/")]
    workdir: String,
    /// An environment variable, `KEY=VALUE` (or `KEY` to take the value from this environment).
    #[arg(long, short = 'e', value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// The executor: `namespace` (rbuild's own, the default), or an OCI runtime binary run on a bundle of
    /// the same spec: `runc`, `crun`, or a path to one.
    #[arg(long, value_name = "RUNTIME", default_value = "namespace")]
    oci_runtime: String,
    /// Keep the overlay's upper directory (the changes the command made) in DIR.
    #[arg(long, value_name = "DIR")]
    keep: Option<PathBuf>,
    /// The command and its arguments.
    #[arg(last = true, required = true, value_name = "CMD")]
    cmd: Vec<String>,
}

fn parse_network(s: &str) -> Result<NetworkMode, String> {
    s.parse()
}

fn env_entries(raw: &[String]) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for e in raw {
        match e.split_once('=') {
            Some(("", _)) => bail!("invalid --env {e:?}: expected KEY=VALUE"),
            Some(_) => out.push(e.clone()),
            None => {
                if let Ok(v) = std::env::var(e) {
                    out.push(format!("{e}={v}"));
                }
            }
        }
    }
    Ok(out)
}

/// Prints each line to our stdout or stderr as it arrives.
struct Print;

impl OutputSink for Print {
    fn line(&self, line: OutputLine) {
        let mut bytes = line.line;
        bytes.push(b'\n');
        let _ = match line.stream {
            Stream::Stdout => std::io::stdout().lock().write_all(&bytes),
            Stream::Stderr => std::io::stderr().lock().write_all(&bytes),
        };
    }
}

impl RunArgs {
    fn process(&self) -> Result<ProcessSpec> {
        let mut p = ProcessSpec::new(self.cmd.clone());
        p.env = env_entries(&self.env)?;
        p.user = self.user.clone();
        p.cwd = self.workdir.clone();
        p.network = self.network;
        Ok(p)
    }
}

/// The executor `--oci-runtime` names.
fn executor(runtime: &str, state_dir: &std::path::Path) -> Result<Box<dyn Executor>> {
    if runtime == "namespace" {
        return Ok(Box::new(NamespaceExecutor::new(state_dir)));
    }
    let runc = RuncExecutor::new(state_dir).with_runtime(runtime);
    runc.version().map_err(|e| anyhow::anyhow!("--oci-runtime {runtime}: {e}"))?;
    Ok(Box::new(runc))
}

pub fn run(args: RunArgs) -> Result<ExitCode> {
    let Some(rootfs) = args.rootfs.clone() else {
        bail!(
            "--image needs images pulled and unpacked by the registry and snapshotter, which `debug run` does not \
             wire yet; unpack the image and pass --rootfs DIR"
        );
    };
    let state_dir = std::env::temp_dir().join(format!("rbuild-debug-run-{}", std::process::id()));
    let req = DebugRun { rootfs, keep: args.keep.clone(), process: args.process()? };
    let executor = executor(&args.oci_runtime, &state_dir)?;
    let result = debug_run(&*executor, &req, &state_dir, &Print, &Cancel::default());
    let _ = std::fs::remove_dir_all(&state_dir);
    let outcome = result.with_context(|| format!("cannot run {:?} in the sandbox", args.cmd.join(" ")))?;
    for w in &outcome.warnings {
        eprintln!("warning: {w}");
    }
    let code = outcome.status.code();
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(255)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        run: RunArgs,
    }

    #[test]
    fn flags_become_the_process() {
        let cli = Cli::try_parse_from([
            "run",
            "--rootfs",
            "/r",
            "--network",
            "none",
            "--user",
            "app",
            "-w",
            "/src",
            "--env",
            "A=1",
            "--",
            "ip",
            "link",
        ])
        .unwrap();
        let p = cli.run.process().unwrap();
        assert_eq!(p.args, ["ip", "link"]);
        assert_eq!(p.network, NetworkMode::None);
        assert_eq!((p.user.as_str(), p.cwd.as_str()), ("app", "/src"));
        assert_eq!(p.env, ["A=1"]);
        assert_eq!(cli.run.oci_runtime, "namespace");
        let cli = Cli::try_parse_from(["run", "--rootfs", "/r", "--oci-runtime", "runc", "--", "true"]).unwrap();
        assert_eq!(cli.run.oci_runtime, "runc");
    }

    #[test]
    fn a_missing_runtime_is_refused_with_advice() {
        let err = executor("/nonexistent/crun", std::path::Path::new("/tmp")).err().unwrap().to_string();
        assert!(err.contains("--oci-runtime /nonexistent/crun") && err.contains("apt-get install runc"), "{err}");
        assert!(executor("namespace", std::path::Path::new("/tmp")).is_ok());
    }

    #[test]
    fn bad_flags_are_rejected() {
        assert!(Cli::try_parse_from(["run", "--rootfs", "/r", "--network", "bridge", "--", "true"]).is_err());
        assert!(Cli::try_parse_from(["run", "--rootfs", "/r"]).is_err());
        assert!(Cli::try_parse_from(["run", "--", "true"]).is_err());
        assert!(Cli::try_parse_from(["run", "--rootfs", "/r", "--image", "alpine", "--", "true"]).is_err());
        let cli = Cli::try_parse_from(["run", "--rootfs", "/r", "--env", "=x", "--", "true"]).unwrap();
        assert!(cli.run.process().is_err());
    }
}
