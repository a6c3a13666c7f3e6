//! What a device can reach: the published peak rates of known GPUs, the yardstick of `resnet
//! bench --profile` (fp32 arithmetic on the SIMT units, without tensor cores: the rate fp32
//! shaders can reach; and memory bandwidth; from the vendors' datasheets; CPU drivers have none:
//! their peak is the CPU's), and the adapter's cooperative-matrix (tensor core) configurations.

/// A device's peak rates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Peak {
    /// fp32 TFLOP/s without tensor cores.
    pub tflops: f64,
    /// Memory bandwidth, GB/s.
    pub gbs: f64,
}

/// (a part of the adapter's name, upper case; the GPU it names; its peaks), the more specific
/// names first (`GH200` before `H200`, `H100 PCIE` before `H100`).
const KNOWN: &[(&str, &str, f64, f64)] = &[
    ("GH200", "GH200", 67.0, 4000.0),
    ("H200 NVL", "H200 NVL", 60.0, 4800.0),
    ("H200", "H200 SXM", 66.9, 4800.0),
    ("H100 PCIE", "H100 PCIe", 51.2, 2000.0),
    ("H100 NVL", "H100 NVL", 60.0, 3900.0),
    ("H100", "H100 SXM", 66.9, 3350.0),
    ("A100-SXM4-80GB", "A100 SXM 80GB", 19.5, 2039.0),
    ("A100 80GB PCIE", "A100 PCIe 80GB", 19.5, 1935.0),
    ("A100", "A100 40GB", 19.5, 1555.0),
    ("V100", "V100 SXM2", 15.7, 900.0),
    ("L40S", "L40S", 91.6, 864.0),
    ("RTX 4090", "GeForce RTX 4090", 82.6, 1008.0),
    ("RTX 3090", "GeForce RTX 3090", 35.6, 936.0),
    ("MI300X", "Instinct MI300X", 163.4, 5300.0),
    ("MI250X", "Instinct MI250X", 47.9, 3277.0),
];

/// The published peaks of the GPU an adapter name (e.g. `NVIDIA H200`) names, with the GPU's
/// name as the table has it; `None` for GPUs the table does not know and for CPU drivers.
pub fn known_peak(adapter: &str) -> Option<(&'static str, Peak)> {
    let name = adapter.to_ascii_uppercase();
    KNOWN
        .iter()
        .find(|(part, ..)| contains_word(&name, part))
        .map(|&(_, gpu, tflops, gbs)| (gpu, Peak { tflops, gbs }))
}

/// Whether `part` occurs in `name` with no letter or digit just before or after it (`A100` is
/// not in `RTX A1000`, `H200` not in `GH200`).
fn contains_word(name: &str, part: &str) -> bool {
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    name.match_indices(part).any(|(at, _)| {
        !alnum(name[..at].chars().next_back()) && !alnum(name[at + part.len()..].chars().next())
    })
}

/// One cooperative-matrix configuration as `MxNxK A*B+C` (e.g. `16x16x16 f16*f16+f32`): C
/// (M x N) += A (M x K) * B (K x N).
pub fn describe_cooperative_matrix(p: &wgpu::CooperativeMatrixProperties) -> String {
    let ty = |t: wgpu::CooperativeScalarType| match t {
        wgpu::CooperativeScalarType::F32 => "f32",
        wgpu::CooperativeScalarType::F16 => "f16",
        wgpu::CooperativeScalarType::I32 => "i32",
        wgpu::CooperativeScalarType::U32 => "u32",
    };
    let (ab, c) = (ty(p.ab_type), ty(p.cr_type));
    let saturating = if p.saturating_accumulation {
        " (saturating)"
    } else {
        ""
    };
    format!(
        "{}x{}x{} {ab}*{ab}+{c}{saturating}",
        p.m_size, p.n_size, p.k_size
    )
}

#[cfg(test)]
mod tests {
    use super::{describe_cooperative_matrix, known_peak};

    #[test]
    fn cooperative_matrices_read_as_sizes_and_types() {
        let p = wgpu::CooperativeMatrixProperties {
            m_size: 16,
            n_size: 8,
            k_size: 16,
            ab_type: wgpu::CooperativeScalarType::F16,
            cr_type: wgpu::CooperativeScalarType::F32,
            saturating_accumulation: false,
        };
        assert_eq!(describe_cooperative_matrix(&p), "16x8x16 f16*f16+f32");
    }

    #[test]
    fn adapter_names_find_their_gpu() {
        let gpu = |name: &str| known_peak(name).map(|(g, _)| g);
        assert_eq!(gpu("NVIDIA H200"), Some("H200 SXM"));
        assert_eq!(gpu("NVIDIA GH200 480GB"), Some("GH200"));
        assert_eq!(gpu("NVIDIA H100 80GB HBM3"), Some("H100 SXM"));
        assert_eq!(gpu("NVIDIA H100 PCIe"), Some("H100 PCIe"));
        assert_eq!(gpu("NVIDIA A100-SXM4-80GB"), Some("A100 SXM 80GB"));
        assert_eq!(gpu("NVIDIA A100-SXM4-40GB"), Some("A100 40GB"));
        assert_eq!(gpu("NVIDIA H200 NVL"), Some("H200 NVL"));
        assert_eq!(gpu("NVIDIA RTX A1000"), None);
        assert_eq!(gpu("llvmpipe (LLVM 15.0.6, 256 bits)"), None);
        assert_eq!(known_peak("NVIDIA H200").unwrap().1.tflops, 66.9);
    }
}
