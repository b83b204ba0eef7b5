//! File ops: copy, mkdir, mkfile, rm and symlink actions run by the builder itself (BuildKit `FileOp`).
//!
//! Indices follow BuildKit: an action's `input`/`secondary_input` below `inputs.len()` names a vertex
//! input; `inputs.len() + i` names the result of action `i` (which must come earlier); `None` is scratch.
//! `output` is the op's output index that the action's result becomes, or `None` if it is only used by
//! later actions.

use serde::{Deserialize, Serialize};

use crate::serde_util::{is_default, Bytes};
use crate::Digest;

#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FileOp {
    pub actions: Vec<FileAction>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FileAction {
    /// The filesystem the action changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<usize>,
    /// The filesystem a copy reads from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secondary_input: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<usize>,
    pub action: FileActionKind,
}

/// What an action's index refers to, resolved against a vertex's input count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileSource {
    Scratch,
    Input(usize),
    Action(usize),
}

impl FileSource {
    /// Resolves a BuildKit-style action index.
    pub fn resolve(index: Option<usize>, num_inputs: usize) -> FileSource {
        match index {
            None => FileSource::Scratch,
            Some(i) if i < num_inputs => FileSource::Input(i),
            Some(i) => FileSource::Action(i - num_inputs),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FileActionKind {
    Copy(Copy),
    Mkdir(Mkdir),
    Mkfile(Mkfile),
    Rm(Rm),
    Symlink(Symlink),
}

/// A user or group, by name (resolved in `/etc/passwd` / `/etc/group` of a filesystem) or by id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UserOpt {
    /// `input` indexes the filesystem to look the name up in, like an action index.
    ByName {
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        input: Option<usize>,
    },
    ById(u32),
}

/// `--chown=user:group`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChownOpt {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<UserOpt>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<UserOpt>,
}

/// Copy `src` from the secondary input to `dest` in the input (COPY/ADD).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Copy {
    pub src: String,
    pub dest: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<ChownOpt>,
    /// Numeric `--chmod`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
    /// Symbolic `--chmod` (`u+x,g-w`), applied to each file's own mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode_str: Option<String>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub follow_symlink: bool,
    /// Copy a directory's contents rather than the directory itself.
    #[serde(default, skip_serializing_if = "is_default")]
    pub dir_copy_contents: bool,
    /// Unpack local tar archives (ADD).
    #[serde(default, skip_serializing_if = "is_default")]
    pub attempt_unpack: bool,
    #[serde(default, skip_serializing_if = "is_default")]
    pub create_dest_path: bool,
    #[serde(default, skip_serializing_if = "is_default")]
    pub allow_wildcard: bool,
    #[serde(default, skip_serializing_if = "is_default")]
    pub allow_empty_wildcard: bool,
    /// Override of file times, nanoseconds since the Unix epoch (SOURCE_DATE_EPOCH).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include_patterns: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_patterns: Vec<String>,
    /// Replace a destination of another type (file vs directory) instead of failing.
    #[serde(default, skip_serializing_if = "is_default")]
    pub always_replace_existing_dest_paths: bool,
    /// `COPY --parents`: keep the source's parent directories below the wildcard root.
    #[serde(default, skip_serializing_if = "is_default")]
    pub parents: bool,
    /// `ADD --checksum`: expected digest of the source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<Digest>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Mkdir {
    pub path: String,
    pub mode: u32,
    #[serde(default, skip_serializing_if = "is_default")]
    pub make_parents: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<ChownOpt>,
    /// Nanoseconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Mkfile {
    pub path: String,
    pub mode: u32,
    #[serde(default, skip_serializing_if = "is_default")]
    pub data: Bytes,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<ChownOpt>,
    /// Nanoseconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Rm {
    pub path: String,
    #[serde(default, skip_serializing_if = "is_default")]
    pub allow_not_found: bool,
    #[serde(default, skip_serializing_if = "is_default")]
    pub allow_wildcard: bool,
}

/// Create a symlink at `newpath` pointing to `oldpath`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Symlink {
    pub oldpath: String,
    pub newpath: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<ChownOpt>,
    /// Nanoseconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<i64>,
}

impl FileActionKind {
    /// Short text for descriptions and dot labels.
    pub fn summary(&self) -> String {
        match self {
            FileActionKind::Copy(c) => format!("copy {} {}", c.src, c.dest),
            FileActionKind::Mkdir(m) => format!("mkdir {}", m.path),
            FileActionKind::Mkfile(m) => format!("mkfile {}", m.path),
            FileActionKind::Rm(r) => format!("rm {}", r.path),
            FileActionKind::Symlink(s) => format!("symlink {} -> {}", s.newpath, s.oldpath),
        }
    }

    /// The user/group lookups of the action, whose `input` indices need checking.
    pub(crate) fn owner(&self) -> Option<&ChownOpt> {
        match self {
            FileActionKind::Copy(c) => c.owner.as_ref(),
            FileActionKind::Mkdir(m) => m.owner.as_ref(),
            FileActionKind::Mkfile(m) => m.owner.as_ref(),
            FileActionKind::Symlink(s) => s.owner.as_ref(),
            FileActionKind::Rm(_) => None,
        }
    }
}

impl FileOp {
    /// Number of outputs: one per action with an output index.
    pub fn num_outputs(&self) -> usize {
        self.actions.iter().filter_map(|a| a.output).map(|o| o + 1).max().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_buildkit_indices() {
        assert_eq!(FileSource::resolve(None, 2), FileSource::Scratch);
        assert_eq!(FileSource::resolve(Some(1), 2), FileSource::Input(1));
        assert_eq!(FileSource::resolve(Some(2), 2), FileSource::Action(0));
    }

    #[test]
    fn copy_serialises_only_set_fields() {
        let c =
            FileActionKind::Copy(Copy { src: "/a".into(), dest: "/b".into(), mode: Some(0o755), ..Copy::default() });
        assert_eq!(serde_json::to_string(&c).unwrap(), r#"{"type":"copy","src":"/a","dest":"/b","mode":493}"#);
    }
}
