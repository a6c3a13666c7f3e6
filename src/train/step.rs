//! One optimiser step on a batch: the code the CLI's training loop and the browser demo share.

use crate::error::Result;
use crate::gpu::Gpu;
use crate::model::ModelState;
use crate::ops::loss::LossSums;
use crate::plan::{Plan, PlanConfig};

/// What a data-parallel step needs from the processes training together. Each takes this
/// rank's values or the error that kept it from having them, and fails on every rank when any
/// rank failed (a rank that stopped alone would leave the others waiting for it).
pub trait Collective {
    /// `grads` replaced by their mean over the ranks, the same bits on every rank.
    fn average(&mut self, grads: Result<Vec<f32>>) -> Result<Vec<f32>>;
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
}

impl Trainer {
    /// Builds the plan for `cfg` (which must be a training configuration).
    pub fn new(gpu: &Gpu, m: &ModelState, cfg: PlanConfig, seed: u64) -> Result<Trainer> {
        Ok(Trainer {
            plan: Plan::new(gpu, m, cfg)?,
            iteration: 0,
            seed,
        })
    }

    /// Builds the plan anew with the same settings, e.g. after kernels were tuned; the position
    /// in the run is kept, the loss sums start from zero.
    pub fn rebuild(&mut self, gpu: &Gpu, m: &ModelState) -> Result<()> {
        self.plan = Plan::new(gpu, m, self.plan.config.clone())?;
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
    /// the other ranks' between the backward pass and the optimizer, and a plan whose
    /// BatchNorms share their statistics (SyncBatchNorm) gathers them within the passes.
    /// Waits for the backward pass to read the gradients.
    pub async fn step_data_parallel(
        &mut self,
        gpu: &Gpu,
        m: &ModelState,
        (pixels, labels): (&[u8], &[u32]),
        lr: f32,
        ranks: &mut dyn Collective,
    ) -> Result<()> {
        self.prepare(gpu, pixels, labels, lr)?;
        if self.plan.exchanges() == 0 {
            self.plan.submit_forward_backward(gpu);
        } else {
            let mut gather = |v| ranks.gather(v);
            self.plan
                .submit_forward_backward_across(gpu, &mut gather)
                .await?;
        }
        let grads = ranks.average(gpu.read(&m.grads).await)?;
        gpu.write(&m.grads, &grads)?;
        self.plan.submit_optimizer(gpu);
        self.advance(m);
        Ok(())
    }

    /// Uploads the batch and sets this step's augmentation seed and learning rate.
    fn prepare(&self, gpu: &Gpu, pixels: &[u8], labels: &[u32], lr: f32) -> Result<()> {
        self.plan.set_batch(gpu, pixels, labels)?;
        let seed = (self.seed as u32).wrapping_mul(0x9E37_79B9)
            ^ (self.iteration as u32).wrapping_mul(0x85EB_CA6B);
        self.plan.set_step(gpu, seed, lr);
        Ok(())
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
