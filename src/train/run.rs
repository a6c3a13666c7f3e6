//! The training loop of `resnet train` (native: files, progress): open a run or resume one, run
//! epochs of shuffled batches, finish each epoch with an evaluation, metrics.csv, curves.png and
//! atomic checkpoints, so that a killed run resumes exactly.

use super::evaluate::{evaluate_sums, EvalSums};
use super::options::IMAGENET_EPOCHS;
use super::progress::Progress;
use super::schedule::shuffled;
use super::{Collective, Recipe, TrainOptions, Trainer};
use crate::checkpoint::{self, Checkpoint};
use crate::data::{self, BatchJob, ImageSource, Prefetch, Sources};
use crate::dist::Dist;
use crate::error::{Error, Result};
use crate::gpu::{Gpu, GpuOptions};
use crate::model::{Family, ModelSpec, ModelState};
use crate::ops::loss::LossSums;
use crate::plan::{PlanConfig, Shard};
use crate::report::{self, EpochMetrics, StepMetrics};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a finished run reports.
#[derive(Debug, Clone)]
pub struct TrainSummary {
    /// Metrics of every epoch run (this process).
    pub epochs: Vec<EpochMetrics>,
    /// Best evaluation accuracy.
    pub best_acc: f64,
    /// Whether this process wrote the run (rank 0 of a distributed run, or the only process).
    pub root: bool,
}

/// For crash tests: after this iteration the run says so on stderr and hangs, so a test can
/// `kill -9` it at a known point in the middle of an epoch.
pub const STALL_ENV: &str = "RESNET_STALL_AT_ITERATION";

/// The iterations of He et al.'s CIFAR-10 schedule, the default length of a run.
const PAPER_ITERATIONS: usize = 64_000;

/// Trains as `o` says on `split`; see `resnet train --help`. Started by mpirun, this process
/// trains as its rank.
pub fn train(o: &TrainOptions, data: impl Into<Sources>) -> Result<TrainSummary> {
    train_as(o, data, Dist::from_env()?)
}

/// [`train`] as the rank `dist` says (rank 0 of 1: alone).
pub fn train_as(o: &TrainOptions, data: impl Into<Sources>, dist: Dist) -> Result<TrainSummary> {
    o.check()?;
    let (train_set, eval_set) = training_and_evaluation_sets(o, data.into())?;
    let mut run = Run::open(o, &*train_set, dist)?;
    if run.dist.is_root() {
        run.announce(&*train_set, &*eval_set);
    }
    let mut summary = TrainSummary {
        epochs: Vec::new(),
        best_acc: run.state.best_acc,
        root: run.dist.is_root(),
    };
    for epoch in run.state.epoch + 1..=run.epochs {
        let trained = run.run_epoch(epoch, &train_set)?;
        let row = run.finish_epoch(epoch, trained, &eval_set)?;
        summary.epochs.push(row);
        summary.best_acc = run.state.best_acc;
    }
    Ok(summary)
}

/// Fails at once unless `out` holds a run to resume (before any data is loaded or downloaded).
pub fn check_resumable(out: &Path) -> Result<()> {
    for file in ["last.safetensors", "last.state.safetensors"] {
        if !out.join(file).is_file() {
            return Err(Error::Invalid(format!(
                "--resume {}: no run to resume there (no {file}); start one with --out {}",
                out.display(),
                out.display()
            )));
        }
    }
    Ok(())
}

/// The training set (the `--subset`, less the `--val-split` images) and the set evaluated after
/// each epoch (the held-out images, else the test split).
fn training_and_evaluation_sets(
    o: &TrainOptions,
    data: Sources,
) -> Result<(Arc<dyn ImageSource>, Arc<dyn ImageSource>)> {
    let Sources { mut train, test } = data;
    if let Some(n) = o.subset {
        // a fixed random subset (the same for every seed and model): image folders are sorted by
        // class, so their first N images would be one class
        let order = shuffled(train.len(), 0x5eed_5eed);
        train = train.select(&order[..n.min(train.len())], true);
    }
    let mut eval_set = test;
    if o.val_split > 0 {
        if o.val_split >= train.len() {
            return Err(Error::Invalid(format!(
                "--val-split {} leaves no training images (of {})",
                o.val_split,
                train.len()
            )));
        }
        let order = shuffled(train.len(), o.seed ^ 0x7a1);
        let (val_idx, train_idx) = order.split_at(o.val_split);
        eval_set = train.select(val_idx, false);
        train = train.select(train_idx, true);
    }
    if train.len() < o.recipe.batch {
        return Err(Error::Invalid(format!(
            "--batch-size {} is larger than the {} training images",
            o.recipe.batch,
            train.len()
        )));
    }
    Ok((train, eval_set))
}

/// Where a run stands: the last finished epoch and its iteration, the best accuracy so far.
struct RunState {
    epoch: usize,
    iteration: u64,
    best_acc: f64,
}

/// A run being trained: the device, the model and its trainer, where it stands, its files.
struct Run<'o> {
    options: &'o TrainOptions,
    /// The options' recipe with milestones in iterations.
    recipe: Recipe,
    gpu: Gpu,
    model: ModelState,
    trainer: Trainer,
    state: RunState,
    /// The checkpoint metadata: model, classes, normalisation.
    meta: BTreeMap<String, String>,
    steps_per_epoch: usize,
    epochs: usize,
    /// The training curve read back every `--log-every` steps (steps.csv).
    steps: Vec<StepMetrics>,
    stall_at: Option<u64>,
    /// Time spent averaging gradients across ranks in this epoch.
    exchange: Duration,
    /// The processes training together (one, unless started by mpirun): this one trains on its
    /// shard of every batch, rank 0 writes the files.
    dist: Dist,
}

/// What an epoch of training returns for its metrics row.
struct EpochTraining {
    sums: LossSums,
    lr: f64,
    started: Instant,
    seconds: f64,
}

impl<'o> Run<'o> {
    /// A fresh run in `o.out`, or the run there resumed from its last checkpoint.
    fn open(o: &'o TrainOptions, train: &dyn ImageSource, dist: Dist) -> Result<Run<'o>> {
        let spec = ModelSpec::from_name(&o.model, classes_of(o, train)?)?;
        let steps_per_epoch = train.len() / o.recipe.batch;
        let epochs = o.epochs.unwrap_or(match spec.family {
            Family::Cifar => PAPER_ITERATIONS.div_ceil(steps_per_epoch),
            Family::ImageNet => IMAGENET_EPOCHS,
        });
        dist.check_same(
            "configuration (model, recipe, epochs, seed, --sync-bn, data)",
            format!(
                "{} epochs {epochs} seed {} resume {} sync-bn {} {:?} data {} images of {}x{}",
                spec.name,
                o.seed,
                o.resume,
                o.sync_bn,
                o.recipe,
                train.len(),
                train.size().0,
                train.size().1
            )
            .as_bytes(),
        )?;
        // every rank opens its own device and model; a failure on any stops them all
        let cfg = training_plan(o, train, &dist, &spec)?;
        let opened = open_here(o, &spec, (cfg, train.classes()), &dist);
        let (gpu, m, mut trainer, at) = dist.collective(opened)?;
        trainer.iteration = at.iteration;
        weights_from_root(&gpu, &m, &dist)?;
        let steps = match dist.is_root() {
            true => kept_curves(o, &at)?,
            false => Vec::new(),
        };
        Ok(Run {
            options: o,
            recipe: o.recipe.with_epochs_as_iterations(steps_per_epoch),
            meta: run_metadata(&spec, train),
            gpu,
            model: m,
            trainer,
            state: at,
            steps_per_epoch,
            epochs,
            steps,
            stall_at: std::env::var(STALL_ENV).ok().and_then(|v| v.parse().ok()),
            exchange: Duration::ZERO,
            dist,
        })
    }

    /// One line saying what is about to run and what it costs.
    fn announce(&self, train: &dyn ImageSource, eval: &dyn ImageSource) {
        let (o, m, plan) = (self.options, &self.model, &self.trainer.plan);
        eprintln!(
            "{} on {} ({:?}); {} train / {} eval images, batch {}, {} steps/epoch, {} epochs, lr {} {}, GPU memory {} MiB (model {} + plan {}), {} dispatches/step{}",
            m.spec.name, self.gpu.info.name, self.gpu.info.backend, train.len(), eval.len(), o.recipe.batch,
            self.steps_per_epoch, self.epochs, self.recipe.lr, self.recipe.schedule.describe(&self.recipe.milestones), (m.bytes() + plan.bytes) >> 20, m.bytes() >> 20, plan.bytes >> 20,
            plan.dispatches(),
            if o.resume { format!(", resuming after epoch {}", self.state.epoch) } else { String::new() }
        );
        if self.dist.size() > 1 {
            let bn = match plan.exchanges() {
                0 => "BatchNorm statistics of each rank's own images".to_string(),
                n => format!(
                    "BatchNorm statistics of the whole batch (--sync-bn, {n} exchanges a step)"
                ),
            };
            eprintln!(
                "data parallel over {} MPI ranks: {} images a step each, gradients averaged every step, {bn}",
                self.dist.size(),
                plan.config.batch
            );
        }
    }

    fn total_iterations(&self) -> u64 {
        (self.epochs * self.steps_per_epoch) as u64
    }

    /// The steps of one epoch in a shuffled order seeded by (seed, epoch), reading loss and
    /// accuracy back every `--log-every` steps.
    fn run_epoch(&mut self, epoch: usize, train: &Arc<dyn ImageSource>) -> Result<EpochTraining> {
        let (o, spe) = (self.options, self.steps_per_epoch);
        let started = Instant::now();
        self.trainer.clear(&self.gpu)?;
        let epoch_start = self.state.iteration;
        let order = shuffled(train.len(), o.seed.wrapping_add(epoch as u64));
        let label = format!("epoch {epoch}/{}", self.epochs);
        let quiet = if self.dist.is_root() {
            Duration::ZERO
        } else {
            Duration::MAX
        };
        let mut progress = Progress::new(spe as u64, label, "step", quiet);
        let local = self.trainer.plan.config.batch;
        let (mut lr, mut prev, mut msg) = (self.recipe.lr, LossSums::default(), String::new());
        // this rank's shard of every global batch (the whole batch in one process)
        let jobs = (0..spe)
            .map(|s| {
                let first = s * o.recipe.batch + self.dist.rank() * local;
                BatchJob {
                    indices: order[first..first + local].to_vec(),
                    stream: epoch as u64,
                }
            })
            .collect();
        let mut batches = prefetch(o, train, jobs)?;
        for s in 0..spe {
            // a rank whose data failed stops every rank, rather than leaving them waiting
            let batch = self
                .dist
                .collective(batches.next_batch().expect("one batch a step"))?;
            lr = self
                .recipe
                .lr_at(self.state.iteration, self.total_iterations());
            self.step(&batch.pixels, &batch.labels, lr as f32)?;
            self.state.iteration = self.trainer.iteration;
            if self.stall_at == Some(self.state.iteration) {
                stall(&self.gpu, self.state.iteration);
            }
            if (s + 1) % o.log_every == 0 || s + 1 == spe {
                let sums = self.read_sums()?;
                self.check_finite(&sums, epoch, epoch_start)?;
                self.record_curve(&sums, &prev);
                prev = sums;
                let elapsed = started.elapsed().as_secs_f64();
                let ips = ((s + 1) * o.recipe.batch) as f64 / elapsed;
                msg = format!(
                    "loss {:.4} acc {:.2}% lr {lr:.4} {ips:.1} img/s{}",
                    sums.mean_loss(),
                    100.0 * sums.accuracy(),
                    data_wait(batches.waited.as_secs_f64(), elapsed)
                );
            }
            progress.update(s as u64 + 1, &msg);
        }
        progress.finish();
        let sums = self.read_sums()?;
        let seconds = started.elapsed().as_secs_f64();
        Ok(EpochTraining {
            sums,
            lr,
            started,
            seconds,
        })
    }

    /// One optimiser step on this rank's shard; with several ranks the gradients are averaged
    /// across them between the backward pass and the optimizer.
    fn step(&mut self, px: &[u8], labels: &[u32], lr: f32) -> Result<()> {
        if self.dist.size() == 1 {
            return self.trainer.step(&self.gpu, &self.model, px, labels, lr);
        }
        let mut ranks = Timed {
            dist: &self.dist,
            took: Duration::ZERO,
        };
        pollster::block_on(self.trainer.step_with_gradients(
            &self.gpu,
            &self.model,
            (px, labels),
            lr,
            &mut ranks,
        ))?;
        self.exchange += ranks.took;
        Ok(())
    }

    /// The loss sums since the epoch began, of every rank added together.
    fn read_sums(&self) -> Result<LossSums> {
        let local = pollster::block_on(self.trainer.read(&self.gpu))?;
        if self.dist.size() == 1 {
            return Ok(local);
        }
        let all = self.dist.all(&[
            local.loss as f64,
            local.correct as f64,
            local.count as f64,
            local.first_non_finite as f64,
        ]);
        let mut sums = LossSums::default();
        for r in all.chunks(4) {
            sums.loss += r[0] as f32;
            sums.correct += r[1] as f32;
            sums.count += r[2] as f32;
            // the earliest bad batch of any rank
            let bad = r[3] as f32;
            if bad > 0.0 && (sums.first_non_finite == 0.0 || bad < sums.first_non_finite) {
                sums.first_non_finite = bad;
            }
        }
        Ok(sums)
    }

    /// Stops the run at a non-finite loss, naming the first bad iteration and what is kept.
    fn check_finite(&self, sums: &LossSums, epoch: usize, epoch_start: u64) -> Result<()> {
        if sums.loss.is_finite() {
            return Ok(());
        }
        // the GPU recorded which batch since the clear went bad first
        let bad = epoch_start + (sums.first_non_finite as u64).max(1);
        let last = self.options.out.join("last.safetensors");
        let kept = if last.exists() {
            format!("the last good checkpoint is {}", last.display())
        } else {
            "no checkpoint was written yet (try a lower --lr or --warmup-iters)".into()
        };
        Err(Error::Invalid(format!(
            "loss is {} at iteration {bad} (epoch {epoch}); stopped; {kept}",
            sums.loss
        )))
    }

    /// A steps.csv row: loss and accuracy of the steps since the previous read-back.
    fn record_curve(&mut self, sums: &LossSums, prev: &LossSums) {
        let window = sums.since(prev);
        self.steps.push(StepMetrics {
            iteration: self.state.iteration,
            train_loss: window.mean_loss() as f64,
            train_acc: window.accuracy() as f64,
        });
    }

    /// Evaluates, prints the epoch's line, then writes its rows and checkpoints (the rows first:
    /// a crash before the checkpoint is renamed into place loses neither) and the curves.
    fn finish_epoch(
        &mut self,
        epoch: usize,
        trained: EpochTraining,
        eval: &Arc<dyn ImageSource>,
    ) -> Result<EpochMetrics> {
        let o = self.options;
        let (test_loss, test_acc) = self.evaluate(eval)?;
        let best = test_acc > self.state.best_acc;
        self.state.epoch = epoch;
        self.state.best_acc = self.state.best_acc.max(test_acc);
        let row = EpochMetrics {
            epoch,
            iteration: self.state.iteration,
            lr: trained.lr,
            train_loss: trained.sums.mean_loss() as f64,
            train_acc: trained.sums.accuracy() as f64,
            test_loss,
            test_acc,
            images_per_sec: (self.steps_per_epoch * o.recipe.batch) as f64 / trained.seconds,
            seconds: trained.started.elapsed().as_secs_f64(),
        };
        self.check_ranks_agree(epoch)?;
        if !self.dist.is_root() {
            return Ok(row);
        }
        self.report_exchange(epoch, trained.seconds);
        print_epoch(
            &row,
            self.epochs,
            if o.val_split > 0 { "val" } else { "test" },
        );
        let metrics_path = o.out.join("metrics.csv");
        report::write_steps(&o.out.join("steps.csv"), &self.steps)?;
        report::append_metrics(&metrics_path, &row)?;
        self.save_checkpoints(best)?;
        report::plot_curves(
            &report::read_metrics(&metrics_path)?,
            &o.out.join("curves.png"),
        )?;
        Ok(row)
    }

    /// With several ranks: what averaging the gradients (and, with --sync-bn, exchanging the
    /// BatchNorm sums) cost this epoch: the gathers and the fixed-order sums, not the read-backs
    /// and uploads around them.
    fn report_exchange(&mut self, epoch: usize, seconds: f64) {
        let exchange = std::mem::take(&mut self.exchange);
        if self.dist.size() == 1 {
            return;
        }
        let steps = self.steps_per_epoch as f64;
        let ms = exchange.as_secs_f64() * 1e3 / steps;
        let step_ms = seconds * 1e3 / steps;
        let bn = match self.trainer.plan.exchanges() {
            0 => String::new(),
            n => format!(" and {n} BatchNorm exchanges"),
        };
        eprintln!(
            "epoch {epoch}: gradients of {} bytes a rank averaged over {} ranks{bn} in {ms:.1} ms a step ({:.1}% of the {step_ms:.0} ms step)",
            self.model.layout.params_len * 4,
            self.dist.size(),
            100.0 * ms / step_ms
        );
    }

    /// With several ranks: that every rank holds the same weights and momentum (as averaged
    /// gradients and a fixed-order sum promise), else the run stops on every rank.
    fn check_ranks_agree(&self, epoch: usize) -> Result<()> {
        if self.dist.size() == 1 {
            return Ok(());
        }
        let mut state = pollster::block_on(self.gpu.read(&self.model.params))?;
        state.extend(pollster::block_on(self.gpu.read(&self.model.momentum))?);
        let what = format!("weights after epoch {epoch} (a rank drifted apart)");
        self.dist.check_same(&what, bytemuck::cast_slice(&state))?;
        if self.dist.is_root() {
            eprintln!(
                "epoch {epoch}: weights and momentum identical on all {} ranks",
                self.dist.size()
            );
        }
        Ok(())
    }

    /// Loss and accuracy on `eval`, each rank evaluating its share and the sums added.
    fn evaluate(&self, eval: &Arc<dyn ImageSource>) -> Result<(f64, f64)> {
        let (r, n, len) = (self.dist.rank(), self.dist.size(), eval.len());
        let share = r * len / n..(r + 1) * len / n;
        let (o, root) = (self.options, self.dist.is_root());
        let s = self.dist.collective(evaluate_sums(
            &self.gpu,
            &self.model,
            eval,
            share,
            (o.eval_batch, o.workers),
            eval.normalize(),
            root,
        ))?;
        let mut sums = [s.loss, s.correct, s.count];
        self.dist.sum(&mut sums);
        let [loss, correct, count] = sums;
        Ok(EvalSums {
            loss,
            correct,
            count,
        }
        .loss_and_accuracy())
    }

    /// last.state.safetensors (momentum, position), last.safetensors and, when `best`,
    /// best.safetensors (weights and BN statistics).
    fn save_checkpoints(&self, best: bool) -> Result<()> {
        let (gpu, m, o, at) = (&self.gpu, &self.model, self.options, &self.state);
        let mut meta = self.meta.clone();
        meta.insert("epoch".into(), at.epoch.to_string());
        meta.insert("iteration".into(), at.iteration.to_string());
        let weights = Checkpoint {
            tensors: pollster::block_on(m.state_dict(gpu))?,
            metadata: meta.clone(),
        };
        meta.insert("best_acc".into(), at.best_acc.to_string());
        meta.insert("seed".into(), o.seed.to_string());
        meta.insert("batch_size".into(), o.recipe.batch.to_string());
        meta.insert("world_size".into(), self.dist.size().to_string());
        let state = Checkpoint {
            tensors: pollster::block_on(m.momentum_tensors(gpu))?,
            metadata: meta,
        };
        // state first: a crash between the two leaves a state newer than the weights, which
        // resume detects
        checkpoint::save(&o.out.join("last.state.safetensors"), &state)?;
        checkpoint::save(&o.out.join("last.safetensors"), &weights)?;
        if best {
            checkpoint::save(&o.out.join("best.safetensors"), &weights)?;
        }
        Ok(())
    }
}

/// The ranks of a step, timing what is sent between them.
struct Timed<'d> {
    dist: &'d Dist,
    took: Duration,
}

impl Collective for Timed<'_> {
    fn average(&mut self, grads: Result<Vec<f32>>) -> Result<Vec<f32>> {
        let t0 = Instant::now();
        let mut grads = self.dist.collective(grads)?;
        self.dist.average(&mut grads);
        self.took += t0.elapsed();
        Ok(grads)
    }

    fn gather(&mut self, values: Result<Vec<f64>>) -> Result<Vec<f64>> {
        let t0 = Instant::now();
        let values = self.dist.collective(values)?;
        let all = self.dist.all(&values);
        self.took += t0.elapsed();
        Ok(all)
    }
}

fn print_epoch(row: &EpochMetrics, epochs: usize, eval_name: &str) {
    println!(
        "epoch {}/{epochs}: train loss {:.4} acc {:.2}% | {eval_name} loss {:.4} acc {:.2}% | {:.1} img/s | {:.0}s",
        row.epoch,
        row.train_loss,
        100.0 * row.train_acc,
        row.test_loss,
        100.0 * row.test_acc,
        row.images_per_sec,
        row.seconds
    );
}

/// metrics.csv rewritten with exactly the epochs of the checkpoint (a fresh run starts it anew,
/// and a run killed after an epoch's row but before its checkpoint drops that row on resume),
/// and the steps.csv rows up to the checkpoint's iteration.
fn kept_curves(o: &TrainOptions, at: &RunState) -> Result<Vec<StepMetrics>> {
    let metrics_path = o.out.join("metrics.csv");
    let kept = if o.resume && metrics_path.exists() {
        report::read_metrics(&metrics_path)?
            .into_iter()
            .filter(|r| r.epoch <= at.epoch)
            .collect()
    } else {
        Vec::new()
    };
    report::write_metrics(&metrics_path, &kept)?;
    if !o.resume {
        return Ok(Vec::new());
    }
    Ok(report::read_steps(&o.out.join("steps.csv"))?
        .into_iter()
        .filter(|r| r.iteration <= at.iteration)
        .collect())
}

fn stall(gpu: &Gpu, iteration: u64) -> ! {
    gpu.wait();
    eprintln!("stalled after iteration {iteration} ({STALL_ENV})");
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// Loads the weights, momentum and position of the run in `out`, checking that it is a run of
/// the same model and seed and that its two files are from the same iteration.
fn resume(
    gpu: &Gpu,
    m: &ModelState,
    out: &Path,
    spec: &ModelSpec,
    o: &TrainOptions,
    dist: &Dist,
) -> Result<RunState> {
    check_resumable(out)?;
    let wpath = out.join("last.safetensors");
    let spath = out.join("last.state.safetensors");
    let (w, s) = (checkpoint::load(&wpath)?, checkpoint::load(&spath)?);
    let get = |c: &Checkpoint, p: &PathBuf, k: &str| -> Result<String> {
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
    // runs written before distributed training have no world_size: they were one process
    let ranks = s.metadata.get("world_size").map_or("1", String::as_str);
    if ranks != dist.size().to_string() {
        return Err(Error::Invalid(format!(
            "--resume: the run in {} was trained by {ranks} process(es), not {}; resume it with mpirun -np {ranks}",
            out.display(),
            dist.size()
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

/// This rank's device (adapter rank mod count, unless --device-index), model and training plan
/// for `batch` images a step, and where the run stands (resumed from `o.out`, or new).
fn open_here(
    o: &TrainOptions,
    spec: &ModelSpec,
    (cfg, classes): (PlanConfig, &[String]),
    dist: &Dist,
) -> Result<(Gpu, ModelState, Trainer, RunState)> {
    let gpu = Gpu::new_blocking(&GpuOptions {
        rank: dist.rank(),
        ..o.gpu.clone()
    })?;
    let m = ModelState::new(&gpu, spec, o.seed)?;
    let trainer = Trainer::new(&gpu, &m, cfg, o.seed)?;
    if dist.is_root() {
        std::fs::create_dir_all(&o.out)
            .map_err(|e| Error::Invalid(format!("--out {}: {e}", o.out.display())))?;
    }
    let at = match o.resume {
        true => resume(&gpu, &m, &o.out, spec, o, dist)?,
        false => {
            // rank 0 alone reads (or downloads) them; weights_from_root hands them on
            if dist.is_root() {
                load_pretrained(o, &gpu, &m, classes)?;
            }
            RunState {
                epoch: 0,
                iteration: 0,
                best_acc: 0.0,
            }
        }
    };
    Ok((gpu, m, trainer, at))
}

/// Images a step on each rank: the global batch divided among the ranks.
fn shard_size(batch: usize, dist: &Dist) -> Result<usize> {
    if !batch.is_multiple_of(dist.size()) {
        return Err(dist.all_ranks(format!(
            "--batch-size {batch} is the global batch and must divide among the {} MPI ranks evenly",
            dist.size()
        )));
    }
    Ok(batch / dist.size())
}

/// Every rank takes rank 0's weights and BN statistics (DDP's start), so that ranks whose
/// initialisation or checkpoint differed cannot drift apart unnoticed.
fn weights_from_root(gpu: &Gpu, m: &ModelState, dist: &Dist) -> Result<()> {
    if dist.size() == 1 {
        return Ok(());
    }
    for t in [&m.params, &m.running, &m.momentum] {
        let mut v = pollster::block_on(gpu.read(t))?;
        dist.broadcast(&mut v);
        gpu.write(t, &v)?;
    }
    Ok(())
}

/// The training plan for this rank's shard of every batch of `train`: He et al.'s pad-and-crop
/// on the GPU for the in-memory CIFAR-style sets, else the source's own (CPU) transform,
/// normalised only.
fn training_plan(
    o: &TrainOptions,
    train: &dyn ImageSource,
    dist: &Dist,
    spec: &ModelSpec,
) -> Result<PlanConfig> {
    let batch = shard_size(o.recipe.batch, dist)?;
    let mut cfg = PlanConfig::train(batch, train.size(), o.recipe.sgd(), train.normalize());
    cfg.tune = o.tune.fine_tune(spec)?;
    cfg.shard = Shard {
        first: dist.rank() * batch,
        bn_ranks: if o.sync_bn { dist.size() } else { 1 },
    };
    Ok(match train.gpu_augment() {
        true => cfg,
        false => cfg.without_augmentation(),
    })
}

/// The number of classes: the data's, which --num-classes may confirm but not contradict.
fn classes_of(o: &TrainOptions, train: &dyn ImageSource) -> Result<usize> {
    let data = train.classes().len();
    match o.tune.num_classes {
        Some(n) if n != data => Err(Error::Invalid(format!(
            "--num-classes {n}: the data has {data} classes ({})",
            train.classes().join(", ")
        ))),
        _ => Ok(data),
    }
}

/// Loads --pretrained (downloading a URL into the cache) into a fresh model, saying what it
/// took and whether `fc` was replaced.
fn load_pretrained(o: &TrainOptions, gpu: &Gpu, m: &ModelState, classes: &[String]) -> Result<()> {
    let Some(src) = &o.tune.pretrained else {
        return Ok(());
    };
    let sha = o.tune.pretrained_sha256.as_deref();
    let path = if data::is_url(src) {
        data::fetch_pretrained(src, sha, &data::default_cache_dir())?
    } else {
        let path = PathBuf::from(src);
        if let Some(want) = sha.map(data::parse_sha256).transpose()? {
            let got = data::file_sha256(&path)?;
            if got != want {
                return Err(Error::Invalid(format!(
                    "--pretrained {}: sha256 {got}, expected {want}",
                    path.display()
                )));
            }
        }
        path
    };
    let ck = checkpoint::load(&path)?;
    let what = format!("--pretrained {}", path.display());
    // a head trained on other classes is replaced even when their number is the same
    let theirs = ck.metadata.get("classes");
    let other_classes = theirs.is_some_and(|c| *c != classes.join(","));
    let loaded = pollster::block_on(m.load_pretrained(gpu, &ck, &what, other_classes))?;
    eprintln!("{what}: {} tensors loaded", loaded.loaded);
    if let Some((theirs, ours)) = loaded.new_head {
        let why = match theirs == ours {
            true => "other classes".to_string(),
            false => format!("{theirs} classes"),
        };
        eprintln!(
            "--pretrained: its fc was trained for {why}, the data has {ours}: fc is a fresh {ours}-way layer"
        );
    }
    Ok(())
}

/// The batches of `jobs`, decoded ahead on `--workers` threads where the source decodes files.
fn prefetch(
    o: &TrainOptions,
    source: &Arc<dyn ImageSource>,
    jobs: Vec<BatchJob>,
) -> Result<Prefetch> {
    let workers = if source.decodes() {
        o.workers.max(1)
    } else {
        0
    };
    Prefetch::new(
        Arc::clone(source),
        jobs,
        o.seed,
        workers,
        data::queue_depth(workers),
    )
}

/// ", waiting for data N%" when the training loop waited for decoded batches over 5% of the time.
fn data_wait(waited: f64, elapsed: f64) -> String {
    let share = waited / elapsed.max(1e-9);
    match share > 0.05 {
        true => format!(", waiting for data {:.0}% (more --workers?)", 100.0 * share),
        false => String::new(),
    }
}

/// The checkpoint metadata of a run: model, classes, normalisation, and the input size (and
/// resize) evaluation used, so that `resnet predict` needs only the checkpoint.
fn run_metadata(spec: &ModelSpec, train: &dyn ImageSource) -> BTreeMap<String, String> {
    let mut meta = checkpoint::metadata(spec, train.classes(), &train.normalize());
    let (resize, (h, w)) = train.eval_input();
    meta.insert("input_size".into(), format!("{h},{w}"));
    if let Some(r) = resize {
        meta.insert("resize".into(), r.to_string());
    }
    meta
}
