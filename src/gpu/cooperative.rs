//! Whether an adapter fits the tensor-core convolution family (shaders/conv2d_coop.wgsl): the
//! rule `Gpu::open` follows to enable cooperative matrices, kept apart from the device so that it
//! is tested on adapter descriptions of GPUs this machine does not have.

/// What the tensor-core kernels are written for: 16x16x16 cooperative matrices with f16 A and B
/// and f32 C (NVIDIA's tensor cores through `VK_KHR_cooperative_matrix`, as wgpu 30 lists them),
/// eight subgroups of exactly 32 invocations per workgroup of 256 (each subgroup owns fixed
/// blocks of the tile, so the count must be known when the shader is written), f16 shaders, and
/// wgpu's experimental cooperative-matrix feature with subgroups. Where any is missing (lavapipe,
/// the browser, DX12, Metal's 8x8 f32 matrices, AMD's subgroups of 32 or 64) the family is not
/// offered.
pub fn tensor_cores_fit(
    info: &wgpu::AdapterInfo,
    features: wgpu::Features,
    configs: &[wgpu::CooperativeMatrixProperties],
) -> bool {
    let needed = wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX
        | wgpu::Features::SUBGROUP
        | wgpu::Features::SHADER_F16;
    let f16_products = configs.iter().any(|c| {
        (c.m_size, c.n_size, c.k_size) == (16, 16, 16)
            && c.ab_type == wgpu::CooperativeScalarType::F16
            && c.cr_type == wgpu::CooperativeScalarType::F32
    });
    features.contains(needed)
        && f16_products
        && info.subgroup_min_size == 32
        && info.subgroup_max_size == 32
}

#[cfg(test)]
mod tests {
    use super::tensor_cores_fit;
    use wgpu::CooperativeScalarType::{F16, F32};

    fn config(
        m: u32,
        n: u32,
        k: u32,
        ab: wgpu::CooperativeScalarType,
    ) -> wgpu::CooperativeMatrixProperties {
        wgpu::CooperativeMatrixProperties {
            m_size: m,
            n_size: n,
            k_size: k,
            ab_type: ab,
            cr_type: F32,
            saturating_accumulation: false,
        }
    }

    fn adapter(subgroups: (u32, u32)) -> wgpu::AdapterInfo {
        let mut info = wgpu::AdapterInfo::new(wgpu::DeviceType::DiscreteGpu, wgpu::Backend::Vulkan);
        info.name = "a GPU".into();
        (info.subgroup_min_size, info.subgroup_max_size) = subgroups;
        info
    }

    fn all_features() -> wgpu::Features {
        wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX
            | wgpu::Features::SUBGROUP
            | wgpu::Features::SHADER_F16
            | wgpu::Features::TIMESTAMP_QUERY
    }

    #[test]
    fn an_nvidia_like_adapter_fits() {
        // NVIDIA lists several shapes; one 16x16x16 f16*f16+f32 is enough
        let configs = [config(16, 8, 16, F16), config(16, 16, 16, F16)];
        assert!(tensor_cores_fit(
            &adapter((32, 32)),
            all_features(),
            &configs
        ));
    }

    #[test]
    fn anything_missing_leaves_the_family_out() {
        let nvidia = [config(16, 16, 16, F16)];
        // subgroups that are not exactly 32 wide (AMD RDNA 32..64, Intel 8..32, lavapipe 8)
        for sizes in [(32, 64), (8, 32), (8, 8), (64, 64)] {
            assert!(
                !tensor_cores_fit(&adapter(sizes), all_features(), &nvidia),
                "{sizes:?}"
            );
        }
        // no 16x16x16 with f16 operands: Metal's 8x8 f32, a 16x8x16 only, f32 operands
        for configs in [
            [config(8, 8, 8, F32)],
            [config(16, 8, 16, F16)],
            [config(16, 16, 16, F32)],
        ] {
            assert!(!tensor_cores_fit(
                &adapter((32, 32)),
                all_features(),
                &configs
            ));
        }
        assert!(!tensor_cores_fit(&adapter((32, 32)), all_features(), &[]));
        // each needed feature missing in turn
        for missing in [
            wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX,
            wgpu::Features::SUBGROUP,
            wgpu::Features::SHADER_F16,
        ] {
            let features = all_features() - missing;
            assert!(
                !tensor_cores_fit(&adapter((32, 32)), features, &nvidia),
                "{missing:?}"
            );
        }
    }

    /// The features a device asks for: f16 shaders only in mixed precision, and there an error
    /// naming the adapter where they are missing; the tensor cores' only where they fit and are
    /// not turned off; timestamps unless turned off; never a feature the adapter lacks.
    #[test]
    fn the_device_asks_for_what_its_precision_needs() {
        use crate::gpu::{wanted_features, GpuOptions, Precision};
        use wgpu::Features as F;
        let (gpu, nvidia) = (adapter((32, 32)), [config(16, 16, 16, F16)]);
        let opts = |precision, no_cooperative, no_timestamps| GpuOptions {
            precision,
            no_cooperative,
            no_timestamps,
            ..GpuOptions::default()
        };
        let fp32 = wanted_features(
            &opts(Precision::Fp32, false, false),
            &gpu,
            all_features(),
            &nvidia,
        );
        assert_eq!(fp32.unwrap(), (F::TIMESTAMP_QUERY, false));
        let mixed = opts(Precision::Mixed, false, false);
        let (features, tensor_cores) =
            wanted_features(&mixed, &gpu, all_features(), &nvidia).unwrap();
        assert_eq!((features, tensor_cores), (all_features(), true));
        let no_coop = opts(Precision::Mixed, true, true);
        let asked = wanted_features(&no_coop, &gpu, all_features(), &nvidia).unwrap();
        assert_eq!(asked, (F::SHADER_F16, false));
        // every feature there, but subgroups of 32 to 64 wide: no tensor cores, f16 all the same
        let amd = adapter((32, 64));
        let asked = wanted_features(&mixed, &amd, all_features(), &nvidia).unwrap();
        assert_eq!(asked, (F::SHADER_F16 | F::TIMESTAMP_QUERY, false));
        // timestamps asked for but not offered: left out, not an error
        let plain = F::SHADER_F16;
        assert_eq!(
            wanted_features(&mixed, &gpu, plain, &[]).unwrap(),
            (plain, false)
        );

        let err = wanted_features(&mixed, &gpu, all_features() - F::SHADER_F16, &nvidia)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("a GPU") && err.contains("shader-f16") && err.contains("fp32"),
            "{err}"
        );
        assert_eq!(err.lines().count(), 1, "{err}");
    }
}
