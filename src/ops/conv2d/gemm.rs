//! The GPU-class convolution families (shaders/conv2d_gemm.wgsl): implicit GEMM in workgroup
//! tiles of TM x TN outputs, RM x RN per invocation, depth steps of TK through double-buffered
//! workgroup memory; the backward to the weights split along N*P*Q (split-K) and reduced in a
//! fixed order. One template, a module per tile size (the rows of `family`).

use super::family::{KernelFamily, Tile};
use super::{kernel, kernel_grid, scratch, weights_for_forward, weights_for_input};
use super::{Conv2dShape, DxEpilogue, Entry};
use super::{BACKWARD_INPUT, BACKWARD_WEIGHT, FORWARD};
use crate::error::Result;
use crate::gpu::{Gpu, Kernel, Tensor};

/// Partial sums of the backward to the weights are capped at this many values (64 MiB).
const MAX_PARTIAL: usize = 1 << 24;

/// At most this many splits: each output of the reduction reads one value per split, and at
/// ResNet-20's first stage (2304 weights) 512 splits made the reduction cost more than the GEMM
/// (measured on an H200).
const MAX_SPLITS: usize = 128;

/// Forward: the weights re-laid [C*R*S, Kpad] (vec4 along K), then the GEMM with the epilogue
/// `epi` (`Epilogue::bits`: bias `b`, `residual`, ReLU); with `stats`, the
/// GEMM also writes BatchNorm's partial statistics of y into it (`conv_fwd_gemm_stats`, the
/// tensor-core tile's included).
#[allow(clippy::too_many_arguments)]
pub(super) fn forward(
    gpu: &Gpu,
    sh: &Conv2dShape,
    (x, w, b, residual): (&Tensor, &Tensor, &Tensor, &Tensor),
    (epi, on_load): (usize, bool),
    y: &Tensor,
    stats: Option<&Tensor>,
    family: KernelFamily,
    t: Tile,
) -> Result<Vec<Kernel>> {
    let params = sh.params(1, 0, epi, 4);
    let (tr, wt) = weights_for_forward(gpu, sh, w, &params, (family, 4))?;
    let tiles = sh.k.div_ceil(t.tm) * (sh.n * sh.p() * sh.q()).div_ceil(t.tn);
    let mut bufs = vec![(1, w), (2, x), (3, y), (4, b), (5, &wt), (7, residual)];
    let entry = match stats.filter(|_| family.writes_stats()) {
        Some(stats) => {
            bufs.push((6, stats));
            STATS_ENTRY
        }
        None => "conv_fwd_gemm",
    };
    let entry = Entry::loading(family, entry, on_load);
    let c = kernel(gpu, FORWARD, entry, params, &bufs, tiles as u64)?;
    Ok(vec![tr, c])
}

/// The GEMM forward that also writes BatchNorm's partial statistics.
pub(super) const STATS_ENTRY: &str = "conv_fwd_gemm_stats";

/// Backward to the input: the weights re-laid [R*S, K, Cpad] (vec4 along C), then the GEMM, with
/// `epi`: BatchNorm's ReLU mask and backward sums (`conv_dx_gemm_bn`, the tensor-core tile's
/// included), or another gradient added.
#[allow(clippy::too_many_arguments)]
pub(super) fn backward_input(
    gpu: &Gpu,
    sh: &Conv2dShape,
    dy: &Tensor,
    w: &Tensor,
    dx: &Tensor,
    epi: DxEpilogue,
    family: KernelFamily,
    t: Tile,
) -> Result<Vec<Kernel>> {
    let params = sh.params_with(1, 0, epi.bits(), 4, epi.bn_bits());
    let (tr, wt) = weights_for_input(gpu, sh, w, &params, (family, 4))?;
    let tiles = sh.c.div_ceil(t.tm) * (sh.n * sh.h * sh.w).div_ceil(t.tn);
    let no_bias = super::dummy(gpu)?;
    let mut bufs = vec![(1, w), (2, dy), (3, dx), (4, &no_bias), (5, &wt)];
    let mut entry = "conv_dx_gemm";
    match epi {
        DxEpilogue::Bn(bn) if family.writes_stats() => {
            bufs = vec![(2, dy), (3, dx), (5, &wt)];
            bufs.extend(bn.bindings());
            entry = BN_GRAD_ENTRY;
        }
        DxEpilogue::Add(other) => bufs.push((7, other)),
        _ => {}
    }
    let c = kernel(
        gpu,
        BACKWARD_INPUT,
        (family, entry),
        params,
        &bufs,
        tiles as u64,
    )?;
    Ok(vec![tr, c])
}

/// The GEMM backward to the input that also does BatchNorm's backward sums.
pub(super) const BN_GRAD_ENTRY: &str = "conv_dx_gemm_bn";

/// Backward to the weights, split along N*P*Q so that about 1024 workgroups run (each at least
/// 16 depth steps, at most [`MAX_SPLITS`] splits, the partial sums capped at [`MAX_PARTIAL`]):
/// (kernels, partial sums [splits, K, C*R*S], splits).
pub(super) fn backward_weight(
    gpu: &Gpu,
    sh: &Conv2dShape,
    (x, bn_in): (&Tensor, Option<&Tensor>),
    dy: &Tensor,
    family: KernelFamily,
    t: Tile,
) -> Result<(Vec<Kernel>, Tensor, usize)> {
    let crs = sh.c * sh.r * sh.s;
    let npq = sh.n * sh.p() * sh.q();
    let tiles = sh.k.div_ceil(t.tm) * crs.div_ceil(t.tn);
    let want = 1024usize
        .div_ceil(tiles)
        .min(npq.div_ceil(16 * t.tk))
        .min(MAX_SPLITS)
        .min(MAX_PARTIAL / (sh.k * crs))
        .min(super::splits_that_fit(gpu, sh))
        .max(1);
    let chunk = npq.div_ceil(want).div_ceil(t.tk) * t.tk;
    let splits = npq.div_ceil(chunk);
    let partial = scratch(gpu, BACKWARD_WEIGHT, splits * sh.k * crs)?;
    let params = sh.params(splits, chunk, 0, 4);
    let (no_bias, no_wt) = (super::dummy(gpu)?, gpu.zeros(&[4])?);
    let b = bn_in.unwrap_or(&no_bias);
    let bufs = [(1, dy), (2, x), (3, &partial), (4, b), (5, &no_wt)];
    let entry = Entry::loading(family, "conv_dw_gemm", bn_in.is_some());
    let (tx, ty) = (tiles as u64, splits as u64);
    let k = kernel_grid(gpu, BACKWARD_WEIGHT, entry, params, &bufs, tx, ty)?;
    Ok((vec![k], partial, splits))
}
