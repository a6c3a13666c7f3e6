//! Linear layer with bias (shaders/linear.wgsl): x `[N, I]`, w `[O, I]`, b `[O]`, y `[N, O]`.

use super::{activations, check_dtype, check_shape, count_flops, kernel};
use crate::error::{shape_err, Result};
use crate::gpu::{Dtype, Gpu, Kernel, Tensor, Uniform};

const SHADER: (&str, &str) = ("linear.wgsl", include_str!("../../shaders/linear.wgsl"));

fn dims(op: &'static str, x: &Tensor, w: &Tensor) -> Result<(usize, usize, usize, Uniform)> {
    if x.shape.len() != 2 || w.shape.len() != 2 || x.shape[1] != w.shape[1] {
        return shape_err(
            op,
            format!(
                "x {:?} and weight {:?} must be [N, I] and [O, I]",
                x.shape, w.shape
            ),
        );
    }
    let (n, i, o) = (x.shape[0], x.shape[1], w.shape[0]);
    Ok((n, i, o, Uniform::new().u(n).u(i).u(o).u(0)))
}

/// y = x w^T + b.
pub fn forward(gpu: &Gpu, x: &Tensor, w: &Tensor, b: &Tensor, y: &Tensor) -> Result<Vec<Kernel>> {
    const OP: &str = "linear forward";
    let (n, i, o, p) = dims(OP, x, w)?;
    check_shape(OP, "bias", b, &[o])?;
    check_shape(OP, "y", y, &[n, o])?;
    check_dtype(OP, "y", y, Dtype::F32)?;
    let k = kernel(
        gpu,
        OP,
        activations::module(SHADER, x.dtype),
        "linear_forward",
        p,
        &[(1, x), (2, w), (3, b), (5, y)],
        ((n * o) as u64).div_ceil(64),
    )?;
    Ok(count_flops(vec![k], 2.0 * (n * i * o) as f64))
}

/// dx = dy w; dw = dy^T x; db = sum_n dy.
pub fn backward(
    gpu: &Gpu,
    x: &Tensor,
    w: &Tensor,
    dy: &Tensor,
    dx: Option<&Tensor>,
    dw: &Tensor,
    db: &Tensor,
) -> Result<Vec<Kernel>> {
    const OP: &str = "linear backward";
    let (n, i, o, p) = dims(OP, x, w)?;
    check_shape(OP, "dy", dy, &[n, o])?;
    check_shape(OP, "dw", dw, &[o, i])?;
    check_shape(OP, "db", db, &[o])?;
    for (name, t) in [("dy", dy), ("dw", dw), ("db", db)] {
        check_dtype(OP, name, t, Dtype::F32)?;
    }
    let flops = 2.0 * (n * i * o) as f64;
    let mut ks = count_flops(
        vec![kernel(
            gpu,
            OP,
            activations::module(SHADER, x.dtype),
            "linear_backward_weight",
            p.clone(),
            &[(1, x), (4, dy), (5, dw), (6, db)],
            ((o * i) as u64).div_ceil(64),
        )?],
        flops,
    );
    if let Some(dx) = dx {
        check_shape(OP, "dx", dx, &[n, i])?;
        let k = kernel(
            gpu,
            OP,
            activations::module(SHADER, dx.dtype),
            "linear_backward_input",
            p,
            &[(2, w), (4, dy), (5, dx)],
            ((n * i) as u64).div_ceil(64),
        )?;
        ks.extend(count_flops(vec![k], flops));
    }
    Ok(ks)
}
