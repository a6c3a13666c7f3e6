use resnet::gpu::{kernel::KernelDesc, Gpu, GpuOptions, Kernel, Uniform};
const SRC: &str = r#"
struct Params { n: u32, a: u32, b: u32, c: u32 }
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> xs: array<f32>;
@group(0) @binding(2) var<storage, read> xv: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@compute @workgroup_size(64)
fn scalar_div(@builtin(global_invocation_id) gid: vec3<u32>) {
    var acc = 0.0;
    var o = gid.x * 4u;
    for (var i = 0u; i < P.n; i++) { acc += xs[o & 0xfffffu]; o += 61u; }
    out[gid.x] = acc;
}
@compute @workgroup_size(64)
fn vec4_div(@builtin(global_invocation_id) gid: vec3<u32>) {
    var acc = vec4<f32>(0.0);
    var o = gid.x;
    for (var i = 0u; i < P.n; i++) { acc += xv[o & 0x3ffffu]; o += 61u; }
    out[gid.x] = acc.x + acc.y + acc.z + acc.w;
}
@compute @workgroup_size(64)
fn scalar_uni(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    var acc = 0.0;
    var o = wid.x * 4u;
    for (var i = 0u; i < P.n; i++) { acc += xs[o & 0xfffffu]; o += 61u; }
    out[gid.x] = acc;
}
@compute @workgroup_size(64)
fn fma_only(@builtin(global_invocation_id) gid: vec3<u32>) {
    var acc = vec4<f32>(f32(gid.x));
    for (var i = 0u; i < P.n; i++) { acc = acc * 0.999 + vec4<f32>(1.0); }
    out[gid.x] = acc.x + acc.y + acc.z + acc.w;
}
"#;
fn main() {
    let gpu = Gpu::new_blocking(&GpuOptions::default()).unwrap();
    let xs = gpu.zeros(&[1 << 20]).unwrap();
    let out = gpu.zeros(&[1 << 16]).unwrap();
    let n = 4096usize;
    for e in ["scalar_div", "vec4_div", "scalar_uni", "fma_only"] {
        let k = Kernel::new(
            &gpu,
            KernelDesc {
                op: "mb",
                file: "mb",
                source: SRC,
                entry: e,
                params: Uniform::new().u(n),
                buffers: &[(1, &xs), (2, &xs), (3, &out)]
                    .iter()
                    .filter(|(b, _)| match e {
                        "scalar_div" | "scalar_uni" => *b != 2,
                        "vec4_div" => *b != 1,
                        _ => *b == 3,
                    })
                    .cloned()
                    .collect::<Vec<_>>(),
                workgroups: 1024,
            },
        )
        .unwrap();
        gpu.run(std::slice::from_ref(&k));
        gpu.wait();
        let mut ts = vec![];
        for _ in 0..5 {
            let t = std::time::Instant::now();
            gpu.run(std::slice::from_ref(&k));
            gpu.wait();
            ts.push(t.elapsed().as_secs_f64());
        }
        ts.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let loads = 65536.0 * n as f64;
        println!(
            "{e}: {:.1} ms, {:.2} ns per lane-op",
            ts[2] * 1e3,
            ts[2] * 1e9 / loads * 2.0
        );
    }
}
