//! Gradient clipping by the global norm, as `torch.nn.utils.clip_grad_norm_` (torchvision's
//! `--clip-grad-norm`), on the GPU (shaders/clip.wgsl): the gradients' sum of squares in
//! blocks, then the factor `min(max_norm / (norm + 1e-6), 1)` in a one-element tensor that the
//! clipped SGD steps multiply the gradients by. Nothing is read back: a step never waits.

use super::kernel;
use crate::error::{shape_err, Result};
use crate::gpu::{Gpu, Kernel, Tensor, Uniform};

const SHADER: (&str, &str) = ("clip.wgsl", include_str!("../../shaders/clip.wgsl"));

/// Gradient elements per block sum (256 invocations of 16 elements).
pub const BLOCK: usize = 256 * 16;

/// The block sums a chunk of `len` gradient elements takes.
pub fn blocks(len: usize) -> usize {
    len.div_ceil(BLOCK)
}

fn uniform(len: usize, first_block: usize, blocks: usize, max_norm: f32, scaled: bool) -> Uniform {
    Uniform::new()
        .u(len)
        .u(first_block)
        .u(blocks)
        .f(max_norm)
        .u(scaled as usize)
        .u(0)
        .u(0)
        .u(0)
}

/// The sums of squares of `grads` (a chunk of the flat gradients) block by block into `sums`,
/// from element `first_block` on.
pub fn block_sums(gpu: &Gpu, grads: &Tensor, sums: &Tensor, first_block: usize) -> Result<Kernel> {
    let n = blocks(grads.len());
    if first_block + n > sums.len() {
        let have = sums.len();
        return shape_err(
            "clip",
            format!("{have} block sums for blocks {first_block}.."),
        );
    }
    let params = uniform(grads.len(), first_block, 0, 0.0, false);
    let bufs = [(1, grads), (2, sums)];
    kernel(
        gpu,
        "clip",
        SHADER,
        "clip_block_sums",
        params,
        &bufs,
        n as u64,
    )
}

/// The clipping factor of the gradients whose block sums `sums` holds into `factor` (one
/// element); with `scaler` (ops::amp's state) the gradients are scaled and the norm is taken
/// of the unscaled ones.
pub fn factor(
    gpu: &Gpu,
    sums: &Tensor,
    max_norm: f32,
    scaler: Option<&Tensor>,
    factor: &Tensor,
) -> Result<Kernel> {
    let unused;
    let amp = match scaler {
        Some(s) => s,
        None => {
            unused = super::dummy(gpu)?;
            &unused
        }
    };
    let params = uniform(0, 0, sums.len(), max_norm, scaler.is_some());
    let bufs = [(2, sums), (3, factor), (4, amp)];
    kernel(gpu, "clip", SHADER, "clip_factor", params, &bufs, 1)
}
