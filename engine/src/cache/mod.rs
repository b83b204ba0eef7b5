//! Build cache that leaves the machine: `--cache-to` exports the results a build made (or found) as an OCI
//! artifact in a registry or an OCI layout directory; `--cache-from` imports one, so an empty state root (a
//! fresh CI runner) finds its steps cached.
//!
//! Keys are portable (content checksums, never host paths, inodes or mtimes), so a record made on one
//! machine hits on another. The record ([`record`]) maps keys to layer chains; its layers are ordinary layer
//! blobs. An import reads the manifest and the record only; a hit fetches and unpacks the chain's blobs then,
//! verified against their digests (a blob that is gone or corrupted is a miss, and the step runs).
//! `type=inline` puts the record (mode=min) in the exported image's config under [`INLINE_KEY`]; that image
//! then works as a `--cache-from`. `type=gha` keeps the same artifact in the GitHub Actions cache service
//! ([`gha`]).

/// The image config field that holds an inline cache record.
pub const INLINE_KEY: &str = "rbuild.cache.v1";

mod export;
pub mod gha;
mod import;
pub(crate) use export::inline_record;
mod layout;
pub mod record;

use std::path::PathBuf;

use snapshotter::diff::Compression;

pub use export::{export, ExportReport};
pub use import::{import, ImportedCache};

/// A malformed `--cache-to` / `--cache-from` value; the message says what to write instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CacheSpecError(pub String);

/// Which results an export holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The layers of the result.
    Min,
    /// Every intermediate step of every stage built.
    Max,
}

/// How an export is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportOptions {
    pub mode: Mode,
    pub compression: Compression,
    /// An image manifest (for registries that accept nothing else) rather than an index.
    pub image_manifest: bool,
    pub oci_mediatypes: bool,
    /// A failed export is a warning, not a failed build.
    pub ignore_error: bool,
}

impl Default for ExportOptions {
    fn default() -> ExportOptions {
        ExportOptions {
            mode: Mode::Min,
            compression: Compression::Gzip,
            image_manifest: false,
            oci_mediatypes: true,
            ignore_error: false,
        }
    }
}

/// A `--cache-to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheTo {
    Registry {
        reference: String,
        opts: ExportOptions,
    },
    /// An OCI image layout directory, updated in place.
    Local {
        dest: PathBuf,
        tag: String,
        opts: ExportOptions,
    },
    /// The record in the exported image's config (mode=min), read back by `--cache-from IMAGE`.
    Inline {
        opts: ExportOptions,
    },
    /// The GitHub Actions cache service, in a scope of its own (always as one manifest).
    Gha {
        scope: String,
        service: gha::Service,
        opts: ExportOptions,
    },
}

impl CacheTo {
    pub fn options(&self) -> &ExportOptions {
        match self {
            CacheTo::Registry { opts, .. }
            | CacheTo::Local { opts, .. }
            | CacheTo::Inline { opts }
            | CacheTo::Gha { opts, .. } => opts,
        }
    }

    /// Where it goes, for messages.
    pub fn describe(&self) -> String {
        match self {
            CacheTo::Registry { reference, .. } => reference.clone(),
            CacheTo::Local { dest, tag, .. } => format!("{}:{tag}", dest.display()),
            CacheTo::Inline { .. } => "the image (inline)".into(),
            CacheTo::Gha { scope, .. } => gha::describe(scope),
        }
    }
}

/// A `--cache-from`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheFrom {
    Registry { reference: String },
    Local { src: PathBuf, tag: String },
    Gha { scope: String, service: gha::Service },
}

impl CacheFrom {
    pub fn describe(&self) -> String {
        match self {
            CacheFrom::Registry { reference } => reference.clone(),
            CacheFrom::Local { src, tag } => format!("{}:{tag}", src.display()),
            CacheFrom::Gha { scope, .. } => gha::describe(scope),
        }
    }
}

/// The default scope of `type=gha` (buildx's is `buildkit`).
pub const GHA_DEFAULT_SCOPE: &str = "rbuild";

/// A `scope=` of `type=gha`: part of cache entry keys, which hold no comma.
fn gha_scope(flag: &str, scope: Option<String>) -> Result<String, CacheSpecError> {
    let scope = scope.unwrap_or_else(|| GHA_DEFAULT_SCOPE.into());
    if scope.is_empty() || scope.len() > 256 || scope.chars().any(|c| c == ',' || c.is_control()) {
        return Err(CacheSpecError(format!(
            "invalid {flag} scope={scope:?}: use up to 256 characters without commas (e.g. the branch name)"
        )));
    }
    Ok(scope)
}

/// `key=value,...` as buildx reads these flags.
fn fields(s: &str, flag: &str) -> Result<Vec<(String, String)>, CacheSpecError> {
    s.split(',')
        .filter(|f| !f.is_empty())
        .map(|f| {
            let (k, v) = f.split_once('=').ok_or_else(|| {
                CacheSpecError(format!(
                    "invalid {flag} {s:?}: expected key=value pairs, e.g. type=registry,ref=REG/REPO:TAG"
                ))
            })?;
            Ok((k.trim().to_ascii_lowercase(), v.to_string()))
        })
        .collect()
}

fn boolean(flag: &str, k: &str, v: &str) -> Result<bool, CacheSpecError> {
    match v {
        "true" | "1" | "" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(CacheSpecError(format!("invalid {flag} value {k}={v}: expected true or false"))),
    }
}

/// Parses one `--cache-to` value.
pub fn parse_cache_to(s: &str) -> Result<CacheTo, CacheSpecError> {
    let flag = "--cache-to";
    let mut ty = None;
    let (mut reference, mut dest, mut tag) = (None, None, None);
    let (mut scope, mut service) = (None, gha::Service::default());
    let mut opts = ExportOptions::default();
    for (k, v) in fields(s, flag)? {
        match k.as_str() {
            "type" => ty = Some(v),
            "ref" => reference = Some(v),
            "dest" => dest = Some(PathBuf::from(v)),
            "tag" => tag = Some(v),
            "scope" => scope = Some(v),
            // buildx's `url` is the v1 service; rbuild speaks v2 only, at the same address.
            "url" | "url_v2" => service.url = Some(v),
            "token" => service.token = Some(v),
            "mode" => {
                opts.mode = match v.as_str() {
                    "min" => Mode::Min,
                    "max" => Mode::Max,
                    other => return Err(CacheSpecError(format!("invalid {flag} mode={other}: use min or max"))),
                }
            }
            "compression" => {
                opts.compression = match v.as_str() {
                    "gzip" => Compression::Gzip,
                    "zstd" => Compression::Zstd,
                    "uncompressed" => Compression::None,
                    other => {
                        return Err(CacheSpecError(format!(
                            "invalid {flag} compression={other}: use gzip, zstd or uncompressed"
                        )))
                    }
                }
            }
            "image-manifest" => opts.image_manifest = boolean(flag, &k, &v)?,
            "oci-mediatypes" => opts.oci_mediatypes = boolean(flag, &k, &v)?,
            "ignore-error" => opts.ignore_error = boolean(flag, &k, &v)?,
            // Tuning knobs of BuildKit's that change nothing here.
            "compression-level" | "force-compression" | "timeout" | "repository" | "ghtoken" => {}
            other => return Err(CacheSpecError(format!("unknown {flag} key {other:?}"))),
        }
    }
    match ty.as_deref().unwrap_or("registry") {
        "registry" => {
            let reference = reference
                .ok_or_else(|| CacheSpecError(format!("{flag} type=registry needs ref=REGISTRY/REPOSITORY:TAG")))?;
            Ok(CacheTo::Registry { reference, opts })
        }
        "local" => {
            let dest = dest.ok_or_else(|| CacheSpecError(format!("{flag} type=local needs dest=DIR")))?;
            Ok(CacheTo::Local { dest, tag: tag.unwrap_or_else(|| "latest".into()), opts })
        }
        "inline" => Ok(CacheTo::Inline { opts: ExportOptions { mode: Mode::Min, ..opts } }),
        "gha" => Ok(CacheTo::Gha {
            scope: gha_scope(flag, scope)?,
            service,
            opts: ExportOptions { image_manifest: true, ..opts },
        }),
        other => Err(CacheSpecError(format!(
            "unsupported {flag} type={other}: use type=registry,ref=..., type=local,dest=DIR, type=inline or type=gha"
        ))),
    }
}

/// Parses one `--cache-from` value; a bare reference means `type=registry,ref=REFERENCE`.
pub fn parse_cache_from(s: &str) -> Result<CacheFrom, CacheSpecError> {
    let flag = "--cache-from";
    if !s.contains('=') {
        return Ok(CacheFrom::Registry { reference: s.to_string() });
    }
    let (mut ty, mut reference, mut src, mut tag) = (None, None, None, None);
    let (mut scope, mut service) = (None, gha::Service::default());
    for (k, v) in fields(s, flag)? {
        match k.as_str() {
            "type" => ty = Some(v),
            "ref" => reference = Some(v),
            "src" => src = Some(PathBuf::from(v)),
            "tag" => tag = Some(v),
            "scope" => scope = Some(v),
            "url" | "url_v2" => service.url = Some(v),
            "token" => service.token = Some(v),
            "digest" | "timeout" | "repository" | "ghtoken" => {}
            other => return Err(CacheSpecError(format!("unknown {flag} key {other:?}"))),
        }
    }
    match ty.as_deref().unwrap_or("registry") {
        "registry" => {
            let reference = reference
                .ok_or_else(|| CacheSpecError(format!("{flag} type=registry needs ref=REGISTRY/REPOSITORY:TAG")))?;
            Ok(CacheFrom::Registry { reference })
        }
        "local" => {
            let src = src.ok_or_else(|| CacheSpecError(format!("{flag} type=local needs src=DIR")))?;
            Ok(CacheFrom::Local { src, tag: tag.unwrap_or_else(|| "latest".into()) })
        }
        "gha" => Ok(CacheFrom::Gha { scope: gha_scope(flag, scope)?, service }),
        other => Err(CacheSpecError(format!(
            "unsupported {flag} type={other}: use type=registry,ref=..., type=local,src=DIR or type=gha"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buildx_forms_parse() {
        let to = parse_cache_to("type=registry,ref=r/app:cache,mode=max,compression=zstd,image-manifest=true").unwrap();
        let CacheTo::Registry { reference, opts } = to else { panic!() };
        assert_eq!(reference, "r/app:cache");
        assert_eq!(
            (opts.mode, opts.compression, opts.image_manifest, opts.ignore_error),
            (Mode::Max, Compression::Zstd, true, false)
        );
        let to = parse_cache_to("type=local,dest=/tmp/c,ignore-error=true").unwrap();
        assert!(
            matches!(&to, CacheTo::Local { tag, opts, .. } if tag == "latest" && opts.ignore_error && opts.mode == Mode::Min)
        );
        assert_eq!(parse_cache_from("r/app:cache").unwrap(), CacheFrom::Registry { reference: "r/app:cache".into() });
        assert_eq!(
            parse_cache_from("type=local,src=/c,tag=main").unwrap(),
            CacheFrom::Local { src: "/c".into(), tag: "main".into() }
        );
    }

    #[test]
    fn mistakes_say_what_to_write() {
        for (bad, says) in [
            ("type=registry", "needs ref="),
            ("type=local", "needs dest="),
            ("type=s3", "unsupported"),
            ("type=gha,scope=a,b", "expected key=value"),
            ("type=gha,scope=", "invalid --cache-to scope"),
            ("type=registry,ref=x,mode=all", "min or max"),
            ("type=registry,ref=x,colour=red", "colour"),
            ("type=registry,ref=x,ignore-error=maybe", "true or false"),
        ] {
            let e = parse_cache_to(bad).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
        assert!(parse_cache_from("type=local").unwrap_err().to_string().contains("src="));
    }

    #[test]
    fn gha_takes_buildx_keys_and_hides_the_token() {
        let to = parse_cache_to("type=gha,scope=main,mode=max,url=http://127.0.0.1:9/,token=secret").unwrap();
        let CacheTo::Gha { scope, service, opts } = &to else { panic!("{to:?}") };
        assert_eq!((scope.as_str(), opts.mode, opts.image_manifest), ("main", Mode::Max, true));
        assert_eq!(service.url.as_deref(), Some("http://127.0.0.1:9/"));
        assert_eq!(to.describe(), "gha:main");
        assert!(!format!("{to:?}").contains("secret"));
        let from = parse_cache_from("type=gha").unwrap();
        assert_eq!(from.describe(), "gha:rbuild");
        assert!(matches!(from, CacheFrom::Gha { service: gha::Service { url: None, token: None }, .. }));
    }
}
