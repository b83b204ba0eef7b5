//! The image config a build produces and a base image provides: Docker's image JSON
//! (`application/vnd.docker.container.image.v1+json`, a superset of the OCI image config).
//!
//! Field names follow Docker: lower-case at the top level, PascalCase inside `config`. Optional fields
//! are left out when unset (Go's `omitempty`). Every level has a flattened `extra` map, so fields this
//! model does not know (`container_config`, `docker_version`, `Hostname`, ...) survive a round trip.

mod config;
mod time;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::serde_util::is_default;
use crate::{Digest, Platform};

pub use config::{Healthcheck, ImageConfig};
pub use time::{parse_rfc3339, rfc3339};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Image {
    /// RFC 3339 creation time, kept as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    #[serde(default)]
    pub architecture: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(default)]
    pub os: String,
    #[serde(rename = "os.version", default, skip_serializing_if = "Option::is_none")]
    pub os_version: Option<String>,
    #[serde(rename = "os.features", default, skip_serializing_if = "Option::is_none")]
    pub os_features: Option<Vec<String>>,
    #[serde(default)]
    pub config: ImageConfig,
    #[serde(default)]
    pub rootfs: RootFs,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<History>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The layer chain by uncompressed digest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RootFs {
    /// Always `layers`.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub diff_ids: Vec<Digest>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Default for RootFs {
    fn default() -> Self {
        RootFs { kind: "layers".to_string(), diff_ids: Vec::new(), extra: Map::new() }
    }
}

/// One build step. `empty_layer` steps (ENV, CMD, ...) have no entry in `rootfs.diff_ids`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub empty_layer: bool,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Why image JSON does not parse.
#[derive(Debug, thiserror::Error)]
#[error("invalid image config json: {0}")]
pub struct ImageError(#[from] serde_json::Error);

impl Image {
    /// An empty image for `platform`, as `FROM scratch` starts (BuildKit's `emptyImage`: `Env` has the
    /// default PATH, rootfs type `layers`).
    pub fn scratch(platform: &Platform) -> Image {
        let mut config = ImageConfig::default();
        config.set_env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
        Image {
            architecture: platform.architecture.clone(),
            os: platform.os.clone(),
            variant: platform.variant.clone(),
            config,
            ..Image::default()
        }
    }

    /// The platform the image says it is for.
    pub fn platform(&self) -> Platform {
        Platform::new(&self.os, &self.architecture, self.variant.as_deref())
    }

    pub fn from_json(bytes: &[u8]) -> Result<Image, ImageError> {
        Ok(serde_json::from_slice(bytes)?)
    }

    /// Compact JSON as pushed in a config blob (its sha256 is the image id).
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_else(|e| unreachable!("image serialisation failed: {e}"))
    }

    /// Appends a history entry.
    pub fn push_history(&mut self, created_by: impl Into<String>, created: Option<String>, empty_layer: bool) {
        self.history.push(History {
            created,
            created_by: Some(created_by.into()),
            comment: Some("buildkit.dockerfile.v0".to_string()),
            empty_layer,
            ..History::default()
        });
    }
}

#[cfg(test)]
mod tests;
