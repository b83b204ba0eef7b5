//! The client's side of context sync: list a context with the build's filters, hash files, read them. A
//! daemon may ask only for paths this client listed for that context, and symlinks are never followed, so
//! a daemon cannot read anything outside what the build's context holds.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{self, AtFlags, OFlags};

use sha2::{Digest as _, Sha256};
use solver::fileop::select::{Filter, Visit};

use crate::proto::FileStat;

/// A file type the sync carries.
pub(crate) fn kind(mode: u32) -> Option<char> {
    match mode & 0o170000 {
        0o040000 => Some('d'),
        0o100000 => Some('f'),
        0o120000 => Some('l'),
        _ => None,
    }
}

/// Every path under `root` the filters select, parents before children, sorted: directories, regular files
/// and symlinks (sockets, devices and fifos are not part of a build context). Blocking.
///
/// Each directory is read and its entries stat'ed through the directory's own descriptor (`fstatat`), so a
/// stat costs no path walk from the root, and no symlink is ever followed below the root. The subtrees of
/// the first directory holding several are walked on a few threads: a stat of a cached inode is all CPU.
pub(crate) fn list(root: &Path, include: &[String], exclude: &[String]) -> Result<Vec<FileStat>, String> {
    let filter = Filter::new(include, exclude).map_err(|e| format!("invalid context filter: {e}"))?;
    let dir = fs::open(root, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, fs::Mode::empty())
        .map_err(|e| format!("cannot read {}: {e}", root.display()))?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(MAX_THREADS));
    let mut out = Vec::new();
    Walk { root, filter: &filter }.dir(&dir, "", threads, &mut out)?;
    Ok(out)
}

/// Threads a listing uses at most.
const MAX_THREADS: usize = 4;

struct Walk<'a> {
    root: &'a Path,
    filter: &'a Filter,
}

impl Walk<'_> {
    /// Appends the entries under `dir` (at `rel`) to `out`, each directory followed by its own; the
    /// subdirectories on up to `threads` threads when there are several.
    fn dir(&self, dir: &OwnedFd, rel: &str, threads: usize, out: &mut Vec<FileStat>) -> Result<(), String> {
        let own = self.entries(dir, rel)?;
        let subdirs: Vec<&str> = own.iter().filter(|s| kind(s.mode) == Some('d')).map(|s| s.path.as_str()).collect();
        let mut subtrees: Vec<Vec<FileStat>> = Vec::with_capacity(subdirs.len());
        if threads > 1 && subdirs.len() > 1 {
            let next = std::sync::atomic::AtomicUsize::new(0);
            let done: Vec<std::sync::Mutex<Result<Vec<FileStat>, String>>> =
                subdirs.iter().map(|_| std::sync::Mutex::new(Ok(Vec::new()))).collect();
            std::thread::scope(|scope| {
                for _ in 0..threads.min(subdirs.len()) {
                    scope.spawn(|| loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(path) = subdirs.get(i) else { break };
                        let mut sub = Vec::new();
                        let r = self.subdir(dir, path, 1, &mut sub).map(|_| sub);
                        let failed = r.is_err();
                        *done[i].lock().unwrap_or_else(|e| e.into_inner()) = r;
                        if failed {
                            break;
                        }
                    });
                }
            });
            for d in done {
                subtrees.push(d.into_inner().unwrap_or_else(|e| e.into_inner())?);
            }
        } else {
            for path in &subdirs {
                let mut sub = Vec::new();
                self.subdir(dir, path, threads, &mut sub)?;
                subtrees.push(sub);
            }
        }
        let mut subtrees = subtrees.into_iter();
        for s in own {
            let is_dir = kind(s.mode) == Some('d');
            out.push(s);
            if is_dir {
                out.extend(subtrees.next().unwrap_or_default());
            }
        }
        Ok(())
    }

    /// [`dir`](Self::dir) of the subdirectory at `path`, opened through its parent without following a
    /// symlink.
    fn subdir(&self, parent: &OwnedFd, path: &str, threads: usize, out: &mut Vec<FileStat>) -> Result<(), String> {
        let name = path.rsplit('/').next().unwrap_or(path);
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let sub = fs::openat(parent, name, flags, fs::Mode::empty())
            .map_err(|e| format!("cannot read {}: {e}", self.root.join(path).display()))?;
        self.dir(&sub, path, threads, out)
    }

    /// The entries of one directory the filters select, sorted by name.
    fn entries(&self, dir: &OwnedFd, rel: &str) -> Result<Vec<FileStat>, String> {
        let shown = || if rel.is_empty() { self.root.to_path_buf() } else { self.root.join(rel) };
        let cannot_read = |e: rustix::io::Errno| format!("cannot read {}: {e}", shown().display());
        let mut names = Vec::new();
        for entry in fs::Dir::read_from(dir).map_err(cannot_read)? {
            let name = entry.map_err(cannot_read)?.file_name().to_bytes().to_vec();
            if name == b"." || name == b".." {
                continue;
            }
            match String::from_utf8(name) {
                Ok(n) => names.push(n),
                Err(e) => {
                    let name = String::from_utf8_lossy(e.as_bytes()).into_owned();
                    return Err(format!(
                        "{}: a file name that is not UTF-8 cannot be sent",
                        shown().join(name).display()
                    ));
                }
            }
        }
        names.sort();
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            let path = if rel.is_empty() { name.clone() } else { format!("{rel}/{name}") };
            let st = fs::statat(dir, name.as_str(), AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|e| format!("cannot stat {path}: {e}"))?;
            let (mode, uid, gid, size, mtime_ns, ctime_ns) = stat_fields(&st);
            let Some(k) = kind(mode) else { continue };
            let visit = self.filter.check(&path, k == 'd').map_err(|e| format!("invalid context filter: {e}"))?;
            if visit == Visit::Skip {
                continue;
            }
            let link_target = if k == 'l' {
                let t = fs::readlinkat(dir, name.as_str(), Vec::new())
                    .map_err(|e| format!("cannot read link {path}: {e}"))?;
                t.into_string().map_err(|_| format!("{path}: a link target that is not UTF-8 cannot be sent"))?
            } else {
                String::new()
            };
            let size = if k == 'f' { size } else { 0 };
            out.push(FileStat { path, mode, uid, gid, size, mtime_ns, link_target, ctime_ns });
        }
        Ok(out)
    }
}

/// Mode, uid, gid, size and modification and change times (ns) of a stat, whose field types differ by
/// architecture.
#[allow(clippy::unnecessary_cast)]
fn stat_fields(st: &fs::Stat) -> (u32, u32, u32, u64, i64, i64) {
    let ns = |sec: i64, nsec: i64| sec * 1_000_000_000 + nsec;
    (
        st.st_mode as u32,
        st.st_uid as u32,
        st.st_gid as u32,
        st.st_size as u64,
        ns(st.st_mtime as i64, st.st_mtime_nsec as i64),
        ns(st.st_ctime as i64, st.st_ctime_nsec as i64),
    )
}

/// The digest of a listing, as the client sends it and the daemon records it: the protobuf encoding of
/// every entry, in order, each length-prefixed. Equal digests mean equal listings, so a daemon holding a
/// listing with this digest needs none of its entries again.
pub(crate) fn listing_digest(listing: &[FileStat]) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(b"rbuild listing v1\0");
    for s in listing {
        h.update(prost::Message::encode_length_delimited_to_vec(s));
    }
    h.finalize().to_vec()
}

/// A relative, slash-separated path with only normal components, as the protocol carries them.
pub(crate) fn is_clean(rel: &str) -> bool {
    !rel.is_empty()
        && !rel.contains('\0')
        && Path::new(rel).components().all(|c| matches!(c, Component::Normal(_)))
        && !rel.ends_with('/')
}

/// What one context offered: its root and the regular files it listed.
pub(crate) struct Offered {
    pub(crate) root: PathBuf,
    pub(crate) files: BTreeSet<String>,
}

impl Offered {
    /// Opens a file the context listed, without following a symlink.
    pub(crate) fn open(&self, rel: &str) -> Result<File, String> {
        if !is_clean(rel) || !self.files.contains(rel) {
            return Err(format!("the daemon asked for {rel:?}, which this context did not offer"));
        }
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(self.root.join(rel))
            .map_err(|e| format!("cannot read {rel}: {e}"))
    }

    /// The sha256 of a listed file. Blocking.
    pub(crate) fn hash(&self, rel: &str) -> Result<Vec<u8>, String> {
        let mut f = self.open(rel)?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = f.read(&mut buf).map_err(|e| format!("cannot read {rel}: {e}"))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        Ok(h.finalize().to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing_follows_the_filters_and_never_a_symlink() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        std::fs::create_dir_all(r.join("src/sub")).unwrap();
        std::fs::create_dir_all(r.join("node_modules/x")).unwrap();
        std::fs::write(r.join("src/a.rs"), "a").unwrap();
        std::fs::write(r.join("src/sub/b.rs"), "bb").unwrap();
        std::fs::write(r.join("node_modules/x/i.js"), "i").unwrap();
        std::os::unix::fs::symlink("/etc", r.join("etc")).unwrap();
        let all = list(r, &[], &["node_modules".into()]).unwrap();
        let paths: Vec<&str> = all.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["etc", "src", "src/a.rs", "src/sub", "src/sub/b.rs"]);
        assert_eq!(all[0].link_target, "/etc");
        assert_eq!(all[4].size, 2);
        let offered = Offered { root: r.to_path_buf(), files: ["src/a.rs".to_string()].into() };
        assert_eq!(offered.hash("src/a.rs").unwrap(), Sha256::digest(b"a").to_vec());
        for bad in ["etc/passwd", "../x", "/etc/passwd", "src/sub/b.rs", "node_modules/x/i.js"] {
            assert!(offered.open(bad).is_err(), "{bad} was served");
        }
    }

    /// The listing walked on threads is the one a single thread gives: parents first, sorted, every
    /// subtree after its directory.
    #[test]
    fn a_listing_on_threads_is_in_walk_order() {
        fn reference(root: &Path, rel: &str, out: &mut Vec<String>) {
            let mut names: Vec<String> = std::fs::read_dir(root.join(rel))
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            names.sort();
            for n in names {
                let path = if rel.is_empty() { n } else { format!("{rel}/{n}") };
                out.push(path.clone());
                if std::fs::symlink_metadata(root.join(&path)).unwrap().is_dir() {
                    reference(root, &path, out);
                }
            }
        }
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        std::fs::write(r.join("top"), "t").unwrap();
        for d in 0..7 {
            for e in 0..3 {
                let dir = r.join(format!("src/d{d}/e{e}"));
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(dir.join("f"), format!("{d}{e}")).unwrap();
            }
            std::fs::write(r.join(format!("src/d{d}/z")), "z").unwrap();
        }
        std::fs::write(r.join("src/a"), "a").unwrap();
        let mut want = Vec::new();
        reference(r, "", &mut want);
        let got: Vec<String> = list(r, &[], &[]).unwrap().into_iter().map(|s| s.path).collect();
        assert_eq!(got, want);
        // An unreadable subtree fails the listing, whichever thread reads it.
        use std::os::unix::ffi::OsStrExt;
        std::fs::write(r.join(std::ffi::OsStr::from_bytes(b"src/d5/\xff")), "").unwrap();
        let err = list(r, &[], &[]).unwrap_err();
        assert!(err.contains("not UTF-8") && err.contains("src/d5"), "{err}");
    }

    #[test]
    fn only_clean_relative_paths_pass() {
        assert!(is_clean("a/b.txt"));
        for bad in ["", "/a", "a/../b", "./a", "a/", "a\0b", ".."] {
            assert!(!is_clean(bad), "{bad:?}");
        }
    }
}
