//! torchvision's `--interpolation` against torchvision and Pillow themselves, from
//! tests/data/torch/interpolation.json (written by `interpolation()` in make.py): `F.resize` of
//! a patterned photo in each of Pillow's six modes, shrinking and growing; the automatic
//! augmentations' warps in nearest and bicubic on PIL images, and in nearest on AugMix's uint8
//! tensors; the modes torchvision refuses refused here, in the library and on the command line.

mod common;
use common::cli::{fails_with, resnet};
use common::torchvision::{bytes, differences, fixture};
use image::RgbImage;
use resnet::data::{auto_augmented, Dataset, ImageSource};
use resnet::preprocess::auto_augment::{apply, tensor_ops, AugmentOp, Space};
use resnet::preprocess::transforms::Transform;
use resnet::preprocess::{AutoAugment, Interpolation};
use resnet::rng::SplitMix64;
use std::sync::Arc;

fn image(v: &serde_json::Value) -> RgbImage {
    let (w, h) = (v["width"].as_u64().unwrap(), v["height"].as_u64().unwrap());
    RgbImage::from_raw(w as u32, h as u32, bytes(&v["rgb"])).unwrap()
}

fn mode(case: &serde_json::Value) -> Interpolation {
    case["mode"].as_str().unwrap().parse().unwrap()
}

/// The strength of `op` at `bin` in `space`, negated where the case says so.
fn strength(case: &serde_json::Value, op: AugmentOp, space: Space) -> f64 {
    let magnitude = op.magnitude(space, case["bin"].as_u64().unwrap() as usize);
    match case["negative"].as_bool().unwrap() {
        true => -magnitude,
        false => magnitude,
    }
}

fn op_named(name: &str) -> AugmentOp {
    *AugmentOp::ALL.iter().find(|op| op.name() == name).unwrap()
}

/// The fixture's resizes `key` of its photo that differ from Pillow's bytes, one line each.
fn resize_failures(key: &str) -> (usize, Vec<String>) {
    let torch = fixture("interpolation.json");
    let photo = image(&torch["photo"]);
    let cases = torch[key].as_array().unwrap();
    let mut failures = Vec::new();
    for case in cases {
        let (h, w) = (
            case["height"].as_u64().unwrap(),
            case["width"].as_u64().unwrap(),
        );
        let t = Transform::Resize {
            size: (h as usize, w as usize),
            interpolation: mode(case),
        };
        let out = t.apply(photo.clone(), &mut SplitMix64(0));
        if let Some(diff) = differences(&out, &bytes(&case["out"])) {
            failures.push(format!("{} to {w}x{h}: {diff}", mode(case).name()));
        }
    }
    (cases.len(), failures)
}

#[test]
fn every_mode_resizes_as_pillow() {
    let (cases, failures) = resize_failures("resize");
    // shrinking both sides, growing one and shrinking the other
    assert_eq!(cases, 6 * 4, "six modes, four sizes");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Pillow 13 resamples the columns first where the height loses more than twice as many pixels
/// as the width (the other order's bytes differ by a level here and there): sizes on both sides.
#[test]
fn the_passes_come_in_pillows_order() {
    let (cases, failures) = resize_failures("resize_order");
    assert_eq!(cases, 6);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The evaluation transform, `Resize(37)` + `CenterCrop(30)`, whose resize computes the centre
/// only: the bytes of resizing everything, then cropping.
#[test]
fn resize_then_center_crop_matches_torchvision_in_every_mode() {
    let torch = fixture("interpolation.json");
    let photo = image(&torch["photo"]);
    let cases = torch["resize_center_crop"].as_array().unwrap();
    assert_eq!(cases.len(), 6);
    for case in cases {
        let t = Transform::ResizeCenterCrop {
            resize: case["resize"].as_u64().unwrap() as usize,
            crop: case["crop"].as_u64().unwrap() as usize,
            interpolation: mode(case),
        };
        let out = t.apply(photo.clone(), &mut SplitMix64(0));
        if let Some(diff) = differences(&out, &bytes(&case["out"])) {
            panic!("{}: {diff}", mode(case).name());
        }
    }
}

/// The cases `key` of the fixture, each an operation at a strength on one of its images, warped
/// by `warp` (the image, the operation, the strength in `space` for the image, the mode): the
/// differences from torchvision's bytes, one line each.
fn warp_failures(
    key: &str,
    space: fn(&RgbImage) -> Space,
    warp: fn(&RgbImage, AugmentOp, f64, Interpolation) -> RgbImage,
) -> (usize, Vec<String>) {
    let torch = fixture("interpolation.json");
    let images: Vec<RgbImage> = torch["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(image)
        .collect();
    let cases = torch[key].as_array().unwrap();
    let mut failures = Vec::new();
    for case in cases {
        let op = op_named(case["op"].as_str().unwrap());
        let img = &images[case["image"].as_u64().unwrap() as usize];
        let magnitude = strength(case, op, space(img));
        let out = warp(img, op, magnitude, mode(case));
        if let Some(diff) = differences(&out, &bytes(&case["out"])) {
            let (m, k) = (mode(case).name(), &case["image"]);
            failures.push(format!(
                "{m} {} {magnitude} on image {k}: {diff}",
                op.name()
            ));
        }
    }
    (cases.len(), failures)
}

#[test]
fn the_warps_match_pillow_in_nearest_and_bicubic() {
    let (cases, failures) = warp_failures(
        "warps",
        |_| Space::TrivialAugmentWide,
        |img, op, magnitude, mode| apply(img.clone(), op, magnitude, mode),
    );
    // two modes, 13 (operation, strength) pairs, three images
    assert_eq!(cases, 2 * 13 * 3);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn augmix_tensor_warps_match_torchvision_in_nearest() {
    let augmix = |img: &RgbImage| Space::AugMix {
        height: img.height() as usize,
        width: img.width() as usize,
    };
    let (cases, failures) = warp_failures("tensor_warps", augmix, tensor_ops::apply);
    // five warps, three strengths, three images
    assert_eq!(cases, 5 * 3 * 3);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// torchvision refuses bicubic on AugMix's tensors; so does `auto_augmented`, and Pillow's
/// transform takes none of box, hamming and lanczos.
#[test]
fn modes_torchvision_refuses_are_refused() {
    let torch = fixture("interpolation.json");
    let refusal = torch["tensor_bicubic"].as_str().unwrap();
    assert!(refusal.contains("unsupported"), "{refusal}");
    let set: Arc<dyn ImageSource> = Arc::new(Dataset {
        images: vec![0; 3 * 8 * 8],
        labels: vec![0],
        classes: vec!["a".into()],
        height: 8,
        width: 8,
    });
    let augmix: AutoAugment = "augmix".parse().unwrap();
    let bicubic = auto_augmented(set.clone(), augmix, Interpolation::Bicubic);
    let err = bicubic.err().expect("augmix with bicubic").to_string();
    assert!(
        err.contains("bicubic") && err.contains("nearest or bilinear"),
        "{err}"
    );
    for policy in ["ta_wide", "ra", "imagenet", "augmix"] {
        let policy: AutoAugment = policy.parse().unwrap();
        for m in [
            Interpolation::Box,
            Interpolation::Hamming,
            Interpolation::Lanczos,
        ] {
            assert!(
                auto_augmented(set.clone(), policy, m).is_err(),
                "{policy:?} {m:?}"
            );
        }
        assert!(auto_augmented(set.clone(), policy, Interpolation::Nearest).is_ok());
    }
    assert!(auto_augmented(set, AutoAugment::TrivialAugmentWide, Interpolation::Bicubic).is_ok());
}

#[test]
fn the_command_line_names_a_bad_interpolation() {
    fails_with(
        &resnet(&["train", "--interpolation", "cubic", "--epochs", "1"]),
        &["cubic", "nearest, bilinear, bicubic, box, hamming, lanczos"],
    );
    fails_with(
        &resnet(&[
            "train",
            "--interpolation",
            "lanczos",
            "--auto-augment",
            "ta_wide",
            "--epochs",
            "1",
        ]),
        &["--interpolation lanczos", "nearest, bilinear or bicubic"],
    );
}
