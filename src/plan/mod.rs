//! The plan of a step: a model + batch size + mode becomes a [`Plan`] once (every buffer allocated,
//! every bind group created); a step then only records the prepared dispatches, one command
//! encoder per block, and submits them together.

mod buckets;
mod build;
mod config;
mod layers;
mod profile;
mod recycle;

pub use buckets::{GradBucket, GradStage};
pub use config::{FineTune, Mode, Normalize, PlanConfig, Shard};
pub use profile::{KernelTime, KindTime, Profile};

use crate::error::{Error, Result};
use crate::gpu::{Gpu, Kernel, PassTimer, PendingRead, Tensor};
use crate::model::ModelState;
use crate::ops::amp::ScalerState;
use crate::ops::augment::pack_bytes;
use crate::ops::augment::AugmentConfig;
use crate::ops::batchnorm::Exchange;
use crate::ops::loss::{LossBuffers, LossParams};
use crate::ops::sgd::SgdConfig;
use crate::preprocess::{MixDraw, RandomErasing};
use std::ops::Range;

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
    /// Dynamic loss scaling's state, in a training plan with `config.loss_scale`.
    scaler: Option<Tensor>,
    /// The rectangles random erasing sets to 0 this step, in a training plan that erases.
    erase: Option<Tensor>,
    /// The loss kernel and its settings, whose MixUp/CutMix weight changes every step.
    loss_kernel: (KernelAt, LossParams),
    /// GPU bytes this plan holds (activations, gradients of activations, scratch), counted once
    /// it is built: what building freed again (a tuning race's losers) is not in it.
    pub bytes: u64,
    /// The input stage's kernel (augmentation in training, normalisation always), whose seed
    /// changes every step.
    input_stage: KernelAt,
    /// The SGD kernels, whose learning rate changes every step.
    sgd: Vec<SgdChunk>,
    /// Where the host combines the BatchNorm sums of every rank between two kernels
    /// (SyncBatchNorm: `config.shard.bn_ranks` > 1), in the order the kernels run.
    exchanges: Vec<(KernelAt, Exchange)>,
    /// The backward stages in the order they run and whose gradients each computes.
    grad_stages: Vec<GradStage>,
}

/// Where a kernel sits: `stages[stage].kernels[index]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct KernelAt {
    stage: usize,
    index: usize,
}

/// One SGD kernel over `len` floats of the flat buffers.
#[derive(Debug, Clone, Copy)]
struct SgdChunk {
    at: KernelAt,
    len: usize,
    /// Its first element in the flat buffers.
    offset: usize,
    /// This chunk's learning rate over the step's (--lr-backbone).
    lr_scale: f32,
}

impl Plan {
    /// Builds the plan. Fails with a message naming the limit and a batch size that fits when a
    /// buffer would exceed the device's limits.
    pub fn new(gpu: &Gpu, model: &ModelState, config: PlanConfig) -> Result<Plan> {
        let before = gpu.bytes_allocated();
        match build::build(gpu, model, &config) {
            Ok(built) => Ok(Plan {
                config,
                stages: built.stages,
                pixels: built.io.pixels,
                labels: built.io.labels,
                logits: built.io.logits,
                loss: built.io.loss,
                scaler: built.io.scaler,
                erase: built.io.erase,
                loss_kernel: built.loss,
                bytes: gpu.bytes_allocated().saturating_sub(before),
                input_stage: built.input_stage,
                sgd: built.sgd,
                exchanges: built.exchanges,
                grad_stages: built.grad_stages,
            }),
            Err(Error::Limit { op, msg }) => {
                // the largest buffer per image: an activation (the f32 sums beside one take 2
                // bytes per value of it at most)
                let bytes = gpu.precision.activation_type().size().max(2);
                let per_image = build::largest_activation(model, &config) as u64 * bytes;
                let limit = gpu.limits.max_storage_buffer_binding_size;
                let fits = (limit / per_image.max(1)).max(1);
                let fits = 1u64 << (63 - fits.leading_zeros()); // a power of two
                if fits >= config.batch as u64 {
                    // the batch's activations fit: what does not is sized by the model
                    return Err(Error::Limit { op, msg });
                }
                Err(Error::Limit {
                    op,
                    msg: format!(
                        "{msg}; batch size {} of {} at {}x{} does not fit, try `batch_size` {fits}",
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

    /// Sets this step's augmentation seed (and the rectangles random erasing and the mixing
    /// MixUp or CutMix draw from it) and learning rate.
    pub fn set_step(&self, gpu: &Gpu, seed: u32, lr: f32) -> Result<()> {
        let first = self.config.shard.first as u64;
        let mix = match self.config.mixing() {
            Some(mixing) => mixing.draw(seed as u64, first, self.config.input),
            None => MixDraw::Nothing,
        };
        self.set_step_mixed(gpu, seed, lr, mix)
    }

    /// [`Plan::set_step`] with the batch's mixing given rather than drawn from the seed (a
    /// training plan's only: evaluation never mixes).
    pub fn set_step_mixed(&self, gpu: &Gpu, seed: u32, lr: f32, mix: MixDraw) -> Result<()> {
        if mix != MixDraw::Nothing && self.config.mode != Mode::Train {
            return Err(Error::Invalid(
                "an evaluation plan does not mix its batches".into(),
            ));
        }
        let input = AugmentConfig {
            mix,
            ..self.config.augment_config(seed)
        };
        self.kernel(self.input_stage)
            .set_params(gpu, &input.uniform());
        if let (Some(buffer), Some(erasing)) = (&self.erase, self.config.preprocess.erase) {
            gpu.write(buffer, &self.erase_rects(erasing, seed))?;
        }
        // a plan that never mixes keeps the weight 1 it was built with (one write fewer a step);
        // one that mixes is told every step, back to 1 where a step does not mix
        if mix != MixDraw::Nothing || self.config.mixing().is_some() {
            let (at, params) = self.loss_kernel;
            let lambda = mix.lambda();
            self.kernel(at)
                .set_params(gpu, &LossParams { lambda, ..params }.uniform());
        }
        for chunk in &self.sgd {
            let sgd = SgdConfig {
                lr: lr * chunk.lr_scale,
                ..self.config.sgd
            };
            self.kernel(chunk.at)
                .set_params(gpu, &sgd.uniform(chunk.len, chunk.offset));
        }
        Ok(())
    }

    /// The rectangles of this step's images: drawn for their indices in the global batch, as
    /// one process would draw them.
    fn erase_rects(&self, erasing: RandomErasing, seed: u32) -> Vec<u32> {
        let first = self.config.shard.first as u64;
        (0..self.config.batch as u64)
            .flat_map(|i| {
                let rect = erasing.rect(seed as u64, first + i, self.config.input);
                rect.unwrap_or([0; 4])
            })
            .collect()
    }

    /// Dynamic loss scaling's state after the steps submitted so far; `None` without
    /// `config.loss_scale`.
    pub async fn loss_scale_state(&self, gpu: &Gpu) -> Result<Option<ScalerState>> {
        match &self.scaler {
            Some(t) => Ok(Some(ScalerState::from_words(&gpu.read_u32(t).await?))),
            None => Ok(None),
        }
    }

    /// Sets dynamic loss scaling's state (a resumed run's); nothing without `config.loss_scale`.
    pub fn set_loss_scale_state(&self, gpu: &Gpu, state: &ScalerState) -> Result<()> {
        match &self.scaler {
            Some(t) => gpu.write(t, &state.words()),
            None => Ok(()),
        }
    }

    /// Carries dynamic loss scaling's state over from `earlier` (a plan rebuilt, e.g. after
    /// tuning), on the GPU: nothing waits.
    pub fn continue_loss_scale(&self, gpu: &Gpu, earlier: &Plan) -> Result<()> {
        match (&self.scaler, &earlier.scaler) {
            (Some(to), Some(from)) => gpu.copy(from, to),
            _ => Ok(()),
        }
    }

    fn kernel(&self, at: KernelAt) -> &Kernel {
        &self.stages[at.stage].kernels[at.index]
    }

    /// Records every stage into its own command encoder and submits them together.
    pub fn submit(&self, gpu: &Gpu) {
        self.submit_inner(gpu, None, 0..self.stages.len());
    }

    /// Submits every stage before the optimizer (a training plan's forward and backward passes,
    /// which leave the gradients in the model's flat gradient buffer).
    pub fn submit_forward_backward(&self, gpu: &Gpu) {
        self.submit_inner(gpu, None, 0..self.optimizer_stage());
    }

    /// [`Plan::submit_forward_backward`] for a plan whose BatchNorms share their statistics
    /// across ranks: the kernels run up to each exchange, the host reads this rank's partial
    /// sums, `gather` returns every rank's (rank after rank), and the whole batch's values are
    /// written back before the next kernels run. Without exchanges it only submits. A read that
    /// failed still goes to `gather`, so that the other ranks are told rather than left waiting.
    pub async fn submit_forward_backward_across(
        &self,
        gpu: &Gpu,
        gather: &mut dyn FnMut(Result<Vec<f64>>) -> Result<Vec<f64>>,
    ) -> Result<()> {
        let mut from = KernelAt { stage: 0, index: 0 };
        for (at, e) in &self.exchanges {
            self.submit_kernels(gpu, from, *at);
            let local = gpu.read(&e.partial).await;
            let all = gather(local.map(|v| v.into_iter().map(f64::from).collect()))?;
            gpu.write(&e.partial, &e.combine.apply(&all))?;
            from = *at;
        }
        let end = KernelAt {
            stage: self.optimizer_stage(),
            index: 0,
        };
        self.submit_kernels(gpu, from, end);
        Ok(())
    }

    /// The flat gradient of `model` cut into buckets of at least `cap` floats (the last may be
    /// smaller), in the order the backward pass completes them: DDP's gradient buckets.
    pub fn gradient_buckets(&self, model: &ModelState, cap: usize) -> Vec<GradBucket> {
        let layout = &model.layout;
        buckets::buckets(&layout.params, layout.params_len, &self.grad_stages, cap)
    }

    /// Submits the forward and backward passes in segments, one per bucket of `buckets` (from
    /// [`Plan::gradient_buckets`]), each followed by a copy of its bucket's gradients into a
    /// mappable buffer. Returns at once with the reads in bucket order: the first can be
    /// awaited (and exchanged) while the GPU still computes the layers below it.
    pub fn submit_in_buckets(
        &self,
        gpu: &Gpu,
        model: &ModelState,
        buckets: &[GradBucket],
    ) -> Vec<PendingRead> {
        let mut from = 0;
        buckets
            .iter()
            .map(|b| {
                let work = (from..=b.after_stage)
                    .map(|i| self.encode(gpu, i, 0..self.stages[i].kernels.len(), None))
                    .collect();
                from = b.after_stage + 1;
                gpu.submit_then_read(work, &model.grads, b.floats.clone())
            })
            .collect()
    }

    /// How many times a step exchanges BatchNorm sums with the other ranks (0 unless
    /// `config.shard.bn_ranks` > 1).
    pub fn exchanges(&self) -> usize {
        self.exchanges.len()
    }

    /// Records the kernels from `from` up to (not including) `to`, one encoder per stage
    /// touched, and submits them.
    fn submit_kernels(&self, gpu: &Gpu, from: KernelAt, to: KernelAt) {
        let last = to.stage.min(self.stages.len() - 1);
        let buffers: Vec<_> = (from.stage..=last)
            .filter_map(|stage| {
                let start = if stage == from.stage { from.index } else { 0 };
                let end = match stage == to.stage {
                    true => to.index,
                    false => self.stages[stage].kernels.len(),
                };
                (start < end).then(|| self.encode(gpu, stage, start..end, None))
            })
            .collect();
        gpu.queue.submit(buffers);
    }

    /// Submits the optimizer stage (and any after it).
    pub fn submit_optimizer(&self, gpu: &Gpu) {
        self.submit_inner(gpu, None, self.optimizer_stage()..self.stages.len());
    }

    /// The index of the optimizer stage (the number of stages in an inference plan).
    fn optimizer_stage(&self) -> usize {
        self.sgd.first().map_or(self.stages.len(), |c| c.at.stage)
    }

    fn submit_inner(&self, gpu: &Gpu, timer: Option<&PassTimer>, range: Range<usize>) {
        let mut buffers: Vec<_> = range
            .map(|i| self.encode(gpu, i, 0..self.stages[i].kernels.len(), timer))
            .collect();
        if let Some(t) = timer {
            let mut enc = gpu.device.create_command_encoder(&Default::default());
            t.resolve(&mut enc);
            buffers.push(enc.finish());
        }
        gpu.queue.submit(buffers);
    }

    /// The kernels `kernels` of stage `stage` in one command encoder and compute pass (timed as
    /// the stage's pass by `timer`).
    fn encode(
        &self,
        gpu: &Gpu,
        stage: usize,
        kernels: Range<usize>,
        timer: Option<&PassTimer>,
    ) -> wgpu::CommandBuffer {
        let s = &self.stages[stage];
        let mut enc = gpu
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some(&s.name),
            });
        {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some(&s.name),
                timestamp_writes: timer.map(|t| t.writes(stage)),
            });
            for k in &s.kernels[kernels] {
                k.record(&mut pass);
            }
        }
        enc.finish()
    }

    /// Runs one step with a GPU timestamp around every stage and returns (stage, milliseconds);
    /// `None` when the adapter has no timestamp queries. For benchmarks: allocates and waits.
    pub async fn submit_timed(&self, gpu: &Gpu) -> Result<Option<Vec<(String, f64)>>> {
        let Some(timer) = PassTimer::new(gpu, self.stages.len())? else {
            self.submit(gpu);
            return Ok(None);
        };
        self.submit_inner(gpu, Some(&timer), 0..self.stages.len());
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
