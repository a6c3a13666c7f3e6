//! Turns a model's layer graph into stages of kernels: forward block by block, backward in
//! reverse, then the optimizer. Gradients of activations come from a pool of reused buffers.

use super::{Mode, ModelState, PlanConfig, Stage};
use crate::error::Result;
use crate::gpu::{Gpu, Kernel, Tensor};
use crate::model::{Block, ConvBn, Shortcut};
use crate::ops::augment::{self, AugmentConfig};
use crate::ops::batchnorm::{self, BnParams, Fuse, MOMENTUM};
use crate::ops::conv2d::{self, Conv2dShape};
use crate::ops::elementwise::{self, ShortcutShape};
use crate::ops::loss::{self, LossBuffers};
use crate::ops::pool::{self as pooling, PoolShape};
use crate::ops::{linear, sgd};
use std::collections::HashMap;

/// The buffers a caller fills and reads.
pub(super) struct Io {
    pub pixels: Tensor,
    pub labels: Tensor,
    pub logits: Tensor,
    pub loss: LossBuffers,
}

/// Output of [`build`]: stages, io buffers, the augment kernel's index in stage 0, and
/// (stage, kernel, length) of every SGD kernel.
type Built = (Vec<Stage>, Io, usize, Vec<(usize, usize, usize)>);

pub(super) fn augment_config(cfg: &PlanConfig, seed: u32) -> AugmentConfig {
    let train = cfg.mode == Mode::Train && cfg.augment;
    let pad = if train { cfg.pad } else { 0 };
    // eval: centre crop when the source is larger than the input
    let centre = (cfg.src.0.saturating_sub(cfg.input.0) / 2) as isize;
    AugmentConfig {
        n: cfg.batch,
        src: cfg.src,
        out: cfg.input,
        pad: if train { pad } else { centre.max(0) as usize },
        train,
        seed,
        mean: cfg.mean,
        std: cfg.std,
    }
}

/// Floats per image of the largest activation (for suggesting a batch size that fits).
pub(super) fn largest_activation(m: &ModelState, cfg: &PlanConfig) -> usize {
    let (h, w) = cfg.input;
    let s = m.arch.stem.stride;
    // the stem's output is the largest activation of every ResNet (it has the most pixels)
    m.arch.stem.cout * h.div_ceil(s) * w.div_ceil(s)
}

/// Buffers of the same size are reused once their last reader has been recorded.
#[derive(Default)]
struct Pool {
    free: HashMap<usize, Vec<Tensor>>,
}

impl Pool {
    fn get(&mut self, gpu: &Gpu, shape: &[usize]) -> Result<Tensor> {
        let len: usize = shape.iter().product();
        match self.free.get_mut(&len).and_then(Vec::pop) {
            Some(t) => Ok(Tensor {
                shape: shape.to_vec(),
                ..t
            }),
            None => gpu.zeros(shape),
        }
    }
    fn put(&mut self, t: Tensor) {
        self.free.entry(t.len()).or_default().push(t);
    }
}

/// What the backward pass needs from one conv + BN.
struct ConvBnSaved {
    input: Tensor,
    c: Tensor,
    a: Tensor,
    saved: Option<Tensor>,
}

struct BlockSaved {
    convs: Vec<ConvBnSaved>,
    proj: Option<ConvBnSaved>,
}

struct Builder<'a> {
    gpu: &'a Gpu,
    m: &'a ModelState,
    train: bool,
    pool: Pool,
}

impl Builder<'_> {
    fn conv_shape(x: &Tensor, cb: &ConvBn) -> Conv2dShape {
        let s = &x.shape;
        Conv2dShape {
            n: s[0],
            c: s[1],
            h: s[2],
            w: s[3],
            k: cb.cout,
            r: cb.k,
            s: cb.k,
            stride: cb.stride,
            pad: cb.pad,
        }
    }

    /// conv -> BN (fused with `fuse`); returns what backward needs (the conv output `c`, the BN
    /// output `a`, the batch statistics).
    fn conv_bn(
        &mut self,
        cb: &ConvBn,
        x: &Tensor,
        fuse: Fuse,
        ks: &mut Vec<Kernel>,
    ) -> Result<ConvBnSaved> {
        let (gpu, m) = (self.gpu, self.m);
        let sh = Self::conv_shape(x, cb);
        let c = self.pool.get(gpu, &sh.y_shape())?;
        ks.extend(conv2d::forward(gpu, &sh, x, &m.param(&cb.conv)?, None, &c)?);
        let a = self.pool.get(gpu, &sh.y_shape())?;
        let (affine, running) = (m.param(&cb.bn)?, m.running_of(&cb.bn)?);
        let p = BnParams {
            affine: &affine,
            running: &running,
        };
        let saved = if self.train {
            let saved = gpu.zeros(&[2, cb.cout])?;
            ks.extend(batchnorm::forward_train(
                gpu, &c, &a, &p, &saved, fuse, MOMENTUM,
            )?);
            Some(saved)
        } else {
            ks.extend(batchnorm::forward_eval(gpu, &c, &a, &p, fuse)?);
            None
        };
        Ok(ConvBnSaved {
            input: x.clone(),
            c,
            a,
            saved,
        })
    }

    /// Backward of [`Builder::conv_bn`] given `g` = dL/da; returns dL/dinput if asked.
    #[allow(clippy::too_many_arguments)]
    fn conv_bn_backward(
        &mut self,
        cb: &ConvBn,
        s: &ConvBnSaved,
        g: &Tensor,
        relu: bool,
        dres: Option<&Tensor>,
        need_dx: bool,
        ks: &mut Vec<Kernel>,
    ) -> Result<Option<Tensor>> {
        let (gpu, m) = (self.gpu, self.m);
        let dc = self.pool.get(gpu, &s.c.shape)?;
        let saved = s.saved.as_ref().expect("training plan");
        let affine = m.param(&cb.bn)?;
        ks.extend(batchnorm::backward(
            gpu,
            g,
            &s.a,
            &s.c,
            &affine,
            saved,
            &dc,
            &m.grad(&cb.bn)?,
            dres,
            relu,
        )?);
        let sh = Self::conv_shape(&s.input, cb);
        ks.extend(conv2d::backward_weight(
            gpu,
            &sh,
            &s.input,
            &dc,
            &m.grad(&cb.conv)?,
            None,
        )?);
        let dx = if need_dx {
            let dx = self.pool.get(gpu, &s.input.shape)?;
            ks.extend(conv2d::backward_input(
                gpu,
                &sh,
                &dc,
                &m.param(&cb.conv)?,
                &dx,
            )?);
            Some(dx)
        } else {
            None
        };
        self.pool.put(dc);
        Ok(dx)
    }

    fn block_forward(
        &mut self,
        b: &Block,
        x: &Tensor,
        ks: &mut Vec<Kernel>,
    ) -> Result<(Tensor, BlockSaved)> {
        let gpu = self.gpu;
        // the shortcut first: its output is the residual fused into the last BN
        let mut proj = None;
        let residual = match &b.shortcut {
            Shortcut::None => None,
            Shortcut::Identity => Some(x.clone()),
            Shortcut::OptionA { stride } => {
                let s = &x.shape;
                let sh = ShortcutShape {
                    n: s[0],
                    cin: s[1],
                    h: s[2],
                    w: s[3],
                    cout: b.cout,
                    stride: *stride,
                };
                let y = self.pool.get(gpu, &sh.y_shape())?;
                ks.extend(elementwise::shortcut_a_forward(gpu, &sh, x, &y)?);
                Some(y)
            }
            Shortcut::Projection(cb) => {
                let saved = self.conv_bn(cb, x, Fuse::default(), ks)?;
                let a = saved.a.clone();
                proj = Some(saved);
                Some(a)
            }
        };
        let mut convs = Vec::new();
        let mut cur = x.clone();
        for (i, cb) in b.convs.iter().enumerate() {
            let last = i + 1 == b.convs.len();
            let fuse = Fuse {
                residual: if last { residual.as_ref() } else { None },
                relu: true,
            };
            let saved = self.conv_bn(cb, &cur, fuse, ks)?;
            cur = saved.a.clone();
            convs.push(saved);
        }
        if !self.train {
            // nothing is kept for a backward pass: hand every intermediate back to the pool
            if let (Some(r), Shortcut::OptionA { .. }) = (residual, &b.shortcut) {
                self.pool.put(r);
            }
            for (i, s) in convs.iter().enumerate() {
                self.pool.put(s.c.clone());
                if i + 1 < convs.len() {
                    self.pool.put(s.a.clone());
                }
            }
            if let Some(p) = &proj {
                self.pool.put(p.c.clone());
                self.pool.put(p.a.clone());
            }
        }
        Ok((cur, BlockSaved { convs, proj }))
    }

    /// Backward of one block given g = dL/d(block output); returns dL/d(block input).
    fn block_backward(
        &mut self,
        b: &Block,
        s: &BlockSaved,
        g_out: &Tensor,
        ks: &mut Vec<Kernel>,
    ) -> Result<Tensor> {
        let gpu = self.gpu;
        let out_shape = g_out.shape.clone();
        let g_s = match b.shortcut {
            Shortcut::None => None,
            _ => Some(self.pool.get(gpu, &out_shape)?),
        };
        let mut g = g_out.clone();
        for i in (0..b.convs.len()).rev() {
            let last = i + 1 == b.convs.len();
            let dres = if last { g_s.as_ref() } else { None };
            let dx = self
                .conv_bn_backward(&b.convs[i], &s.convs[i], &g, true, dres, true, ks)?
                .expect("dx");
            if !last {
                self.pool.put(g);
            }
            g = dx;
        }
        let input = &s.convs[0].input;
        let side = match (&b.shortcut, g_s) {
            (Shortcut::None, _) | (_, None) => return Ok(g),
            (Shortcut::Identity, Some(gs)) => gs,
            (Shortcut::OptionA { stride }, Some(gs)) => {
                let x = &input.shape;
                let sh = ShortcutShape {
                    n: x[0],
                    cin: x[1],
                    h: x[2],
                    w: x[3],
                    cout: b.cout,
                    stride: *stride,
                };
                let t = self.pool.get(gpu, &input.shape)?;
                ks.extend(elementwise::shortcut_a_backward(gpu, &sh, &gs, &t)?);
                self.pool.put(gs);
                t
            }
            (Shortcut::Projection(cb), Some(gs)) => {
                let p = s.proj.as_ref().expect("projection saved");
                let t = self
                    .conv_bn_backward(cb, p, &gs, false, None, true, ks)?
                    .expect("dx");
                self.pool.put(gs);
                t
            }
        };
        let g_in = self.pool.get(gpu, &input.shape)?;
        ks.extend(elementwise::add_forward(gpu, &g, &side, &g_in)?);
        self.pool.put(g);
        self.pool.put(side);
        Ok(g_in)
    }
}

pub(super) fn build(gpu: &Gpu, m: &ModelState, cfg: &PlanConfig) -> Result<Built> {
    let n = cfg.batch;
    let train = cfg.mode == Mode::Train;
    let arch = &m.arch;
    let mut b = Builder {
        gpu,
        m,
        train,
        pool: Pool::default(),
    };
    let mut stages = Vec::new();

    // input: u8 pixels -> augmented, normalised f32
    let pixels = gpu.zeros(&[(n * 3 * cfg.src.0 * cfg.src.1).div_ceil(4)])?;
    let labels = gpu.zeros(&[n])?;
    let x0 = gpu.zeros(&[n, 3, cfg.input.0, cfg.input.1])?;
    let ks = augment::augment(gpu, &augment_config(cfg, 0), &pixels, &x0)?;
    stages.push(Stage {
        name: "input".into(),
        kernels: ks,
    });

    // stem
    let mut ks = Vec::new();
    let stem = b.conv_bn(
        &arch.stem,
        &x0,
        Fuse {
            residual: None,
            relu: true,
        },
        &mut ks,
    )?;
    let mut cur = stem.a.clone();
    let mut pool_saved = None;
    if arch.maxpool {
        let s = &cur.shape;
        let sh = PoolShape {
            n: s[0],
            c: s[1],
            h: s[2],
            w: s[3],
            k: 3,
            stride: 2,
            pad: 1,
        };
        let y = b.pool.get(gpu, &sh.y_shape())?;
        let arg = gpu.zeros(&sh.y_shape())?;
        ks.extend(pooling::maxpool_forward(gpu, &sh, &cur, &y, &arg)?);
        pool_saved = Some((sh, arg));
        cur = y;
    }
    stages.push(Stage {
        name: "stem".into(),
        kernels: ks,
    });

    // residual blocks
    let mut saved = Vec::new();
    for blk in &arch.blocks {
        let mut ks = Vec::new();
        let (out, s) = b.block_forward(blk, &cur, &mut ks)?;
        if !train {
            b.pool.put(cur.clone());
        }
        cur = out;
        saved.push(s);
        stages.push(Stage {
            name: blk.name.clone(),
            kernels: ks,
        });
    }

    // head: global average pool, fc, loss
    let mut ks = Vec::new();
    let feat = gpu.zeros(&[n, arch.fc_in])?;
    ks.extend(pooling::avgpool_forward(gpu, &cur, &feat)?);
    let logits = gpu.zeros(&[n, arch.fc_out])?;
    let (fc_w, fc_b) = (m.param("fc")?, m.view(&m.params, m.layout.fc_bias())?);
    ks.extend(linear::forward(gpu, &feat, &fc_w, &fc_b, &logits)?);
    let dlogits = gpu.zeros(&[n, arch.fc_out])?;
    let loss_bufs = LossBuffers::new(gpu, n)?;
    ks.extend(loss::cross_entropy(
        gpu, &logits, &labels, &dlogits, &loss_bufs,
    )?);
    stages.push(Stage {
        name: "head".into(),
        kernels: ks,
    });

    let mut sgd_kernels = Vec::new();
    if train {
        let mut ks = Vec::new();
        let dfeat = gpu.zeros(&[n, arch.fc_in])?;
        let (dw, db) = (m.grad("fc")?, m.view(&m.grads, m.layout.fc_bias())?);
        ks.extend(linear::backward(
            gpu,
            &feat,
            &fc_w,
            &dlogits,
            Some(&dfeat),
            &dw,
            &db,
        )?);
        let mut g = b.pool.get(gpu, &cur.shape)?;
        ks.extend(pooling::avgpool_backward(gpu, &dfeat, &g)?);
        stages.push(Stage {
            name: "head.backward".into(),
            kernels: ks,
        });

        for (blk, s) in arch.blocks.iter().zip(&saved).rev() {
            let mut ks = Vec::new();
            let g_in = b.block_backward(blk, s, &g, &mut ks)?;
            b.pool.put(g);
            g = g_in;
            stages.push(Stage {
                name: format!("{}.backward", blk.name),
                kernels: ks,
            });
        }

        let mut ks = Vec::new();
        if let Some((sh, arg)) = &pool_saved {
            let ga = b.pool.get(gpu, &sh.x_shape())?;
            ks.extend(pooling::maxpool_backward(gpu, sh, &g, arg, &ga)?);
            b.pool.put(g);
            g = ga;
        }
        b.conv_bn_backward(&arch.stem, &stem, &g, true, None, false, &mut ks)?;
        stages.push(Stage {
            name: "stem.backward".into(),
            kernels: ks,
        });

        // SGD over the flat buffers, in chunks that fit one binding
        let align = gpu.view_align();
        let max_chunk = (gpu.limits.max_storage_buffer_binding_size as usize / 4) / align * align;
        let total = m.layout.params_len;
        let mut ks = Vec::new();
        let mut off = 0;
        while off < total {
            let len = max_chunk.min(total - off);
            let v = |t: &Tensor| t.view(off, &[len]);
            ks.extend(sgd::step(
                gpu,
                &cfg.sgd,
                &v(&m.params)?,
                &v(&m.grads)?,
                &v(&m.momentum)?,
            )?);
            sgd_kernels.push((stages.len(), ks.len() - 1, len));
            off += len;
        }
        stages.push(Stage {
            name: "optimizer".into(),
            kernels: ks,
        });
    }
    Ok((
        stages,
        Io {
            pixels,
            labels,
            logits,
            loss: loss_bufs,
        },
        0,
        sgd_kernels,
    ))
}
