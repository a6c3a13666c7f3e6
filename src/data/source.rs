//! What a training or evaluation loop reads: a set of labelled images, each produced on demand as
//! u8 CHW pixels of one size, either copied from memory (CIFAR, small folders) or decoded and
//! transformed from a file (the streaming photo folders).

use std::sync::Arc;

use super::Dataset;
use crate::error::Result;
use crate::preprocess::{Normalize, Preprocess};

/// A set of labelled images, read image by image.
pub trait ImageSource: Send + Sync {
    /// Number of images.
    fn len(&self) -> usize;
    /// True when there are no images.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The class index of image `i`.
    fn label(&self, i: usize) -> u32;
    /// Class names in label order.
    fn classes(&self) -> &[String];
    /// (height, width) of the images [`ImageSource::load`] writes.
    fn size(&self) -> (usize, usize);
    /// Writes image `i` as `3 * height * width` CHW bytes into `out`; `seed` draws its random
    /// transform (the same seed, the same pixels).
    fn load(&self, i: usize, seed: u64, out: &mut [u8]) -> Result<()>;
    /// True when images are decoded from files (worth worker threads), false when copied.
    fn decodes(&self) -> bool;
    /// What the GPU does to these images in training (He et al.'s pad, crop and flip, or
    /// nothing after the source's own CPU transform) and their normalisation.
    fn preprocess(&self) -> Preprocess;
    /// The input normalisation of models trained on these images.
    fn normalize(&self) -> Normalize {
        self.preprocess().normalize
    }
    /// How evaluation and `predict` prepare an image for models trained on this source: the
    /// shorter side resized to `.0` (then centre-cropped) where given, and the input size `.1`.
    fn eval_input(&self) -> (Option<usize>, (usize, usize)) {
        (None, self.size())
    }
    /// How its photos are resampled to their size (`None`: its images come at their size).
    fn interpolation(&self) -> Option<crate::preprocess::Interpolation> {
        None
    }
    /// The images `idx`, in that order, with the training (`train`) or evaluation transform.
    fn select(&self, idx: &[usize], train: bool) -> Arc<dyn ImageSource>;
    /// What went wrong since the last call without stopping the reads (files skipped), one
    /// line each, for the caller to report (the library prints nothing).
    fn take_warnings(&self) -> Vec<String> {
        Vec::new()
    }
}

impl ImageSource for Dataset {
    fn len(&self) -> usize {
        Dataset::len(self)
    }
    fn label(&self, i: usize) -> u32 {
        self.labels[i] as u32
    }
    fn classes(&self) -> &[String] {
        &self.classes
    }
    fn size(&self) -> (usize, usize) {
        (self.height, self.width)
    }
    fn load(&self, i: usize, _seed: u64, out: &mut [u8]) -> Result<()> {
        out.copy_from_slice(self.image(i));
        Ok(())
    }
    fn decodes(&self) -> bool {
        false
    }
    fn preprocess(&self) -> Preprocess {
        Preprocess::CIFAR10
    }
    fn select(&self, idx: &[usize], _train: bool) -> Arc<dyn ImageSource> {
        Arc::new(Dataset::select(self, idx))
    }
}

/// The images a run trains on and the images it evaluates after each epoch.
#[derive(Clone)]
pub struct Sources {
    /// Images to train on.
    pub train: Arc<dyn ImageSource>,
    /// Held-out images to evaluate on.
    pub test: Arc<dyn ImageSource>,
}

impl From<super::Split> for Sources {
    fn from(s: super::Split) -> Sources {
        Sources {
            train: Arc::new(s.train),
            test: Arc::new(s.test),
        }
    }
}
