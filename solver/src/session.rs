//! What a build brings with it, as providers the worker's ops ask: local contexts, secrets and ssh agents.
//! The CLI gives host directories, files and sockets; a daemon will give contexts synced from a remote
//! client and secrets forwarded from it. Nothing from here enters a cache key but content checksums.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::op::BoxFuture;

/// A provider failed: the message says what was asked for, the source why it failed.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct SessionError {
    pub message: String,
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl SessionError {
    pub fn new(message: impl Into<String>) -> SessionError {
        SessionError { message: message.into(), source: None }
    }
}

/// A build context (the main one or a named one): files the solver reads as a directory on this host.
pub trait LocalSource: Send + Sync {
    /// A directory on this host holding at least the files the filters select (`include` empty: all;
    /// `exclude`: .dockerignore patterns). `status(what, current, total)` reports a transfer, if there is
    /// one (`what`: e.g. `transferring context: 12 files`). The path never enters a cache key: keys cover
    /// the files' contents only.
    fn directory<'a>(
        &'a self,
        include: &'a [String],
        exclude: &'a [String],
        status: &'a (dyn Fn(&str, u64, Option<u64>) + Send + Sync),
    ) -> BoxFuture<'a, Result<PathBuf, SessionError>>;
}

/// A directory on this host, read in place.
#[derive(Debug, Clone)]
pub struct LocalDir(pub PathBuf);

impl LocalSource for LocalDir {
    fn directory<'a>(
        &'a self,
        _include: &'a [String],
        _exclude: &'a [String],
        _status: &'a (dyn Fn(&str, u64, Option<u64>) + Send + Sync),
    ) -> BoxFuture<'a, Result<PathBuf, SessionError>> {
        Box::pin(async move {
            if !self.0.is_dir() {
                return Err(SessionError::new(format!("the context directory {} is gone", self.0.display())));
            }
            Ok(self.0.clone())
        })
    }
}

/// Secrets for `RUN --mount=type=secret`, `RUN --secret env=` and http authorization.
pub trait SecretSource: Send + Sync {
    /// The secret's value; `None` when this build has no secret of that id.
    fn secret<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>, SessionError>>;
}

/// Secrets read up front (`--secret id=x,src=...|env=...`).
#[derive(Clone, Default)]
pub struct StaticSecrets(pub BTreeMap<String, Vec<u8>>);

impl std::fmt::Debug for StaticSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Ids only: values never reach a log.
        f.debug_tuple("StaticSecrets").field(&self.0.keys().collect::<Vec<_>>()).finish()
    }
}

impl SecretSource for StaticSecrets {
    fn secret<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>, SessionError>> {
        Box::pin(async move { Ok(self.0.get(id).cloned()) })
    }
}

/// ssh agents for `RUN --mount=type=ssh`.
pub trait SshSource: Send + Sync {
    /// A socket on this host that speaks the agent protocol for `id`; `None` when this build has none.
    fn agent<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<PathBuf>, SessionError>>;
}

/// Agent sockets on this host (`--ssh default=$SSH_AUTH_SOCK`).
#[derive(Debug, Clone, Default)]
pub struct SshSockets(pub BTreeMap<String, PathBuf>);

impl SshSource for SshSockets {
    fn agent<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<PathBuf>, SessionError>> {
        Box::pin(async move { Ok(self.0.get(id).cloned()) })
    }
}
