//! Loss and top-1 accuracy of a model on a whole data set (native: it waits for the GPU).

use super::progress::Progress;
use crate::data::Dataset;
use crate::error::Result;
use crate::gpu::Gpu;
use crate::model::ModelState;
use crate::plan::{Normalize, Plan, PlanConfig};
use std::time::Duration;

/// Copies images `idx` of `d` into one batch (pixels, labels).
pub(super) fn gather(d: &Dataset, idx: &[usize], px: &mut Vec<u8>, labels: &mut Vec<u32>) {
    px.clear();
    labels.clear();
    for &i in idx {
        px.extend_from_slice(d.image(i));
        labels.push(d.labels[i] as u32);
    }
}

/// How long an evaluation runs before it shows progress.
const QUIET_FOR: Duration = Duration::from_secs(3);

/// Loss and top-1 accuracy of the model on a whole dataset (eval mode, inputs normalised with
/// `normalize`), with plans built for the full batches and the remainder. Evaluations that take
/// more than a few seconds show their progress.
pub fn evaluate(
    gpu: &Gpu,
    m: &ModelState,
    d: &Dataset,
    batch: usize,
    normalize: Normalize,
) -> Result<(f64, f64)> {
    let size = (d.height, d.width);
    let batch = batch.min(d.len()).max(1);
    let full = Plan::new(gpu, m, PlanConfig::eval(batch, size, normalize))?;
    let rem = d.len() % batch;
    let tail = match rem {
        0 => None,
        _ => Some(Plan::new(gpu, m, PlanConfig::eval(rem, size, normalize))?),
    };
    let plans = || [Some(&full), tail.as_ref()].into_iter().flatten();
    for plan in plans() {
        plan.loss.clear(gpu)?;
    }
    let (mut px, mut labels) = (Vec::new(), Vec::new());
    let idx: Vec<usize> = (0..d.len()).collect();
    let mut progress = Progress::new(d.len() as u64, "evaluating".into(), "images", QUIET_FOR);
    for (i, chunk) in idx.chunks(batch).enumerate() {
        let plan = if chunk.len() == batch {
            &full
        } else {
            tail.as_ref().expect("tail plan")
        };
        gather(d, chunk, &mut px, &mut labels);
        plan.set_batch(gpu, &px, &labels)?;
        plan.submit(gpu);
        if i % 4 == 3 {
            // a sync point now and then, so that the progress follows the GPU
            gpu.wait();
            progress.update((i * batch + chunk.len()) as u64, "");
        }
    }
    progress.finish();
    let (mut loss, mut correct, mut count) = (0.0f64, 0.0f64, 0.0f64);
    for plan in plans() {
        let s = pollster::block_on(plan.loss.read(gpu))?;
        loss += s.loss as f64;
        correct += s.correct as f64;
        count += s.count as f64;
    }
    Ok((loss / count, correct / count))
}
