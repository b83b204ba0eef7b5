//! The `config` object of an image: what a container of the image runs with.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

/// Docker's `container.Config` subset that images carry (PascalCase names as Docker writes them).
///
/// Docker (not BuildKit) writes unset slices and maps as `null` instead of leaving them out; those
/// explicit nulls are remembered and written back, so a base image config re-serialises unchanged.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(remote = "Self")]
pub struct ImageConfig {
    #[serde(rename = "User", default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// `80/tcp` style keys; Docker writes them as a map to `{}`.
    #[serde(rename = "ExposedPorts", default, skip_serializing_if = "Option::is_none", with = "object_set")]
    pub exposed_ports: Option<BTreeSet<String>>,
    #[serde(rename = "Env", default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    #[serde(rename = "Entrypoint", default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(rename = "Cmd", default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(rename = "Volumes", default, skip_serializing_if = "Option::is_none", with = "object_set")]
    pub volumes: Option<BTreeSet<String>>,
    #[serde(rename = "WorkingDir", default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(rename = "Labels", default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(rename = "StopSignal", default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    #[serde(rename = "ArgsEscaped", default, skip_serializing_if = "Option::is_none")]
    pub args_escaped: Option<bool>,
    #[serde(rename = "Healthcheck", default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<Healthcheck>,
    #[serde(rename = "OnBuild", default, skip_serializing_if = "Option::is_none")]
    pub on_build: Option<Vec<String>>,
    #[serde(rename = "Shell", default, skip_serializing_if = "Option::is_none")]
    pub shell: Option<Vec<String>>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
    /// Known fields that were an explicit `null` in the parsed JSON.
    #[serde(skip)]
    null_fields: BTreeSet<String>,
}

/// Docker's `HealthConfig`; durations in nanoseconds, 0 or unset meaning "inherit".
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Healthcheck {
    /// `[]` inherit, `["NONE"]` disable, `["CMD", ...]` exec, `["CMD-SHELL", cmd]` shell.
    #[serde(rename = "Test", default, skip_serializing_if = "Option::is_none")]
    pub test: Option<Vec<String>>,
    #[serde(rename = "Interval", default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<i64>,
    #[serde(rename = "Timeout", default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<i64>,
    #[serde(rename = "StartPeriod", default, skip_serializing_if = "Option::is_none")]
    pub start_period: Option<i64>,
    #[serde(rename = "StartInterval", default, skip_serializing_if = "Option::is_none")]
    pub start_interval: Option<i64>,
    #[serde(rename = "Retries", default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<i64>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

const NULLABLE: [&str; 9] =
    ["ExposedPorts", "Env", "Entrypoint", "Cmd", "Volumes", "Labels", "Healthcheck", "OnBuild", "Shell"];

impl Serialize for ImageConfig {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.null_fields.is_empty() {
            return ImageConfig::serialize(self, s);
        }
        let mut value =
            ImageConfig::serialize(self, serde_json::value::Serializer).map_err(serde::ser::Error::custom)?;
        if let Value::Object(map) = &mut value {
            for key in &self.null_fields {
                map.entry(key.clone()).or_insert(Value::Null);
            }
        }
        value.serialize(s)
    }
}

impl<'de> Deserialize<'de> for ImageConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut map = Map::deserialize(d)?;
        let null_fields: BTreeSet<String> =
            NULLABLE.iter().filter(|k| map.get(**k) == Some(&Value::Null)).map(|k| k.to_string()).collect();
        for key in &null_fields {
            map.remove(key);
        }
        let mut config = ImageConfig::deserialize(Value::Object(map)).map_err(serde::de::Error::custom)?;
        config.null_fields = null_fields;
        Ok(config)
    }
}

impl ImageConfig {
    /// The value of `key` in `Env`, last definition winning.
    pub fn env_get(&self, key: &str) -> Option<&str> {
        let prefix_len = key.len() + 1;
        self.env.iter().flatten().rev().find_map(|kv| {
            (kv.len() >= prefix_len && kv.starts_with(key) && kv.as_bytes()[key.len()] == b'=')
                .then(|| &kv[prefix_len..])
        })
    }

    /// Sets `key=value` in `Env`, replacing an existing entry in place (Docker's ENV behaviour).
    pub fn set_env(&mut self, key: &str, value: &str) {
        let entry = format!("{key}={value}");
        let env = self.env.get_or_insert_with(Vec::new);
        match env.iter_mut().find(|kv| kv.split_once('=').map_or(kv.as_str(), |(k, _)| k) == key) {
            Some(existing) => *existing = entry,
            None => env.push(entry),
        }
    }
}

/// `Option<BTreeSet<String>>` as Docker's `map[string]struct{}`.
mod object_set {
    use std::collections::{BTreeMap, BTreeSet};

    use serde::de::IgnoredAny;
    use serde::ser::SerializeMap;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(set: &Option<BTreeSet<String>>, s: S) -> Result<S::Ok, S::Error> {
        match set {
            None => s.serialize_none(),
            Some(set) => {
                let mut m = s.serialize_map(Some(set.len()))?;
                for key in set {
                    m.serialize_entry(key, &BTreeMap::<String, String>::new())?;
                }
                m.end()
            }
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<BTreeSet<String>>, D::Error> {
        let map = Option::<BTreeMap<String, IgnoredAny>>::deserialize(d)?;
        Ok(map.map(|m| m.into_keys().collect()))
    }
}
