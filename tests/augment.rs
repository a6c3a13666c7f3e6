//! GPU augmentation: crops stay in bounds (every output pixel is a source pixel or padding), the
//! flip is exact, normalisation matches, and a fixed seed reproduces the same batch.

mod common;
use common::*;
use resnet::ops::augment::{self, crop_params, pack_bytes, AugmentConfig};
use resnet::preprocess::{BatchMixing, MixDraw, RandomErasing};

fn pixels(n: usize, seed: u64) -> Vec<u8> {
    rand_vec(n * 3 * 32 * 32, seed)
        .iter()
        .map(|v| ((v + 1.0) * 127.99) as u8)
        .collect()
}

/// CPU reference: pad with zeros, crop at (ox, oy), flip, normalise.
fn reference(px: &[u8], n: usize, cfg: &AugmentConfig) -> Vec<f64> {
    let mut out = vec![0.0; n * 3 * 32 * 32];
    for i in 0..n {
        let (ox, oy, flip) = if cfg.train {
            crop_params(cfg.seed, (cfg.first + i) as u32, 4)
        } else {
            (4, 4, false)
        };
        for c in 0..3 {
            for y in 0..32 {
                for x in 0..32 {
                    let xs = if flip { 31 - x } else { x };
                    let (sx, sy) = (xs as i64 + ox as i64 - 4, y as i64 + oy as i64 - 4);
                    let v = if (0..32).contains(&sx) && (0..32).contains(&sy) {
                        px[((i * 3 + c) * 32 + sy as usize) * 32 + sx as usize] as f64 / 255.0
                    } else {
                        0.0
                    };
                    out[((i * 3 + c) * 32 + y) * 32 + x] =
                        (v - cfg.normalize.mean[c] as f64) / cfg.normalize.std[c] as f64;
                }
            }
        }
    }
    out
}

fn run_aug(gpu: &resnet::Gpu, px: &[u8], n: usize, cfg: &AugmentConfig) -> Vec<f32> {
    let p = gpu
        .upload(&pack_bytes(px), &[px.len().div_ceil(4)])
        .unwrap();
    let out = gpu.zeros(&[n, 3, 32, 32]).unwrap();
    run(gpu, &augment::augment(gpu, cfg, &p, None, &out).unwrap());
    read(gpu, &out)
}

#[test]
fn augmentation_matches_reference_and_is_reproducible() {
    let gpu = gpu();
    let n = 64;
    let px = pixels(n, 3);
    let cfg = AugmentConfig {
        n,
        src: (32, 32),
        out: (32, 32),
        pad: 4,
        train: true,
        seed: 1234,
        first: 0,
        erase: false,
        mix: MixDraw::Nothing,
        normalize: resnet::cifar10::NORMALIZE,
    };
    let a = run_aug(&gpu, &px, n, &cfg);
    assert_close("train augmentation", &a, &reference(&px, n, &cfg), 1e-6);
    let b = run_aug(&gpu, &px, n, &cfg);
    assert_eq!(a, b, "same seed must give the same batch");
    let c = run_aug(&gpu, &px, n, &AugmentConfig { seed: 99, ..cfg });
    assert_ne!(a, c, "another seed must give another batch");
    // a data-parallel rank's shard (the batch's second half, counted from image n/2) gets the
    // crops the same images get in the whole batch
    let half = n / 2;
    let shard = AugmentConfig {
        n: half,
        first: half,
        ..cfg
    };
    let tail = run_aug(&gpu, &px[half * 3 * 32 * 32..], half, &shard);
    assert_eq!(
        tail,
        a[half * 3 * 32 * 32..],
        "a shard's crops differ from the batch's"
    );
    let e = run_aug(
        &gpu,
        &px,
        n,
        &AugmentConfig {
            train: false,
            ..cfg
        },
    );
    assert_close(
        "eval normalisation",
        &e,
        &reference(
            &px,
            n,
            &AugmentConfig {
                train: false,
                ..cfg
            },
        ),
        1e-6,
    );

    // the draws cover the whole range of offsets and both flips, and never leave [0, 2*pad]
    let draws: Vec<_> = (0..1000).map(|i| crop_params(1234, i, 4)).collect();
    assert!(draws.iter().all(|&(x, y, _)| x <= 8 && y <= 8));
    assert!((0..=8).all(|o| draws.iter().any(|d| d.0 == o) && draws.iter().any(|d| d.1 == o)));
    let flips = draws.iter().filter(|d| d.2).count();
    assert!((400..600).contains(&flips), "{flips} flips in 1000");
}

#[test]
fn flip_is_exact_and_crop_keeps_source_pixels() {
    let gpu = gpu();
    let n = 16;
    let px = pixels(n, 5);
    let cfg = AugmentConfig {
        n,
        src: (32, 32),
        out: (32, 32),
        pad: 4,
        train: true,
        seed: 7,
        first: 0,
        erase: false,
        mix: MixDraw::Nothing,
        normalize: resnet::preprocess::Normalize {
            mean: [0.0; 3],
            std: [1.0; 3],
        },
    };
    let a = run_aug(&gpu, &px, n, &cfg);
    for i in 0..n {
        let (ox, oy, flip) = crop_params(7, i as u32, 4);
        for c in 0..3 {
            for y in 0..32 {
                for x in 0..32 {
                    let v = a[((i * 3 + c) * 32 + y) * 32 + x];
                    let xs = if flip { 31 - x } else { x };
                    let (sx, sy) = (xs as i64 + ox as i64 - 4, y as i64 + oy as i64 - 4);
                    if (0..32).contains(&sx) && (0..32).contains(&sy) {
                        let want =
                            px[((i * 3 + c) * 32 + sy as usize) * 32 + sx as usize] as f32 / 255.0;
                        assert_eq!(v, want, "image {i} pixel ({c},{y},{x})");
                    } else {
                        assert_eq!(v, 0.0, "padding at image {i} ({c},{y},{x})");
                    }
                }
            }
        }
        // flipping the output back must give an unflipped crop: mirror symmetry exact
        if flip {
            let row: Vec<f32> = (0..32).map(|x| a[(i * 3 * 32 + 16) * 32 + x]).collect();
            let unflipped: Vec<f32> = (0..32)
                .rev()
                .map(|x| {
                    let (sx, sy) = (x as i64 + ox as i64 - 4, 16 + oy as i64 - 4);
                    if (0..32).contains(&sx) && (0..32).contains(&sy) {
                        px[(i * 3 * 32 + sy as usize) * 32 + sx as usize] as f32 / 255.0
                    } else {
                        0.0
                    }
                })
                .collect();
            assert_eq!(row, unflipped);
        }
    }
}

/// Random erasing sets exactly each image's rectangle of the output to 0, after the crop, the
/// flip and the normalisation (torchvision's RandomErasing after Normalize, value 0); an image
/// without a rectangle (height 0) is left as it is.
#[test]
fn erasing_zeroes_each_images_rectangle_of_the_normalised_output() {
    let gpu = gpu();
    let n = 24;
    let px = pixels(n, 9);
    let cfg = AugmentConfig {
        n,
        src: (32, 32),
        out: (32, 32),
        pad: 4,
        train: true,
        seed: 77,
        first: 0,
        erase: true,
        mix: MixDraw::Nothing,
        normalize: resnet::cifar10::NORMALIZE,
    };
    let erasing = RandomErasing { p: 0.7 };
    let mut rects: Vec<[u32; 4]> = (0..n as u64)
        .map(|i| erasing.rect(5, i, (32, 32)).unwrap_or([0; 4]))
        .collect();
    // the corners and an edge of the image, and a one-pixel rectangle
    rects[0] = [0, 0, 5, 31];
    rects[1] = [20, 29, 12, 3];
    rects[2] = [31, 0, 1, 1];
    assert!(rects.iter().filter(|r| r[2] == 0).count() >= 2, "{rects:?}");
    let words: Vec<u32> = rects.iter().flatten().copied().collect();
    let p = gpu
        .upload(&pack_bytes(&px), &[px.len().div_ceil(4)])
        .unwrap();
    let e = gpu.upload(&words, &[n * 4]).unwrap();
    let out = gpu.zeros(&[n, 3, 32, 32]).unwrap();
    run(
        &gpu,
        &augment::augment(&gpu, &cfg, &p, Some(&e), &out).unwrap(),
    );
    let mut want = reference(&px, n, &cfg);
    for (i, &[top, left, h, w]) in rects.iter().enumerate() {
        for c in 0..3 {
            for y in top..top + h {
                for x in left..left + w {
                    want[((i * 3 + c) * 32 + y as usize) * 32 + x as usize] = 0.0;
                }
            }
        }
    }
    assert_close("erased augmentation", &read(&gpu, &out), &want, 1e-6);
    let without = augment::augment(&gpu, &cfg, &p, None, &out);
    assert!(
        without.is_err(),
        "erasing without rectangles must be refused"
    );
}

/// The rectangles follow torchvision's RandomErasing(p=0.5) (scale 0.02-0.33, ratio 0.3-3.3, 10
/// attempts): the share of images erased and the mean height, width, top and left agree with
/// PyTorch's own draws (tests/data/torch/random_erasing.json, 100,000 each) within 5 standard
/// errors of the difference, at 32x32 (where large rectangles often do not fit) and 176x176.
#[test]
fn erasing_draws_rectangles_as_torchvision_does() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/torch/random_erasing.json");
    let torch: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let erasing = RandomErasing {
        p: torch["p"].as_f64().unwrap() as f32,
    };
    let draws = torch["draws"].as_u64().unwrap();
    for (size, stats) in torch["sizes"].as_object().unwrap() {
        let side: usize = size.split('x').next().unwrap().parse().unwrap();
        let rects: Vec<Option<[u32; 4]>> = (0..draws)
            .map(|i| erasing.rect(11, i, (side, side)))
            .collect();
        for r in rects.iter().flatten() {
            assert!(
                r[2] > 0 && r[3] > 0 && r[0] + r[2] <= side as u32 && r[1] + r[3] <= side as u32
            );
            assert!(
                r[2] < side as u32 && r[3] < side as u32,
                "{r:?} fills a side"
            );
        }
        let field = |k: usize| -> Vec<f64> {
            rects
                .iter()
                .map(|r| match (r, k) {
                    (None, _) => 0.0,
                    (Some(_), 4) => 1.0,
                    (Some(r), k) => r[k] as f64,
                })
                .collect()
        };
        for (name, k) in [
            ("erased", 4),
            ("height", 2),
            ("width", 3),
            ("top", 0),
            ("left", 1),
        ] {
            let ours = field(k);
            let mean = ours.iter().sum::<f64>() / draws as f64;
            let (theirs, std) = (
                stats[name][0].as_f64().unwrap(),
                stats[name][1].as_f64().unwrap(),
            );
            let bound = 5.0 * std * (2.0 / draws as f64).sqrt();
            assert!(
                (mean - theirs).abs() < bound,
                "{size} {name}: mean {mean:.4}, torchvision's {theirs:.4} (bound {bound:.4})"
            );
        }
    }
    let never = RandomErasing { p: 0.0 };
    assert!((0..1000).all(|i| never.rect(3, i, (32, 32)).is_none()));
}

/// MixUp blends each image with the one before it in the batch (the first with the last:
/// torchvision's `batch.roll(1, 0)`) as lambda x its own + (1 - lambda) x the other, and CutMix
/// pastes the other's box [x1, y1, x2, y2) into it, both after the crop, flip, normalisation and
/// erasing of each.
#[test]
fn mixup_and_cutmix_blend_each_image_with_the_one_before_it() {
    let gpu = gpu();
    let n = 6;
    let px = pixels(n, 12);
    let plain = AugmentConfig {
        n,
        src: (32, 32),
        out: (32, 32),
        pad: 4,
        train: true,
        seed: 31,
        first: 0,
        erase: true,
        mix: MixDraw::Nothing,
        normalize: resnet::cifar10::NORMALIZE,
    };
    let rects: Vec<u32> = (0..n as u32).flat_map(|i| [i, 2 * i, 9, 4]).collect();
    let p = gpu
        .upload(&pack_bytes(&px), &[px.len().div_ceil(4)])
        .unwrap();
    let e = gpu.upload(&rects, &[n * 4]).unwrap();
    let augmented = |cfg: &AugmentConfig| {
        let out = gpu.zeros(&[n, 3, 32, 32]).unwrap();
        run(
            &gpu,
            &augment::augment(&gpu, cfg, &p, Some(&e), &out).unwrap(),
        );
        read(&gpu, &out)
    };
    let each = augmented(&plain);
    let image = 3 * 32 * 32;
    let lambda = 0.3f32;
    let mixup = augmented(&AugmentConfig {
        mix: MixDraw::MixUp { lambda },
        ..plain
    });
    let want: Vec<f64> = (0..n * image)
        .map(|k| {
            let before = (k + (n - 1) * image) % (n * image);
            each[k] as f64 * lambda as f64 + each[before] as f64 * (1.0 - lambda as f64)
        })
        .collect();
    assert_close("mixup", &mixup, &want, 1e-6);
    let rect = [3, 10, 20, 17];
    let cutmix = augmented(&AugmentConfig {
        mix: MixDraw::CutMix { lambda: 0.5, rect },
        ..plain
    });
    for (k, &got) in cutmix.iter().enumerate() {
        let (x, y) = ((k % 32) as u32, (k / 32 % 32) as u32);
        let inside = x >= rect[0] && y >= rect[1] && x < rect[2] && y < rect[3];
        let from = if inside {
            (k + (n - 1) * image) % (n * image)
        } else {
            k
        };
        assert_eq!(got, each[from], "cutmix at element {k}");
    }
}

/// The batch's mixing follows torchvision's RandomMixUp and RandomCutMix: lambda from
/// Beta(alpha, alpha) (mean 1/2, variance 1 / (4 (2 alpha + 1))), one of the two evenly when
/// both are on, and CutMix's lambda 1 - the box's share of the image.
#[test]
fn batch_mixing_draws_as_torchvision_does() {
    let draws = 20_000u64;
    for alpha in [0.2, 1.0] {
        let mixup = BatchMixing {
            mixup_alpha: alpha,
            cutmix_alpha: 0.0,
        };
        let lambdas: Vec<f64> = (0..draws)
            .map(|s| match mixup.draw(s, 0, (32, 32)) {
                MixDraw::MixUp { lambda } => lambda as f64,
                other => panic!("{other:?}"),
            })
            .collect();
        let mean = lambdas.iter().sum::<f64>() / draws as f64;
        let var = lambdas.iter().map(|l| (l - mean).powi(2)).sum::<f64>() / draws as f64;
        let want_var = 1.0 / (4.0 * (2.0 * alpha + 1.0));
        let se = (want_var / draws as f64).sqrt();
        assert!((mean - 0.5).abs() < 5.0 * se, "alpha {alpha}: mean {mean}");
        assert!(
            (var - want_var).abs() < 0.05 * want_var,
            "alpha {alpha}: variance {var}, Beta's {want_var}"
        );
        assert!(lambdas.iter().all(|l| (0.0..=1.0).contains(l)));
    }
    let both = BatchMixing {
        mixup_alpha: 0.2,
        cutmix_alpha: 1.0,
    };
    let mut cutmixes = 0;
    for s in 0..draws {
        if let MixDraw::CutMix {
            lambda,
            rect: [x1, y1, x2, y2],
        } = both.draw(7, s, (24, 40))
        {
            cutmixes += 1;
            assert!(
                x1 <= x2 && x2 <= 40 && y1 <= y2 && y2 <= 24,
                "{:?}",
                [x1, y1, x2, y2]
            );
            let share = ((x2 - x1) * (y2 - y1)) as f32 / (24.0 * 40.0);
            assert!(
                (lambda - (1.0 - share)).abs() < 1e-6,
                "{lambda} against 1 - {share}"
            );
        }
    }
    let share = cutmixes as f64 / draws as f64;
    assert!(
        (share - 0.5).abs() < 5.0 * (0.25 / draws as f64).sqrt(),
        "{share} CutMix"
    );
    let off = BatchMixing {
        mixup_alpha: 0.0,
        cutmix_alpha: 0.0,
    };
    assert_eq!(off.draw(1, 0, (32, 32)), MixDraw::Nothing);
}
