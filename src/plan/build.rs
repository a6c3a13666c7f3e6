//! Turns a model's layer graph into stages of kernels: the input, the forward pass stage by stage,
//! then (training) the backward pass in reverse and the optimizer.

use super::buckets::GradStage;
use super::config::FineTune;
use super::layers::{Below, BlockSaved, ConvBnSaved, FusedGrad, GradIn, Recorder};
use super::{KernelAt, Mode, PlanConfig, SgdChunk, Stage};
use crate::error::{Error, Result};
use crate::gpu::{Dtype, Gpu, Kernel, Tensor};
use crate::model::{Arch, Block, ConvBn, Linear, MaxPool, ModelState, Visitor};
use crate::model::{ParamLayout, RegionKind};
use crate::ops::augment;
use crate::ops::batchnorm::{Exchange, Fuse};
use crate::ops::loss::{self, LossBuffers, LossParams};
use crate::ops::pool::{self as pooling, PoolShape};
use crate::ops::sgd::{
    pack_decay_kinds, DecayKind, DecayKinds, GradFactors, Rule, SgdConfig, StepState,
};
use crate::ops::{amp, clip, linear, sgd};

/// The buffers a caller fills and reads (see the fields of the same names on `Plan`).
pub(super) struct Io {
    /// u8 pixels of a batch, packed four to a u32.
    pub pixels: Tensor,
    /// Labels of a batch.
    pub labels: Tensor,
    /// The network output [N, classes].
    pub logits: Tensor,
    /// Loss, correct count and their running sums.
    pub loss: LossBuffers,
    /// Dynamic loss scaling's state (training with `loss_scale`).
    pub scaler: Option<Tensor>,
    /// The rectangles random erasing sets to 0, 4 u32 an image (training with erasing).
    pub erase: Option<Tensor>,
}

/// What [`build`] makes: the stages and where the kernels that change every step sit.
pub(super) struct Built {
    /// Input, forward, (training:) backward and optimizer stages, in order.
    pub stages: Vec<Stage>,
    /// The buffers a caller fills and reads.
    pub io: Io,
    /// The input stage's kernel: augmentation in training, normalisation always (its seed
    /// changes every step).
    pub input_stage: KernelAt,
    /// The loss kernel and its settings (its MixUp/CutMix weight changes every step).
    pub loss: (KernelAt, LossParams),
    /// The SGD kernels (their learning rate changes every step).
    pub sgd: Vec<SgdChunk>,
    /// Host exchanges between kernels (SyncBatchNorm), in the order they run.
    pub exchanges: Vec<(KernelAt, Exchange)>,
    /// The backward stages in the order they run and whose gradients each computes.
    pub grad_stages: Vec<GradStage>,
}

/// Floats per image of the largest activation (for suggesting a batch size that fits).
pub(super) fn largest_activation(m: &ModelState, cfg: &PlanConfig) -> usize {
    let (h, w) = cfg.input;
    let s = m.arch.stem.stride;
    // the stem's output is the largest activation of every ResNet (it has the most pixels)
    m.arch.stem.cout * h.div_ceil(s) * w.div_ceil(s)
}

/// Every stage of a step for `cfg`.
pub(super) fn build(gpu: &Gpu, m: &ModelState, cfg: &PlanConfig) -> Result<Built> {
    let train = cfg.mode == Mode::Train;
    let mut rec = Recorder::new(gpu, m, train, &cfg.fine_tune);
    rec.bn_ranks = cfg.shard.bn_ranks;
    let (input, io, x0) = input_stage(gpu, cfg, &m.arch.fc, rec.act)?;
    // the input kernel is the last (the only) one of the first stage
    let input_stage = KernelAt {
        stage: 0,
        index: input.kernels.len() - 1,
    };
    let mut stages = vec![input];
    let forward = forward_stages(&mut rec, &m.arch, x0, &io, &mut stages)?;
    let loss = forward
        .head
        .as_ref()
        .map(|h| h.loss)
        .expect("every network has a head");
    let (mut sgd, mut grad_stages) = (Vec::new(), Vec::new());
    if train {
        grad_stages = backward_stages(&mut rec, &m.arch, forward, &mut stages)?;
        let (stage, chunks) = optimizer_stage(gpu, m, cfg, io.scaler.as_ref(), stages.len())?;
        stages.push(stage);
        sgd = chunks;
    }
    Ok(Built {
        stages,
        io,
        input_stage,
        loss,
        sgd,
        exchanges: rec.finish(),
        grad_stages,
    })
}

/// u8 pixels in, augmented and normalised images out as activations of type `act` (stage
/// `input`); the io buffers.
fn input_stage(
    gpu: &Gpu,
    cfg: &PlanConfig,
    fc: &Linear,
    act: Dtype,
) -> Result<(Stage, Io, Tensor)> {
    let n = cfg.batch;
    let io = Io {
        pixels: gpu.zeros(&[(n * 3 * cfg.src.0 * cfg.src.1).div_ceil(4)])?,
        labels: gpu.zeros(&[n])?,
        logits: gpu.zeros(&[n, fc.out_features])?,
        loss: LossBuffers::new(gpu, n)?,
        scaler: match (&cfg.loss_scale, cfg.mode) {
            (Some(ls), Mode::Train) => Some(amp::state_buffer(gpu, ls)?),
            _ => None,
        },
        erase: match cfg.erases() {
            true => Some(gpu.zeros(&[n * 4])?),
            false => None,
        },
    };
    let x0 = gpu.zeros_of(&[n, 3, cfg.input.0, cfg.input.1], act)?;
    let input = cfg.augment_config(0);
    let kernels = augment::augment(gpu, &input, &io.pixels, io.erase.as_ref(), &x0)?;
    let stage = Stage {
        name: "input".into(),
        kernels,
    };
    Ok((stage, io, x0))
}

/// What the backward pass needs from the forward pass.
struct Forward {
    stem: Option<ConvBnSaved>,
    maxpool: Option<(PoolShape, Tensor)>,
    blocks: Vec<BlockSaved>,
    head: Option<HeadSaved>,
}

struct HeadSaved {
    /// The loss kernel and its settings.
    loss: (KernelAt, LossParams),
    /// The head's input shape [N, C, H, W] (the last block's output).
    input_shape: Vec<usize>,
    /// The pooled features [N, C], the classifier's input.
    features: Tensor,
    /// dL/dlogits, written by the loss kernel.
    dlogits: Tensor,
}

/// The forward pass as stages `stem`, one per block (`layer1.0`, ...), and `head`.
fn forward_stages(
    rec: &mut Recorder,
    arch: &Arch,
    x0: Tensor,
    io: &Io,
    stages: &mut Vec<Stage>,
) -> Result<Forward> {
    let mut walk = ForwardWalk {
        rec,
        io,
        stages,
        saved: Forward {
            stem: None,
            maxpool: None,
            blocks: Vec::new(),
            head: None,
        },
    };
    arch.walk(&mut walk, x0)?;
    Ok(walk.saved)
}

/// The walk that records the forward pass: activations are GPU tensors.
struct ForwardWalk<'w, 'a> {
    rec: &'w mut Recorder<'a>,
    io: &'w Io,
    stages: &'w mut Vec<Stage>,
    saved: Forward,
}

impl Visitor for ForwardWalk<'_, '_> {
    type Act = Tensor;
    type Error = Error;

    fn stem(&mut self, stem: &ConvBn, x: Tensor) -> Result<Tensor> {
        let mut ks = Vec::new();
        let relu = Fuse {
            residual: None,
            relu: true,
        };
        let saved = self.rec.conv_bn(stem, &x, relu, &mut ks)?;
        let y = saved.a().clone();
        self.saved.stem = Some(saved);
        self.rec.push_stage(self.stages, "stem".into(), ks);
        Ok(y)
    }

    /// Recorded into the stem's stage.
    fn maxpool(&mut self, pool: &MaxPool, x: Tensor) -> Result<Tensor> {
        let s = &x.shape;
        let sh = PoolShape {
            n: s[0],
            c: s[1],
            h: s[2],
            w: s[3],
            window: pool.kernel_size,
            stride: pool.stride,
            pad: pool.padding,
        };
        let gpu = self.rec.gpu;
        let y = self.rec.pool.get_of(gpu, &sh.y_shape(), self.rec.act)?;
        let argmax = gpu.zeros(&sh.y_shape())?;
        let ks = pooling::maxpool_forward(gpu, &sh, &x, &y, &argmax)?;
        self.stages
            .last_mut()
            .expect("stem stage")
            .kernels
            .extend(ks);
        self.saved.maxpool = Some((sh, argmax));
        Ok(y)
    }

    fn block(&mut self, b: &Block, x: Tensor) -> Result<Tensor> {
        let mut ks = Vec::new();
        let (out, saved) = self.rec.block_forward(b, &x, &mut ks)?;
        if !self.rec.train {
            self.rec.pool.put(x);
        }
        self.saved.blocks.push(saved);
        self.rec.push_stage(self.stages, b.name.clone(), ks);
        Ok(out)
    }

    /// Global average pool, the classifier and the loss (with its gradient) in stage `head`.
    fn head(&mut self, fc: &Linear, x: Tensor) -> Result<()> {
        let (gpu, m) = (self.rec.gpu, self.rec.m);
        let n = x.shape[0];
        let mut ks = Vec::new();
        let features = gpu.zeros_of(&[n, fc.in_features], self.rec.act)?;
        ks.extend(pooling::avgpool_forward(gpu, &x, &features)?);
        let (w, b) = (m.param("fc")?, m.view(&m.params, m.layout.fc_bias())?);
        ks.extend(linear::forward(gpu, &features, &w, &b, &self.io.logits)?);
        let dlogits = gpu.zeros(&[n, fc.out_features])?;
        let io = self.io;
        // label smoothing shapes the training loss; evaluation reports the plain cross-entropy
        let smoothing = if self.rec.train {
            self.rec.fine_tune.label_smoothing
        } else {
            0.0
        };
        // where the loss kernel sits, whose MixUp/CutMix weight changes every step
        let loss_kernel = KernelAt {
            stage: self.stages.len(),
            index: ks.len(),
        };
        let loss_params = LossParams::of(&io.logits, smoothing, io.scaler.is_some());
        ks.extend(loss::cross_entropy(
            gpu,
            &io.logits,
            &io.labels,
            &dlogits,
            &io.loss,
            smoothing,
            io.scaler.as_ref(),
        )?);
        self.stages.push(Stage {
            name: "head".into(),
            kernels: ks,
        });
        self.saved.head = Some(HeadSaved {
            loss: (loss_kernel, loss_params),
            input_shape: x.shape,
            features,
            dlogits,
        });
        Ok(())
    }
}

/// The backward pass as stages `head.backward`, one per block in reverse, `stem.backward`; every
/// parameter gradient lands in the model's flat gradient buffer. Returns which stage computes
/// which gradients.
fn backward_stages(
    rec: &mut Recorder,
    arch: &Arch,
    forward: Forward,
    stages: &mut Vec<Stage>,
) -> Result<Vec<GradStage>> {
    let head = forward.head.expect("the walk ends with the head");
    let mut g = head_backward(rec, &head, stages)?;
    let mut grads = vec![GradStage {
        stage: stages.len() - 1,
        prefixes: vec!["fc".into()],
    }];
    // below the first layer that trains, no gradient is needed (frozen stem and stages, as
    // PyTorch's autograd stops where requires_grad does)
    let first = first_trained(rec, arch);
    // the two lists have one entry per block
    let blocks: Vec<&Block> = arch.blocks().collect();
    let mut sums = None;
    for (k, b) in blocks.iter().enumerate().rev() {
        // units: 0 the stem, k + 1 the block at k
        if first.is_none_or(|f| k + 1 < f) {
            return Ok(grads);
        }
        // the unit below, where its backward follows (it trains) and its output is this block's
        // input as it is (no max pool between)
        let below = match k {
            _ if first.is_none_or(|f| k < f) => None,
            0 => (forward.maxpool.is_none())
                .then(|| forward.stem.as_ref().map(|s| Below::inside(&arch.stem, s)))
                .flatten(),
            _ => {
                let cb = blocks[k - 1].convs.last().expect("a block has convs");
                Some(Below::block_output(cb, forward.blocks[k - 1].last()))
            }
        };
        let mut ks = Vec::new();
        let saved = &forward.blocks[k];
        let out = rec.block_backward(b, saved, (g, sums.take()), below, &mut ks)?;
        g = out.g.expect("a block's input gradient");
        sums = out.sums;
        rec.push_stage(stages, format!("{}.backward", b.name), ks);
        grads.push(GradStage {
            stage: stages.len() - 1,
            prefixes: vec![b.name.clone()],
        });
    }
    if first != Some(0) {
        return Ok(grads);
    }
    let mut ks = Vec::new();
    if let Some((sh, argmax)) = &forward.maxpool {
        let dx = rec.pool.get_of(rec.gpu, &sh.x_shape(), rec.act)?;
        ks.extend(pooling::maxpool_backward(rec.gpu, sh, &g, argmax, &dx)?);
        rec.pool.put(g);
        g = dx;
    }
    let stem = forward.stem.expect("the walk starts with the stem");
    let fused = FusedGrad {
        relu: true,
        residual_grad: None,
        input_grad: false,
        input_add: None,
    };
    let g_in = GradIn { g: &g, sums };
    rec.conv_bn_backward(&arch.stem, &stem, g_in, fused, None, &mut ks)?;
    rec.push_stage(stages, "stem.backward".into(), ks);
    grads.push(GradStage {
        stage: stages.len() - 1,
        prefixes: vec![arch.stem.conv.clone(), arch.stem.bn.clone()],
    });
    Ok(grads)
}

/// The first unit below the head with a parameter that trains: 0 for the stem, k for the k-th
/// block (1-based), None when only `fc` trains.
fn first_trained(rec: &Recorder, arch: &Arch) -> Option<usize> {
    let trains = |prefix: &str| {
        let dotted = format!("{prefix}.");
        rec.m.layout.params.iter().any(|r| {
            (r.name == prefix || r.name.starts_with(&dotted)) && !rec.fine_tune.is_frozen(&r.name)
        })
    };
    if trains(&arch.stem.conv) || trains(&arch.stem.bn) {
        return Some(0);
    }
    arch.blocks().position(|b| trains(&b.name)).map(|i| i + 1)
}

/// The classifier's gradients and dL/d(last block output) through the average pool.
fn head_backward(rec: &mut Recorder, head: &HeadSaved, stages: &mut Vec<Stage>) -> Result<Tensor> {
    let (gpu, m) = (rec.gpu, rec.m);
    let mut ks = Vec::new();
    let dfeatures = gpu.zeros_of(&head.features.shape, rec.act)?;
    let (dw, db) = (m.grad("fc")?, m.view(&m.grads, m.layout.fc_bias())?);
    let w = m.param("fc")?;
    let (x, dy) = (&head.features, &head.dlogits);
    ks.extend(linear::backward(
        gpu,
        x,
        &w,
        dy,
        Some(&dfeatures),
        &dw,
        &db,
    )?);
    let g = rec.pool.get_of(gpu, &head.input_shape, rec.act)?;
    ks.extend(pooling::avgpool_backward(gpu, &dfeatures, &g)?);
    stages.push(Stage {
        name: "head.backward".into(),
        kernels: ks,
    });
    Ok(g)
}

/// The optimizer over the flat parameter, gradient, momentum (and RMSprop's or AdamW's second
/// moment) buffers (stage `optimizer`, the `stage`-th): one kernel per run of consecutive layers
/// sharing a learning-rate multiplier, split where a run exceeds one binding; frozen layers get
/// none. Before them, the loss scaler's inf check, `clip_grad_norm`'s kernels and AdamW's step
/// count; after them, the scale's update.
fn optimizer_stage(
    gpu: &Gpu,
    m: &ModelState,
    cfg: &PlanConfig,
    scaler: Option<&Tensor>,
    stage: usize,
) -> Result<(Stage, Vec<SgdChunk>)> {
    let (mut kernels, mut chunks) = (Vec::new(), Vec::new());
    let scaling = cfg.loss_scale.zip(scaler);
    if let Some((ls, state)) = scaling {
        kernels.extend(amp::find_inf(gpu, &ls, &m.grads, state)?);
    }
    let words = match cfg.sgd.decays_by_kind() {
        true => Some(decay_kinds(&m.layout, &cfg.sgd, gpu)?),
        false => None,
    };
    let parts = optimizer_chunks(gpu, m, &cfg.fine_tune);
    let clip = match cfg.clip_grad_norm {
        Some(max_norm) => Some(clip_factor(gpu, m, &parts, max_norm, scaler, &mut kernels)?),
        None => None,
    };
    let factors = GradFactors {
        scaler,
        clip: clip.as_ref(),
    };
    let adaptive = match cfg.sgd.rule {
        Rule::Sgd => None,
        _ => Some(m.adaptive(gpu)?),
    };
    if let (Rule::AdamW, Some(a)) = (cfg.sgd.rule, adaptive) {
        kernels.push(sgd::count(gpu, &a.adam, scaler)?);
    }
    for (offset, len, lr_scale) in parts {
        let v = |t: &Tensor| t.view(offset, &[len]);
        let (p, g, velocity) = (v(&m.params)?, v(&m.grads)?, v(&m.momentum)?);
        let second = adaptive.map(|a| v(&a.second_moment)).transpose()?;
        let state = StepState {
            velocity: &velocity,
            second: second.as_ref(),
            adam: adaptive.map(|a| &a.adam),
        };
        let kinds = words.as_ref().map(|words| DecayKinds { words, offset });
        kernels.extend(sgd::step_with(
            gpu,
            &cfg.sgd,
            (&p, &g),
            state,
            kinds,
            factors,
        )?);
        let index = kernels.len() - 1;
        chunks.push(SgdChunk {
            at: KernelAt { stage, index },
            len,
            offset,
            lr_scale,
        });
    }
    if let Some((ls, state)) = scaling {
        kernels.extend(amp::update_scale(gpu, &ls, state)?);
    }
    let stage = Stage {
        name: "optimizer".into(),
        kernels,
    };
    Ok((stage, chunks))
}

/// The (offset, length, learning-rate multiplier) of each optimizer kernel: the runs of
/// [`lr_groups`], split where a run exceeds one binding.
fn optimizer_chunks(gpu: &Gpu, m: &ModelState, tune: &FineTune) -> Vec<(usize, usize, f32)> {
    let max_chunk = gpu.max_view_floats();
    let mut chunks = Vec::new();
    for (range, lr_scale) in lr_groups(m, tune) {
        let mut offset = range.start;
        while offset < range.end {
            let len = max_chunk.min(range.end - offset);
            chunks.push((offset, len, lr_scale));
            offset += len;
        }
    }
    chunks
}

/// `--clip-grad-norm`'s kernels over the gradients of `chunks` (the trained layers', as
/// clip_grad_norm_ skips parameters without a gradient), appended to `kernels`; returns the
/// one-element factor the SGD kernels read.
fn clip_factor(
    gpu: &Gpu,
    m: &ModelState,
    chunks: &[(usize, usize, f32)],
    max_norm: f32,
    scaler: Option<&Tensor>,
    kernels: &mut Vec<Kernel>,
) -> Result<Tensor> {
    let total: usize = chunks.iter().map(|&(_, len, _)| clip::blocks(len)).sum();
    let sums = gpu.zeros(&[total])?;
    let mut first = 0;
    for &(offset, len, _) in chunks {
        let grads = m.grads.view(offset, &[len])?;
        kernels.push(clip::block_sums(gpu, &grads, &sums, first)?);
        first += clip::blocks(len);
    }
    let factor = gpu.zeros(&[1])?;
    kernels.push(clip::factor(gpu, &sums, max_norm, scaler, &factor)?);
    Ok(factor)
}

/// The decay kind of every element of the flat parameter buffer, on the GPU, as torchvision's
/// `set_weight_decay` groups a ResNet's parameters: BatchNorm's weights with the norm layers,
/// every bias (fc's, and BatchNorm's where a bias decay is given) with the biases, the rest
/// (convolution and fc weights) with the others.
fn decay_kinds(layout: &ParamLayout, sgd: &SgdConfig, gpu: &Gpu) -> Result<Tensor> {
    let bn_bias = match sgd.bias_weight_decay {
        Some(_) => DecayKind::Bias,
        None => DecayKind::Norm,
    };
    let runs = layout.params.iter().flat_map(|r| match r.kind {
        RegionKind::BnAffine => {
            let c = r.len() / 2;
            vec![(r.offset, c, DecayKind::Norm), (r.offset + c, c, bn_bias)]
        }
        RegionKind::FcBias => vec![(r.offset, r.len(), DecayKind::Bias)],
        RegionKind::ConvWeight | RegionKind::FcWeight => Vec::new(),
    });
    let words = pack_decay_kinds(layout.params_len, runs);
    gpu.upload(&words, &[words.len()])
}

/// Ranges of the flat parameter buffer with one learning-rate multiplier each: consecutive
/// layers with the same multiplier merged (the whole buffer when nothing is tuned), frozen
/// layers left out.
fn lr_groups(m: &ModelState, tune: &FineTune) -> Vec<(std::ops::Range<usize>, f32)> {
    let mut regions: Vec<_> = m.layout.params.iter().collect();
    regions.sort_by_key(|r| r.offset);
    let mut groups: Vec<(std::ops::Range<usize>, f32)> = Vec::new();
    for (i, r) in regions.iter().enumerate() {
        let Some(scale) = tune.lr_scale(&r.name) else {
            continue;
        };
        // a region owns the padding up to the next one, so merged groups stay contiguous
        let end = regions.get(i + 1).map_or(m.layout.params_len, |n| n.offset);
        match groups.last_mut() {
            Some((range, s)) if *s == scale && range.end == r.offset => range.end = end,
            _ => groups.push((r.offset..end, scale)),
        }
    }
    groups
}
