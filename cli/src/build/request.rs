//! `rbuild build` flags -> an [`engine::BuildRequest`]: what the client reads (the Dockerfile, its
//! .dockerignore, secrets, the environment) and how docker/buildx spell each option.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use engine::export::{parse_output, OutputKind, OutputSpec};
use engine::{BuildRequest, CacheOptions, Entitlement, LocalDir, NamedContext, SshSockets, StaticSecrets};
use llb::Platform;

use super::BuildArgs;

/// The Dockerfile and the .dockerignore that applies, read by the client.
pub struct DockerfileSource {
    pub name: String,
    pub bytes: Vec<u8>,
    pub dockerignore: Option<String>,
}

/// The request `a` describes, on the canonical context directory `context`.
pub fn build_request(a: &BuildArgs, context: &Path, dockerfile: &DockerfileSource) -> Result<BuildRequest> {
    let build_args = parse_build_args(&a.build_args);
    let epoch = source_date_epoch(&build_args)?;
    let network: sandbox::NetworkMode = a.network.parse().context("--network")?;
    let platform = a.platform.as_deref().map(str::parse::<Platform>).transpose().context("--platform")?;
    let mut req = BuildRequest::new(dockerfile.bytes.clone(), Arc::new(LocalDir(context.to_path_buf())));
    req.dockerfile_name = dockerfile.name.clone();
    req.dockerignore = dockerfile.dockerignore.clone();
    req.named_contexts = parse_build_contexts(&a.build_contexts, &std::env::current_dir()?)?;
    req.build_args = build_args;
    req.target = a.target.clone();
    req.platform = platform;
    req.labels = parse_labels(&a.labels);
    req.tags = a.tags.clone();
    req.outputs = outputs(a)?;
    req.secrets = Arc::new(StaticSecrets(parse_secrets(&a.secrets)?));
    req.ssh = Arc::new(SshSockets(parse_ssh(&a.ssh)?));
    req.cache = CacheOptions { no_cache: a.no_cache, no_cache_filter: a.no_cache_filter.clone(), pull: a.pull };
    req.network = network;
    // The CLI runs the engine for its own user, who may use the host network (as docker build does).
    req.entitlements = BTreeSet::from([Entitlement::NetworkHost]);
    req.add_hosts = parse_add_hosts(&a.add_hosts)?;
    req.source_date_epoch = epoch;
    req.max_parallelism = a.max_parallelism;
    Ok(req)
}

/// `--output`, `--push`, `--load` and `-t` as outputs: `-t` alone means the local image store.
fn outputs(a: &BuildArgs) -> Result<Vec<OutputSpec>> {
    let mut outputs: Vec<OutputSpec> = a.outputs.iter().map(|o| parse_output(o)).collect::<Result<_, _>>()?;
    let plain = |kind| OutputSpec { kind, compression: None, oci_mediatypes: None };
    if a.push {
        outputs.push(plain(OutputKind::Image { names: vec![], push: true }));
    }
    if a.load {
        outputs.push(plain(OutputKind::Docker { dest: None, names: vec![] }));
    }
    if !a.tags.is_empty() && !outputs.iter().any(|o| matches!(o.kind, OutputKind::Image { .. })) {
        outputs.push(plain(OutputKind::Image { names: vec![], push: false }));
    }
    Ok(outputs)
}

/// Reads the Dockerfile and finds its .dockerignore (`<Dockerfile>.dockerignore` beside it first, then
/// `<context>/.dockerignore`).
pub fn read_dockerfile(file: Option<&str>, context: &Path) -> Result<DockerfileSource> {
    let (name, bytes, beside) = match file {
        Some("-") => {
            let mut b = Vec::new();
            std::io::stdin().read_to_end(&mut b).context("reading the Dockerfile from standard input")?;
            ("Dockerfile".to_string(), b, None)
        }
        Some(f) => {
            let p = PathBuf::from(f);
            let bytes = std::fs::read(&p).with_context(|| format!("cannot read Dockerfile {}", p.display()))?;
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| f.to_string());
            (name, bytes, Some(p))
        }
        None => {
            let p = context.join("Dockerfile");
            let bytes = std::fs::read(&p).with_context(|| {
                format!("cannot read {}: put a Dockerfile in the context or pass -f PATH", p.display())
            })?;
            ("Dockerfile".to_string(), bytes, Some(p))
        }
    };
    let beside = beside.map(|p| PathBuf::from(format!("{}.dockerignore", p.display()))).filter(|p| p.is_file());
    let ignore_file = beside.or_else(|| Some(context.join(".dockerignore")).filter(|p| p.is_file()));
    let dockerignore = match ignore_file {
        Some(p) => Some(std::fs::read_to_string(&p).with_context(|| format!("cannot read {}", p.display()))?),
        None => None,
    };
    Ok(DockerfileSource { name, bytes, dockerignore })
}

/// The `docker build` convention: KEY=VALUE, or KEY taken from the environment (skipped when unset).
fn parse_build_args(raw: &[String]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for a in raw {
        match a.split_once('=') {
            Some((k, v)) => {
                out.insert(k.to_string(), v.to_string());
            }
            None => {
                if let Ok(v) = std::env::var(a) {
                    out.insert(a.clone(), v);
                }
            }
        }
    }
    out
}

/// `--add-host host:ip` (docker's form; `host=ip` too, as buildx accepts).
fn parse_add_hosts(raw: &[String]) -> Result<Vec<llb::HostIp>> {
    raw.iter()
        .map(|h| {
            let (host, ip) = h
                .split_once('=')
                .or_else(|| h.split_once(':'))
                .filter(|(host, ip)| !host.is_empty() && !ip.is_empty())
                .ok_or_else(|| anyhow!("invalid --add-host {h:?}: expected HOST:IP"))?;
            let ip = ip.trim_start_matches('[').trim_end_matches(']');
            ip.parse::<std::net::IpAddr>()
                .with_context(|| format!("invalid --add-host {h:?}: {ip} is not an IP address"))?;
            Ok(llb::HostIp { host: host.to_string(), ip: ip.to_string() })
        })
        .collect()
}

/// `--label KEY=VALUE` (a bare `KEY` is an empty label, as docker does).
fn parse_labels(raw: &[String]) -> BTreeMap<String, String> {
    raw.iter()
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap_or((l, ""));
            (k.to_string(), v.to_string())
        })
        .collect()
}

/// `--secret id=x,src=path` / `id=x,env=VAR` / `type=file|env`, as buildx reads them; a bare `id=x` takes
/// the environment variable `x`.
fn parse_secrets(raw: &[String]) -> Result<BTreeMap<String, Vec<u8>>> {
    let mut out = BTreeMap::new();
    for s in raw {
        let mut id = None;
        let mut src = None;
        let mut env = None;
        let mut ty = None;
        for f in s.split(',') {
            let (k, v) = f.split_once('=').ok_or_else(|| anyhow!("invalid --secret {s:?}: expected key=value"))?;
            match k {
                "id" => id = Some(v.to_string()),
                "src" | "source" => src = Some(v.to_string()),
                "env" => env = Some(v.to_string()),
                "type" => ty = Some(v.to_string()),
                other => bail!("invalid --secret {s:?}: unknown key {other:?} (use id, src, env or type)"),
            }
        }
        let id = id.or_else(|| src.clone()).or_else(|| env.clone()).ok_or_else(|| {
            anyhow!("invalid --secret {s:?}: give it an id, e.g. --secret id=mytoken,src=./token.txt")
        })?;
        let value = match (ty.as_deref(), src, env) {
            (Some("env"), src, env) | (None, src @ None, env @ Some(_)) => {
                let var = env.or(src).unwrap_or_else(|| id.clone());
                std::env::var_os(&var)
                    .map(|v| v.into_encoded_bytes())
                    .ok_or_else(|| anyhow!("--secret {id}: environment variable {var} is not set"))?
            }
            (Some("file") | None, Some(path), _) => {
                std::fs::read(&path).with_context(|| format!("--secret {id}: cannot read {path}"))?
            }
            (None, None, None) => match std::env::var_os(&id) {
                Some(v) => v.into_encoded_bytes(),
                None => bail!("--secret {id}: no src= file or env= variable given, and ${id} is not set"),
            },
            (Some(t), _, _) => bail!("--secret {id}: unknown type {t:?} (use file or env)"),
        };
        out.insert(id, value);
    }
    Ok(out)
}

fn parse_ssh(raw: &[String]) -> Result<BTreeMap<String, PathBuf>> {
    let mut out = BTreeMap::new();
    for s in raw {
        let (id, path) = match s.split_once('=') {
            Some((id, p)) => (id.to_string(), PathBuf::from(p)),
            None => {
                let sock = std::env::var_os("SSH_AUTH_SOCK").ok_or_else(|| {
                    anyhow!("--ssh {s}: SSH_AUTH_SOCK is not set; pass --ssh {s}=/path/to/agent.sock")
                })?;
                (s.to_string(), PathBuf::from(sock))
            }
        };
        if !path.exists() {
            bail!("--ssh {id}: {} does not exist", path.display());
        }
        out.insert(id, path);
    }
    Ok(out)
}

/// `--build-context NAME=DIR` (relative to `base`) or `NAME=docker-image://REF`.
fn parse_build_contexts(raw: &[String], base: &Path) -> Result<BTreeMap<String, NamedContext>> {
    let mut out = BTreeMap::new();
    for c in raw {
        let (name, value) =
            c.split_once('=').ok_or_else(|| anyhow!("invalid --build-context {c:?}: expected NAME=VALUE"))?;
        let ctx = if let Some(r) = value.strip_prefix("docker-image://") {
            NamedContext::Image(r.to_string())
        } else if value.contains("://") {
            bail!("--build-context {name}: only local directories and docker-image:// are supported, not {value}");
        } else {
            let dir = base.join(value);
            let dir = dir.canonicalize().with_context(|| format!("--build-context {name}: {}", dir.display()))?;
            if !dir.is_dir() {
                bail!("--build-context {name}: {} is not a directory", dir.display());
            }
            NamedContext::Local(Arc::new(LocalDir(dir)))
        };
        out.insert(name.to_string(), ctx);
    }
    Ok(out)
}

/// SOURCE_DATE_EPOCH from the build args or the environment, as BuildKit reads it.
fn source_date_epoch(args: &BTreeMap<String, String>) -> Result<Option<i64>> {
    let v = match args.get("SOURCE_DATE_EPOCH") {
        Some(v) => Some(v.clone()),
        None => std::env::var("SOURCE_DATE_EPOCH").ok(),
    };
    match v.as_deref() {
        None | Some("") => Ok(None),
        Some(v) => Ok(Some(v.parse().with_context(|| format!("SOURCE_DATE_EPOCH={v} is not a number of seconds"))?)),
    }
}
