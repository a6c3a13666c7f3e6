//! Data-parallel training over MPI: `resnet train` as 2 ranks under `mpirun` on lavapipe. Needs
//! the `mpi` feature and Open MPI's `mpirun` (Debian: libopenmpi-dev openmpi-bin libclang-dev):
//! `cargo test --release --features mpi --test distributed` (.ci/run runs it).
#![cfg(feature = "mpi")]

mod common;
use common::cifar;
use common::serve::serve;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// `resnet args` as `np` ranks, with the register kernels, `cache` as the cache directory and
/// the variables in `env` passed to every rank.
fn mpirun_command(np: usize, args: &[&str], cache: &Path, env: &[(&str, &str)]) -> Command {
    let mut c = Command::new("mpirun");
    // a job that hangs (ranks waiting for each other) is aborted and fails its test
    c.args([
        "--allow-run-as-root",
        "--oversubscribe",
        "--timeout",
        "300",
        "-np",
    ])
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

/// Sets the value following `flag` in `args`.
fn set<'a>(args: &mut [&'a str], flag: &str, value: &'a str) {
    let at = args
        .iter()
        .position(|a| *a == flag)
        .expect("the flag is there")
        + 1;
    args[at] = value;
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

/// Two ranks end every epoch with the same weights and optimizer state (the run checks it and stops
/// otherwise), only rank 0 writes, the loss falls, and a second run gives the same bits.
#[test]
fn two_ranks_train_in_step_and_repeat_bit_for_bit() {
    let data = cifar::subset(20, 10);
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
            let line =
                format!("epoch {epoch}: weights and optimizer state identical on all 2 ranks");
            assert!(all.contains(&line), "{all}");
        }
        // one announcement and one line per epoch: rank 1 printed nothing of its own
        assert_eq!(
            all.matches("data parallel over 2 MPI ranks").count(),
            1,
            "{all}"
        );
        assert_eq!(all.matches("epoch 3/3: train loss").count(), 1, "{all}");
        // the reduce-scatter and allgather: 2(N-1)/N of the gradient's S bytes received a step,
        // as MPI counted them (resnet8: a flat parameter buffer of 75,296 floats, S = 301,184 bytes; at N = 2 that is S)
        let line = "gradients of 301184 bytes a rank averaged over 2 ranks";
        assert_eq!(all.matches(line).count(), 3, "{all}");
        assert_eq!(
            all.matches("301184 bytes received a step").count(),
            3,
            "{all}"
        );
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

/// Gradients exchanged in buckets while the backward pass runs give the bits of one exchange
/// after it: each float is still summed over the ranks in rank order. 4 ranks, resnet8's
/// 301,184 gradient bytes in buckets of at least 0.05 MiB, against one bucket; with AdamW, so
/// that the ranks' agreement after the epoch covers its second moments too.
#[test]
fn four_ranks_in_buckets_train_as_one_exchange_bit_for_bit() {
    let data = cifar::subset(10, 2);
    let cache = tempfile::tempdir().unwrap();
    let d = data.path().to_str().unwrap();
    let runs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    for (dir, mb) in runs.iter().zip(["0.05", "1000"]) {
        let mut args = train_args(d, dir.path().to_str().unwrap(), "1");
        args.extend(["--bucket-mb", mb, "--opt", "adamw", "--lr", "1e-3"]);
        let run = mpirun(4, &args, cache.path());
        let all = text(&run);
        assert!(run.status.success(), "{all}");
        assert!(
            all.contains("epoch 1: weights and optimizer state identical on all 4 ranks"),
            "{all}"
        );
        let exchanged = all
            .lines()
            .find(|l| l.contains("bytes a rank averaged"))
            .unwrap();
        assert_eq!(mb == "1000", !exchanged.contains("buckets"), "{all}");
        if mb == "0.05" {
            let n: usize = exchanged
                .split(" in ")
                .nth(2)
                .unwrap()
                .split(' ')
                .next()
                .unwrap()
                .parse()
                .unwrap();
            assert!(n >= 3, "{exchanged}");
        }
    }
    let ck = |i: usize| std::fs::read(runs[i].path().join("last.safetensors")).unwrap();
    assert!(
        ck(0) == ck(1),
        "bucketed and one exchange gave different weights"
    );
    let metrics = std::fs::read_to_string(runs[0].path().join("metrics.csv")).unwrap();
    let header = metrics.lines().next().unwrap_or("");
    assert_eq!(header, resnet::report::CSV_HEADER, "{metrics}");
    assert!(
        header.contains(",exchange_ms,exchange_hidden_ms,"),
        "{metrics}"
    );
}

/// A bucket size that is not a positive number, and ranks told different sizes, stop every
/// rank with one error line from rank 0.
#[test]
fn bad_bucket_sizes_stop_every_rank() {
    let data = cifar::subset(10, 2);
    let cache = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let (d, o) = (data.path().to_str().unwrap(), out.path().to_str().unwrap());
    for mb in ["0", "-5"] {
        let mut args = train_args(d, o, "1");
        args.extend(["--bucket-mb", mb]);
        let run = mpirun(2, &args, cache.path());
        let all = text(&run);
        assert!(!run.status.success(), "{all}");
        let line = format!("--bucket-mb must be a positive number of MiB, got {mb}");
        assert!(all.contains(&line), "{all}");
        assert!(!all.contains("panicked"), "{all}");
    }
    // rank 0 told 1 MiB, rank 1 2 MiB (mpirun's MPMD form: one program line per rank)
    let mut c = mpirun_command(1, &[], cache.path(), &[]);
    let mut args = train_args(d, o, "1");
    args.extend(["--bucket-mb", "1"]);
    c.args(&args)
        .args([":", "-np", "1", env!("CARGO_BIN_EXE_resnet")]);
    args.pop();
    args.push("2");
    c.args(&args);
    let run = c.output().unwrap();
    let all = text(&run);
    assert!(!run.status.success(), "{all}");
    let line = "the 2 MPI ranks disagree on the configuration (model, recipe, epochs, seed, sync_bn, bucket_mb, model_ema, augmentation, data)";
    assert_eq!(all.matches(line).count(), 1, "{all}");
    assert!(!all.contains("panicked"), "{all}");
}

/// The largest difference between two checkpoints' float tensors, relative to the larger of 1
/// and the value (running variances grow past 1), and the tensor where it is.
fn largest_difference(a: &Path, b: &Path) -> (f64, String) {
    let (a, b) = (
        resnet::checkpoint::load(a).unwrap(),
        resnet::checkpoint::load(b).unwrap(),
    );
    let mut worst = (0.0f64, String::new());
    assert_eq!(a.tensors.len(), b.tensors.len());
    for (x, y) in a.tensors.iter().zip(&b.tensors) {
        assert_eq!(x.name, y.name);
        let (Some(xs), Some(ys)) = (x.as_f32(), y.as_f32()) else {
            continue;
        };
        for (u, v) in xs.iter().zip(ys) {
            let d = (*u as f64 - *v as f64).abs() / (v.abs() as f64).max(1.0);
            if d > worst.0 {
                worst = (d, x.name.clone());
            }
        }
    }
    worst
}

/// With --sync-bn, two ranks of 16 images train as one process of 32 (SyncBatchNorm): the
/// BatchNorm statistics and the sums of their backward are the whole batch's, and each rank's
/// crops are those of its images in the global batch. The weights and running statistics agree
/// to 1e-5 after 3 steps. Without --sync-bn they cannot (each rank normalises its own half), and
/// the test checks that they do not, so that a comparison that cannot fail is not taken for one
/// that passes.
///
/// The seed matters: the two runs add in different orders, and a ReLU input that lies within
/// rounding of 0 takes the other side in one of them, which moves the weights below it at once.
/// Over 3 steps this happens for some seeds: with seed 1, one process with the register kernels
/// and one with the tiled kernels end 1e-3 apart, and so does the 2-rank run; with seed 2 all
/// three agree to 2e-7. A failure after a kernel change may be that: compare one process with
/// two kernel families (RESNET_KERNELS) at the same seed before suspecting the exchange.
#[test]
fn sync_bn_two_ranks_train_as_one_process() {
    let data = cifar::subset(10, 2);
    let cache = tempfile::tempdir().unwrap();
    let d = data.path().to_str().unwrap();
    let runs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let out: Vec<_> = runs.iter().map(|r| r.path().to_str().unwrap()).collect();
    let args = |i: usize, extra: &[&'static str]| {
        let mut a = train_args(d, out[i], "1");
        let seed = a.iter().position(|x| *x == "--seed").unwrap() + 1;
        a[seed] = "2";
        a.extend(extra);
        a
    };
    // 100 images, global batch 32: 3 steps
    let one = mpirun(1, &args(0, &[]), cache.path());
    assert!(one.status.success(), "{}", text(&one));
    let two = mpirun(2, &args(1, &["--sync-bn"]), cache.path());
    let all = text(&two);
    assert!(two.status.success(), "{all}");
    // resnet8 has 7 BatchNorms: one exchange in each forward and each backward
    let line = "BatchNorm statistics of the whole batch (--sync-bn, 14 exchanges a step)";
    assert!(all.contains(line), "{all}");
    let local = mpirun(2, &args(2, &[]), cache.path());
    assert!(local.status.success(), "{}", text(&local));

    let ck = |i: usize| runs[i].path().join("last.safetensors");
    let (synced, at) = largest_difference(&ck(1), &ck(0));
    assert!(
        synced < 1e-5,
        "--sync-bn differs from one process by {synced:e} in {at}"
    );
    let (unsynced, at) = largest_difference(&ck(2), &ck(0));
    assert!(
        unsynced > 1e-3,
        "without --sync-bn only {unsynced:e} apart (in {at})"
    );
}

/// Under mpirun, one rank downloads CIFAR-10 into the cache the ranks share and the others read
/// its copy: one request, not one per rank racing to write the same files. Ranks given
/// different cache directories (machines that share no file system) download once per
/// directory.
#[test]
fn one_rank_per_cache_downloads_cifar_and_the_others_read_its_copy() {
    let (archive, md5) = cifar::binary_archive(&resnet::data::bundled_cifar10());
    let (url, requests) = serve("/cifar-10-binary.tar.gz", archive, 0);
    let cache = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let mut args = train_args("unused", out.path().to_str().unwrap(), "1");
    let data = args.iter().position(|a| *a == "--data").unwrap();
    args.drain(data..data + 2);
    args.extend(["--data-url", &url, "--data-md5", &md5, "--subset", "64"]);
    let run = mpirun(2, &args, cache.path());
    let all = text(&run);
    assert!(run.status.success(), "{all}");
    assert!(
        !all.contains("bundled"),
        "fell back to the bundled images: {all}"
    );
    assert_eq!(requests.lock().unwrap().len(), 1, "{all}");

    // machines that share no file system, as ranks given different cache directories: ranks 0
    // and 1 share one, ranks 2 and 3 another; each directory is filled once (by ranks 0 and 2;
    // rank 0 first, then the rest, would have ranks 2 and 3 both download), every rank trains
    let caches = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let mut c = Command::new("mpirun");
    c.args(["--allow-run-as-root", "--oversubscribe", "--timeout", "300"]);
    let runtime = format!("XDG_RUNTIME_DIR={}", std::env::temp_dir().display());
    for (i, (np, dir)) in [(2, &caches[0]), (2, &caches[1])].into_iter().enumerate() {
        if i > 0 {
            c.arg(":");
        }
        let cache_var = format!("RESNET_CACHE={}", dir.path().display());
        c.args(["-np", &np.to_string(), "env", &runtime, &cache_var]);
        c.args(["RESNET_KERNELS=register", env!("CARGO_BIN_EXE_resnet")]);
        c.args(&args);
    }
    let before = requests.lock().unwrap().len();
    let run = c.output().unwrap();
    let all = text(&run);
    assert!(run.status.success(), "{all}");
    assert!(
        !all.contains("bundled"),
        "fell back to the bundled images: {all}"
    );
    assert!(all.contains("data parallel over 4 MPI ranks"), "{all}");
    assert_eq!(requests.lock().unwrap().len() - before, 2, "{all}");
}

/// A global batch that does not divide among the ranks stops every rank with one clear error
/// and a non-zero exit; an unreachable machine in the hostfile is mpirun's error and nothing
/// starts.
#[test]
fn bad_distributed_input_stops_every_rank() {
    let data = cifar::subset(10, 2);
    let cache = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let (d, o) = (data.path().to_str().unwrap(), out.path().to_str().unwrap());

    let mut args = train_args(d, o, "1");
    set(&mut args, "--batch-size", "33");
    let run = mpirun(2, &args, cache.path());
    let all = text(&run);
    assert!(!run.status.success(), "{all}");
    assert!(
        all.contains("--batch-size 33 is the global batch and must divide among the 2 MPI ranks"),
        "{all}"
    );
    assert!(!all.contains("panicked"), "{all}");

    // a hostfile naming a machine that cannot be reached: mpirun's error, no rank started,
    // nothing written
    let hosts = out.path().join("hosts");
    std::fs::write(&hosts, "no-such-node.invalid slots=2\n").unwrap();
    let never = out.path().join("never");
    let args = train_args(d, never.to_str().unwrap(), "1");
    let mut c = Command::new("mpirun");
    c.args(["--allow-run-as-root", "--timeout", "60", "--hostfile"])
        .arg(&hosts);
    c.args(["-np", "2", env!("CARGO_BIN_EXE_resnet")])
        .args(&args);
    let run = c.output().unwrap();
    let all = text(&run);
    assert!(!run.status.success(), "{all}");
    assert!(!never.exists(), "{all}");
    assert!(!all.contains("panicked"), "{all}");
}

/// `resnet train` args with `--sync-bn`, the loss of every step in steps.csv and, when
/// `resume`, `--resume out`.
fn sync_bn_args<'a>(data: &'a str, out: &'a str, epochs: &'a str, resume: bool) -> Vec<&'a str> {
    let mut args = train_args(data, out, epochs);
    args.extend(["--sync-bn", "--log-every", "1"]);
    if resume {
        args.extend(["--resume", out]);
    }
    args
}

/// The (iteration, train loss) rows of steps.csv.
fn step_losses(run: &Path) -> Vec<(u64, f64)> {
    let csv = std::fs::read_to_string(run.join("steps.csv")).unwrap();
    csv.lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[0].parse().unwrap(), f[1].parse().unwrap())
        })
        .collect()
}

/// A run continues on another number of processes with the same global batches in the same
/// order. One epoch on 2 ranks with SyncBatchNorm (statistics over the whole batch on any number
/// of ranks), then three copies of the run resumed: on 2 ranks (the reference), on 4 and on
/// one process. Their first steps start from the same weights, so their losses agree up to the
/// order of float sums if and only if they train on the same batches (a batch's loss differs
/// from the next batch's by far more). Without SyncBatchNorm one warning says what BatchNorm
/// now averages over.
#[test]
fn a_run_resumes_on_another_number_of_ranks() {
    // 200 images, global batch 32: 6 steps an epoch
    let data = cifar::subset(20, 10);
    let cache = tempfile::tempdir().unwrap();
    let d = data.path().to_str().unwrap();
    let runs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let o = runs[0].path().to_str().unwrap();
    let run = mpirun(2, &sync_bn_args(d, o, "1", false), cache.path());
    assert!(run.status.success(), "{}", text(&run));
    for copy in &runs[1..] {
        for f in [
            "last.safetensors",
            "last.state.safetensors",
            "metrics.csv",
            "steps.csv",
            "command.json",
        ] {
            std::fs::copy(runs[0].path().join(f), copy.path().join(f)).unwrap();
        }
    }
    for (np, dir) in [(2, &runs[0]), (4, &runs[1]), (1, &runs[2])] {
        let o = dir.path().to_str().unwrap();
        let run = mpirun(np, &sync_bn_args(d, o, "2", true), cache.path());
        let all = text(&run);
        assert!(run.status.success(), "{all}");
        let line = format!("was trained by 2 process(es) and continues on {np}, with the same global batches of 32 in the same order; --sync-bn: BatchNorm's statistics still cover all 32 images");
        assert_eq!(all.matches(&line).count(), usize::from(np != 2), "{all}");
        if np == 4 {
            let agree = "epoch 2: weights and optimizer state identical on all 4 ranks";
            assert!(all.contains(agree), "{all}");
        }
    }
    let epoch2 = |dir: &tempfile::TempDir| -> Vec<f64> {
        let rows = step_losses(dir.path());
        assert_eq!(rows.len(), 12);
        assert_eq!(rows[6].0, 7);
        rows[6..].iter().map(|r| r.1).collect()
    };
    let (want, on4, on1) = (epoch2(&runs[0]), epoch2(&runs[1]), epoch2(&runs[2]));
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-4 * a.abs();
    for got in [&on4, &on1] {
        for s in 0..3 {
            assert!(
                close(want[s], got[s]),
                "step {s}: 2 ranks {want:?}, other {got:?}"
            );
        }
    }
    // the check tells batches apart: consecutive batches' losses differ far beyond it
    assert!(
        !close(want[0], want[1]) && !close(want[1], want[2]),
        "{want:?}"
    );

    // without SyncBatchNorm: one epoch as one process, then a resume on two, warned
    let (data, out) = (cifar::subset(10, 2), tempfile::tempdir().unwrap());
    let (d, o) = (data.path().to_str().unwrap(), out.path().to_str().unwrap());
    let mut args = train_args(d, o, "1");
    set(&mut args, "--batch-size", "8");
    let run = mpirun(1, &args, cache.path());
    assert!(run.status.success(), "{}", text(&run));
    set(&mut args, "--epochs", "2");
    args.extend(["--resume", o]);
    let run = mpirun(2, &args, cache.path());
    let all = text(&run);
    assert!(run.status.success(), "{all}");
    let line = "BatchNorm's batch statistics now cover 4 images per process, not 8";
    assert_eq!(all.matches(line).count(), 1, "{all}");
    assert!(all.contains("epoch 2/2: train loss"), "{all}");
}

/// Killing one rank (SIGKILL, mid-epoch) ends the other within seconds with a non-zero exit,
/// epoch 1's checkpoint stays intact, and a resume with the same number of ranks finishes the run.
#[test]
fn a_killed_rank_ends_the_run_and_a_resume_finishes_it() {
    let data = cifar::subset(20, 10);
    let cache = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let (d, o) = (data.path().to_str().unwrap(), out.path().to_str().unwrap());
    // 200 images, global batch 32: 6 steps an epoch; both ranks hang after iteration 8
    let stall = [("RESNET_STALL_AT_ITERATION", "8")];
    let mut child = mpirun_command(2, &train_args(d, o, "2"), cache.path(), &stall)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let mut seen = Vec::new();
    for line in stderr.lines() {
        let line = line.unwrap();
        let stalled = line.contains("stalled after iteration 8");
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

    // the run directory remembers the run's options: `--resume DIR` alone finishes it
    let run = mpirun(2, &["train", "--resume", o], cache.path());
    let all = text(&run);
    assert!(run.status.success(), "{all}");
    assert!(all.contains("resuming after epoch 1"), "{all}");
    assert_eq!(train_losses(out.path()).len(), 2, "{all}");
}
