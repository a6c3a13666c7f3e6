//! The scripts people run by hand (the GPU check, the checkpoint comparison) at least parse:
//! bash's and Python's syntax checks, without running them (they need a GPU or minutes). Only
//! torch_bench.py's answers to --help and to a bad mode are run: it gives them before it imports
//! torch, so they need no PyTorch.

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
