//! Models by name: parameter counts equal PyTorch's (torchvision / akamaster), plans build for
//! both families, and a training step of the scheduler runs and lowers the loss on a fixed batch.

mod common;
use common::*;
use resnet::model::{ModelSpec, MODEL_NAMES};
use resnet::ops::augment::{CIFAR10_MEAN, CIFAR10_STD};
use resnet::ops::sgd::SgdConfig;
use resnet::plan::{Mode, ModelState, Plan, PlanConfig};

#[test]
fn parameter_counts_equal_pytorch() {
    // torchvision.models.resnet18/50 (1000 classes); akamaster resnet20/56/110 (10 classes)
    for (name, classes, count) in [
        ("resnet20", 10, 269_722),
        ("resnet56", 10, 853_018),
        ("resnet110", 10, 1_727_962),
        ("resnet18", 1000, 11_689_512),
        ("resnet34", 1000, 21_797_672),
        ("resnet50", 1000, 25_557_032),
        ("resnet101", 1000, 44_549_160),
        ("resnet152", 1000, 60_192_808),
    ] {
        assert_eq!(
            ModelSpec::from_name(name, classes).unwrap().param_count(),
            count,
            "{name}"
        );
    }
    // plain nets: same layers minus nothing (option A shortcuts have no parameters)
    assert_eq!(
        ModelSpec::from_name("plain20", 10).unwrap().param_count(),
        269_722
    );
    for name in MODEL_NAMES {
        assert!(ModelSpec::from_name(name, 10).is_ok(), "{name}");
    }
    let e = ModelSpec::from_name("resnet21", 10)
        .unwrap_err()
        .to_string();
    assert!(e.contains("resnet21") && e.contains("resnet20"), "{e}");
}

pub fn config(batch: usize, mode: Mode) -> PlanConfig {
    PlanConfig {
        batch,
        src: (32, 32),
        input: (32, 32),
        pad: 4,
        augment: false,
        mean: CIFAR10_MEAN,
        std: CIFAR10_STD,
        mode,
        sgd: SgdConfig {
            lr: 0.05,
            momentum: 0.9,
            weight_decay: 1e-4,
            nesterov: false,
        },
    }
}

#[test]
fn training_steps_lower_the_loss_on_a_fixed_batch() {
    let gpu = gpu();
    let spec = ModelSpec::from_name("resnet20", 10).unwrap();
    let m = ModelState::new(&gpu, &spec, 1).unwrap();
    let n = 16;
    let plan = Plan::new(&gpu, &m, config(n, Mode::Train)).unwrap();
    // synthetic but learnable: the class decides the brightness of one channel
    let labels: Vec<u32> = (0..n as u32).map(|i| i % 10).collect();
    let noise = rand_vec(n * 3 * 1024, 3);
    let pixels: Vec<u8> = (0..n * 3 * 1024)
        .map(|i| {
            let (img, c) = (i / 3072, (i / 1024) % 3);
            let base = if c == (labels[img] % 3) as usize {
                40.0 + 20.0 * labels[img] as f32
            } else {
                100.0
            };
            (base + 30.0 * noise[i]).clamp(0.0, 255.0) as u8
        })
        .collect();
    plan.set_batch(&gpu, &pixels, &labels).unwrap();
    let mut losses = Vec::new();
    for step in 0..15 {
        plan.set_step(&gpu, step, 0.05);
        plan.submit(&gpu);
        losses.push(read(&gpu, &plan.loss.stats)[0]);
    }
    assert!(losses.iter().all(|l| l.is_finite()), "{losses:?}");
    assert!(
        losses[14] < 0.5 * losses[0],
        "loss did not fall: {losses:?}"
    );
    println!(
        "losses {losses:?}; dispatches per step {}; plan memory {} MB",
        plan.dispatches(),
        plan.bytes >> 20
    );
    // an eval plan over the same weights runs too
    let eval = Plan::new(&gpu, &m, config(n, Mode::Eval)).unwrap();
    eval.set_batch(&gpu, &pixels, &labels).unwrap();
    eval.submit(&gpu);
    let stats = read(&gpu, &eval.loss.stats);
    assert!(stats[0].is_finite() && stats[1] >= 0.0, "{stats:?}");
}

#[test]
fn imagenet_family_plans_build_and_step() {
    let gpu = gpu();
    for name in ["resnet18", "resnet50"] {
        let spec = ModelSpec::from_name(name, 10).unwrap();
        let m = ModelState::new(&gpu, &spec, 2).unwrap();
        let mut cfg = config(2, Mode::Train);
        cfg.src = (64, 64);
        cfg.input = (64, 64);
        let plan = Plan::new(&gpu, &m, cfg).unwrap();
        let px: Vec<u8> = (0..2 * 3 * 64 * 64).map(|i| (i * 7 % 251) as u8).collect();
        plan.set_batch(&gpu, &px, &[1, 7]).unwrap();
        plan.set_step(&gpu, 0, 0.01);
        plan.submit(&gpu);
        let l = read(&gpu, &plan.loss.stats)[0];
        assert!(l.is_finite() && l > 0.0, "{name}: loss {l}");
    }
}

#[test]
fn a_batch_beyond_the_device_limit_fails_at_plan_time_with_a_suggestion() {
    let gpu = gpu();
    let spec = ModelSpec::from_name("resnet18", 1000).unwrap();
    let m = ModelState::new(&gpu, &spec, 3).unwrap();
    let mut cfg = config(4096, Mode::Train);
    cfg.src = (224, 224);
    cfg.input = (224, 224);
    let e = Plan::new(&gpu, &m, cfg)
        .err()
        .expect("must not fit")
        .to_string();
    assert!(
        e.contains("max_storage_buffer_binding_size") && e.contains("try --batch-size"),
        "{e}"
    );
}
