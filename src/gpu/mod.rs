//! The GPU layer: adapter choice, device limits, buffers, the pipeline cache and async readback.
//!
//! Nothing here knows about ops or models. Everything that waits is `async`, so the same code runs
//! in the browser; native callers use [`Gpu::new_blocking`] and `pollster`.

mod adapter;
mod choices;
pub mod kernel;
mod tensor;
mod timer;
#[cfg(not(target_arch = "wasm32"))]
mod tuning;

#[cfg(not(target_arch = "wasm32"))]
pub use adapter::list_adapters;
pub use adapter::{parse_backend, parse_kernel_family, AdapterSummary, GpuOptions};
pub use choices::{AdapterId, Choice, KERNEL_SET_VERSION};
pub use kernel::{Kernel, Uniform};
pub use tensor::Tensor;
pub use timer::PassTimer;
#[cfg(not(target_arch = "wasm32"))]
pub use tuning::TuningCache;

use crate::error::{Error, Result};
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

/// Which family of kernels a convolution is built from (docs/ARCHITECTURE.md, "Kernel
/// families"): register blocking in several block sizes, whose best size depends on the
/// registers of the CPU (or GPU) underneath; GPU-class implicit GEMM in several tile sizes
/// (workgroup memory, double-buffered); or the first, simple workgroup-memory tiles. Measured
/// 2-40x apart on lavapipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KernelFamily {
    /// Register blocking, 16 channels x 16 pixels per invocation: many FMAs per load.
    Register16x16,
    /// Register blocking, 8 channels x 16 pixels: half the accumulators.
    Register8x16,
    /// Register blocking, 16 channels x 8 pixels.
    Register16x8,
    /// Register blocking, 8 channels x 8 pixels: the fewest registers.
    Register8x8,
    /// GPU GEMM tiles of 32 channels x 128 pixels, 4x4 per invocation: for layers of few channels.
    Gemm32x128,
    /// GPU GEMM tiles of 64x64, 4x4 per invocation.
    Gemm64x64,
    /// GPU GEMM tiles of 128x128, 8x8 per invocation: for wide layers on large GPUs.
    Gemm128x128,
    /// Simple workgroup-memory tiles of 64x64 outputs, 4x4 per invocation, one buffer.
    Tiled,
}

impl KernelFamily {
    /// Every family, in the order the tuner tries them.
    pub const ALL: [KernelFamily; 8] = [
        KernelFamily::Register16x16,
        KernelFamily::Register8x16,
        KernelFamily::Register16x8,
        KernelFamily::Register8x8,
        KernelFamily::Gemm32x128,
        KernelFamily::Gemm64x64,
        KernelFamily::Gemm128x128,
        KernelFamily::Tiled,
    ];

    /// The name `--kernels` takes and the tuning cache records.
    pub fn name(self) -> &'static str {
        match self {
            KernelFamily::Register16x16 => "register16x16",
            KernelFamily::Register8x16 => "register8x16",
            KernelFamily::Register16x8 => "register16x8",
            KernelFamily::Register8x8 => "register8x8",
            KernelFamily::Gemm32x128 => "gemm32x128",
            KernelFamily::Gemm64x64 => "gemm64x64",
            KernelFamily::Gemm128x128 => "gemm128x128",
            KernelFamily::Tiled => "tiled",
        }
    }

    /// The family of a name; `register` is the 16x16 block, `gemm` the 64x64 tile.
    pub fn from_name(name: &str) -> Option<KernelFamily> {
        let name = name.trim().to_ascii_lowercase();
        match name.as_str() {
            "register" => Some(KernelFamily::Register16x16),
            "gemm" => Some(KernelFamily::Gemm64x64),
            _ => KernelFamily::ALL.into_iter().find(|f| f.name() == name),
        }
    }

    /// (channels, pixels) per invocation of a register family.
    pub fn register_block(self) -> Option<(usize, usize)> {
        match self {
            KernelFamily::Register16x16 => Some((16, 16)),
            KernelFamily::Register8x16 => Some((8, 16)),
            KernelFamily::Register16x8 => Some((16, 8)),
            KernelFamily::Register8x8 => Some((8, 8)),
            _ => None,
        }
    }

    /// (rows, columns) of C per workgroup of a GEMM family (rows are channels).
    pub fn gemm_tile(self) -> Option<(usize, usize)> {
        match self {
            KernelFamily::Gemm32x128 => Some((32, 128)),
            KernelFamily::Gemm64x64 => Some((64, 64)),
            KernelFamily::Gemm128x128 => Some((128, 128)),
            _ => None,
        }
    }
}

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
    /// Kernel family used by ops that have several, unless a per-shape choice says otherwise.
    pub kernel_family: KernelFamily,
    /// Whether ops with several kernel families time them per shape (see [`GpuOptions::tune`]).
    tune: bool,
    /// Kernel family per (op, shape key), measured once (or loaded from the cache).
    choices: RefCell<HashMap<(String, Vec<usize>), Choice>>,
    /// Where choices are remembered between runs (native, when tuning with a cache directory).
    #[cfg(not(target_arch = "wasm32"))]
    cache: Option<TuningCache>,
    /// Choices measured by this device (not loaded).
    measured: std::cell::Cell<usize>,
    /// The (op, shape) whose choice a plan of this device looked up or measured.
    used: RefCell<std::collections::HashSet<OpShape>>,
    /// Whether a failure to write the cache was reported (once is enough).
    #[cfg(not(target_arch = "wasm32"))]
    cache_warned: std::cell::Cell<bool>,
    /// Tuning was asked for (`auto`) but this device cannot block to time (the browser): the
    /// (op, shape) built with the default family, for [`crate::ops::conv2d::tune_pending`].
    untuned: Option<RefCell<Vec<OpShape>>>,
    modules: RefCell<HashMap<&'static str, wgpu::ShaderModule>>,
    pipelines: RefCell<HashMap<(&'static str, &'static str), Arc<wgpu::ComputePipeline>>>,
    compiled: RefCell<usize>,
    allocated: std::cell::Cell<u64>,
    /// Read-back buffers free for reuse: a training step reads the same sizes every time (loss
    /// sums, gradients, SyncBatchNorm's partial sums), so it allocates none after the first.
    readback: RefCell<Vec<wgpu::Buffer>>,
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
        limits.max_compute_workgroups_per_dimension =
            limits.max_compute_workgroups_per_dimension.max(1);
        let wanted = wgpu::Features::TIMESTAMP_QUERY;
        let adapter_features = adapter.features();
        let features = adapter_features & wanted;
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("resnet"),
                required_features: features,
                required_limits: limits.clone(),
                ..Default::default()
            })
            .await
            .map_err(|e| Error::Device(format!("{} ({:?}): {e}", info.name, info.backend)))?;
        let cpu = info.device_type == wgpu::DeviceType::Cpu;
        let kernel_family = match opts.kernel_family {
            Some(f) => f,
            None if cpu => KernelFamily::Register16x16,
            None => KernelFamily::Gemm64x64,
        };
        // timing kernels blocks, which the browser cannot do
        let wants_tuning = opts.kernel_family.is_none() && opts.tune.unwrap_or(true);
        let tune = !cfg!(target_arch = "wasm32") && wants_tuning && !opts.defer_tuning;
        #[cfg(not(target_arch = "wasm32"))]
        let cache = match (&opts.tuning_cache, tune) {
            (Some(dir), true) => Some(TuningCache::new(dir, &info)),
            _ => None,
        };
        #[cfg(not(target_arch = "wasm32"))]
        let choices = Self::remembered(cache.as_ref());
        #[cfg(target_arch = "wasm32")]
        let choices = HashMap::new();
        Ok(Gpu {
            device,
            queue,
            info,
            limits,
            features,
            adapter_features,
            kernel_family,
            tune,
            choices: RefCell::new(choices),
            #[cfg(not(target_arch = "wasm32"))]
            cache,
            measured: std::cell::Cell::new(0),
            used: RefCell::new(Default::default()),
            #[cfg(not(target_arch = "wasm32"))]
            cache_warned: std::cell::Cell::new(false),
            untuned: (wants_tuning && !tune).then(|| RefCell::new(Vec::new())),
            modules: RefCell::new(HashMap::new()),
            pipelines: RefCell::new(HashMap::new()),
            compiled: RefCell::new(0),
            allocated: std::cell::Cell::new(0),
            readback: RefCell::new(Vec::new()),
        })
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

    /// Whether ops time their kernel families per shape on this device.
    pub fn tunes(&self) -> bool {
        self.tune
    }

    /// The kernel family chosen for `op` at shape `key`, if one was measured, loaded or set.
    pub fn choice(&self, op: &str, key: &[usize]) -> Option<KernelFamily> {
        let id = (op.to_string(), key.to_vec());
        let family = self.choices.borrow().get(&id).map(|c| c.family);
        if family.is_some() {
            self.used.borrow_mut().insert(id);
        }
        family
    }

    /// Records the kernel family for `op` at shape `key`; later plans reuse it.
    pub fn set_choice(&self, op: &str, key: &[usize], family: KernelFamily) {
        self.record(Choice {
            op: op.to_string(),
            shape: key.to_vec(),
            family,
            ms: Vec::new(),
        });
    }

    /// Records a choice measured on this device, and remembers it in the cache file if there is
    /// one (a cache that cannot be written costs the next run its tuning, nothing else).
    pub fn record_measured(&self, choice: Choice) {
        self.measured.set(self.measured.get() + 1);
        let id = (choice.op.clone(), choice.shape.clone());
        self.record(choice);
        self.used.borrow_mut().insert(id);
        #[cfg(not(target_arch = "wasm32"))]
        if let Some(cache) = &self.cache {
            if let Err(e) = cache.save(&self.choices()) {
                if !self.cache_warned.replace(true) {
                    eprintln!("warning: kernel choices {}: {e}", cache.path.display());
                }
            }
        }
    }

    fn record(&self, choice: Choice) {
        let key = (choice.op.clone(), choice.shape.clone());
        self.choices.borrow_mut().insert(key, choice);
    }

    /// Every choice so far (measured, loaded or set), sorted by op and shape.
    pub fn choices(&self) -> Vec<Choice> {
        let mut v: Vec<Choice> = self.choices.borrow().values().cloned().collect();
        v.sort_by(|a, b| (&a.op, &a.shape).cmp(&(&b.op, &b.shape)));
        v
    }

    /// Notes that `op` at `key` was built with the default family although tuning was asked for
    /// (a device that cannot block to time); `tune_pending` measures it later.
    pub fn note_untuned(&self, op: &str, key: &[usize]) {
        if let Some(list) = &self.untuned {
            let entry = (op.to_string(), key.to_vec());
            let mut list = list.borrow_mut();
            if !list.contains(&entry) {
                list.push(entry);
            }
        }
    }

    /// The (op, shape) noted by [`Gpu::note_untuned`], and forgets them.
    pub fn take_untuned(&self) -> Vec<OpShape> {
        self.untuned
            .as_ref()
            .map(|l| std::mem::take(&mut *l.borrow_mut()))
            .unwrap_or_default()
    }

    /// Every choice as text (the browser keeps it in the page's storage), naming this adapter.
    pub fn choices_json(&self) -> String {
        choices::to_json(&AdapterId::of(&self.info), &self.choices())
    }

    /// Takes the choices of [`Gpu::choices_json`] text measured on this adapter with this kernel
    /// set; returns how many, or why the text was not used.
    pub fn load_choices_json(&self, text: &str) -> std::result::Result<usize, String> {
        let loaded = choices::from_json(text, &AdapterId::of(&self.info))?;
        let n = loaded.len();
        loaded.into_iter().for_each(|c| self.record(c));
        Ok(n)
    }

    /// The choices the plans of this device looked up or measured (of every choice known, the
    /// ones that matter to what runs here), sorted by op and shape.
    pub fn choices_used(&self) -> Vec<Choice> {
        let used = self.used.borrow();
        let mut v = self.choices();
        v.retain(|c| used.contains(&(c.op.clone(), c.shape.clone())));
        v
    }

    /// How many choices this device measured itself (the rest were loaded or set).
    pub fn choices_measured(&self) -> usize {
        self.measured.get()
    }

    /// The file that remembers this adapter's choices, if tuning uses one.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn tuning_cache(&self) -> Option<&TuningCache> {
        self.cache.as_ref()
    }

    /// The choices remembered in `cache`, by (op, shape); a file that cannot be trusted is
    /// ignored with a warning.
    #[cfg(not(target_arch = "wasm32"))]
    fn remembered(cache: Option<&TuningCache>) -> HashMap<(String, Vec<usize>), Choice> {
        let Some(cache) = cache else {
            return HashMap::new();
        };
        let (choices, warning) = cache.load();
        if let Some(w) = warning {
            eprintln!("warning: {w}");
        }
        choices
            .into_iter()
            .map(|c| ((c.op.clone(), c.shape.clone()), c))
            .collect()
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

    /// Bytes of tensors allocated on this device so far (freed ones included).
    pub fn bytes_allocated(&self) -> u64 {
        self.allocated.get()
    }

    /// The alignment, in f32 elements, of a tensor view's offset.
    pub fn view_align(&self) -> usize {
        (self.limits.min_storage_buffer_offset_alignment as usize / 4).max(1)
    }

    /// How many pipelines this device has compiled so far (each at most once).
    pub fn pipelines_compiled(&self) -> usize {
        *self.compiled.borrow()
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

    /// Waits until all submitted work is done (native only; the browser has no blocking wait).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn wait(&self) {
        let _ = self.device.poll(wgpu::PollType::wait_indefinitely());
    }

    /// Checks that a buffer of `bytes` fits the device's binding and buffer limits.
    pub fn check_size(&self, op: &'static str, bytes: u64) -> Result<()> {
        let bind = self.limits.max_storage_buffer_binding_size;
        let buf = self.limits.max_buffer_size;
        if bytes > bind.min(buf) {
            return Err(Error::Limit {
                op,
                msg: format!(
                    "a buffer of {bytes} bytes exceeds max_storage_buffer_binding_size {bind} \
                     (max_buffer_size {buf}) of {}",
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
        let mut free = self.readback.borrow_mut();
        free.push(staging);
        if free.len() > MAX_FREE_READBACK {
            free.remove(0); // the least recently used
        }
        Ok(bytes)
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

    /// Reads an f32 tensor back.
    pub async fn read(&self, t: &Tensor) -> Result<Vec<f32>> {
        let bytes = self.read_bytes(t).await?;
        Ok(bytemuck::cast_slice(&bytes).to_vec())
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
