//! Git sources (`ADD https://host/repo.git#ref:subdir`, `ADD git@host:repo.git`), after BuildKit's
//! `source/git`, with the system `git`.
//!
//! Before keying, the reference (branch, tag, `HEAD` or any ref; default the remote's HEAD) is resolved
//! to a commit with `git ls-remote`; a full commit id is used as is, without the network. The key is the
//! commit plus subdir and keep-git-dir, so a moved branch re-runs what follows and an unchanged one does
//! not. `checksum` (ADD --checksum) must be a prefix of the commit. On a miss the commit is fetched into a
//! bare mirror per remote (`state_dir/git/<hash>`, kept between builds so later fetches are
//! incremental), checked out into a scratch directory, and the tree (or `subdir`) is copied into a fresh
//! snapshot; with `keep_git_dir` the checkout is a clone whose `origin` is the remote.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use llb::{Digest, Op as LlbOp, SourceOp};
use sha2::{Digest as _, Sha256};

use super::snap::Step;
use super::{blocking, scoped, Base, Snap, WorkerRef};
use crate::error::SolveError;
use crate::fileop::{self, SourceDir};
use crate::op::{BoxFuture, CacheMap, Op, OpContext, Prepared};

// v2: a kept .git is detached at the commit (v1 checked a branch name out as a local branch).
const KEY_VERSION: &[u8] = b"rbuild.git.v2\n";

/// One fetch or checkout at a time in this process: git's own lock files would make a concurrent one
/// fail rather than wait. (The state root's lock keeps other processes out.)
static GIT_LOCK: Mutex<()> = Mutex::new(());

/// The fields of a git source op.
pub(crate) struct Spec<'a> {
    pub(crate) remote: &'a str,
    pub(crate) reference: Option<&'a str>,
    pub(crate) subdir: Option<&'a str>,
    pub(crate) keep_git_dir: bool,
    pub(crate) checksum: Option<&'a str>,
}

impl<'a> Spec<'a> {
    /// The git source of `op`, if it is one.
    pub(crate) fn of(op: &'a LlbOp) -> Option<Spec<'a>> {
        let LlbOp::Source(SourceOp::Git { remote, reference, subdir, keep_git_dir, checksum, .. }) = op else {
            return None;
        };
        Some(Spec {
            remote,
            reference: reference.as_deref().filter(|r| !r.is_empty()),
            subdir: subdir.as_deref().map(|s| s.trim_matches('/')).filter(|s| !s.is_empty() && *s != "."),
            keep_git_dir: *keep_git_dir,
            checksum: checksum.as_deref().map(|c| c.strip_prefix("sha1:").unwrap_or(c)).filter(|c| !c.is_empty()),
        })
    }

    fn what(&self) -> String {
        match self.reference {
            Some(r) => format!("{}#{r}", self.remote),
            None => self.remote.to_string(),
        }
    }

    /// The key of a checkout of `commit`: the commit, subdir, and with a kept .git directory (whose config
    /// names the remote) the remote and reference too.
    fn cache_key(&self, commit: &str) -> Digest {
        let mut h = Sha256::new();
        h.update(KEY_VERSION);
        let v = serde_json::json!({
            "commit": commit,
            "subdir": self.subdir,
            "keep_git_dir": self.keep_git_dir,
            "remote": self.keep_git_dir.then_some(self.remote),
            "reference": if self.keep_git_dir { self.reference } else { None },
        });
        h.update(v.to_string().as_bytes());
        Digest::of(&h.finalize())
    }
}

/// A full commit id (sha1 or sha256).
fn is_commit(r: &str) -> bool {
    (r.len() == 40 || r.len() == 64) && r.bytes().all(|b| b.is_ascii_hexdigit())
}

pub(crate) struct GitOp {
    base: Base,
    /// The commit the reference resolved to while preparing.
    commit: Mutex<Option<String>>,
}

impl GitOp {
    pub(crate) fn new(base: Base) -> GitOp {
        GitOp { base, commit: Mutex::new(None) }
    }
}

impl Op<WorkerRef> for GitOp {
    /// Resolves the reference to a commit (`git ls-remote`) and keys the checkout by it.
    fn prepare<'a>(&'a self, ctx: &'a OpContext) -> BoxFuture<'a, Result<Prepared<WorkerRef>, SolveError>> {
        let (op, label) = (self.base.vertex.op.clone(), ctx.label().to_string());
        Box::pin(async move {
            let (key, commit) = blocking(move || resolve(&op, &label)).await?;
            *self.commit.lock().unwrap_or_else(|e| e.into_inner()) = Some(commit);
            Ok(Prepared { content_key: Some(key), ..Prepared::default() })
        })
    }

    fn cache_map(&self, _ctx: &OpContext, _inputs: &[Option<&WorkerRef>]) -> Result<CacheMap, SolveError> {
        Ok(CacheMap { digest: self.base.identity(), content: Vec::new() })
    }

    fn exec<'a>(
        &'a self,
        ctx: &'a OpContext,
        _inputs: Vec<WorkerRef>,
    ) -> BoxFuture<'a, Result<Vec<WorkerRef>, SolveError>> {
        let commit = self.commit.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let (state, op, ctx) = (self.base.state.clone(), self.base.vertex.op.clone(), ctx.clone());
        Box::pin(blocking(move || {
            let key = ctx.key().ok_or_else(|| SolveError::Internal("a git source ran without a key".into()))?;
            let spec = Spec::of(&op).ok_or_else(|| SolveError::Internal("not a git source".into()))?;
            let commit =
                commit.ok_or_else(|| SolveError::Internal(format!("git source {} was not resolved", spec.what())))?;
            run(&Step { state: &state, label: ctx.label(), key }, &ctx, &spec, &commit)
        }))
    }
}

/// Resolves the reference of a git source to a commit; returns its key and the commit.
fn resolve(op: &llb::Op, label: &str) -> Result<(Digest, String), SolveError> {
    let err = |message: String| SolveError::Step { step: label.to_string(), message };
    let spec = Spec::of(op).ok_or_else(|| SolveError::Internal("not a git source".into()))?;
    let commit = match spec.reference {
        Some(r) if is_commit(r) => r.to_ascii_lowercase(),
        r => ls_remote(spec.remote, r.unwrap_or("HEAD")).map_err(err)?,
    };
    if let Some(want) = spec.checksum {
        if !commit.starts_with(&want.to_ascii_lowercase()) {
            return Err(err(format!(
                "checksum mismatch for {}: the reference resolves to commit {commit}, expected {want}; update ADD \
                 --checksum if the reference moved on purpose",
                spec.what()
            )));
        }
    }
    Ok((spec.cache_key(&commit), commit))
}

/// The commit `reference` names in `remote`: an exact ref (`HEAD`, `refs/...`), else a branch, else a tag
/// (peeled to its commit).
fn ls_remote(remote: &str, reference: &str) -> Result<String, String> {
    let out = git(None, &["ls-remote", "--", remote, reference])
        .map_err(|e| format!("cannot resolve {remote}#{reference}: {e}"))?;
    let refs: Vec<(&str, &str)> = out.lines().filter_map(|l| l.split_once('\t')).collect();
    let wanted = [
        reference.to_string(),
        format!("refs/heads/{reference}"),
        format!("refs/tags/{reference}^{{}}"),
        format!("refs/tags/{reference}"),
    ];
    for w in &wanted {
        if let Some((sha, _)) = refs.iter().find(|(_, name)| name == w) {
            return Ok(sha.to_string());
        }
    }
    Err(format!(
        "the reference {reference:?} was not found in {remote}; name a branch, a tag or a full commit id after `#`"
    ))
}

/// Fetches `commit` and copies its tree into a snapshot.
fn run(step: &Step<'_>, ctx: &OpContext, spec: &Spec<'_>, commit: &str) -> Result<Vec<WorkerRef>, SolveError> {
    let state = step.state.worker.state_dir.clone();
    let scratch = tempfile::Builder::new()
        .prefix("checkout-")
        .tempdir_in(mkdirs(step, &state.join("git-tmp"))?)
        .map_err(|e| step.err(format!("cannot create a scratch directory in {}: {e}", state.display())))?;
    let tree = scratch.path().join("tree");
    {
        let _one = GIT_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let bare = mirror(step, &state.join("git"), spec, commit)?;
        checkout(&bare, spec, commit, scratch.path(), &tree)
            .map_err(|e| step.err(format!("cannot check out {} at {commit}: {e}", spec.what())))?;
    }
    let src = match spec.subdir {
        Some(sub) => {
            let p = scoped(&tree, sub);
            if !p.is_dir() {
                return Err(
                    step.err(format!("{}: the subdirectory {sub:?} does not exist at commit {commit}", spec.what()))
                );
            }
            p
        }
        None => tree,
    };
    let mut snap = Snap::prepare(step, None, "git")?;
    let dest = snap.mount(step)?;
    fileop::copy_dir(&SourceDir::plain(&src), &dest)
        .map_err(|e| step.err(format!("cannot copy the checkout of {}: {e}", spec.what())))?;
    ctx.check_cancelled()?;
    Ok(vec![WorkerRef::Snapshot(Some(snap.commit(step, "0")?))])
}

fn mkdirs(step: &Step<'_>, dir: &Path) -> Result<PathBuf, SolveError> {
    std::fs::create_dir_all(dir).map_err(|e| step.err(format!("cannot create {}: {e}", dir.display())))?;
    Ok(dir.to_path_buf())
}

/// The bare mirror of `spec.remote` holding `commit`, fetching what is missing.
fn mirror(step: &Step<'_>, root: &Path, spec: &Spec<'_>, commit: &str) -> Result<PathBuf, SolveError> {
    let bare = root.join(hex::encode(Sha256::digest(spec.remote.as_bytes())));
    let fail = |e: String| step.err(format!("cannot fetch {}: {e}", spec.what()));
    if !bare.join("HEAD").exists() {
        mkdirs(step, root)?;
        let tmp = root.join(format!("init-{}", step.state.temp_name("git")));
        git(None, &["init", "-q", "--bare", path_str(&tmp)?]).map_err(fail)?;
        // Lets the checkout fetch the commit by id from this mirror.
        git(Some(&tmp), &["config", "uploadpack.allowAnySHA1InWant", "true"]).map_err(fail)?;
        std::fs::rename(&tmp, &bare).map_err(|e| fail(format!("cannot create {}: {e}", bare.display())))?;
    }
    let has = |c: &str| git(Some(&bare), &["cat-file", "-e", &format!("{c}^{{commit}}")]).is_ok();
    if has(commit) {
        return Ok(bare);
    }
    // Branches and tags, as BuildKit fetches for a commit it does not have; then the reference itself
    // (refs/pull/... and the like), then the commit by id for servers that allow it.
    let mut tries: Vec<Vec<String>> = vec![vec![
        "fetch".into(),
        "-q".into(),
        "--force".into(),
        "--tags".into(),
        "--".into(),
        spec.remote.into(),
        "+refs/heads/*:refs/heads/*".into(),
    ]];
    if let Some(r) = spec.reference.filter(|r| !is_commit(r)) {
        tries.push(vec!["fetch".into(), "-q".into(), "--".into(), spec.remote.into(), r.into()]);
    }
    tries.push(vec!["fetch".into(), "-q".into(), "--".into(), spec.remote.into(), commit.into()]);
    let mut last = String::new();
    for args in tries {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        if let Err(e) = git(Some(&bare), &args) {
            last = e;
        }
        if has(commit) {
            return Ok(bare);
        }
    }
    Err(fail(format!("commit {commit} is not in the remote{}", if last.is_empty() { "" } else { ": " }) + &last))
}

/// Checks `commit` out of `bare` into `tree` (a new directory in `scratch`).
fn checkout(bare: &Path, spec: &Spec<'_>, commit: &str, scratch: &Path, tree: &Path) -> Result<(), String> {
    let tree_s = tree.to_str().ok_or("a non-UTF-8 scratch path")?;
    if spec.keep_git_dir {
        git(None, &["init", "-q", tree_s])?;
        git(Some(tree), &["remote", "add", "origin", spec.remote])?;
        let from = format!("file://{}", bare.display());
        git(Some(tree), &["fetch", "-q", "--depth=1", "--", &from, commit])?;
        // A detached HEAD at the commit, whatever the reference named (BuildKit checks out FETCH_HEAD).
        git(Some(tree), &["checkout", "-q", "--detach", commit])?;
        return Ok(());
    }
    std::fs::create_dir_all(tree).map_err(|e| e.to_string())?;
    let index = scratch.join("index");
    let out = base_command()
        .env("GIT_INDEX_FILE", &index)
        .arg(format!("--git-dir={}", bare.display()))
        .arg(format!("--work-tree={tree_s}"))
        .args(["checkout", "-q", "-f", commit, "--", "."])
        .output()
        .map_err(|e| format!("cannot run git: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    Ok(())
}

fn path_str(p: &Path) -> Result<&str, SolveError> {
    p.to_str().ok_or_else(|| SolveError::Internal(format!("non-UTF-8 path {}", p.display())))
}

/// `git` with a predictable environment: no prompts, no system configuration.
fn base_command() -> Command {
    let mut c = Command::new("git");
    c.env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_ASKPASS", "true")
        .env("LC_ALL", "C")
        .args(["-c", "protocol.file.allow=always", "-c", "advice.detachedHead=false"]);
    c
}

/// Runs git in `dir`; stdout on success, else stderr.
fn git(dir: Option<&Path>, args: &[&str]) -> Result<String, String> {
    let mut c = base_command();
    if let Some(d) = dir {
        c.arg("-C").arg(d);
    }
    let out = c.args(args).output().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            "git is not installed; install it (apt-get install git) to ADD git repositories".to_string()
        } else {
            format!("cannot run git: {e}")
        }
    })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        return Err(format!("git {} failed: {stderr}", args.first().copied().unwrap_or("")));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_are_recognised_and_keys_follow_the_commit() {
        assert!(is_commit(&"a".repeat(40)));
        assert!(!is_commit("main"));
        assert!(!is_commit(&"g".repeat(40)));
        let spec =
            |subdir, keep| Spec { remote: "r", reference: Some("main"), subdir, keep_git_dir: keep, checksum: None };
        let c = "a".repeat(40);
        assert_eq!(spec(None, false).cache_key(&c), spec(None, false).cache_key(&c));
        assert_ne!(spec(None, false).cache_key(&c), spec(None, false).cache_key(&"b".repeat(40)));
        assert_ne!(spec(None, false).cache_key(&c), spec(Some("docs"), false).cache_key(&c));
        assert_ne!(spec(None, false).cache_key(&c), spec(None, true).cache_key(&c));
    }
}
