//! Normalisation of image references the way Docker's `reference.ParseNormalizedNamed` +
//! `TagNameOnly` does, so `alpine`, `library/alpine:latest` and `docker.io/library/alpine` give one
//! source op and one digest.

use crate::Digest;

/// Why an image reference does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    #[error("invalid reference format: {0:?}")]
    Format(String),
    #[error("invalid reference format: repository name {0:?} must be lowercase")]
    Uppercase(String),
    #[error("invalid reference format: tag {tag:?} in {reference:?}")]
    Tag { reference: String, tag: String },
    #[error("invalid reference format: {0}")]
    Digest(#[from] crate::DigestError),
}

/// `alpine` -> `docker.io/library/alpine:latest`; `ghcr.io/o/r@sha256:..` stays as it is;
/// `name:tag@digest` keeps both.
pub fn normalize_reference(reference: &str) -> Result<String, ReferenceError> {
    let bad = || ReferenceError::Format(reference.to_string());
    let (name_tag, digest) = match reference.split_once('@') {
        Some((n, d)) => (n, Some(d.parse::<Digest>()?)),
        None => (reference, None),
    };
    let last_slash = name_tag.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match name_tag[last_slash..].rfind(':') {
        Some(i) => (&name_tag[..last_slash + i], Some(&name_tag[last_slash + i + 1..])),
        None => (name_tag, None),
    };
    if name.is_empty() {
        return Err(bad());
    }
    let (domain, path) = match name.split_once('/') {
        Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" || first.to_lowercase() != first => {
            (if first == "index.docker.io" { "docker.io" } else { first }, rest.to_string())
        }
        _ => ("docker.io", name.to_string()),
    };
    let path = if domain == "docker.io" && !path.contains('/') { format!("library/{path}") } else { path };
    if path.to_lowercase() != path {
        return Err(ReferenceError::Uppercase(reference.to_string()));
    }
    let component_ok = |c: &str| {
        !c.is_empty()
            && c.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-'))
            && c.as_bytes()[0].is_ascii_alphanumeric()
            && c.as_bytes()[c.len() - 1].is_ascii_alphanumeric()
    };
    let domain_ok = !domain.is_empty()
        && domain.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'));
    if !domain_ok || !path.split('/').all(component_ok) {
        return Err(bad());
    }
    let mut out = format!("{domain}/{path}");
    if let Some(tag) = tag {
        let tag_ok = !tag.is_empty()
            && tag.len() <= 128
            && (tag.as_bytes()[0].is_ascii_alphanumeric() || tag.starts_with('_'))
            && tag.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !tag_ok {
            return Err(ReferenceError::Tag { reference: reference.to_string(), tag: tag.to_string() });
        }
        out.push(':');
        out.push_str(tag);
    } else if digest.is_none() {
        out.push_str(":latest");
    }
    if let Some(d) = digest {
        out.push('@');
        out.push_str(&d.to_string());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_docker_hub_names() {
        let n = |s: &str| normalize_reference(s).unwrap();
        assert_eq!(n("alpine"), "docker.io/library/alpine:latest");
        assert_eq!(n("alpine:3.20"), "docker.io/library/alpine:3.20");
        assert_eq!(n("library/alpine"), "docker.io/library/alpine:latest");
        assert_eq!(n("index.docker.io/user/app:v1"), "docker.io/user/app:v1");
        assert_eq!(n("ghcr.io/o/r"), "ghcr.io/o/r:latest");
        assert_eq!(n("localhost:5000/app"), "localhost:5000/app:latest");
        assert_eq!(n("localhost/app:1"), "localhost/app:1");
        let d = Digest::of(b"x");
        assert_eq!(n(&format!("alpine@{d}")), format!("docker.io/library/alpine@{d}"));
        assert_eq!(n(&format!("alpine:3@{d}")), format!("docker.io/library/alpine:3@{d}"));
    }

    #[test]
    fn rejects_bad_references() {
        assert!(matches!(normalize_reference("Alpine"), Err(ReferenceError::Uppercase(_))));
        assert!(matches!(normalize_reference("alpine:"), Err(ReferenceError::Tag { .. })));
        assert!(matches!(normalize_reference("alpine@sha256:00"), Err(ReferenceError::Digest(_))));
        assert!(normalize_reference("").is_err());
        assert!(normalize_reference("a//b").is_err());
        assert!(normalize_reference("-a").is_err());
    }
}
