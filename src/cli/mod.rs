//! clap commands (native only).

use clap::{Args, Parser, Subcommand};
use resnet::gpu::{list_adapters, parse_backend, parse_flavor, Gpu, GpuOptions};
use resnet::Result;

#[derive(Parser)]
#[command(
    name = "resnet",
    version,
    about = "ResNets in WGSL compute shaders on any GPU (wgpu)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Options every GPU command shares.
#[derive(Args, Clone)]
struct GpuArgs {
    /// GPU backend: vulkan, metal, dx12 or gl (default: WGPU_BACKEND, else the best adapter of any)
    #[arg(long, global = true)]
    backend: Option<String>,
    /// Kernel family: register (fast on CPU drivers such as lavapipe) or tiled (fast on real GPUs);
    /// default: chosen by adapter type (also RESNET_KERNELS)
    #[arg(long, global = true)]
    kernels: Option<String>,
}

impl GpuArgs {
    fn options(&self) -> Result<GpuOptions> {
        let mut o = GpuOptions::from_env()?;
        if let Some(b) = &self.backend {
            o.backends = Some(parse_backend(b)?);
        }
        if let Some(k) = &self.kernels {
            o.flavor = Some(parse_flavor(k)?);
        }
        Ok(o)
    }
}

#[derive(Subcommand)]
enum Command {
    /// List every GPU adapter found and show the chosen one's limits and features
    Info {
        #[command(flatten)]
        gpu: GpuArgs,
    },
}

pub fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Info { gpu } => info(&gpu.options()?),
    }
}

fn info(opts: &GpuOptions) -> Result<()> {
    let adapters = pollster::block_on(list_adapters(opts));
    println!("adapters found: {}", adapters.len());
    for a in &adapters {
        println!(
            "  {} | {:?} | {:?} | driver: {}",
            a.name, a.backend, a.device_type, a.driver
        );
    }
    let gpu = Gpu::new_blocking(opts)?;
    let l = &gpu.limits;
    println!(
        "chosen: {} ({:?}, {:?})",
        gpu.info.name, gpu.info.backend, gpu.info.device_type
    );
    println!("  kernels: {:?}", gpu.flavor);
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
    Ok(())
}
