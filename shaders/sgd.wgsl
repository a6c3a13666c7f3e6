// The optimizers of torchvision's `--opt`, one element per invocation over flat parameter,
// gradient and state buffers, as torch.optim's single-tensor (CPU) implementations compute
// (AdamW's bias corrections in f32 here, in f64 there):
//
// SGD (dampening 0):
//   g = grad + decay * p            (decay: weight_decay, or a parameter group's, below)
//   v = momentum * v + g            (v starts at 0, so the first step sets v = g, as PyTorch)
//   step = nesterov ? g + momentum * v : v
//   p = p - lr * step
// RMSprop (not centered; torchvision: alpha 0.9, eps 0.0316):
//   g = grad + decay * p
//   s = alpha * s + (1 - alpha) * g * g                  (s: square_avg, starting at 0)
//   b = momentum * b + g / (sqrt(s) + eps)               (b: momentum_buffer, in `velocity`)
//   p = p - lr * b
// AdamW (betas 0.9, 0.999, eps 1e-8), at its t-th step (adam_count below):
//   p = p * (1 - lr * decay)                             (decoupled: the gradient keeps none)
//   m = m + (1 - beta1) * (g - m)                        (exp_avg, in `velocity`: torch's lerp)
//   s = beta2 * s + (1 - beta2) * g * g                  (exp_avg_sq)
//   p = p - lr / (1 - beta1^t) * m / (sqrt(s) / sqrt(1 - beta2^t) + eps)

struct Params {
    len: u32, nesterov: u32, lr: f32, momentum: f32,
    // SGD and RMSprop: the three groups' decays; AdamW: their factors 1 - lr * decay, computed
    // by the host in f64 as torch computes them in Python
    weight_decay: f32, norm_decay: f32, bias_decay: f32,
    offset: u32,   // where element 0 sits in the flat parameter buffer (decay_kind's index)
    by_kind: u32,  // 1: each element decays as decay_kind says; 0: all by weight_decay
    rule: u32,     // 0 SGD, 1 RMSprop, 2 AdamW
    beta2: f32,    // RMSprop's alpha, AdamW's beta2
    one_minus_beta1: f32,
    one_minus_beta2: f32, // 1 - alpha for RMSprop; in f64 then rounded, as torch's Python floats
    eps: f32,
    ln_beta1: f32, ln_beta2: f32, // AdamW's, for adam_count
}

const RMSPROP = 1u;
const ADAMW = 2u;

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read_write> param: array<f32>;
@group(0) @binding(2) var<storage, read> grad: array<f32>;
@group(0) @binding(3) var<storage, read_write> velocity: array<f32>;
// torchvision's parameter groups of set_weight_decay, 2 bits an element of the whole flat buffer,
// 16 a word: 0 the other parameters (weight_decay), 1 a norm layer's (norm_decay), 2 a bias
// (bias_decay). One kernel keeps the optimizer a single pass over every parameter, where a
// kernel per group would alternate at every layer.
@group(0) @binding(5) var<storage, read> decay_kind: array<u32>;

fn decay(i: u32) -> f32 {
    if (P.by_kind == 0u) { return P.weight_decay; }
    let at = P.offset + i;
    let kind = (decay_kind[at / 16u] >> ((at % 16u) * 2u)) & 3u;
    return select(select(P.weight_decay, P.norm_decay, kind == 1u), P.bias_decay, kind == 2u);
}

// RMSprop's square_avg, AdamW's exp_avg_sq (a placeholder for SGD)
@group(0) @binding(7) var<storage, read_write> second: array<f32>;
// AdamW's [step count t, 1 - beta1^t, sqrt(1 - beta2^t), _] as adam_count writes them, bits
@group(0) @binding(8) var<storage, read> adam: array<u32>;

// The update of element i by its gradient g (unscaled, clipped where asked), by P.rule: a
// uniform branch, so one kernel serves the three optimizers.
fn update(i: u32, g_in: f32) {
    let p = param[i];
    if (P.rule == ADAMW) {
        adamw(i, p * decay(i), g_in);
        return;
    }
    if (P.rule == RMSPROP) {
        rmsprop(i, p, fma(decay(i), p, g_in));
        return;
    }
    let g = g_in + decay(i) * p;
    let v = P.momentum * velocity[i] + g;
    velocity[i] = v;
    let step = select(v, g + P.momentum * v, P.nesterov != 0u);
    param[i] = p - P.lr * step;
}

// RMSprop and AdamW round as torch's CPU kernels on x86-64 do (checked there element by element):
// add with alpha, lerp and addcmul are fused multiply-adds, addcdiv is self + (value * t1) / t2.

// RMSprop's step from the decayed gradient g (torch: grad.add(param, alpha=weight_decay)).
fn rmsprop(i: u32, p: f32, g: f32) {
    let s = fma(P.one_minus_beta2 * g, g, second[i] * P.beta2);
    second[i] = s;
    let avg = sqrt(s) + P.eps;
    if (P.momentum > 0.0) {
        let b = velocity[i] * P.momentum + g / avg;
        velocity[i] = b;
        param[i] = fma(-P.lr, b, p);
    } else {
        param[i] = p + (-P.lr * g) / avg;
    }
}

// AdamW's moments and step from the decayed weight p.
fn adamw(i: u32, p: f32, g: f32) {
    let m = fma(P.one_minus_beta1, g - velocity[i], velocity[i]);
    velocity[i] = m;
    let s = fma(P.one_minus_beta2 * g, g, second[i] * P.beta2);
    second[i] = s;
    let step_size = P.lr / bitcast<f32>(adam[1]);
    let denom = sqrt(s) / bitcast<f32>(adam[2]) + P.eps;
    param[i] = p + (-step_size * m) / denom;
}

@compute @workgroup_size(256)
fn sgd_step(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * nwg.x) * 256u + lid;
    if (i >= P.len) { return; }
    update(i, grad[i]);
}

// The same step under dynamic loss scaling (amp.wgsl): the gradients hold grad * scale; a step
// whose gradients have an inf or NaN changes nothing (GradScaler.step skips optimizer.step).
@group(0) @binding(4) var<storage, read> amp: array<u32>; // [scale bits, tracker, found, skipped]

// PyTorch unscales by the reciprocal rounded once; a power of two's is exact (WGSL's division
// need not be), anything else divides
fn inv_scale() -> f32 {
    let scale = bitcast<f32>(amp[0]);
    let parts = frexp(scale);
    return select(1.0 / scale, ldexp(1.0, 1 - parts.exp), parts.fract == 0.5);
}

@compute @workgroup_size(256)
fn sgd_step_scaled(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * nwg.x) * 256u + lid;
    if (i >= P.len || amp[2] != 0u) { return; }
    update(i, grad[i] * inv_scale());
}

// The steps with the gradients clipped to a global norm (clip.wgsl's factor, as
// torch.nn.utils.clip_grad_norm_ multiplies them after GradScaler.unscale_).
@group(0) @binding(6) var<storage, read> clip: array<f32>;

@compute @workgroup_size(256)
fn sgd_step_clipped(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * nwg.x) * 256u + lid;
    if (i >= P.len) { return; }
    update(i, grad[i] * clip[0]);
}

@compute @workgroup_size(256)
fn sgd_step_scaled_clipped(@builtin(workgroup_id) wid: vec3<u32>,
                           @builtin(num_workgroups) nwg: vec3<u32>,
                           @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * nwg.x) * 256u + lid;
    if (i >= P.len || amp[2] != 0u) { return; }
    update(i, grad[i] * inv_scale() * clip[0]);
}

// AdamW's step count, advanced once a step before its updates (one invocation): t += 1 and the
// bias corrections 1 - beta^t, from ln(beta) (the host's, in f64) by expm1, which keeps them
// to f32's precision where beta^t is near 1 (1 - exp(x) would lose most digits of 1 - 0.999).
// Under loss scaling a skipped step does not count, as GradScaler skips optimizer.step.
@group(0) @binding(9) var<storage, read_write> adam_state: array<u32>;

// e^x - 1: Taylor's series to x^10 for |x| < 1/4 (the next term is under 1e-12 of it), else exp
fn expm1(x: f32) -> f32 {
    if (abs(x) >= 0.25) { return exp(x) - 1.0; }
    var r = 1.0 + x / 10.0;
    for (var k = 9.0; k >= 2.0; k -= 1.0) { r = 1.0 + x / k * r; }
    return x * r;
}

fn count_step() {
    let t = adam_state[0] + 1u;
    adam_state[0] = t;
    adam_state[1] = bitcast<u32>(-expm1(f32(t) * P.ln_beta1));
    adam_state[2] = bitcast<u32>(sqrt(-expm1(f32(t) * P.ln_beta2)));
}

@compute @workgroup_size(1)
fn adam_count() { count_step(); }

@compute @workgroup_size(1)
fn adam_count_scaled() {
    if (amp[2] != 0u) { return; }
    count_step();
}
