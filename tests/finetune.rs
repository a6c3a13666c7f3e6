//! Fine-tuning: frozen layers keep their weights and BatchNorm statistics, --lr-backbone scales
//! the body's updates, --bn-eval trains on running statistics, pretrained weights load by
//! torchvision's names with a new head, and the state_dict keys are torchvision's own.

mod common;
use common::*;
use resnet::checkpoint::{Checkpoint, NamedTensor};
use resnet::cifar10;
use resnet::model::{ModelSpec, ModelState};
use resnet::ops::sgd::SgdConfig;
use resnet::plan::{FineTune, Mode, Plan, PlanConfig};
use resnet::preprocess::Preprocess;

const N: usize = 8;

fn plan(gpu: &resnet::gpu::Gpu, m: &ModelState, mode: Mode, tune: FineTune) -> Plan {
    let sgd = SgdConfig {
        lr: 0.1,
        ..SgdConfig::he2016()
    };
    let fixed = Preprocess::normalize_only(cifar10::NORMALIZE);
    let mut cfg = match mode {
        Mode::Train => PlanConfig::train(N, (32, 32), sgd, fixed),
        Mode::Eval => PlanConfig::eval(N, (32, 32), cifar10::NORMALIZE),
    };
    cfg.fine_tune = tune;
    Plan::new(gpu, m, cfg).unwrap()
}

fn batch() -> (Vec<u8>, Vec<u32>) {
    let px = rand_vec(N * 3 * 1024, 9)
        .iter()
        .map(|v| (128.0 + 100.0 * v) as u8)
        .collect();
    (px, (0..N as u32).map(|i| i % 10).collect())
}

/// (parameters, running statistics) after one training step of a fresh resnet20 with `tune`.
fn one_step(tune: FineTune) -> (ModelState, Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>) {
    let gpu = gpu();
    let spec = ModelSpec::from_name("resnet20", 10).unwrap();
    let m = ModelState::new(&gpu, &spec, 3).unwrap();
    let (p0, r0) = (read(&gpu, &m.params), read(&gpu, &m.running));
    let p = plan(&gpu, &m, Mode::Train, tune);
    let (px, labels) = batch();
    p.set_batch(&gpu, &px, &labels).unwrap();
    p.set_step(&gpu, 0, 0.1).unwrap();
    p.submit(&gpu);
    let (p1, r1) = (read(&gpu, &m.params), read(&gpu, &m.running));
    (m, p0, r0, p1, r1)
}

#[test]
fn frozen_layers_keep_their_weights_and_batchnorm_statistics() {
    let tune = FineTune {
        frozen: vec!["conv1".into(), "bn1".into(), "layer1".into()],
        ..FineTune::default()
    };
    let (m, p0, r0, p1, r1) = one_step(tune.clone());
    let (mut fixed, mut moved) = (0, 0);
    for r in &m.layout.params {
        let range = r.offset..r.offset + r.len();
        let same = p0[range.clone()] == p1[range];
        assert_eq!(
            same,
            tune.is_frozen(&r.name),
            "{} changed: {}",
            r.name,
            !same
        );
        if same {
            fixed += 1
        } else {
            moved += 1
        }
    }
    for r in &m.layout.running {
        let range = r.offset..r.offset + 2 * r.shape[1];
        let same = r0[range.clone()] == r1[range];
        assert_eq!(
            same,
            tune.is_frozen(&r.name),
            "{} statistics changed: {}",
            r.name,
            !same
        );
    }
    // stem + layer1's 3 blocks x 2 (conv, bn) = 14 fixed regions
    assert_eq!(fixed, 14, "{moved} moved");
}

#[test]
fn the_backbone_multiplier_scales_only_the_bodys_first_update() {
    // the first SGD step is p -= lr * (g + wd p): linear in lr for the same gradients
    let (m, p0, _, full, _) = one_step(FineTune::default());
    let (_, _, _, half, _) = one_step(FineTune {
        backbone_lr: 0.5,
        ..FineTune::default()
    });
    for r in &m.layout.params {
        let range = r.offset..r.offset + r.len();
        let scale = if r.name == "fc" { 1.0 } else { 0.5 };
        let want: Vec<f64> = range
            .clone()
            .map(|i| (p0[i] + scale * (full[i] - p0[i])) as f64)
            .collect();
        assert_close(&r.name, &half[range], &want, 1e-5);
    }
}

#[test]
fn bn_eval_trains_on_the_running_statistics() {
    let gpu = gpu();
    let spec = ModelSpec::from_name("resnet20", 10).unwrap();
    let m = ModelState::new(&gpu, &spec, 4).unwrap();
    // running statistics far from the batch's, so that the two modes differ
    let r: Vec<f32> = (0..m.layout.running_len)
        .map(|i| if (i / 16) % 2 == 0 { 0.3 } else { 2.0 })
        .collect();
    gpu.write(&m.running, &r).unwrap();
    let (px, labels) = batch();
    let eval = plan(&gpu, &m, Mode::Eval, FineTune::default());
    eval.set_batch(&gpu, &px, &labels).unwrap();
    eval.submit(&gpu);
    let eval_logits = read(&gpu, &eval.logits);
    let tune = FineTune {
        bn_eval: true,
        ..FineTune::default()
    };
    let train = plan(&gpu, &m, Mode::Train, tune);
    train.set_batch(&gpu, &px, &labels).unwrap();
    train.set_step(&gpu, 0, 0.1).unwrap();
    train.submit(&gpu);
    // the training forward ran before the update: the eval-mode network's logits
    assert_close(
        "bn-eval training logits",
        &read(&gpu, &train.logits),
        &f64s(&eval_logits),
        1e-5,
    );
    assert_eq!(
        read(&gpu, &m.running),
        r,
        "running statistics must stay fixed"
    );
    let batch_mode = plan(&gpu, &m, Mode::Train, FineTune::default());
    batch_mode.set_batch(&gpu, &px, &labels).unwrap();
    batch_mode.submit_forward_backward(&gpu);
    let differ = read(&gpu, &batch_mode.logits) != read(&gpu, &train.logits);
    assert!(
        differ,
        "batch statistics must give other logits (the test would prove nothing)"
    );
}

/// torchvision's `resnet18().state_dict().keys()` and `resnet50()`'s, in order (printed by
/// torchvision, kept in tests/data/).
fn torchvision_keys(name: &str) -> Vec<String> {
    let path = format!(
        "{}/tests/data/torchvision_{name}_keys.txt",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(String::from)
        .collect()
}

#[test]
fn state_dict_keys_are_torchvisions_in_its_order() {
    let gpu = gpu();
    for (name, count) in [("resnet18", 122), ("resnet50", 320)] {
        let want = torchvision_keys(name);
        assert_eq!(want.len(), count, "{name} key list");
        let m = ModelState::new(&gpu, &ModelSpec::from_name(name, 1000).unwrap(), 0).unwrap();
        let sd = pollster::block_on(m.state_dict(&gpu)).unwrap();
        let got: Vec<String> = sd.into_iter().map(|t| t.name).collect();
        let (mut g, mut w) = (got.clone(), want.clone());
        g.sort();
        w.sort();
        assert_eq!(g, w, "{name}: the same keys");
        // torchvision's order: each module's parameters then its buffers, modules in order
        let params: Vec<&String> = want
            .iter()
            .filter(|k| !k.contains("running_") && !k.contains("num_batches"))
            .collect();
        let ours: Vec<&String> = got
            .iter()
            .filter(|k| !k.contains("running_") && !k.contains("num_batches"))
            .collect();
        assert_eq!(ours, params, "{name}: parameters in torchvision's order");
    }
}

/// torchvision's `wide_resnet50_2().state_dict()` holds resnet50's keys in resnet50's order, with
/// every bottleneck's inner convolutions and BatchNorms twice as wide: each key's shape as
/// torchvision prints it (tests/data/torchvision_wide_resnet50_2_shapes.txt).
#[test]
fn wide_resnet50_2_state_dict_has_torchvisions_keys_and_shapes() {
    let want = same_keys_and_shapes_as_torchvision("wide_resnet50_2");
    let inner = want.iter().find(|(k, _)| k == "layer4.2.conv2.weight");
    assert_eq!(inner.unwrap().1, [1024, 1024, 3, 3], "twice resnet50's 512");
}

/// torchvision's `resnext50_32x4d().state_dict()`: resnet50's keys, each bottleneck's grouped 3x3
/// weight [width, width / 32, 3, 3] (tests/data/torchvision_resnext50_32x4d_shapes.txt).
#[test]
fn resnext50_32x4d_state_dict_has_torchvisions_keys_and_shapes() {
    let want = same_keys_and_shapes_as_torchvision("resnext50_32x4d");
    let grouped = want.iter().find(|(k, _)| k == "layer1.0.conv2.weight");
    assert_eq!(
        grouped.unwrap().1,
        [128, 4, 3, 3],
        "32 groups of 4 channels"
    );
}

/// Asserts that `model`'s state_dict holds the keys and shapes of
/// tests/data/torchvision_{model}_shapes.txt (resnet50's keys, in its order); returns them.
fn same_keys_and_shapes_as_torchvision(model: &str) -> Vec<(String, Vec<usize>)> {
    let path = format!(
        "{}/tests/data/torchvision_{model}_shapes.txt",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut want: Vec<(String, Vec<usize>)> = std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (name, shape) = l.split_once(' ').unwrap_or((l, ""));
            let dims = shape.split(',').filter(|d| !d.is_empty());
            (name.to_string(), dims.map(|d| d.parse().unwrap()).collect())
        })
        .collect();
    assert_eq!(want.len(), 320, "{model} key list");
    let keys: Vec<&String> = want.iter().map(|(k, _)| k).collect();
    let resnet50 = torchvision_keys("resnet50");
    assert_eq!(keys, resnet50.iter().collect::<Vec<_>>(), "resnet50's keys");
    let gpu = gpu();
    let spec = ModelSpec::from_name(model, 1000).unwrap();
    let m = ModelState::new(&gpu, &spec, 0).unwrap();
    let sd = pollster::block_on(m.state_dict(&gpu)).unwrap();
    let mut got: Vec<(String, Vec<usize>)> = sd.into_iter().map(|t| (t.name, t.shape)).collect();
    got.sort();
    let in_order = want.clone();
    want.sort();
    assert_eq!(got, want, "{model}");
    in_order
}

fn tensors_of(gpu: &resnet::gpu::Gpu, name: &str, classes: usize, seed: u64) -> Checkpoint {
    let m = ModelState::new(gpu, &ModelSpec::from_name(name, classes).unwrap(), seed).unwrap();
    Checkpoint {
        tensors: pollster::block_on(m.state_dict(gpu)).unwrap(),
        metadata: Default::default(),
    }
}

#[test]
fn pretrained_weights_load_with_a_fresh_head_for_other_classes() {
    let gpu = gpu();
    let imagenet = tensors_of(&gpu, "resnet18", 1000, 1);
    let m = ModelState::new(&gpu, &ModelSpec::from_name("resnet18", 5).unwrap(), 2).unwrap();
    let fresh = pollster::block_on(m.state_dict(&gpu)).unwrap();
    let got = pollster::block_on(m.load_pretrained(&gpu, &imagenet, "test", false)).unwrap();
    assert_eq!(got.new_head, Some((1000, 5)));
    let after = pollster::block_on(m.state_dict(&gpu)).unwrap();
    for t in &after {
        let want: &NamedTensor = if t.name.starts_with("fc.") {
            fresh.iter().find(|f| f.name == t.name).unwrap()
        } else {
            imagenet.get(&t.name).unwrap()
        };
        if !t.name.ends_with("num_batches_tracked") {
            assert_eq!(t.as_f32(), want.as_f32(), "{}", t.name);
        }
    }
    // DistributedDataParallel's `module.` prefix is accepted
    let mut ddp = imagenet.clone();
    ddp.tensors
        .iter_mut()
        .for_each(|t| t.name = format!("module.{}", t.name));
    pollster::block_on(m.load_pretrained(&gpu, &ddp, "ddp", false)).unwrap();
}

#[test]
fn pretrained_mismatches_are_listed_in_one_error() {
    let gpu = gpu();
    let m = ModelState::new(&gpu, &ModelSpec::from_name("resnet18", 10).unwrap(), 2).unwrap();
    let err = |ck: &Checkpoint| {
        let e =
            pollster::block_on(m.load_pretrained(&gpu, ck, "w.safetensors", false)).unwrap_err();
        let msg = e.to_string();
        assert!(!msg.contains('\n'), "{msg}");
        assert!(
            msg.starts_with("w.safetensors: does not fit a resnet18"),
            "{msg}"
        );
        msg
    };
    let mut missing = tensors_of(&gpu, "resnet18", 10, 1);
    missing
        .tensors
        .retain(|t| !t.name.starts_with("layer2.0.downsample"));
    let msg = err(&missing);
    assert!(
        msg.contains("missing") && msg.contains("layer2.0.downsample.0.weight"),
        "{msg}"
    );
    let mut extra = tensors_of(&gpu, "resnet18", 10, 1);
    extra
        .tensors
        .push(NamedTensor::f32("head.proj.weight", &[2], vec![0.0; 2]));
    let msg = err(&extra);
    assert!(msg.contains("1 unexpected (head.proj.weight)"), "{msg}");
    let resnet34 = tensors_of(&gpu, "resnet34", 10, 1);
    let msg = err(&resnet34);
    assert!(
        // the 8 blocks resnet34 has beyond resnet18, 10 tensors each (num_batches_tracked aside)
        msg.contains("80 unexpected (layer1.2.bn1.bias"),
        "{msg}"
    );
    let resnet50 = tensors_of(&gpu, "resnet50", 10, 1);
    let msg = err(&resnet50);
    assert!(
        msg.contains("of the wrong shape") && msg.contains("layer1.0.conv1.weight"),
        "{msg}"
    );
}

#[test]
fn a_head_trained_on_other_classes_of_the_same_number_is_replaced_when_asked() {
    let gpu = gpu();
    let other = tensors_of(&gpu, "resnet18", 5, 1);
    let m = ModelState::new(&gpu, &ModelSpec::from_name("resnet18", 5).unwrap(), 2).unwrap();
    let fresh = pollster::block_on(m.state_dict(&gpu)).unwrap();
    let got = pollster::block_on(m.load_pretrained(&gpu, &other, "t", true)).unwrap();
    assert_eq!(got.new_head, Some((5, 5)));
    let after = pollster::block_on(m.state_dict(&gpu)).unwrap();
    let find = |v: &[NamedTensor], n: &str| v.iter().find(|t| t.name == n).unwrap().clone();
    assert_eq!(find(&after, "fc.weight"), find(&fresh, "fc.weight"));
    assert_eq!(
        find(&after, "layer4.1.conv2.weight"),
        *other.get("layer4.1.conv2.weight").unwrap()
    );
    // without the flag the same-sized head is taken over
    pollster::block_on(m.load_pretrained(&gpu, &other, "t", false)).unwrap();
    let after = pollster::block_on(m.state_dict(&gpu)).unwrap();
    assert_eq!(find(&after, "fc.weight"), *other.get("fc.weight").unwrap());
}

#[test]
fn training_only_the_head_runs_no_backward_below_it() {
    let gpu = gpu();
    let spec = ModelSpec::from_name("resnet20", 10).unwrap();
    let m = ModelState::new(&gpu, &spec, 6).unwrap();
    let p0 = read(&gpu, &m.params);
    let frozen: Vec<String> = ["conv1", "bn1", "layer1", "layer2", "layer3"]
        .map(String::from)
        .to_vec();
    let head_only = plan(
        &gpu,
        &m,
        Mode::Train,
        FineTune {
            frozen,
            ..FineTune::default()
        },
    );
    let full = plan(&gpu, &m, Mode::Train, FineTune::default());
    // forward 1 + 9 blocks + head, then only the head's backward and the optimizer
    assert!(
        head_only.dispatches() * 2 < full.dispatches(),
        "{} vs {} dispatches",
        head_only.dispatches(),
        full.dispatches()
    );
    let (px, labels) = batch();
    head_only.set_batch(&gpu, &px, &labels).unwrap();
    head_only.set_step(&gpu, 0, 0.1).unwrap();
    head_only.submit(&gpu);
    let p1 = read(&gpu, &m.params);
    for r in &m.layout.params {
        let range = r.offset..r.offset + r.len();
        assert_eq!(p0[range.clone()] == p1[range], r.name != "fc", "{}", r.name);
    }
}

#[test]
fn train_only_and_freeze_names_resolve_to_layers() {
    use resnet::train::FineTuning;
    let spec = ModelSpec::from_name("resnet20", 10).unwrap();
    let only = FineTuning {
        train_only: vec!["layer3.2".into(), "fc".into()],
        lr_backbone: 1.0,
        ..FineTuning::default()
    };
    let tune = only.plan_settings(&spec).unwrap();
    for (layer, frozen) in [
        ("conv1", true),
        ("layer3.1.conv2", true),
        ("layer3.2.conv1", false),
        ("layer3.2.bn2", false),
        ("fc", false),
    ] {
        assert_eq!(tune.is_frozen(layer), frozen, "{layer}");
    }
    let stem = FineTuning {
        freeze: vec!["stem".into()],
        lr_backbone: 1.0,
        ..FineTuning::default()
    };
    let tune = stem.plan_settings(&spec).unwrap();
    assert!(tune.is_frozen("conv1") && tune.is_frozen("bn1") && !tune.is_frozen("layer1.0.conv1"));
    let all = FineTuning {
        freeze: ["stem", "layer1", "layer2", "layer3", "fc"]
            .map(String::from)
            .to_vec(),
        lr_backbone: 1.0,
        ..FineTuning::default()
    };
    let e = all.plan_settings(&spec).unwrap_err().to_string();
    assert!(e.contains("nothing would train"), "{e}");
    let typo = FineTuning {
        freeze: vec!["layer4".into()],
        lr_backbone: 1.0,
        ..FineTuning::default()
    };
    let e = typo.plan_settings(&spec).unwrap_err().to_string();
    assert!(
        e.contains("`freeze` layer4") && e.contains("resnet20"),
        "{e}"
    );
}

#[test]
fn the_imagenet_models_default_to_torchvisions_recipe() {
    use resnet::train::{Recipe, TrainConfig};
    let r = Recipe::imagenet(64);
    // lr 0.1 x 64/256, divided by 10 at epochs 30 and 60, momentum 0.9, weight decay 1e-4
    assert!((r.lr - 0.025).abs() < 1e-12, "{}", r.lr);
    assert_eq!((r.momentum, r.weight_decay), (0.9, 1e-4));
    let per_epoch = r.with_epochs_as_iterations(100);
    assert_eq!(per_epoch.lr_milestones, [3000, 6000]);
    assert!((per_epoch.lr_at(2999, 9000, 100) - 0.025).abs() < 1e-12);
    assert!((per_epoch.lr_at(3000, 9000, 100) - 0.0025).abs() < 1e-12);
    let resnet50 = TrainConfig::for_model("resnet50").unwrap().recipe;
    assert_eq!(resnet50, Recipe::imagenet(128));
    // the CIFAR models keep He et al.'s
    let cifar = TrainConfig::for_model("resnet20").unwrap().recipe;
    assert_eq!(
        (cifar.lr, cifar.lr_milestones.clone()),
        (0.1, vec![32_000, 48_000])
    );
    assert_eq!(
        cifar.with_epochs_as_iterations(390).lr_milestones,
        [32_000, 48_000]
    );
}
