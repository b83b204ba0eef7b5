//! Mounts as data, and the one place that turns them into mount(2)/umount(2) calls.
//!
//! A [`Mount`] is what a snapshotter returns and what the sandbox consumes: `overlay` with the usual
//! `lowerdir=a:b`, `upperdir=`, `workdir=` options, or `bind` with `ro`/`rw`. For overlay, [`mount_all`]
//! uses the new mount API with one `lowerdir+` per layer where the kernel has it (Linux 6.8+), so chains
//! of hundreds of layers mount; elsewhere it falls back to the legacy option string, which is limited to
//! one page.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use rustix::mount::MountFlags;
use serde::{Deserialize, Serialize};

use crate::sys;

/// One mount, as data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    /// Filesystem type: `overlay` or `bind`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The device or directory mounted (`overlay` for overlayfs).
    pub source: String,
    /// Mount options, e.g. `lowerdir=/a:/b`, `upperdir=/u`, `workdir=/w`, `ro`, `rbind`.
    pub options: Vec<String>,
}

/// The errors of mounting.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("unsupported mount type {0:?}; expected overlay or bind")]
    Unsupported(String),
    #[error("overlay mount on {target} has no lowerdir option")]
    NoLower { target: PathBuf },
    #[error(
        "overlay options for {target} are {len} bytes, more than the legacy mount(2) page allows; this kernel \
         lacks overlay lowerdir+ (Linux 6.8+), so squash the image or use a newer kernel"
    )]
    TooLong { target: PathBuf, len: usize },
    #[error("cannot mount {kind} on {target}: {source} (mounting needs root or CAP_SYS_ADMIN)")]
    Mount { kind: String, target: PathBuf, source: io::Error },
    #[error("cannot unmount {target}: {source}")]
    Unmount { target: PathBuf, source: io::Error },
    #[error("cannot create mount point {path}: {source}")]
    MountPoint { path: PathBuf, source: io::Error },
}

impl Mount {
    /// A bind mount of `dir`, read-only when asked.
    pub fn bind(dir: &Path, readonly: bool) -> Mount {
        let rw = if readonly { "ro" } else { "rw" };
        Mount { kind: "bind".into(), source: dir.display().to_string(), options: vec!["rbind".into(), rw.into()] }
    }

    /// A scratch overlay of one read-only `lower` with a writable `upper` (and its overlay `work` dir),
    /// [`VOLATILE`] like the mounts of active snapshots: tearing it down never syncs the filesystem.
    pub fn overlay(lower: &Path, upper: &Path, work: &Path) -> Mount {
        Mount {
            kind: "overlay".into(),
            source: "overlay".into(),
            options: vec![
                format!("lowerdir={}", lower.display()),
                format!("upperdir={}", upper.display()),
                format!("workdir={}", work.display()),
                VOLATILE.into(),
            ],
        }
    }

    /// The value of `key=value` among the options.
    pub fn option(&self, key: &str) -> Option<&str> {
        self.options.iter().find_map(|o| o.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
    }

    pub fn is_readonly(&self) -> bool {
        self.options.iter().any(|o| o == "ro")
    }
}

/// Whether overlay `lowerdir+` is usable here (probed once).
pub fn have_lowerdir_plus() -> bool {
    static PROBE: OnceLock<bool> = OnceLock::new();
    *PROBE.get_or_init(sys::overlay_supports_lowerdir_plus)
}

/// How overlay mounts are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverlayApi {
    /// `lowerdir+` through the new mount API when the kernel has it, else the legacy string.
    Auto,
    /// Always the legacy mount(2) option string (limited to one page).
    Legacy,
}

/// Mounts `mounts` in order onto `target`.
pub fn mount_all(mounts: &[Mount], target: &Path) -> Result<(), MountError> {
    mount_all_with(mounts, target, OverlayApi::Auto)
}

/// Mounts `mounts` in order onto `target` with the given overlay API.
pub fn mount_all_with(mounts: &[Mount], target: &Path, api: OverlayApi) -> Result<(), MountError> {
    for m in mounts {
        mount_one(m, target, api)?;
    }
    Ok(())
}

/// Set once a kernel refused overlay's `volatile` (it came in Linux 5.10): later mounts go without it.
static NO_VOLATILE: AtomicBool = AtomicBool::new(false);

/// Overlay's `volatile` option, which the writable mounts of active snapshots carry: the upper directory
/// is not synced on `syncfs` or when the overlay is unmounted, so ending a step that wrote 200 MB does not
/// wait for the disk (unmounting a plain overlay syncs the whole upper filesystem). An active snapshot is
/// scratch until it is committed, and committing syncs nothing either (as containerd's snapshotters), so
/// volatile loses nothing a crash would not. Overlay refuses to mount a volatile upper again while
/// `<workdir>/work/incompat/volatile` exists (its guard against reusing an upper after a crash); the
/// snapshot's owner is the one mounting it again, so the marker is removed first. Kernels without the
/// option get the mount without it.
pub const VOLATILE: &str = "volatile";

fn mount_one(m: &Mount, target: &Path, api: OverlayApi) -> Result<(), MountError> {
    if m.kind == "overlay" && m.options.iter().any(|o| o == VOLATILE) {
        let plain = || Mount { options: m.options.iter().filter(|o| *o != VOLATILE).cloned().collect(), ..m.clone() };
        if NO_VOLATILE.load(Ordering::Relaxed) {
            return mount_one(&plain(), target, api);
        }
        if let Some(work) = m.option("workdir") {
            match std::fs::remove_dir_all(Path::new(work).join("work/incompat/volatile")) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(MountError::Mount { kind: m.kind.clone(), target: target.to_path_buf(), source })
                }
            }
        }
        return match mount_plain(m, target, api) {
            Err(MountError::Mount { source, .. }) if source.raw_os_error() == Some(libc::EINVAL) => {
                let r = mount_one(&plain(), target, api);
                if r.is_ok() {
                    NO_VOLATILE.store(true, Ordering::Relaxed);
                }
                r
            }
            r => r,
        };
    }
    mount_plain(m, target, api)
}

fn mount_plain(m: &Mount, target: &Path, api: OverlayApi) -> Result<(), MountError> {
    let err = |source| MountError::Mount { kind: m.kind.clone(), target: target.to_path_buf(), source };
    match m.kind.as_str() {
        "bind" => {
            let recursive = m.options.iter().any(|o| o == "rbind");
            sys::bind_mount(Path::new(&m.source), target, m.is_readonly(), recursive).map_err(err)
        }
        "overlay" => {
            let lower = m.option("lowerdir").ok_or_else(|| MountError::NoLower { target: target.to_path_buf() })?;
            let lowers: Vec<&str> = lower.split(':').collect();
            let upper = m.option("upperdir");
            let work = m.option("workdir");
            let readonly = m.is_readonly();
            if api == OverlayApi::Auto && have_lowerdir_plus() {
                let flags: Vec<(&str, Option<&str>)> = m
                    .options
                    .iter()
                    .filter(|o| !["lowerdir=", "upperdir=", "workdir="].iter().any(|p| o.starts_with(p)))
                    .filter(|o| *o != "ro" && *o != "rw")
                    .map(|o| match o.split_once('=') {
                        Some((k, v)) => (k, Some(v)),
                        None => (o.as_str(), None),
                    })
                    .collect();
                sys::mount_overlay_fsconfig(&lowers, upper, work, &flags, readonly, target).map_err(err)
            } else {
                let data: Vec<&str> =
                    m.options.iter().map(String::as_str).filter(|o| *o != "ro" && *o != "rw").collect();
                let data = data.join(",");
                if data.len() >= 4096 {
                    return Err(MountError::TooLong { target: target.to_path_buf(), len: data.len() });
                }
                let flags = if readonly { MountFlags::RDONLY } else { MountFlags::empty() };
                sys::mount("overlay", target, "overlay", flags, &data).map_err(err)
            }
        }
        other => Err(MountError::Unsupported(other.to_string())),
    }
}

/// Unmounts `target` (every mount stacked on it).
pub fn unmount_all(target: &Path) -> Result<(), MountError> {
    let mut first = true;
    loop {
        match sys::unmount(target, false) {
            Ok(()) => first = false,
            Err(e) if !first && e.raw_os_error() == Some(libc::EINVAL) => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                return sys::unmount(target, true)
                    .map_err(|source| MountError::Unmount { target: target.to_path_buf(), source })
            }
            Err(source) => return Err(MountError::Unmount { target: target.to_path_buf(), source }),
        }
    }
}

/// A mount on a temporary directory, unmounted and removed on drop.
#[derive(Debug)]
pub struct TempMount {
    dir: tempfile::TempDir,
    mounted: bool,
}

impl TempMount {
    /// Mounts `mounts` on a new directory inside `parent`.
    pub fn new(mounts: &[Mount], parent: &Path) -> Result<TempMount, MountError> {
        let dir = tempfile::Builder::new()
            .prefix("mnt-")
            .tempdir_in(parent)
            .map_err(|source| MountError::MountPoint { path: parent.to_path_buf(), source })?;
        mount_all(mounts, dir.path())?;
        Ok(TempMount { dir, mounted: true })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Unmounts now, reporting failure (drop does it silently).
    pub fn unmount(mut self) -> Result<(), MountError> {
        self.mounted = false;
        unmount_all(self.dir.path())
    }
}

impl Drop for TempMount {
    fn drop(&mut self) {
        if self.mounted {
            // Drop cannot report; a leftover is detached lazily and the directory cleaned at startup.
            let _ = unmount_all(self.dir.path());
        }
    }
}
