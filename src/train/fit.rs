//! The training loop, as the paper describes it: open a run (or resume one), then for each
//! epoch run the steps over a shuffled order, evaluate, and save. Three parts are injected:
//! the [`Ranks`] training together (one process, or a data-parallel run), the [`RunDir`] that
//! holds the files, and the [`Events`] that hear how it goes. Setting up (data, device, model,
//! plan) is in `setup.rs`.

use super::events::{Event, Events, ExchangeCost, RunInfo};
use super::ranks::{Exchanged, Ranks};
use super::run_dir::{RunDir, RunState, SavedRun};
use super::schedule::{repeated_augmentation, shuffled};
use super::setup::{self, Opened};
use super::{ExponentialMovingAverage, Scores, TrainConfig};
use crate::data::{BatchJob, ImageSource, Sources};
use crate::error::{Error, Result};
use crate::ops::loss::LossSums;
use crate::report::{EpochMetrics, StepMetrics};
use std::sync::Arc;
use std::time::Instant;

/// What a finished run reports.
#[derive(Debug, Clone)]
pub struct TrainSummary {
    /// Metrics of every epoch run (this process).
    pub epochs: Vec<EpochMetrics>,
    /// Best evaluation accuracy.
    pub best_acc: f64,
}

/// Trains as `config` says on `data`, in `dir`, as one of `ranks`, telling `events` how it goes.
pub fn fit(
    config: &TrainConfig,
    data: impl Into<Sources>,
    ranks: &dyn Ranks,
    dir: RunDir,
    events: &mut dyn Events,
) -> Result<TrainSummary> {
    config.check()?;
    dir.check()?;
    let dir = dir.writing(ranks.is_root());
    let (train, eval) = setup::training_and_evaluation_sets(config, data.into())?;
    let mut run = Run::open(config, &*train, ranks, dir, events)?;
    for w in run.opened.gpu.take_warnings() {
        run.events.emit(Event::Warning(w));
    }
    run.events.emit(Event::Started(run.info(&*train, &*eval)));
    let mut summary = TrainSummary {
        epochs: Vec::new(),
        best_acc: run.state.best_acc,
    };
    for epoch in run.state.epoch + 1..=run.epochs {
        let trained = run.train_epoch(epoch, &train)?;
        let evaluated = run.evaluate(&eval, false)?;
        let averaged = match run.ema.is_some() {
            true => Some(run.evaluate(&eval, true)?),
            false => None,
        };
        for w in run.opened.gpu.take_warnings() {
            run.events.emit(Event::Warning(w));
        }
        let row = run.finish_epoch(epoch, trained, (evaluated, averaged))?;
        summary.epochs.push(row);
        summary.best_acc = run.state.best_acc;
    }
    Ok(summary)
}

/// A run being trained: what it was told, its device, model and trainer, where it stands.
struct Run<'a> {
    config: &'a TrainConfig,
    ranks: &'a dyn Ranks,
    dir: RunDir,
    events: &'a mut dyn Events,
    opened: Opened,
    state: RunState,
    epochs: usize,
    /// The training curve read back every `log_every` steps (steps.csv).
    steps: Vec<StepMetrics>,
    /// What exchanging with the other ranks cost in this epoch.
    exchange: Exchanged,
    /// The weights' moving average (`model_ema`).
    ema: Option<ExponentialMovingAverage>,
}

/// What an epoch of training returns for its metrics row.
struct EpochTraining {
    sums: LossSums,
    lr: f64,
    started: Instant,
    seconds: f64,
}

impl<'a> Run<'a> {
    fn open(
        config: &'a TrainConfig,
        train: &dyn ImageSource,
        ranks: &'a dyn Ranks,
        dir: RunDir,
        events: &'a mut dyn Events,
    ) -> Result<Run<'a>> {
        let opened = setup::open(config, train, ranks, &dir, events)?;
        let state = opened.state;
        let epochs = config.epochs_or_default(opened.model.spec.family, opened.steps_per_epoch);
        opened.recipe.check_schedule(epochs)?;
        // a rank that cannot set up the average stops every rank, rather than leaving them waiting
        let ema = ranks.together(Self::open_average(config, &opened, &dir, &state, epochs))?;
        Ok(Run {
            ema,
            steps: dir.kept_curves(&state)?,
            config,
            ranks,
            dir,
            events,
            opened,
            state,
            epochs,
            exchange: Exchanged::default(),
        })
    }

    /// The moving average of `model_ema`: a copy of the weights, or the resumed run's average.
    fn open_average(
        config: &TrainConfig,
        opened: &Opened,
        dir: &RunDir,
        state: &RunState,
        epochs: usize,
    ) -> Result<Option<ExponentialMovingAverage>> {
        let Some(cfg) = config.model_ema else {
            return Ok(None);
        };
        let decay = cfg.update_decay(opened.recipe.batch_size, epochs);
        let mut average = ExponentialMovingAverage::new(&opened.gpu, &opened.model, decay)?;
        if dir.resumes() {
            dir.load_average(&opened.gpu, &mut average, state)?;
        }
        Ok(Some(average))
    }

    /// After step `s` of an epoch: the moving average's update on its steps (torchvision's
    /// `i % model_ema_steps == 0`), restarted while the learning rate warms up.
    fn update_average(&mut self, s: usize) {
        let (Some(average), Some(ema)) = (&mut self.ema, self.config.model_ema) else {
            return;
        };
        if !s.is_multiple_of(ema.steps) {
            return;
        }
        let o = &self.opened;
        average.update(&o.gpu, &o.model);
        let step = self.state.iteration - 1;
        if o.recipe.warming_up(step, o.steps_per_epoch as u64) {
            average.averaged = 0;
        }
    }

    fn info(&self, train: &dyn ImageSource, eval: &dyn ImageSource) -> RunInfo {
        let (o, r) = (&self.opened, &self.opened.recipe);
        let plan = &o.trainer.plan;
        RunInfo {
            model: o.model.spec.name.clone(),
            adapter: format!("{} ({:?})", o.gpu.info.name, o.gpu.info.backend),
            train_images: train.len(),
            eval_images: eval.len(),
            batch_size: r.batch_size,
            steps_per_epoch: o.steps_per_epoch,
            epochs: self.epochs,
            lr: r.lr,
            schedule: r.describe_schedule(),
            memory: (
                o.model.bytes() + self.ema.as_ref().map_or(0, |a| a.bytes()),
                plan.bytes,
            ),
            dispatches: plan.dispatches(),
            resumed_after: self.dir.resumes().then_some(self.state.epoch),
            ranks: (self.ranks.size(), plan.config.batch),
            bn_exchanges: plan.exchanges(),
        }
    }

    fn total_iterations(&self) -> u64 {
        (self.epochs * self.opened.steps_per_epoch) as u64
    }

    /// The steps of one epoch in a shuffled order seeded by (seed, epoch), reading loss and
    /// accuracy back every `log_every` steps.
    fn train_epoch(&mut self, epoch: usize, train: &Arc<dyn ImageSource>) -> Result<EpochTraining> {
        let (c, steps) = (self.config, self.opened.steps_per_epoch);
        let started = Instant::now();
        self.opened.trainer.clear(&self.opened.gpu)?;
        let epoch_start = self.state.iteration;
        let order = self.epoch_order(train.len(), epoch);
        let mut batches = setup::prefetch(c, train, self.batch_jobs(&order, epoch))?;
        let (mut lr, mut prev, mut status) =
            (self.opened.recipe.lr, LossSums::default(), String::new());
        for s in 0..steps {
            // a rank whose data failed stops every rank, rather than leaving them waiting
            let batch = self
                .ranks
                .together(batches.next_batch().expect("one batch a step"))?;
            lr = self.opened.recipe.lr_at(
                self.state.iteration,
                self.total_iterations(),
                self.opened.steps_per_epoch as u64,
            );
            let o = &mut self.opened;
            let step = (&batch.pixels[..], &batch.labels[..]);
            let cost = self
                .ranks
                .step(&mut o.trainer, (&o.gpu, &o.model), step, lr as f32)?;
            self.exchange.time += cost.time;
            self.exchange.hidden += cost.hidden;
            self.exchange.gradient_bytes += cost.gradient_bytes;
            self.state.iteration = o.trainer.iteration;
            self.update_average(s);
            if (s + 1) % c.log_every == 0 || s + 1 == steps {
                let sums = self.read_sums()?;
                self.check_finite(&sums, epoch, epoch_start)?;
                self.check_loss_scale(epoch)?;
                self.record_curve(&sums, &prev);
                prev = sums;
                let elapsed = started.elapsed().as_secs_f64();
                let ips = ((s + 1) * c.recipe.batch_size) as f64 / elapsed;
                status = format!(
                    "loss {:.4} acc {:.2}% lr {lr:.4} {ips:.1} img/s{}",
                    sums.mean_loss(),
                    100.0 * sums.accuracy(),
                    data_wait(batches.waited.as_secs_f64(), elapsed)
                );
            }
            let warnings = train.take_warnings().into_iter();
            for w in warnings.chain(self.opened.gpu.take_warnings()) {
                self.events.emit(Event::Warning(w));
            }
            self.events.emit(Event::Training {
                epoch,
                epochs: self.epochs,
                done: s + 1,
                steps,
                iteration: self.state.iteration,
                status: status.clone(),
            });
        }
        self.events.emit(Event::TrainingDone);
        let sums = self.read_sums()?;
        let seconds = started.elapsed().as_secs_f64();
        Ok(EpochTraining {
            sums,
            lr,
            started,
            seconds,
        })
    }

    /// The images of an epoch's global batches in order, with which repeat of its image each
    /// is: a permutation of `len` seeded by (seed, epoch), or the repeated-augmentation
    /// sampler's order made from it.
    fn epoch_order(&self, len: usize, epoch: usize) -> Vec<(usize, u32)> {
        let perm = shuffled(len, self.config.seed.wrapping_add(epoch as u64));
        match self.config.ra_reps {
            Some(reps) => {
                let batch = self.config.recipe.batch_size;
                let layout = (self.ranks.size(), batch, self.opened.steps_per_epoch);
                repeated_augmentation(&perm, reps, layout)
            }
            None => perm.into_iter().map(|i| (i, 0)).collect(),
        }
    }

    /// This rank's shard of every global batch of an epoch in `order`.
    fn batch_jobs(&self, order: &[(usize, u32)], epoch: usize) -> Vec<BatchJob> {
        let (batch, shard) = (self.config.recipe.batch_size, &self.opened.shard);
        (0..self.opened.steps_per_epoch)
            .map(|s| {
                let mine = &order[s * batch + shard.start..s * batch + shard.end];
                BatchJob {
                    indices: mine.iter().map(|e| e.0).collect(),
                    stream: epoch as u64,
                    repeats: mine.iter().map(|e| e.1).collect(),
                }
            })
            .collect()
    }

    /// The loss sums since the epoch began, of every rank added together.
    fn read_sums(&self) -> Result<LossSums> {
        let local = pollster::block_on(self.opened.trainer.read(&self.opened.gpu))?;
        Ok(self.ranks.reduce(local))
    }

    /// Stops the run at a non-finite loss, naming the first bad iteration and what is kept.
    fn check_finite(&self, sums: &LossSums, epoch: usize, epoch_start: u64) -> Result<()> {
        if sums.loss.is_finite() {
            return Ok(());
        }
        // the GPU recorded which batch since the clear went bad first
        let bad = epoch_start + (sums.first_non_finite as u64).max(1);
        Err(Error::Invalid(format!(
            "loss is {} at iteration {bad} (epoch {epoch}); stopped; {}",
            sums.loss,
            self.dir.kept_after_divergence()
        )))
    }

    /// Mixed precision: reads the loss scaler's state into the run's, and stops the run once
    /// the scale fell below 1 (gradients overflow f16 even unscaled: the run diverges), naming
    /// the step.
    fn check_loss_scale(&mut self, epoch: usize) -> Result<()> {
        let o = &self.opened;
        let Some(amp) = pollster::block_on(o.trainer.plan.loss_scale_state(&o.gpu))? else {
            return Ok(());
        };
        self.state.loss_scale = Some(amp);
        match amp.below_one_at {
            None => Ok(()),
            Some(step) => Err(Error::Invalid(format!(
                "the loss scale fell below 1 at iteration {step} (epoch {epoch}; {} steps skipped \
                 for inf or NaN gradients so far): the gradients overflow f16 even unscaled, the \
                 run diverges; stopped; {}",
                amp.skipped,
                self.dir.kept_after_divergence()
            ))),
        }
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

    /// Loss and accuracies on `eval` of the model, or of its moving average (`averaged`), each
    /// rank evaluating its share and the sums added.
    fn evaluate(&mut self, eval: &Arc<dyn ImageSource>, averaged: bool) -> Result<Scores> {
        let (o, c) = (&self.opened, self.config);
        let model = match (averaged, &self.ema) {
            (true, Some(average)) => &average.model,
            _ => &o.model,
        };
        let share = self.ranks.share(eval.len());
        let settings = (c.eval_batch_size, c.workers);
        let sums = super::evaluate::evaluate_sums(
            (&o.gpu, model),
            eval,
            share,
            settings,
            eval.normalize(),
            &mut *self.events,
        );
        let s = self.ranks.together(sums)?;
        let mut sums = [s.loss, s.correct, s.top5, s.count];
        self.ranks.sum(&mut sums);
        let [loss, correct, top5, count] = sums;
        let sums = super::evaluate::EvalSums {
            loss,
            correct,
            top5,
            count,
        };
        Ok(sums.scores())
    }

    /// The epoch's row and events, then its files; with several ranks, a check that they all
    /// hold the same weights.
    fn finish_epoch(
        &mut self,
        epoch: usize,
        trained: EpochTraining,
        (tested, averaged): (Scores, Option<Scores>),
    ) -> Result<EpochMetrics> {
        let test_acc = tested.accuracy;
        let best = test_acc > self.state.best_acc;
        let exchange = self.take_exchange_cost(epoch, trained.seconds);
        self.state.epoch = epoch;
        self.state.world_size = self.ranks.size();
        self.state.best_acc = self.state.best_acc.max(test_acc);
        let row = EpochMetrics {
            epoch,
            iteration: self.state.iteration,
            lr: trained.lr,
            train_loss: trained.sums.mean_loss() as f64,
            train_acc: trained.sums.accuracy() as f64,
            test_loss: tested.loss,
            test_acc,
            images_per_sec: (self.opened.steps_per_epoch * self.config.recipe.batch_size) as f64
                / trained.seconds,
            seconds: trained.started.elapsed().as_secs_f64(),
            exchange_ms: exchange.ms_per_step.0,
            exchange_hidden_ms: exchange.hidden_ms_per_step,
            loss_scale: self.state.loss_scale.map(|s| s.scale as f64),
            skipped_steps: self.state.loss_scale.map_or(0, |s| s.skipped as u64),
            ema_test_loss: averaged.map(|a| a.loss),
            ema_test_acc: averaged.map(|a| a.accuracy),
            test_acc5: Some(tested.accuracy5),
            ema_test_acc5: averaged.map(|a| a.accuracy5),
            train_acc5: Some((trained.sums.top5 / trained.sums.count) as f64),
        };
        self.check_ranks_agree(epoch)?;
        self.events.emit(Event::Exchanged(exchange));
        let evaluated = if self.config.val_split > 0 {
            "val"
        } else {
            "test"
        };
        self.events.emit(Event::Epoch {
            row: row.clone(),
            epochs: self.epochs,
            evaluated,
        });
        let (o, ema) = (&self.opened, &self.ema);
        self.dir.save_epoch((&row, &self.steps), best, || {
            let average = match ema {
                Some(a) => Some((pollster::block_on(a.model.state_dict(&o.gpu))?, a.averaged)),
                None => None,
            };
            Ok(SavedRun {
                average,
                weights: pollster::block_on(o.model.state_dict(&o.gpu))?,
                optimizer: pollster::block_on(o.model.optimizer_tensors(&o.gpu, o.identity.opt))?,
                metadata: o.metadata.clone(),
                state: self.state,
                identity: o.identity.clone(),
            })
        })?;
        Ok(row)
    }

    /// What exchanging with the other ranks (gradients, and with SyncBatchNorm the BatchNorm
    /// sums) cost this epoch: the transfers and the fixed-order sums, not the read-backs and
    /// uploads around them. Starts the next epoch's count from zero.
    fn take_exchange_cost(&mut self, epoch: usize, seconds: f64) -> ExchangeCost {
        let exchange = std::mem::take(&mut self.exchange);
        let steps = self.opened.steps_per_epoch as f64;
        let per_step = |d: std::time::Duration| d.as_secs_f64() * 1e3 / steps;
        ExchangeCost {
            epoch,
            gradient_bytes: self.opened.model.layout.params_len * 4,
            received_per_step: exchange.gradient_bytes / self.opened.steps_per_epoch as u64,
            ranks: self.ranks.size(),
            bn_exchanges: self.opened.trainer.plan.exchanges(),
            buckets: self.opened.trainer.buckets().len().max(1),
            ms_per_step: (per_step(exchange.time), seconds * 1e3 / steps),
            hidden_ms_per_step: per_step(exchange.hidden),
        }
    }

    /// That every rank holds the same weights and optimizer state (as averaged gradients and a
    /// fixed-order sum promise), else the run stops on every rank.
    fn check_ranks_agree(&mut self, epoch: usize) -> Result<()> {
        let (gpu, m) = (&self.opened.gpu, &self.opened.model);
        let state = || -> Result<Vec<u8>> {
            let mut v = pollster::block_on(gpu.read(&m.params))?;
            v.extend(pollster::block_on(gpu.read(&m.momentum))?);
            if let Some(adaptive) = m.adaptive_if_any() {
                v.extend(pollster::block_on(gpu.read(&adaptive.second_moment))?);
            }
            Ok(bytemuck::cast_slice(&v).to_vec())
        };
        let what = format!("weights after epoch {epoch} (a rank drifted apart)");
        if self.ranks.check_agree(&what, &state)? {
            let ranks = self.ranks.size();
            self.events.emit(Event::RanksAgree { epoch, ranks });
        }
        Ok(())
    }
}

/// ", waiting for data N%" when the training loop waited for decoded batches over 5% of the time.
fn data_wait(waited: f64, elapsed: f64) -> String {
    let share = waited / elapsed.max(1e-9);
    match share > 0.05 {
        true => format!(", waiting for data {:.0}% (more `workers`?)", 100.0 * share),
        false => String::new(),
    }
}
