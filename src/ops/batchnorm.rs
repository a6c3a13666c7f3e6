//! batchnorm2d forward (train/eval) and backward, with fused ReLU and residual add
//! (shaders/batchnorm.wgsl). x, y `[N, C, H, W]`; per-channel tensors `[C]`.

use super::{activations, check_shape, dummy};
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
const ACROSS: usize = 8;
const ON_LOAD: usize = 16;

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

/// The shader's parameters; `ranks` processes share the batch (flag 8), else 1.
fn params(n: usize, c: usize, hw: usize, flags: usize, momentum: f32, ranks: usize) -> Uniform {
    params_chunks(n, c, hw, flags, momentum, ranks, chunks(n * hw))
}

/// [`params`] with the partial values in `chunks` per channel.
fn params_chunks(
    n: usize,
    c: usize,
    hw: usize,
    flags: usize,
    momentum: f32,
    ranks: usize,
    chunks: usize,
) -> Uniform {
    Uniform::new()
        .u(n)
        .u(c)
        .u(hw)
        .u(flags)
        .f(EPS)
        .f(momentum)
        .u(chunks)
        .u(ranks)
}

/// Flag 8 when the batch is spread over several ranks.
fn across(ranks: usize) -> usize {
    if ranks > 1 {
        ACROSS
    } else {
        0
    }
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

/// An elementwise kernel over x [N, C, H, W]: `entry` with one value an invocation, or where
/// H*W is a multiple of 4 its twin `entry4` with four (one channel's plane each; the same
/// arithmetic per value, a quarter of the index work). (entry point, workgroups of 256.)
fn elementwise((entry, entry4): (&'static str, &'static str), x: &Tensor) -> (&'static str, u64) {
    let hw = x.shape[2] * x.shape[3];
    match hw.is_multiple_of(4) {
        true => (entry4, (x.len() as u64 / 4).div_ceil(256)),
        false => (entry, (x.len() as u64).div_ceil(256)),
    }
}

/// The training forward's tensors have matching shapes: (N, C, H*W) of x.
fn check_forward(
    op: &'static str,
    (x, y): (&Tensor, &Tensor),
    p: &BnParams,
    saved: &Tensor,
    fuse: &Fuse,
) -> Result<(usize, usize, usize)> {
    let (n, c, hw) = dims(op, x)?;
    check_shape(op, "y", y, &x.shape)?;
    check_params(op, c, p)?;
    check_shape(op, "saved (mean, invstd)", saved, &[2, c])?;
    if let Some(r) = fuse.residual {
        check_shape(op, "residual", r, &x.shape)?;
    }
    Ok((n, c, hw))
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
    let (kernels, _) = forward_train_across(gpu, x, y, p, saved, fuse, momentum, 1)?;
    Ok(kernels)
}

/// [`forward_train`] for a batch spread over `ranks` data-parallel processes (SyncBatchNorm):
/// the statistics are the whole batch's, combined by the host in the returned [`Exchange`]
/// (none for one rank).
#[allow(clippy::too_many_arguments)]
pub fn forward_train_across(
    gpu: &Gpu,
    x: &Tensor,
    y: &Tensor,
    p: &BnParams,
    saved: &Tensor,
    fuse: Fuse,
    momentum: f32,
    ranks: usize,
) -> Result<(Vec<Kernel>, Option<Exchange>)> {
    const OP: &str = "batchnorm2d forward";
    let (n, c, hw) = check_forward(OP, (x, y), p, saved, &fuse)?;
    let partial = partial_sums(gpu, n, c, hw)?;
    let mut kernels = reduction(
        gpu,
        OP,
        ("bn_stats_chunk", "bn_stats"),
        params(n, c, hw, across(ranks), momentum, ranks),
        &[(1, x), (14, &partial)],
        &[(5, saved), (7, p.running), (14, &partial)],
        (n, c, hw),
    )?;
    kernels.push(apply(gpu, OP, (x, y), p, saved, fuse, momentum)?);
    // bn_stats (kernel 1) waits for the whole batch's statistics
    let exchange =
        (ranks > 1).then(|| Exchange::new(partial, Exchanged::Statistics, 1, (n, c, hw)));
    Ok((kernels, exchange))
}

/// y = fused(bn(x)) with the statistics in `saved` (training).
fn apply(
    gpu: &Gpu,
    op: &'static str,
    (x, y): (&Tensor, &Tensor),
    p: &BnParams,
    saved: &Tensor,
    fuse: Fuse,
    momentum: f32,
) -> Result<Kernel> {
    let (n, c, hw) = dims(op, x)?;
    let d = dummy(gpu)?;
    let res = fuse.residual.unwrap_or(&d);
    let (entry, groups) = elementwise(("bn_apply", "bn_apply4"), x);
    kernel(
        gpu,
        op,
        SHADER,
        entry,
        params(n, c, hw, flags(&fuse), momentum, 1),
        &[
            (1, x),
            (2, y),
            (3, p.affine),
            (5, saved),
            (7, p.running),
            (9, res),
        ],
        groups,
    )
}

/// [`forward_train`] with the batch statistics merged from the partial ones the convolution that
/// wrote x computed in its epilogue (`conv2d::forward_with_stats`: [C, ceil(N*H*W / 8), 3]), so
/// that x is read once, by the apply. One rank only: SyncBatchNorm's exchange combines
/// [`forward_train_across`]'s chunks.
#[allow(clippy::too_many_arguments)]
pub fn forward_train_from(
    gpu: &Gpu,
    x: &Tensor,
    y: &Tensor,
    p: &BnParams,
    saved: &Tensor,
    fuse: Fuse,
    momentum: f32,
    partial: &Tensor,
) -> Result<Vec<Kernel>> {
    const OP: &str = "batchnorm2d forward";
    let dims = check_forward(OP, (x, y), p, saved, &fuse)?;
    Ok(vec![
        merge_partials(gpu, OP, dims, p, saved, momentum, partial, None)?,
        apply(gpu, OP, (x, y), p, saved, fuse, momentum)?,
    ])
}

/// The length of [`forward_train_on_load`]'s parameters of a BN of `c` channels.
pub fn on_load_len(c: usize) -> usize {
    2 * c
}

/// [`forward_train_from`] without the apply, for a BN followed by a ReLU whose output only the
/// next convolution reads: that convolution applies both as it loads x
/// (`conv2d::forward_bn_in`). Writes the batch statistics into `saved`, updates the running
/// ones, and writes the BN as y = x * scale + shift for the convolution into `on_load`
/// ([`on_load_len`]: scale = gamma * invstd, then shift = beta - mean * scale, per channel).
pub fn forward_train_on_load(
    gpu: &Gpu,
    x: &Tensor,
    p: &BnParams,
    saved: &Tensor,
    momentum: f32,
    partial: &Tensor,
    on_load: &Tensor,
) -> Result<Kernel> {
    const OP: &str = "batchnorm2d forward";
    let dims = check_forward(OP, (x, x), p, saved, &Fuse::default())?;
    check_shape(OP, "BN-on-load parameters", on_load, &[on_load_len(dims.1)])?;
    let on_load = Some(on_load);
    merge_partials(gpu, OP, dims, p, saved, momentum, partial, on_load)
}

/// y = relu(BN(x)) with the batch statistics in `saved`, as [`forward_train_from`] applies it:
/// where a pass needs the output [`forward_train_on_load`] left to the convolution after.
pub fn apply_train(
    gpu: &Gpu,
    (x, y): (&Tensor, &Tensor),
    p: &BnParams,
    saved: &Tensor,
) -> Result<Kernel> {
    const OP: &str = "batchnorm2d forward";
    let fuse = Fuse {
        residual: None,
        relu: true,
    };
    check_forward(OP, (x, y), p, saved, &fuse)?;
    apply(gpu, OP, (x, y), p, saved, fuse, MOMENTUM)
}

/// The merge of the partial statistics a convolution's epilogue wrote (and, with `on_load`, the
/// BN-on-load parameters).
#[allow(clippy::too_many_arguments)]
fn merge_partials(
    gpu: &Gpu,
    op: &'static str,
    (n, c, hw): (usize, usize, usize),
    p: &BnParams,
    saved: &Tensor,
    momentum: f32,
    partial: &Tensor,
    on_load: Option<&Tensor>,
) -> Result<Kernel> {
    // per channel and run of 8 values (`conv2d::stats_len`)
    let runs = (n * hw).div_ceil(8);
    check_shape(op, "partial statistics", partial, &[c * runs * 3])?;
    let none = dummy(gpu)?;
    let flags = if on_load.is_some() { ON_LOAD } else { 0 };
    let mut merge = kernel(
        gpu,
        op,
        SHADER,
        "bn_stats_partials",
        params_chunks(n, c, hw, flags, momentum, 1, runs),
        &[
            (3, p.affine),
            (5, saved),
            (7, p.running),
            (14, partial),
            (15, on_load.unwrap_or(&none)),
        ],
        1,
    )?;
    merge.grid = [c as u32, 1, 1];
    Ok(merge)
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
    let (entry, groups) = elementwise(("bn_apply", "bn_apply4"), x);
    Ok(vec![kernel(
        gpu,
        OP,
        SHADER,
        entry,
        params(n, c, hw, flags(&fuse) | EVAL, 0.0, 1),
        &[
            (1, x),
            (2, y),
            (3, p.affine),
            (5, &unused_saved),
            (7, p.running),
            (9, res),
        ],
        groups,
    )?])
}

/// Inference with the running statistics folded into the convolution before: `folded_w` =
/// `conv_w` [K, Cin, R, S] times scale = gamma / sqrt(running_var + eps) per output channel and
/// `folded_b` `[K]` = beta - running_mean * scale, so that conv(x, folded_w) + folded_b is
/// BN(conv(x, conv_w)) (`conv2d::forward_epilogue` adds the ReLU and residual).
pub fn fold(
    gpu: &Gpu,
    conv_w: &Tensor,
    p: &BnParams,
    folded_w: &Tensor,
    folded_b: &Tensor,
) -> Result<Vec<Kernel>> {
    const OP: &str = "batchnorm2d folded into a convolution";
    let k = conv_w.shape[0];
    let per_channel = conv_w.len() / k.max(1);
    check_params(OP, k, p)?;
    check_shape(OP, "folded weights", folded_w, &conv_w.shape)?;
    check_shape(OP, "folded bias", folded_b, &[k])?;
    let unused_saved = dummy(gpu)?;
    Ok(vec![kernel(
        gpu,
        OP,
        SHADER,
        "bn_fold",
        params(1, k, per_channel, EVAL, 0.0, 1),
        &[
            (1, conv_w),
            (2, folded_w),
            (3, p.affine),
            (5, &unused_saved),
            (7, p.running),
            (15, folded_b),
        ],
        ((conv_w.len() + k) as u64).div_ceil(256),
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
    /// The statistics saved by [`forward_train_across`] for a batch spread over this many ranks.
    Across(&'a Tensor, usize),
}

/// Backward of [`forward_train`] (or of [`forward_eval`] with `Stats::Running`): dx, and
/// dgamma/dbeta into `dparams` [2, C]. With `relu`, `y` (the forward output) masks dy. With
/// `dres`, the gradient reaching the residual input (dy masked by the ReLU) is written there too.
/// With `Stats::Across`, also the [`Exchange`] through which the host adds the sums dx needs
/// over every rank (SyncBatchNorm's backward); dgamma and dbeta stay this rank's.
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
) -> Result<(Vec<Kernel>, Option<Exchange>)> {
    const OP: &str = "batchnorm2d backward";
    let (n, c, hw) = dims(OP, x)?;
    check_backward_shapes(OP, x, &[("dy", dy), ("y", y), ("dx", dx)], dres)?;
    check_shape(OP, "affine (gamma, beta)", affine, &[2, c])?;
    check_shape(OP, "dparams", dparams, &[2, c])?;
    // the unused statistics and an absent dresidual get buffers of their own: two writable
    // bindings of one buffer are an error in WebGPU
    let (d, d_res) = (dummy(gpu)?, dummy(gpu)?);
    let (saved, running, fixed, ranks) = match stats {
        Stats::Batch(t) => (t, &d, 0, 1),
        Stats::Running(t) => (&d, t, EVAL, 1),
        Stats::Across(t, ranks) => (t, &d, across(ranks), ranks),
    };
    check_shape(
        OP,
        "statistics",
        if fixed == EVAL { running } else { saved },
        &[2, c],
    )?;
    let f = (if relu { RELU } else { 0 }) | (if dres.is_some() { RESIDUAL } else { 0 }) | fixed;
    let partial = partial_sums(gpu, n, c, hw)?;
    let mut kernels = reduction(
        gpu,
        OP,
        ("bn_backward_chunk", "bn_backward_reduce"),
        params(n, c, hw, f, 0.0, ranks),
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
        (14, &partial),
    ];
    kernels.push(dx_kernel(gpu, OP, &bufs, params(n, c, hw, f, 0.0, ranks))?);
    // bn_backward_dx (kernel 2) waits for the whole batch's sums
    let exchange =
        (ranks > 1).then(|| Exchange::new(partial, Exchanged::GradientSums, 2, (n, c, hw)));
    Ok((kernels, exchange))
}

/// The kernel that writes dx (and dres) from the sums, on `bufs` (x is binding 1).
fn dx_kernel(
    gpu: &Gpu,
    op: &'static str,
    bufs: &[(u32, &Tensor)],
    params: Uniform,
) -> Result<Kernel> {
    let x = bufs.iter().find(|b| b.0 == 1).expect("x is bound").1;
    let (entry, groups) = elementwise(("bn_backward_dx", "bn_backward_dx4"), x);
    kernel(gpu, op, SHADER, entry, params, bufs, groups)
}

/// [`backward`] of a training BatchNorm followed by a ReLU (no residual, one rank) from the
/// sums the convolution after it wrote in its backward to the input
/// (`conv2d::backward_input_bn`): `g` is dy already masked by the ReLU, `partial` [C,
/// ceil(N*H*W / 4), 2] holds sum(g * xhat) and sum(g) per channel and run of 4 values. dy, y and
/// x are not read for the sums; dx reads g and x.
#[allow(clippy::too_many_arguments)]
pub fn backward_from(
    gpu: &Gpu,
    g: &Tensor,
    x: &Tensor,
    affine: &Tensor,
    saved: &Tensor,
    dx: &Tensor,
    dparams: &Tensor,
    partial: &Tensor,
) -> Result<Vec<Kernel>> {
    const OP: &str = "batchnorm2d backward";
    let (n, c, hw) = dims(OP, x)?;
    check_backward_shapes(OP, x, &[("dy", g), ("dx", dx)], None)?;
    check_shape(OP, "affine (gamma, beta)", affine, &[2, c])?;
    check_shape(OP, "dparams", dparams, &[2, c])?;
    check_shape(OP, "statistics", saved, &[2, c])?;
    let runs = (n * hw).div_ceil(4);
    check_shape(OP, "backward sums", partial, &[c * runs * 2])?;
    let params = params_chunks(n, c, hw, 0, 0.0, 1, runs);
    let mut sums = kernel(
        gpu,
        OP,
        SHADER,
        "bn_backward_partials",
        params.clone(),
        &[(12, dparams), (14, partial)],
        1,
    )?;
    sums.grid = [c as u32, 1, 1];
    // the mask was applied (no y) and nothing was added (no dres); running stays unread
    let (no_y, no_running, no_dres) = (dummy(gpu)?, dummy(gpu)?, dummy(gpu)?);
    let bufs = [
        (1, x),
        (2, &no_y),
        (3, affine),
        (5, saved),
        (7, &no_running),
        (10, g),
        (11, dx),
        (12, dparams),
        (13, &no_dres),
        (14, partial),
    ];
    Ok(vec![sums, dx_kernel(gpu, OP, &bufs, params)?])
}

/// Checks that the backward's activations (and dresidual) have x's shape.
fn check_backward_shapes(
    op: &'static str,
    x: &Tensor,
    like_x: &[(&str, &Tensor)],
    dres: Option<&Tensor>,
) -> Result<()> {
    for &(name, t) in like_x.iter().chain(dres.map(|r| ("dresidual", r)).as_ref()) {
        check_shape(op, name, t, &x.shape)?;
    }
    Ok(())
}

/// What the host does between two kernels of a BatchNorm whose batch is spread over several
/// data-parallel ranks (SyncBatchNorm): read every chunk's partial sums of this rank, gather
/// every rank's, and write back the whole batch's values for the next kernel.
pub struct Exchange {
    /// The kernel (its index in the op's list) that needs the combined values.
    pub before: usize,
    /// [C, chunks, 2]: this rank's per-chunk values, read before and written after.
    pub partial: Tensor,
    /// How the ranks' values combine.
    pub combine: Combine,
}

impl Exchange {
    fn new(partial: Tensor, what: Exchanged, before: usize, dims: (usize, usize, usize)) -> Self {
        Exchange {
            before,
            partial,
            combine: Combine::new(what, dims),
        }
    }
}

/// The partial sums of an [`Exchange`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Exchanged {
    /// (mean, sum of squared deviations) per chunk; combined: (mean, biased variance).
    Statistics,
    /// (sum g*xhat, sum g) per chunk; combined: their sums.
    GradientSums,
}

/// How every rank's [C, chunks, 2] partial values become the whole batch's.
#[derive(Clone, Debug)]
pub struct Combine {
    what: Exchanged,
    channels: usize,
    /// Elements in each chunk of one rank's N*H*W (the same on every rank).
    counts: Vec<usize>,
}

impl Combine {
    /// For a BatchNorm over x [N, C, H*W] on each rank.
    pub fn new(what: Exchanged, (n, c, hw): (usize, usize, usize)) -> Combine {
        let (m, k) = (n * hw, chunks(n * hw));
        let len = m.div_ceil(k);
        let counts = (0..k)
            .map(|i| ((i + 1) * len).min(m) - (i * len).min(m))
            .collect();
        Combine {
            what,
            channels: c,
            counts,
        }
    }

    /// What to write back into `partial`, given every rank's partial values rank after rank:
    /// the whole batch's value of every channel in its chunk 0, added in (rank, chunk) order in
    /// f64, so every rank writes the same bits.
    pub fn apply(&self, all: &[f64]) -> Vec<f32> {
        let k = self.counts.len();
        let per_rank = self.channels * k * 2;
        debug_assert!(
            all.len().is_multiple_of(per_rank),
            "ranks' partials of unequal length"
        );
        let ranks = all.len() / per_rank;
        let mut out = vec![0f32; per_rank];
        for ch in 0..self.channels {
            let chunks = (0..ranks).flat_map(|r| {
                (0..k).map(move |j| (r * per_rank + (ch * k + j) * 2, self.counts[j]))
            });
            let (a, b) = match self.what {
                Exchanged::Statistics => {
                    merge_moments(chunks.map(|(o, n)| (n, all[o], all[o + 1])))
                }
                Exchanged::GradientSums => {
                    chunks.fold((0.0, 0.0), |(a, b), (o, _)| (a + all[o], b + all[o + 1]))
                }
            };
            out[ch * k * 2] = a as f32;
            out[ch * k * 2 + 1] = b as f32;
        }
        out
    }
}

/// (mean, biased variance) of the union of groups given as (count, mean, sum of squared
/// deviations), merged in order with Chan et al.'s pairwise formula (as the shader merges chunks).
fn merge_moments(groups: impl Iterator<Item = (usize, f64, f64)>) -> (f64, f64) {
    let (mut count, mut mean, mut m2) = (0.0f64, 0.0f64, 0.0f64);
    for (n, mu, ss) in groups {
        if n == 0 {
            continue;
        }
        let n = n as f64;
        let total = count + n;
        let delta = mu - mean;
        mean += delta * (n / total);
        m2 += ss + delta * delta * (count * n / total);
        count = total;
    }
    (mean, m2 / count.max(1.0))
}

/// The bindings of activations and their gradients: x, y, residual, dy, dx, dres.
const ACTIVATION_BINDINGS: [u32; 6] = [1, 2, 9, 10, 11, 13];

/// A kernel of batchnorm.wgsl from the module of its activations' type (f16 activations: the
/// module of f16 activations); every activation it binds must be of that type (one-element
/// dummies in unused slots aside).
fn kernel(
    gpu: &Gpu,
    op: &'static str,
    shader: (&'static str, &'static str),
    entry: &'static str,
    params: Uniform,
    bufs: &[(u32, &Tensor)],
    groups: u64,
) -> Result<Kernel> {
    let acts: Vec<&Tensor> = (bufs.iter())
        .filter(|b| ACTIVATION_BINDINGS.contains(&b.0) && b.1.len() > 1)
        .map(|b| b.1)
        .collect();
    let act = activations::of(acts.iter().copied());
    if acts.iter().any(|t| t.dtype != act) {
        return shape_err(
            op,
            format!("{entry}: activations of two types (f16 and f32)"),
        );
    }
    let module = activations::module(shader, act);
    super::kernel(gpu, op, module, entry, params, bufs, groups)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values of channel `ch`, element `i` of rank `r` (any spread-out numbers).
    fn value(r: usize, ch: usize, i: usize) -> f64 {
        let t = (r * 7919 + ch * 104_729 + i * 31) as f64;
        (t * 0.618_034).fract() * 4.0 - 1.5 + ch as f64
    }

    /// Every rank's [C, chunks, 2] values, made from the data as the shader's chunk step does.
    fn partials(c: Combine, ranks: usize, per: impl Fn(&[f64]) -> (f64, f64)) -> Vec<f64> {
        let mut all = Vec::new();
        for r in 0..ranks {
            for ch in 0..c.channels {
                let mut start = 0;
                for &n in &c.counts {
                    let xs: Vec<f64> = (start..start + n).map(|i| value(r, ch, i)).collect();
                    let (a, b) = per(&xs);
                    all.extend([a, b]);
                    start += n;
                }
            }
        }
        all
    }

    #[test]
    fn statistics_across_ranks_are_the_whole_batchs() {
        // 3 ranks of N=2, H*W=5000: 10,000 values a rank in 3 chunks of unequal length
        let (ranks, dims) = (3, (2, 2, 5000));
        let c = Combine::new(Exchanged::Statistics, dims);
        assert_eq!(c.counts, [3334, 3334, 3332]);
        let all = partials(c.clone(), ranks, |xs| {
            let mean = xs.iter().sum::<f64>() / xs.len() as f64;
            (mean, xs.iter().map(|x| (x - mean) * (x - mean)).sum())
        });
        let out = c.apply(&all);
        for ch in 0..2 {
            let xs: Vec<f64> = (0..ranks)
                .flat_map(|r| (0..10_000).map(move |i| value(r, ch, i)))
                .collect();
            let mean = xs.iter().sum::<f64>() / xs.len() as f64;
            let var = xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / xs.len() as f64;
            let at = ch * 3 * 2;
            assert!(
                (out[at] as f64 - mean).abs() < 1e-6,
                "{} vs {mean}",
                out[at]
            );
            assert!(
                (out[at + 1] as f64 - var).abs() < 1e-6 * var,
                "{} vs {var}",
                out[at + 1]
            );
        }
    }

    #[test]
    fn gradient_sums_across_ranks_add_every_chunk() {
        let c = Combine::new(Exchanged::GradientSums, (4, 1, 3000));
        let all = partials(c.clone(), 2, |xs| {
            (xs.iter().sum(), xs.iter().map(|x| 2.0 * x).sum())
        });
        let out = c.apply(&all);
        let total: f64 = (0..2)
            .flat_map(|r| (0..12_000).map(move |i| value(r, 0, i)))
            .sum();
        assert!((out[0] as f64 - total).abs() < 1e-6 * total.abs());
        assert!((out[1] as f64 - 2.0 * total).abs() < 1e-6 * total.abs());
        assert!(
            out[2..].iter().all(|v| *v == 0.0),
            "only chunk 0 holds the sums"
        );
    }
}
