//! A [`Syscall`] double that records every call and simulates a filesystem of known paths, so the rootfs
//! logic can be checked without root (youki's `syscall/test.rs`).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use super::{MountFlags, Syscall};

/// One recorded call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Mount { source: String, target: PathBuf, fstype: String, flags: MountFlags, data: String },
    Umount { target: PathBuf, detach: bool },
    PivotRoot { new_root: PathBuf, put_old: PathBuf },
    Chdir(PathBuf),
    Unshare(libc::c_int),
    Sethostname(String),
    LoopbackUp,
    Mkdir(PathBuf),
    CreateFile(PathBuf),
    Symlink { target: PathBuf, link: PathBuf },
    CopyDevice { host: PathBuf, target: PathBuf },
}

/// What the double believes exists at a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Dir,
    File,
    Symlink(PathBuf),
}

#[derive(Debug, Default)]
pub struct RecordingSyscall {
    pub calls: RefCell<Vec<Call>>,
    pub fs: RefCell<BTreeMap<PathBuf, Node>>,
    /// Mount targets whose mount fails with EPERM.
    pub failing_mounts: RefCell<Vec<PathBuf>>,
}

impl RecordingSyscall {
    pub fn with_dirs(dirs: &[&str]) -> RecordingSyscall {
        let s = RecordingSyscall::default();
        for d in dirs {
            s.fs.borrow_mut().insert(PathBuf::from(d), Node::Dir);
        }
        s
    }

    pub fn calls(&self) -> Vec<Call> {
        self.calls.borrow().clone()
    }

    /// The mount calls only.
    pub fn mounts(&self) -> Vec<Call> {
        self.calls().into_iter().filter(|c| matches!(c, Call::Mount { .. })).collect()
    }

    fn record(&self, c: Call) {
        self.calls.borrow_mut().push(c);
    }
}

impl Syscall for RecordingSyscall {
    fn mount(&self, source: &str, target: &Path, fstype: &str, flags: MountFlags, data: &str) -> io::Result<()> {
        self.record(Call::Mount {
            source: source.into(),
            target: target.into(),
            fstype: fstype.into(),
            flags,
            data: data.into(),
        });
        if self.failing_mounts.borrow().iter().any(|p| p == target) {
            return Err(io::Error::from_raw_os_error(libc::EPERM));
        }
        Ok(())
    }

    fn umount(&self, target: &Path, detach: bool) -> io::Result<()> {
        self.record(Call::Umount { target: target.into(), detach });
        Ok(())
    }

    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> io::Result<()> {
        self.record(Call::PivotRoot { new_root: new_root.into(), put_old: put_old.into() });
        Ok(())
    }

    fn chdir(&self, path: &Path) -> io::Result<()> {
        self.record(Call::Chdir(path.into()));
        Ok(())
    }

    fn unshare(&self, flags: libc::c_int) -> io::Result<()> {
        self.record(Call::Unshare(flags));
        Ok(())
    }

    fn sethostname(&self, name: &str) -> io::Result<()> {
        self.record(Call::Sethostname(name.into()));
        Ok(())
    }

    fn loopback_up(&self) -> io::Result<()> {
        self.record(Call::LoopbackUp);
        Ok(())
    }

    fn read_link(&self, path: &Path) -> io::Result<Option<PathBuf>> {
        Ok(match self.fs.borrow().get(path) {
            Some(Node::Symlink(t)) => Some(t.clone()),
            _ => None,
        })
    }

    fn stat_is_dir(&self, path: &Path) -> io::Result<Option<bool>> {
        Ok(self.fs.borrow().get(path).map(|n| *n == Node::Dir))
    }

    fn mkdir(&self, path: &Path, _mode: u32) -> io::Result<()> {
        self.record(Call::Mkdir(path.into()));
        if self.fs.borrow_mut().insert(path.into(), Node::Dir).is_some() {
            return Err(io::Error::from_raw_os_error(libc::EEXIST));
        }
        Ok(())
    }

    fn create_file(&self, path: &Path) -> io::Result<()> {
        self.record(Call::CreateFile(path.into()));
        if self.fs.borrow_mut().insert(path.into(), Node::File).is_some() {
            return Err(io::Error::from_raw_os_error(libc::EEXIST));
        }
        Ok(())
    }

    fn symlink(&self, target: &Path, link: &Path) -> io::Result<()> {
        self.record(Call::Symlink { target: target.into(), link: link.into() });
        self.fs.borrow_mut().insert(link.into(), Node::Symlink(target.into()));
        Ok(())
    }

    fn copy_device(&self, host: &Path, target: &Path) -> io::Result<()> {
        self.record(Call::CopyDevice { host: host.into(), target: target.into() });
        if self.fs.borrow_mut().insert(target.into(), Node::File).is_some() {
            return Err(io::Error::from_raw_os_error(libc::EEXIST));
        }
        Ok(())
    }
}
