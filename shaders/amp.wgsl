// Dynamic loss scaling as torch.amp.GradScaler, kept on the GPU so that a step never waits for
// the host. The state is six u32 words: [scale (f32 bits), growth tracker, found inf, skipped
// steps, steps taken, the step at which the scale first fell below 1 (0: never)]; the host reads
// the last one to stop a diverging run, naming the step. The loss's gradient is multiplied by the scale (loss.wgsl), so every gradient is
// scaled; then, in the optimizer stage:
//
//   amp_find_inf       found = any gradient is inf or NaN (an OR: the same whatever the order)
//   sgd_step_scaled    (sgd.wgsl) skips the update when found, else uses grad / scale
//   amp_update_scale   GradScaler.update(): found -> scale *= backoff, tracker = 0, skipped += 1;
//                      else tracker += 1, and at growth_interval scale *= growth (if finite),
//                      tracker = 0. Then found = 0 for the next step.

struct Params { len: u32, growth_interval: u32, growth_factor: f32, backoff_factor: f32 }

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> grad: array<f32>;
@group(0) @binding(2) var<storage, read_write> found: array<atomic<u32>>; // the state, as atomics
@group(0) @binding(3) var<storage, read_write> state: array<u32>;

const SCALE = 0u;
const TRACKER = 1u;
const FOUND = 2u;
const SKIPPED = 3u;
const STEPS = 4u;
const BELOW_ONE_AT = 5u;

@compute @workgroup_size(256)
fn amp_find_inf(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * nwg.x) * 256u + lid;
    if (i >= P.len) { return; }
    // exponent all ones: inf or NaN (a bit test, since `x != x` may be folded away)
    if ((bitcast<u32>(grad[i]) & 0x7f800000u) == 0x7f800000u) {
        atomicOr(&found[FOUND], 1u);
    }
}

@compute @workgroup_size(1)
fn amp_update_scale() {
    var scale = bitcast<f32>(state[SCALE]);
    if (state[FOUND] != 0u) {
        scale *= P.backoff_factor;
        state[TRACKER] = 0u;
        state[SKIPPED] += 1u;
    } else {
        let successful = state[TRACKER] + 1u;
        if (successful == P.growth_interval) {
            let grown = scale * P.growth_factor;
            if ((bitcast<u32>(grown) & 0x7f800000u) != 0x7f800000u) { scale = grown; }
            state[TRACKER] = 0u;
        } else {
            state[TRACKER] = successful;
        }
    }
    state[SCALE] = bitcast<u32>(scale);
    state[FOUND] = 0u;
    state[STEPS] += 1u;
    if (scale < 1.0 && state[BELOW_ONE_AT] == 0u) { state[BELOW_ONE_AT] = state[STEPS]; }
}
