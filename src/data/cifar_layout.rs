//! What the CIFAR layouts share, the official binary ones (`cifar.rs`) and torchvision's pickles
//! (`cifar_python.rs`): a folder their archive unpacks to, training and test files, a file of
//! class names, and how a folder is recognised as theirs.

use std::path::{Path, PathBuf};

use super::{Dataset, Split};
use crate::Result;

/// Side of a CIFAR image in pixels.
pub(super) const SIDE: usize = 32;
/// Bytes of one CIFAR image: 3 x 32 x 32, the R, then the G, then the B plane.
pub(super) const PIXELS: usize = 3 * SIDE * SIDE;

/// Where a CIFAR layout keeps what.
pub(super) struct Files {
    /// The folder its archive unpacks to.
    pub dir: &'static str,
    pub train: &'static [&'static str],
    pub test: &'static str,
    /// The class names.
    pub meta: &'static str,
    /// The files that say a folder holds this layout, any one of them (CIFAR-100's `train` and
    /// `test` are common names: only its class names say).
    pub marks: &'static [&'static str],
}

/// A CIFAR layout: its files and how to read them.
pub(super) trait CifarLayout: Sync {
    fn files(&self) -> &Files;
    /// The class names in `path`.
    fn read_meta(&self, path: &Path) -> Result<Vec<String>>;
    /// Appends the images and labels of the batch file `path` to `into`.
    fn read_batch(&self, path: &Path, into: &mut Dataset) -> Result<()>;
    /// Whether `path`, named as one of the marks, is a file of this layout.
    fn is_mark(&self, path: &Path) -> bool {
        path.is_file()
    }

    /// True when `dir` holds its folder or its files.
    fn found_in(&self, dir: &Path) -> bool {
        dir.join(self.files().dir).is_dir() || self.has_mark(dir)
    }

    fn has_mark(&self, dir: &Path) -> bool {
        let marks = self.files().marks.iter();
        marks.into_iter().any(|f| self.is_mark(&dir.join(f)))
    }

    /// The folder holding its files: `dir` itself when it has them, else `dir/<its folder>`.
    fn batches_dir(&self, dir: &Path) -> PathBuf {
        let sub = dir.join(self.files().dir);
        match !self.has_mark(dir) && sub.is_dir() {
            true => sub,
            false => dir.to_path_buf(),
        }
    }

    /// The training and test images in `dir` or its folder.
    fn load_split(&self, dir: &Path) -> Result<Split> {
        let (dir, files) = (self.batches_dir(dir), self.files());
        let classes = self.read_meta(&dir.join(files.meta))?;
        let mut train = empty(&classes);
        for f in files.train {
            self.read_batch(&dir.join(f), &mut train)?;
        }
        let mut test = empty(&classes);
        self.read_batch(&dir.join(files.test), &mut test)?;
        Ok(Split { train, test })
    }

    /// The test images alone, in `dir` or its folder: what an evaluation reads, so the training
    /// files need not be there.
    fn load_test(&self, dir: &Path) -> Result<Dataset> {
        let (dir, files) = (self.batches_dir(dir), self.files());
        let classes = self.read_meta(&dir.join(files.meta))?;
        let mut test = empty(&classes);
        self.read_batch(&dir.join(files.test), &mut test)?;
        Ok(test)
    }
}

/// Every CIFAR layout read here.
pub(super) fn all() -> [&'static dyn CifarLayout; 4] {
    [
        &super::cifar::CIFAR10,
        &super::cifar::CIFAR100,
        &super::cifar_python::CIFAR10,
        &super::cifar_python::CIFAR100,
    ]
}

/// An empty set of 32x32 images of `classes`.
pub(super) fn empty(classes: &[String]) -> Dataset {
    Dataset {
        classes: classes.to_vec(),
        height: SIDE,
        width: SIDE,
        ..Dataset::default()
    }
}
