//! The `docker buildx build` flags rbuild takes beyond its own core set, so CI scripts written for buildx
//! run unchanged. Each is honoured ([`BuildxFlags::apply`]) or answered with one `WARNING:` line that says
//! what rbuild does instead ([`BuildxFlags::notes`]); none is "unexpected argument". The README's flag
//! table and `testdata/buildx/build-flags.txt` list them all.

use anyhow::{bail, Result};
use clap::Args;
use engine::attest::AttestOptions;
use engine::{BuildRequest, Call, RunSettings};

/// Boolean flags take `--flag`, `--flag=true` or `--flag=false`, as pflag's do.
#[derive(Args, Debug, Default)]
pub struct BuildxFlags {
    /// Run only the build checks (shorthand for `--call=check`): exit 1 on a violation.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub(crate) check: Option<bool>,
    /// What the build returns: `build` (default) or `check` (`check,format=json` for BuildKit's JSON).
    #[arg(long, value_name = "build|check[,format=json]")]
    pub(crate) call: Option<String>,
    /// Hidden alias of `--call` (older buildx).
    #[arg(long, hide = true)]
    pub(crate) print: Option<String>,
    /// Provenance attestation: `true`, `false`, `mode=min|max` (shorthand for `--attest type=provenance`).
    #[arg(long, value_name = "VALUE")]
    pub(crate) provenance: Option<String>,
    /// SBOM attestation: `true`, `false` (shorthand for `--attest type=sbom`).
    #[arg(long, value_name = "VALUE")]
    pub(crate) sbom: Option<String>,
    /// Attestation parameters: `type=provenance,mode=max`, `type=sbom`; repeatable.
    #[arg(long, value_name = "type=TYPE,...")]
    pub(crate) attest: Vec<String>,
    /// Annotation: `[manifest:|index:|manifest-descriptor:|index-descriptor:]KEY=VALUE`; repeatable.
    #[arg(long, value_name = "KEY=VALUE")]
    pub(crate) annotation: Vec<String>,
    /// Builder (buildx; default `$BUILDX_BUILDER`): the daemon of `[builders.NAME]` in rbuild.toml.
    #[arg(long, value_name = "NAME")]
    pub(crate) builder: Option<String>,
    /// Parent cgroup of RUN steps (a path below the cgroup v2 root; a warning where it cannot be honoured).
    #[arg(long = "cgroup-parent", value_name = "CGROUP")]
    pub(crate) cgroup_parent: Option<String>,
    /// Size of /dev/shm in RUN steps (`64m`, `1g`, bytes; default 64m).
    #[arg(long = "shm-size", value_name = "BYTES")]
    pub(crate) shm_size: Option<String>,
    /// A resource limit of RUN steps: `nofile=1024:2048` (docker's names; -1 is unlimited); repeatable.
    #[arg(long, value_name = "TYPE=SOFT[:HARD]")]
    pub(crate) ulimit: Vec<String>,
    /// Resource limits of build containers (`memory=2g`, `cpu-quota=50000`).
    #[arg(long, value_name = "KEY=VALUE")]
    pub(crate) resource: Vec<String>,
    /// Build policy configuration (buildx).
    #[arg(long, value_name = "SPEC")]
    pub(crate) policy: Vec<String>,
    /// Debug logging (buildx).
    #[arg(short = 'D', long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub(crate) debug: Option<bool>,
    // docker build's legacy flags, hidden in buildx too.
    #[arg(short = 'm', long, hide = true)]
    pub(crate) memory: Option<String>,
    #[arg(long = "memory-swap", hide = true)]
    pub(crate) memory_swap: Option<String>,
    #[arg(short = 'c', long = "cpu-shares", hide = true)]
    pub(crate) cpu_shares: Option<String>,
    #[arg(long = "cpu-period", hide = true)]
    pub(crate) cpu_period: Option<String>,
    #[arg(long = "cpu-quota", hide = true)]
    pub(crate) cpu_quota: Option<String>,
    #[arg(long = "cpuset-cpus", hide = true)]
    pub(crate) cpuset_cpus: Option<String>,
    #[arg(long = "cpuset-mems", hide = true)]
    pub(crate) cpuset_mems: Option<String>,
    #[arg(long, hide = true, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub(crate) compress: Option<bool>,
    #[arg(long, hide = true)]
    pub(crate) isolation: Option<String>,
    #[arg(long = "security-opt", hide = true)]
    pub(crate) security_opt: Vec<String>,
    #[arg(long, hide = true, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub(crate) squash: Option<bool>,
    #[arg(long, hide = true, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub(crate) rm: Option<bool>,
    #[arg(long = "force-rm", hide = true, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub(crate) force_rm: Option<bool>,
}

/// `--call` / `--check`, parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallSpec {
    pub call: Call,
    pub json: bool,
}

impl BuildxFlags {
    /// `--call`, `--print` and `--check` together (buildx: `--check` is `--call=check`).
    pub fn call(&self) -> Result<CallSpec> {
        let value = match (&self.call, &self.print, self.check) {
            (_, _, Some(true)) => "check".to_string(),
            (Some(c), _, _) | (None, Some(c), _) => c.clone(),
            _ => "build".to_string(),
        };
        let mut parts = value.split(',');
        let name = parts.next().unwrap_or("").trim();
        let mut json = false;
        for p in parts {
            match p.trim().split_once('=') {
                Some(("format", "json")) => json = true,
                Some(("format", "text")) => json = false,
                Some(("ignorestatus", _)) => {}
                _ => bail!("--call={value}: unknown option {p:?} (rbuild knows format=json|text)"),
            }
        }
        let call = match name {
            "build" | "" => Call::Build,
            "check" | "lint" => Call::Check,
            "outline" | "targets" | "subrequests.describe" => {
                bail!(
                    "--call={name}: rbuild answers `build` and `check` only; `rbuild debug dump-ast` shows the stages"
                )
            }
            other => bail!("--call={other}: unknown method (build, check, outline or targets)"),
        };
        Ok(CallSpec { call, json })
    }

    /// One line for each flag rbuild takes but does not apply, saying what it does instead.
    pub fn notes(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut note = |flag: &str, what: &str| out.push(format!("WARNING: {flag}: {what}"));
        let resources: Vec<String> = self
            .resource
            .iter()
            .cloned()
            .chain(self.memory.iter().map(|v| format!("memory={v}")))
            .chain(self.memory_swap.iter().map(|v| format!("memory-swap={v}")))
            .chain(self.cpu_shares.iter().map(|v| format!("cpu-shares={v}")))
            .chain(self.cpu_period.iter().map(|v| format!("cpu-period={v}")))
            .chain(self.cpu_quota.iter().map(|v| format!("cpu-quota={v}")))
            .chain(self.cpuset_cpus.iter().map(|v| format!("cpuset-cpus={v}")))
            .chain(self.cpuset_mems.iter().map(|v| format!("cpuset-mems={v}")))
            .collect();
        if !resources.is_empty() {
            note(
                &format!("resource limits ({})", resources.join(", ")),
                "not applied; RUN steps share the machine as rbuild's own processes do",
            );
        }
        if !self.policy.is_empty() {
            note("--policy", "rbuild has no build policies; nothing is checked against it");
        }
        if self.debug == Some(true) {
            note("--debug", "rbuild has no debug log; --progress=plain shows every step's full output");
        }
        if let Some(i) = self.isolation.as_deref().filter(|i| *i != "default") {
            note(&format!("--isolation {i}"), "RUN steps always run in Linux namespaces (the `default` isolation)");
        }
        if !self.security_opt.is_empty() {
            note(
                "--security-opt",
                "ignored, as buildx ignores it; use RUN --security=insecure with --allow security.insecure",
            );
        }
        if self.squash == Some(true) {
            note("--squash", "ignored, as buildx ignores it; each step is its own layer");
        }
        // --compress, --rm and --force-rm describe docker's legacy builder: nothing to do, nothing to say
        // beyond what buildx says (nothing).
        out
    }

    /// `--provenance`, `--sbom`, `--attest`, `--annotation`.
    pub fn attest(&self) -> Result<AttestOptions> {
        Ok(AttestOptions::parse(self.provenance.as_deref(), self.sbom.as_deref(), &self.attest, &self.annotation)?)
    }

    /// What a build on a daemon (`--host`) does not apply: the daemon's protocol has no attestations yet.
    pub fn remote_notes(&self) -> Result<Vec<String>> {
        let a = self.attest()?;
        Ok(if a.attests() || a.annotations != Default::default() {
            vec!["WARNING: --provenance/--sbom/--attest/--annotation: not applied to a build on a daemon (--host); build on this machine to attach them".to_string()]
        } else {
            Vec::new()
        })
    }

    /// `--ulimit`, `--shm-size`, `--cgroup-parent`, checked.
    pub fn run_settings(&self) -> Result<RunSettings> {
        Ok(RunSettings::parse(&self.ulimit, self.shm_size.as_deref(), self.cgroup_parent.as_deref())?)
    }

    /// Applies what a daemon honours to its request (the daemon checks the values again).
    pub fn apply_remote(&self, start: &mut daemon::proto::BuildStart) -> Result<()> {
        let run = self.run_settings()?;
        start.ulimits = run.ulimits.iter().map(|u| u.to_string()).collect();
        start.shm_size = run.shm_size;
        start.cgroup_parent = run.cgroup_parent;
        Ok(())
    }

    /// Applies what the engine honours to a local build's request; returns notes on what it does not.
    pub fn apply(&self, req: &mut BuildRequest) -> Result<Vec<String>> {
        req.call = self.call()?.call;
        req.attest = self.attest()?;
        req.run = self.run_settings()?;
        let pushes = req.outputs.iter().any(|o| matches!(o.kind, engine::export::OutputKind::Image { push: true, .. }));
        let mut notes = Vec::new();
        if !pushes && (req.attest.attests() || req.attest.annotations != Default::default()) {
            notes.push(
                "WARNING: --provenance/--sbom/--attest/--annotation: attached to pushed images only (--push); this build pushes none"
                    .to_string(),
            );
        }
        Ok(notes)
    }
}

/// What `--check` prints (buildx's `printResult` for the lint subrequest) and its exit status. In a GitHub
/// Actions job (`github`: the Dockerfile's path there) each warning is also an annotation on its line.
pub fn print_check(metadata: &serde_json::Map<String, serde_json::Value>, json: bool, github: Option<&str>) -> u8 {
    let status = metadata.get("result.statuscode").and_then(|v| v.as_i64()).unwrap_or(0);
    if let Some(file) = github {
        let warnings = metadata.get("result.json").and_then(|j| j.get("warnings")).and_then(|w| w.as_array());
        for w in warnings.into_iter().flatten() {
            let line = |k: &str| w.pointer(&format!("/location/ranges/0/{k}/line")).and_then(|l| l.as_u64());
            let place = super::github::Place {
                file: Some(file.to_string()),
                line: line("start").map(|l| l as usize),
                end_line: line("end").map(|l| l as usize),
            };
            let title = w.get("ruleName").and_then(|v| v.as_str()).unwrap_or("Dockerfile warning");
            let detail = w.get("detail").and_then(|v| v.as_str()).unwrap_or("");
            eprintln!("{}", super::github::annotation(super::github::Level::Warning, &place, title, detail));
        }
    }
    if json {
        if let Some(v) = metadata.get("result.json") {
            println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
        }
        return u8::from(status != 0);
    }
    let txt = metadata.get("result.txt").and_then(|v| v.as_str()).unwrap_or("");
    let count = txt.matches("\nWARNING: ").count() + usize::from(txt.starts_with("WARNING: "));
    match count {
        0 => println!("Check complete, no warnings found."),
        1 => {
            println!("Check complete, 1 warning has been found!");
            print!("{txt}");
        }
        n => {
            println!("Check complete, {n} warnings have been found!");
            print!("{txt}");
        }
    }
    u8::from(status != 0)
}
