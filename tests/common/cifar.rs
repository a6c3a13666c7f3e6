//! Real CIFAR-10 images that ship with the repository, so every test runs from a clone alone:
//! the browser demo's bundled subset (`web/data/train.bin`, `test.bin`: 200 + 50 images a class in
//! CIFAR-10's binary record format) written out as small image folders, and 20 + 10 original JPEGs
//! a class under `tests/data/cifar10-jpeg/` for the decoder tests.

use std::path::{Path, PathBuf};

/// CIFAR-10's classes in label order.
pub const CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

/// Bytes of one binary record: a label byte, then 1024 R, 1024 G and 1024 B bytes.
const RECORD: usize = 1 + 3 * 1024;

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// The folder of original CIFAR-10 JPEGs in the repository: `train/<class>/0000..0019.jpg`,
/// `test/<class>/0000..0009.jpg`.
pub fn jpeg_fixture() -> PathBuf {
    repo("tests/data/cifar10-jpeg")
}

/// The first `per_class` images of every class of a bundled binary file, as (label, CHW bytes).
fn bundled(file: &str, per_class: usize) -> Vec<(usize, Vec<u8>)> {
    let path = repo(&format!("web/data/{file}"));
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(bytes.len() % RECORD, 0, "{}", path.display());
    let mut taken = [0usize; 10];
    let mut out = Vec::new();
    for r in bytes.chunks(RECORD) {
        let label = r[0] as usize;
        if taken[label] < per_class {
            taken[label] += 1;
            out.push((label, r[1..].to_vec()));
        }
    }
    assert!(
        taken.iter().all(|&t| t == per_class),
        "{} has fewer than {per_class} images of some class: {taken:?}",
        path.display()
    );
    out
}

/// Writes the first `train` and `test` bundled images of every class into a new temporary
/// directory laid out as `train/<class>/NNNN.png` and `test/<class>/NNNN.png` (PNG: lossless, so
/// the loader sees the bundled pixels exactly). At most 200 and 50 a class.
pub fn subset(train: usize, test: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    for (split, file, per) in [("train", "train.bin", train), ("test", "test.bin", test)] {
        let mut index = [0usize; 10];
        for (label, chw) in bundled(file, per) {
            let out = dir.path().join(split).join(CLASSES[label]);
            std::fs::create_dir_all(&out).unwrap();
            let img = image::RgbImage::from_fn(32, 32, |x, y| {
                let p = (y * 32 + x) as usize;
                image::Rgb([chw[p], chw[1024 + p], chw[2048 + p]])
            });
            img.save(out.join(format!("{:04}.png", index[label])))
                .unwrap();
            index[label] += 1;
        }
    }
    dir
}

/// `split` as CIFAR-10's binary archive (`cifar-10-batches-bin/` in a .tar.gz) and its MD5, as
/// the download serves it.
pub fn binary_archive(split: &resnet::data::Split) -> (Vec<u8>, String) {
    use md5::{Digest, Md5};
    let staging = tempfile::tempdir().unwrap();
    let dir = staging.path().join("cifar-10-batches-bin");
    resnet::data::write_cifar_binary(split, &dir).unwrap();
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut builder = tar::Builder::new(gz);
    builder
        .append_dir_all("cifar-10-batches-bin", &dir)
        .unwrap();
    let archive = builder.into_inner().unwrap().finish().unwrap();
    let md5 = format!("{:x}", Md5::digest(&archive));
    (archive, md5)
}
