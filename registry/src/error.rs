//! The errors of talking to registries and of the local image store.

use oci_spec::image::Digest;

use crate::auth::CredentialError;
use crate::config::ConfigError;
use crate::manifest::ManifestError;
use crate::reference::ReferenceError;

/// Everything the distribution client and the image store can fail with.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{registry}: authentication required for {scope}{}: {message}", hint(.anonymous))]
    Unauthorized { registry: String, scope: String, anonymous: bool, message: String },
    #[error("{registry}: access denied for {scope}: {message}")]
    Denied { registry: String, scope: String, message: String },
    #[error("{what} not found in {registry}{}", detail(.message))]
    NotFound { registry: String, what: String, message: String },
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch { what: String, expected: Digest, actual: Digest },
    #[error("{method} {url}: unexpected status {status}{}", detail(.message))]
    Status { method: String, url: String, status: u16, message: String },
    /// The request got no answer (connection refused, DNS, TLS, timeout, a broken body): the cause is
    /// in the message, not as a source, so it is printed once.
    #[error("{method} {url}: {}", transport_cause(.cause))]
    Transport { method: String, url: String, cause: reqwest::Error },
    #[error("cannot fetch a token from {realm} for {scope}: {message}")]
    Token { realm: String, scope: String, message: String },
    #[error("cannot set up a client for {host}: {message}")]
    Tls { host: String, message: String },
    #[error("{0}")]
    Protocol(String),
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Credentials(#[from] CredentialError),
    #[error(transparent)]
    Content(#[from] snapshotter::content::ContentError),
    #[error(transparent)]
    Meta(#[from] snapshotter::meta::MetaError),
    #[error("image {0} not found in the local image store")]
    NoSuchImage(String),
    #[error("invalid image config {digest}: {source}")]
    ImageConfig { digest: Digest, source: llb::image::ImageError },
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
    #[error("{0}")]
    Archive(String),
    #[error("unpacking layer {layer} of {reference}: {source}")]
    Unpack { reference: String, layer: Digest, source: Box<snapshotter::apply::ApplyError> },
    #[error(transparent)]
    Snapshot(Box<snapshotter::snapshot::SnapshotError>),
    #[error(transparent)]
    Diff(Box<snapshotter::diff::DiffError>),
    /// Every mirror and the origin failed; `unreachable` when none of them answered (see
    /// [`RegistryError::is_unreachable`]).
    #[error("pulling {reference}: every endpoint failed: {errors}")]
    AllEndpointsFailed { reference: String, errors: String, unreachable: bool },
}

impl From<snapshotter::snapshot::SnapshotError> for RegistryError {
    fn from(e: snapshotter::snapshot::SnapshotError) -> Self {
        RegistryError::Snapshot(Box::new(e))
    }
}

impl From<snapshotter::diff::DiffError> for RegistryError {
    fn from(e: snapshotter::diff::DiffError) -> Self {
        RegistryError::Diff(Box::new(e))
    }
}

fn hint(anonymous: &bool) -> &'static str {
    if *anonymous {
        " (no credentials configured: run `rbuild login`)"
    } else {
        ""
    }
}

fn detail(message: &str) -> String {
    if message.is_empty() {
        String::new()
    } else {
        format!(": {message}")
    }
}

impl RegistryError {
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> RegistryError {
        let context = context.into();
        move |source| RegistryError::Io { context, source }
    }

    /// Whether another endpoint (a mirror's fallback) might succeed where this failed.
    pub fn is_not_found(&self) -> bool {
        matches!(self, RegistryError::NotFound { .. })
    }

    /// Whether the registry could not be asked at all (no connection, a timeout, a server error), as
    /// opposed to an answer (not found, denied): then a copy the store already has may stand in.
    pub fn is_unreachable(&self) -> bool {
        match self {
            RegistryError::Transport { .. } => true,
            RegistryError::Status { status, .. } => *status >= 500 || *status == 429,
            RegistryError::AllEndpointsFailed { unreachable, .. } => *unreachable,
            _ => false,
        }
    }
}

/// reqwest's message without the URL (the variant names it), then each cause below it: "error sending
/// request: client error (Connect): tcp connect error: Connection refused (os error 111)".
fn transport_cause(e: &reqwest::Error) -> String {
    let mut top = e.to_string();
    if let Some(url) = e.url() {
        top = top.replace(&format!(" for url ({url})"), "");
    }
    let mut parts = vec![top];
    let mut next = std::error::Error::source(e);
    while let Some(cause) = next {
        let text = cause.to_string();
        if parts.last() != Some(&text) {
            parts.push(text);
        }
        next = cause.source();
    }
    parts.join(": ")
}

/// The message of a distribution-spec error body (`{"errors":[{"code":..,"message":..}]}`), else the
/// start of the body.
pub fn error_body_message(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Body {
        errors: Vec<Item>,
    }
    #[derive(serde::Deserialize)]
    struct Item {
        code: Option<String>,
        message: Option<String>,
    }
    if let Ok(b) = serde_json::from_slice::<Body>(body) {
        let parts: Vec<String> = b
            .errors
            .into_iter()
            .map(|i| match (i.code, i.message) {
                (Some(c), Some(m)) => format!("{c}: {m}"),
                (Some(c), None) => c,
                (None, Some(m)) => m,
                (None, None) => String::new(),
            })
            .collect();
        return parts.join("; ");
    }
    let s = String::from_utf8_lossy(body);
    s.trim().chars().take(200).collect()
}
