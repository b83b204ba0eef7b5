//! Daemon addresses: `unix:///run/rbuild/rbuild.sock`, `tcp://10.0.0.1:1234` (dockerd's and buildkitd's
//! forms).

use std::path::PathBuf;
use std::str::FromStr;

use crate::DaemonError;

/// The daemon's default socket.
pub const DEFAULT_SOCKET: &str = "/run/rbuild/rbuild.sock";

/// Where a daemon listens or a client connects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    Unix(PathBuf),
    /// `host:port`.
    Tcp(String),
}

impl Address {
    /// The default: the unix socket.
    pub fn default_socket() -> Address {
        Address::Unix(PathBuf::from(DEFAULT_SOCKET))
    }

    /// The host part of a TCP address (what the server's certificate must name).
    pub fn host(&self) -> Option<&str> {
        match self {
            Address::Tcp(hp) => Some(hp.rsplit_once(':').map(|(h, _)| h).unwrap_or(hp).trim_matches(['[', ']'])),
            Address::Unix(_) => None,
        }
    }
}

impl FromStr for Address {
    type Err = DaemonError;
    fn from_str(s: &str) -> Result<Address, DaemonError> {
        if let Some(p) = s.strip_prefix("unix://") {
            if p.starts_with('/') {
                return Ok(Address::Unix(PathBuf::from(p)));
            }
        } else if let Some(hp) = s.strip_prefix("tcp://") {
            let hp = hp.trim_end_matches('/');
            if let Some((h, p)) = hp.rsplit_once(':') {
                if !h.is_empty() && p.parse::<u16>().is_ok() {
                    return Ok(Address::Tcp(hp.to_string()));
                }
            }
        }
        Err(DaemonError::Address(s.to_string()))
    }
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Address::Unix(p) => write!(f, "unix://{}", p.display()),
            Address::Tcp(hp) => write!(f, "tcp://{hp}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_as_dockerd_spells_them() {
        assert_eq!("unix:///run/x.sock".parse::<Address>().unwrap(), Address::Unix("/run/x.sock".into()));
        let tcp: Address = "tcp://10.0.0.1:1234".parse().unwrap();
        assert_eq!(tcp, Address::Tcp("10.0.0.1:1234".into()));
        assert_eq!(tcp.host(), Some("10.0.0.1"));
        assert_eq!("tcp://[::1]:9".parse::<Address>().unwrap().host(), Some("::1"));
        for bad in ["/run/x.sock", "unix://relative", "tcp://host", "tcp://:1", "http://x:1", "tcp://h:99999"] {
            let e = bad.parse::<Address>().unwrap_err().to_string();
            assert!(e.contains("unix:///path"), "{bad}: {e}");
        }
    }
}
