//! Loss, top-1 and top-5 accuracy of a model on a whole data set (native: it waits for the GPU).

use super::events::{Event, Events};
use crate::data::{default_workers, queue_depth, BatchJob, ImageSource, Prefetch};
use crate::error::Result;
use crate::gpu::Gpu;
use crate::model::ModelState;
use crate::plan::{Normalize, Plan, PlanConfig};
use std::ops::Range;
use std::sync::Arc;

/// What [`evaluate`] measures, over the whole data set.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scores {
    /// Mean cross-entropy loss.
    pub loss: f64,
    /// Top-1 accuracy in [0, 1].
    pub accuracy: f64,
    /// Top-5 accuracy in [0, 1] (torchvision's Acc@5): the label among the five classes ranked
    /// first.
    pub accuracy5: f64,
}

/// Loss, top-1 and top-5 accuracy of the model on a whole dataset (eval mode, inputs normalised
/// with `normalize`), with plans built for the full batches and the remainder; `events` hears
/// the progress.
pub fn evaluate(
    (gpu, m): (&Gpu, &ModelState),
    d: &Arc<dyn ImageSource>,
    batch: usize,
    normalize: Normalize,
    events: &mut dyn Events,
) -> Result<Scores> {
    let settings = (batch, default_workers());
    let sums = evaluate_sums((gpu, m), d, 0..d.len(), settings, normalize, events)?;
    Ok(sums.scores())
}

/// Sums of the loss, the correct and top-5 counts and the count over images `range` of a data
/// set (one rank's shard of a distributed evaluation, or all of it).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct EvalSums {
    pub loss: f64,
    pub correct: f64,
    pub top5: f64,
    pub count: f64,
}

impl EvalSums {
    pub fn scores(&self) -> Scores {
        Scores {
            loss: self.loss / self.count,
            accuracy: self.correct / self.count,
            accuracy5: self.top5 / self.count,
        }
    }
}

/// [`evaluate`]'s sums over images `range` of `d`, `batch` images a step decoded by `workers`
/// threads (where `d` decodes files).
pub(super) fn evaluate_sums(
    (gpu, m): (&Gpu, &ModelState),
    d: &Arc<dyn ImageSource>,
    range: Range<usize>,
    (batch, workers): (usize, usize),
    normalize: Normalize,
    events: &mut dyn Events,
) -> Result<EvalSums> {
    let size = d.size();
    let len = range.len();
    let batch = batch.min(len).max(1);
    let full = Plan::new(gpu, m, PlanConfig::eval(batch, size, normalize))?;
    let rem = len % batch;
    let tail = match rem {
        0 => None,
        _ => Some(Plan::new(gpu, m, PlanConfig::eval(rem, size, normalize))?),
    };
    let plans = || [Some(&full), tail.as_ref()].into_iter().flatten();
    for plan in plans() {
        plan.loss.clear(gpu)?;
    }
    let idx: Vec<usize> = range.collect();
    let jobs = idx
        .chunks(batch)
        .map(|c| BatchJob {
            indices: c.to_vec(),
            stream: 0,
            repeats: Vec::new(),
        })
        .collect();
    let workers = if d.decodes() { workers.max(1) } else { 0 };
    let mut batches = Prefetch::new(Arc::clone(d), jobs, 0, workers, queue_depth(workers))?;
    for (i, chunk) in idx.chunks(batch).enumerate() {
        let plan = if chunk.len() == batch {
            &full
        } else {
            tail.as_ref().expect("tail plan")
        };
        let b = batches.next_batch().expect("one batch a chunk")?;
        plan.set_batch(gpu, &b.pixels, &b.labels)?;
        plan.submit(gpu);
        if i % 4 == 3 {
            // a sync point now and then, so that the progress follows the GPU
            gpu.wait();
            let done = i * batch + chunk.len();
            events.emit(Event::Evaluating { done, total: len });
        }
        for w in d.take_warnings() {
            events.emit(Event::Warning(w));
        }
    }
    events.emit(Event::EvaluatingDone);
    let mut sums = EvalSums::default();
    for plan in plans() {
        let s = pollster::block_on(plan.loss.read(gpu))?;
        sums.loss += s.loss as f64;
        sums.correct += s.correct as f64;
        sums.top5 += s.top5 as f64;
        sums.count += s.count as f64;
    }
    Ok(sums)
}
