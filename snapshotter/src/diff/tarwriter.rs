//! Writes changes as OCI layer tar entries: whiteouts as `.wh.` files, hardlinks as links, devices with
//! their numbers, PAX records for long names and xattrs, no host user names, times clamped to
//! SOURCE_DATE_EPOCH when given.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use tar::{EntryType, Header};

use super::changes::Change;
use crate::sys;

/// Streams entries into a tar archive.
pub struct TarWriter<W: Write> {
    builder: tar::Builder<W>,
    /// First path written for each (dev, inode) with more than one link.
    links: HashMap<(u64, u64), Vec<u8>>,
    epoch: Option<u64>,
}

/// The byte form of a relative path as it goes into the archive.
fn name_bytes(p: &Path) -> Vec<u8> {
    p.as_os_str().as_bytes().to_vec()
}

/// Puts `name` into the header's ustar name/prefix fields; false when it does not fit (PAX needed).
fn set_ustar_name(h: &mut Header, name: &[u8]) -> bool {
    let Some(u) = h.as_ustar_mut() else { return false };
    if name.len() <= 100 {
        u.name[..name.len()].copy_from_slice(name);
        return true;
    }
    // Split at a '/' so that the prefix fits 155 bytes and the rest 100.
    let mut split = None;
    for (i, b) in name.iter().enumerate() {
        if *b == b'/' && i <= 155 && name.len() - i - 1 <= 100 && name.len() - i - 1 > 0 {
            split = Some(i);
            break;
        }
    }
    match split {
        Some(i) => {
            u.prefix[..i].copy_from_slice(&name[..i]);
            u.name[..name.len() - i - 1].copy_from_slice(&name[i + 1..]);
            true
        }
        None => {
            u.name.copy_from_slice(&name[..100]);
            false
        }
    }
}

impl<W: Write> TarWriter<W> {
    pub fn new(w: W, epoch: Option<u64>) -> Self {
        let mut builder = tar::Builder::new(w);
        builder.mode(tar::HeaderMode::Complete);
        TarWriter { builder, links: HashMap::new(), epoch }
    }

    fn clamp(&self, t: i64) -> u64 {
        let t = t.max(0) as u64;
        match self.epoch {
            Some(e) => t.min(e),
            None => t,
        }
    }

    /// Writes one change.
    pub fn change(&mut self, c: &Change) -> io::Result<()> {
        match c {
            Change::Whiteout { path } => {
                let name = path.file_name().map(|n| n.as_bytes()).unwrap_or_default();
                let mut wh = b".wh.".to_vec();
                wh.extend_from_slice(name);
                let p = path.parent().map(|d| d.join(std::ffi::OsStr::from_bytes(&wh))).unwrap_or_default();
                self.marker(&name_bytes(&p))
            }
            Change::Opaque { dir } => self.marker(&name_bytes(&dir.join(".wh..wh..opq"))),
            Change::Write { path, source, meta } => self.entry(path, source, meta),
        }
    }

    /// An empty regular file used as a whiteout marker.
    fn marker(&mut self, name: &[u8]) -> io::Result<()> {
        let mut h = Header::new_ustar();
        h.set_entry_type(EntryType::Regular);
        h.set_mode(0o644);
        // Owners written as numbers (containerd does the same): strict readers reject empty numeric fields.
        h.set_uid(0);
        h.set_gid(0);
        h.set_size(0);
        h.set_mtime(self.epoch.unwrap_or(0));
        self.write_header(h, name, None, &[], io::empty())
    }

    fn entry(&mut self, path: &Path, source: &Path, m: &fs::Metadata) -> io::Result<()> {
        let ft = m.file_type();
        let mut name = name_bytes(path);
        let mut h = Header::new_ustar();
        h.set_mode(m.mode() & 0o7777);
        h.set_uid(m.uid() as u64);
        h.set_gid(m.gid() as u64);
        h.set_mtime(self.clamp(m.mtime()));
        h.set_size(0);
        let mut link: Option<Vec<u8>> = None;
        let mut data: Option<File> = None;
        if !ft.is_dir() && m.nlink() > 1 {
            if let Some(first) = self.links.get(&(m.dev(), m.ino())) {
                h.set_entry_type(EntryType::Link);
                let first = first.clone();
                return self.write_header(h, &name, Some(&first), &[], io::empty());
            }
            self.links.insert((m.dev(), m.ino()), name.clone());
        }
        if ft.is_dir() {
            h.set_entry_type(EntryType::Directory);
            name.push(b'/');
        } else if ft.is_file() {
            h.set_entry_type(EntryType::Regular);
            h.set_size(m.len());
            data = Some(File::open(source)?);
        } else if ft.is_symlink() {
            h.set_entry_type(EntryType::Symlink);
            link = Some(fs::read_link(source)?.as_os_str().as_bytes().to_vec());
        } else if ft.is_char_device() || ft.is_block_device() {
            let ty = if ft.is_char_device() { EntryType::Char } else { EntryType::Block };
            h.set_entry_type(ty);
            let (maj, min) = sys::dev_numbers(m.rdev());
            h.set_device_major(maj)?;
            h.set_device_minor(min)?;
        } else if ft.is_fifo() {
            h.set_entry_type(EntryType::Fifo);
        } else {
            // Sockets are runtime state, not content.
            return Ok(());
        }
        let mut xattrs = Vec::new();
        for n in sys::list_xattrs(source)? {
            if n.starts_with("trusted.overlay.") || n.starts_with("user.overlay.") {
                continue;
            }
            if let Some(v) = sys::get_xattr(source, &n)? {
                xattrs.push((format!("SCHILY.xattr.{n}"), v));
            }
        }
        xattrs.sort();
        match data {
            Some(f) => {
                // The size in the header was taken from the same stat; a file that changes while it is
                // read is an error rather than a corrupt archive.
                let expect = m.len();
                let mut r = io::Read::take(f, expect);
                let mut counted = CountingReader { inner: &mut r, n: 0 };
                self.write_header(h, &name, link.as_deref(), &xattrs, &mut counted)?;
                if counted.n != expect {
                    return Err(io::Error::other(format!("{} changed size while it was archived", source.display())));
                }
                Ok(())
            }
            None => self.write_header(h, &name, link.as_deref(), &xattrs, io::empty()),
        }
    }

    fn write_header(
        &mut self,
        mut h: Header,
        name: &[u8],
        link: Option<&[u8]>,
        xattrs: &[(String, Vec<u8>)],
        data: impl io::Read,
    ) -> io::Result<()> {
        let mut pax: Vec<(String, Vec<u8>)> = Vec::new();
        if !set_ustar_name(&mut h, name) {
            pax.push(("path".into(), name.to_vec()));
        }
        if let Some(l) = link {
            let slot = &mut h.as_old_mut().linkname;
            if l.len() <= slot.len() {
                slot[..l.len()].copy_from_slice(l);
            } else {
                slot.copy_from_slice(&l[..100]);
                pax.push(("linkpath".into(), l.to_vec()));
            }
        }
        pax.extend(xattrs.iter().cloned());
        if !pax.is_empty() {
            self.builder.append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), v.as_slice())))?;
        }
        h.set_cksum();
        self.builder.append(&h, data)
    }

    /// Finishes the archive (two zero blocks) and returns the writer.
    pub fn finish(self) -> io::Result<W> {
        self.builder.into_inner()
    }
}

struct CountingReader<'a, R> {
    inner: &'a mut R,
    n: u64,
}

impl<R: io::Read> io::Read for CountingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.n += n as u64;
        Ok(n)
    }
}
