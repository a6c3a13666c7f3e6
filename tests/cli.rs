//! The `resnet` command on bad input: a one-line error naming the file or argument, a non-zero
//! exit, no panic, and no half-written or lost checkpoint. Also eval/predict/summary on a real
//! checkpoint.

mod common;
use common::cifar;
use common::cli::{fails_with, ok, resnet, resnet_with_cache};
use common::*;
use resnet::checkpoint::{self, Checkpoint};
use resnet::model::ModelSpec;
use resnet::model::ModelState;
use std::path::Path;
use std::process::Output;

fn save_model(gpu: &resnet::Gpu, name: &str, path: &Path, edit: impl FnOnce(&mut Checkpoint)) {
    let m = ModelState::new(gpu, &ModelSpec::from_name(name, 10).unwrap(), 1).unwrap();
    let mut ck = Checkpoint::new();
    ck.tensors = pollster::block_on(m.state_dict(gpu)).unwrap();
    ck.metadata = resnet::checkpoint::metadata(
        &m.spec.name,
        &(0..10).map(|i| format!("c{i}")).collect::<Vec<_>>(),
        &resnet::cifar10::NORMALIZE,
    );
    edit(&mut ck);
    checkpoint::save(path, &ck).unwrap();
}

#[test]
fn bad_data_gives_one_line_errors() {
    let missing = resnet(&["train", "--data", "/nonexistent/cifar", "--epochs", "1"]);
    fails_with(&missing, &["/nonexistent/cifar"]);

    // the official binary layout with a truncated batch file
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("cifar-10-batches-bin");
    std::fs::create_dir_all(&bin).unwrap();
    for i in 1..=5 {
        std::fs::write(bin.join(format!("data_batch_{i}.bin")), vec![1u8; 3073 * 2]).unwrap();
    }
    std::fs::write(bin.join("data_batch_3.bin"), vec![1u8; 3073 + 100]).unwrap();
    std::fs::write(bin.join("test_batch.bin"), vec![1u8; 3073]).unwrap();
    std::fs::write(
        bin.join("batches.meta.txt"),
        (0..10).map(|i| format!("c{i}\n")).collect::<String>(),
    )
    .unwrap();
    let out = resnet(&[
        "train",
        "--data",
        dir.path().to_str().unwrap(),
        "--epochs",
        "1",
    ]);
    fails_with(&out, &["data_batch_3.bin"]);

    let bad_model = resnet(&["train", "--model", "resnet21"]);
    fails_with(&bad_model, &["resnet21"]);
    let bad_schedule = resnet(&["train", "--lr-schedule", "linear", "--data", "/x"]);
    fails_with(&bad_schedule, &["--lr-schedule"]);
    let bad_decay = resnet(&["train", "--norm-weight-decay=-1", "--data", "/x"]);
    fails_with(&bad_decay, &["--norm-weight-decay", "0 or more", "-1"]);
    let plain = resnet(&[
        "train",
        "--model",
        "plain20",
        "--zero-init-residual",
        "--data",
        "/x",
    ]);
    fails_with(&plain, &["--zero-init-residual", "plain20", "no shortcuts"]);
    let train_with = |extra: &[&str]| resnet(&[&["train", "--data", "/x"], extra].concat());
    let alone = train_with(&["--model-ema-steps", "8"]);
    fails_with(&alone, &["--model-ema-steps", "--model-ema", "not on"]);
    let never = train_with(&["--model-ema", "--model-ema-steps", "0"]);
    fails_with(&never, &["--model-ema-steps", "at least 1"]);
    let above_one = train_with(&["--model-ema", "--model-ema-decay", "1.5"]);
    fails_with(&above_one, &["--model-ema-decay", "[0, 1]", "1.5"]);
    let warm = |extra: &[&str]| train_with(&[&["--lr-warmup-epochs", "3"], extra].concat());
    let method = warm(&["--lr-warmup-method", "cosine"]);
    fails_with(
        &method,
        &["--lr-warmup-method", "cosine", "constant or linear"],
    );
    let no_start = warm(&["--lr-warmup-decay", "0"]);
    fails_with(&no_start, &["--lr-warmup-decay", "(0, 1]", "got 0"]);
    let two = warm(&["--warmup-iters", "100"]);
    fails_with(&two, &["--lr-warmup-epochs", "--warmup-iters", "give one"]);
    let cycle = warm(&["--lr-schedule", "onecycle"]);
    fails_with(&cycle, &["--lr-warmup-epochs", "onecycle"]);
    let all_of_it = warm(&["--epochs", "3"]);
    fails_with(&all_of_it, &["--lr-warmup-epochs 3", "3 epochs"]);
    let no_warm_up = train_with(&["--lr-warmup-method", "linear"]);
    fails_with(
        &no_warm_up,
        &["--lr-warmup-method", "--lr-warmup-epochs", "is 0"],
    );
    let floor = train_with(&["--lr-min", "0.001"]);
    fails_with(&floor, &["--lr-min", "cosine", "step schedule"]);
    let erase = train_with(&["--random-erase", "1.5"]);
    fails_with(&erase, &["--random-erase", "[0, 1]", "1.5"]);
    let mixup = train_with(&["--mixup-alpha=-0.2"]);
    fails_with(
        &mixup,
        &["--mixup-alpha", "positive Beta parameter", "-0.2"],
    );
    let cutmix = train_with(&["--cutmix-alpha", "NaN"]);
    fails_with(&cutmix, &["--cutmix-alpha", "NaN"]);
    let reps = train_with(&["--ra-reps", "4"]);
    fails_with(&reps, &["--ra-reps", "--ra-sampler", "not on"]);
    let no_reps = train_with(&["--ra-sampler", "--ra-reps", "0"]);
    fails_with(&no_reps, &["--ra-reps", "at least 1"]);
    let policy = train_with(&["--auto-augment", "augmax"]);
    fails_with(
        &policy,
        &[
            "--auto-augment",
            "'augmax'",
            "ta_wide",
            "ra",
            "imagenet",
            "augmix",
        ],
    );
    let severity = train_with(&["--augmix-severity", "2"]);
    fails_with(
        &severity,
        &["--augmix-severity", "--auto-augment", "not on"],
    );
    let strongest = train_with(&["--auto-augment", "augmix", "--augmix-severity", "11"]);
    fails_with(&strongest, &["--augmix-severity 11", "1 to 10"]);
    let none = train_with(&["--auto-augment", "augmix", "--augmix-severity", "0"]);
    fails_with(&none, &["--augmix-severity 0", "1 to 10"]);
    let gamma = train_with(&["--lr-gamma", "-1"]);
    fails_with(&gamma, &["--lr-gamma", "above 0", "-1"]);
    let unused = train_with(&["--lr-scheduler", "cosineannealinglr", "--lr-gamma", "0.5"]);
    fails_with(&unused, &["--lr-gamma", "cosine schedule does not use it"]);
    let period = train_with(&["--lr-step-size", "0"]);
    fails_with(&period, &["--lr-step-size", "at least 1"]);
    let both = train_with(&["--lr-step-size", "30", "--lr-milestone-epochs", "30,60"]);
    fails_with(&both, &["--lr-step-size", "give one"]);
    // the experiment command takes the same recipe, checked alike
    let args = [
        "experiment",
        "depth",
        "--lr-scheduler",
        "steplr",
        "--lr-milestones",
        "9",
    ];
    fails_with(&resnet(&args), &["--lr-step-size", "give one"]);
    // torchvision's --data-path is --data
    let path = resnet(&["train", "--data-path", "/no/such/imagenet"]);
    fails_with(&path, &["/no/such/imagenet", "no such directory"]);
    for norm in ["0", "-1", "NaN"] {
        let clip = train_with(&[&format!("--clip-grad-norm={norm}")]);
        fails_with(&clip, &["--clip-grad-norm", "above 0", norm]);
    }
    // --test-only evaluates a trained model, which needs saying
    let untrained = resnet(&["train", "--test-only", "--data", "/x"]);
    fails_with(&untrained, &["--test-only", "--resume DIR", "--pretrained"]);
    // torchvision's --opt names, and Nesterov momentum only with SGD
    let opt = train_with(&["--opt", "adam"]);
    fails_with(
        &opt,
        &["--opt", "'adam'", "sgd, sgd_nesterov, rmsprop, adamw"],
    );
    let nesterov = train_with(&["--opt", "RMSprop", "--nesterov"]);
    fails_with(&nesterov, &["--nesterov", "SGD's", "--opt is rmsprop"]);
    let magnitude = train_with(&["--ra-magnitude", "5"]);
    fails_with(&magnitude, &["--ra-magnitude", "--auto-augment", "not on"]);
    let bin = train_with(&["--auto-augment", "ra", "--ra-magnitude", "31"]);
    fails_with(&bin, &["--ra-magnitude 31", "0 to 30"]);
    let no_adapter = resnet(&["info", "--backend", "metal"]);
    fails_with(&no_adapter, &["no GPU adapter", "mesa-vulkan-drivers"]);
    // lavapipe is the one adapter of its kind here: index 0 only
    let args = [
        "bench",
        "--model",
        "resnet8",
        "--batch-size",
        "2",
        "--steps",
        "1",
    ];
    let bad_index = resnet(&[&args[..], &["--device-index", "1"]].concat());
    fails_with(&bad_index, &["--device-index 1", "numbered from 0"]);
}

/// `eval` reads the held-out images alone: the same figures from a folder without train/, and
/// from torchvision's CIFAR-10 root its test batch; a warning where the checkpoint's class
/// names are not the data's (outputs are scored by their order), none where they are, commas
/// in them included.
#[test]
fn eval_reads_the_held_out_images_alone() {
    let gpu = gpu();
    let dir = cifar::subset(2, 3);
    let t = tempfile::tempdir().unwrap();
    let ck = t.path().join("c0-c9.safetensors");
    save_model(&gpu, "resnet20", &ck, |_| {});
    let eval = |ck: &Path, data: &Path| {
        let out = resnet(&[
            "eval",
            "--checkpoint",
            ck.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--json",
        ]);
        let stderr = ok(&out);
        (String::from_utf8_lossy(&out.stdout).into_owned(), stderr)
    };
    let (json, stderr) = eval(&ck, dir.path());
    assert!(json.contains("\"images\": 30"), "{json}");
    let warning = "class 0 is 'c0' in the checkpoint but 'airplane' in the data";
    assert!(stderr.contains(warning), "{stderr}");
    let test_only = tempfile::tempdir().unwrap();
    let copy = |from: &Path, to: &Path| {
        std::fs::create_dir_all(to).unwrap();
        for f in std::fs::read_dir(from).unwrap() {
            let f = f.unwrap();
            std::fs::copy(f.path(), to.join(f.file_name())).unwrap();
        }
    };
    for class in std::fs::read_dir(dir.path().join("test")).unwrap() {
        let class = class.unwrap().path();
        copy(
            &class,
            &test_only
                .path()
                .join("test")
                .join(class.file_name().unwrap()),
        );
    }
    let (alone, stderr) = eval(&ck, test_only.path());
    assert_eq!(alone, json);
    assert!(stderr.contains(warning), "{stderr}");
    // torchvision's CIFAR-10 root: its 5 test images (tests/data/cifar-10-batches-py)
    let root = tempfile::tempdir().unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/cifar-10-batches-py");
    copy(&fixture, &root.path().join("cifar-10-batches-py"));
    for f in (1..=5).map(|k| format!("data_batch_{k}")) {
        std::fs::remove_file(root.path().join("cifar-10-batches-py").join(f)).unwrap();
    }
    let (pickled, stderr) = eval(&ck, root.path());
    assert!(pickled.contains("\"images\": 5"), "{pickled}");
    assert!(stderr.contains(warning), "{stderr}");
    // the checkpoint's names are the data's, one with a comma: no warning
    let held_out = test_only.path().join("test");
    std::fs::rename(held_out.join("airplane"), held_out.join("air,plane")).unwrap();
    let named = t.path().join("named.safetensors");
    save_model(&gpu, "resnet20", &named, |ck| {
        let mut classes: Vec<&str> = resnet::cifar10::CLASSES.to_vec();
        classes[0] = "air,plane";
        ck.metadata.insert("classes".into(), classes.join(","));
    });
    let (_, stderr) = eval(&named, test_only.path());
    assert!(!stderr.contains("in the checkpoint but"), "{stderr}");
}

#[test]
fn bad_checkpoints_name_the_tensor() {
    let gpu = gpu();
    let dir = cifar::subset(2, 3);
    let data = dir.path().to_str().unwrap();
    let t = tempfile::tempdir().unwrap();
    let p = |n: &str| t.path().join(n).to_str().unwrap().to_string();

    save_model(&gpu, "resnet20", Path::new(&p("ok.safetensors")), |_| {});
    let ok = resnet(&[
        "eval",
        "--checkpoint",
        &p("ok.safetensors"),
        "--data",
        data,
        "--json",
    ]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let json = String::from_utf8_lossy(&ok.stdout);
    assert!(
        json.contains("\"model\": \"resnet20\"") && json.contains("\"images\": 30"),
        "{json}"
    );

    save_model(&gpu, "resnet32", Path::new(&p("r32.safetensors")), |_| {});
    fails_with(
        &resnet(&[
            "eval",
            "--checkpoint",
            &p("r32.safetensors"),
            "--model",
            "resnet20",
            "--data",
            data,
        ]),
        &["unexpected tensor", "layer1.3"],
    );

    save_model(
        &gpu,
        "resnet20",
        Path::new(&p("missing.safetensors")),
        |ck| ck.tensors.retain(|t| t.name != "layer2.0.bn1.running_var"),
    );
    fails_with(
        &resnet(&[
            "eval",
            "--checkpoint",
            &p("missing.safetensors"),
            "--data",
            data,
        ]),
        &["layer2.0.bn1.running_var", "missing.safetensors"],
    );

    save_model(&gpu, "resnet20", Path::new(&p("shape.safetensors")), |ck| {
        let t = ck
            .tensors
            .iter_mut()
            .find(|t| t.name == "layer1.0.conv1.weight")
            .unwrap();
        t.shape = vec![16, 16, 9];
    });
    fails_with(
        &resnet(&[
            "eval",
            "--checkpoint",
            &p("shape.safetensors"),
            "--data",
            data,
        ]),
        &["layer1.0.conv1.weight", "[16, 16, 3, 3]"],
    );

    // no metadata (as saved from PyTorch): needs --model, then works
    save_model(&gpu, "resnet20", Path::new(&p("bare.safetensors")), |ck| {
        ck.metadata.clear()
    });
    fails_with(
        &resnet(&[
            "eval",
            "--checkpoint",
            &p("bare.safetensors"),
            "--data",
            data,
        ]),
        &["--model"],
    );
    let bare = resnet(&[
        "eval",
        "--checkpoint",
        &p("bare.safetensors"),
        "--model",
        "resnet20",
        "--data",
        data,
    ]);
    let stderr = String::from_utf8_lossy(&bare.stderr);
    assert!(bare.status.success(), "{stderr}");
    // no class names in it: nothing to warn about
    assert!(!stderr.contains("in the checkpoint but"), "{stderr}");

    std::fs::write(p("junk.safetensors"), b"not a checkpoint at all").unwrap();
    fails_with(
        &resnet(&[
            "eval",
            "--checkpoint",
            &p("junk.safetensors"),
            "--data",
            data,
        ]),
        &["junk.safetensors"],
    );

    // predict: a real image works, a text file is named in the error
    let img = std::fs::read_dir(dir.path().join("test/cat"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let pred = resnet(&[
        "predict",
        "--checkpoint",
        &p("ok.safetensors"),
        img.to_str().unwrap(),
    ]);
    assert!(
        pred.status.success(),
        "{}",
        String::from_utf8_lossy(&pred.stderr)
    );
    let line = String::from_utf8_lossy(&pred.stdout);
    assert_eq!(line.trim().split(", ").count(), 5, "top-5 expected: {line}");
    std::fs::write(p("notes.txt"), "hello").unwrap();
    fails_with(
        &resnet(&[
            "predict",
            "--checkpoint",
            &p("ok.safetensors"),
            &p("notes.txt"),
        ]),
        &["notes.txt"],
    );
}

#[test]
fn nan_loss_stops_and_keeps_the_last_good_checkpoint() {
    let dir = cifar::subset(7, 2);
    let data = dir.path().to_str().unwrap();
    let out = tempfile::tempdir().unwrap();
    let o = out.path().to_str().unwrap();
    let base = [
        "train",
        "--data",
        data,
        // 8 steps per epoch: the divergence starts inside the epoch, not at a read-back
        "--batch-size",
        "8",
        "--eval-batch-size",
        "20",
    ];
    let first = resnet(&[&base[..], &["--epochs", "1", "--out", o]].concat());
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let good = std::fs::read(out.path().join("last.safetensors")).unwrap();
    // epoch 2 with an absurd learning rate diverges. A resume keeps the run's options (a
    // different --lr given with --resume is an error), so the run's record is edited as if it
    // had been started with it; read back after every step, the host sees the first non-finite
    // loss itself
    let record = out.path().join("command.json");
    let mut options: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&record).unwrap()).unwrap();
    options["lr"] = serde_json::json!(["1e30"]);
    std::fs::write(&record, options.to_string()).unwrap();
    let diverge = ["train", "--epochs", "2", "--resume", o];
    let second = resnet(&[&diverge[..], &["--log-every", "1"]].concat());
    fails_with(&second, &["loss is", "iteration", "last.safetensors"]);
    let at = |out: &Output| {
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        let n = err
            .split("at iteration ")
            .nth(1)
            .and_then(|t| t.split(' ').next())
            .map(str::to_owned);
        (n, err)
    };
    let (step, err) = at(&second);
    assert!(step.is_some(), "{err}");
    // read back every 10 steps (the default), the GPU's record of the first bad batch names the
    // same step
    let third = resnet(&diverge);
    fails_with(&third, &["loss is", "iteration"]);
    assert_eq!(at(&third).0, step, "{}", at(&third).1);
    assert_eq!(
        std::fs::read(out.path().join("last.safetensors")).unwrap(),
        good,
        "the last good checkpoint changed"
    );
    let leftovers: Vec<_> = std::fs::read_dir(out.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");

    // diverging in the first epoch: no checkpoint exists, and the error says so
    let fresh = tempfile::tempdir().unwrap();
    let f = fresh.path().to_str().unwrap();
    let early = resnet(&[&base[..], &["--epochs", "1", "--lr", "1e30", "--out", f]].concat());
    fails_with(
        &early,
        &["loss is", "iteration", "no checkpoint was written yet"],
    );
    assert!(!fresh.path().join("last.safetensors").exists());
}

#[test]
fn summary_prints_torchinfo_totals() {
    let out = resnet(&["summary", "--model", "resnet18", "--input", "32,3,224,224"]);
    assert!(out.status.success());
    let s = String::from_utf8_lossy(&out.stdout);
    // torchinfo on torchvision's resnet18 at [32, 3, 224, 224]: 11,689,512 params, 58.05 G mult-adds
    assert!(
        s.contains("Total params: 11,689,512") && s.contains("Total mult-adds (G): 58.05"),
        "{s}"
    );
    assert!(
        s.contains("[32, 64, 112, 112]") && s.contains("[32, 512, 7, 7]"),
        "{s}"
    );
    // torchinfo's row labels, and the parameter rows (conv, BN, linear) add up to the total
    assert!(
        s.contains("├─Conv2d: 1-1") && s.contains("│    └─BasicBlock: 2-1"),
        "{s}"
    );
    let leaf_sum: u64 = s
        .lines()
        .filter(|l| {
            ["Conv2d:", "BatchNorm2d:", "Linear:"]
                .iter()
                .any(|t| l.contains(t))
        })
        .map(|l| {
            let last = l.split_whitespace().last().unwrap_or("");
            last.replace(',', "").parse::<u64>().unwrap_or(0)
        })
        .sum();
    assert_eq!(
        leaf_sum, 11_689_512,
        "rows of parameters do not sum to the total"
    );
    fails_with(&resnet(&["summary", "--input", "1,3,32"]), &["--input"]);
}

#[test]
fn info_lists_adapters_and_bench_reports_json() {
    let out = resnet(&["info"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "adapters found:",
        "driver:",
        "chosen:",
        "max_storage_buffer_binding_size",
        "features:",
        "cooperative matrices (tensor cores):",
    ] {
        assert!(s.contains(needle), "info lacks '{needle}': {s}");
    }
    let out = resnet(&[
        "bench",
        "--model",
        "resnet20",
        "--batch-size",
        "4",
        "--steps",
        "1",
        "--num-classes",
        "7",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["model"], "resnet20");
    assert_eq!(v["batch_size"], 4);
    assert!(v["train_images_per_sec"].as_f64().unwrap() > 0.0, "{v}");
    assert!(v["inference_images_per_sec"].as_f64().unwrap() > 0.0, "{v}");
    // resnet20 with 7 classes has 269,722 - 3 * 65 parameters, 4 bytes each for weights,
    // gradients and momentum, plus BatchNorm's running statistics (a few KiB)
    let params = 269_722 - 3 * 65;
    let mb = v["model_bytes"].as_u64().unwrap();
    assert!(mb >= 12 * params && mb < 12 * params + 64 * 1024, "{v}");
    if let Some(stages) = v["stages"].as_array().filter(|a| !a.is_empty()) {
        let names: Vec<&str> = stages.iter().filter_map(|s| s["stage"].as_str()).collect();
        for n in ["stem", "layer3.2", "layer1.0.backward", "optimizer"] {
            assert!(names.contains(&n), "no stage {n} in {names:?}");
        }
    }
    fails_with(&resnet(&["bench", "--model", "resnet21"]), &["resnet21"]);
}

/// A URL on 127.0.0.1 where nothing listens: every download from it fails at once.
fn dead_url() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("http://127.0.0.1:{port}/cifar-10-binary.tar.gz")
}

#[test]
fn train_without_data_or_network_uses_the_bundled_subset() {
    let cache = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let url = dead_url();
    let args = [
        "train",
        "--model",
        "resnet8",
        "--epochs",
        "1",
        "--subset",
        "160",
        "--val-split",
        "32",
        "--batch-size",
        "128",
        "--data-url",
        &url,
        "--out",
    ];
    let run = resnet_with_cache(
        &[&args[..], &[out.path().to_str().unwrap()]].concat(),
        cache.path(),
    );
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{err}");
    let warnings: Vec<&str> = err.lines().filter(|l| l.starts_with("warning: ")).collect();
    assert_eq!(warnings.len(), 1, "{err}");
    for needle in [url.as_str(), "bundled", "2,000 + 500", "--data DIR"] {
        assert!(warnings[0].contains(needle), "{needle}: {}", warnings[0]);
    }
    // the bundled subset's classes, in the checkpoint a loader reads
    let ck = checkpoint::load(&out.path().join("last.safetensors")).unwrap();
    assert_eq!(ck.metadata["classes"], resnet::cifar10::CLASSES.join(","));
    assert!(err.contains("128 train / 32 eval images"), "{err}");

    // with --data nothing is downloaded and nothing is said about it
    let data = cifar::subset(2, 1);
    let with_data = resnet_with_cache(
        &[
            "train",
            "--model",
            "resnet8",
            "--epochs",
            "1",
            "--batch-size",
            "10",
            "--data-url",
            &url,
            "--data",
            data.path().to_str().unwrap(),
            "--out",
            out.path().join("d").to_str().unwrap(),
        ],
        cache.path(),
    );
    let err = String::from_utf8_lossy(&with_data.stderr);
    assert!(with_data.status.success(), "{err}");
    assert!(!err.contains("warning"), "{err}");
    // torchvision's --test-only: the run's last checkpoint on its held-out images, as the run
    // itself evaluated it after its last epoch; nothing in the run's directory changes
    let run_dir = out.path().join("d");
    let before: Vec<_> = std::fs::read_dir(&run_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let metrics = std::fs::read_to_string(run_dir.join("metrics.csv")).unwrap();
    let last: Vec<&str> = metrics.lines().last().unwrap().split(',').collect();
    let number = |i: usize| last[i].parse::<f64>().unwrap();
    let (test_loss, test_acc, test_acc5) = (number(5), number(6), number(15));
    let test_only = resnet_with_cache(
        &[
            "train",
            "--resume",
            run_dir.to_str().unwrap(),
            "--test-only",
        ],
        cache.path(),
    );
    ok(&test_only);
    let said = String::from_utf8_lossy(&test_only.stdout);
    let want = format!(
        "resnet8: 10 test images, loss {test_loss:.4}, top-1 accuracy {:.2}%, top-5 {:.2}%",
        100.0 * test_acc,
        100.0 * test_acc5
    );
    assert!(said.contains(&want), "{said} (want {want})");
    let after: Vec<_> = std::fs::read_dir(&run_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(before, after);
    assert_eq!(
        std::fs::read_to_string(run_dir.join("metrics.csv")).unwrap(),
        metrics
    );
    // eval reports on the test set it was asked for: a failed download is an error there
    let ckpt = out.path().join("last.safetensors");
    let eval = resnet_with_cache(
        &[
            "eval",
            "--checkpoint",
            ckpt.to_str().unwrap(),
            "--data-url",
            &url,
        ],
        cache.path(),
    );
    fails_with(&eval, &[&url]);
}

/// Fails as `fails_with` says, and before any data was loaded: no download was tried (which
/// would fail here and fall back to the bundled subset with a warning).
fn fails_before_loading_data(out: &Output, needles: &[&str]) {
    fails_with(out, needles);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("warning"), "data was loaded first: {err}");
}

#[test]
fn mistakes_fail_at_once_before_any_data_is_loaded() {
    let cache = tempfile::tempdir().unwrap();
    let url = dead_url();
    let empty = tempfile::tempdir().unwrap();
    let dir = empty.path().to_str().unwrap();
    // no run to resume: said at once, not after (or instead of) a download
    let resume = resnet_with_cache(
        &["train", "--resume", dir, "--data-url", &url],
        cache.path(),
    );
    fails_before_loading_data(&resume, &["--resume", dir, "no run to resume"]);
    let zero_epochs = resnet_with_cache(
        &["train", "--epochs", "0", "--data-url", &url],
        cache.path(),
    );
    fails_before_loading_data(&zero_epochs, &["--epochs", "at least 1"]);
    let ckpt = empty.path().join("none.safetensors");
    let eval = resnet_with_cache(
        &[
            "eval",
            "--checkpoint",
            ckpt.to_str().unwrap(),
            "--batch-size",
            "0",
            "--data-url",
            &url,
        ],
        cache.path(),
    );
    fails_before_loading_data(&eval, &["--batch-size", "at least 1"]);
    let bad_md5 = resnet_with_cache(
        &["train", "--data-md5", "xyz", "--data-url", &url],
        cache.path(),
    );
    fails_before_loading_data(&bad_md5, &["--data-md5", "xyz", "MD5"]);
    let contradiction = resnet_with_cache(
        &["train", "--sync-bn", "--bn-eval", "--data-url", &url],
        cache.path(),
    );
    fails_before_loading_data(&contradiction, &["--sync-bn", "--bn-eval"]);
    // torchvision's own flags: what does their job here, in the one line
    let v2 = resnet_with_cache(&["train", "--use-v2", "--data-url", &url], cache.path());
    fails_before_loading_data(&v2, &["--use-v2", "torchvision's script", "Pillow's"]);
    let pil = resnet_with_cache(
        &["train", "--backend", "pil", "--data-url", &url],
        cache.path(),
    );
    fails_before_loading_data(&pil, &["--backend pil", "vulkan, metal, dx12 or gl"]);
    let start = resnet_with_cache(
        &["train", "--start-epoch=3", "--data-url", &url],
        cache.path(),
    );
    fails_before_loading_data(&start, &["--start-epoch", "--resume DIR"]);
    let device = resnet_with_cache(
        &["train", "--device", "cuda", "--data-url", &url],
        cache.path(),
    );
    fails_before_loading_data(&device, &["--device", "--device-index"]);
}

/// The bug a new user met: a resnet8 run on `--data D --subset ...` resumed with `--resume DIR`
/// alone tried to download CIFAR-10 and then stopped on "holds a resnet8, not a resnet20". The
/// run directory now records the run's options: `--resume DIR` continues it, `--epochs`
/// extends it, and an option that contradicts the run is one error naming both values.
#[test]
fn resume_alone_continues_any_run_and_contradictions_are_named() {
    let cache = tempfile::tempdir().unwrap();
    let data = cifar::subset(12, 4);
    let runs = tempfile::tempdir().unwrap();
    let out = runs.path().join("r8");
    let o = out.to_str().unwrap();
    let first = resnet_with_cache(
        &[
            "train",
            "--model",
            "resnet8",
            "--data",
            data.path().to_str().unwrap(),
            "--subset",
            "64",
            "--batch-size",
            "32",
            "--epochs",
            "1",
            "--seed",
            "4",
            "--eval-batch-size",
            "40",
            "--out",
            o,
        ],
        cache.path(),
    );
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    // no download is tried (it would fail here and warn): the run's --data is used
    let resumed = resnet_with_cache(&["train", "--resume", o, "--epochs", "2"], cache.path());
    let log = String::from_utf8_lossy(&resumed.stderr);
    assert!(resumed.status.success(), "{log}");
    assert!(
        log.contains("resnet8") && log.contains("resuming after epoch 1"),
        "{log}"
    );
    assert!(!log.contains("warning"), "{log}");
    let ck = checkpoint::load(&out.join("last.safetensors")).unwrap();
    assert_eq!(
        ck.metadata.get("model").map(String::as_str),
        Some("resnet8")
    );
    assert_eq!(ck.metadata.get("epoch").map(String::as_str), Some("2"));
    // 64 images at batch 32: 2 steps an epoch
    assert_eq!(ck.metadata.get("iteration").map(String::as_str), Some("4"));
    let other = resnet_with_cache(
        &[
            "train",
            "--resume",
            o,
            "--epochs",
            "3",
            "--batch-size",
            "64",
        ],
        cache.path(),
    );
    fails_before_loading_data(&other, &["--batch-size 64 differs from the run's 32"]);
    let same = resnet_with_cache(
        &[
            "train",
            "--resume",
            o,
            "--epochs",
            "3",
            "--model",
            "resnet8",
            "--seed",
            "4",
            // the run's default 0.0001, spelled another way
            "--weight-decay",
            "1e-4",
        ],
        cache.path(),
    );
    assert!(
        same.status.success(),
        "{}",
        String::from_utf8_lossy(&same.stderr)
    );
    let defaulted = resnet_with_cache(
        &["train", "--resume", o, "--epochs", "3", "--lr", "0.2"],
        cache.path(),
    );
    fails_before_loading_data(&defaulted, &["--lr 0.2 differs from the run's 0.1"]);
}

/// --precision: an unknown value lists the choices; --amp is mixed and contradicts fp32; a forced
/// family is taken in the run's precision, or named with the ones that fit where it has no twin;
/// an adapter without f16 shaders (Mesa's GL driver here) is named, with the way out.
#[test]
fn precision_mistakes_are_one_line_errors() {
    let out = resnet(&["bench", "--precision", "bf16"]);
    fails_with(&out, &["--precision", "'bf16'", "fp32 or mixed"]);
    let out = resnet(&["bench", "--amp", "--precision", "fp32"]);
    fails_with(&out, &["--amp", "--precision fp32"]);
    // a forced family is taken in the run's precision where it has a twin, else named
    let out = resnet(&["bench", "--kernels", "tiled", "--precision", "mixed"]);
    fails_with(
        &out,
        &[
            "tiled (--kernels",
            "fp32 family",
            "--precision mixed",
            "gemm64x64-f16",
        ],
    );
    // an f16 family named in an fp32 run is a mistake, not its fp32 twin
    let out = resnet(&["bench", "--kernels", "gemm64x64-f16"]);
    fails_with(
        &out,
        &[
            "gemm64x64-f16",
            "mixed family",
            "--precision fp32 takes",
            "gemm64x64",
        ],
    );
    // the tensor-core family forced on an adapter without cooperative matrices
    let info = resnet(&["info", "--amp"]);
    let info_text = String::from_utf8_lossy(&info.stdout);
    if info_text.contains("no coop64x64-f16") {
        let args = [
            "bench",
            "--batch-size",
            "2",
            "--steps",
            "1",
            "--kernels",
            "coop-f16",
        ];
        let out = resnet(&[&args[..], &["--amp"]].concat());
        fails_with(
            &out,
            &[
                "coop64x64-f16 (--kernels",
                "cooperative matrices",
                "resnet info",
            ],
        );
        // ... and emulated in scalar code where asked (what the tests run it as)
        let with = |value: &str| {
            std::process::Command::new(env!("CARGO_BIN_EXE_resnet"))
                .args(["info", "--amp"])
                .env("XDG_RUNTIME_DIR", std::env::temp_dir())
                .env("RESNET_COOPERATIVE", value)
                .output()
                .unwrap()
        };
        let emulated = String::from_utf8_lossy(&with("emulate").stdout).into_owned();
        assert!(
            emulated.contains("coop64x64-f16 emulated in scalar code"),
            "{emulated}"
        );
        fails_with(&with("sometimes"), &["RESNET_COOPERATIVE", "'sometimes'"]);
    } else {
        assert!(info_text.contains("coop64x64-f16 on"), "{info_text}");
    }
    let info = resnet(&["info", "--kernels", "gemm", "--amp"]);
    assert!(
        String::from_utf8_lossy(&info.stdout).contains("gemm64x64-f16"),
        "{}",
        String::from_utf8_lossy(&info.stdout)
    );
    let gl = resnet(&["info", "--backend", "gl"]);
    if gl.status.success() && String::from_utf8_lossy(&gl.stdout).contains("shader f16 no") {
        let out = resnet(&["bench", "--backend", "gl", "--precision", "mixed"]);
        fails_with(
            &out,
            &[
                "--precision mixed",
                "shader-f16",
                "(Gl)",
                "--precision fp32",
            ],
        );
    } else {
        println!("no GL adapter without f16 shaders here: that case is not exercised");
    }
}

/// A ResNet-20 that PyTorch trained and saved itself (`torch.save(model.state_dict())`, see
/// tests/data/torch/make.py) evaluates here, from the .pth file as it is, to the loss and top-1
/// accuracy PyTorch computed for it on the same 500 bundled test images (resnet20.json there);
/// from its URL too, downloaded once into the cache.
#[test]
fn a_pytorch_pth_file_evaluates_to_pytorchs_loss_and_accuracy() {
    let torch = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/torch");
    let expected: serde_json::Value =
        serde_json::from_slice(&std::fs::read(torch.join("resnet20.json")).unwrap()).unwrap();
    let dir = cifar::subset(1, 50);
    let file = torch.join("resnet20.pth");
    let cache = tempfile::tempdir().unwrap();
    let eval_in = |checkpoint: &str, precision: &str| {
        let out = resnet_with_cache(
            &[
                "eval",
                "--checkpoint",
                checkpoint,
                "--model",
                "resnet20",
                "--data",
                dir.path().to_str().unwrap(),
                "--precision",
                precision,
                "--json",
            ],
            cache.path(),
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let eval = |checkpoint: &str| eval_in(checkpoint, "fp32");
    let ours = eval(file.to_str().unwrap());
    // torchvision's `train.py --test-only --weights`: the same evaluation from train's flags
    let test_only = resnet_with_cache(
        &[
            "train",
            "--test-only",
            "--pretrained",
            file.to_str().unwrap(),
            "--model",
            "resnet20",
            "--data",
            dir.path().to_str().unwrap(),
        ],
        cache.path(),
    );
    ok(&test_only);
    let want = format!(
        "resnet20: 500 test images, loss {:.4}, top-1 accuracy {:.2}%",
        ours["loss"].as_f64().unwrap(),
        100.0 * ours["accuracy"].as_f64().unwrap()
    );
    let said = String::from_utf8_lossy(&test_only.stdout);
    assert!(said.contains(&want), "{said} (want {want})");
    let (url, requests) = common::serve::serve("/resnet20.pth", std::fs::read(&file).unwrap(), 0);
    for _ in 0..2 {
        let by_url = eval(&url);
        assert_eq!(
            (&by_url["loss"], &by_url["accuracy"]),
            (&ours["loss"], &ours["accuracy"])
        );
    }
    assert_eq!(requests.lock().unwrap().len(), 1, "downloaded once");
    let number = |v: &serde_json::Value, key: &str| v[key].as_f64().unwrap();
    assert_eq!(ours["images"], expected["images"], "{ours}");
    let (loss, want) = (number(&ours, "loss"), number(&expected, "loss"));
    assert!(
        (loss - want).abs() <= 1e-4 * want,
        "loss {loss}, PyTorch's {want}"
    );
    // a logit pair within float rounding of a tie may order either way: one image at most
    let (acc, want) = (number(&ours, "accuracy"), number(&expected, "accuracy"));
    assert!(
        (acc - want).abs() <= 1.5 / 500.0,
        "accuracy {acc}, PyTorch's {want}"
    );
    // top-5 as torchvision's script counts it (output.topk(5)): 92.0% there
    let (acc5, want) = (number(&ours, "accuracy5"), number(&expected, "accuracy5"));
    assert!(
        (acc5 - want).abs() <= 1.5 / 500.0,
        "top-5 accuracy {acc5}, PyTorch's {want}"
    );
    // mixed precision (f16 activations and weights, f32 sums) within 0.3 points of fp32
    if f16_shaders("a_pytorch_pth_file_evaluates_to_pytorchs_loss_and_accuracy") {
        let mixed = eval_in(file.to_str().unwrap(), "mixed");
        let (acc16, loss16) = (number(&mixed, "accuracy"), number(&mixed, "loss"));
        assert!((acc16 - acc).abs() <= 0.003, "mixed {acc16}, fp32 {acc}");
        assert!(
            (loss16 - loss).abs() <= 1e-3 * loss,
            "mixed {loss16}, fp32 {loss}"
        );
    }
}

/// torchvision's weights by name: found where torchvision keeps them (torch.hub's cache under
/// `TORCH_HOME`) without a download, their 1000 outputs named as ImageNet's categories and a
/// photo of any size prepared as torchvision evaluates; a file of that name in the working
/// directory is a file; a name without `--model` is one error asking for it.
#[test]
fn torchvision_weights_by_name_come_from_torch_hubs_cache() {
    let gpu = gpu();
    let m = ModelState::new(&gpu, &ModelSpec::from_name("resnet18", 1000).unwrap(), 5).unwrap();
    let mut ck = Checkpoint::new();
    ck.tensors = pollster::block_on(m.state_dict(&gpu)).unwrap();
    let torch_home = tempfile::tempdir().unwrap();
    let hub = torch_home.path().join("hub/checkpoints");
    std::fs::create_dir_all(&hub).unwrap();
    checkpoint::save(&hub.join("resnet18-f37072fd.pth"), &ck).unwrap();
    let work = tempfile::tempdir().unwrap();
    let photo = work.path().join("photo.png");
    image::RgbImage::from_fn(300, 200, |x, y| image::Rgb([x as u8, y as u8, 128]))
        .save(&photo)
        .unwrap();
    let cache = tempfile::tempdir().unwrap();
    let predict = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_resnet"))
            .args(["predict", "--json"])
            .args(args)
            .arg(&photo)
            .current_dir(work.path())
            .env("TORCH_HOME", torch_home.path())
            .env("RESNET_CACHE", cache.path())
            .env("RESNET_KERNELS", "register")
            .env("XDG_RUNTIME_DIR", std::env::temp_dir())
            .output()
            .unwrap()
    };
    let out = predict(&["--checkpoint", "DEFAULT", "--model", "resnet18"]);
    let log = common::cli::ok(&out);
    assert!(log.contains("torch.hub's copy"), "{log}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let top = json["top"].as_array().unwrap();
    assert_eq!(top.len(), 5, "{json}");
    let imagenet = Checkpoint::new().class_names(1000);
    for t in top {
        let class = t["class"].as_str().unwrap().to_string();
        assert!(
            imagenet.contains(&class),
            "{class} is not an ImageNet category"
        );
    }
    fails_with(
        &predict(&["--checkpoint", "DEFAULT"]),
        &["DEFAULT", "--model"],
    );
    // a file named like the weights is that file (here not a checkpoint at all)
    std::fs::write(work.path().join("DEFAULT"), b"not weights").unwrap();
    fails_with(
        &predict(&["--checkpoint", "DEFAULT", "--model", "resnet18"]),
        &["DEFAULT", "safetensors"],
    );
}

/// CIFAR-100 from torchvision's root (tests/data/cifar-100-python): the model gets a 100-way
/// classifier named by the fine labels, and `eval` reads it back on the test batch alone.
#[test]
fn cifar100_trains_a_100_way_classifier() {
    let root = tempfile::tempdir().unwrap();
    let pickles = root.path().join("cifar-100-python");
    std::fs::create_dir(&pickles).unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/cifar-100-python");
    for f in ["train", "test", "meta"] {
        std::fs::copy(fixture.join(f), pickles.join(f)).unwrap();
    }
    let run = root.path().join("run");
    let data = root.path().to_str().unwrap();
    let log = ok(&resnet(&[
        "train",
        "--data",
        data,
        "--epochs",
        "1",
        "--batch-size",
        "5",
        "--out",
        run.to_str().unwrap(),
    ]));
    assert!(log.contains("10 train / 5 eval images"), "{log}");
    let ck = checkpoint::load(&run.join("last.safetensors")).unwrap();
    assert_eq!(ck.num_classes(), Some(100));
    let classes: Vec<String> = (0..100).map(|k| format!("class_{k:02}")).collect();
    assert_eq!(ck.metadata.get("classes"), Some(&classes.join(",")));
    std::fs::remove_file(pickles.join("train")).unwrap();
    let ck = run.join("last.safetensors");
    let eval = resnet(&["eval", "--checkpoint", ck.to_str().unwrap(), "--data", data]);
    ok(&eval);
    let line = String::from_utf8_lossy(&eval.stdout);
    assert!(line.contains("5 test images"), "{line}");
}
