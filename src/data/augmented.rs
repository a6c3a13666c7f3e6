//! Training images augmented on the CPU after their source has produced them: torchvision's
//! automatic augmentation (`--auto-augment`), which follows the crop and flip. Photo folders
//! crop and flip on the CPU already, so the policy simply follows. Images in memory (CIFAR,
//! small folders) would be padded, cropped and flipped on the GPU; with a policy the CPU does
//! torchvision's `RandomCrop(32, padding=4)` + `RandomHorizontalFlip()` first, then the policy,
//! and the GPU only normalises (the order of the TrivialAugment paper's CIFAR pipeline).

use std::sync::Arc;

use super::ImageSource;
use crate::error::{Error, Result};
use crate::preprocess::auto_augment::auto_augment;
use crate::preprocess::transforms::{from_chw, pad_crop_flip, write_chw};
use crate::preprocess::{AutoAugment, GpuAugment, Interpolation, Preprocess};
use crate::rng::{item_seed, SplitMix64};

/// The stream of [`item_seed`] each image's CPU augmentation draws from (the source's own
/// transform keeps its draws: a photo's crop is the same with and without the policy); "AUTO"
/// in ASCII.
const STREAM: u64 = 0x41_55_54_4f;

/// The draws of the CPU augmentation of the image loaded with `seed`: the crop's top and left
/// and the flip (images in memory), then the policy's.
pub fn augmentation_rng(seed: u64) -> SplitMix64 {
    SplitMix64(item_seed(seed, STREAM, 0))
}

/// `train` with `policy` after its crop and flip, done on the CPU, its warps resampled with
/// `interpolation`; an interpolation the policy cannot warp with (as torchvision refuses it) is
/// an error.
pub fn auto_augmented(
    train: Arc<dyn ImageSource>,
    policy: AutoAugment,
    interpolation: Interpolation,
) -> Result<Arc<dyn ImageSource>> {
    if let Some(why) = interpolation.unsupported_by(policy) {
        return Err(Error::Invalid(why));
    }
    let pad = match train.preprocess().augment {
        GpuAugment::PadCropFlip { pad } => Some(pad),
        GpuAugment::Nothing => None,
    };
    Ok(Arc::new(AutoAugmented {
        set: train,
        pad,
        policy,
        interpolation,
    }))
}

/// A training set whose images get a policy (and, for images in memory, their crop and flip)
/// on the CPU.
struct AutoAugmented {
    set: Arc<dyn ImageSource>,
    /// The padding of the crop the GPU would have done (`None`: the set crops and flips).
    pad: Option<usize>,
    policy: AutoAugment,
    interpolation: Interpolation,
}

impl ImageSource for AutoAugmented {
    fn len(&self) -> usize {
        self.set.len()
    }
    fn label(&self, i: usize) -> u32 {
        self.set.label(i)
    }
    fn classes(&self) -> &[String] {
        self.set.classes()
    }
    fn size(&self) -> (usize, usize) {
        self.set.size()
    }
    fn load(&self, i: usize, seed: u64, out: &mut [u8]) -> Result<()> {
        self.set.load(i, seed, out)?;
        let mut rng = augmentation_rng(seed);
        let mut img = from_chw(out, self.size());
        if let Some(pad) = self.pad {
            img = pad_crop_flip(&img, pad, &mut rng);
        }
        write_chw(
            &auto_augment(self.policy, img, self.interpolation, &mut rng),
            out,
        );
        Ok(())
    }
    /// The policy costs CPU time: worth the loader's worker threads.
    fn decodes(&self) -> bool {
        true
    }
    fn preprocess(&self) -> Preprocess {
        Preprocess {
            augment: GpuAugment::Nothing,
            ..self.set.preprocess()
        }
    }
    fn eval_input(&self) -> (Option<usize>, (usize, usize)) {
        self.set.eval_input()
    }
    fn interpolation(&self) -> Option<Interpolation> {
        self.set.interpolation()
    }
    fn select(&self, idx: &[usize], train: bool) -> Arc<dyn ImageSource> {
        let set = self.set.select(idx, train);
        match train {
            true => Arc::new(AutoAugmented { set, ..*self }),
            false => set,
        }
    }
    fn take_warnings(&self) -> Vec<String> {
        self.set.take_warnings()
    }
}
