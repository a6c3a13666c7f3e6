// Elementwise ops and the option-A shortcut of He et al. 2016.
//
//   relu      y = max(x, 0)                      dx = dy * [y > 0]
//   add       y = a + b                          (backward: dy flows unchanged to a and b)
//   shortcut_a  x [N, Cin, H, W] -> y [N, Cout, Ho, Wo]: y[n, c, h, w] = x[n, c - pad, h*st, w*st]
//             for pad <= c < pad + Cin, else 0 (stride-2 subsample + zero channel padding)
//             backward: dx[n, c, h, w] = dy[n, c + pad, h/st, w/st] where h, w are multiples of st

struct Params {
    len: u32, n: u32, cin: u32, h: u32,
    w: u32, cout: u32, ho: u32, wo: u32,
    stride: u32, pad: u32, _p0: u32, _p1: u32,
}

// The type activations are stored in: f32 here; f16 in the modules of f16 activations
// (src/ops/activations.rs), which compute in f32 between the load and the store.
alias act_t = f32;

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> a: array<act_t>;
@group(0) @binding(2) var<storage, read> b: array<act_t>;
@group(0) @binding(3) var<storage, read_write> out: array<act_t>;

fn index(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wid.x + wid.y * nwg.x) * 256u + lid;
}

// a = x, out = y
@compute @workgroup_size(256)
fn relu_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i >= P.len) { return; }
    out[i] = act_t(max(f32(a[i]), 0.0));
}

// a = dy, b = y (the forward output), out = dx
@compute @workgroup_size(256)
fn relu_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i >= P.len) { return; }
    out[i] = act_t(select(0.0, f32(a[i]), f32(b[i]) > 0.0));
}

// out = a + b
@compute @workgroup_size(256)
fn add_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i >= P.len) { return; }
    out[i] = act_t(f32(a[i]) + f32(b[i]));
}

// a = x, out = y; one invocation per output element
@compute @workgroup_size(256)
fn shortcut_a_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i >= P.len) { return; }
    let w = i % P.wo;
    let t = i / P.wo;
    let h = t % P.ho;
    let t2 = t / P.ho;
    let c = t2 % P.cout;
    let n = t2 / P.cout;
    var v = 0.0;
    if (c >= P.pad && c < P.pad + P.cin) {
        v = f32(a[((n * P.cin + c - P.pad) * P.h + h * P.stride) * P.w + w * P.stride]);
    }
    out[i] = act_t(v);
}

// a = dy, out = dx; one invocation per input element
@compute @workgroup_size(256)
fn shortcut_a_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                       @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i >= P.len) { return; }
    let w = i % P.w;
    let t = i / P.w;
    let h = t % P.h;
    let t2 = t / P.h;
    let c = t2 % P.cin;
    let n = t2 / P.cin;
    var v = 0.0;
    if (h % P.stride == 0u && w % P.stride == 0u && h / P.stride < P.ho && w / P.stride < P.wo) {
        v = f32(a[((n * P.cout + c + P.pad) * P.ho + h / P.stride) * P.wo + w / P.stride]);
    }
    out[i] = act_t(v);
}
