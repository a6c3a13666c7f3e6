//! Convolutions forward (with a bias), backward to the input and backward to the weights (and the
//! bias), in every kernel family (or the one `--kernels` or RESNET_KERNELS forces), at the
//! shapes of ResNet-20 and ResNet-50.

use super::{f64s, values, Group};
use crate::error::Result;
use crate::gpu::{Gpu, GpuOptions, Precision};
use crate::ops::conv2d::KernelFamily;
use crate::ops::conv2d::{self, Conv2dShape};
use crate::reference::{conv_backward, conv_forward, Conv};

// Here rather than in `reference`, which imports nothing of the engine (so that a test can trust
// it not to share a bug with it).
impl From<&Conv2dShape> for Conv {
    /// The reference's geometry of the GPU op's shape (the same ten numbers).
    fn from(sh: &Conv2dShape) -> Conv {
        Conv {
            n: sh.n,
            c: sh.c,
            h: sh.h,
            w: sh.w,
            k: sh.k,
            r: sh.r,
            s: sh.s,
            stride: sh.stride,
            pad: sh.pad,
            groups: sh.groups,
        }
    }
}

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

/// ResNeXt's grouped 3x3s (one kernel on every adapter, whatever the family).
fn grouped_shapes() -> Vec<(&'static str, Conv2dShape)> {
    vec![
        (
            "resnext50 3x3 128 in 32 groups /2",
            Conv2dShape::new(1, 128, 56, 56, 128, 3, 2, 1).grouped(32),
        ),
        (
            "resnext101_64x4d 3x3 1024 in 64 groups",
            Conv2dShape::new(2, 1024, 7, 7, 1024, 3, 1, 1).grouped(64),
        ),
    ]
}

const DIRECTIONS: [&str; 3] = ["forward", "backward to input", "backward to weights"];

/// One group per direction and family: every family of the precision, or only the one
/// `opts` forces (`--kernels`, RESNET_KERNELS; an error where it cannot run).
pub(super) fn check_all(opts: &GpuOptions) -> Result<Vec<Group>> {
    let mut devices = Vec::new();
    let chosen = |f: &KernelFamily| opts.kernel_family.is_none_or(|k| k == f.name());
    for family in KernelFamily::of_precision(opts.precision).filter(chosen) {
        let forced = GpuOptions {
            kernel_family: Some(family.name()),
            tune: Some(false),
            ..opts.clone()
        };
        let gpu = Gpu::new_blocking(&forced)?;
        // the tensor-core family only where the adapter has cooperative matrices (or they are
        // emulated, RESNET_COOPERATIVE=emulate)
        if family.runs_on_gpu(&gpu) {
            devices.push((family, gpu));
        } else if opts.kernel_family.is_some() {
            return Err(conv2d::cannot_run(&gpu, family));
        }
    }
    let mut groups: Vec<Group> = devices
        .iter()
        .flat_map(|(f, _)| DIRECTIONS.map(|d| Group::new(format!("conv2d {d} ({})", f.name()))))
        .collect();
    let gpus: Vec<&Gpu> = devices.iter().map(|(_, gpu)| gpu).collect();
    for (i, (name, sh)) in shapes().into_iter().enumerate() {
        check_shape(
            &gpus,
            (name, sh, 10 * i as u64),
            opts.precision,
            &mut groups,
        )?;
    }
    // the grouped kernels on the first device: every family's device runs the same ones
    if let Some(first) = gpus.first() {
        let mut grouped = DIRECTIONS.map(|d| Group::new(format!("conv2d {d} (grouped)")));
        for (i, (name, sh)) in grouped_shapes().into_iter().enumerate() {
            let case = (name, sh, 500 + 10 * i as u64);
            check_shape(&[first], case, opts.precision, &mut grouped)?;
        }
        groups.extend(grouped);
    }
    Ok(groups)
}

/// One shape on each of `gpus` against the f64 reference, into `groups` (three per device:
/// forward, backward to the input, to the weights).
fn check_shape(
    gpus: &[&Gpu],
    (name, sh, seed): (&str, Conv2dShape, u64),
    precision: Precision,
    groups: &mut [Group],
) -> Result<()> {
    let case = format!("{name} {}x{}x{}x{}", sh.n, sh.c, sh.h, sh.w);
    let data = Data {
        x: values(sh.x_shape().iter().product(), seed),
        w: values(sh.w_shape().iter().product(), seed + 1),
        b: values(sh.k, seed + 3),
        dy: values(sh.y_shape().iter().product(), seed + 2),
    };
    let want = reference(&sh, &data);
    // mixed precision: each element against the bound of f16 operands (super::f16_bounds)
    let bounds = (precision == Precision::Mixed).then(|| {
        let depth = sh.n * sh.p() * sh.q() + (sh.c + sh.k) * sh.r * sh.s;
        reference(&sh, &data.magnitudes()).map(|s| super::f16_bounds(&s, depth))
    });
    for (d, gpu) in gpus.iter().enumerate() {
        let got = on_gpu(gpu, &sh, &data)?;
        for j in 0..3 {
            match &bounds {
                Some(b) => groups[3 * d + j].compare_within(&case, &got[j], &want[j], &b[j]),
                None => groups[3 * d + j].compare(&case, &got[j], &want[j]),
            }
        }
    }
    Ok(())
}

/// Inputs of one case: x, w, bias, dy.
struct Data {
    x: Vec<f32>,
    w: Vec<f32>,
    b: Vec<f32>,
    dy: Vec<f32>,
}

impl Data {
    /// The same inputs as magnitudes: the reference on them sums |products| per output.
    fn magnitudes(&self) -> Data {
        let abs = |v: &[f32]| v.iter().map(|x| x.abs()).collect();
        Data {
            x: abs(&self.x),
            w: abs(&self.w),
            b: abs(&self.b),
            dy: abs(&self.dy),
        }
    }
}

/// [y (with the bias), dx, dw then db] of the f64 reference.
fn reference(sh: &Conv2dShape, d: &Data) -> [Vec<f64>; 3] {
    let g = Conv::from(sh);
    let (x, w, b, dy) = (f64s(&d.x), f64s(&d.w), f64s(&d.b), f64s(&d.dy));
    let y = conv_forward(&g, &x, &w, Some(&b));
    let (dx, dw, db) = conv_backward(&g, &x, &w, &dy);
    [y, dx, [dw, db].concat()]
}

/// The same, computed by `gpu`'s kernels.
fn on_gpu(gpu: &Gpu, sh: &Conv2dShape, d: &Data) -> Result<[Vec<f32>; 3]> {
    let (xt, wt, bt, dyt) = (
        gpu.upload(&d.x, &sh.x_shape())?,
        gpu.upload(&d.w, &sh.w_shape())?,
        gpu.upload(&d.b, &[sh.k])?,
        gpu.upload(&d.dy, &sh.y_shape())?,
    );
    let (y, dx, dw, db) = (
        gpu.zeros(&sh.y_shape())?,
        gpu.zeros(&sh.x_shape())?,
        gpu.zeros(&sh.w_shape())?,
        gpu.zeros(&[sh.k])?,
    );
    let mut ks = conv2d::forward(gpu, sh, &xt, &wt, Some(&bt), &y)?;
    ks.extend(conv2d::backward_input(gpu, sh, &dyt, &wt, &dx)?);
    ks.extend(conv2d::backward_weight(gpu, sh, &xt, &dyt, &dw, Some(&db))?);
    gpu.run(&ks);
    let read = |t| gpu.read_blocking(t);
    Ok([read(&y)?, read(&dx)?, [read(&dw)?, read(&db)?].concat()])
}
