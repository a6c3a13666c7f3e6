//! A CPU f64 reference of one whole training step of a ResNet: forward, loss, backward to every
//! parameter, and the BN running statistics, composed from the op references in `reference` by
//! state_dict name, the way torchvision's `ResNet.forward` and akamaster's CIFAR ResNets run.
//!
//! The structure is read from the state_dict alone (PyTorch's view of a model), not from the
//! engine's layer graph: `conv1` 3x3 is a CIFAR stem, 7x7 a torchvision stem with its max pool;
//! `layer{s}.{i}` blocks, bottlenecks where `conv3` exists; stride 2 in the first block of every
//! stage after the first (on `conv2` in a bottleneck, as torchvision v1.5); a projection shortcut
//! where `downsample.0` exists, else the identity or, where the shape changes, option A. Only
//! whether the net has shortcuts at all (ResNet vs plain) comes from outside.

use super::ops::*;
use std::collections::HashMap;

/// A state_dict: name -> (shape, values).
pub type StateDict = HashMap<String, (Vec<usize>, Vec<f64>)>;

/// BatchNorm's momentum for the running estimates (PyTorch's default).
const BN_MOMENTUM: f64 = 0.1;

/// What one training step computes.
pub struct Step {
    /// Mean cross-entropy of the batch.
    pub loss: f64,
    /// The network output [N, classes].
    pub logits: Vec<f64>,
    /// dL/dparameter by state_dict name.
    pub grads: HashMap<String, Vec<f64>>,
    /// `<bn>.running_mean` and `<bn>.running_var` after the step.
    pub running: HashMap<String, Vec<f64>>,
}

/// An activation and its shape [N, C, H, W].
#[derive(Clone)]
struct Act {
    v: Vec<f64>,
    s: [usize; 4],
}

/// What a conv + BN keeps for its backward.
struct ConvBnTape {
    conv: String,
    bn: String,
    geom: Conv,
    x: Vec<f64>,
    /// The conv's output, the BN's input.
    c: Vec<f64>,
    mean: Vec<f64>,
    var: Vec<f64>,
    y: Vec<f64>,
    relu: bool,
}

enum ShortcutTape {
    None,
    Identity,
    OptionA {
        x: [usize; 4],
        cout: usize,
        stride: usize,
    },
    Projection(Box<ConvBnTape>),
}

struct BlockTape {
    convs: Vec<ConvBnTape>,
    shortcut: ShortcutTape,
}

struct Tapes {
    stem: ConvBnTape,
    maxpool: Option<(Act, Act)>,
    blocks: Vec<BlockTape>,
    last: [usize; 4],
    features: Vec<f64>,
    logits: Vec<f64>,
}

/// The forward pass with everything the backward needs, and the running statistics it updates.
struct Net<'a> {
    sd: &'a StateDict,
    residual: bool,
    running: HashMap<String, Vec<f64>>,
    /// Mixed precision: the convolutions' operands rounded to f16, the gradients at this loss
    /// scale (as the GPU rounds them, scaled); `None`: exact.
    f16_at_scale: Option<f64>,
}

/// `v` rounded to f16 (to nearest) as `v * scale` would be, then unscaled.
fn to_f16(v: &[f64], scale: f64) -> Vec<f64> {
    v.iter()
        .map(|x| half::f16::from_f64(x * scale).to_f64() / scale)
        .collect()
}

impl Net<'_> {
    /// A convolution's operand as the GPU multiplies it: exact, or in f16 (`scaled`: a
    /// gradient, rounded at the loss scale).
    fn operand(&self, v: &[f64], scaled: bool) -> Vec<f64> {
        match self.f16_at_scale {
            None => v.to_vec(),
            Some(s) => to_f16(v, if scaled { s } else { 1.0 }),
        }
    }

    /// A tensor between two ops as the GPU stores it: exact, or in f16 (activations as they
    /// are; `scaled`: a gradient, rounded at the loss scale).
    fn stored(&self, v: Vec<f64>, scaled: bool) -> Vec<f64> {
        match self.f16_at_scale {
            None => v,
            Some(_) => self.operand(&v, scaled),
        }
    }

    fn w(&self, name: &str) -> &[f64] {
        &self
            .sd
            .get(name)
            .unwrap_or_else(|| panic!("state_dict has no {name}"))
            .1
    }

    fn has(&self, name: &str) -> bool {
        self.sd.contains_key(name)
    }

    /// conv (no bias) -> training-mode BN (+ residual) (+ ReLU).
    fn conv_bn(
        &mut self,
        prefix: (&str, &str),
        x: &Act,
        stride: usize,
        res: Option<&[f64]>,
        relu: bool,
    ) -> (Act, ConvBnTape) {
        let (conv, bn) = prefix;
        let ws = &self.sd[&format!("{conv}.weight")].0;
        let geom = Conv {
            n: x.s[0],
            c: x.s[1],
            h: x.s[2],
            w: x.s[3],
            k: ws[0],
            r: ws[2],
            s: ws[3],
            stride,
            pad: ws[2] / 2,
            // a grouped convolution's weight is [K, C / groups, R, S]
            groups: x.s[1] / ws[1],
        };
        let (xh, wh) = (
            self.operand(&x.v, false),
            self.operand(self.w(&format!("{conv}.weight")), false),
        );
        let computed = conv_forward(&geom, &xh, &wh, None);
        let (n, k, hw) = (geom.n, geom.k, geom.p() * geom.q());
        let gamma = self.w(&format!("{bn}.weight")).to_vec();
        let beta = self.w(&format!("{bn}.bias")).to_vec();
        // the batch statistics of the output as computed, before it is stored: the GPU's
        // convolution sums them in its epilogue from its f32 accumulators (the fused default)
        let (_, mean, var) = bn_forward(n, k, hw, &computed, &gamma, &beta, res, relu);
        let c = self.stored(computed, false);
        let y = bn_apply(n, k, hw, &c, &gamma, &beta, &mean, &var, res, relu);
        let y = self.stored(y, false);
        self.update_running(bn, &mean, &var, n * hw);
        let tape = ConvBnTape {
            conv: conv.into(),
            bn: bn.into(),
            geom,
            x: x.v.clone(),
            c,
            mean,
            var,
            y: y.clone(),
            relu,
        };
        let s = [n, k, geom.p(), geom.q()];
        (Act { v: y, s }, tape)
    }

    /// running = (1 - momentum) running + momentum batch, the variance unbiased.
    fn update_running(&mut self, bn: &str, mean: &[f64], var: &[f64], count: usize) {
        let unbiased = count as f64 / (count as f64 - 1.0);
        for (key, batch) in [
            ("running_mean", mean.to_vec()),
            ("running_var", var.to_vec()),
        ] {
            let name = format!("{bn}.{key}");
            let old = self.w(&name).to_vec();
            let scale = if key == "running_var" { unbiased } else { 1.0 };
            let new = old
                .iter()
                .zip(&batch)
                .map(|(o, b)| (1.0 - BN_MOMENTUM) * o + BN_MOMENTUM * b * scale)
                .collect();
            self.running.insert(name, new);
        }
    }

    fn block(&mut self, name: &str, x: &Act, stride: usize) -> (Act, BlockTape) {
        let bottleneck = self.has(&format!("{name}.conv3.weight"));
        let strides: &[usize] = if bottleneck {
            &[1, stride, 1]
        } else {
            &[stride, 1]
        };
        // the shortcut first: the last BN adds it before its ReLU
        let planes_out = self.sd[&format!("{name}.conv{}.weight", strides.len())].0[0];
        let (res, shortcut) = if !self.residual {
            (None, ShortcutTape::None)
        } else if self.has(&format!("{name}.downsample.0.weight")) {
            let (conv, bn) = (
                format!("{name}.downsample.0"),
                format!("{name}.downsample.1"),
            );
            let (a, tape) = self.conv_bn((&conv, &bn), x, stride, None, false);
            (Some(a.v), ShortcutTape::Projection(Box::new(tape)))
        } else if stride == 1 && x.s[1] == planes_out {
            (Some(x.v.clone()), ShortcutTape::Identity)
        } else {
            let [n, c, h, w] = x.s;
            let y = shortcut_a(n, c, h, w, planes_out, stride, &x.v);
            let tape = ShortcutTape::OptionA {
                x: x.s,
                cout: planes_out,
                stride,
            };
            (Some(y), tape)
        };
        let mut cur = x.clone();
        let mut convs = Vec::new();
        for (j, &st) in strides.iter().enumerate() {
            let last = j + 1 == strides.len();
            let (conv, bn) = (
                format!("{name}.conv{}", j + 1),
                format!("{name}.bn{}", j + 1),
            );
            let r = if last { res.as_deref() } else { None };
            let (a, tape) = self.conv_bn((&conv, &bn), &cur, st, r, true);
            cur = a;
            convs.push(tape);
        }
        (cur, BlockTape { convs, shortcut })
    }

    fn forward(&mut self, x: &Act, labels: &[u32]) -> (f64, Tapes) {
        let stem_k = self.sd["conv1.weight"].0[2];
        let imagenet = stem_k == 7;
        let (mut a, stem) = self.conv_bn(
            ("conv1", "bn1"),
            x,
            if imagenet { 2 } else { 1 },
            None,
            true,
        );
        let mut maxpool = None;
        if imagenet {
            let [n, c, h, w] = a.s;
            let y = Act {
                v: maxpool_ref(n, c, h, w, &a.v),
                s: [n, c, (h - 1) / 2 + 1, (w - 1) / 2 + 1],
            };
            maxpool = Some((a, y.clone()));
            a = y;
        }
        let mut blocks = Vec::new();
        for s in 1.. {
            if !self.has(&format!("layer{s}.0.conv1.weight")) {
                break;
            }
            for i in 0.. {
                let name = format!("layer{s}.{i}");
                if !self.has(&format!("{name}.conv1.weight")) {
                    break;
                }
                let stride = if s > 1 && i == 0 { 2 } else { 1 };
                let (y, tape) = self.block(&name, &a, stride);
                a = y;
                blocks.push(tape);
            }
        }
        let [n, c, h, w] = a.s;
        let features = self.stored(avgpool(n, c, h * w, &a.v), false);
        let o = self.sd["fc.weight"].0[0];
        let logits = linear(n, c, o, &features, self.w("fc.weight"), self.w("fc.bias"));
        let loss = cross_entropy(n, o, &logits, labels);
        let tapes = Tapes {
            stem,
            maxpool,
            blocks,
            last: a.s,
            features,
            logits,
        };
        (loss, tapes)
    }
}

fn maxpool_ref(n: usize, c: usize, h: usize, w: usize, x: &[f64]) -> Vec<f64> {
    maxpool(n, c, h, w, 3, 2, 1, x)
}

/// Accumulates parameter gradients by name while walking the tapes backward.
struct Backward<'a> {
    net: &'a Net<'a>,
    grads: HashMap<String, Vec<f64>>,
}

impl Backward<'_> {
    /// dL/dx of a conv + BN given dL/dy, as computed (the caller stores it: the GPU adds the
    /// shortcut's gradient to a block's first before it stores it); also returns dL/d(residual)
    /// (the masked dy).
    fn conv_bn(&mut self, t: &ConvBnTape, dy: &[f64]) -> (Vec<f64>, Vec<f64>) {
        let g = &t.geom;
        let (n, k, hw) = (g.n, g.k, g.p() * g.q());
        let gamma = self.net.w(&format!("{}.weight", t.bn));
        let (dc, dgamma, dbeta, dres) =
            bn_backward(n, k, hw, &t.c, gamma, &t.mean, &t.var, &t.y, dy, t.relu);
        let dc = self.net.stored(dc, true);
        self.grads.insert(format!("{}.weight", t.bn), dgamma);
        self.grads.insert(format!("{}.bias", t.bn), dbeta);
        let net = self.net;
        let w = net.operand(net.w(&format!("{}.weight", t.conv)), false);
        let (x, dc) = (net.operand(&t.x, false), net.operand(&dc, true));
        let (dx, dw, _) = conv_backward(g, &x, &w, &dc);
        self.grads.insert(format!("{}.weight", t.conv), dw);
        (dx, dres)
    }

    fn block(&mut self, t: &BlockTape, dy: &[f64]) -> Vec<f64> {
        let mut g = dy.to_vec();
        let mut g_shortcut = None;
        for (j, conv) in t.convs.iter().enumerate().rev() {
            let (dx, dres) = self.conv_bn(conv, &g);
            if j + 1 == t.convs.len() {
                g_shortcut = Some(dres);
            }
            g = match j {
                0 => dx,
                _ => self.net.stored(dx, true),
            };
        }
        let g_shortcut = g_shortcut.expect("a block has convs");
        let side = match &t.shortcut {
            ShortcutTape::None => return self.net.stored(g, true),
            ShortcutTape::Identity => g_shortcut,
            ShortcutTape::OptionA { x, cout, stride } => {
                let [n, c, h, w] = *x;
                shortcut_a_backward(n, c, h, w, *cout, *stride, &g_shortcut)
            }
            ShortcutTape::Projection(p) => {
                let dx = self.conv_bn(p, &g_shortcut).0;
                self.net.stored(dx, true)
            }
        };
        // where the two paths meet, their gradients add
        let sum = g.iter().zip(&side).map(|(a, b)| a + b).collect();
        self.net.stored(sum, true)
    }

    fn run(&mut self, t: &Tapes, labels: &[u32]) {
        let [n, c, h, w] = t.last;
        let o = self.net.sd["fc.weight"].0[0];
        let dlogits = cross_entropy_backward(n, o, &t.logits, labels);
        let fc_w = self.net.w("fc.weight");
        let (dfeat, dw, db) = linear_backward(n, c, o, &t.features, fc_w, &dlogits);
        self.grads.insert("fc.weight".into(), dw);
        self.grads.insert("fc.bias".into(), db);
        let dfeat = self.net.stored(dfeat, true);
        let mut g = self.net.stored(avgpool_backward(n, c, h * w, &dfeat), true);
        for b in t.blocks.iter().rev() {
            g = self.block(b, &g);
        }
        if let Some((x, _)) = &t.maxpool {
            let [n, c, h, w] = x.s;
            g = self
                .net
                .stored(maxpool_backward(n, c, h, w, 3, 2, 1, &x.v, &g), true);
        }
        self.conv_bn(&t.stem, &g);
    }
}

/// Mean cross-entropy of the forward pass in training mode (batch statistics): what the finite
/// differences perturb.
pub fn loss(sd: &StateDict, x: &[f64], shape: [usize; 4], labels: &[u32], residual: bool) -> f64 {
    let mut net = Net {
        sd,
        residual,
        running: HashMap::new(),
        f16_at_scale: None,
    };
    let x = Act {
        v: x.to_vec(),
        s: shape,
    };
    net.forward(&x, labels).0
}

/// One training step of the network in `sd` on the normalised batch `x` of `shape`.
pub fn training_step(
    sd: &StateDict,
    x: &[f64],
    shape: [usize; 4],
    labels: &[u32],
    residual: bool,
) -> Step {
    step(sd, (x, shape, labels), residual, None)
}

/// [`training_step`] in mixed precision: every convolution's operands rounded to f16 to
/// nearest (its input and weights; in the backward its gradient as scaled by `loss_scale`), and
/// every tensor the GPU stores between ops (the input, each convolution's and BatchNorm's
/// output, the pooled features; the gradients at the loss scale); the arithmetic in between,
/// the logits, the BatchNorm statistics and the weights' gradients exact; the gradients
/// returned unscaled.
pub fn training_step_mixed(
    sd: &StateDict,
    (x, shape, labels): (&[f64], [usize; 4], &[u32]),
    residual: bool,
    loss_scale: f64,
) -> Step {
    step(sd, (x, shape, labels), residual, Some(loss_scale))
}

fn step(
    sd: &StateDict,
    (x, shape, labels): (&[f64], [usize; 4], &[u32]),
    residual: bool,
    f16_at_scale: Option<f64>,
) -> Step {
    let mut net = Net {
        sd,
        residual,
        running: HashMap::new(),
        f16_at_scale,
    };
    let input = Act {
        v: net.stored(x.to_vec(), false),
        s: shape,
    };
    let (loss, tapes) = net.forward(&input, labels);
    let mut bwd = Backward {
        net: &net,
        grads: HashMap::new(),
    };
    bwd.run(&tapes, labels);
    let grads = bwd.grads;
    Step {
        loss,
        logits: tapes.logits,
        grads,
        running: net.running,
    }
}
