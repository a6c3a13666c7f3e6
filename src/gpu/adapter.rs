//! Choosing an adapter: the best device type among the allowed backends.

use crate::error::{Error, Result};

/// How to open the GPU.
#[derive(Debug, Clone, Default)]
pub struct GpuOptions {
    /// Backends to consider. `None`: `WGPU_BACKEND` if set, else every backend compiled in.
    pub backends: Option<wgpu::Backends>,
    /// Force a kernel family, by name, instead of choosing by adapter type (ops with several
    /// families build with it; `GpuOptions::set_kernels`, beside the families in
    /// `ops::conv2d`, parses `--kernels`).
    pub kernel_family: Option<&'static str>,
    /// Measure every kernel family per convolution shape once and keep the fastest (native
    /// only; the browser cannot block to time). `None`: on, for every adapter (CPU drivers
    /// included: the best family differs between CPUs too); off whenever `kernel_family` is
    /// forced. `Some(false)`: the family by adapter type (register on CPUs, gemm on GPUs).
    pub tune: Option<bool>,
    /// Directory where the choices tuning measured are remembered, one file per adapter, driver
    /// and backend (native only); `None`: measured anew by every process.
    pub tuning_cache: Option<std::path::PathBuf>,
    /// Build plans with the adapter's family at once and time the families later, without
    /// blocking, with `ops::conv2d::tune_pending` (what the browser always does).
    pub defer_tuning: bool,
    /// Which of the adapters of the best kind (the best device type and backend, e.g. the four
    /// GPUs of a machine on Vulkan) to open, in the driver's order (`--device-index`). `None`:
    /// the first, or in a distributed run the rank on the machine mod their count.
    pub device_index: Option<usize>,
    /// This process's rank among the ranks of a distributed run on its machine (0 otherwise):
    /// with no `device_index`, local rank r opens adapter r mod count, so that `mpirun -np 8`
    /// over two 4-GPU machines uses all eight.
    pub local_rank: usize,
    /// Leave timestamp queries off even where the adapter has them (`RESNET_TIMESTAMPS=0`):
    /// for drivers whose timestamps are wrong, and to see what an adapter without them gets.
    pub no_timestamps: bool,
    /// Leave cooperative matrices (the tensor-core family) off even where the adapter fits them
    /// (`RESNET_COOPERATIVE=0`): wgpu marks them experimental.
    pub no_cooperative: bool,
    /// Run the tensor-core family where the adapter has no cooperative matrices, with the
    /// matrices emulated in scalar code (`RESNET_COOPERATIVE=emulate`; mixed precision, an
    /// adapter with f16 shaders): each invocation computes its 8 elements of each 16x16 product
    /// in scalar code, slower than any other family. For testing the family's indexing, layouts and
    /// epilogues on adapters without tensor cores (CI's lavapipe); where the adapter has them,
    /// the real ones run.
    pub emulate_cooperative: bool,
    /// Record the ops unfused where a fused kernel exists (`RESNET_FUSE=0`): BatchNorm's training
    /// statistics then read the convolution's output again instead of coming from its epilogue.
    /// For comparing the two paths; fused is the default.
    pub no_fusion: bool,
    /// Whether a BatchNorm that only a ReLU and the next convolution follow is applied by that
    /// convolution as it loads, instead of stored (with fusion on). `None`: everywhere but in
    /// mixed precision on CPU drivers, where each loaded value's rounding to f16 is a software
    /// conversion; `Some` forces it either way (the tests run a GPU's mixed-precision plans on
    /// lavapipe so).
    pub bn_on_load: Option<bool>,
    /// The largest storage binding, in bytes, to ask for where it is below the adapter's own:
    /// to run as a device with a smaller limit does (WebGPU's default of 128 MiB, a small GPU's),
    /// as the tests do to split a model's parameters over several bindings. `None`: the
    /// adapter's limit.
    pub max_binding_bytes: Option<u64>,
    /// The most workgroups per dispatch dimension to ask for where it is below the adapter's
    /// own (WebGPU's default and most GPUs': 65,535): to run as a device with a smaller limit
    /// does, as the tests do to meet it at small shapes. `None`: the adapter's limit.
    pub max_workgroups_per_dimension: Option<u32>,
    /// The arithmetic of the convolutions: fp32 (the default, bit-exact as ever) or mixed
    /// (f16 operands, f32 accumulation; needs the adapter's `SHADER_F16`).
    pub precision: Precision,
    /// Told of each choice the device measures, as it is measured: a first run on an adapter
    /// times every family at every convolution shape (a minute on a CPU driver), and a CLI shows
    /// that it does; the library prints nothing.
    pub on_measured: OnMeasured,
}

/// A function called with each kernel choice a device measures ([`GpuOptions::on_measured`]);
/// none by default.
#[derive(Clone, Default)]
pub struct OnMeasured(pub Option<std::sync::Arc<MeasuredFn>>);

/// What [`OnMeasured`] calls.
pub type MeasuredFn = dyn Fn(&super::Choice) + Send + Sync;

impl std::fmt::Debug for OnMeasured {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "OnMeasured(..)"
        } else {
            "OnMeasured(None)"
        })
    }
}

/// What the network computes in (`--precision`), as torch.amp's autocast does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Precision {
    /// f32 everywhere.
    #[default]
    Fp32,
    /// Convolution operands rounded to f16, products accumulated in f32 (what tensor cores
    /// compute); activations and their gradients stored in f16 between ops, computed in f32;
    /// BatchNorm's statistics, the master weights and the loss in f32, with dynamic loss scaling
    /// in training.
    Mixed,
}

impl Precision {
    /// The type a plan stores activations and their gradients in: f16 in mixed precision (as
    /// torch.amp's autocast stores a convolution's output, `ops::activations`), f32 in fp32.
    pub fn activation_type(self) -> super::Dtype {
        match self {
            Precision::Fp32 => super::Dtype::F32,
            Precision::Mixed => super::Dtype::F16,
        }
    }

    /// The name `--precision` takes.
    pub fn name(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Mixed => "mixed",
        }
    }

    /// Parses a `--precision` value; an unknown one is an error listing the choices.
    pub fn parse(name: &str) -> Result<Precision> {
        match name.trim().to_ascii_lowercase().as_str() {
            "fp32" | "float32" => Ok(Precision::Fp32),
            "mixed" | "amp" => Ok(Precision::Mixed),
            other => Err(Error::Invalid(format!(
                "`precision`: unknown precision '{other}' (expected fp32 or mixed; mixed is f16 \
                 operands with f32 accumulation, as torch.amp with fp16)"
            ))),
        }
    }
}

/// Parses a `--backend` value: `vulkan`, `metal`, `dx12`, `gl` (or `webgpu`).
pub fn parse_backend(name: &str) -> Result<wgpu::Backends> {
    match name.trim().to_ascii_lowercase().as_str() {
        "vulkan" | "vk" => Ok(wgpu::Backends::VULKAN),
        "metal" | "mtl" => Ok(wgpu::Backends::METAL),
        "dx12" | "d3d12" => Ok(wgpu::Backends::DX12),
        "gl" | "gles" | "opengl" => Ok(wgpu::Backends::GL),
        "webgpu" => Ok(wgpu::Backends::BROWSER_WEBGPU),
        other => Err(Error::Invalid(format!(
            "`backend`: unknown backend '{other}' (expected vulkan, metal, dx12 or gl)"
        ))),
    }
}

/// One line per adapter for `resnet info`.
#[derive(Debug, Clone)]
pub struct AdapterSummary {
    /// Adapter name, e.g. "llvmpipe (LLVM 15.0.6, 256 bits)".
    pub name: String,
    /// Backend, e.g. Vulkan.
    pub backend: wgpu::Backend,
    /// Discrete, integrated, virtual, CPU or other.
    pub device_type: wgpu::DeviceType,
    /// Driver name and version.
    pub driver: String,
}

pub(super) fn backends(opts: &GpuOptions) -> wgpu::Backends {
    opts.backends
        .or_else(wgpu::Backends::from_env)
        .unwrap_or(wgpu::Backends::all())
}

pub(super) fn instance(opts: &GpuOptions) -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
    desc.backends = backends(opts);
    wgpu::Instance::new(desc)
}

#[cfg(not(target_arch = "wasm32"))]
fn rank(t: wgpu::DeviceType) -> u32 {
    match t {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Cpu => 3,
        wgpu::DeviceType::Other => 4,
    }
}

fn no_adapter(opts: &GpuOptions) -> Error {
    Error::NoAdapter(format!(
        "none for backends {:?}; install a GPU driver (on Linux a Vulkan driver, e.g. Debian's \
         mesa-vulkan-drivers) or pick another backend with `backend` / WGPU_BACKEND",
        backends(opts)
    ))
}

pub(super) async fn choose(instance: &wgpu::Instance, opts: &GpuOptions) -> Result<wgpu::Adapter> {
    #[cfg(not(target_arch = "wasm32"))]
    {
        let all = ranked(instance, opts).await;
        let best = all.first().ok_or_else(|| no_adapter(opts))?.get_info();
        let mut peers: Vec<wgpu::Adapter> = all
            .into_iter()
            .filter(|a| {
                let i = a.get_info();
                i.device_type == best.device_type && i.backend == best.backend
            })
            .collect();
        let index = match opts.device_index {
            Some(i) if i >= peers.len() => {
                return Err(Error::Invalid(format!(
                    "`device_index` {i}: the best kind of adapter here ({:?} {:?}, e.g. {}) counts {}, numbered from 0",
                    best.backend,
                    best.device_type,
                    best.name,
                    peers.len()
                )))
            }
            Some(i) => i,
            None => opts.local_rank % peers.len(),
        };
        Ok(peers.swap_remove(index))
    }
    #[cfg(target_arch = "wasm32")]
    {
        instance
            .request_adapter(&wgpu::RequestAdapterOptions {
                power_preference: wgpu::PowerPreference::HighPerformance,
                ..Default::default()
            })
            .await
            .map_err(|_| no_adapter(opts))
    }
}

/// Every adapter of the allowed backends, best first: discrete, integrated, virtual, CPU; and
/// Vulkan/Metal/DX12 before GL when device types tie (native only).
#[cfg(not(target_arch = "wasm32"))]
pub(super) async fn ranked(instance: &wgpu::Instance, opts: &GpuOptions) -> Vec<wgpu::Adapter> {
    let mut all = instance.enumerate_adapters(backends(opts)).await;
    all.sort_by_key(|a| {
        let i = a.get_info();
        (
            rank(i.device_type),
            matches!(i.backend, wgpu::Backend::Gl) as u32,
        )
    });
    all
}

/// Every adapter the allowed backends expose (native only).
#[cfg(not(target_arch = "wasm32"))]
pub async fn list_adapters(opts: &GpuOptions) -> Vec<AdapterSummary> {
    let instance = instance(opts);
    instance
        .enumerate_adapters(backends(opts))
        .await
        .into_iter()
        .map(|a| {
            let i = a.get_info();
            AdapterSummary {
                name: i.name,
                backend: i.backend,
                device_type: i.device_type,
                driver: format!("{} {}", i.driver, i.driver_info).trim().to_string(),
            }
        })
        .collect()
}
