//! What a copy reads: wildcard resolution (fsutil's `ResolveWildcards`), the source root with or without
//! its final symlink followed, and the walk below it with the copy's include/exclude patterns and the
//! source directory's own filters (a local context's .dockerignore). Copies and checksums share this,
//! so a checksum covers exactly what a copy would read.

use std::collections::HashSet;
use std::ffi::OsString;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use llb::file::Copy;

use super::fsys::{self, Meta, Tree};
use super::FileOpError;
use crate::context::ignore::{go_clean, go_match, PatternError, PatternMatcher};

/// Whether a path is visited, and whether it exists in its own right.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Visit {
    Skip,
    Include,
    /// A directory that is only traversed: it appears only if something below it is included.
    Descend,
}

/// Include and exclude patterns with fsutil's directory rules.
#[derive(Debug, Default)]
pub struct Filter {
    include: Option<(PatternMatcher, Vec<String>)>,
    exclude: Option<PatternMatcher>,
}

impl Filter {
    pub fn new(include: &[String], exclude: &[String]) -> Result<Filter, PatternError> {
        let include = if include.is_empty() {
            None
        } else {
            let cleaned = include.iter().map(|p| go_clean(p.trim())).collect();
            Some((PatternMatcher::new(include)?, cleaned))
        };
        let exclude = if exclude.is_empty() { None } else { Some(PatternMatcher::new(exclude)?) };
        Ok(Filter { include, exclude })
    }

    pub fn is_empty(&self) -> bool {
        self.include.is_none() && self.exclude.is_none()
    }

    /// The decision for `path` (relative, slash separated, not empty).
    pub fn check(&self, path: &str, is_dir: bool) -> Result<Visit, PatternError> {
        let mut visit = Visit::Include;
        if let Some((pm, raw)) = &self.include {
            if !pm.matches_or_parent_matches(path)? {
                if is_dir && raw.iter().any(|p| partial_match(p, path)) {
                    visit = Visit::Descend;
                } else {
                    return Ok(Visit::Skip);
                }
            }
        }
        if let Some(pm) = &self.exclude {
            if pm.matches_or_parent_matches(path)? {
                // An excluded directory stays when a `!` pattern may re-include something below it.
                let dir_slash = format!("{path}/");
                let reincluded = is_dir
                    && pm.exclusions()
                    && pm
                        .patterns()
                        .iter()
                        .any(|p| p.exclusion() && format!("{}/", p.as_str()).starts_with(&dir_slash));
                if !reincluded {
                    return Ok(Visit::Skip);
                }
            }
        }
        Ok(visit)
    }
}

/// fsutil's `prefix.Match` for directories: whether `pattern` could match something below `dir`.
fn partial_match(pattern: &str, dir: &str) -> bool {
    if pattern.contains("**") {
        return true;
    }
    let depth = dir.matches('/').count();
    let comps: Vec<&str> = pattern.split('/').collect();
    if comps.len() <= depth + 1 {
        return false;
    }
    go_match(&comps[..=depth].join("/"), dir).unwrap_or(false)
}

/// One path a copy reads.
#[derive(Debug, Clone)]
pub struct Selected {
    /// Relative to the copied source (`""` for the source itself).
    pub rel: String,
    /// The real path in the tree, `/a/b`.
    pub real: String,
    pub dir: Arc<OwnedFd>,
    pub name: OsString,
    pub meta: Meta,
}

/// One resolved source of a copy with everything below it that is selected.
#[derive(Debug)]
pub struct Source {
    /// The path as matched (before following a final symlink), for `filepath.Base`.
    pub matched: String,
    pub entries: Vec<Selected>,
}

/// A directory tree with its own filters.
pub struct View<'a> {
    pub tree: &'a Tree,
    pub filter: &'a Filter,
    /// Owners read as root (a local source: [`super::SourceDir::root_owned`]).
    pub root_owned: bool,
}

fn io_err(what: String) -> impl FnOnce(io::Error) -> FileOpError {
    move |source| FileOpError::Io { what, source }
}

impl View<'_> {
    /// `lstat` as this view shows it.
    fn shown(&self, mut meta: Meta) -> Meta {
        if self.root_owned {
            (meta.uid, meta.gid) = (0, 0);
        }
        meta
    }

    fn visible(&self, real: &str, is_dir: bool) -> Result<Visit, FileOpError> {
        let rel = real.trim_start_matches('/');
        if rel.is_empty() || self.filter.is_empty() {
            return Ok(Visit::Include);
        }
        Ok(self.filter.check(rel, is_dir)?)
    }

    /// fsutil's `ResolveWildcards`: paths (real, `/a/b`) matching `src`, or `src` itself without wildcards.
    pub fn resolve_wildcards(&self, src: &str, follow: bool) -> Result<Vec<String>, FileOpError> {
        let (d1, d2) = split_wildcards(src);
        if d2.is_empty() {
            return Ok(vec![d1]);
        }
        let base = self.tree.resolve(&d1, follow).map_err(io_err(format!("cannot resolve {d1}")))?;
        let meta = match base.lstat() {
            Ok(m) if self.visible(&base.display(), m.is_dir())? != Visit::Skip => m,
            Ok(_) => return Err(FileOpError::NotFound { path: d1 }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(FileOpError::NotFound { path: d1 }),
            Err(e) => return Err(FileOpError::Io { what: format!("lstat {d1}"), source: e }),
        };
        let mut out = Vec::new();
        if meta.is_dir() {
            let depth = d2.split('/').count();
            let dir = fsys::open_dir_path(&base.dir, &base.name).map_err(io_err(format!("open {d1}")))?;
            let prefix = base.display();
            self.match_walk(&dir, &prefix, "", &d2, depth, &mut out)?;
        }
        Ok(out)
    }

    fn match_walk(
        &self,
        dir: &OwnedFd,
        real: &str,
        rel: &str,
        pattern: &str,
        depth: usize,
        out: &mut Vec<String>,
    ) -> Result<(), FileOpError> {
        let names = fsys::read_dir_sorted(dir, ".".as_ref()).map_err(io_err(format!("read {real}")))?;
        for name in names {
            let m = fsys::lstat(dir, &name).map_err(io_err(format!("lstat {real}")))?;
            let n = name.to_string_lossy();
            let child_rel = if rel.is_empty() { n.to_string() } else { format!("{rel}/{n}") };
            let child_real = join_real(real, &n);
            if self.visible(&child_real, m.is_dir())? == Visit::Skip {
                continue;
            }
            if go_match(pattern, &child_rel).unwrap_or(false) {
                out.push(child_real);
                continue;
            }
            if m.is_dir() && child_rel.split('/').count() < depth {
                let sub = fsys::open_dir_path(dir, &name).map_err(io_err(format!("open {child_real}")))?;
                self.match_walk(&sub, &child_real, &child_rel, pattern, depth, out)?;
            }
        }
        Ok(())
    }

    /// Everything `copy` reads, per resolved source, in copy order.
    pub fn select(&self, copy: &Copy) -> Result<Vec<Source>, FileOpError> {
        let copy_filter = Filter::new(&copy.include_patterns, &copy.exclude_patterns)?;
        let matches = if copy.allow_wildcard {
            let m = self.resolve_wildcards(&copy.src, copy.follow_symlink)?;
            if m.is_empty() && !copy.allow_empty_wildcard {
                return Err(FileOpError::NoMatch { pattern: copy.src.clone() });
            }
            m
        } else {
            vec![copy.src.clone()]
        };
        let mut out = Vec::new();
        for m in matches {
            out.push(self.select_one(&m, copy.follow_symlink, &copy_filter)?);
        }
        if copy.parents {
            // `COPY --parents a/b /dst/`: the path is an include pattern below the pivot; a plain path that
            // matches nothing is a missing source, as it is without --parents.
            for pattern in copy.include_patterns.iter().filter(|p| !contains_wildcards(p)) {
                let found = out.iter().flat_map(|s| &s.entries).any(|e| {
                    e.rel == *pattern || e.rel.strip_prefix(pattern.as_str()).is_some_and(|r| r.starts_with('/'))
                });
                if !found {
                    let root = copy.src.trim_end_matches('/');
                    return Err(FileOpError::NotFound { path: format!("{root}/{pattern}") });
                }
            }
        }
        Ok(out)
    }

    /// The source at `path` and what is below it.
    pub fn select_one(&self, path: &str, follow: bool, copy_filter: &Filter) -> Result<Source, FileOpError> {
        let at = self.tree.resolve(path, follow).map_err(|e| not_found_or(path, e))?;
        let meta = self.shown(at.lstat().map_err(|e| not_found_or(path, e))?);
        let real = at.display();
        if self.visible(&real, meta.is_dir())? == Visit::Skip {
            return Err(FileOpError::NotFound { path: path.to_string() });
        }
        let dir = Arc::new(at.dir);
        let top = Selected { rel: String::new(), real: real.clone(), dir, name: at.name, meta };
        let mut entries = vec![(top.clone(), false)];
        if meta.is_dir() {
            let fd = fsys::open_dir_path(&*top.dir, &top.name).map_err(io_err(format!("open {real}")))?;
            self.walk(Arc::new(fd), &real, "", copy_filter, &mut entries)?;
        }
        Ok(Source { matched: path.to_string(), entries: prune_lazy(entries) })
    }

    fn walk(
        &self,
        dir: Arc<OwnedFd>,
        real: &str,
        rel: &str,
        copy_filter: &Filter,
        out: &mut Vec<(Selected, bool)>,
    ) -> Result<(), FileOpError> {
        let names = fsys::read_dir_sorted(&*dir, ".".as_ref()).map_err(io_err(format!("read {real}")))?;
        for name in names {
            let meta = self.shown(fsys::lstat(&*dir, &name).map_err(io_err(format!("lstat {real}")))?);
            let n = name.to_string_lossy();
            let child_rel = if rel.is_empty() { n.to_string() } else { format!("{rel}/{n}") };
            let child_real = join_real(real, &n);
            let own = self.visible(&child_real, meta.is_dir())?;
            let by_copy =
                if copy_filter.is_empty() { Visit::Include } else { copy_filter.check(&child_rel, meta.is_dir())? };
            if own == Visit::Skip || by_copy == Visit::Skip {
                continue;
            }
            let lazy = own == Visit::Descend || by_copy == Visit::Descend;
            let sel = Selected { rel: child_rel.clone(), real: child_real.clone(), dir: dir.clone(), name, meta };
            let is_dir = meta.is_dir();
            let sub_name = sel.name.clone();
            out.push((sel, lazy));
            if is_dir {
                let sub = fsys::open_dir_path(&*dir, &sub_name).map_err(io_err(format!("open {child_real}")))?;
                self.walk(Arc::new(sub), &child_real, &child_rel, copy_filter, out)?;
            }
        }
        Ok(())
    }
}

fn not_found_or(path: &str, e: io::Error) -> FileOpError {
    if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(rustix::io::Errno::NOTDIR.raw_os_error()) {
        FileOpError::NotFound { path: path.to_string() }
    } else {
        FileOpError::Io { what: format!("cannot resolve {path}"), source: e }
    }
}

fn join_real(parent: &str, name: &str) -> String {
    if parent == "/" {
        format!("/{name}")
    } else {
        format!("{parent}/{name}")
    }
}

/// Drops directories that were only traversed and hold nothing selected.
fn prune_lazy(entries: Vec<(Selected, bool)>) -> Vec<Selected> {
    let mut needed: HashSet<String> = HashSet::new();
    let mut keep = vec![false; entries.len()];
    for (i, (e, lazy)) in entries.iter().enumerate().rev() {
        if *lazy && !needed.contains(&e.rel) {
            continue;
        }
        keep[i] = true;
        if let Some(p) = e.rel.rfind('/') {
            needed.insert(e.rel[..p].to_string());
        }
    }
    entries.into_iter().zip(keep).filter(|(_, k)| *k).map(|((e, _), _)| e).collect()
}

/// fsutil's `containsWildcards`: `*`, `?` or `[` not escaped by `\`.
pub fn contains_wildcards(name: &str) -> bool {
    let b = name.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 1,
            b'*' | b'?' | b'[' => return true,
            _ => {}
        }
        i += 1;
    }
    false
}

/// fsutil's `splitWildcards`: the path up to the first component with a wildcard, and the rest.
pub fn split_wildcards(p: &str) -> (String, String) {
    let cleaned = go_clean(p);
    let (mut p1, mut p2) = (Vec::new(), Vec::new());
    let mut found = false;
    for part in cleaned.split('/') {
        if !found && contains_wildcards(part) {
            found = true;
        }
        let part = if part.is_empty() { "/" } else { part };
        if found {
            p2.push(part);
        } else {
            p1.push(part);
        }
    }
    let join = |v: Vec<&str>| if v.is_empty() { String::new() } else { go_clean(&v.join("/")) };
    (join(p1), join(p2))
}

/// Go's `filepath.Base`.
pub fn base_name(p: &str) -> String {
    let t = p.trim_end_matches('/');
    if t.is_empty() {
        return if p.is_empty() { ".".into() } else { "/".into() };
    }
    t.rsplit('/').next().unwrap_or(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_wildcards_like_fsutil() {
        assert_eq!(split_wildcards("/foo/*.txt"), ("/foo".into(), "*.txt".into()));
        assert_eq!(split_wildcards("/a/b"), ("/a/b".into(), String::new()));
        assert_eq!(split_wildcards("/a\\*b/c*"), ("/a\\*b".into(), "c*".into()));
        assert_eq!(split_wildcards("/*/x"), ("/".into(), "*/x".into()));
        assert_eq!(base_name("/"), "/");
        assert_eq!(base_name("/a/b/"), "b");
    }

    #[test]
    fn include_prefix_rules() {
        let f = Filter::new(&["a/*/c".into()], &[]).unwrap();
        assert_eq!(f.check("a", true).unwrap(), Visit::Descend);
        assert_eq!(f.check("a/b", true).unwrap(), Visit::Descend);
        assert_eq!(f.check("a/b/c", false).unwrap(), Visit::Include);
        assert_eq!(f.check("a/b/c/d", false).unwrap(), Visit::Include);
        assert_eq!(f.check("x", true).unwrap(), Visit::Skip);
        let e = Filter::new(&[], &["docs".into(), "!docs/keep.md".into()]).unwrap();
        assert_eq!(e.check("docs", true).unwrap(), Visit::Include);
        assert_eq!(e.check("docs/other.md", false).unwrap(), Visit::Skip);
        assert_eq!(e.check("docs/keep.md", false).unwrap(), Visit::Include);
    }
}
