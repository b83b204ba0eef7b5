//! Per-vertex metadata (BuildKit `OpMetadata` and source locations). Never part of a digest: two
//! vertices that differ only in metadata are one vertex.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::serde_util::is_default;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    /// Progress text, e.g. `[build 2/4] RUN make` (BuildKit `llb.customname`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Run even when the cache has a result (`--no-cache`, `--no-cache-filter`).
    #[serde(default, skip_serializing_if = "is_default")]
    pub ignore_cache: bool,
    /// Whether the result may go to an exported cache; `None` is the exporter's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub export_cache: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress_group: Option<ProgressGroup>,
    /// Where in the Dockerfile the vertex comes from, for errors and progress.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub locations: Vec<SourceLocation>,
    /// Solver capabilities the op needs (BuildKit caps such as `exec.mount.cache.sharing`).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub caps: BTreeSet<String>,
}

/// Groups vertices in progress output (BuildKit `ProgressGroup`, e.g. one per `COPY --link` merge).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgressGroup {
    pub id: String,
    pub name: String,
    /// A weak group is shown only while it has running members.
    #[serde(default, skip_serializing_if = "is_default")]
    pub weak: bool,
}

/// A 1-based inclusive line range in a named file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceLocation {
    pub file: String,
    pub start_line: u32,
    pub end_line: u32,
}

impl Metadata {
    /// Metadata with only a description.
    pub fn described(description: impl Into<String>) -> Metadata {
        Metadata { description: Some(description.into()), ..Metadata::default() }
    }

    /// Adds a source location (builder style).
    pub fn at(mut self, file: impl Into<String>, start_line: u32, end_line: u32) -> Metadata {
        self.locations.push(SourceLocation { file: file.into(), start_line, end_line });
        self
    }

    /// Merges metadata of a deduplicated vertex into this one: the first description and progress
    /// group stay, `ignore_cache` is true if either asks for it, an explicit `export_cache` is kept,
    /// locations and caps are unioned.
    pub fn merge(&mut self, other: Metadata) {
        if self.description.is_none() {
            self.description = other.description;
        }
        self.ignore_cache |= other.ignore_cache;
        if self.export_cache.is_none() {
            self.export_cache = other.export_cache;
        }
        if self.progress_group.is_none() {
            self.progress_group = other.progress_group;
        }
        for loc in other.locations {
            if !self.locations.contains(&loc) {
                self.locations.push(loc);
            }
        }
        self.caps.extend(other.caps);
    }

    pub fn is_empty(&self) -> bool {
        *self == Metadata::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_keeps_first_description_and_ors_ignore_cache() {
        let mut a = Metadata::described("[a 1/2] RUN x").at("Dockerfile", 3, 3);
        let mut b = Metadata::described("[b 1/2] RUN x").at("Dockerfile", 9, 10);
        b.ignore_cache = true;
        b.caps.insert("exec.meta.base".into());
        a.merge(b);
        assert_eq!(a.description.as_deref(), Some("[a 1/2] RUN x"));
        assert!(a.ignore_cache);
        assert_eq!(a.locations.len(), 2);
        assert!(a.caps.contains("exec.meta.base"));
        assert!(!a.is_empty());
        assert!(Metadata::default().is_empty());
    }
}
