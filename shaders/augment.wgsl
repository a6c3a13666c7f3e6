// Data augmentation on the GPU, from u8 pixels to normalised f32 (or f16) images.
//
//   pixels [N, 3, Hs, Ws] bytes (CIFAR's planar order), packed little-endian four to a u32
//   out    [N, 3, Ho, Wo] f32 (f16 in mixed precision):  out = (pixel / 255 - mean[c]) / std[c]
//   train: zero-pad by `pad`, crop Ho x Wo at a random offset (ox, oy) in [0, 2*pad], then flip
//          horizontally with probability 1/2 (torchvision's RandomCrop(padding) + RandomHorizontalFlip)
//   eval:  offset (pad, pad), no flip
//   erase: (training, `erase` != 0) then 0 inside image n's rectangle erase[4n..4n+4] = top, left,
//          height, width of the output (torchvision's RandomErasing after Normalize, value 0),
//          drawn on the CPU (`RandomErasing::rect`); height 0: none
//   mix:   (training) MixUp, lambda x image n + (1 - lambda) x image n - 1 (the last for the
//          first), or CutMix, image n - 1 inside the box `cut` (src/preprocess/mix.rs): one draw
//          per batch, in the uniform
// The random numbers come from a hash of (seed, image index), reproduced in Rust by
// `ops::augment::crop_params`, so a run is reproducible from its seed. The index counts from
// `first`: a data-parallel rank's shard starts there in the global batch, and its images get the
// crops they would get in one process.

struct Params {
    n: u32, hs: u32, ws: u32, ho: u32,
    wo: u32, pad: u32, seed: u32, train: u32,
    first: u32, erase: u32, _p2: u32, _p3: u32,
    mean: vec4<f32>,
    stdev: vec4<f32>,
    mix: u32, lambda: f32, _p4: u32, _p5: u32,
    cut: vec4<u32>,  // CutMix's box: x1, y1, x2, y2 (exclusive)
}

const MIXUP: u32 = 1u;
const CUTMIX: u32 = 2u;

// The type activations are stored in: f32 here; f16 in the modules of f16 activations
// (src/ops/activations.rs), which compute in f32 between the load and the store.
alias act_t = f32;

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> pixels: array<u32>;
@group(0) @binding(2) var<storage, read_write> out: array<act_t>;
// without erasing any read-only buffer: it is not read
@group(0) @binding(3) var<storage, read> erase: array<u32>;

fn hash(v: u32) -> u32 {
    var x = v;
    x ^= x >> 16u;
    x *= 0x7feb352du;
    x ^= x >> 15u;
    x *= 0x846ca68bu;
    x ^= x >> 16u;
    return x;
}

fn byte_at(i: u32) -> u32 {
    return (pixels[i / 4u] >> ((i % 4u) * 8u)) & 0xffu;
}

// Image n's value at (c, y, x) of the output: cropped, flipped, normalised, erased.
fn image_value(n: u32, c: u32, y: u32, x: u32) -> f32 {
    var ox = P.pad;
    var oy = P.pad;
    var flip = false;
    if (P.train != 0u) {
        let r = hash(P.seed ^ hash(P.first + n));
        let span = 2u * P.pad + 1u;
        ox = r % span;
        oy = (r >> 8u) % span;
        flip = ((r >> 16u) & 1u) == 1u;
    }
    let xs = select(x, P.wo - 1u - x, flip);
    let sx = i32(xs + ox) - i32(P.pad);
    let sy = i32(y + oy) - i32(P.pad);
    var v = 0.0;
    if (sx >= 0 && sy >= 0 && sx < i32(P.ws) && sy < i32(P.hs)) {
        v = f32(byte_at(((n * 3u + c) * P.hs + u32(sy)) * P.ws + u32(sx))) / 255.0;
    }
    var value = (v - P.mean[c]) / P.stdev[c];
    if (P.erase != 0u) {
        let top = erase[4u * n];
        let left = erase[4u * n + 1u];
        if (y >= top && y < top + erase[4u * n + 2u] && x >= left && x < left + erase[4u * n + 3u]) {
            value = 0.0;
        }
    }
    return value;
}

@compute @workgroup_size(256)
fn augment(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * nwg.x) * 256u + lid;
    if (i >= P.n * 3u * P.ho * P.wo) { return; }
    let x = i % P.wo;
    let t = i / P.wo;
    let y = t % P.ho;
    let t2 = t / P.ho;
    let c = t2 % 3u;
    let n = t2 / 3u;
    var value = image_value(n, c, y, x);
    // the image before it in this batch (batch.roll(1, 0))
    let before = (n + P.n - 1u) % P.n;
    if (P.mix == MIXUP) {
        // torchvision: batch * lambda + rolled * (1 - lambda)
        value = value * P.lambda + image_value(before, c, y, x) * (1.0 - P.lambda);
    } else if (P.mix == CUTMIX && x >= P.cut.x && y >= P.cut.y && x < P.cut.z && y < P.cut.w) {
        value = image_value(before, c, y, x);
    }
    out[i] = act_t(value);
}
