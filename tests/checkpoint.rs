//! Checkpoints: round trips, atomic saves, error messages, and the safetensors format itself
//! (a file written by hand from the spec, our output parsed as the spec says, and files read and
//! written by Python's `safetensors` package: an ignored test that CI runs), and PyTorch's own
//! files (`torch.save`, written by PyTorch: tests/data/torch/make.py).

use std::collections::BTreeMap;
use std::path::Path;

use resnet::checkpoint::{self, Checkpoint, NamedTensor, TensorData};

/// A small ResNet-like state_dict with awkward values (signed zero, subnormal, extremes, NaN).
fn sample() -> Checkpoint {
    let conv: Vec<f32> = (0..4 * 3 * 3 * 3)
        .map(|i| (i as f32 - 50.0) / 7.0)
        .collect();
    let mut fc: Vec<f32> = (0..10 * 4).map(|i| (i as f32).sin()).collect();
    fc[0] = -0.0;
    fc[1] = f32::from_bits(1);
    fc[2] = f32::MAX;
    fc[3] = f32::MIN_POSITIVE;
    fc[4] = f32::NAN;
    let mut metadata = BTreeMap::new();
    metadata.insert("arch".to_string(), "resnet20".to_string());
    metadata.insert("epoch".to_string(), "3".to_string());
    metadata.insert("note".to_string(), "quotes \" and ünïcode".to_string());
    Checkpoint {
        tensors: vec![
            NamedTensor::f32("conv1.weight", &[4, 3, 3, 3], conv),
            NamedTensor::f32("bn1.weight", &[4], vec![1.0, 0.5, 2.0, -1.0]),
            NamedTensor::f32("bn1.bias", &[4], vec![0.0, 0.1, -0.2, 0.3]),
            NamedTensor::f32("bn1.running_mean", &[4], vec![0.01, 0.02, 0.03, 0.04]),
            NamedTensor::f32("bn1.running_var", &[4], vec![1.5, 1.25, 0.75, 0.5]),
            NamedTensor::i64("bn1.num_batches_tracked", &[], vec![1 << 40]),
            NamedTensor::f32("fc.weight", &[10, 4], fc),
            NamedTensor::f32("fc.bias", &[10], vec![0.25; 10]),
        ],
        metadata,
    }
}

/// Asserts two checkpoints hold the same names, shapes, bit-identical values and metadata.
fn assert_same(a: &Checkpoint, b: &Checkpoint) {
    let names = |c: &Checkpoint| {
        let mut v: Vec<String> = c.tensors.iter().map(|t| t.name.clone()).collect();
        v.sort();
        v
    };
    assert_eq!(names(a), names(b));
    for t in &a.tensors {
        let u = b.get(&t.name).unwrap();
        assert_eq!(t.shape, u.shape, "{}", t.name);
        match (&t.data, &u.data) {
            (TensorData::F32(x), TensorData::F32(y)) => {
                let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(x), bits(y), "{}", t.name);
            }
            (TensorData::I64(x), TensorData::I64(y)) => assert_eq!(x, y, "{}", t.name),
            _ => panic!("{}: dtype changed", t.name),
        }
    }
    assert_eq!(a.metadata, b.metadata);
}

fn err_msg<T: std::fmt::Debug>(r: resnet::Result<T>) -> String {
    let m = r.unwrap_err().to_string();
    assert!(!m.contains('\n'), "error is not one line: {m}");
    m
}

#[test]
fn round_trip_bytes_and_file() {
    let ckpt = sample();
    let back = Checkpoint::from_bytes(&ckpt.to_bytes().unwrap()).unwrap();
    assert_same(&ckpt, &back);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    checkpoint::save(&path, &ckpt).unwrap();
    assert_same(&ckpt, &checkpoint::load(&path).unwrap());

    // Without metadata, and with no tensors at all.
    let bare = Checkpoint {
        tensors: ckpt.tensors[..2].to_vec(),
        metadata: BTreeMap::new(),
    };
    assert_same(
        &bare,
        &Checkpoint::from_bytes(&bare.to_bytes().unwrap()).unwrap(),
    );
    let empty = Checkpoint::new();
    assert_same(
        &empty,
        &Checkpoint::from_bytes(&empty.to_bytes().unwrap()).unwrap(),
    );
}

#[test]
fn to_bytes_rejects_inconsistent_tensors() {
    let mut c = sample();
    c.tensors[1].shape = vec![5];
    let m = err_msg(c.to_bytes());
    assert!(
        m.contains("bn1.weight") && m.contains("[5]") && m.contains('4'),
        "{m}"
    );

    let mut c = sample();
    c.tensors.push(NamedTensor::f32("fc.bias", &[1], vec![0.0]));
    let m = err_msg(c.to_bytes());
    assert!(m.contains("duplicate") && m.contains("fc.bias"), "{m}");
}

#[test]
fn save_is_atomic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ckpt.safetensors");
    checkpoint::save(&path, &sample()).unwrap();
    // Overwriting goes through the same temporary file and leaves only the target.
    let mut second = sample();
    second.metadata.insert("epoch".into(), "4".into());
    checkpoint::save(&path, &second).unwrap();
    let mut listing: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    listing.sort();
    assert_eq!(listing, vec!["ckpt.safetensors".to_string()]);
    assert_eq!(checkpoint::load(&path).unwrap().metadata["epoch"], "4");

    // A directory that does not exist: an error naming the file, and nothing created.
    let missing_dir = dir.path().join("no-such-dir");
    let target = missing_dir.join("ckpt.safetensors");
    let m = err_msg(checkpoint::save(&target, &sample()));
    assert!(m.contains(&target.display().to_string()), "{m}");
    assert!(!missing_dir.exists());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn damaged_files_are_named_in_errors() {
    let dir = tempfile::tempdir().unwrap();
    let good = sample().to_bytes().unwrap();
    let header_len = u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty", vec![], "truncated"),
        ("four", good[..4].to_vec(), "truncated"),
        (
            "in-header",
            good[..8 + header_len / 2].to_vec(),
            "truncated",
        ),
        ("in-data", good[..good.len() - 3].to_vec(), "truncated"),
        (
            "text",
            b"this is not a checkpoint at all".to_vec(),
            "not a safetensors file",
        ),
        (
            "png",
            b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec(),
            "not a safetensors file",
        ),
        ("trailing", [good.clone(), vec![0; 5]].concat(), "trailing"),
        (
            "bad-json",
            [&8u64.to_le_bytes()[..], b"{\"a\":1 }"].concat(),
            "not a safetensors file",
        ),
    ];
    for (name, bytes, want) in cases {
        let path = dir.path().join(format!("{name}.safetensors"));
        std::fs::write(&path, &bytes).unwrap();
        let m = err_msg(checkpoint::load(&path));
        assert!(m.contains(&path.display().to_string()), "{name}: {m}");
        assert!(m.contains(want), "{name}: wanted `{want}` in: {m}");
        // The bytes-only API says the same without a file name.
        assert!(err_msg(Checkpoint::from_bytes(&bytes)).contains(want));
    }
    let nowhere = dir.path().join("absent.safetensors");
    let m = err_msg(checkpoint::load(&nowhere));
    assert!(m.contains(&nowhere.display().to_string()), "{m}");
}

#[test]
fn expect_names_tensor_and_shapes() {
    let c = sample();
    assert_eq!(c.expect("fc.weight", &[10, 4]).unwrap().shape, vec![10, 4]);
    assert!(c.expect("bn1.num_batches_tracked", &[]).is_ok());

    let m = err_msg(c.expect("fc.weight", &[100, 4]));
    assert!(
        m.contains("fc.weight") && m.contains("[10, 4]") && m.contains("[100, 4]"),
        "{m}"
    );

    let m = err_msg(c.expect("layer1.0.conv1.weight", &[16, 16, 3, 3]));
    assert!(
        m.contains("missing") && m.contains("layer1.0.conv1.weight"),
        "{m}"
    );
    assert!(m.contains("[16, 16, 3, 3]"), "{m}");
}

/// Builds a safetensors file by hand: u64 LE header length, JSON header, raw LE data.
fn handmade(header: &str, data: &[u8]) -> Vec<u8> {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

#[test]
fn reads_a_file_written_from_the_spec() {
    let mut data = Vec::new();
    for v in [1.0f32, -2.5, 3.25, 1e-3] {
        data.extend(v.to_le_bytes()); // [0, 16): F32 [2, 2]
    }
    data.extend(12345i64.to_le_bytes()); // [16, 24): I64 []
    for h in [0x3C00u16, 0xC000, 0x3800, 0x0001, 0x7BFF] {
        data.extend(h.to_le_bytes()); // [24, 34): F16 [5]: 1, -2, 0.5, 2^-24, 65504
    }
    for b in [0x3F80u16, 0xC040] {
        data.extend(b.to_le_bytes()); // [34, 38): BF16 [2]: 1, -3
    }
    for i in [-7i32, 2_000_000_000] {
        data.extend(i.to_le_bytes()); // [38, 46): I32 [2]
    }
    // Keys deliberately not in offset order, padded with spaces as writers may do.
    let header = r#"{"h":{"dtype":"F16","shape":[5],"data_offsets":[24,34]},
        "__metadata__":{"format":"pt"},
        "layer1.0.bn1.num_batches_tracked":{"dtype":"I64","shape":[],"data_offsets":[16,24]},
        "conv.weight":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},
        "b":{"dtype":"BF16","shape":[2],"data_offsets":[34,38]},
        "i":{"dtype":"I32","shape":[2],"data_offsets":[38,46]}}   "#;
    let c = Checkpoint::from_bytes(&handmade(header, &data)).unwrap();
    let names: Vec<&str> = c.tensors.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "conv.weight",
            "layer1.0.bn1.num_batches_tracked",
            "h",
            "b",
            "i"
        ],
        "file (offset) order"
    );
    let conv = c.expect("conv.weight", &[2, 2]).unwrap();
    assert_eq!(conv.as_f32().unwrap(), &[1.0, -2.5, 3.25, 1e-3]);
    let nbt = c.expect("layer1.0.bn1.num_batches_tracked", &[]).unwrap();
    assert_eq!(nbt.as_i64().unwrap(), &[12345]);
    let h = c.expect("h", &[5]).unwrap().as_f32().unwrap();
    assert_eq!(h, &[1.0, -2.0, 0.5, 2f32.powi(-24), 65504.0]);
    assert_eq!(c.expect("b", &[2]).unwrap().as_f32().unwrap(), &[1.0, -3.0]);
    assert_eq!(
        c.expect("i", &[2]).unwrap().as_i64().unwrap(),
        &[-7, 2_000_000_000]
    );
    assert_eq!(c.metadata.get("format").map(String::as_str), Some("pt"));

    // A dtype we do not convert: the error names the tensor and the dtype.
    let u8_file = handmade(
        r#"{"mask":{"dtype":"U8","shape":[3],"data_offsets":[0,3]}}"#,
        &[1, 0, 1],
    );
    let m = err_msg(Checkpoint::from_bytes(&u8_file));
    assert!(
        m.contains("mask") && m.contains("U8") && m.contains("unsupported"),
        "{m}"
    );
}

#[test]
fn to_bytes_follows_the_spec() {
    let ckpt = sample();
    let bytes = ckpt.to_bytes().unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let data = &bytes[8 + n..];
    let obj = header.as_object().unwrap();

    let meta = obj["__metadata__"].as_object().unwrap();
    assert_eq!(meta.len(), ckpt.metadata.len());
    for (k, v) in &ckpt.metadata {
        assert_eq!(meta[k].as_str(), Some(v.as_str()));
    }

    let mut spans = Vec::new();
    for t in &ckpt.tensors {
        let e = &obj[&t.name];
        let shape: Vec<usize> = e["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(shape, t.shape, "{}", t.name);
        let off = e["data_offsets"].as_array().unwrap();
        let (s, end) = (
            off[0].as_u64().unwrap() as usize,
            off[1].as_u64().unwrap() as usize,
        );
        let raw = &data[s..end];
        match &t.data {
            TensorData::F32(v) => {
                assert_eq!(e["dtype"], "F32", "{}", t.name);
                let le: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                assert_eq!(raw, &le[..], "{}", t.name);
            }
            TensorData::I64(v) => {
                assert_eq!(e["dtype"], "I64", "{}", t.name);
                let le: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                assert_eq!(raw, &le[..], "{}", t.name);
            }
        }
        spans.push((s, end));
    }
    assert_eq!(
        obj.len(),
        ckpt.tensors.len() + 1,
        "only tensors and __metadata__"
    );
    // Contiguous, non-overlapping, covering the whole data section.
    spans.sort();
    let mut at = 0;
    for (s, e) in spans {
        assert_eq!(s, at);
        at = e;
    }
    assert_eq!(at, data.len());
}

/// Runs a Python snippet with `safetensors.numpy`; fails the test when Python or the package is
/// missing (the test is only run when asked for: CI installs the package and asks).
fn python(script: &str, args: &[&Path]) -> String {
    let probe = std::process::Command::new("python3")
        .args(["-c", "import numpy, safetensors.numpy"])
        .output();
    assert!(
        matches!(&probe, Ok(o) if o.status.success()),
        "python3 with `safetensors` and `numpy` is not importable (pip install safetensors numpy): {probe:?}"
    );
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Our files through Python's reference implementation and back. Needs python3 with `safetensors`
/// and `numpy`; `.ci/run` installs them and runs it:
/// `cargo test --release --test checkpoint -- --ignored python_safetensors`.
#[test]
#[ignore = "needs python3 with safetensors and numpy (pip install safetensors numpy); CI runs it"]
fn python_safetensors_reads_our_file_and_we_read_its() {
    let dir = tempfile::tempdir().unwrap();
    let ours = dir.path().join("ours.safetensors");
    let ckpt = sample();
    checkpoint::save(&ours, &ckpt).unwrap();
    let read = r#"
import json, sys
import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file
t = load_file(sys.argv[1])
with safe_open(sys.argv[1], framework="np") as f:
    meta = f.metadata()
out = {k: {"dtype": str(v.dtype), "shape": list(v.shape),
           "bits": v.view(np.uint32 if v.dtype == np.float32 else np.int64).reshape(-1).tolist()}
       for k, v in t.items()}
print(json.dumps({"tensors": out, "metadata": meta}))
"#;
    let stdout = python(read, &[&ours]);
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    for t in &ckpt.tensors {
        let e = &v["tensors"][&t.name];
        let shape: Vec<usize> = serde_json::from_value(e["shape"].clone()).unwrap();
        assert_eq!(shape, t.shape, "{}", t.name);
        match &t.data {
            TensorData::F32(x) => {
                assert_eq!(e["dtype"], "float32");
                let bits: Vec<u32> = serde_json::from_value(e["bits"].clone()).unwrap();
                assert_eq!(bits, x.iter().map(|f| f.to_bits()).collect::<Vec<_>>());
            }
            TensorData::I64(x) => {
                assert_eq!(e["dtype"], "int64");
                let vals: Vec<i64> = serde_json::from_value(e["bits"].clone()).unwrap();
                assert_eq!(&vals, x);
            }
        }
    }
    let meta: BTreeMap<String, String> = serde_json::from_value(v["metadata"].clone()).unwrap();
    assert_eq!(meta, ckpt.metadata);

    // And the other way: a file written by Python's package, with F16 and I32 as well.
    let theirs = dir.path().join("theirs.safetensors");
    let write = r#"
import sys
import numpy as np
from safetensors.numpy import save_file
save_file({
    "fc.weight": np.arange(6, dtype=np.float32).reshape(2, 3) / 4,
    "bn.num_batches_tracked": np.array(99, dtype=np.int64),
    "half": np.array([1.5, -0.25], dtype=np.float16),
    "i32": np.array([-3, 4], dtype=np.int32),
}, sys.argv[1], metadata={"format": "np"})
"#;
    python(write, &[&theirs]);
    let c = checkpoint::load(&theirs).unwrap();
    let w = c.expect("fc.weight", &[2, 3]).unwrap().as_f32().unwrap();
    assert_eq!(w, &[0.0, 0.25, 0.5, 0.75, 1.0, 1.25]);
    let nbt = c.expect("bn.num_batches_tracked", &[]).unwrap();
    assert_eq!(nbt.as_i64().unwrap(), &[99]);
    assert_eq!(
        c.expect("half", &[2]).unwrap().as_f32().unwrap(),
        &[1.5, -0.25]
    );
    assert_eq!(c.expect("i32", &[2]).unwrap().as_i64().unwrap(), &[-3, 4]);
    assert_eq!(c.metadata["format"], "np");
}

/// Equal checkpoints serialise to equal bytes (the header's keys are written sorted), which the
/// bit-identical-runs guarantee relies on.
#[test]
fn serialisation_is_deterministic() {
    let mut ck = Checkpoint::new();
    for (i, k) in [
        "model",
        "classes",
        "mean",
        "std",
        "epoch",
        "iteration",
        "seed",
        "best_acc",
    ]
    .iter()
    .enumerate()
    {
        ck.metadata.insert(k.to_string(), format!("value{i}"));
    }
    for name in ["b.weight", "a.weight", "c.bias"] {
        ck.tensors.push(NamedTensor {
            name: name.into(),
            shape: vec![2],
            data: TensorData::F32(vec![1.0, 2.0]),
        });
    }
    let first = ck.to_bytes().unwrap();
    for _ in 0..10 {
        assert_eq!(ck.clone().to_bytes().unwrap(), first);
    }
    assert_eq!(
        Checkpoint::from_bytes(&first).unwrap().metadata,
        ck.metadata
    );
}

/// A file under tests/data/torch/, written by PyTorch 2.15's `torch.save` (make.py there).
fn torch_file(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/torch")
        .join(name)
}

/// The state_dict make.py saves in training_checkpoint.pth and legacy.pth, by name: f16 (the
/// transpose of a 3x4 arange / 4, stored as a strided view), bf16, int64, f64 and int32 in PyTorch,
/// here f32 and i64.
fn small_torch_state_dict() -> Vec<NamedTensor> {
    let transposed = (0..4)
        .flat_map(|j| (0..3).map(move |i| (4 * i + j) as f32 / 4.0))
        .collect();
    vec![
        NamedTensor::i64("bn1.num_batches_tracked", &[], vec![42]),
        NamedTensor::f32("bn1.running_mean", &[3], vec![-1.5, 0.25, 3.0]),
        NamedTensor::f32("conv1.weight", &[4, 3], transposed),
        NamedTensor::f32("fc.bias", &[2], vec![0.1f64 as f32, -2.0]),
        NamedTensor::i64("fc.steps", &[2], vec![7, -8]),
    ]
}

#[test]
fn reads_pytorch_training_checkpoints_and_the_legacy_format() {
    // {"epoch": 7, "state_dict": ..., "optimizer": {...}}: the state_dict alone, without its key
    let ck = checkpoint::load(&torch_file("training_checkpoint.pth")).unwrap();
    assert_eq!(ck.tensors, small_torch_state_dict());
    assert!(ck.metadata.is_empty(), "{:?}", ck.metadata);
    // the same state_dict saved with _use_new_zipfile_serialization=False (PyTorch before 1.6)
    let legacy = checkpoint::load(&torch_file("legacy.pth")).unwrap();
    assert_eq!(legacy.tensors, small_torch_state_dict());
    // {"epoch", "model_state_dict", "optimizer_state_dict", "loss"}, as PyTorch's tutorials save
    let tutorial = checkpoint::load(&torch_file("tutorial_checkpoint.pth")).unwrap();
    assert_eq!(tutorial.tensors, small_torch_state_dict());
    // DistributedDataParallel's state_dict: `module.` before every name, dropped
    let ddp = checkpoint::load(&torch_file("ddp_state_dict.pth")).unwrap();
    assert_eq!(ddp.tensors, small_torch_state_dict());
    // a state_dict whose module has a child named `model`: its keys are kept whole
    let plain = checkpoint::load(&torch_file("submodule_model.pth")).unwrap();
    let names: Vec<(&str, &[usize])> = plain
        .tensors
        .iter()
        .map(|t| (t.name.as_str(), t.shape.as_slice()))
        .collect();
    assert_eq!(
        names,
        [
            ("head.weight", [1, 1].as_slice()),
            ("model.weight", &[1, 2])
        ]
    );
}

#[test]
fn a_pytorch_tensor_that_cannot_be_a_weight_is_one_error_naming_it() {
    let path = torch_file("bool_buffer.pth");
    let err = checkpoint::load(&path).unwrap_err().to_string();
    for part in [path.to_str().unwrap(), "'mask'", "BOOL"] {
        assert!(err.contains(part), "{part:?} not in {err:?}");
    }
    // a zip archive that torch.save did not write
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("fake.pth");
    let mut zip = b"PK\x03\x04".to_vec();
    zip.extend([0u8; 60]);
    std::fs::write(&fake, zip).unwrap();
    let err = checkpoint::load(&fake).unwrap_err().to_string();
    assert!(
        err.contains("fake.pth") && err.contains("PyTorch"),
        "{err:?}"
    );
}

/// A checkpoint without `mean`/`std` (saved from PyTorch) is normalised as its model usually is:
/// torchvision's ResNets with ImageNet's statistics (`transforms.Normalize(mean=[0.485, 0.456,
/// 0.406], std=[0.229, 0.224, 0.225])`, as torchvision's weights expect), the CIFAR ResNets with
/// CIFAR-10's; the metadata's, where present, wins.
#[test]
fn a_checkpoint_without_statistics_is_normalised_as_its_model_usually_is() {
    use resnet::model::ModelSpec;
    let bare = Checkpoint::new();
    let spec = |name| ModelSpec::from_name(name, 10).unwrap();
    let n = bare
        .normalisation(spec("resnet50").usual_normalisation())
        .unwrap();
    assert_eq!(
        (n.mean, n.std),
        ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    );
    let n = bare
        .normalisation(spec("resnet20").usual_normalisation())
        .unwrap();
    assert_eq!(
        (n.mean, n.std),
        ([0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616])
    );
    let mut own = Checkpoint::new();
    own.metadata.insert("mean".into(), "0.5,0.5,0.5".into());
    own.metadata.insert("std".into(), "0.25,0.25,0.25".into());
    let n = own
        .normalisation(spec("resnet50").usual_normalisation())
        .unwrap();
    assert_eq!((n.mean, n.std), ([0.5; 3], [0.25; 3]));
}

/// Outputs of a checkpoint without `classes` are named as torchvision's and our defaults name
/// them: 10 as CIFAR-10's classes, 1000 as ImageNet's categories in label order
/// (torchvision's `weights.meta["categories"]`: 0 tench, 281 tabby, 999 toilet tissue), any
/// other number by index.
#[test]
fn outputs_of_a_bare_checkpoint_are_named_as_their_data_set_names_them() {
    let bare = Checkpoint::new();
    let imagenet = bare.class_names(1000);
    assert_eq!(imagenet.len(), 1000);
    assert_eq!(
        [&imagenet[0], &imagenet[1], &imagenet[281], &imagenet[999]],
        ["tench", "goldfish", "tabby", "toilet tissue"]
    );
    assert_eq!(bare.class_names(10)[3], "cat");
    assert_eq!(bare.class_names(3), ["0", "1", "2"]);
}

/// A whole module saved with `torch.save(model)` (its class need not exist here: the pickle is
/// read, not run), alone or under a key, reads as its state_dict.
#[test]
fn a_whole_pytorch_module_reads_as_its_state_dict() {
    let want = checkpoint::load(&torch_file("tiny_bottleneck.pth")).unwrap();
    assert_eq!(want.tensors.len(), 74); // 12 convolutions, fc weight and bias, 12 BatchNorms x 5
    for file in [
        "tiny_bottleneck_module.pth",
        "tiny_bottleneck_module_in_dict.pth",
    ] {
        let ck = checkpoint::load(&torch_file(file)).unwrap();
        assert!(ck.tensors == want.tensors, "{file}");
    }
}

#[test]
fn a_prefix_is_consumed_only_when_every_name_has_it() {
    let mut ck = sample();
    let names: Vec<String> = ck.tensors.iter().map(|t| t.name.clone()).collect();
    ck.tensors[0].name = format!("module.{}", ck.tensors[0].name);
    let names_of =
        |c: &Checkpoint| -> Vec<String> { c.tensors.iter().map(|t| t.name.clone()).collect() };
    let mut some = ck.clone();
    some.consume_prefix("module.");
    assert_eq!(
        names_of(&some),
        names_of(&ck),
        "only one name has it: nothing changes"
    );
    for t in &mut ck.tensors[1..] {
        t.name = format!("module.{}", t.name);
    }
    ck.consume_prefix("module.");
    assert_eq!(names_of(&ck), names);
}
