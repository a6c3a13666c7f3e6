// SGD as torch.optim.SGD (dampening 0):
//   g = grad + decay * p            (decay: weight_decay, or a parameter group's, below)
//   v = momentum * v + g            (v starts at 0, so the first step sets v = g, as PyTorch)
//   step = nesterov ? g + momentum * v : v
//   p = p - lr * step
// One invocation per element over flat parameter, gradient and momentum buffers.

struct Params {
    len: u32, nesterov: u32, lr: f32, momentum: f32,
    weight_decay: f32, norm_decay: f32, bias_decay: f32,
    offset: u32,   // where element 0 sits in the flat parameter buffer (decay_kind's index)
    by_kind: u32,  // 1: each element decays as decay_kind says; 0: all by weight_decay
    _p0: u32, _p1: u32, _p2: u32,
}

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

// The update of element i by its gradient g (unscaled, clipped where asked): weight decay,
// momentum, the step.
fn update(i: u32, g_in: f32) {
    let p = param[i];
    let g = g_in + decay(i) * p;
    let v = P.momentum * velocity[i] + g;
    velocity[i] = v;
    let step = select(v, g + P.momentum * v, P.nesterov != 0u);
    param[i] = p - P.lr * step;
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
