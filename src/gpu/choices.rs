//! Kernel choices as JSON (portable: the native tuning cache writes it to a file, the browser
//! keeps it in the page's storage). The text names the kernel set and the adapter it was measured
//! on; text of another kernel set or adapter, or that does not parse, is refused with the reason.
//! Variants are names here: which names exist, and the kernel set's version, is the ops' business
//! ([`KernelSet`]).

const FORMAT: &str = "resnet-wgpu kernel choices";

/// What the ops of this build offer to choose from: which names a choice may hold, and the
/// version of their kernels. `KernelSet::default()` is this build's set, implemented beside the
/// table of the variants (ops/conv2d/family.rs), so that nothing in this layer names them.
#[derive(Debug, Clone, Copy)]
pub struct KernelSet {
    /// Bumped whenever a variant is added, removed or changed: choices remembered with another
    /// version are measured again.
    pub version: u32,
    /// The name a choice records for a spelling of a variant's name; `None`: no such variant.
    pub canonical: fn(&str) -> Option<&'static str>,
}

/// The kernel variant (for a convolution, its family) chosen for one op at one shape, with what
/// each variant measured (in ms; variants not measured now, e.g. loaded from elsewhere, are
/// absent). Variants are named as their op names them (e.g. `gemm64x64`).
#[derive(Debug, Clone, PartialEq)]
pub struct Choice {
    /// The op, e.g. `conv2d forward`.
    pub op: String,
    /// The op's shape key (for a convolution [N, C, H, W, K, R, S, stride, pad]).
    pub shape: Vec<usize>,
    /// The variant its kernels are built from.
    pub family: &'static str,
    /// Median milliseconds per variant where measured.
    pub ms: Vec<(&'static str, f64)>,
}

/// What the choices were measured on: adapter name, driver, backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdapterId {
    /// e.g. `llvmpipe (LLVM 15.0.6, 256 bits)`.
    pub adapter: String,
    /// Driver name and version.
    pub driver: String,
    /// e.g. `Vulkan`.
    pub backend: String,
}

impl AdapterId {
    /// The identity of the adapter `info` describes.
    pub fn of(info: &wgpu::AdapterInfo) -> AdapterId {
        AdapterId {
            adapter: info.name.clone(),
            driver: format!("{} {}", info.driver, info.driver_info)
                .trim()
                .to_string(),
            backend: format!("{:?}", info.backend),
        }
    }
}

/// `choices` as text: a header naming the kernel set's `version` and the adapter, then one choice
/// a line (a person can read, or delete, what was measured).
pub fn to_json(id: &AdapterId, version: u32, choices: &[Choice]) -> String {
    let head = serde_json::json!({
        "format": FORMAT,
        "kernel_set": version,
        "adapter": id.adapter,
        "driver": id.driver,
        "backend": id.backend,
    });
    let head = serde_json::to_string_pretty(&head).expect("a JSON object");
    let lines: Vec<String> = choices
        .iter()
        .map(|c| format!("    {}", choice_json(c)))
        .collect();
    format!(
        "{},\n  \"choices\": [\n{}\n  ]\n}}\n",
        head.trim_end_matches('}').trim_end(),
        lines.join(",\n")
    )
}

/// The choices in `text` if it was written by [`to_json`] for the kernel set `set` and the adapter
/// `id`; else why not.
pub fn from_json(text: &str, id: &AdapterId, set: &KernelSet) -> Result<Vec<Choice>, String> {
    let v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("not valid JSON ({e})"))?;
    if v["format"] != FORMAT {
        return Err(format!("not a file of {FORMAT}"));
    }
    let version = v["kernel_set"].as_u64().unwrap_or(0);
    if version != set.version as u64 {
        return Err(format!(
            "measured on kernel set {version}, this is kernel set {}",
            set.version
        ));
    }
    for (key, want) in [
        ("adapter", &id.adapter),
        ("driver", &id.driver),
        ("backend", &id.backend),
    ] {
        if v[key].as_str() != Some(want.as_str()) {
            return Err(format!("measured on another {key} ({})", v[key]));
        }
    }
    let list = v["choices"].as_array().ok_or("no list of choices")?;
    list.iter().map(|c| parse_choice(c, set)).collect()
}

/// One choice as a JSON object.
fn choice_json(c: &Choice) -> serde_json::Value {
    let ms: serde_json::Map<String, serde_json::Value> =
        c.ms.iter()
            .map(|(f, ms)| {
                let ms = (ms * 1e3).round() / 1e3; // microseconds are plenty
                (f.to_string(), serde_json::json!(ms))
            })
            .collect();
    serde_json::json!({
        "op": c.op,
        "shape": c.shape,
        "family": c.family,
        "ms": ms,
    })
}

/// The choice of a JSON object of [`choice_json`]: a variant the set does not know does not
/// parse; times of such variants are left out.
fn parse_choice(v: &serde_json::Value, set: &KernelSet) -> Result<Choice, String> {
    let bad = || format!("a choice that does not parse: {v}");
    let op = v["op"].as_str().ok_or_else(bad)?.to_string();
    let shape = v["shape"]
        .as_array()
        .ok_or_else(bad)?
        .iter()
        .map(|d| d.as_u64().map(|d| d as usize))
        .collect::<Option<Vec<usize>>>()
        .ok_or_else(bad)?;
    let family = v["family"]
        .as_str()
        .and_then(set.canonical)
        .ok_or_else(bad)?;
    let ms = match v["ms"].as_object() {
        Some(m) => m
            .iter()
            .filter_map(|(k, t)| Some(((set.canonical)(k)?, t.as_f64()?)))
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
