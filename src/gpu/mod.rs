//! The GPU layer: adapter choice, device limits, buffers, the pipeline cache and async readback.
//!
//! Nothing here knows about ops or models: ops whose kernels come in named variants keep their
//! choices in a generic store (names per op and shape). Everything that waits is `async`, so the
//! same code runs in the browser; native callers use [`Gpu::new_blocking`] and `pollster`.

mod adapter;
mod choices;
mod cooperative;
pub mod kernel;
mod peak;
mod pending;
mod store;
mod tensor;
mod timer;
#[cfg(not(target_arch = "wasm32"))]
mod tuning;

#[cfg(not(target_arch = "wasm32"))]
pub use adapter::list_adapters;
pub use adapter::{parse_backend, AdapterSummary, GpuOptions, OnMeasured, Precision};
pub use choices::{AdapterId, Choice, KernelSet};
pub use cooperative::tensor_cores_fit;
pub use kernel::{Kernel, Uniform};
pub use peak::{describe_cooperative_matrix, known_peak, Peak};
pub use pending::{PendingRead, Submitted};
pub use tensor::{Dtype, Tensor};
pub use timer::PassTimer;
#[cfg(not(target_arch = "wasm32"))]
pub use tuning::TuningCache;

use crate::error::{Error, Result};
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

/// An op and its shape key, e.g. ("conv2d forward", [N, C, H, W, K, R, S, stride, pad]).
pub type OpShape = (String, Vec<usize>);

/// Milliseconds on a monotonic clock (native) or the page's clock (browser), for timing kernels
/// where timestamp queries are not to be had.
pub fn now_ms() -> f64 {
    #[cfg(not(target_arch = "wasm32"))]
    {
        static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        START
            .get_or_init(std::time::Instant::now)
            .elapsed()
            .as_secs_f64()
            * 1e3
    }
    #[cfg(target_arch = "wasm32")]
    {
        // performance.now(): sub-millisecond where the page allows it (Date.now() is whole ms)
        use wasm_bindgen::JsCast;
        let global = js_sys::global();
        js_sys::Reflect::get(&global, &"performance".into())
            .ok()
            .and_then(|p| {
                let now = js_sys::Reflect::get(&p, &"now".into()).ok()?;
                now.dyn_ref::<js_sys::Function>()?.call0(&p).ok()?.as_f64()
            })
            .unwrap_or_else(js_sys::Date::now)
    }
}

/// Read-back buffers kept for reuse (a step reads a few sizes; SyncBatchNorm one per BatchNorm
/// and pass).
const MAX_FREE_READBACK: usize = 256;

/// An open device with its queue, limits and caches of shader modules and pipelines.
pub struct Gpu {
    /// The wgpu device.
    pub device: wgpu::Device,
    /// The device's queue.
    pub queue: wgpu::Queue,
    /// The adapter the device was opened on.
    pub info: wgpu::AdapterInfo,
    /// The limits granted to the device (the adapter's best, not wgpu's defaults).
    pub limits: wgpu::Limits,
    /// Features enabled on the device.
    pub features: wgpu::Features,
    /// Features the adapter offers (a superset of `features`).
    pub adapter_features: wgpu::Features,
    /// The cooperative-matrix (tensor core) configurations the adapter lists, whether or not
    /// wgpu offers the feature for it (`resnet info` shows both).
    pub cooperative_matrices: Vec<wgpu::CooperativeMatrixProperties>,
    /// Whether the tensor-core family runs with emulated cooperative matrices
    /// (`GpuOptions::emulate_cooperative`, in mixed precision, where the device has no real ones).
    pub cooperative_emulated: bool,
    /// The kernel variant per (op, shape) of ops that have several, and how they are chosen.
    choices: store::Store,
    /// A one-element buffer read back to wait for submitted work without blocking ([`Gpu::done`]);
    /// made when the device opens.
    probe: std::cell::OnceCell<Tensor>,
    modules: RefCell<HashMap<&'static str, wgpu::ShaderModule>>,
    pipelines: RefCell<HashMap<(&'static str, &'static str), Arc<wgpu::ComputePipeline>>>,
    compiled: RefCell<usize>,
    /// What the network computes in (mixed: f16 operands and activations).
    pub precision: Precision,
    /// Whether plans fuse ops where a fused kernel exists (`GpuOptions::no_fusion` unset).
    pub fusion: bool,
    /// `GpuOptions::bn_on_load`: `None` leaves it to the plans.
    pub bn_on_load: Option<bool>,
    /// Bytes of the tensors alive on this device (see `tensor::Allocation`).
    allocated: Arc<std::sync::atomic::AtomicU64>,
    /// Read-back buffers free for reuse: a training step reads the same sizes every time (loss
    /// sums, gradients, SyncBatchNorm's partial sums), so it allocates none after the first.
    readback: RefCell<Vec<wgpu::Buffer>>,
}

/// The features to ask `info`'s adapter for, and whether they include the tensor cores'
/// (cooperative matrices and subgroups: mixed precision where the adapter fits the family written
/// for them and `RESNET_COOPERATIVE` is not 0). Mixed precision without f16 shaders is an error.
fn wanted_features(
    opts: &GpuOptions,
    info: &wgpu::AdapterInfo,
    adapter_features: wgpu::Features,
    cooperative_matrices: &[wgpu::CooperativeMatrixProperties],
) -> Result<(wgpu::Features, bool)> {
    let mut wanted = match opts.no_timestamps {
        true => wgpu::Features::empty(),
        false => wgpu::Features::TIMESTAMP_QUERY,
    };
    if opts.precision == Precision::Mixed {
        if !adapter_features.contains(wgpu::Features::SHADER_F16) {
            return Err(Error::Invalid(format!(
                "`precision` mixed needs f16 shaders (shader-f16), which {} ({:?}) does not \
                 offer; use `precision` fp32",
                info.name, info.backend
            )));
        }
        wanted |= wgpu::Features::SHADER_F16;
    }
    let tensor_cores = opts.precision == Precision::Mixed
        && !opts.no_cooperative
        && tensor_cores_fit(info, adapter_features, cooperative_matrices);
    if tensor_cores {
        wanted |= wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX | wgpu::Features::SUBGROUP;
    }
    Ok((adapter_features & wanted, tensor_cores))
}

/// A device with `features` (and `limits`): where the tensor cores' experimental features make
/// the request fail, once more without them (the f16 families run anyway).
async fn request_device(
    adapter: &wgpu::Adapter,
    info: &wgpu::AdapterInfo,
    limits: &wgpu::Limits,
    features: wgpu::Features,
    tensor_cores: bool,
) -> Result<(wgpu::Device, wgpu::Queue, wgpu::Features)> {
    let request = |features: wgpu::Features, tensor_cores: bool| {
        adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("resnet"),
            required_features: features,
            required_limits: limits.clone(),
            experimental_features: experimental(tensor_cores),
            ..Default::default()
        })
    };
    let (device, queue, features) = match request(features, tensor_cores).await {
        Ok((d, q)) => (d, q, features),
        Err(_) if tensor_cores => {
            let without = features
                - wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX
                - wgpu::Features::SUBGROUP;
            let (d, q) = request(without, false)
                .await
                .map_err(|e| Error::Device(format!("{} ({:?}): {e}", info.name, info.backend)))?;
            (d, q, without)
        }
        Err(e) => {
            return Err(Error::Device(format!(
                "{} ({:?}): {e}",
                info.name, info.backend
            )))
        }
    };
    Ok((device, queue, features))
}

/// wgpu's consent to its experimental features, given only where the tensor-core family will run.
fn experimental(tensor_cores: bool) -> wgpu::ExperimentalFeatures {
    match tensor_cores {
        // SAFETY: wgpu marks cooperative matrices experimental (its implementation may still have
        // bugs). They are enabled only on adapters that list the exact configuration the family
        // uses; the family's results are checked by `resnet selftest --precision mixed` on the
        // user's adapter, the tuner races it against the f16 GEMM tiles, and
        // RESNET_COOPERATIVE=0 leaves it off.
        true => unsafe { wgpu::ExperimentalFeatures::enabled() },
        false => wgpu::ExperimentalFeatures::disabled(),
    }
}

impl Gpu {
    /// Opens the best adapter allowed by `opts` and a device with the adapter's full limits.
    pub async fn new(opts: &GpuOptions) -> Result<Gpu> {
        let instance = adapter::instance(opts);
        let adapter = adapter::choose(&instance, opts).await?;
        Gpu::open(adapter, opts).await
    }

    /// A device on every adapter the allowed backends expose, best first (benchmarks across
    /// backends). Native only.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn each_adapter_blocking(opts: &GpuOptions) -> Vec<Result<Gpu>> {
        let instance = adapter::instance(opts);
        pollster::block_on(adapter::ranked(&instance, opts))
            .into_iter()
            .map(|a| pollster::block_on(Gpu::open(a, opts)))
            .collect()
    }

    async fn open(adapter: wgpu::Adapter, opts: &GpuOptions) -> Result<Gpu> {
        let info = adapter.get_info();
        let mut limits = adapter.limits();
        // Ask for everything the adapter offers: big models need big storage bindings.
        let wanted = opts.max_workgroups_per_dimension.unwrap_or(u32::MAX);
        limits.max_compute_workgroups_per_dimension = limits
            .max_compute_workgroups_per_dimension
            .min(wanted)
            .max(1);
        if let Some(bytes) = opts.max_binding_bytes {
            let align = limits.min_storage_buffer_offset_alignment as u64;
            if bytes < align {
                return Err(Error::Invalid(format!(
                    "`max_binding_bytes` {bytes}: below the offset alignment of {}, {align}",
                    info.name
                )));
            }
            let own = &mut limits.max_storage_buffer_binding_size;
            *own = (*own).min(bytes);
        }
        let adapter_features = adapter.features();
        let cooperative_matrices = adapter.cooperative_matrix_properties();
        let (features, tensor_cores) =
            wanted_features(opts, &info, adapter_features, &cooperative_matrices)?;
        let (device, queue, features) =
            request_device(&adapter, &info, &limits, features, tensor_cores).await?;
        let choices = store::Store::new(opts, &info);
        let gpu = Gpu {
            device,
            queue,
            info,
            limits,
            features,
            adapter_features,
            cooperative_matrices,
            cooperative_emulated: opts.emulate_cooperative
                && opts.precision == Precision::Mixed
                && !features.contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX),
            precision: opts.precision,
            fusion: !opts.no_fusion,
            bn_on_load: opts.bn_on_load,
            choices,
            probe: std::cell::OnceCell::new(),
            modules: RefCell::new(HashMap::new()),
            pipelines: RefCell::new(HashMap::new()),
            compiled: RefCell::new(0),
            allocated: Arc::default(),
            readback: RefCell::new(Vec::new()),
        };
        // made now, not at the first wait, so that it is in the count before any plan
        let probe = gpu.zeros(&[1])?;
        gpu.probe.get_or_init(|| probe);
        Ok(gpu)
    }

    /// [`Gpu::new`] for native code: blocks until the device is open.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn new_blocking(opts: &GpuOptions) -> Result<Gpu> {
        pollster::block_on(Gpu::new(opts))
    }

    /// The compute pipeline for `entry` in shader `file`, compiled once and cached.
    pub fn pipeline(
        &self,
        file: &'static str,
        source: &'static str,
        entry: &'static str,
    ) -> Arc<wgpu::ComputePipeline> {
        if let Some(p) = self.pipelines.borrow().get(&(file, entry)) {
            return p.clone();
        }
        let mut modules = self.modules.borrow_mut();
        let module = modules.entry(file).or_insert_with(|| {
            self.device
                .create_shader_module(wgpu::ShaderModuleDescriptor {
                    label: Some(file),
                    source: wgpu::ShaderSource::Wgsl(source.into()),
                })
        });
        let pipeline = Arc::new(self.device.create_compute_pipeline(
            &wgpu::ComputePipelineDescriptor {
                label: Some(entry),
                layout: None,
                module,
                entry_point: Some(entry),
                compilation_options: Default::default(),
                cache: None,
            },
        ));
        *self.compiled.borrow_mut() += 1;
        self.pipelines
            .borrow_mut()
            .insert((file, entry), pipeline.clone());
        pipeline
    }

    /// What went wrong without stopping anything since the last call (a kernel-choice cache
    /// that cannot be read or written), one line each, for the caller to report: the library
    /// prints nothing.
    pub fn take_warnings(&self) -> Vec<String> {
        self.choices.take_warnings()
    }

    /// Whether ops time their kernel variants per shape on this device.
    pub fn tunes(&self) -> bool {
        self.choices.tunes()
    }

    /// The kernel variant `--kernels` forced on this device (by name), if any.
    pub fn forced_kernels(&self) -> Option<&'static str> {
        self.choices.forced()
    }

    /// The kernel variant chosen for `op` at shape `key`, if one was measured, loaded or set.
    pub fn choice(&self, op: &str, key: &[usize]) -> Option<&'static str> {
        self.choices.get(op, key)
    }

    /// Records the kernel variant for `op` at shape `key`; later plans reuse it.
    pub fn set_choice(&self, op: &str, key: &[usize], family: &'static str) {
        self.choices.insert(Choice {
            op: op.to_string(),
            shape: key.to_vec(),
            family,
            ms: Vec::new(),
        });
    }

    /// Records a choice measured on this device, and remembers it in the cache file if there is
    /// one (a cache that cannot be written costs the next run its tuning, nothing else).
    pub fn record_measured(&self, choice: Choice) {
        self.choices.record_measured(choice);
    }

    /// Every choice so far (measured, loaded or set), sorted by op and shape.
    pub fn choices(&self) -> Vec<Choice> {
        self.choices.all()
    }

    /// Notes that `op` at `key` was built with the default variant although tuning was asked for
    /// (a device that cannot block to time); the op's `tune_pending` measures it later.
    pub fn note_untuned(&self, op: &str, key: &[usize]) {
        self.choices.note_untuned(op, key);
    }

    /// The (op, shape) noted by [`Gpu::note_untuned`], and forgets them.
    pub fn take_untuned(&self) -> Vec<OpShape> {
        self.choices.take_untuned()
    }

    /// Every choice as text (the browser keeps it in the page's storage), naming this adapter.
    pub fn choices_json(&self) -> String {
        self.choices.to_json(&self.info)
    }

    /// Takes the choices of [`Gpu::choices_json`] text measured on this adapter with this kernel
    /// set; returns how many, or why the text was not used.
    pub fn load_choices_json(&self, text: &str) -> std::result::Result<usize, String> {
        self.choices.load_json(text, &self.info)
    }

    /// The choices the plans of this device looked up or measured (of every choice known, the
    /// ones that matter to what runs here), sorted by op and shape.
    pub fn choices_used(&self) -> Vec<Choice> {
        self.choices.used()
    }

    /// How many choices this device measured itself (the rest were loaded or set).
    pub fn choices_measured(&self) -> usize {
        self.choices.measured()
    }

    /// The file that remembers this adapter's choices, if tuning uses one.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn tuning_cache(&self) -> Option<&TuningCache> {
        self.choices.cache()
    }

    /// Median wall time of `kernels` over `runs` runs after one untimed run (compilation,
    /// caches), waiting for each. Native only: for choosing kernels and for benchmarks.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn time_blocking(&self, kernels: &[Kernel], runs: usize) -> std::time::Duration {
        self.run(kernels);
        self.wait();
        let mut t: Vec<_> = (0..runs.max(1))
            .map(|_| {
                let t0 = std::time::Instant::now();
                self.run(kernels);
                self.wait();
                t0.elapsed()
            })
            .collect();
        t.sort();
        t[t.len() / 2]
    }

    /// Bytes of the tensors this device holds now: a buffer counts until the last tensor or
    /// view of it is dropped.
    pub fn bytes_allocated(&self) -> u64 {
        self.allocated.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The alignment, in f32 elements, of a tensor view's offset.
    pub fn view_align(&self) -> usize {
        (self.limits.min_storage_buffer_offset_alignment as usize / 4).max(1)
    }

    /// How many pipelines this device has compiled so far (each at most once).
    pub fn pipelines_compiled(&self) -> usize {
        *self.compiled.borrow()
    }

    /// The most floats one binding of a view into a flat buffer may hold, a multiple of
    /// [`Gpu::view_align`] so that the next view starts where the device can bind it.
    pub fn max_view_floats(&self) -> usize {
        let align = self.view_align();
        (self.limits.max_storage_buffer_binding_size as usize / 4) / align * align
    }

    /// Copies `from` into `to` (the same size) on the GPU, after the work submitted before it;
    /// nothing waits.
    pub fn copy(&self, from: &Tensor, to: &Tensor) -> Result<()> {
        if from.bytes() != to.bytes() {
            return crate::error::shape_err(
                "copy",
                format!("{} bytes into {}", from.bytes(), to.bytes()),
            );
        }
        let mut enc = self.device.create_command_encoder(&Default::default());
        enc.copy_buffer_to_buffer(&from.buffer, from.offset, &to.buffer, to.offset, to.bytes());
        self.queue.submit([enc.finish()]);
        Ok(())
    }

    /// Records `kernels` into one compute pass and submits it.
    pub fn run(&self, kernels: &[Kernel]) {
        self.run_times(kernels, 1);
    }

    /// Records `kernels` `times` times over into one compute pass and submits it (for timing
    /// work shorter than a submission's own cost).
    pub fn run_times(&self, kernels: &[Kernel], times: usize) {
        let mut enc = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor::default());
            for _ in 0..times {
                for k in kernels {
                    k.record(&mut pass);
                }
            }
        }
        self.queue.submit([enc.finish()]);
    }

    /// Resolves once all work submitted so far is done, without blocking the browser: a
    /// one-element buffer is read back after it (natively that read blocks, as every read does).
    pub async fn done(&self) -> Result<()> {
        let probe = self.probe.get().expect("made when the device opened");
        self.read_bytes(probe).await.map(|_| ())
    }

    /// Waits until all submitted work is done (native only; the browser has no blocking wait).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn wait(&self) {
        let _ = self.device.poll(wgpu::PollType::wait_indefinitely());
    }

    /// Checks that a buffer of `bytes` fits the device's buffer limit. A buffer may be larger
    /// than one binding (a model's flat parameters are bound a layer, or a chunk, at a time):
    /// [`Gpu::check_binding`] checks what a kernel binds.
    pub fn check_size(&self, op: &'static str, bytes: u64) -> Result<()> {
        let buf = self.limits.max_buffer_size;
        if bytes > buf {
            return Err(Error::Limit {
                op,
                msg: format!(
                    "a buffer of {bytes} bytes exceeds max_buffer_size {buf} of {}",
                    self.info.name
                ),
            });
        }
        Ok(())
    }

    /// Checks that one binding of `bytes` from byte `offset` of its buffer starts where the
    /// device can bind it (wgpu's validation would otherwise fail the whole command encoder)
    /// and fits the device's storage binding limit.
    pub fn check_binding(&self, op: &'static str, offset: u64, bytes: u64) -> Result<()> {
        let align = u64::from(self.limits.min_storage_buffer_offset_alignment);
        if !offset.is_multiple_of(align) {
            return Err(Error::Limit {
                op,
                msg: format!(
                    "a binding at byte offset {offset} is not a multiple of \
                     min_storage_buffer_offset_alignment {align} of {}",
                    self.info.name
                ),
            });
        }
        let bind = self.limits.max_storage_buffer_binding_size;
        if bytes > bind {
            return Err(Error::Limit {
                op,
                msg: format!(
                    "a binding of {bytes} bytes exceeds max_storage_buffer_binding_size {bind} \
                     of {}",
                    self.info.name
                ),
            });
        }
        Ok(())
    }

    /// Reads a tensor's bytes back, without blocking.
    pub async fn read_bytes(&self, t: &Tensor) -> Result<Vec<u8>> {
        let size = t.bytes();
        let staging = self.readback_buffer(size);
        let mut enc = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        enc.copy_buffer_to_buffer(&t.buffer, t.offset, &staging, 0, size);
        self.queue.submit([enc.finish()]);
        let (tx, rx) = futures_channel::oneshot::channel();
        staging.map_async(wgpu::MapMode::Read, .., move |r| {
            let _ = tx.send(r);
        });
        #[cfg(not(target_arch = "wasm32"))]
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::Readback(e.to_string()))?;
        rx.await
            .map_err(|_| Error::Readback("the map callback was dropped".into()))?
            .map_err(|e| Error::Readback(e.to_string()))?;
        let bytes = staging
            .get_mapped_range(..)
            .map_err(|e| Error::Readback(e.to_string()))?
            .to_vec();
        staging.unmap();
        self.recycle_readback(staging);
        Ok(bytes)
    }

    /// Keeps an unmapped read-back buffer for the next read of its size.
    fn recycle_readback(&self, staging: wgpu::Buffer) {
        let mut free = self.readback.borrow_mut();
        free.push(staging);
        if free.len() > MAX_FREE_READBACK {
            free.remove(0); // the least recently used
        }
    }

    /// A mappable buffer of `size` bytes: a free one of that size, else a new one.
    fn readback_buffer(&self, size: u64) -> wgpu::Buffer {
        let mut free = self.readback.borrow_mut();
        if let Some(i) = free.iter().position(|b| b.size() == size) {
            return free.swap_remove(i);
        }
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    }

    /// Reads a tensor back as f32 (an f16 tensor's values converted exactly).
    pub async fn read(&self, t: &Tensor) -> Result<Vec<f32>> {
        let bytes = self.read_bytes(t).await?;
        Ok(match t.dtype {
            Dtype::F32 => bytemuck::cast_slice(&bytes).to_vec(),
            Dtype::F16 => bytes
                .chunks_exact(2)
                .take(t.len())
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
        })
    }

    /// Reads a u32 tensor back.
    pub async fn read_u32(&self, t: &Tensor) -> Result<Vec<u32>> {
        let bytes = self.read_bytes(t).await?;
        Ok(bytemuck::cast_slice(&bytes).to_vec())
    }

    /// [`Gpu::read`] for native code.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn read_blocking(&self, t: &Tensor) -> Result<Vec<f32>> {
        pollster::block_on(self.read(t))
    }

    /// [`Gpu::read_u32`] for native code.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn read_u32_blocking(&self, t: &Tensor) -> Result<Vec<u32>> {
        pollster::block_on(self.read_u32(t))
    }
}
