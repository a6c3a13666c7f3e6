//! `resnet info` and `resnet summary`.

use clap::Args;
use resnet::gpu::{
    describe_cooperative_matrix, list_adapters, tensor_cores_fit, Gpu, GpuOptions, Precision,
};
use resnet::model::{summary, ModelSpec};
use resnet::ops::conv2d::KernelFamily;
use resnet::{Error, Result};

/// Arguments of `resnet summary`.
#[derive(Args, Debug)]
pub struct SummaryArgs {
    /// Model name
    #[arg(long, default_value = "resnet20")]
    model: String,
    /// Input shape N,C,H,W
    #[arg(long, default_value = "1,3,32,32")]
    input: String,
    /// Classifier outputs (default: 10 for CIFAR models, 1000 for ImageNet models)
    #[arg(long)]
    num_classes: Option<usize>,
}

/// Runs `resnet summary`.
pub fn summary_cmd(a: SummaryArgs) -> Result<()> {
    let bad_input = || {
        Error::Invalid(format!(
            "--input: '{}' is not N,3,H,W with positive sizes",
            a.input
        ))
    };
    let dims: Vec<usize> = a
        .input
        .split(',')
        .map(|v| v.trim().parse().map_err(|_| bad_input()))
        .collect::<Result<_>>()?;
    let [n, c, h, w] = dims[..] else {
        return Err(bad_input());
    };
    if c != 3 || n == 0 || h == 0 || w == 0 {
        return Err(bad_input());
    }
    let classes = a.num_classes.unwrap_or(super::model_defaults(&a.model)?.1);
    let spec = ModelSpec::from_name(&a.model, classes)?;
    print!("{}", summary(&spec, [n, c, h, w]));
    Ok(())
}

/// Runs `resnet info`: every adapter, then the chosen one's limits and features.
pub fn info(opts: &GpuOptions) -> Result<()> {
    let adapters = pollster::block_on(list_adapters(opts));
    println!("adapters found: {}", adapters.len());
    for a in &adapters {
        println!(
            "  {} | {:?} | {:?} | driver: {}",
            a.name, a.backend, a.device_type, a.driver
        );
    }
    let gpu = Gpu::new_blocking(opts)?;
    let _warnings = super::GpuWarnings::new(&gpu);
    let l = &gpu.limits;
    println!(
        "chosen: {} ({:?}, {:?})",
        gpu.info.name, gpu.info.backend, gpu.info.device_type
    );
    println!("  kernels: {}", kernels_line(&gpu));
    println!("  precision: {}", gpu.precision.name());
    println!(
        "  max_storage_buffer_binding_size: {} MiB",
        l.max_storage_buffer_binding_size / (1 << 20)
    );
    println!("  max_buffer_size: {} MiB", l.max_buffer_size / (1 << 20));
    println!(
        "  max_storage_buffers_per_shader_stage: {}",
        l.max_storage_buffers_per_shader_stage
    );
    println!(
        "  max_compute_workgroup_storage_size: {} bytes",
        l.max_compute_workgroup_storage_size
    );
    println!(
        "  max_compute_invocations_per_workgroup: {}",
        l.max_compute_invocations_per_workgroup
    );
    println!(
        "  max_compute_workgroups_per_dimension: {}",
        l.max_compute_workgroups_per_dimension
    );
    let f = gpu.adapter_features;
    let has = |x: wgpu::Features| if f.contains(x) { "yes" } else { "no" };
    println!(
        "  features: timestamp queries {}, shader f16 {}, subgroups {}",
        has(wgpu::Features::TIMESTAMP_QUERY),
        has(wgpu::Features::SHADER_F16),
        has(wgpu::Features::SUBGROUP)
    );
    println!(
        "  cooperative matrices (tensor cores): {}",
        cooperative(&gpu)
    );
    Ok(())
}

/// The adapter's cooperative-matrix configurations, whether wgpu offers them to shaders, and
/// whether the tensor-core family runs here.
fn cooperative(gpu: &Gpu) -> String {
    let fits = tensor_cores_fit(&gpu.info, gpu.adapter_features, &gpu.cooperative_matrices);
    let family = KernelFamily::Coop64x64F16.name();
    let family = match (fits, gpu.precision, gpu.features) {
        (true, Precision::Mixed, f) if KernelFamily::Coop64x64F16.runs_on(f) => {
            format!("{family} on")
        }
        (true, Precision::Mixed, _) => format!("{family} off (RESNET_COOPERATIVE=0)"),
        (true, Precision::Fp32, _) => format!("{family} with --precision mixed"),
        (false, Precision::Mixed, _) if gpu.cooperative_emulated => {
            format!("{family} emulated in scalar code (RESNET_COOPERATIVE=emulate)")
        }
        (false, ..) => format!(
            "no {family} (it needs 16x16x16 f16*f16+f32 matrices, subgroups of exactly 32 and \
             f16 shaders)"
        ),
    };
    format!("{}; {family}", configurations(gpu))
}

/// The adapter's cooperative-matrix configurations and whether wgpu offers them to shaders.
fn configurations(gpu: &Gpu) -> String {
    if gpu.cooperative_matrices.is_empty() {
        return "none listed".into();
    }
    let configs: Vec<String> = gpu
        .cooperative_matrices
        .iter()
        .map(describe_cooperative_matrix)
        .collect();
    let offered = gpu
        .adapter_features
        .contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX);
    format!(
        "{} (wgpu's experimental feature {})",
        configs.join(", "),
        if offered { "offered" } else { "not offered" }
    )
}

/// How convolution kernels are chosen on `gpu`, and where the choices are remembered.
fn kernels_line(gpu: &Gpu) -> String {
    if !gpu.tunes() {
        let how = match gpu.forced_kernels() {
            Some(_) => "forced",
            None => "the adapter type's, untimed",
        };
        return format!("{} ({how})", KernelFamily::of(gpu).name());
    }
    match gpu.tuning_cache() {
        Some(cache) => format!(
            "auto: every convolution shape timed once with each family, the fastest kept; {} choices remembered in {}",
            gpu.choices().len(),
            cache.path.display()
        ),
        None => "auto: every convolution shape timed once with each family, the fastest kept".into(),
    }
}
