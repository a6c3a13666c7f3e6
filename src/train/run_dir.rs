//! A run's directory: its checkpoints (written atomically, state before weights), metrics.csv,
//! steps.csv and curves.png, and resuming from them. Only the process that writes the run (rank
//! 0) touches the files; the others read the checkpoints they resume from.

use crate::checkpoint::{self, Checkpoint};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::model::ModelState;
use crate::ops::amp::ScalerState;
use crate::ops::sgd::Rule;
use crate::report::{self, EpochMetrics, StepMetrics};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Where a run stands: the last finished epoch and its iteration, the best accuracy so far.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RunState {
    /// Epochs finished.
    pub epoch: usize,
    /// Steps taken.
    pub iteration: u64,
    /// The best evaluation accuracy so far.
    pub best_acc: f64,
    /// Processes that trained the run up to its last checkpoint (0: a new run). A run continues
    /// on any number: the global batches and their order do not depend on it.
    pub world_size: usize,
    /// Mixed precision: the loss scaler's state (the scale, its growth tracker, the steps
    /// skipped), saved with the checkpoint and restored on resume, as GradScaler's state_dict.
    pub loss_scale: Option<ScalerState>,
}

/// What a run's state file records beside the position, checked when it resumes.
#[derive(Debug, Clone, PartialEq)]
pub struct RunIdentity {
    /// The model's name.
    pub model: String,
    /// The seed.
    pub seed: u64,
    /// The global batch.
    pub batch_size: usize,
    /// Processes that trained it.
    pub world_size: usize,
    /// Its optimizer, whose state the run's checkpoints hold.
    pub opt: Rule,
}

/// The directory of one training run.
#[derive(Debug, Clone)]
pub struct RunDir {
    path: PathBuf,
    resume: bool,
    writes: bool,
}

const WEIGHTS: &str = "last.safetensors";
const STATE: &str = "last.state.safetensors";
/// The weights' moving average (`model_ema`), a checkpoint `eval` and `predict` take as it is.
const AVERAGE: &str = "ema.safetensors";

impl RunDir {
    /// A new run in `path` (created; files of an earlier run there are replaced).
    pub fn new(path: impl Into<PathBuf>) -> RunDir {
        RunDir {
            path: path.into(),
            resume: false,
            writes: true,
        }
    }

    /// The run in `path`, continued from its last checkpoint.
    pub fn resume(path: impl Into<PathBuf>) -> RunDir {
        RunDir {
            resume: true,
            ..RunDir::new(path)
        }
    }

    /// The same run as seen by a process that does not write it (`writes` false: a rank
    /// other than 0).
    pub fn writing(self, writes: bool) -> RunDir {
        RunDir { writes, ..self }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the run continues from its last checkpoint.
    pub fn resumes(&self) -> bool {
        self.resume
    }

    /// Fails at once unless a resumed run's directory holds a run to resume.
    pub fn check(&self) -> Result<()> {
        if !self.resume {
            return Ok(());
        }
        for file in [WEIGHTS, STATE] {
            if !self.path.join(file).is_file() {
                return Err(Error::Invalid(format!(
                    "`resume` {}: no run to resume there (no {file}); start one with `out` {}",
                    self.path.display(),
                    self.path.display()
                )));
            }
        }
        Ok(())
    }

    /// Creates the directory (the writing process). A new run removes the last checkpoints of
    /// an earlier run there (its metrics.csv starts anew too), so that a resume can never pair
    /// an old run's weights with this run's options.
    pub fn create(&self) -> Result<()> {
        if !self.writes {
            return Ok(());
        }
        let fail =
            |e: std::io::Error| Error::Invalid(format!("`out` {}: {e}", self.path.display()));
        std::fs::create_dir_all(&self.path).map_err(fail)?;
        if !self.resume {
            for file in [STATE, AVERAGE, WEIGHTS] {
                match std::fs::remove_file(self.path.join(file)) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(fail(e)),
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// The position of a new run, or loads the weights, optimizer state and position of the run
    /// resumed, checking that it is a run of the same model, seed and global batch and that its
    /// two files are from the same iteration.
    pub fn start(&self, gpu: &Gpu, m: &ModelState, id: &RunIdentity) -> Result<RunState> {
        if !self.resume {
            return Ok(RunState::default());
        }
        self.check()?;
        let (wpath, spath) = (self.path.join(WEIGHTS), self.path.join(STATE));
        let (w, s) = (checkpoint::load(&wpath)?, checkpoint::load(&spath)?);
        let model = meta(&w, &wpath, "model")?;
        if model != id.model {
            return Err(Error::Invalid(format!(
                "`resume`: {} holds a {model}, not a {}",
                wpath.display(),
                id.model
            )));
        }
        let iteration = meta(&w, &wpath, "iteration")?;
        if iteration != meta(&s, &spath, "iteration")? {
            return Err(Error::Invalid(format!(
                "`resume`: {} and {} are from different iterations (interrupted while saving); delete the newer one",
                wpath.display(),
                spath.display()
            )));
        }
        self.check_identity(&s, id)?;
        m.load_state_dict(gpu, &w, &wpath.display().to_string())?;
        m.load_optimizer_state(gpu, &s, id.opt, &spath.display().to_string())?;
        let number = |v: String, k: &str| {
            v.parse::<f64>()
                .map_err(|_| Error::Invalid(format!("{}: bad '{k}' {v}", spath.display())))
        };
        Ok(RunState {
            epoch: number(meta(&s, &spath, "epoch")?, "epoch")? as usize,
            iteration: number(iteration, "iteration")? as u64,
            best_acc: number(meta(&s, &spath, "best_acc")?, "best_acc")?,
            // runs written before distributed training have no world_size: they were one process
            world_size: s
                .metadata
                .get("world_size")
                .map_or(Ok(1.0), |v| number(v.clone(), "world_size"))?
                as usize,
            loss_scale: saved_loss_scale(&s, &spath)?,
        })
    }

    /// The seed and the global batch of the resumed run are this one's (the number of processes
    /// may differ).
    fn check_identity(&self, state: &Checkpoint, id: &RunIdentity) -> Result<()> {
        let spath = self.path.join(STATE);
        let seed = meta(state, &spath, "seed")?;
        if seed != id.seed.to_string() {
            return Err(Error::Invalid(format!(
                "`resume`: the run in {} used `seed` {seed}, not {}",
                self.path.display(),
                id.seed
            )));
        }
        // runs written before `opt` trained with SGD
        let opt = state
            .metadata
            .get("optimizer")
            .map_or("sgd", |o| o.as_str());
        if opt != id.opt.name() {
            return Err(Error::Invalid(format!(
                "`resume`: the run in {} used `opt` {opt}, not {}",
                self.path.display(),
                id.opt.name()
            )));
        }
        // the global batch sets the data order and the steps of an epoch
        if let Some(batch) = state.metadata.get("batch_size") {
            if *batch != id.batch_size.to_string() {
                return Err(Error::Invalid(format!(
                    "`resume`: the run in {} used `batch_size` {batch}, not {}",
                    self.path.display(),
                    id.batch_size
                )));
            }
        }
        Ok(())
    }

    /// metrics.csv rewritten with exactly the epochs up to `at` (a fresh run starts it anew, and
    /// a run killed after an epoch's row but before its checkpoint drops that row on resume),
    /// and the steps.csv rows up to `at`'s iteration.
    pub fn kept_curves(&self, at: &RunState) -> Result<Vec<StepMetrics>> {
        if !self.writes {
            return Ok(Vec::new());
        }
        let metrics_path = self.path.join("metrics.csv");
        let kept = if self.resume && metrics_path.exists() {
            report::read_metrics(&metrics_path)?
                .into_iter()
                .filter(|r| r.epoch <= at.epoch)
                .collect()
        } else {
            Vec::new()
        };
        report::write_metrics(&metrics_path, &kept)?;
        if !self.resume {
            return Ok(Vec::new());
        }
        Ok(report::read_steps(&self.path.join("steps.csv"))?
            .into_iter()
            .filter(|r| r.iteration <= at.iteration)
            .collect())
    }

    /// An epoch's rows, then its checkpoints (a crash before the checkpoint is renamed into
    /// place loses neither), then the curves.
    pub fn save_epoch(
        &self,
        (row, steps): (&EpochMetrics, &[StepMetrics]),
        best: bool,
        saved: impl FnOnce() -> Result<SavedRun>,
    ) -> Result<()> {
        if !self.writes {
            return Ok(());
        }
        let saved = saved()?;
        let metrics_path = self.path.join("metrics.csv");
        report::write_steps(&self.path.join("steps.csv"), steps)?;
        report::append_metrics(&metrics_path, row)?;
        self.save_checkpoints(&saved, best)?;
        report::plot_curves(
            &report::read_metrics(&metrics_path)?,
            &self.path.join("curves.png"),
        )
    }

    /// last.state.safetensors (the optimizer's state, position), last.safetensors and, when `best`,
    /// best.safetensors (weights and BN statistics).
    fn save_checkpoints(&self, saved: &SavedRun, best: bool) -> Result<()> {
        let (at, id) = (&saved.state, &saved.identity);
        let mut meta = saved.metadata.clone();
        meta.insert("epoch".into(), at.epoch.to_string());
        meta.insert("iteration".into(), at.iteration.to_string());
        let weights = Checkpoint {
            tensors: saved.weights.clone(),
            metadata: meta.clone(),
        };
        let average = saved.average.as_ref().map(|(tensors, averaged)| {
            let mut metadata = meta.clone();
            // AveragedModel's state_dict name
            metadata.insert("n_averaged".into(), averaged.to_string());
            Checkpoint {
                tensors: tensors.clone(),
                metadata,
            }
        });
        meta.insert("best_acc".into(), at.best_acc.to_string());
        meta.insert("seed".into(), id.seed.to_string());
        meta.insert("batch_size".into(), id.batch_size.to_string());
        meta.insert("world_size".into(), id.world_size.to_string());
        meta.insert("optimizer".into(), id.opt.name().into());
        if let Some(amp) = &at.loss_scale {
            // GradScaler's state_dict names
            meta.insert("scale".into(), amp.scale.to_string());
            meta.insert("_growth_tracker".into(), amp.growth_tracker.to_string());
            meta.insert("skipped_steps".into(), amp.skipped.to_string());
        }
        let state = Checkpoint {
            tensors: saved.optimizer.clone(),
            metadata: meta,
        };
        // state first: a crash between the two leaves a state newer than the weights, which
        // resume detects
        checkpoint::save(&self.path.join(STATE), &state)?;
        if let Some(average) = &average {
            checkpoint::save(&self.path.join(AVERAGE), average)?;
        }
        checkpoint::save(&self.path.join(WEIGHTS), &weights)?;
        if best {
            checkpoint::save(&self.path.join("best.safetensors"), &weights)?;
        }
        Ok(())
    }

    /// Loads the moving average of the run resumed (ema.safetensors) into `average`, checking
    /// that it is from the iteration the run resumes at.
    pub fn load_average(
        &self,
        gpu: &Gpu,
        average: &mut crate::train::ExponentialMovingAverage,
        at: &RunState,
    ) -> Result<()> {
        let path = self.path.join(AVERAGE);
        if !path.is_file() {
            return Err(Error::Invalid(format!(
                "`resume` {}: no {AVERAGE} (the run was started without `model_ema`)",
                self.path.display()
            )));
        }
        let ck = checkpoint::load(&path)?;
        if meta(&ck, &path, "iteration")? != at.iteration.to_string() {
            return Err(Error::Invalid(format!(
                "`resume`: {} is not from iteration {} as {WEIGHTS} is (interrupted while saving)",
                path.display(),
                at.iteration
            )));
        }
        let averaged = meta(&ck, &path, "n_averaged")?;
        average.averaged = averaged
            .parse()
            .map_err(|_| Error::Invalid(format!("{}: bad 'n_averaged'", path.display())))?;
        average
            .model
            .load_state_dict(gpu, &ck, &path.display().to_string())
    }

    /// What a run stopped by a non-finite loss keeps, in words.
    pub fn kept_after_divergence(&self) -> String {
        let last = self.path.join(WEIGHTS);
        if last.exists() {
            format!("the last good checkpoint is {}", last.display())
        } else {
            "no checkpoint was written yet (try a lower `lr` or `warmup_iters`)".into()
        }
    }
}

/// What an epoch's checkpoints hold: the tensors read from the GPU, the run's metadata, its
/// position and identity.
pub struct SavedRun {
    /// Weights and BatchNorm statistics with PyTorch's names.
    pub weights: Vec<crate::checkpoint::NamedTensor>,
    /// The optimizer's state (`ModelState::optimizer_tensors`).
    pub optimizer: Vec<crate::checkpoint::NamedTensor>,
    /// The weights' moving average and its update count (`model_ema`).
    pub average: Option<(Vec<crate::checkpoint::NamedTensor>, u64)>,
    /// Model, classes, normalisation, input size.
    pub metadata: BTreeMap<String, String>,
    /// Where the run stands.
    pub state: RunState,
    /// Seed, batch, processes.
    pub identity: RunIdentity,
}

/// The loss scaler's state a mixed-precision run saved, if it did.
fn saved_loss_scale(state: &Checkpoint, path: &Path) -> Result<Option<ScalerState>> {
    let Some(scale) = state.metadata.get("scale") else {
        return Ok(None);
    };
    let bad = |k: &str| Error::Invalid(format!("{}: bad '{k}'", path.display()));
    let scale: f32 = scale.parse().map_err(|_| bad("scale"))?;
    let tracker = meta(state, path, "_growth_tracker")?;
    let skipped = meta(state, path, "skipped_steps")?;
    Ok(Some(ScalerState {
        scale,
        growth_tracker: tracker.parse().map_err(|_| bad("_growth_tracker"))?,
        skipped: skipped.parse().map_err(|_| bad("skipped_steps"))?,
        steps: 0,
        below_one_at: None,
    }))
}

fn meta(c: &Checkpoint, path: &Path, key: &str) -> Result<String> {
    c.metadata
        .get(key)
        .cloned()
        .ok_or_else(|| Error::Invalid(format!("{}: metadata has no '{key}'", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A new run in the directory of an earlier one removes its last checkpoints, so that a
    /// resume cannot pair them with the new run's options; a resumed run keeps them.
    #[test]
    fn a_new_run_removes_an_earlier_runs_last_checkpoints() {
        let dir = tempfile::tempdir().unwrap();
        let files = [WEIGHTS, STATE, "best.safetensors"];
        for f in files {
            std::fs::write(dir.path().join(f), b"earlier run").unwrap();
        }
        RunDir::resume(dir.path()).create().unwrap();
        assert!(files.iter().all(|f| dir.path().join(f).exists()));
        RunDir::new(dir.path()).writing(false).create().unwrap();
        assert!(
            files.iter().all(|f| dir.path().join(f).exists()),
            "rank 1 removed files"
        );
        RunDir::new(dir.path()).create().unwrap();
        assert!(!dir.path().join(WEIGHTS).exists() && !dir.path().join(STATE).exists());
        assert!(dir.path().join("best.safetensors").exists());
    }

    /// A mixed-precision run's loss scaler (a scale, tracker and count that are not the initial
    /// ones) is saved with its checkpoint and read back by a resume; an fp32 run saves none.
    #[test]
    fn the_loss_scalers_state_survives_a_resume() {
        let gpu = Gpu::new_blocking(&crate::gpu::GpuOptions {
            tune: Some(false),
            ..Default::default()
        })
        .unwrap();
        let spec = crate::model::ModelSpec::from_name("resnet8", 10).unwrap();
        let m = ModelState::new(&gpu, &spec, 1).unwrap();
        let id = RunIdentity {
            model: "resnet8".into(),
            seed: 1,
            batch_size: 4,
            world_size: 1,
            opt: Rule::Sgd,
        };
        let scaler = ScalerState {
            scale: 512.0,
            growth_tracker: 7,
            skipped: 3,
            steps: 40,
            below_one_at: None,
        };
        for loss_scale in [Some(scaler), None] {
            let dir = tempfile::tempdir().unwrap();
            let run = RunDir::new(dir.path());
            run.create().unwrap();
            let state = RunState {
                epoch: 1,
                iteration: 40,
                best_acc: 0.25,
                world_size: 1,
                loss_scale,
            };
            let row = EpochMetrics {
                epoch: 1,
                iteration: 40,
                lr: 0.1,
                train_loss: 2.0,
                train_acc: 0.2,
                test_loss: 2.1,
                test_acc: 0.25,
                images_per_sec: 1.0,
                seconds: 1.0,
                exchange_ms: 0.0,
                exchange_hidden_ms: 0.0,
                loss_scale: loss_scale.map(|s| s.scale as f64),
                skipped_steps: 3,
                ema_test_loss: None,
                ema_test_acc: None,
                test_acc5: Some(0.75),
                ema_test_acc5: None,
                train_acc5: Some(0.5),
            };
            run.save_epoch((&row, &[]), false, || {
                Ok(SavedRun {
                    weights: pollster::block_on(m.state_dict(&gpu))?,
                    optimizer: pollster::block_on(m.momentum_tensors(&gpu))?,
                    average: None,
                    metadata: BTreeMap::from([("model".into(), "resnet8".into())]),
                    state,
                    identity: id.clone(),
                })
            })
            .unwrap();
            let resumed = RunDir::resume(dir.path()).start(&gpu, &m, &id).unwrap();
            // the GPU counts steps itself: a resume sets them from the iteration
            let want = loss_scale.map(|s| ScalerState { steps: 0, ..s });
            assert_eq!(resumed.loss_scale, want);
            assert_eq!(resumed.iteration, 40);
            if loss_scale.is_none() {
                runs_before_opt_resume_as_sgd(&gpu, &m, dir.path(), &id);
            }
        }
    }

    /// A run written before `opt` existed (no `optimizer` in its state's metadata) trained
    /// with SGD: it resumes as SGD, and refuses AdamW naming both.
    fn runs_before_opt_resume_as_sgd(gpu: &Gpu, m: &ModelState, dir: &Path, id: &RunIdentity) {
        let path = dir.join(STATE);
        let mut state = checkpoint::load(&path).unwrap();
        assert_eq!(state.metadata.remove("optimizer").as_deref(), Some("sgd"));
        checkpoint::save(&path, &state).unwrap();
        RunDir::resume(dir).start(gpu, m, id).unwrap();
        let adamw = RunIdentity {
            opt: Rule::AdamW,
            ..id.clone()
        };
        let err = RunDir::resume(dir)
            .start(gpu, m, &adamw)
            .unwrap_err()
            .to_string();
        assert!(err.contains("`opt` sgd, not adamw"), "{err}");
    }
}
