// SGD as torch.optim.SGD (dampening 0):
//   g = grad + weight_decay * p
//   v = momentum * v + g            (v starts at 0, so the first step sets v = g, as PyTorch)
//   step = nesterov ? g + momentum * v : v
//   p = p - lr * step
// One invocation per element over flat parameter, gradient and momentum buffers.

struct Params { len: u32, nesterov: u32, lr: f32, momentum: f32, weight_decay: f32, _p0: u32, _p1: u32, _p2: u32 }

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read_write> param: array<f32>;
@group(0) @binding(2) var<storage, read> grad: array<f32>;
@group(0) @binding(3) var<storage, read_write> velocity: array<f32>;

@compute @workgroup_size(256)
fn sgd_step(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * nwg.x) * 256u + lid;
    if (i >= P.len) { return; }
    let p = param[i];
    let g = grad[i] + P.weight_decay * p;
    let v = P.momentum * velocity[i] + g;
    velocity[i] = v;
    let step = select(v, g + P.momentum * v, P.nesterov != 0u);
    param[i] = p - P.lr * step;
}

// The same step under dynamic loss scaling (amp.wgsl): the gradients hold grad * scale; a step
// whose gradients have an inf or NaN changes nothing (GradScaler.step skips optimizer.step).
@group(0) @binding(4) var<storage, read> amp: array<u32>; // [scale bits, tracker, found, skipped]

@compute @workgroup_size(256)
fn sgd_step_scaled(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * nwg.x) * 256u + lid;
    if (i >= P.len || amp[2] != 0u) { return; }
    // PyTorch unscales by the reciprocal rounded once; a power of two's is exact (WGSL's
    // division need not be), anything else divides
    let scale = bitcast<f32>(amp[0]);
    let parts = frexp(scale);
    let inv_scale = select(1.0 / scale, ldexp(1.0, 1 - parts.exp), parts.fract == 0.5);
    let p = param[i];
    let g = grad[i] * inv_scale + P.weight_decay * p;
    let v = P.momentum * velocity[i] + g;
    velocity[i] = v;
    let step = select(v, g + P.momentum * v, P.nesterov != 0u);
    param[i] = p - P.lr * step;
}
