//! Client-side outputs of a remote build: each streamed output is written by a thread of its own as its
//! bytes arrive: a file (written under a temporary name, renamed at the end), standard output, a directory
//! (the filesystem tar, or an OCI layout, unpacked into it), or `docker load`.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;

use engine::export::{Dest, OutputKind, OutputSpec};

use crate::proto::OutputData;

/// The streamed outputs of one build, by index.
pub(crate) struct OutputSinks {
    sinks: Vec<Option<Sink>>,
}

struct Sink {
    tx: Option<mpsc::SyncSender<Vec<u8>>>,
    thread: Option<JoinHandle<Result<(), String>>>,
}

/// Where one output's bytes go.
enum Target {
    File(PathBuf),
    Stdout,
    /// Unpack the tar into this (empty or new) directory.
    Unpack(PathBuf),
    DockerLoad,
}

impl OutputSinks {
    pub(crate) fn new(outputs: &[OutputSpec]) -> Result<OutputSinks, String> {
        let mut sinks = Vec::new();
        for o in outputs {
            let target = match &o.kind {
                OutputKind::Image { .. } => None,
                OutputKind::Oci { dest: Dest::Path(p), tar: false, .. } => Some(Target::Unpack(p.clone())),
                OutputKind::Oci { dest, .. } | OutputKind::Tar { dest } => Some(file_or_stdout(dest)?),
                OutputKind::Docker { dest: Some(d), .. } => Some(file_or_stdout(d)?),
                OutputKind::Docker { dest: None, .. } => Some(Target::DockerLoad),
                OutputKind::Local { dest } => Some(Target::Unpack(dest.clone())),
            };
            sinks.push(match target {
                Some(t) => Some(Sink::start(t)?),
                None => None,
            });
        }
        Ok(OutputSinks { sinks })
    }

    /// Bytes (or the end) of one output.
    pub(crate) fn data(&mut self, d: OutputData) -> Result<(), String> {
        let Some(Some(sink)) = self.sinks.get_mut(d.index as usize) else {
            return Err(format!("the daemon sent data for output {}, which streams nothing", d.index));
        };
        if !d.data.is_empty() {
            let tx = sink.tx.as_ref().ok_or("the daemon sent data after the end of an output")?;
            if tx.send(d.data).is_err() {
                // The writer stopped: its error is reported when it is joined.
                return sink.join();
            }
        }
        if d.eof {
            sink.tx = None;
            sink.join()?;
        }
        Ok(())
    }

    /// Waits for every output to be written.
    pub(crate) fn finish(&mut self) -> Result<(), String> {
        for s in self.sinks.iter_mut().flatten() {
            s.tx = None;
            s.join()?;
        }
        Ok(())
    }

    /// The build failed: stop writing (temporary files are removed).
    pub(crate) fn abandon(&mut self) {
        for s in self.sinks.iter_mut().flatten() {
            s.tx = None;
            let _ = s.join();
        }
    }
}

fn file_or_stdout(d: &Dest) -> Result<Target, String> {
    match d {
        Dest::Path(p) => Ok(Target::File(p.clone())),
        Dest::Stdout => Ok(Target::Stdout),
        Dest::Writer(_) => Err("a remote build cannot write to an in-process stream".into()),
    }
}

impl Sink {
    fn start(target: Target) -> Result<Sink, String> {
        if let Target::Unpack(dir) = &target {
            // As the local exporter: an empty or new directory only.
            if std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some()) {
                return Err(format!("export destination {}: it must be an empty or new directory", dir.display()));
            }
        }
        let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(16);
        let thread = std::thread::spawn(move || write(target, rx));
        Ok(Sink { tx: Some(tx), thread: Some(thread) })
    }

    fn join(&mut self) -> Result<(), String> {
        match self.thread.take() {
            Some(t) => t.join().map_err(|_| "an output writer panicked".to_string())?,
            None => Ok(()),
        }
    }
}

/// The chunks of an output as a reader.
struct Chunks {
    rx: mpsc::Receiver<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
}

impl Read for Chunks {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.cur.len() {
            match self.rx.recv() {
                Ok(c) => {
                    self.cur = c;
                    self.pos = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len() - self.pos);
        buf[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

fn write(target: Target, rx: mpsc::Receiver<Vec<u8>>) -> Result<(), String> {
    let mut chunks = Chunks { rx, cur: Vec::new(), pos: 0 };
    match target {
        Target::File(p) => {
            let dir = p.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
            // Mode 0666 less the umask, as any file the user writes (a temp file's 0600 would stay).
            let mut tmp = tempfile::Builder::new()
                .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666))
                .tempfile_in(dir)
                .map_err(|e| format!("cannot write in {}: {e}", dir.display()))?;
            std::io::copy(&mut chunks, tmp.as_file_mut()).map_err(|e| format!("cannot write {}: {e}", p.display()))?;
            tmp.as_file().sync_all().map_err(|e| format!("cannot write {}: {e}", p.display()))?;
            tmp.persist(&p).map_err(|e| format!("cannot write {}: {}", p.display(), e.error))?;
            Ok(())
        }
        Target::Stdout => {
            let mut out = std::io::stdout().lock();
            std::io::copy(&mut chunks, &mut out).map_err(|e| format!("cannot write to standard output: {e}"))?;
            out.flush().map_err(|e| format!("cannot write to standard output: {e}"))
        }
        Target::Unpack(dir) => {
            // Created when the first bytes arrive: a build that fails leaves no directory.
            let mut first = [0u8; 1];
            if chunks.read(&mut first).map_err(|e| format!("reading the output: {e}"))? == 0 {
                return Ok(());
            }
            std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            let mut a = tar::Archive::new(std::io::Cursor::new(first).chain(&mut chunks));
            a.set_preserve_permissions(true);
            a.set_preserve_ownerships(true);
            a.set_unpack_xattrs(true);
            a.set_overwrite(true);
            let r = a.unpack(&dir).map_err(|e| format!("exporting the filesystem to {}: {e}", dir.display()));
            // Drain what the tar reader left (padding) so the sender never blocks.
            let _ = std::io::copy(&mut chunks, &mut std::io::sink());
            r
        }
        Target::DockerLoad => {
            let mut child =
                std::process::Command::new("docker").arg("load").stdin(std::process::Stdio::piped()).spawn().map_err(
                    |e| {
                        format!(
                            "--load needs the docker CLI and a running daemon; install docker or use --output \
                         type=docker,dest=image.tar: {e}"
                        )
                    },
                )?;
            let mut stdin = child.stdin.take().ok_or("docker load has no stdin")?;
            let copied = std::io::copy(&mut chunks, &mut stdin);
            drop(stdin);
            let status = child.wait().map_err(|e| format!("waiting for docker load: {e}"))?;
            copied.map_err(|e| format!("writing to docker load: {e}"))?;
            if !status.success() {
                return Err(format!("docker load failed ({status})"));
            }
            Ok(())
        }
    }
}
