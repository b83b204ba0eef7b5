//! Exports a snapshot chain as a plain directory or a tar (`--output type=local|tar`).
//!
//! No mount is needed: the chain's layers are replayed base first, each streamed from the differ's
//! change walk straight into the applier through a pipe, so deletions and opaque directories of upper
//! layers are honoured exactly as when an image is unpacked.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::apply::{apply_layer, ApplyError};
use crate::diff::{changes, write_layer, Compression, DiffOptions, TarWriter};
use crate::snapshot::{ApplyTarget, SnapshotError, Snapshotter};

/// The errors of exporting.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error("cannot replay layer {key} into {dest}: {source}")]
    Apply { key: String, dest: PathBuf, source: Box<ApplyError> },
    #[error("cannot stream layer {key}: {source}")]
    Stream { key: String, source: io::Error },
    #[error("export destination {path}: {source} (it must be an empty or new directory)")]
    Dest { path: PathBuf, source: io::Error },
    #[error("cannot write export tar: {0}")]
    Tar(io::Error),
}

/// The chain from the base snapshot up to `key`.
fn chain<S: Snapshotter + ?Sized>(s: &S, key: &str) -> Result<Vec<String>, SnapshotError> {
    let mut out = vec![key.to_string()];
    let mut next = s.stat(key)?.parent;
    while let Some(p) = next {
        next = s.stat(&p)?.parent;
        out.push(p);
    }
    out.reverse();
    Ok(out)
}

/// Writes the full tree of snapshot `key` (with its parents) into `dest`, which must be empty or absent.
pub fn export_dir<S: Snapshotter + ?Sized>(s: &S, key: &str, dest: &Path) -> Result<(), ExportError> {
    let dest_err = |source| ExportError::Dest { path: dest.to_path_buf(), source };
    std::fs::create_dir_all(dest).map_err(dest_err)?;
    if std::fs::read_dir(dest).map_err(dest_err)?.next().is_some() {
        return Err(dest_err(io::Error::from(io::ErrorKind::DirectoryNotEmpty)));
    }
    let target = ApplyTarget::Tree(dest.to_path_buf());
    for k in chain(s, key)? {
        let source = s.diff_source(&k)?;
        let (reader, writer) =
            rustix::pipe::pipe().map_err(|e| ExportError::Stream { key: k.clone(), source: e.into() })?;
        let (reader, writer) = (File::from(reader), File::from(writer));
        let opts = DiffOptions { compression: Compression::None, source_date_epoch: None };
        let (written, applied) = std::thread::scope(|scope| {
            let producer = scope.spawn(move || write_layer(&source, writer, opts).map(|_| ()));
            let applied = apply_layer(&target, reader);
            (producer.join(), applied)
        });
        applied.map_err(|source| ExportError::Apply {
            key: k.clone(),
            dest: dest.to_path_buf(),
            source: Box::new(source),
        })?;
        match written {
            Ok(r) => r.map_err(|source| ExportError::Stream { key: k.clone(), source })?,
            Err(_) => return Err(ExportError::Stream { key: k, source: io::Error::other("layer writer panicked") }),
        }
    }
    Ok(())
}

/// Writes the full tree of snapshot `key` as an uncompressed tar into `out`, using `scratch` (a
/// directory on the state root's filesystem) for the merged tree.
pub fn export_tar<S: Snapshotter + ?Sized, W: Write>(
    s: &S,
    key: &str,
    scratch: &Path,
    out: W,
    source_date_epoch: Option<u64>,
) -> Result<W, ExportError> {
    let tmp = tempfile::Builder::new()
        .prefix("export-")
        .tempdir_in(scratch)
        .map_err(|source| ExportError::Dest { path: scratch.to_path_buf(), source })?;
    let tree = tmp.path().join("rootfs");
    export_dir(s, key, &tree)?;
    let mut tw = TarWriter::new(out, source_date_epoch);
    changes::tree_changes(None, &tree, &mut |c| tw.change(&c)).map_err(ExportError::Tar)?;
    tw.finish().map_err(ExportError::Tar)
}
