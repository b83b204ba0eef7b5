//! `rbuild debug ...`: the parsed Dockerfile (`dump-ast`) and the build definition (`llb`).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use frontend::convert::{convert, ConvertOptions, OfflineResolver};
use frontend::diag::Diagnostic;

#[derive(Subcommand, Debug)]
pub enum DebugCommand {
    /// Print the parsed Dockerfile as an S-expression (BuildKit's parser golden-file format).
    DumpAst(DumpAstArgs),
    /// Print the build definition the Dockerfile converts to: ops with their digests (JSON) or a
    /// Graphviz picture of the DAG. Base images are not contacted: their configs are taken as empty.
    Llb(LlbArgs),
    /// Run one command in the sandbox on an overlay over a rootfs; the changes are discarded unless
    /// `--keep DIR` is given.
    Run(crate::debug_run::RunArgs),
    /// List the platforms RUN steps can run for on this host: native, 32-bit compat, and those a
    /// binfmt_misc emulator (QEMU user emulation) is registered for.
    Platforms,
}

#[derive(Args, Debug)]
pub struct DumpAstArgs {
    /// The Dockerfile (`-` for standard input).
    #[arg(short = 'f', long = "file", default_value = "Dockerfile")]
    file: PathBuf,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LlbFormat {
    Json,
    Dot,
}

#[derive(Args, Debug)]
pub struct LlbArgs {
    /// The Dockerfile (`-` for standard input).
    #[arg(short = 'f', long = "file", default_value = "Dockerfile")]
    file: PathBuf,
    /// The stage to build; only stages it reaches are converted. Default: the last stage.
    #[arg(long)]
    target: Option<String>,
    /// A build argument, `KEY=VALUE` (or `KEY` to take the value from the environment).
    #[arg(long = "build-arg", value_name = "KEY=VALUE")]
    build_args: Vec<String>,
    /// Target platform, e.g. `linux/arm64`. Default: this machine's.
    #[arg(long)]
    platform: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = LlbFormat::Json)]
    format: LlbFormat,
}

pub fn run(cmd: DebugCommand, g: &crate::images::Globals) -> Result<ExitCode> {
    match cmd {
        DebugCommand::DumpAst(args) => dump_ast(&args),
        DebugCommand::Llb(args) => llb(&args),
        DebugCommand::Run(args) => crate::debug_run::run(args, g),
        DebugCommand::Platforms => platforms(),
    }
}

fn platforms() -> Result<ExitCode> {
    use sandbox::platforms::How;
    let runnable = sandbox::platforms::runnable();
    for r in &runnable {
        let how = match &r.how {
            How::Native => "native".to_string(),
            How::Compat => "native (the kernel's 32-bit mode)".to_string(),
            How::Emulated { handler, interpreter, fix_binary: true } => {
                format!("emulated: binfmt_misc {handler} ({})", interpreter.display())
            }
            How::Emulated { handler, interpreter, fix_binary: false } => format!(
                "not usable: binfmt_misc {handler} ({}) lacks the fix-binary flag F that RUN steps need",
                interpreter.display()
            ),
        };
        println!("{:<16} {how}", r.platform.to_string());
    }
    let binfmt = std::path::Path::new(sandbox::platforms::BINFMT_MISC);
    if !binfmt.join("register").exists() {
        println!(
            "binfmt_misc is not mounted at {0}: mount it (mount -t binfmt_misc binfmt_misc {0}) and install \
             qemu-user-static to build for other platforms",
            binfmt.display()
        );
    } else if !runnable.iter().any(|r| matches!(r.how, How::Emulated { .. })) {
        println!(
            "no emulators are registered in {}: install qemu-user-static (apt-get install qemu-user-static) to \
             build for other platforms",
            binfmt.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn read_dockerfile(path: &Path) -> Result<(String, Vec<u8>)> {
    if path == Path::new("-") {
        let mut buf = Vec::new();
        std::io::stdin().read_to_end(&mut buf).context("reading the Dockerfile from standard input")?;
        return Ok(("Dockerfile".into(), buf));
    }
    let bytes = std::fs::read(path).with_context(|| format!("cannot read Dockerfile {}", path.display()))?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "Dockerfile".into());
    Ok((name, bytes))
}

/// Print a diagnostic BuildKit-style and return a failing exit code.
fn report(name: &str, source: &[u8], diag: &Diagnostic) -> ExitCode {
    eprint!("{}", diag.render(name, &String::from_utf8_lossy(source)));
    ExitCode::FAILURE
}

fn dump_ast(args: &DumpAstArgs) -> Result<ExitCode> {
    let (name, bytes) = read_dockerfile(&args.file)?;
    let ast = match frontend::parser::parse(&bytes) {
        Ok(ast) => ast,
        Err(d) => return Ok(report(&name, &bytes, &d)),
    };
    for w in &ast.warnings {
        eprint!("warning: {}", w.render(&name, &String::from_utf8_lossy(&bytes)));
    }
    std::io::stdout().write_all(frontend::parser::dump(&ast).as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

fn parse_build_args(raw: &[String]) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for a in raw {
        match a.split_once('=') {
            Some((k, v)) if !k.is_empty() => {
                out.insert(k.to_string(), v.to_string());
            }
            Some(_) => bail!("invalid --build-arg {a:?}: expected KEY=VALUE"),
            // `--build-arg KEY` takes the value from the environment, like docker; unset means absent.
            None => {
                if let Ok(v) = std::env::var(a) {
                    out.insert(a.clone(), v);
                }
            }
        }
    }
    Ok(out)
}

fn llb(args: &LlbArgs) -> Result<ExitCode> {
    let (name, bytes) = read_dockerfile(&args.file)?;
    let mut opts = ConvertOptions {
        filename: name.clone(),
        target: args.target.clone(),
        build_args: parse_build_args(&args.build_args)?,
        ..ConvertOptions::default()
    };
    if let Some(p) = &args.platform {
        opts.target_platform = Some(p.parse().with_context(|| format!("invalid --platform {p:?}"))?);
    }
    let converted = match convert(&bytes, &opts, &OfflineResolver) {
        Ok(c) => c,
        Err(d) => return Ok(report(&name, &bytes, &d)),
    };
    for w in &converted.warnings {
        eprint!("warning: {}", w.render(&name, &String::from_utf8_lossy(&bytes)));
    }
    let out = match args.format {
        LlbFormat::Json => converted.definition.to_json(),
        LlbFormat::Dot => converted.definition.to_dot(),
    };
    let mut stdout = std::io::stdout();
    stdout.write_all(out.as_bytes())?;
    if !out.ends_with('\n') {
        stdout.write_all(b"\n")?;
    }
    Ok(ExitCode::SUCCESS)
}
