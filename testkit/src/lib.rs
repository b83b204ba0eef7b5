//! Test-only helpers shared by the workspace's test suites (a dev-dependency, never published).
//!
//! Many of rbuild's tests need what a developer's machine may lack: root, overlayfs, namespaces, or a
//! tool (docker-registry, skopeo, umoci, runc, git, dockerd, openssl, htpasswd, flock, busybox-static,
//! the images `scripts/seed-images` seeds). Without it such a test calls [`skip`], which prints why and
//! what to install, and returns early, so `cargo test` stays usable anywhere.
//!
//! In CI a skipped test is a test that did not run but still shows as passed, so a missing dependency
//! would hide a whole suite. The project's rule is that in CI a skip is a failure: `.ci/run` sets
//! `RBUILD_TEST_NO_SKIP=1`, and then [`skip`] panics with the same reason instead of returning.

use std::ffi::OsStr;

/// The environment variable that turns every skip into a failure (set by `.ci/run`).
pub const NO_SKIP_VAR: &str = "RBUILD_TEST_NO_SKIP";

/// Whether skips fail here: [`NO_SKIP_VAR`] is set to a non-empty value other than `0`.
pub fn skips_are_failures() -> bool {
    no_skip(std::env::var_os(NO_SKIP_VAR).as_deref())
}

/// Says that the calling test (or part of it) cannot run here and why, as `SKIP: {reason}` on stderr;
/// the caller then returns. The reason should say what to install or run. Panics instead where
/// [`skips_are_failures`], so CI fails at the test that would have skipped.
#[track_caller]
pub fn skip(reason: &str) {
    skip_as(std::env::var_os(NO_SKIP_VAR).as_deref(), reason);
}

/// The decision, from the variable's value (`None` when unset): `1`, `yes`, anything but `0` or empty.
fn no_skip(value: Option<&OsStr>) -> bool {
    value.is_some_and(|v| !v.is_empty() && v != "0")
}

/// [`skip`] with the variable's value passed in, so the tests do not depend on the environment.
#[track_caller]
fn skip_as(value: Option<&OsStr>, reason: &str) {
    if no_skip(value) {
        panic!("{NO_SKIP_VAR} is set (CI): this test would have skipped: {reason}");
    }
    eprintln!("SKIP: {reason}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(s: &str) -> Option<&OsStr> {
        Some(OsStr::new(s))
    }

    #[test]
    fn unset_empty_and_zero_allow_skips() {
        assert!(!no_skip(None));
        assert!(!no_skip(os("")));
        assert!(!no_skip(os("0")));
    }

    #[test]
    fn any_other_value_makes_skips_failures() {
        for v in ["1", "true", "yes", "ci", "00", " "] {
            assert!(no_skip(os(v)), "{v:?}");
        }
    }

    #[test]
    fn a_skip_returns_where_skips_are_allowed() {
        skip_as(None, "nothing is missing, this only prints");
        skip_as(os("0"), "nothing is missing, this only prints");
    }

    #[test]
    #[should_panic(expected = "RBUILD_TEST_NO_SKIP is set (CI): this test would have skipped: umoci is not installed")]
    fn a_skip_fails_where_skips_are_failures() {
        skip_as(os("1"), "umoci is not installed");
    }
}
