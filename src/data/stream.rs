//! Photo folders read as they are trained on: the files are listed once (torchvision
//! ImageFolder's classes and order), and each image is decoded and transformed when a batch needs
//! it, so memory does not grow with the number of images.
//!
//! A file that cannot be decoded in the middle of an epoch is skipped with a warning naming it
//! (once per file): its place in the batch goes to the next readable image of its class. A
//! 90-epoch ImageNet run is not lost to one corrupt JPEG, and the substitution is the same on
//! every run, so resuming stays exact.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::folder::{class_files, read_rgb, split_classes};
use super::{invalid, ImageSource};
use crate::error::Result;
use crate::preprocess::transforms::{write_chw, Transform};
use crate::preprocess::{Normalize, Preprocess};
use crate::rng::SplitMix64;

/// How many unreadable files in a row end the run instead of being skipped.
const MAX_SKIPPED_IN_A_ROW: usize = 16;

/// The files of one split of a photo folder, read on demand.
pub struct FolderSet {
    root: PathBuf,
    /// Paths relative to `root`, back to back (one string, not a PathBuf per image).
    names: String,
    /// End of each name in `names`.
    ends: Vec<u32>,
    labels: Vec<u32>,
    classes: Vec<String>,
    train: Transform,
    eval: Transform,
    /// Which transform `load` applies.
    training: bool,
    /// Files already warned about.
    warned: Arc<Mutex<HashSet<PathBuf>>>,
    /// Warnings not yet taken by the caller (shared by the sets selected from this one).
    warnings: Arc<Mutex<Vec<String>>>,
}

impl FolderSet {
    /// Lists `dir/<class>/**` for `classes` (in that order, files sorted by path); fails on an
    /// empty class folder.
    pub fn open(
        dir: &Path,
        classes: &[String],
        train: Transform,
        eval: Transform,
        training: bool,
    ) -> Result<FolderSet> {
        let mut set = FolderSet {
            root: dir.to_path_buf(),
            names: String::new(),
            ends: Vec::new(),
            labels: Vec::new(),
            classes: classes.to_vec(),
            train,
            eval,
            training,
            warned: Arc::default(),
            warnings: Arc::default(),
        };
        for (label, class) in classes.iter().enumerate() {
            for path in class_files(&dir.join(class))? {
                let rel = path.strip_prefix(dir).unwrap_or(&path);
                let name = rel.to_str().ok_or_else(|| {
                    invalid(format!("{}: file name is not UTF-8", path.display()))
                })?;
                set.push(name, label as u32)?;
            }
        }
        Ok(set)
    }

    fn push(&mut self, name: &str, label: u32) -> Result<()> {
        self.names.push_str(name);
        let end = u32::try_from(self.names.len())
            .map_err(|_| invalid(format!("{}: too many files", self.root.display())))?;
        self.ends.push(end);
        self.labels.push(label);
        Ok(())
    }

    /// The path of image `i`.
    pub fn path(&self, i: usize) -> PathBuf {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        self.root.join(&self.names[start..self.ends[i] as usize])
    }

    fn transform(&self) -> &Transform {
        if self.training {
            &self.train
        } else {
            &self.eval
        }
    }

    fn load_file(&self, i: usize, seed: u64, out: &mut [u8]) -> Result<()> {
        let path = self.path(i);
        // a decoder that panics on a malformed file makes it unreadable, not the run dead
        let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            read_rgb(&path).map(|img| self.transform().apply(img, &mut SplitMix64(seed)))
        }));
        let img = decoded.unwrap_or_else(|_| {
            Err(invalid(format!(
                "{}: the image decoder failed on it",
                path.display()
            )))
        })?;
        write_chw(&img, out);
        Ok(())
    }

    /// The images tried for image `i`: itself, then the next ones of its class in the list
    /// (wrapping around), at most [`MAX_SKIPPED_IN_A_ROW`].
    fn candidates(&self, i: usize) -> impl Iterator<Item = usize> + '_ {
        let label = self.labels[i];
        (0..self.len())
            .map(move |k| (i + k) % self.len())
            .filter(move |&j| self.labels[j] == label)
            .take(MAX_SKIPPED_IN_A_ROW)
    }

    fn warn_once(&self, i: usize, e: &crate::Error) {
        let mut warned = self.warned.lock().unwrap_or_else(|p| p.into_inner());
        if warned.insert(self.path(i)) {
            let mut w = self.warnings.lock().unwrap_or_else(|p| p.into_inner());
            w.push(format!(
                "skipping {e}; the next image of its class takes its place"
            ));
        }
    }
}

impl ImageSource for FolderSet {
    fn len(&self) -> usize {
        self.labels.len()
    }
    fn label(&self, i: usize) -> u32 {
        self.labels[i]
    }
    fn classes(&self) -> &[String] {
        &self.classes
    }
    fn size(&self) -> (usize, usize) {
        self.transform().out_size()
    }
    fn load(&self, i: usize, seed: u64, out: &mut [u8]) -> Result<()> {
        let (mut first_err, mut tries) = (None, 0);
        for j in self.candidates(i) {
            tries += 1;
            match self.load_file(j, seed, out) {
                Ok(()) => return Ok(()),
                Err(e) => {
                    self.warn_once(j, &e);
                    first_err.get_or_insert(e);
                }
            }
        }
        let e = first_err.expect("an image is its own first candidate");
        Err(invalid(format!(
            "{e} (and the {} images of its class after it could not be read either)",
            tries - 1
        )))
    }
    fn decodes(&self) -> bool {
        true
    }
    fn preprocess(&self) -> Preprocess {
        Preprocess::normalize_only(Normalize::IMAGENET)
    }
    fn eval_input(&self) -> (Option<usize>, (usize, usize)) {
        match self.eval {
            Transform::ResizeCenterCrop { resize, crop, .. } => (Some(resize), (crop, crop)),
            other => (None, other.out_size()),
        }
    }
    fn interpolation(&self) -> Option<crate::preprocess::Interpolation> {
        Some(self.eval.interpolation())
    }
    fn take_warnings(&self) -> Vec<String> {
        std::mem::take(&mut *self.warnings.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn select(&self, idx: &[usize], train: bool) -> Arc<dyn ImageSource> {
        let mut set = FolderSet {
            root: self.root.clone(),
            names: String::new(),
            ends: Vec::with_capacity(idx.len()),
            labels: Vec::with_capacity(idx.len()),
            classes: self.classes.clone(),
            train: self.train,
            eval: self.eval,
            training: train,
            warned: Arc::clone(&self.warned),
            warnings: Arc::clone(&self.warnings),
        };
        for &i in idx {
            let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
            let name = self.names[start..self.ends[i] as usize].to_string();
            // the names fit: they are a subset of names that did
            let _ = set.push(&name, self.labels[i]);
        }
        Arc::new(set)
    }
}

/// The training and test photos of `dir/train/<class>/*` and `dir/test/<class>/*` (or `val/`), listed but not
/// decoded: each image is decoded and transformed (`train` for the training set, `eval` for the
/// test set) when a batch needs it.
pub fn open_image_folder(
    dir: &Path,
    train: Transform,
    eval: Transform,
) -> Result<(FolderSet, FolderSet)> {
    let classes = split_classes(dir)?;
    let train_set = FolderSet::open(&dir.join("train"), &classes, train, eval, true)?;
    let held_out = super::folder::held_out_dir(dir);
    let test_set = FolderSet::open(&held_out, &classes, train, eval, false)?;
    Ok((train_set, test_set))
}

/// The held-out photos of `dir` alone (`test/<class>/*` or `val/`), listed for evaluation with
/// `eval`: `train/` need not be there (where it is, its class folders must be the same).
pub fn open_held_out_folder(dir: &Path, eval: Transform) -> Result<FolderSet> {
    let classes = super::folder::held_out_classes(dir)?;
    let held_out = super::folder::held_out_dir(dir);
    FolderSet::open(&held_out, &classes, eval, eval, false)
}
