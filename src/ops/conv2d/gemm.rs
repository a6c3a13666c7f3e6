//! The GPU-class convolution family (shaders/conv2d_gemm.wgsl): implicit GEMM in workgroup tiles
//! of TM x TN outputs, RM x RN per invocation, depth steps of TK through double-buffered workgroup
//! memory; the backward to the weights split along N*P*Q (split-K) and reduced in a fixed order.
//! One source, a module per tile size.

use super::{kernel, kernel_grid, scratch, weights_for_forward, weights_for_input, Conv2dShape};
use super::{BACKWARD_INPUT, BACKWARD_WEIGHT, FORWARD};
use crate::error::Result;
use crate::gpu::{Gpu, Kernel, KernelFamily, Tensor};
use std::sync::OnceLock;

const TEMPLATE: &str = include_str!("../../../shaders/conv2d_gemm.wgsl");

/// One tile size: rows (channels) and columns of C per workgroup, depth per step, and the rows
/// and columns each of the 256 invocations keeps.
#[derive(Debug, Clone, Copy)]
struct Tile {
    tm: usize,
    tn: usize,
    tk: usize,
    rm: usize,
    rn: usize,
}

/// (family, file name for errors and the pipeline cache, tile). Both workgroup buffers of each fit
/// WebGPU's default 16 KiB: 2 * (TM + TN) * TK * 4 bytes.
const TILES: [(KernelFamily, &str, Tile); 3] = [
    (
        KernelFamily::Gemm32x128,
        "conv2d_gemm.wgsl (32x128)",
        Tile {
            tm: 32,
            tn: 128,
            tk: 8,
            rm: 4,
            rn: 4,
        },
    ),
    (
        KernelFamily::Gemm64x64,
        "conv2d_gemm.wgsl (64x64)",
        Tile {
            tm: 64,
            tn: 64,
            tk: 16,
            rm: 4,
            rn: 4,
        },
    ),
    (
        KernelFamily::Gemm128x128,
        "conv2d_gemm.wgsl (128x128)",
        Tile {
            tm: 128,
            tn: 128,
            tk: 8,
            rm: 8,
            rn: 8,
        },
    ),
];

/// Partial sums of the backward to the weights are capped at this many values (64 MiB).
const MAX_PARTIAL: usize = 1 << 24;

/// At most this many splits: each output of the reduction reads one value per split, and at
/// ResNet-20's first stage (2304 weights) 512 splits made the reduction cost more than the GEMM
/// (measured on an H200).
const MAX_SPLITS: usize = 128;

fn tile_of(family: KernelFamily) -> (usize, Tile) {
    let i = TILES
        .iter()
        .position(|t| t.0 == family)
        .expect("a GEMM family has a tile");
    (i, TILES[i].2)
}

/// The shader module (file name, source) of a GEMM family, expanded once per process.
pub(super) fn module(family: KernelFamily) -> (&'static str, &'static str) {
    static SOURCES: [OnceLock<String>; 3] = [const { OnceLock::new() }; 3];
    let (i, tile) = tile_of(family);
    let source = SOURCES[i].get_or_init(|| expand(TEMPLATE, tile));
    (TILES[i].1, source.as_str())
}

/// The template with its tile constants set and its marked lines written out.
fn expand(template: &str, t: Tile) -> String {
    assert_eq!(
        (t.tm / t.rm) * (t.tn / t.rn),
        256,
        "a tile needs 256 invocations"
    );
    let consts = [
        ("TM", t.tm),
        ("TN", t.tn),
        ("TK", t.tk),
        ("RM", t.rm),
        ("RN", t.rn),
    ];
    // the counts marked lines may loop over
    let counts = [
        ("RM", t.rm),
        ("RM4", t.rm / 4),
        ("RN4", t.rn / 4),
        ("A_SLOADS", t.tk * t.tm / 256),
        ("B_LOADS", t.tk * t.tn / 256),
    ];
    let mut set = 0;
    let mut out = String::with_capacity(template.len() * 2);
    for line in template.lines() {
        let trimmed = line.trim_start();
        let indent = &line[..line.len() - trimmed.len()];
        if let Some(marked) = trimmed.strip_prefix("//%[") {
            let (loops, body) = marked.split_once("] ").expect("//%[v<COUNT] body");
            for values in loop_values(loops, &counts) {
                out.push_str(indent);
                out.push_str(&fill(body, &values));
                out.push('\n');
            }
            continue;
        }
        let name = line
            .strip_prefix("const ")
            .and_then(|rest| rest.split_once(": u32 = "))
            .map(|(name, _)| name);
        match consts.iter().find(|(c, _)| Some(*c) == name) {
            Some((c, v)) => {
                out.push_str(&format!("const {c}: u32 = {v}u;"));
                set += 1;
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    // the dispatch sizes below assume every constant was set
    assert_eq!(
        set,
        consts.len(),
        "shaders/conv2d_gemm.wgsl lost a tile constant"
    );
    out
}

/// Every combination of the loop variables of `v<COUNT,w<COUNT2`, the last varying fastest.
fn loop_values<'a>(loops: &'a str, counts: &[(&str, usize)]) -> Vec<Vec<(&'a str, usize)>> {
    let mut all = vec![Vec::new()];
    for spec in loops.split(',') {
        let (var, count) = spec.split_once('<').expect("v<COUNT");
        let n = counts
            .iter()
            .find(|(c, _)| *c == count)
            .unwrap_or_else(|| panic!("unknown count {count} in //%[{loops}]"))
            .1;
        all = all
            .into_iter()
            .flat_map(|prefix| {
                (0..n).map(move |v| {
                    let mut p = prefix.clone();
                    p.push((var, v));
                    p
                })
            })
            .collect();
    }
    all
}

/// `body` with {v}, {v/4} and {v%4} of each loop variable replaced by its value.
fn fill(body: &str, values: &[(&str, usize)]) -> String {
    let mut s = body.to_string();
    for (var, v) in values {
        s = s
            .replace(&format!("{{{var}/4}}"), &(v / 4).to_string())
            .replace(&format!("{{{var}%4}}"), &(v % 4).to_string())
            .replace(&format!("{{{var}}}"), &v.to_string());
    }
    s
}

/// Forward: the weights re-laid [C*R*S, Kpad] (vec4 along K), then the GEMM.
#[allow(clippy::too_many_arguments)]
pub(super) fn forward(
    gpu: &Gpu,
    sh: &Conv2dShape,
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    has_bias: bool,
    y: &Tensor,
    family: KernelFamily,
) -> Result<Vec<Kernel>> {
    let (_, t) = tile_of(family);
    let params = sh.params(1, 0, has_bias, 4);
    let (tr, wt) = weights_for_forward(gpu, sh, w, &params, 4)?;
    let tiles = sh.k.div_ceil(t.tm) * (sh.n * sh.p() * sh.q()).div_ceil(t.tn);
    let bufs = [(1, w), (2, x), (3, y), (4, b), (5, &wt)];
    let entry = (family, "conv_fwd_gemm");
    let c = kernel(gpu, FORWARD, entry, params, &bufs, tiles as u64)?;
    Ok(vec![tr, c])
}

/// Backward to the input: the weights re-laid [R*S, K, Cpad] (vec4 along C), then the GEMM.
pub(super) fn backward_input(
    gpu: &Gpu,
    sh: &Conv2dShape,
    dy: &Tensor,
    w: &Tensor,
    dx: &Tensor,
    family: KernelFamily,
) -> Result<Vec<Kernel>> {
    let (_, t) = tile_of(family);
    let params = sh.params(1, 0, false, 4);
    let (tr, wt) = weights_for_input(gpu, sh, w, &params, 4)?;
    let tiles = sh.c.div_ceil(t.tm) * (sh.n * sh.h * sh.w).div_ceil(t.tn);
    let no_bias = super::dummy(gpu)?;
    let bufs = [(1, w), (2, dy), (3, dx), (4, &no_bias), (5, &wt)];
    let entry = (family, "conv_dx_gemm");
    let c = kernel(gpu, BACKWARD_INPUT, entry, params, &bufs, tiles as u64)?;
    Ok(vec![tr, c])
}

/// Backward to the weights, split along N*P*Q so that about 1024 workgroups run (each at least
/// 16 depth steps, at most [`MAX_SPLITS`] splits, the partial sums capped at [`MAX_PARTIAL`]):
/// (kernels, partial sums [splits, K, C*R*S], splits).
pub(super) fn backward_weight(
    gpu: &Gpu,
    sh: &Conv2dShape,
    x: &Tensor,
    dy: &Tensor,
    family: KernelFamily,
) -> Result<(Vec<Kernel>, Tensor, usize)> {
    let (_, t) = tile_of(family);
    let crs = sh.c * sh.r * sh.s;
    let npq = sh.n * sh.p() * sh.q();
    let tiles = sh.k.div_ceil(t.tm) * crs.div_ceil(t.tn);
    let want = 1024usize
        .div_ceil(tiles)
        .min(npq.div_ceil(16 * t.tk))
        .min(MAX_SPLITS)
        .min(MAX_PARTIAL / (sh.k * crs))
        .max(1);
    let chunk = npq.div_ceil(want).div_ceil(t.tk) * t.tk;
    let splits = npq.div_ceil(chunk);
    let partial = scratch(gpu, BACKWARD_WEIGHT, splits * sh.k * crs)?;
    let params = sh.params(splits, chunk, false, 4);
    let (no_bias, no_wt) = (super::dummy(gpu)?, gpu.zeros(&[4])?);
    let bufs = [(1, dy), (2, x), (3, &partial), (4, &no_bias), (5, &no_wt)];
    let entry = (family, "conv_dw_gemm");
    let (tx, ty) = (tiles as u64, splits as u64);
    let k = kernel_grid(gpu, BACKWARD_WEIGHT, entry, params, &bufs, tx, ty)?;
    Ok((vec![k], partial, splits))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tile_constant_is_set_and_every_marked_line_written_out() {
        let e = expand(TEMPLATE, TILES[2].2);
        assert!(e.contains("const TM: u32 = 128u;") && e.contains("const RN: u32 = 8u;"));
        assert!(e.contains("const TK: u32 = 8u;") && !e.contains("const TM: u32 = 64u;"));
        assert!(!e.lines().any(|l| l.trim_start().starts_with("//%")) && !e.contains("{r}"));
        // 8 rows x 2 column groups of accumulators, each declared, updated and written once
        assert_eq!(e.matches("var acc").count(), 16);
        assert!(e.contains("acc7_1 += a1[3u] * b1;"));
        assert!(e.contains("write_out(mode, g, tm, tn, 7u, 1u, acc7_1);"));
    }

    #[test]
    fn loops_nest_with_the_last_variable_fastest() {
        let counts = [("RM", 2), ("RN4", 3)];
        let v = loop_values("r<RM,j<RN4", &counts);
        assert_eq!(v.len(), 6);
        assert_eq!(v[1], vec![("r", 0), ("j", 1)]);
        assert_eq!(fill("a{r/4}[{r%4}] {j}", &[("r", 6), ("j", 2)]), "a1[2] 2");
    }

    #[test]
    fn both_buffers_fit_webgpus_default_workgroup_storage() {
        for (_, _, t) in TILES {
            assert!(2 * (t.tm + t.tn) * t.tk * 4 <= 16384, "{t:?}");
        }
    }
}
