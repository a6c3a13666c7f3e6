//! GPU data augmentation from u8 pixels (shaders/augment.wgsl): pad + random crop + flip +
//! per-channel normalisation (+ random erasing) for training, normalisation only for evaluation.

use super::{activations, check_shape, kernel};
use crate::error::{shape_err, Result};
use crate::gpu::{Gpu, Kernel, Tensor, Uniform};
use crate::preprocess::{MixDraw, Normalize};

const SHADER: (&str, &str) = ("augment.wgsl", include_str!("../../shaders/augment.wgsl"));

/// Augmentation settings.
#[derive(Debug, Clone, Copy)]
pub struct AugmentConfig {
    /// Batch size.
    pub n: usize,
    /// Source image size (height, width).
    pub src: (usize, usize),
    /// Output size (height, width).
    pub out: (usize, usize),
    /// Zero padding before the random crop (4 for CIFAR).
    pub pad: usize,
    /// Random crop and flip (training) or a fixed centre (evaluation).
    pub train: bool,
    /// Seed of this batch's random crops and flips.
    pub seed: u32,
    /// The index of this batch's first image in the step's global batch (a data-parallel
    /// rank's shard; 0 otherwise): image i's crop is drawn for index `first + i`.
    pub first: usize,
    /// Per-channel normalisation after the crop.
    pub normalize: Normalize,
    /// Erase each image's rectangle of the `erase` buffer after the normalisation (training's
    /// random erasing).
    pub erase: bool,
    /// MixUp or CutMix of this batch, after the erasing.
    pub mix: MixDraw,
}

impl AugmentConfig {
    /// The parameters as the shader's uniform.
    pub fn uniform(&self) -> Uniform {
        let u = Uniform::new()
            .u(self.n)
            .u(self.src.0)
            .u(self.src.1)
            .u(self.out.0)
            .u(self.out.1)
            .u(self.pad)
            .u(self.seed as usize)
            .u(self.train as usize)
            .u(self.first)
            .u(self.erase as usize)
            .u(0)
            .u(0)
            .f(self.normalize.mean[0])
            .f(self.normalize.mean[1])
            .f(self.normalize.mean[2])
            .f(0.0)
            .f(self.normalize.std[0])
            .f(self.normalize.std[1])
            .f(self.normalize.std[2])
            .f(1.0);
        let (kind, cut) = match self.mix {
            MixDraw::Nothing => (0, [0; 4]),
            MixDraw::MixUp { .. } => (1, [0; 4]),
            MixDraw::CutMix { rect, .. } => (2, rect),
        };
        let u = u.u(kind).f(self.mix.lambda()).u(0).u(0);
        cut.iter().fold(u, |u, &c| u.u(c as usize))
    }
}

fn hash(v: u32) -> u32 {
    let mut x = v;
    x ^= x >> 16;
    x = x.wrapping_mul(0x7feb352d);
    x ^= x >> 15;
    x = x.wrapping_mul(0x846ca68b);
    x ^= x >> 16;
    x
}

/// The crop offset (x, y) in [0, 2*pad] and flip the shader draws for image `index` under `seed`.
pub fn crop_params(seed: u32, index: u32, pad: u32) -> (u32, u32, bool) {
    let r = hash(seed ^ hash(index));
    let span = 2 * pad + 1;
    (r % span, (r >> 8) % span, (r >> 16) & 1 == 1)
}

/// Pixels [N, 3, Hs, Ws] as bytes packed four to a u32 -> out [N, 3, Ho, Wo] f32.
/// `pixels` holds N*3*Hs*Ws bytes rounded up to whole u32 words; `erase` (with `cfg.erase`) N
/// rectangles of 4 u32 (top, left, height, width; height 0: none), set by the host each step.
pub fn augment(
    gpu: &Gpu,
    cfg: &AugmentConfig,
    pixels: &Tensor,
    erase: Option<&Tensor>,
    out: &Tensor,
) -> Result<Vec<Kernel>> {
    const OP: &str = "augment";
    let bytes = cfg.n * 3 * cfg.src.0 * cfg.src.1;
    check_shape(OP, "pixels", pixels, &[bytes.div_ceil(4)])?;
    if let Some(e) = erase {
        check_shape(OP, "erase", e, &[cfg.n * 4])?;
    } else if cfg.erase {
        return shape_err(OP, "erasing without the rectangles' buffer");
    }
    check_shape(OP, "out", out, &[cfg.n, 3, cfg.out.0, cfg.out.1])?;
    if cfg.out.0 > cfg.src.0 + 2 * cfg.pad || cfg.out.1 > cfg.src.1 + 2 * cfg.pad {
        return shape_err(
            OP,
            format!(
                "crop {:?} larger than padded source {:?} + 2*{}",
                cfg.out, cfg.src, cfg.pad
            ),
        );
    }
    Ok(vec![kernel(
        gpu,
        OP,
        activations::module(SHADER, out.dtype),
        "augment",
        cfg.uniform(),
        &[(1, pixels), (2, out), (3, erase.unwrap_or(pixels))],
        (out.len() as u64).div_ceil(256),
    )?])
}

/// Packs bytes four to a little-endian u32 word, zero-filling the last word.
pub fn pack_bytes(bytes: &[u8]) -> Vec<u32> {
    bytes
        .chunks(4)
        .map(|c| {
            let mut w = [0u8; 4];
            w[..c.len()].copy_from_slice(c);
            u32::from_le_bytes(w)
        })
        .collect()
}
