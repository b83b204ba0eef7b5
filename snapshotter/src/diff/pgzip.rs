//! Parallel gzip: the stream is cut into fixed 1 MiB chunks, each compressed on its own thread as a
//! separate gzip member, and the members are written in order. Concatenated members are one valid gzip
//! stream (RFC 1952 section 2.2; Go's gzip reader, used by containerd, docker and umoci, reads them all),
//! and because the cut points do not depend on the thread count the output is the same on every machine.

use std::io::{self, Write};

/// Bytes per gzip member.
const CHUNK: usize = 1 << 20;

/// A gzip writer compressing chunks on several threads.
pub struct ParallelGzip<W: Write> {
    out: W,
    buf: Vec<u8>,
    pending: Vec<Vec<u8>>,
    workers: usize,
    level: u32,
    members: u64,
}

fn member(data: &[u8], level: u32) -> io::Result<Vec<u8>> {
    let mut e =
        flate2::GzBuilder::new().mtime(0).write(Vec::with_capacity(data.len() / 2), flate2::Compression::new(level));
    e.write_all(data)?;
    e.finish()
}

impl<W: Write> ParallelGzip<W> {
    pub fn new(out: W, level: u32, workers: usize) -> Self {
        ParallelGzip {
            out,
            buf: Vec::with_capacity(CHUNK),
            pending: Vec::new(),
            workers: workers.max(1),
            level,
            members: 0,
        }
    }

    fn flush_pending(&mut self) -> io::Result<()> {
        let level = self.level;
        let chunks = std::mem::take(&mut self.pending);
        let results: Vec<io::Result<Vec<u8>>> = if chunks.len() == 1 {
            vec![member(&chunks[0], level)]
        } else {
            std::thread::scope(|s| {
                let handles: Vec<_> = chunks.iter().map(|c| s.spawn(move || member(c, level))).collect();
                handles
                    .into_iter()
                    .map(|h| h.join().unwrap_or_else(|_| Err(io::Error::other("gzip worker panicked"))))
                    .collect()
            })
        };
        for r in results {
            self.out.write_all(&r?)?;
            self.members += 1;
        }
        Ok(())
    }

    /// Compresses what is left and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        if !self.buf.is_empty() || (self.members == 0 && self.pending.is_empty()) {
            let last = std::mem::take(&mut self.buf);
            self.pending.push(last);
        }
        if !self.pending.is_empty() {
            self.flush_pending()?;
        }
        self.out.flush()?;
        Ok(self.out)
    }
}

impl<W: Write> Write for ParallelGzip<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            let full = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
            self.pending.push(full);
            if self.pending.len() >= self.workers {
                self.flush_pending()?;
            }
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        // Members are cut at fixed offsets only; flushing early would change the output.
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn compress(data: &[u8], workers: usize) -> Vec<u8> {
        let mut g = ParallelGzip::new(Vec::new(), 6, workers);
        for c in data.chunks(77_777) {
            g.write_all(c).unwrap();
        }
        g.finish().unwrap()
    }

    #[test]
    fn same_output_for_any_worker_count_and_decodes() {
        let data: Vec<u8> = (0..5_300_000u32).map(|i| (i % 251) as u8 ^ (i >> 12) as u8).collect();
        let one = compress(&data, 1);
        assert_eq!(one, compress(&data, 4));
        let mut back = Vec::new();
        flate2::read::MultiGzDecoder::new(&one[..]).read_to_end(&mut back).unwrap();
        assert_eq!(back, data);
        let empty = compress(&[], 3);
        let mut back = Vec::new();
        flate2::read::MultiGzDecoder::new(&empty[..]).read_to_end(&mut back).unwrap();
        assert!(back.is_empty() && !empty.is_empty());
    }
}
