//! `resnet bench --profile`: every kernel of a step timed and given a kind of op, the
//! convolutions' floating-point work against independent counts (the layer-by-layer sum of the
//! paper's ResNet-20, torchvision's published GFLOPS of ResNet-18 and -50), and its bad input.

mod common;
use common::cli::{fails_with, resnet};
use common::gpu;
use resnet::cifar10::NORMALIZE;
use resnet::model::{ModelSpec, ModelState};
use resnet::ops::sgd::SgdConfig;
use resnet::ops::OpKind;
use resnet::plan::{Plan, PlanConfig};
use resnet::preprocess::Preprocess;
use std::process::Command;

/// ResNet-20's convolution multiply-adds per 32x32 image, layer by layer: the stem (3 -> 16),
/// six 16 -> 16 convolutions at 32x32, then per stage one strided convolution and five more at
/// 16x16 (32 channels) and 8x8 (64 channels), each 3x3.
const RESNET20_CONV_MACS: u64 = 16 * 32 * 32 * 27
    + 6 * 16 * 32 * 32 * 16 * 9
    + 32 * 16 * 16 * 16 * 9
    + 5 * 32 * 16 * 16 * 32 * 9
    + 64 * 8 * 8 * 32 * 9
    + 5 * 64 * 8 * 8 * 64 * 9;
/// Of them, the stem's: its backward to the input is not computed (the input needs none).
const RESNET20_STEM_MACS: u64 = 16 * 32 * 32 * 27;

#[test]
fn a_profiled_step_times_every_kernel_and_counts_the_convolutions_work() {
    assert_eq!(RESNET20_CONV_MACS, 40_550_400, "the commonly cited 40.55M");
    let gpu = gpu();
    let m = ModelState::new(&gpu, &ModelSpec::from_name("resnet20", 10).unwrap(), 0).unwrap();
    let batch = 2u64;
    let cfg = PlanConfig::train(
        batch as usize,
        (32, 32),
        SgdConfig::he2016(),
        Preprocess::pad_crop_flip(NORMALIZE),
    );
    let plan = Plan::new(&gpu, &m, cfg).unwrap();
    let p = pollster::block_on(plan.profile(&gpu))
        .unwrap()
        .expect("lavapipe has timestamp queries");
    assert_eq!(p.kernels.len(), plan.dispatches());
    let others: Vec<_> = p
        .kernels
        .iter()
        .filter(|k| k.kind == OpKind::Other)
        .collect();
    assert!(others.is_empty(), "kernels of no kind: {others:?}");
    assert!(p.kernels.iter().all(|k| k.ms.is_finite() && k.ms >= 0.0));
    assert!(p.total_ms() > 0.0);

    let rows = p.by_kind();
    let row = |kind| rows.iter().find(|r| r.kind == kind).unwrap();
    let flops = |kind| row(kind).flops;
    let per_batch = 2 * batch;
    assert_eq!(flops(OpKind::ConvForward), per_batch * RESNET20_CONV_MACS);
    assert_eq!(
        flops(OpKind::ConvBackwardWeight),
        per_batch * RESNET20_CONV_MACS
    );
    assert_eq!(
        flops(OpKind::ConvBackwardInput),
        per_batch * (RESNET20_CONV_MACS - RESNET20_STEM_MACS)
    );
    // the classifier's forward, and its backward to the weights and to the input: 64 x 10 each
    assert_eq!(flops(OpKind::Linear), 3 * per_batch * 64 * 10);
    for kind in [OpKind::BatchNorm, OpKind::Optimizer, OpKind::Loss] {
        assert_eq!(flops(kind), 0, "{kind:?}");
    }
    // SGD binds parameters, gradients and momentum: 3 x 4 bytes per parameter (269,722), and
    // the few floats that align each layer's slice of the flat buffers
    let sgd = row(OpKind::Optimizer).bytes;
    assert!(
        (12 * 269_722..12 * (269_722 + 1024)).contains(&sgd),
        "{sgd}"
    );
    let summed: f64 = rows.iter().map(|r| r.ms).sum();
    assert!((summed - p.total_ms()).abs() < 1e-9 * p.total_ms().max(1.0));
    assert_eq!(
        rows.iter().map(|r| r.dispatches).sum::<usize>(),
        p.kernels.len()
    );
}

/// Multiply-adds of the forward convolutions and the classifier per image at 224x224, against
/// torchvision's published "GFLOPS" (which count multiply-adds): 1.81 for ResNet-18, 4.09 for
/// ResNet-50.
#[test]
fn imagenet_models_count_torchvisions_published_work() {
    let gpu = gpu();
    for (name, published) in [("resnet18", 1.81e9), ("resnet50", 4.09e9)] {
        let m = ModelState::new(&gpu, &ModelSpec::from_name(name, 1000).unwrap(), 0).unwrap();
        let plan = Plan::new(&gpu, &m, PlanConfig::eval(1, (224, 224), NORMALIZE)).unwrap();
        let macs: u64 = plan
            .stages
            .iter()
            .flat_map(|s| &s.kernels)
            .filter(|k| matches!(OpKind::of(k.op), OpKind::ConvForward | OpKind::Linear))
            .map(|k| k.flops / 2)
            .sum();
        let rel = (macs as f64 - published).abs() / published;
        assert!(
            rel < 0.005,
            "{name}: {macs} multiply-adds against {published}"
        );
    }
}

fn json(out: &std::process::Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

const SMALL: [&str; 6] = ["bench", "--batch-size", "2", "--steps", "1", "--profile"];

#[test]
fn bench_profile_reports_every_kind_against_the_given_peaks() {
    let mut args = SMALL.to_vec();
    args.extend(["--json", "--peak-tflops", "2", "--peak-gbs", "50"]);
    let v = json(&resnet(&args));
    let p = &v["profile"];
    assert_eq!(p["peak_tflops"], 2.0);
    assert_eq!(p["peak_gbs"], 50.0);
    let kinds: Vec<&str> = p["kinds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kind"].as_str().unwrap())
        .collect();
    let want = [
        "input",
        "conv forward",
        "conv backward (input)",
        "conv backward (weight)",
        "batchnorm",
        "elementwise",
        "pooling",
        "linear",
        "loss",
        "optimizer",
    ];
    assert_eq!(kinds, want);
    let shares: f64 = p["kinds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["share"].as_f64().unwrap())
        .sum();
    assert!((shares - 1.0).abs() < 1e-3, "{p}");
    let conv = &p["kinds"][1];
    let want_tflops = conv["flops"].as_f64().unwrap() / (conv["ms"].as_f64().unwrap() * 1e9);
    let got = conv["tflops"].as_f64().unwrap();
    // from the rounded figures of the JSON
    assert!((got - want_tflops).abs() <= 1e-3 * want_tflops, "{conv}");

    let text = resnet(&SMALL);
    let out = String::from_utf8_lossy(&text.stdout);
    assert!(text.status.success());
    for needle in ["of peak", "conv backward (weight)", "slowest kernels:"] {
        assert!(out.contains(needle), "no '{needle}' in {out}");
    }
}

#[test]
fn bench_profile_bad_input() {
    for (flag, value) in [
        ("--peak-tflops", "0"),
        ("--peak-gbs", "-5"),
        ("--peak-tflops", "nan"),
    ] {
        let mut args = SMALL.to_vec();
        args.extend([flag, value]);
        fails_with(&resnet(&args), &[flag, "positive"]);
    }
    fails_with(
        &resnet(&["bench", "--peak-tflops", "3"]),
        &["--peak-tflops", "--profile"],
    );
    // an adapter without timestamp queries: one note, and the wall-clock figures
    let cache = tempfile::tempdir().unwrap();
    let run = |timestamps: &str, json: bool| {
        let mut args = SMALL.to_vec();
        if json {
            args.push("--json");
        }
        Command::new(env!("CARGO_BIN_EXE_resnet"))
            .args(&args)
            .env("RESNET_CACHE", cache.path())
            .env("RESNET_KERNELS", "register")
            .env("RESNET_TIMESTAMPS", timestamps)
            .output()
            .unwrap()
    };
    let out = run("0", false);
    let err = String::from_utf8_lossy(&out.stderr);
    let notes: Vec<_> = err.lines().filter(|l| l.contains("timestamp")).collect();
    assert_eq!(notes.len(), 1, "{err}");
    assert!(notes[0].contains("no timestamp queries"), "{err}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("training:"));
    assert!(json(&run("0", true))["profile"].is_null());
    fails_with(
        &run("sometimes", false),
        &["RESNET_TIMESTAMPS", "sometimes"],
    );
}
