//! The differ: a committed snapshot's changes as an OCI layer, compressed in one streaming pass that
//! yields the blob digest, its size and the diffID (digest of the uncompressed tar), written straight
//! into the content store and remembered per (snapshot, compression, SOURCE_DATE_EPOCH).

pub mod changes;
mod pgzip;
mod tarwriter;

use std::io::{self, Write};

use serde::{Deserialize, Serialize};

pub use changes::Change;
pub use pgzip::ParallelGzip;
pub use tarwriter::TarWriter;

use crate::content::{ContentError, ContentWriter, InfoProvider, Ingester, Provider};
use crate::digest::DigestWriter;
use crate::meta::{MetaDb, MetaError, LAYERS};
use crate::snapshot::{DiffSource, Kind, SnapshotError, Snapshotter};
use crate::Digest;

/// Layer compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// The OCI media type of a layer with this compression.
    pub fn media_type(self) -> &'static str {
        match self {
            Compression::None => "application/vnd.oci.image.layer.v1.tar",
            Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }
}

/// A layer blob in the content store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layer {
    pub digest: Digest,
    pub size: u64,
    pub diff_id: Digest,
    pub media_type: String,
}

/// How to write a layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiffOptions {
    pub compression: Compression,
    /// Clamp entry times to this (SOURCE_DATE_EPOCH) for reproducible layers.
    pub source_date_epoch: Option<u64>,
}

/// The errors of the differ.
#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error(transparent)]
    Content(#[from] ContentError),
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error("cannot set up {compression} compression: {source}")]
    Compressor { compression: &'static str, source: io::Error },
    #[error("cannot write layer of {key}: {source}")]
    Write { key: String, source: io::Error },
}

/// A compressor writing into `W`.
pub enum Compressor<W: Write> {
    None(W),
    Gzip(ParallelGzip<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

impl<W: Write> Compressor<W> {
    /// Deterministic settings: gzip level 6 in fixed 1 MiB members with a zero header time, compressed
    /// in parallel; zstd level 3, always in multithreaded mode (whose output does not depend on the
    /// worker count).
    pub fn new(c: Compression, w: W) -> io::Result<Self> {
        let workers = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).min(8);
        Ok(match c {
            Compression::None => Compressor::None(w),
            Compression::Gzip => Compressor::Gzip(ParallelGzip::new(w, 6, workers)),
            Compression::Zstd => {
                let mut e = zstd::stream::write::Encoder::new(w, 3)?;
                e.multithread(workers as u32)?;
                Compressor::Zstd(e)
            }
        })
    }

    pub fn finish(self) -> io::Result<W> {
        match self {
            Compressor::None(w) => Ok(w),
            Compressor::Gzip(g) => g.finish(),
            Compressor::Zstd(z) => z.finish(),
        }
    }
}

impl<W: Write> Write for Compressor<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Compressor::None(w) => w.write(buf),
            Compressor::Gzip(g) => g.write(buf),
            Compressor::Zstd(z) => z.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Compressor::None(w) => w.flush(),
            Compressor::Gzip(g) => g.flush(),
            Compressor::Zstd(z) => z.flush(),
        }
    }
}

/// Writes the changes of `source` as a layer into `out`: returns (diffID, blob digest, blob size).
pub fn write_layer<W: Write>(source: &DiffSource, out: W, opts: DiffOptions) -> io::Result<(Digest, Digest, u64, W)> {
    if opts.compression == Compression::None {
        // The blob is the tar: one hash gives both digests.
        let tar_stream = DigestWriter::new(io::BufWriter::with_capacity(1 << 20, out));
        let (diff_id, size, buffered) = write_changes(source, tar_stream, opts)?.finish();
        let out = buffered.into_inner().map_err(|e| e.into_error())?;
        return Ok((diff_id.clone(), diff_id, size, out));
    }
    let blob = DigestWriter::new(out);
    let (diff_id, blob) = write_compressed(source, blob, opts)?;
    let (digest, size, out) = blob.finish();
    Ok((diff_id, digest, size, out))
}

/// [`write_layer`] into the content store's writer `w`, whose own running digest names the blob: each
/// byte is hashed once for the diffID and, when compressed, once for the blob. Returns (diffID, blob
/// digest, bytes written, the writer).
fn write_layer_into<W: ContentWriter>(
    source: &DiffSource,
    w: W,
    opts: DiffOptions,
) -> io::Result<(Digest, Digest, u64, W)> {
    let start = w.offset();
    let (diff_id, w) = match opts.compression {
        Compression::None => {
            // The content writer buffers small writes itself.
            let w = write_changes(source, w, opts)?;
            (w.digest(), w)
        }
        _ => write_compressed(source, w, opts)?,
    };
    let digest = w.digest();
    Ok((diff_id, digest, w.offset() - start, w))
}

/// The changes of `source` as a tar stream into `out`.
fn write_changes<W: Write>(source: &DiffSource, out: W, opts: DiffOptions) -> io::Result<W> {
    let mut tw = TarWriter::new(out, opts.source_date_epoch);
    match source {
        DiffSource::Upper(upper) => changes::upper_changes(upper, &mut |c| tw.change(&c))?,
        DiffSource::Trees { lower, upper } => changes::tree_changes(lower.as_deref(), upper, &mut |c| tw.change(&c))?,
    }
    tw.finish()
}

/// The changes of `source` compressed into `out`: the diffID (of the tar before compression) and `out`.
fn write_compressed<W: Write>(source: &DiffSource, out: W, opts: DiffOptions) -> io::Result<(Digest, W)> {
    let compressor = Compressor::new(opts.compression, out)?;
    let tar_stream = DigestWriter::new(io::BufWriter::with_capacity(1 << 20, compressor));
    let (diff_id, _, buffered) = write_changes(source, tar_stream, opts)?.finish();
    let compressor = buffered.into_inner().map_err(|e| e.into_error())?;
    Ok((diff_id, compressor.finish()?))
}

/// Turns snapshots into layer blobs, once per (snapshot, compression, epoch).
pub struct Differ<'a, S: Snapshotter + ?Sized, C> {
    pub snapshotter: &'a S,
    pub content: &'a C,
    pub meta: &'a MetaDb,
}

impl<S: Snapshotter + ?Sized, C: Provider + Ingester + InfoProvider> Differ<'_, S, C> {
    /// The layer of the committed snapshot `key`, computed at most once. A compressed layer of a snapshot
    /// whose uncompressed layer is stored (an image built with `-t`, then exported or pushed) compresses
    /// that blob, one sequential read, instead of walking the snapshot's files again.
    pub fn layer(&self, key: &str, opts: DiffOptions) -> Result<Layer, DiffError> {
        let (source, id) = self.committed_source(key)?;
        let memo = memo_key(&id, opts.compression, opts);
        if let Some(l) = remembered(self.meta, self.content, &memo)? {
            self.meta.touch_blob(l.digest.as_ref(), l.size, Some(&l.media_type))?;
            return Ok(l);
        }
        if opts.compression != Compression::None {
            if let Some(l) = remembered(self.meta, self.content, &memo_key(&id, Compression::None, opts))? {
                let layer = compress_blob(self.content, self.meta, &l.digest, l.size, opts.compression)?;
                self.meta.put(LAYERS, &memo, &layer)?;
                return Ok(layer);
            }
        }
        let wr = |source| DiffError::Write { key: key.to_string(), source };
        // A unique ingest: two computations of one layer may race, and both commit the same blob safely.
        let reference = format!("layer-{memo}-{}-{:?}", std::process::id(), std::thread::current().id());
        let w = self.content.writer(&reference, None)?;
        let (diff_id, digest, size, w) = match write_layer_into(&source, w, opts) {
            Ok(r) => r,
            Err(e) => return Err(wr(e)),
        };
        // The writer hashed what it stored; a resumed ingest's leftovers show up as a size mismatch.
        let committed = w.commit(Some(size), Some(&digest))?;
        let layer = Layer { digest: committed, size, diff_id, media_type: opts.compression.media_type().to_string() };
        self.meta.touch_blob(layer.digest.as_ref(), size, Some(&layer.media_type))?;
        self.meta.put(LAYERS, &memo, &layer)?;
        Ok(layer)
    }
}

impl<S: Snapshotter + ?Sized, C: Provider + Ingester + InfoProvider> Differ<'_, S, C> {
    /// The layer of the committed snapshot `key` with `opts` when its blob is already in the store,
    /// without computing anything: `None` when [`Differ::layer`] would have to diff or compress.
    pub fn stored(&self, key: &str, opts: DiffOptions) -> Result<Option<Layer>, DiffError> {
        let (_, id) = self.committed_source(key)?;
        let found = remembered(self.meta, self.content, &memo_key(&id, opts.compression, opts))?;
        if let Some(l) = &found {
            self.meta.touch_blob(l.digest.as_ref(), l.size, Some(&l.media_type))?;
        }
        Ok(found)
    }

    /// The diff source of the committed snapshot `key`, and the path that names it in memo keys.
    fn committed_source(&self, key: &str) -> Result<(DiffSource, String), DiffError> {
        let info = self.snapshotter.stat(key)?;
        if info.kind != Kind::Committed {
            return Err(SnapshotError::NotCommitted { key: key.to_string(), kind: info.kind }.into());
        }
        let source = self.snapshotter.diff_source(key)?;
        let id = match &source {
            DiffSource::Upper(p) | DiffSource::Trees { upper: p, .. } => p.display().to_string(),
        };
        Ok((source, id))
    }
}

/// The key a snapshot's layer is remembered under: (snapshot, compression, SOURCE_DATE_EPOCH).
fn memo_key(id: &str, compression: Compression, opts: DiffOptions) -> String {
    let epoch = opts.source_date_epoch.map(|e| e.to_string()).unwrap_or_default();
    format!("{id}|{}|{epoch}", compression.name())
}

/// The layer remembered under `memo`, when its blob is still in the store.
fn remembered<C: InfoProvider>(meta: &MetaDb, content: &C, memo: &str) -> Result<Option<Layer>, DiffError> {
    let Some(l) = meta.get::<Layer>(LAYERS, memo)? else { return Ok(None) };
    match content.info(&l.digest) {
        Ok(_) => Ok(Some(l)),
        Err(ContentError::NotFound(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The blob `blob` (an uncompressed layer tar in the content store, `size` bytes) compressed with
/// `compression`: written once and remembered per (blob, compression), so the local image store can keep
/// layers uncompressed and a push or export compresses each one at most once. The diffID of the result
/// is the digest of `blob` itself.
pub fn compress_blob<C: Provider + Ingester + InfoProvider>(
    content: &C,
    meta: &MetaDb,
    blob: &Digest,
    size: u64,
    compression: Compression,
) -> Result<Layer, DiffError> {
    if compression == Compression::None {
        return Ok(Layer {
            digest: blob.clone(),
            size,
            diff_id: blob.clone(),
            media_type: compression.media_type().to_string(),
        });
    }
    let memo = variant_memo(blob, compression);
    if let Some(l) = stored_variant(content, meta, blob, compression)? {
        return Ok(l);
    }
    let reference = format!("compress-{memo}-{}-{:?}", std::process::id(), std::thread::current().id());
    let w = content.writer(&reference, None)?;
    let start = w.offset();
    // The content writer hashes what it stores: that digest names the blob.
    let w = compress_stored(content, blob, size, compression, w)?;
    let (digest, csize) = (w.digest(), w.offset() - start);
    let committed = w.commit(Some(csize), Some(&digest))?;
    let layer = Layer {
        digest: committed,
        size: csize,
        diff_id: blob.clone(),
        media_type: compression.media_type().to_string(),
    };
    meta.touch_blob(layer.digest.as_ref(), csize, Some(&layer.media_type))?;
    meta.put(LAYERS, &memo, &layer)?;
    Ok(layer)
}

/// The variant of the stored uncompressed layer `blob` with `compression` that [`compress_blob`] kept,
/// when it is still in the store.
pub fn stored_variant<C: InfoProvider>(
    content: &C,
    meta: &MetaDb,
    blob: &Digest,
    compression: Compression,
) -> Result<Option<Layer>, DiffError> {
    let found = remembered(meta, content, &variant_memo(blob, compression))?;
    if let Some(l) = &found {
        meta.touch_blob(l.digest.as_ref(), l.size, Some(&l.media_type))?;
    }
    Ok(found)
}

fn variant_memo(blob: &Digest, compression: Compression) -> String {
    format!("blob|{blob}|{}", compression.name())
}

/// The blob `blob` (an uncompressed layer tar in the content store, `size` bytes) compressed with
/// `compression` into `out` and kept nowhere else: an export streams it straight into its archive, one
/// write of the compressed bytes where storing the blob first would write them twice and wait for the
/// store's fsync. Returns the layer (digest and size of what was written, diffID `blob`) and `out`.
pub fn compress_blob_into<C: Provider, W: Write>(
    content: &C,
    blob: &Digest,
    size: u64,
    compression: Compression,
    out: W,
) -> Result<(Layer, W), DiffError> {
    let (digest, csize, out) = compress_stored(content, blob, size, compression, DigestWriter::new(out))?.finish();
    Ok((Layer { digest, size: csize, diff_id: blob.clone(), media_type: compression.media_type().to_string() }, out))
}

/// Compresses the stored blob `blob` into `out`, checking that it reads as `blob` (`size` bytes).
fn compress_stored<C: Provider, W: Write>(
    content: &C,
    blob: &Digest,
    size: u64,
    compression: Compression,
    out: W,
) -> Result<W, DiffError> {
    let wr = |source| DiffError::Write { key: blob.to_string(), source };
    let mut reader = content.reader(blob)?;
    let mut compressor = Compressor::new(compression, out)
        .map_err(|source| DiffError::Compressor { compression: compression.name(), source })?;
    // Verified as it is read (the hash on its own thread, beside the compressor's): a damaged blob must
    // not become a layer whose diffID lies.
    let (diff_id, read) = crate::digest::copy_hashing_aside(&mut reader, &mut compressor).map_err(wr)?;
    if diff_id != *blob || read != size {
        return Err(wr(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("the stored blob reads as {diff_id} ({read} bytes): the content store is damaged"),
        )));
    }
    compressor.finish().map_err(wr)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    fn zstd_mt(data: &[u8], workers: u32) -> Vec<u8> {
        let mut e = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
        e.multithread(workers).unwrap();
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    /// Layer digests must not depend on the machine's core count.
    #[test]
    fn zstd_multithreaded_output_ignores_worker_count() {
        let data: Vec<u8> = (0..40_000_000u32).map(|i| ((i / 3) % 253) as u8 ^ (i >> 15) as u8).collect();
        let one = zstd_mt(&data, 1);
        assert_eq!(one, zstd_mt(&data, 2));
        assert_eq!(one, zstd_mt(&data, 8));
    }
}
