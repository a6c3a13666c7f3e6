//! An exponential moving average of weights, as torchvision's `ExponentialMovingAverage`
//! (shaders/ema.wgsl).

use super::{check_shape, kernel};
use crate::error::Result;
use crate::gpu::{Gpu, Kernel, Tensor, Uniform};

const SHADER: (&str, &str) = ("ema.wgsl", include_str!("../../shaders/ema.wgsl"));

/// The op's name in errors and profiles.
pub const OP: &str = "model ema";

/// The uniform of an update of `len` elements: `first` copies (nothing averaged yet), else
/// `ema = decay * ema + (1 - decay) * x`, with `1 - decay` rounded once from f64 as PyTorch
/// rounds a Python float.
pub fn uniform(len: usize, first: bool, decay: f64) -> Uniform {
    Uniform::new()
        .u(len)
        .u(first as usize)
        .f(decay as f32)
        .f((1.0 - decay) as f32)
}

/// One update of `ema` towards `x` (same shape). Change `first` and the decay between updates
/// with `kernel.set_params(gpu, &uniform(len, first, decay))`.
pub fn update(gpu: &Gpu, ema: &Tensor, x: &Tensor, first: bool, decay: f64) -> Result<Kernel> {
    check_shape(OP, "x", x, &ema.shape)?;
    kernel(
        gpu,
        OP,
        SHADER,
        "ema_update",
        uniform(ema.len(), first, decay),
        &[(1, ema), (2, x)],
        (ema.len() as u64).div_ceil(256),
    )
}
