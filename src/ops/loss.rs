//! Softmax cross-entropy with its gradient and top-1 and top-5 accuracy counts
//! (shaders/loss.wgsl).

use super::{check_shape, kernel};
use crate::error::{shape_err, Result};
use crate::gpu::{Gpu, Kernel, Tensor, Uniform};

const SHADER: (&str, &str) = ("loss.wgsl", include_str!("../../shaders/loss.wgsl"));

/// Outputs of the loss: `stats` = [mean loss, correct count, top-5 count] of the last batch, and
/// `accum` = [loss sum, correct, count, first non-finite batch, top-5] summed over batches until
/// the caller reads and clears it (the fourth slot is 0 while every loss was finite, else the
/// 1-based index since the clear of the first batch whose loss was not).
#[derive(Clone)]
pub struct LossBuffers {
    /// Per-row scratch [N, 3].
    pub rows: Tensor,
    /// [mean loss, correct, top-5] of the last batch.
    pub stats: Tensor,
    /// [loss sum, correct, count, first non-finite batch, top-5], accumulated across batches.
    pub accum: Tensor,
}

/// Floats of [`LossBuffers::accum`].
pub const ACCUM_LEN: usize = 5;

impl LossBuffers {
    /// Allocates the buffers for batch size `n`.
    pub fn new(gpu: &Gpu, n: usize) -> Result<Self> {
        Ok(LossBuffers {
            rows: gpu.zeros(&[n, 3])?,
            stats: gpu.zeros(&[3])?,
            accum: gpu.zeros(&[ACCUM_LEN])?,
        })
    }

    /// Zeroes the accumulator.
    pub fn clear(&self, gpu: &Gpu) -> Result<()> {
        gpu.write(&self.accum, &[0.0f32; ACCUM_LEN])
    }

    /// Reads the accumulator back (without clearing it).
    pub async fn read(&self, gpu: &Gpu) -> Result<LossSums> {
        Ok(LossSums::from_accum(&gpu.read(&self.accum).await?))
    }
}

/// The accumulator of [`LossBuffers`] read back: sums over the batches since the last clear.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LossSums {
    /// Sum of the per-image losses.
    pub loss: f32,
    /// Images classified correctly (top-1).
    pub correct: f32,
    /// Images seen.
    pub count: f32,
    /// 0 while every batch's loss was finite, else the 1-based index (since the clear) of the
    /// first batch whose loss was not.
    pub first_non_finite: f32,
    /// Images whose label was among the five classes ranked first (torchvision's Acc@5).
    pub top5: f32,
}

impl LossSums {
    /// From the floats of the accumulator buffer, in the shader's order.
    pub fn from_accum(a: &[f32]) -> Self {
        LossSums {
            loss: a[0],
            correct: a[1],
            count: a[2],
            first_non_finite: a[3],
            top5: a[4],
        }
    }

    /// The floats in the shader's order (what the browser demo hands to JavaScript).
    pub fn to_array(self) -> [f32; ACCUM_LEN] {
        [
            self.loss,
            self.correct,
            self.count,
            self.first_non_finite,
            self.top5,
        ]
    }

    /// Mean loss per image.
    pub fn mean_loss(&self) -> f32 {
        self.loss / self.count
    }

    /// Top-1 accuracy in [0, 1].
    pub fn accuracy(&self) -> f32 {
        self.correct / self.count
    }

    /// The sums of the batches after `earlier` (a reading of the same accumulator taken before).
    pub fn since(&self, earlier: &LossSums) -> LossSums {
        LossSums {
            loss: self.loss - earlier.loss,
            correct: self.correct - earlier.correct,
            count: self.count - earlier.count,
            first_non_finite: self.first_non_finite,
            top5: self.top5 - earlier.top5,
        }
    }
}

/// The loss kernels' settings (their uniform).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossParams {
    /// Batch size.
    pub n: usize,
    /// Classes.
    pub o: usize,
    /// PyTorch's `label_smoothing`.
    pub smoothing: f32,
    /// The gradient is multiplied by dynamic loss scaling's scale.
    pub scaled: bool,
    /// The weight of each image's own label against the one before it in the batch's (MixUp
    /// and CutMix; 1: its own only).
    pub lambda: f32,
}

impl LossParams {
    /// The settings [`cross_entropy`] builds its kernels with, for `logits` [N, O] (unmixed).
    pub fn of(logits: &Tensor, smoothing: f32, scaled: bool) -> LossParams {
        LossParams {
            n: logits.shape[0],
            o: logits.shape[1],
            smoothing,
            scaled,
            lambda: 1.0,
        }
    }

    /// The shader's uniform.
    pub fn uniform(&self) -> Uniform {
        Uniform::new()
            .u(self.n)
            .u(self.o)
            .f(self.smoothing)
            .u(self.scaled as usize)
            .f(self.lambda)
            .u(0)
            .u(0)
            .u(0)
    }
}

/// Mean softmax cross-entropy of `logits` `[N, O]` against `labels` `[N]` (u32), with the gradient
/// into `dlogits` [N, O]; `smoothing` is PyTorch's `label_smoothing` (0: none). With `scaler`
/// (the state of `ops::amp`), the gradient is multiplied by dynamic loss scaling's scale.
pub fn cross_entropy(
    gpu: &Gpu,
    logits: &Tensor,
    labels: &Tensor,
    dlogits: &Tensor,
    out: &LossBuffers,
    smoothing: f32,
    scaler: Option<&Tensor>,
) -> Result<Vec<Kernel>> {
    const OP: &str = "cross entropy";
    if logits.shape.len() != 2 {
        return shape_err(
            OP,
            format!("logits must be [N, classes], got {:?}", logits.shape),
        );
    }
    let n = logits.shape[0];
    check_shape(OP, "labels", labels, &[n])?;
    check_shape(OP, "dlogits", dlogits, &logits.shape)?;
    check_shape(OP, "rows", &out.rows, &[n, 3])?;
    if !(0.0..=1.0).contains(&smoothing) {
        return shape_err(
            OP,
            format!("label smoothing must be in [0, 1], got {smoothing}"),
        );
    }
    let p = LossParams::of(logits, smoothing, scaler.is_some()).uniform();
    let unscaled;
    let scaler = match scaler {
        Some(s) => s,
        None => {
            unscaled = super::dummy(gpu)?;
            &unscaled
        }
    };
    let fb = kernel(
        gpu,
        OP,
        SHADER,
        "ce_forward_backward",
        p.clone(),
        &[
            (1, logits),
            (2, labels),
            (3, dlogits),
            (4, &out.rows),
            (7, scaler),
        ],
        (n as u64).div_ceil(64),
    )?;
    let red = kernel(
        gpu,
        OP,
        SHADER,
        "ce_reduce",
        p,
        &[(4, &out.rows), (5, &out.stats), (6, &out.accum)],
        1,
    )?;
    Ok(vec![fb, red])
}
