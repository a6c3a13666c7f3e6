//! `resnet selftest`: on this adapter every check passes and the table names every op; a
//! tolerance no f32 result can meet makes it fail with exit 1 and a line naming the failures; the
//! error norm it judges by tells wrong results apart.

mod common;
use resnet::gpu::Precision;
use resnet::ops::conv2d::KernelFamily;
use resnet::selftest::max_norm_relative_error;
use std::process::{Command, Output};

fn selftest(args: &[&str]) -> Output {
    selftest_with(args, ("RESNET_FUSE", "1"))
}

fn selftest_with(args: &[&str], (var, value): (&str, &str)) -> Output {
    Command::new(env!("CARGO_BIN_EXE_resnet"))
        .arg("selftest")
        .args(args)
        .env("XDG_RUNTIME_DIR", std::env::temp_dir())
        .env_remove("RESNET_KERNELS") // it would check one family
        .env_remove("RESNET_COOPERATIVE")
        .env(var, value)
        .output()
        .unwrap()
}

#[test]
fn selftest_passes_here_and_fails_when_nothing_can_pass() {
    let ok = selftest(&[]);
    let out = String::from_utf8_lossy(&ok.stdout);
    assert!(
        ok.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    for op in [
        "conv2d forward (register16x16)",
        "conv2d backward to input (tiled)",
        "conv2d backward to weights (register8x8)",
        "batchnorm2d backward",
        "conv2d forward (grouped)",
        "conv2d backward to weights (grouped)",
        "training step: every parameter gradient",
        "training step: weights after SGD",
    ] {
        let row = out.lines().find(|l| l.starts_with(op));
        assert!(row.is_some_and(|r| r.contains(" pass ")), "{op}: {out}");
    }
    // three directions of every kernel family and of the grouped kernels, four BatchNorm checks,
    // four of the training steps
    let fp32 = resnet::gpu::Precision::Fp32;
    let checks = 3 * resnet::ops::conv2d::KernelFamily::of_precision(fp32).count() + 3 + 8;
    assert!(
        out.contains(&format!("all {checks} checks passed")),
        "{out}"
    );

    // one family is enough to fail (--kernels checks it alone: no other family's rows); the
    // 8x8 register kernels, the quickest on lavapipe
    let strict = selftest(&["--tolerance", "0", "--kernels", "register8x8"]);
    assert_eq!(strict.status.code(), Some(1));
    let err = String::from_utf8_lossy(&strict.stderr);
    let last = err.lines().last().unwrap_or("");
    assert!(
        last.starts_with("error: selftest:") && last.contains("checks failed"),
        "{err}"
    );
    let table = String::from_utf8_lossy(&strict.stdout);
    assert!(
        table.contains("conv2d forward (register8x8)") && table.contains("FAIL"),
        "{table}"
    );
    assert!(!table.contains("(register16x16)"), "{table}");
    let bad = selftest(&["--tolerance", "-1"]);
    assert!(!bad.status.success());
}

/// `--precision mixed`: an f16 family in each direction, within the bounds of f16 operands, and
/// whole training steps against the reference rounding to f16 (`--amp` spells it as
/// torchvision's script does; `--kernels` names the fp32 family, and means its f16 twin). One
/// family: every f16 family is held to the same bounds by tests/conv2d.rs, and the table of all
/// families by the fp32 test above, where on a CPU driver they take minutes.
#[test]
fn selftest_passes_in_mixed_precision() {
    if !common::f16_shaders("selftest_passes_in_mixed_precision") {
        return;
    }
    let ok = selftest(&["--amp", "--kernels", "register8x8"]);
    let out = String::from_utf8_lossy(&ok.stdout);
    assert!(
        ok.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let row = |start: &str| out.lines().find(|l| l.starts_with(start)).unwrap_or("");
    assert!(row("op ").contains(" bound "), "{out}");
    for direction in ["forward", "backward to input", "backward to weights"] {
        let conv = row(&format!("conv2d {direction} (register8x8-f16)"));
        assert!(conv.contains(" per elem.  pass "), "{direction}: {out}");
    }
    for fp32 in KernelFamily::of_precision(Precision::Fp32) {
        let name = format!("({}) ", fp32.name());
        assert!(!out.contains(&name), "an fp32 family ran: {out}");
    }
    // parameter gradients held to 2^-5, the rest of the steps to 2^-7 (MIXED_*_TOLERANCE)
    let gradients = row("training step: every parameter gradient");
    assert!(gradients.contains(" 3.12e-2  pass "), "{out}");
    assert!(
        row("training step: loss and logits").contains(" 7.81e-3  pass "),
        "{out}"
    );
    // the family's three directions, the grouped kernels', four BatchNorm checks, four of the
    // training steps
    assert!(out.contains("all 14 checks passed"), "{out}");
}

/// The training steps pass with every op unfused too (the default fuses BatchNorm's statistics
/// into the convolutions where the family allows: register, which runs the steps here, does).
#[test]
fn selftest_passes_unfused() {
    let ok = selftest_with(&["--kernels", "register"], ("RESNET_FUSE", "0"));
    let out = String::from_utf8_lossy(&ok.stdout);
    assert!(
        ok.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let row = out
        .lines()
        .find(|l| l.starts_with("training step: BN running statistics"));
    assert!(row.is_some_and(|r| r.contains(" pass ")), "{out}");
    // the forced family's three directions, the grouped kernels', four BatchNorm checks, four of
    // the training steps
    assert!(out.contains("all 14 checks passed"), "{out}");
}

#[test]
fn the_error_norm_tells_wrong_results_apart() {
    let want = [1.0, -2.0, 4.0];
    assert_eq!(max_norm_relative_error(&[1.0, -2.0, 4.0], &want), 0.0);
    let e = max_norm_relative_error(&[1.0, -2.0, 4.004], &want);
    assert!((e - 1e-3).abs() < 1e-6, "{e}");
    assert!(max_norm_relative_error(&[1.0, f32::NAN, 4.0], &want).is_infinite());
    assert!(max_norm_relative_error(&[1.0, -2.0], &want).is_infinite());
}
