//! Models by name: parameter counts equal PyTorch's (torchvision / akamaster), plans build for
//! both families, and a training step of the plan runs and lowers the loss on a fixed batch.

mod common;
use common::*;
use resnet::cifar10;
use resnet::model::{ModelSpec, ModelState, MODEL_NAMES};
use resnet::ops::sgd::SgdConfig;
use resnet::plan::{Mode, Plan, PlanConfig};
use resnet::preprocess::Preprocess;

#[test]
fn parameter_counts_equal_pytorch() {
    // torchvision.models.resnet18 ... resnext101_64x4d (1000 classes); akamaster resnet20/56/110 (10 classes)
    for (name, classes, count) in [
        ("resnet20", 10, 269_722),
        ("resnet56", 10, 853_018),
        ("resnet110", 10, 1_727_962),
        ("resnet18", 1000, 11_689_512),
        ("resnet34", 1000, 21_797_672),
        ("resnet50", 1000, 25_557_032),
        ("resnet101", 1000, 44_549_160),
        ("resnet152", 1000, 60_192_808),
        // torchvision's Wide_ResNet50_2_Weights / Wide_ResNet101_2_Weights meta["num_params"]
        ("wide_resnet50_2", 1000, 68_883_240),
        ("wide_resnet101_2", 1000, 126_886_696),
        // torchvision's ResNeXt50_32X4D_Weights / ResNeXt101_32X8D_Weights /
        // ResNeXt101_64X4D_Weights meta["num_params"]
        ("resnext50_32x4d", 1000, 25_028_904),
        ("resnext101_32x8d", 1000, 88_791_336),
        ("resnext101_64x4d", 1000, 83_455_272),
    ] {
        assert_eq!(
            ModelSpec::from_name(name, classes).unwrap().param_count(),
            count,
            "{name}"
        );
    }
    // The CIFAR family by hand from the paper's layout (n blocks of two 3x3 convs per stage,
    // widths 16/32/64, BN after every conv, 64->10 fc): 3*16*9 + 32 (stem), per stage 2n convs
    // plus their BN, the first conv of stages 2 and 3 from the narrower width. It gives the
    // published counts above (n = 3, 9, 18) and the rest; plain nets have the same layers
    // (option-A shortcuts carry no parameters).
    let cifar = |n: usize| {
        let stage = |cin: usize, c: usize| cin * c * 9 + (2 * n - 1) * c * c * 9 + 2 * n * 2 * c;
        3 * 16 * 9 + 32 + stage(16, 16) + stage(16, 32) + stage(32, 64) + 64 * 10 + 10
    };
    assert_eq!(cifar(3), 269_722);
    for n in [3, 5, 7, 9, 18, 200] {
        for kind in ["resnet", "plain"] {
            let name = format!("{kind}{}", 6 * n + 2);
            if kind == "plain" && n == 200 {
                continue; // there is no plain1202
            }
            assert_eq!(
                ModelSpec::from_name(&name, 10).unwrap().param_count(),
                cifar(n),
                "{name}"
            );
        }
    }
    for name in MODEL_NAMES {
        assert!(ModelSpec::from_name(name, 10).is_ok(), "{name}");
    }
    let e = ModelSpec::from_name("resnet21", 10)
        .unwrap_err()
        .to_string();
    assert!(e.contains("resnet21") && e.contains("resnet20"), "{e}");
}

pub fn config(batch: usize, mode: Mode) -> PlanConfig {
    let sgd = SgdConfig {
        lr: 0.05,
        ..SgdConfig::he2016()
    };
    let fixed = Preprocess::normalize_only(cifar10::NORMALIZE);
    match mode {
        Mode::Train => PlanConfig::train(batch, (32, 32), sgd, fixed),
        Mode::Eval => PlanConfig::eval(batch, (32, 32), cifar10::NORMALIZE),
    }
}

/// `zero_init_residual` zeroes what torchvision's `zero_init_residual=True` zeroes, by its rule
/// on state_dict names: the weight of each residual block's last BatchNorm (`bn2` of a basic
/// block, `bn3` of a bottleneck), never the stem's or a projection shortcut's; everything else
/// is the same as without it.
#[test]
fn zero_init_residual_zeroes_each_blocks_last_batchnorm_weight_as_torchvision() {
    let gpu = gpu();
    for (name, last, blocks) in [
        ("resnet20", "bn2", 9),
        ("resnet18", "bn2", 8),
        ("resnet50", "bn3", 16),
    ] {
        let spec = ModelSpec::from_name(name, 10).unwrap();
        let usual = ModelState::new(&gpu, &spec, 3).unwrap();
        let zeroed = ModelState::new(&gpu, &spec, 3).unwrap();
        zeroed.zero_init_residual(&gpu).unwrap();
        let usual = pollster::block_on(usual.state_dict(&gpu)).unwrap();
        let zeroed = pollster::block_on(zeroed.state_dict(&gpu)).unwrap();
        let mut zeroes = 0;
        for (u, z) in usual.iter().zip(&zeroed) {
            assert_eq!(u.name, z.name);
            let parts: Vec<&str> = u.name.split('.').collect();
            if parts.len() == 4 && parts[0].starts_with("layer") && parts[2..] == [last, "weight"] {
                assert!(
                    u.as_f32().unwrap().iter().all(|&v| v == 1.0),
                    "{name} {}",
                    u.name
                );
                assert!(
                    z.as_f32().unwrap().iter().all(|&v| v == 0.0),
                    "{name} {}",
                    z.name
                );
                zeroes += 1;
            } else {
                assert_eq!(
                    (u.as_f32(), u.as_i64()),
                    (z.as_f32(), z.as_i64()),
                    "{name} {}",
                    u.name
                );
            }
        }
        assert_eq!(zeroes, blocks, "{name}: one BatchNorm per residual block");
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
        plan.set_step(&gpu, step, 0.05).unwrap();
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
        plan.set_step(&gpu, 0, 0.01).unwrap();
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
    // the input (2.5 GB) is over the largest buffer, the stem's output over one binding too
    let limit_named =
        e.contains("max_storage_buffer_binding_size") || e.contains("max_buffer_size");
    assert!(limit_named && e.contains("try `batch_size`"), "{e}");
    // the suggestion is a batch that builds (in eval mode, to keep the test light), and twice it
    // would not fit the same binding limit (the stem output, 64x112x112 floats per image, is the
    // largest buffer)
    let fits: usize = e
        .rsplit("try `batch_size` ")
        .next()
        .and_then(|t| t.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|t| t.parse().ok())
        .expect("a number after 'try `batch_size`'");
    let per_image = 64 * 112 * 112 * 4u64;
    let limit = gpu.limits.max_storage_buffer_binding_size;
    assert!(
        fits as u64 * per_image <= limit,
        "suggested {fits} does not fit {limit}"
    );
    assert!(
        2 * fits as u64 * per_image > limit,
        "suggested {fits} is needlessly small"
    );
    let mut cfg = config(fits, Mode::Eval);
    cfg.src = (224, 224);
    cfg.input = (224, 224);
    Plan::new(&gpu, &m, cfg).expect("the suggested batch size builds");
}

/// ResNet-20 in eval mode, composed on the CPU from the f64 reference ops and the state_dict by
/// PyTorch name (akamaster's definition: option-A shortcut = x[:, :, ::2, ::2] zero-padded by
/// planes/4 channels on each side), gives the same logits as the GPU plan. This checks the
/// parameter names and layouts a PyTorch user would load, independent of our own graph code.
#[test]
fn resnet20_logits_match_a_cpu_forward_from_the_state_dict() {
    use resnet::reference::*;
    use std::collections::HashMap;
    let gpu = gpu();
    let spec = ModelSpec::from_name("resnet20", 10).unwrap();
    let m = ModelState::new(&gpu, &spec, 9).unwrap();
    // make BN running statistics and affine parameters non-trivial: a few training steps
    let n = 4;
    let train = Plan::new(&gpu, &m, config(n, Mode::Train)).unwrap();
    let px: Vec<u8> = rand_vec(n * 3 * 1024, 21)
        .iter()
        .map(|v| ((v + 1.0) * 127.0) as u8)
        .collect();
    let labels = [3u32, 1, 4, 1];
    train.set_batch(&gpu, &px, &labels).unwrap();
    for s in 0..3 {
        train.set_step(&gpu, s, 0.05).unwrap();
        train.submit(&gpu);
    }
    let eval = Plan::new(&gpu, &m, config(n, Mode::Eval)).unwrap();
    eval.set_batch(&gpu, &px, &labels).unwrap();
    eval.submit(&gpu);
    let logits = read(&gpu, &eval.logits);

    let sd: HashMap<String, Vec<f64>> = pollster::block_on(m.state_dict(&gpu))
        .unwrap()
        .into_iter()
        .filter_map(|t| match t.data {
            resnet::checkpoint::TensorData::F32(v) => Some((t.name, f64s(&v))),
            _ => None,
        })
        .collect();
    let w = |k: &str| &sd[k];
    let conv = |x: &[f64], c: usize, h: usize, k: usize, stride: usize, name: &str| {
        let g = Conv {
            n,
            c,
            h,
            w: h,
            k,
            r: 3,
            s: 3,
            stride,
            pad: 1,
            groups: 1,
        };
        (
            conv_forward(&g, x, w(&format!("{name}.weight")), None),
            g.p(),
        )
    };
    let bn = |x: &[f64], c: usize, hw: usize, name: &str, res: Option<&[f64]>| {
        bn_apply(
            n,
            c,
            hw,
            x,
            w(&format!("{name}.weight")),
            w(&format!("{name}.bias")),
            w(&format!("{name}.running_mean")),
            w(&format!("{name}.running_var")),
            res,
            true,
        )
    };
    // input normalisation as torchvision's ToTensor + Normalize
    let x: Vec<f64> = (0..n * 3 * 1024)
        .map(|i| {
            let c = (i / 1024) % 3;
            let norm = cifar10::NORMALIZE;
            (px[i] as f64 / 255.0 - norm.mean[c] as f64) / norm.std[c] as f64
        })
        .collect();
    let (y, _) = conv(&x, 3, 32, 16, 1, "conv1");
    let mut a = bn(&y, 16, 1024, "bn1", None);
    let (mut c, mut h) = (16, 32);
    for (stage, planes) in [(1, 16), (2, 32), (3, 64)] {
        for i in 0..3 {
            let stride = if stage > 1 && i == 0 { 2 } else { 1 };
            let name = format!("layer{stage}.{i}");
            let (y1, h1) = conv(&a, c, h, planes, stride, &format!("{name}.conv1"));
            let a1 = bn(&y1, planes, h1 * h1, &format!("{name}.bn1"), None);
            let (y2, _) = conv(&a1, planes, h1, planes, 1, &format!("{name}.conv2"));
            let sc = if stride != 1 || c != planes {
                shortcut_a(n, c, h, h, planes, stride, &a)
            } else {
                a.clone()
            };
            a = bn(&y2, planes, h1 * h1, &format!("{name}.bn2"), Some(&sc));
            (c, h) = (planes, h1);
        }
    }
    let feat = avgpool(n, 64, h * h, &a);
    let want = linear(n, 64, 10, &feat, w("fc.weight"), w("fc.bias"));
    assert_close(
        "resnet20 eval logits vs CPU forward from the state_dict",
        &logits,
        &want,
        1e-4,
    );
}
