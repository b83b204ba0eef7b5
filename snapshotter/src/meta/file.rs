//! The database file as redb's storage backend: redb's own file backend, except that a sync after
//! writes to the file header alone is skipped.
//!
//! The metadata database is handed between processes many times a second while builds run (see the
//! parent module), and redb writes its header alone three times per hand-over: on open (the
//! "recovery required" flag set), at the end of the allocator-state commit on close (the primary slot
//! swapped), and on close (the flag cleared). With a sync after each, a hand-over cost four fsyncs, and
//! on a host busy writing (a CI machine compiling) one fsync can take a hundred milliseconds or more; a
//! reader such as `rbuild images` waited seconds for its turn. Processes on one host see each other's
//! writes through the page cache without any sync, so those syncs only matter if the machine crashes.
//!
//! Why skipping them keeps a crash safe: a header write alone changes no page it points at. Every page
//! the new header refers to was made durable by an earlier sync (each commit of table data writes pages
//! and the header together, and that sync is never skipped), so whether a crash keeps the new header
//! or the previous one, the header on disk points at durable pages. A lost "clean" flag costs a
//! repair on the next open (redb repairs whatever is marked as needing it); a lost primary-slot swap of
//! the allocator-state commit leaves the previous commit as the primary, which holds the same tables.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};

use redb::{DatabaseError, StorageBackend};

/// The size of redb's file header (magic, flags and the two commit slots); it always writes it whole,
/// at offset 0, and nothing else starts there. Should a later redb write a longer header, those writes
/// count as pages and are synced: the rule errs towards a sync, never away from one.
const HEADER_SIZE: usize = 320;

/// The database file, locked by this process (as redb's own backend does) while it is open.
#[derive(Debug)]
pub(super) struct DbFile {
    file: File,
    /// Something other than the header was written (or the length changed) since the last sync.
    pages_dirty: AtomicBool,
    /// The syncs that reached the disk.
    #[cfg(test)]
    synced: std::sync::atomic::AtomicUsize,
}

impl DbFile {
    /// Takes the file; fails with [`DatabaseError::DatabaseAlreadyOpen`] while another open file holds
    /// it (the same exclusive flock redb's file backend takes).
    pub(super) fn new(file: File) -> Result<DbFile, DatabaseError> {
        match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            // Clean at first: whatever another process wrote before it closed the file was synced
            // before its header said "clean" (this rule); a process killed mid-turn left the header
            // saying "recovery required", and the repair on open writes and syncs pages.
            Ok(()) => Ok(DbFile {
                file,
                pages_dirty: AtomicBool::new(false),
                #[cfg(test)]
                synced: Default::default(),
            }),
            Err(rustix::io::Errno::WOULDBLOCK) => Err(DatabaseError::DatabaseAlreadyOpen),
            Err(e) => Err(io::Error::from(e).into()),
        }
    }
}

impl StorageBackend for DbFile {
    fn len(&self) -> Result<u64, io::Error> {
        Ok(self.file.metadata()?.len())
    }

    fn read(&self, offset: u64, len: usize) -> Result<Vec<u8>, io::Error> {
        let mut buffer = vec![0; len];
        self.file.read_exact_at(&mut buffer, offset)?;
        Ok(buffer)
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        self.pages_dirty.store(true, Ordering::SeqCst);
        self.file.set_len(len)
    }

    fn sync_data(&self, _eventual: bool) -> Result<(), io::Error> {
        if !self.pages_dirty.swap(false, Ordering::SeqCst) {
            // Only the header changed since the last sync: see the module docs.
            return Ok(());
        }
        #[cfg(test)]
        self.synced.fetch_add(1, Ordering::SeqCst);
        let synced = self.file.sync_data();
        if synced.is_err() {
            self.pages_dirty.store(true, Ordering::SeqCst);
        }
        synced
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        if offset != 0 || data.len() > HEADER_SIZE {
            self.pages_dirty.store(true, Ordering::SeqCst);
        }
        self.file.write_all_at(data, offset)
    }
}

impl Drop for DbFile {
    fn drop(&mut self) {
        let _ = rustix::fs::flock(&self.file, rustix::fs::FlockOperation::Unlock);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn synced(f: &DbFile) -> usize {
        f.synced.load(Ordering::SeqCst)
    }

    #[test]
    fn a_sync_after_header_writes_alone_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let f = DbFile::new(File::options().read(true).write(true).create(true).truncate(false).open(&path).unwrap())
            .unwrap();
        f.write(0, &[1; HEADER_SIZE]).unwrap();
        f.sync_data(false).unwrap();
        assert_eq!(synced(&f), 0, "a header alone was synced");
        f.write(8192, &[2; 4096]).unwrap();
        f.write(0, &[3; HEADER_SIZE]).unwrap();
        f.sync_data(false).unwrap();
        assert_eq!(synced(&f), 1, "pages and header were not synced");
        f.sync_data(false).unwrap();
        f.set_len(16384).unwrap();
        f.sync_data(false).unwrap();
        assert_eq!(synced(&f), 2, "a length change was not synced");
        f.write(0, &[4; 4096]).unwrap();
        f.sync_data(false).unwrap();
        assert_eq!(synced(&f), 3, "a write past the header at offset 0 was not synced");
        assert_eq!(f.read(0, 4).unwrap(), [4; 4]);
    }

    #[test]
    fn a_second_open_file_is_refused_while_one_holds_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let open = || File::options().read(true).write(true).create(true).truncate(false).open(&path).unwrap();
        let first = DbFile::new(open()).unwrap();
        assert!(matches!(DbFile::new(open()), Err(DatabaseError::DatabaseAlreadyOpen)));
        drop(first);
        DbFile::new(open()).unwrap();
    }
}
