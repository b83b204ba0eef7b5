//! Build-wide settings of every RUN step: `--ulimit`, `--shm-size`, `--cgroup-parent` (BuildKit's dockerui
//! options `ulimit`, `shm-size`, `cgroup-parent`). The frontend writes them into each ExecOp as BuildKit's
//! dockerfile frontend does (ulimits and the cgroup parent in its meta, /dev/shm as a tmpfs mount), so a step
//! cached with other settings is not reused.

use sandbox::Rlimit;

/// The RUN settings of one build; the default changes nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunSettings {
    /// `--ulimit` values, in order; a later one of the same type wins.
    pub ulimits: Vec<Rlimit>,
    /// `--shm-size` in bytes (`None`: Docker's 64 MiB).
    pub shm_size: Option<u64>,
    /// `--cgroup-parent`: a path below the cgroup root.
    pub cgroup_parent: Option<String>,
}

/// A `--ulimit`, `--shm-size` or `--cgroup-parent` value that cannot be used; the message names it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunSettingError {
    #[error("--ulimit: {0}")]
    Ulimit(#[from] sandbox::RlimitError),
    #[error("--shm-size {value:?}: {why}; give bytes or a size such as 64m or 1g")]
    ShmSize { value: String, why: String },
    #[error("--cgroup-parent: {0}")]
    CgroupParent(String),
}

impl RunSettings {
    /// The settings from the flags' values as written (`nofile=1024:2048`, `64m`, `builds`).
    pub fn parse(
        ulimits: &[String],
        shm_size: Option<&str>,
        cgroup_parent: Option<&str>,
    ) -> Result<RunSettings, RunSettingError> {
        let ulimits = ulimits.iter().map(|u| u.parse::<Rlimit>()).collect::<Result<Vec<_>, _>>()?;
        let shm_size = shm_size.filter(|s| !s.is_empty()).map(parse_size).transpose()?.filter(|s| *s > 0);
        let cgroup_parent = cgroup_parent.filter(|p| !p.is_empty()).map(str::to_string);
        let settings = RunSettings { ulimits, shm_size, cgroup_parent };
        settings.check()?;
        Ok(settings)
    }

    /// Checks values that came from elsewhere (a daemon's client): the cgroup parent's form. Whether the
    /// host can honour it is the sandbox's to say, step by step.
    pub fn check(&self) -> Result<(), RunSettingError> {
        if let Some(p) = &self.cgroup_parent {
            // The systemd slice form is taken (runc's systemd driver understands it) but a path with . or ..
            // never is: it would leave the hierarchy.
            if !p.contains(':') {
                sandbox::cgroup::parent_components(p).map_err(RunSettingError::CgroupParent)?;
            }
        }
        Ok(())
    }

    /// The ulimits as the LLB carries them.
    pub fn llb_ulimits(&self) -> Vec<llb::Ulimit> {
        self.ulimits.iter().map(|u| u.to_llb()).collect()
    }
}

/// Docker's size syntax for `--shm-size` (go-units `RAMInBytes`): a number with an optional binary unit,
/// case-insensitive, `b` optional (`64m`, `64MiB`, `1.5g`, `65536`).
pub fn parse_size(value: &str) -> Result<u64, RunSettingError> {
    let err = |why: &str| RunSettingError::ShmSize { value: value.to_string(), why: why.to_string() };
    let s = value.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (number, unit) = (&s[..split], s[split..].trim_start().to_ascii_lowercase());
    if number.is_empty() {
        return Err(err("no number"));
    }
    let n: f64 = number.parse().map_err(|_| err("not a number"))?;
    let shift = match unit.as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        "p" | "pb" | "pib" => 50,
        _ => return Err(err(&format!("unknown unit {unit:?}"))),
    };
    let bytes = n * (1u64 << shift) as f64;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(err("too large"));
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_as_docker_reads_them() {
        assert_eq!(parse_size("64m").unwrap(), 64 << 20);
        assert_eq!(parse_size("64M").unwrap(), 64 << 20);
        assert_eq!(parse_size("64MiB").unwrap(), 64 << 20);
        assert_eq!(parse_size("64mb").unwrap(), 64 << 20, "docker's units are binary, b or not");
        assert_eq!(parse_size("1g").unwrap(), 1 << 30);
        assert_eq!(parse_size("1.5k").unwrap(), 1536);
        assert_eq!(parse_size("65536").unwrap(), 65536);
        assert_eq!(parse_size("100 b").unwrap(), 100);
        for bad in ["", "m", "64q", "64mm", "-1m", "1.2.3m", "64 megabytes"] {
            let e = parse_size(bad).unwrap_err().to_string();
            assert!(e.starts_with(&format!("--shm-size {bad:?}: ")), "{e}");
        }
    }

    #[test]
    fn settings_parse_and_name_bad_values() {
        let s = RunSettings::parse(&["nofile=512:512".into()], Some("128m"), Some("builds/ci")).unwrap();
        assert_eq!(s.ulimits[0].to_string(), "nofile=512:512");
        assert_eq!(s.shm_size, Some(128 << 20));
        assert_eq!(s.cgroup_parent.as_deref(), Some("builds/ci"));
        assert_eq!(s.llb_ulimits(), vec![llb::Ulimit { name: "nofile".into(), soft: 512, hard: 512 }]);
        assert_eq!(RunSettings::parse(&[], Some("0"), Some("")).unwrap(), RunSettings::default());
        let e = RunSettings::parse(&["nofile=x".into()], None, None).unwrap_err().to_string();
        assert_eq!(e, "--ulimit: invalid ulimit \"nofile=x\": \"x\" is not a whole number (-1 means unlimited)");
        let e = RunSettings::parse(&[], Some("lots"), None).unwrap_err().to_string();
        assert!(e.starts_with("--shm-size \"lots\": no number"), "{e}");
        let e = RunSettings::parse(&[], None, Some("../escape")).unwrap_err().to_string();
        assert!(e.starts_with("--cgroup-parent: \"../escape\" is not a cgroup path"), "{e}");
        assert!(RunSettings::parse(&[], None, Some("system.slice:rbuild:x")).is_ok(), "runc's systemd form");
    }
}
