//! AugMix (`--auto-augment augmix`) against torchvision itself, from tests/data/torch/augmix.json
//! (written by `augmix()` in make.py): its 10-bin strength tables at three image sizes, each of
//! its thirteen tensor operations on four images at chosen bins and signs, and its whole forward
//! with given chains and Dirichlet weights, byte for byte, and the operations on a 224x224
//! image by their outputs' SHA-256; the draws' shares against torchvision's uniform choices and
//! Dirichlet(1) weights.

mod common;
use common::torchvision::{bytes, differences, fixture, same_tables, BILINEAR};
use image::RgbImage;
use resnet::data::{augmentation_rng, auto_augmented, ImageSource};
use resnet::preprocess::auto_augment::augmix::{self, AugMixDraw, MAX_DEPTH, OPS, WIDTH};
use resnet::preprocess::auto_augment::{auto_augment, tensor_ops, AugmentOp, Space};
use resnet::preprocess::transforms::{from_chw, pad_crop_flip};
use resnet::preprocess::AutoAugment;
use resnet::rng::SplitMix64;
use std::sync::Arc;

fn op_named(name: &str) -> AugmentOp {
    *OPS.iter().find(|op| op.name() == name).unwrap()
}

fn images(torch: &serde_json::Value) -> Vec<RgbImage> {
    let images = torch["images"].as_array().unwrap().iter();
    images
        .map(|i| {
            let (w, h) = (i["width"].as_u64().unwrap(), i["height"].as_u64().unwrap());
            RgbImage::from_raw(w as u32, h as u32, bytes(&i["rgb"])).unwrap()
        })
        .collect()
}

/// The strength of `op` at `bin`, negated where `negative` (torchvision's `magnitude *= -1.0`),
/// for an image of `img`'s size.
fn strength(op: AugmentOp, bin: usize, negative: bool, img: &RgbImage) -> f64 {
    if !op.has_magnitude() {
        return 0.0;
    }
    let space = Space::AugMix {
        height: img.height() as usize,
        width: img.width() as usize,
    };
    let magnitude = op.magnitude(space, bin);
    if negative {
        -magnitude
    } else {
        magnitude
    }
}

#[test]
fn strength_tables_are_torchvisions() {
    let torch = fixture("augmix.json");
    let sizes = torch["tables"].as_object().unwrap();
    assert_eq!(sizes.len(), 3);
    for (size, tables) in sizes {
        let (h, w) = size.split_once('x').unwrap();
        let (height, width) = (h.parse().unwrap(), w.parse().unwrap());
        same_tables(tables, &OPS, Space::AugMix { height, width });
    }
}

#[test]
fn every_tensor_operation_matches_torchvision_byte_for_byte() {
    let torch = fixture("augmix.json");
    let images = images(&torch);
    let cases = torch["cases"].as_array().unwrap();
    let mut failures = Vec::new();
    for case in cases {
        let op = op_named(case["op"].as_str().unwrap());
        let img = &images[case["image"].as_u64().unwrap() as usize];
        let bin = case["bin"].as_u64().unwrap() as usize;
        let magnitude = strength(op, bin, case["negative"].as_bool().unwrap(), img);
        let out = tensor_ops::apply(img, op, magnitude, BILINEAR);
        if let Some(diff) = differences(&out, &bytes(&case["out"])) {
            let k = &case["image"];
            failures.push(format!("{} {magnitude} on image {k}: {diff}", op.name()));
        }
    }
    // 13 operations, 4 bins of the 11 with strengths, on 4 images
    assert_eq!(cases.len(), (11 * 4 + 2) * 4);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The operations on a 224x224 image (tests/data/torch/augmix_224.png, a bundled photo
/// enlarged), the training size, against the SHA-256 of torchvision's output.
#[test]
fn operations_on_a_training_sized_image_match_torchvision() {
    use sha2::{Digest, Sha256};
    let torch = fixture("augmix.json");
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/torch/augmix_224.png");
    let img = image::open(path).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), (224, 224));
    let cases = torch["large"].as_array().unwrap();
    assert_eq!(cases.len(), 11 * 4 + 2);
    let mut failures = Vec::new();
    for case in cases {
        let op = op_named(case["op"].as_str().unwrap());
        let bin = case["bin"].as_u64().unwrap() as usize;
        let magnitude = strength(op, bin, case["negative"].as_bool().unwrap(), &img);
        let out = tensor_ops::apply(&img, op, magnitude, BILINEAR);
        let digest: String = Sha256::digest(out.as_raw())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        if digest != case["sha256"].as_str().unwrap() {
            failures.push(format!("{} {magnitude}", op.name()));
        }
    }
    assert!(
        failures.is_empty(),
        "differ from torchvision's: {failures:?}"
    );
}

/// The draw a fixture's forward gave torchvision (its torch.randint and Dirichlet samples
/// replaced).
fn given_draw(forward: &serde_json::Value, img: &RgbImage) -> AugMixDraw {
    let floats = |key: &str| -> Vec<f32> {
        let values = forward[key].as_array().unwrap().iter();
        values.map(|v| v.as_f64().unwrap() as f32).collect()
    };
    let chains = forward["chains"].as_array().unwrap();
    AugMixDraw {
        beta: floats("beta").try_into().unwrap(),
        mixing: floats("mixing").try_into().unwrap(),
        chains: std::array::from_fn(|i| {
            let steps = chains[i].as_array().unwrap().iter();
            steps
                .map(|step| {
                    let op = op_named(step[0].as_str().unwrap());
                    let bin = step[1].as_u64().unwrap() as usize;
                    (op, strength(op, bin, step[2].as_bool().unwrap(), img))
                })
                .collect()
        }),
    }
}

#[test]
fn whole_forwards_match_torchvision_byte_for_byte() {
    let torch = fixture("augmix.json");
    let images = images(&torch);
    let forwards = torch["forwards"].as_array().unwrap();
    assert_eq!(forwards.len(), 8);
    let mut failures = Vec::new();
    for (k, forward) in forwards.iter().enumerate() {
        let img = &images[forward["image"].as_u64().unwrap() as usize];
        let draw = given_draw(forward, img);
        let out = augmix::mix(img, &draw, BILINEAR);
        if let Some(diff) = differences(&out, &bytes(&forward["out"])) {
            failures.push(format!("forward {k} ({:?}): {diff}", draw.chains));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A draw's operations over many images of 20x40 (height, width): each of the 13 within 5
/// standard errors of 1/13, each depth of 1/3, each bin of a signed operation of 1/severity
/// (and none beyond), each sign of 1/2, each translation a strength of its own side's table.
#[test]
fn draws_follow_torchvisions_distributions() {
    let (severity, n) = (3, 60_000);
    let mut rng = SplitMix64(11);
    let (mut per_op, mut depths, mut bins) = ([0usize; 13], [0usize; MAX_DEPTH], [0usize; 10]);
    let (mut ops, mut signed, mut negative, mut rotations) = (0, 0, 0, 0);
    let space = Space::AugMix {
        height: 20,
        width: 40,
    };
    // the translations' tables: a third of the width and of the height at the top bin
    let table = |op: AugmentOp| (0..10).map(move |b| op.magnitude(space, b));
    assert!(table(AugmentOp::TranslateX).any(|m| m > 13.0));
    assert!(table(AugmentOp::TranslateY).all(|m| m < 7.0));
    for _ in 0..n {
        let draw = augmix::draw(&mut rng, severity, (20, 40));
        for chain in &draw.chains {
            depths[chain.len() - 1] += 1;
            for &(op, magnitude) in chain {
                ops += 1;
                per_op[OPS.iter().position(|&o| o == op).unwrap()] += 1;
                if op.signed() {
                    signed += 1;
                    negative += magnitude.is_sign_negative() as usize;
                }
                if matches!(op, AugmentOp::TranslateX | AugmentOp::TranslateY) {
                    let m = magnitude.abs();
                    assert!(table(op).any(|t| t == m), "{op:?} {magnitude}");
                }
                if op == AugmentOp::Rotate {
                    rotations += 1;
                    bins[table(op).position(|t| t == magnitude.abs()).unwrap()] += 1;
                }
            }
        }
    }
    for (op, &c) in OPS.iter().zip(&per_op) {
        assert!(within(c, ops, 1.0 / 13.0), "{op:?} drawn {c} of {ops}");
    }
    for (d, &c) in depths.iter().enumerate() {
        assert!(within(c, n * WIDTH, 1.0 / 3.0), "depth {}: {c}", d + 1);
    }
    for (b, &c) in bins.iter().enumerate() {
        match b < severity {
            true => assert!(within(c, rotations, 1.0 / severity as f64), "bin {b}: {c}"),
            false => assert_eq!(c, 0, "bin {b} is beyond severity {severity}"),
        }
    }
    assert!(within(negative, signed, 0.5), "{negative} of {signed}");
}

/// Whether `count` of `total` is within 5 standard errors of the share `p`.
fn within(count: usize, total: usize, p: f64) -> bool {
    let se = (p * (1.0 - p) / total as f64).sqrt();
    (count as f64 / total as f64 - p).abs() < 5.0 * se
}

/// The weights: the Beta(1, 1) pair sums to 1 and its first is uniform (deciles within 5
/// standard errors of 1/10); the Dirichlet(1, 1, 1) weights sum to 1, each with mean 1/3 (within
/// 5 standard errors) and variance 1/18 (within 3%: its standard error here is about 0.5%, and
/// Dirichlet(5, 5, 5)'s variance would be a quarter of it).
#[test]
fn weights_are_beta_and_dirichlet_of_ones() {
    let n = 60_000;
    let mut rng = SplitMix64(12);
    let (mut deciles, mut mean, mut square) = ([0usize; 10], [0f64; WIDTH], [0f64; WIDTH]);
    for _ in 0..n {
        let draw = augmix::draw(&mut rng, 3, (32, 32));
        assert!((0.0..=1.0).contains(&draw.beta[0]));
        assert!((draw.beta[0] + draw.beta[1] - 1.0).abs() < 1e-6);
        deciles[((draw.beta[0] * 10.0) as usize).min(9)] += 1;
        assert!((draw.mixing.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        for (k, w) in draw.mixing.into_iter().enumerate() {
            mean[k] += w as f64 / n as f64;
            square[k] += (w as f64).powi(2) / n as f64;
        }
    }
    for (k, &c) in deciles.iter().enumerate() {
        assert!(within(c, n, 0.1), "Beta(1, 1) decile {k}: {c} of {n}");
    }
    let se = (1.0f64 / 18.0 / n as f64).sqrt();
    for (m, sq) in mean.iter().zip(square) {
        assert!((m - 1.0 / 3.0).abs() < 5.0 * se, "mean {m}");
        let variance = sq - m * m;
        assert!((variance * 18.0 - 1.0).abs() < 0.03, "variance {variance}");
    }
}

/// The policy as training runs it: the image changes, is reproducible from the draw's seed, and
/// severity 1 keeps every strength at bin 0 (shears, rotations and enhancements of 0: the
/// geometric operations then move nothing but their rounding).
#[test]
fn the_policy_is_seeded_and_severity_bounds_the_bins() {
    let torch = fixture("augmix.json");
    let img = &images(&torch)[3];
    let policy = "augmix".parse::<AutoAugment>().unwrap();
    assert_eq!(policy, AutoAugment::AugMix { severity: 3 });
    let mut changed = 0;
    for seed in 0..50 {
        let out = auto_augment(policy, img.clone(), BILINEAR, &mut SplitMix64(seed));
        let again = auto_augment(policy, img.clone(), BILINEAR, &mut SplitMix64(seed));
        assert_eq!(out, again, "seed {seed}");
        changed += (&out != img) as usize;
    }
    assert!(changed >= 45, "{changed} of 50 changed");
    let mut rng = SplitMix64(3);
    for _ in 0..2_000 {
        let draw = augmix::draw(&mut rng, 1, (32, 32));
        for &(op, magnitude) in draw.chains.iter().flatten() {
            let bin0 = op.magnitude(
                Space::AugMix {
                    height: 32,
                    width: 32,
                },
                0,
            );
            assert_eq!(magnitude.abs(), bin0.abs(), "{op:?}");
        }
    }
}

/// Training images in memory with `--auto-augment augmix`: the loader crops and flips each on
/// the CPU, then mixes it, from the image's seed; the same as the two steps here.
#[test]
fn the_loader_crops_flips_then_mixes_each_image() {
    let split = resnet::data::bundled_cifar10();
    let plain: Arc<dyn ImageSource> = Arc::new(split.train.clone());
    let policy = AutoAugment::AugMix { severity: 3 };
    let augmented = auto_augmented(plain, policy, BILINEAR).unwrap();
    let mut changed = 0;
    for i in 0..20 {
        let seed = 7 * i as u64 + 1;
        let mut out = vec![0u8; 3 * 32 * 32];
        augmented.load(i, seed, &mut out).unwrap();
        let mut rng = augmentation_rng(seed);
        let cropped = pad_crop_flip(&from_chw(split.train.image(i), (32, 32)), 4, &mut rng);
        let want = augmix::augmix(&cropped, 3, BILINEAR, &mut rng);
        assert_eq!(from_chw(&out, (32, 32)), want, "image {i}");
        changed += (want != cropped) as usize;
    }
    // a Beta weight near 1 for the original, or chains of strength 0 (bin 0 of the signed
    // operations), can leave an image whole
    assert!(changed >= 15, "{changed} of 20 images changed");
}
