//! torchvision's CIFAR-10 layout, `cifar-10-batches-py/`: what
//! `torchvision.datasets.CIFAR10(root, download=True)` unpacks from `cifar-10-python.tar.gz`, so
//! that `--data root` works where a PyTorch user already has the data.
//!
//! Each file is a Python pickle (protocol 2, written by Python 2) of a dict: `data`, a numpy
//! uint8 array of N x 3072 (each row 1024 R, 1024 G and 1024 B bytes, the binary layout's
//! order), and `labels`, a list of N ints; `batches.meta` holds `label_names`. `serde-pickle`
//! reads them as values: no Python code runs, and numpy's array arrives as the state its
//! `__reduce__` wrote, `(version, shape, dtype, is_fortran, bytes)`.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde_pickle::{DeOptions, HashableValue, Value};

use super::cifar::{empty, PIXELS};
use super::{invalid, io_err, Dataset, Split};
use crate::Result;

/// The folder torchvision's CIFAR-10 archive unpacks to.
pub const CIFAR_PY_DIR: &str = "cifar-10-batches-py";

/// A pickled dict.
type Dict = BTreeMap<HashableValue, Value>;

/// Where one of torchvision's layouts keeps what.
struct PickledLayout {
    /// The folder its archive unpacks to.
    dir: &'static str,
    train: &'static [&'static str],
    test: &'static str,
    meta: &'static str,
    /// The class names' entry in `meta`, and the labels' in a batch.
    names_key: &'static str,
    labels_key: &'static str,
    max_classes: usize,
    /// The files that say a folder holds this layout (CIFAR-100's `train` and `test` are
    /// common names: only its `meta` says).
    marks: &'static [&'static str],
}

/// `torchvision.datasets.CIFAR10`'s.
const CIFAR10: PickledLayout = PickledLayout {
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
    names_key: "label_names",
    labels_key: "labels",
    max_classes: 10,
    marks: &[
        "data_batch_1",
        "data_batch_2",
        "data_batch_3",
        "data_batch_4",
        "data_batch_5",
        "test_batch",
        "batches.meta",
    ],
};

/// `torchvision.datasets.CIFAR100`'s: its 100 fine labels, as torchvision takes them.
const CIFAR100: PickledLayout = PickledLayout {
    dir: "cifar-100-python",
    train: &["train"],
    test: "test",
    meta: "meta",
    names_key: "fine_label_names",
    labels_key: "fine_labels",
    max_classes: 100,
    marks: &["meta"],
};

impl PickledLayout {
    fn found_in(&self, dir: &Path) -> bool {
        dir.join(self.dir).is_dir() || self.has_file(dir)
    }

    fn has_file(&self, dir: &Path) -> bool {
        self.marks.iter().any(|f| dir.join(f).is_file())
    }

    /// The folder holding the pickles: `dir` itself when it has them, else its sub-folder.
    fn batches_dir(&self, dir: &Path) -> PathBuf {
        if !self.has_file(dir) && dir.join(self.dir).is_dir() {
            dir.join(self.dir)
        } else {
            dir.to_path_buf()
        }
    }

    /// The test images alone, with the class names.
    fn load_test(&self, dir: &Path) -> Result<Dataset> {
        let classes = self.read_meta(&dir.join(self.meta))?;
        let mut test = empty(&classes);
        self.read_batch(&dir.join(self.test), &mut test)?;
        Ok(test)
    }
}

/// torchvision's layout in `dir` (or its sub-folder), if any.
fn layout_in(dir: &Path) -> Option<&'static PickledLayout> {
    [&CIFAR10, &CIFAR100].into_iter().find(|l| l.found_in(dir))
}

/// True when `dir` or its sub-folder holds any file of torchvision's layouts.
pub(super) fn looks_python(dir: &Path) -> bool {
    layout_in(dir).is_some()
}

/// Loads torchvision's CIFAR-10 or CIFAR-100 from `dir` or its sub-folder
/// (`cifar-10-batches-py`, `cifar-100-python`): CIFAR-10's 50,000 training images of
/// `data_batch_1` ... `data_batch_5` and 10,000 of `test_batch`, CIFAR-100's `train` and `test`.
pub fn load_cifar_python(dir: &Path) -> Result<Split> {
    let layout = layout_in(dir).unwrap_or(&CIFAR10);
    let dir = layout.batches_dir(dir);
    let classes = layout.read_meta(&dir.join(layout.meta))?;
    let mut train = empty(&classes);
    for f in layout.train {
        layout.read_batch(&dir.join(f), &mut train)?;
    }
    let mut test = empty(&classes);
    layout.read_batch(&dir.join(layout.test), &mut test)?;
    Ok(Split { train, test })
}

/// The test images of torchvision's layout alone (`batches.meta` and `test_batch`, or
/// CIFAR-100's `meta` and `test`).
pub fn load_cifar_python_test(dir: &Path) -> Result<Dataset> {
    let layout = layout_in(dir).unwrap_or(&CIFAR10);
    layout.load_test(&layout.batches_dir(dir))
}

/// The dict pickled in `path`.
fn read_dict(path: &Path) -> Result<Dict> {
    let bytes = fs::read(path).map_err(|e| io_err(path, "cannot read", e))?;
    // numpy's array is a REDUCE of a global serde-pickle does not know, then a BUILD: keep the
    // state BUILD gives it instead of dropping it
    let options = DeOptions::new()
        .keep_restore_state()
        .replace_unresolved_globals();
    match serde_pickle::value_from_slice(&bytes, options) {
        Ok(Value::Dict(d)) => Ok(d),
        Ok(_) => Err(invalid(format!(
            "{}: not a CIFAR-10 pickle: it holds no dict",
            path.display()
        ))),
        Err(e) => Err(invalid(format!(
            "{}: not a readable pickle: {e}",
            path.display()
        ))),
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

impl PickledLayout {
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
                "{}: 'data' is not a uint8 array of N x {PIXELS} (numpy's, as pickled)",
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
}

/// The bytes of a pickled numpy array of N x 3072 bytes: the state `(version, shape, dtype,
/// is_fortran, bytes)`, whose bytes must be exactly N x 3072 (one byte an element: uint8).
fn array_bytes(v: &Value) -> Option<&[u8]> {
    let Value::Tuple(state) = v else {
        return None;
    };
    let (Some(Value::Tuple(shape)), Some(Value::Bytes(bytes))) = (state.get(1), state.last())
    else {
        return None;
    };
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
    let fits = cols == PIXELS as i64 && rows >= 0;
    (fits && bytes.len() as i64 == rows * cols).then_some(bytes.as_slice())
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
