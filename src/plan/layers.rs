//! Recording one layer at a time: conv + BN and a residual block, forward and backward, with the
//! tensors the forward keeps for the backward.

use super::config::FineTune;
use super::recycle::BufferPool;
use super::{KernelAt, Stage};
use crate::error::Result;
use crate::gpu::{Dtype, Gpu, Kernel, Tensor};
use crate::model::{Block, ConvBn, ModelState, Shortcut};
use crate::ops::batchnorm::{self, BnParams, Exchange, Fuse, MOMENTUM};
use crate::ops::conv2d::{self, Conv2dShape};
use crate::ops::elementwise::{self, ShortcutShape};

/// A convolution's input as it loads it: a stored tensor, or relu(BN(x)) of the conv + BN below,
/// applied as the convolution loads x (the BN's output never stored: `conv2d::forward_bn_in`).
#[derive(Clone)]
pub(super) struct ConvInput {
    /// The tensor the convolution reads: its input, or the conv output of the conv + BN below.
    pub x: Tensor,
    /// That BN's on-load parameters (`batchnorm::forward_train_on_load`), where it is applied.
    pub bn: Option<Tensor>,
}

impl ConvInput {
    /// A stored input.
    pub fn stored(x: &Tensor) -> Self {
        ConvInput {
            x: x.clone(),
            bn: None,
        }
    }
}

/// A BN's affine parameters and running statistics, as views of the model's buffers
/// (`BnParams` borrows them).
struct BnTensors {
    affine: Tensor,
    running: Tensor,
}

impl BnTensors {
    fn of(m: &ModelState, cb: &ConvBn) -> Result<BnTensors> {
        Ok(BnTensors {
            affine: m.param(&cb.bn)?,
            running: m.running_of(&cb.bn)?,
        })
    }

    fn params(&self) -> BnParams<'_> {
        BnParams {
            affine: &self.affine,
            running: &self.running,
        }
    }
}

/// What the backward pass needs from one conv + BN.
pub(super) struct ConvBnSaved {
    /// The conv's input.
    pub input: ConvInput,
    /// The conv's output (the BN's input); none where inference folded the BN into the conv.
    c: Option<Tensor>,
    /// The BN's output (after the fused add and ReLU); none where the next convolution applies
    /// the BN as it loads c (`on_load`).
    a: Option<Tensor>,
    /// The BN's parameters for the next convolution to apply it on load, where `a` is none.
    on_load: Option<Tensor>,
    /// The batch statistics (training).
    stats: Option<Tensor>,
}

impl ConvBnSaved {
    /// The BN's stored output: every conv + BN's but those inside a block, in training.
    pub fn a(&self) -> &Tensor {
        (self.a.as_ref()).expect("only a BN inside a block leaves its output to the next conv")
    }

    /// The BN's output as the next convolution's input.
    fn output(&self) -> ConvInput {
        match (&self.a, &self.on_load) {
            (Some(a), _) => ConvInput::stored(a),
            (None, bn) => ConvInput {
                x: self
                    .c
                    .clone()
                    .expect("applied on load from the conv's output"),
                bn: bn.clone(),
            },
        }
    }
}

/// What the backward pass needs from one block.
pub(super) struct BlockSaved {
    convs: Vec<ConvBnSaved>,
    projection: Option<ConvBnSaved>,
}

impl BlockSaved {
    /// The block's last conv + BN (whose output is the block's).
    pub fn last(&self) -> &ConvBnSaved {
        self.convs.last().expect("a block has convs")
    }
}

/// The ops fused after a BN in the forward pass, as its backward sees them, and what the
/// conv's backward to the input adds.
pub(super) struct FusedGrad<'t> {
    /// A ReLU followed the BN.
    pub relu: bool,
    /// A residual was added before the ReLU: its gradient is written here.
    pub residual_grad: Option<&'t Tensor>,
    /// Whether the gradient with respect to the conv's input is wanted (not for the stem).
    pub input_grad: bool,
    /// The gradient another path brings to the conv's input (a block's shortcut), added to it
    /// in the backward to the input's epilogue.
    pub input_add: Option<&'t Tensor>,
}

/// dL/d(a conv + BN's output) for its backward.
pub(super) struct GradIn<'t> {
    pub g: &'t Tensor,
    /// The BN's backward sums, where the convolution after computed them in its backward to the
    /// input (`g` is then masked by the BN's ReLU already).
    pub sums: Option<Tensor>,
}

/// What a conv + BN's backward returns.
pub(super) struct GradOut {
    /// dL/d(the conv's input), where wanted.
    pub g: Option<Tensor>,
    /// The backward sums of the BN below, computed on the way (see [`GradIn::sums`]).
    pub sums: Option<Tensor>,
}

/// The conv + BN + ReLU whose output is a convolution's input, for that convolution's fused
/// backward to the input (`conv2d::backward_input_bn`).
#[derive(Clone, Copy)]
pub(super) struct Below<'s> {
    cb: &'s ConvBn,
    saved: &'s ConvBnSaved,
    /// The BN added a residual (a block's last): the ReLU's mask comes from its stored output.
    residual: bool,
}

impl<'s> Below<'s> {
    /// A conv + BN + ReLU inside a block (no residual).
    pub fn inside(cb: &'s ConvBn, saved: &'s ConvBnSaved) -> Self {
        Below {
            cb,
            saved,
            residual: false,
        }
    }

    /// A block's last conv + BN, which added the block's residual before its ReLU.
    pub fn block_output(cb: &'s ConvBn, saved: &'s ConvBnSaved) -> Self {
        Below {
            cb,
            saved,
            residual: true,
        }
    }
}

/// Records layers into kernel lists, taking activation buffers from a shared pool.
pub(super) struct Recorder<'a> {
    /// The device the kernels run on.
    pub gpu: &'a Gpu,
    /// The weights (and gradients) the kernels bind.
    pub m: &'a ModelState,
    /// Training (batch statistics, tensors kept for the backward) or evaluation.
    pub train: bool,
    /// Frozen layers and BatchNorms on running statistics (training).
    pub fine_tune: &'a FineTune,
    /// Activation buffers free for reuse.
    pub pool: BufferPool,
    /// The type activations and their gradients are stored in (`Precision::activation_type`).
    pub act: Dtype,
    /// Ranks the training BatchNorms share their statistics with (SyncBatchNorm); 1: none.
    pub bn_ranks: usize,
    /// The host exchanges between kernels of the stages pushed so far, in the order they run.
    exchanges: Vec<(KernelAt, Exchange)>,
    /// Exchanges of the stage being recorded: (index of the kernel that waits, exchange).
    pending: Vec<(usize, Exchange)>,
}

fn conv_shape(x: &Tensor, cb: &ConvBn) -> Conv2dShape {
    let s = &x.shape;
    Conv2dShape {
        n: s[0],
        c: s[1],
        h: s[2],
        w: s[3],
        k: cb.cout,
        r: cb.kernel_size,
        s: cb.kernel_size,
        stride: cb.stride,
        pad: cb.padding,
        groups: cb.groups,
    }
}

fn shortcut_shape(x: &Tensor, cout: usize, stride: usize) -> ShortcutShape {
    let s = &x.shape;
    ShortcutShape {
        n: s[0],
        cin: s[1],
        h: s[2],
        w: s[3],
        cout,
        stride,
    }
}

impl<'a> Recorder<'a> {
    /// A recorder for `m` on `gpu`.
    pub fn new(gpu: &'a Gpu, m: &'a ModelState, train: bool, fine_tune: &'a FineTune) -> Self {
        Recorder {
            gpu,
            m,
            train,
            fine_tune,
            pool: BufferPool::default(),
            act: gpu.precision.activation_type(),
            bn_ranks: 1,
            exchanges: Vec::new(),
            pending: Vec::new(),
        }
    }

    /// Appends a stage of the kernels recorded into `ks`, with the exchanges they wait for.
    pub fn push_stage(&mut self, stages: &mut Vec<Stage>, name: String, kernels: Vec<Kernel>) {
        let stage = stages.len();
        for (index, e) in self.pending.drain(..) {
            self.exchanges.push((KernelAt { stage, index }, e));
        }
        stages.push(Stage { name, kernels });
    }

    /// The exchanges of every stage pushed, in the order they run.
    pub fn finish(self) -> Vec<(KernelAt, Exchange)> {
        assert!(
            self.pending.is_empty(),
            "a stage with BatchNorm exchanges was pushed without push_stage"
        );
        self.exchanges
    }

    /// Appends an op's kernels to `ks`, noting where its exchange (if any) happens.
    fn take(&mut self, ks: &mut Vec<Kernel>, (kernels, exchange): (Vec<Kernel>, Option<Exchange>)) {
        if let Some(e) = exchange {
            self.pending.push((ks.len() + e.before, e));
        }
        ks.extend(kernels);
    }

    /// conv -> BN (fused with `fuse`), keeping what the backward needs.
    pub fn conv_bn(
        &mut self,
        cb: &ConvBn,
        x: &Tensor,
        fuse: Fuse,
        ks: &mut Vec<Kernel>,
    ) -> Result<ConvBnSaved> {
        self.conv_bn_in(cb, ConvInput::stored(x), fuse, false, ks)
    }

    /// [`Recorder::conv_bn`] of `input`. `on_load`: the BN is followed by a ReLU alone and the
    /// next convolution alone reads its output, so where the convolution computed the BN's
    /// statistics in its epilogue, the BN's output is not stored: the next convolution applies
    /// the BN and the ReLU as it loads c (`ConvBnSaved::output`).
    fn conv_bn_in(
        &mut self,
        cb: &ConvBn,
        input: ConvInput,
        fuse: Fuse,
        on_load: bool,
        ks: &mut Vec<Kernel>,
    ) -> Result<ConvBnSaved> {
        if !self.train && self.gpu.fusion && input.bn.is_none() {
            return self.conv_bn_folded(cb, &input.x, fuse, ks);
        }
        let (gpu, sh) = (self.gpu, conv_shape(&input.x, cb));
        let c = self.pool.get_of(gpu, &sh.y_shape(), self.act)?;
        let batch_stats = self.train && !self.fine_tune.bn_fixed(&cb.bn);
        let partial = self.conv(cb, &sh, (&input, &c), batch_stats, ks)?;
        if let Some(partial) = partial
            .as_ref()
            .filter(|_| on_load && self.leaves_bn_to_loads())
        {
            let (stats, params) = self.bn_on_load(cb, &c, partial, ks)?;
            self.pool.put(partial.clone());
            return Ok(ConvBnSaved {
                input,
                c: Some(c),
                a: None,
                on_load: Some(params),
                stats: Some(stats),
            });
        }
        let a = self.pool.get_of(gpu, &sh.y_shape(), self.act)?;
        let stats = self.bn(cb, (&c, &a), fuse, batch_stats, partial, ks)?;
        Ok(ConvBnSaved {
            input,
            c: Some(c),
            a: Some(a),
            on_load: None,
            stats,
        })
    }

    /// Whether a BN inside a block may be left to the next convolution's loads: always, but in
    /// mixed precision on a CPU driver, where rounding each value it loads to f16 is a software
    /// conversion (on lavapipe the forward 17% slower and the backward to the weights 9%,
    /// training 4%: BENCHMARKS.md); a GPU converts in one instruction. `GpuOptions::bn_on_load`
    /// overrides it.
    fn leaves_bn_to_loads(&self) -> bool {
        let cpu_f16 = self.act == Dtype::F16 && self.gpu.info.device_type == wgpu::DeviceType::Cpu;
        self.gpu.bn_on_load.unwrap_or(!cpu_f16)
    }

    /// The batch statistics of a BN the next convolution applies on load, merged from the
    /// convolution's `partial` ones: (the statistics, the on-load parameters).
    fn bn_on_load(
        &mut self,
        cb: &ConvBn,
        c: &Tensor,
        partial: &Tensor,
        ks: &mut Vec<Kernel>,
    ) -> Result<(Tensor, Tensor)> {
        let (gpu, m) = (self.gpu, self.m);
        let bn = BnTensors::of(m, cb)?;
        let p = bn.params();
        let stats = gpu.zeros(&[2, cb.cout])?;
        let params = gpu.zeros(&[batchnorm::on_load_len(cb.cout)])?;
        let merge = batchnorm::forward_train_on_load;
        ks.push(merge(gpu, c, &p, &stats, MOMENTUM, partial, &params)?);
        Ok((stats, params))
    }

    /// Inference's conv -> BN: the BN (running statistics) folded into the conv's weights and
    /// bias (`batchnorm::fold`), its ReLU and residual add in the conv's epilogue, so the conv
    /// writes the BN's output in one pass and its own output is never stored.
    fn conv_bn_folded(
        &mut self,
        cb: &ConvBn,
        x: &Tensor,
        fuse: Fuse,
        ks: &mut Vec<Kernel>,
    ) -> Result<ConvBnSaved> {
        let (gpu, m) = (self.gpu, self.m);
        let sh = conv_shape(x, cb);
        let w = m.param(&cb.conv)?;
        let bn = BnTensors::of(m, cb)?;
        let p = bn.params();
        let (folded_w, folded_b) = (
            self.pool.get(gpu, &w.shape)?,
            self.pool.get(gpu, &[cb.cout])?,
        );
        ks.extend(batchnorm::fold(gpu, &w, &p, &folded_w, &folded_b)?);
        let a = self.pool.get_of(gpu, &sh.y_shape(), self.act)?;
        let epi = conv2d::Epilogue {
            bias: Some(&folded_b),
            residual: fuse.residual,
            relu: fuse.relu,
        };
        ks.extend(conv2d::forward_epilogue(gpu, &sh, x, &folded_w, &epi, &a)?);
        self.pool.put(folded_w);
        self.pool.put(folded_b);
        Ok(ConvBnSaved {
            input: ConvInput::stored(x),
            c: None,
            a: Some(a),
            on_load: None,
            stats: None,
        })
    }

    /// Records c = conv(x); where `batch_stats` are wanted and the shape's kernel family computes
    /// them in its epilogue, also BatchNorm's partial statistics of c, returned (one rank only:
    /// SyncBatchNorm exchanges the chunks of its own reduction).
    fn conv(
        &mut self,
        cb: &ConvBn,
        sh: &Conv2dShape,
        (x, c): (&ConvInput, &Tensor),
        batch_stats: bool,
        ks: &mut Vec<Kernel>,
    ) -> Result<Option<Tensor>> {
        let (gpu, w) = (self.gpu, self.m.param(&cb.conv)?);
        let partial = match batch_stats && gpu.fusion && self.bn_ranks == 1 {
            true => Some(self.pool.get(gpu, &[conv2d::stats_len(sh)])?),
            false => None,
        };
        let input = (&x.x, x.bn.as_ref());
        let (kernels, written) = conv2d::forward_bn_in(gpu, sh, input, &w, c, partial.as_ref())?;
        ks.extend(kernels);
        match partial {
            Some(partial) if !written => {
                self.pool.put(partial);
                Ok(None)
            }
            partial => Ok(partial),
        }
    }

    /// Records a = BN(c) fused with `fuse`: on the batch's statistics where `batch_stats` (merged
    /// from the convolution's `partial` ones where it wrote them, else reduced from c), else on
    /// the running ones. Returns the batch statistics.
    fn bn(
        &mut self,
        cb: &ConvBn,
        (c, a): (&Tensor, &Tensor),
        fuse: Fuse,
        batch_stats: bool,
        partial: Option<Tensor>,
        ks: &mut Vec<Kernel>,
    ) -> Result<Option<Tensor>> {
        let (gpu, m) = (self.gpu, self.m);
        let bn = BnTensors::of(m, cb)?;
        let p = bn.params();
        if !batch_stats {
            ks.extend(batchnorm::forward_eval(gpu, c, a, &p, fuse)?);
            return Ok(None);
        }
        let stats = gpu.zeros(&[2, cb.cout])?;
        if let Some(partial) = partial {
            let from = batchnorm::forward_train_from;
            ks.extend(from(gpu, c, a, &p, &stats, fuse, MOMENTUM, &partial)?);
            self.pool.put(partial);
        } else {
            let ranks = self.bn_ranks;
            let across = batchnorm::forward_train_across;
            let op = across(gpu, c, a, &p, &stats, fuse, MOMENTUM, ranks)?;
            self.take(ks, op);
        }
        Ok(Some(stats))
    }

    /// Backward of [`Recorder::conv_bn`] given `g` = dL/da: the BN's and the conv's parameter
    /// gradients, and dL/dinput when `fused.input_grad`. Where `g.sums` came with it, the
    /// convolution after already masked g by the ReLU and summed it for the BN's backward; where
    /// `below` (the conv + BN + ReLU whose output is this conv's input) is given and the fusion
    /// applies, this conv's backward to the input does that for it and returns its sums.
    pub fn conv_bn_backward(
        &mut self,
        cb: &ConvBn,
        s: &ConvBnSaved,
        g: GradIn,
        fused: FusedGrad,
        below: Option<Below>,
        ks: &mut Vec<Kernel>,
    ) -> Result<GradOut> {
        let (gpu, m) = (self.gpu, self.m);
        let c = s.c.as_ref().expect("training keeps the conv's output");
        let dc = self.pool.get_of(gpu, &c.shape, self.act)?;
        self.bn_backward(cb, s, g, &fused, &dc, ks)?;
        let sh = conv_shape(&s.input.x, cb);
        let dw = m.grad(&cb.conv)?;
        let input = (&s.input.x, s.input.bn.as_ref());
        ks.extend(conv2d::backward_weight_bn_in(
            gpu, &sh, input, &dc, &dw, None,
        )?);
        let out = if fused.input_grad {
            let dx = self.pool.get_of(gpu, &s.input.x.shape, self.act)?;
            let (add, bufs) = (fused.input_add, (&dc, &dx));
            let sums = self.conv_backward_input(cb, &sh, bufs, below, add, ks)?;
            GradOut { g: Some(dx), sums }
        } else {
            GradOut {
                g: None,
                sums: None,
            }
        };
        self.pool.put(dc);
        Ok(out)
    }

    /// Records dc = dL/dc of the BN in `s` given `g`: from the sums the convolution after
    /// computed where they came with g, else reduced here.
    fn bn_backward(
        &mut self,
        cb: &ConvBn,
        s: &ConvBnSaved,
        g: GradIn,
        fused: &FusedGrad,
        dc: &Tensor,
        ks: &mut Vec<Kernel>,
    ) -> Result<()> {
        let (gpu, m) = (self.gpu, self.m);
        let c = s.c.as_ref().expect("training keeps the conv's output");
        let (affine, dparams) = (m.param(&cb.bn)?, m.grad(&cb.bn)?);
        if let Some(sums) = g.sums {
            let saved = s.stats.as_ref().expect("sums only for batch statistics");
            let from = batchnorm::backward_from;
            ks.extend(from(gpu, g.g, c, &affine, saved, dc, &dparams, &sums)?);
            self.pool.put(sums);
            return Ok(());
        }
        // a BN without batch statistics normalised with its running ones (frozen, --bn-eval)
        let running = m.running_of(&cb.bn)?;
        let stats = match &s.stats {
            Some(batch) if self.bn_ranks > 1 => batchnorm::Stats::Across(batch, self.bn_ranks),
            Some(batch) => batchnorm::Stats::Batch(batch),
            None => batchnorm::Stats::Running(&running),
        };
        let (residual_grad, relu) = (fused.residual_grad, fused.relu);
        let a = self.bn_output(cb, s, ks)?;
        let op = batchnorm::backward(
            gpu,
            g.g,
            &a,
            c,
            &affine,
            stats,
            dc,
            &dparams,
            residual_grad,
            relu,
        )?;
        self.take(ks, op);
        if s.a.is_none() {
            self.pool.put(a);
        }
        Ok(())
    }

    /// The BN's output for its unfused backward (its ReLU's mask): stored, or recomputed into a
    /// buffer of the pool where the next convolution applied it on load (and its backward to the
    /// input, on a family without the BatchNorm epilogue, did not mask the gradient).
    fn bn_output(&mut self, cb: &ConvBn, s: &ConvBnSaved, ks: &mut Vec<Kernel>) -> Result<Tensor> {
        if let Some(a) = &s.a {
            return Ok(a.clone());
        }
        let (gpu, m) = (self.gpu, self.m);
        let c =
            s.c.as_ref()
                .expect("applied on load from the conv's output");
        let saved = s
            .stats
            .as_ref()
            .expect("applied on load with batch statistics");
        let bn = BnTensors::of(m, cb)?;
        let p = bn.params();
        let a = self.pool.get_of(gpu, &c.shape, self.act)?;
        ks.push(batchnorm::apply_train(gpu, (c, &a), &p, saved)?);
        Ok(a)
    }

    /// Records dx = conv backward to the input of dc (plus `add`); where `below`'s BN trains
    /// on one rank's batch statistics and the shape's family can, with that BN's ReLU mask and
    /// backward sums in the epilogue (`conv2d::backward_input_bn`): those sums, returned.
    fn conv_backward_input(
        &mut self,
        cb: &ConvBn,
        sh: &Conv2dShape,
        (dc, dx): (&Tensor, &Tensor),
        below: Option<Below>,
        add: Option<&Tensor>,
        ks: &mut Vec<Kernel>,
    ) -> Result<Option<Tensor>> {
        let (gpu, w) = (self.gpu, self.m.param(&cb.conv)?);
        let fusable = (below.filter(|_| gpu.fusion && self.bn_ranks == 1))
            .and_then(|b| Some((b, b.saved.c.as_ref()?, b.saved.stats.as_ref()?)));
        let Some((below, x, saved)) = fusable else {
            ks.extend(match add {
                Some(other) => conv2d::backward_input_add(gpu, sh, dc, &w, other, dx)?,
                None => conv2d::backward_input(gpu, sh, dc, &w, dx)?,
            });
            return Ok(None);
        };
        let affine = self.m.param(&below.cb.bn)?;
        let sums = self.pool.get(gpu, &[conv2d::bn_sums_len(sh)])?;
        let bn = conv2d::BnBelow {
            x,
            affine: &affine,
            saved,
            sums: &sums,
            out: below.residual.then(|| below.saved.a()),
            side: add,
        };
        let (kernels, written) = conv2d::backward_input_bn(gpu, sh, dc, &w, dx, &bn)?;
        ks.extend(kernels);
        if written {
            return Ok(Some(sums));
        }
        self.pool.put(sums);
        Ok(None)
    }

    /// One block: the shortcut first (its output is the residual fused into the last BN), then
    /// the convs, each BN followed by a ReLU.
    pub fn block_forward(
        &mut self,
        b: &Block,
        x: &Tensor,
        ks: &mut Vec<Kernel>,
    ) -> Result<(Tensor, BlockSaved)> {
        let mut projection = None;
        let residual = match &b.shortcut {
            Shortcut::None => None,
            Shortcut::Identity => Some(x.clone()),
            Shortcut::OptionA { stride } => {
                let sh = shortcut_shape(x, b.cout, *stride);
                let y = self.pool.get_of(self.gpu, &sh.y_shape(), self.act)?;
                ks.extend(elementwise::shortcut_a_forward(self.gpu, &sh, x, &y)?);
                Some(y)
            }
            Shortcut::Projection(cb) => {
                let saved = self.conv_bn(cb, x, Fuse::default(), ks)?;
                let a = saved.a().clone();
                projection = Some(saved);
                Some(a)
            }
        };
        let mut convs: Vec<ConvBnSaved> = Vec::new();
        for (i, cb) in b.convs.iter().enumerate() {
            let last = i + 1 == b.convs.len();
            let fuse = Fuse {
                residual: if last { residual.as_ref() } else { None },
                relu: true,
            };
            let input = convs.last().map_or(ConvInput::stored(x), |s| s.output());
            // inside the block, the next convolution alone reads the BN's output
            convs.push(self.conv_bn_in(cb, input, fuse, !last, ks)?);
        }
        let saved = BlockSaved { convs, projection };
        if !self.train {
            self.recycle_block(b, residual, &saved);
        }
        Ok((saved.last().a().clone(), saved))
    }

    /// Evaluation keeps nothing for a backward pass: every intermediate of a block but its output
    /// goes back to the pool.
    fn recycle_block(&mut self, b: &Block, residual: Option<Tensor>, s: &BlockSaved) {
        if let (Some(r), Shortcut::OptionA { .. }) = (residual, &b.shortcut) {
            self.pool.put(r);
        }
        for (i, cs) in s.convs.iter().enumerate() {
            if let Some(c) = &cs.c {
                self.pool.put(c.clone());
            }
            if let Some(a) = cs.a.as_ref().filter(|_| i + 1 < s.convs.len()) {
                self.pool.put(a.clone());
            }
        }
        if let Some(p) = &s.projection {
            if let Some(c) = &p.c {
                self.pool.put(c.clone());
            }
            self.pool.put(p.a().clone());
        }
    }

    /// Backward of one block given `g_out` = dL/d(block output) (the block takes it: it goes
    /// back to the pool here) and, where the next block's first convolution computed them, the
    /// last BN's backward sums (`g_out` then masked by its ReLU, and the shortcut's gradient as
    /// it is). Returns dL/d(block input), the gradient through the convs plus the gradient
    /// through the shortcut where the paths meet, and the sums of `below` (the conv + BN whose
    /// output is the block's input) where the fusion computed them.
    pub fn block_backward(
        &mut self,
        b: &Block,
        s: &BlockSaved,
        (g_out, sums_in): (Tensor, Option<Tensor>),
        below: Option<Below>,
        ks: &mut Vec<Kernel>,
    ) -> Result<GradOut> {
        let has_shortcut = !matches!(b.shortcut, Shortcut::None);
        let masked_in = sums_in.is_some();
        // unmasked, the last BN's backward writes the shortcut's gradient into a buffer
        let mut dres = match has_shortcut && !masked_in {
            true => Some(self.pool.get_of(self.gpu, &g_out.shape, self.act)?),
            false => None,
        };
        let (mut g, mut sums) = (g_out, sums_in);
        let (mut at_shortcut, mut side) = (None, None);
        let n = b.convs.len();
        for i in (0..n).rev() {
            let last = i + 1 == n;
            // fused, the shortcut's gradient comes first, so that the first conv's backward to
            // the input adds it to its own
            if i == 0 && !last && self.gpu.fusion {
                if let Some(t) = at_shortcut.take() {
                    side = Some(self.shortcut_backward(b, s, t, ks)?);
                }
            }
            let fused = FusedGrad {
                relu: true,
                residual_grad: if last { dres.as_ref() } else { None },
                input_grad: true,
                input_add: side.as_ref(),
            };
            // the conv + BN + ReLU below: inside the block, or the unit below the block, where
            // the shortcut's gradient is added in the same epilogue (not after it)
            let below_i = match i {
                0 => below.filter(|_| !has_shortcut || side.is_some()),
                _ => Some(Below::inside(&b.convs[i - 1], &s.convs[i - 1])),
            };
            let g_in = GradIn {
                g: &g,
                sums: sums.take(),
            };
            let out = self.conv_bn_backward(&b.convs[i], &s.convs[i], g_in, fused, below_i, ks)?;
            let used = std::mem::replace(&mut g, out.g.expect("input gradient requested"));
            sums = out.sums;
            match (last && has_shortcut, masked_in) {
                (true, true) => at_shortcut = Some(used),
                (true, false) => {
                    at_shortcut = dres.take();
                    self.pool.put(used);
                }
                _ => self.pool.put(used),
            }
        }
        if let Some(side) = side {
            self.pool.put(side);
            return Ok(GradOut { g: Some(g), sums });
        }
        let Some(at_shortcut) = at_shortcut else {
            return Ok(GradOut { g: Some(g), sums });
        };
        let side = self.shortcut_backward(b, s, at_shortcut, ks)?;
        let g_in = self
            .pool
            .get_of(self.gpu, &s.convs[0].input.x.shape, self.act)?;
        ks.extend(elementwise::add_forward(self.gpu, &g, &side, &g_in)?);
        self.pool.put(g);
        self.pool.put(side);
        Ok(GradOut {
            g: Some(g_in),
            sums: None,
        })
    }

    /// dL/d(block input) through the shortcut, given the gradient at its output.
    fn shortcut_backward(
        &mut self,
        b: &Block,
        s: &BlockSaved,
        g: Tensor,
        ks: &mut Vec<Kernel>,
    ) -> Result<Tensor> {
        let input = &s.convs[0].input.x;
        let dx = match &b.shortcut {
            Shortcut::None | Shortcut::Identity => return Ok(g),
            Shortcut::OptionA { stride } => {
                let sh = shortcut_shape(input, b.cout, *stride);
                let dx = self.pool.get_of(self.gpu, &input.shape, self.act)?;
                ks.extend(elementwise::shortcut_a_backward(self.gpu, &sh, &g, &dx)?);
                dx
            }
            Shortcut::Projection(cb) => {
                let p = s.projection.as_ref().expect("projection saved");
                let fused = FusedGrad {
                    relu: false,
                    residual_grad: None,
                    input_grad: true,
                    input_add: None,
                };
                let g_in = GradIn { g: &g, sums: None };
                let out = self.conv_bn_backward(cb, p, g_in, fused, None, ks)?;
                out.g.expect("input gradient requested")
            }
        };
        self.pool.put(g);
        Ok(dx)
    }
}
