//! Named builders: `--builder NAME` (or `BUILDX_BUILDER`) picks a daemon from rbuild.toml, as buildx picks
//! a builder instance or docker a context:
//!
//! ```toml
//! [builders.ci]
//! host = "tcp://10.0.0.5:1234"          # what --host takes: unix://PATH, tcp://HOST:PORT, a fleet
//! tlscacert = "/etc/rbuild/ca.pem"      # --tlscacert, --tlscert, --tlskey: all three or none
//! tlscert = "/etc/rbuild/client.pem"
//! tlskey = "/etc/rbuild/client-key.pem"
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::TlsFiles;

/// Why the builders of rbuild.toml cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum BuildersError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("invalid [builders] table in {path}: {source}")]
    Parse { path: PathBuf, source: Box<toml::de::Error> },
    #[error("[builders.{name}] in {path}: TLS needs all three of tlscacert, tlscert and tlskey")]
    PartialTls { name: String, path: PathBuf },
}

/// One `[builders.NAME]` table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Builder {
    /// The daemon's address, as `--host` takes it.
    pub host: String,
    pub tlscacert: Option<PathBuf>,
    pub tlscert: Option<PathBuf>,
    pub tlskey: Option<PathBuf>,
}

#[derive(Deserialize)]
struct File {
    #[serde(default)]
    builders: BTreeMap<String, Builder>,
}

/// The `[builders]` of rbuild.toml (other tables belong to other parts and are ignored here).
#[derive(Debug, Clone, Default)]
pub struct Builders {
    path: PathBuf,
    builders: BTreeMap<String, Builder>,
}

impl Builders {
    /// The tables of `path`; a missing file has none unless `required` (`--config`).
    pub fn load(path: &Path, required: bool) -> Result<Builders, BuildersError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
                return Ok(Builders { path: path.to_path_buf(), builders: BTreeMap::new() })
            }
            Err(source) => return Err(BuildersError::Read { path: path.to_path_buf(), source }),
        };
        Builders::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Builders, BuildersError> {
        let f: File = toml::from_str(text)
            .map_err(|source| BuildersError::Parse { path: path.to_path_buf(), source: Box::new(source) })?;
        Ok(Builders { path: path.to_path_buf(), builders: f.builders })
    }

    /// The file the tables come from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The builder `name`, if the file defines it.
    pub fn get(&self, name: &str) -> Option<&Builder> {
        self.builders.get(name)
    }

    /// The names the file defines.
    pub fn names(&self) -> Vec<&str> {
        self.builders.keys().map(String::as_str).collect()
    }

    /// The TLS files of builder `name`: all three or none.
    pub fn tls(&self, name: &str) -> Result<Option<TlsFiles>, BuildersError> {
        let Some(b) = self.get(name) else { return Ok(None) };
        match (&b.tlscacert, &b.tlscert, &b.tlskey) {
            (Some(ca), Some(cert), Some(key)) => {
                Ok(Some(TlsFiles { ca: ca.clone(), cert: cert.clone(), key: key.clone() }))
            }
            (None, None, None) => Ok(None),
            _ => Err(BuildersError::PartialTls { name: name.to_string(), path: self.path.clone() }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_builders_from_rbuild_toml() {
        let text = r#"
[registry."docker.io"]
mirrors = ["127.0.0.1:5555"]

[builders.ci]
host = "tcp://10.0.0.5:1234"
tlscacert = "/ca.pem"
tlscert = "/c.pem"
tlskey = "/k.pem"

[builders.local]
host = "unix:///run/rbuild/rbuild.sock"
"#;
        let b = Builders::parse(Path::new("/etc/rbuild/rbuild.toml"), text).unwrap();
        assert_eq!(b.names(), ["ci", "local"]);
        assert_eq!(b.get("ci").unwrap().host, "tcp://10.0.0.5:1234");
        assert_eq!(b.tls("ci").unwrap().unwrap().ca, PathBuf::from("/ca.pem"));
        assert!(b.tls("local").unwrap().is_none());
        assert!(b.get("other").is_none());

        let partial = "[builders.x]\nhost = \"tcp://h:1\"\ntlscert = \"/c.pem\"\n";
        let e = Builders::parse(Path::new("/r.toml"), partial).unwrap().tls("x").unwrap_err().to_string();
        assert_eq!(e, "[builders.x] in /r.toml: TLS needs all three of tlscacert, tlscert and tlskey");
        let e = Builders::parse(Path::new("/r.toml"), "[builders.x]\nhots = \"tcp://h:1\"\n").unwrap_err();
        assert!(e.to_string().starts_with("invalid [builders] table in /r.toml"), "{e}");
        assert!(Builders::load(Path::new("/nonexistent/rbuild.toml"), false).unwrap().names().is_empty());
        assert!(Builders::load(Path::new("/nonexistent/rbuild.toml"), true).is_err());
    }
}
