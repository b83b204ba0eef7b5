//! What a build produced: a [`BuildResult`].

use oci_spec::image::Descriptor;
use solver::StepRecord;

/// The image a build exported (the first one, when outputs differ in compression or media types).
#[derive(Debug, Clone, PartialEq)]
pub struct ExportedImage {
    pub manifest: Descriptor,
    pub config: Descriptor,
}

/// A finished build.
#[derive(Debug, Clone)]
pub struct BuildResult {
    /// The image, when an output made one (a multi-platform build's: the first platform's).
    pub image: Option<ExportedImage>,
    /// The image index of a multi-platform build, when an output made one.
    pub index: Option<Descriptor>,
    /// buildx's metadata keys (`containerimage.digest`, `containerimage.config.digest`,
    /// `containerimage.descriptor`, `image.name`), as `--metadata-file` writes them.
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// Every step: name, cache key, cached or run, start and end, what went into its key.
    pub steps: Vec<StepRecord>,
    /// The committed snapshot of the result's filesystem (`None`: empty).
    pub root: Option<String>,
}

impl BuildResult {
    /// The image ID (`sha256:` of the config), as `docker build` prints and `--iidfile` writes; for a
    /// multi-platform build the index's digest, as buildx writes it.
    pub fn image_id(&self) -> Option<String> {
        if let Some(index) = &self.index {
            return Some(index.digest().to_string());
        }
        self.image.as_ref().map(|i| i.config.digest().to_string())
    }
}
