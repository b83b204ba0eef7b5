//! Credentials from the docker CLI's `config.json` (`$DOCKER_CONFIG/config.json`, else
//! `~/.docker/config.json`): `auths` entries, `credHelpers` per registry and the global `credsStore`,
//! run as `docker-credential-<name> get|store|erase` like the docker CLI does. `rbuild login/logout` write
//! the same file so docker and rbuild share logins.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::{Map, Value};

use crate::reference::DOCKER_HUB;

/// The key docker uses for Docker Hub in `auths` and for helpers.
pub const DOCKER_HUB_AUTH_KEY: &str = "https://index.docker.io/v1/";

/// What a registry login holds.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Credentials {
    pub username: String,
    pub password: String,
    /// An OAuth2 refresh token (docker's `identitytoken`); used instead of the password for tokens.
    pub identity_token: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print secrets.
        f.debug_struct("Credentials").field("username", &self.username).finish_non_exhaustive()
    }
}

/// The errors of reading and writing docker's config.json and running credential helpers.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("invalid docker config {path}: {source}")]
    Parse { path: PathBuf, source: serde_json::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("credential helper docker-credential-{helper} failed for {registry}: {message}")]
    Helper { helper: String, registry: String, message: String },
    #[error("invalid auth entry for {0} in docker config: expected base64 of user:password")]
    BadAuth(String),
}

/// The docker config file and where it lives.
#[derive(Debug, Clone)]
pub struct DockerConfig {
    path: PathBuf,
    doc: Map<String, Value>,
}

/// The `auths`/helper key of a registry (`docker.io` is spelled the legacy way).
pub fn auth_key(registry: &str) -> String {
    if registry == DOCKER_HUB || registry == "index.docker.io" || registry == "registry-1.docker.io" {
        DOCKER_HUB_AUTH_KEY.to_string()
    } else {
        registry.to_string()
    }
}

impl DockerConfig {
    /// `$DOCKER_CONFIG/config.json`, else `$HOME/.docker/config.json`.
    pub fn default_path() -> PathBuf {
        match std::env::var_os("DOCKER_CONFIG").filter(|v| !v.is_empty()) {
            Some(d) => PathBuf::from(d).join("config.json"),
            None => std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default().join(".docker/config.json"),
        }
    }

    /// Loads the file; a missing file is an empty config.
    pub fn load(path: &Path) -> Result<DockerConfig, CredentialError> {
        let doc = match std::fs::read(path) {
            Ok(b) if b.iter().all(u8::is_ascii_whitespace) => Map::new(),
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|source| CredentialError::Parse { path: path.to_path_buf(), source })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Map::new(),
            Err(source) => return Err(CredentialError::Read { path: path.to_path_buf(), source }),
        };
        Ok(DockerConfig { path: path.to_path_buf(), doc })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn helper_for(&self, key: &str) -> Option<String> {
        let per = self.doc.get("credHelpers").and_then(|h| h.get(key)).and_then(Value::as_str);
        per.or_else(|| self.doc.get("credsStore").and_then(Value::as_str)).filter(|s| !s.is_empty()).map(str::to_string)
    }

    /// The credentials for `registry`, if any are configured.
    pub fn get(&self, registry: &str) -> Result<Option<Credentials>, CredentialError> {
        let key = auth_key(registry);
        if let Some(helper) = self.helper_for(&key) {
            return helper_get(&helper, &key);
        }
        let auths = self.doc.get("auths").and_then(Value::as_object);
        let entry = auths.and_then(|a| {
            a.get(&key).or_else(|| {
                // docker also matches entries written with a scheme or a path (`https://host/v1/`).
                a.iter().find(|(k, _)| strip_url(k) == key).map(|(_, v)| v)
            })
        });
        let Some(entry) = entry else { return Ok(None) };
        let mut c = Credentials::default();
        if let Some(auth) = entry.get("auth").and_then(Value::as_str).filter(|s| !s.is_empty()) {
            let raw = B64.decode(auth.trim()).map_err(|_| CredentialError::BadAuth(key.clone()))?;
            let s = String::from_utf8(raw).map_err(|_| CredentialError::BadAuth(key.clone()))?;
            let (u, p) = s.split_once(':').ok_or_else(|| CredentialError::BadAuth(key.clone()))?;
            c.username = u.to_string();
            c.password = p.to_string();
        }
        if let Some(u) = entry.get("username").and_then(Value::as_str) {
            c.username = u.to_string();
        }
        if let Some(p) = entry.get("password").and_then(Value::as_str) {
            c.password = p.to_string();
        }
        c.identity_token = entry.get("identitytoken").and_then(Value::as_str).map(str::to_string);
        if c.username.is_empty() && c.password.is_empty() && c.identity_token.is_none() {
            return Ok(None);
        }
        Ok(Some(c))
    }

    /// Stores a login (through the helper when one is configured), then writes the file atomically.
    pub fn store(&mut self, registry: &str, c: &Credentials) -> Result<(), CredentialError> {
        let key = auth_key(registry);
        if let Some(helper) = self.helper_for(&key) {
            let secret = c.identity_token.clone().unwrap_or_else(|| c.password.clone());
            let input = serde_json::json!({"ServerURL": key, "Username": c.username, "Secret": secret});
            run_helper(&helper, "store", &key, input.to_string().as_bytes())?;
            // docker records an empty entry so `docker logout` finds it.
            self.auths_mut().insert(key, Value::Object(Map::new()));
        } else {
            let mut entry = Map::new();
            entry.insert("auth".into(), Value::String(B64.encode(format!("{}:{}", c.username, c.password))));
            if let Some(t) = &c.identity_token {
                entry.insert("identitytoken".into(), Value::String(t.clone()));
            }
            self.auths_mut().insert(key, Value::Object(entry));
        }
        self.save()
    }

    /// Removes a login; true when there was one.
    pub fn erase(&mut self, registry: &str) -> Result<bool, CredentialError> {
        let key = auth_key(registry);
        if let Some(helper) = self.helper_for(&key) {
            run_helper(&helper, "erase", &key, key.as_bytes())?;
        }
        let existed = self.auths_mut().remove(&key).is_some();
        self.save()?;
        Ok(existed)
    }

    fn auths_mut(&mut self) -> &mut Map<String, Value> {
        let v = self.doc.entry("auths").or_insert_with(|| Value::Object(Map::new()));
        if !v.is_object() {
            *v = Value::Object(Map::new());
        }
        match v {
            Value::Object(m) => m,
            _ => unreachable!("auths was just made an object"),
        }
    }

    fn save(&self) -> Result<(), CredentialError> {
        let err = |source| CredentialError::Write { path: self.path.clone(), source };
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(err)?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(err)?;
        let mut bytes = serde_json::to_vec_pretty(&self.doc).map_err(|e| err(e.into()))?;
        bytes.push(b'\n');
        tmp.write_all(&bytes).map_err(err)?;
        // The file holds secrets: owner-only, like docker writes it.
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file().set_permissions(std::fs::Permissions::from_mode(0o600)).map_err(err)?;
        tmp.as_file().sync_all().map_err(err)?;
        tmp.persist(&self.path).map_err(|e| err(e.error))?;
        Ok(())
    }
}

fn strip_url(k: &str) -> &str {
    let k = k.strip_prefix("https://").or_else(|| k.strip_prefix("http://")).unwrap_or(k);
    k.split('/').next().unwrap_or(k)
}

fn run_helper(helper: &str, verb: &str, registry: &str, input: &[u8]) -> Result<Vec<u8>, CredentialError> {
    let fail = |message: String| CredentialError::Helper {
        helper: helper.to_string(),
        registry: registry.to_string(),
        message,
    };
    let mut child = Command::new(format!("docker-credential-{helper}"))
        .arg(verb)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(format!("cannot run it: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input).map_err(|e| fail(format!("cannot write its input: {e}")))?;
    }
    let out = child.wait_with_output().map_err(|e| fail(e.to_string()))?;
    if !out.status.success() {
        let msg = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
        return Err(fail(if msg.is_empty() { err } else { msg }));
    }
    Ok(out.stdout)
}

fn helper_get(helper: &str, key: &str) -> Result<Option<Credentials>, CredentialError> {
    match run_helper(helper, "get", key, key.as_bytes()) {
        Ok(out) => {
            let v: Value = serde_json::from_slice(&out).map_err(|e| CredentialError::Helper {
                helper: helper.to_string(),
                registry: key.to_string(),
                message: format!("invalid output: {e}"),
            })?;
            let user = v.get("Username").and_then(Value::as_str).unwrap_or_default().to_string();
            let secret = v.get("Secret").and_then(Value::as_str).unwrap_or_default().to_string();
            // docker's convention: a `<token>` user name means the secret is an identity token.
            Ok(Some(if user == "<token>" {
                Credentials { username: String::new(), password: String::new(), identity_token: Some(secret) }
            } else {
                Credentials { username: user, password: secret, identity_token: None }
            }))
        }
        // Helpers answer "credentials not found in native keychain" for unknown registries.
        Err(CredentialError::Helper { message, .. }) if message.contains("not found") => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_logout_round_trip_keeps_other_fields() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(&path, r#"{"psFormat":"table","auths":{"https://ghcr.io/v1/":{"auth":"dTpw"}}}"#).unwrap();
        let mut c = DockerConfig::load(&path).unwrap();
        let got = c.get("ghcr.io").unwrap().unwrap();
        assert_eq!((got.username.as_str(), got.password.as_str()), ("u", "p"));
        let creds = Credentials { username: "me".into(), password: "s3cret".into(), identity_token: None };
        c.store("docker.io", &creds).unwrap();
        let shown = format!("{creds:?}");
        let again = DockerConfig::load(&path).unwrap();
        assert_eq!(again.get("docker.io").unwrap(), Some(creds));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("https://index.docker.io/v1/") && text.contains("psFormat"), "{text}");
        let mut again = again;
        assert!(again.erase("docker.io").unwrap());
        assert_eq!(DockerConfig::load(&path).unwrap().get("docker.io").unwrap(), None);
        assert!(!shown.contains("s3cret"));
    }

    #[test]
    fn credential_helper_is_run() {
        let dir = tempfile::tempdir().unwrap();
        let helper = dir.path().join("docker-credential-rbuildtest");
        std::fs::write(
            &helper,
            "#!/bin/sh\nread host\n[ \"$1\" = get ] && [ \"$host\" = reg.test ] && \
             echo '{\"Username\":\"hu\",\"Secret\":\"hs\"}' && exit 0\necho 'credentials not found'; exit 1\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(&path, r#"{"credHelpers":{"reg.test":"rbuildtest","other.test":"rbuildtest"}}"#).unwrap();
        let old = std::env::var_os("PATH").unwrap_or_default();
        let mut paths = vec![dir.path().to_path_buf()];
        paths.extend(std::env::split_paths(&old));
        // Only this test changes PATH, and it only prepends.
        std::env::set_var("PATH", std::env::join_paths(paths).unwrap());
        let c = DockerConfig::load(&path).unwrap();
        let got = c.get("reg.test").unwrap().unwrap();
        assert_eq!((got.username.as_str(), got.password.as_str()), ("hu", "hs"));
        assert_eq!(c.get("other.test").unwrap(), None);
        assert_eq!(c.get("no-helper.test").unwrap(), None);
    }
}
