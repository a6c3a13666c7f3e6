//! Convolutions forward, backward to the input and backward to the weights, in every kernel
//! family, at the shapes of ResNet-20 and ResNet-50.

use super::{f64s, values, Group};
use crate::error::Result;
use crate::gpu::{Gpu, GpuOptions, KernelFamily};
use crate::ops::conv2d::{self, Conv2dShape};
use crate::reference::{conv_backward, conv_forward, Conv};

/// (what it is, shape): small batches where the CPU reference would take long.
fn shapes() -> Vec<(&'static str, Conv2dShape)> {
    vec![
        ("resnet20 stem", Conv2dShape::new(8, 3, 32, 32, 16, 3, 1, 1)),
        (
            "resnet20 16->32 /2",
            Conv2dShape::new(8, 16, 32, 32, 32, 3, 2, 1),
        ),
        (
            "resnet20 64x8x8",
            Conv2dShape::new(16, 64, 8, 8, 64, 3, 1, 1),
        ),
        (
            "resnet50 stem 7x7/2",
            Conv2dShape::new(1, 3, 224, 224, 64, 7, 2, 3),
        ),
        (
            "resnet50 1x1 64->256",
            Conv2dShape::new(1, 64, 56, 56, 256, 1, 1, 0),
        ),
        (
            "resnet50 3x3 128 /2",
            Conv2dShape::new(1, 128, 56, 56, 128, 3, 2, 1),
        ),
        (
            "resnet50 projection 512->1024 /2",
            Conv2dShape::new(1, 512, 28, 28, 1024, 1, 2, 0),
        ),
        (
            "resnet50 3x3 512x7x7",
            Conv2dShape::new(2, 512, 7, 7, 512, 3, 1, 1),
        ),
    ]
}

const DIRECTIONS: [&str; 3] = ["forward", "backward to input", "backward to weights"];

/// One group per direction and family.
pub(super) fn check_all(opts: &GpuOptions) -> Result<Vec<Group>> {
    let mut devices = Vec::new();
    for family in KernelFamily::ALL {
        let forced = GpuOptions {
            kernel_family: Some(family),
            tune: Some(false),
            ..opts.clone()
        };
        devices.push((family, Gpu::new_blocking(&forced)?));
    }
    let mut groups: Vec<Group> = devices
        .iter()
        .flat_map(|(f, _)| DIRECTIONS.map(|d| Group::new(format!("conv2d {d} ({})", f.name()))))
        .collect();
    for (i, (name, sh)) in shapes().into_iter().enumerate() {
        let case = format!("{name} {}x{}x{}x{}", sh.n, sh.c, sh.h, sh.w);
        let (x, w, dy) = (
            values(sh.n * sh.c * sh.h * sh.w, 10 * i as u64),
            values(sh.k * sh.c * sh.r * sh.s, 10 * i as u64 + 1),
            values(sh.n * sh.k * sh.p() * sh.q(), 10 * i as u64 + 2),
        );
        let want = reference(&sh, &x, &w, &dy);
        for (d, (_, gpu)) in devices.iter().enumerate() {
            let got = on_gpu(gpu, &sh, &x, &w, &dy)?;
            for j in 0..3 {
                groups[3 * d + j].compare(&case, &got[j], &want[j]);
            }
        }
    }
    Ok(groups)
}

/// [y, dx, dw] of the f64 reference.
fn reference(sh: &Conv2dShape, x: &[f32], w: &[f32], dy: &[f32]) -> [Vec<f64>; 3] {
    let g = Conv {
        n: sh.n,
        c: sh.c,
        h: sh.h,
        w: sh.w,
        k: sh.k,
        r: sh.r,
        s: sh.s,
        stride: sh.stride,
        pad: sh.pad,
    };
    let (x, w, dy) = (f64s(x), f64s(w), f64s(dy));
    let y = conv_forward(&g, &x, &w, None);
    let (dx, dw, _) = conv_backward(&g, &x, &w, &dy);
    [y, dx, dw]
}

/// [y, dx, dw] computed by `gpu`'s kernels.
fn on_gpu(gpu: &Gpu, sh: &Conv2dShape, x: &[f32], w: &[f32], dy: &[f32]) -> Result<[Vec<f32>; 3]> {
    let (xt, wt, dyt) = (
        gpu.upload(x, &sh.x_shape())?,
        gpu.upload(w, &sh.w_shape())?,
        gpu.upload(dy, &sh.y_shape())?,
    );
    let (y, dx, dw) = (
        gpu.zeros(&sh.y_shape())?,
        gpu.zeros(&sh.x_shape())?,
        gpu.zeros(&sh.w_shape())?,
    );
    let mut ks = conv2d::forward(gpu, sh, &xt, &wt, None, &y)?;
    ks.extend(conv2d::backward_input(gpu, sh, &dyt, &wt, &dx)?);
    ks.extend(conv2d::backward_weight(gpu, sh, &xt, &dyt, &dw, None)?);
    gpu.run(&ks);
    Ok([
        gpu.read_blocking(&y)?,
        gpu.read_blocking(&dx)?,
        gpu.read_blocking(&dw)?,
    ])
}
