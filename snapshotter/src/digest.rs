//! sha256 digests: validation for use as a path component, and a streaming digester.

use std::io::{self, Read, Write};

use oci_spec::image::Digest;
use sha2::{Digest as _, Sha256};

/// The errors of digest handling.
#[derive(Debug, thiserror::Error)]
pub enum DigestError {
    #[error("unsupported digest {0}: only sha256 digests with 64 lower-case hex characters are accepted")]
    Unsupported(String),
}

/// The hex part of a sha256 digest, checked so that it is safe as a file name.
pub fn sha256_hex(d: &Digest) -> Result<&str, DigestError> {
    let hex = d.digest();
    let ok = d.algorithm().as_ref() == "sha256"
        && hex.len() == 64
        && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if ok {
        Ok(hex)
    } else {
        Err(DigestError::Unsupported(d.to_string()))
    }
}

/// Builds a digest from a finished sha256 hasher.
pub fn from_hasher(h: Sha256) -> Digest {
    from_hex(&hex::encode(h.finalize()))
}

/// Builds a sha256 digest from 64 hex characters produced by this crate.
pub fn from_hex(hex: &str) -> Digest {
    let s = format!("sha256:{hex}");
    // A sha256 hex string we computed ourselves always parses; fall back to the empty-input digest
    // rather than panicking should oci-spec ever tighten its rules.
    s.parse().unwrap_or_else(|_| {
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
            .parse()
            .expect("constant digest parses")
    })
}

/// sha256 of a byte slice.
pub fn of_bytes(b: &[u8]) -> Digest {
    let mut h = Sha256::new();
    h.update(b);
    from_hasher(h)
}

/// sha256 and length of everything read from `r`.
pub fn of_reader(mut r: impl Read) -> io::Result<(Digest, u64)> {
    let mut w = DigestWriter::new(io::sink());
    io::copy(&mut r, &mut w)?;
    let (d, n, _) = w.finish();
    Ok((d, n))
}

/// Copies `r` into `w` in 1 MiB pieces and returns the sha256 and length of what was copied, hashing on
/// a second thread: the hash overlaps the writer's work (a compressor) instead of adding to it.
pub fn copy_hashing_aside(r: &mut (impl Read + ?Sized), w: &mut (impl Write + ?Sized)) -> io::Result<(Digest, u64)> {
    use std::sync::mpsc::sync_channel;
    const PIECE: usize = 1 << 20;
    const PIECES: usize = 4;
    let (full_tx, full_rx) = sync_channel::<(Vec<u8>, usize)>(PIECES);
    let (free_tx, free_rx) = sync_channel::<Vec<u8>>(PIECES);
    for _ in 0..PIECES {
        free_tx.send(vec![0u8; PIECE]).map_err(|_| io::Error::other("hashing thread gone"))?;
    }
    std::thread::scope(|scope| {
        let hasher = scope.spawn(move || {
            let mut h = Sha256::new();
            for (buf, n) in full_rx {
                h.update(&buf[..n]);
                // The copier may have stopped on an error; a piece it no longer wants is dropped.
                let _ = free_tx.send(buf);
            }
            h
        });
        let mut count = 0u64;
        let copied = (|| loop {
            let mut buf = free_rx.recv().map_err(|_| io::Error::other("hashing thread gone"))?;
            let n = loop {
                match r.read(&mut buf) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    other => break other?,
                }
            };
            if n == 0 {
                return Ok(());
            }
            w.write_all(&buf[..n])?;
            count += n as u64;
            full_tx.send((buf, n)).map_err(|_| io::Error::other("hashing thread gone"))?;
        })();
        drop(full_tx);
        let h = hasher.join().map_err(|_| io::Error::other("hashing thread panicked"))?;
        copied.map(|()| (from_hasher(h), count))
    })
}

/// A writer that hashes and counts what passes through it.
pub struct DigestWriter<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> DigestWriter<W> {
    pub fn new(inner: W) -> Self {
        DigestWriter { inner, hasher: Sha256::new(), count: 0 }
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    /// The digest and size of everything written, and the inner writer.
    pub fn finish(self) -> (Digest, u64, W) {
        (from_hasher(self.hasher), self.count, self.inner)
    }
}

impl<W: Write> Write for DigestWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A reader that hashes and counts what passes through it.
pub struct DigestReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> DigestReader<R> {
    pub fn new(inner: R) -> Self {
        DigestReader { inner, hasher: Sha256::new(), count: 0 }
    }

    /// The digest and size of everything read so far.
    pub fn finish(self) -> (Digest, u64) {
        (from_hasher(self.hasher), self.count)
    }
}

impl<R: Read> Read for DigestReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_hashing_aside_copies_and_hashes_every_piece() {
        let data: Vec<u8> = (0..5_300_000u32).map(|i| (i % 251) as u8).collect();
        let mut out = Vec::new();
        let (d, n) = copy_hashing_aside(&mut &data[..], &mut out).unwrap();
        assert_eq!((d, n), (of_bytes(&data), data.len() as u64));
        assert!(out == data);
        let (d, n) = copy_hashing_aside(&mut io::empty(), &mut io::sink()).unwrap();
        assert_eq!((d, n), (of_bytes(b""), 0));
    }

    #[test]
    fn copy_hashing_aside_stops_on_a_write_error() {
        struct Full(usize);
        impl Write for Full {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                if self.0 == 0 {
                    return Err(io::Error::other("disk full"));
                }
                self.0 -= 1;
                Ok(b.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let data = vec![7u8; 9 << 20];
        let e = copy_hashing_aside(&mut &data[..], &mut Full(3)).unwrap_err();
        assert_eq!(e.to_string(), "disk full");
    }

    #[test]
    fn rejects_non_sha256_and_bad_hex() {
        let d: Digest = "sha512:cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e".parse().unwrap();
        assert!(sha256_hex(&d).is_err());
        let d = of_bytes(b"abc");
        assert_eq!(sha256_hex(&d).unwrap(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
