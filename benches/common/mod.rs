//! What every benchmark shares: one device per adapter present (or per `WGPU_BACKEND`), ids that
//! name the backend and adapter, deterministic data, and GPU time from timestamp queries.
#![allow(dead_code)]

use resnet::gpu::{Gpu, GpuOptions, Kernel};
use std::time::Duration;

/// Every adapter present (restricted by `WGPU_BACKEND`), with its id suffix, e.g.
/// `vulkan/llvmpipe`. Adapters that fail to open a device are reported and skipped. A CPU
/// driver reached through a second backend (llvmpipe is both Vulkan and GL) is the same
/// rasteriser on the same cores: it is benchmarked on its best backend only, unless
/// `BENCH_ALL_BACKENDS=1` or `WGPU_BACKEND` names the other one.
pub fn devices() -> Vec<(String, Gpu)> {
    let mut opts = GpuOptions::from_env().expect("RESNET_KERNELS");
    // kernels tuned by `resnet` (or an earlier bench) on this machine are reused, as the CLI does
    opts.tuning_cache = Some(resnet::data::default_cache_dir().join("kernels"));
    let all = std::env::var("BENCH_ALL_BACKENDS").is_ok_and(|v| v == "1");
    let mut out: Vec<(String, Gpu)> = Vec::new();
    for g in Gpu::each_adapter_blocking(&opts) {
        match g {
            Ok(gpu) => {
                let id = adapter_id(&gpu);
                if out.iter().any(|(i, _)| *i == id) {
                    continue; // the same adapter listed twice (e.g. two ICDs)
                }
                let cpu_twin = out
                    .iter()
                    .find(|(_, o)| is_slow(o) && is_slow(&gpu) && o.info.name == gpu.info.name);
                if let (Some((twin, _)), false) = (cpu_twin, all) {
                    eprintln!(
                        "skipped {id}: the same CPU driver as {twin} (BENCH_ALL_BACKENDS=1 or WGPU_BACKEND includes it)"
                    );
                    continue;
                }
                let family = resnet::ops::conv2d::KernelFamily::of(&gpu);
                eprintln!("benchmarking on {id} ({family:?} kernels)");
                out.push((id, gpu));
            }
            Err(e) => eprintln!("skipped an adapter: {e}"),
        }
    }
    assert!(!out.is_empty(), "no GPU adapter to benchmark");
    out
}

/// `backend/adapter`, lower case, the adapter's name up to any parenthesis, spaces as `_`.
pub fn adapter_id(gpu: &Gpu) -> String {
    let name = gpu.info.name.split('(').next().unwrap_or("").trim();
    format!("{:?}/{}", gpu.info.backend, name)
        .to_lowercase()
        .replace(' ', "_")
}

/// CPU adapters (lavapipe) are 10-100x slower than GPUs: fewer samples and shorter windows there,
/// so `cargo bench` stays within minutes.
pub fn is_slow(gpu: &Gpu) -> bool {
    gpu.info.device_type == wgpu::DeviceType::Cpu
}

/// Deterministic values in [-0.5, 0.5).
pub fn rand(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        })
        .collect()
}

/// Median GPU time of `kernels` over a few runs (timestamp queries), printed beside criterion's
/// wall time; `None` without timestamps.
pub fn gpu_time(gpu: &Gpu, kernels: &[Kernel], runs: usize) -> Option<Duration> {
    let mut ms: Vec<f64> = (0..runs)
        .filter_map(|_| pollster::block_on(gpu.run_timed(kernels)).ok().flatten())
        .collect();
    if ms.is_empty() {
        return None;
    }
    ms.sort_by(|a, b| a.total_cmp(b));
    Some(Duration::from_secs_f64(ms[ms.len() / 2] / 1e3))
}

/// Prints the GPU time of a benchmark and the rate it implies (`work` units per second).
pub fn report_gpu(id: &str, t: Option<Duration>, work: f64, unit: &str) {
    match t {
        Some(t) => eprintln!(
            "{id}: GPU time {:.3} ms (timestamps, median), {:.2} {unit}",
            t.as_secs_f64() * 1e3,
            work / t.as_secs_f64()
        ),
        None => eprintln!("{id}: no timestamp queries on this adapter"),
    }
}
