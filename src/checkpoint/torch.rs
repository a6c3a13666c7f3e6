//! PyTorch's own checkpoint files, as `torch.save` writes them: torchvision's `.pth` weights, a
//! `model.state_dict()` or a whole `model` saved from a training script, or a training
//! checkpoint that keeps either under a key beside the optimizer's state. The containers (the zip archive of
//! PyTorch 1.6 and later, the older pickle stream, the tar of before 0.1.10) and the pickle
//! inside them are read by the `pytorch-reader` crate, which runs no Python code: the pickle is
//! interpreted, never executed. Native only: the crate reads from a file.

use std::path::Path;

use pytorch_reader::{DType, PickleValue, PytorchReader};
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

/// Reads the state_dict of a `torch.save` file (errors do not name it: the caller adds that):
/// its tensors by state_dict name (sorted), f32 (from f32, f16, bf16 or f64) and i64 (from i64 or
/// i32), no metadata. A file whose top-level dictionary has one of [`STATE_DICT_KEYS`] holding a
/// dictionary is a training checkpoint: the state_dict is taken from there and the rest
/// (optimizer state, epoch, ...) is left out. A state_dict's own keys are dotted names
/// (`model.conv1.weight`), never a bare `model`, so one is never mistaken for the other.
pub(super) fn load(path: &Path) -> Result<Checkpoint> {
    let unreadable = |e| Error::Invalid(format!("a PyTorch file that cannot be read: {e}"));
    let reader = match wrapper_key(path) {
        Some(key) => PytorchReader::with_top_level_key(path, key),
        None => PytorchReader::new(path),
    }
    .map_err(unreadable)?;
    let mut names: Vec<&String> = reader.tensors().keys().collect();
    names.sort();
    let tensors = names
        .into_iter()
        .map(|name| read_tensor(name, &reader.tensors()[name]))
        .collect::<Result<_>>()?;
    Ok(Checkpoint {
        tensors,
        metadata: Default::default(),
    })
}

/// The first of [`STATE_DICT_KEYS`] that the file's top-level dictionary has, holding a
/// dictionary; `None` for a state_dict itself, a whole pickled module, or a file this cannot
/// parse (reading it whole then gives the error).
fn wrapper_key(path: &Path) -> Option<&'static str> {
    let PickleValue::Dict(top) = PytorchReader::read_pickle_data(path, None).ok()? else {
        return None;
    };
    STATE_DICT_KEYS
        .into_iter()
        .find(|k| matches!(top.get(*k), Some(PickleValue::Dict(_))))
}

/// One tensor's values under the state_dict name `key`.
fn read_tensor(key: &str, t: &pytorch_reader::Tensor) -> Result<NamedTensor> {
    let bytes = t
        .read()
        .map_err(|e| Error::Invalid(format!("cannot read: {e}")))?;
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
