//! The optimizers of torchvision's `--opt` (shaders/sgd.wgsl): SGD with momentum, weight decay
//! and optional Nesterov, as torch.optim.SGD; RMSprop and AdamW with the settings torchvision's
//! training script gives them.

use super::{check_shape, kernel};
use crate::error::shape_err;
use crate::error::Result;
use crate::gpu::{Gpu, Kernel, Tensor, Uniform};

const SHADER: (&str, &str) = ("sgd.wgsl", include_str!("../../shaders/sgd.wgsl"));

/// The update rule: torchvision's `--opt` choices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(u32)]
pub enum Rule {
    /// torch.optim.SGD.
    #[default]
    Sgd = 0,
    /// torch.optim.RMSprop(alpha=0.9, eps=0.0316), as torchvision's script builds it, with
    /// `momentum` and `weight_decay` (L2, added to the gradient).
    RmsProp = 1,
    /// torch.optim.AdamW(betas=(0.9, 0.999), eps=1e-8): decoupled weight decay; `momentum` and
    /// `nesterov` take no part.
    AdamW = 2,
}

/// RMSprop's smoothing constant in torchvision's training script.
pub const RMSPROP_ALPHA: f64 = 0.9;
/// RMSprop's epsilon there (TensorFlow's default for its EfficientNet and MobileNet recipes).
pub const RMSPROP_EPS: f64 = 0.0316;
/// AdamW's default betas.
pub const ADAM_BETAS: (f64, f64) = (0.9, 0.999);
/// AdamW's default epsilon.
pub const ADAM_EPS: f64 = 1e-8;
/// u32 words of AdamW's step state: [step count, 1 - beta1^t, sqrt(1 - beta2^t), unused].
pub const ADAM_WORDS: usize = 4;

impl Rule {
    /// The names `--opt` takes.
    pub const NAMES: [&'static str; 4] = ["sgd", "sgd_nesterov", "rmsprop", "adamw"];

    /// torchvision's `--opt` name, lower-cased as its script reads it: the rule and whether
    /// SGD is Nesterov's (`sgd_nesterov`).
    pub fn parse(name: &str) -> Result<(Rule, bool)> {
        match name.to_ascii_lowercase().as_str() {
            "sgd" => Ok((Rule::Sgd, false)),
            "sgd_nesterov" => Ok((Rule::Sgd, true)),
            "rmsprop" => Ok((Rule::RmsProp, false)),
            "adamw" => Ok((Rule::AdamW, false)),
            _ => Err(crate::Error::Invalid(format!(
                "`opt`: unknown optimizer '{name}' (choose from {})",
                Rule::NAMES.join(", ")
            ))),
        }
    }

    /// The name checkpoints and logs use.
    pub fn name(self) -> &'static str {
        match self {
            Rule::Sgd => "sgd",
            Rule::RmsProp => "rmsprop",
            Rule::AdamW => "adamw",
        }
    }

    /// The name torch.optim gives the per-element state kept beside the momentum buffer
    /// (RMSprop's square_avg, AdamW's exp_avg_sq); `None` for SGD, which keeps none.
    pub fn second_moment(self) -> Option<&'static str> {
        match self {
            Rule::Sgd => None,
            Rule::RmsProp => Some("square_avg"),
            Rule::AdamW => Some("exp_avg_sq"),
        }
    }
}

/// Hyper-parameters of one step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SgdConfig {
    /// The update rule (`--opt`): SGD unless told otherwise.
    pub rule: Rule,
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
            rule: Rule::Sgd,
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
        let decays = [
            self.weight_decay,
            self.norm_weight_decay.unwrap_or(self.weight_decay),
            self.bias_weight_decay.unwrap_or(self.weight_decay),
        ];
        // AdamW multiplies the weights by 1 - lr * decay, a Python float in torch
        let decays = decays.map(|d| match self.rule {
            Rule::AdamW => (1.0 - self.lr as f64 * d as f64) as f32,
            _ => d,
        });
        let (beta1, beta2, eps) = match self.rule {
            Rule::RmsProp => (0.0, RMSPROP_ALPHA, RMSPROP_EPS),
            _ => (ADAM_BETAS.0, ADAM_BETAS.1, ADAM_EPS),
        };
        Uniform::new()
            .u(len)
            .u(self.nesterov as usize)
            .f(self.lr)
            .f(self.momentum)
            .f(decays[0])
            .f(decays[1])
            .f(decays[2])
            .u(offset)
            .u(self.decays_by_kind() as usize)
            .u(self.rule as u32 as usize) // sgd.wgsl's RMSPROP and ADAMW
            .f(beta2 as f32)
            .f((1.0 - beta1) as f32)
            .f((1.0 - beta2) as f32)
            .f(eps as f32)
            .f(ADAM_BETAS.0.ln() as f32)
            .f(ADAM_BETAS.1.ln() as f32)
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

/// What a step updates beside the parameters, each over the same elements as them: the momentum
/// buffer (SGD's and RMSprop's momentum_buffer, AdamW's exp_avg) and, for RMSprop and AdamW,
/// the second moments; AdamW's step state ([`ADAM_WORDS`] words, advanced by [`count`]).
#[derive(Debug, Clone, Copy)]
pub struct StepState<'a> {
    /// The momentum buffer.
    pub velocity: &'a Tensor,
    /// RMSprop's square_avg or AdamW's exp_avg_sq.
    pub second: Option<&'a Tensor>,
    /// AdamW's step count and bias corrections.
    pub adam: Option<&'a Tensor>,
}

/// One SGD step over `param`, `grad` and `velocity` (same shape): [`step_with`] for a rule
/// that keeps no second moments.
pub fn step(
    gpu: &Gpu,
    cfg: &SgdConfig,
    param: &Tensor,
    grad: &Tensor,
    velocity: &Tensor,
    kinds: Option<DecayKinds>,
    factors: GradFactors,
) -> Result<Vec<Kernel>> {
    let state = StepState {
        velocity,
        second: None,
        adam: None,
    };
    step_with(gpu, cfg, (param, grad), state, kinds, factors)
}

/// One step of `cfg.rule` over `param` and `grad` (same shape) and `state`. Change the learning
/// rate between steps with `kernel.set_params(gpu, &cfg.uniform(len, offset))`, keeping the
/// rule and `decays_by_kind()` as it was built with (the kinds are bound or not). With `kinds`,
/// each element decays as its kind says (required when `cfg.decays_by_kind()`); `factors`
/// unscale and clip the gradients. AdamW's step count advances in [`count`]'s kernel, which
/// runs before the steps.
pub fn step_with(
    gpu: &Gpu,
    cfg: &SgdConfig,
    (param, grad): (&Tensor, &Tensor),
    state: StepState,
    kinds: Option<DecayKinds>,
    factors: GradFactors,
) -> Result<Vec<Kernel>> {
    const OP: &str = "sgd";
    check_shape(OP, "grad", grad, &param.shape)?;
    check_shape(OP, "velocity", state.velocity, &param.shape)?;
    // placeholders for what the rule does not read: one a binding, since a buffer bound both
    // read-only and read-write in one dispatch is a usage conflict
    let (unused, unused_rw) = (super::dummy(gpu)?, super::dummy(gpu)?);
    let second = match (cfg.rule.second_moment(), state.second) {
        (None, _) => &unused_rw,
        (Some(name), None) => return shape_err(OP, format!("{name} is missing")),
        (Some(name), Some(t)) => {
            check_shape(OP, name, t, &param.shape)?;
            t
        }
    };
    let adam = match (cfg.rule, state.adam) {
        (Rule::AdamW, None) => return shape_err(OP, "AdamW's step state is missing"),
        (Rule::AdamW, Some(t)) => {
            check_shape(OP, "AdamW's step state", t, &[ADAM_WORDS])?;
            t
        }
        _ => &unused,
    };
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
        None => (&unused, 0),
    };
    let mut bufs = vec![
        (1, param),
        (2, grad),
        (3, state.velocity),
        (5, words),
        (7, second),
        (8, adam),
    ];
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

/// AdamW's step count: one invocation that adds 1 to `adam` ([`ADAM_WORDS`] u32 words, zeros
/// at the start) and writes the step's bias corrections, before the steps of [`step_with`]
/// read them; with `scaler`, not on a step the loss scaler skips.
pub fn count(gpu: &Gpu, adam: &Tensor, scaler: Option<&Tensor>) -> Result<Kernel> {
    check_shape("adam_count", "AdamW's step state", adam, &[ADAM_WORDS])?;
    let mut bufs = vec![(9, adam)];
    if let Some(s) = scaler {
        check_shape("adam_count", "loss scaler", s, &[super::amp::WORDS])?;
        bufs.push((4, s));
    }
    let cfg = SgdConfig {
        rule: Rule::AdamW,
        ..SgdConfig::he2016()
    };
    let entry = match scaler {
        Some(_) => "adam_count_scaled",
        None => "adam_count",
    };
    kernel(
        gpu,
        "adam_count",
        SHADER,
        entry,
        cfg.uniform(1, 0),
        &bufs,
        1,
    )
}
