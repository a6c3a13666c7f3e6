//! The training loop of `resnet train` (native: files, progress bar): epochs of shuffled batches,
//! evaluation each epoch, metrics.csv, curves.png, atomic checkpoints and exact resumption.

use super::schedule::{shuffled, LrSchedule};
use super::Trainer;
use crate::checkpoint::{self, Checkpoint};
use crate::data::{Dataset, Split};
use crate::error::{Error, Result};
use crate::gpu::{Gpu, GpuOptions};
use crate::model::ModelSpec;
use crate::ops::augment::{CIFAR10_MEAN, CIFAR10_STD};
use crate::ops::sgd::SgdConfig;
use crate::plan::{Mode, ModelState, Plan, PlanConfig};
use crate::report::{self, EpochMetrics};
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Everything `resnet train` can be told.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// Model name, e.g. resnet20.
    pub model: String,
    /// Epochs; `None`: the paper's 64k iterations.
    pub epochs: Option<usize>,
    /// Images per step.
    pub batch: usize,
    /// Base learning rate.
    pub lr: f64,
    /// SGD momentum.
    pub momentum: f64,
    /// Weight decay.
    pub weight_decay: f64,
    /// Nesterov momentum.
    pub nesterov: bool,
    /// LR schedule.
    pub schedule: LrSchedule,
    /// Linear warm-up iterations.
    pub warmup_iters: u64,
    /// Iterations at which the step schedule divides the rate by 10 (paper: 32000, 48000).
    pub milestones: Vec<u64>,
    /// Training images held out for validation (evaluated each epoch instead of the test set).
    pub val_split: usize,
    /// Train on a fixed random subset of N training images (the same for every run).
    pub subset: Option<usize>,
    /// Seed of initialisation, data order and augmentation.
    pub seed: u64,
    /// Output directory.
    pub out: PathBuf,
    /// Continue the run in `out` from its last checkpoint.
    pub resume: bool,
    /// Evaluation batch size.
    pub eval_batch: usize,
    /// Read the loss back every this many steps (a GPU sync point).
    pub log_every: usize,
    /// Adapter selection.
    pub gpu: GpuOptions,
}

/// What a finished run reports.
#[derive(Debug, Clone)]
pub struct TrainSummary {
    /// Metrics of every epoch run (this process).
    pub epochs: Vec<EpochMetrics>,
    /// Best evaluation accuracy.
    pub best_acc: f64,
}

fn sgd_config(o: &TrainOptions) -> SgdConfig {
    SgdConfig {
        lr: o.lr as f32,
        momentum: o.momentum as f32,
        weight_decay: o.weight_decay as f32,
        nesterov: o.nesterov,
    }
}

fn plan_config(
    batch: usize,
    size: (usize, usize),
    mode: Mode,
    sgd: SgdConfig,
    (mean, std): Norm,
) -> PlanConfig {
    PlanConfig {
        batch,
        src: size,
        input: size,
        pad: 4,
        augment: true,
        mean,
        std,
        mode,
        sgd,
    }
}

/// Per-channel (mean, std) of the input normalisation.
pub type Norm = ([f32; 3], [f32; 3]);

/// The normalisation `resnet train` uses: CIFAR-10's training-set statistics.
pub const CIFAR10_NORM: Norm = (CIFAR10_MEAN, CIFAR10_STD);

/// Copies images `idx` of `d` into one batch (pixels, labels).
fn gather(d: &Dataset, idx: &[usize], px: &mut Vec<u8>, labels: &mut Vec<u32>) {
    px.clear();
    labels.clear();
    for &i in idx {
        px.extend_from_slice(d.image(i));
        labels.push(d.labels[i] as u32);
    }
}

/// Loss and top-1 accuracy of the model on a whole dataset (eval mode, inputs normalised with
/// `norm`), with plans built for the full batches and the remainder.
pub fn evaluate(
    gpu: &Gpu,
    m: &ModelState,
    d: &Dataset,
    batch: usize,
    norm: Norm,
) -> Result<(f64, f64)> {
    let size = (d.height, d.width);
    let sgd = SgdConfig {
        lr: 0.0,
        momentum: 0.0,
        weight_decay: 0.0,
        nesterov: false,
    };
    let batch = batch.min(d.len()).max(1);
    let full = Plan::new(gpu, m, plan_config(batch, size, Mode::Eval, sgd, norm))?;
    let rem = d.len() % batch;
    let tail = if rem > 0 {
        Some(Plan::new(
            gpu,
            m,
            plan_config(rem, size, Mode::Eval, sgd, norm),
        )?)
    } else {
        None
    };
    let (mut px, mut labels) = (Vec::new(), Vec::new());
    let idx: Vec<usize> = (0..d.len()).collect();
    for plan in [Some(&full), tail.as_ref()].into_iter().flatten() {
        plan.loss.clear(gpu)?;
    }
    for chunk in idx.chunks(batch) {
        let plan = if chunk.len() == batch {
            &full
        } else {
            tail.as_ref().expect("tail plan")
        };
        gather(d, chunk, &mut px, &mut labels);
        plan.set_batch(gpu, &px, &labels)?;
        plan.submit(gpu);
    }
    let (mut loss, mut correct, mut count) = (0.0, 0.0, 0.0);
    for plan in [Some(&full), tail.as_ref()].into_iter().flatten() {
        let a = gpu.read_blocking(&plan.loss.accum)?;
        loss += a[0] as f64;
        correct += a[1] as f64;
        count += a[2] as f64;
    }
    Ok((loss / count, correct / count))
}

/// For crash tests: after this iteration the run says so on stderr and hangs, so a test can
/// `kill -9` it at a known point in the middle of an epoch.
pub const STALL_ENV: &str = "RESNET_STALL_AT_ITERATION";

fn stall(gpu: &Gpu, iteration: u64) -> ! {
    gpu.wait();
    eprintln!("stalled after iteration {iteration} ({STALL_ENV})");
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}

struct RunState {
    epoch: usize,
    iteration: u64,
    best_acc: f64,
}

fn save_checkpoints(
    gpu: &Gpu,
    m: &ModelState,
    out: &Path,
    meta: &BTreeMap<String, String>,
    st: &RunState,
    best: bool,
    o: &TrainOptions,
) -> Result<()> {
    let mut meta = meta.clone();
    meta.insert("epoch".into(), st.epoch.to_string());
    meta.insert("iteration".into(), st.iteration.to_string());
    let weights = Checkpoint {
        tensors: pollster::block_on(m.state_dict(gpu))?,
        metadata: meta.clone(),
    };
    let mut smeta = meta;
    smeta.insert("best_acc".into(), st.best_acc.to_string());
    smeta.insert("seed".into(), o.seed.to_string());
    smeta.insert("batch_size".into(), o.batch.to_string());
    let state = Checkpoint {
        tensors: pollster::block_on(m.momentum_tensors(gpu))?,
        metadata: smeta,
    };
    // state first: a crash between the two leaves a state newer than the weights, which resume detects
    checkpoint::save(&out.join("last.state.safetensors"), &state)?;
    checkpoint::save(&out.join("last.safetensors"), &weights)?;
    if best {
        checkpoint::save(&out.join("best.safetensors"), &weights)?;
    }
    Ok(())
}

fn resume(
    gpu: &Gpu,
    m: &ModelState,
    out: &Path,
    spec: &ModelSpec,
    o: &TrainOptions,
) -> Result<RunState> {
    let wpath = out.join("last.safetensors");
    let spath = out.join("last.state.safetensors");
    let w = checkpoint::load(&wpath)?;
    let s = checkpoint::load(&spath)?;
    let get = |c: &Checkpoint, p: &Path, k: &str| -> Result<String> {
        c.metadata
            .get(k)
            .cloned()
            .ok_or_else(|| Error::Invalid(format!("{}: metadata has no '{k}'", p.display())))
    };
    let model = get(&w, &wpath, "model")?;
    if model != spec.name {
        return Err(Error::Invalid(format!(
            "--resume: {} holds a {model}, not a {}",
            wpath.display(),
            spec.name
        )));
    }
    let it_w = get(&w, &wpath, "iteration")?;
    if it_w != get(&s, &spath, "iteration")? {
        return Err(Error::Invalid(format!(
            "--resume: {} and {} are from different iterations (interrupted while saving); delete the newer one",
            wpath.display(),
            spath.display()
        )));
    }
    let seed = get(&s, &spath, "seed")?;
    if seed != o.seed.to_string() {
        return Err(Error::Invalid(format!(
            "--resume: the run in {} used --seed {seed}, not {}",
            out.display(),
            o.seed
        )));
    }
    m.load_state_dict(gpu, &w, &wpath.display().to_string())?;
    m.load_momentum(gpu, &s, &spath.display().to_string())?;
    let parse = |v: String, k: &str| {
        v.parse::<f64>()
            .map_err(|_| Error::Invalid(format!("{}: bad '{k}' {v}", spath.display())))
    };
    Ok(RunState {
        epoch: parse(get(&s, &spath, "epoch")?, "epoch")? as usize,
        iteration: parse(it_w, "iteration")? as u64,
        best_acc: parse(get(&s, &spath, "best_acc")?, "best_acc")?,
    })
}

/// Trains as `o` says on `split`; see `resnet train --help`.
pub fn train(o: &TrainOptions, split: Split) -> Result<TrainSummary> {
    let Split { mut train, test } = split;
    if let Some(n) = o.subset {
        // a fixed random subset (the same for every seed and model): image folders are sorted by
        // class, so their first N images would be one class
        let order = shuffled(train.len(), 0x5eed_5eed);
        train = train.select(&order[..n.min(train.len())]);
    }
    let eval_set = if o.val_split > 0 {
        if o.val_split >= train.len() {
            return Err(Error::Invalid(format!(
                "--val-split {} leaves no training images (of {})",
                o.val_split,
                train.len()
            )));
        }
        let order = shuffled(train.len(), o.seed ^ 0x7a1);
        let (val_idx, train_idx) = order.split_at(o.val_split);
        let pick = |idx: &[usize]| train.select(idx);
        let (v, t) = (pick(val_idx), pick(train_idx));
        train = t;
        v
    } else {
        test
    };
    if train.len() < o.batch {
        return Err(Error::Invalid(format!(
            "--batch-size {} is larger than the {} training images",
            o.batch,
            train.len()
        )));
    }
    let spec = ModelSpec::from_name(&o.model, train.classes.len())?;
    let gpu = Gpu::new_blocking(&o.gpu)?;
    let m = ModelState::new(&gpu, &spec, o.seed)?;
    let size = (train.height, train.width);
    let mut trainer = Trainer::new(
        &gpu,
        &m,
        plan_config(o.batch, size, Mode::Train, sgd_config(o), CIFAR10_NORM),
        o.seed,
    )?;
    let spe = train.len() / o.batch;
    let epochs = o.epochs.unwrap_or_else(|| (64_000usize).div_ceil(spe));
    let total = (epochs * spe) as u64;
    std::fs::create_dir_all(&o.out)
        .map_err(|e| Error::Invalid(format!("--out {}: {e}", o.out.display())))?;
    let meta = checkpoint::metadata(&spec, &train.classes);
    let mut st = if o.resume {
        resume(&gpu, &m, &o.out, &spec, o)?
    } else {
        RunState {
            epoch: 0,
            iteration: 0,
            best_acc: 0.0,
        }
    };
    trainer.iteration = st.iteration;
    m.batches_tracked.set(st.iteration);
    let plan = &trainer.plan;
    eprintln!(
        "{} on {} ({:?}); {} train / {} eval images, batch {}, {} steps/epoch, {epochs} epochs, GPU memory {} MiB (model {} + plan {}), {} dispatches/step{}",
        spec.name, gpu.info.name, gpu.info.backend, train.len(), eval_set.len(), o.batch, spe, (m.bytes() + plan.bytes) >> 20, m.bytes() >> 20, plan.bytes >> 20, plan.dispatches(),
        if o.resume { format!(", resuming after epoch {}", st.epoch) } else { String::new() }
    );
    let metrics_path = o.out.join("metrics.csv");
    // the CSV holds exactly the epochs of the checkpoint: a fresh run starts it anew, and a run
    // killed after writing an epoch's row but before its checkpoint drops that row on resume
    let kept = if o.resume && metrics_path.exists() {
        report::read_metrics(&metrics_path)?
            .into_iter()
            .filter(|r| r.epoch <= st.epoch)
            .collect()
    } else {
        Vec::new()
    };
    report::write_metrics(&metrics_path, &kept)?;
    let steps_path = o.out.join("steps.csv");
    let mut steps: Vec<_> = if o.resume {
        report::read_steps(&steps_path)?
            .into_iter()
            .filter(|r| r.iteration <= st.iteration)
            .collect()
    } else {
        Vec::new()
    };
    let mut summary = TrainSummary {
        epochs: Vec::new(),
        best_acc: st.best_acc,
    };
    let (mut px, mut labels) = (Vec::new(), Vec::new());
    let stall_at = std::env::var(STALL_ENV)
        .ok()
        .and_then(|v| v.parse::<u64>().ok());
    for epoch in st.epoch + 1..=epochs {
        let t0 = Instant::now();
        trainer.clear(&gpu)?;
        let epoch_start = st.iteration;
        let order = shuffled(train.len(), o.seed.wrapping_add(epoch as u64));
        let bar = ProgressBar::new(spe as u64).with_prefix(format!("epoch {epoch}/{epochs}"));
        bar.set_style(
            ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} ETA {eta}")
                .expect("template")
                .progress_chars("=> "),
        );
        let mut lr = o.lr;
        let mut last_line = Instant::now();
        let mut prev = [0.0f32; 3];
        for s in 0..spe {
            gather(
                &train,
                &order[s * o.batch..(s + 1) * o.batch],
                &mut px,
                &mut labels,
            );
            lr = o
                .schedule
                .lr_at(o.lr, st.iteration, total, o.warmup_iters, &o.milestones);
            trainer.step(&gpu, &m, &px, &labels, lr as f32)?;
            st.iteration = trainer.iteration;
            if stall_at == Some(st.iteration) {
                stall(&gpu, st.iteration);
            }
            if (s + 1) % o.log_every == 0 || s + 1 == spe {
                let a = pollster::block_on(trainer.read(&gpu))?;
                if !a[0].is_finite() {
                    // the GPU recorded which batch since the clear went bad first
                    let bad = epoch_start + (a[3] as u64).max(1);
                    let last = o.out.join("last.safetensors");
                    let kept = if last.exists() {
                        format!("the last good checkpoint is {}", last.display())
                    } else {
                        "no checkpoint was written yet (try a lower --lr or --warmup-iters)".into()
                    };
                    return Err(Error::Invalid(format!(
                        "loss is {} at iteration {bad} (epoch {epoch}); stopped; {kept}",
                        a[0]
                    )));
                }
                let count = a[2] - prev[2];
                steps.push(report::StepMetrics {
                    iteration: st.iteration,
                    train_loss: ((a[0] - prev[0]) / count) as f64,
                    train_acc: ((a[1] - prev[1]) / count) as f64,
                });
                prev = [a[0], a[1], a[2]];
                let ips = ((s + 1) * o.batch) as f64 / t0.elapsed().as_secs_f64();
                let msg = format!(
                    "loss {:.4} acc {:.2}% lr {lr:.4} {ips:.1} img/s",
                    a[0] / a[2],
                    100.0 * a[1] / a[2]
                );
                // without a terminal (logs, CI) the bar is hidden: a plain line every 30 s instead
                if bar.is_hidden() && last_line.elapsed().as_secs() >= 30 {
                    let eta = (spe - s - 1) as f64 * o.batch as f64 / ips;
                    eprintln!(
                        "epoch {epoch}/{epochs} step {}/{spe} {msg} ETA {eta:.0}s",
                        s + 1
                    );
                    last_line = Instant::now();
                }
                bar.set_message(msg);
            }
            bar.inc(1);
        }
        bar.finish_and_clear();
        let a = pollster::block_on(trainer.read(&gpu))?;
        let train_secs = t0.elapsed().as_secs_f64();
        let (test_loss, test_acc) = evaluate(&gpu, &m, &eval_set, o.eval_batch, CIFAR10_NORM)?;
        let best = test_acc > st.best_acc;
        st.epoch = epoch;
        st.best_acc = st.best_acc.max(test_acc);
        let row = EpochMetrics {
            epoch,
            iteration: st.iteration,
            lr,
            train_loss: (a[0] / a[2]) as f64,
            train_acc: (a[1] / a[2]) as f64,
            test_loss,
            test_acc,
            images_per_sec: (spe * o.batch) as f64 / train_secs,
            seconds: t0.elapsed().as_secs_f64(),
        };
        println!(
            "epoch {epoch}/{epochs}: train loss {:.4} acc {:.2}% | {} loss {:.4} acc {:.2}% | {:.1} img/s | {:.0}s",
            row.train_loss,
            100.0 * row.train_acc,
            if o.val_split > 0 { "val" } else { "test" },
            test_loss,
            100.0 * test_acc,
            row.images_per_sec,
            row.seconds
        );
        // the rows first: a crash before the checkpoint is renamed into place loses neither
        report::write_steps(&steps_path, &steps)?;
        report::append_metrics(&metrics_path, &row)?;
        save_checkpoints(&gpu, &m, &o.out, &meta, &st, best, o)?;
        let rows = report::read_metrics(&metrics_path)?;
        report::plot_curves(&rows, &o.out.join("curves.png"))?;
        summary.epochs.push(row);
        summary.best_acc = st.best_acc;
    }
    Ok(summary)
}
