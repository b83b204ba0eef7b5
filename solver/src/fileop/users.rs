//! `--chown` by name: users from `/etc/passwd` and groups from `/etc/group` of a file system, read
//! inside its root (BuildKit's `readUser`).

use std::io::Read;

use llb::{ChownOpt, UserOpt};

use super::fsys::{self, Tree};
use super::FileOpError;

/// Reads `/etc/<file>` of `tree` (symlinks resolved inside it); `None` when missing.
fn read_etc(tree: &Tree, file: &str) -> Result<Option<String>, FileOpError> {
    let path = format!("/etc/{file}");
    let at = match tree.resolve(&path, true) {
        Ok(at) => at,
        Err(_) => return Ok(None),
    };
    let Ok(dir) = at.parent() else { return Ok(None) };
    let mut f = match fsys::open_file(dir, &at.name) {
        Ok(f) => f,
        Err(_) => return Ok(None),
    };
    let mut s = String::new();
    f.read_to_string(&mut s).map_err(|source| FileOpError::Io { what: format!("read {path}"), source })?;
    Ok(Some(s))
}

/// Finds `name` in the first field of a colon-separated database and returns its fields.
fn find<'a>(db: &'a str, name: &str) -> Option<Vec<&'a str>> {
    db.lines().map(|l| l.split(':').collect::<Vec<_>>()).find(|f| f.len() >= 3 && f[0] == name)
}

/// `(uid, primary gid)` of user `name`; `None` when /etc/passwd is missing or has no such user.
pub fn lookup_user(tree: &Tree, name: &str) -> Result<Option<(u32, u32)>, FileOpError> {
    let err = |why: &str| FileOpError::Invalid(format!("user {name} in /etc/passwd: {why}"));
    let Some(db) = read_etc(tree, "passwd")? else { return Ok(None) };
    let Some(f) = find(&db, name) else { return Ok(None) };
    let uid = f[2].parse().map_err(|_| err("invalid uid"))?;
    let gid = f.get(3).and_then(|g| g.parse().ok()).ok_or_else(|| err("invalid gid"))?;
    Ok(Some((uid, gid)))
}

/// The gid of group `name`; `None` when /etc/group is missing or has no such group.
pub fn lookup_group(tree: &Tree, name: &str) -> Result<Option<u32>, FileOpError> {
    let Some(db) = read_etc(tree, "group")? else { return Ok(None) };
    let Some(f) = find(&db, name) else { return Ok(None) };
    f[2].parse().map(Some).map_err(|_| FileOpError::Invalid(format!("group {name} in /etc/group: invalid gid")))
}

/// Resolves a `--chown` (or WORKDIR's USER) to ids; `tree_for(input)` gives the file system a by-name
/// lookup reads. `None` when no owner is set. A user id alone also sets the group id, as BuildKit does.
/// A name that is not found is not an error: an unknown user is 0:0 and an unknown group leaves the
/// gid as the user part set it (BuildKit's `readUser` starts from a zero `copy.User`).
pub fn resolve_owner(
    opt: Option<&ChownOpt>,
    tree_for: &dyn Fn(Option<usize>) -> Result<Tree, FileOpError>,
) -> Result<Option<(u32, u32)>, FileOpError> {
    let Some(opt) = opt else { return Ok(None) };
    if opt.user.is_none() && opt.group.is_none() {
        return Ok(None);
    }
    let (mut uid, mut gid) = (0, 0);
    match &opt.user {
        Some(UserOpt::ById(id)) => (uid, gid) = (*id, *id),
        Some(UserOpt::ByName { name, input }) => {
            (uid, gid) = lookup_user(&tree_for(*input)?, name)?.unwrap_or((0, 0));
        }
        None => {}
    }
    match &opt.group {
        Some(UserOpt::ById(id)) => gid = *id,
        Some(UserOpt::ByName { name, input }) => {
            if let Some(g) = lookup_group(&tree_for(*input)?, name)? {
                gid = g;
            }
        }
        None => {}
    }
    Ok(Some((uid, gid)))
}
