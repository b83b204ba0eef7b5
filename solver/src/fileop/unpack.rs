//! ADD of a local archive: detected by content (tar, optionally gzip, bzip2, xz or zstd compressed) and
//! extracted into the destination as Docker's `chrootarchive.Untar` does: owners, modes, times and
//! xattrs from the archive, everything resolved inside the extraction directory.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use rustix::fs::{self as rfs, AtFlags, FileType, Mode};
use snapshotter::resolve::clean;

use super::fsys::{self, Meta, Tree};
use super::FileOpError;

fn decompressed<'a>(f: &'a mut File) -> io::Result<Box<dyn Read + 'a>> {
    f.rewind()?;
    let mut r = BufReader::new(f);
    let magic = r.fill_buf()?.to_vec();
    Ok(if magic.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::bufread::MultiGzDecoder::new(r))
    } else if magic.starts_with(b"BZh") {
        Box::new(bzip2::bufread::MultiBzDecoder::new(r))
    } else if magic.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Box::new(xz2::bufread::XzDecoder::new_multi_decoder(r))
    } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(zstd::stream::read::Decoder::with_buffer(r)?)
    } else {
        Box::new(r)
    })
}

/// Whether the file is a tar archive (possibly compressed): its first header has a valid checksum.
pub fn is_archive(f: &mut File) -> bool {
    let Ok(mut r) = decompressed(f) else { return false };
    let mut block = [0u8; 512];
    for _ in 0..2 {
        if r.read_exact(&mut block).is_err() {
            return false;
        }
        if block.iter().any(|b| *b != 0) {
            return header_checksum_ok(&block);
        }
    }
    false
}

fn header_checksum_ok(h: &[u8; 512]) -> bool {
    let field = &h[148..156];
    let text: String = field.iter().take_while(|b| **b != 0).map(|b| *b as char).collect();
    let Ok(want) = i64::from_str_radix(text.trim(), 8) else { return false };
    let unsigned: i64 = h.iter().enumerate().map(|(i, b)| if (148..156).contains(&i) { 32 } else { *b as i64 }).sum();
    let signed: i64 =
        h.iter().enumerate().map(|(i, b)| if (148..156).contains(&i) { 32 } else { *b as i8 as i64 }).sum();
    want == unsigned || want == signed
}

/// Extracts the archive in `f` into `dest` (an existing directory). `owner` (ADD --chown) replaces every
/// entry's owner (go-archive's `TarOptions.ChownOpts`, which BuildKit's unpack sets from the chown).
pub fn extract(f: &mut File, dest: &Tree, shown: &str, owner: Option<(u32, u32)>) -> Result<(), FileOpError> {
    let fail = |what: String| move |source: io::Error| FileOpError::Io { what, source };
    let r = decompressed(f).map_err(fail(format!("read archive {shown}")))?;
    let mut ar = tar::Archive::new(r);
    let mut dirs: Vec<(Vec<Vec<u8>>, Meta)> = Vec::new();
    let entries = ar.entries().map_err(fail(format!("read archive {shown}")))?;
    for entry in entries {
        let mut entry = entry.map_err(fail(format!("read archive {shown}")))?;
        let raw = entry.path_bytes().into_owned();
        let comps = clean(&raw);
        let name_shown = String::from_utf8_lossy(&raw).into_owned();
        let efail = |source| FileOpError::Io { what: format!("extract {name_shown} from {shown}"), source };
        let h = entry.header().clone();
        let kind = h.entry_type();
        // Blank numeric fields read as 0, as Go's archive/tar does.
        let mode = h.mode().unwrap_or(0);
        let (uid, gid) = owner.unwrap_or((h.uid().unwrap_or(0) as u32, h.gid().unwrap_or(0) as u32));
        let mtime = h.mtime().unwrap_or(0) as i64;
        let mut xattrs = Vec::new();
        if let Ok(Some(exts)) = entry.pax_extensions() {
            for ext in exts.flatten() {
                if let (Ok(k), v) = (ext.key(), ext.value_bytes()) {
                    if let Some(name) = k.strip_prefix("SCHILY.xattr.") {
                        xattrs.push((name.to_string(), v.to_vec()));
                    }
                }
            }
        }
        if comps.is_empty() {
            if kind.is_dir() {
                let m = meta_of(mode, uid, gid, mtime, FileType::Directory);
                dirs.push((Vec::new(), m));
            }
            continue;
        }
        let (name, parent) = comps.split_last().expect("non-empty");
        let name = OsStr::from_bytes(name);
        let dir = dest.make_dirs(parent, &mut |_, _, _| Ok(())).map_err(efail)?;
        let existing = fsys::lstat(&dir, name).ok();
        if let Some(e) = existing {
            if !(e.is_dir() && kind.is_dir()) {
                fsys::remove_all(dir.as_fd(), name).map_err(efail)?;
            }
        }
        let ft = if kind.is_dir() {
            if existing.is_none_or(|e| !e.is_dir()) {
                rfs::mkdirat(&dir, name, Mode::from_raw_mode(0o700)).map_err(io::Error::from).map_err(efail)?;
            }
            FileType::Directory
        } else if kind.is_file() || kind == tar::EntryType::Continuous || kind == tar::EntryType::GNUSparse {
            let mut out = fsys::create_file(&dir, name, 0o600).map_err(efail)?;
            io::copy(&mut entry, &mut out).map_err(efail)?;
            FileType::RegularFile
        } else if kind.is_symlink() {
            let target = entry.link_name_bytes().map(|t| t.into_owned()).unwrap_or_default();
            rfs::symlinkat(OsStr::from_bytes(&target), &dir, name).map_err(io::Error::from).map_err(efail)?;
            FileType::Symlink
        } else if kind.is_hard_link() {
            let target = entry.link_name_bytes().map(|t| t.into_owned()).unwrap_or_default();
            let tcomps = clean(&target);
            let Some((tname, tparent)) = tcomps.split_last() else {
                return Err(FileOpError::Invalid(format!("{shown}: hardlink {name_shown} has an empty target")));
            };
            let tdir: OwnedFd = dest.open_dir(tparent).map_err(efail)?;
            rfs::linkat(&tdir, OsStr::from_bytes(tname), &dir, name, AtFlags::empty())
                .map_err(io::Error::from)
                .map_err(efail)?;
            continue;
        } else if kind.is_character_special() || kind.is_block_special() || kind.is_fifo() {
            let ft = if kind.is_character_special() {
                FileType::CharacterDevice
            } else if kind.is_block_special() {
                FileType::BlockDevice
            } else {
                FileType::Fifo
            };
            let maj = h.device_major().ok().flatten().unwrap_or(0);
            let min = h.device_minor().ok().flatten().unwrap_or(0);
            let rdev = rustix::fs::makedev(maj, min);
            let m = Meta { rdev, ..meta_of(mode, uid, gid, mtime, ft) };
            fsys::mknod(&dir, name, &m).map_err(efail)?;
            ft
        } else {
            // Global headers and other metadata-only entries.
            continue;
        };
        let m = meta_of(mode, uid, gid, mtime, ft);
        if ft == FileType::Directory {
            fsys::set_xattrs(&dir, name, &xattrs);
            dirs.push((comps.clone(), m));
            continue;
        }
        apply(&dir, name, &m, &xattrs).map_err(efail)?;
    }
    // Directory metadata last, deepest first, once their contents stopped changing them.
    let mut seen = HashMap::new();
    for (comps, m) in dirs.into_iter().rev() {
        if seen.insert(comps.clone(), ()).is_some() {
            continue;
        }
        let shown_dir = fsys::display(&comps);
        let efail = |source| FileOpError::Io { what: format!("extract {shown_dir} from {shown}"), source };
        match comps.split_last() {
            Some((name, parent)) => {
                let dir = dest.open_dir(parent).map_err(efail)?;
                apply(&dir, OsStr::from_bytes(name), &m, &[]).map_err(efail)?;
            }
            None => {
                let root = dest.root.fd().try_clone_to_owned().map_err(efail)?;
                apply(&root, OsStr::new("."), &m, &[]).map_err(efail)?;
            }
        }
    }
    Ok(())
}

fn meta_of(mode: u32, uid: u32, gid: u32, mtime: i64, ft: FileType) -> Meta {
    Meta {
        dev: 0,
        ino: 0,
        mode: ft.as_raw_mode() | (mode & 0o7777),
        nlink: 1,
        uid,
        gid,
        rdev: 0,
        size: 0,
        atime: (mtime, 0),
        mtime: (mtime, 0),
        ctime: (mtime, 0),
    }
}

fn apply(dir: &OwnedFd, name: &OsStr, m: &Meta, xattrs: &[(String, Vec<u8>)]) -> io::Result<()> {
    fsys::chown(dir, name, m.uid, m.gid)?;
    fsys::set_xattrs(dir, name, xattrs);
    if !m.is_symlink() {
        fsys::chmod(dir, name, m.mode)?;
    }
    fsys::set_times(dir, name, m.atime, m.mtime)
}
