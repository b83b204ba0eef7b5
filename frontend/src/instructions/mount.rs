//! `RUN --mount=...` values, a port of BuildKit's `instructions/parse_runmount.go`.
//!
//! The value is a CSV record of `key=value` fields (and a few bare keys). Parsing happens twice: once
//! without expansion when the instruction is parsed (to report syntax errors early, with a span), and
//! again at conversion with the stage's variables expanded in every value.

use std::fmt;

use crate::diag::suggest;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MountType {
    Bind,
    Cache,
    Tmpfs,
    Secret,
    Ssh,
}

impl MountType {
    const ALL: [&'static str; 5] = ["bind", "cache", "tmpfs", "secret", "ssh"];

    fn parse(s: &str) -> Option<MountType> {
        Some(match s {
            "bind" => MountType::Bind,
            "cache" => MountType::Cache,
            "tmpfs" => MountType::Tmpfs,
            "secret" => MountType::Secret,
            "ssh" => MountType::Ssh,
            _ => return None,
        })
    }
}

impl fmt::Display for MountType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MountType::Bind => "bind",
            MountType::Cache => "cache",
            MountType::Tmpfs => "tmpfs",
            MountType::Secret => "secret",
            MountType::Ssh => "ssh",
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Sharing {
    Shared,
    Private,
    Locked,
}

/// One parsed `--mount`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunMount {
    pub kind: MountType,
    /// Stage name, index or image the source comes from (bind, cache); empty for the build context.
    pub from: String,
    pub source: String,
    pub target: String,
    pub readonly: bool,
    /// Cache id, or secret / ssh id.
    pub id: String,
    pub sharing: Sharing,
    pub required: bool,
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// tmpfs size in bytes.
    pub size: Option<u64>,
    /// secret exposed as an environment variable.
    pub env: Option<String>,
}

const KEYS: [&str; 19] = [
    "type",
    "from",
    "source",
    "target",
    "readonly",
    "id",
    "sharing",
    "required",
    "size",
    "mode",
    "uid",
    "gid",
    "src",
    "dst",
    "destination",
    "ro",
    "rw",
    "readwrite",
    "env",
];

/// The `from` of one `--mount` value as the instruction parser sees it, before the stage's variables are
/// known (BuildKit's `parseMount` without an expander): only CSV syntax and `from` are checked, since
/// `from` names a stage the build depends on and so cannot use variables. Every other key is
/// evaluated at dispatch by [`parse_mount`], after expansion.
pub fn mount_from(value: &str) -> Result<Option<String>, String> {
    let mut from = None;
    for field in split_csv(value)? {
        if let Some((key, value)) = field.split_once('=') {
            if key.eq_ignore_ascii_case("from") {
                if value.find('$').is_some_and(|i| i != value.len() - 1) {
                    return Err("'from' doesn't support variable expansion, define alias stage instead".into());
                }
                from = Some(value.to_string());
            }
        }
    }
    Ok(from.filter(|f| !f.is_empty()))
}

/// Parse one `--mount` value at dispatch; `expand` is applied to every value, with the stage's ARG and
/// ENV variables (BuildKit's `setMountState` with the dispatch expander).
pub fn parse_mount(value: &str, expand: &mut dyn FnMut(&str) -> Result<String, String>) -> Result<RunMount, String> {
    let fields = split_csv(value)?;
    let mut m = RunMount {
        kind: MountType::Bind,
        from: String::new(),
        source: String::new(),
        target: String::new(),
        readonly: false,
        id: String::new(),
        sharing: Sharing::Shared,
        required: false,
        mode: None,
        uid: None,
        gid: None,
        size: None,
        env: None,
    };
    let mut ro_auto = true;
    let mut sharing_set = false;
    for field in &fields {
        let Some((key, raw)) = field.split_once('=') else {
            match field.to_ascii_lowercase().as_str() {
                "readonly" | "ro" => (m.readonly, ro_auto) = (true, false),
                "readwrite" | "rw" => (m.readonly, ro_auto) = (false, false),
                "required" if matches!(m.kind, MountType::Secret | MountType::Ssh) => m.required = true,
                "required" => return Err(format!("unexpected key 'required' for mount type '{}'", m.kind)),
                _ => return Err(format!("invalid field '{field}' must be a key=value pair")),
            }
            continue;
        };
        let key = key.to_ascii_lowercase();
        let value = expand(raw)?;
        match key.as_str() {
            "type" => {
                let lower = value.to_ascii_lowercase();
                m.kind = MountType::parse(&lower)
                    .ok_or_else(|| suggest(format!("unsupported mount type \"{value}\""), &lower, MountType::ALL))?;
            }
            "from" => m.from = value,
            "source" | "src" => m.source = value,
            "target" | "dst" | "destination" => m.target = value,
            "readonly" | "ro" => (m.readonly, ro_auto) = (parse_bool(&key, &value)?, false),
            "readwrite" | "rw" => (m.readonly, ro_auto) = (!parse_bool(&key, &value)?, false),
            "required" => {
                if !matches!(m.kind, MountType::Secret | MountType::Ssh) {
                    return Err(format!("unexpected key 'required' for mount type '{}'", m.kind));
                }
                m.required = parse_bool(&key, &value)?;
            }
            "sharing" => {
                if m.kind != MountType::Cache {
                    return Err(format!("invalid cache sharing set for {} mount", m.kind));
                }
                m.sharing = match value.to_ascii_lowercase().as_str() {
                    "shared" => Sharing::Shared,
                    "private" => Sharing::Private,
                    "locked" => Sharing::Locked,
                    other => {
                        return Err(suggest(
                            format!("unrecognized cache sharing type {other}"),
                            other,
                            ["shared", "private", "locked"],
                        ))
                    }
                };
                sharing_set = true;
            }
            "mode" => {
                m.mode = Some(
                    u32::from_str_radix(&value, 8)
                        .map_err(|_| format!("invalid mode \"{value}\": expected an octal number such as 0644"))?,
                )
            }
            "uid" => m.uid = Some(parse_id("uid", &value)?),
            "gid" => m.gid = Some(parse_id("gid", &value)?),
            "id" => m.id = value,
            "size" => {
                if m.kind != MountType::Tmpfs {
                    return Err(format!("unexpected key 'size' for mount type '{}'", m.kind));
                }
                m.size = Some(parse_size(&value).map_err(|e| e.0)?);
            }
            "env" => {
                if m.kind != MountType::Secret {
                    return Err(format!("unexpected key 'env' for mount type '{}'", m.kind));
                }
                m.env = Some(value);
            }
            _ => return Err(suggest(format!("unexpected key '{key}' in '{field}'"), &key, KEYS)),
        }
    }

    let file_info_allowed = matches!(m.kind, MountType::Secret | MountType::Ssh | MountType::Cache);
    if !file_info_allowed {
        for (name, set) in [("mode", m.mode.is_some()), ("uid", m.uid.is_some()), ("gid", m.gid.is_some())] {
            if set {
                return Err(format!("{name} not allowed for \"{}\" type mounts", m.kind));
            }
        }
    }
    if ro_auto {
        m.readonly = !matches!(m.kind, MountType::Cache | MountType::Tmpfs);
    }
    if sharing_set && m.kind != MountType::Cache {
        return Err(format!("invalid cache sharing set for {} mount", m.kind));
    }
    match m.kind {
        MountType::Secret => {
            if !m.from.is_empty() {
                return Err("secret mount should not have a from".into());
            }
            if m.source.is_empty() && m.target.is_empty() && m.id.is_empty() && m.env.is_none() {
                return Err("invalid secret mount: one of id, target or env is required".into());
            }
            if !m.source.is_empty() && !m.id.is_empty() {
                return Err("both source and id can't be set".into());
            }
        }
        MountType::Ssh => {
            if !m.from.is_empty() {
                return Err("ssh mount should not have a from".into());
            }
        }
        MountType::Bind | MountType::Cache | MountType::Tmpfs => {
            if m.target.is_empty() {
                return Err(format!("{} mount requires a target (target=/path)", m.kind));
            }
        }
    }
    Ok(m)
}

fn parse_bool(key: &str, value: &str) -> Result<bool, String> {
    match value.to_ascii_lowercase().as_str() {
        "1" | "t" | "true" => Ok(true),
        "0" | "f" | "false" => Ok(false),
        _ => Err(format!("invalid value for {key}: \"{value}\" (expected true or false)")),
    }
}

fn parse_id(key: &str, value: &str) -> Result<u32, String> {
    value.parse().map_err(|_| format!("invalid {key} \"{value}\": expected a number"))
}

/// Docker's `units.RAMInBytes`: a number with an optional binary unit (b, k, m, g, t, p; `kb`/`kib` too).
pub fn parse_size(value: &str) -> Result<u64, super::InvalidValue> {
    let err = || {
        super::InvalidValue(format!("invalid size \"{value}\": expected a number with an optional unit such as 64m"))
    };
    let lower = value.trim().to_ascii_lowercase();
    let split = lower.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(lower.len());
    let (num, unit) = lower.split_at(split);
    let num: f64 = num.parse().map_err(|_| err())?;
    let unit = unit.trim_end_matches('b').trim_end_matches('i');
    let mult: u64 = match unit {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        "t" => 1 << 40,
        "p" => 1 << 50,
        _ => return Err(err()),
    };
    if !num.is_finite() || num < 0.0 {
        return Err(err());
    }
    Ok((num * mult as f64) as u64)
}

/// Split one CSV record like Go's encoding/csv (comma-separated, `"` quoting with `""` escapes).
fn split_csv(s: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars().peekable();
    let mut at_start = true;
    let mut quoted = false;
    while let Some(c) = chars.next() {
        if quoted {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    chars.next();
                    cur.push('"');
                } else {
                    quoted = false;
                }
            } else {
                cur.push(c);
            }
            continue;
        }
        match c {
            '"' if at_start => {
                quoted = true;
                at_start = false;
            }
            ',' => {
                fields.push(std::mem::take(&mut cur));
                at_start = true;
            }
            _ => {
                cur.push(c);
                at_start = false;
            }
        }
    }
    if quoted {
        return Err(format!("invalid mount value {s:?}: unterminated quote"));
    }
    fields.push(cur);
    Ok(fields.into_iter().filter(|f| !f.is_empty()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<RunMount, String> {
        parse_mount(s, &mut |v| Ok(v.to_string()))
    }

    #[test]
    fn defaults_per_type() {
        let b = parse("target=/src").unwrap();
        assert_eq!((b.kind, b.readonly), (MountType::Bind, true));
        let c = parse("type=cache,target=/root/.cache,id=go,sharing=locked").unwrap();
        assert_eq!((c.kind, c.readonly, c.sharing, c.id.as_str()), (MountType::Cache, false, Sharing::Locked, "go"));
        let t = parse("type=tmpfs,dst=/tmp,size=64m").unwrap();
        assert_eq!(t.size, Some(64 << 20));
        let s = parse("type=secret,id=tok,env=TOKEN,required").unwrap();
        assert!(s.required && s.env.as_deref() == Some("TOKEN") && s.readonly);
        let ssh = parse("type=ssh,mode=0600,uid=1000").unwrap();
        assert_eq!((ssh.mode, ssh.uid), (Some(0o600), Some(1000)));
        let rw = parse("type=bind,source=a,target=/a,from=build,rw").unwrap();
        assert!(!rw.readonly);
        assert_eq!(rw.from, "build");
    }

    #[test]
    fn quoted_fields() {
        let m = parse("\"target=/a,b\",type=cache").unwrap();
        assert_eq!(m.target, "/a,b");
    }

    #[test]
    fn errors() {
        assert_eq!(
            parse("type=cahce,target=/a").unwrap_err(),
            "unsupported mount type \"cahce\" (did you mean cache?)"
        );
        assert_eq!(
            parse("target=/a,tagret=/b").unwrap_err(),
            "unexpected key 'tagret' in 'tagret=/b' (did you mean target?)"
        );
        assert_eq!(parse("target=/a,mode=0644").unwrap_err(), "mode not allowed for \"bind\" type mounts");
        assert_eq!(
            parse("type=cache,target=/a,sharing=everyone").unwrap_err(),
            "unrecognized cache sharing type everyone"
        );
        assert_eq!(parse("target=/a,sharing=locked").unwrap_err(), "invalid cache sharing set for bind mount");
        assert_eq!(parse("type=secret,id=a,from=x").unwrap_err(), "secret mount should not have a from");
        assert_eq!(parse("type=cache").unwrap_err(), "cache mount requires a target (target=/path)");
        assert_eq!(
            parse("type=tmpfs,target=/t,size=lots").unwrap_err().split(':').next(),
            Some("invalid size \"lots\"")
        );
        assert_eq!(parse("target=/a,junk").unwrap_err(), "invalid field 'junk' must be a key=value pair");
        assert_eq!(parse("target=/a,required").unwrap_err(), "unexpected key 'required' for mount type 'bind'");
    }

    #[test]
    fn values_expand_at_dispatch() {
        let vars = [("CACHE_DIR", "/cache"), ("MODE", "0750"), ("OWNER", "7"), ("ID", "mine")];
        let mut expand = |w: &str| {
            let mut out = w.to_string();
            for (k, v) in vars {
                out = out.replace(&format!("${{{k}}}"), v).replace(&format!("${k}"), v);
            }
            Ok(out)
        };
        let m =
            parse_mount("type=cache,target=$CACHE_DIR,id=${ID},uid=$OWNER,gid=$OWNER,mode=$MODE", &mut expand).unwrap();
        assert_eq!((m.target.as_str(), m.id.as_str()), ("/cache", "mine"));
        assert_eq!((m.uid, m.gid, m.mode), (Some(7), Some(7), Some(0o750)));
    }

    #[test]
    fn parse_time_reads_only_from() {
        // Values that only make sense once expanded are not checked before dispatch.
        assert_eq!(mount_from("type=cache,target=$DIR,uid=$OWNER,mode=$MODE"), Ok(None));
        assert_eq!(mount_from("type=bind,from=build,target=/b"), Ok(Some("build".into())));
        assert_eq!(
            mount_from("from=$STAGE,target=/b").unwrap_err(),
            "'from' doesn't support variable expansion, define alias stage instead"
        );
        assert!(mount_from("\"target=/a").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1024").unwrap(), 1024);
        assert_eq!(parse_size("1k").unwrap(), 1024);
        assert_eq!(parse_size("1.5GiB").unwrap(), 3 << 29);
        assert!(parse_size("-1").is_err());
    }
}
