//! The SBOM attestation: an SPDX 2.3 JSON document of the packages an image's filesystem holds, read from
//! the package databases that are there: dpkg (`var/lib/dpkg/status`, `status.d/`), apk
//! (`lib/apk/db/installed`), Python distributions (`*.dist-info/METADATA`, `*.egg-info/PKG-INFO`), npm
//! packages (`node_modules/**/package.json`) and Go binaries' embedded build info.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

/// One package found in the image.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Package {
    /// `deb`, `apk`, `pypi`, `npm`, `golang`.
    pub kind: &'static str,
    pub name: String,
    pub version: String,
    /// The package URL (purl).
    pub purl: String,
    /// Where it was found, relative to the image root.
    pub location: String,
}

/// dpkg's `status` paragraphs: installed packages (dpkg-query -W lists those not `not-installed`).
pub fn parse_dpkg_status(text: &str, distro: &str, location: &str) -> Vec<Package> {
    let mut out = Vec::new();
    for para in text.split("\n\n") {
        let field = |name: &str| {
            para.lines()
                .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(':')).map(|v| v.trim().to_string()))
        };
        let (Some(name), Some(version)) = (field("Package"), field("Version")) else { continue };
        let status = field("Status").unwrap_or_else(|| "install ok installed".into());
        if status.ends_with("not-installed") {
            continue;
        }
        let arch = field("Architecture").unwrap_or_default();
        let mut purl = format!("pkg:deb/{distro}/{}@{}", purl_escape(&name), purl_escape(&version));
        if !arch.is_empty() {
            purl.push_str(&format!("?arch={arch}"));
        }
        out.push(Package { kind: "deb", name, version, purl, location: location.into() });
    }
    out
}

/// apk's `installed` database: `P:` name and `V:` version per blank-line-separated record.
pub fn parse_apk_installed(text: &str, location: &str) -> Vec<Package> {
    let mut out = Vec::new();
    for rec in text.split("\n\n") {
        let get = |k: &str| rec.lines().find_map(|l| l.strip_prefix(k).map(str::to_string));
        let (Some(name), Some(version)) = (get("P:"), get("V:")) else { continue };
        let arch = get("A:").unwrap_or_default();
        let mut purl = format!("pkg:apk/alpine/{}@{}", purl_escape(&name), purl_escape(&version));
        if !arch.is_empty() {
            purl.push_str(&format!("?arch={arch}"));
        }
        out.push(Package { kind: "apk", name, version, purl, location: location.into() });
    }
    out
}

/// A Python distribution's METADATA / PKG-INFO headers.
pub fn parse_python_metadata(text: &str, location: &str) -> Option<Package> {
    let header = text.split("\n\n").next()?;
    let get = |k: &str| header.lines().find_map(|l| l.strip_prefix(k).map(|v| v.trim().to_string()));
    let (name, version) = (get("Name:")?, get("Version:")?);
    let purl = format!("pkg:pypi/{}@{}", purl_escape(&name.to_lowercase().replace('_', "-")), purl_escape(&version));
    Some(Package { kind: "pypi", name, version, purl, location: location.into() })
}

/// An npm package.json's name and version.
pub fn parse_package_json(text: &str, location: &str) -> Option<Package> {
    let v: Value = serde_json::from_str(text).ok()?;
    let name = v.get("name")?.as_str()?.to_string();
    let version = v.get("version")?.as_str()?.to_string();
    let purl = match name.split_once('/') {
        Some((scope, n)) => {
            format!("pkg:npm/{}/{}@{}", scope.replace('@', "%40"), purl_escape(n), purl_escape(&version))
        }
        None => format!("pkg:npm/{}@{}", purl_escape(&name), purl_escape(&version)),
    };
    Some(Package { kind: "npm", name, version, purl, location: location.into() })
}

const GO_MAGIC: &[u8] = b"\xff Go buildinf:";

/// Go's embedded build info (Go 1.18+, inline strings): the main module and its dependencies.
pub fn parse_go_buildinfo(data: &[u8], location: &str) -> Vec<Package> {
    let Some(at) = (0..data.len().saturating_sub(32)).step_by(16).find(|&i| data[i..].starts_with(GO_MAGIC)) else {
        return Vec::new();
    };
    if data[at + 15] & 0x2 == 0 {
        return Vec::new();
    }
    let mut rest = &data[at + 32..];
    let mut read = || -> Option<Vec<u8>> {
        let (len, n) = uvarint(rest)?;
        let s = rest.get(n..n + len)?.to_vec();
        rest = &rest[n + len..];
        Some(s)
    };
    let (Some(_version), Some(mut modinfo)) = (read(), read()) else { return Vec::new() };
    if modinfo.len() >= 33 && modinfo[modinfo.len() - 17] == b'\n' {
        modinfo = modinfo[16..modinfo.len() - 16].to_vec();
    }
    let text = String::from_utf8_lossy(&modinfo);
    let mut out = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        if (f[0] == "mod" || f[0] == "dep") && f.len() >= 3 {
            let (name, version) = (f[1].to_string(), f[2].to_string());
            let purl = format!("pkg:golang/{}@{}", name, purl_escape(&version));
            out.push(Package { kind: "golang", name, version, purl, location: location.into() });
        }
    }
    out
}

fn uvarint(b: &[u8]) -> Option<(usize, usize)> {
    let mut x: u64 = 0;
    for (i, &byte) in b.iter().enumerate().take(10) {
        x |= u64::from(byte & 0x7f) << (7 * i);
        if byte < 0x80 {
            return Some((x as usize, i + 1));
        }
    }
    None
}

/// The purl spec's percent-encoding of a name or version (what is not unreserved is encoded).
fn purl_escape(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `ID=` of the image's os-release (`debian`, `ubuntu`, ...), for deb purls.
fn distro(root: &Path) -> String {
    let text = std::fs::read_to_string(root.join("etc/os-release"))
        .or_else(|_| std::fs::read_to_string(root.join("usr/lib/os-release")))
        .unwrap_or_default();
    text.lines().find_map(|l| l.strip_prefix("ID=")).map(|v| v.trim_matches('"').to_string()).unwrap_or("debian".into())
}

/// Every package under `root` (an image's filesystem), sorted.
pub fn scan(root: &Path) -> Vec<Package> {
    let mut out = Vec::new();
    let rel = |p: &Path| format!("/{}", p.strip_prefix(root).unwrap_or(p).display());
    let distro = distro(root);
    if let Ok(t) = std::fs::read_to_string(root.join("var/lib/dpkg/status")) {
        out.extend(parse_dpkg_status(&t, &distro, "/var/lib/dpkg/status"));
    }
    if let Ok(dir) = std::fs::read_dir(root.join("var/lib/dpkg/status.d")) {
        let mut files: Vec<PathBuf> = dir.flatten().map(|e| e.path()).collect();
        files.sort();
        for f in files {
            if let Ok(t) = std::fs::read_to_string(&f) {
                out.extend(parse_dpkg_status(&t, &distro, &rel(&f)));
            }
        }
    }
    if let Ok(t) = std::fs::read_to_string(root.join("lib/apk/db/installed")) {
        out.extend(parse_apk_installed(&t, "/lib/apk/db/installed"));
    }
    walk(root, root, &mut out);
    out.sort();
    out.dedup();
    out
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<Package>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut entries: Vec<_> = entries.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    let rel = |p: &Path| format!("/{}", p.strip_prefix(root).unwrap_or(p).display());
    for e in entries {
        let path = e.path();
        let Ok(ft) = e.file_type() else { continue };
        let name = e.file_name().to_string_lossy().into_owned();
        if ft.is_dir() {
            if dir == root && matches!(name.as_str(), "proc" | "sys" | "dev") {
                continue;
            }
            if name.ends_with(".dist-info") || name.ends_with(".egg-info") {
                let meta = if name.ends_with(".dist-info") { "METADATA" } else { "PKG-INFO" };
                if let Ok(t) = std::fs::read_to_string(path.join(meta)) {
                    out.extend(parse_python_metadata(&t, &rel(&path.join(meta))));
                }
                continue;
            }
            walk(root, &path, out);
        } else if ft.is_file() {
            let in_node_modules = dir.parent().is_some_and(|p| p.ends_with("node_modules"))
                || dir.parent().and_then(Path::parent).is_some_and(|p| p.ends_with("node_modules"))
                    && dir.parent().and_then(Path::file_name).is_some_and(|n| n.to_string_lossy().starts_with('@'));
            if name == "package.json" && in_node_modules {
                if let Ok(t) = std::fs::read_to_string(&path) {
                    out.extend(parse_package_json(&t, &rel(&path)));
                }
            } else if is_executable(&e) {
                go_binary(&path, &rel(&path), out);
            }
        }
    }
}

fn is_executable(e: &std::fs::DirEntry) -> bool {
    use std::os::unix::fs::PermissionsExt;
    e.metadata().is_ok_and(|m| m.permissions().mode() & 0o111 != 0 && m.len() < 512 << 20)
}

fn go_binary(path: &Path, location: &str, out: &mut Vec<Package>) {
    use std::io::Read;
    let Ok(mut f) = std::fs::File::open(path) else { return };
    let mut head = [0u8; 4];
    if f.read_exact(&mut head).is_err() || head != *b"\x7fELF" {
        return;
    }
    let mut data = head.to_vec();
    if f.read_to_end(&mut data).is_ok() {
        out.extend(parse_go_buildinfo(&data, location));
    }
}

/// The SPDX 2.3 document: the image as the described package, containing every package found.
pub fn spdx(packages: &[Package], image_name: &str, created: &str, tool: &str) -> Value {
    let mut ids = BTreeSet::new();
    let mut entries = vec![json!({
        "SPDXID": "SPDXRef-Image",
        "name": image_name,
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": false,
        "primaryPackagePurpose": "CONTAINER",
    })];
    let mut relationships = vec![json!({
        "spdxElementId": "SPDXRef-DOCUMENT",
        "relationshipType": "DESCRIBES",
        "relatedSpdxElement": "SPDXRef-Image",
    })];
    for p in packages {
        let base: String = format!("{}-{}-{}", p.kind, p.name, p.version)
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '-' })
            .collect();
        let mut id = format!("SPDXRef-Package-{base}");
        let mut n = 2;
        while !ids.insert(id.clone()) {
            id = format!("SPDXRef-Package-{base}-{n}");
            n += 1;
        }
        entries.push(json!({
            "SPDXID": id,
            "name": p.name,
            "versionInfo": p.version,
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": false,
            "sourceInfo": format!("acquired package info from {}", p.location),
            "externalRefs": [{
                "referenceCategory": "PACKAGE-MANAGER",
                "referenceType": "purl",
                "referenceLocator": p.purl,
            }],
        }));
        relationships.push(json!({
            "spdxElementId": "SPDXRef-Image",
            "relationshipType": "CONTAINS",
            "relatedSpdxElement": id,
        }));
    }
    let body = json!({"packages": entries, "relationships": relationships});
    let namespace = llb::Digest::of(body.to_string().as_bytes()).to_string().replace("sha256:", "");
    json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": image_name,
        "documentNamespace": format!("https://rbuild.invalid/spdx/{namespace}"),
        "creationInfo": {"created": created, "creators": [format!("Tool: {tool}")]},
        "packages": body["packages"],
        "relationships": body["relationships"],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dpkg_status() {
        let t = "Package: libc6\nStatus: install ok installed\nArchitecture: amd64\nVersion: 2.36-9+deb12u4\n\nPackage: gone\nStatus: purge ok not-installed\nVersion: 1\n\nPackage: tzdata\nStatus: install ok installed\nArchitecture: all\nVersion: 2024a-0+deb12u1\nDescription: x\n continued\n";
        let p = parse_dpkg_status(t, "debian", "/var/lib/dpkg/status");
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].purl, "pkg:deb/debian/libc6@2.36-9%2Bdeb12u4?arch=amd64");
        assert_eq!((p[1].name.as_str(), p[1].version.as_str()), ("tzdata", "2024a-0+deb12u1"));
    }

    #[test]
    fn apk_python_npm() {
        let a = parse_apk_installed(
            "C:Q1x\nP:musl\nV:1.2.5-r0\nA:x86_64\n\nP:busybox\nV:1.36.1-r29\n",
            "/lib/apk/db/installed",
        );
        assert_eq!(a.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["musl", "busybox"]);
        let py =
            parse_python_metadata("Metadata-Version: 2.1\nName: Flask_Login\nVersion: 0.6.3\n\nbody", "/x").unwrap();
        assert_eq!(py.purl, "pkg:pypi/flask-login@0.6.3");
        let n = parse_package_json(r#"{"name":"@types/node","version":"20.1.0"}"#, "/x").unwrap();
        assert_eq!(n.purl, "pkg:npm/%40types/node@20.1.0");
    }

    #[test]
    fn go_build_info_inline() {
        let mut bin = b"\x7fELF".to_vec();
        bin.resize(64, 0);
        let mut hdr = GO_MAGIC.to_vec();
        hdr.extend([8u8, 2]);
        hdr.resize(32, 0);
        bin.extend(hdr);
        let version = b"go1.22.1";
        let modinfo = format!(
            "{}path\texample.com/app\nmod\texample.com/app\tv1.2.3\th1:x=\ndep\tgolang.org/x/sys\tv0.18.0\th1:y=\n{}",
            "0123456789abcdef", "0123456789abcdef"
        );
        bin.push(version.len() as u8);
        bin.extend(version);
        bin.push(modinfo.len() as u8);
        bin.extend(modinfo.as_bytes());
        let p = parse_go_buildinfo(&bin, "/app");
        assert_eq!(
            p.iter().map(|p| p.purl.as_str()).collect::<Vec<_>>(),
            ["pkg:golang/example.com/app@v1.2.3", "pkg:golang/golang.org/x/sys@v0.18.0"]
        );
    }
}
