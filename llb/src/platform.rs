//! Target platforms (`linux/arm64`, `linux/arm/v7`), normalised like containerd's `platforms` package.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// An OCI platform. Always stored normalised: `Platform::new` and `FromStr` normalise, so two spellings of
/// one platform (`x86_64` and `amd64`) give the same digest.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// Why a platform string does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlatformError {
    #[error("invalid platform {0:?}: expected os[/arch[/variant]]")]
    Format(String),
    #[error("invalid platform {spec:?}: component {component:?} may only hold [a-z0-9_.-]")]
    Component { spec: String, component: String },
}

impl Platform {
    /// A normalised platform from its parts.
    pub fn new(os: &str, architecture: &str, variant: Option<&str>) -> Platform {
        let (architecture, variant) = normalize_arch(architecture, variant.unwrap_or(""));
        Platform { os: normalize_os(os), architecture, variant: (!variant.is_empty()).then_some(variant) }
    }

    /// The platform this binary was compiled for (pure: from `std::env::consts`, no syscalls).
    pub fn host() -> Platform {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "x86" => "386",
            "aarch64" if cfg!(target_endian = "big") => "arm64be",
            "aarch64" => "arm64",
            "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
            "powerpc64" => "ppc64",
            "loongarch64" => "loong64",
            "mips64" if cfg!(target_endian = "little") => "mips64le",
            other => other,
        };
        Platform::new(std::env::consts::OS, arch, None)
    }

    /// Whether `self` can run binaries built for `other` without emulation: the same platform, or the
    /// same arm architecture with an older variant (arm/v7 runs arm/v6 and arm/v5).
    pub fn runs(&self, other: &Platform) -> bool {
        if self == other {
            return true;
        }
        if self.os != other.os || self.architecture != "arm" || other.architecture != "arm" {
            return false;
        }
        let level = |p: &Platform| p.variant.as_deref().and_then(|v| v.strip_prefix('v')?.parse::<u8>().ok());
        matches!((level(self), level(other)), (Some(a), Some(b)) if b <= a)
    }
}

fn normalize_os(os: &str) -> String {
    let os = os.to_ascii_lowercase();
    match os.as_str() {
        "macos" => "darwin".to_string(),
        _ => os,
    }
}

/// containerd's `normalizeArch`: canonical architecture names and default variants dropped.
fn normalize_arch(arch: &str, variant: &str) -> (String, String) {
    let arch = arch.to_ascii_lowercase();
    let variant = variant.to_ascii_lowercase();
    let (a, v) = match arch.as_str() {
        "i386" => ("386", ""),
        "x86_64" | "x86-64" | "amd64" => ("amd64", if variant == "v1" { "" } else { variant.as_str() }),
        "aarch64" | "arm64" => ("arm64", if matches!(variant.as_str(), "8" | "v8") { "" } else { variant.as_str() }),
        "armhf" => ("arm", "v7"),
        "armel" => ("arm", "v6"),
        "arm" => (
            "arm",
            match variant.as_str() {
                "" | "7" => "v7",
                "5" | "6" | "8" => return ("arm".to_string(), format!("v{variant}")),
                v => v,
            },
        ),
        other => (other, variant.as_str()),
    };
    (a.to_string(), v.to_string())
}

fn is_known_os(s: &str) -> bool {
    matches!(
        s,
        "aix"
            | "android"
            | "darwin"
            | "dragonfly"
            | "freebsd"
            | "hurd"
            | "illumos"
            | "ios"
            | "js"
            | "linux"
            | "nacl"
            | "netbsd"
            | "openbsd"
            | "plan9"
            | "solaris"
            | "wasip1"
            | "windows"
            | "zos"
            | "macos"
    )
}

impl FromStr for Platform {
    type Err = PlatformError;

    /// containerd's `platforms.Parse`: `os`, `arch`, `os/arch` or `os/arch/variant`. A single component
    /// that is a known OS takes the host architecture; otherwise it is an architecture on the host OS.
    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = spec.split('/').collect();
        for part in &parts {
            let ok =
                !part.is_empty() && part.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
            if !ok {
                return Err(PlatformError::Component { spec: spec.to_string(), component: part.to_string() });
            }
        }
        let host = Platform::host();
        match parts.as_slice() {
            [one] => {
                let lower = one.to_ascii_lowercase();
                if is_known_os(&lower) {
                    let variant = host.variant.as_deref();
                    Ok(Platform::new(&lower, &host.architecture, variant))
                } else {
                    Ok(Platform::new(&host.os, &lower, None))
                }
            }
            [os, arch] => Ok(Platform::new(os, arch, None)),
            [os, arch, variant] => Ok(Platform::new(os, arch, Some(variant))),
            _ => Err(PlatformError::Format(spec.to_string())),
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(s: &str) -> String {
        s.parse::<Platform>().unwrap().to_string()
    }

    #[test]
    fn normalises_like_containerd() {
        assert_eq!(norm("linux/x86_64"), "linux/amd64");
        assert_eq!(norm("linux/amd64/v1"), "linux/amd64");
        assert_eq!(norm("linux/amd64/v3"), "linux/amd64/v3");
        assert_eq!(norm("linux/aarch64"), "linux/arm64");
        assert_eq!(norm("linux/arm64/v8"), "linux/arm64");
        assert_eq!(norm("linux/arm64/v9"), "linux/arm64/v9");
        assert_eq!(norm("linux/arm"), "linux/arm/v7");
        assert_eq!(norm("linux/arm/6"), "linux/arm/v6");
        assert_eq!(norm("linux/armhf"), "linux/arm/v7");
        assert_eq!(norm("linux/armel"), "linux/arm/v6");
        assert_eq!(norm("linux/i386"), "linux/386");
        assert_eq!(norm("Linux/AMD64"), "linux/amd64");
        assert_eq!(norm("windows/amd64"), "windows/amd64");
        assert_eq!(norm("linux/riscv64"), "linux/riscv64");
    }

    #[test]
    fn single_component_fills_from_host() {
        let host = Platform::host();
        let os_only: Platform = "linux".parse().unwrap();
        assert_eq!(os_only.os, "linux");
        assert_eq!(os_only.architecture, host.architecture);
        let arch_only: Platform = "arm64".parse().unwrap();
        assert_eq!(arch_only.os, host.os);
        assert_eq!(arch_only.architecture, "arm64");
    }

    #[test]
    fn rejects_malformed() {
        assert!(matches!("linux/arm/v7/x".parse::<Platform>(), Err(PlatformError::Format(_))));
        assert!(matches!("linux//arm".parse::<Platform>(), Err(PlatformError::Component { .. })));
        assert!("".parse::<Platform>().is_err());
        assert!("linux/am d64".parse::<Platform>().is_err());
    }

    #[test]
    fn host_is_normalised_and_arm_compat() {
        let host = Platform::host();
        assert_eq!(host.to_string().parse::<Platform>().unwrap(), host);
        let v7: Platform = "linux/arm/v7".parse().unwrap();
        let v6: Platform = "linux/arm/v6".parse().unwrap();
        assert!(v7.runs(&v6));
        assert!(!v6.runs(&v7));
        assert!(!v7.runs(&"linux/arm64".parse().unwrap()));
    }

    #[test]
    fn serde_skips_empty_variant() {
        let p: Platform = "linux/amd64".parse().unwrap();
        assert_eq!(serde_json::to_string(&p).unwrap(), r#"{"os":"linux","architecture":"amd64"}"#);
    }
}
