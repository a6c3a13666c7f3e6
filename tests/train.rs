//! Training on real CIFAR-10 images: a fixed batch of 64 is overfitted to 100% training accuracy,
//! the loss falls over 30 steps, two runs with one seed give bit-identical checkpoints, and a run
//! killed with SIGKILL mid-epoch resumes to the same metrics as an uninterrupted run.

mod common;
use common::cifar;
use common::*;
use resnet::cifar10;
use resnet::model::{ModelSpec, ModelState};
use resnet::ops::amp::LossScale;
use resnet::ops::sgd::SgdConfig;
use resnet::plan::{Plan, PlanConfig};
use resnet::preprocess::{AutoAugment, Preprocess};
use resnet::report::EpochMetrics;
use resnet::train::{self, OneProcess, Recipe, RunDir, Silent, TrainConfig};
use std::path::Path;
use std::process::Command;

fn plan_cfg(batch: usize, augment: bool, lr: f32) -> PlanConfig {
    let sgd = SgdConfig {
        lr,
        ..SgdConfig::he2016()
    };
    let preprocess = match augment {
        true => Preprocess::CIFAR10,
        false => Preprocess::normalize_only(cifar10::NORMALIZE),
    };
    PlanConfig::train(batch, (32, 32), sgd, preprocess)
}

/// `config`'s run, silent, in a fresh temporary directory: the directory and the epochs' rows.
fn fit_in_temp_dir(
    config: &TrainConfig,
    split: resnet::data::Split,
) -> (tempfile::TempDir, Vec<EpochMetrics>) {
    let out = tempfile::tempdir().unwrap();
    let run = train::fit(
        config,
        split,
        &OneProcess,
        RunDir::new(out.path()),
        &mut Silent,
    );
    (out, run.unwrap().epochs)
}

fn batch_of(d: &resnet::data::Dataset, idx: &[usize]) -> (Vec<u8>, Vec<u32>) {
    let px = idx.iter().flat_map(|&i| d.image(i).to_vec()).collect();
    (px, idx.iter().map(|&i| d.labels[i] as u32).collect())
}

#[test]
fn overfits_one_fixed_batch_of_64_real_images() {
    let dir = cifar::subset(7, 1);
    let split = resnet::data::load(dir.path(), (32, 32)).unwrap();
    let gpu = gpu();
    let m = ModelState::new(&gpu, &ModelSpec::from_name("resnet8", 10).unwrap(), 0).unwrap();
    let plan = Plan::new(&gpu, &m, plan_cfg(64, false, 0.05)).unwrap();
    let idx: Vec<usize> = (0..64).collect();
    let (px, labels) = batch_of(&split.train, &idx);
    plan.set_batch(&gpu, &px, &labels).unwrap();
    let mut acc = 0.0;
    let mut steps = 0;
    while steps < 80 {
        plan.set_step(&gpu, steps, 0.05).unwrap();
        plan.submit(&gpu);
        steps += 1;
        let s = read(&gpu, &plan.loss.stats);
        acc = s[1] / 64.0;
        if acc == 1.0 {
            break;
        }
    }
    println!("100% training accuracy on 64 real images after {steps} steps");
    assert_eq!(acc, 1.0, "training accuracy after {steps} steps: {acc}");
}

#[test]
fn loss_falls_over_30_steps_on_a_real_subset() {
    let dir = cifar::subset(96, 1);
    let split = resnet::data::load(dir.path(), (32, 32)).unwrap();
    let gpu = gpu();
    let m = ModelState::new(&gpu, &ModelSpec::from_name("resnet8", 10).unwrap(), 1).unwrap();
    let plan = Plan::new(&gpu, &m, plan_cfg(32, true, 0.1)).unwrap();
    let order = train::shuffled(split.train.len(), 5);
    let mut losses = Vec::new();
    for s in 0..30 {
        let (px, labels) = batch_of(&split.train, &order[s * 32..(s + 1) * 32]);
        plan.set_batch(&gpu, &px, &labels).unwrap();
        plan.set_step(&gpu, s as u32, 0.1).unwrap();
        plan.submit(&gpu);
        losses.push(read(&gpu, &plan.loss.stats)[0]);
    }
    let first: f32 = losses[..5].iter().sum::<f32>() / 5.0;
    let last: f32 = losses[25..].iter().sum::<f32>() / 5.0;
    println!("mean loss of steps 1-5: {first:.3}, of steps 26-30: {last:.3}");
    assert!(losses.iter().all(|l| l.is_finite()));
    assert!(last < first - 0.2, "loss did not fall: {losses:?}");
}

/// BatchNorm's `num_batches_tracked` counts training steps across a save and a load, as in
/// PyTorch: a model loaded from a checkpoint (what `resnet train --resume` and the browser demo's
/// `fromSafetensors` both do) and trained on by the shared `Trainer` continues from the
/// checkpoint's count.
#[test]
fn num_batches_tracked_continues_from_a_loaded_checkpoint() {
    let gpu = gpu();
    let spec = ModelSpec::from_name("resnet8", 10).unwrap();
    let saved = ModelState::new(&gpu, &spec, 4).unwrap();
    let mut tensors = pollster::block_on(saved.state_dict(&gpu)).unwrap();
    for t in tensors
        .iter_mut()
        .filter(|t| t.name.ends_with("num_batches_tracked"))
    {
        t.data = resnet::checkpoint::TensorData::I64(vec![57]);
    }
    let ck = resnet::checkpoint::Checkpoint {
        tensors,
        metadata: Default::default(),
    };
    let m = ModelState::new(&gpu, &spec, 5).unwrap();
    m.load_state_dict(&gpu, &ck, "test").unwrap();
    let mut trainer = train::Trainer::new(&gpu, &m, plan_cfg(4, true, 0.1), 0).unwrap();
    let pixels = vec![100u8; 4 * 3 * 32 * 32];
    for _ in 0..2 {
        trainer.step(&gpu, &m, &pixels, &[0, 1, 2, 3], 0.1).unwrap();
    }
    let counts: Vec<i64> = pollster::block_on(m.state_dict(&gpu))
        .unwrap()
        .iter()
        .filter(|t| t.name.ends_with("num_batches_tracked"))
        .map(|t| t.as_i64().unwrap()[0])
        .collect();
    assert_eq!(counts.len(), 7, "one per BN of resnet8");
    assert!(counts.iter().all(|&c| c == 59), "{counts:?}");
    assert_eq!(trainer.iteration, 2, "the run's own iteration starts at 0");
}

/// resnet8 (the quickest to train on a CPU driver: what these runs check holds for any depth),
/// one epoch of 128 images at batch 32.
fn options(seed: u64) -> TrainConfig {
    TrainConfig {
        model: "resnet8".into(),
        epochs: Some(1),
        recipe: Recipe {
            batch_size: 32,
            ..Recipe::default()
        },
        subset: Some(128),
        seed,
        eval_batch_size: 50,
        log_every: 2,
        gpu: common::untuned(),
        ..TrainConfig::default()
    }
}

/// The moving average of a model being trained follows torchvision's ExponentialMovingAverage,
/// written out in f64 from the weights after each step: a copy at the first update, then
/// `d * ema + (1 - d) * weights`, BatchNorm's running statistics included.
#[test]
fn the_moving_average_follows_the_weights_as_torchvisions() {
    let gpu = gpu();
    let spec = ModelSpec::from_name("resnet8", 10).unwrap();
    let m = ModelState::new(&gpu, &spec, 5).unwrap();
    let mut trainer = train::Trainer::new(&gpu, &m, plan_cfg(4, true, 0.1), 0).unwrap();
    let mut average = train::ExponentialMovingAverage::new(&gpu, &m, 0.75).unwrap();
    let pixels: Vec<u8> = (0..4 * 3 * 32 * 32).map(|i| (i * 7 % 251) as u8).collect();
    let mut want: Vec<Vec<f64>> = Vec::new();
    for step in 0..3 {
        trainer.step(&gpu, &m, &pixels, &[0, 1, 2, 3], 0.1).unwrap();
        average.update(&gpu, &m);
        let now = pollster::block_on(m.state_dict(&gpu)).unwrap();
        let floats = now.iter().filter_map(|t| t.as_f32());
        if step == 0 {
            want = floats
                .map(|v| v.iter().map(|&x| x as f64).collect())
                .collect();
        } else {
            for (w, v) in want.iter_mut().zip(floats) {
                for (w, &x) in w.iter_mut().zip(v) {
                    *w = 0.75 * *w + 0.25 * x as f64;
                }
            }
        }
    }
    assert_eq!(average.averaged, 3);
    // PyTorch averages the int64 num_batches_tracked in f32 and truncates it: 1, then
    // 0.75 x 1 + 0.25 x 2 = 1.25 -> 1, then 0.75 x 1 + 0.25 x 3 = 1.5 -> 1
    assert_eq!(average.model.batches_tracked.get(), 1);
    assert_eq!(m.batches_tracked.get(), 3);
    let got = pollster::block_on(average.model.state_dict(&gpu)).unwrap();
    let got: Vec<_> = got.iter().filter(|t| t.as_f32().is_some()).collect();
    assert_eq!(got.len(), want.len());
    for (t, w) in got.iter().zip(&want) {
        assert_close(&t.name, t.as_f32().unwrap(), w, 1e-6);
    }
    // the weights moved from the first copy, so a missing update would show
    let first = pollster::block_on(m.state_dict(&gpu)).unwrap();
    assert_ne!(first[0].as_f32(), got[0].as_f32());
}

/// torchvision's adjustment of the decay for the batch, the steps between updates and the
/// epochs (its ResNet recipe: --model-ema-steps 32 --model-ema-decay 0.99998), worked by hand:
/// 1024 x 32 / 600 = 54.613..., 1 - 2e-5 x 54.613... = 0.998907733...; saturated at 0.
#[test]
fn the_moving_averages_decay_is_adjusted_as_torchvisions_script() {
    let ema = resnet::train::ModelEma::default();
    assert!((ema.update_decay(1024, 600) - 0.998_907_733_33).abs() < 1e-10);
    let fast = resnet::train::ModelEma {
        steps: 1,
        decay: 0.5,
    };
    assert_eq!(fast.update_decay(32, 1), 0.0);
}

/// A run with `model_ema` evaluates and saves its average: with decay 0 after every step the
/// average is the weights themselves, so ema.safetensors holds last.safetensors' tensors and the
/// average's test loss and accuracies (top-1 and top-5) are the model's. With 2 warm-up steps the average restarts
/// after each of them (torchvision's script), so of the 4 updates 2 count.
#[test]
fn a_run_with_model_ema_saves_and_evaluates_its_average() {
    let data = cifar::subset(13, 5);
    let split = resnet::data::load(data.path(), (32, 32)).unwrap();
    let config = TrainConfig {
        model: "resnet8".into(),
        model_ema: Some(resnet::train::ModelEma {
            steps: 1,
            decay: 0.0,
        }),
        recipe: Recipe {
            warmup_iters: 2,
            ..options(3).recipe
        },
        ..options(3)
    };
    let (out, rows) = fit_in_temp_dir(&config, split);
    let row = &rows[0];
    assert_eq!(
        (row.ema_test_loss, row.ema_test_acc, row.ema_test_acc5),
        (Some(row.test_loss), Some(row.test_acc), row.test_acc5)
    );
    assert!(row.test_acc5.is_some_and(|a5| a5 >= row.test_acc));
    // the training batches' top-5 too: above their top-1 (some label ranks 2nd to 5th), a share
    assert!(
        row.train_acc5
            .is_some_and(|a5| a5 > row.train_acc && a5 <= 1.0),
        "train top-1 {}, top-5 {:?}",
        row.train_acc,
        row.train_acc5
    );
    let load = |f: &str| resnet::checkpoint::load(&out.path().join(f)).unwrap();
    let (average, last) = (load("ema.safetensors"), load("last.safetensors"));
    assert_eq!(average.tensors, last.tensors);
    let averaged = &average.metadata["n_averaged"];
    assert_eq!(averaged, "2", "4 updates, restarted in the 2 warm-up steps");
    let metrics = std::fs::read_to_string(out.path().join("metrics.csv")).unwrap();
    assert_eq!(
        resnet::report::read_metrics(&out.path().join("metrics.csv")).unwrap(),
        rows,
        "{metrics}"
    );
}

/// A run with `model_ema` stopped after epoch 1 and resumed continues its average: with decay
/// 1 the average is the weights after the run's first step for good, which only a resume that
/// restores both the average and its update count keeps (a fresh average would copy the
/// weights after epoch 2's first step, or after epoch 1).
#[test]
fn a_run_with_model_ema_resumes_its_average() {
    let data = cifar::subset(13, 5);
    let config = |epochs| TrainConfig {
        model: "resnet8".into(),
        epochs: Some(epochs),
        model_ema: Some(resnet::train::ModelEma {
            steps: 2,
            decay: 1.0,
        }),
        ..options(4)
    };
    let (whole, cut, rows, resumed) = whole_and_resumed(data.path(), config);
    assert_eq!(untimed(&resumed[0]), untimed(&rows[1]), "epoch 2 differs");
    let average = |o: &tempfile::TempDir| {
        resnet::checkpoint::load(&o.path().join("ema.safetensors")).unwrap()
    };
    assert_eq!(
        average(&whole).tensors,
        average(&cut).tensors,
        "resumed average differs"
    );
    assert_eq!(average(&cut).metadata["n_averaged"], "4");
    assert_ne!(
        rows[1].ema_test_loss,
        Some(rows[1].test_loss),
        "the average is not the weights"
    );
}

/// `zero_init_residual` reaches the model a run trains: after one step at a vanishing learning
/// rate, each residual block's last BatchNorm weight is still about 0 and every other one about 1.
#[test]
fn a_run_with_zero_init_residual_trains_from_zeroed_block_ends() {
    let dir = cifar::subset(4, 1);
    let split = resnet::data::load(dir.path(), (32, 32)).unwrap();
    let config = TrainConfig {
        model: "resnet8".into(),
        zero_init_residual: true,
        recipe: Recipe {
            batch_size: 32,
            lr: 1e-30,
            ..Recipe::default()
        },
        subset: Some(32),
        ..options(1)
    };
    let out = tempfile::tempdir().unwrap();
    train::fit(
        &config,
        split,
        &OneProcess,
        RunDir::new(out.path()),
        &mut Silent,
    )
    .unwrap();
    let ck = resnet::checkpoint::load(&out.path().join("last.safetensors")).unwrap();
    let is_gamma = |n: &str| n.ends_with(".weight") && (n.starts_with("bn") || n.contains(".bn"));
    let gammas: Vec<_> = ck.tensors.iter().filter(|t| is_gamma(&t.name)).collect();
    assert_eq!(gammas.len(), 7, "resnet8's BatchNorms");
    for t in gammas {
        let zeroed = t.name.starts_with("layer") && t.name.ends_with(".bn2.weight");
        let want = if zeroed { 0.0 } else { 1.0 };
        let v = t.as_f32().unwrap();
        assert!(
            v.iter().all(|x| (x - want).abs() < 1e-6),
            "{}: {:?}",
            t.name,
            &v[..4]
        );
    }
}

/// `clip_grad_norm` reaches the plan a run trains: one step with the gradients clipped to a
/// vanishing norm (and no weight decay) leaves every weight where a step at a vanishing learning
/// rate does; an unclipped step at lr 0.1 would move them by far more than the tolerance.
#[test]
fn a_run_with_clip_grad_norm_clips_its_steps() {
    let dir = cifar::subset(4, 1);
    let run = |lr: f64, clip: Option<f32>| {
        let split = resnet::data::load(dir.path(), (32, 32)).unwrap();
        let config = TrainConfig {
            model: "resnet8".into(),
            recipe: Recipe {
                batch_size: 32,
                lr,
                weight_decay: 0.0,
                clip_grad_norm: clip,
                ..Recipe::default()
            },
            subset: Some(32),
            ..options(1)
        };
        let out = tempfile::tempdir().unwrap();
        let sink = &mut Silent;
        train::fit(&config, split, &OneProcess, RunDir::new(out.path()), sink).unwrap();
        let ck = resnet::checkpoint::load(&out.path().join("last.safetensors")).unwrap();
        let weights = ck
            .tensors
            .into_iter()
            .filter(|t| t.name.ends_with(".weight"));
        weights
            .map(|t| (t.name.clone(), t.as_f32().unwrap().to_vec()))
            .collect::<Vec<_>>()
    };
    let clipped = run(0.1, Some(1e-12));
    let still = run(1e-30, None);
    assert_eq!(clipped.len(), still.len());
    for ((name, a), (_, b)) in clipped.iter().zip(&still) {
        let worst = a
            .iter()
            .zip(b.iter())
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max);
        assert!(
            worst < 1e-7,
            "{name}: moved {worst} with its gradients clipped to 1e-12"
        );
    }
}

#[test]
fn same_seed_gives_bit_identical_checkpoints() {
    let dir = cifar::subset(13, 5);
    let outs = [
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    ];
    let mut events = Vec::new();
    for (i, out) in outs.iter().enumerate() {
        let split = resnet::data::load(dir.path(), (32, 32)).unwrap();
        let config = options(if i < 2 { 7 } else { 8 });
        let dir = RunDir::new(out.path());
        let heard: &mut dyn train::Events = if i == 0 { &mut events } else { &mut Silent };
        let summary = train::fit(&config, split, &OneProcess, dir, heard).unwrap();
        assert_eq!(summary.epochs.len(), 1);
    }
    // what the loop told its events, in order: the run (128 images at batch 32: 4 steps, one
    // epoch), every step, then the epoch's row, the same row fit returned
    let started = events.iter().find_map(|e| match e {
        train::Event::Started(info) => Some(info.clone()),
        _ => None,
    });
    let info = started.expect("a Started event");
    assert_eq!((info.model.as_str(), info.train_images), ("resnet8", 128));
    assert_eq!(
        (info.steps_per_epoch, info.epochs, info.ranks),
        (4, 1, (1, 32))
    );
    let steps: Vec<usize> = events
        .iter()
        .filter_map(|e| match e {
            train::Event::Training { done, .. } => Some(*done),
            _ => None,
        })
        .collect();
    assert_eq!(steps, [1, 2, 3, 4]);
    let rows: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            train::Event::Epoch { row, .. } => Some(row.clone()),
            _ => None,
        })
        .collect();
    let written = resnet::report::read_metrics(&outs[0].path().join("metrics.csv")).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].epoch, rows[0].iteration), (1, 4));
    assert_eq!(written[0].epoch, rows[0].epoch);
    assert!((written[0].test_acc - rows[0].test_acc).abs() < 1e-6);
    let bytes = |o: &tempfile::TempDir| std::fs::read(o.path().join("last.safetensors")).unwrap();
    assert_eq!(
        bytes(&outs[0]),
        bytes(&outs[1]),
        "two runs with seed 7 differ"
    );
    assert_ne!(
        bytes(&outs[0]),
        bytes(&outs[2]),
        "seeds 7 and 8 gave the same weights"
    );
    // the metadata a loader needs: model name, class names, normalisation
    let ck = resnet::checkpoint::load(&outs[0].path().join("last.safetensors")).unwrap();
    let meta = |k: &str| ck.metadata.get(k).cloned().unwrap_or_default();
    assert_eq!(meta("model"), "resnet8");
    assert_eq!(
        meta("classes"),
        "airplane,automobile,bird,cat,deer,dog,frog,horse,ship,truck"
    );
    let floats = |k: &str| -> Vec<f32> { meta(k).split(',').map(|v| v.parse().unwrap()).collect() };
    assert_eq!(floats("mean"), [0.4914, 0.4822, 0.4465]);
    assert_eq!(floats("std"), [0.2470, 0.2435, 0.2616]);
    for f in [
        "best.safetensors",
        "last.state.safetensors",
        "metrics.csv",
        "curves.png",
    ] {
        assert!(outs[0].path().join(f).exists(), "{f} missing");
    }
}

/// The metrics of each epoch that do not depend on wall time: the first 7 columns, the loss
/// scale and the skipped steps.
fn learned_metrics(out: &Path) -> Vec<Vec<String>> {
    let csv = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    csv.lines()
        .skip(1)
        .map(|l| {
            let cols: Vec<&str> = l.split(',').collect();
            let kept = cols[..7].iter().chain(&cols[11..13]);
            kept.map(|c| c.to_string()).collect()
        })
        .collect()
}

/// `resnet train` as the resume test runs it: resnet8, 3 epochs of batch 16 at seed 3 on the
/// images in `data`, kernel choices remembered in `cache`; `run` is `("--out", dir)` for a new run
/// or `("--resume", dir)`.
fn resnet_train(cache: &Path, data: &Path, (flag, dir): (&str, &Path)) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_resnet"));
    c.env("RESNET_CACHE", cache)
        .args([
            "train",
            "--model",
            "resnet8",
            "--epochs",
            "3",
            "--batch-size",
            "16",
            "--eval-batch-size",
            "25",
            "--seed",
            "3",
            "--log-every",
            "1",
        ])
        .arg("--data")
        .arg(data)
        .arg(flag)
        .arg(dir);
    c
}

#[test]
fn killed_run_resumes_to_the_same_metrics() {
    let rows = killed_run_resumes(&[]);
    assert!(
        rows.iter().all(|r| r[7].is_empty() && r[8] == "0"),
        "{rows:?}"
    );
}

/// In mixed precision too: f16 activations, the loss scaler's state read from the checkpoint.
/// With the CLI's GradScaler defaults the scale stays at 2^16 over these 15 steps (no overflow;
/// growth needs 2,000 clean steps), so that a moved scale is restored is shown by
/// `a_mixed_precision_run_resumes_with_its_loss_scale`, which sets the growth interval to 2.
#[test]
fn killed_mixed_precision_run_resumes_to_the_same_metrics() {
    if !f16_shaders("killed_mixed_precision_run_resumes_to_the_same_metrics") {
        return;
    }
    // the register kernels, untimed: the tuned kernels' resume is the fp32 test's
    let rows = killed_run_resumes(&["--precision", "mixed", "--kernels", "register"]);
    // loss_scale and skipped_steps
    assert!(
        rows.iter().all(|r| r[7] == "65536" && r[8] == "0"),
        "{rows:?}"
    );
}

/// Trains 3 epochs whole, and again killed with SIGKILL in epoch 2 then resumed; asserts the
/// two runs' metrics and final weights are the same; returns the metrics.
fn killed_run_resumes(extra: &[&str]) -> Vec<Vec<String>> {
    let dir = cifar::subset(8, 5);
    // the default kernels: timed per shape by the first run, remembered in this cache by the rest
    let cache = tempfile::tempdir().unwrap();
    let args = |flag, out: &Path| {
        let mut c = resnet_train(cache.path(), dir.path(), (flag, out));
        if flag == "--out" {
            c.args(extra); // a resume takes the run's recorded options
        }
        c
    };
    let full = tempfile::tempdir().unwrap();
    let st = args("--out", full.path()).output().unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );

    let cut = tempfile::tempdir().unwrap();
    // 80 images, batch 16: 5 steps per epoch. The run hangs after iteration 7 (epoch 2, step 2),
    // where it is killed with SIGKILL: mid-epoch, with epoch 1's checkpoint on disk.
    let mut child = args("--out", cut.path())
        .env("RESNET_STALL_AT_ITERATION", "7")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut seen = Vec::new();
    for line in std::io::BufRead::lines(stderr) {
        let line = line.unwrap();
        let stalled = line.starts_with("stalled after iteration 7");
        seen.push(line);
        if stalled {
            break;
        }
    }
    assert!(
        seen.last().is_some_and(|l| l.starts_with("stalled")),
        "the run ended without stalling: {seen:?}"
    );
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let rows = learned_metrics(cut.path());
    assert_eq!(
        rows.len(),
        1,
        "killed in epoch 2: one row expected; rows: {rows:?}"
    );
    let st = args("--resume", cut.path()).output().unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    assert_eq!(
        learned_metrics(cut.path()),
        learned_metrics(full.path()),
        "resumed metrics differ"
    );
    assert_eq!(
        std::fs::read(cut.path().join("last.safetensors")).unwrap(),
        std::fs::read(full.path().join("last.safetensors")).unwrap(),
        "resumed final weights differ"
    );
    learned_metrics(full.path())
}

/// [`options`] for `epochs` in mixed precision with these loss-scaling settings.
fn mixed_precision(epochs: usize, loss_scale: LossScale, seed: u64) -> TrainConfig {
    TrainConfig {
        epochs: Some(epochs),
        gpu: resnet::gpu::GpuOptions {
            precision: resnet::gpu::Precision::Mixed,
            ..common::untuned()
        },
        loss_scale,
        ..options(seed)
    }
}

/// A mixed-precision run stopped after epoch 1 and resumed continues with the loss scaler's
/// state of its checkpoint: the same scale, skipped steps and weights as the run left whole. A
/// scale that grows every 2 clean steps is away from its initial value by then, so a resume that
/// started the scaler anew would show.
#[test]
fn a_mixed_precision_run_resumes_with_its_loss_scale() {
    if !f16_shaders("a_mixed_precision_run_resumes_with_its_loss_scale") {
        return;
    }
    let data = cifar::subset(13, 5);
    let scaler = LossScale {
        growth_interval: 2,
        ..Default::default()
    };
    let config = |epochs| mixed_precision(epochs, scaler, 7);
    let (whole, cut, rows, resumed) = whole_and_resumed(data.path(), config);
    let first_scale = rows[0].loss_scale.expect("a mixed run records its scale");
    assert_ne!(first_scale, 65536.0, "the scale never moved: {rows:?}");
    let learned = |r: &resnet::report::EpochMetrics| {
        (r.train_loss, r.test_acc, r.loss_scale, r.skipped_steps)
    };
    assert_eq!(learned(&resumed[0]), learned(&rows[1]), "epoch 2 differs");
    let bytes = |o: &tempfile::TempDir| std::fs::read(o.path().join("last.safetensors")).unwrap();
    assert_eq!(bytes(&whole), bytes(&cut), "resumed weights differ");
}

/// A mixed-precision run whose loss scale falls below 1 stops with one error naming the
/// iteration and keeps its last epoch's checkpoint. GradScaler's rules with other factors make
/// it happen at a known step: from a scale of 1, after 5 clean steps (iteration 5, in epoch 2 of
/// 4 steps an epoch) it grows by 2^40, iteration 6's scaled gradients overflow f16, and the
/// backoff of 2^-41 leaves 1/2. That checkpoint holds f32 tensors only (as PyTorch's AMP
/// saves), and `resnet eval` in fp32 loads it and scores it as the mixed run did.
#[test]
fn a_mixed_run_whose_loss_scale_falls_below_one_stops_and_keeps_its_checkpoint() {
    if !f16_shaders("a_mixed_run_whose_loss_scale_falls_below_one_stops_and_keeps_its_checkpoint") {
        return;
    }
    let data = cifar::subset(13, 5);
    let scaler = LossScale {
        init_scale: 1.0,
        growth_factor: 2f32.powi(40),
        backoff_factor: 2f32.powi(-41),
        growth_interval: 5,
    };
    let config = |epochs| mixed_precision(epochs, scaler, 3);
    let split = || resnet::data::load(data.path(), (32, 32)).unwrap();
    let (one_epoch, rows) = fit_in_temp_dir(&config(1), split());
    let diverged = tempfile::tempdir().unwrap();
    let dir = RunDir::new(diverged.path());
    let err = train::fit(&config(2), split(), &OneProcess, dir, &mut Silent)
        .map(|_| ())
        .expect_err("the run stops")
        .to_string();
    assert!(
        err.contains("loss scale fell below 1 at iteration 6 (epoch 2")
            && err.contains("the last good checkpoint is")
            && err.contains("last.safetensors"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    let bytes = |d: &Path| std::fs::read(d.join("last.safetensors")).unwrap();
    assert_eq!(
        bytes(diverged.path()),
        bytes(one_epoch.path()),
        "epoch 1's checkpoint"
    );

    let last = one_epoch.path().join("last.safetensors");
    let file = std::fs::read(&last).unwrap();
    let saved = safetensors::SafeTensors::deserialize(&file).unwrap();
    let dtypes: std::collections::BTreeSet<String> = saved
        .tensors()
        .iter()
        .map(|(_, t)| format!("{:?}", t.dtype()))
        .collect();
    // BatchNorm's num_batches_tracked is PyTorch's int64; everything else f32
    assert_eq!(dtypes, ["F32".into(), "I64".into()].into(), "{dtypes:?}");
    let eval = Command::new(env!("CARGO_BIN_EXE_resnet"))
        .env("XDG_RUNTIME_DIR", std::env::temp_dir())
        .args([
            "eval",
            "--precision",
            "fp32",
            "--json",
            "--kernels",
            "register",
        ])
        .arg("--checkpoint")
        .arg(&last)
        .arg("--data")
        .arg(data.path())
        .output()
        .unwrap();
    assert!(
        eval.status.success(),
        "{}",
        String::from_utf8_lossy(&eval.stderr)
    );
    let scores: serde_json::Value = serde_json::from_slice(&eval.stdout).unwrap();
    let (loss, acc) = (
        scores["loss"].as_f64().unwrap(),
        scores["accuracy"].as_f64().unwrap(),
    );
    let mixed = &rows[0];
    assert!(
        (loss - mixed.test_loss).abs() <= 1e-2 * mixed.test_loss,
        "{loss} {mixed:?}"
    );
    assert!(
        (acc - mixed.test_acc).abs() <= 1.0 / 50.0 + 1e-9,
        "{acc} {mixed:?}"
    );
}

/// `r` without its timings, which differ between any two runs.
fn untimed(r: &EpochMetrics) -> EpochMetrics {
    EpochMetrics {
        images_per_sec: 0.0,
        seconds: 0.0,
        ..r.clone()
    }
}

/// The run of `config(2)` on the images in `data` left whole, and the same stopped after epoch 1
/// (`config(1)`) and resumed: the two directories and each one's epoch rows (the resumed run's
/// holds epoch 2 alone).
fn whole_and_resumed(
    data: &Path,
    config: impl Fn(usize) -> TrainConfig,
) -> (
    tempfile::TempDir,
    tempfile::TempDir,
    Vec<EpochMetrics>,
    Vec<EpochMetrics>,
) {
    let run = |epochs, dir: RunDir| {
        let split = resnet::data::load(data, (32, 32)).unwrap();
        train::fit(&config(epochs), split, &OneProcess, dir, &mut Silent).unwrap()
    };
    let (whole, cut) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let rows = run(2, RunDir::new(whole.path())).epochs;
    run(1, RunDir::new(cut.path()));
    let resumed = run(2, RunDir::resume(cut.path())).epochs;
    (whole, cut, rows, resumed)
}

/// `auto_augment` on CIFAR (the CPU crops, flips and augments, the GPU normalises): a run
/// stopped after epoch 1 and resumed equals the whole run, weights included, and trains on
/// other images than the plain recipe (the wrapper reaches the run; that its images are the
/// policy's is tests/auto_augment.rs's).
#[test]
fn a_run_with_trivial_augment_on_cifar_resumes_exactly() {
    let data = cifar::subset(13, 5);
    let config = |epochs| TrainConfig {
        model: "resnet8".into(),
        epochs: Some(epochs),
        auto_augment: Some(AutoAugment::TrivialAugmentWide),
        ..options(4)
    };
    let (whole, cut, rows, resumed) = whole_and_resumed(data.path(), config);
    assert_eq!(untimed(&resumed[0]), untimed(&rows[1]), "epoch 2 differs");
    let weights = |o: &tempfile::TempDir| {
        resnet::checkpoint::load(&o.path().join("last.safetensors"))
            .unwrap()
            .tensors
    };
    assert_eq!(weights(&whole), weights(&cut), "resumed weights differ");
    let split = resnet::data::load(data.path(), (32, 32)).unwrap();
    let plain = TrainConfig {
        auto_augment: None,
        ..config(2)
    };
    let (_, plain_rows) = fit_in_temp_dir(&plain, split);
    assert_ne!(plain_rows[0].train_loss, rows[0].train_loss);
}

/// `--opt rmsprop` and `--opt adamw` runs stopped after epoch 1 and resumed equal the runs left
/// whole, weights included: their checkpoints hold the second moments under torch.optim's names
/// and AdamW's step count (64: two epochs of 128 images in batches of 4), which the resume restores (a resume
/// that started them anew would divide the next steps by other moments). Their first epochs
/// differ from SGD's, and a resume with another optimizer is refused.
#[test]
fn runs_with_rmsprop_or_adamw_resume_exactly() {
    use resnet::ops::sgd::Rule;
    let data = cifar::subset(13, 5);
    let config = |opt| {
        move |epochs| TrainConfig {
            model: "resnet8".into(),
            epochs: Some(epochs),
            recipe: Recipe {
                opt,
                lr: 1e-3,
                batch_size: 4,
                ..Recipe::default()
            },
            ..options(6)
        }
    };
    let mut first_losses = Vec::new();
    for (opt, second) in [(Rule::RmsProp, "square_avg"), (Rule::AdamW, "exp_avg_sq")] {
        let (whole, cut, rows, resumed) = whole_and_resumed(data.path(), config(opt));
        assert_eq!(
            untimed(&resumed[0]),
            untimed(&rows[1]),
            "{opt:?}: epoch 2 differs"
        );
        let load =
            |o: &tempfile::TempDir, file| resnet::checkpoint::load(&o.path().join(file)).unwrap();
        let (w, c) = (
            load(&whole, "last.safetensors"),
            load(&cut, "last.safetensors"),
        );
        assert_eq!(w.tensors, c.tensors, "{opt:?}: resumed weights differ");
        let state = load(&cut, "last.state.safetensors");
        assert_eq!(state.metadata["optimizer"], opt.name());
        let moment = state.get(&format!("{second}.conv1.weight")).expect(second);
        assert!(moment.as_f32().unwrap().iter().all(|&x| x >= 0.0));
        assert!(
            moment.as_f32().unwrap().iter().any(|&x| x > 0.0),
            "{second} is all 0"
        );
        if opt == Rule::AdamW {
            let step = state.get("adamw.step").expect("AdamW's step count");
            assert_eq!(step.as_i64(), Some(&[64i64][..]), "two epochs of 32 steps");
        }
        first_losses.push(rows[0].train_loss);
        // another optimizer cannot continue the run
        let split = resnet::data::load(data.path(), (32, 32)).unwrap();
        let sgd = TrainConfig {
            recipe: Recipe {
                opt: Rule::Sgd,
                ..config(opt)(3).recipe
            },
            ..config(opt)(3)
        };
        let resumed = train::fit(
            &sgd,
            split,
            &OneProcess,
            RunDir::resume(cut.path()),
            &mut Silent,
        );
        let Err(err) = resumed else {
            panic!("{opt:?}: resumed with SGD")
        };
        let err = err.to_string();
        assert!(err.contains("`opt`") && err.contains(opt.name()), "{err}");
    }
    let split = resnet::data::load(data.path(), (32, 32)).unwrap();
    let sgd = TrainConfig {
        recipe: Recipe {
            opt: Rule::Sgd,
            ..config(Rule::Sgd)(1).recipe
        },
        ..config(Rule::Sgd)(1)
    };
    let (_, sgd_rows) = fit_in_temp_dir(&sgd, split);
    first_losses.push(sgd_rows[0].train_loss);
    assert!(
        first_losses[0] != first_losses[2] && first_losses[1] != first_losses[2],
        "the optimizers train alike: {first_losses:?}"
    );
}

/// The recipe of one case of tests/data/torch/lr_warmup.json, written by PyTorch's own
/// schedulers as torchvision's training script builds them from its flags (make.py there).
fn torchvision_case(case: &serde_json::Value) -> Recipe {
    let number = |k: &str| case[k].as_f64().unwrap();
    let warmup = number("lr_warmup_epochs") as u64;
    // torchvision's --lr-scheduler names, as `resnet train` takes them
    let schedule = train::LrSchedule::parse(case["lr_scheduler"].as_str().unwrap()).unwrap();
    let step_size = number("lr_step_size") as u64;
    Recipe {
        lr: number("lr"),
        lr_schedule: schedule,
        lr_step_size: (step_size > 0).then_some(step_size),
        lr_gamma: number("lr_gamma"),
        lr_min: number("lr_min"),
        lr_warmup_epochs: warmup,
        lr_warmup_method: train::WarmupMethod::parse(case["lr_warmup_method"].as_str().unwrap())
            .unwrap(),
        lr_warmup_decay: number("lr_warmup_decay"),
        ..Recipe::default()
    }
}

/// torchvision's warm-up epochs (constant and linear) before its StepLR (`--lr-step-size`,
/// `--lr-gamma`), CosineAnnealingLR (with `eta_min`) and ExponentialLR give PyTorch's learning
/// rate at the start of every epoch, whatever the steps per epoch; every step of a warm-up epoch
/// runs at that epoch's rate.
#[test]
fn torchvisions_warm_up_and_schedules_give_pytorchs_rate_each_epoch() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/torch/lr_warmup.json");
    let torch: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    for case in torch["cases"].as_array().unwrap() {
        let lrs: Vec<f64> = case["lrs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        let epochs = lrs.len() as u64;
        for steps_per_epoch in [1u64, 7] {
            let recipe = torchvision_case(case).with_epochs_as_iterations(steps_per_epoch as usize);
            recipe.check_schedule(epochs as usize).unwrap();
            check_rates(&recipe, &lrs, steps_per_epoch, case);
            // StepLR as milestones from the warm-up's end, every step_size epochs (MultiStepLR,
            // gamma included): the ImageNet recipe's form
            if let Some(size) = recipe.lr_step_size {
                let milestones = Recipe {
                    lr_step_size: None,
                    lr_milestone_epochs: (1..epochs).map(|k| k * size).collect(),
                    ..recipe.clone()
                };
                let milestones = milestones.with_epochs_as_iterations(steps_per_epoch as usize);
                check_rates(&milestones, &lrs, steps_per_epoch, case);
            }
        }
    }
}

/// `recipe`'s rate at the first step of each epoch against PyTorch's `lrs`, and the same at the
/// epoch's last step where torch's scheduler steps once an epoch (all but the cosine, which
/// moves every step here).
fn check_rates(recipe: &Recipe, lrs: &[f64], steps_per_epoch: u64, case: &serde_json::Value) {
    let total = lrs.len() as u64 * steps_per_epoch;
    for (epoch, &theirs) in lrs.iter().enumerate() {
        let first = epoch as u64 * steps_per_epoch;
        let ours = recipe.lr_at(first, total, steps_per_epoch);
        assert!(
            (ours - theirs).abs() <= 1e-9 * theirs,
            "{case}: epoch {epoch} at {steps_per_epoch} steps an epoch: {ours} against PyTorch's {theirs}"
        );
        let per_epoch = recipe.lr_schedule != train::LrSchedule::Cosine;
        if (epoch as u64) < recipe.lr_warmup_epochs || per_epoch {
            let last = recipe.lr_at(first + steps_per_epoch - 1, total, steps_per_epoch);
            assert_eq!(last, ours, "one rate through epoch {epoch}");
        }
    }
}

/// A run's warm-up epochs are where torchvision restarts the moving average (of 4 updates, the
/// 2 of the warm-up epoch do not count), and the rate the run logs for a warm-up epoch is its
/// factor of the learning rate; the schedule starts after.
#[test]
fn a_run_warms_up_for_whole_epochs() {
    let recipe = Recipe {
        lr_warmup_epochs: 2,
        ..Recipe::default()
    };
    let warming: Vec<bool> = (0..10).map(|s| recipe.warming_up(s, 4)).collect();
    assert_eq!(warming, [[true; 8].as_slice(), &[false; 2]].concat());
    let data = cifar::subset(13, 5);
    let split = resnet::data::load(data.path(), (32, 32)).unwrap();
    let config = TrainConfig {
        model: "resnet8".into(),
        epochs: Some(2),
        model_ema: Some(resnet::train::ModelEma {
            steps: 1,
            decay: 0.5,
        }),
        recipe: Recipe {
            lr_warmup_epochs: 1,
            lr_warmup_method: train::WarmupMethod::Constant,
            lr_warmup_decay: 0.25,
            lr_schedule: train::LrSchedule::Cosine,
            ..options(3).recipe
        },
        subset: Some(64),
        ..options(3)
    };
    let (out, rows) = fit_in_temp_dir(&config, split);
    // lr 0.1: its quarter through the warm-up epoch, then a cosine over the last epoch's 2
    // steps, whose second runs at half the rate
    let lrs: Vec<f64> = rows.iter().map(|r| r.lr).collect();
    assert_eq!(lrs.len(), 2);
    assert!(
        (lrs[0] - 0.025).abs() < 1e-9 && (lrs[1] - 0.05).abs() < 1e-9,
        "{lrs:?}"
    );
    let average = resnet::checkpoint::load(&out.path().join("ema.safetensors")).unwrap();
    assert_eq!(average.metadata["n_averaged"], "2");
}

/// A training plan with random erasing trains on its images with each rectangle set to 0: with
/// a normalisation that keeps a 0 pixel at 0 (mean 0, std 1), one step on erased images gives
/// the loss and the weights of a plan without erasing given the same images with the
/// rectangles blacked out on the CPU, drawn for the step's seed and each image's index in the
/// global batch (this plan is a rank's shard from image 5).
#[test]
fn a_plan_that_erases_trains_on_its_images_with_the_rectangles_at_zero() {
    use resnet::plan::Shard;
    use resnet::preprocess::{Normalize, RandomErasing};
    let gpu = gpu();
    let spec = ModelSpec::from_name("resnet8", 10).unwrap();
    let (n, seed, first) = (8usize, 3u32, 5usize);
    let identity = Normalize {
        mean: [0.0; 3],
        std: [1.0; 3],
    };
    let erasing = RandomErasing { p: 1.0 };
    let one_step = |erase: Option<RandomErasing>, pixels: &[u8]| {
        let m = ModelState::new(&gpu, &spec, 1).unwrap();
        let mut cfg = PlanConfig::train(
            n,
            (32, 32),
            SgdConfig::he2016(),
            Preprocess::normalize_only(identity),
        );
        cfg.preprocess.erase = erase;
        cfg.shard = Shard { first, bn_ranks: 1 };
        let plan = Plan::new(&gpu, &m, cfg).unwrap();
        let labels: Vec<u32> = (0..n as u32).map(|i| i % 10).collect();
        plan.set_batch(&gpu, pixels, &labels).unwrap();
        plan.set_step(&gpu, seed, 0.1).unwrap();
        plan.submit(&gpu);
        (read(&gpu, &plan.loss.stats)[0], read(&gpu, &m.params))
    };
    let pixels: Vec<u8> = (0..n * 3 * 32 * 32)
        .map(|i| (i * 37 % 251 + 1) as u8)
        .collect();
    let mut blacked = pixels.clone();
    let mut erased = 0;
    for i in 0..n {
        let Some([top, left, h, w]) = erasing.rect(seed as u64, (first + i) as u64, (32, 32))
        else {
            continue;
        };
        erased += 1;
        for c in 0..3 {
            for y in top..top + h {
                for x in left..left + w {
                    blacked[((i * 3 + c) * 32 + y as usize) * 32 + x as usize] = 0;
                }
            }
        }
    }
    assert!(erased >= n / 2, "{erased} of {n} images erased at p = 1");
    let on_gpu = one_step(Some(erasing), &pixels);
    assert_eq!(
        on_gpu,
        one_step(None, &blacked),
        "erasing on the GPU differs from on the CPU"
    );
    assert_ne!(
        on_gpu.0,
        one_step(None, &pixels).0,
        "erasing changed nothing"
    );
}

/// A training plan that mixes draws each step's MixUp or CutMix from the step's seed and its
/// shard's first image: one step gives the loss and weights of the same step with that draw
/// given, and not those of the unmixed step. An evaluation plan refuses a mix.
#[test]
fn a_plan_that_mixes_draws_its_mix_from_the_steps_seed() {
    use resnet::plan::Shard;
    use resnet::preprocess::{BatchMixing, MixDraw};
    let gpu = gpu();
    let spec = ModelSpec::from_name("resnet8", 10).unwrap();
    let (n, first) = (8usize, 5usize);
    let mixing = BatchMixing {
        mixup_alpha: 0.2,
        cutmix_alpha: 1.0,
    };
    let pixels: Vec<u8> = (0..n * 3 * 32 * 32).map(|i| (i * 31 % 253) as u8).collect();
    let labels: Vec<u32> = (0..n as u32).map(|i| i * 3 % 10).collect();
    let one_step = |mixes: bool, seed: u32, given: Option<MixDraw>| {
        let m = ModelState::new(&gpu, &spec, 2).unwrap();
        let mut cfg = plan_cfg(n, true, 0.1);
        cfg.preprocess.mix = mixes.then_some(mixing);
        cfg.shard = Shard { first, bn_ranks: 1 };
        let plan = Plan::new(&gpu, &m, cfg).unwrap();
        plan.set_batch(&gpu, &pixels, &labels).unwrap();
        match given {
            Some(mix) => plan.set_step_mixed(&gpu, seed, 0.1, mix).unwrap(),
            None => plan.set_step(&gpu, seed, 0.1).unwrap(),
        }
        plan.submit(&gpu);
        (read(&gpu, &plan.loss.stats)[0], read(&gpu, &m.params))
    };
    let mut kinds = Vec::new();
    for seed in [1u32, 2, 3, 4] {
        let drawn = mixing.draw(seed as u64, first as u64, (32, 32));
        kinds.push(matches!(drawn, MixDraw::CutMix { .. }));
        let mixed = one_step(true, seed, None);
        assert_eq!(
            mixed,
            one_step(false, seed, Some(drawn)),
            "seed {seed}: {drawn:?}"
        );
        assert_ne!(
            mixed.0,
            one_step(false, seed, None).0,
            "seed {seed} mixed nothing"
        );
    }
    assert!(kinds.contains(&true) && kinds.contains(&false), "{kinds:?}");
    let m = ModelState::new(&gpu, &spec, 2).unwrap();
    let eval = Plan::new(&gpu, &m, PlanConfig::eval(n, (32, 32), cifar10::NORMALIZE)).unwrap();
    let mixup = MixDraw::MixUp { lambda: 0.5 };
    assert!(eval.set_step_mixed(&gpu, 1, 0.0, mixup).is_err());
}
