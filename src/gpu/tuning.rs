//! Kernel choices measured on an adapter, remembered on disk (native only): one JSON file per
//! adapter, driver and backend, so that a second run on the same machine starts without tuning.
//! A file of another kernel set, of another adapter, or that does not parse is ignored with a
//! warning and tuned again, never trusted.

use super::KernelFamily;
use std::path::{Path, PathBuf};

/// The version of the kernel set: bump it whenever a kernel family is added, removed or changed,
/// so that choices measured on the old kernels are measured again.
pub const KERNEL_SET_VERSION: u32 = 2;

const FORMAT: &str = "resnet-wgpu kernel choices";

/// The kernel family chosen for one op at one shape, with what each family measured (in ms;
/// families not measured, e.g. abandoned early as too slow, are absent).
#[derive(Debug, Clone, PartialEq)]
pub struct Choice {
    /// The op, e.g. `conv2d forward`.
    pub op: String,
    /// The op's shape key (for a convolution [N, C, H, W, K, R, S, stride, pad]).
    pub shape: Vec<usize>,
    /// The family its kernels are built from.
    pub family: KernelFamily,
    /// Median milliseconds per family where measured.
    pub ms: Vec<(KernelFamily, f64)>,
}

/// The file that remembers the choices of one adapter.
#[derive(Debug, Clone)]
pub struct TuningCache {
    /// The JSON file.
    pub path: PathBuf,
    adapter: String,
    driver: String,
    backend: String,
}

fn family_name(f: KernelFamily) -> &'static str {
    f.name()
}

fn family_of(name: &str) -> Option<KernelFamily> {
    KernelFamily::from_name(name)
}

impl TuningCache {
    /// The cache file of the adapter `info` under `dir`.
    pub fn new(dir: &Path, info: &wgpu::AdapterInfo) -> TuningCache {
        let adapter = info.name.clone();
        let driver = format!("{} {}", info.driver, info.driver_info)
            .trim()
            .to_string();
        let backend = format!("{:?}", info.backend);
        // a readable stem, and a hash of everything that identifies the adapter
        let stem: String = adapter
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .take(40)
            .collect();
        let id = fnv1a(&format!("{adapter}\n{driver}\n{backend}"));
        TuningCache {
            path: dir.join(format!("{stem}-{id:016x}.json")),
            adapter,
            driver,
            backend,
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
        match self.parse(&text) {
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

    fn parse(&self, text: &str) -> Result<Vec<Choice>, String> {
        let v: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("not valid JSON ({e})"))?;
        if v["format"] != FORMAT {
            return Err(format!("not a file of {FORMAT}"));
        }
        let version = v["kernel_set"].as_u64().unwrap_or(0);
        if version != KERNEL_SET_VERSION as u64 {
            return Err(format!(
                "measured on kernel set {version}, this is kernel set {KERNEL_SET_VERSION}"
            ));
        }
        for (key, want) in [
            ("adapter", &self.adapter),
            ("driver", &self.driver),
            ("backend", &self.backend),
        ] {
            if v[key].as_str() != Some(want.as_str()) {
                return Err(format!("measured on another {key} ({})", v[key]));
            }
        }
        let list = v["choices"].as_array().ok_or("no list of choices")?;
        list.iter().map(parse_choice).collect()
    }

    /// Replaces the file with `choices` (atomically: temporary file, fsync, rename).
    pub fn save(&self, choices: &[Choice]) -> Result<(), String> {
        let head = serde_json::json!({
            "format": FORMAT,
            "kernel_set": KERNEL_SET_VERSION,
            "adapter": self.adapter,
            "driver": self.driver,
            "backend": self.backend,
        });
        // one choice a line: a person can read (or delete) what was measured
        let head = serde_json::to_string_pretty(&head).map_err(|e| e.to_string())?;
        let lines: Vec<String> = choices
            .iter()
            .map(|c| format!("    {}", choice_json(c)))
            .collect();
        let text = format!(
            "{},\n  \"choices\": [\n{}\n  ]\n}}\n",
            head.trim_end_matches('}').trim_end(),
            lines.join(",\n")
        );
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        crate::files::write_atomic(&self.path, text.as_bytes())
    }
}

fn choice_json(c: &Choice) -> serde_json::Value {
    let ms: serde_json::Map<String, serde_json::Value> =
        c.ms.iter()
            .map(|(f, ms)| {
                let ms = (ms * 1e3).round() / 1e3; // microseconds are plenty
                (family_name(*f).to_string(), serde_json::json!(ms))
            })
            .collect();
    serde_json::json!({
        "op": c.op,
        "shape": c.shape,
        "family": family_name(c.family),
        "ms": ms,
    })
}

fn parse_choice(v: &serde_json::Value) -> Result<Choice, String> {
    let bad = || format!("a choice that does not parse: {v}");
    let op = v["op"].as_str().ok_or_else(bad)?.to_string();
    let shape = v["shape"]
        .as_array()
        .ok_or_else(bad)?
        .iter()
        .map(|d| d.as_u64().map(|d| d as usize))
        .collect::<Option<Vec<usize>>>()
        .ok_or_else(bad)?;
    let family = v["family"].as_str().and_then(family_of).ok_or_else(bad)?;
    let ms = match v["ms"].as_object() {
        Some(m) => m
            .iter()
            .filter_map(|(k, t)| Some((family_of(k)?, t.as_f64()?)))
            .collect(),
        None => Vec::new(),
    };
    Ok(Choice {
        op,
        shape,
        family,
        ms,
    })
}

/// FNV-1a, 64 bits: a stable hash for file names (std's hasher may change between releases).
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}
