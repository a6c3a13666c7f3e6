//! The scheduler: a model + batch size + mode becomes a [`Plan`] once (every buffer allocated,
//! every bind group created); a step then only records the prepared dispatches, one command
//! encoder per block, and submits them together.

mod build;
mod state;
mod state_dict;

pub use state::ModelState;

use crate::error::{Error, Result};
use crate::gpu::{Gpu, Kernel, PassTimer, Tensor};
use crate::ops::augment::pack_bytes;
use crate::ops::loss::LossBuffers;
use crate::ops::sgd::SgdConfig;

/// Training (batch statistics, backward, SGD) or evaluation (running statistics, forward only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forward, backward and optimizer step.
    Train,
    /// Forward with BN running statistics; loss and accuracy only.
    Eval,
}

/// What a plan is built for.
#[derive(Debug, Clone)]
pub struct PlanConfig {
    /// Images per step.
    pub batch: usize,
    /// Source image size (height, width) of the u8 pixels uploaded per step.
    pub src: (usize, usize),
    /// Network input size (height, width) after the crop.
    pub input: (usize, usize),
    /// Padding of the random crop (training); 0 disables it.
    pub pad: usize,
    /// Random crop and flip in training mode.
    pub augment: bool,
    /// Per-channel normalisation.
    pub mean: [f32; 3],
    /// Per-channel normalisation.
    pub std: [f32; 3],
    /// Train or eval.
    pub mode: Mode,
    /// Optimizer settings (training); the learning rate is changed per step with `set_step`.
    pub sgd: SgdConfig,
}

/// A named group of kernels recorded into one command encoder (a block, the head, ...).
pub struct Stage {
    /// e.g. `layer2.0` or `layer2.0.backward`.
    pub name: String,
    /// Dispatches in order.
    pub kernels: Vec<Kernel>,
}

/// Everything one step needs, allocated once.
pub struct Plan {
    /// The settings it was built with.
    pub config: PlanConfig,
    /// Forward stages, then backward stages and the optimizer (training).
    pub stages: Vec<Stage>,
    /// u8 pixels of a batch, packed four to a u32.
    pub pixels: Tensor,
    /// Labels of a batch (u32).
    pub labels: Tensor,
    /// The network output [N, classes].
    pub logits: Tensor,
    /// Loss, correct count and their running sums.
    pub loss: LossBuffers,
    /// GPU bytes this plan allocated (activations, gradients of activations, scratch).
    pub bytes: u64,
    augment: usize,
    sgd: Vec<(usize, usize, usize)>,
}

impl Plan {
    /// Builds the plan. Fails with a message naming the limit and a batch size that fits when a
    /// buffer would exceed the device's limits.
    pub fn new(gpu: &Gpu, model: &ModelState, config: PlanConfig) -> Result<Plan> {
        let before = gpu.bytes_allocated();
        match build::build(gpu, model, &config) {
            Ok((stages, io, augment, sgd)) => Ok(Plan {
                config,
                stages,
                pixels: io.pixels,
                labels: io.labels,
                logits: io.logits,
                loss: io.loss,
                bytes: gpu.bytes_allocated() - before,
                augment,
                sgd,
            }),
            Err(Error::Limit { op, msg }) => {
                let per_image = build::largest_activation(model, &config) as u64 * 4;
                let limit = gpu.limits.max_storage_buffer_binding_size;
                let fits = (limit / per_image.max(1)).max(1);
                let fits = 1u64 << (63 - fits.leading_zeros()); // a power of two
                Err(Error::Limit {
                    op,
                    msg: format!(
                        "{msg}; batch size {} of {} at {}x{} does not fit, try --batch-size {fits}",
                        config.batch, model.spec.name, config.input.0, config.input.1
                    ),
                })
            }
            Err(e) => Err(e),
        }
    }

    /// Uploads a batch: `pixels` holds N images of 3 x H x W bytes (CHW), `labels` N class indices.
    pub fn set_batch(&self, gpu: &Gpu, pixels: &[u8], labels: &[u32]) -> Result<()> {
        let (h, w) = self.config.src;
        let want = self.config.batch * 3 * h * w;
        if pixels.len() != want || labels.len() != self.config.batch {
            return Err(Error::Shape {
                op: "set_batch",
                msg: format!(
                    "{} pixel bytes and {} labels for a plan of batch {} at {h}x{w} ({want} bytes)",
                    pixels.len(),
                    labels.len(),
                    self.config.batch
                ),
            });
        }
        gpu.write(&self.pixels, &pack_bytes(pixels))?;
        gpu.write(&self.labels, labels)
    }

    /// Sets this step's augmentation seed and learning rate.
    pub fn set_step(&self, gpu: &Gpu, seed: u32, lr: f32) {
        let k = &self.stages[0].kernels[self.augment];
        k.set_params(gpu, &build::augment_config(&self.config, seed).uniform());
        for &(s, i, len) in &self.sgd {
            let cfg = SgdConfig {
                lr,
                ..self.config.sgd
            };
            self.stages[s].kernels[i].set_params(gpu, &cfg.uniform(len));
        }
    }

    /// Records every stage into its own command encoder and submits them together.
    pub fn submit(&self, gpu: &Gpu) {
        self.submit_inner(gpu, None);
    }

    fn submit_inner(&self, gpu: &Gpu, timer: Option<&PassTimer>) {
        let mut buffers: Vec<_> = self
            .stages
            .iter()
            .enumerate()
            .map(|(i, stage)| {
                let mut enc = gpu
                    .device
                    .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                        label: Some(&stage.name),
                    });
                {
                    let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                        label: Some(&stage.name),
                        timestamp_writes: timer.map(|t| t.writes(i)),
                    });
                    for k in &stage.kernels {
                        k.record(&mut pass);
                    }
                }
                enc.finish()
            })
            .collect();
        if let Some(t) = timer {
            let mut enc = gpu.device.create_command_encoder(&Default::default());
            t.resolve(&mut enc);
            buffers.push(enc.finish());
        }
        gpu.queue.submit(buffers);
    }

    /// Runs one step with a GPU timestamp around every stage and returns (stage, milliseconds);
    /// `None` when the adapter has no timestamp queries. For benchmarks: allocates and waits.
    pub async fn submit_timed(&self, gpu: &Gpu) -> Result<Option<Vec<(String, f64)>>> {
        let Some(timer) = PassTimer::new(gpu, self.stages.len())? else {
            self.submit(gpu);
            return Ok(None);
        };
        self.submit_inner(gpu, Some(&timer));
        let ms = timer.read_ms(gpu).await?;
        Ok(Some(
            self.stages
                .iter()
                .zip(ms)
                .map(|(s, ms)| (s.name.clone(), ms))
                .collect(),
        ))
    }

    /// Total dispatches per step.
    pub fn dispatches(&self) -> usize {
        self.stages.iter().map(|s| s.kernels.len()).sum()
    }
}
