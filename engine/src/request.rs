//! What a build is asked to do: a [`BuildRequest`].

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;
use std::sync::Arc;

use llb::{HostIp, Platform};
use solver::{LocalSource, SecretSource, SshSockets, SshSource, StaticSecrets};

use crate::cache::{CacheFrom, CacheTo};
use crate::export::OutputSpec;

/// A `--build-context NAME=...` value.
#[derive(Clone)]
pub enum NamedContext {
    /// Files the client provides (a directory today, files sent by a remote client tomorrow).
    Local(Arc<dyn LocalSource>),
    /// `docker-image://REF`: an image used as the context.
    Image(String),
}

impl std::fmt::Debug for NamedContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NamedContext::Local(_) => f.write_str("Local"),
            NamedContext::Image(r) => f.debug_tuple("Image").field(r).finish(),
        }
    }
}

/// A privilege a build may use only when whoever runs the engine grants it (BuildKit's entitlements).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Entitlement {
    /// `RUN --network=host`.
    NetworkHost,
    /// `RUN --security=insecure`.
    SecurityInsecure,
}

/// An entitlement name other than `network.host` and `security.insecure`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown entitlement {0:?}; use network.host or security.insecure")]
pub struct UnknownEntitlement(pub String);

impl FromStr for Entitlement {
    type Err = UnknownEntitlement;
    fn from_str(s: &str) -> Result<Entitlement, UnknownEntitlement> {
        match s {
            "network.host" => Ok(Entitlement::NetworkHost),
            "security.insecure" => Ok(Entitlement::SecurityInsecure),
            other => Err(UnknownEntitlement(other.to_string())),
        }
    }
}

impl std::fmt::Display for Entitlement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Entitlement::NetworkHost => "network.host",
            Entitlement::SecurityInsecure => "security.insecure",
        })
    }
}

/// How the build uses the cache.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheOptions {
    /// Ignore every cached result (`--no-cache`).
    pub no_cache: bool,
    /// Ignore cached results of these stages (`--no-cache-filter`).
    pub no_cache_filter: Vec<String>,
    /// Re-resolve base images against their registries (`--pull`).
    pub pull: bool,
}

/// One build: the Dockerfile, its options, where the files come from, where the result goes.
#[derive(Clone)]
pub struct BuildRequest {
    /// The Dockerfile's bytes.
    pub dockerfile: Vec<u8>,
    /// Its name in diagnostics and source locations (`Dockerfile`, `build.Dockerfile`).
    pub dockerfile_name: String,
    /// The text of the .dockerignore that applies (`<Dockerfile>.dockerignore` or the context's).
    pub dockerignore: Option<String>,
    /// The build context.
    pub context: Arc<dyn LocalSource>,
    /// `--build-context` values by name.
    pub named_contexts: BTreeMap<String, NamedContext>,
    pub build_args: BTreeMap<String, String>,
    pub target: Option<String>,
    /// `--platform`: the target platforms. Empty builds for this machine's; one builds a single image as
    /// ever; several are converted and solved together and exported as one image index.
    pub platforms: Vec<Platform>,
    pub labels: BTreeMap<String, String>,
    /// `-t` names: outputs without names of their own use them.
    pub tags: Vec<String>,
    pub outputs: Vec<OutputSpec>,
    pub secrets: Arc<dyn SecretSource>,
    pub ssh: Arc<dyn SshSource>,
    pub cache: CacheOptions,
    /// Caches to import (`--cache-from`), asked after this machine's own, in order.
    pub cache_from: Vec<CacheFrom>,
    /// Where to export the build's cache (`--cache-to`).
    pub cache_to: Vec<CacheTo>,
    /// The network of RUN steps that do not choose one.
    pub network: sandbox::NetworkMode,
    /// What the caller grants (a daemon intersects it with what it allows).
    pub entitlements: BTreeSet<Entitlement>,
    /// `--add-host` entries for every RUN's /etc/hosts.
    pub add_hosts: Vec<HostIp>,
    /// SOURCE_DATE_EPOCH: timestamps in the image and its layers are clamped to it.
    pub source_date_epoch: Option<i64>,
    /// How many steps run at once (default: four per core, [`solver::default_max_parallelism`]).
    pub max_parallelism: Option<usize>,
    /// `--call`: build, or run the build checks only.
    pub call: crate::check::Call,
    /// `--provenance`, `--sbom`, `--attest`, `--annotation`: what pushed images carry.
    pub attest: crate::attest::AttestOptions,
    /// `--ulimit`, `--shm-size`, `--cgroup-parent`: settings of every RUN step.
    pub run: crate::run_settings::RunSettings,
    /// What makes two builds "the same Dockerfile" for explaining cache misses (with the target): the CLI
    /// gives the Dockerfile's absolute path; `None` uses `dockerfile_name`.
    pub explain_key: Option<String>,
}

impl BuildRequest {
    /// A build of `dockerfile` on `context` with every option at its default: no outputs, no secrets.
    pub fn new(dockerfile: Vec<u8>, context: Arc<dyn LocalSource>) -> BuildRequest {
        BuildRequest {
            dockerfile,
            dockerfile_name: "Dockerfile".into(),
            dockerignore: None,
            context,
            named_contexts: BTreeMap::new(),
            build_args: BTreeMap::new(),
            target: None,
            platforms: Vec::new(),
            labels: BTreeMap::new(),
            tags: Vec::new(),
            outputs: Vec::new(),
            secrets: Arc::new(StaticSecrets::default()),
            ssh: Arc::new(SshSockets::default()),
            cache: CacheOptions::default(),
            cache_from: Vec::new(),
            cache_to: Vec::new(),
            network: sandbox::NetworkMode::Default,
            entitlements: BTreeSet::new(),
            add_hosts: Vec::new(),
            source_date_epoch: None,
            max_parallelism: None,
            call: crate::check::Call::Build,
            attest: crate::attest::AttestOptions::default(),
            run: crate::run_settings::RunSettings::default(),
            explain_key: None,
        }
    }
}
