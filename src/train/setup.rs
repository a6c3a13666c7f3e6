//! Setting a training run up: its training and evaluation sets, then on every rank the device,
//! the model (random, pretrained, or resumed) and the training plan for the rank's shard.

use super::events::{Event, Events};
use super::ranks::Ranks;
use super::run_dir::{RunDir, RunIdentity, RunState};
use super::schedule::shuffled;
use super::step::Trainer;
use super::{Recipe, TrainConfig};
use crate::checkpoint::{self, Checkpoint};
use crate::data::{self, BatchJob, ImageSource, Prefetch, Sources};
use crate::error::{Error, Result};
use crate::gpu::{Gpu, GpuOptions};
use crate::model::{ModelSpec, ModelState};
use crate::ops::amp::ScalerState;
use crate::plan::{PlanConfig, Shard};
use crate::preprocess::RandomErasing;
use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;

/// The training set (the `subset`, less the `val_split` images) and the set evaluated after
/// each epoch (the held-out images, else the test split).
pub(super) fn training_and_evaluation_sets(
    c: &TrainConfig,
    data: Sources,
) -> Result<(Arc<dyn ImageSource>, Arc<dyn ImageSource>)> {
    let Sources { mut train, test } = data;
    if let Some(n) = c.subset {
        // a fixed random subset (the same for every seed and model): image folders are sorted by
        // class, so their first N images would be one class
        let order = shuffled(train.len(), 0x5eed_5eed);
        train = train.select(&order[..n.min(train.len())], true);
    }
    let mut eval_set = test;
    if c.val_split > 0 {
        if c.val_split >= train.len() {
            return Err(Error::Invalid(format!(
                "`val_split` {} leaves no training images (of {})",
                c.val_split,
                train.len()
            )));
        }
        let order = shuffled(train.len(), c.seed ^ 0x7a1);
        let (val_idx, train_idx) = order.split_at(c.val_split);
        eval_set = train.select(val_idx, false);
        train = train.select(train_idx, true);
    }
    if let Some(policy) = c.auto_augment {
        train = data::auto_augmented(train, policy, c.interpolation)?;
    }
    if train.len() < c.recipe.batch_size {
        return Err(Error::Invalid(format!(
            "`batch_size` {} is larger than the {} training images",
            c.recipe.batch_size,
            train.len()
        )));
    }
    Ok((train, eval_set))
}

/// A run's device, model and trainer on this rank, where it stands, and what its files record.
pub(super) struct Opened {
    pub gpu: Gpu,
    pub model: ModelState,
    pub trainer: Trainer,
    pub state: RunState,
    /// The recipe with milestones in iterations.
    pub recipe: Recipe,
    pub steps_per_epoch: usize,
    /// This rank's images of every global batch.
    pub shard: Range<usize>,
    /// The checkpoints' metadata: model, classes, normalisation, input size.
    pub metadata: BTreeMap<String, String>,
    pub identity: RunIdentity,
}

/// Opens the run on every rank (a failure on any stops them all): checks that the ranks agree
/// on what they train, reads what the user gave (`pretrained`) before planning GPU memory, then
/// the device, the model, the plan, and the position (resumed, or new); every rank then takes
/// rank 0's weights.
pub(super) fn open(
    c: &TrainConfig,
    train: &dyn ImageSource,
    ranks: &dyn Ranks,
    dir: &RunDir,
    events: &mut dyn Events,
) -> Result<Opened> {
    let spec = ModelSpec::from_name(&c.model, classes_of(c, train)?)?;
    let steps_per_epoch = train.len() / c.recipe.batch_size;
    let what = format!(
        "{} epochs {} seed {} resume {} sync-bn {} bucket {} {:?} ema {:?} zero-init {} erase {} {:?} auto-augment {:?} {:?} ra {:?} data {} images of {}x{}",
        spec.name,
        c.epochs_or_default(spec.family, steps_per_epoch),
        c.seed,
        dir.resumes(),
        c.sync_bn,
        c.bucket_floats()?,
        c.recipe,
        c.model_ema,
        c.zero_init_residual,
        c.random_erase,
        c.auto_augment,
        c.interpolation,
        c.mixing,
        c.ra_reps,
        train.len(),
        train.size().0,
        train.size().1
    );
    let what_for =
        "configuration (model, recipe, epochs, seed, sync_bn, bucket_mb, model_ema, augmentation, data)";
    ranks.check_agree(what_for, &|| Ok(what.clone().into_bytes()))?;
    let shard = ranks.shard(c.recipe.batch_size)?;
    let plan = training_plan(c, train, ranks, shard.clone(), &spec)?;
    // rank 0 alone reads (or downloads) them; broadcast_tensors hands them on
    let pretrained = match ranks.is_root() && !dir.resumes() {
        true => ranks.together(read_pretrained(c, &mut |t| events.emit(Event::Download(t)))),
        false => ranks.together(Ok(None)),
    }?;
    let opened = open_here(c, (&spec, train), (ranks, plan), dir, pretrained);
    let (gpu, model, trainer, state, notes) = ranks.together(opened)?;
    // every rank reads the run it resumes: copies that differ (a machine's stale copy of the
    // directory) would run different loops
    let position = format!("{} {}", state.epoch, state.iteration).into_bytes();
    let what = "position of the resumed run (every rank reads `resume`'s directory: give it a file system all machines share)";
    ranks.check_agree(what, &|| Ok(position.clone()))?;
    for n in notes {
        events.emit(Event::Note(n));
    }
    // about the run, not this rank: said once
    if state.world_size != 0 && state.world_size != ranks.size() && ranks.is_root() {
        events.emit(other_world_size(c, dir, state.world_size, ranks.size()));
    }
    let mut shared = vec![&model.params, &model.running, &model.momentum];
    shared.extend(model.adaptive_if_any().map(|a| &a.second_moment));
    ranks.broadcast_tensors(&gpu, &shared)?;
    Ok(Opened {
        recipe: c.recipe.with_epochs_as_iterations(steps_per_epoch),
        metadata: run_metadata(&spec, train),
        identity: identity(c, &spec, ranks),
        gpu,
        model,
        trainer,
        state,
        steps_per_epoch,
        shard,
    })
}

/// What changes when a run trained by `before` processes continues on `now`: the global batches
/// and their order stay; BatchNorm's batch statistics cover batch/`now` images unless they are
/// synchronised (then the run continues as one process would).
fn other_world_size(c: &TrainConfig, dir: &RunDir, before: usize, now: usize) -> Event {
    let batch = c.recipe.batch_size;
    let head = format!(
        "the run in {} was trained by {before} process(es) and continues on {now}, with the same global batches of {batch} in the same order",
        dir.path().display()
    );
    match c.sync_bn {
        true => Event::Note(format!(
            "{head}; `sync_bn`: BatchNorm's statistics still cover all {batch} images"
        )),
        false => Event::Warning(format!(
            "{head}; BatchNorm's batch statistics now cover {} images per process, not {}",
            batch / now,
            batch / before
        )),
    }
}

fn identity(c: &TrainConfig, spec: &ModelSpec, ranks: &dyn Ranks) -> RunIdentity {
    RunIdentity {
        model: spec.name.clone(),
        seed: c.seed,
        batch_size: c.recipe.batch_size,
        world_size: ranks.size(),
        opt: c.recipe.opt,
    }
}

type OpenedHere = (Gpu, ModelState, Trainer, RunState, Vec<String>);

/// This rank's device (its rank on the machine modulo the adapters, unless told the index),
/// model (with the pretrained weights, checked before the plan is built) and training plan,
/// and where the run stands (resumed from `dir`, or new).
fn open_here(
    c: &TrainConfig,
    (spec, train): (&ModelSpec, &dyn ImageSource),
    (ranks, plan): (&dyn Ranks, PlanConfig),
    dir: &RunDir,
    pretrained: Option<(Checkpoint, String)>,
) -> Result<OpenedHere> {
    let gpu = Gpu::new_blocking(&GpuOptions {
        local_rank: ranks.local_rank(),
        // every rank times its own device; one says so
        on_measured: match ranks.is_root() {
            true => c.gpu.on_measured.clone(),
            false => Default::default(),
        },
        ..c.gpu.clone()
    })?;
    let m = ModelState::new(&gpu, spec, c.seed)?;
    if c.zero_init_residual {
        m.zero_init_residual(&gpu)?;
    }
    let notes = match pretrained {
        Some((ck, what)) => load_pretrained(&gpu, &m, (&ck, what), train.classes())?,
        None => Vec::new(),
    };
    if c.recipe.opt.second_moment().is_some() {
        // the model's, allocated here so that the plan's bytes do not count them
        m.adaptive(&gpu)?;
    }
    let mut trainer = Trainer::new(&gpu, &m, plan, c.seed)?;
    if ranks.size() > 1 {
        trainer.bucket_gradients(&m, c.bucket_floats()?);
    }
    dir.create()?;
    let mut state = dir.start(&gpu, &m, &identity(c, spec, ranks))?;
    trainer.iteration = state.iteration;
    if let Some(cfg) = &trainer.plan.config.loss_scale {
        // a new run starts at the initial scale; a resumed one where its checkpoint stood
        let scaler = ScalerState {
            steps: state.iteration as u32,
            ..state.loss_scale.unwrap_or(ScalerState::new(cfg))
        };
        trainer.plan.set_loss_scale_state(&gpu, &scaler)?;
        state.loss_scale = Some(scaler);
    }
    Ok((gpu, m, trainer, state, notes))
}

/// The training plan for this rank's shard of every batch of `train`: He et al.'s pad-and-crop
/// on the GPU for the in-memory CIFAR-style sets, else the source's own (CPU) transform,
/// normalised only.
fn training_plan(
    c: &TrainConfig,
    train: &dyn ImageSource,
    ranks: &dyn Ranks,
    shard: Range<usize>,
    spec: &ModelSpec,
) -> Result<PlanConfig> {
    let sgd = c.recipe.sgd();
    let mut cfg = PlanConfig::train(shard.len(), train.size(), sgd, train.preprocess());
    if c.random_erase > 0.0 {
        cfg.preprocess.erase = Some(RandomErasing { p: c.random_erase });
    }
    if c.mixing.is_on() {
        cfg.preprocess.mix = Some(c.mixing);
    }
    cfg.fine_tune = c.fine_tuning.plan_settings(spec)?;
    // torch.amp: the scaled loss's gradients keep small values in f16's range
    cfg.loss_scale = c.loss_scale.for_precision(c.gpu.precision);
    cfg.clip_grad_norm = c.recipe.clip_grad_norm;
    cfg.shard = Shard {
        first: shard.start,
        bn_ranks: if c.sync_bn { ranks.size() } else { 1 },
    };
    Ok(cfg)
}

/// The number of classes: the data's, which `num_classes` may confirm but not contradict.
fn classes_of(c: &TrainConfig, train: &dyn ImageSource) -> Result<usize> {
    let data = train.classes().len();
    match c.fine_tuning.num_classes {
        Some(n) if n != data => Err(Error::Invalid(format!(
            "`num_classes` {n}: the data has {data} classes ({})",
            train.classes().join(", ")
        ))),
        _ => Ok(data),
    }
}

/// The `pretrained` checkpoint (a URL downloaded into the cache first, the checksum checked)
/// and how to name it in messages.
fn read_pretrained(
    c: &TrainConfig,
    progress: &mut dyn FnMut(data::Transfer),
) -> Result<Option<(Checkpoint, String)>> {
    let Some(src) = &c.fine_tuning.pretrained else {
        return Ok(None);
    };
    let (path, _) = data::weights_file(
        ("pretrained", src),
        Some(&c.model),
        c.fine_tuning.pretrained_sha256.as_deref(),
        &data::default_cache_dir(),
        progress,
    )?;
    let ck = checkpoint::load(&path)?;
    Ok(Some((ck, format!("`pretrained` {}", path.display()))))
}

/// Loads a pretrained checkpoint into a fresh model; returns what to say about it (what it
/// took, whether `fc` was replaced).
fn load_pretrained(
    gpu: &Gpu,
    m: &ModelState,
    (ck, what): (&Checkpoint, String),
    classes: &[String],
) -> Result<Vec<String>> {
    // a head trained on other classes is replaced even when their number is the same
    let theirs = ck.metadata.get("classes");
    let other_classes = theirs.is_some_and(|c| *c != classes.join(","));
    let loaded = pollster::block_on(m.load_pretrained(gpu, ck, &what, other_classes))?;
    let mut notes = vec![format!("{what}: {} tensors loaded", loaded.loaded)];
    if let Some((theirs, ours)) = loaded.new_head {
        let why = match theirs == ours {
            true => "other classes".to_string(),
            false => format!("{theirs} classes"),
        };
        notes.push(format!(
            "`pretrained`: its fc was trained for {why}, the data has {ours}: fc is a fresh {ours}-way layer"
        ));
    }
    Ok(notes)
}

/// The batches of `jobs`, decoded ahead on `workers` threads where the source decodes files.
pub(super) fn prefetch(
    c: &TrainConfig,
    source: &Arc<dyn ImageSource>,
    jobs: Vec<BatchJob>,
) -> Result<Prefetch> {
    let workers = if source.decodes() {
        c.workers.max(1)
    } else {
        0
    };
    Prefetch::new(
        Arc::clone(source),
        jobs,
        c.seed,
        workers,
        data::queue_depth(workers),
    )
}

/// The checkpoint metadata of a run: model, classes, normalisation, and the input size (and
/// resize and interpolation) evaluation used, so that `resnet predict` needs only the checkpoint.
fn run_metadata(spec: &ModelSpec, train: &dyn ImageSource) -> BTreeMap<String, String> {
    let mut meta = checkpoint::metadata(&spec.name, train.classes(), &train.normalize());
    let (resize, (h, w)) = train.eval_input();
    meta.insert("input_size".into(), format!("{h},{w}"));
    if let Some(r) = resize {
        meta.insert("resize".into(), r.to_string());
    }
    if let Some(i) = train.interpolation() {
        meta.insert("interpolation".into(), i.name().into());
    }
    meta
}
