//! Attestations and annotations of a pushed image (`--provenance`, `--sbom`, `--attest`, `--annotation`):
//! what was asked ([`AttestOptions`]), the in-toto statements ([`provenance`], [`sbom`]) and their
//! place in an OCI index next to the image (`registry::attest`), as BuildKit stores them.
//!
//! Statements about an image are deterministic under SOURCE_DATE_EPOCH: their times are the epoch, and
//! nothing else in them depends on when or where the build ran.

pub mod provenance;
pub mod sbom;

use std::collections::BTreeMap;

use registry::attest::Annotations;
use serde_json::{json, Value};

/// `--provenance` modes (BuildKit's `mode=min|max`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProvenanceMode {
    Min,
    Max,
}

/// What a build attaches to the images it pushes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AttestOptions {
    pub provenance: Option<ProvenanceMode>,
    pub sbom: bool,
    pub annotations: Annotations,
}

/// A `--provenance`, `--sbom`, `--attest` or `--annotation` value rbuild cannot read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{flag} {value}: {reason}")]
pub struct AttestError {
    pub flag: &'static str,
    pub value: String,
    pub reason: String,
}

fn err(flag: &'static str, value: &str, reason: impl Into<String>) -> AttestError {
    AttestError { flag, value: value.to_string(), reason: reason.into() }
}

fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

impl AttestOptions {
    /// Reads buildx's flags: `--provenance` and `--sbom` are shorthands for `--attest type=…`
    /// (`true`/`false`, or the attest fields: `mode=max`, `disabled=true`, …).
    pub fn parse(
        provenance: Option<&str>,
        sbom: Option<&str>,
        attest: &[String],
        annotations: &[String],
    ) -> Result<AttestOptions, AttestError> {
        let mut o = AttestOptions::default();
        let mut specs: Vec<(&'static str, String)> = Vec::new();
        if let Some(p) = provenance {
            specs.push(("--provenance", shorthand("provenance", p)));
        }
        if let Some(s) = sbom {
            specs.push(("--sbom", shorthand("sbom", s)));
        }
        specs.extend(attest.iter().map(|a| ("--attest", a.clone())));
        for (flag, spec) in specs {
            let mut fields = BTreeMap::new();
            for f in spec.split(',').filter(|f| !f.is_empty()) {
                let (k, v) = f.split_once('=').ok_or_else(|| err(flag, &spec, format!("{f:?} is not key=value")))?;
                fields.insert(k.trim().to_string(), v.trim().to_string());
            }
            let disabled = match fields.get("disabled") {
                Some(v) => parse_bool(v).ok_or_else(|| err(flag, &spec, "disabled= takes true or false"))?,
                None => false,
            };
            match fields.get("type").map(String::as_str) {
                Some("provenance") => {
                    o.provenance = match (disabled, fields.get("mode").map(String::as_str)) {
                        (true, _) => None,
                        (false, None | Some("min")) => Some(ProvenanceMode::Min),
                        (false, Some("max")) => Some(ProvenanceMode::Max),
                        (false, Some(m)) => return Err(err(flag, &spec, format!("mode={m}: use min or max"))),
                    }
                }
                Some("sbom") => o.sbom = !disabled,
                Some(t) => return Err(err(flag, &spec, format!("type={t}: rbuild attaches provenance and sbom"))),
                None => return Err(err(flag, &spec, "type= is missing (type=provenance or type=sbom)")),
            }
        }
        for a in annotations {
            parse_annotation(a, &mut o.annotations)?;
        }
        Ok(o)
    }

    pub fn attests(&self) -> bool {
        self.provenance.is_some() || self.sbom
    }

    /// Whether pushed images become an index (attestations, or index-level annotations).
    pub fn wants_index(&self) -> bool {
        self.attests() || !self.annotations.index.is_empty() || !self.annotations.manifest_descriptor.is_empty()
    }
}

/// `--provenance=true|false|mode=max` as the `--attest` value it stands for.
fn shorthand(kind: &str, v: &str) -> String {
    match parse_bool(v) {
        Some(true) => format!("type={kind}"),
        Some(false) => format!("type={kind},disabled=true"),
        None => format!("type={kind},{v}"),
    }
}

/// buildx's `[type[,type…][platform]:]key=value`, types `manifest` (the default), `index`,
/// `manifest-descriptor`, `index-descriptor` (an OCI layout's index.json: rbuild pushes, so none here).
fn parse_annotation(a: &str, out: &mut Annotations) -> Result<(), AttestError> {
    let (types, kv) = match a.split_once('=') {
        Some((k, _)) if k.contains(':') => {
            let (t, kv) = a.split_once(':').unwrap_or(("", a));
            (t.to_string(), kv)
        }
        _ => ("manifest".to_string(), a),
    };
    let (key, value) = kv.split_once('=').ok_or_else(|| err("--annotation", a, "expected KEY=VALUE"))?;
    if key.is_empty() {
        return Err(err("--annotation", a, "the key is empty"));
    }
    // `manifest[linux/amd64]`: rbuild builds one platform, which the qualifier names or not.
    let types = types.split('[').next().unwrap_or("").to_string();
    for t in types.split(',') {
        let map = match t.trim() {
            "manifest" => &mut out.manifest,
            "index" => &mut out.index,
            "manifest-descriptor" => &mut out.manifest_descriptor,
            "index-descriptor" => continue,
            other => {
                return Err(err(
                    "--annotation",
                    a,
                    format!("{other:?} is not manifest, index, manifest-descriptor or index-descriptor"),
                ))
            }
        };
        map.insert(key.to_string(), value.to_string());
    }
    Ok(())
}

/// An in-toto Statement v1 about `subjects` (`(name, sha256 hex)`).
pub fn statement(subjects: &[(String, String)], predicate_type: &str, predicate: Value) -> Value {
    let subject: Vec<Value> = subjects.iter().map(|(n, d)| json!({"name": n, "digest": {"sha256": d}})).collect();
    json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": subject,
        "predicateType": predicate_type,
        "predicate": predicate,
    })
}

/// `pkg:docker/<repository>@<tag>?platform=<os>%2F<arch>`: how BuildKit names an image in a statement.
pub fn purl(name: &str, platform: &llb::Platform) -> String {
    let name = name.split('@').next().unwrap_or(name);
    let (repo, version) = match name.rfind(':').filter(|&i| !name[i..].contains('/')) {
        Some(i) => (name[..i].to_string(), name[i + 1..].to_string()),
        None => (name.to_string(), "latest".to_string()),
    };
    let repo = repo.strip_prefix("docker.io/").unwrap_or(&repo);
    let repo = repo.strip_prefix("library/").unwrap_or(repo);
    format!("pkg:docker/{repo}@{version}?platform={}", platform.to_string().replace('/', "%2F"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shorthands_and_attest() {
        let o = AttestOptions::parse(Some("mode=max"), Some("true"), &[], &[]).unwrap();
        assert_eq!((o.provenance, o.sbom), (Some(ProvenanceMode::Max), true));
        let o = AttestOptions::parse(Some("false"), None, &["type=sbom".into()], &[]).unwrap();
        assert_eq!((o.provenance, o.sbom), (None, true));
        let o = AttestOptions::parse(None, None, &["type=provenance,disabled=true".into()], &[]).unwrap();
        assert!(!o.attests());
        assert!(AttestOptions::parse(None, None, &["type=vex".into()], &[]).is_err());
        assert!(AttestOptions::parse(Some("mode=huge"), None, &[], &[]).is_err());
    }

    #[test]
    fn annotations_go_where_buildx_puts_them() {
        let a = [
            "org.opencontainers.image.title=app".to_string(),
            "index:org.opencontainers.image.vendor=me".into(),
            "manifest,manifest-descriptor:x=1".into(),
            "manifest[linux/amd64]:y=2".into(),
            "url=https://example.com".into(),
        ];
        let o = AttestOptions::parse(None, None, &[], &a).unwrap();
        assert_eq!(o.annotations.manifest.len(), 4);
        assert_eq!(o.annotations.manifest["url"], "https://example.com");
        assert_eq!(o.annotations.index["org.opencontainers.image.vendor"], "me");
        assert_eq!(o.annotations.manifest_descriptor["x"], "1");
        assert!(o.wants_index());
        assert!(AttestOptions::parse(None, None, &[], &["bogus:x=1".into()]).is_err());
    }

    #[test]
    fn base_names_keep_their_tag() {
        let pinned = "docker.io/library/debian@sha256:abcd";
        assert_eq!(
            with_tag(pinned, Some("[x 1/2] FROM debian:bookworm-slim AS x")),
            "docker.io/library/debian:bookworm-slim@sha256:abcd"
        );
        assert_eq!(with_tag(pinned, Some("[1/2] FROM --platform=linux/amd64 alpine")), pinned);
        assert_eq!(with_tag(pinned, None), pinned);
    }

    #[test]
    fn purls() {
        let p = llb::Platform::new("linux", "amd64", None);
        assert_eq!(
            purl("docker.io/library/debian:bookworm-slim", &p),
            "pkg:docker/debian@bookworm-slim?platform=linux%2Famd64"
        );
        assert_eq!(
            purl("127.0.0.1:5000/team/app", &p),
            "pkg:docker/127.0.0.1:5000/team/app@latest?platform=linux%2Famd64"
        );
    }
}

/// What a build attaches, with what the provenance is made of.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub(crate) options: AttestOptions,
    pub(crate) provenance: Option<provenance::Input>,
    pub(crate) platform: llb::Platform,
    /// RFC 3339: SOURCE_DATE_EPOCH, else the time the plan was made.
    pub(crate) created: String,
}

impl Plan {
    /// The plan of a finished solve; `None` when the request attaches nothing.
    pub(crate) fn new(
        req: &crate::BuildRequest,
        converted: &frontend::convert::Converted,
        steps: &[solver::StepRecord],
        started: std::time::SystemTime,
        platform: &llb::Platform,
    ) -> Option<Plan> {
        let options = req.attest.clone();
        if !options.wants_index() && options.annotations.manifest.is_empty() {
            return None;
        }
        let unix =
            |t: std::time::SystemTime| t.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
        let (started, finished) = match req.source_date_epoch {
            Some(e) => (e, e),
            None => (unix(started), unix(std::time::SystemTime::now())),
        };
        let platform = platform.clone();
        let provenance = options.provenance.map(|mode| {
            let def = &converted.definition;
            let mut bases: Vec<String> = def
                .vertices
                .iter()
                .filter_map(|(digest, v)| match &v.op {
                    llb::Op::Source(llb::SourceOp::Image { reference, .. }) => {
                        let described = def.metadata.get(digest).and_then(|m| m.description.as_deref());
                        Some(with_tag(reference, described))
                    }
                    _ => None,
                })
                .collect();
            bases.sort();
            bases.dedup();
            provenance::Input {
                mode,
                dockerfile_name: req.dockerfile_name.clone(),
                dockerfile: req.dockerfile.clone(),
                build_args: req.build_args.clone(),
                target: req.target.clone(),
                platform: platform.clone(),
                // The providers do not list their ids; which secrets a step mounted is in its definition.
                secret_ids: Vec::new(),
                ssh_ids: Vec::new(),
                bases,
                steps: steps.iter().map(|s| (s.name.clone(), s.key.to_string())).collect(),
                definition: converted.definition.root.map(|o| o.digest.to_string()).unwrap_or_default(),
                started: llb::image::rfc3339(started),
                finished: llb::image::rfc3339(finished),
            }
        });
        Some(Plan { options, provenance, platform, created: llb::image::rfc3339(started) })
    }
}

/// The statements about `image` (named `names`) and the index that attaches them, written to the store.
pub(crate) async fn attach(
    cx: &crate::export::ExportContext,
    plan: &Plan,
    image: &registry::assemble::Assembled,
    names: &[String],
) -> Result<registry::attest::Attached, crate::ExportError> {
    let e = entries(cx, plan, image, names).await?;
    let (images, annotations) = (cx.engine.images.clone(), plan.options.annotations.index.clone());
    tokio::task::spawn_blocking(move || {
        let index = registry::attest::write_index(&images, std::slice::from_ref(&e), &annotations, true)
            .map_err(crate::ExportError::registry("attaching attestations"))?;
        Ok(registry::attest::Attached { index, manifest: e.manifest, attestation: e.attestation })
    })
    .await
    .map_err(|e| crate::ExportError::Other(format!("the attestation task failed: {e}")))?
}

/// The statements about `image` (named `names`, built for `plan.platform`) and its entries in an index:
/// the image, then its attestation manifest.
pub(crate) async fn entries(
    cx: &crate::export::ExportContext,
    plan: &Plan,
    image: &registry::assemble::Assembled,
    names: &[String],
) -> Result<registry::attest::Entries, crate::ExportError> {
    use crate::ExportError;
    let digest = image.manifest.digest().to_string();
    let hex = digest.strip_prefix("sha256:").unwrap_or(&digest).to_string();
    let subjects: Vec<(String, String)> = names.iter().map(|n| (purl(n, &plan.platform), hex.clone())).collect();
    let mut statements = Vec::new();
    if let Some(input) = &plan.provenance {
        let s = statement(&subjects, provenance::PREDICATE_TYPE, provenance::predicate(input));
        statements.push(registry::attest::Statement {
            predicate_type: provenance::PREDICATE_TYPE.into(),
            bytes: serde_json::to_vec(&s).map_err(|e| ExportError::Other(format!("provenance: {e}")))?,
        });
    }
    if plan.options.sbom {
        let root = cx.snapshot().await?;
        let (engine, created) = (cx.engine.clone(), plan.created.clone());
        let name = names.first().cloned().unwrap_or_else(|| digest.clone());
        let doc = tokio::task::spawn_blocking(move || -> Result<Value, ExportError> {
            let scratch = engine.store.root.tmp_dir();
            let tmp = tempfile::Builder::new()
                .prefix("sbom-")
                .tempdir_in(&scratch)
                .map_err(ExportError::io(format!("creating a directory in {}", scratch.display())))?;
            let tree = tmp.path().join("rootfs");
            let packages = match &root {
                Some(key) => {
                    snapshotter::export::export_dir(&*engine.store.snapshotter, key, &tree)
                        .map_err(ExportError::snapshot("reading the image's filesystem for its SBOM"))?;
                    sbom::scan(&tree)
                }
                None => Vec::new(),
            };
            Ok(sbom::spdx(&packages, &name, &created, &format!("rbuild-{}", env!("CARGO_PKG_VERSION"))))
        })
        .await
        .map_err(|e| ExportError::Other(format!("the SBOM task failed: {e}")))??;
        let s = statement(&subjects, "https://spdx.dev/Document", doc);
        statements.push(registry::attest::Statement {
            predicate_type: "https://spdx.dev/Document".into(),
            bytes: serde_json::to_vec(&s).map_err(|e| ExportError::Other(format!("sbom: {e}")))?,
        });
    }
    let (images, img, options) = (cx.engine.images.clone(), image.clone(), plan.options.annotations.clone());
    let p = plan.platform.clone();
    tokio::task::spawn_blocking(move || {
        registry::attest::entries(&images, &img, (&p.os, &p.architecture, p.variant.as_deref()), &statements, &options)
            .map_err(ExportError::registry("attaching attestations"))
    })
    .await
    .map_err(|e| ExportError::Other(format!("the attestation task failed: {e}")))?
}

/// A pinned reference (`docker.io/library/debian@sha256:…`) with the tag its FROM line named
/// (`[1/2] FROM debian:bookworm-slim AS x`), as BuildKit's provenance names a base image.
fn with_tag(pinned: &str, described: Option<&str>) -> String {
    let Some((name, digest)) = pinned.split_once('@') else { return pinned.to_string() };
    let word = described
        .and_then(|d| d.split_once("FROM "))
        .and_then(|(_, rest)| rest.split_whitespace().find(|w| !w.starts_with("--")));
    let Some(Ok(normalized)) = word.map(llb::normalize_reference) else { return pinned.to_string() };
    let normalized = normalized.split('@').next().unwrap_or(&normalized);
    match normalized.rfind(':').filter(|&i| !normalized[i..].contains('/')) {
        Some(i) if &normalized[..i] == name => format!("{normalized}@{digest}"),
        _ => pinned.to_string(),
    }
}
