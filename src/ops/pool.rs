//! Max pooling and global average pooling (shaders/pool.wgsl).

use super::{activations, check_dtype, check_shape, kernel};
use crate::error::{shape_err, Result};
use crate::gpu::{Gpu, Kernel, Tensor, Uniform};

const SHADER: (&str, &str) = ("pool.wgsl", include_str!("../../shaders/pool.wgsl"));

/// Geometry of a square max pool (ResNet stem: 3x3, stride 2, padding 1).
#[derive(Debug, Clone, Copy)]
pub struct PoolShape {
    /// Batch.
    pub n: usize,
    /// Channels.
    pub c: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Window height = width.
    pub window: usize,
    /// Stride.
    pub stride: usize,
    /// Padding.
    pub pad: usize,
}

impl PoolShape {
    /// Output height.
    pub fn p(&self) -> usize {
        (self.h + 2 * self.pad - self.window) / self.stride + 1
    }
    /// Output width.
    pub fn q(&self) -> usize {
        (self.w + 2 * self.pad - self.window) / self.stride + 1
    }
    /// Output shape.
    pub fn y_shape(&self) -> Vec<usize> {
        vec![self.n, self.c, self.p(), self.q()]
    }
    /// Input shape.
    pub fn x_shape(&self) -> Vec<usize> {
        vec![self.n, self.c, self.h, self.w]
    }
    fn params(&self, op: &'static str) -> Result<Uniform> {
        if self.stride == 0
            || self.window == 0
            || self.h + 2 * self.pad < self.window
            || self.w + 2 * self.pad < self.window
            || 2 * self.pad > self.window
        {
            return shape_err(
                op,
                format!("invalid max pool geometry {self:?} (pad must be at most half the window)"),
            );
        }
        Ok(Uniform::new()
            .u(self.n)
            .u(self.c)
            .u(self.h)
            .u(self.w)
            .u(self.p())
            .u(self.q())
            .u(self.window)
            .u(self.stride)
            .u(self.pad)
            .u(0)
            .u(0)
            .u(0))
    }
}

/// y = maxpool(x); `arg` [N, C, P, Q] (u32) receives the argmax for the backward.
pub fn maxpool_forward(
    gpu: &Gpu,
    sh: &PoolShape,
    x: &Tensor,
    y: &Tensor,
    arg: &Tensor,
) -> Result<Vec<Kernel>> {
    const OP: &str = "maxpool forward";
    let p = sh.params(OP)?;
    check_shape(OP, "x", x, &sh.x_shape())?;
    check_shape(OP, "y", y, &sh.y_shape())?;
    check_shape(OP, "argmax", arg, &sh.y_shape())?;
    check_dtype(OP, "y", y, x.dtype)?;
    Ok(vec![kernel(
        gpu,
        OP,
        activations::module(SHADER, x.dtype),
        "maxpool_forward",
        p,
        &[(1, x), (2, y), (3, arg)],
        (y.len() as u64).div_ceil(256),
    )?])
}

/// dx of [`maxpool_forward`] from dy and the saved argmax.
pub fn maxpool_backward(
    gpu: &Gpu,
    sh: &PoolShape,
    dy: &Tensor,
    arg: &Tensor,
    dx: &Tensor,
) -> Result<Vec<Kernel>> {
    const OP: &str = "maxpool backward";
    let p = sh.params(OP)?;
    check_shape(OP, "dy", dy, &sh.y_shape())?;
    check_shape(OP, "argmax", arg, &sh.y_shape())?;
    check_shape(OP, "dx", dx, &sh.x_shape())?;
    check_dtype(OP, "dx", dx, dy.dtype)?;
    Ok(vec![kernel(
        gpu,
        OP,
        activations::module(SHADER, dy.dtype),
        "maxpool_backward",
        p,
        &[(1, dy), (2, dx), (3, arg)],
        (dx.len() as u64).div_ceil(256),
    )?])
}

fn avg_params(op: &'static str, x_shape: &[usize]) -> Result<Uniform> {
    if x_shape.len() != 4 || x_shape.contains(&0) {
        return shape_err(
            op,
            format!("x must be [N, C, H, W] with no zero dimension, got {x_shape:?}"),
        );
    }
    let mut u = Uniform::new()
        .u(x_shape[0])
        .u(x_shape[1])
        .u(x_shape[2])
        .u(x_shape[3]);
    u.0.resize(12, 0);
    Ok(u)
}

/// y [N, C] = mean of x [N, C, H, W] over H and W.
pub fn avgpool_forward(gpu: &Gpu, x: &Tensor, y: &Tensor) -> Result<Vec<Kernel>> {
    const OP: &str = "global avgpool forward";
    let p = avg_params(OP, &x.shape)?;
    check_shape(OP, "y", y, &x.shape[..2])?;
    check_dtype(OP, "y", y, x.dtype)?;
    Ok(vec![kernel(
        gpu,
        OP,
        activations::module(SHADER, x.dtype),
        "avgpool_forward",
        p,
        &[(1, x), (2, y)],
        (y.len() as u64).div_ceil(256),
    )?])
}

/// dx [N, C, H, W] = dy [N, C] / (H * W).
pub fn avgpool_backward(gpu: &Gpu, dy: &Tensor, dx: &Tensor) -> Result<Vec<Kernel>> {
    const OP: &str = "global avgpool backward";
    let p = avg_params(OP, &dx.shape)?;
    check_shape(OP, "dy", dy, &dx.shape[..2])?;
    check_dtype(OP, "dx", dx, dy.dtype)?;
    Ok(vec![kernel(
        gpu,
        OP,
        activations::module(SHADER, dy.dtype),
        "avgpool_backward",
        p,
        &[(1, dy), (2, dx)],
        (dx.len() as u64).div_ceil(256),
    )?])
}
