//! SGD with momentum, weight decay and optional Nesterov, as torch.optim.SGD (shaders/sgd.wgsl).

use super::{check_shape, kernel};
use crate::error::Result;
use crate::gpu::{Gpu, Kernel, Tensor, Uniform};

const SHADER: (&str, &str) = ("sgd.wgsl", include_str!("../../shaders/sgd.wgsl"));

/// Hyper-parameters of one step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SgdConfig {
    /// Learning rate.
    pub lr: f32,
    /// Momentum factor.
    pub momentum: f32,
    /// L2 penalty added to the gradient.
    pub weight_decay: f32,
    /// Nesterov momentum.
    pub nesterov: bool,
}

impl SgdConfig {
    /// The optimizer of He et al. 2016 (and of torchvision's ImageNet recipe): learning rate 0.1,
    /// momentum 0.9, weight decay 1e-4, no Nesterov.
    pub fn he2016() -> Self {
        SgdConfig {
            lr: 0.1,
            momentum: 0.9,
            weight_decay: 1e-4,
            nesterov: false,
        }
    }

    /// The parameters as the shader's uniform.
    pub fn uniform(&self, len: usize) -> Uniform {
        Uniform::new()
            .u(len)
            .u(self.nesterov as usize)
            .f(self.lr)
            .f(self.momentum)
            .f(self.weight_decay)
            .u(0)
            .u(0)
            .u(0)
    }
}

/// One SGD step over `param`, `grad` and `velocity` (same shape). Change the learning rate between
/// steps with `kernel.set_params(gpu, &cfg.uniform(len))`. With `scaler` (the state of
/// `ops::amp`), `grad` holds scaled gradients: the step unscales them, and does nothing when
/// they had an inf or NaN.
pub fn step(
    gpu: &Gpu,
    cfg: &SgdConfig,
    param: &Tensor,
    grad: &Tensor,
    velocity: &Tensor,
    scaler: Option<&Tensor>,
) -> Result<Vec<Kernel>> {
    const OP: &str = "sgd";
    check_shape(OP, "grad", grad, &param.shape)?;
    check_shape(OP, "velocity", velocity, &param.shape)?;
    let mut bufs = vec![(1, param), (2, grad), (3, velocity)];
    if let Some(s) = scaler {
        check_shape(OP, "loss scaler", s, &[super::amp::WORDS])?;
        bufs.push((4, s));
    }
    let entry = match scaler {
        Some(_) => "sgd_step_scaled",
        None => "sgd_step",
    };
    Ok(vec![kernel(
        gpu,
        OP,
        SHADER,
        entry,
        cfg.uniform(param.len()),
        &bufs,
        (param.len() as u64).div_ceil(256),
    )?])
}
