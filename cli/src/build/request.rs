//! `rbuild build` flags -> a [`Parsed`] build, then an [`engine::BuildRequest`] or a daemon's request: what
//! the client reads (the Dockerfile, its .dockerignore, secrets, the environment) and how docker/buildx
//! spell each option.

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

/// A `--build-context` value.
pub enum Named {
    Dir(PathBuf),
    Image(String),
}

/// What `rbuild build`'s flags ask for, read and checked on this machine; run here ([`Parsed::local`]) or
/// by a daemon ([`Parsed::remote`]).
pub struct Parsed {
    dockerfile: Vec<u8>,
    dockerfile_name: String,
    dockerignore: Option<String>,
    context: PathBuf,
    named: BTreeMap<String, Named>,
    build_args: BTreeMap<String, String>,
    target: Option<String>,
    platforms: Vec<Platform>,
    labels: BTreeMap<String, String>,
    tags: Vec<String>,
    outputs: Vec<OutputSpec>,
    secrets: BTreeMap<String, Vec<u8>>,
    ssh: BTreeMap<String, PathBuf>,
    cache: CacheOptions,
    cache_from: Vec<String>,
    cache_to: Vec<String>,
    network: sandbox::NetworkMode,
    allow: BTreeSet<Entitlement>,
    add_hosts: Vec<llb::HostIp>,
    source_date_epoch: Option<i64>,
    max_parallelism: Option<usize>,
    /// The Dockerfile's absolute path (what "the same Dockerfile" is for miss explanations).
    explain_key: String,
}

/// The build `a` describes, on the canonical context directory `context`.
pub fn parse(a: &BuildArgs, context: &Path, dockerfile: &DockerfileSource) -> Result<Parsed> {
    let build_args = parse_build_args(&a.build_args);
    let source_date_epoch = source_date_epoch(&build_args)?;
    let mut allow: BTreeSet<Entitlement> =
        a.allow.iter().map(|e| e.parse::<Entitlement>()).collect::<Result<_, _>>().context("--allow")?;
    let network: sandbox::NetworkMode = a.network.parse().context("--network")?;
    // `--network host` asks for the host network itself (buildx adds the entitlement the same way); a
    // Dockerfile's `RUN --network=host` needs `--allow network.host`.
    if network == sandbox::NetworkMode::Host {
        allow.insert(Entitlement::NetworkHost);
    }
    Ok(Parsed {
        dockerfile: dockerfile.bytes.clone(),
        dockerfile_name: dockerfile.name.clone(),
        dockerignore: dockerfile.dockerignore.clone(),
        context: context.to_path_buf(),
        named: parse_build_contexts(&a.build_contexts, &std::env::current_dir()?)?,
        build_args,
        target: a.target.clone(),
        platforms: parse_platforms(&a.platforms)?,
        labels: parse_labels(&a.labels),
        tags: a.tags.clone(),
        outputs: outputs(a)?,
        secrets: parse_secrets(&a.secrets)?,
        ssh: parse_ssh(&a.ssh)?,
        cache: CacheOptions { no_cache: a.no_cache, no_cache_filter: a.no_cache_filter.clone(), pull: a.pull },
        cache_from: with_gha_service(checked(&a.cache_from, |s| engine::cache::parse_cache_from(s).map(drop))?),
        cache_to: with_gha_service(checked(&a.cache_to, |s| engine::cache::parse_cache_to(s).map(drop))?),
        network,
        allow,
        add_hosts: parse_add_hosts(&a.add_hosts)?,
        source_date_epoch,
        max_parallelism: a.max_parallelism,
        explain_key: match a.file.as_deref() {
            Some("-") => format!("{}/-", context.display()),
            Some(f) => std::path::absolute(f).unwrap_or_else(|_| PathBuf::from(f)).display().to_string(),
            None => context.join("Dockerfile").display().to_string(),
        },
    })
}

/// `type=gha` values without `url=`/`token=` get them from this process's environment (the runner's), so a
/// daemon that runs the build reaches the service too. Checked before, so no error message shows the token.
fn with_gha_service(values: Vec<String>) -> Vec<String> {
    use engine::cache::gha::{TOKEN_VAR, URL_VAR};
    values
        .into_iter()
        .map(|v| {
            let keys: Vec<&str> = v.split(',').filter_map(|f| f.split_once('=')).map(|(k, _)| k.trim()).collect();
            if !v.split(',').any(|f| f.trim() == "type=gha") {
                return v;
            }
            let mut v = v.clone();
            if !keys.iter().any(|k| *k == "url" || *k == "url_v2") {
                if let Some(url) = std::env::var(URL_VAR).ok().filter(|u| !u.is_empty()) {
                    v.push_str(&format!(",url_v2={url}"));
                }
            }
            if !keys.contains(&"token") {
                if let Some(token) = std::env::var(TOKEN_VAR).ok().filter(|t| !t.is_empty()) {
                    v.push_str(&format!(",token={token}"));
                }
            }
            v
        })
        .collect()
}

/// The values, each checked by `check` (the daemon parses them again on its side).
fn checked(
    values: &[String],
    check: impl Fn(&str) -> Result<(), engine::cache::CacheSpecError>,
) -> Result<Vec<String>> {
    for v in values {
        check(v)?;
    }
    Ok(values.to_vec())
}

impl Parsed {
    /// The engine request, for a build in this process.
    pub fn local(self) -> BuildRequest {
        let mut req = BuildRequest::new(self.dockerfile, Arc::new(LocalDir(self.context)));
        req.dockerfile_name = self.dockerfile_name;
        req.dockerignore = self.dockerignore;
        req.named_contexts = self
            .named
            .into_iter()
            .map(|(name, n)| {
                let c = match n {
                    Named::Dir(d) => NamedContext::Local(Arc::new(LocalDir(d))),
                    Named::Image(r) => NamedContext::Image(r),
                };
                (name, c)
            })
            .collect();
        req.build_args = self.build_args;
        req.target = self.target;
        req.platforms = self.platforms;
        req.labels = self.labels;
        req.tags = self.tags;
        req.outputs = self.outputs;
        req.secrets = Arc::new(StaticSecrets(self.secrets));
        req.ssh = Arc::new(SshSockets(self.ssh));
        req.cache = self.cache;
        // Checked when parsed.
        req.cache_from = self.cache_from.iter().filter_map(|s| engine::cache::parse_cache_from(s).ok()).collect();
        req.cache_to = self.cache_to.iter().filter_map(|s| engine::cache::parse_cache_to(s).ok()).collect();
        req.network = self.network;
        req.entitlements = self.allow;
        req.add_hosts = self.add_hosts;
        req.source_date_epoch = self.source_date_epoch;
        req.max_parallelism = self.max_parallelism;
        req.explain_key = Some(self.explain_key);
        req
    }

    /// The same build for a daemon: contexts, secrets, agents and output destinations stay here.
    pub fn remote(self) -> daemon::client::RemoteBuild {
        use daemon::proto;
        let context_key = daemon::client::context_key(&self.context);
        let mut contexts = BTreeMap::from([(context_key.clone(), self.context)]);
        let mut named_contexts = std::collections::HashMap::new();
        for (name, n) in self.named {
            let source = match n {
                Named::Dir(d) => {
                    let key = daemon::client::context_key(&d);
                    contexts.insert(key.clone(), d);
                    proto::named_context::Source::LocalKey(key)
                }
                Named::Image(r) => proto::named_context::Source::Image(r),
            };
            named_contexts.insert(name, proto::NamedContext { source: Some(source) });
        }
        let network = match self.network {
            sandbox::NetworkMode::None => "none",
            sandbox::NetworkMode::Host => "host",
            sandbox::NetworkMode::Default => "default",
        };
        let start = proto::BuildStart {
            client_id: daemon::client::client_id(),
            dockerfile: self.dockerfile,
            dockerfile_name: self.dockerfile_name,
            dockerignore: self.dockerignore,
            context_key,
            named_contexts,
            build_args: self.build_args.into_iter().collect(),
            target: self.target,
            // A daemon of before multi-platform builds reads `platform`; one that has them reads `platforms`.
            platform: self.platforms.first().map(|p| p.to_string()),
            platforms: self.platforms.iter().map(|p| p.to_string()).collect(),
            labels: self.labels.into_iter().collect(),
            tags: self.tags,
            no_cache: self.cache.no_cache,
            no_cache_filter: self.cache.no_cache_filter,
            pull: self.cache.pull,
            network: network.into(),
            entitlements: self.allow.iter().map(|e| e.to_string()).collect(),
            add_hosts: self.add_hosts.into_iter().map(|h| proto::HostIp { host: h.host, ip: h.ip }).collect(),
            source_date_epoch: self.source_date_epoch,
            max_parallelism: self.max_parallelism.map(|n| n as u32),
            cache_from: self.cache_from,
            cache_to: self.cache_to,
            ..Default::default()
        };
        daemon::client::RemoteBuild { start, contexts, secrets: self.secrets, ssh: self.ssh, outputs: self.outputs }
    }
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

/// `--platform a,b` and repeated `--platform` values: each parsed, blanks skipped.
fn parse_platforms(raw: &[String]) -> Result<Vec<Platform>> {
    raw.iter()
        .map(|p| p.trim())
        .filter(|p| !p.is_empty())
        .map(|p| p.parse::<Platform>().with_context(|| format!("invalid --platform {p:?}")))
        .collect()
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
fn parse_build_contexts(raw: &[String], base: &Path) -> Result<BTreeMap<String, Named>> {
    let mut out = BTreeMap::new();
    for c in raw {
        let (name, value) =
            c.split_once('=').ok_or_else(|| anyhow!("invalid --build-context {c:?}: expected NAME=VALUE"))?;
        let ctx = if let Some(r) = value.strip_prefix("docker-image://") {
            Named::Image(r.to_string())
        } else if value.contains("://") {
            bail!("--build-context {name}: only local directories and docker-image:// are supported, not {value}");
        } else {
            let dir = base.join(value);
            let dir = dir.canonicalize().with_context(|| format!("--build-context {name}: {}", dir.display()))?;
            if !dir.is_dir() {
                bail!("--build-context {name}: {} is not a directory", dir.display());
            }
            Named::Dir(dir)
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
