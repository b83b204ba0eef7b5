//! Source ops: where a build's content enters the graph (BuildKit's `SourceOp` identifiers and attrs).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::serde_util::is_default;
use crate::{Digest, Platform};

/// How an image reference is resolved (BuildKit `image.resolvemode`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResolveMode {
    /// Use a local copy when there is one, else pull.
    #[default]
    Default,
    /// Always ask the registry (`--pull`).
    Pull,
    /// Only use the local image store.
    Local,
}

/// How a local context is compared with the last transfer (BuildKit `local.differ`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LocalDiffer {
    /// Compare file metadata (size, mtime, mode) and re-send changed files.
    #[default]
    Metadata,
    /// Send everything every time.
    None,
}

/// A source of content. The fields marked "non-identity" are blanked by
/// [`SourceOp::cache_identity`](crate::Vertex::cache_identity): they change how content is fetched,
/// never what it is.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceOp {
    /// `docker-image://`: a base image.
    Image {
        /// Normalised reference (`docker.io/library/alpine:3.20`, maybe with `@sha256:`), see
        /// [`normalize_reference`](crate::normalize_reference).
        reference: String,
        /// The platform to resolve in a multi-platform index.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        platform: Option<Platform>,
        /// Non-identity: the solver keys an image by its resolved manifest digest.
        #[serde(default, skip_serializing_if = "is_default")]
        resolve_mode: ResolveMode,
        /// Use only the first N layers (BuildKit `image.layerlimit`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        layer_limit: Option<u32>,
    },
    /// `local://`: a directory sent by the client (the build context, a named context).
    Local {
        name: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        include_patterns: Vec<String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        exclude_patterns: Vec<String>,
        /// Paths whose symlinks are followed and whose targets are sent too.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        follow_paths: Vec<String>,
        /// Non-identity: a hint to share the transfer cache between sources with different filters.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        shared_key_hint: Option<String>,
        /// Non-identity: how the transfer detects changes.
        #[serde(default, skip_serializing_if = "is_default")]
        differ: LocalDiffer,
    },
    /// `git://`: a repository at a reference.
    Git {
        remote: String,
        /// Branch, tag or commit; `None` is the remote's HEAD.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reference: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        subdir: Option<String>,
        #[serde(default, skip_serializing_if = "is_default")]
        keep_git_dir: bool,
        /// Expected commit (ADD --checksum for git).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        checksum: Option<String>,
        /// Non-identity: secret id holding a token for HTTPS auth (BuildKit `git.authtokensecret`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        auth_token_secret: Option<String>,
        /// Non-identity: secret id holding an Authorization header (`git.authheadersecret`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        auth_header_secret: Option<String>,
        /// Non-identity: known_hosts lines for SSH remotes (`git.knownsshhosts`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        known_ssh_hosts: Option<String>,
        /// Non-identity: ssh agent id to forward for SSH remotes (`git.mountsshsock`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mount_ssh_sock: Option<String>,
    },
    /// `https://` / `http://`: one downloaded file.
    Http {
        url: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        checksum: Option<Digest>,
        /// Name of the file in the result; default: from the URL or Content-Disposition.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        filename: Option<String>,
        /// Permission bits; default 0o600 as BuildKit.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        perm: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        uid: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        gid: Option<u32>,
        /// Extra request headers (BuildKit `http.header.<name>`); they can change the response, so
        /// they are identity.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        headers: BTreeMap<String, String>,
        /// Non-identity: secret id holding an Authorization header (`http.authheadersecret`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        auth_header_secret: Option<String>,
    },
}

impl SourceOp {
    /// An image source with the default resolve mode; `reference` must already be normalised.
    pub fn image(reference: impl Into<String>, platform: Option<Platform>) -> SourceOp {
        SourceOp::Image { reference: reference.into(), platform, resolve_mode: ResolveMode::Default, layer_limit: None }
    }

    /// A local source without filters.
    pub fn local(name: impl Into<String>) -> SourceOp {
        SourceOp::Local {
            name: name.into(),
            include_patterns: Vec::new(),
            exclude_patterns: Vec::new(),
            follow_paths: Vec::new(),
            shared_key_hint: None,
            differ: LocalDiffer::Metadata,
        }
    }

    /// BuildKit-style identifier, for descriptions and dot labels (`docker-image://...`, `local://...`).
    pub fn identifier(&self) -> String {
        match self {
            SourceOp::Image { reference, .. } => format!("docker-image://{reference}"),
            SourceOp::Local { name, .. } => format!("local://{name}"),
            SourceOp::Git { remote, reference, .. } => match reference {
                Some(r) => format!("git://{remote}#{r}"),
                None => format!("git://{remote}"),
            },
            SourceOp::Http { url, .. } => url.clone(),
        }
    }

    /// Blanks the non-identity fields (see each field's documentation).
    pub(crate) fn blank_non_identity(&mut self) {
        match self {
            SourceOp::Image { resolve_mode, .. } => *resolve_mode = ResolveMode::Default,
            SourceOp::Local { shared_key_hint, differ, .. } => {
                *shared_key_hint = None;
                *differ = LocalDiffer::default();
            }
            SourceOp::Git { auth_token_secret, auth_header_secret, known_ssh_hosts, mount_ssh_sock, .. } => {
                *auth_token_secret = None;
                *auth_header_secret = None;
                *known_ssh_hosts = None;
                *mount_ssh_sock = None;
            }
            SourceOp::Http { auth_header_secret, .. } => *auth_header_secret = None,
        }
    }
}
