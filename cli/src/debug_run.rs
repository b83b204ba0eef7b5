//! `rbuild debug run`: one command in the sandbox on an overlay over a rootfs, changes discarded (or kept
//! with `--keep`). Users debug failing steps with it; tests drive it.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Args;
use llb::image::ImageConfig;
use sandbox::debug::{debug_run, DebugRun};
use sandbox::executor::{OutputLine, Stream};
use sandbox::{Cancel, NetworkMode, OutputSink, ProcessSpec};
use snapshotter::mount::TempMount;
use snapshotter::store::{SnapshotterKind, Store};

use crate::images::Globals;

#[derive(Args, Debug)]
pub struct RunArgs {
    /// An unpacked root filesystem to run on (read-only; changes go to a throwaway overlay, held in memory
    /// with the namespace executor unless --keep is given).
    #[arg(long, value_name = "DIR", required_unless_present = "image", conflicts_with = "image")]
    rootfs: Option<PathBuf>,
    /// An image to run on (pulled and unpacked into the state root when missing); its Env, User and
    /// WorkingDir are the defaults.
    #[arg(long, value_name = "REF")]
    image: Option<String>,
    /// The network: `none` (loopback only), `host`, or `default` (a namespace of its own with NAT).
    #[arg(long, default_value = "default", value_parser = parse_network)]
    network: NetworkMode,
    /// The user, as in USER: `name`, `uid`, `uid:gid`, `name:group` (default: the image's, else root).
    #[arg(long, short = 'u')]
    user: Option<String>,
    /// The working directory (created when missing; default: the image's, else /).
    #[arg(long, short = 'w')]
    workdir: Option<String>,
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

fn parse_network(s: &str) -> Result<NetworkMode, sandbox::process::UnknownNetworkMode> {
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
        self.process_on(&ImageConfig::default())
    }

    /// The process, with the image's Env, User and WorkingDir where the flags give none (as `docker run`).
    fn process_on(&self, image: &ImageConfig) -> Result<ProcessSpec> {
        let mut p = ProcessSpec::new(self.cmd.clone());
        let mut env = image.env.clone().unwrap_or_default();
        for e in env_entries(&self.env)? {
            let key = e.split('=').next().unwrap_or_default().to_string();
            env.retain(|x| x.split('=').next() != Some(key.as_str()));
            env.push(e);
        }
        p.env = env;
        p.user = self.user.clone().or_else(|| image.user.clone()).unwrap_or_default();
        p.cwd = self
            .workdir
            .clone()
            .or_else(|| image.working_dir.clone().filter(|w| !w.is_empty()))
            .unwrap_or_else(|| "/".into());
        p.network = self.network;
        Ok(p)
    }
}

/// Resolves and unpacks `reference` for this host into committed snapshots; returns the top snapshot (`None`
/// for an image without layers) and the image config.
fn unpack_for_host(g: &Globals, store: &Store, reference: &str) -> Result<(Option<String>, llb::image::Image)> {
    let images = registry::ImageStore::new(store.content.clone(), store.meta.clone());
    let client = crate::images::registry_client(g)?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let platform = llb::Platform::host();
    let (pinned, config) = rt
        .block_on(registry::unpack::resolve_config(&client, &images, reference, &platform, false))
        .with_context(|| format!("resolving image {reference}"))?;
    let top = rt
        .block_on(registry::unpack::unpack_image(
            &client,
            &images,
            &*store.snapshotter,
            &pinned,
            &platform,
            false,
            &|_, _| {},
        ))
        .with_context(|| format!("unpacking image {reference}"))?;
    Ok((top, config))
}

/// The directory the namespace executor keeps its state in (a mount point and the shared /etc sources) and
/// an OCI runtime's debug runs their overlay scratch directories (each run removes its own): one for every
/// debug run of this user, made once. A namespace run's overlay is on its own tmpfs: it makes and removes
/// no directory here.
/// Refused when someone else owns it (it is in a shared temporary directory).
fn debug_state_dir() -> Result<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    let dir = std::env::temp_dir().join("rbuild-debug-run");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let meta = std::fs::symlink_metadata(&dir).with_context(|| format!("cannot inspect {}", dir.display()))?;
    let me = rustix::process::geteuid().as_raw();
    if !meta.is_dir() || meta.uid() != me {
        bail!("{} is not a directory of this user (uid {me}); remove it", dir.display());
    }
    Ok(dir)
}

pub fn run(args: RunArgs, g: &Globals) -> Result<ExitCode> {
    let state_dir = debug_state_dir()?;
    let executor = engine::executor(&args.oci_runtime, &state_dir)?;
    let result = match (&args.rootfs, &args.image) {
        (Some(rootfs), _) => {
            let req = DebugRun { rootfs: rootfs.clone(), keep: args.keep.clone(), process: args.process()? };
            debug_run(&*executor, &req, &state_dir, &Print, &Cancel::default())
        }
        (None, Some(reference)) => {
            let root = g.root.clone().unwrap_or_else(snapshotter::root::StateRoot::default_path);
            let store = Store::open(&root, SnapshotterKind::Auto, &mut |w| eprintln!("{w}"))
                .with_context(|| format!("opening state root {}", root.display()))?;
            let (top, image) = unpack_for_host(g, &store, reference)?;
            let process = args.process_on(&image.config)?;
            // A read-only view of the image, mounted for the run; debug_run puts its own overlay on top.
            let key = format!("debug-run-{}", std::process::id());
            let mounts = store.snapshotter.view(&key, top.as_deref())?;
            let parent = store.root.tmp_dir();
            let result = match TempMount::new(&mounts, &parent) {
                Ok(m) => {
                    let req = DebugRun { rootfs: m.path().to_path_buf(), keep: args.keep.clone(), process };
                    let r = debug_run(&*executor, &req, &state_dir, &Print, &Cancel::default());
                    let _ = m.unmount();
                    r
                }
                Err(e) => {
                    let _ = store.snapshotter.remove(&key);
                    return Err(e).with_context(|| format!("mounting image {reference}"));
                }
            };
            let _ = store.snapshotter.remove(&key);
            result
        }
        (None, None) => bail!("give --rootfs DIR or --image REF"),
    };
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
        let executor = engine::executor;
        let err = executor("/nonexistent/crun", std::path::Path::new("/tmp")).err().unwrap().to_string();
        assert!(err.contains("--oci-runtime /nonexistent/crun") && err.contains("apt-get install runc"), "{err}");
        assert!(executor("namespace", std::path::Path::new("/tmp")).is_ok());
    }

    #[test]
    fn image_config_gives_the_defaults_flags_override() {
        let mut image = ImageConfig::default();
        image.env = Some(vec!["PATH=/img/bin".into(), "A=img".into()]);
        image.user = Some("app".into());
        image.working_dir = Some("/srv".into());
        let cli = Cli::try_parse_from(["run", "--image", "x", "--", "true"]).unwrap();
        let p = cli.run.process_on(&image).unwrap();
        assert_eq!((p.user.as_str(), p.cwd.as_str()), ("app", "/srv"));
        assert_eq!(p.env, ["PATH=/img/bin", "A=img"]);
        let cli =
            Cli::try_parse_from(["run", "--image", "x", "-u", "0", "-w", "/", "-e", "A=flag", "--", "true"]).unwrap();
        let p = cli.run.process_on(&image).unwrap();
        assert_eq!((p.user.as_str(), p.cwd.as_str()), ("0", "/"));
        assert_eq!(p.env, ["PATH=/img/bin", "A=flag"]);
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
