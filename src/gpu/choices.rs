//! Kernel choices as JSON (portable: the native tuning cache writes it to a file, the browser
//! keeps it in the page's storage). The text names the kernel set and the adapter it was measured
//! on; text of another kernel set or adapter, or that does not parse, is refused with the reason.

use super::KernelFamily;

/// The version of the kernel set: bump it whenever a kernel family is added, removed or changed,
/// so that choices measured on the old kernels are measured again.
pub const KERNEL_SET_VERSION: u32 = 3;

const FORMAT: &str = "resnet-wgpu kernel choices";

/// The kernel family chosen for one op at one shape, with what each family measured (in ms;
/// families not measured now, e.g. loaded from elsewhere, are absent).
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

/// `choices` as text: a header naming the kernel set and the adapter, then one choice a line (a
/// person can read, or delete, what was measured).
pub fn to_json(id: &AdapterId, choices: &[Choice]) -> String {
    let head = serde_json::json!({
        "format": FORMAT,
        "kernel_set": KERNEL_SET_VERSION,
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

/// The choices in `text` if it was written by [`to_json`] for the kernel set of this build and the
/// adapter `id`; else why not.
pub fn from_json(text: &str, id: &AdapterId) -> Result<Vec<Choice>, String> {
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
        ("adapter", &id.adapter),
        ("driver", &id.driver),
        ("backend", &id.backend),
    ] {
        if v[key].as_str() != Some(want.as_str()) {
            return Err(format!("measured on another {key} ({})", v[key]));
        }
    }
    let list = v["choices"].as_array().ok_or("no list of choices")?;
    list.iter().map(parse_choice).collect()
}

fn choice_json(c: &Choice) -> serde_json::Value {
    let ms: serde_json::Map<String, serde_json::Value> =
        c.ms.iter()
            .map(|(f, ms)| {
                let ms = (ms * 1e3).round() / 1e3; // microseconds are plenty
                (f.name().to_string(), serde_json::json!(ms))
            })
            .collect();
    serde_json::json!({
        "op": c.op,
        "shape": c.shape,
        "family": c.family.name(),
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
    let family = v["family"]
        .as_str()
        .and_then(KernelFamily::from_name)
        .ok_or_else(bad)?;
    let ms = match v["ms"].as_object() {
        Some(m) => m
            .iter()
            .filter_map(|(k, t)| Some((KernelFamily::from_name(k)?, t.as_f64()?)))
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
