//! Image commands, shaped like docker's: `images`, `tag`, `pull`, `push`, `rmi`, `inspect`, `history`,
//! `save`, `load`, `login`, `logout`. The work is in the `registry` crate; this file opens the state root,
//! loads the configuration and credentials, and prints.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use registry::auth::{Credentials, DockerConfig, StaticCredentials};
use registry::{Client, Config, ImageStore, Progress, ProgressKind, Reference};
use snapshotter::content::LocalStore;
use snapshotter::meta::MetaDb;
use snapshotter::root::StateRoot;

/// Flags every command shares.
#[derive(Debug, Clone, Default)]
pub struct Globals {
    pub config: Option<PathBuf>,
    pub root: Option<PathBuf>,
    /// `--host`: the daemon to talk to.
    pub host: Option<String>,
    pub tlscacert: Option<PathBuf>,
    pub tlscert: Option<PathBuf>,
    pub tlskey: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum ImageCommand {
    /// List images.
    Images(ImagesArgs),
    /// Create a tag TARGET that refers to SOURCE.
    Tag { source: String, target: String },
    /// Download an image from a registry.
    Pull(PullArgs),
    /// Upload an image to a registry.
    Push { reference: String },
    /// Remove one or more image names (content is kept until garbage collection).
    Rmi {
        #[arg(required = true)]
        references: Vec<String>,
    },
    /// Show an image's manifest digest, config and layers as JSON.
    Inspect {
        reference: String,
        /// Print the raw manifest instead.
        #[arg(long)]
        raw: bool,
    },
    /// Show the history of an image.
    History {
        reference: String,
        /// Do not truncate output.
        #[arg(long)]
        no_trunc: bool,
    },
    /// Save images to a tar archive (docker-archive by default, or an OCI layout).
    Save(SaveArgs),
    /// Load images from a docker-archive or OCI layout tar.
    Load {
        /// Read from this tar archive file.
        #[arg(short, long, value_name = "FILE")]
        input: PathBuf,
    },
    /// Log in to a registry (writes ~/.docker/config.json like docker).
    Login(LoginArgs),
    /// Log out from a registry.
    Logout { server: Option<String> },
}

#[derive(Args, Debug)]
pub struct ImagesArgs {
    /// Only show image IDs.
    #[arg(short, long)]
    quiet: bool,
    /// Show manifest digests.
    #[arg(long)]
    digests: bool,
    /// Do not truncate output.
    #[arg(long)]
    no_trunc: bool,
}

#[derive(Args, Debug)]
pub struct PullArgs {
    reference: String,
    /// Platform to pull (`os/arch[/variant]`), default: this host's.
    #[arg(long)]
    platform: Option<String>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum SaveFormat {
    /// docker-archive, as `docker save` writes it.
    Docker,
    /// An OCI image layout in a tar.
    Oci,
}

#[derive(Args, Debug)]
pub struct SaveArgs {
    #[arg(required = true)]
    references: Vec<String>,
    /// Write to this file.
    #[arg(short, long, value_name = "FILE")]
    output: PathBuf,
    #[arg(long, value_enum, default_value_t = SaveFormat::Docker)]
    format: SaveFormat,
}

#[derive(Args, Debug)]
pub struct LoginArgs {
    /// Registry (default: docker.io).
    server: Option<String>,
    #[arg(short, long)]
    username: Option<String>,
    #[arg(short, long)]
    password: Option<String>,
    /// Read the password from standard input.
    #[arg(long)]
    password_stdin: bool,
}

struct Env {
    _root: StateRoot,
    store: ImageStore,
}

fn open_store(g: &Globals) -> Result<Env> {
    let path = g.root.clone().unwrap_or_else(StateRoot::default_path);
    let root = StateRoot::open(&path, &mut |w| eprintln!("{w}"))
        .with_context(|| format!("opening state root {}", path.display()))?;
    let content = LocalStore::open(root.content_dir())?;
    // Image commands make a few transactions and exit: they go before the builds' next turns.
    let meta = Arc::new(MetaDb::open_short(root.meta_path())?);
    Ok(Env { store: ImageStore::new(content, meta), _root: root })
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false)
}

/// The distribution client with the registry configuration and docker's credentials.
pub(crate) fn registry_client(g: &Globals) -> Result<Arc<Client>> {
    let creds = DockerConfig::load(&DockerConfig::default_path())?;
    Ok(Arc::new(Client::new(load_config(g)?, Arc::new(creds))))
}

fn load_config(g: &Globals) -> Result<Config> {
    match Config::default_path(g.config.as_deref(), is_root()) {
        Some((path, required)) => Ok(Config::load(&path, required)?),
        None => Ok(Config::default()),
    }
}

fn client(g: &Globals) -> Result<Client> {
    let creds = DockerConfig::load(&DockerConfig::default_path())?;
    let progress = Arc::new(|p: &Progress| {
        let short = p.id.strip_prefix("sha256:").unwrap_or(&p.id).chars().take(12).collect::<String>();
        let what = match p.kind {
            ProgressKind::Exists => "Already exists",
            ProgressKind::Mounted => "Mounted from another repository",
            ProgressKind::Done => "Done",
            ProgressKind::Downloading | ProgressKind::Uploading => return,
        };
        eprintln!("{short}: {what}");
    });
    Ok(Client::new(load_config(g)?, Arc::new(creds)).with_progress(progress))
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

/// Where an image command runs: on this machine's store, or on a daemon.
enum Backend {
    Local(Env),
    Remote(daemon::client::Connection, tokio::runtime::Runtime),
}

fn backend(g: &Globals) -> Result<Backend> {
    match crate::remote::daemon_for(g)? {
        Some(target) => {
            let rt = runtime()?;
            let conn = rt.block_on(target.connect())?;
            Ok(Backend::Remote(conn, rt))
        }
        None => Ok(Backend::Local(open_store(g)?)),
    }
}

/// Prints one blob's progress as docker does.
fn print_blob(id: &str, kind: &str) {
    let short = id.strip_prefix("sha256:").unwrap_or(id).chars().take(12).collect::<String>();
    let what = match kind {
        "exists" => "Already exists",
        "mounted" => "Mounted from another repository",
        _ => "Done",
    };
    eprintln!("{short}: {what}");
}

pub fn run(cmd: ImageCommand, g: &Globals) -> Result<ExitCode> {
    match cmd {
        ImageCommand::Images(a) => images(g, &a)?,
        ImageCommand::Tag { source, target } => match backend(g)? {
            Backend::Local(env) => engine::images::tag(&env.store, &source, &target)?,
            Backend::Remote(mut c, rt) => rt.block_on(c.tag_image(&source, &target))?,
        },
        ImageCommand::Pull(a) => pull(g, &a)?,
        ImageCommand::Push { reference } => push(g, &reference)?,
        ImageCommand::Rmi { references } => {
            let untagged = match backend(g)? {
                Backend::Local(env) => engine::images::untag(&env.store, &references)?,
                Backend::Remote(mut c, rt) => rt.block_on(c.remove_images(&references))?,
            };
            for name in untagged {
                println!("Untagged: {name}");
            }
        }
        ImageCommand::Inspect { reference, raw } => {
            let out = match backend(g)? {
                Backend::Local(env) => engine::images::inspect(&env.store, &reference, raw)?,
                Backend::Remote(mut c, rt) => rt.block_on(c.inspect_image(&reference, raw))?,
            };
            std::io::stdout().write_all(&out)?;
        }
        ImageCommand::History { reference, no_trunc } => history(g, &reference, no_trunc)?,
        ImageCommand::Save(a) => save(g, &a)?,
        ImageCommand::Load { input } => {
            let file = std::fs::File::open(&input).with_context(|| format!("opening {}", input.display()))?;
            let loaded = match backend(g)? {
                Backend::Local(env) => engine::images::load(&env.store, file)?,
                Backend::Remote(mut c, rt) => rt.block_on(c.load(file))?,
            };
            for name in loaded {
                println!("Loaded image: {name}");
            }
        }
        ImageCommand::Login(a) => login(g, a)?,
        ImageCommand::Logout { server } => {
            let server = server.unwrap_or_else(|| "docker.io".to_string());
            let mut cfg = DockerConfig::load(&DockerConfig::default_path())?;
            if cfg.erase(&server)? {
                println!("Removing login credentials for {server}");
            } else {
                println!("Not logged in to {server}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn human_size(n: u64) -> String {
    // docker prints SI units with three significant digits.
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1000.0 && i + 1 < units.len() {
        v /= 1000.0;
        i += 1;
    }
    if i == 0 {
        format!("{n}B")
    } else {
        format!("{:.3}{}", v, units[i]).replacen(".000", "", 1)
    }
}

fn short_id(d: &str, no_trunc: bool) -> String {
    if no_trunc {
        d.to_string()
    } else {
        d.strip_prefix("sha256:").unwrap_or(d).chars().take(12).collect()
    }
}

fn images(g: &Globals, a: &ImagesArgs) -> Result<()> {
    let list = match backend(g)? {
        Backend::Local(env) => engine::images::list(&env.store)?,
        Backend::Remote(mut c, rt) => rt.block_on(c.list_images())?,
    };
    let rows: Vec<[String; 6]> = list
        .into_iter()
        .map(|i| {
            let created = i.created.unwrap_or_default();
            let created = created.get(..19).unwrap_or(&created).replace('T', " ");
            let tag = i.tag.unwrap_or_else(|| "<none>".into());
            [i.repository, tag, i.digest, short_id(&i.id, a.no_trunc), created, human_size(i.size)]
        })
        .collect();
    if a.quiet {
        for r in rows {
            println!("{}", r[3]);
        }
        return Ok(());
    }
    let mut header = vec!["REPOSITORY", "TAG"];
    if a.digests {
        header.push("DIGEST");
    }
    header.extend(["IMAGE ID", "CREATED", "SIZE"]);
    let table: Vec<Vec<String>> = rows
        .into_iter()
        .map(|r| {
            let mut v = vec![r[0].clone(), r[1].clone()];
            if a.digests {
                v.push(r[2].clone());
            }
            v.extend([r[3].clone(), r[4].clone(), r[5].clone()]);
            v
        })
        .collect();
    print_table(&header, &table);
    Ok(())
}

fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}   ", w = widths[i]));
            }
        }
        println!("{}", s.trim_end());
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
}

fn pull(g: &Globals, a: &PullArgs) -> Result<()> {
    let r = Reference::parse(&a.reference)?;
    let platform = a.platform.as_deref().map(str::parse::<llb::Platform>).transpose()?;
    println!("{}: Pulling from {}", r.tag().unwrap_or("latest"), r.familiar_name());
    let pulled = match backend(g)? {
        Backend::Local(env) => {
            let client = client(g)?;
            runtime()?.block_on(engine::images::pull(&client, &env.store, &a.reference, platform.as_ref()))?
        }
        Backend::Remote(mut c, rt) => {
            let platform = platform.map(|p| p.to_string());
            rt.block_on(c.pull(&a.reference, platform.as_deref(), &mut |(id, kind)| print_blob(&id, &kind)))?
        }
    };
    println!("Digest: {}", pulled.digest);
    let status = if pulled.fetched { "Downloaded newer image for" } else { "Image is up to date for" };
    println!("Status: {status} {r}");
    println!("{r}");
    Ok(())
}

fn push(g: &Globals, reference: &str) -> Result<()> {
    let r = Reference::parse(reference)?;
    println!("The push refers to repository [{}]", r.name());
    let p = match backend(g)? {
        Backend::Local(env) => {
            let client = client(g)?;
            runtime()?.block_on(engine::images::push(&client, &env.store, reference))?
        }
        Backend::Remote(mut c, rt) => rt.block_on(c.push(reference, &mut |(id, kind)| print_blob(&id, &kind)))?,
    };
    println!(
        "{}: digest: {} size: {} ({} uploaded, {} mounted, {} already present)",
        p.tag.as_deref().unwrap_or("latest"),
        p.digest,
        p.size,
        p.uploaded,
        p.mounted,
        p.existed
    );
    if !p.left_out.is_empty() {
        eprintln!(
            "only the platforms held here were pushed: {} are not in the local store (a pull keeps the platforms \
             builds used) nor in the destination; pull them with --platform to push the whole index",
            p.left_out.join(", ")
        );
    }
    Ok(())
}

fn history(g: &Globals, reference: &str, no_trunc: bool) -> Result<()> {
    let entries = match backend(g)? {
        Backend::Local(env) => engine::images::history(&env.store, reference)?,
        Backend::Remote(mut c, rt) => rt.block_on(c.image_history(reference))?,
    };
    let rows: Vec<Vec<String>> = entries
        .into_iter()
        .map(|h| {
            let id = h.id.map(|id| short_id(&id, no_trunc)).unwrap_or_else(|| "<missing>".to_string());
            let mut by = h.created_by.unwrap_or_default();
            if !no_trunc && by.chars().count() > 45 {
                by = by.chars().take(44).collect::<String>() + "…";
            }
            vec![id, h.created.unwrap_or_default(), by, human_size(h.size), h.comment.unwrap_or_default()]
        })
        .collect();
    print_table(&["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"], &rows);
    Ok(())
}

fn save(g: &Globals, a: &SaveArgs) -> Result<()> {
    let oci = matches!(a.format, SaveFormat::Oci);
    match backend(g)? {
        Backend::Local(env) => {
            write_atomically(&a.output, |f| Ok(engine::images::save_file(&env.store, &a.references, oci, f)?))
        }
        Backend::Remote(mut c, rt) => {
            write_atomically(&a.output, |f| Ok(rt.block_on(c.save(&a.references, oci, f))?))
        }
    }
}

fn write_atomically(path: &Path, write: impl FnOnce(&mut std::fs::File) -> Result<()>) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    // Mode 0666 less the umask, as any file the user writes (a temp file's 0600 would stay).
    let mut tmp = tempfile::Builder::new()
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666))
        .tempfile_in(dir)
        .with_context(|| format!("creating a file in {}", dir.display()))?;
    write(tmp.as_file_mut())?;
    // No fsync, as `docker save -o`: the rename makes the file whole or absent.
    tmp.persist(path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

fn login(g: &Globals, a: LoginArgs) -> Result<()> {
    let server = a.server.unwrap_or_else(|| "docker.io".to_string());
    let registry = Reference::parse(&format!("{server}/x")).map(|r| r.registry().to_string()).unwrap_or(server.clone());
    let Some(username) = a.username else { bail!("--username is required") };
    let password = match (a.password, a.password_stdin) {
        (Some(_), true) => bail!("--password and --password-stdin are mutually exclusive"),
        (Some(p), false) => p,
        (None, true) => {
            let mut line = String::new();
            std::io::stdin().lock().read_line(&mut line)?;
            line.trim_end_matches(['\n', '\r']).to_string()
        }
        (None, false) => bail!("--password or --password-stdin is required"),
    };
    let creds = Credentials { username, password, identity_token: None };
    let host = load_config(g)?.origin(&registry).host;
    let check =
        Client::new(load_config(g)?, Arc::new(StaticCredentials([(host, creds.clone())].into_iter().collect())));
    runtime()?.block_on(check.ping(&registry)).with_context(|| format!("logging in to {registry}"))?;
    let mut cfg = DockerConfig::load(&DockerConfig::default_path())?;
    cfg.store(&registry, &creds)?;
    println!("Login Succeeded");
    Ok(())
}
