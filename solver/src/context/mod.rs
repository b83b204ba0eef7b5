//! The build context: .dockerignore matching (a port of moby/patternmatcher) and content checksums of
//! the paths a COPY/ADD selects, remembered by stat so an unchanged context costs a stat per file.
//!
//! SCAFFOLDING: the signatures below are the seam the scheduler codes against; the bodies are being
//! written (issue 6).

use std::sync::Arc;

use llb::Digest;
use snapshotter::meta::MetaDb;

use crate::fileop::{FileOpError, SourceDir};

pub mod ignore;

/// Reads a .dockerignore file as moby/patternmatcher/ignorefile.ReadAll does: comments and blank lines
/// dropped, patterns cleaned, `!` exceptions kept.
pub fn parse_dockerignore(contents: &str) -> Vec<String> {
    ignore::read_all(contents)
}

/// Content checksums of source directories, remembered per file by stat in the metadata database.
pub struct ChecksumCache {
    meta: Arc<MetaDb>,
}

impl ChecksumCache {
    pub fn new(meta: Arc<MetaDb>) -> ChecksumCache {
        ChecksumCache { meta }
    }

    /// The checksum of exactly what `copy` reads from `src` (wildcards, follow_symlink, include/exclude
    /// patterns and the directory's own filters applied): type, mode, uid, gid, size, link target, xattrs and
    /// bytes of each path, never mtime.
    pub fn copy_sources(&self, src: &SourceDir, copy: &llb::file::Copy) -> Result<Digest, FileOpError> {
        let _ = (&self.meta, src, copy);
        Err(FileOpError::Unsupported("context checksums are not wired yet".into()))
    }

    /// The checksum of the tree at `path` in `src` (`/` for all of it).
    pub fn tree(&self, src: &SourceDir, path: &str) -> Result<Digest, FileOpError> {
        let _ = (src, path);
        Err(FileOpError::Unsupported("context checksums are not wired yet".into()))
    }

    /// Writes remembered stats back to the database (once at the end of a solve).
    pub fn flush(&self) -> Result<(), FileOpError> {
        Ok(())
    }
}
