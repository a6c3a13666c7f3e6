//! PyTorch's own checkpoint files, as `torch.save` writes them: torchvision's `.pth` weights, a
//! `model.state_dict()` saved from a training script, or a training checkpoint that keeps the
//! state_dict under a key beside the optimizer's state. The containers (the zip archive of
//! PyTorch 1.6 and later, the older pickle stream, the tar of before 0.1.10) and the pickle
//! inside them are read by the `pytorch-reader` crate, which runs no Python code: the pickle is
//! interpreted, never executed. Native only: the crate reads from a file.

use std::path::Path;

use pytorch_reader::{DType, PytorchReader};
use safetensors::tensor::Dtype;

use super::{convert, Checkpoint, NamedTensor};
use crate::{Error, Result};

/// Keys under which training scripts save the state_dict beside other things: `{"state_dict":
/// ...}` (timm, Lightning), `{"model_state_dict": ...}` (PyTorch's tutorials), `{"model": ...}`
/// (torchvision's reference scripts). The first that holds tensors is the checkpoint's.
const STATE_DICT_KEYS: [&str; 3] = ["state_dict", "model_state_dict", "model"];

/// Whether a file starting with `head` (its first 512 bytes or all of a shorter file) is a
/// PyTorch checkpoint rather than a safetensors file: a zip archive, a tar archive, or a pickle
/// stream (protocol opcode 0x80). A safetensors file starts with its header's length and then
/// `{`, and that length's low byte may be 0x80 too, hence the second test.
pub(super) fn is_torch_file(head: &[u8]) -> bool {
    let zip = head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06");
    let tar = head.get(257..262) == Some(b"ustar".as_slice());
    let pickle = head.first() == Some(&0x80) && head.get(8) != Some(&b'{');
    zip || tar || pickle
}

/// Reads the state_dict of a `torch.save` file (errors do not name it: the caller adds that): its tensors by state_dict name (sorted), f32
/// (from f32, f16, bf16 or f64) and i64 (from i64 or i32), no metadata. A state_dict kept under
/// one of [`STATE_DICT_KEYS`] is taken from there, without the key's prefix, and the rest of the
/// file (optimizer state, epoch, ...) is left out.
pub(super) fn load(path: &Path) -> Result<Checkpoint> {
    let reader = PytorchReader::new(path)
        .map_err(|e| Error::Invalid(format!("a PyTorch file that cannot be read: {e}")))?;
    let mut names: Vec<&String> = reader.tensors().keys().collect();
    names.sort();
    let wrapper = STATE_DICT_KEYS
        .iter()
        .map(|k| format!("{k}."))
        .find(|prefix| names.iter().any(|n| n.starts_with(prefix.as_str())));
    let mut tensors = Vec::new();
    for name in names {
        let key = match &wrapper {
            Some(prefix) => match name.strip_prefix(prefix.as_str()) {
                Some(key) => key,
                None => continue,
            },
            None => name.as_str(),
        };
        tensors.push(read_tensor(key, &reader.tensors()[name])?);
    }
    Ok(Checkpoint {
        tensors,
        metadata: Default::default(),
    })
}

/// One tensor's values under the state_dict name `key`.
fn read_tensor(key: &str, t: &pytorch_reader::Tensor) -> Result<NamedTensor> {
    let bytes = t
        .read()
        .map_err(|e| Error::Invalid(format!("tensor '{key}' cannot be read: {e}")))?;
    // the reader gives the host's byte order; `convert` reads little-endian, which every target
    // this engine runs on is
    convert(key, safetensors_dtype(t.dtype()), t.shape(), &bytes)
}

/// The safetensors name of a PyTorch element type (`convert` refuses those it cannot load).
fn safetensors_dtype(d: DType) -> Dtype {
    match d {
        DType::F64 => Dtype::F64,
        DType::F32 => Dtype::F32,
        DType::F16 => Dtype::F16,
        DType::BF16 => Dtype::BF16,
        DType::I64 => Dtype::I64,
        DType::I32 => Dtype::I32,
        DType::I16 => Dtype::I16,
        DType::I8 => Dtype::I8,
        DType::U64 => Dtype::U64,
        DType::U32 => Dtype::U32,
        DType::U16 => Dtype::U16,
        DType::U8 => Dtype::U8,
        DType::Bool => Dtype::BOOL,
    }
}
