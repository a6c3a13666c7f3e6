//! torchvision's CIFAR layouts, `cifar-10-batches-py/` and `cifar-100-python/`: what
//! `torchvision.datasets.CIFAR10(root, download=True)` and `CIFAR100` unpack from
//! `cifar-10-python.tar.gz` and `cifar-100-python.tar.gz`, so that `--data root` works where a
//! PyTorch user already has the data.
//!
//! Each file is a Python pickle (protocol 2, written by Python 2) of a dict: `data`, a numpy
//! uint8 array of N x 3072 (each row 1024 R, 1024 G and 1024 B bytes, the binary layout's
//! order), and the labels, a list of N ints (`labels`; CIFAR-100: `fine_labels`, as torchvision
//! takes them); the class names are in `batches.meta`'s `label_names` (CIFAR-100: `meta`'s
//! `fine_label_names`). `serde-pickle` reads them as values: no Python code runs, and numpy's
//! array arrives as the state its `__reduce__` wrote, `(version, shape, dtype, is_fortran,
//! bytes)`.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::Path;

use serde_pickle::{DeOptions, HashableValue, Value};

use super::cifar_layout::{CifarLayout, Files, PIXELS};
use super::{invalid, io_err, Dataset, Split};
use crate::Result;

/// The folder torchvision's CIFAR-10 archive unpacks to.
pub const CIFAR_PY_DIR: &str = "cifar-10-batches-py";

/// A pickled dict.
type Dict = BTreeMap<HashableValue, Value>;

/// One of torchvision's layouts.
pub(super) struct PickledLayout {
    files: Files,
    /// The class names' entry in `meta`, and the labels' in a batch.
    names_key: &'static str,
    labels_key: &'static str,
    max_classes: usize,
}

/// `torchvision.datasets.CIFAR10`'s.
pub(super) const CIFAR10: PickledLayout = PickledLayout {
    files: Files {
        dir: CIFAR_PY_DIR,
        train: &[
            "data_batch_1",
            "data_batch_2",
            "data_batch_3",
            "data_batch_4",
            "data_batch_5",
        ],
        test: "test_batch",
        meta: "batches.meta",
        marks: &[
            "data_batch_1",
            "data_batch_2",
            "data_batch_3",
            "data_batch_4",
            "data_batch_5",
            "test_batch",
            "batches.meta",
        ],
    },
    names_key: "label_names",
    labels_key: "labels",
    max_classes: 10,
};

/// `torchvision.datasets.CIFAR100`'s: its 100 fine labels, as torchvision takes them.
pub(super) const CIFAR100: PickledLayout = PickledLayout {
    files: Files {
        dir: "cifar-100-python",
        train: &["train"],
        test: "test",
        meta: "meta",
        marks: &["meta"],
    },
    names_key: "fine_label_names",
    labels_key: "fine_labels",
    max_classes: 100,
};

/// torchvision's layout in `dir` (or its folder), else CIFAR-10's (whose errors name its files).
fn layout_in(dir: &Path) -> &'static PickledLayout {
    [&CIFAR10, &CIFAR100]
        .into_iter()
        .find(|l| l.found_in(dir))
        .unwrap_or(&CIFAR10)
}

/// Loads torchvision's CIFAR-10 or CIFAR-100 from `dir` or its folder (`cifar-10-batches-py`,
/// `cifar-100-python`): CIFAR-10's 50,000 training images of `data_batch_1` ... `data_batch_5`
/// and 10,000 of `test_batch`, CIFAR-100's `train` and `test`.
pub fn load_cifar_python(dir: &Path) -> Result<Split> {
    layout_in(dir).load_split(dir)
}

/// The test images of torchvision's layout alone (`batches.meta` and `test_batch`, or
/// CIFAR-100's `meta` and `test`).
pub fn load_cifar_python_test(dir: &Path) -> Result<Dataset> {
    layout_in(dir).load_test(dir)
}

impl CifarLayout for PickledLayout {
    fn files(&self) -> &Files {
        &self.files
    }

    /// Class names from `label_names` (CIFAR-100: `fine_label_names`).
    fn read_meta(&self, path: &Path) -> Result<Vec<String>> {
        let dict = read_dict(path)?;
        let (key, max) = (self.names_key, self.max_classes);
        let bad = || {
            invalid(format!(
                "{}: '{key}' must be a list of 1 to {max} names",
                path.display()
            ))
        };
        let Value::List(names) = entry(&dict, key, path)? else {
            return Err(bad());
        };
        let classes = names
            .iter()
            .map(|n| match n {
                Value::Bytes(b) => String::from_utf8(b.clone()).ok(),
                Value::String(s) => Some(s.clone()),
                _ => None,
            })
            .collect::<Option<Vec<String>>>()
            .ok_or_else(bad)?;
        if classes.is_empty() || classes.len() > max {
            return Err(bad());
        }
        Ok(classes)
    }

    /// Appends the images and labels of one batch file to `into`, checking the array's shape
    /// and every label.
    fn read_batch(&self, path: &Path, into: &mut Dataset) -> Result<()> {
        let dict = read_dict(path)?;
        let pixels = array_bytes(entry(&dict, "data", path)?).ok_or_else(|| {
            invalid(format!(
                "{}: 'data' is not a C-ordered uint8 array of N x {PIXELS}, N at least 1 \
                 (numpy's, as pickled)",
                path.display()
            ))
        })?;
        let key = self.labels_key;
        let labels = labels(entry(&dict, key, path)?, into.classes.len())
            .map_err(|why| invalid(format!("{}: '{key}' {why}", path.display())))?;
        if labels.len() * PIXELS != pixels.len() {
            return Err(invalid(format!(
                "{}: {} labels for {} images",
                path.display(),
                labels.len(),
                pixels.len() / PIXELS
            )));
        }
        into.images.extend_from_slice(pixels);
        into.labels.extend(labels);
        Ok(())
    }

    /// A pickle: the file opens with the PROTO opcode of protocols 2 and up (not any file
    /// that happens to be called `meta`).
    fn is_mark(&self, path: &Path) -> bool {
        let mut first = [0u8; 1];
        let read = fs::File::open(path).and_then(|mut f| f.read_exact(&mut first));
        read.is_ok() && first[0] == 0x80
    }
}

/// The dict pickled in `path`.
fn read_dict(path: &Path) -> Result<Dict> {
    let bytes = fs::read(path).map_err(|e| io_err(path, "cannot read", e))?;
    // numpy's array is a REDUCE of a global serde-pickle does not know, whose stand-in the
    // BUILD after it replaces by the array's state: the state is what is read. The options
    // only keep a REDUCE without a BUILD from being an error or dropping its arguments.
    let options = DeOptions::new()
        .keep_restore_state()
        .replace_unresolved_globals();
    match serde_pickle::value_from_slice(&bytes, options) {
        Ok(Value::Dict(d)) => Ok(d),
        Ok(_) => Err(invalid(format!(
            "{}: not a CIFAR pickle: it holds no dict",
            path.display()
        ))),
        Err(e) => {
            // its message may quote a value off the stack: the pixels, megabytes of them
            let why: String = e.to_string().chars().take(200).collect();
            Err(invalid(format!(
                "{}: not a readable pickle: {why}",
                path.display()
            )))
        }
    }
}

/// The entry `key` of a dict pickled by Python 2 (byte-string keys) or 3 (str keys).
fn entry<'d>(dict: &'d Dict, key: &str, path: &Path) -> Result<&'d Value> {
    let as_bytes = HashableValue::Bytes(key.as_bytes().to_vec());
    let as_str = HashableValue::String(key.to_string());
    dict.get(&as_bytes)
        .or_else(|| dict.get(&as_str))
        .ok_or_else(|| invalid(format!("{}: no '{key}' in it", path.display())))
}

/// The bytes of a pickled numpy array of N x 3072 bytes, N at least 1: the state `(version,
/// shape, dtype, is_fortran, bytes)`, C order, one byte an element (the dtype's byte order
/// '|'; that it is uint8 and not int8 went with the REDUCE's arguments), exactly N x 3072 of
/// them.
fn array_bytes(v: &Value) -> Option<&[u8]> {
    let Value::Tuple(state) = v else {
        return None;
    };
    let [_, Value::Tuple(shape), Value::Tuple(dtype), Value::Bool(false), Value::Bytes(bytes)] =
        &state[..]
    else {
        return None;
    };
    let one_byte = matches!(dtype.get(1), Some(Value::Bytes(b)) if b == b"|")
        || matches!(dtype.get(1), Some(Value::String(s)) if s == "|");
    if !one_byte {
        return None;
    }
    let dims: Vec<i64> = shape
        .iter()
        .map(|d| match d {
            Value::I64(d) => Some(*d),
            _ => None,
        })
        .collect::<Option<_>>()?;
    let [rows, cols] = dims[..] else {
        return None;
    };
    let rows = usize::try_from(rows).ok().filter(|&r| r > 0)?;
    let fits = cols == PIXELS as i64 && rows.checked_mul(PIXELS) == Some(bytes.len());
    fits.then_some(bytes.as_slice())
}

/// The labels of a batch, each below `classes`; else what is wrong with them.
fn labels(v: &Value, classes: usize) -> std::result::Result<Vec<u8>, String> {
    let Value::List(items) = v else {
        return Err("is not a list".into());
    };
    let label = |(i, l): (usize, &Value)| match l {
        Value::I64(l) if (0..classes as i64).contains(l) => Ok(*l as u8),
        other => Err(format!(
            "[{i}] is {}: a label must be a class index below {classes}",
            describe(other)
        )),
    };
    items.iter().enumerate().map(label).collect()
}

/// A label as an error names it: the number, else its kind (not a whole list or array).
fn describe(v: &Value) -> String {
    match v {
        Value::I64(i) => i.to_string(),
        Value::Int(_) => "an int beyond 64 bits".into(),
        Value::F64(f) => format!("the float {f}"),
        Value::None => "None".into(),
        Value::Bool(b) => format!("{b}"),
        Value::String(_) | Value::Bytes(_) => "a string".into(),
        _ => "a container".into(),
    }
}
