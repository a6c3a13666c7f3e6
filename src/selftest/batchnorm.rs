//! BatchNorm at full ResNet sizes: its per-channel reductions (batch statistics, the gradients of
//! gamma and beta) run over up to 100,000 values, where a driver's reductions are most likely to
//! go wrong (docs/ARCHITECTURE.md, "Determinism": a peer framework's returned wrong sums on
//! lavapipe).

use super::{f64s, values, Group};
use crate::error::Result;
use crate::gpu::Gpu;
use crate::ops::batchnorm::{self, BnParams, Fuse, MOMENTUM};
use crate::reference::{bn_apply, bn_backward, bn_forward};

/// [N, C, H, W] of ResNet-20's first stage at batch 128 and ResNet-50's first at batch 32.
const SHAPES: [[usize; 4]; 2] = [[128, 16, 32, 32], [32, 64, 56, 56]];

pub(super) fn check_all(gpu: &Gpu) -> Result<Vec<Group>> {
    let names = [
        "batchnorm2d forward, + residual, ReLU",
        "batchnorm2d running statistics",
        "batchnorm2d forward (eval)",
        "batchnorm2d backward (input, gamma, beta)",
    ];
    let mut groups: Vec<Group> = names.iter().map(|n| Group::new(*n)).collect();
    for (i, shape) in SHAPES.into_iter().enumerate() {
        let case = format!("{}x{}x{}x{}", shape[0], shape[1], shape[2], shape[3]);
        for (g, (got, want)) in groups
            .iter_mut()
            .zip(one_shape(gpu, shape, 100 + i as u64)?)
        {
            g.compare(&case, &got, &want);
        }
    }
    Ok(groups)
}

/// The inputs of one shape's checks.
struct Inputs {
    shape: [usize; 4],
    x: Vec<f32>,
    res: Vec<f32>,
    dy: Vec<f32>,
    gamma: Vec<f32>,
    beta: Vec<f32>,
    /// Running mean, then running variance.
    running: Vec<f32>,
}

impl Inputs {
    fn new(shape: [usize; 4], seed: u64) -> Inputs {
        let [n, c, h, w] = shape;
        let (hw, len) = (h * w, n * c * h * w);
        // an offset and a scale per channel, as real activations have: sums must not cancel
        let x = values(len, seed)
            .iter()
            .enumerate()
            .map(|(i, v)| 3.0 * v + ((i / hw) % c) as f32 * 0.5)
            .collect();
        Inputs {
            shape,
            x,
            res: values(len, seed + 1),
            dy: values(len, seed + 2),
            gamma: values(c, seed + 3).iter().map(|v| 1.0 + 0.5 * v).collect(),
            beta: values(c, seed + 4),
            running: [values(c, seed + 5), vec![1.5; c]].concat(),
        }
    }
}

/// What the GPU computed: the training forward, the running statistics after it, the eval
/// forward, and the backward (dx, dgamma and dbeta, dresidual) concatenated.
struct Outputs {
    y: Vec<f32>,
    running: Vec<f32>,
    y_eval: Vec<f32>,
    backward: Vec<f32>,
}

/// (GPU, reference) of the four checks at one shape.
fn one_shape(gpu: &Gpu, shape: [usize; 4], seed: u64) -> Result<Vec<(Vec<f32>, Vec<f64>)>> {
    let inputs = Inputs::new(shape, seed);
    let got = on_gpu(gpu, &inputs)?;
    let [y, running, eval, backward] = reference(&inputs, &got.y);
    Ok(vec![
        (got.y, y),
        (got.running, running),
        (got.y_eval, eval),
        (got.backward, backward),
    ])
}

/// The four checks' ops on the GPU, BatchNorm fused with a residual and ReLU.
fn on_gpu(gpu: &Gpu, inp: &Inputs) -> Result<Outputs> {
    let (shape, c) = (inp.shape, inp.shape[1]);
    let t = |v: &[f32], s: &[usize]| gpu.upload(v, s);
    let (xt, rt, dyt) = (
        t(&inp.x, &shape)?,
        t(&inp.res, &shape)?,
        t(&inp.dy, &shape)?,
    );
    let affine = t(&[inp.gamma.clone(), inp.beta.clone()].concat(), &[2, c])?;
    let run_t = t(&inp.running, &[2, c])?;
    let (y, y_eval, dx, dres) = (
        gpu.zeros(&shape)?,
        gpu.zeros(&shape)?,
        gpu.zeros(&shape)?,
        gpu.zeros(&shape)?,
    );
    let (saved, dparams) = (gpu.zeros(&[2, c])?, gpu.zeros(&[2, c])?);
    let p = BnParams {
        affine: &affine,
        running: &run_t,
    };
    let fuse = Fuse {
        residual: Some(&rt),
        relu: true,
    };
    // eval first: it reads the running statistics before training updates them
    let mut ks = batchnorm::forward_eval(gpu, &xt, &y_eval, &p, fuse)?;
    ks.extend(batchnorm::forward_train(
        gpu, &xt, &y, &p, &saved, fuse, MOMENTUM,
    )?);
    ks.extend(
        batchnorm::backward(
            gpu,
            &dyt,
            &y,
            &xt,
            &affine,
            batchnorm::Stats::Batch(&saved),
            &dx,
            &dparams,
            Some(&dres),
            true,
        )?
        .0,
    );
    gpu.run(&ks);
    let read = |t| gpu.read_blocking(t);
    Ok(Outputs {
        y: read(&y)?,
        running: read(&run_t)?,
        y_eval: read(&y_eval)?,
        backward: [read(&dx)?, read(&dparams)?, read(&dres)?].concat(),
    })
}

/// The f64 references of the four checks, in [`Outputs`]' order. The backward is given the
/// GPU's forward output `y_gpu` to mask the ReLU with (among millions of values a few sit within
/// rounding of zero, where an f64 and an f32 forward disagree on the mask).
fn reference(inp: &Inputs, y_gpu: &[f32]) -> [Vec<f64>; 4] {
    let [n, c, h, w] = inp.shape;
    let hw = h * w;
    let (x64, r64, dy64) = (f64s(&inp.x), f64s(&inp.res), f64s(&inp.dy));
    let (g64, b64) = (f64s(&inp.gamma), f64s(&inp.beta));
    let (rm, rv) = (f64s(&inp.running[..c]), f64s(&inp.running[c..]));
    let eval = bn_apply(n, c, hw, &x64, &g64, &b64, &rm, &rv, Some(&r64), true);
    let (y_ref, mean, var) = bn_forward(n, c, hw, &x64, &g64, &b64, Some(&r64), true);
    let m = (n * hw) as f64;
    let m_ = 1.0 - MOMENTUM as f64;
    let running_ref: Vec<f64> = (0..c)
        .map(|i| m_ * rm[i] + MOMENTUM as f64 * mean[i])
        .chain((0..c).map(|i| m_ * rv[i] + MOMENTUM as f64 * var[i] * m / (m - 1.0)))
        .collect();
    let y64 = f64s(y_gpu);
    let (dx_ref, dgamma, dbeta, dres_ref) =
        bn_backward(n, c, hw, &x64, &g64, &mean, &var, &y64, &dy64, true);
    let backward_ref = [dx_ref, dgamma, dbeta, dres_ref].concat();
    [y_ref, running_ref, eval, backward_ref]
}
