//! The build definition: typed ops, content-addressed vertices, metadata, and the OCI image config.
//! No I/O, no async.
//!
//! A frontend builds a [`Definition`] with a [`DefinitionBuilder`]; every [`Vertex`] is addressed by the
//! sha256 of its canonical serialisation (see [`vertex`]), which includes its inputs' digests. The solver
//! reads the definition, starts its cache keys from [`Vertex::cache_identity`], and never needs the
//! frontend again. [`Metadata`] (descriptions, source locations, `ignore_cache`) sits beside the vertices
//! and is never hashed.
//!
//! ```
//! use llb::{normalize_reference, DefinitionBuilder, ExecOp, Metadata, Op, Platform, SourceOp};
//!
//! let platform: Platform = "linux/amd64".parse().unwrap();
//! let mut b = DefinitionBuilder::new();
//! let reference = normalize_reference("alpine:3.20").unwrap();
//! let base = b.source(SourceOp::image(reference, Some(platform.clone())), Some(platform.clone()), Metadata::default())?;
//! let run = ExecOp::new(vec!["/bin/sh".into(), "-c".into(), "make".into()], Some(0));
//! let out = b.add_op(Op::Exec(run), &[base], Some(platform), Metadata::described("[1/2] RUN make"))?;
//! let def = b.finish(Some(out))?;
//! assert_eq!(llb::Definition::from_json(&def.to_json())?, def);
//! # Ok::<(), llb::DefinitionError>(())
//! ```

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
