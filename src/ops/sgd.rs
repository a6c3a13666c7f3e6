//! SGD with momentum, weight decay and optional Nesterov, as torch.optim.SGD (shaders/sgd.wgsl).

use super::{check_shape, kernel};
use crate::error::shape_err;
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
    /// The penalty of normalisation layers' weights and biases (BatchNorm's); None: as the other
    /// parameters (torchvision's `--norm-weight-decay`).
    pub norm_weight_decay: Option<f32>,
    /// The penalty of every bias, BatchNorm's included (torchvision's `--bias-weight-decay`, which
    /// wins over `norm_weight_decay`); None: fc's bias as the other parameters, BatchNorm's
    /// biases as its weights.
    pub bias_weight_decay: Option<f32>,
    /// Nesterov momentum.
    pub nesterov: bool,
}

/// Which penalty a parameter takes, as torchvision's `set_weight_decay` groups them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecayKind {
    /// `weight_decay`: convolution and linear weights.
    Other = 0,
    /// `norm_weight_decay`: a normalisation layer's weight (and its bias without a bias decay).
    Norm = 1,
    /// `bias_weight_decay`: a bias.
    Bias = 2,
}

/// The decay kind of every element of a flat buffer of `len` floats, 2 bits each and 16 to a
/// word (sgd.wgsl's `decay_kind`): `runs` gives (first element, count, kind), the rest is
/// [`DecayKind::Other`].
pub fn pack_decay_kinds(
    len: usize,
    runs: impl IntoIterator<Item = (usize, usize, DecayKind)>,
) -> Vec<u32> {
    let mut words = vec![0u32; len.div_ceil(16).max(1)];
    for (start, count, kind) in runs {
        for at in start..start + count {
            words[at / 16] |= (kind as u32) << ((at % 16) * 2);
        }
    }
    words
}

impl SgdConfig {
    /// The optimizer of He et al. 2016 (and of torchvision's ImageNet recipe): learning rate 0.1,
    /// momentum 0.9, weight decay 1e-4, no Nesterov.
    pub fn he2016() -> Self {
        SgdConfig {
            lr: 0.1,
            momentum: 0.9,
            weight_decay: 1e-4,
            norm_weight_decay: None,
            bias_weight_decay: None,
            nesterov: false,
        }
    }

    /// Whether some parameters take another penalty than `weight_decay`, so a step needs their
    /// [`DecayKinds`].
    pub fn decays_by_kind(&self) -> bool {
        self.norm_weight_decay.is_some() || self.bias_weight_decay.is_some()
    }

    /// The parameters as the shader's uniform, for `len` elements from element `offset` of the
    /// flat buffer that [`DecayKinds`] describes (0 without one).
    pub fn uniform(&self, len: usize, offset: usize) -> Uniform {
        Uniform::new()
            .u(len)
            .u(self.nesterov as usize)
            .f(self.lr)
            .f(self.momentum)
            .f(self.weight_decay)
            .f(self.norm_weight_decay.unwrap_or(self.weight_decay))
            .f(self.bias_weight_decay.unwrap_or(self.weight_decay))
            .u(offset)
            .u(self.decays_by_kind() as usize)
            .u(0)
            .u(0)
            .u(0)
    }
}

/// The decay kinds of a whole flat parameter buffer ([`pack_decay_kinds`]) and where a step's
/// first element sits in it.
#[derive(Debug, Clone, Copy)]
pub struct DecayKinds<'a> {
    /// The packed kinds.
    pub words: &'a Tensor,
    /// The element of the flat buffer that the step's element 0 is.
    pub offset: usize,
}

/// What the gradients are multiplied by before a step: none of it by default.
#[derive(Debug, Clone, Copy, Default)]
pub struct GradFactors<'a> {
    /// The state of `ops::amp`: the gradients are scaled; the step unscales them, and does
    /// nothing when they had an inf or NaN.
    pub scaler: Option<&'a Tensor>,
    /// The one-element factor of `ops::clip`: the gradients (unscaled) are clipped to a norm.
    pub clip: Option<&'a Tensor>,
}

/// One SGD step over `param`, `grad` and `velocity` (same shape). Change the learning rate between
/// steps with `kernel.set_params(gpu, &cfg.uniform(len, offset))`, keeping `decays_by_kind()`
/// as it was built with (the kinds are bound or not). With `kinds`, each element decays as its
/// kind says (required when `cfg.decays_by_kind()`); `factors` unscale and clip the gradients.
pub fn step(
    gpu: &Gpu,
    cfg: &SgdConfig,
    param: &Tensor,
    grad: &Tensor,
    velocity: &Tensor,
    kinds: Option<DecayKinds>,
    factors: GradFactors,
) -> Result<Vec<Kernel>> {
    const OP: &str = "sgd";
    check_shape(OP, "grad", grad, &param.shape)?;
    check_shape(OP, "velocity", velocity, &param.shape)?;
    let unused;
    let (words, offset) = match kinds {
        Some(k) if k.words.len() * 16 < k.offset + param.len() => {
            let (from, to) = (k.offset, k.offset + param.len());
            let have = k.words.len() * 16;
            return shape_err(
                OP,
                format!("decay kinds of {have} elements for {from}..{to}"),
            );
        }
        Some(k) => (k.words, k.offset),
        None if cfg.decays_by_kind() => {
            return shape_err(OP, "a norm or bias weight decay needs the decay kinds");
        }
        None => {
            unused = super::dummy(gpu)?;
            (&unused, 0)
        }
    };
    let mut bufs = vec![(1, param), (2, grad), (3, velocity), (5, words)];
    if let Some(s) = factors.scaler {
        check_shape(OP, "loss scaler", s, &[super::amp::WORDS])?;
        bufs.push((4, s));
    }
    if let Some(c) = factors.clip {
        check_shape(OP, "clipping factor", c, &[1])?;
        bufs.push((6, c));
    }
    let entry = match (factors.scaler, factors.clip) {
        (None, None) => "sgd_step",
        (Some(_), None) => "sgd_step_scaled",
        (None, Some(_)) => "sgd_step_clipped",
        (Some(_), Some(_)) => "sgd_step_scaled_clipped",
    };
    Ok(vec![kernel(
        gpu,
        OP,
        SHADER,
        entry,
        cfg.uniform(param.len(), offset),
        &bufs,
        (param.len() as u64).div_ceil(256),
    )?])
}
