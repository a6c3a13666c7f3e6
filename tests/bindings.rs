//! A model larger than one storage binding: torchvision's resnet101 and up hold more than the
//! 128 MiB that lavapipe and WebGPU's default bind at once (`max_storage_buffer_binding_size`).
//! Their flat parameters, gradients and optimizer state are one buffer each (below
//! `max_buffer_size`) that the kernels bind a layer or a chunk at a time. Here a device asks for
//! bindings of 192 KiB, so that resnet8's 301 KB of parameters span two, and its training
//! steps are checked against the same steps on the adapter's own limit. Both run the 64x64 GEMM
//! family, whose partial sums of the backward to the weights (at most 147 KB here) fit either
//! limit, so the gradients are the same bits and any difference comes from the chunks.

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

fn config(rule: Rule, clip: Option<f32>) -> PlanConfig {
    let sgd = SgdConfig {
        rule,
        lr: if rule == Rule::AdamW { 1e-3 } else { 0.05 },
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
