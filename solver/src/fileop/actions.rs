//! mkdir, mkfile, rm and symlink actions, after BuildKit's file backend.

use std::ffi::OsStr;
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;

use llb::file::{Mkdir, Mkfile, Rm, Symlink};
use rustix::fs::{self as rfs, Mode, OFlags};

use super::copy::mkdir_all;
use super::fsys::{self, Tree};
use super::select::{Filter, View};
use super::FileOpError;

fn fail(what: String) -> impl FnOnce(io::Error) -> FileOpError {
    move |source| FileOpError::Io { what, source }
}

/// Owner, mode and times of a created path: the action's owner, else root; exactly the permission bits
/// asked for (buildkitd runs with umask 0), except for a symlink; times only when set.
fn finish(
    dir: impl AsFd,
    name: &OsStr,
    owner: Option<(u32, u32)>,
    mode: Option<u32>,
    ts: Option<i64>,
) -> io::Result<()> {
    let (uid, gid) = owner.unwrap_or((0, 0));
    fsys::chown(dir.as_fd(), name, uid, gid)?;
    if let Some(mode) = mode {
        fsys::chmod(dir.as_fd(), name, mode & 0o777)?;
    }
    if let Some(ts) = ts {
        let t = fsys::split_nanos(ts);
        fsys::set_times(dir, name, t, t)?;
    }
    Ok(())
}

pub fn mkdir(dest: &Tree, a: &Mkdir, owner: Option<(u32, u32)>) -> Result<(), FileOpError> {
    let at = dest.resolve(&a.path, true).map_err(fail(format!("mkdir {}", a.path)))?;
    if a.make_parents {
        let time = a.timestamp.map(fsys::split_nanos);
        mkdir_all(dest, &at.real, a.mode & 0o777, owner, time).map_err(fail(format!("mkdir {}", a.path)))?;
        return Ok(());
    }
    if at.real.is_empty() {
        return Ok(());
    }
    let parent = at.parent().map_err(fail(format!("mkdir {}", a.path)))?;
    match rfs::mkdirat(parent, at.name.as_os_str(), Mode::from_raw_mode(a.mode & 0o777)) {
        Err(e) if e == rustix::io::Errno::EXIST => return Ok(()),
        r => r.map_err(io::Error::from).map_err(fail(format!("mkdir {}", a.path)))?,
    }
    finish(&at.dir, &at.name, owner, Some(a.mode), a.timestamp).map_err(fail(format!("mkdir {}", a.path)))
}

pub fn mkfile(dest: &Tree, a: &Mkfile, owner: Option<(u32, u32)>) -> Result<(), FileOpError> {
    let what = || format!("mkfile {}", a.path);
    let at = dest.resolve(&a.path, true).map_err(fail(what()))?;
    if at.real.is_empty() {
        return Err(FileOpError::Invalid(format!("mkfile {}: is the root directory", a.path)));
    }
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let parent = at.parent().map_err(fail(what()))?;
    let fd = rfs::openat(parent, at.name.as_os_str(), flags, Mode::from_raw_mode(a.mode & 0o777))
        .map_err(io::Error::from)
        .map_err(fail(what()))?;
    std::fs::File::from(fd).write_all(&a.data.0).map_err(fail(what()))?;
    finish(&at.dir, &at.name, owner, Some(a.mode), a.timestamp).map_err(fail(what()))
}

pub fn rm(dest: &Tree, a: &Rm) -> Result<(), FileOpError> {
    let paths = if a.allow_wildcard {
        let filter = Filter::default();
        View { tree: dest, filter: &filter, root_owned: false }.resolve_wildcards(&a.path, false).or_else(
            |e| match e {
                FileOpError::NotFound { .. } if a.allow_not_found => Ok(Vec::new()),
                e => Err(e),
            },
        )?
    } else {
        vec![a.path.clone()]
    };
    for p in paths {
        let at = dest.resolve(&p, false).map_err(fail(format!("rm {p}")))?;
        if at.real.is_empty() {
            return Err(FileOpError::Invalid(format!("rm {p}: cannot remove the root directory")));
        }
        if !a.allow_not_found {
            // Like os.Stat: a dangling symlink counts as missing.
            let followed = dest.resolve(&p, true).and_then(|f| f.lstat());
            if let Err(e) = followed {
                if e.kind() == io::ErrorKind::NotFound {
                    return Err(FileOpError::NotFound { path: p });
                }
            }
        }
        match at.parent() {
            Ok(dir) => fsys::remove_all(dir.as_fd(), &at.name).map_err(fail(format!("rm {p}")))?,
            Err(_) if a.allow_not_found => {}
            Err(_) => return Err(FileOpError::NotFound { path: p }),
        }
    }
    Ok(())
}

pub fn symlink(dest: &Tree, a: &Symlink, owner: Option<(u32, u32)>) -> Result<(), FileOpError> {
    let what = || format!("symlink {} -> {}", a.newpath, a.oldpath);
    let at = dest.resolve(&a.newpath, true).map_err(fail(what()))?;
    let parent = at.parent().map_err(fail(what()))?;
    rfs::symlinkat(OsStr::from_bytes(a.oldpath.as_bytes()), parent, at.name.as_os_str())
        .map_err(io::Error::from)
        .map_err(fail(what()))?;
    finish(&at.dir, &at.name, owner, None, a.timestamp).map_err(fail(what()))
}
