//! The official binary layouts of CIFAR-10 (records of 1 label byte + 1024 R + 1024 G + 1024 B
//! bytes) and CIFAR-100 (a coarse and a fine label byte, then the same pixels; the fine label is
//! the class, as torchvision's CIFAR100 takes it).

use std::fs;
use std::path::Path;

use super::cifar_layout::{CifarLayout, Files, PIXELS, SIDE};
use super::{invalid, io_err, Dataset, Split};
use crate::Result;

/// Name of the folder the official CIFAR-10 archive unpacks to.
pub const CIFAR_DIR: &str = "cifar-10-batches-bin";
/// Bytes of one CIFAR-10 record: 1 label byte + 3 x 32 x 32 pixel bytes.
pub const CIFAR_RECORD: usize = 1 + PIXELS;

const TRAIN_FILES: [&str; 5] = [
    "data_batch_1.bin",
    "data_batch_2.bin",
    "data_batch_3.bin",
    "data_batch_4.bin",
    "data_batch_5.bin",
];
const TEST_FILE: &str = "test_batch.bin";
const META_FILE: &str = "batches.meta.txt";

/// One of the official binary layouts.
pub(super) struct BinaryLayout {
    files: Files,
    /// Label bytes before the pixels of a record; the last is the class.
    label_bytes: usize,
    max_classes: usize,
}

/// CIFAR-10's.
pub(super) const CIFAR10: BinaryLayout = BinaryLayout {
    files: Files {
        dir: CIFAR_DIR,
        train: &TRAIN_FILES,
        test: TEST_FILE,
        meta: META_FILE,
        marks: &[
            "data_batch_1.bin",
            "data_batch_2.bin",
            "data_batch_3.bin",
            "data_batch_4.bin",
            "data_batch_5.bin",
            TEST_FILE,
            META_FILE,
        ],
    },
    label_bytes: 1,
    max_classes: 10,
};

/// CIFAR-100's (`cifar-100-binary.tar.gz`).
pub(super) const CIFAR100: BinaryLayout = BinaryLayout {
    files: Files {
        dir: "cifar-100-binary",
        train: &["train.bin"],
        test: "test.bin",
        meta: "fine_label_names.txt",
        marks: &["fine_label_names.txt"],
    },
    label_bytes: 2,
    max_classes: 100,
};

/// The binary layout in `dir` (or its folder), else CIFAR-10's (whose errors name its files).
fn layout_in(dir: &Path) -> &'static BinaryLayout {
    [&CIFAR10, &CIFAR100]
        .into_iter()
        .find(|l| l.found_in(dir))
        .unwrap_or(&CIFAR10)
}

/// Loads the official binary layout of CIFAR-10 or CIFAR-100 from `dir` or its folder
/// (`cifar-10-batches-bin`, `cifar-100-binary`).
pub fn load_cifar_binary(dir: &Path) -> Result<Split> {
    layout_in(dir).load_split(dir)
}

/// The test images of the binary layout in `dir` or its folder alone (CIFAR-10's
/// `batches.meta.txt` and `test_batch.bin`, CIFAR-100's `fine_label_names.txt` and
/// `test.bin`): what an evaluation reads, so the training batches need not be there.
pub fn load_cifar_test_batch(dir: &Path) -> Result<Dataset> {
    layout_in(dir).load_test(dir)
}

impl CifarLayout for BinaryLayout {
    fn files(&self) -> &Files {
        &self.files
    }

    /// Class names, one a line; blank lines are ignored.
    fn read_meta(&self, path: &Path) -> Result<Vec<String>> {
        let text = fs::read_to_string(path).map_err(|e| io_err(path, "cannot read", e))?;
        let classes: Vec<String> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect();
        let max = self.max_classes;
        if classes.is_empty() || classes.len() > max {
            return Err(invalid(format!(
                "{}: expected 1 to {max} class names, one a line, found {}",
                path.display(),
                classes.len()
            )));
        }
        Ok(classes)
    }

    /// Appends the records of one batch file to `into`, checking its size and every label.
    fn read_batch(&self, path: &Path, into: &mut Dataset) -> Result<()> {
        let bytes = fs::read(path).map_err(|e| io_err(path, "cannot read", e))?;
        self.parse_records(&bytes, &path.display().to_string(), into)
    }
}

impl BinaryLayout {
    /// Appends binary records to `into`, checking their size and every label; `source` names
    /// them in errors.
    pub(super) fn parse_records(
        &self,
        bytes: &[u8],
        source: &str,
        into: &mut Dataset,
    ) -> Result<()> {
        let label_bytes = self.label_bytes;
        let record = label_bytes + PIXELS;
        if bytes.is_empty() || !bytes.len().is_multiple_of(record) {
            return Err(invalid(format!(
                "{source}: truncated or wrong size: {} bytes is not a positive multiple of {record} \
                 ({label_bytes} label byte(s) + {PIXELS} pixel bytes a record)",
                bytes.len()
            )));
        }
        let n = bytes.len() / record;
        into.labels.reserve(n);
        into.images.reserve(n * PIXELS);
        for (i, rec) in bytes.chunks_exact(record).enumerate() {
            let label = rec[label_bytes - 1];
            if label as usize >= into.classes.len() {
                return Err(invalid(format!(
                    "{source}: record {i}: label {label} but {} names only {} classes",
                    self.files.meta,
                    into.classes.len()
                )));
            }
            into.labels.push(label);
            into.images.extend_from_slice(&rec[label_bytes..]);
        }
        Ok(())
    }
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
    if d.classes.is_empty() || d.classes.len() > CIFAR10.max_classes {
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
