//! A model larger than one storage binding: torchvision's resnet101 and up hold more than the
//! 128 MiB that lavapipe and WebGPU's default bind at once (`max_storage_buffer_binding_size`).
//! Their flat parameters, gradients and optimizer state are one buffer each (below
//! `max_buffer_size`) that the kernels bind a layer or a chunk at a time. Here a device asks for
//! bindings of 192 KiB, so that resnet8's 301 KB of parameters span two, and its training
//! steps are checked against the same steps on the adapter's own limit. Both run the 64x64 GEMM
//! family, whose partial sums of the backward to the weights (at most 147 KB here) fit either
//! limit, so the gradients are the same bits and any difference comes from the chunks. An inf
//! in any chunk of the gradients skips the step, the moving average averages every chunk, and
//! a view the device cannot bind at its offset is one clear error.

mod common;
use common::*;
use resnet::gpu::{Gpu, GpuOptions, Precision};
use resnet::model::{ModelSpec, ModelState};
use resnet::ops::amp::LossScale;
use resnet::ops::conv2d::KernelFamily;
use resnet::ops::sgd::{Rule, SgdConfig};
use resnet::plan::{Mode, Plan, PlanConfig};

const SMALL_BINDING: u64 = 192 << 10;

fn device(max_binding_bytes: Option<u64>, precision: Precision) -> Gpu {
    let family = match precision {
        Precision::Fp32 => KernelFamily::Gemm64x64,
        Precision::Mixed => KernelFamily::Gemm64x64F16,
    };
    Gpu::new_blocking(&GpuOptions {
        max_binding_bytes,
        precision,
        kernel_family: Some(family.name()),
        ..untuned()
    })
    .expect("a GPU adapter")
}

/// resnet8's state_dict after `steps` training steps of `cfg` from seed 3 on the first bundled
/// training images.
fn trained(gpu: &Gpu, cfg: PlanConfig, steps: usize) -> Vec<(String, Vec<f32>)> {
    let spec = ModelSpec::from_name("resnet8", 10).unwrap();
    let m = ModelState::new(gpu, &spec, 3).unwrap();
    let plan = Plan::new(gpu, &m, cfg.clone()).unwrap();
    let (pixels, labels) = bundled_batch(cfg.batch);
    plan.set_batch(gpu, &pixels, &labels).unwrap();
    for step in 0..steps {
        plan.set_step(gpu, step.try_into().unwrap(), cfg.sgd.lr)
            .unwrap();
        plan.submit(gpu);
    }
    let sd = pollster::block_on(m.state_dict(gpu)).unwrap();
    // the f32 tensors: num_batches_tracked is an integer, counting the steps alike
    sd.iter()
        .filter_map(|t| Some((t.name.clone(), t.as_f32()?.to_vec())))
        .collect()
}

/// The first `n` images of the bundled training set (CIFAR-10 binary records: a label byte,
/// then the 3 x 32 x 32 bytes, CHW) and their labels.
fn bundled_batch(n: usize) -> (Vec<u8>, Vec<u32>) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/web/data/train.bin");
    let records = std::fs::read(path).unwrap();
    let batch: Vec<&[u8]> = records.chunks(3073).take(n).collect();
    let pixels = batch.iter().flat_map(|r| r[1..].to_vec()).collect();
    (pixels, batch.iter().map(|r| r[0] as u32).collect())
}

/// Two images a step with `rule`, clipped or not, and torchvision's weight-decay groups: each
/// chunk of the optimizer reads its part of the table of decay kinds.
fn config(rule: Rule, clip: Option<f32>) -> PlanConfig {
    let sgd = SgdConfig {
        rule,
        lr: if rule == Rule::AdamW { 1e-3 } else { 0.05 },
        weight_decay: 5e-3,
        norm_weight_decay: Some(0.0),
        bias_weight_decay: Some(5e-2),
        ..SgdConfig::he2016()
    };
    let fixed = resnet::preprocess::Preprocess::normalize_only(resnet::cifar10::NORMALIZE);
    let mut cfg = PlanConfig::train(2, (32, 32), sgd, fixed);
    cfg.clip_grad_norm = clip;
    assert_eq!(cfg.mode, Mode::Train);
    cfg
}

/// The largest difference of two runs' updates of a tensor from `init`, relative to the update's
/// L2 norm, and which tensor it is.
fn worst(
    a: &[(String, Vec<f32>)],
    b: &[(String, Vec<f32>)],
    init: &[(String, Vec<f32>)],
) -> (f64, String) {
    let mut worst = (0.0, String::new());
    for (((name, x), (other, y)), (_, x0)) in a.iter().zip(b).zip(init) {
        assert_eq!(name, other);
        let (mut diff, mut norm) = (0.0f64, 0.0f64);
        for ((p, q), p0) in x.iter().zip(y).zip(x0) {
            diff += ((p - q) as f64).powi(2);
            norm += ((q - p0) as f64).powi(2);
        }
        let d = if norm > 0.0 {
            (diff / norm).sqrt()
        } else {
            diff.sqrt()
        };
        if d > worst.0 {
            worst = (d, name.clone());
        }
    }
    worst
}

#[test]
fn steps_on_small_bindings_equal_the_steps_on_the_adapters_own() {
    let (small, own) = (
        device(Some(SMALL_BINDING), Precision::Fp32),
        device(None, Precision::Fp32),
    );
    assert_eq!(small.limits.max_storage_buffer_binding_size, SMALL_BINDING);
    let params = ModelSpec::from_name("resnet8", 10).unwrap().param_count() as u64 * 4;
    assert!(
        params > SMALL_BINDING,
        "the parameters span several bindings"
    );
    let init = trained(&own, config(Rule::Sgd, None), 0);
    // SGD's momentum, AdamW's two moments and step count
    let mut unclipped = Vec::new();
    for rule in [Rule::Sgd, Rule::AdamW] {
        let (a, b) = (
            trained(&small, config(rule, None), 2),
            trained(&own, config(rule, None), 2),
        );
        assert_eq!(worst(&a, &b, &init), (0.0, String::new()), "{rule:?}");
        unclipped.push(b);
    }
    // the gradient norm is summed by blocks of 4,096 values, a chunk being 12 of them: the same
    // sums. A chunk left out of the norm would move the clipping factor, and every update
    let clip = Some(0.5);
    let (a, b) = (
        trained(&small, config(Rule::Sgd, clip), 2),
        trained(&own, config(Rule::Sgd, clip), 2),
    );
    assert_eq!(worst(&a, &b, &init), (0.0, String::new()), "clipped");
    let (clipping, _) = worst(&b, &unclipped[0], &init);
    assert!(
        clipping > 0.1,
        "the norm is above 0.5: clipping acts ({clipping:.1e})"
    );
}

#[test]
fn mixed_precision_steps_on_small_bindings_equal_the_steps_on_the_adapters_own() {
    if !f16_shaders("mixed_precision_steps_on_small_bindings") {
        return;
    }
    let mut cfg = config(Rule::Sgd, None);
    cfg.loss_scale = LossScale::default().for_precision(Precision::Mixed);
    assert!(cfg.loss_scale.is_some());
    let own = device(None, Precision::Mixed);
    let init = trained(&own, cfg.clone(), 0);
    let (a, b) = (
        trained(
            &device(Some(SMALL_BINDING), Precision::Mixed),
            cfg.clone(),
            3,
        ),
        trained(&own, cfg, 3),
    );
    assert_eq!(worst(&a, &b, &init), (0.0, String::new()));
    let conv1 = |s: &[(String, Vec<f32>)]| s.iter().find(|(n, _)| n == "conv1.weight").cloned();
    assert_ne!(conv1(&a), conv1(&init), "steps taken, not all skipped");
}

/// An inf or NaN in the gradients' second binding-sized chunk is found as one in the first
/// (the loss scaler looks for them a chunk at a time): the step changes no weight or momentum
/// (the running statistics move in the forward pass, as PyTorch's), counts as skipped and
/// halves the scale. A clean step in between moves
/// the weights, so that an unchanged model means a skipped step.
#[test]
fn an_inf_in_any_chunk_of_the_gradients_skips_the_step() {
    let gpu = device(Some(SMALL_BINDING), Precision::Fp32);
    let spec = ModelSpec::from_name("resnet8", 10).unwrap();
    let m = ModelState::new(&gpu, &spec, 3).unwrap();
    let mut cfg = config(Rule::Sgd, None);
    cfg.loss_scale = Some(LossScale::default());
    let plan = Plan::new(&gpu, &m, cfg).unwrap();
    let (pixels, labels) = bundled_batch(2);
    plan.set_batch(&gpu, &pixels, &labels).unwrap();
    // gradients of parameters (the layout pads each to the view alignment, and the backward
    // writes no padding): the first past the first chunk and the very last
    let chunk = gpu.max_view_floats();
    let params = &m.layout.params;
    let second = params
        .iter()
        .find(|r| r.offset >= chunk)
        .expect("a second chunk");
    let last = params.iter().map(|r| r.offset + r.len() - 1).max().unwrap();
    let model = || [&m.params, &m.momentum].map(|t| read(&gpu, t));
    let scaler = || {
        pollster::block_on(plan.loss_scale_state(&gpu))
            .unwrap()
            .expect("a scaled plan")
    };
    // one step; with `poison` (index, value), that gradient set between backward and optimizer
    let step = |i: u32, poison| poisoned_step(&gpu, (&m, &plan), (i, 0.05), poison);
    let mut i = 0;
    for poison in [
        (5, f32::INFINITY),
        (last, f32::INFINITY),
        (second.offset, f32::NAN),
    ] {
        let (before, state) = (model(), scaler());
        step(i, Some(poison));
        assert!(
            model() == before,
            "a step with {poison:?} changed the model"
        );
        let after = scaler();
        assert_eq!(after.skipped, state.skipped + 1, "{poison:?}");
        assert_eq!(after.scale, state.scale / 2.0, "{poison:?}");
        step(i + 1, None);
        assert!(
            model() != before,
            "the clean step after {poison:?} was skipped"
        );
        i += 2;
    }
}

/// A view bound from an offset the device cannot bind at is one error naming the offset and
/// the limit when its kernel is built (wgpu's validation would fail the whole encoder later).
#[test]
fn a_view_off_the_offset_alignment_is_an_error_naming_it() {
    use resnet::ops::elementwise::relu_forward;
    let gpu = gpu();
    let align = gpu.view_align();
    assert!(align > 1, "views at any float bind here: nothing to check");
    let (x, y) = (
        gpu.zeros(&[2 * align + 64]).unwrap(),
        gpu.zeros(&[64]).unwrap(),
    );
    let aligned = x.view(align, &[64]).unwrap();
    relu_forward(&gpu, &aligned, &y).expect("an aligned view binds");
    let off = x.view(align + 1, &[64]).unwrap();
    let err = match relu_forward(&gpu, &off, &y) {
        Ok(_) => panic!("a view at float {} bound", align + 1),
        Err(e) => e.to_string(),
    };
    let offset = format!("byte offset {}", 4 * (align + 1));
    assert!(
        err.contains(&offset) && err.contains("min_storage_buffer_offset_alignment"),
        "{err}"
    );
}

/// The moving average of `--model-ema`, updated a binding-sized chunk at a time, is
/// torchvision's `d * ema + (1 - d) * weights` in every chunk (f64 on the CPU here), the
/// running statistics' too; its first update copies.
#[test]
fn the_moving_average_on_small_bindings_averages_every_chunk() {
    let gpu = device(Some(SMALL_BINDING), Precision::Fp32);
    let spec = ModelSpec::from_name("resnet8", 10).unwrap();
    let m = ModelState::new(&gpu, &spec, 3).unwrap();
    assert!(m.params.len() > gpu.max_view_floats(), "one chunk");
    let decay = 0.9;
    let mut ema = resnet::train::ExponentialMovingAverage::new(&gpu, &m, decay).unwrap();
    // new weights before each update (an update that missed a chunk would leave it at the
    // weights the average was made from)
    let moved = |by: f32| {
        for t in [&m.params, &m.running] {
            let v: Vec<f32> = read(&gpu, t).iter().map(|x| x * 0.5 + by).collect();
            gpu.write(t, &v).unwrap();
        }
        [read(&gpu, &m.params), read(&gpu, &m.running)]
    };
    let first = moved(0.25);
    ema.update(&gpu, &m);
    let second = moved(-0.125);
    ema.update(&gpu, &m);
    let averaged = [
        read(&gpu, &ema.model.params),
        read(&gpu, &ema.model.running),
    ];
    let names = ["parameters", "running statistics"];
    for (((got, a), b), what) in averaged.iter().zip(&first).zip(&second).zip(names) {
        let want: Vec<f64> = a
            .iter()
            .zip(b)
            .map(|(&a, &b)| decay * a as f64 + (1.0 - decay) * b as f64)
            .collect();
        assert_close(what, got, &want, 1e-6);
    }
}
