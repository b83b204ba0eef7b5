//! The layer stream read on a second thread: decompression and the diffID's sha256 (about half of an
//! unpack's CPU for a gzip layer) overlap the applier's file creation instead of adding to it, as
//! [`crate::digest::copy_hashing_aside`] does for the writer side.

use std::io::{self, Read};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

use sha2::{Digest as _, Sha256};

use crate::digest::from_hasher;
use crate::Digest;

const PIECE: usize = 1 << 20;
const PIECES: usize = 4;

type Piece = io::Result<(Vec<u8>, usize)>;

/// Runs `consume` on the uncompressed stream of `r` (gzip, zstd or plain, detected) while a second thread
/// decompresses and hashes it. Returns `consume`'s result and, when `consume` read the whole stream
/// without error, its sha256 and length (the diffID); a consumer that stops early stops the producer.
pub(super) fn read_aside<T>(
    r: impl Read + Send,
    consume: impl FnOnce(&mut Pieces) -> T,
) -> (T, io::Result<(Digest, u64)>) {
    read_aside_in(PIECE, r, consume)
}

fn read_aside_in<T>(
    piece: usize,
    r: impl Read + Send,
    consume: impl FnOnce(&mut Pieces) -> T,
) -> (T, io::Result<(Digest, u64)>) {
    let (full_tx, full_rx) = sync_channel::<Piece>(PIECES);
    let (free_tx, free_rx) = sync_channel::<Vec<u8>>(PIECES);
    for _ in 0..PIECES {
        // Cannot fail: the receiver is alive and the channel has room for every piece.
        let _ = free_tx.send(vec![0u8; piece]);
    }
    std::thread::scope(|scope| {
        let producer = scope.spawn(move || produce(r, &full_tx, &free_rx));
        let mut pieces = Pieces { full: full_rx, free: free_tx, cur: None, pos: 0, done: false };
        let out = consume(&mut pieces);
        let read_all = pieces.done;
        // Dropping the channels stops a producer that is still running (the consumer stopped early).
        drop(pieces);
        let digest = match producer.join() {
            Ok(Some(d)) if read_all => Ok(d),
            Ok(_) => Err(io::Error::other("the layer stream was not read to its end")),
            Err(_) => Err(io::Error::other("the layer reading thread panicked")),
        };
        (out, digest)
    })
}

/// The producer: decompresses `r` into free pieces and sends them full, hashing what it sends. `None`
/// when it stopped on an error (sent to the consumer) or because the consumer went away.
fn produce(r: impl Read, full: &SyncSender<Piece>, free: &Receiver<Vec<u8>>) -> Option<(Digest, u64)> {
    let mut stream = match super::decompress(r) {
        Ok((_, s)) => s,
        Err(e) => {
            let _ = full.send(Err(e));
            return None;
        }
    };
    let (mut h, mut count) = (Sha256::new(), 0u64);
    loop {
        let mut buf = free.recv().ok()?;
        let n = loop {
            match stream.read(&mut buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let _ = full.send(Err(e));
                    return None;
                }
                Ok(n) => break n,
            }
        };
        if n == 0 {
            return Some((from_hasher(h), count));
        }
        h.update(&buf[..n]);
        count += n as u64;
        full.send(Ok((buf, n))).ok()?;
    }
}

/// The consumer's side: the uncompressed stream as a reader. The end of the stream is the producer
/// closing its channel after the last piece; an error of the producer is returned once, then the end.
pub(super) struct Pieces {
    full: Receiver<Piece>,
    free: SyncSender<Vec<u8>>,
    cur: Option<(Vec<u8>, usize)>,
    pos: usize,
    done: bool,
}

impl Read for Pieces {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        loop {
            if let Some((buf, n)) = &self.cur {
                if self.pos < *n {
                    let k = out.len().min(n - self.pos);
                    out[..k].copy_from_slice(&buf[self.pos..self.pos + k]);
                    self.pos += k;
                    return Ok(k);
                }
                if let Some((buf, _)) = self.cur.take() {
                    // The producer may have finished; a piece it no longer wants is dropped.
                    let _ = self.free.send(buf);
                }
            }
            if self.done || out.is_empty() {
                return Ok(0);
            }
            match self.full.recv() {
                Ok(Ok(piece)) => {
                    self.cur = Some(piece);
                    self.pos = 0;
                }
                Ok(Err(e)) => {
                    self.done = true;
                    return Err(e);
                }
                Err(_) => {
                    self.done = true;
                    return Ok(0);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    // Small pieces keep the streams of these tests small (and quick unoptimised).
    const PIECE: usize = 4096;

    fn read_aside<T>(r: &[u8], consume: impl FnOnce(&mut Pieces) -> T) -> (T, io::Result<(Digest, u64)>) {
        read_aside_in(PIECE, r, consume)
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn data(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 % 251) as u8).collect()
    }

    #[test]
    fn reads_in_any_chunk_size_and_hashes_the_whole_stream() {
        // Larger than the pieces there are, so buffers are recycled; not a multiple of any read size.
        let plain = data(PIECE * (PIECES + 1) + 12_345);
        for input in [plain.clone(), gzip(&plain)] {
            for chunk in [1usize, 511, PIECE, PIECE + 3] {
                let (got, digest) = read_aside(&input[..], |p| {
                    let mut got = Vec::new();
                    let mut buf = vec![0u8; chunk];
                    loop {
                        let n = p.read(&mut buf).unwrap();
                        if n == 0 {
                            break got;
                        }
                        got.extend_from_slice(&buf[..n]);
                    }
                });
                assert!(got == plain, "chunk {chunk}: the stream differs");
                assert_eq!(digest.unwrap(), (crate::digest::of_bytes(&plain), plain.len() as u64));
            }
        }
    }

    #[test]
    fn a_corrupt_stream_is_an_error_for_the_consumer_and_the_digest() {
        let mut bad = gzip(&data(PIECE * 2));
        let mid = bad.len() / 2;
        bad.truncate(mid);
        let (read, digest) = read_aside(&bad[..], |p| io::copy(p, &mut io::sink()));
        assert!(read.is_err());
        assert!(digest.is_err());
    }

    #[test]
    fn a_consumer_that_fails_early_stops_the_producer() {
        // Many pieces more than the channels hold: a producer that kept going would block forever.
        let plain = data(PIECE * (PIECES * 4));
        let (first, digest) = read_aside(&plain[..], |p| {
            let mut b = [0u8; 10];
            p.read_exact(&mut b).unwrap();
            b
        });
        assert_eq!(first[..], plain[..10]);
        assert!(digest.is_err(), "a stream read in part has no diffID");
    }
}
