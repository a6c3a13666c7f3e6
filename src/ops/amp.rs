//! Dynamic loss scaling as `torch.amp.GradScaler` (shaders/amp.wgsl): the loss's gradient is
//! multiplied by a scale so that small gradients survive reduced precision; a step whose
//! gradients hold an inf or NaN is skipped and the scale halved; after `growth_interval` clean
//! steps the scale doubles. The state stays on the GPU (no step waits for the host); the host
//! reads it now and then ([`ScalerState::from_words`]).

use super::{check_shape, kernel};
use crate::error::{Error, Result};
use crate::gpu::{Gpu, Kernel, Tensor, Uniform};

const SHADER: (&str, &str) = ("amp.wgsl", include_str!("../../shaders/amp.wgsl"));

/// GradScaler's settings; [`LossScale::default`] is PyTorch's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossScale {
    /// The first scale (`init_scale`, 2^16).
    pub init_scale: f32,
    /// The factor after `growth_interval` clean steps (2).
    pub growth_factor: f32,
    /// The factor after a step with an inf or NaN (0.5).
    pub backoff_factor: f32,
    /// Clean steps before the scale grows (2000).
    pub growth_interval: u32,
}

impl Default for LossScale {
    fn default() -> Self {
        LossScale {
            init_scale: 65536.0,
            growth_factor: 2.0,
            backoff_factor: 0.5,
            growth_interval: 2000,
        }
    }
}

impl LossScale {
    /// What a training plan in `precision` scales its loss with: these settings in mixed
    /// precision (torch.amp trains with a GradScaler), none in fp32.
    pub fn for_precision(self, precision: crate::gpu::Precision) -> Option<LossScale> {
        (precision == crate::gpu::Precision::Mixed).then_some(self)
    }

    /// Fails with one line naming the setting unless the scaler can work: a finite positive
    /// initial scale, growth above 1, backoff in (0, 1), a growth interval of at least one step
    /// (PyTorch's GradScaler asserts the same).
    pub fn check(&self) -> Result<()> {
        let bad = |field: &str, want: &str, got: String| {
            Err(Error::Invalid(format!(
                "`loss_scale.{field}` must be {want}, got {got}"
            )))
        };
        if !(self.init_scale.is_finite() && self.init_scale > 0.0) {
            return bad(
                "init_scale",
                "finite and positive",
                self.init_scale.to_string(),
            );
        }
        if !(self.growth_factor.is_finite() && self.growth_factor > 1.0) {
            return bad("growth_factor", "above 1", self.growth_factor.to_string());
        }
        if !(self.backoff_factor > 0.0 && self.backoff_factor < 1.0) {
            return bad(
                "backoff_factor",
                "in (0, 1)",
                self.backoff_factor.to_string(),
            );
        }
        if self.growth_interval == 0 {
            return bad("growth_interval", "at least 1", "0".into());
        }
        Ok(())
    }

    fn uniform(&self, len: usize) -> Uniform {
        Uniform::new()
            .u(len)
            .u(self.growth_interval as usize)
            .f(self.growth_factor)
            .f(self.backoff_factor)
    }
}

/// The scaler's state as the GPU keeps it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScalerState {
    /// The current scale.
    pub scale: f32,
    /// Clean steps since the scale last changed (GradScaler's `_growth_tracker`).
    pub growth_tracker: u32,
    /// Steps skipped so far for an inf or NaN.
    pub skipped: u32,
    /// Steps taken (the run's iteration: set with the state, counted on the GPU).
    pub steps: u32,
    /// The step (of `steps`' count) after which the scale first fell below 1: a run whose
    /// gradients overflow even unscaled, which no scale can rescue.
    pub below_one_at: Option<u32>,
}

impl ScalerState {
    /// The state a run starts with.
    pub fn new(cfg: &LossScale) -> ScalerState {
        ScalerState {
            scale: cfg.init_scale,
            growth_tracker: 0,
            skipped: 0,
            steps: 0,
            below_one_at: None,
        }
    }

    /// The words of the GPU's state buffer.
    pub fn words(&self) -> [u32; WORDS] {
        [
            self.scale.to_bits(),
            self.growth_tracker,
            0,
            self.skipped,
            self.steps,
            self.below_one_at.unwrap_or(0),
        ]
    }

    /// The state from the words read back.
    pub fn from_words(w: &[u32]) -> ScalerState {
        ScalerState {
            scale: f32::from_bits(w[0]),
            growth_tracker: w[1],
            skipped: w[3],
            steps: w[4],
            below_one_at: (w[5] != 0).then_some(w[5]),
        }
    }
}

/// The u32 words of the scaler's state on the GPU (shaders/amp.wgsl).
pub const WORDS: usize = 6;

/// The state buffer of a scaler starting at `cfg`'s initial scale (checked first).
pub fn state_buffer(gpu: &Gpu, cfg: &LossScale) -> Result<Tensor> {
    cfg.check()?;
    gpu.upload(&ScalerState::new(cfg).words(), &[WORDS])
}

/// Notes in `state` whether `grads` holds an inf or NaN (before the optimizer): a kernel per
/// chunk of at most one binding (a large model's gradients span several), each only setting
/// the flag, so their order does not matter.
pub fn find_inf(gpu: &Gpu, cfg: &LossScale, grads: &Tensor, state: &Tensor) -> Result<Vec<Kernel>> {
    let max = gpu.max_view_floats();
    let mut kernels = Vec::new();
    for start in (0..grads.len()).step_by(max) {
        let chunk = grads.view(start, &[max.min(grads.len() - start)])?;
        let groups = (chunk.len() as u64).div_ceil(256);
        let uniform = cfg.uniform(chunk.len());
        kernels.extend(scaler_kernel(
            gpu,
            "amp_find_inf",
            uniform,
            (2, state),
            &[(1, &chunk)],
            groups,
        )?);
    }
    Ok(kernels)
}

/// GradScaler.update(): the next step's scale from whether this one found an inf or NaN
/// (after the optimizer).
pub fn update_scale(gpu: &Gpu, cfg: &LossScale, state: &Tensor) -> Result<Vec<Kernel>> {
    scaler_kernel(gpu, "amp_update_scale", cfg.uniform(0), (3, state), &[], 1)
}

/// One kernel of amp.wgsl binding the scaler's `state` (at the binding its entry reads it from)
/// and `others`.
fn scaler_kernel(
    gpu: &Gpu,
    entry: &'static str,
    uniform: Uniform,
    (binding, state): (u32, &Tensor),
    others: &[(u32, &Tensor)],
    groups: u64,
) -> Result<Vec<Kernel>> {
    const OP: &str = "loss scaling";
    check_shape(OP, "state", state, &[WORDS])?;
    let mut bufs = others.to_vec();
    bufs.push((binding, state));
    Ok(vec![kernel(
        gpu, OP, SHADER, entry, uniform, &bufs, groups,
    )?])
}

#[cfg(test)]
mod tests {
    use super::LossScale;

    #[test]
    fn settings_gradscaler_refuses_are_refused() {
        assert!(LossScale::default().check().is_ok());
        let with = |f: fn(&mut LossScale)| {
            let mut c = LossScale::default();
            f(&mut c);
            c.check().unwrap_err().to_string()
        };
        assert!(with(|c| c.init_scale = 0.0).contains("init_scale"));
        assert!(with(|c| c.init_scale = f32::INFINITY).contains("init_scale"));
        assert!(with(|c| c.growth_factor = 1.0).contains("growth_factor"));
        assert!(with(|c| c.backoff_factor = 1.0).contains("backoff_factor"));
        assert!(with(|c| c.backoff_factor = f32::NAN).contains("backoff_factor"));
        assert!(with(|c| c.growth_interval = 0).contains("growth_interval"));
    }
}
