//! One optimiser step on a batch: the code the CLI's training loop and the browser demo share.

use crate::error::Result;
use crate::gpu::Gpu;
use crate::model::ModelState;
use crate::ops::loss::LossSums;
use crate::plan::{GradBucket, Plan, PlanConfig};

/// What a data-parallel step needs from the processes training together. Each takes this
/// rank's values or the error that kept it from having them, and fails on every rank when any
/// rank failed (a rank that stopped alone would leave the others waiting for it).
pub trait Collective {
    /// `grads` (all of the flat gradient, or a bucket of it) replaced by their mean over the
    /// ranks, the same bits on every rank. `computing` tells, asked after the exchange, whether
    /// the GPU is still computing the backward pass (the exchange was hidden behind it).
    fn average(
        &mut self,
        grads: Result<Vec<f32>>,
        computing: &dyn Fn() -> bool,
    ) -> Result<Vec<f32>>;
    /// Every rank's `values` (each rank's the same length), rank after rank.
    fn gather(&mut self, values: Result<Vec<f64>>) -> Result<Vec<f64>>;
}

/// A training plan and the position in the run: every step is seeded by (seed, iteration), so a
/// run resumed at an iteration repeats the same augmentation. Each step also advances the
/// model's BatchNorm `num_batches_tracked` by one, as PyTorch does.
pub struct Trainer {
    /// The training plan (its `loss.accum` sums loss and accuracy until cleared).
    pub plan: Plan,
    /// Steps taken.
    pub iteration: u64,
    seed: u64,
    /// The gradient buckets of a data-parallel step (empty: one exchange after the backward).
    buckets: Vec<GradBucket>,
    /// The floats a bucket holds at least, when set.
    bucket_cap: Option<usize>,
}

impl Trainer {
    /// Builds the plan for `cfg` (which must be a training configuration).
    pub fn new(gpu: &Gpu, m: &ModelState, cfg: PlanConfig, seed: u64) -> Result<Trainer> {
        Ok(Trainer {
            plan: Plan::new(gpu, m, cfg)?,
            iteration: 0,
            seed,
            buckets: Vec::new(),
            bucket_cap: None,
        })
    }

    /// Exchanges a data-parallel step's gradients in buckets of at least `cap` floats, each as
    /// soon as the backward pass has computed it, while the GPU computes the layers below
    /// (PyTorch DDP's `bucket_cap_mb`). A plan whose BatchNorms exchange within the passes
    /// (SyncBatchNorm) keeps one exchange after the backward.
    pub fn bucket_gradients(&mut self, m: &ModelState, cap: usize) {
        self.bucket_cap = Some(cap);
        self.buckets = match self.plan.exchanges() {
            0 => self.plan.gradient_buckets(m, cap),
            _ => Vec::new(),
        };
    }

    /// The gradient buckets of a data-parallel step, in the order they are exchanged.
    pub fn buckets(&self) -> &[GradBucket] {
        &self.buckets
    }

    /// Builds the plan anew with the same settings, e.g. after kernels were tuned; the position
    /// in the run is kept, the loss sums start from zero.
    pub fn rebuild(&mut self, gpu: &Gpu, m: &ModelState) -> Result<()> {
        let rebuilt = Plan::new(gpu, m, self.plan.config.clone())?;
        rebuilt.continue_loss_scale(gpu, &self.plan)?;
        self.plan = rebuilt;
        if let Some(cap) = self.bucket_cap {
            self.bucket_gradients(m, cap);
        }
        Ok(())
    }

    /// Uploads a batch (N images of 3 x H x W bytes, CHW, and N labels) and submits one step at
    /// learning rate `lr`; nothing waits for the GPU.
    pub fn step(
        &mut self,
        gpu: &Gpu,
        m: &ModelState,
        pixels: &[u8],
        labels: &[u32],
        lr: f32,
    ) -> Result<()> {
        self.prepare(gpu, pixels, labels, lr)?;
        self.plan.submit(gpu);
        self.advance(m);
        Ok(())
    }

    /// [`Trainer::step`] as one rank of a data-parallel step: the gradients are averaged with
    /// the other ranks' between the backward pass and the optimizer, bucket by bucket while the
    /// backward runs when [`Trainer::bucket_gradients`] was asked; a plan whose BatchNorms
    /// share their statistics (SyncBatchNorm) gathers them within the passes. Waits for the
    /// backward pass to read the gradients.
    pub async fn step_data_parallel(
        &mut self,
        gpu: &Gpu,
        m: &ModelState,
        (pixels, labels): (&[u8], &[u32]),
        lr: f32,
        ranks: &mut dyn Collective,
    ) -> Result<()> {
        self.prepare(gpu, pixels, labels, lr)?;
        if !self.buckets.is_empty() {
            self.average_in_buckets(gpu, m, ranks).await?;
        } else {
            if self.plan.exchanges() == 0 {
                self.plan.submit_forward_backward(gpu);
            } else {
                let mut gather = |v| ranks.gather(v);
                self.plan
                    .submit_forward_backward_across(gpu, &mut gather)
                    .await?;
            }
            let grads = ranks.average(gpu.read(&m.grads).await, &|| false)?;
            gpu.write(&m.grads, &grads)?;
        }
        self.plan.submit_optimizer(gpu);
        self.advance(m);
        Ok(())
    }

    /// Submits the passes with a read-back after each bucket's layers, then exchanges each
    /// bucket as soon as it is read, while the GPU computes the rest; writes the averages back.
    /// Every bucket holds whole floats of the flat gradient, and each float is summed over the
    /// ranks in rank order as in one exchange: the same bits whatever the buckets.
    async fn average_in_buckets(
        &self,
        gpu: &Gpu,
        m: &ModelState,
        ranks: &mut dyn Collective,
    ) -> Result<()> {
        let reads = self.plan.submit_in_buckets(gpu, m, &self.buckets);
        let backward = gpu.submitted();
        let computing = || !gpu.has_finished(&backward);
        let mut grads = vec![0.0f32; m.layout.params_len];
        for (bucket, read) in self.buckets.iter().zip(reads) {
            let mean = ranks.average(gpu.finish_read(read).await, &computing)?;
            grads[bucket.floats.clone()].copy_from_slice(&mean);
        }
        gpu.write(&m.grads, &grads)
    }

    /// Uploads the batch and sets this step's augmentation seed and learning rate.
    fn prepare(&self, gpu: &Gpu, pixels: &[u8], labels: &[u32], lr: f32) -> Result<()> {
        self.plan.set_batch(gpu, pixels, labels)?;
        let seed = (self.seed as u32).wrapping_mul(0x9E37_79B9)
            ^ (self.iteration as u32).wrapping_mul(0x85EB_CA6B);
        self.plan.set_step(gpu, seed, lr)
    }

    fn advance(&mut self, m: &ModelState) {
        self.iteration += 1;
        // PyTorch counts every training-mode forward of a BN layer, whatever the run's iteration:
        // a model loaded from a checkpoint keeps counting from the checkpoint's value
        m.batches_tracked.set(m.batches_tracked.get() + 1);
    }

    /// Loss and accuracy sums since the last [`Trainer::clear`].
    pub async fn read(&self, gpu: &Gpu) -> Result<LossSums> {
        self.plan.loss.read(gpu).await
    }

    /// Zeroes the loss and accuracy sums.
    pub fn clear(&self, gpu: &Gpu) -> Result<()> {
        self.plan.loss.clear(gpu)
    }
}
