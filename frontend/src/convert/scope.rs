//! Variable scoping: global ARGs, per-stage ARG re-declaration, build-arg overrides, builtin platform
//! ARGs, predefined proxy ARGs, and ENV over ARG (BuildKit's `dispatchArg`/`getEnv` rules).

use std::collections::BTreeSet;

use llb::Platform;

use crate::shell;

/// ARGs that BuildKit defines without a declaration; usable in FROM lines and, after a bare
/// `ARG NAME`, inside a stage.
pub(crate) fn builtin_args(build: &Platform, target: &Platform) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (prefix, p) in [("BUILD", build), ("TARGET", target)] {
        out.push((format!("{prefix}PLATFORM"), p.to_string()));
        out.push((format!("{prefix}OS"), p.os.clone()));
        out.push((format!("{prefix}ARCH"), p.architecture.clone()));
        out.push((format!("{prefix}VARIANT"), p.variant.clone().unwrap_or_default()));
    }
    out
}

/// Build args that reach RUN without an ARG declaration and stay out of cache identity and history.
pub(crate) const PROXY_ARGS: [&str; 10] = [
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// An ordered `K=V` list where setting an existing key replaces it in place (Docker's env semantics).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct VarList(pub Vec<(String, String)>);

impl VarList {
    pub fn from_env(env: &[String]) -> VarList {
        VarList(
            env.iter()
                .map(|kv| match kv.split_once('=') {
                    Some((k, v)) => (k.to_string(), v.to_string()),
                    None => (kv.clone(), String::new()),
                })
                .collect(),
        )
    }

    pub fn set(&mut self, key: &str, value: &str) {
        match self.0.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value.to_string(),
            None => self.0.push((key.to_string(), value.to_string())),
        }
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    pub fn to_env(&self) -> Vec<String> {
        self.0.iter().map(|(k, v)| format!("{k}={v}")).collect()
    }
}

/// The global scope: builtin args, the ARGs before the first FROM, and the build-arg overrides.
#[derive(Clone, Debug, Default)]
pub(crate) struct GlobalScope {
    /// Values of meta ARGs (and builtins), in declaration order.
    pub values: VarList,
    /// Build args some ARG declared (to warn about the others).
    pub consumed: BTreeSet<String>,
    /// Meta ARGs declared without a value and given none.
    pub declared_unset: Vec<String>,
}

impl shell::Env for GlobalScope {
    fn get(&self, name: &str) -> Option<String> {
        self.values.get(name).map(str::to_string)
    }
}

/// The variables of one stage while it is dispatched, as BuildKit's llb state env: it starts as the base
/// image's Env (a stage built on another stage starts from that stage's variables and ARG declarations,
/// its config's Env applied over them), and ENV and ARG (with a value) set entries in the order they
/// appear, so the later of an ENV and an ARG of the same name wins. The image config's Env only ever gets
/// ENV.
#[derive(Clone, Debug, Default)]
pub(crate) struct StageScope {
    /// Every ARG declaration in order, re-declarations included (BuildKit's `d.buildArgs`).
    pub args: Vec<(String, Option<String>)>,
    /// The environment RUN sees and words expand against.
    pub env: VarList,
}

impl StageScope {
    /// Declare (or re-declare) an ARG; a value also becomes an environment entry.
    pub fn declare(&mut self, key: &str, value: Option<String>) {
        if let Some(v) = &value {
            if !key.starts_with("BUILDKIT_") {
                self.env.set(key, v);
            }
        }
        self.args.push((key.to_string(), value));
    }

    /// The environment a RUN sees.
    pub fn exec_env(&self) -> Vec<String> {
        self.env.to_env()
    }

    /// `K=V` for every ARG declared, once per name at its first declaration's place and valued from
    /// the environment when set there, else from its last declaration (BuildKit's runCommandString), for
    /// RUN's history line `RUN |N K=V ... cmd`.
    pub fn history_args(&self) -> Vec<String> {
        let mut out: VarList = VarList::default();
        for (k, v) in &self.args {
            let value = self.env.get(k).map(str::to_string).or_else(|| v.clone()).unwrap_or_default();
            out.set(k, &value);
        }
        out.to_env()
    }
}

impl shell::Env for StageScope {
    fn get(&self, name: &str) -> Option<String> {
        self.env.get(name).map(str::to_string)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shell::Env;

    #[test]
    fn later_of_env_and_arg_wins() {
        let mut s = StageScope::default();
        s.declare("A", Some("arg".into()));
        s.declare("B", Some("b".into()));
        s.declare("C", None);
        s.env.set("A", "env");
        assert_eq!(s.get("A").as_deref(), Some("env"));
        assert_eq!(s.get("B").as_deref(), Some("b"));
        assert_eq!(s.get("C"), None);
        assert_eq!(s.exec_env(), vec!["A=env", "B=b"]);
        assert_eq!(s.history_args(), vec!["A=env", "B=b", "C="]);
        s.declare("A", Some("again".into()));
        assert_eq!(s.get("A").as_deref(), Some("again"));
        // A re-declared ARG is listed once, where it was first declared.
        assert_eq!(s.history_args(), vec!["A=again", "B=b", "C="]);
    }

    #[test]
    fn var_list_replaces_in_place() {
        let mut v = VarList::from_env(&["PATH=/bin".into(), "A=1".into()]);
        v.set("PATH", "/usr/bin");
        v.set("B", "2");
        assert_eq!(v.to_env(), vec!["PATH=/usr/bin", "A=1", "B=2"]);
    }

    #[test]
    fn builtins() {
        let b = Platform::new("linux", "amd64", None);
        let t = Platform::new("linux", "arm", Some("v7"));
        let args = builtin_args(&b, &t);
        assert!(args.contains(&("TARGETPLATFORM".into(), "linux/arm/v7".into())));
        assert!(args.contains(&("BUILDARCH".into(), "amd64".into())));
        assert!(args.contains(&("BUILDVARIANT".into(), String::new())));
    }
}
