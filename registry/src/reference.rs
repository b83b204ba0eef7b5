//! Parsed image references on top of [`llb::normalize_reference`] (Docker's `ParseNormalizedNamed` +
//! `TagNameOnly`): `busybox` -> registry `docker.io`, repository `library/busybox`, tag `latest`.

use std::fmt;
use std::str::FromStr;

use oci_spec::image::Digest;

pub use llb::ReferenceError;

/// The registry Docker Hub references name; requests go to [`DOCKER_HUB_HOST`].
pub const DOCKER_HUB: &str = "docker.io";
/// Where Docker Hub's registry API is served.
pub const DOCKER_HUB_HOST: &str = "registry-1.docker.io";

/// A normalised image reference: always a registry and a repository, and a tag, a digest or both.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

impl Reference {
    /// Parses and normalises `s` the way `docker pull` does.
    pub fn parse(s: &str) -> Result<Reference, ReferenceError> {
        let normal = llb::normalize_reference(s)?;
        let (name_tag, digest) = match normal.split_once('@') {
            Some((n, d)) => (n, Some(d.parse::<Digest>().map_err(|_| ReferenceError::Format(s.to_string()))?)),
            None => (normal.as_str(), None),
        };
        let last_slash = name_tag.rfind('/').ok_or_else(|| ReferenceError::Format(s.to_string()))?;
        let (name, tag) = match name_tag[last_slash..].rfind(':') {
            Some(i) => (&name_tag[..last_slash + i], Some(name_tag[last_slash + i + 1..].to_string())),
            None => (name_tag, None),
        };
        let (registry, repository) = name.split_once('/').ok_or_else(|| ReferenceError::Format(s.to_string()))?;
        Ok(Reference { registry: registry.to_string(), repository: repository.to_string(), tag, digest })
    }

    /// The registry as written in references (`docker.io`, `ghcr.io`, `127.0.0.1:5000`).
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The repository path inside the registry (`library/busybox`).
    pub fn repository(&self) -> &str {
        &self.repository
    }

    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// `registry/repository` without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// What to ask the registry's manifest endpoint for: the digest when pinned, else the tag.
    pub fn object(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".to_string(),
        }
    }

    /// The same repository with another tag (and no digest).
    pub fn with_tag(&self, tag: &str) -> Reference {
        Reference { tag: Some(tag.to_string()), digest: None, ..self.clone() }
    }

    /// The same repository pinned to `digest` (the tag is kept for display).
    pub fn with_digest(&self, digest: Digest) -> Reference {
        Reference { digest: Some(digest), ..self.clone() }
    }

    /// The same name pinned to `digest` only (`name@digest`).
    pub fn digest_only(&self, digest: Digest) -> Reference {
        Reference { tag: None, digest: Some(digest), ..self.clone() }
    }

    /// The same name in another repository of the same registry.
    pub fn in_repository(&self, repository: &str) -> Reference {
        Reference { repository: repository.to_string(), ..self.clone() }
    }

    /// The short form `docker images` shows: `busybox`, `user/app`, `ghcr.io/o/r`.
    pub fn familiar_name(&self) -> String {
        if self.registry == DOCKER_HUB {
            self.repository.strip_prefix("library/").unwrap_or(&self.repository).to_string()
        } else {
            self.name()
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl FromStr for Reference {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Reference::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_hub_short_names() {
        let r = Reference::parse("busybox").unwrap();
        assert_eq!((r.registry(), r.repository(), r.tag()), ("docker.io", "library/busybox", Some("latest")));
        assert_eq!(r.to_string(), "docker.io/library/busybox:latest");
        assert_eq!(r.familiar_name(), "busybox");
        assert_eq!(r.object(), "latest");
    }

    #[test]
    fn host_port_and_digest() {
        let d = "sha256:0000000000000000000000000000000000000000000000000000000000000000";
        let r = Reference::parse(&format!("127.0.0.1:5000/team/app:v1@{d}")).unwrap();
        assert_eq!(r.registry(), "127.0.0.1:5000");
        assert_eq!(r.repository(), "team/app");
        assert_eq!(r.tag(), Some("v1"));
        assert_eq!(r.digest().unwrap().to_string(), d);
        assert_eq!(r.object(), d);
        assert_eq!(r.familiar_name(), "127.0.0.1:5000/team/app");
        let r = Reference::parse(&format!("localhost:5000/app@{d}")).unwrap();
        assert_eq!((r.registry(), r.repository(), r.tag()), ("localhost:5000", "app", None));
    }

    #[test]
    fn rejects_bad() {
        assert!(Reference::parse("UPPER").is_err());
        assert!(Reference::parse("a:").is_err());
    }
}
