//! Initialisation as torchvision (ImageNet family) and akamaster's CIFAR ResNets.

use super::{Family, ModelSpec, ParamLayout, RegionKind};
use crate::rng::SplitMix64;

/// Initial parameters (flat, laid out by `layout`) and running statistics (mean 0, var 1).
///
/// - conv weights: Kaiming normal, std = sqrt(2 / fan), fan = fan_out (torchvision) or fan_in
///   (akamaster's CIFAR models);
/// - BN: gamma 1, beta 0;
/// - fc: CIFAR Kaiming normal (fan_in) weight; ImageNet PyTorch's default U(-1/sqrt(in), 1/sqrt(in));
///   bias U(-1/sqrt(in), 1/sqrt(in)) in both.
pub fn init_params(spec: &ModelSpec, layout: &ParamLayout, seed: u64) -> (Vec<f32>, Vec<f32>) {
    let mut rng = SplitMix64(seed ^ 0x5DEECE66D);
    let mut p = vec![0.0f32; layout.params_len];
    for r in &layout.params {
        let dst = &mut p[r.offset..r.offset + r.len()];
        match r.kind {
            RegionKind::ConvWeight => {
                let (k, c, rs) = (r.shape[0], r.shape[1], r.shape[2] * r.shape[3]);
                let fan = if spec.family == Family::ImageNet {
                    k * rs
                } else {
                    c * rs
                };
                let std = (2.0 / fan as f64).sqrt();
                dst.iter_mut()
                    .for_each(|v| *v = (rng.normal() * std) as f32);
            }
            RegionKind::BnAffine => {
                let c = r.shape[1];
                dst[..c].fill(1.0);
                dst[c..].fill(0.0);
            }
            RegionKind::FcWeight => {
                let fan_in = r.shape[1] as f64;
                if spec.family == Family::Cifar {
                    let std = (2.0 / fan_in).sqrt();
                    dst.iter_mut()
                        .for_each(|v| *v = (rng.normal() * std) as f32);
                } else {
                    let b = 1.0 / fan_in.sqrt();
                    dst.iter_mut()
                        .for_each(|v| *v = ((rng.uniform() * 2.0 - 1.0) * b) as f32);
                }
            }
            RegionKind::FcBias => {
                let fan_in = layout.get("fc").shape[1] as f64;
                let b = 1.0 / fan_in.sqrt();
                dst.iter_mut()
                    .for_each(|v| *v = ((rng.uniform() * 2.0 - 1.0) * b) as f32);
            }
        }
    }
    let mut running = vec![0.0f32; layout.running_len];
    for r in &layout.running {
        let c = r.shape[1];
        running[r.offset + c..r.offset + 2 * c].fill(1.0);
    }
    (p, running)
}
