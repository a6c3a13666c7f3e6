//! Ops: one module per op family, a file per shader file except conv2d, a folder over its two
//! shaders. Each op checks its shapes, then builds the `Kernel`s that
//! compute it; recording them later allocates nothing.

pub mod activations;
pub mod amp;
pub mod augment;
pub mod batchnorm;
pub mod clip;
pub mod conv2d;
mod derived;
pub mod elementwise;
pub mod ema;
mod kind;
pub mod linear;
pub mod loss;
pub mod pool;
pub mod sgd;

pub use kind::OpKind;

use crate::error::{shape_err, Result};
use crate::gpu::kernel::KernelDesc;
use crate::gpu::{Dtype, Gpu, Kernel, Tensor, Uniform};

/// Fails with a shape error unless `t` has exactly `want` as its shape.
pub(crate) fn check_shape(op: &'static str, name: &str, t: &Tensor, want: &[usize]) -> Result<()> {
    if t.shape != want {
        return shape_err(
            op,
            format!("{name} has shape {:?}, expected {want:?}", t.shape),
        );
    }
    Ok(())
}

/// Fails unless `t`'s elements are `want`.
pub(crate) fn check_dtype(op: &'static str, name: &str, t: &Tensor, want: Dtype) -> Result<()> {
    if t.dtype != want {
        return shape_err(
            op,
            format!("{name} holds {:?} elements, expected {want:?}", t.dtype),
        );
    }
    Ok(())
}

/// A one-element buffer bound where a shader expects an optional input (e.g. no bias).
pub(crate) fn dummy(gpu: &Gpu) -> Result<Tensor> {
    gpu.zeros(&[1])
}

/// Builds one kernel of a shader file (a thin wrapper over [`Kernel::new`]). An f16 tensor
/// binds only to a module of f16 activations ([`activations::module`]): any other reads its
/// bytes as f32, so binding it there is an error, not a wrong result.
#[allow(clippy::too_many_arguments)]
pub(crate) fn kernel(
    gpu: &Gpu,
    op: &'static str,
    (file, source): (&'static str, &'static str),
    entry: &'static str,
    params: Uniform,
    buffers: &[(u32, &Tensor)],
    workgroups: u64,
) -> Result<Kernel> {
    let f16 = activations::of(buffers.iter().map(|b| b.1)) == Dtype::F16;
    if f16 && !activations::is_f16_module(file) {
        return shape_err(op, format!("{entry} of {file} takes no f16 tensors"));
    }
    Kernel::new(
        gpu,
        KernelDesc {
            op,
            file,
            source,
            entry,
            params,
            buffers,
            workgroups,
        },
    )
}

/// Puts an op's useful floating-point operations on its main kernel, the first that is not a
/// weight re-layout, for profiles.
pub(crate) fn count_flops(mut kernels: Vec<Kernel>, flops: f64) -> Vec<Kernel> {
    if let Some(k) = kernels
        .iter_mut()
        .find(|k| !k.name.starts_with("transpose_w"))
    {
        k.flops = flops as u64;
    }
    kernels
}
