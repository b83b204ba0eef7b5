//! A daemon as one of a fleet: the fleet's cache (`--cache-backend type=registry,ref=REPOSITORY`, or
//! `[fleet] cache-backend` in rbuild.toml) that every build imports from and exports to, so that any daemon
//! can continue any project. Each project (context, Dockerfile path, target: [`project_key`]) has a tag of
//! its own in the repository, so projects never overwrite each other's record; and the state a fleet sees of it ([`Fleet`]: readiness, drain, admission,
//! metrics).
//!
//! ```toml
//! [fleet]
//! cache-backend = "type=registry,ref=registry.example.com/rbuild/cache"
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;

use engine::cache::{CacheFrom, CacheTo};
use engine::BuildRequest;
use serde::Deserialize;

use crate::health::Health;
use crate::metrics::Metrics;

/// Why the fleet's settings are wrong.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("invalid [fleet] table in {path}: {source}")]
    Parse { path: PathBuf, source: Box<toml::de::Error> },
    #[error("{origin}: {message}")]
    Spec { origin: String, message: String },
}

/// The `[fleet]` table of rbuild.toml (other tables belong to other parts and are ignored here).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FleetConfig {
    pub cache_backend: Option<String>,
}

#[derive(Deserialize)]
struct File {
    #[serde(default)]
    fleet: FleetConfig,
}

impl FleetConfig {
    /// The table from `path`; a missing file is an empty table unless `required` (`--config`).
    pub fn load(path: &Path, required: bool) -> Result<FleetConfig, FleetError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => return Ok(FleetConfig::default()),
            Err(source) => return Err(FleetError::Read { path: path.to_path_buf(), source }),
        };
        FleetConfig::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<FleetConfig, FleetError> {
        let f: File = toml::from_str(text)
            .map_err(|source| FleetError::Parse { path: path.to_path_buf(), source: Box::new(source) })?;
        Ok(f.fleet)
    }
}

/// The project a build belongs to, as the client's `--host` routing and the fleet cache's tags see it:
/// the client's key of the context directory, the Dockerfile path and the target (length-prefixed, hashed).
pub fn project_key(start: &crate::proto::BuildStart) -> String {
    use sha2::{Digest as _, Sha256};
    let mut h = Sha256::new();
    for part in [start.context_key.as_str(), &start.dockerfile_name, start.target.as_deref().unwrap_or("")] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    hex::encode(h.finalize())
}

/// The fleet's cache: where every build imports from and exports to.
#[derive(Debug, Clone)]
pub struct FleetCache {
    /// The repository; a project's record is its tag `p-<first 24 hex digits of the project key>`.
    pub reference: String,
    to: CacheTo,
}

impl FleetCache {
    /// Parses `type=registry,ref=REF[,mode=...][,compression=...][,image-manifest=...][,ignore-error=...]`
    /// (`--cache-to`'s keys); `origin` names where it was written for errors. The export is `mode=max`
    /// and `ignore-error=true` unless the spec says otherwise: a fleet cache that is down slows builds
    /// but fails none.
    pub fn parse(origin: &str, spec: &str) -> Result<FleetCache, FleetError> {
        let err = |message: String| FleetError::Spec { origin: origin.to_string(), message };
        let keys: Vec<&str> = spec.split(',').filter_map(|f| f.split_once('=').map(|(k, _)| k.trim())).collect();
        if !keys.contains(&"ref") {
            return Err(err(format!("{spec:?}: the fleet cache is type=registry,ref=REGISTRY/REPOSITORY[:TAG]")));
        }
        let mut to_spec = spec.to_string();
        for (key, default) in [("mode", "max"), ("ignore-error", "true")] {
            if !keys.contains(&key) {
                to_spec.push_str(&format!(",{key}={default}"));
            }
        }
        let to = engine::cache::parse_cache_to(&to_spec).map_err(|e| err(e.to_string()))?;
        let CacheTo::Registry { reference, .. } = &to else {
            return Err(err(format!("{spec:?}: the fleet cache must be type=registry (every daemon reaches it)")));
        };
        let reference = reference.clone();
        registry::reference::Reference::parse(&reference).map_err(|e| err(format!("ref={reference}: {e}")))?;
        let last = reference.rsplit('/').next().unwrap_or_default();
        if last.contains(':') || reference.contains('@') {
            return Err(err(format!(
                "ref={reference}: name a repository without tag or digest (each project gets a tag of its own                  there)"
            )));
        }
        Ok(FleetCache { reference, to })
    }

    /// The project's record in the fleet cache: `REPOSITORY:p-<key prefix>`.
    pub fn reference_for(&self, project: &str) -> String {
        format!("{}:p-{}", self.reference, &project[..project.len().min(24)])
    }

    /// Adds the fleet cache of `project` to `req`: imported after the request's own caches, exported
    /// unless the request exports to the same reference itself (its settings win).
    pub fn apply(&self, req: &mut BuildRequest, project: &str) {
        let reference = self.reference_for(project);
        let same = |r: &str| r == reference;
        if !req.cache_from.iter().any(|c| matches!(c, CacheFrom::Registry { reference } if same(reference))) {
            req.cache_from.push(CacheFrom::Registry { reference: reference.clone() });
        }
        if !req.cache_to.iter().any(|c| matches!(c, CacheTo::Registry { reference, .. } if same(reference))) {
            let mut to = self.to.clone();
            if let CacheTo::Registry { reference: r, .. } = &mut to {
                *r = reference.clone();
            }
            req.cache_to.push(to);
        }
    }
}

/// What the fleet sees of this daemon, shared by the gRPC service, the HTTP health listener and `serve`.
#[derive(Default)]
pub struct Fleet {
    pub cache: Option<FleetCache>,
    pub health: Health,
    pub metrics: Arc<Metrics>,
}

impl Fleet {
    pub fn new(cache: Option<FleetCache>, max_builds: Option<usize>) -> Fleet {
        Fleet { cache, health: Health::new(max_builds), metrics: Arc::default() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fleet_cache_exports_max_and_ignores_errors_by_default() {
        let c = FleetCache::parse("--cache-backend", "type=registry,ref=127.0.0.1:5000/cache").unwrap();
        assert_eq!(c.reference, "127.0.0.1:5000/cache");
        let CacheTo::Registry { opts, .. } = &c.to else { panic!() };
        assert_eq!(opts.mode, engine::cache::Mode::Max);
        assert!(opts.ignore_error);
        let c = FleetCache::parse("x", "type=registry,ref=r.example/c,mode=min,ignore-error=false").unwrap();
        let CacheTo::Registry { opts, .. } = &c.to else { panic!() };
        assert_eq!(opts.mode, engine::cache::Mode::Min);
        assert!(!opts.ignore_error);
    }

    #[test]
    fn a_bad_fleet_cache_names_where_it_was_set() {
        for (spec, want) in [
            ("type=local,dest=/x", "type=registry,ref="),
            ("type=registry,ref=/cache", "ref="),
            ("type=registry,ref=r/c,mode=most", "mode"),
            ("type=inline,ref=r/c", "type=registry"),
            ("type=registry,ref=r.example/c:latest", "without tag"),
        ] {
            let e = FleetCache::parse("/etc/rbuild/rbuild.toml [fleet]", spec).unwrap_err().to_string();
            assert!(e.starts_with("/etc/rbuild/rbuild.toml [fleet]: "), "{spec}: {e}");
            assert!(e.contains(want), "{spec}: {e}");
        }
    }

    #[test]
    fn the_request_keeps_its_own_export_to_the_fleet_ref() {
        let src: Arc<dyn engine::LocalSource> = Arc::new(solver::session::LocalDir(std::env::temp_dir()));
        let mut req = BuildRequest::new(b"FROM scratch".to_vec(), src);
        let c = FleetCache::parse("x", "type=registry,ref=r.example/c").unwrap();
        let project = "0123456789abcdef0123456789abcdef";
        c.apply(&mut req, project);
        assert_eq!((req.cache_from.len(), req.cache_to.len()), (1, 1));
        assert_eq!(req.cache_from[0].describe(), "r.example/c:p-0123456789abcdef01234567");
        let mut req2 = BuildRequest::new(b"FROM scratch".to_vec(), req.context.clone());
        let own = "type=registry,ref=r.example/c:p-0123456789abcdef01234567,mode=min";
        req2.cache_to.push(engine::cache::parse_cache_to(own).unwrap());
        c.apply(&mut req2, project);
        assert_eq!((req2.cache_from.len(), req2.cache_to.len()), (1, 1));
        let CacheTo::Registry { opts, .. } = &req2.cache_to[0] else { panic!() };
        assert_eq!(opts.mode, engine::cache::Mode::Min);
    }

    /// The rbuild.toml files of deploy/kubernetes load, and their fleet cache is valid.
    #[test]
    fn the_kubernetes_rbuild_toml_files_load() {
        for (path, text) in [
            ("deploy/kubernetes/base/rbuild.toml", include_str!("../../deploy/kubernetes/base/rbuild.toml")),
            (
                "deploy/kubernetes/overlays/example/rbuild.toml",
                include_str!("../../deploy/kubernetes/overlays/example/rbuild.toml"),
            ),
        ] {
            let spec = FleetConfig::parse(Path::new(path), text).unwrap().cache_backend.expect(path);
            FleetCache::parse(path, &spec).unwrap();
            registry::config::Config::from_toml(Path::new(path), text).unwrap();
        }
    }

    #[test]
    fn the_fleet_table_is_read_beside_the_registries() {
        let p = Path::new("/etc/rbuild/rbuild.toml");
        let text =
            "[registry.\"r.example\"]\nhttp = true\n[fleet]\ncache-backend = \"type=registry,ref=r.example/c\"\n";
        assert_eq!(
            FleetConfig::parse(p, text).unwrap().cache_backend.as_deref(),
            Some("type=registry,ref=r.example/c")
        );
        assert!(FleetConfig::parse(p, "[registry.\"a\"]\n").unwrap().cache_backend.is_none());
        let e = FleetConfig::parse(p, "[fleet]\ncache = 1\n").unwrap_err().to_string();
        assert!(e.starts_with("invalid [fleet] table in /etc/rbuild/rbuild.toml"), "{e}");
    }
}
