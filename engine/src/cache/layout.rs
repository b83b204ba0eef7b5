//! A minimal OCI image layout directory for `type=local` caches: `oci-layout`, `index.json` naming
//! manifests by tag (`org.opencontainers.image.ref.name`), and `blobs/sha256/<hex>`. Updated in place: a
//! new export replaces its tag's entry and removes the blobs nothing reachable from `index.json` uses.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

const REF_NAME: &str = "org.opencontainers.image.ref.name";

pub(crate) fn blob_path(dir: &Path, digest: &str) -> Result<PathBuf, String> {
    let hex = digest.strip_prefix("sha256:").ok_or_else(|| format!("unsupported digest {digest}"))?;
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("invalid digest {digest}"));
    }
    Ok(dir.join("blobs/sha256").join(hex))
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let dir = path.parent().ok_or("no parent directory")?;
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let mut tmp = tempfile::Builder::new()
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666))
        .tempfile_in(dir)
        .map_err(|e| format!("cannot write in {}: {e}", dir.display()))?;
    tmp.write_all(bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    tmp.as_file().sync_all().map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    tmp.persist(path).map_err(|e| format!("cannot write {}: {}", path.display(), e.error))?;
    Ok(())
}

/// The layout's index, or an empty one.
fn read_index(dir: &Path) -> Result<Value, String> {
    match std::fs::read(dir.join("index.json")) {
        Ok(b) => serde_json::from_slice(&b)
            .map_err(|e| format!("{}: not an OCI index: {e}", dir.join("index.json").display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(json!({"schemaVersion": 2, "manifests": []})),
        Err(e) => Err(format!("cannot read {}: {e}", dir.join("index.json").display())),
    }
}

/// The descriptor `tag` names in the layout at `dir`.
pub(crate) fn lookup(dir: &Path, tag: &str) -> Result<Value, String> {
    let index = read_index(dir)?;
    index["manifests"]
        .as_array()
        .and_then(|m| m.iter().find(|d| d["annotations"][REF_NAME] == tag).cloned())
        .ok_or_else(|| format!("{} has no cache tagged {tag:?}", dir.display()))
}

/// Writes `blobs` (digest, bytes source) that are missing, names `top` as `tag`, and removes blobs nothing
/// named uses. `read` gives a blob's bytes from the content store.
pub(crate) fn update(
    dir: &Path,
    tag: &str,
    top: Value,
    blobs: &[String],
    copy: &dyn Fn(&str, &Path) -> Result<(), String>,
) -> Result<usize, String> {
    let mut written = 0;
    let blob_dir = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blob_dir).map_err(|e| format!("cannot create {}: {e}", blob_dir.display()))?;
    for d in blobs {
        let p = blob_path(dir, d)?;
        if !p.exists() {
            copy(d, &p)?;
            written += 1;
        }
    }
    write_atomic(&dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    let mut index = read_index(dir)?;
    let mut manifests: Vec<Value> = index["manifests"].as_array().cloned().unwrap_or_default();
    manifests.retain(|d| d["annotations"][REF_NAME] != tag);
    let mut top = top;
    top["annotations"] = json!({ REF_NAME: tag });
    manifests.push(top);
    index["manifests"] = Value::Array(manifests.clone());
    index["schemaVersion"] = json!(2);
    index["mediaType"] = json!("application/vnd.oci.image.index.v1+json");
    write_atomic(&dir.join("index.json"), &serde_json::to_vec_pretty(&index).map_err(|e| e.to_string())?)?;
    gc(dir, &manifests)?;
    Ok(written)
}

/// Removes every blob that no manifest reachable from `roots` uses.
fn gc(dir: &Path, roots: &[Value]) -> Result<(), String> {
    let mut keep = BTreeSet::new();
    let mut pending: Vec<String> = roots.iter().filter_map(|d| d["digest"].as_str().map(str::to_string)).collect();
    while let Some(d) = pending.pop() {
        if !keep.insert(d.clone()) {
            continue;
        }
        let Ok(bytes) = std::fs::read(blob_path(dir, &d)?) else { continue };
        let Ok(v) = serde_json::from_slice::<Value>(&bytes) else { continue };
        for list in ["manifests", "layers"] {
            for child in v[list].as_array().into_iter().flatten() {
                pending.extend(child["digest"].as_str().map(str::to_string));
            }
        }
        pending.extend(v["config"]["digest"].as_str().map(str::to_string));
    }
    let blobs = dir.join("blobs/sha256");
    for entry in std::fs::read_dir(&blobs).map_err(|e| format!("cannot read {}: {e}", blobs.display()))?.flatten() {
        let name = format!("sha256:{}", entry.file_name().to_string_lossy());
        if !keep.contains(&name) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(b: &[u8]) -> String {
        use sha2::Digest as _;
        format!("sha256:{}", hex::encode(sha2::Sha256::digest(b)))
    }

    #[test]
    fn tags_are_replaced_and_unused_blobs_go() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path();
        let write = |bytes: &[u8]| {
            let bytes = bytes.to_vec();
            move |_: &str, p: &Path| std::fs::write(p, &bytes).map_err(|e| e.to_string())
        };
        let m1 = br#"{"layers":[]}"#;
        let d1 = digest(m1);
        let first = json!({"mediaType": "m", "digest": d1, "size": m1.len()});
        assert_eq!(update(dir, "main", first, std::slice::from_ref(&d1), &write(m1)).unwrap(), 1);
        assert_eq!(lookup(dir, "main").unwrap()["digest"], d1);
        let m2 = br#"{"layers":[],"v":2}"#;
        let d2 = digest(m2);
        update(
            dir,
            "main",
            json!({"mediaType": "m", "digest": d2, "size": m2.len()}),
            std::slice::from_ref(&d2),
            &write(m2),
        )
        .unwrap();
        assert_eq!(lookup(dir, "main").unwrap()["digest"], d2);
        assert!(!blob_path(dir, &d1).unwrap().exists(), "the old manifest stayed");
        assert!(lookup(dir, "other").is_err());
        assert!(blob_path(dir, "sha256:../../etc").is_err());
    }
}
