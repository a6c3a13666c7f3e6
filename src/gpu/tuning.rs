//! Kernel choices measured on an adapter, remembered on disk (native only): one JSON file per
//! adapter, driver and backend, so that a second run on the same machine starts without tuning.
//! A file of another kernel set, of another adapter, or that does not parse is ignored with a
//! warning and tuned again, never trusted.

use super::choices::{self, AdapterId, Choice, KernelSet};
use std::path::{Path, PathBuf};

/// The file that remembers the choices of one adapter.
#[derive(Debug, Clone)]
pub struct TuningCache {
    /// The JSON file.
    pub path: PathBuf,
    id: AdapterId,
    /// The names a choice may hold and the version it must carry.
    set: KernelSet,
}

impl TuningCache {
    /// The cache file of the adapter `info` under `dir`, for this build's kernel set.
    pub fn new(dir: &Path, info: &wgpu::AdapterInfo) -> TuningCache {
        let id = AdapterId::of(info);
        // a readable stem, and a hash of everything that identifies the adapter
        let stem: String = id
            .adapter
            .chars()
            .map(|c| match c.is_ascii_alphanumeric() {
                true => c.to_ascii_lowercase(),
                false => '-',
            })
            .take(40)
            .collect();
        let hash =
            crate::rng::fnv1a(format!("{}\n{}\n{}", id.adapter, id.driver, id.backend).as_bytes());
        TuningCache {
            path: dir.join(format!("{stem}-{hash:016x}.json")),
            id,
            set: KernelSet::default(),
        }
    }

    /// The remembered choices; an absent file is none, and a file that cannot be trusted is none
    /// plus the warning to show.
    pub fn load(&self) -> (Vec<Choice>, Option<String>) {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (Vec::new(), None),
            Err(e) => {
                return (
                    Vec::new(),
                    Some(self.ignored(&format!("cannot read it: {e}"))),
                )
            }
        };
        match choices::from_json(&text, &self.id, &self.set) {
            Ok(choices) => (choices, None),
            Err(why) => (Vec::new(), Some(self.ignored(&why))),
        }
    }

    fn ignored(&self, why: &str) -> String {
        format!(
            "kernel choices {}: {why}; ignored, the kernels will be timed again",
            self.path.display()
        )
    }

    /// Replaces the file with `choices` (atomically: temporary file, fsync, rename).
    pub fn save(&self, choices: &[Choice]) -> Result<(), String> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        let text = choices::to_json(&self.id, self.set.version, choices);
        crate::files::write_atomic(&self.path, text.as_bytes())
    }
}
