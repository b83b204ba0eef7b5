//! The content store: blobs addressed by digest, behind narrow traits like containerd's
//! (`core/content/content.go`): [`Provider`] reads, [`Ingester`] writes, [`InfoProvider`] inspects.

mod local;

use std::io::{self, Read, Seek, Write};
use std::path::PathBuf;

pub use local::{LocalStore, LocalWriter, DEFAULT_INGEST_EXPIRY};

use crate::digest::DigestError;
use crate::Digest;

/// What a blob is, as the store knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    pub digest: Digest,
    pub size: u64,
    /// Seconds since the epoch when the blob was committed.
    pub created_at: u64,
}

/// Reads blobs.
pub trait Provider {
    type Reader: Read + Seek + Send;
    /// A streaming reader of the blob; [`ContentError::NotFound`] when absent.
    fn reader(&self, digest: &Digest) -> Result<Self::Reader, ContentError>;
}

/// Inspects and removes blobs.
pub trait InfoProvider {
    fn info(&self, digest: &Digest) -> Result<Info, ContentError>;
    /// Every committed blob.
    fn list(&self) -> Result<Vec<Info>, ContentError>;
    fn delete(&self, digest: &Digest) -> Result<(), ContentError>;
}

/// Writes blobs.
pub trait Ingester {
    type Writer: ContentWriter;
    /// Opens (or resumes) the ingest named `reference`. A second writer of the same reference waits for
    /// the first to commit or drop; writers of different references may race to commit the same blob,
    /// which is safe: the first rename wins and the others verify and discard their copy.
    fn writer(&self, reference: &str, expected_size: Option<u64>) -> Result<Self::Writer, ContentError>;
}

/// An in-progress write.
pub trait ContentWriter: Write + Send {
    /// Bytes written so far (including those of a resumed ingest).
    fn offset(&self) -> u64;
    /// The digest of every byte written so far (those of a resumed ingest included): the name
    /// [`commit`](Self::commit) gives the blob. A caller that needs the digest of what it wrote asks here
    /// rather than hashing the same bytes a second time.
    fn digest(&self) -> Digest;
    /// Verifies size and digest (when given), fsyncs and renames the data into place. On a mismatch the
    /// ingest is removed and nothing is left behind.
    fn commit(self, expected_size: Option<u64>, expected: Option<&Digest>) -> Result<Digest, ContentError>;
}

/// The errors of the content store.
#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    #[error("blob {0} not found in the content store")]
    NotFound(Digest),
    #[error(transparent)]
    Digest(#[from] DigestError),
    #[error("digest mismatch: expected {expected}, got {actual}; the data was discarded, fetch it again")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("size mismatch for {reference}: expected {expected} bytes, got {actual}; the data was discarded")]
    SizeMismatch { reference: String, expected: u64, actual: u64 },
    #[error("cannot copy data into ingest {reference}: {source}")]
    Copy { reference: String, source: io::Error },
    #[error("cannot open ingest {path}: {source}")]
    OpenIngest { path: PathBuf, source: io::Error },
    #[error("cannot resume ingest {path}: {source}")]
    Resume { path: PathBuf, source: io::Error },
    #[error("cannot sync ingest {path}: {source}")]
    Sync { path: PathBuf, source: io::Error },
    #[error("cannot move blob into place at {path}: {source}")]
    Rename { path: PathBuf, source: io::Error },
    #[error("cannot read blob {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot delete blob {path}: {source}")]
    Delete { path: PathBuf, source: io::Error },
    #[error("cannot list {path}: {source}")]
    List { path: PathBuf, source: io::Error },
    #[error("cannot remove abandoned ingest {path}: {source}")]
    Clean { path: PathBuf, source: io::Error },
}

/// Copies `r` into the store under `reference`, verifying the expected digest and size when given.
pub fn write_blob<I: Ingester>(
    store: &I,
    reference: &str,
    mut r: impl Read,
    expected_size: Option<u64>,
    expected: Option<&Digest>,
) -> Result<Digest, ContentError> {
    let mut w = store.writer(reference, expected_size)?;
    if w.offset() > 0 {
        // A resumed ingest: the reader starts at 0, so skip what is already there.
        io::copy(&mut (&mut r).take(w.offset()), &mut io::sink())
            .map_err(|source| ContentError::Copy { reference: reference.to_string(), source })?;
    }
    io::copy(&mut r, &mut w).map_err(|source| ContentError::Copy { reference: reference.to_string(), source })?;
    w.commit(expected_size, expected)
}
