//! Dynamic loss scaling as torch.amp.GradScaler (`ops::amp`, `PlanConfig::loss_scale`): in fp32
//! a power-of-two scale changes no weight; a step whose gradients hold an inf or NaN changes no
//! weight, momentum or running statistic and halves the scale; a fixed sequence of overflows
//! gives GradScaler's scale trace, step by step (its rules written out below from PyTorch's
//! documentation, not from our shader), and the trace torch.amp.GradScaler itself recorded
//! (tests/data/torch/gradscaler_trace.json).

mod common;
use common::*;
use resnet::cifar10::NORMALIZE;
use resnet::model::{ModelSpec, ModelState};
use resnet::ops::amp::{LossScale, ScalerState};
use resnet::ops::sgd::SgdConfig;
use resnet::plan::{Plan, PlanConfig};
use resnet::preprocess::Preprocess;
use resnet::Gpu;

const BATCH: usize = 4;

fn model(gpu: &Gpu) -> ModelState {
    ModelState::new(gpu, &ModelSpec::from_name("resnet8", 10).unwrap(), 3).unwrap()
}

/// A resnet8 training plan at batch 4, 16x16, on one fixed batch, scaled or not.
fn plan(gpu: &Gpu, m: &ModelState, loss_scale: Option<LossScale>) -> Plan {
    let mut cfg = PlanConfig::train(
        BATCH,
        (16, 16),
        SgdConfig::he2016(),
        Preprocess::normalize_only(NORMALIZE),
    );
    cfg.loss_scale = loss_scale;
    let plan = Plan::new(gpu, m, cfg).unwrap();
    let px: Vec<u8> = (0..BATCH * 3 * 16 * 16)
        .map(|i| (i * 37 % 251) as u8)
        .collect();
    let labels: Vec<u32> = (0..BATCH as u32).map(|i| i * 3 % 10).collect();
    plan.set_batch(gpu, &px, &labels).unwrap();
    plan
}

/// Parameters, momentum and running statistics.
fn weights(gpu: &Gpu, m: &ModelState) -> [Vec<f32>; 3] {
    [
        read(gpu, &m.params),
        read(gpu, &m.momentum),
        read(gpu, &m.running),
    ]
}

fn state(gpu: &Gpu, plan: &Plan) -> ScalerState {
    pollster::block_on(plan.loss_scale_state(gpu))
        .unwrap()
        .expect("a scaled plan")
}

/// One step; with `poison`, gradient 5 is set to it between the backward and the optimizer.
fn step(gpu: &Gpu, m: &ModelState, plan: &Plan, i: u32, poison: Option<f32>) {
    poisoned_step(gpu, (m, plan), (i, 0.1), poison.map(|bad| (5, bad)));
}

#[test]
fn a_power_of_two_loss_scale_changes_no_fp32_weight() {
    let gpu = gpu();
    let (plain, scaled) = (model(&gpu), model(&gpu));
    let p_plain = plan(&gpu, &plain, None);
    let p_scaled = plan(&gpu, &scaled, Some(LossScale::default()));
    assert!(pollster::block_on(p_plain.loss_scale_state(&gpu))
        .unwrap()
        .is_none());
    // the loss's gradient is scaled, and with it every gradient, exactly (a power of two)
    p_plain.submit_forward_backward(&gpu);
    p_scaled.submit_forward_backward(&gpu);
    let (g_plain, g_scaled) = (read(&gpu, &plain.grads), read(&gpu, &scaled.grads));
    assert!(g_plain.iter().any(|&g| g != 0.0));
    for (i, (a, b)) in g_plain.iter().zip(&g_scaled).enumerate() {
        assert_eq!(a * 65536.0, *b, "gradient {i}");
    }
    for i in 0..3 {
        step(&gpu, &plain, &p_plain, i, None);
        step(&gpu, &scaled, &p_scaled, i, None);
    }
    let (a, b) = (weights(&gpu, &plain), weights(&gpu, &scaled));
    for (what, (x, y)) in ["parameters", "momentum", "running statistics"]
        .iter()
        .zip(a.iter().zip(&b))
    {
        let worst = x
            .iter()
            .zip(y)
            .map(|(p, q)| (p - q).abs())
            .fold(0.0f32, f32::max);
        let norm = x.iter().map(|v| v.abs()).fold(0.0f32, f32::max);
        assert!(worst <= 1e-6 * norm, "{what}: {worst} against {norm}");
    }
    let same_bits = a == b;
    println!("3 steps scaled by 2^16 and unscaled: bit-identical {same_bits}");
    let s = state(&gpu, &p_scaled);
    assert_eq!((s.scale, s.growth_tracker, s.skipped), (65536.0, 3, 0));
}

#[test]
fn an_inf_or_nan_gradient_skips_the_step_and_halves_the_scale() {
    let gpu = gpu();
    let m = model(&gpu);
    let p = plan(&gpu, &m, Some(LossScale::default()));
    step(&gpu, &m, &p, 0, None);
    for (i, bad) in [(1, f32::INFINITY), (2, f32::NAN), (3, f32::NEG_INFINITY)] {
        let before = weights(&gpu, &m);
        step(&gpu, &m, &p, i, Some(bad));
        let after = weights(&gpu, &m);
        // the running statistics moved in the forward pass (as PyTorch's do); the rest did not
        assert!(before[0] == after[0], "parameters changed by step {i}");
        assert!(before[1] == after[1], "momentum changed by step {i}");
    }
    let s = state(&gpu, &p);
    assert_eq!((s.scale, s.growth_tracker, s.skipped), (8192.0, 0, 3));
    // a clean step after them updates the weights again
    let before = weights(&gpu, &m);
    step(&gpu, &m, &p, 4, None);
    assert!(weights(&gpu, &m)[0] != before[0]);
    assert_eq!(state(&gpu, &p).growth_tracker, 1);
}

/// GradScaler.update() as PyTorch documents it (`torch.amp.GradScaler`: "if inf/NaN gradients
/// occur ... scale is multiplied by backoff_factor ... if growth_interval unskipped iterations
/// occur consecutively, the scale is multiplied by growth_factor"), for one step.
fn gradscaler_update(s: &mut ScalerState, found_inf: bool, cfg: &LossScale) {
    if found_inf {
        s.scale *= cfg.backoff_factor;
        s.growth_tracker = 0;
        s.skipped += 1;
    } else if s.growth_tracker + 1 == cfg.growth_interval {
        let grown = s.scale * cfg.growth_factor;
        if grown.is_finite() {
            s.scale = grown;
        }
        s.growth_tracker = 0;
    } else {
        s.growth_tracker += 1;
    }
}

#[test]
fn a_fixed_sequence_of_overflows_gives_gradscalers_scale_trace() {
    // PyTorch 2.15's GradScaler on this sequence (make.py there)
    let torch: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/data/torch/gradscaler_trace.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let numbers = |key: &str| -> Vec<f64> {
        let v = torch[key].as_array().unwrap();
        v.iter().map(|x| x.as_f64().unwrap()).collect()
    };
    let cfg = LossScale {
        init_scale: torch["init_scale"].as_f64().unwrap() as f32,
        growth_interval: torch["growth_interval"].as_u64().unwrap() as u32,
        ..LossScale::default()
    };
    let overflows: Vec<bool> = numbers("overflows").iter().map(|&o| o == 1.0).collect();
    let gpu = gpu();
    let m = model(&gpu);
    let p = plan(&gpu, &m, Some(cfg));
    let mut want = ScalerState::new(&cfg);
    let mut trace = Vec::new();
    for (i, &overflow) in overflows.iter().enumerate() {
        step(&gpu, &m, &p, i as u32, overflow.then_some(f32::INFINITY));
        gradscaler_update(&mut want, overflow, &cfg);
        want.steps += 1; // our own count, beside GradScaler's state
        let got = state(&gpu, &p);
        assert_eq!(got, want, "after step {i}");
        trace.push(got.scale);
    }
    println!("scale trace: {trace:?}");
    let expected = [
        1024.0, 1024.0, 2048.0, 1024.0, 1024.0, 512.0, 256.0, 256.0, 256.0, 512.0, 512.0, 512.0,
        1024.0, 512.0, 512.0, 512.0,
    ];
    assert_eq!(
        trace, expected,
        "worked out by hand from GradScaler's rules"
    );
    let torchs: Vec<f32> = numbers("scales").iter().map(|&s| s as f32).collect();
    assert_eq!(trace, torchs, "torch.amp.GradScaler's own trace");

    // a resumed run continues from the state it is given
    let resumed = ScalerState {
        scale: 256.0,
        growth_tracker: 2,
        skipped: 7,
        ..ScalerState::new(&cfg)
    };
    p.set_loss_scale_state(&gpu, &resumed).unwrap();
    step(&gpu, &m, &p, 99, None);
    let s = state(&gpu, &p);
    assert_eq!((s.scale, s.growth_tracker, s.skipped), (512.0, 0, 7));
}

/// The state counts the steps and marks the one after which the scale fell below 1 (the run
/// stops there: even unscaled gradients overflow).
#[test]
fn the_step_that_drops_the_scale_below_one_is_recorded() {
    let gpu = gpu();
    let m = model(&gpu);
    let cfg = LossScale {
        init_scale: 4.0,
        ..LossScale::default()
    };
    let p = plan(&gpu, &m, Some(cfg));
    p.set_loss_scale_state(
        &gpu,
        &ScalerState {
            steps: 100, // a resumed run's iteration
            ..ScalerState::new(&cfg)
        },
    )
    .unwrap();
    step(&gpu, &m, &p, 0, None);
    // 4 -> 2 -> 1 -> 0.5: below 1 after the fourth of these steps, the run's 104th
    for i in 1..=3 {
        step(&gpu, &m, &p, i, Some(f32::INFINITY));
        let s = state(&gpu, &p);
        assert_eq!(s.steps, 100 + i + 1);
        assert_eq!(s.below_one_at, (i == 3).then_some(104), "{s:?}");
    }
    step(&gpu, &m, &p, 4, Some(f32::INFINITY));
    let s = state(&gpu, &p);
    assert_eq!(
        (s.scale, s.below_one_at),
        (0.25, Some(104)),
        "the first time is kept"
    );
}
