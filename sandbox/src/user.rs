//! `USER` resolution against the rootfs's /etc/passwd and /etc/group, exactly as BuildKit does
//! (`executor/oci/user.go` `GetUser`, which calls moby/sys/user `GetExecUser` with no defaults).
//!
//! - `uid:gid` with both numeric (or `root`): taken as is, files not read;
//! - empty: uid 0 looked up like `0` (so root gets the groups that list it), or 0:0 when that fails;
//! - otherwise the user part matches a passwd name (or uid when numeric); a numeric uid without an entry
//!   is used as is with gid 0; the group part matches a group name (or gid when numeric); without a group
//!   part, the supplementary groups are the groups listing the matched user's name.
//!
//! The primary gid is always among the supplementary groups, first unless already listed (BuildKit's
//! `ensureAdditionalGids`), so `id` shows `groups=0(root)` for root.

use std::path::Path;

/// A user as the process will run.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    /// The home directory from the passwd entry (`/` without one), for `HOME`.
    pub home: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UserError {
    #[error(
        "unable to find user {0}: no matching entries in passwd file; add the user to /etc/passwd or use a numeric uid"
    )]
    NoUser(String),
    #[error(
        "unable to find group {0}: no matching entries in group file; add the group to /etc/group or use a numeric gid"
    )]
    NoGroup(String),
    #[error("user or group id {0} is out of range; ids go from 0 to 2147483647")]
    Range(i64),
    #[error("cannot read {path} in the rootfs: {message}")]
    Read { path: String, message: String },
}

const MAX_ID: i64 = i32::MAX as i64;

struct PasswdEntry<'a> {
    name: &'a str,
    uid: i64,
    gid: i64,
    home: &'a str,
}

struct GroupEntry<'a> {
    name: &'a str,
    gid: i64,
    members: Vec<&'a str>,
}

/// Go's strconv.Atoi for the ids: optional sign, decimal digits.
fn atoi(s: &str) -> Option<i64> {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// moby/sys/user parseLine: fields split on ':'; missing fields are empty; unparsable ids are 0.
fn parse_passwd(data: &str) -> Vec<PasswdEntry<'_>> {
    data.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            let get = |i: usize| f.get(i).copied().unwrap_or("");
            PasswdEntry { name: get(0), uid: atoi(get(2)).unwrap_or(0), gid: atoi(get(3)).unwrap_or(0), home: get(5) }
        })
        .collect()
}

fn parse_group(data: &str) -> Vec<GroupEntry<'_>> {
    data.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            let get = |i: usize| f.get(i).copied().unwrap_or("");
            let members = if get(3).is_empty() { Vec::new() } else { get(3).split(',').collect() };
            GroupEntry { name: get(0), gid: atoi(get(2)).unwrap_or(0), members }
        })
        .collect()
}

/// BuildKit's ParseUIDGID fast path: both parts given, each numeric or `root`.
fn parse_uid_gid(spec: &str) -> Option<(u32, u32)> {
    let (u, g) = spec.split_once(':')?;
    let id = |s: &str| if s == "root" { Some(0) } else { s.parse::<u32>().ok() };
    Some((id(u)?, id(g)?))
}

fn check_range(id: i64) -> Result<u32, UserError> {
    if (0..=MAX_ID).contains(&id) {
        Ok(id as u32)
    } else {
        Err(UserError::Range(id))
    }
}

/// Resolves `spec` against the contents of /etc/passwd and /etc/group (`None`: the file is missing).
pub fn resolve(spec: &str, passwd: Option<&str>, group: Option<&str>) -> Result<ResolvedUser, UserError> {
    let mut user = if spec.is_empty() {
        // BuildKit's GetUser: the default user is "0", and a failed lookup of it is plain root.
        lookup("0", passwd, group).unwrap_or_else(|_| lookup("0:0", None, None).unwrap_or_default())
    } else {
        lookup(spec, passwd, group)?
    };
    if !user.additional_gids.contains(&user.gid) {
        user.additional_gids.insert(0, user.gid);
    }
    Ok(user)
}

/// moby/sys/user `GetExecUser` behind BuildKit's `ParseUIDGID` fast path, without the primary gid rule.
fn lookup(spec: &str, passwd: Option<&str>, group: Option<&str>) -> Result<ResolvedUser, UserError> {
    // The fast path (BuildKit's ParseUIDGID): `uid:gid` both given; files only give HOME.
    if let Some((uid, gid)) = parse_uid_gid(spec) {
        let home = parse_passwd(passwd.unwrap_or(""))
            .iter()
            .find(|e| e.uid == i64::from(uid))
            .map_or("/", |e| e.home)
            .to_string();
        return Ok(ResolvedUser { uid, gid, additional_gids: Vec::new(), home: non_empty_home(home) });
    }
    let (user_arg, group_arg) = spec.split_once(':').unwrap_or((spec, ""));
    let uid_arg = atoi(user_arg);
    let users = parse_passwd(passwd.unwrap_or(""));
    let matched = users.iter().find(|u| match (user_arg.is_empty(), uid_arg) {
        (true, _) => u.uid == 0,
        (false, Some(n)) => u.uid == n,
        (false, None) => u.name == user_arg,
    });
    let mut out = ResolvedUser::default();
    let mut matched_name = "";
    match matched {
        Some(u) => {
            matched_name = u.name;
            out.uid = check_range(u.uid)?;
            out.gid = check_range(u.gid)?;
            out.home = u.home.to_string();
        }
        None if !user_arg.is_empty() => match uid_arg {
            Some(n) => out.uid = check_range(n)?,
            None => return Err(UserError::NoUser(user_arg.to_string())),
        },
        None => {}
    }
    if !group_arg.is_empty() || !matched_name.is_empty() {
        let gid_arg = atoi(group_arg);
        let groups = parse_group(group.unwrap_or(""));
        if !group_arg.is_empty() {
            let found = groups.iter().find(|g| match gid_arg {
                Some(n) => g.gid == n,
                None => g.name == group_arg,
            });
            out.gid = match (found, gid_arg) {
                (Some(g), _) => check_range(g.gid)?,
                (None, Some(n)) => check_range(n)?,
                (None, None) => return Err(UserError::NoGroup(group_arg.to_string())),
            };
        } else {
            for g in groups.iter().filter(|g| g.members.contains(&matched_name)) {
                out.additional_gids.push(check_range(g.gid)?);
            }
        }
    }
    out.home = non_empty_home(std::mem::take(&mut out.home));
    Ok(out)
}

fn non_empty_home(home: String) -> String {
    if home.is_empty() {
        "/".into()
    } else {
        home
    }
}

/// Resolves `spec` against the files of a mounted rootfs, reading them scoped to the root.
pub fn resolve_in_rootfs(rootfs: &Path, spec: &str) -> Result<ResolvedUser, UserError> {
    let read = |path: &str| -> Result<Option<String>, UserError> {
        crate::sys::read_in_root(rootfs, Path::new(path))
            .map(|o| o.map(|b| String::from_utf8_lossy(&b).into_owned()))
            .map_err(|e| UserError::Read { path: path.into(), message: e.to_string() })
    };
    let passwd = read("/etc/passwd")?;
    let group = read("/etc/group")?;
    resolve(spec, passwd.as_deref(), group.as_deref())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
        # a comment\n\
        daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n\
        app:x:1000:1000:App:/home/app:/bin/sh\n\
        nohome:x:1001:1001::\n";
    const GROUP: &str = "root:x:0:\n\
        daemon:x:1:app\n\
        app:x:1000:\n\
        wheel:x:10:app,root\n\
        audio:x:29:nohome\n";

    fn user(uid: u32, gid: u32, extra: &[u32], home: &str) -> ResolvedUser {
        ResolvedUser { uid, gid, additional_gids: extra.to_vec(), home: home.into() }
    }

    #[test]
    fn resolution_table() {
        let cases: &[(&str, Result<ResolvedUser, UserError>)] = &[
            // The default user is uid 0 looked up: root's groups from /etc/group (BuildKit v0.24).
            ("", Ok(user(0, 0, &[0, 10], "/root"))),
            ("root", Ok(user(0, 0, &[0, 10], "/root"))),
            ("0", Ok(user(0, 0, &[0, 10], "/root"))),
            ("app", Ok(user(1000, 1000, &[1000, 1, 10], "/home/app"))),
            ("1000", Ok(user(1000, 1000, &[1000, 1, 10], "/home/app"))),
            // A uid without a passwd entry: gid 0, only that group (BuildKit and Docker).
            ("1234", Ok(user(1234, 0, &[0], "/"))),
            ("1234:5678", Ok(user(1234, 5678, &[5678], "/"))),
            // The fast path: both numeric, only the primary group even when the user has others.
            ("1000:1000", Ok(user(1000, 1000, &[1000], "/home/app"))),
            ("root:root", Ok(user(0, 0, &[0], "/root"))),
            ("app:wheel", Ok(user(1000, 10, &[10], "/home/app"))),
            ("app:29", Ok(user(1000, 29, &[29], "/home/app"))),
            ("app:4242", Ok(user(1000, 4242, &[4242], "/home/app"))),
            ("1234:wheel", Ok(user(1234, 10, &[10], "/"))),
            ("nohome", Ok(user(1001, 1001, &[1001, 29], "/"))),
            ("ghost", Err(UserError::NoUser("ghost".into()))),
            ("app:ghosts", Err(UserError::NoGroup("ghosts".into()))),
            ("-5", Err(UserError::Range(-5))),
            ("3000000000", Err(UserError::Range(3_000_000_000))),
        ];
        for (spec, want) in cases {
            assert_eq!(&resolve(spec, Some(PASSWD), Some(GROUP)), want, "USER {spec:?}");
        }
    }

    #[test]
    fn missing_files_are_empty() {
        assert_eq!(resolve("1234", None, None), Ok(user(1234, 0, &[0], "/")));
        assert_eq!(resolve("root", None, None), Err(UserError::NoUser("root".into())));
        assert_eq!(resolve("0", None, None), Ok(user(0, 0, &[0], "/")));
        assert_eq!(resolve("", None, None), Ok(user(0, 0, &[0], "/")));
        assert_eq!(resolve("5:7", None, None), Ok(user(5, 7, &[7], "/")));
    }

    #[test]
    fn the_primary_group_is_listed_once() {
        // Already a supplementary group of the user: not added again.
        let group = "root:x:0:\nwheel:x:10:app\napp:x:1000:app\n";
        assert_eq!(resolve("app", Some(PASSWD), Some(group)), Ok(user(1000, 1000, &[10, 1000], "/home/app")));
    }

    #[test]
    fn reads_files_scoped_to_the_rootfs() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(dir.path().join("etc/group"), GROUP).unwrap();
        // An absolute symlink must resolve inside the rootfs, never to the host's /etc/passwd.
        std::os::unix::fs::symlink("/etc/other", dir.path().join("etc/passwd")).unwrap();
        std::fs::write(dir.path().join("etc/other"), PASSWD).unwrap();
        assert_eq!(resolve_in_rootfs(dir.path(), "app"), Ok(user(1000, 1000, &[1000, 1, 10], "/home/app")));
        std::fs::remove_file(dir.path().join("etc/other")).unwrap();
        assert_eq!(resolve_in_rootfs(dir.path(), "root"), Err(UserError::NoUser("root".into())));
    }
}
