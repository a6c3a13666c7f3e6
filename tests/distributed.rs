//! Data-parallel training over MPI: `resnet train` as 2 ranks under `mpirun` on lavapipe. Needs
//! the `mpi` feature and Open MPI's `mpirun` (Debian: libopenmpi-dev openmpi-bin libclang-dev):
//! `cargo test --release --features mpi --test distributed` (.ci/run runs it).
#![cfg(feature = "mpi")]

mod common;
use common::cifar;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// `resnet args` as `np` ranks, with the register kernels, `cache` as the cache directory and
/// the variables in `env` passed to every rank.
fn mpirun_command(np: usize, args: &[&str], cache: &Path, env: &[(&str, &str)]) -> Command {
    let mut c = Command::new("mpirun");
    c.args(["--allow-run-as-root", "--oversubscribe", "-np"])
        .arg(np.to_string());
    for var in ["RESNET_CACHE", "RESNET_KERNELS", "XDG_RUNTIME_DIR"] {
        c.args(["-x", var]);
    }
    for (k, v) in env {
        c.args(["-x", k]).env(k, v);
    }
    c.arg(env!("CARGO_BIN_EXE_resnet"))
        .args(args)
        .env("XDG_RUNTIME_DIR", std::env::temp_dir())
        .env("RESNET_CACHE", cache)
        .env("RESNET_KERNELS", "register");
    c
}

fn mpirun(np: usize, args: &[&str], cache: &Path) -> Output {
    mpirun_command(np, args, cache, &[])
        .output()
        .expect("mpirun (Open MPI) is installed")
}

fn text(out: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The train losses of metrics.csv, epoch by epoch.
fn train_losses(run: &Path) -> Vec<f64> {
    let csv = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    csv.lines()
        .skip(1)
        .map(|l| l.split(',').nth(3).unwrap().parse().unwrap())
        .collect()
}

fn train_args<'a>(data: &'a str, out: &'a str, epochs: &'a str) -> Vec<&'a str> {
    vec![
        "train",
        "--model",
        "resnet8",
        "--data",
        data,
        "--batch-size",
        "32",
        "--eval-batch-size",
        "50",
        "--epochs",
        epochs,
        "--seed",
        "3",
        "--out",
        out,
    ]
}

/// Two ranks end every epoch with the same weights and momentum (the run checks it and stops
/// otherwise), only rank 0 writes, the loss falls, and a second run gives the same bits.
#[test]
fn two_ranks_train_in_step_and_repeat_bit_for_bit() {
    let data = cifar::subset(40, 10);
    let cache = tempfile::tempdir().unwrap();
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let d = data.path().to_str().unwrap();
    let mut checkpoints = Vec::new();
    for out in [&a, &b] {
        let run = mpirun(
            2,
            &train_args(d, out.path().to_str().unwrap(), "3"),
            cache.path(),
        );
        let all = text(&run);
        assert!(run.status.success(), "{all}");
        for epoch in 1..=3 {
            let line = format!("epoch {epoch}: weights and momentum identical on all 2 ranks");
            assert!(all.contains(&line), "{all}");
        }
        // one announcement and one line per epoch: rank 1 printed nothing of its own
        assert_eq!(
            all.matches("data parallel over 2 MPI ranks").count(),
            1,
            "{all}"
        );
        assert_eq!(all.matches("epoch 3/3: train loss").count(), 1, "{all}");
        let losses = train_losses(out.path());
        assert_eq!(losses.len(), 3, "{losses:?}");
        assert!(losses[2] < losses[0], "the loss did not fall: {losses:?}");
        checkpoints.push(std::fs::read(out.path().join("last.safetensors")).unwrap());
    }
    assert!(
        checkpoints[0] == checkpoints[1],
        "two identical 2-rank runs gave different weights"
    );
}

/// A global batch that does not divide among the ranks, and a resume with another number of
/// ranks, stop every rank with one clear error and a non-zero exit.
#[test]
fn bad_distributed_input_stops_every_rank() {
    let data = cifar::subset(10, 2);
    let cache = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let (d, o) = (data.path().to_str().unwrap(), out.path().to_str().unwrap());

    let mut args = train_args(d, o, "1");
    args[6] = "33";
    let run = mpirun(2, &args, cache.path());
    let all = text(&run);
    assert!(!run.status.success(), "{all}");
    assert!(
        all.contains("--batch-size 33 is the global batch and must divide among the 2 MPI ranks"),
        "{all}"
    );
    assert!(!all.contains("panicked"), "{all}");

    // one epoch as one process (mpirun -np 1), then a resume as two
    let run = mpirun(1, &train_args(d, o, "1"), cache.path());
    assert!(run.status.success(), "{}", text(&run));
    let mut resume = train_args(d, o, "2");
    resume.push("--resume");
    resume.push(o);
    let run = mpirun(2, &resume, cache.path());
    let all = text(&run);
    assert!(!run.status.success(), "{all}");
    assert!(all.contains("was trained by 1 process(es), not 2"), "{all}");
}

/// Killing one rank (SIGKILL, mid-epoch) ends the other within seconds with a non-zero exit,
/// epoch 1's checkpoint stays intact, and a resume with the same number of ranks finishes the run.
#[test]
fn a_killed_rank_ends_the_run_and_a_resume_finishes_it() {
    let data = cifar::subset(40, 10);
    let cache = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let (d, o) = (data.path().to_str().unwrap(), out.path().to_str().unwrap());
    // 400 images, global batch 32: 12 steps an epoch; both ranks hang after iteration 16
    let stall = [("RESNET_STALL_AT_ITERATION", "16")];
    let mut child = mpirun_command(2, &train_args(d, o, "2"), cache.path(), &stall)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let mut seen = Vec::new();
    for line in stderr.lines() {
        let line = line.unwrap();
        let stalled = line.contains("stalled after iteration 16");
        seen.push(line);
        if stalled {
            break;
        }
    }
    assert!(
        seen.last().is_some_and(|l| l.contains("stalled")),
        "{seen:?}"
    );
    // the ranks are mpirun's children; kill one of them
    let ranks = Command::new("pgrep")
        .args(["-P", &child.id().to_string(), "resnet"])
        .output()
        .unwrap();
    let pids = String::from_utf8_lossy(&ranks.stdout);
    let victim = pids.split_whitespace().next().expect("a rank's pid");
    let t0 = Instant::now();
    assert!(Command::new("kill")
        .args(["-9", victim])
        .status()
        .unwrap()
        .success());
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "the other rank kept running"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(!status.success());
    assert_eq!(
        train_losses(out.path()).len(),
        1,
        "epoch 1's row, not epoch 2's"
    );

    let mut resume = train_args(d, o, "2");
    resume.extend(["--resume", o]);
    let run = mpirun(2, &resume, cache.path());
    let all = text(&run);
    assert!(run.status.success(), "{all}");
    assert!(all.contains("resuming after epoch 1"), "{all}");
    assert_eq!(train_losses(out.path()).len(), 2, "{all}");
}
