//! A small real subset of CIFAR-10 (from ../shared/data), extracted into a temporary image folder.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

/// The tarball of real CIFAR-10 JPEGs beside the repository (CI: X/main with X/shared).
pub fn tarball() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/cifar10-jpeg.tar.gz")
}

/// Extracts the first `train` and `test` images of every class into a new temporary directory
/// laid out as `train/<class>/*.jpg` and `test/<class>/*.jpg`.
pub fn subset(train: usize, test: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let f =
        std::fs::File::open(tarball()).unwrap_or_else(|e| panic!("{}: {e}", tarball().display()));
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(f));
    let mut counts: HashMap<(String, String), usize> = HashMap::new();
    for entry in ar.entries().expect("tar entries") {
        let mut entry = entry.expect("tar entry");
        let path = entry.path().expect("path").into_owned();
        let parts: Vec<String> = path
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        // .../{train,test}/<class>/<file>.jpg
        let n = parts.len();
        if n < 3 || !parts[n - 1].ends_with(".jpg") {
            continue;
        }
        let (split, class) = (parts[n - 3].clone(), parts[n - 2].clone());
        let limit = match split.as_str() {
            "train" => train,
            "test" => test,
            _ => continue,
        };
        let c = counts.entry((split.clone(), class.clone())).or_default();
        if *c >= limit {
            continue;
        }
        *c += 1;
        let out = dir.path().join(&split).join(&class);
        std::fs::create_dir_all(&out).unwrap();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).unwrap();
        std::fs::write(out.join(&parts[n - 1]), bytes).unwrap();
    }
    dir
}
