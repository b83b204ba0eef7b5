//! Multi-platform builds: every target platform's conversion of the Dockerfile in one definition, so
//! that one solve builds them all and a vertex two platforms share (a `FROM --platform=$BUILDPLATFORM`
//! stage's step that does not read TARGETARCH has the same digest in both) runs once, as BuildKit does.

use frontend::convert::Converted;
use frontend::diag::Diagnostic;
use llb::{Definition, Output, Platform};

use crate::request::BuildRequest;

/// The platforms a request converts for: `None` (the frontend's default, this machine's) when it names
/// none, else each one it names once, in its order.
pub(crate) fn targets(req: &BuildRequest) -> Vec<Option<Platform>> {
    let mut out: Vec<Platform> = Vec::new();
    for p in &req.platforms {
        if !out.contains(p) {
            out.push(p.clone());
        }
    }
    if out.is_empty() {
        vec![None]
    } else {
        out.into_iter().map(Some).collect()
    }
}

/// The definition holding every conversion's vertices (identical vertices once; their metadata merged,
/// the first description kept), rooted at the first conversion's root, and each conversion's root.
pub(crate) fn merge(converted: &[Converted]) -> (Definition, Vec<Option<Output>>) {
    let roots: Vec<Option<Output>> = converted.iter().map(|c| c.definition.root).collect();
    let Some((first, rest)) = converted.split_first() else { return (Definition::default(), roots) };
    let mut def = first.definition.clone();
    for c in rest {
        for (d, v) in &c.definition.vertices {
            def.vertices.entry(*d).or_insert_with(|| v.clone());
        }
        for (d, m) in &c.definition.metadata {
            def.metadata.entry(*d).or_default().merge(m.clone());
        }
    }
    (def, roots)
}

/// The warnings of every conversion, each once (the platforms' conversions repeat most of them).
pub(crate) fn warnings(converted: &[Converted]) -> Vec<Diagnostic> {
    let mut out: Vec<Diagnostic> = Vec::new();
    for c in converted {
        let checks = c.checks.warnings.iter().map(|w| w.diagnostic());
        for w in c.warnings.iter().cloned().chain(checks) {
            if !out.contains(&w) {
                out.push(w);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use frontend::convert::{convert, ConvertOptions, OfflineResolver};

    const CROSS: &str = "FROM --platform=$BUILDPLATFORM scratch AS build\n\
                         COPY shared.txt /shared.txt\n\
                         ARG TARGETARCH\n\
                         COPY --chown=0:0 $TARGETARCH.txt /arch.txt\n\
                         FROM scratch\n\
                         COPY --from=build /arch.txt /shared.txt /\n";

    fn converted(platform: &str) -> Converted {
        let opts = ConvertOptions {
            target_platform: Some(platform.parse().unwrap()),
            build_platform: "linux/amd64".parse().unwrap(),
            ..ConvertOptions::default()
        };
        convert(CROSS.as_bytes(), &opts, &OfflineResolver).unwrap()
    }

    #[test]
    fn platforms_share_the_vertices_that_do_not_read_the_target() {
        let (amd64, arm64) = (converted("linux/amd64"), converted("linux/arm64"));
        let (def, roots) = merge(&[amd64.clone(), arm64.clone()]);
        assert_eq!(roots, vec![amd64.definition.root, arm64.definition.root]);
        assert_ne!(roots[0], roots[1], "the targets differ");
        let shared: Vec<_> =
            amd64.definition.vertices.keys().filter(|d| arm64.definition.vertices.contains_key(d)).collect();
        assert!(!shared.is_empty(), "the build stage's COPY shared.txt is one vertex");
        assert_eq!(
            def.vertices.len(),
            amd64.definition.vertices.len() + arm64.definition.vertices.len() - shared.len(),
            "the merged definition holds each vertex once"
        );
        def.validate().unwrap();
        assert_eq!(def.pruned_to(&[roots[0].unwrap(), roots[1].unwrap()]).vertices.len(), def.vertices.len());
    }

    #[test]
    fn step_names_say_their_stage_platform_in_a_multi_platform_build() {
        let opts = ConvertOptions {
            target_platform: Some("linux/arm64".parse().unwrap()),
            build_platform: "linux/amd64".parse().unwrap(),
            platform_in_names: true,
            ..ConvertOptions::default()
        };
        let c = convert(CROSS.as_bytes(), &opts, &OfflineResolver).unwrap();
        let names: Vec<&str> = c.definition.metadata.values().filter_map(|m| m.description.as_deref()).collect();
        assert!(names.contains(&"[linux/amd64 build 2/4] COPY shared.txt /shared.txt"), "{names:?}");
        assert!(names.iter().any(|n| n.starts_with("[linux/arm64 stage-1 2/2] COPY --from=build")), "{names:?}");
    }

    #[test]
    fn targets_are_the_platforms_asked_once_or_the_default() {
        let mut req = BuildRequest::new(Vec::new(), std::sync::Arc::new(solver::LocalDir(".".into())));
        assert_eq!(targets(&req), vec![None]);
        let (a, b): (Platform, Platform) = ("linux/amd64".parse().unwrap(), "linux/arm64".parse().unwrap());
        req.platforms = vec![a.clone(), b.clone(), a.clone()];
        assert_eq!(targets(&req), vec![Some(a), Some(b)]);
    }
}
