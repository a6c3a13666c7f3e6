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

/// The learned and running state of one BatchNorm2d layer, each [C].
pub struct BnParams<'a> {
    /// Scale (PyTorch `weight`).
    pub gamma: &'a Tensor,
    /// Shift (PyTorch `bias`).
    pub beta: &'a Tensor,
    /// Running mean, updated in training mode.
    pub running_mean: &'a Tensor,
    /// Running (unbiased) variance, updated in training mode.
    pub running_var: &'a Tensor,
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
        .u(0)
        .u(0)
}

fn check_params(op: &'static str, c: usize, p: &BnParams) -> Result<()> {
    check_shape(op, "gamma", p.gamma, &[c])?;
    check_shape(op, "beta", p.beta, &[c])?;
    check_shape(op, "running_mean", p.running_mean, &[c])?;
    check_shape(op, "running_var", p.running_var, &[c])
}

fn flags(f: &Fuse) -> usize {
    (if f.relu { RELU } else { 0 }) | (if f.residual.is_some() { RESIDUAL } else { 0 })
}

/// Training-mode forward: batch statistics into `save_mean`/`save_invstd` [C], running stats
/// updated with `momentum`, then y = fused(bn(x)).
#[allow(clippy::too_many_arguments)]
pub fn forward_train(
    gpu: &Gpu,
    x: &Tensor,
    y: &Tensor,
    p: &BnParams,
    save_mean: &Tensor,
    save_invstd: &Tensor,
    fuse: Fuse,
    momentum: f32,
) -> Result<Vec<Kernel>> {
    const OP: &str = "batchnorm2d forward";
    let (n, c, hw) = dims(OP, x)?;
    check_shape(OP, "y", y, &x.shape)?;
    check_params(OP, c, p)?;
    check_shape(OP, "save_mean", save_mean, &[c])?;
    check_shape(OP, "save_invstd", save_invstd, &[c])?;
    if let Some(r) = fuse.residual {
        check_shape(OP, "residual", r, &x.shape)?;
    }
    let stats = kernel(
        gpu,
        OP,
        SHADER,
        "bn_stats",
        params(n, c, hw, 0, momentum),
        &[
            (1, x),
            (5, save_mean),
            (6, save_invstd),
            (7, p.running_mean),
            (8, p.running_var),
        ],
        1,
    )
    .map(|mut k| {
        k.grid = [c as u32, 1, 1];
        k
    })?;
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
            (3, p.gamma),
            (4, p.beta),
            (5, save_mean),
            (6, save_invstd),
            (7, p.running_mean),
            (8, p.running_var),
            (9, res),
        ],
        (x.len() as u64).div_ceil(256),
    )?;
    Ok(vec![stats, apply])
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
    let d2 = dummy(gpu)?;
    let d3 = dummy(gpu)?;
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
            (3, p.gamma),
            (4, p.beta),
            (5, &d2),
            (6, &d3),
            (7, p.running_mean),
            (8, p.running_var),
            (9, res),
        ],
        (x.len() as u64).div_ceil(256),
    )?])
}

/// Backward of [`forward_train`]: dx, and dgamma/dbeta into `dparams` [2, C] (dgamma row first).
/// With `relu`, `y` (the forward output) masks dy. With `dres`, the gradient reaching the
/// residual input (dy masked by the ReLU) is written there too.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    gpu: &Gpu,
    dy: &Tensor,
    y: &Tensor,
    x: &Tensor,
    gamma: &Tensor,
    save_mean: &Tensor,
    save_invstd: &Tensor,
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
    check_shape(OP, "gamma", gamma, &[c])?;
    check_shape(OP, "save_mean", save_mean, &[c])?;
    check_shape(OP, "save_invstd", save_invstd, &[c])?;
    check_shape(OP, "dparams", dparams, &[2, c])?;
    if let Some(r) = dres {
        check_shape(OP, "dresidual", r, &x.shape)?;
    }
    let f = (if relu { RELU } else { 0 }) | (if dres.is_some() { RESIDUAL } else { 0 });
    let mut reduce = kernel(
        gpu,
        OP,
        SHADER,
        "bn_backward_reduce",
        params(n, c, hw, f, 0.0),
        &[
            (1, x),
            (2, y),
            (5, save_mean),
            (6, save_invstd),
            (10, dy),
            (12, dparams),
        ],
        1,
    )?;
    reduce.grid = [c as u32, 1, 1];
    let d = dummy(gpu)?;
    let dr = dres.unwrap_or(&d);
    let dxk = kernel(
        gpu,
        OP,
        SHADER,
        "bn_backward_dx",
        params(n, c, hw, f, 0.0),
        &[
            (1, x),
            (2, y),
            (3, gamma),
            (5, save_mean),
            (6, save_invstd),
            (10, dy),
            (11, dx),
            (12, dparams),
            (13, dr),
        ],
        (x.len() as u64).div_ceil(256),
    )?;
    Ok(vec![reduce, dxk])
}
