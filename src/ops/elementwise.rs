//! ReLU, residual add and the option-A shortcut (shaders/elementwise.wgsl).

use super::{activations, check_dtype, check_shape, kernel};
use crate::error::{shape_err, Result};
use crate::gpu::{Gpu, Kernel, Tensor, Uniform};

const SHADER: (&str, &str) = (
    "elementwise.wgsl",
    include_str!("../../shaders/elementwise.wgsl"),
);

fn flat(len: usize) -> Uniform {
    let mut u = Uniform::new().u(len);
    u.0.resize(12, 0);
    u
}

fn unary(
    gpu: &Gpu,
    op: &'static str,
    entry: &'static str,
    a: &Tensor,
    b: Option<&Tensor>,
    out: &Tensor,
) -> Result<Vec<Kernel>> {
    check_shape(op, "output", out, &a.shape)?;
    check_dtype(op, "output", out, a.dtype)?;
    if let Some(b) = b {
        check_shape(op, "second input", b, &a.shape)?;
        check_dtype(op, "second input", b, a.dtype)?;
    }
    let mut bufs = vec![(1, a), (3, out)];
    if let Some(b) = b {
        bufs.push((2, b));
    }
    Ok(vec![kernel(
        gpu,
        op,
        activations::module(SHADER, a.dtype),
        entry,
        flat(a.len()),
        &bufs,
        (a.len() as u64).div_ceil(256),
    )?])
}

/// y = max(x, 0).
pub fn relu_forward(gpu: &Gpu, x: &Tensor, y: &Tensor) -> Result<Vec<Kernel>> {
    unary(gpu, "relu forward", "relu_forward", x, None, y)
}

/// dx = dy * (y > 0), with y the forward output.
pub fn relu_backward(gpu: &Gpu, dy: &Tensor, y: &Tensor, dx: &Tensor) -> Result<Vec<Kernel>> {
    unary(gpu, "relu backward", "relu_backward", dy, Some(y), dx)
}

/// y = a + b (its backward passes dy to both inputs unchanged).
pub fn add_forward(gpu: &Gpu, a: &Tensor, b: &Tensor, y: &Tensor) -> Result<Vec<Kernel>> {
    unary(gpu, "add", "add_forward", a, Some(b), y)
}

/// Geometry of an option-A shortcut: x [N, Cin, H, W] -> y [N, Cout, ceil(H/st), ceil(W/st)].
#[derive(Debug, Clone, Copy)]
pub struct ShortcutShape {
    /// Batch.
    pub n: usize,
    /// Input channels.
    pub cin: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Output channels (Cin + 2 * pad).
    pub cout: usize,
    /// Spatial stride.
    pub stride: usize,
}

impl ShortcutShape {
    fn ho(&self) -> usize {
        self.h.div_ceil(self.stride)
    }
    fn wo(&self) -> usize {
        self.w.div_ceil(self.stride)
    }
    /// Output shape.
    pub fn y_shape(&self) -> Vec<usize> {
        vec![self.n, self.cout, self.ho(), self.wo()]
    }
    /// Input shape.
    pub fn x_shape(&self) -> Vec<usize> {
        vec![self.n, self.cin, self.h, self.w]
    }
    fn params(&self, op: &'static str, len: usize) -> Result<Uniform> {
        if self.cout < self.cin || !(self.cout - self.cin).is_multiple_of(2) || self.stride == 0 {
            return shape_err(
                op,
                format!("option-A shortcut needs Cout - Cin even and >= 0, stride > 0: {self:?}"),
            );
        }
        Ok(Uniform::new()
            .u(len)
            .u(self.n)
            .u(self.cin)
            .u(self.h)
            .u(self.w)
            .u(self.cout)
            .u(self.ho())
            .u(self.wo())
            .u(self.stride)
            .u((self.cout - self.cin) / 2)
            .u(0)
            .u(0))
    }
}

/// y = zero-channel-padded x[:, :, ::st, ::st] (He et al. option A, as akamaster's LambdaLayer).
pub fn shortcut_a_forward(
    gpu: &Gpu,
    sh: &ShortcutShape,
    x: &Tensor,
    y: &Tensor,
) -> Result<Vec<Kernel>> {
    const OP: &str = "shortcut (option A) forward";
    check_shape(OP, "x", x, &sh.x_shape())?;
    check_shape(OP, "y", y, &sh.y_shape())?;
    check_dtype(OP, "y", y, x.dtype)?;
    Ok(vec![kernel(
        gpu,
        OP,
        activations::module(SHADER, x.dtype),
        "shortcut_a_forward",
        sh.params(OP, y.len())?,
        &[(1, x), (3, y)],
        (y.len() as u64).div_ceil(256),
    )?])
}

/// dx of [`shortcut_a_forward`].
pub fn shortcut_a_backward(
    gpu: &Gpu,
    sh: &ShortcutShape,
    dy: &Tensor,
    dx: &Tensor,
) -> Result<Vec<Kernel>> {
    const OP: &str = "shortcut (option A) backward";
    check_shape(OP, "dy", dy, &sh.y_shape())?;
    check_shape(OP, "dx", dx, &sh.x_shape())?;
    check_dtype(OP, "dx", dx, dy.dtype)?;
    Ok(vec![kernel(
        gpu,
        OP,
        activations::module(SHADER, dy.dtype),
        "shortcut_a_backward",
        sh.params(OP, dx.len())?,
        &[(1, dy), (3, dx)],
        (dx.len() as u64).div_ceil(256),
    )?])
}
