//! Build checks, data-driven: every `testdata/checks/<Rule>/` holds `trigger.Dockerfile`, which must raise
//! the rule, and `clean.Dockerfile`, which must not; `expected` is the `--check` text of both (refresh with
//! `UPDATE_EXPECT=1 cargo test -p frontend --test checks`). Every rule of BuildKit v0.24's ruleset has its
//! directory. Other directories (`skip-directive`, `error-directive`) test the `# check=` directive.
//! Where `buildkit-<trigger|clean>.txt` exists, it is what BuildKit v0.24 printed for that Dockerfile
//! (`buildctl build --frontend dockerfile.v0 --opt requestid=frontend.lint`, base images from the local
//! mirror) and rbuild's text must equal it.
//! Base images come from `testdata/checks/images/<name>.json`; the build platform is linux/amd64.

use std::fs;
use std::path::{Path, PathBuf};

use frontend::checks::{self, rules, CheckResult};
use frontend::convert::{ConvertOptions, ImageResolver, ResolveError, ResolvedImage};
use llb::image::Image;
use llb::Platform;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/checks")
}

struct Images;

impl ImageResolver for Images {
    fn resolve(&self, reference: &str, _platform: &Platform) -> Result<Option<ResolvedImage>, ResolveError> {
        let name = reference.split([':', '@']).next().unwrap_or(reference);
        let Ok(bytes) = fs::read(dir().join("images").join(format!("{name}.json"))) else { return Ok(None) };
        let config = Image::from_json(&bytes).map_err(|e| ResolveError(e.into()))?;
        Ok(Some(ResolvedImage { reference: reference.to_string(), config }))
    }
}

/// What `--check` prints for one Dockerfile's warnings (BuildKit's result.txt).
fn result_txt(result: &CheckResult, text: &str) -> String {
    result.warnings.iter().map(|w| w.render("Dockerfile", text)).collect()
}

fn run(case: &Path, file: &str) -> Option<(String, CheckResult)> {
    let source = fs::read(case.join(file)).ok()?;
    let mut opts =
        ConvertOptions { build_platform: Platform::new("linux", "amd64", None), ..ConvertOptions::default() };
    if let Ok(ignore) = fs::read_to_string(case.join("dockerignore")) {
        opts.excludes = ignore.lines().map(str::to_string).collect();
    }
    let result = checks::check(&source, &opts, &Images).unwrap_or_else(|e| panic!("{}/{file}: {e}", case.display()));
    let text = String::from_utf8_lossy(&source);
    let mut out = format!("## {file}\n");
    out.push_str(&result_txt(&result, &text));
    let kind = file.trim_end_matches(".Dockerfile");
    if let Ok(buildkit) = fs::read_to_string(case.join(format!("buildkit-{kind}.txt"))) {
        assert_eq!(result_txt(&result, &text), buildkit, "{}/{file}: BuildKit v0.24 printed otherwise", case.display());
    }
    if let Some(e) = result.error() {
        out.push_str(&format!("ERROR: {}\n", e.message));
    }
    Some((out, result))
}

fn names(r: &CheckResult) -> Vec<&str> {
    r.warnings.iter().map(|w| w.rule.name).collect()
}

#[test]
fn every_rule_triggers_and_stays_quiet() {
    let mut cases: Vec<PathBuf> = fs::read_dir(dir())
        .expect("testdata/checks")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.join("trigger.Dockerfile").exists())
        .collect();
    cases.sort();
    for rule in rules::ALL {
        assert!(dir().join(rule.name).join("clean.Dockerfile").exists(), "rule {} has no test case", rule.name);
    }
    for case in cases {
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        let (mut text, trigger) = run(&case, "trigger.Dockerfile").expect("trigger");
        if let Some(rule) = rules::by_name(&name) {
            assert!(names(&trigger).contains(&rule.name), "{name}: trigger.Dockerfile did not raise it: {text}");
            let (clean_text, clean) = run(&case, "clean.Dockerfile").expect("clean");
            assert!(!names(&clean).contains(&rule.name), "{name}: clean.Dockerfile raised it: {clean_text}");
            text.push_str(&clean_text);
        }
        expect_test::expect_file![case.join("expected")].assert_eq(&text);
    }
}

#[test]
fn skip_silences_and_error_fails() {
    let (_, r) = run(&dir().join("skip-directive"), "trigger.Dockerfile").unwrap();
    assert_eq!(names(&r), ["FromAsCasing"]);
    let (_, r) = run(&dir().join("error-directive"), "trigger.Dockerfile").unwrap();
    assert_eq!(r.error().unwrap().message, "lint violation found for rules: JSONArgsRecommended");
    // The build arg wins over the directive.
    let opts = ConvertOptions {
        build_args: [(checks::CHECK_BUILD_ARG.to_string(), "skip=all".to_string())].into(),
        ..ConvertOptions::default()
    };
    let src = fs::read(dir().join("error-directive/trigger.Dockerfile")).unwrap();
    assert!(checks::check(&src, &opts, &Images).unwrap().warnings.is_empty());
}
