//! `--output` values, parsed as buildx does: `type=oci,dest=out.tar`, `type=docker`, `type=local,dest=dir`,
//! `type=tar,dest=x.tar`, `type=image,name=reg/app,push=true`, `type=registry,name=...`; a bare path means
//! `type=local,dest=PATH` and `-` means a tar on standard output.

use std::collections::BTreeMap;
use std::path::PathBuf;

use snapshotter::diff::Compression;

/// A malformed `--output` value; the message says what to write instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct OutputError(pub String);

type Result<T> = std::result::Result<T, OutputError>;

macro_rules! bail {
    ($($t:tt)*) => { return Err(OutputError(format!($($t)*))) };
}

/// Where an exporter writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dest {
    Stdout,
    Path(PathBuf),
    /// A stream the caller reads (a daemon forwards it to a remote client).
    Writer(SharedWriter),
}

/// A writer shared with the caller; exporters write to it from a blocking thread.
#[derive(Clone)]
pub struct SharedWriter(pub std::sync::Arc<std::sync::Mutex<Box<dyn std::io::Write + Send>>>);

impl SharedWriter {
    pub fn new(w: impl std::io::Write + Send + 'static) -> SharedWriter {
        SharedWriter(std::sync::Arc::new(std::sync::Mutex::new(Box::new(w))))
    }
}

impl std::fmt::Debug for SharedWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedWriter")
    }
}

impl PartialEq for SharedWriter {
    fn eq(&self, other: &SharedWriter) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for SharedWriter {}

/// What an output produces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputKind {
    /// The image in the local image store under `names`, pushed when `push`.
    Image { names: Vec<String>, push: bool },
    /// An OCI layout, as a tar (default) or a directory (`tar=false`).
    Oci { dest: Dest, tar: bool, names: Vec<String> },
    /// A docker-archive tar; without `dest`, loaded into docker.
    Docker { dest: Option<Dest>, names: Vec<String> },
    /// The root filesystem as a directory.
    Local { dest: PathBuf },
    /// The root filesystem as a tar.
    Tar { dest: Dest },
}

/// One `--output`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputSpec {
    pub kind: OutputKind,
    pub compression: Option<Compression>,
    /// OCI media types (`oci-mediatypes=`); the default depends on the kind.
    pub oci_mediatypes: Option<bool>,
}

impl OutputSpec {
    /// Whether this output needs the image assembled (config, layers, manifest).
    pub fn needs_image(&self) -> bool {
        matches!(self.kind, OutputKind::Image { .. } | OutputKind::Oci { .. } | OutputKind::Docker { .. })
    }

    /// OCI media types for this output.
    pub fn oci(&self) -> bool {
        self.oci_mediatypes.unwrap_or(!matches!(self.kind, OutputKind::Docker { .. }))
    }
}

fn split_csv(s: &str) -> Result<Vec<String>> {
    // buildx reads the value as one CSV record: commas separate fields unless quoted.
    let mut fields = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            ',' if !quoted => fields.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    if quoted {
        bail!("invalid --output {s:?}: unterminated quote");
    }
    fields.push(cur);
    Ok(fields)
}

fn parse_bool(key: &str, v: &str) -> Result<bool> {
    match v {
        "true" | "1" | "" => Ok(true),
        "false" | "0" => Ok(false),
        _ => bail!("invalid --output value {key}={v}: expected true or false"),
    }
}

fn dest_of(v: &str) -> Dest {
    if v == "-" {
        Dest::Stdout
    } else {
        Dest::Path(PathBuf::from(v))
    }
}

/// Parses one `--output` value.
pub fn parse_output(s: &str) -> Result<OutputSpec> {
    if s.is_empty() {
        bail!("empty --output; use e.g. type=local,dest=DIR or type=oci,dest=image.tar");
    }
    if !s.contains('=') {
        let kind = if s == "-" { OutputKind::Tar { dest: Dest::Stdout } } else { OutputKind::Local { dest: s.into() } };
        return Ok(OutputSpec { kind, compression: None, oci_mediatypes: None });
    }
    let mut kv = BTreeMap::new();
    for f in split_csv(s)? {
        let (k, v) = f.split_once('=').unwrap_or((f.as_str(), ""));
        kv.insert(k.trim().to_ascii_lowercase(), v.to_string());
    }
    let ty = kv.remove("type").unwrap_or_else(|| "local".into());
    let dest = kv.remove("dest");
    let names: Vec<String> = kv
        .remove("name")
        .map(|n| n.split(',').map(str::trim).filter(|n| !n.is_empty()).map(String::from).collect())
        .unwrap_or_default();
    let push = kv.remove("push").map(|v| parse_bool("push", &v)).transpose()?.unwrap_or(false);
    let tar = kv.remove("tar").map(|v| parse_bool("tar", &v)).transpose()?.unwrap_or(true);
    let compression = match kv.remove("compression").as_deref() {
        None => None,
        Some("gzip") => Some(Compression::Gzip),
        Some("zstd") => Some(Compression::Zstd),
        Some("uncompressed") => Some(Compression::None),
        Some(other) => bail!("unknown compression {other:?} in --output: use gzip, zstd or uncompressed"),
    };
    let oci_mediatypes = kv.remove("oci-mediatypes").map(|v| parse_bool("oci-mediatypes", &v)).transpose()?;
    // Accepted and without effect here: BuildKit tuning knobs that do not change the result's content.
    for k in ["compression-level", "force-compression", "store", "unpack", "annotation", "platform-split"] {
        kv.remove(k);
    }
    kv.retain(|k, _| !k.starts_with("annotation"));
    if let Some(k) = kv.keys().next() {
        bail!("unknown --output key {k:?} for type={ty}");
    }
    let need_dest = |what: &str| -> Result<Dest> {
        match &dest {
            Some(d) => Ok(dest_of(d)),
            None => bail!("--output type={what} needs dest=PATH (or dest=- for standard output)"),
        }
    };
    let kind = match ty.as_str() {
        "image" => OutputKind::Image { names, push },
        "registry" => OutputKind::Image { names, push: true },
        "oci" => OutputKind::Oci { dest: need_dest("oci")?, tar, names },
        "docker" => OutputKind::Docker { dest: dest.as_deref().map(dest_of), names },
        "local" => match need_dest("local")? {
            Dest::Path(p) => OutputKind::Local { dest: p },
            d => OutputKind::Tar { dest: d },
        },
        "tar" => OutputKind::Tar { dest: need_dest("tar")? },
        other => bail!("unknown output type {other:?}: use image, registry, oci, docker, local or tar"),
    };
    Ok(OutputSpec { kind, compression, oci_mediatypes })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buildx_shapes() {
        assert_eq!(parse_output("out").unwrap().kind, OutputKind::Local { dest: "out".into() });
        assert_eq!(parse_output("-").unwrap().kind, OutputKind::Tar { dest: Dest::Stdout });
        let o = parse_output("type=oci,dest=x.tar,compression=zstd").unwrap();
        assert_eq!(o.kind, OutputKind::Oci { dest: Dest::Path("x.tar".into()), tar: true, names: vec![] });
        assert_eq!(o.compression, Some(Compression::Zstd));
        assert!(o.oci());
        let d = parse_output("type=docker,dest=-").unwrap();
        assert!(!d.oci());
        assert_eq!(d.kind, OutputKind::Docker { dest: Some(Dest::Stdout), names: vec![] });
        let i = parse_output("type=image,\"name=a:1,b:2\",push=true").unwrap();
        assert_eq!(i.kind, OutputKind::Image { names: vec!["a:1".into(), "b:2".into()], push: true });
        assert_eq!(
            parse_output("type=registry,name=r/app").unwrap().kind,
            OutputKind::Image { names: vec!["r/app".into()], push: true }
        );
    }

    #[test]
    fn mistakes_are_explained() {
        assert!(parse_output("type=oci").unwrap_err().to_string().contains("needs dest"));
        assert!(parse_output("type=foo,dest=x").unwrap_err().to_string().contains("unknown output type"));
        assert!(parse_output("type=tar,dest=x,colour=blue").unwrap_err().to_string().contains("colour"));
        assert!(parse_output("type=oci,dest=x,compression=lz4").unwrap_err().to_string().contains("lz4"));
    }
}
