//! The scripts people run by hand (the GPU check, the checkpoint comparison) at least parse:
//! bash's and Python's syntax checks, without running them (they need a GPU or minutes). Only
//! torch_bench.py's answers to --help and to a bad mode, and torchvision_parity.py's --help, are
//! run: they give them before they import torch, so they need no PyTorch; and the GPU check's
//! tables from made-up results.

use std::process::Command;

fn ok(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn scripts_parse() {
    let root = env!("CARGO_MANIFEST_DIR");
    for script in [
        "scripts/gpu-check.sh",
        "scripts/same-checkpoints.sh",
        ".ci/run",
        "web/test.sh",
    ] {
        ok(Command::new("bash")
            .arg("-n")
            .arg(format!("{root}/{script}")));
    }
    let py = format!("{root}/scripts/torch_bench.py");
    let src = std::fs::read_to_string(&py).unwrap();
    // compile() only: no bytecode written into the tree, no torch needed
    ok(Command::new("python3")
        .args([
            "-c",
            "import sys; compile(sys.stdin.read(), 'torch_bench.py', 'exec')",
        ])
        .stdin(std::fs::File::open(&py).unwrap()));
    assert!(
        src.contains("allow_tf32"),
        "TF32 on and off is what the table compares"
    );
}

fn torch_bench(args: &[&str]) -> std::process::Output {
    let py = format!("{}/scripts/torch_bench.py", env!("CARGO_MANIFEST_DIR"));
    Command::new("python3").arg(py).args(args).output().unwrap()
}

/// torchvision_parity.py needs torch to run; its --help does not.
#[test]
fn torchvision_parity_help_says_what_it_compares() {
    let py = format!(
        "{}/scripts/torchvision_parity.py",
        env!("CARGO_MANIFEST_DIR")
    );
    let out = Command::new("python3")
        .args([&py, "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for word in ["--resnet", "--format", "png", "jpeg", "--tolerance"] {
        assert!(help.contains(word), "--help does not say {word}:\n{help}");
    }
}

#[test]
fn torch_bench_help_names_every_mode() {
    let out = torch_bench(&["--help"]);
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for word in [
        "fp32",
        "tf32",
        "amp-fp16",
        "amp-bf16",
        "nchw",
        "channels-last",
        "--compile",
    ] {
        assert!(help.contains(word), "--help does not say {word}:\n{help}");
    }
}

#[test]
fn torch_bench_rejects_an_unknown_mode_in_one_line() {
    let out = torch_bench(&["--mode", "fp32,fp64"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("'fp64'") && err.contains("amp-bf16"),
        "the error names the bad mode and the good ones: {err}"
    );
}

/// A PyTorch result with these figures, as torch_bench.py writes it.
fn pytorch_row(batch: usize, mode: &str, layout: &str, train: f64, invalid: bool) -> String {
    serde_json::json!({
        "engine": "pytorch", "model": "resnet50", "batch_size": batch, "image_size": 224,
        "mode": mode, "layout": layout, "compiled": false, "device": "NVIDIA H100 80GB HBM3",
        "torch": "2.11.0+cu130", "cuda": "13.0", "cudnn": 91000, "sm_count": 132, "steps": 50,
        "warmup": 20, "timing": "cuda-events", "train_images_per_sec": train,
        "inference_images_per_sec": 3.0 * train, "invalid": invalid,
        "invalid_reasons": if invalid { vec!["other processes on the GPU: 4242 python"] } else { vec![] },
    })
    .to_string()
}

/// The GPU check's tables: every result in its column, a disturbed one marked INVALID and kept
/// out of the comparison with the published anchors, where a figure within 2x of its anchor
/// passes and one further away is SUSPECT; a combination skipped for time shows as such, and a
/// line cut short is counted and left out.
#[test]
fn the_gpu_tables_hold_pytorch_to_the_published_anchors() {
    let dir = tempfile::tempdir().unwrap();
    let ours = serde_json::json!({
        "model": "resnet50", "batch_size": 64, "image_size": 224, "precision": "fp32",
        "adapter": "NVIDIA H100", "backend": "Vulkan", "train_images_per_sec": 442.4,
        "inference_images_per_sec": 1620.4,
    });
    let rows = [
        ours.to_string(),
        pytorch_row(256, "tf32", "channels-last", 1700.0, false),
        pytorch_row(64, "tf32", "channels-last", 1500.0, false),
        // far above its anchor, but disturbed: INVALID, not the best TF32 figure
        pytorch_row(64, "tf32", "nchw", 9000.0, true),
        pytorch_row(256, "amp-fp16", "channels-last", 1200.0, false),
        // what did not fit in torch_bench.py's time budget, then a line cut short
        serde_json::json!({
            "engine": "pytorch", "model": "resnet50", "batch_size": 256, "image_size": 224,
            "mode": "amp-bf16", "layout": "channels-last", "compiled": false,
            "skipped": "over --time-budget 240 s",
        })
        .to_string(),
        r#"{"engine": "pytorch", "model": "res"#.to_string(),
    ];
    let jsonl = dir.path().join("bench.jsonl");
    std::fs::write(&jsonl, rows.join("\n") + "\n").unwrap();
    let script = format!("{}/scripts/gpu_table.py", env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("python3")
        .arg(script)
        .arg(&jsonl)
        .args(["10", "2"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let row = |start: &str| text.lines().find(|l| l.starts_with(start)).unwrap_or("");
    assert!(
        row("| resnet50 | 64 | 224 | 442.4 |").contains("9000.0 *"),
        "{text}"
    );
    let invalid = "* INVALID, other processes on the GPU: 4242 python: resnet50 b64 tf32 nchw";
    assert!(text.contains(invalid), "{text}");
    assert!(
        row("| resnet50 | 256 | 224 |").contains("| skipped |"),
        "{text}"
    );
    assert!(text.contains("1 line(s) of"), "{text}");
    let tf32 = row("| TF32 | 1700.0 (b256 CL) | 1825 |");
    assert!(tf32.ends_with("| 0.93 | within 2x |"), "{text}");
    let amp = row("| AMP fp16 | 1200.0 (b256 CL) | 2700 |");
    assert!(amp.contains("| 0.44 | SUSPECT"), "{text}");
}
