// torch.nn.utils.clip_grad_norm_(parameters, max_norm): the global L2 norm of the gradients,
// then each gradient times min(max_norm / (norm + 1e-6), 1), which sgd.wgsl's clipped steps
// read from `factor`. The sum of squares runs in a fixed order, so a run gives the same bits
// every time: clip_block_sums sums each block of 256 x PER elements (an invocation its PER
// elements 256 apart, then a tree over the workgroup) into `sums`; clip_factor sums the blocks'
// sums the same way and takes the root. Under dynamic loss scaling the gradients hold
// grad * scale: the norm is divided by the scale (GradScaler.unscale_ comes before the clip).

struct Params {
    len: u32,          // clip_block_sums: the elements of this chunk of the gradients
    first_block: u32,  // clip_block_sums: where this chunk's first block's sum goes
    blocks: u32,       // clip_factor: how many block sums there are in all
    max_norm: f32,
    scaled: u32,       // 1: the gradients are scaled by amp[0]'s scale
    _p0: u32, _p1: u32, _p2: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> grad: array<f32>;
@group(0) @binding(2) var<storage, read_write> sums: array<f32>;
@group(0) @binding(3) var<storage, read_write> factor: array<f32>;
@group(0) @binding(4) var<storage, read> amp: array<u32>; // [scale bits, ...] (amp.wgsl)

const PER: u32 = 16u;

var<workgroup> part: array<f32, 256>;

// part[0] = the sum of part[0..256], in a fixed tree (every invocation of the workgroup calls it)
fn workgroup_sum(lid: u32) {
    workgroupBarrier();
    for (var stride = 128u; stride > 0u; stride = stride / 2u) {
        if (lid < stride) { part[lid] += part[lid + stride]; }
        workgroupBarrier();
    }
}

@compute @workgroup_size(256)
fn clip_block_sums(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let block = wid.x + wid.y * nwg.x;
    var s = 0.0;
    for (var k = 0u; k < PER; k++) {
        let i = (block * PER + k) * 256u + lid;
        if (i < P.len) {
            let g = grad[i];
            s += g * g;
        }
    }
    part[lid] = s;
    workgroup_sum(lid);
    if (lid == 0u && block * PER * 256u < P.len) { sums[P.first_block + block] = part[0]; }
}

@compute @workgroup_size(256)
fn clip_factor(@builtin(local_invocation_index) lid: u32) {
    var s = 0.0;
    for (var b = lid; b < P.blocks; b += 256u) { s += sums[b]; }
    part[lid] = s;
    workgroup_sum(lid);
    if (lid == 0u) {
        var norm = sqrt(part[0]);
        if (P.scaled != 0u) { norm = norm / bitcast<f32>(amp[0]); }
        // torch's clamp(max=1) keeps a NaN (a NaN gradient makes every gradient NaN); WGSL's
        // min need not, so a NaN is tested by its bits (`x != x` may be folded away)
        let coef = P.max_norm / (norm + 1e-6);
        let bits = bitcast<u32>(coef);
        let nan = (bits & 0x7f800000u) == 0x7f800000u && (bits & 0x007fffffu) != 0u;
        factor[0] = select(min(coef, 1.0), coef, nan);
    }
}
