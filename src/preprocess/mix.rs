//! MixUp and CutMix across a batch, as torchvision's training script applies them when it
//! collates a batch (`--mixup-alpha`, `--cutmix-alpha`): each image is blended with the one
//! before it in the batch (`batch.roll(1, 0)`: image i with image i - 1, the first with the
//! last), and its target becomes `lambda x own + (1 - lambda) x the other's`. One draw for the
//! whole batch, from the step's seed: the kind (one of the two, evenly, when both are on) and
//! `lambda ~ Beta(alpha, alpha)`.
//!
//! The input stage blends the images after their normalisation and erasing
//! (`shaders/augment.wgsl`), and the loss takes the two labels with their weights
//! (`shaders/loss.wgsl`); under mpirun each rank mixes its own shard with its own draw, as each
//! DDP process collates its own batch.

use rand_distr::{Beta, Distribution};

/// What torchvision's `--mixup-alpha` and `--cutmix-alpha` turn on (0: off).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchMixing {
    /// MixUp's Beta(alpha, alpha) (Zhang et al. 2018; torchvision's ResNet-50 V2 recipe: 0.2).
    pub mixup_alpha: f64,
    /// CutMix's Beta(alpha, alpha) (Yun et al. 2019; that recipe: 1.0).
    pub cutmix_alpha: f64,
}

/// One batch's mixing: what the input stage and the loss are told for a step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MixDraw {
    /// Every image as it is.
    Nothing,
    /// `lambda x image + (1 - lambda) x the image before it`.
    MixUp {
        /// The weight of each image's own picture and label.
        lambda: f32,
    },
    /// The image before it pasted into the box `[x1, y1, x2, y2)` of each image, and `lambda`
    /// the share of the image left (1 - the box's area over the image's).
    CutMix {
        /// The weight of each image's own label.
        lambda: f32,
        /// Left, top, right and bottom (exclusive) of the pasted box.
        rect: [u32; 4],
    },
}

impl MixDraw {
    /// The weight of each image's own label.
    pub fn lambda(&self) -> f32 {
        match *self {
            MixDraw::Nothing => 1.0,
            MixDraw::MixUp { lambda } | MixDraw::CutMix { lambda, .. } => lambda,
        }
    }
}

/// SplitMix64 as a `rand` generator, for `rand_distr`'s Beta.
struct Bits(crate::rng::SplitMix64);

impl rand::RngCore for Bits {
    fn next_u32(&mut self) -> u32 {
        (self.0.next_u64() >> 32) as u32
    }

    fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    fn fill_bytes(&mut self, dst: &mut [u8]) {
        for chunk in dst.chunks_mut(8) {
            let bytes = self.0.next_u64().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }
}

impl BatchMixing {
    /// The stream of [`crate::rng::item_seed`] the draws come from.
    const STREAM: u64 = 0x4d_49_58;

    /// Whether anything is mixed.
    pub fn is_on(&self) -> bool {
        self.mixup_alpha > 0.0 || self.cutmix_alpha > 0.0
    }

    /// The mixing of the batch of a step seeded by `seed` whose first image is image `first` of
    /// the global batch (a rank's shard: each rank draws its own, as each DDP process does),
    /// images of `size` (height, width):
    /// torchvision's RandomChoice of RandomMixUp and RandomCutMix (both with p = 1), each
    /// drawing lambda from Beta(alpha, alpha); CutMix's box centred on a uniform pixel with
    /// sides `sqrt(1 - lambda)` of the image's, clipped to it, and lambda recomputed from its
    /// area.
    pub fn draw(&self, seed: u64, first: u64, (h, w): (usize, usize)) -> MixDraw {
        let mut bits = Bits(crate::rng::SplitMix64(crate::rng::item_seed(
            seed,
            Self::STREAM,
            first,
        )));
        let cutmix = match (self.mixup_alpha > 0.0, self.cutmix_alpha > 0.0) {
            (false, false) => return MixDraw::Nothing,
            (true, true) => bits.0.below(2) == 1,
            (mixup, _) => !mixup,
        };
        let alpha = if cutmix {
            self.cutmix_alpha
        } else {
            self.mixup_alpha
        };
        let beta = Beta::new(alpha, alpha).expect("alpha checked positive");
        let lambda: f64 = beta.sample(&mut bits);
        if !cutmix {
            return MixDraw::MixUp {
                lambda: lambda as f32,
            };
        }
        let (cx, cy) = (bits.0.below(w as u64) as i64, bits.0.below(h as u64) as i64);
        let r = 0.5 * (1.0 - lambda).sqrt();
        let (half_w, half_h) = ((r * w as f64) as i64, (r * h as f64) as i64);
        let x1 = (cx - half_w).max(0) as u32;
        let y1 = (cy - half_h).max(0) as u32;
        let x2 = (cx + half_w).min(w as i64) as u32;
        let y2 = (cy + half_h).min(h as i64) as u32;
        let pasted = ((x2 - x1) * (y2 - y1)) as f64 / (w * h) as f64;
        MixDraw::CutMix {
            lambda: (1.0 - pasted) as f32,
            rect: [x1, y1, x2, y2],
        }
    }
}
