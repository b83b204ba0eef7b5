//! Overlayfs snapshots, after containerd's `plugins/snapshots/overlay/overlay.go`: an active snapshot is
//! an upperdir over its parents' directories, so a RUN step costs only the copy-up of what it touches,
//! and commit is metadata only: the upperdir becomes the layer.

use std::io;
use std::path::{Path, PathBuf};

use super::fs::Backend;
use super::{ApplyTarget, DiffSource, Kind};
use crate::mount::Mount;

/// Options that keep an upperdir a faithful diff: no redirects (renamed directories are copied up
/// whole), no metadata-only copy-ups, no inode index.
pub const OVERLAY_OPTIONS: [&str; 3] = ["index=off", "redirect_dir=off", "metacopy=off"];

/// The overlay backend.
#[derive(Debug, Default, Clone, Copy)]
pub struct Overlay;

fn lowerdir(dirs: &[PathBuf]) -> String {
    let parts: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    format!("lowerdir={}", parts.join(":"))
}

fn readonly(dirs: &[PathBuf]) -> Vec<Mount> {
    match dirs {
        [only] => vec![Mount::bind(only, true)],
        _ => {
            let mut options = vec![lowerdir(dirs)];
            options.extend(OVERLAY_OPTIONS.iter().map(|s| s.to_string()));
            options.push("ro".into());
            vec![Mount { kind: "overlay".into(), source: "overlay".into(), options }]
        }
    }
}

impl Backend for Overlay {
    const NAME: &'static str = "overlay";
    const TABLE: &'static str = "snapshots.overlay";

    fn populate(&self, _kind: Kind, _fs: &Path, _parent_fs: Option<&Path>) -> io::Result<()> {
        Ok(())
    }

    fn needs_workdir(&self) -> bool {
        true
    }

    fn mounts(&self, kind: Kind, own: &Path, work: &Path, parents: &[PathBuf]) -> Vec<Mount> {
        match kind {
            Kind::Active if parents.is_empty() => vec![Mount::bind(own, false)],
            Kind::Active => {
                let mut options = vec![
                    lowerdir(parents),
                    format!("upperdir={}", own.display()),
                    format!("workdir={}", work.display()),
                ];
                options.extend(OVERLAY_OPTIONS.iter().map(|s| s.to_string()));
                options.push(crate::mount::VOLATILE.into());
                vec![Mount { kind: "overlay".into(), source: "overlay".into(), options }]
            }
            Kind::View if parents.is_empty() => vec![Mount::bind(own, true)],
            Kind::View => readonly(parents),
            Kind::Committed => {
                let mut all = vec![own.to_path_buf()];
                all.extend_from_slice(parents);
                readonly(&all)
            }
        }
    }

    fn diff_source(&self, own: &Path, _parents: &[PathBuf]) -> DiffSource {
        DiffSource::Upper(own.to_path_buf())
    }

    fn apply_target(&self, own: &Path, parents: &[PathBuf]) -> ApplyTarget {
        if parents.is_empty() {
            ApplyTarget::Tree(own.to_path_buf())
        } else {
            ApplyTarget::Upper { upper: own.to_path_buf(), lowers: parents.to_vec() }
        }
    }
}
