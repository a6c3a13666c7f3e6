//! The op references: one function per op and direction, loops over every index.
#![allow(clippy::too_many_arguments)]

/// Convolution geometry: (n, c, h, w, k, r, s, stride, pad, groups).
#[derive(Clone, Copy, Debug)]
pub struct Conv {
    /// Batch.
    pub n: usize,
    /// Input channels.
    pub c: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Output channels.
    pub k: usize,
    /// Kernel height.
    pub r: usize,
    /// Kernel width.
    pub s: usize,
    /// Stride.
    pub stride: usize,
    /// Zero padding.
    pub pad: usize,
    /// PyTorch's `groups`: output channel k sums the input channels of its group, `k / (K /
    /// groups)`, only; w is [K, C / groups, R, S].
    pub groups: usize,
}

impl Conv {
    /// Output height.
    pub fn p(&self) -> usize {
        (self.h + 2 * self.pad - self.r) / self.stride + 1
    }
    /// Output width.
    pub fn q(&self) -> usize {
        (self.w + 2 * self.pad - self.s) / self.stride + 1
    }
    /// Input coordinate read by output (p, q) through tap (r, s), if inside the image.
    fn tap(&self, p: usize, q: usize, r: usize, s: usize) -> Option<(usize, usize)> {
        let h = (p * self.stride + r) as isize - self.pad as isize;
        let w = (q * self.stride + s) as isize - self.pad as isize;
        (h >= 0 && w >= 0 && (h as usize) < self.h && (w as usize) < self.w)
            .then_some((h as usize, w as usize))
    }

    /// (input channel, weight index) of output channel k's `cl`-th input at tap (r, s).
    fn input(&self, k: usize, cl: usize, r: usize, s: usize) -> (usize, usize) {
        let cg = self.c / self.groups;
        let c = k / (self.k / self.groups) * cg + cl;
        (c, ((k * cg + cl) * self.r + r) * self.s + s)
    }
}

/// y = conv2d(x, w) + b, PyTorch's cross-correlation: x [N, C, H, W], w [K, C, R, S].
pub fn conv_forward(g: &Conv, x: &[f64], w: &[f64], b: Option<&[f64]>) -> Vec<f64> {
    let (p, q) = (g.p(), g.q());
    let mut y = vec![0.0; g.n * g.k * p * q];
    for n in 0..g.n {
        for k in 0..g.k {
            for pp in 0..p {
                for qq in 0..q {
                    let mut acc = b.map_or(0.0, |b| b[k]);
                    for cl in 0..g.c / g.groups {
                        for r in 0..g.r {
                            for s in 0..g.s {
                                if let Some((h, ww)) = g.tap(pp, qq, r, s) {
                                    let (c, wi) = g.input(k, cl, r, s);
                                    acc += w[wi] * x[((n * g.c + c) * g.h + h) * g.w + ww];
                                }
                            }
                        }
                    }
                    y[((n * g.k + k) * p + pp) * q + qq] = acc;
                }
            }
        }
    }
    y
}

/// (dx, dw, db) of conv_forward given dy.
pub fn conv_backward(g: &Conv, x: &[f64], w: &[f64], dy: &[f64]) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let (p, q) = (g.p(), g.q());
    let mut dx = vec![0.0; x.len()];
    let mut dw = vec![0.0; w.len()];
    let mut db = vec![0.0; g.k];
    for n in 0..g.n {
        for k in 0..g.k {
            for pp in 0..p {
                for qq in 0..q {
                    let d = dy[((n * g.k + k) * p + pp) * q + qq];
                    db[k] += d;
                    for cl in 0..g.c / g.groups {
                        for r in 0..g.r {
                            for s in 0..g.s {
                                if let Some((h, ww)) = g.tap(pp, qq, r, s) {
                                    let (c, wi) = g.input(k, cl, r, s);
                                    let xi = ((n * g.c + c) * g.h + h) * g.w + ww;
                                    dx[xi] += w[wi] * d;
                                    dw[wi] += x[xi] * d;
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    (dx, dw, db)
}

/// Training-mode batchnorm: returns (y, mean, biased var) with optional residual and ReLU.
pub fn bn_forward(
    n: usize,
    c: usize,
    hw: usize,
    x: &[f64],
    gamma: &[f64],
    beta: &[f64],
    res: Option<&[f64]>,
    relu: bool,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let m = (n * hw) as f64;
    let mut mean = vec![0.0; c];
    let mut var = vec![0.0; c];
    for ch in 0..c {
        let vals: Vec<f64> = (0..n)
            .flat_map(|i| (0..hw).map(move |j| (i, j)))
            .map(|(i, j)| x[(i * c + ch) * hw + j])
            .collect();
        let mu = vals.iter().sum::<f64>() / m;
        mean[ch] = mu;
        var[ch] = vals.iter().map(|v| (v - mu) * (v - mu)).sum::<f64>() / m;
    }
    let y = bn_apply(n, c, hw, x, gamma, beta, &mean, &var, res, relu);
    (y, mean, var)
}

/// y = relu?((x - mean)/sqrt(var + eps) * gamma + beta + res?).
pub fn bn_apply(
    n: usize,
    c: usize,
    hw: usize,
    x: &[f64],
    gamma: &[f64],
    beta: &[f64],
    mean: &[f64],
    var: &[f64],
    res: Option<&[f64]>,
    relu: bool,
) -> Vec<f64> {
    let mut y = vec![0.0; x.len()];
    for i in 0..n * c * hw {
        let ch = (i / hw) % c;
        let mut v = (x[i] - mean[ch]) / (var[ch] + 1e-5).sqrt() * gamma[ch] + beta[ch];
        if let Some(r) = res {
            v += r[i];
        }
        y[i] = if relu { v.max(0.0) } else { v };
    }
    y
}

/// Gradients of training-mode `bn_forward` given its output `y` and `dy`: (dx, dgamma, dbeta,
/// dres). With a fused ReLU the gradient is masked where `y` is 0; the residual's gradient is the
/// masked `dy` (the residual was added before the ReLU).
pub fn bn_backward(
    n: usize,
    c: usize,
    hw: usize,
    x: &[f64],
    gamma: &[f64],
    mean: &[f64],
    var: &[f64],
    y: &[f64],
    dy: &[f64],
    relu: bool,
) -> (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>) {
    let len = n * c * hw;
    let gmask: Vec<f64> = (0..len)
        .map(|i| if relu && y[i] <= 0.0 { 0.0 } else { dy[i] })
        .collect();
    let m = (n * hw) as f64;
    let mut dgamma = vec![0.0; c];
    let mut dbeta = vec![0.0; c];
    for i in 0..len {
        let ch = (i / hw) % c;
        dbeta[ch] += gmask[i];
        dgamma[ch] += gmask[i] * (x[i] - mean[ch]) / (var[ch] + 1e-5).sqrt();
    }
    let dx = (0..len)
        .map(|i| {
            let ch = (i / hw) % c;
            let is = 1.0 / (var[ch] + 1e-5).sqrt();
            let xhat = (x[i] - mean[ch]) * is;
            gamma[ch] * is * (gmask[i] - dbeta[ch] / m - xhat * dgamma[ch] / m)
        })
        .collect();
    (dx, dgamma, dbeta, gmask)
}

/// max(x, 0).
pub fn relu(x: &[f64]) -> Vec<f64> {
    x.iter().map(|v| v.max(0.0)).collect()
}

/// Option-A shortcut: y[n, c, h, w] = x[n, c - pad, h*st, w*st] inside the channel band.
pub fn shortcut_a(
    n: usize,
    cin: usize,
    h: usize,
    w: usize,
    cout: usize,
    st: usize,
    x: &[f64],
) -> Vec<f64> {
    let (ho, wo, pad) = (h.div_ceil(st), w.div_ceil(st), (cout - cin) / 2);
    let mut y = vec![0.0; n * cout * ho * wo];
    for i in 0..n {
        for c in 0..cin {
            for a in 0..ho {
                for b in 0..wo {
                    y[((i * cout + c + pad) * ho + a) * wo + b] =
                        x[((i * cin + c) * h + a * st) * w + b * st];
                }
            }
        }
    }
    y
}

/// Max pool (padding never wins, first maximum on ties).
pub fn maxpool(
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    k: usize,
    st: usize,
    pad: usize,
    x: &[f64],
) -> Vec<f64> {
    let p = (h + 2 * pad - k) / st + 1;
    let q = (w + 2 * pad - k) / st + 1;
    let mut y = vec![f64::NEG_INFINITY; n * c * p * q];
    for nc in 0..n * c {
        for a in 0..p {
            for b in 0..q {
                for r in 0..k {
                    for s in 0..k {
                        let hh = (a * st + r) as isize - pad as isize;
                        let ww = (b * st + s) as isize - pad as isize;
                        if hh >= 0 && ww >= 0 && (hh as usize) < h && (ww as usize) < w {
                            let v = x[nc * h * w + hh as usize * w + ww as usize];
                            let o = &mut y[(nc * p + a) * q + b];
                            if v > *o {
                                *o = v;
                            }
                        }
                    }
                }
            }
        }
    }
    y
}

/// Global average pool: [N, C, HW] -> [N, C].
pub fn avgpool(n: usize, c: usize, hw: usize, x: &[f64]) -> Vec<f64> {
    (0..n * c)
        .map(|i| x[i * hw..(i + 1) * hw].iter().sum::<f64>() / hw as f64)
        .collect()
}

/// y = x W^T + b: x `[n, i]`, W `[o, i]`, b `[o]`.
pub fn linear(n: usize, i: usize, o: usize, x: &[f64], w: &[f64], b: &[f64]) -> Vec<f64> {
    let mut y = vec![0.0; n * o];
    for a in 0..n {
        for j in 0..o {
            y[a * o + j] = b[j] + (0..i).map(|t| x[a * i + t] * w[j * i + t]).sum::<f64>();
        }
    }
    y
}

/// Mean softmax cross-entropy.
pub fn cross_entropy(n: usize, o: usize, z: &[f64], labels: &[u32]) -> f64 {
    (0..n)
        .map(|a| {
            let row = &z[a * o..(a + 1) * o];
            let mx = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let lse = mx + row.iter().map(|v| (v - mx).exp()).sum::<f64>().ln();
            lse - row[labels[a] as usize]
        })
        .sum::<f64>()
        / n as f64
}

/// Mean cross-entropy against probability targets `q` [N, O], by its definition:
/// -sum_o q_o log softmax(z)_o (torch.nn.functional.cross_entropy with a target of class
/// probabilities, such as MixUp's and CutMix's).
pub fn cross_entropy_soft(n: usize, o: usize, z: &[f64], q: &[f64]) -> f64 {
    let mut total = 0.0;
    for a in 0..n {
        let row = &z[a * o..(a + 1) * o];
        let mx = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let lse = mx + row.iter().map(|v| (v - mx).exp()).sum::<f64>().ln();
        for (j, &zj) in row.iter().enumerate() {
            total -= q[a * o + j] * (zj - lse);
        }
    }
    total / n as f64
}

/// Mean cross-entropy against smoothed targets, by its definition: -sum_o q_o log softmax(z)_o
/// with q = (1 - e) onehot(label) + e / O (torch.nn.CrossEntropyLoss(label_smoothing=e)).
pub fn cross_entropy_smoothed(n: usize, o: usize, z: &[f64], labels: &[u32], e: f64) -> f64 {
    let mut q = vec![e / o as f64; n * o];
    for (a, &label) in labels.iter().enumerate().take(n) {
        q[a * o + label as usize] += 1.0 - e;
    }
    cross_entropy_soft(n, o, z, &q)
}

/// dx of `shortcut_a` given dy: the subsampled positions of the kept channels get dy, the rest 0.
pub fn shortcut_a_backward(
    n: usize,
    cin: usize,
    h: usize,
    w: usize,
    cout: usize,
    st: usize,
    dy: &[f64],
) -> Vec<f64> {
    let (ho, wo, pad) = (h.div_ceil(st), w.div_ceil(st), (cout - cin) / 2);
    let mut dx = vec![0.0; n * cin * h * w];
    for i in 0..n {
        for c in 0..cin {
            for a in 0..ho {
                for b in 0..wo {
                    dx[((i * cin + c) * h + a * st) * w + b * st] =
                        dy[((i * cout + c + pad) * ho + a) * wo + b];
                }
            }
        }
    }
    dx
}

/// dx of `maxpool` given dy: each output's gradient goes to the first maximum of its window
/// (PyTorch's choice), summed where windows overlap.
pub fn maxpool_backward(
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    k: usize,
    st: usize,
    pad: usize,
    x: &[f64],
    dy: &[f64],
) -> Vec<f64> {
    let p = (h + 2 * pad - k) / st + 1;
    let q = (w + 2 * pad - k) / st + 1;
    let mut dx = vec![0.0; x.len()];
    for nc in 0..n * c {
        for a in 0..p {
            for b in 0..q {
                let mut best: Option<(f64, usize)> = None;
                for r in 0..k {
                    for s in 0..k {
                        let hh = (a * st + r) as isize - pad as isize;
                        let ww = (b * st + s) as isize - pad as isize;
                        if hh >= 0 && ww >= 0 && (hh as usize) < h && (ww as usize) < w {
                            let i = nc * h * w + hh as usize * w + ww as usize;
                            if best.is_none_or(|(v, _)| x[i] > v) {
                                best = Some((x[i], i));
                            }
                        }
                    }
                }
                if let Some((_, i)) = best {
                    dx[i] += dy[(nc * p + a) * q + b];
                }
            }
        }
    }
    dx
}

/// dx of `avgpool` given dy [n, c]: dy / (h w) at every position.
pub fn avgpool_backward(n: usize, c: usize, hw: usize, dy: &[f64]) -> Vec<f64> {
    (0..n * c * hw).map(|i| dy[i / hw] / hw as f64).collect()
}

/// (dx, dw, db) of `linear` given dy [n, o]: dx = dy W, dW = dy^T x, db = sum over the batch.
pub fn linear_backward(
    n: usize,
    i: usize,
    o: usize,
    x: &[f64],
    w: &[f64],
    dy: &[f64],
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let mut dx = vec![0.0; n * i];
    let mut dw = vec![0.0; o * i];
    let mut db = vec![0.0; o];
    for a in 0..n {
        for j in 0..o {
            let g = dy[a * o + j];
            db[j] += g;
            for t in 0..i {
                dx[a * i + t] += g * w[j * i + t];
                dw[j * i + t] += g * x[a * i + t];
            }
        }
    }
    (dx, dw, db)
}

/// Gradient of the mean `cross_entropy` with respect to the logits: (softmax(z) - onehot) / n.
pub fn cross_entropy_backward(n: usize, o: usize, z: &[f64], labels: &[u32]) -> Vec<f64> {
    let mut dz = vec![0.0; n * o];
    for a in 0..n {
        let row = &z[a * o..(a + 1) * o];
        let mx = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = row.iter().map(|v| (v - mx).exp()).sum();
        for j in 0..o {
            let onehot = if j == labels[a] as usize { 1.0 } else { 0.0 };
            dz[a * o + j] = ((row[j] - mx).exp() / sum - onehot) / n as f64;
        }
    }
    dz
}
