//! rbuild's cache record, version 1: the config blob of a cache artifact.
//!
//! The artifact is an OCI image manifest (media type `application/vnd.oci.image.manifest.v1+json`, or
//! Docker's with `oci-mediatypes=false`) whose `artifactType` is [`ARTIFACT_TYPE`], whose config has media
//! type [`CONFIG_MEDIA_TYPE`] and is this record as JSON, and whose layers are ordinary layer blobs; by
//! default it is wrapped in an OCI index (`image-manifest=true` pushes the manifest alone). The record maps
//! each exported cache key to, per output of the step, the chain of layers (base first, indexes into
//! `layers`) whose snapshot is the step's result; an output that is an empty filesystem is `null`.
//!
//! ```json
//! {"version":1,
//!  "layers":[{"digest":"sha256:…","diffID":"sha256:…","size":1234,"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip"}],
//!  "results":{"sha256:<key>":[[0]]}}
//! ```
//!
//! Keys are rbuild's cache keys (see solver's scheduler); nothing in a record names a host path or a
//! secret (`explain` holds the steps' definitions, as the image's history shows them, and context paths). A reader ignores fields it does not know; a record of another version is not read.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.rbuild.cache.config.v1+json";
pub const ARTIFACT_TYPE: &str = "application/vnd.rbuild.cache.v1";
pub const VERSION: u32 = 1;

/// One layer blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerEntry {
    pub digest: String,
    #[serde(rename = "diffID")]
    pub diff_id: String,
    pub size: u64,
    #[serde(rename = "mediaType")]
    pub media_type: String,
    /// When the layer's snapshot was made (Unix seconds), for the history of an image assembled from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<u64>,
    /// The SOURCE_DATE_EPOCH the layer was written with (times clamped to it), if any: an image assembled
    /// from the layer as it is must ask for the same.
    #[serde(default, rename = "sourceDateEpoch", skip_serializing_if = "Option::is_none")]
    pub epoch: Option<i64>,
}

/// The record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheRecord {
    pub version: u32,
    pub layers: Vec<LayerEntry>,
    /// Cache key -> per output, the layer chain (indexes into `layers`, base first), `None` when empty.
    pub results: BTreeMap<String, Vec<Option<Vec<usize>>>>,
    /// What the next build compares its steps with to explain a miss (engine's `explain`): the exporting
    /// build's record of its steps' key ingredients (definitions, with their environment) and the context
    /// paths they read, with digests. Not part of a hit; absent in inline records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub explain: Option<serde_json::Value>,
    /// The cache key scheme of the rbuild that wrote the record (solver's [`solver::CACHE_KEY_VERSION`]);
    /// a record under another scheme cannot hit, and says so rather than missing silently.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<String>,
}

impl CacheRecord {
    /// The record of `bytes`, checked: a known version, and every chain naming existing layers.
    pub fn parse(bytes: &[u8]) -> Result<CacheRecord, String> {
        let r: CacheRecord = serde_json::from_slice(bytes).map_err(|e| format!("not an rbuild cache record: {e}"))?;
        if r.version != VERSION {
            return Err(format!("cache record version {} (this rbuild reads version {VERSION})", r.version));
        }
        if let Some(keys) = r.keys.as_deref().filter(|k| *k != solver::CACHE_KEY_VERSION) {
            return Err(format!(
                "written by an rbuild whose cache keys differ ({keys}; this rbuild uses {}): none of its steps \
                 can hit; the next --cache-to of this rbuild replaces it",
                solver::CACHE_KEY_VERSION
            ));
        }
        let n = r.layers.len();
        for (key, outputs) in &r.results {
            if outputs.iter().flatten().flatten().any(|i| *i >= n) {
                return Err(format!("cache record entry {key} names a layer that is not in the record"));
            }
        }
        Ok(r)
    }

    /// The index of `layer` in `layers`, added if new.
    pub fn layer_index(&mut self, layer: LayerEntry) -> usize {
        match self.layers.iter().position(|l| l.digest == layer.digest) {
            Some(i) => i,
            None => {
                self.layers.push(layer);
                self.layers.len() - 1
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(n: u8) -> LayerEntry {
        LayerEntry {
            digest: format!("sha256:{}", hex_of(n)),
            diff_id: format!("sha256:{}", hex_of(n + 100)),
            size: n as u64,
            media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
            created: Some(1_700_000_000),
            epoch: None,
        }
    }

    fn hex_of(n: u8) -> String {
        format!("{n:02x}").repeat(32)
    }

    #[test]
    fn records_round_trip_and_are_checked() {
        let mut r = CacheRecord { version: VERSION, ..Default::default() };
        let a = r.layer_index(layer(1));
        let b = r.layer_index(layer(2));
        assert_eq!(r.layer_index(layer(1)), a);
        r.results.insert("sha256:k1".into(), vec![Some(vec![a, b]), None]);
        let json = serde_json::to_vec(&r).unwrap();
        assert_eq!(CacheRecord::parse(&json).unwrap(), r);
        let text = String::from_utf8(json).unwrap();
        assert!(text.contains("\"diffID\"") && text.contains("\"mediaType\""), "{text}");

        r.results.insert("sha256:k2".into(), vec![Some(vec![7])]);
        assert!(CacheRecord::parse(&serde_json::to_vec(&r).unwrap()).unwrap_err().contains("k2"));
        r.results.remove("sha256:k2");

        // A record says which key scheme wrote it; another scheme's record is refused with the reason.
        r.keys = Some(solver::CACHE_KEY_VERSION.into());
        assert_eq!(CacheRecord::parse(&serde_json::to_vec(&r).unwrap()).unwrap(), r);
        r.keys = Some("rbuild.cachekey.v2".into());
        let e = CacheRecord::parse(&serde_json::to_vec(&r).unwrap()).unwrap_err();
        assert!(e.contains("cache keys differ (rbuild.cachekey.v2; this rbuild uses rbuild.cachekey.v"), "{e}");
        let v2 = CacheRecord { version: 2, ..Default::default() };
        assert!(CacheRecord::parse(&serde_json::to_vec(&v2).unwrap()).unwrap_err().contains("version 2"));
        assert!(CacheRecord::parse(b"{}").is_err());
    }
}
