//! The applier: unpacks a layer tar (gzip, zstd or plain, detected) into a snapshot, honouring
//! whiteouts and opaque markers, hardlinks, xattrs, devices and ownership. Every path is resolved inside
//! the snapshot root ([`crate::resolve`]): `..`, absolute symlinks and hardlinks pointing outside are
//! contained, never followed out.
//!
//! Into an overlay upperdir (a snapshot with parents) deletions become whiteout devices and opaque
//! markers the `trusted.overlay.opaque` xattr, as containerd's `OverlayConvertWhiteout` does; into a full
//! tree they remove files.

mod entry;
mod stream;

use std::collections::HashSet;
use std::io::{self, BufRead, BufReader, Read};
use std::path::PathBuf;

use crate::resolve::Root;
use crate::snapshot::{ApplyTarget, SnapshotError, Snapshotter};
use crate::Digest;

/// What an apply did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyStats {
    /// Digest of the uncompressed tar: compare it with the image config's diff_ids.
    pub diff_id: Digest,
    /// Size of the uncompressed tar.
    pub size: u64,
    pub entries: u64,
}

/// The errors of the applier.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("cannot open apply target {path}: {source}")]
    Target { path: PathBuf, source: io::Error },
    #[error("cannot read layer: {0} (is it a tar, gzip or zstd stream?)")]
    Read(io::Error),
    #[error("layer entry {path}: {source}")]
    Entry { path: String, source: io::Error },
    #[error("layer entry {path} has unsupported type {kind}")]
    Unsupported { path: String, kind: String },
    #[error("layer entry {path} links to {target}, which is not in the layer or below it")]
    LinkTarget { path: String, target: String },
    #[error("layer entry {path} has an invalid {field}")]
    Invalid { path: String, field: &'static str },
    #[error("diffID mismatch: expected {expected}, got {actual}; the layer is corrupt, pull it again")]
    DiffIdMismatch { expected: Digest, actual: Digest },
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
}

/// Layer compression as detected from the stream's magic bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detected {
    Plain,
    Gzip,
    Zstd,
}

/// Wraps `r` in the right decompressor.
pub fn decompress<'a>(r: impl Read + 'a) -> io::Result<(Detected, Box<dyn Read + 'a>)> {
    let mut br = BufReader::with_capacity(1 << 20, r);
    let head = br.fill_buf()?;
    Ok(if head.starts_with(&[0x1f, 0x8b]) {
        (Detected::Gzip, Box::new(flate2::bufread::MultiGzDecoder::new(br)))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        (Detected::Zstd, Box::new(zstd::stream::read::Decoder::with_buffer(br)?))
    } else {
        (Detected::Plain, Box::new(br))
    })
}

/// Unpacks the layer read from `r` into `target`. The stream is decompressed and hashed on a second
/// thread ([`stream::read_aside`]) while this one creates the files.
pub fn apply_layer(target: &ApplyTarget, r: impl Read + Send) -> Result<ApplyStats, ApplyError> {
    let (root_path, lowers) = match target {
        ApplyTarget::Tree(p) => (p.clone(), None),
        ApplyTarget::Upper { upper, lowers } => (upper.clone(), Some(lowers.clone())),
    };
    let root = Root::open(&root_path).map_err(|source| ApplyError::Target { path: root_path.clone(), source })?;
    let lowers = match lowers {
        Some(ls) => Some(
            ls.iter()
                .map(|l| Root::open(l).map_err(|source| ApplyError::Target { path: l.clone(), source }))
                .collect::<Result<Vec<_>, _>>()?,
        ),
        None => None,
    };
    let mut state = entry::Applier {
        root,
        lowers,
        written: HashSet::new(),
        dirs: Vec::new(),
        is_root: rustix::process::geteuid().is_root(),
        buf: vec![0; 256 << 10],
    };
    let (applied, digest) = stream::read_aside(r, |stream| {
        let mut entries = 0u64;
        {
            let mut ar = tar::Archive::new(&mut *stream);
            for e in ar.entries().map_err(ApplyError::Read)? {
                let mut e = e.map_err(ApplyError::Read)?;
                state.entry(&mut e)?;
                entries += 1;
            }
        }
        state.finish()?;
        // Read to the end so the diffID covers the whole stream, padding included.
        io::copy(stream, &mut io::sink()).map_err(ApplyError::Read)?;
        Ok::<_, ApplyError>(entries)
    });
    let entries = applied?;
    let (diff_id, size) = digest.map_err(ApplyError::Read)?;
    Ok(ApplyStats { diff_id, size, entries })
}

/// Unpacks a pulled layer once and shares it: if the committed snapshot `name` (by convention the
/// layer's chainID) exists, nothing is done; otherwise the layer is applied on `parent` and committed.
/// `expected_diff_id`, when given, is checked before the commit.
pub fn unpack_layer<S: Snapshotter + ?Sized>(
    s: &S,
    name: &str,
    parent: Option<&str>,
    layer: impl Read + Send,
    expected_diff_id: Option<&Digest>,
) -> Result<Option<ApplyStats>, ApplyError> {
    match s.stat(name) {
        Ok(_) => return Ok(None),
        Err(SnapshotError::NotFound(_)) => {}
        Err(e) => return Err(e.into()),
    }
    let key = format!("extract-{}-{:?}-{name}", std::process::id(), std::thread::current().id());
    s.prepare(&key, parent)?;
    let result = s.apply_target(&key).map_err(ApplyError::from).and_then(|t| apply_layer(&t, layer));
    let stats = match result {
        Ok(st) => st,
        Err(e) => {
            let _ = s.remove(&key);
            return Err(e);
        }
    };
    if let Some(want) = expected_diff_id {
        if *want != stats.diff_id {
            let _ = s.remove(&key);
            return Err(ApplyError::DiffIdMismatch { expected: want.clone(), actual: stats.diff_id });
        }
    }
    match s.commit(name, &key) {
        Ok(()) => Ok(Some(stats)),
        Err(SnapshotError::AlreadyExists(_)) => {
            // Another unpack of the same layer won the race; share its result.
            let _ = s.remove(&key);
            Ok(None)
        }
        Err(e) => {
            let _ = s.remove(&key);
            Err(e.into())
        }
    }
}
