//! Whole training steps of small nets against the reference step composed by state_dict name:
//! every parameter gradient, every BN running statistic and the weights after SGD. This puts every
//! op that is not a convolution to work in place (shortcuts of both kinds, the max-pool stem, the
//! average pool, the classifier, the loss, SGD) and checks the wiring between them.

use super::{f64s, values, Group};
use crate::checkpoint::{Checkpoint, NamedTensor, TensorData};
use crate::cifar10::NORMALIZE;
use crate::error::Result;
use crate::gpu::{Gpu, Precision};
use crate::model::{BlockKind, Family, ModelSpec, ModelState};
use crate::ops::amp::LossScale;
use crate::ops::sgd::SgdConfig;
use crate::plan::{Plan, PlanConfig};
use crate::preprocess::Preprocess;
use crate::reference::network::{self, StateDict};

/// One planned training step and what it started from.
pub struct NetworkStep {
    /// The state_dict before the step (the parameters the gradients are of).
    pub before: StateDict,
    /// The state_dict after it (updated weights and running statistics).
    pub after: StateDict,
    /// The normalised input (torchvision's ToTensor + Normalize) and its shape.
    pub x: Vec<f64>,
    /// [N, 3, H, W].
    pub shape: [usize; 4],
    /// The batch's labels.
    pub labels: Vec<u32>,
    /// The GPU's mean loss of the batch.
    pub loss: f32,
    /// The GPU's logits [N, classes].
    pub logits: Vec<f32>,
    /// The GPU's parameter gradients by state_dict name.
    pub grads: StateDict,
}

fn as_state_dict(tensors: Vec<NamedTensor>) -> StateDict {
    tensors
        .into_iter()
        .filter_map(|t| match t.data {
            TensorData::F32(v) => Some((t.name, (t.shape, f64s(&v)))),
            TensorData::I64(_) => None,
        })
        .collect()
}

/// BN parameters and running statistics away from their initial 1, 0, 0, 1, so that no gradient
/// or update is trivially zero or one.
fn perturb(gpu: &Gpu, m: &ModelState) -> Result<()> {
    let mut tensors = pollster::block_on(m.state_dict(gpu))?;
    for (i, t) in tensors.iter_mut().enumerate() {
        let TensorData::F32(v) = &mut t.data else {
            continue;
        };
        let (base, scale) = match t.name.rsplit('.').next().unwrap_or("") {
            "weight" if t.shape.len() == 1 => (1.0, 0.3),
            "bias" if !t.name.starts_with("fc") => (0.0, 0.2),
            "running_mean" => (0.0, 0.5),
            "running_var" => (1.0, 0.5),
            _ => continue,
        };
        let noise = values(v.len(), 1000 + i as u64);
        v.iter_mut()
            .zip(noise)
            .for_each(|(x, r)| *x = base + scale * r);
    }
    let ck = Checkpoint {
        tensors,
        metadata: Default::default(),
    };
    m.load_state_dict(gpu, &ck, "perturbed")
}

/// One step of `spec` planned on `gpu` (SGD as He et al.), on `batch` random images of
/// `size`x`size` without augmentation.
pub fn network_step(gpu: &Gpu, spec: &ModelSpec, size: usize, batch: usize) -> Result<NetworkStep> {
    let m = ModelState::new(gpu, spec, 11)?;
    perturb(gpu, &m)?;
    let before = as_state_dict(pollster::block_on(m.state_dict(gpu))?);
    let sgd = SgdConfig::he2016();
    let mut cfg = PlanConfig::train(
        batch,
        (size, size),
        sgd,
        Preprocess::normalize_only(NORMALIZE),
    );
    // mixed precision trains with the loss scaled, as `resnet train` does
    cfg.loss_scale = LossScale::default().for_precision(gpu.precision);
    let scale = cfg.loss_scale.map_or(1.0, |l| l.init_scale as f64);
    let plan = Plan::new(gpu, &m, cfg)?;
    let pixels: Vec<u8> = values(batch * 3 * size * size, 77)
        .iter()
        .map(|v| ((v + 1.0) * 127.5) as u8)
        .collect();
    let classes = spec.num_classes as u32;
    let labels: Vec<u32> = (0..batch as u32).map(|i| (i * 7 + 3) % classes).collect();
    plan.set_batch(gpu, &pixels, &labels)?;
    plan.set_step(gpu, 0, sgd.lr)?;
    plan.submit(gpu);
    let hw = size * size;
    let x = (0..pixels.len())
        .map(|i| {
            let c = (i / hw) % 3;
            (pixels[i] as f64 / 255.0 - NORMALIZE.mean[c] as f64) / NORMALIZE.std[c] as f64
        })
        .collect();
    Ok(NetworkStep {
        before,
        after: as_state_dict(pollster::block_on(m.state_dict(gpu))?),
        x,
        shape: [batch, 3, size, size],
        labels,
        loss: gpu.read_blocking(&plan.loss.stats)?[0],
        logits: gpu.read_blocking(&plan.logits)?,
        grads: unscaled(as_state_dict(pollster::block_on(m.gradients(gpu))?), scale),
    })
}

/// Gradients read back from a plan with loss scaling, divided by the scale (a power of two:
/// exactly).
fn unscaled(mut grads: StateDict, scale: f64) -> StateDict {
    for (_, v) in grads.values_mut() {
        v.iter_mut().for_each(|g| *g /= scale);
    }
    grads
}

/// resnet8 (option-A shortcuts), a small bottleneck net (projection shortcuts, max-pool stem)
/// and the same with its 3x3s in 4 groups, as a ResNeXt's.
fn nets() -> Vec<(ModelSpec, usize, usize)> {
    let bottleneck = ModelSpec {
        name: "bottleneck-2-1".into(),
        family: Family::ImageNet,
        block: BlockKind::Bottleneck,
        blocks: vec![2, 1],
        widths: vec![4, 8],
        residual: true,
        num_classes: 5,
        width_per_group: 64,
        groups: 1,
    };
    let grouped = ModelSpec {
        name: "resnext-2-1".into(),
        groups: 4,
        width_per_group: 32,
        ..bottleneck.clone()
    };
    let resnet8 = ModelSpec::from_name("resnet8", 10).expect("a known model");
    vec![(resnet8, 15, 4), (bottleneck, 21, 3), (grouped, 21, 3)]
}

pub(super) fn check_all(gpu: &Gpu) -> Result<Vec<Group>> {
    let mut out = Group::new("training step: loss and logits");
    let mut grads = Group::new("training step: every parameter gradient");
    let mut stats = Group::new("training step: BN running statistics");
    let mut sgd = Group::new("training step: weights after SGD");
    for (spec, size, batch) in nets() {
        let s = network_step(gpu, &spec, size, batch)?;
        let want = match gpu.precision {
            Precision::Fp32 => {
                network::training_step(&s.before, &s.x, s.shape, &s.labels, spec.residual)
            }
            Precision::Mixed => {
                let scale = LossScale::default().init_scale as f64;
                let batch = (&s.x[..], s.shape, &s.labels[..]);
                network::training_step_mixed(&s.before, batch, spec.residual, scale)
            }
        };
        let case = spec.name.clone();
        out.compare(&case, &[s.loss], &[want.loss]);
        out.compare(&case, &s.logits, &want.logits);
        // as many gradients as parameter tensors, none missing on either side
        let count = |n: usize| n as f32;
        grads.compare(
            &format!("{case} tensors"),
            &[count(s.grads.len())],
            &[want.grads.len() as f64],
        );
        for (name, (_, g)) in &s.grads {
            let got: Vec<f32> = g.iter().map(|&v| v as f32).collect();
            let reference = want.grads.get(name).map(Vec::as_slice).unwrap_or(&[]);
            grads.compare(&format!("{case} {name}"), &got, reference);
            // torch.optim.SGD's first step (zero momentum): p - lr (g + wd p)
            let p0 = &s.before[name].1;
            let h = SgdConfig::he2016();
            let stepped: Vec<f64> = p0
                .iter()
                .zip(reference)
                .map(|(p, g)| p - h.lr as f64 * (g + h.weight_decay as f64 * p))
                .collect();
            let after: Vec<f32> = s.after[name].1.iter().map(|&v| v as f32).collect();
            sgd.compare(&format!("{case} {name}"), &after, &stepped);
        }
        for (name, reference) in &want.running {
            let got: Vec<f32> = s.after[name].1.iter().map(|&v| v as f32).collect();
            stats.compare(&format!("{case} {name}"), &got, reference);
        }
    }
    if gpu.precision == Precision::Mixed {
        out.tolerance = Some(super::MIXED_STEP_TOLERANCE);
        stats.tolerance = Some(super::MIXED_STEP_TOLERANCE);
        grads.tolerance = Some(super::MIXED_GRADIENT_TOLERANCE);
        sgd.tolerance = Some(super::MIXED_STEP_TOLERANCE);
    }
    Ok(vec![out, grads, stats, sgd])
}
