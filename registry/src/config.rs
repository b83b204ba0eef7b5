//! The registry configuration (`rbuild.toml`), with buildkitd.toml's `[registry."host"]` keys so a
//! BuildKit user's file works unchanged:
//!
//! ```toml
//! [registry."docker.io"]
//! mirrors = ["127.0.0.1:5000"]
//! [registry."127.0.0.1:5000"]
//! http = true
//! insecure = true
//! ca = ["/etc/certs/ca.pem"]
//! [[registry."127.0.0.1:5000".keypair]]
//! key = "/etc/certs/client.key"
//! cert = "/etc/certs/client.pem"
//! ```

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::reference::{DOCKER_HUB, DOCKER_HUB_HOST};

/// The errors of loading the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read registry configuration {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("invalid registry configuration {path}: {source}")]
    Parse { path: PathBuf, source: Box<toml::de::Error> },
}

/// The whole file; keys other than `registry` belong to other parts and are ignored here.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Config {
    #[serde(default)]
    pub registry: BTreeMap<String, HostConfig>,
}

/// One `[registry."host"]` table.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct HostConfig {
    /// Hosts tried in order before the origin (`host[:port][/path-prefix]`).
    #[serde(default)]
    pub mirrors: Vec<String>,
    /// Plain http instead of https.
    #[serde(default)]
    pub http: Option<bool>,
    /// Accept any TLS certificate.
    #[serde(default)]
    pub insecure: Option<bool>,
    /// Extra CA certificates (PEM files) to trust.
    #[serde(default)]
    pub ca: Vec<PathBuf>,
    /// Client certificates.
    #[serde(default)]
    pub keypair: Vec<KeyPair>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct KeyPair {
    pub key: PathBuf,
    pub cert: PathBuf,
}

/// One place to send requests for a registry: the origin or a mirror.
#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    /// `host[:port]` as used in the URL.
    pub host: String,
    /// A path prefix before `/v2/` (mirrors may sit under one).
    pub path_prefix: String,
    pub http: bool,
    pub insecure: bool,
    pub ca: Vec<PathBuf>,
    pub keypair: Vec<KeyPair>,
    /// A mirror (pull only) or the origin.
    pub mirror: bool,
}

impl Endpoint {
    /// `scheme://host/prefix/v2/`
    pub fn base_url(&self) -> String {
        let scheme = if self.http { "http" } else { "https" };
        format!("{scheme}://{}{}/v2/", self.host, self.path_prefix)
    }
}

impl Config {
    /// Parses a TOML document.
    pub fn from_toml(path: &Path, text: &str) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|source| ConfigError::Parse { path: path.to_path_buf(), source: Box::new(source) })
    }

    /// Loads `path`; a missing file is an empty configuration unless `required`.
    pub fn load(path: &Path, required: bool) -> Result<Config, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Config::from_toml(path, &text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => Ok(Config::default()),
            Err(source) => Err(ConfigError::Read { path: path.to_path_buf(), source }),
        }
    }

    /// The file to use: `explicit` (`--config`), else `RBUILD_CONFIG`, else `/etc/rbuild/rbuild.toml` for
    /// root and `$XDG_CONFIG_HOME/rbuild/rbuild.toml` (or `~/.config/...`) for others. The bool says
    /// whether the user named it (then it must exist).
    pub fn default_path(explicit: Option<&Path>, is_root: bool) -> Option<(PathBuf, bool)> {
        if let Some(p) = explicit {
            return Some((p.to_path_buf(), true));
        }
        if let Some(p) = std::env::var_os("RBUILD_CONFIG").filter(|v| !v.is_empty()) {
            return Some((PathBuf::from(p), true));
        }
        if is_root {
            return Some((PathBuf::from("/etc/rbuild/rbuild.toml"), false));
        }
        let base = std::env::var_os("XDG_CONFIG_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
        Some((base.join("rbuild").join("rbuild.toml"), false))
    }

    /// Where to pull `registry` from, in order: its mirrors, then the origin.
    pub fn pull_endpoints(&self, registry: &str) -> Vec<Endpoint> {
        let mut out = Vec::new();
        if let Some(h) = self.registry.get(registry) {
            for m in &h.mirrors {
                let (host, prefix) = match m.split_once('/') {
                    Some((h, p)) => (h.to_string(), format!("/{}", p.trim_matches('/'))),
                    None => (m.to_string(), String::new()),
                };
                let mut e = self.endpoint_for_host(&host);
                e.path_prefix = prefix;
                e.mirror = true;
                out.push(e);
            }
        }
        out.push(self.origin(registry));
        out
    }

    /// Where pushes go: the origin only.
    pub fn origin(&self, registry: &str) -> Endpoint {
        let host = if registry == DOCKER_HUB { DOCKER_HUB_HOST } else { registry };
        let mut e = self.endpoint_for_host(host);
        // A docker.io table configures the Hub's API host too.
        if registry != host {
            if let Some(h) = self.registry.get(registry) {
                apply(&mut e, h);
            }
        }
        e
    }

    fn endpoint_for_host(&self, host: &str) -> Endpoint {
        let mut e = Endpoint {
            host: host.to_string(),
            path_prefix: String::new(),
            http: is_loopback(host),
            insecure: false,
            ca: Vec::new(),
            keypair: Vec::new(),
            mirror: false,
        };
        if let Some(h) = self.registry.get(host) {
            apply(&mut e, h);
        }
        e
    }
}

fn apply(e: &mut Endpoint, h: &HostConfig) {
    match h.http {
        Some(v) => e.http = v,
        // Configuring TLS material for a host means it speaks TLS, loopback or not.
        None if !h.ca.is_empty() || !h.keypair.is_empty() => e.http = false,
        None => {}
    }
    if let Some(v) = h.insecure {
        e.insecure = v;
    }
    e.ca.extend(h.ca.iter().cloned());
    e.keypair.extend(h.keypair.iter().cloned());
}

/// Like docker: registries on loopback addresses are reached over plain http without configuration.
pub fn is_loopback(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(rest),
        None => {
            host.rsplit_once(':').map_or(host, |(h, p)| if p.bytes().all(|b| b.is_ascii_digit()) { h } else { host })
        }
    };
    name == "localhost" || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buildkitd_keys_and_mirrors() {
        let text = r#"
debug = true
[registry."docker.io"]
mirrors = ["127.0.0.1:5001", "mirror.example.com/hub"]
[registry."mirror.example.com"]
ca = ["/ca.pem"]
[registry."127.0.0.1:5002"]
http = false
insecure = true
[[registry."127.0.0.1:5002".keypair]]
key = "/k"
cert = "/c"
"#;
        let c = Config::from_toml(Path::new("rbuild.toml"), text).unwrap();
        let e = c.pull_endpoints("docker.io");
        assert_eq!(e.len(), 3);
        assert_eq!(e[0].base_url(), "http://127.0.0.1:5001/v2/");
        assert!(e[0].mirror);
        assert_eq!(e[1].base_url(), "https://mirror.example.com/hub/v2/");
        assert_eq!(e[1].ca, vec![PathBuf::from("/ca.pem")]);
        assert_eq!(e[2].base_url(), "https://registry-1.docker.io/v2/");
        assert!(!e[2].mirror);
        let o = c.origin("127.0.0.1:5002");
        assert!(!o.http && o.insecure);
        assert_eq!(o.keypair.len(), 1);
        assert!(c.origin("localhost:5000").http);
        let tls = Config::from_toml(Path::new("t"), "[registry.\"127.0.0.1:5003\"]\nca = [\"/ca.pem\"]").unwrap();
        assert!(!tls.origin("127.0.0.1:5003").http);
        assert!(c.origin("[::1]:5000").http);
        assert!(!c.origin("ghcr.io").http);
    }

    #[test]
    fn bad_toml_names_the_file() {
        let e = Config::from_toml(Path::new("/x/rbuild.toml"), "[registry.\"a\"]\nmirrors = 3").unwrap_err();
        assert!(e.to_string().starts_with("invalid registry configuration /x/rbuild.toml"), "{e}");
    }
}
