//! Checkpoints as safetensors files whose tensor names are PyTorch `state_dict` keys.
//!
//! The format (<https://github.com/huggingface/safetensors>): an 8-byte little-endian header
//! length, a JSON header mapping each tensor name to `{"dtype", "shape", "data_offsets"}` (plus an
//! optional `"__metadata__"` string map), then the raw little-endian data. [`Checkpoint::to_bytes`]
//! and [`Checkpoint::from_bytes`] touch no file, so they work on wasm32 too; [`save`] and [`load`]
//! are the native file functions. [`load`] reads PyTorch's own files (`torch.save`) too.
//!
//! Tensor order: a safetensors file stores tensors sorted by dtype and then name (the `safetensors`
//! crate and Python's package both do), so after a round trip [`Checkpoint::tensors`] is in file
//! order, not in the original order. Look tensors up by name with [`Checkpoint::get`].

#[cfg(not(target_arch = "wasm32"))]
pub mod torch;

use std::collections::BTreeMap;
use std::collections::BTreeSet;

use safetensors::tensor::{Dtype, SafeTensorError, SafeTensors};

use crate::preprocess::{Interpolation, Normalize};
use crate::{Error, Result};

/// ImageNet-1k's categories in label order, one a line, as torchvision names them.
const IMAGENET_CLASSES: &str = include_str!("imagenet_classes.txt");

/// The largest JSON header accepted, as in the `safetensors` crate (100 MB).
const MAX_HEADER: u64 = 100_000_000;

/// One tensor of a state_dict: f32 (weights, BN stats) or i64 (BN num_batches_tracked, as PyTorch stores it).
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    /// 32-bit floats (files holding F16, BF16 or F64 are converted to this on load).
    F32(Vec<f32>),
    /// 64-bit signed integers (files holding I32 are widened to this on load).
    I64(Vec<i64>),
}

impl TensorData {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            TensorData::F32(v) => v.len(),
            TensorData::I64(v) => v.len(),
        }
    }

    /// True when there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The safetensors dtype name this data is written as ("F32" or "I64").
    pub fn dtype_name(&self) -> &'static str {
        match self {
            TensorData::F32(_) => "F32",
            TensorData::I64(_) => "I64",
        }
    }
}

/// A named tensor: a state_dict key (e.g. `layer1.0.bn1.running_mean`), its shape and its values.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedTensor {
    /// The PyTorch state_dict key.
    pub name: String,
    /// Shape, outermost dimension first (PyTorch order: conv weights are `[out, in, kh, kw]`).
    pub shape: Vec<usize>,
    /// The values, row-major.
    pub data: TensorData,
}

impl NamedTensor {
    /// An f32 tensor.
    pub fn f32(name: impl Into<String>, shape: &[usize], data: Vec<f32>) -> Self {
        Self {
            name: name.into(),
            shape: shape.to_vec(),
            data: TensorData::F32(data),
        }
    }

    /// An i64 tensor (a 0-dimensional `num_batches_tracked` has `shape` `&[]`).
    pub fn i64(name: impl Into<String>, shape: &[usize], data: Vec<i64>) -> Self {
        Self {
            name: name.into(),
            shape: shape.to_vec(),
            data: TensorData::I64(data),
        }
    }

    /// The values if this is an f32 tensor.
    pub fn as_f32(&self) -> Option<&[f32]> {
        match &self.data {
            TensorData::F32(v) => Some(v),
            TensorData::I64(_) => None,
        }
    }

    /// The values if this is an i64 tensor.
    pub fn as_i64(&self) -> Option<&[i64]> {
        match &self.data {
            TensorData::I64(v) => Some(v),
            TensorData::F32(_) => None,
        }
    }
}

/// A whole checkpoint: tensors plus free-form string metadata (stored as `__metadata__`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Checkpoint {
    /// The tensors, in file order after [`Checkpoint::from_bytes`].
    pub tensors: Vec<NamedTensor>,
    /// String key/value pairs (model name, epoch, ...), written as the safetensors `__metadata__`.
    pub metadata: BTreeMap<String, String>,
}

/// The metadata every checkpoint we write carries: `model`, `classes`, `mean`, `std` (the
/// input normalisation it was trained with) and `format` (PyTorch users read it with
/// safetensors).
pub fn metadata(
    model: &str,
    classes: &[String],
    normalize: &Normalize,
) -> BTreeMap<String, String> {
    let join = |v: &[f32]| {
        v.iter()
            .map(|x| x.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    BTreeMap::from([
        ("model".into(), model.to_string()),
        ("classes".into(), classes.join(",")),
        ("mean".into(), join(&normalize.mean)),
        ("std".into(), join(&normalize.std)),
        ("format".into(), "pytorch-state-dict".into()),
    ])
}

/// Little-endian bytes of one tensor, for the safetensors serializer.
struct LeView {
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl safetensors::View for LeView {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

fn invalid<T>(msg: impl Into<String>) -> Result<T> {
    Err(Error::Invalid(msg.into()))
}

fn shape_str(shape: &[usize]) -> String {
    format!("{shape:?}")
}

/// Rewrites the JSON header with its keys sorted (the metadata map is a hash map inside the
/// safetensors crate, so its order changes from run to run): equal checkpoints are equal bytes.
fn canonical_header(bytes: Vec<u8>) -> Result<Vec<u8>> {
    fn sorted(v: serde_json::Value) -> serde_json::Value {
        match v {
            serde_json::Value::Object(m) => {
                let b: BTreeMap<String, serde_json::Value> =
                    m.into_iter().map(|(k, v)| (k, sorted(v))).collect();
                let mut out = serde_json::Map::new();
                for (k, v) in b {
                    out.insert(k, v);
                }
                serde_json::Value::Object(out)
            }
            other => other,
        }
    }
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n])
        .or_else(|e| invalid(format!("checkpoint: cannot re-read own header: {e}")))?;
    // serde_json keeps insertion order with `preserve_order` and sorts without it: insert sorted
    let mut h = serde_json::to_vec(&sorted(header))
        .or_else(|e| invalid(format!("checkpoint: cannot write header: {e}")))?;
    while h.len() % 8 != 0 {
        h.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + h.len() + bytes.len() - 8 - n);
    out.extend_from_slice(&(h.len() as u64).to_le_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(&bytes[8 + n..]);
    Ok(out)
}

impl Checkpoint {
    /// An empty checkpoint.
    pub fn new() -> Self {
        Self::default()
    }

    /// The per-channel normalisation of the metadata's `mean` and `std`, or `default` when a key
    /// is absent, as in a file saved from PyTorch: the model's usual one
    /// ([`crate::model::ModelSpec::usual_normalisation`]: ImageNet's for torchvision's ResNets).
    pub fn normalisation(&self, default: Normalize) -> Result<Normalize> {
        let get = |key: &str, default: [f32; 3]| -> Result<[f32; 3]> {
            let Some(s) = self.metadata.get(key) else {
                return Ok(default);
            };
            let v: Vec<f32> = s
                .split(',')
                .map(|x| x.trim().parse::<f32>())
                .collect::<std::result::Result<_, _>>()
                .or_else(|_| invalid(format!("checkpoint metadata '{key}' is not numbers: {s}")))?;
            v.try_into().or_else(|_| {
                invalid(format!(
                    "checkpoint metadata '{key}' is not three numbers: {s}"
                ))
            })
        };
        Ok(Normalize {
            mean: get("mean", default.mean)?,
            std: get("std", default.std)?,
        })
    }

    /// How the run that wrote it resampled photos (its metadata's `interpolation`; `None` in a
    /// file without it, as one saved from PyTorch).
    pub fn interpolation(&self) -> Result<Option<Interpolation>> {
        let Some(v) = self.metadata.get("interpolation") else {
            return Ok(None);
        };
        v.parse()
            .map(Some)
            .or_else(|e| invalid(format!("checkpoint metadata 'interpolation': {e}")))
    }

    /// Removes `prefix` from every tensor name when every name has it (PyTorch's
    /// `consume_prefix_in_state_dict_if_present`); else changes nothing.
    pub fn consume_prefix(&mut self, prefix: &str) {
        if self.tensors.is_empty() || !self.tensors.iter().all(|t| t.name.starts_with(prefix)) {
            return;
        }
        for t in &mut self.tensors {
            t.name.drain(..prefix.len());
        }
    }

    /// The classifier's outputs: the length of `fc.bias`, if the checkpoint has one.
    pub fn num_classes(&self) -> Option<usize> {
        self.get("fc.bias").and_then(|t| t.shape.first().copied())
    }

    /// The names of the `num_classes` outputs: the metadata's `classes`, else CIFAR-10's for a
    /// 10-class model (the engine's default data set), ImageNet's for a 1000-class one (the
    /// categories of torchvision's weights, `weights.meta["categories"]`), else the indices `0`,
    /// `1`, ...
    pub fn class_names(&self, num_classes: usize) -> Vec<String> {
        match self.metadata.get("classes") {
            Some(c) => c.split(',').map(str::to_string).collect(),
            None if num_classes == crate::cifar10::CLASSES.len() => {
                crate::cifar10::CLASSES.map(String::from).to_vec()
            }
            None if num_classes == IMAGENET_CLASSES.lines().count() => {
                IMAGENET_CLASSES.lines().map(str::to_string).collect()
            }
            None => (0..num_classes).map(|i| i.to_string()).collect(),
        }
    }

    /// Serialises to safetensors bytes, with `metadata` as `__metadata__` (omitted when empty).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut seen = BTreeSet::new();
        let mut views = Vec::with_capacity(self.tensors.len());
        for t in &self.tensors {
            if t.name == "__metadata__" || t.name.is_empty() {
                return invalid(format!("checkpoint: invalid tensor name '{}'", t.name));
            }
            if !seen.insert(t.name.as_str()) {
                return invalid(format!("checkpoint: duplicate tensor name '{}'", t.name));
            }
            let count = t.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
            if count != Some(t.data.len()) {
                return invalid(format!(
                    "checkpoint: tensor '{}' has shape {} but {} values",
                    t.name,
                    shape_str(&t.shape),
                    t.data.len()
                ));
            }
            let (dtype, bytes) = match &t.data {
                TensorData::F32(v) => {
                    (Dtype::F32, v.iter().flat_map(|x| x.to_le_bytes()).collect())
                }
                TensorData::I64(v) => {
                    (Dtype::I64, v.iter().flat_map(|x| x.to_le_bytes()).collect())
                }
            };
            views.push((
                t.name.clone(),
                LeView {
                    dtype,
                    shape: t.shape.clone(),
                    bytes,
                },
            ));
        }
        let info = if self.metadata.is_empty() {
            None
        } else {
            // `collect` picks whichever HashMap the safetensors build uses (std or hashbrown).
            Some(
                self.metadata
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            )
        };
        let bytes = safetensors::serialize(views, info)
            .or_else(|e| invalid(format!("checkpoint: cannot serialise: {e}")))?;
        canonical_header(bytes)
    }

    /// Parses safetensors bytes: F32, F16, BF16 and F64 become f32; I64 and I32 become i64.
    pub fn from_bytes(bytes: &[u8]) -> Result<Checkpoint> {
        check_framing(bytes)?;
        let (n, meta) = SafeTensors::read_metadata(bytes)
            .map_err(|e| Error::Invalid(describe_parse_error(bytes, e)))?;
        let data = &bytes[8 + n..];
        let names = meta.offset_keys();
        let mut tensors = Vec::with_capacity(names.len());
        for name in names {
            let info = meta.info(&name).expect("offset_keys names a tensor");
            let raw = &data[info.data_offsets.0..info.data_offsets.1];
            tensors.push(convert(&name, info.dtype, &info.shape, raw)?);
        }
        let metadata = meta
            .metadata()
            .as_ref()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        Ok(Checkpoint { tensors, metadata })
    }

    /// The tensor called `name`, if any.
    pub fn get(&self, name: &str) -> Option<&NamedTensor> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// Checks that `name` exists with `shape`; errors name the tensor, expected and found shapes (one line).
    pub fn expect(&self, name: &str, shape: &[usize]) -> Result<&NamedTensor> {
        match self.get(name) {
            None => invalid(format!(
                "checkpoint: missing tensor '{name}' (expected shape {})",
                shape_str(shape)
            )),
            Some(t) if t.shape != shape => invalid(format!(
                "checkpoint: tensor '{name}' has shape {}, expected {}",
                shape_str(&t.shape),
                shape_str(shape)
            )),
            Some(t) => Ok(t),
        }
    }
}

/// Checks the 8-byte length and the header's extent before handing the bytes to the parser, so
/// that truncated files and non-safetensors files get a message saying which they are.
fn check_framing(bytes: &[u8]) -> Result<()> {
    if bytes.len() < 8 {
        return invalid(format!(
            "truncated: {} bytes, shorter than the 8-byte header length of a safetensors file",
            bytes.len()
        ));
    }
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
    if bytes.len() > 8 && bytes[8] != b'{' {
        return invalid("not a safetensors file: no JSON header after the 8-byte length");
    }
    if !(2..=MAX_HEADER).contains(&n) {
        return invalid(format!(
            "not a safetensors file: header length {n} is implausible"
        ));
    }
    let available = (bytes.len() - 8) as u64;
    if n > available {
        return invalid(format!(
            "truncated: the header is {n} bytes but only {available} bytes follow the length"
        ));
    }
    Ok(())
}

/// One-line description of a safetensors parse error, with byte counts for truncation.
fn describe_parse_error(bytes: &[u8], e: SafeTensorError) -> String {
    match e {
        SafeTensorError::InvalidHeader(_)
        | SafeTensorError::InvalidHeaderDeserialization(_)
        | SafeTensorError::JsonError(_) => format!("not a safetensors file: {e}"),
        SafeTensorError::MetadataIncompleteBuffer => {
            let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
            let have = bytes.len() - 8 - n;
            match declared_data_len(&bytes[8..8 + n]) {
                Some(want) if want > have => format!(
                    "truncated: the header declares {want} bytes of tensor data, the file has {have}"
                ),
                Some(want) => format!(
                    "invalid safetensors file: {} trailing bytes after {want} bytes of tensor data",
                    have - want
                ),
                None => format!("invalid safetensors file: {e}"),
            }
        }
        _ => format!("invalid safetensors file: {e}"),
    }
}

/// The end of the last tensor's data according to the JSON header.
fn declared_data_len(header: &[u8]) -> Option<usize> {
    let v: serde_json::Value = serde_json::from_slice(header).ok()?;
    v.as_object()?
        .iter()
        .filter(|(k, _)| k.as_str() != "__metadata__")
        .filter_map(|(_, t)| t.get("data_offsets")?.get(1)?.as_u64())
        .max()
        .map(|m| m as usize)
}

fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let man = (h & 0x3ff) as u32;
    let bits = match (exp, man) {
        (0, 0) => sign,
        (0, _) => {
            // Subnormal: value = man * 2^-24, exact in f32.
            let v = man as f32 * f32::from_bits(0x3380_0000);
            return if sign != 0 { -v } else { v };
        }
        (0x1f, 0) => sign | 0x7f80_0000,
        (0x1f, _) => sign | 0x7fc0_0000 | (man << 13),
        _ => sign | ((exp + 127 - 15) << 23) | (man << 13),
    };
    f32::from_bits(bits)
}

/// Converts one stored tensor to f32 or i64.
fn convert(name: &str, dtype: Dtype, shape: &[usize], b: &[u8]) -> Result<NamedTensor> {
    let data = match dtype {
        Dtype::F32 => TensorData::F32(
            b.chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
                .collect(),
        ),
        Dtype::F16 => TensorData::F32(
            b.chunks_exact(2)
                .map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]])))
                .collect(),
        ),
        Dtype::BF16 => TensorData::F32(
            b.chunks_exact(2)
                .map(|c| f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16))
                .collect(),
        ),
        Dtype::F64 => TensorData::F32(
            b.chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32)
                .collect(),
        ),
        Dtype::I64 => TensorData::I64(
            b.chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
                .collect(),
        ),
        Dtype::I32 => TensorData::I64(
            b.chunks_exact(4)
                .map(|c| i32::from_le_bytes(c.try_into().expect("4 bytes")) as i64)
                .collect(),
        ),
        other => {
            return invalid(format!(
                "unsupported dtype {other} for tensor '{name}' (supported: F32, F16, BF16, F64, I64, I32)"
            ))
        }
    };
    Ok(NamedTensor {
        name: name.to_string(),
        shape: shape.to_vec(),
        data,
    })
}

/// Prefixes an error message with the file it concerns.
#[cfg(not(target_arch = "wasm32"))]
fn with_path(path: &std::path::Path, e: Error) -> Error {
    match e {
        Error::Invalid(m) => {
            let m = m.strip_prefix("checkpoint: ").unwrap_or(&m);
            Error::Invalid(format!("checkpoint {}: {m}", path.display()))
        }
        other => other,
    }
}

/// Writes `ckpt` to `path` atomically: `PATH.tmp` in the same directory, fsync, rename.
#[cfg(not(target_arch = "wasm32"))]
pub fn save(path: &std::path::Path, ckpt: &Checkpoint) -> Result<()> {
    let bytes = ckpt.to_bytes().map_err(|e| with_path(path, e))?;
    crate::files::write_atomic(path, &bytes)
        .map_err(|m| Error::Invalid(format!("checkpoint {}: {m}", path.display())))
}

/// Reads a checkpoint from `path`: a safetensors file, or PyTorch's own (`torch.save`, see
/// [`torch`]), told apart by their first bytes; a `module.` before every name (a
/// DistributedDataParallel's state_dict) is dropped; errors name the file.
#[cfg(not(target_arch = "wasm32"))]
pub fn load(path: &std::path::Path) -> Result<Checkpoint> {
    let cannot_read = |e: std::io::Error| {
        Error::Invalid(format!("checkpoint {}: cannot read: {e}", path.display()))
    };
    let mut head = Vec::with_capacity(512);
    std::io::Read::read_to_end(
        &mut std::io::Read::take(std::fs::File::open(path).map_err(cannot_read)?, 512),
        &mut head,
    )
    .map_err(cannot_read)?;
    let mut ck = if torch::is_torch_file(&head) {
        torch::load(path)
    } else {
        let bytes = std::fs::read(path).map_err(cannot_read)?;
        Checkpoint::from_bytes(&bytes)
    }
    .map_err(|e| with_path(path, e))?;
    // what DistributedDataParallel's state_dict adds, removed as PyTorch's
    // consume_prefix_in_state_dict_if_present does: when every name has it
    ck.consume_prefix("module.");
    Ok(ck)
}
