//! The build definition: typed ops, content-addressed vertices, metadata, and the OCI image config.
//! No I/O, no async.
//!
//! A frontend builds a [`Definition`] with a [`DefinitionBuilder`]; every [`Vertex`] is addressed by the
//! sha256 of its canonical serialisation (see [`vertex`]), which includes its inputs' digests. The solver
//! reads the definition, starts its cache keys from [`Vertex::cache_identity`], and never needs the
//! frontend again. [`Metadata`] (descriptions, source locations, `ignore_cache`) sits beside the vertices
//! and is never hashed.

mod builder;
mod definition;
mod digest;
mod dot;
pub mod exec;
pub mod file;
pub mod image;
mod metadata;
mod platform;
mod reference;
mod serde_util;
mod source;
mod validate;
pub mod vertex;

#[cfg(test)]
mod tests;

pub use builder::DefinitionBuilder;
pub use definition::Definition;
pub use digest::{Digest, DigestError};
pub use exec::{
    CacheSharing, CdiDevice, ContentCache, ExecMeta, ExecOp, HostIp, Mount, MountKind, NetworkMode, ProxyEnv,
    SecretEnv, SecretOpt, SecurityMode, Ulimit,
};
pub use file::{ChownOpt, FileAction, FileActionKind, FileOp, FileSource, UserOpt};
pub use metadata::{Metadata, ProgressGroup, SourceLocation};
pub use platform::{Platform, PlatformError};
pub use reference::{normalize_reference, ReferenceError};
pub use serde_util::Bytes;
pub use source::{LocalDiffer, ResolveMode, SourceOp};
pub use validate::{DefinitionError, OpProblem};
pub use vertex::{DiffOp, Input, MergeOp, Op, Output, Vertex};
