//! The scripts people run by hand (the GPU check, the checkpoint comparison) at least parse:
//! bash's and Python's syntax checks, without running them (they need a GPU or minutes).

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
