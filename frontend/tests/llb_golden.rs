//! Golden tests for conversion: every `testdata/llb/<case>/Dockerfile` is converted with the options in
//! `<case>/options` (if any) and a resolver backed by `testdata/images/*.json`; the definition JSON, the
//! image config and the warnings (or the rendered error) must equal `<case>/expected`.
//!
//! Refresh with `UPDATE_EXPECT=1 cargo test -p frontend --test llb_golden`.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use frontend::convert::{convert, ConvertOptions, ImageResolver, ResolveError, ResolvedImage};
use llb::image::Image;
use llb::Platform;

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata")
}

/// Resolves `name:tag` to `testdata/images/<name>_<tag>.json` (slashes become `_`), pinned to a digest
/// of the file so the golden digests depend on the config like a real resolver's would.
struct FixtureResolver;

impl ImageResolver for FixtureResolver {
    fn resolve(&self, reference: &str, _platform: &Platform) -> Result<Option<ResolvedImage>, ResolveError> {
        let file = reference.replace(['/', ':'], "_");
        let path = testdata().join("images").join(format!("{file}.json"));
        let Ok(bytes) = fs::read(&path) else {
            return Err(ResolveError::msg(format!("{reference}: not found (no fixture {})", path.display())));
        };
        let config = Image::from_json(&bytes).map_err(|e| ResolveError(e.into()))?;
        let digest = llb::Digest::of(&bytes);
        let normalized = llb::normalize_reference(reference).map_err(|e| ResolveError(e.into()))?;
        let name = normalized.split('@').next().unwrap_or(&normalized);
        let repo = match name.rfind(':') {
            Some(i) if !name[i..].contains('/') => &name[..i],
            _ => name,
        };
        Ok(Some(ResolvedImage { reference: format!("{repo}@{digest}"), config }))
    }
}

fn options(case: &Path) -> ConvertOptions {
    let mut opts =
        ConvertOptions { build_platform: Platform::new("linux", "amd64", None), ..ConvertOptions::default() };
    let Ok(text) = fs::read_to_string(case.join("options")) else { return opts };
    let mut build_args = BTreeMap::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let (key, value) = line.split_once(' ').unwrap_or((line, ""));
        match key {
            "target" => opts.target = Some(value.to_string()),
            "platform" => opts.target_platform = Some(value.parse().expect("valid platform in options")),
            "epoch" => opts.source_date_epoch = Some(value.parse().expect("number")),
            "build-arg" | "label" => {
                let (k, v) = value.split_once('=').expect("K=V");
                if key == "label" {
                    opts.labels.insert(k.into(), v.into());
                } else {
                    build_args.insert(k.to_string(), v.to_string());
                }
            }
            "exclude" => opts.excludes.push(value.to_string()),
            other => panic!("{}: unknown option {other}", case.display()),
        }
    }
    opts.build_args = build_args;
    opts
}

fn render(case: &Path) -> String {
    let source = fs::read(case.join("Dockerfile")).expect("Dockerfile");
    let opts = options(case);
    match convert(&source, &opts, &FixtureResolver) {
        Ok(c) => {
            let mut out = String::new();
            out.push_str("# stages\n");
            out.push_str(&c.stages.join("\n"));
            out.push_str("\n# root\n");
            out.push_str(&format!("{:?}\n", c.definition.root.map(|o| o.digest.to_string())));
            out.push_str("# definition\n");
            out.push_str(&c.definition.to_json());
            out.push_str("\n# image\n");
            out.push_str(&serde_json::to_string_pretty(&c.image).expect("image json"));
            out.push('\n');
            if !c.warnings.is_empty() {
                out.push_str("# warnings\n");
                for w in &c.warnings {
                    out.push_str(&w.render("Dockerfile", &String::from_utf8_lossy(&source)));
                    out.push('\n');
                }
            }
            out
        }
        Err(d) => format!("# error\n{}", d.render("Dockerfile", &String::from_utf8_lossy(&source))),
    }
}

#[test]
fn llb_golden() {
    let update = std::env::var_os("UPDATE_EXPECT").is_some();
    let mut cases: Vec<PathBuf> = fs::read_dir(testdata().join("llb"))
        .expect("testdata/llb")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.join("Dockerfile").exists())
        .collect();
    cases.sort();
    assert!(cases.len() >= 10, "expected the llb golden cases, found {}", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let got = render(case);
        // Converting twice gives the same bytes: digests are stable.
        assert_eq!(got, render(case), "{}: conversion is not deterministic", case.display());
        let expected_path = case.join("expected");
        let expected = fs::read_to_string(&expected_path).unwrap_or_default();
        if got != expected {
            if update {
                fs::write(&expected_path, &got).expect("write expected");
            } else {
                failures.push(format!("{}:\n{}", case.display(), diff(&expected, &got)));
            }
        }
    }
    assert!(failures.is_empty(), "golden mismatches (UPDATE_EXPECT=1 to refresh):\n{}", failures.join("\n"));
}

fn diff(expected: &str, got: &str) -> String {
    let e: Vec<&str> = expected.lines().collect();
    let g: Vec<&str> = got.lines().collect();
    for i in 0..e.len().max(g.len()) {
        if e.get(i) != g.get(i) {
            return format!(
                "  first difference at line {}:\n  expected: {:?}\n  got:      {:?}",
                i + 1,
                e.get(i).unwrap_or(&"<end>"),
                g.get(i).unwrap_or(&"<end>")
            );
        }
    }
    String::new()
}
