//! `resnet selftest`: the engine proves itself on a user's adapter. Every convolution kernel
//! family forward and backward at ResNet shapes, BatchNorm's reductions at full ResNet sizes, and
//! whole training steps of small nets (every other op in place: shortcuts, pools, the classifier,
//! the loss, SGD) against the f64 CPU references of `crate::reference`. Native only: it waits for
//! the GPU.

mod batchnorm;
mod conv;
mod network;

pub use network::{network_step, NetworkStep};

use crate::error::Result;
use crate::gpu::{Gpu, GpuOptions};

/// The error allowed by default: max |gpu - reference| / max |reference| (the tests' norm).
pub const TOLERANCE: f64 = 1e-4;

/// The worst error of one op over its cases.
#[derive(Debug, Clone)]
pub struct Group {
    /// e.g. `conv2d forward (register)`.
    pub op: String,
    /// The shapes it was run at, e.g. `1x3x224x224 k64 7x7/2`.
    pub cases: Vec<String>,
    /// The largest max-norm relative error over the cases.
    pub worst: f64,
    /// The case with the largest error.
    pub worst_case: String,
    /// Compared against a bound per element (the f16 families'): whether every element was
    /// within its bound; `None`: judged by the max-norm tolerance.
    pub within_bounds: Option<bool>,
    /// A max-norm tolerance of this group's own, instead of the run's (mixed precision's
    /// whole training steps: [`MIXED_STEP_TOLERANCE`], [`MIXED_GRADIENT_TOLERANCE`]).
    pub tolerance: Option<f64>,
}

/// What a whole training step's forward in mixed precision (its loss, logits and BatchNorm
/// running statistics) may differ from the reference that rounds the same values to f16
/// (`reference::network::training_step_mixed`), max-norm relative: 2^-7, eight f16 ulps. The two
/// round the same values, but the GPU rounds its f32 values and the reference its f64 ones;
/// where a value lies within the f32 error of a rounding midpoint the two round it apart by one
/// f16 ulp (2^-10 of it). Against the exact reference the same steps differ by 1e-3 to 1e-1.
pub const MIXED_STEP_TOLERANCE: f64 = 1.0 / 128.0;

/// What a mixed-precision step's parameter gradients may differ from that reference, max-norm
/// relative: 2^-5. Every activation and activation gradient is stored in f16, so the one-ulp
/// disagreements above happen at every layer's stores, and the backward carries them on: a
/// ReLU decided at the edge moves a term of a short sum (a weight gradient over 64 positions)
/// by a large share of its tensor's largest value. Measured on lavapipe: worst 1.85e-2
/// (resnet8's layer2.0.conv2.weight), 5.5e-3 in the L2 norm, against 1.5e-1 from the exact
/// reference; the small bottleneck net, with no such disagreement, within 2.1e-3.
pub const MIXED_GRADIENT_TOLERANCE: f64 = 1.0 / 32.0;

impl Group {
    fn new(op: impl Into<String>) -> Group {
        Group {
            op: op.into(),
            cases: Vec::new(),
            worst: 0.0,
            worst_case: String::new(),
            within_bounds: None,
            tolerance: None,
        }
    }

    /// Adds one comparison of `got` with `want` at `case`.
    pub fn compare(&mut self, case: &str, got: &[f32], want: &[f64]) {
        let err = max_norm_relative_error(got, want);
        if err > self.worst || self.cases.is_empty() {
            self.worst = err;
            self.worst_case = case.to_string();
        }
        self.cases.push(case.to_string());
    }

    /// [`Group::compare`], judged by whether each element of `got` is within its `bound` of
    /// `want` instead of by the tolerance.
    pub fn compare_within(&mut self, case: &str, got: &[f32], want: &[f64], bound: &[f64]) {
        self.compare(case, got, want);
        let within = got.len() == bound.len()
            && got
                .iter()
                .zip(want.iter().zip(bound))
                .all(|(g, (w, b))| (*g as f64 - w).abs() <= *b);
        self.within_bounds = Some(self.within_bounds.unwrap_or(true) && within);
    }

    /// Whether every case is within `tolerance`, or within its bounds where it has them (a NaN
    /// anywhere fails).
    pub fn passes(&self, tolerance: f64) -> bool {
        match self.within_bounds {
            Some(within) => within && self.worst.is_finite(),
            None => self.worst <= self.tolerance.unwrap_or(tolerance),
        }
    }
}

/// What a sum of `depth` products of operands rounded to f16 (either way: WGSL leaves the
/// direction to the implementation), accumulated in f32, may differ from the exact sum, given
/// each output's sum of the products' magnitudes `abs_sums` (the reference op run on |operands|).
/// Each rounded operand is off by at most one f16 ulp, 2^-10 of itself, so a product by at most
/// (2 * 2^-10 + 2^-20) of its magnitude; the f32 sum of `depth` terms adds at most
/// depth * 2^-24 of the magnitudes (to first order; 2 more terms cover the bias and the split
/// sums' reduction).
pub fn f16_bounds(abs_sums: &[f64], depth: usize) -> Vec<f64> {
    const ULP16: f64 = 1.0 / 1024.0;
    const EPS32: f64 = 1.0 / 16_777_216.0;
    let per_magnitude = 2.0 * ULP16 + ULP16 * ULP16 + (depth + 2) as f64 * EPS32;
    abs_sums.iter().map(|s| per_magnitude * s + 1e-30).collect()
}

/// max_i |got_i - want_i| / max_i |want_i|; infinite when lengths differ or `got` is not finite.
pub fn max_norm_relative_error(got: &[f32], want: &[f64]) -> f64 {
    if got.len() != want.len() || got.iter().any(|v| !v.is_finite()) {
        return f64::INFINITY;
    }
    let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-30);
    let err = got
        .iter()
        .zip(want)
        .fold(0.0f64, |m, (g, w)| m.max((*g as f64 - w).abs()));
    err / scale
}

/// Runs every check on the adapter `opts` chooses, handing each group to `report` as it
/// finishes. The convolution families are each forced on a device of their own.
pub fn run(opts: &GpuOptions, report: &mut dyn FnMut(&Group)) -> Result<Vec<Group>> {
    let mut groups = Vec::new();
    let mut done = |g: Group, groups: &mut Vec<Group>| {
        report(&g);
        groups.push(g);
    };
    for g in conv::check_all(opts)? {
        done(g, &mut groups);
    }
    let gpu = Gpu::new_blocking(&GpuOptions {
        tune: Some(false),
        ..opts.clone()
    })?;
    for g in batchnorm::check_all(&gpu)? {
        done(g, &mut groups);
    }
    for g in network::check_all(&gpu)? {
        done(g, &mut groups);
    }
    Ok(groups)
}

/// Deterministic values in [-1, 1).
pub(crate) fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(1);
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 23) as f32) - 1.0
        })
        .collect()
}

pub(crate) fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}
