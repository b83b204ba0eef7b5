//! `--ulimit TYPE=SOFT[:HARD]`: Docker's names for the `RLIMIT_*` resources and its syntax (go-units
//! `ParseUlimit`, what `docker run --ulimit` and `docker buildx build --ulimit` take). The spec carries them
//! as OCI `process.rlimits`; init sets them just before exec (runc does the same from the spec).

use std::fmt;
use std::str::FromStr;

use oci_spec::runtime::PosixRlimitType;
use serde::{Deserialize, Serialize};

/// A resource Docker lets a build limit, by its `--ulimit` name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RlimitType {
    As,
    Core,
    Cpu,
    Data,
    Fsize,
    Locks,
    Memlock,
    Msgqueue,
    Nice,
    Nofile,
    Nproc,
    Rss,
    Rtprio,
    Rttime,
    Sigpending,
    Stack,
}

impl RlimitType {
    /// Every type, in the order of their names.
    pub const ALL: [RlimitType; 16] = [
        RlimitType::As,
        RlimitType::Core,
        RlimitType::Cpu,
        RlimitType::Data,
        RlimitType::Fsize,
        RlimitType::Locks,
        RlimitType::Memlock,
        RlimitType::Msgqueue,
        RlimitType::Nice,
        RlimitType::Nofile,
        RlimitType::Nproc,
        RlimitType::Rss,
        RlimitType::Rtprio,
        RlimitType::Rttime,
        RlimitType::Sigpending,
        RlimitType::Stack,
    ];

    /// The `--ulimit` name (`nofile`).
    pub fn name(self) -> &'static str {
        match self {
            RlimitType::As => "as",
            RlimitType::Core => "core",
            RlimitType::Cpu => "cpu",
            RlimitType::Data => "data",
            RlimitType::Fsize => "fsize",
            RlimitType::Locks => "locks",
            RlimitType::Memlock => "memlock",
            RlimitType::Msgqueue => "msgqueue",
            RlimitType::Nice => "nice",
            RlimitType::Nofile => "nofile",
            RlimitType::Nproc => "nproc",
            RlimitType::Rss => "rss",
            RlimitType::Rtprio => "rtprio",
            RlimitType::Rttime => "rttime",
            RlimitType::Sigpending => "sigpending",
            RlimitType::Stack => "stack",
        }
    }

    /// The OCI spec's type (`RLIMIT_NOFILE`).
    pub fn oci(self) -> PosixRlimitType {
        match self {
            RlimitType::As => PosixRlimitType::RlimitAs,
            RlimitType::Core => PosixRlimitType::RlimitCore,
            RlimitType::Cpu => PosixRlimitType::RlimitCpu,
            RlimitType::Data => PosixRlimitType::RlimitData,
            RlimitType::Fsize => PosixRlimitType::RlimitFsize,
            RlimitType::Locks => PosixRlimitType::RlimitLocks,
            RlimitType::Memlock => PosixRlimitType::RlimitMemlock,
            RlimitType::Msgqueue => PosixRlimitType::RlimitMsgqueue,
            RlimitType::Nice => PosixRlimitType::RlimitNice,
            RlimitType::Nofile => PosixRlimitType::RlimitNofile,
            RlimitType::Nproc => PosixRlimitType::RlimitNproc,
            RlimitType::Rss => PosixRlimitType::RlimitRss,
            RlimitType::Rtprio => PosixRlimitType::RlimitRtprio,
            RlimitType::Rttime => PosixRlimitType::RlimitRttime,
            RlimitType::Sigpending => PosixRlimitType::RlimitSigpending,
            RlimitType::Stack => PosixRlimitType::RlimitStack,
        }
    }

    /// The type of an OCI spec's rlimit (`None` for types Docker has no name for).
    pub fn from_oci(t: PosixRlimitType) -> Option<RlimitType> {
        Self::ALL.into_iter().find(|r| r.oci() == t)
    }

    /// The kernel's resource number for setrlimit(2).
    pub fn resource(self) -> u32 {
        match self {
            RlimitType::As => libc::RLIMIT_AS,
            RlimitType::Core => libc::RLIMIT_CORE,
            RlimitType::Cpu => libc::RLIMIT_CPU,
            RlimitType::Data => libc::RLIMIT_DATA,
            RlimitType::Fsize => libc::RLIMIT_FSIZE,
            RlimitType::Locks => libc::RLIMIT_LOCKS,
            RlimitType::Memlock => libc::RLIMIT_MEMLOCK,
            RlimitType::Msgqueue => libc::RLIMIT_MSGQUEUE,
            RlimitType::Nice => libc::RLIMIT_NICE,
            RlimitType::Nofile => libc::RLIMIT_NOFILE,
            RlimitType::Nproc => libc::RLIMIT_NPROC,
            RlimitType::Rss => libc::RLIMIT_RSS,
            RlimitType::Rtprio => libc::RLIMIT_RTPRIO,
            RlimitType::Rttime => libc::RLIMIT_RTTIME,
            RlimitType::Sigpending => libc::RLIMIT_SIGPENDING,
            RlimitType::Stack => libc::RLIMIT_STACK,
        }
    }
}

impl fmt::Display for RlimitType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a `--ulimit` value was refused; every message names the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RlimitError {
    #[error("invalid ulimit {value:?}: expected TYPE=SOFT[:HARD], e.g. nofile=1024:2048")]
    Syntax { value: String },
    #[error("invalid ulimit {value:?}: unknown type {name:?}; use one of {}", names())]
    UnknownType { value: String, name: String },
    #[error("invalid ulimit {value:?}: {number:?} is not a whole number (-1 means unlimited)")]
    Number { value: String, number: String },
    #[error("invalid ulimit {value:?}: the soft limit must be less than or equal to the hard limit")]
    SoftAboveHard { value: String },
}

fn names() -> String {
    RlimitType::ALL.iter().map(|t| t.name()).collect::<Vec<_>>().join(", ")
}

impl FromStr for RlimitType {
    type Err = String;
    fn from_str(s: &str) -> Result<RlimitType, String> {
        RlimitType::ALL.into_iter().find(|t| t.name() == s).ok_or_else(|| s.to_string())
    }
}

/// `RLIM_INFINITY`: what `-1` means.
pub const UNLIMITED: u64 = u64::MAX;

/// One resource limit of a RUN step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Rlimit {
    #[serde(rename = "type")]
    pub typ: RlimitType,
    /// [`UNLIMITED`] for no limit.
    pub soft: u64,
    pub hard: u64,
}

/// Docker's numbers are int64 with -1 for unlimited (`uint64(-1)` is RLIM_INFINITY).
fn from_docker(n: i64) -> u64 {
    if n < 0 {
        UNLIMITED
    } else {
        n as u64
    }
}

fn to_docker(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(-1)
}

impl Rlimit {
    /// From BuildKit's LLB form (`pb.Ulimit`: name, soft and hard as int64).
    pub fn from_llb(u: &llb::Ulimit) -> Result<Rlimit, RlimitError> {
        let value = format!("{}={}:{}", u.name, u.soft, u.hard);
        let typ = u.name.parse().map_err(|name| RlimitError::UnknownType { value: value.clone(), name })?;
        Rlimit::checked(typ, u.soft, u.hard, value)
    }

    /// The LLB form.
    pub fn to_llb(self) -> llb::Ulimit {
        llb::Ulimit { name: self.typ.name().to_string(), soft: to_docker(self.soft), hard: to_docker(self.hard) }
    }

    fn checked(typ: RlimitType, soft: i64, hard: i64, value: String) -> Result<Rlimit, RlimitError> {
        // go-units: a -1 hard limit takes any soft one; otherwise soft must be finite and not above it.
        if hard >= 0 && (soft < 0 || soft > hard) {
            return Err(RlimitError::SoftAboveHard { value });
        }
        Ok(Rlimit { typ, soft: from_docker(soft), hard: from_docker(hard) })
    }
}

impl FromStr for Rlimit {
    type Err = RlimitError;
    /// `TYPE=SOFT[:HARD]`; the hard limit defaults to the soft one (go-units `ParseUlimit`).
    fn from_str(value: &str) -> Result<Rlimit, RlimitError> {
        let syntax = || RlimitError::Syntax { value: value.to_string() };
        let (name, limits) = value.split_once('=').ok_or_else(syntax)?;
        let typ: RlimitType =
            name.parse().map_err(|name| RlimitError::UnknownType { value: value.to_string(), name })?;
        let number = |n: &str| {
            n.parse::<i64>().map_err(|_| RlimitError::Number { value: value.to_string(), number: n.to_string() })
        };
        let (soft, hard) = match limits.split(':').collect::<Vec<_>>()[..] {
            [soft] => (number(soft)?, number(soft)?),
            [soft, hard] => (number(soft)?, number(hard)?),
            _ => return Err(syntax()),
        };
        Rlimit::checked(typ, soft, hard, value.to_string())
    }
}

impl fmt::Display for Rlimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}:{}", self.typ, to_docker(self.soft), to_docker(self.hard))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_dockers_syntax() {
        let r: Rlimit = "nofile=512:1024".parse().unwrap();
        assert_eq!(r, Rlimit { typ: RlimitType::Nofile, soft: 512, hard: 1024 });
        let r: Rlimit = "nproc=100".parse().unwrap();
        assert_eq!((r.soft, r.hard), (100, 100), "the hard limit defaults to the soft one");
        let r: Rlimit = "core=-1".parse().unwrap();
        assert_eq!((r.soft, r.hard), (UNLIMITED, UNLIMITED));
        let r: Rlimit = "stack=8192:-1".parse().unwrap();
        assert_eq!((r.soft, r.hard), (8192, UNLIMITED));
        assert_eq!(r.to_string(), "stack=8192:-1");
        for t in RlimitType::ALL {
            let r: Rlimit = format!("{t}=1:2").parse().unwrap();
            assert_eq!(r.typ, t);
            assert_eq!(RlimitType::from_oci(t.oci()), Some(t));
        }
    }

    #[test]
    fn bad_values_name_themselves() {
        let err = |v: &str| v.parse::<Rlimit>().unwrap_err().to_string();
        assert_eq!(err("nofile"), "invalid ulimit \"nofile\": expected TYPE=SOFT[:HARD], e.g. nofile=1024:2048");
        let e = err("nofiles=1");
        assert!(e.starts_with("invalid ulimit \"nofiles=1\": unknown type \"nofiles\"; use one of as, core,"), "{e}");
        assert_eq!(
            err("nofile=lots"),
            "invalid ulimit \"nofile=lots\": \"lots\" is not a whole number (-1 means unlimited)"
        );
        assert!(err("nofile=1:2:3").contains("expected TYPE=SOFT[:HARD]"));
        assert!(err("nofile=2048:1024").contains("soft limit must be less than or equal to the hard limit"));
        assert!(err("nofile=-1:1024").contains("soft limit must be less"));
        assert!(err("NOFILE=1").contains("unknown type \"NOFILE\""), "names are lower case, as docker's");
    }

    #[test]
    fn llb_round_trip() {
        let r: Rlimit = "memlock=-1:-1".parse().unwrap();
        let u = r.to_llb();
        assert_eq!((u.name.as_str(), u.soft, u.hard), ("memlock", -1, -1));
        assert_eq!(Rlimit::from_llb(&u).unwrap(), r);
        let bad = llb::Ulimit { name: "bogus".into(), soft: 1, hard: 1 };
        assert!(Rlimit::from_llb(&bad).unwrap_err().to_string().contains("unknown type \"bogus\""));
    }
}
