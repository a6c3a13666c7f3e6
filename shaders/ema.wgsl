// An exponential moving average of a model's weights, as torchvision's ExponentialMovingAverage
// (an AveragedModel with use_buffers=True, so BatchNorm's running statistics are averaged too):
//   the first update (nothing averaged yet):  ema = x
//   every later one:                          ema = decay * ema + (1 - decay) * x
// One invocation per element of a flat buffer (parameters, or running statistics).

struct Params { len: u32, first: u32, decay: f32, rest: f32 }  // rest: 1 - decay, rounded once

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read_write> ema: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;

@compute @workgroup_size(256)
fn ema_update(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * nwg.x) * 256u + lid;
    if (i >= P.len) { return; }
    ema[i] = select(P.decay * ema[i] + P.rest * x[i], x[i], P.first != 0u);
}
