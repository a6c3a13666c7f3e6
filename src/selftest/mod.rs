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
}

impl Group {
    fn new(op: impl Into<String>) -> Group {
        Group {
            op: op.into(),
            cases: Vec::new(),
            worst: 0.0,
            worst_case: String::new(),
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

    /// Whether every case is within `tolerance` (a NaN anywhere fails).
    pub fn passes(&self, tolerance: f64) -> bool {
        self.worst <= tolerance
    }
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
