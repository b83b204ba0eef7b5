//! `--call=check` (`--check`): run the build checks and nothing else, and answer as BuildKit's lint
//! subrequest does: the metadata keys `result.txt` (what buildx prints), `result.json` (the
//! `LintResults` document, for `--call=check,format=json`) and `result.statuscode` (1 when a rule fired).

use std::sync::Arc;

use frontend::checks::CheckResult;
use serde_json::json;

use crate::error::BuildError;
use crate::progress::EventSink;
use crate::request::BuildRequest;
use crate::result::BuildResult;
use crate::Engine;

/// What a build request asks for (`--call`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Call {
    /// Build (and export) the image.
    #[default]
    Build,
    /// Run the build checks only.
    Check,
}

pub(crate) async fn run(
    engine: &Arc<Engine>,
    req: &BuildRequest,
    events: &EventSink,
) -> Result<BuildResult, BuildError> {
    let (opts, resolver) = crate::build::convert_setup(engine, req);
    let (dockerfile, filename) = (req.dockerfile.clone(), req.dockerfile_name.clone());
    let result = tokio::task::spawn_blocking(move || frontend::checks::check(&dockerfile, &opts, &resolver))
        .await
        .map_err(|e| BuildError::Internal(format!("checking the Dockerfile failed: {e}")))?
        .map_err(|diagnostic| BuildError::Dockerfile { filename: filename.clone(), diagnostic })?;
    // The warnings are the result (buildx prints them once, after the run), not progress.
    let _ = events;
    let source = String::from_utf8_lossy(&req.dockerfile).into_owned();
    let mut metadata = serde_json::Map::new();
    metadata.insert("result.txt".into(), json!(result_txt(&result, &filename, &source)));
    metadata.insert("result.json".into(), result_json(&result, &filename, &source));
    metadata.insert("result.statuscode".into(), json!(i32::from(!result.warnings.is_empty())));
    Ok(BuildResult { image: None, index: None, metadata, steps: Vec::new(), root: None })
}

/// BuildKit's `PrintLintViolations` output.
pub fn result_txt(result: &CheckResult, filename: &str, source: &str) -> String {
    result.warnings.iter().map(|w| w.render(filename, source)).collect()
}

/// BuildKit's `LintResults` JSON: warnings with rule, description, URL, detail and location, and the
/// Dockerfile as the one source.
fn result_json(result: &CheckResult, filename: &str, source: &str) -> serde_json::Value {
    let warnings: Vec<serde_json::Value> = result
        .warnings
        .iter()
        .map(|w| {
            let mut v = json!({
                "ruleName": w.rule.name,
                "description": w.rule.description,
                "detail": w.message,
                "location": {"ranges": [{"start": {"line": w.span.start}, "end": {"line": w.span.end}}]},
            });
            if !w.rule.url.is_empty() {
                v["url"] = json!(w.rule.url);
            }
            v
        })
        .collect();
    json!({
        "warnings": warnings,
        "sources": [{"fileName": filename, "language": "Dockerfile", "data": base64(source.as_bytes())}],
    })
}

/// Standard base64 with padding (protobuf's JSON form of `bytes`).
fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_pads() {
        assert_eq!(super::base64(b"FROM a\n"), "RlJPTSBhCg==");
        assert_eq!(super::base64(b"abc"), "YWJj");
        assert_eq!(super::base64(b""), "");
    }
}
