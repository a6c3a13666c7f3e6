//! torchvision's `ExponentialMovingAverage` of a model being trained (`--model-ema`): an
//! `AveragedModel` with `use_buffers=True`, so BatchNorm's running statistics are averaged with
//! the weights. It lives on the GPU beside the model and is updated there; nothing waits
//! (portable: the browser could keep one too).

use crate::error::Result;
use crate::gpu::{Gpu, Kernel};
use crate::model::ModelState;
use crate::ops::ema;

/// A moving average of a model's weights and running statistics.
pub struct ExponentialMovingAverage {
    /// The averaged weights, as a model evaluation plans can read.
    pub model: ModelState,
    /// The decay of one update.
    pub decay: f64,
    /// Updates since the average last started, AveragedModel's `n_averaged`: the next update
    /// copies when it is 0.
    pub averaged: u64,
    /// The update, a kernel per binding-sized chunk of the parameters and the running
    /// statistics, and each one's element count.
    kernels: Vec<Kernel>,
    lens: Vec<usize>,
}

impl ExponentialMovingAverage {
    /// An average of `m` that starts as a copy of its weights now, updated with `decay`.
    pub fn new(gpu: &Gpu, m: &ModelState, decay: f64) -> Result<Self> {
        let model = m.weights_copy(gpu)?;
        let (mut kernels, mut lens) = (Vec::new(), Vec::new());
        for (avg, x) in [(&model.params, &m.params), (&model.running, &m.running)] {
            for (offset, len) in chunks(gpu, x.len()) {
                let (avg, x) = (avg.view(offset, &[len])?, x.view(offset, &[len])?);
                kernels.push(ema::update(gpu, &avg, &x, true, decay)?);
                lens.push(len);
            }
        }
        Ok(ExponentialMovingAverage {
            model,
            decay,
            averaged: 0,
            kernels,
            lens,
        })
    }

    /// Moves the average towards the weights of `m` (the model it was made from) as they stand
    /// after the work submitted so far: a copy when nothing is averaged yet.
    pub fn update(&mut self, gpu: &Gpu, m: &ModelState) {
        let first = self.averaged == 0;
        for (k, len) in self.kernels.iter().zip(&self.lens) {
            k.set_params(gpu, &ema::uniform(*len, first, self.decay));
        }
        gpu.run(&self.kernels);
        let (avg, now) = (self.model.batches_tracked.get(), m.batches_tracked.get());
        self.model.batches_tracked.set(match first {
            true => now,
            false => averaged_count(avg, now, self.decay),
        });
        self.averaged += 1;
    }

    /// GPU bytes of the average: the weights and running statistics.
    pub fn bytes(&self) -> u64 {
        self.model.params.bytes() + self.model.running.bytes()
    }
}

/// BatchNorm's `num_batches_tracked` after an update, as PyTorch computes torchvision's
/// `decay * avg + (1 - decay) * p` on an int64 buffer: in f32 (the default dtype an integer
/// tensor times a float promotes to), then truncated by the `copy_` back into the integer.
fn averaged_count(avg: u64, now: u64, decay: f64) -> u64 {
    ((decay as f32) * (avg as f32) + ((1.0 - decay) as f32) * (now as f32)) as u64
}

/// (offset, length) chunks of a flat buffer of `len` floats that each fit one binding and start
/// where the device can bind a view.
fn chunks(gpu: &Gpu, len: usize) -> Vec<(usize, usize)> {
    let max = gpu.max_view_floats();
    (0..len)
        .step_by(max)
        .map(|offset| (offset, max.min(len - offset)))
        .collect()
}
