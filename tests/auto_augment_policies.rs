//! AutoAugment's learned policies (`--auto-augment imagenet|cifar10|svhn`) against torchvision
//! and Pillow themselves, from tests/data/torch/auto_augment_policies.json (written by
//! `auto_augment_policies()` in make.py): the 75 sub-policies, the 10-bin strength tables at
//! three image sizes, and torchvision's forward on a photo for every sub-policy at chosen coins
//! and signs, byte for byte; the draws' shares against torchvision's.

mod common;
use common::torchvision::{bytes, fixture, same_tables, BILINEAR};
use image::RgbImage;
use resnet::preprocess::auto_augment::policies::sub_policies;
use resnet::preprocess::auto_augment::{
    apply, auto_augment, learned_draw, learned_steps, AugmentOp, Space,
};
use resnet::preprocess::{AutoAugment, AutoAugmentPolicy};
use resnet::rng::SplitMix64;

const POLICIES: [(&str, AutoAugmentPolicy); 3] = [
    ("imagenet", AutoAugmentPolicy::Imagenet),
    ("cifar10", AutoAugmentPolicy::Cifar10),
    ("svhn", AutoAugmentPolicy::Svhn),
];

fn policy_named(name: &str) -> AutoAugmentPolicy {
    POLICIES.iter().find(|(n, _)| *n == name).unwrap().1
}

/// AutoAugment's fourteen operations: TrivialAugment's without Identity, with Invert.
fn op_named(name: &str) -> AugmentOp {
    let ops = AugmentOp::ALL.iter().chain([&AugmentOp::Invert]);
    *ops.clone().find(|op| op.name() == name).unwrap()
}

#[test]
fn sub_policies_are_torchvisions() {
    let torch = fixture("auto_augment_policies.json");
    let lists = torch["policies"].as_object().unwrap();
    assert_eq!(lists.len(), 3);
    for (name, pairs) in lists {
        let ours = sub_policies(policy_named(name));
        let pairs = pairs.as_array().unwrap();
        assert_eq!(pairs.len(), ours.len(), "{name}");
        for (k, (theirs, ours)) in pairs.iter().zip(ours).enumerate() {
            for (step, ours) in theirs.as_array().unwrap().iter().zip(ours) {
                let theirs = (
                    op_named(step[0].as_str().unwrap()),
                    step[1].as_f64().unwrap(),
                    step[2].as_u64().map(|b| b as usize),
                );
                assert_eq!(theirs, (ours.op, ours.probability, ours.bin), "{name} {k}");
            }
        }
    }
}

#[test]
fn strength_tables_are_torchvisions() {
    let torch = fixture("auto_augment_policies.json");
    let sizes = torch["tables"].as_object().unwrap();
    assert_eq!(sizes.len(), 3);
    // AutoAugment's fourteen: TrivialAugment's without Identity, with Invert
    let ops: Vec<AugmentOp> = AugmentOp::ALL[1..]
        .iter()
        .copied()
        .chain([AugmentOp::Invert])
        .collect();
    for (size, tables) in sizes {
        let (h, w) = size.split_once('x').unwrap();
        let (height, width) = (h.parse().unwrap(), w.parse().unwrap());
        same_tables(tables, &ops, Space::AutoAugment { height, width });
    }
}

/// torchvision's `AutoAugment.forward` with its draws fixed: every sub-policy with both steps,
/// or one of them, applied, signs both ways.
#[test]
fn every_sub_policy_matches_torchvision_byte_for_byte() {
    let torch = fixture("auto_augment_policies.json");
    let image = &torch["image"];
    let (w, h) = (
        image["width"].as_u64().unwrap(),
        image["height"].as_u64().unwrap(),
    );
    let img = RgbImage::from_raw(w as u32, h as u32, bytes(&image["rgb"])).unwrap();
    let cases = torch["cases"].as_array().unwrap();
    let (mut failures, mut changed) = (Vec::new(), 0);
    for case in cases {
        let policy = policy_named(case["policy"].as_str().unwrap());
        let pair = case["pair"].as_u64().unwrap() as usize;
        let coin = |i: usize| case["coins"][i].as_f64().unwrap();
        // torchvision negates where its sign is 0
        let negative = |i: usize| case["signs"][i].as_u64().unwrap() == 0;
        let size = (h as usize, w as usize);
        let steps = learned_steps(
            policy,
            pair,
            [coin(0), coin(1)],
            [negative(0), negative(1)],
            size,
        );
        let out = steps
            .iter()
            .flatten()
            .fold(img.clone(), |img, &(op, m)| apply(img, op, m, BILINEAR));
        changed += (out != img) as usize;
        let want = bytes(&case["out"]);
        let differ = out.as_raw().iter().zip(&want).filter(|(a, b)| a != b);
        let differ = differ.count();
        if differ > 0 || out.as_raw().len() != want.len() {
            failures.push(format!(
                "{policy:?} {pair} {steps:?}: {differ} bytes differ"
            ));
        }
    }
    assert_eq!(cases.len(), 75);
    // the cases are not trivial: all but one change the photo (cifar10's pair 19, whose coins
    // here apply only its Color at strength 0)
    assert!(changed >= 70, "{changed} of 75 changed");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// torchvision draws the pair uniformly (`torch.randint(25)`), applies each step with its
/// probability (`torch.rand`) and negates a signed strength on a coin: over 100,000 draws of
/// the ImageNet policy each pair's share is within 5 standard errors of 1/25, each step is
/// applied at its probability's rate within 5, and half the signed strengths are negative.
#[test]
fn draws_follow_the_policys_probabilities() {
    let policy = AutoAugmentPolicy::Imagenet;
    let pairs = sub_policies(policy);
    let mut rng = SplitMix64(3);
    let n = 100_000;
    let (mut drawn, mut applied) = ([0usize; 25], [[0usize; 2]; 25]);
    let (mut negative, mut signed) = (0usize, 0usize);
    let space = Space::AutoAugment {
        height: 32,
        width: 40,
    };
    for _ in 0..n {
        let mut replay = rng.clone();
        let steps = learned_draw(&mut rng, policy, (32, 40));
        let pair = replay.below(25) as usize;
        drawn[pair] += 1;
        for (i, step) in steps.iter().enumerate() {
            let Some((op, magnitude)) = *step else {
                continue;
            };
            let want = pairs[pair][i];
            applied[pair][i] += 1;
            assert_eq!(op, want.op);
            let strength = want.bin.map_or(0.0, |b| op.magnitude(space, b));
            assert_eq!(magnitude.abs(), strength, "{op:?}");
            if op.signed() {
                signed += 1;
                negative += magnitude.is_sign_negative() as usize;
            }
        }
    }
    let within = |count: usize, total: usize, p: f64| {
        let se = (p * (1.0 - p) / total as f64).sqrt().max(1e-12);
        (count as f64 / total as f64 - p).abs() <= 5.0 * se
    };
    for (k, &c) in drawn.iter().enumerate() {
        assert!(within(c, n, 1.0 / 25.0), "pair {k} drawn {c} of {n}");
        for i in 0..2 {
            let p = pairs[k][i].probability;
            assert!(
                within(applied[k][i], c, p),
                "pair {k} step {i}: {applied:?}"
            );
        }
    }
    assert!(within(negative, signed, 0.5), "{negative} of {signed}");
}

/// The wiring: `--auto-augment`'s names parse to the policies, and `auto_augment` applies the
/// steps of `learned_draw` from the same seed, in turn.
#[test]
fn the_policy_runs_its_draw() {
    let img = RgbImage::from_fn(20, 24, |x, y| {
        image::Rgb([(x * 12) as u8, (y * 9) as u8, 77])
    });
    for (name, policy) in POLICIES {
        let parsed: AutoAugment = name.parse().unwrap();
        assert_eq!(parsed, AutoAugment::Learned(policy));
        assert_eq!(parsed.name(), name);
        for seed in 0..100 {
            let out = auto_augment(parsed, img.clone(), BILINEAR, &mut SplitMix64(seed));
            let steps = learned_draw(&mut SplitMix64(seed), policy, (24, 20));
            let want = steps
                .iter()
                .flatten()
                .fold(img.clone(), |img, &(op, m)| apply(img, op, m, BILINEAR));
            assert_eq!(out, want, "{name} seed {seed}");
        }
    }
}
