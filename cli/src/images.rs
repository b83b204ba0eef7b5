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
use registry::export::{self, ArchiveFormat};
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
    let meta = Arc::new(MetaDb::open(root.meta_path())?);
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

pub fn run(cmd: ImageCommand, g: &Globals) -> Result<ExitCode> {
    match cmd {
        ImageCommand::Images(a) => images(g, &a)?,
        ImageCommand::Tag { source, target } => {
            let env = open_store(g)?;
            let desc = env.store.get(&source)?;
            env.store.tag(&Reference::parse(&target)?, &desc)?;
        }
        ImageCommand::Pull(a) => pull(g, &a)?,
        ImageCommand::Push { reference } => push(g, &reference)?,
        ImageCommand::Rmi { references } => {
            let env = open_store(g)?;
            for r in references {
                let name = Reference::parse(&r)?;
                if !env.store.untag(&name)? {
                    bail!("no such image: {r}");
                }
                println!(
                    "Untagged: {}",
                    name.familiar_name() + &name.tag().map(|t| format!(":{t}")).unwrap_or_default()
                );
            }
        }
        ImageCommand::Inspect { reference, raw } => inspect(g, &reference, raw)?,
        ImageCommand::History { reference, no_trunc } => history(g, &reference, no_trunc)?,
        ImageCommand::Save(a) => save(g, &a)?,
        ImageCommand::Load { input } => {
            let env = open_store(g)?;
            let file = std::fs::File::open(&input).with_context(|| format!("opening {}", input.display()))?;
            for (name, _) in export::load(&env.store, file)? {
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
    let env = open_store(g)?;
    let mut rows = Vec::new();
    for img in env.store.list()? {
        let Ok(desc) = env.store.get(&img.name.to_string()) else { continue };
        let Ok(local) = env.store.image(&desc, None) else { continue };
        let size: u64 = local.manifest.layers().iter().map(|l| l.size()).sum::<u64>() + local.manifest.config().size();
        let id = short_id(local.manifest.config().digest().as_ref(), a.no_trunc);
        let tag = img.name.tag().unwrap_or("<none>").to_string();
        let created = local.config.created.clone().unwrap_or_default();
        let created = created.get(..19).unwrap_or(&created).replace('T', " ");
        rows.push([img.name.familiar_name(), tag, img.record.digest.clone(), id, created, human_size(size)]);
    }
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
    let platform = match &a.platform {
        Some(p) => p.parse::<llb::Platform>()?,
        None => llb::Platform::host(),
    };
    let env = open_store(g)?;
    let client = client(g)?;
    println!("{}: Pulling from {}", r.tag().unwrap_or("latest"), r.familiar_name());
    let pulled = runtime()?.block_on(client.pull(&r, &platform, &env.store))?;
    env.store.tag(&r, &pulled.manifest.descriptor())?;
    println!("Digest: {}", pulled.manifest.digest);
    let status = if pulled.fetched.is_empty() { "Image is up to date for" } else { "Downloaded newer image for" };
    println!("Status: {status} {r}");
    println!("{r}");
    Ok(())
}

fn push(g: &Globals, reference: &str) -> Result<()> {
    let r = Reference::parse(reference)?;
    let env = open_store(g)?;
    let desc = env.store.get(reference)?;
    let client = client(g)?;
    println!("The push refers to repository [{}]", r.name());
    let report = runtime()?.block_on(client.push(&env.store, &desc, &r))?;
    let digest = report.digest.map(|d| d.to_string()).unwrap_or_default();
    println!(
        "{}: digest: {digest} size: {} ({} uploaded, {} mounted, {} already present)",
        r.tag().unwrap_or("latest"),
        desc.size(),
        report.uploaded.len(),
        report.mounted.len(),
        report.existed.len()
    );
    Ok(())
}

fn inspect(g: &Globals, reference: &str, raw: bool) -> Result<()> {
    let env = open_store(g)?;
    let desc = env.store.get(reference)?;
    let local = env.store.image(&desc, None)?;
    if raw {
        std::io::stdout().write_all(&local.manifest_raw.bytes)?;
        println!();
        return Ok(());
    }
    let tags: Vec<String> = env
        .store
        .list()?
        .into_iter()
        .filter(|i| i.record.digest == desc.digest().to_string())
        .map(|i| i.name.to_string())
        .collect();
    let (name, tag) = match Reference::parse(reference) {
        Ok(r) => (r.name(), r.tag().map(str::to_string)),
        Err(_) => (String::new(), None),
    };
    let layers_data: Vec<serde_json::Value> = local
        .manifest
        .layers()
        .iter()
        .map(|l| {
            serde_json::json!({
                "MIMEType": l.media_type().to_string(),
                "Digest": l.digest().to_string(),
                "Size": l.size(),
                "Annotations": l.annotations(),
            })
        })
        .collect();
    let c = &local.config;
    // skopeo inspect's shape, plus the full config and the manifest.
    let out = serde_json::json!({
        "Name": name,
        "Tag": tag,
        "Digest": desc.digest().to_string(),
        "RepoTags": tags,
        "Created": c.created,
        "DockerVersion": c.extra.get("docker_version"),
        "Labels": c.config.labels,
        "Architecture": c.architecture,
        "Variant": c.variant,
        "Os": c.os,
        "Layers": local.manifest.layers().iter().map(|l| l.digest().to_string()).collect::<Vec<_>>(),
        "LayersData": layers_data,
        "Env": c.config.env,
        "Id": local.manifest.config().digest().to_string(),
        "MediaType": local.manifest_raw.media_type,
        "ManifestDigest": local.manifest_raw.digest.to_string(),
        "Config": serde_json::from_slice::<serde_json::Value>(&local.config_bytes)?,
        "Manifest": serde_json::from_slice::<serde_json::Value>(&local.manifest_raw.bytes)?,
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

fn history(g: &Globals, reference: &str, no_trunc: bool) -> Result<()> {
    let env = open_store(g)?;
    let desc = env.store.get(reference)?;
    let local = env.store.image(&desc, None)?;
    let mut layers = local.manifest.layers().iter();
    let mut rows = Vec::new();
    for (i, h) in local.config.history.iter().enumerate() {
        let size = if h.empty_layer { 0 } else { layers.next().map(|l| l.size()).unwrap_or(0) };
        let id = if i + 1 == local.config.history.len() {
            short_id(local.manifest.config().digest().as_ref(), no_trunc)
        } else {
            "<missing>".to_string()
        };
        let mut by = h.created_by.clone().unwrap_or_default();
        if !no_trunc && by.chars().count() > 45 {
            by = by.chars().take(44).collect::<String>() + "…";
        }
        let created = h.created.clone().unwrap_or_default();
        rows.push(vec![id, created, by, human_size(size), h.comment.clone().unwrap_or_default()]);
    }
    rows.reverse();
    print_table(&["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"], &rows);
    Ok(())
}

fn save(g: &Globals, a: &SaveArgs) -> Result<()> {
    let env = open_store(g)?;
    let mut images = Vec::new();
    for r in &a.references {
        let desc = env.store.get(r)?;
        images.push((Reference::parse(r).ok(), desc));
    }
    let format = match a.format {
        SaveFormat::Docker => ArchiveFormat::Docker,
        SaveFormat::Oci => ArchiveFormat::Oci,
    };
    write_atomically(&a.output, |f| Ok(export::save(&env.store, &images, format, f)?))
}

fn write_atomically(path: &Path, write: impl FnOnce(&mut std::fs::File) -> Result<()>) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut tmp =
        tempfile::NamedTempFile::new_in(dir).with_context(|| format!("creating a file in {}", dir.display()))?;
    write(tmp.as_file_mut())?;
    tmp.as_file().sync_all()?;
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
