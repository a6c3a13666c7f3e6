//! Grouped convolutions (`groups` > 1: ResNeXt's 3x3 convolutions), forward and both
//! backwards, from shaders/conv2d_grouped.wgsl: one kernel each for every adapter, never raced
//! by the tuner (the families tile dense convolutions only). They take what the dense kernels
//! take where the plan needs it (the forward's epilogue and BatchNorm's partial statistics of
//! its output, the BatchNorm below applied on load, f16 activations); the backward to the input
//! computes no BatchNorm sums in its epilogue, so the plan reduces them separately, as after the
//! tiled family.

use super::{bn_in_module, dummy, scratch, splits_that_fit, Conv2dShape, Epilogue};
use crate::error::Result;
use crate::gpu::{Dtype, Gpu, Kernel, Tensor, Uniform};
use crate::ops::activations::{self, CONV_FORWARD, CONV_WEIGHTS};

const SOURCE: (&str, &str) = (
    "conv2d_grouped.wgsl",
    include_str!("../../../shaders/conv2d_grouped.wgsl"),
);

/// Every module a grouped kernel may come from, for validation: f32, the f16 forward's and the
/// f16 weights' modules, each also with the BatchNorm below applied on load.
pub fn modules() -> Vec<(&'static str, &'static str)> {
    let own = [
        SOURCE,
        activations::module_with(SOURCE, CONV_FORWARD),
        activations::module_with(SOURCE, CONV_WEIGHTS),
    ];
    own.into_iter()
        .chain(own.into_iter().map(bn_in_module))
        .collect()
}

/// One kernel of the grouped module that fits the tensors it binds (f16 activations: the
/// forward's or the weights' f16 module), with the BatchNorm below on load where `bn_in`.
fn kernel(
    gpu: &Gpu,
    op: &'static str,
    entry: &'static str,
    (params, bn_in): (Uniform, bool),
    buffers: &[(u32, &Tensor)],
    workgroups: u64,
) -> Result<Kernel> {
    let module = match activations::of(buffers.iter().map(|b| b.1)) {
        Dtype::F32 => SOURCE,
        Dtype::F16 if entry == "conv_dw_grouped" => activations::module_with(SOURCE, CONV_WEIGHTS),
        Dtype::F16 => activations::module_with(SOURCE, CONV_FORWARD),
    };
    let module = if bn_in { bn_in_module(module) } else { module };
    super::super::kernel(gpu, op, module, entry, params, buffers, workgroups)
}

/// y = relu?(conv(x) + bias? + residual?), x loaded through the BatchNorm below where `bn_in`
/// holds its [scale, shift] (then without a bias); BatchNorm's partial statistics of y into
/// `stats` where given (`super::stats_len`).
pub(super) fn forward(
    gpu: &Gpu,
    sh: &Conv2dShape,
    (x, bn_in): (&Tensor, Option<&Tensor>),
    w: &Tensor,
    (epi, stats): (&Epilogue, Option<&Tensor>),
    y: &Tensor,
) -> Result<Vec<Kernel>> {
    let (no_bias, no_residual, no_stats) = (dummy(gpu)?, dummy(gpu)?, dummy(gpu)?);
    let b = bn_in.or(epi.bias).unwrap_or(&no_bias);
    let res = epi.residual.unwrap_or(&no_residual);
    let st = stats.unwrap_or(&no_stats);
    let bufs = [(1, w), (2, x), (3, y), (4, b), (7, res), (8, st)];
    // one invocation per channel and run of 8 output pixels
    let runs = (sh.k * (sh.n * sh.p() * sh.q()).div_ceil(8)) as u64;
    let p = (
        sh.params_with(1, 0, epi.bits(), 16, stats.is_some() as usize),
        bn_in.is_some(),
    );
    let op = super::FORWARD;
    let k = kernel(gpu, op, "conv_fwd_grouped", p, &bufs, runs.div_ceil(64))?;
    Ok(vec![k])
}

/// dx = conv's backward to the input of dy (+ `added`, the gradient the shortcut brings).
pub(super) fn backward_input(
    gpu: &Gpu,
    sh: &Conv2dShape,
    dy: &Tensor,
    w: &Tensor,
    dx: &Tensor,
    added: Option<&Tensor>,
) -> Result<Vec<Kernel>> {
    let no_added = dummy(gpu)?;
    let epi = Epilogue {
        residual: added,
        ..Default::default()
    };
    let bufs = [(1, w), (2, dy), (3, dx), (7, added.unwrap_or(&no_added))];
    let inputs = (sh.n * sh.c * sh.h * sh.w) as u64;
    let p = (sh.params(1, 0, epi.bits(), 16), false);
    let op = super::BACKWARD_INPUT;
    let k = kernel(gpu, op, "conv_dx_grouped", p, &bufs, inputs.div_ceil(64))?;
    Ok(vec![k])
}

/// Invocations the backward to the weights aims at: enough to fill a GPU where a layer has few
/// weights and many pixels (ResNeXt-50's first stage: 4,608 weights, 200,704 pixels at batch 64),
/// few enough that the partial sums stay small.
const WEIGHT_GRADIENT_INVOCATIONS: usize = 1 << 16;

/// dw (and db where given) of dy and x, x loaded through the BatchNorm below where `bn_in`: each
/// weight's sum over the N*P*Q pixels in chunks, one invocation per weight and chunk, then the
/// chunks added in order (conv2d.wgsl's `conv_dw_reduce`, as the register families do).
pub(super) fn backward_weight(
    gpu: &Gpu,
    sh: &Conv2dShape,
    (x, bn_in): (&Tensor, Option<&Tensor>),
    dy: &Tensor,
    dw: &Tensor,
    db: Option<&Tensor>,
) -> Result<Vec<Kernel>> {
    const OP: &str = super::BACKWARD_WEIGHT;
    let weights: usize = sh.w_shape().iter().product();
    let npq = sh.n * sh.p() * sh.q();
    let want = WEIGHT_GRADIENT_INVOCATIONS
        .div_ceil(weights)
        .clamp(1, npq)
        .min(splits_that_fit(gpu, sh));
    let chunk = npq.div_ceil(want);
    let splits = npq.div_ceil(chunk);
    let partial = scratch(gpu, OP, splits * weights)?;
    let no_bn = dummy(gpu)?;
    let bufs = [(2, x), (4, bn_in.unwrap_or(&no_bn)), (5, &partial), (6, dy)];
    let p = (sh.params(splits, chunk, 0, 16), bn_in.is_some());
    let sums = (splits * weights) as u64;
    let mut ks = vec![kernel(
        gpu,
        OP,
        "conv_dw_grouped",
        p,
        &bufs,
        sums.div_ceil(64),
    )?];
    // the reduction sees a dense weight of the group's input channels; db does not see the
    // groups at all
    let per_group = Conv2dShape {
        c: sh.c / sh.groups,
        groups: 1,
        ..*sh
    };
    ks.extend(super::reduce_weight_sums(
        gpu,
        &per_group,
        (&partial, splits),
        dw,
        (dy, db),
    )?);
    Ok(ks)
}
