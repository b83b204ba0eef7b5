//! The build context a Docker client sends: a tar (plain, gzip, bzip2, xz or zstd, as dockerd accepts)
//! as the request body, unpacked into a private directory that the build reads as its local context.
//!
//! Nothing in the archive is trusted as a path: an entry naming `..` or an absolute path is refused, no
//! entry is written through a symbolic link an earlier entry made (`a -> /etc`, then `a/passwd`), and a
//! hard link must name a regular file the archive already holds, reached without a symbolic link. Files
//! keep their mode and mtime (the image's layers carry them); owners are root's, as a local context reads.
//! A body that ends before its declared length, or stalls, fails the unpacking with a message saying so.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use bytes::{Buf, Bytes};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::sync::mpsc;

/// How long a client may pause in the middle of a request body.
const BODY_IDLE: Duration = Duration::from_secs(120);
/// What is read (and dropped) of a body after the archive failed or ended, so the client can finish
/// sending and read the answer.
const DRAIN_LIMIT: u64 = 64 << 20;

/// Why a context could not be received.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ContextError {
    /// The request body broke off or stalled.
    #[error("{0}")]
    Body(String),
    #[error("the build context is not a tar archive (plain, gzip, bzip2, xz or zstd): {0}")]
    NotTar(String),
    /// An entry that would write outside the context or through a link.
    #[error("the build context's tar entry {path:?} {why}")]
    Unsafe { path: String, why: String },
    #[error("the build context's tar entry {path:?} is a {kind}, which a build context cannot hold")]
    Unsupported { path: String, kind: &'static str },
    /// This side failed (a full disk): not the client's fault.
    #[error("unpacking the build context into {path}: {source}")]
    Local { path: PathBuf, source: io::Error },
}

impl ContextError {
    /// Whether the client sent something wrong (rather than this side failing).
    pub(crate) fn is_client_error(&self) -> bool {
        !matches!(self, ContextError::Local { .. })
    }
}

/// What was unpacked.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Unpacked {
    pub(crate) entries: u64,
    pub(crate) bytes: u64,
}

/// A request body read from a blocking thread: chunks forwarded by [`pump`].
pub(crate) struct BodyReader {
    rx: mpsc::Receiver<Result<Bytes, String>>,
    cur: Bytes,
    failed: Option<String>,
}

impl Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(m) = &self.failed {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, m.clone()));
        }
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.cur = b,
                Some(Err(m)) => {
                    self.failed = Some(m.clone());
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, m));
                }
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        self.cur.advance(n);
        Ok(n)
    }
}

/// Forwards `body` to the returned reader (on a task of its own); a body that errors or ends before
/// `declared` bytes, or sends nothing for [`BODY_IDLE`], ends the reader with an error that says so.
pub(crate) fn pump(mut body: Incoming, declared: Option<u64>) -> BodyReader {
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        let mut got = 0u64;
        let of = |got: u64| match declared {
            Some(d) => format!("{got} of the {d} bytes declared"),
            None => format!("{got} bytes"),
        };
        let mut drained = 0u64;
        loop {
            let frame = match tokio::time::timeout(BODY_IDLE, body.frame()).await {
                Err(_) => {
                    let m = format!(
                        "the request body stalled: nothing arrived for {} s after {}",
                        BODY_IDLE.as_secs(),
                        of(got)
                    );
                    let _ = tx.send(Err(m)).await;
                    return;
                }
                Ok(None) => {
                    if declared.is_some_and(|d| got < d) {
                        let _ = tx.send(Err(format!("the request body ended after {}", of(got)))).await;
                    }
                    return;
                }
                Ok(Some(Err(e))) => {
                    let _ = tx.send(Err(format!("the request body ended after {} ({e})", of(got)))).await;
                    return;
                }
                Ok(Some(Ok(f))) => f,
            };
            let Ok(data) = frame.into_data() else { continue };
            got += data.len() as u64;
            if tx.is_closed() {
                // The reader is done (or failed): drop the rest, up to a limit.
                drained += data.len() as u64;
                if drained > DRAIN_LIMIT {
                    return;
                }
            } else if tx.send(Ok(data)).await.is_err() {
                drained = 0;
            }
        }
    });
    BodyReader { rx, cur: Bytes::new(), failed: None }
}

/// The decompressing reader for what `r` starts with: gzip, bzip2, xz, zstd, or a plain tar.
pub(crate) fn decompressed<'a>(r: impl Read + 'a) -> Result<Box<dyn Read + 'a>, ContextError> {
    let mut r = BufReader::with_capacity(64 << 10, r);
    let head = r.fill_buf().map_err(body_or_tar)?.to_vec();
    Ok(match head.as_slice() {
        [0x1f, 0x8b, ..] => Box::new(flate2::read::MultiGzDecoder::new(r)),
        [b'B', b'Z', b'h', ..] => Box::new(bzip2::read::MultiBzDecoder::new(r)),
        [0xfd, b'7', b'z', b'X', b'Z', 0x00, ..] => Box::new(xz2::read::XzDecoder::new_multi_decoder(r)),
        [0x28, 0xb5, 0x2f, 0xfd, ..] => {
            Box::new(zstd::stream::read::Decoder::with_buffer(r).map_err(|e| ContextError::NotTar(e.to_string()))?)
        }
        _ => Box::new(r),
    })
}

/// A read error: the body's own message when the body broke off, else a malformed archive.
fn body_or_tar(e: io::Error) -> ContextError {
    if e.kind() == io::ErrorKind::UnexpectedEof && e.get_ref().is_some() {
        return ContextError::Body(e.to_string());
    }
    ContextError::NotTar(e.to_string())
}

/// `p` as clean relative components; `..`, absolute paths and empty names are refused.
fn clean(p: &Path) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::Normal(n) => out.push(n.to_str().ok_or("is not UTF-8")?.to_string()),
            Component::ParentDir => {
                return Err("names a parent directory (..): it would write outside the context".into())
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err("is an absolute path: entries of a build context are relative".into())
            }
        }
    }
    Ok(out)
}

fn local(path: &Path) -> impl FnOnce(io::Error) -> ContextError + '_ {
    move |source| ContextError::Local { path: path.to_path_buf(), source }
}

/// Checks that every parent of `rel` under `root` is a real directory (creating missing ones when
/// `create`); a symbolic link or a file on the way is refused.
fn parents(root: &Path, rel: &[String], shown: &str, create: bool) -> Result<PathBuf, ContextError> {
    let mut dir = root.to_path_buf();
    for c in &rel[..rel.len().saturating_sub(1)] {
        dir.push(c);
        match fs::symlink_metadata(&dir) {
            Ok(m) if m.is_dir() => {}
            Ok(m) if m.file_type().is_symlink() => {
                return Err(ContextError::Unsafe {
                    path: shown.to_string(),
                    why: format!("goes through the symbolic link {:?} that the archive made", rel_of(root, &dir)),
                })
            }
            Ok(_) => {
                return Err(ContextError::Unsafe {
                    path: shown.to_string(),
                    why: format!("needs {:?} to be a directory, but the archive made it a file", rel_of(root, &dir)),
                })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                fs::create_dir(&dir).map_err(local(&dir))?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(ContextError::Unsafe {
                    path: shown.to_string(),
                    why: format!("links to {:?}, which the archive does not hold", rel.join("/")),
                })
            }
            Err(e) => return Err(ContextError::Local { path: dir, source: e }),
        }
    }
    Ok(root.join(rel.join("/")))
}

fn rel_of(root: &Path, p: &Path) -> String {
    p.strip_prefix(root).unwrap_or(p).display().to_string()
}

/// Makes room for a new non-directory at `path`: what an earlier entry put there goes (never followed).
fn replace(path: &Path, shown: &str) -> Result<(), ContextError> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => Err(ContextError::Unsafe {
            path: shown.to_string(),
            why: "replaces a directory an earlier entry made".into(),
        }),
        Ok(_) => fs::remove_file(path).map_err(local(path)),
        Err(_) => Ok(()),
    }
}

fn set_mtime(path: &Path, secs: u64) -> io::Result<()> {
    let t = rustix::fs::Timespec { tv_sec: secs.min(i64::MAX as u64) as i64, tv_nsec: 0 };
    let times = rustix::fs::Timestamps { last_access: t, last_modification: t };
    rustix::fs::utimensat(rustix::fs::CWD, path, &times, rustix::fs::AtFlags::SYMLINK_NOFOLLOW)?;
    Ok(())
}

/// Unpacks the (possibly compressed) tar read from `r` into the empty directory `root`.
pub(crate) fn unpack(r: impl Read, root: &Path) -> Result<Unpacked, ContextError> {
    let mut ar = tar::Archive::new(decompressed(r)?);
    let mut done = Unpacked::default();
    // Directories get their mode and mtime last: adding entries changes a directory's mtime.
    let mut dirs: Vec<(PathBuf, u32, u64)> = Vec::new();
    for entry in ar.entries().map_err(body_or_tar)? {
        let mut e = entry.map_err(body_or_tar)?;
        let raw = e.path().map_err(body_or_tar)?.into_owned();
        let shown = raw.display().to_string();
        let rel = clean(&raw).map_err(|why| ContextError::Unsafe { path: shown.clone(), why })?;
        let h = e.header();
        let kind = h.entry_type();
        let mode = h.mode().map_err(body_or_tar)? & 0o7777;
        let mtime = h.mtime().unwrap_or(0);
        done.entries += 1;
        if rel.is_empty() {
            // `./` itself.
            if kind.is_dir() {
                dirs.push((root.to_path_buf(), mode, mtime));
            }
            continue;
        }
        let path = parents(root, &rel, &shown, true)?;
        match kind {
            tar::EntryType::Directory => {
                match fs::symlink_metadata(&path) {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => {
                        return Err(ContextError::Unsafe {
                            path: shown,
                            why: "replaces a file or link an earlier entry made with a directory".into(),
                        })
                    }
                    Err(_) => fs::create_dir(&path).map_err(local(&path))?,
                }
                dirs.push((path, mode, mtime));
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                replace(&path, &shown)?;
                let mut f = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
                    .open(&path)
                    .map_err(local(&path))?;
                done.bytes += copy(&mut e, &mut f, &path)?;
                drop(f);
                fs::set_permissions(&path, fs::Permissions::from_mode(mode)).map_err(local(&path))?;
                set_mtime(&path, mtime).map_err(local(&path))?;
            }
            tar::EntryType::Symlink => {
                let target = e
                    .link_name()
                    .map_err(body_or_tar)?
                    .ok_or_else(|| ContextError::NotTar(format!("the symbolic link {shown:?} has no target")))?;
                replace(&path, &shown)?;
                // The link is content: its target is never followed while unpacking.
                std::os::unix::fs::symlink(&target, &path).map_err(local(&path))?;
                set_mtime(&path, mtime).map_err(local(&path))?;
            }
            tar::EntryType::Link => {
                let target = e
                    .link_name()
                    .map_err(body_or_tar)?
                    .ok_or_else(|| ContextError::NotTar(format!("the hard link {shown:?} has no target")))?;
                let trel = clean(&target).map_err(|why| ContextError::Unsafe {
                    path: shown.clone(),
                    why: format!("is a hard link whose target {} {why}", target.display()),
                })?;
                let tpath = parents(root, &trel, &shown, false)?;
                match fs::symlink_metadata(&tpath) {
                    Ok(m) if m.is_file() => {}
                    _ => {
                        return Err(ContextError::Unsafe {
                            path: shown,
                            why: format!("is a hard link to {:?}, which is not a file the archive holds", target),
                        })
                    }
                }
                replace(&path, &shown)?;
                fs::hard_link(&tpath, &path).map_err(local(&path))?;
            }
            tar::EntryType::XGlobalHeader | tar::EntryType::XHeader => {}
            tar::EntryType::Char => return Err(ContextError::Unsupported { path: shown, kind: "character device" }),
            tar::EntryType::Block => return Err(ContextError::Unsupported { path: shown, kind: "block device" }),
            tar::EntryType::Fifo => return Err(ContextError::Unsupported { path: shown, kind: "named pipe" }),
            _ => return Err(ContextError::Unsupported { path: shown, kind: "special entry" }),
        }
    }
    // Deepest first, so setting a parent's mtime comes after its children changed it.
    dirs.sort_by_key(|(p, _, _)| std::cmp::Reverse(p.components().count()));
    for (p, mode, mtime) in dirs {
        fs::set_permissions(&p, fs::Permissions::from_mode(mode | 0o700)).map_err(local(&p))?;
        set_mtime(&p, mtime).map_err(local(&p))?;
    }
    Ok(done)
}

/// Copies an entry's data, telling a broken body from a failed write.
fn copy(from: &mut impl Read, to: &mut File, path: &Path) -> Result<u64, ContextError> {
    let mut buf = vec![0u8; 256 << 10];
    let mut n = 0u64;
    loop {
        let k = match from.read(&mut buf) {
            Ok(0) => return Ok(n),
            Ok(k) => k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(body_or_tar(e)),
        };
        io::Write::write_all(to, &buf[..k]).map_err(local(path))?;
        n += k as u64;
    }
}

/// Reads `rel` (a path the client named, e.g. the Dockerfile) inside `root` with every symbolic link
/// resolved inside it (openat2's `RESOLVE_IN_ROOT`): nothing outside the context can be read. `None` when
/// there is no such file.
pub(crate) fn read_in_root(root: &Path, rel: &str, limit: u64) -> io::Result<Option<Vec<u8>>> {
    use rustix::fs::{Mode, OFlags, ResolveFlags};
    let dir = rustix::fs::open(root, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())?;
    let fd = match rustix::fs::openat2(
        &dir,
        rel,
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    ) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) | Err(rustix::io::Errno::NOTDIR) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let f = File::from(fd);
    if !f.metadata()?.is_file() {
        return Ok(None);
    }
    let mut out = Vec::new();
    f.take(limit + 1).read_to_end(&mut out)?;
    if out.len() as u64 > limit {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("larger than {limit} bytes")));
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn header(path: &str, kind: tar::EntryType, size: u64, mode: u32) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        // Written raw so that hostile names survive (`set_path` refuses them).
        let name = path.as_bytes();
        h.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name);
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(mode);
        h.set_mtime(1_600_000_000);
        h
    }

    fn tar_of(entries: &[(&str, tar::EntryType, &[u8], Option<&str>)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, kind, data, link) in entries {
            let mut h = header(path, *kind, data.len() as u64, 0o644);
            if let Some(l) = link {
                h.set_link_name(l).unwrap();
            }
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn a_plain_and_compressed_context_unpack_with_modes_and_times() {
        use tar::EntryType::*;
        let plain = tar_of(&[
            ("Dockerfile", Regular, b"FROM scratch\n", None),
            ("sub/", Directory, b"", None),
            ("sub/a.txt", Regular, b"hello", None),
            ("sub/link", Symlink, b"", Some("/etc/passwd")),
            ("sub/hard", Link, b"", Some("sub/a.txt")),
        ]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&plain).unwrap();
        let mut xz = xz2::write::XzEncoder::new(Vec::new(), 1);
        xz.write_all(&plain).unwrap();
        let mut bz = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
        bz.write_all(&plain).unwrap();
        for body in [plain.clone(), gz.finish().unwrap(), xz.finish().unwrap(), bz.finish().unwrap()] {
            let dir = tempfile::tempdir().unwrap();
            let done = unpack(&body[..], dir.path()).unwrap();
            assert_eq!(done.entries, 5);
            assert_eq!(fs::read(dir.path().join("sub/a.txt")).unwrap(), b"hello");
            assert_eq!(fs::read_link(dir.path().join("sub/link")).unwrap(), Path::new("/etc/passwd"));
            let m = fs::metadata(dir.path().join("sub/hard")).unwrap();
            assert_eq!(m.permissions().mode() & 0o777, 0o644);
            use std::os::unix::fs::MetadataExt;
            assert_eq!(m.mtime(), 1_600_000_000);
            assert_eq!(fs::metadata(dir.path().join("sub")).unwrap().mtime(), 1_600_000_000);
            // Reading through the link stays inside the context: /etc/passwd of the context, which is absent.
            assert_eq!(read_in_root(dir.path(), "sub/link", 1 << 20).unwrap(), None);
            assert_eq!(read_in_root(dir.path(), "sub/../Dockerfile", 1 << 20).unwrap().unwrap(), b"FROM scratch\n");
        }
    }

    #[test]
    fn hostile_entries_are_refused_by_name() {
        use tar::EntryType::*;
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (tar_of(&[("../evil", Regular, b"x", None)]), "parent directory"),
            (tar_of(&[("a/../../evil", Regular, b"x", None)]), "parent directory"),
            (tar_of(&[("/etc/evil", Regular, b"x", None)]), "absolute"),
            (tar_of(&[("a", Symlink, b"", Some("/etc")), ("a/passwd", Regular, b"x", None)]), "symbolic link"),
            (tar_of(&[("a", Symlink, b"", Some("/etc")), ("h", Link, b"", Some("a/passwd"))]), "symbolic link"),
            (tar_of(&[("h", Link, b"", Some("/etc/passwd"))]), "absolute"),
            (tar_of(&[("h", Link, b"", Some("../x"))]), "parent directory"),
            (tar_of(&[("h", Link, b"", Some("missing"))]), "not a file"),
            (tar_of(&[("p", Fifo, b"", None)]), "named pipe"),
        ];
        for (body, why) in cases {
            let dir = tempfile::tempdir().unwrap();
            let e = unpack(&body[..], dir.path()).unwrap_err();
            assert!(e.is_client_error());
            assert!(e.to_string().contains(why), "{e} (expected {why})");
        }
        let dir = tempfile::tempdir().unwrap();
        let e = unpack(&b"this is not a tar archive at all, just some words"[..], dir.path());
        // Too short to be a header: tar reads it as an archive without entries.
        assert!(e.is_ok() || matches!(e, Err(ContextError::NotTar(_))));
        let mut junk = vec![b'x'; 2048];
        junk[0] = b'a';
        let e = unpack(&junk[..], dir.path()).unwrap_err();
        assert!(matches!(e, ContextError::NotTar(_)), "{e}");
    }
}
