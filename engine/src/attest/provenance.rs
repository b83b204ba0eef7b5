//! The SLSA provenance v1 predicate of a build (https://slsa.dev/spec/v1.0/provenance), shaped like
//! BuildKit's (docs/attestations/slsa-definitions.md): the request as external parameters (frontend, build
//! args, target, the Dockerfile's name), the base images by digest as resolved dependencies, and for
//! `mode=max` the Dockerfile's text and every step with its cache key. Secrets never appear (only their ids),
//! nor build args whose name looks like a secret.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::ProvenanceMode;

pub const PREDICATE_TYPE: &str = "https://slsa.dev/provenance/v1";
/// BuildKit's build type for SLSA v1.
pub const BUILD_TYPE: &str = "https://github.com/moby/buildkit/blob/master/docs/attestations/slsa-definitions.md";

/// What the provenance is made of.
#[derive(Debug, Clone)]
pub struct Input {
    pub mode: ProvenanceMode,
    pub dockerfile_name: String,
    pub dockerfile: Vec<u8>,
    pub build_args: BTreeMap<String, String>,
    pub target: Option<String>,
    pub platform: llb::Platform,
    pub secret_ids: Vec<String>,
    pub ssh_ids: Vec<String>,
    /// Base images as pinned in the definition (`name@sha256:…`).
    pub bases: Vec<String>,
    /// `(step name, cache key)` of every step, for `mode=max`.
    pub steps: Vec<(String, String)>,
    /// The definition's root digest: identifies the invocation.
    pub definition: String,
    /// When the build started and finished (both SOURCE_DATE_EPOCH when it is set).
    pub started: String,
    pub finished: String,
}

/// The predicate.
pub fn predicate(i: &Input) -> Value {
    let mut args = serde_json::Map::new();
    for (k, v) in &i.build_args {
        if frontend::checks::looks_secret(k) {
            continue;
        }
        args.insert(format!("build-arg:{k}"), json!(v));
    }
    if let Some(t) = &i.target {
        args.insert("target".into(), json!(t));
    }
    args.insert("filename".into(), json!(i.dockerfile_name));
    let mut request = json!({
        "frontend": "dockerfile.v0",
        "args": args,
        "locals": [{"name": "context"}, {"name": "dockerfile"}],
    });
    if !i.secret_ids.is_empty() {
        request["secrets"] = json!(i.secret_ids.iter().map(|id| json!({"id": id})).collect::<Vec<_>>());
    }
    if !i.ssh_ids.is_empty() {
        request["ssh"] = json!(i.ssh_ids.iter().map(|id| json!({"id": id})).collect::<Vec<_>>());
    }
    let deps: Vec<Value> = i
        .bases
        .iter()
        .filter_map(|b| {
            let (_, digest) = b.rsplit_once("@sha256:")?;
            Some(json!({"uri": super::purl(b, &i.platform), "digest": {"sha256": digest}}))
        })
        .collect();
    let mut internal = json!({"builderPlatform": llb::Platform::host().to_string()});
    if i.mode == ProvenanceMode::Max {
        internal["buildConfig"] = json!({
            "steps": i.steps.iter().map(|(name, key)| json!({"name": name, "cacheKey": key})).collect::<Vec<_>>(),
        });
        internal["source"] = json!({
            "filename": i.dockerfile_name,
            "language": "Dockerfile",
            "data": String::from_utf8_lossy(&i.dockerfile),
        });
    }
    json!({
        "buildDefinition": {
            "buildType": BUILD_TYPE,
            "externalParameters": {
                "configSource": {"path": i.dockerfile_name},
                "request": request,
            },
            "internalParameters": internal,
            "resolvedDependencies": deps,
        },
        "runDetails": {
            "builder": {"id": "https://github.com/rbuild/rbuild", "version": {"rbuild": env!("CARGO_PKG_VERSION")}},
            "metadata": {
                "invocationId": i.definition,
                "startedOn": i.started,
                "finishedOn": i.finished,
            },
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(mode: ProvenanceMode) -> Input {
        Input {
            mode,
            dockerfile_name: "Dockerfile".into(),
            dockerfile: b"FROM debian\n".to_vec(),
            build_args: [("VERSION".to_string(), "1".to_string()), ("GITHUB_TOKEN".into(), "ghp_x".into())].into(),
            target: None,
            platform: llb::Platform::new("linux", "amd64", None),
            secret_ids: vec!["npmrc".into()],
            ssh_ids: vec![],
            bases: vec!["docker.io/library/debian:bookworm-slim@sha256:abcd".into()],
            steps: vec![("[1/2] FROM debian".into(), "sha256:1".into())],
            definition: "sha256:def".into(),
            started: "2024-01-01T00:00:00Z".into(),
            finished: "2024-01-01T00:00:00Z".into(),
        }
    }

    #[test]
    fn secrets_stay_out_and_bases_are_pinned() {
        let p = predicate(&input(ProvenanceMode::Min));
        let text = p.to_string();
        assert!(!text.contains("ghp_x") && !text.contains("GITHUB_TOKEN"), "{text}");
        assert_eq!(p["buildDefinition"]["externalParameters"]["request"]["args"]["build-arg:VERSION"], "1");
        assert_eq!(p["buildDefinition"]["externalParameters"]["request"]["secrets"][0]["id"], "npmrc");
        let dep = &p["buildDefinition"]["resolvedDependencies"][0];
        assert_eq!(dep["digest"]["sha256"], "abcd");
        assert_eq!(dep["uri"], "pkg:docker/debian@bookworm-slim?platform=linux%2Famd64");
        assert!(p["buildDefinition"]["internalParameters"].get("buildConfig").is_none());
        let max = predicate(&input(ProvenanceMode::Max));
        assert_eq!(max["buildDefinition"]["internalParameters"]["source"]["data"], "FROM debian\n");
    }
}
