//! Shared test helpers: a GPU, random data, comparison, real images (`cifar`), torchvision's
//! recorded outputs (`torchvision`). The CPU references they compare with are the library's
//! (`resnet::reference`).
#![allow(dead_code)]

pub mod cifar;
pub mod cli;
pub mod pil;
pub mod serve;
pub mod torchvision;

use resnet::gpu::{Gpu, GpuOptions, Kernel, Precision, Tensor};
use resnet::ops::conv2d::KernelFamily;

/// The default adapter (lavapipe here), optionally with a forced kernel family; no tuning (the
/// family by adapter type), so that every test computes with the same kernels every time.
pub fn gpu_with(kernel_family: Option<KernelFamily>) -> Gpu {
    Gpu::new_blocking(&GpuOptions {
        kernel_family: kernel_family.map(KernelFamily::name),
        precision: kernel_family.map_or(Precision::Fp32, KernelFamily::precision),
        // the tensor-core family runs everywhere, emulated where the adapter has no tensor cores
        emulate_cooperative: kernel_family.is_some_and(KernelFamily::tensor_cores),
        ..untuned()
    })
    .expect("a GPU adapter")
}

/// Whether the default adapter runs f16 shaders, which `--precision mixed` needs. On one that does
/// not (a GPU without shader-f16, Mesa's GL driver), a mixed-precision test says so and returns:
/// the engine's answer there is a one-line error (tests/cli.rs checks it), not a kernel to test.
/// Mesa's lavapipe (Vulkan), the adapter CI runs on, has them, so there these tests always run.
pub fn f16_shaders(test: &str) -> bool {
    let gpu = gpu();
    let has = gpu.adapter_features.contains(wgpu::Features::SHADER_F16);
    let lavapipe = gpu.info.name.contains("llvmpipe") && gpu.info.backend == wgpu::Backend::Vulkan;
    assert!(
        has || !lavapipe,
        "lavapipe offers shader-f16: the feature check is broken"
    );
    if !has {
        eprintln!("{test}: skipped, {} has no f16 shaders", gpu.info.name);
    }
    has
}

/// Options without kernel tuning: the family by adapter type.
pub fn untuned() -> GpuOptions {
    GpuOptions {
        tune: Some(false),
        ..Default::default()
    }
}

/// The default adapter with its default kernel family.
pub fn gpu() -> Gpu {
    gpu_with(None)
}

/// Every fp32 kernel family (each register block size and the tiles), so each is tested on
/// whatever adapter is present (the f16 families have tests of their own, with f16's bounds).
pub fn kernel_families() -> Vec<KernelFamily> {
    KernelFamily::of_precision(Precision::Fp32).collect()
}

/// Runs kernels and waits.
pub fn run(gpu: &Gpu, kernels: &[Kernel]) {
    gpu.run(kernels);
    gpu.wait();
}

/// Reads an f32 tensor back.
pub fn read(gpu: &Gpu, t: &Tensor) -> Vec<f32> {
    gpu.read_blocking(t).expect("readback")
}

/// Deterministic uniform values in [-1, 1).
pub fn rand_vec(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E3779B97F4A7C15).wrapping_add(1);
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 23) as f32) - 1.0
        })
        .collect()
}

/// Max-norm relative error: max_i |got_i - want_i| / max_i |want_i|.
pub fn rel_err(got: &[f32], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len(), "length mismatch");
    let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-12);
    let err = got
        .iter()
        .zip(want)
        .fold(0.0f64, |m, (g, w)| m.max((*g as f64 - w).abs()));
    err / scale
}

/// Asserts the max-norm relative error is at most `tol` (and that nothing is NaN).
pub fn assert_close(what: &str, got: &[f32], want: &[f64], tol: f64) {
    assert!(
        got.iter().all(|v| v.is_finite()),
        "{what}: non-finite output"
    );
    let e = rel_err(got, want);
    assert!(e <= tol, "{what}: max relative error {e:.3e} > {tol:.1e}");
}

/// f32 -> f64.
pub fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

/// Central finite difference of `f` at every coordinate of `x` (f64, step h).
pub fn finite_diff(x: &[f64], h: f64, f: impl Fn(&[f64]) -> f64) -> Vec<f64> {
    let mut xp = x.to_vec();
    (0..x.len())
        .map(|i| {
            let old = xp[i];
            xp[i] = old + h;
            let a = f(&xp);
            xp[i] = old - h;
            let b = f(&xp);
            xp[i] = old;
            (a - b) / (2.0 * h)
        })
        .collect()
}

/// sum_i a_i * b_i.
pub fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// One training step of `plan` on `m` (step `i`, learning rate `lr`) with, where `poison` says
/// (index, value), one value of the flat gradient overwritten between the backward and the
/// optimizer: the inf or NaN an overflowing f16 gradient would leave there.
pub fn poisoned_step(
    gpu: &Gpu,
    (m, plan): (&resnet::model::ModelState, &resnet::plan::Plan),
    (i, lr): (u32, f32),
    poison: Option<(usize, f32)>,
) {
    plan.set_step(gpu, i, lr).unwrap();
    plan.submit_forward_backward(gpu);
    if let Some((at, bad)) = poison {
        let mut g = read(gpu, &m.grads);
        g[at] = bad;
        gpu.write(&m.grads, &g).unwrap();
    }
    plan.submit_optimizer(gpu);
    gpu.wait();
}
