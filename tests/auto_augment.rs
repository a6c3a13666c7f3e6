//! TrivialAugmentWide and RandAugment against torchvision and Pillow themselves: every
//! operation's output on three images at chosen strengths, byte for byte, and both policies'
//! strength tables, from tests/data/torch/trivial_augment.json (written by `trivial_augment()`
//! in make.py); the draws' shares against torchvision's uniform choices; RandAugment's two
//! operations in turn; images in memory cropped, flipped and augmented on the CPU.

mod common;
use common::torchvision::{bytes, differences, fixture, same_tables, BILINEAR};
use image::RgbImage;
use resnet::data::{augmentation_rng, auto_augmented, ImageSource};
use resnet::preprocess::auto_augment::{
    apply, auto_augment, rand_augment_draw, trivial_augment_draw as draw, AugmentOp, Space, BINS,
    RAND_AUGMENT_OPS,
};
use resnet::preprocess::transforms::from_chw;
use resnet::preprocess::{AutoAugment, GpuAugment, Normalize, Preprocess};
use resnet::rng::SplitMix64;
use std::sync::Arc;

fn op_named(name: &str) -> AugmentOp {
    *AugmentOp::ALL.iter().find(|op| op.name() == name).unwrap()
}

#[test]
fn strength_tables_are_torchvisions() {
    let torch = fixture("trivial_augment.json");
    same_tables(&torch["tables"], &AugmentOp::ALL, Space::TrivialAugmentWide);
    let ra = torch["ra_tables"].as_object().unwrap();
    assert_eq!(ra.len(), 4);
    for (size, tables) in ra {
        let (h, w) = size.split_once('x').unwrap();
        let (height, width) = (h.parse().unwrap(), w.parse().unwrap());
        same_tables(
            tables,
            &AugmentOp::ALL,
            Space::RandAugment { height, width },
        );
    }
}

#[test]
fn every_operation_matches_pillow_byte_for_byte() {
    let torch = fixture("trivial_augment.json");
    let images: Vec<RgbImage> = torch["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            let (w, h) = (i["width"].as_u64().unwrap(), i["height"].as_u64().unwrap());
            RgbImage::from_raw(w as u32, h as u32, bytes(&i["rgb"])).unwrap()
        })
        .collect();
    let mut failures = Vec::new();
    let cases = torch["cases"].as_array().unwrap();
    for case in cases {
        let op = op_named(case["op"].as_str().unwrap());
        let bin = case["bin"].as_u64().unwrap() as usize;
        let sign = if case["negative"].as_bool().unwrap() {
            -1.0
        } else {
            1.0
        };
        let magnitude = if op.has_magnitude() {
            sign * op.magnitude(Space::TrivialAugmentWide, bin)
        } else {
            0.0
        };
        let img = &images[case["image"].as_u64().unwrap() as usize];
        let out = apply(img.clone(), op, magnitude, BILINEAR);
        let want = bytes(&case["out"]);
        assert_eq!(out.dimensions(), img.dimensions());
        if let Some(diff) = differences(&out, &want) {
            let k = &case["image"];
            failures.push(format!("{} {magnitude} on image {k}: {diff}", op.name()));
        }
    }
    assert!(cases.len() >= 100, "{} cases", cases.len());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// torchvision draws the operation, the bin and the sign uniformly (`torch.randint`): over
/// 140,000 draws each operation's share is within 5 standard errors of 1/14, each bin's of a
/// signed operation within 5 of 1/31, and each sign's of 1/2.
#[test]
fn draws_are_uniform_over_operations_bins_and_signs() {
    let mut rng = SplitMix64(7);
    let n = 140_000;
    let mut per_op = [0usize; 14];
    let mut rotate_bins = [0usize; BINS];
    let (mut negative, mut signed) = (0usize, 0usize);
    for _ in 0..n {
        let (op, magnitude) = draw(&mut rng);
        let k = AugmentOp::ALL.iter().position(|&o| o == op).unwrap();
        per_op[k] += 1;
        if !op.has_magnitude() {
            assert_eq!(magnitude, 0.0);
        }
        if op.signed() {
            signed += 1;
            // torchvision's `magnitude *= -1.0` makes bin 0 a -0.0 as well
            negative += magnitude.is_sign_negative() as usize;
        } else {
            assert!(magnitude >= 0.0, "{op:?} {magnitude}");
        }
        if op == AugmentOp::Rotate {
            let bin = (0..BINS)
                .find(|&b| op.magnitude(Space::TrivialAugmentWide, b) == magnitude.abs())
                .unwrap();
            rotate_bins[bin] += 1;
        }
    }
    let within = |count: usize, total: usize, p: f64| {
        let se = (p * (1.0 - p) / total as f64).sqrt();
        (count as f64 / total as f64 - p).abs() < 5.0 * se
    };
    for (op, &c) in AugmentOp::ALL.iter().zip(&per_op) {
        assert!(within(c, n, 1.0 / 14.0), "{op:?} drawn {c} of {n}");
    }
    let rotations: usize = rotate_bins.iter().sum();
    for (b, &c) in rotate_bins.iter().enumerate() {
        assert!(within(c, rotations, 1.0 / BINS as f64), "bin {b}: {c}");
    }
    assert!(within(negative, signed, 0.5), "{negative} of {signed}");
}

/// Images in memory (CIFAR) with the policy: the CPU does torchvision's RandomCrop(32,
/// padding=4) + flip (written here on an explicitly padded 40x40 image, the top, the left and
/// the flip drawn in that order) then the policy's draw, and the GPU only normalises.
#[test]
fn in_memory_images_are_cropped_flipped_and_augmented_on_the_cpu() {
    let split = resnet::data::bundled_cifar10();
    let plain: Arc<dyn ImageSource> = Arc::new(split.train.clone());
    let ta = auto_augmented(plain.clone(), AutoAugment::TrivialAugmentWide, BILINEAR).unwrap();
    assert!(matches!(
        plain.preprocess().augment,
        GpuAugment::PadCropFlip { pad: 4 }
    ));
    assert_eq!(
        ta.preprocess(),
        Preprocess::normalize_only(Normalize::CIFAR10)
    );
    let (mut offsets, mut flips, mut changed) = (std::collections::BTreeSet::new(), 0, 0);
    for i in 0..200 {
        let seed = 11 * i as u64 + 5;
        let mut out = vec![0u8; 3 * 32 * 32];
        ta.load(i, seed, &mut out).unwrap();
        let mut padded = RgbImage::new(40, 40);
        let source = from_chw(split.train.image(i), (32, 32));
        image::imageops::replace(&mut padded, &source, 4, 4);
        let mut rng = augmentation_rng(seed);
        let (top, left) = (rng.below(9) as u32, rng.below(9) as u32);
        let mut want = image::imageops::crop_imm(&padded, left, top, 32, 32).to_image();
        if rng.uniform() < 0.5 {
            image::imageops::flip_horizontal_in_place(&mut want);
            flips += 1;
        }
        offsets.insert((top, left));
        let (op, magnitude) = draw(&mut rng);
        let cropped = want.clone();
        let want = apply(want, op, magnitude, BILINEAR);
        changed += (want != cropped) as usize;
        assert_eq!(
            from_chw(&out, (32, 32)),
            want,
            "image {i}: {op:?} {magnitude}"
        );
    }
    assert!(
        offsets.len() > 60 && (70..130).contains(&flips),
        "{offsets:?} {flips}"
    );
    // the policy changes most images (Identity, strength 0 and 8-bit posterizing do not)
    assert!(changed > 150, "{changed} of 200 changed by the policy");
}

/// RandAugment: two operations in turn on the image (each drawn as torchvision's forward does:
/// the operation, its strength at the fixed bin, a sign), every strength one of the bin's.
#[test]
fn rand_augment_applies_two_operations_at_its_bin() {
    let img = RgbImage::from_fn(20, 24, |x, y| {
        image::Rgb([(x * 12) as u8, (y * 9) as u8, 77])
    });
    let space = Space::RandAugment {
        height: 24,
        width: 20,
    };
    let policy = AutoAugment::RandAugment { magnitude: 13 };
    let mut changed = 0;
    for seed in 0..300 {
        let out = auto_augment(policy, img.clone(), BILINEAR, &mut SplitMix64(seed));
        let mut replay = SplitMix64(seed);
        let mut want = img.clone();
        for _ in 0..RAND_AUGMENT_OPS {
            let (op, magnitude) = rand_augment_draw(&mut replay, 13, (24, 20));
            let strength = if op.has_magnitude() {
                op.magnitude(space, 13)
            } else {
                0.0
            };
            assert_eq!(magnitude.abs(), strength, "{op:?}");
            want = apply(want, op, magnitude, BILINEAR);
        }
        assert_eq!(out, want, "seed {seed}");
        changed += (out != img) as usize;
    }
    assert!(changed > 250, "{changed} of 300 changed");
}

#[test]
fn policy_names_are_torchvisions() {
    assert_eq!(
        "ta_wide".parse::<AutoAugment>(),
        Ok(AutoAugment::TrivialAugmentWide)
    );
    assert_eq!(
        "ra".parse::<AutoAugment>(),
        Ok(AutoAugment::RandAugment { magnitude: 9 })
    );
    assert_eq!(
        "augmix".parse::<AutoAugment>(),
        Ok(AutoAugment::AugMix { severity: 3 })
    );
    let e = "augmax".parse::<AutoAugment>().unwrap_err();
    assert!(
        ["'augmax'", "ta_wide", "ra", "imagenet", "cifar10", "svhn", "augmix"]
            .iter()
            .all(|choice| e.contains(choice)),
        "{e}"
    );
}
