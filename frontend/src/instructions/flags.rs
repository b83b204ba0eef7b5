//! `--flag[=value]` validation for one instruction, a port of BuildKit's `BFlags`.
//!
//! The parser accepts any `--word`; each instruction declares the flags it knows and this module
//! rejects the rest with a "did you mean" hint.

use std::collections::BTreeMap;

use crate::diag::suggest;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Bool,
    String,
    /// May be given several times (`--mount`, `--exclude`).
    StringList,
}

/// The flags an instruction accepts, and after [`FlagSet::parse`] the values it was given.
#[derive(Debug)]
pub struct FlagSet {
    instruction: &'static str,
    known: Vec<(&'static str, Kind)>,
    values: BTreeMap<&'static str, Vec<String>>,
}

impl FlagSet {
    pub fn new(instruction: &'static str) -> FlagSet {
        FlagSet { instruction, known: Vec::new(), values: BTreeMap::new() }
    }

    pub fn bool(mut self, name: &'static str) -> FlagSet {
        self.known.push((name, Kind::Bool));
        self
    }

    pub fn string(mut self, name: &'static str) -> FlagSet {
        self.known.push((name, Kind::String));
        self
    }

    pub fn list(mut self, name: &'static str) -> FlagSet {
        self.known.push((name, Kind::StringList));
        self
    }

    /// Validate the raw flags (`--name=value`, `--name`) of a node against the declared ones.
    pub fn parse(mut self, raw: &[String]) -> Result<FlagSet, String> {
        for arg in raw {
            let Some(body) = arg.strip_prefix("--") else {
                return Err(format!("arg should start with -- : {arg}"));
            };
            let (name, value) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (body, None),
            };
            let Some(&(name, kind)) = self.known.iter().find(|(n, _)| *n == name) else {
                let names: Vec<&str> = self.known.iter().map(|(n, _)| *n).collect();
                let msg = if names.is_empty() {
                    format!("unknown flag: --{name} ({} takes no flags)", self.instruction)
                } else {
                    format!("unknown flag: --{name}")
                };
                return Err(suggest(msg, name, names).replace("(did you mean ", "(did you mean --"));
            };
            let entry = self.values.entry(name).or_default();
            if kind != Kind::StringList && !entry.is_empty() {
                return Err(format!("duplicate flag specified: --{name}"));
            }
            let value = match (kind, value) {
                (Kind::Bool, None) => "true".to_string(),
                (Kind::Bool, Some(v)) => match v.to_ascii_lowercase().as_str() {
                    "true" | "" => "true".to_string(),
                    "false" => "false".to_string(),
                    _ => return Err(format!("expecting boolean value for flag --{name}, not: {v}")),
                },
                (_, None) => return Err(format!("missing a value on flag: --{name}")),
                (_, Some(v)) => v.to_string(),
            };
            entry.push(value);
        }
        Ok(self)
    }

    pub fn get_bool(&self, name: &str) -> bool {
        self.values.get(name).and_then(|v| v.first()).is_some_and(|v| v == "true")
    }

    pub fn get_string(&self, name: &str) -> Option<String> {
        self.values.get(name).and_then(|v| v.first()).cloned()
    }

    pub fn get_list(&self, name: &str) -> Vec<String> {
        self.values.get(name).cloned().unwrap_or_default()
    }

    /// Names of the flags that were given, for `RunCommand::flags_used`-style checks.
    pub fn used(&self) -> Vec<String> {
        self.values.keys().map(|k| k.to_string()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(flags: &[&str]) -> Vec<String> {
        flags.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn values_and_defaults() {
        let f = FlagSet::new("COPY")
            .string("from")
            .bool("link")
            .list("exclude")
            .parse(&raw(&["--from=build", "--link", "--exclude=a", "--exclude=b"]))
            .unwrap();
        assert_eq!(f.get_string("from").as_deref(), Some("build"));
        assert!(f.get_bool("link"));
        assert_eq!(f.get_list("exclude"), vec!["a", "b"]);
        assert_eq!(f.used(), vec!["exclude", "from", "link"]);
    }

    #[test]
    fn errors() {
        let set = || FlagSet::new("COPY").string("from").bool("link").string("chown");
        assert_eq!(set().parse(&raw(&["--form=x"])).unwrap_err(), "unknown flag: --form (did you mean --from?)");
        assert_eq!(set().parse(&raw(&["--from=a", "--from=b"])).unwrap_err(), "duplicate flag specified: --from");
        assert_eq!(set().parse(&raw(&["--from"])).unwrap_err(), "missing a value on flag: --from");
        assert_eq!(
            set().parse(&raw(&["--link=maybe"])).unwrap_err(),
            "expecting boolean value for flag --link, not: maybe"
        );
        assert!(!set().parse(&raw(&["--link=false"])).unwrap().get_bool("link"));
        assert_eq!(FlagSet::new("USER").parse(&raw(&["--x"])).unwrap_err(), "unknown flag: --x (USER takes no flags)");
    }
}
