//! batchnorm2d forward (train/eval) and backward, with fused ReLU and residual add
//! (shaders/batchnorm.wgsl). x, y [N, C, H, W]; per-channel tensors [C].

use super::{check_shape, dummy, kernel};
use crate::error::{shape_err, Result};
use crate::gpu::{Gpu, Kernel, Tensor, Uniform};

const SHADER: (&str, &str) = (
    "batchnorm.wgsl",
    include_str!("../../shaders/batchnorm.wgsl"),
);

/// PyTorch's defaults.
pub const EPS: f32 = 1e-5;
/// PyTorch's default momentum for the running estimates.
pub const MOMENTUM: f32 = 0.1;

const RELU: usize = 1;
const RESIDUAL: usize = 2;
const EVAL: usize = 4;

/// The learned and running state of one BatchNorm2d layer.
pub struct BnParams<'a> {
    /// [2, C]: gamma (PyTorch `weight`) then beta (`bias`).
    pub affine: &'a Tensor,
    /// [2, C]: running mean then running (unbiased) variance, updated in training mode.
    pub running: &'a Tensor,
}

/// What follows the normalisation in the same kernel.
#[derive(Clone, Copy, Default)]
pub struct Fuse<'a> {
    /// Residual added before the ReLU: y = relu(bn(x) + residual).
    pub residual: Option<&'a Tensor>,
    /// Apply ReLU at the end.
    pub relu: bool,
}

fn dims(op: &'static str, x: &Tensor) -> Result<(usize, usize, usize)> {
    if x.shape.len() != 4 {
        return shape_err(op, format!("x must be [N, C, H, W], got {:?}", x.shape));
    }
    Ok((x.shape[0], x.shape[1], x.shape[2] * x.shape[3]))
}

fn params(n: usize, c: usize, hw: usize, flags: usize, momentum: f32) -> Uniform {
    Uniform::new()
        .u(n)
        .u(c)
        .u(hw)
        .u(flags)
        .f(EPS)
        .f(momentum)
        .u(chunks(n * hw))
        .u(0)
}

/// Chunks of the N*H*W values of a channel that the reductions split into: about 4096 values
/// each, at most 64 (so that a channel's chunks merge in one short loop).
fn chunks(m: usize) -> usize {
    m.div_ceil(4096).clamp(1, 64)
}

/// The per-(channel, chunk) pair of sums both reductions pass between their steps.
fn partial_sums(gpu: &Gpu, n: usize, c: usize, hw: usize) -> Result<Tensor> {
    gpu.zeros(&[c, chunks(n * hw), 2])
}

/// The two steps of a reduction: `chunk_entry` on a grid of (channel, chunk), then `merge` with
/// one invocation per channel.
#[allow(clippy::too_many_arguments)]
fn reduction(
    gpu: &Gpu,
    op: &'static str,
    (chunk_entry, merge): (&'static str, &'static str),
    params: Uniform,
    chunk_bufs: &[(u32, &Tensor)],
    merge_bufs: &[(u32, &Tensor)],
    (n, c, hw): (usize, usize, usize),
) -> Result<Vec<Kernel>> {
    let mut first = kernel(gpu, op, SHADER, chunk_entry, params.clone(), chunk_bufs, 1)?;
    first.grid = [c as u32, chunks(n * hw) as u32, 1];
    let second = kernel(
        gpu,
        op,
        SHADER,
        merge,
        params,
        merge_bufs,
        (c as u64).div_ceil(64),
    )?;
    Ok(vec![first, second])
}

fn check_params(op: &'static str, c: usize, p: &BnParams) -> Result<()> {
    check_shape(op, "affine (gamma, beta)", p.affine, &[2, c])?;
    check_shape(op, "running (mean, var)", p.running, &[2, c])
}

fn flags(f: &Fuse) -> usize {
    (if f.relu { RELU } else { 0 }) | (if f.residual.is_some() { RESIDUAL } else { 0 })
}

fn elementwise_groups(x: &Tensor) -> u64 {
    (x.len() as u64).div_ceil(256)
}

/// Training-mode forward: batch statistics into `saved` [2, C] (mean, invstd), running stats
/// updated with `momentum`, then y = fused(bn(x)).
pub fn forward_train(
    gpu: &Gpu,
    x: &Tensor,
    y: &Tensor,
    p: &BnParams,
    saved: &Tensor,
    fuse: Fuse,
    momentum: f32,
) -> Result<Vec<Kernel>> {
    const OP: &str = "batchnorm2d forward";
    let (n, c, hw) = dims(OP, x)?;
    check_shape(OP, "y", y, &x.shape)?;
    check_params(OP, c, p)?;
    check_shape(OP, "saved (mean, invstd)", saved, &[2, c])?;
    if let Some(r) = fuse.residual {
        check_shape(OP, "residual", r, &x.shape)?;
    }
    let partial = partial_sums(gpu, n, c, hw)?;
    let mut kernels = reduction(
        gpu,
        OP,
        ("bn_stats_chunk", "bn_stats"),
        params(n, c, hw, 0, momentum),
        &[(1, x), (14, &partial)],
        &[(5, saved), (7, p.running), (14, &partial)],
        (n, c, hw),
    )?;
    let d = dummy(gpu)?;
    let res = fuse.residual.unwrap_or(&d);
    let apply = kernel(
        gpu,
        OP,
        SHADER,
        "bn_apply",
        params(n, c, hw, flags(&fuse), momentum),
        &[
            (1, x),
            (2, y),
            (3, p.affine),
            (5, saved),
            (7, p.running),
            (9, res),
        ],
        elementwise_groups(x),
    )?;
    kernels.push(apply);
    Ok(kernels)
}

/// Eval-mode forward with the running statistics: y = fused(bn(x)).
pub fn forward_eval(
    gpu: &Gpu,
    x: &Tensor,
    y: &Tensor,
    p: &BnParams,
    fuse: Fuse,
) -> Result<Vec<Kernel>> {
    const OP: &str = "batchnorm2d forward (eval)";
    let (n, c, hw) = dims(OP, x)?;
    check_shape(OP, "y", y, &x.shape)?;
    check_params(OP, c, p)?;
    if let Some(r) = fuse.residual {
        check_shape(OP, "residual", r, &x.shape)?;
    }
    let d = dummy(gpu)?;
    let unused_saved = dummy(gpu)?;
    let res = fuse.residual.unwrap_or(&d);
    Ok(vec![kernel(
        gpu,
        OP,
        SHADER,
        "bn_apply",
        params(n, c, hw, flags(&fuse) | EVAL, 0.0),
        &[
            (1, x),
            (2, y),
            (3, p.affine),
            (5, &unused_saved),
            (7, p.running),
            (9, res),
        ],
        elementwise_groups(x),
    )?])
}

/// The statistics a BatchNorm normalised with, for its backward.
#[derive(Clone, Copy)]
pub enum Stats<'a> {
    /// The batch's (mean, invstd) [2, C] saved by [`forward_train`].
    Batch(&'a Tensor),
    /// The running statistics [2, C] ([`forward_eval`] inside a training step: frozen layers,
    /// `--bn-eval`), constants for the backward.
    Running(&'a Tensor),
}

/// Backward of [`forward_train`] (or of [`forward_eval`] with `Stats::Running`): dx, and
/// dgamma/dbeta into `dparams` [2, C]. With `relu`, `y` (the forward output) masks dy. With
/// `dres`, the gradient reaching the residual input (dy masked by the ReLU) is written there too.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    gpu: &Gpu,
    dy: &Tensor,
    y: &Tensor,
    x: &Tensor,
    affine: &Tensor,
    stats: Stats,
    dx: &Tensor,
    dparams: &Tensor,
    dres: Option<&Tensor>,
    relu: bool,
) -> Result<Vec<Kernel>> {
    const OP: &str = "batchnorm2d backward";
    let (n, c, hw) = dims(OP, x)?;
    for (name, t) in [("dy", dy), ("y", y), ("dx", dx)] {
        check_shape(OP, name, t, &x.shape)?;
    }
    check_shape(OP, "affine (gamma, beta)", affine, &[2, c])?;
    check_shape(OP, "dparams", dparams, &[2, c])?;
    if let Some(r) = dres {
        check_shape(OP, "dresidual", r, &x.shape)?;
    }
    // the unused statistics and an absent dresidual get buffers of their own: two writable
    // bindings of one buffer are an error in WebGPU
    let (d, d_res) = (dummy(gpu)?, dummy(gpu)?);
    let (saved, running, fixed) = match stats {
        Stats::Batch(t) => (t, &d, 0),
        Stats::Running(t) => (&d, t, EVAL),
    };
    check_shape(
        OP,
        "statistics",
        if fixed == 0 { saved } else { running },
        &[2, c],
    )?;
    let f = (if relu { RELU } else { 0 }) | (if dres.is_some() { RESIDUAL } else { 0 }) | fixed;
    let partial = partial_sums(gpu, n, c, hw)?;
    let mut kernels = reduction(
        gpu,
        OP,
        ("bn_backward_chunk", "bn_backward_reduce"),
        params(n, c, hw, f, 0.0),
        &[
            (1, x),
            (2, y),
            (5, saved),
            (7, running),
            (10, dy),
            (14, &partial),
        ],
        &[(12, dparams), (14, &partial)],
        (n, c, hw),
    )?;
    let dr = dres.unwrap_or(&d_res);
    let bufs = [
        (1, x),
        (2, y),
        (3, affine),
        (5, saved),
        (7, running),
        (10, dy),
        (11, dx),
        (12, dparams),
        (13, dr),
    ];
    let dxk = kernel(
        gpu,
        OP,
        SHADER,
        "bn_backward_dx",
        params(n, c, hw, f, 0.0),
        &bufs,
        elementwise_groups(x),
    )?;
    kernels.push(dxk);
    Ok(kernels)
}
