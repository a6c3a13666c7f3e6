//! Training data (native only): CIFAR-10 and CIFAR-100 in their official binary layouts or
//! torchvision's pickles, or any image folder, as u8 images in CHW planar order, plus the download
//! of the official CIFAR-10 archive.
//!
//! Every failure caused by the input (a missing, truncated or unreadable file, a bad label, an empty
//! class folder, ...) is an [`Error::Invalid`] with a one-line message naming the file at fault.

mod augmented;
mod bundled;
mod cifar;
mod cifar_layout;
mod cifar_python;
mod download;
mod fetch;
mod folder;
mod jpeg;
mod prefetch;
mod pretrained;
mod source;
mod stream;
mod torchvision;

use std::path::Path;

use crate::{Error, Result};
use cifar_layout::CifarLayout;

pub use augmented::{augmentation_rng, auto_augmented};
pub use bundled::bundled_cifar10;
pub use cifar::{
    load_cifar_binary, load_cifar_test_batch, write_cifar_binary, CIFAR_DIR, CIFAR_RECORD,
};
pub use cifar_python::{load_cifar_python, load_cifar_python_test, CIFAR_PY_DIR};
pub use download::{default_cache_dir, download_cifar10, parse_md5, CIFAR10_MD5, CIFAR10_URL};
pub use fetch::{fetch, Digest, Transfer};
pub use folder::{load_held_out_folder, load_image_folder, load_image_folder_with, read_rgb};
pub use prefetch::{assemble, default_workers, queue_depth, Batch, BatchJob, Prefetch};
pub use pretrained::{fetch_pretrained, file_sha256, is_url, parse_sha256, weights_file};
pub use source::{ImageSource, Sources};
pub use stream::{open_held_out_folder, open_image_folder, FolderSet};
pub use torchvision::{torchvision_weights, TorchvisionWeights};

/// Images as u8, each image CHW planar (3 x H x W: all R bytes, then G, then B) = CIFAR's record order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Dataset {
    /// All images back to back, `3 * height * width` bytes each.
    pub images: Vec<u8>,
    /// One class index per image, indexing `classes`.
    pub labels: Vec<u8>,
    /// Class names; label `i` means `classes[i]`.
    pub classes: Vec<String>,
    /// Image height in pixels.
    pub height: usize,
    /// Image width in pixels.
    pub width: usize,
}

impl Dataset {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when there are no images.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Bytes of one image: `3 * height * width`.
    pub fn image_bytes(&self) -> usize {
        3 * self.height * self.width
    }

    /// Image `i` as `3 * height * width` CHW bytes; panics when `i >= len()`, like slice indexing.
    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.image_bytes();
        &self.images[i * n..(i + 1) * n]
    }

    /// The first `n` images (all of them when `n >= len()`).
    pub fn subset(&self, n: usize) -> Dataset {
        let n = n.min(self.len());
        Dataset {
            images: self.images[..n * self.image_bytes()].to_vec(),
            labels: self.labels[..n].to_vec(),
            classes: self.classes.clone(),
            height: self.height,
            width: self.width,
        }
    }

    /// The images at `idx`, in that order.
    pub fn select(&self, idx: &[usize]) -> Dataset {
        let mut images = Vec::with_capacity(idx.len() * self.image_bytes());
        for &i in idx {
            images.extend_from_slice(self.image(i));
        }
        Dataset {
            images,
            labels: idx.iter().map(|&i| self.labels[i]).collect(),
            classes: self.classes.clone(),
            height: self.height,
            width: self.width,
        }
    }

    /// Number of images of each class, indexed like `classes`.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.classes.len()];
        for &l in &self.labels {
            if let Some(c) = counts.get_mut(l as usize) {
                *c += 1;
            }
        }
        counts
    }
}

/// A training set and a test set with the same classes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Split {
    /// Images to train on.
    pub train: Dataset,
    /// Held-out images to evaluate on.
    pub test: Dataset,
}

/// Detects the layout: the official CIFAR-10 binary layout (`dir` itself or `dir/cifar-10-batches-bin`
/// with `data_batch_1..5.bin`, `test_batch.bin`, `batches.meta.txt`; CIFAR-100's
/// `cifar-100-binary` with `train.bin`, `test.bin`, `fine_label_names.txt`), torchvision's
/// (`dir` itself or `dir/cifar-10-batches-py` with the pickles `data_batch_1..5`, `test_batch`,
/// `batches.meta`; CIFAR-100's `cifar-100-python` with `train`, `test`, `meta`), or an image folder (`dir/train/<class>/*`, `dir/test/<class>/*` or
/// `dir/val/<class>/*`, classes sorted by name as torchvision's ImageFolder).
/// Image-folder images are decoded with the `image` crate, converted to RGB and resized to `size`
/// (h, w) (skipped when already that size), bilinear; the CIFAR layouts are always 32x32,
/// whatever `size` says.
pub fn load(dir: &Path, size: (usize, usize)) -> Result<Split> {
    load_with(dir, size, crate::preprocess::Interpolation::Bilinear)
}

/// [`load`], an image folder's images resized with `interpolation`.
pub fn load_with(
    dir: &Path,
    size: (usize, usize),
    interpolation: crate::preprocess::Interpolation,
) -> Result<Split> {
    match layout(dir)? {
        Layout::Cifar(cifar) => cifar.load_split(dir),
        Layout::ImageFolder => load_image_folder_with(dir, size, interpolation),
    }
}

/// The held-out images of `dir` alone, as [`load_with`] would load them: a CIFAR layout's test
/// batch or an image folder's `test/` (or `val/`). An evaluation reads only these, so the
/// training images need not be there and are not decoded.
pub fn load_test_with(
    dir: &Path,
    size: (usize, usize),
    interpolation: crate::preprocess::Interpolation,
) -> Result<Dataset> {
    match layout(dir)? {
        Layout::Cifar(cifar) => cifar.load_test(dir),
        Layout::ImageFolder => folder::load_held_out_folder(dir, size, interpolation),
    }
}

/// How a data folder is laid out.
enum Layout {
    Cifar(&'static dyn CifarLayout),
    ImageFolder,
}

/// The layout of `dir`, or an error naming it when it holds none or several (a torchvision
/// root with both CIFAR-10 and CIFAR-100, say: which one is meant is not for us to guess).
fn layout(dir: &Path) -> Result<Layout> {
    let mut found: Vec<(String, Layout)> = cifar_layout::all()
        .into_iter()
        .filter(|l| l.found_in(dir))
        .map(|l| (format!("{}/", l.files().dir), Layout::Cifar(l)))
        .collect();
    if has_split_folders(dir) {
        let folder = "an image folder (train/, test/ or val/)".to_string();
        found.push((folder, Layout::ImageFolder));
    }
    if found.len() > 1 {
        let names: Vec<&str> = found.iter().map(|(n, _)| n.as_str()).collect();
        return Err(invalid(format!(
            "{}: holds several data sets ({}): give the folder of the one to use",
            dir.display(),
            names.join(", ")
        )));
    }
    match found.pop() {
        Some((_, layout)) => Ok(layout),
        None if !dir.is_dir() => Err(invalid(format!("{}: no such directory", dir.display()))),
        None => Err(invalid(format!(
            "{}: no data set found: expected CIFAR-10's or CIFAR-100's binary layout ({CIFAR_DIR}/, \
             cifar-100-binary/ or their files), torchvision's ({CIFAR_PY_DIR}/, cifar-100-python/ \
             or their files) or an image folder (train/<class>/*, test/<class>/* or val/<class>/*)",
            dir.display()
        ))),
    }
}

/// The parameters of torchvision's ImageNet transforms: `RandomResizedCrop(train_crop)` for
/// training, `Resize(eval_resize)` + `CenterCrop(eval_crop)` for evaluation, both resampling
/// with `interpolation`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PhotoTransforms {
    pub train_crop: usize,
    /// `RandomResizedCrop`'s `scale`: the range of the crop's share of the image's area.
    pub train_crop_scale: (f64, f64),
    pub eval_resize: usize,
    pub eval_crop: usize,
    pub interpolation: crate::preprocess::Interpolation,
}

impl Default for PhotoTransforms {
    /// torchvision's ImageNet recipe: 224, 256, 224.
    fn default() -> Self {
        PhotoTransforms {
            train_crop: 224,
            train_crop_scale: crate::preprocess::transforms::DEFAULT_SCALE,
            eval_resize: 256,
            eval_crop: 224,
            interpolation: crate::preprocess::Interpolation::Bilinear,
        }
    }
}

impl PhotoTransforms {
    /// Rejects sizes no transform can produce, naming the option.
    pub fn check(&self) -> Result<()> {
        for (name, v) in [
            ("`train_crop`", self.train_crop),
            ("`eval_resize`", self.eval_resize),
            ("`eval_crop`", self.eval_crop),
        ] {
            if v == 0 || v > 4096 {
                return Err(invalid(format!("{name} {v}: must be 1 to 4096 pixels")));
            }
        }
        let (lo, hi) = self.train_crop_scale;
        if !(lo > 0.0 && lo <= hi && hi <= 1.0) {
            return Err(invalid(format!(
                "`train_crop_scale` {lo},{hi}: must be two shares of the area with 0 < min <= max <= 1"
            )));
        }
        if self.eval_crop > self.eval_resize {
            return Err(invalid(format!(
                "`eval_crop` {} is larger than `eval_resize` {}: the centre crop must fit in the resized image",
                self.eval_crop, self.eval_resize
            )));
        }
        Ok(())
    }

    /// The training transform.
    pub fn train(&self) -> crate::preprocess::transforms::Transform {
        crate::preprocess::transforms::Transform::RandomResizedCrop {
            size: self.train_crop,
            scale: self.train_crop_scale,
            ratio: crate::preprocess::transforms::DEFAULT_RATIO,
            interpolation: self.interpolation,
        }
    }

    /// The evaluation transform.
    pub fn eval(&self) -> crate::preprocess::transforms::Transform {
        crate::preprocess::transforms::Transform::ResizeCenterCrop {
            resize: self.eval_resize,
            crop: self.eval_crop,
            interpolation: self.interpolation,
        }
    }
}

/// True when `dir` holds an image folder (`train/`, `test/` or `val/`) and no CIFAR layout.
pub fn is_image_folder(dir: &Path) -> bool {
    matches!(layout(dir), Ok(Layout::ImageFolder))
}

/// An image folder opened for streaming with torchvision's ImageNet transforms `t`.
pub fn open_photos(dir: &Path, t: PhotoTransforms) -> Result<Sources> {
    t.check()?;
    let (train, test) = open_image_folder(dir, t.train(), t.eval())?;
    Ok(Sources {
        train: std::sync::Arc::new(train),
        test: std::sync::Arc::new(test),
    })
}

/// The held-out photos of the image folder `dir` alone, streamed with torchvision's evaluation
/// transform of `t` (see [`open_held_out_folder`]).
pub fn open_test_photos(dir: &Path, t: PhotoTransforms) -> Result<std::sync::Arc<dyn ImageSource>> {
    t.check()?;
    Ok(std::sync::Arc::new(open_held_out_folder(dir, t.eval())?))
}

/// An [`Error::Invalid`] whose message is forced onto one line.
pub(crate) fn invalid(msg: impl Into<String>) -> Error {
    let msg: String = msg.into();
    Error::Invalid(msg.replace(['\r', '\n'], " "))
}

/// An [`Error::Invalid`] for an I/O failure: `path: what: error`.
pub(crate) fn io_err(path: &Path, what: &str, e: std::io::Error) -> Error {
    invalid(format!("{}: {what}: {e}", path.display()))
}

/// Whether `dir` holds the folders of an image folder: `train/`, `test/` or `val/`.
fn has_split_folders(dir: &Path) -> bool {
    // folders: CIFAR-100's pickles are files named train and test
    ["train", "test", "val"]
        .iter()
        .any(|d| dir.join(d).is_dir())
}
