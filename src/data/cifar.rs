//! The official CIFAR-10 binary layout: records of 1 label byte + 1024 R + 1024 G + 1024 B bytes.

use std::fs;
use std::path::{Path, PathBuf};

use super::{invalid, io_err, Dataset, Split};
use crate::Result;

/// Name of the folder the official archive unpacks to.
pub const CIFAR_DIR: &str = "cifar-10-batches-bin";
/// Bytes of one record: 1 label byte + 3 x 32 x 32 pixel bytes.
pub const CIFAR_RECORD: usize = 1 + PIXELS;

const SIDE: usize = 32;
pub(super) const PIXELS: usize = 3 * SIDE * SIDE;
const MAX_CLASSES: usize = 10;
const TRAIN_FILES: [&str; 5] = [
    "data_batch_1.bin",
    "data_batch_2.bin",
    "data_batch_3.bin",
    "data_batch_4.bin",
    "data_batch_5.bin",
];
const TEST_FILE: &str = "test_batch.bin";
const META_FILE: &str = "batches.meta.txt";

/// True when `dir` or `dir/cifar-10-batches-bin` holds any file of the binary layout.
pub(super) fn looks_binary(dir: &Path) -> bool {
    dir.join(CIFAR_DIR).is_dir() || has_binary_file(dir)
}

fn has_binary_file(dir: &Path) -> bool {
    TRAIN_FILES
        .iter()
        .chain([&TEST_FILE, &META_FILE])
        .any(|f| dir.join(f).is_file())
}

/// The folder holding the .bin files: `dir` itself when it has them, else `dir/cifar-10-batches-bin`.
fn batches_dir(dir: &Path) -> PathBuf {
    if !has_binary_file(dir) && dir.join(CIFAR_DIR).is_dir() {
        dir.join(CIFAR_DIR)
    } else {
        dir.to_path_buf()
    }
}

/// Loads the official CIFAR-10 binary layout from `dir` or `dir/cifar-10-batches-bin`.
pub fn load_cifar_binary(dir: &Path) -> Result<Split> {
    let dir = batches_dir(dir);
    let classes = read_meta(&dir.join(META_FILE))?;
    let mut train = empty(&classes);
    for f in TRAIN_FILES {
        read_batch(&dir.join(f), &mut train)?;
    }
    let test = load_cifar_test_batch(&dir)?;
    Ok(Split { train, test })
}

/// The 10,000 test images of the binary layout in `dir` or `dir/cifar-10-batches-bin` alone
/// (`batches.meta.txt` and `test_batch.bin`): what an evaluation reads, so the training batches
/// need not be there.
pub fn load_cifar_test_batch(dir: &Path) -> Result<Dataset> {
    let dir = batches_dir(dir);
    let classes = read_meta(&dir.join(META_FILE))?;
    let mut test = empty(&classes);
    read_batch(&dir.join(TEST_FILE), &mut test)?;
    Ok(test)
}

pub(super) fn empty(classes: &[String]) -> Dataset {
    Dataset {
        classes: classes.to_vec(),
        height: SIDE,
        width: SIDE,
        ..Dataset::default()
    }
}

/// Class names, one a line; blank lines are ignored.
fn read_meta(path: &Path) -> Result<Vec<String>> {
    let text = fs::read_to_string(path).map_err(|e| io_err(path, "cannot read", e))?;
    let classes: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    if classes.is_empty() || classes.len() > MAX_CLASSES {
        return Err(invalid(format!(
            "{}: expected 1 to {MAX_CLASSES} class names, one a line, found {}",
            path.display(),
            classes.len()
        )));
    }
    Ok(classes)
}

/// Appends the records of one batch file to `into`, checking its size and every label.
fn read_batch(path: &Path, into: &mut Dataset) -> Result<()> {
    let bytes = fs::read(path).map_err(|e| io_err(path, "cannot read", e))?;
    parse_records(&bytes, &path.display().to_string(), into)
}

/// Appends binary records to `into`, checking their size and every label; `source` names them
/// in errors.
pub(super) fn parse_records(bytes: &[u8], source: &str, into: &mut Dataset) -> Result<()> {
    if bytes.is_empty() || !bytes.len().is_multiple_of(CIFAR_RECORD) {
        return Err(invalid(format!(
            "{source}: truncated or wrong size: {} bytes is not a positive multiple of {CIFAR_RECORD} \
             (1 label byte + {PIXELS} pixel bytes a record)",
            bytes.len()
        )));
    }
    let n = bytes.len() / CIFAR_RECORD;
    into.labels.reserve(n);
    into.images.reserve(n * PIXELS);
    for (i, rec) in bytes.chunks_exact(CIFAR_RECORD).enumerate() {
        let label = rec[0];
        if label as usize >= MAX_CLASSES {
            return Err(invalid(format!(
                "{source}: record {i}: label {label} >= {MAX_CLASSES}"
            )));
        }
        if label as usize >= into.classes.len() {
            return Err(invalid(format!(
                "{source}: record {i}: label {label} but {META_FILE} names only {} classes",
                into.classes.len()
            )));
        }
        into.labels.push(label);
        into.images.extend_from_slice(&rec[1..]);
    }
    Ok(())
}

/// Writes a Split in the official binary layout into `dir` (created if needed): the training images
/// split evenly over data_batch_1..5.bin, the test images in test_batch.bin, and batches.meta.txt.
/// Needs 32x32 images, at least 5 training and 1 test image, and at most 10 classes.
pub fn write_cifar_binary(split: &Split, dir: &Path) -> Result<()> {
    check_writable(&split.train, "train", TRAIN_FILES.len())?;
    check_writable(&split.test, "test", 1)?;
    if split.train.classes != split.test.classes {
        return Err(invalid(
            "write_cifar_binary: train and test have different classes",
        ));
    }
    fs::create_dir_all(dir).map_err(|e| io_err(dir, "cannot create directory", e))?;
    let n = split.train.len();
    let parts = TRAIN_FILES.len();
    for (k, f) in TRAIN_FILES.iter().enumerate() {
        write_batch(
            &split.train,
            k * n / parts..(k + 1) * n / parts,
            &dir.join(f),
        )?;
    }
    write_batch(&split.test, 0..split.test.len(), &dir.join(TEST_FILE))?;
    let mut meta = split.train.classes.join("\n");
    meta.push('\n');
    let path = dir.join(META_FILE);
    fs::write(&path, meta).map_err(|e| io_err(&path, "cannot write", e))
}

fn check_writable(d: &Dataset, name: &str, min: usize) -> Result<()> {
    let fail = |msg: String| Err(invalid(format!("write_cifar_binary: {name} set: {msg}")));
    if (d.height, d.width) != (SIDE, SIDE) {
        return fail(format!("images are {}x{}, need 32x32", d.height, d.width));
    }
    if d.len() < min {
        return fail(format!("{} images, need at least {min}", d.len()));
    }
    if d.images.len() != d.len() * PIXELS {
        return fail(format!(
            "{} image bytes for {} labels, need {}",
            d.images.len(),
            d.len(),
            d.len() * PIXELS
        ));
    }
    if d.classes.is_empty() || d.classes.len() > MAX_CLASSES {
        return fail(format!("{} classes, need 1 to 10", d.classes.len()));
    }
    if let Some(c) = d
        .classes
        .iter()
        .find(|c| c.trim() != c.as_str() || c.is_empty())
    {
        return fail(format!(
            "class name {c:?} is empty or has surrounding white space"
        ));
    }
    if let Some(i) = d.labels.iter().position(|&l| l as usize >= d.classes.len()) {
        return fail(format!("image {i} has label {} out of range", d.labels[i]));
    }
    Ok(())
}

fn write_batch(d: &Dataset, range: std::ops::Range<usize>, path: &Path) -> Result<()> {
    let mut out = Vec::with_capacity(range.len() * CIFAR_RECORD);
    for i in range {
        out.push(d.labels[i]);
        out.extend_from_slice(d.image(i));
    }
    fs::write(path, out).map_err(|e| io_err(path, "cannot write", e))
}
