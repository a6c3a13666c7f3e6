//! Kernel tuning remembered on disk: a device that tunes writes every choice it measured to the
//! cache file of its adapter; the next device on the same adapter and cache starts with all of
//! them and times nothing; a corrupt file, a file of another kernel set and a file of another
//! adapter are ignored (and replaced), never trusted; `resnet tune` fills the cache and says so.

mod common;
use resnet::cifar10::NORMALIZE;
use resnet::gpu::{Gpu, GpuOptions, TuningCache};
use resnet::model::{ModelSpec, ModelState};
use resnet::ops::conv2d::{KernelFamily, KERNEL_SET_VERSION};
use resnet::ops::sgd::SgdConfig;
use resnet::plan::{Plan, PlanConfig};
use resnet::preprocess::Preprocess;
use std::path::Path;
use std::process::Command;

fn tuned(cache: &Path) -> Gpu {
    Gpu::new_blocking(&GpuOptions {
        tune: Some(true),
        tuning_cache: Some(cache.to_path_buf()),
        ..Default::default()
    })
    .unwrap()
}

/// A resnet8 training plan at batch 2, 16x16: what makes the device choose (17 conv choices).
fn plan_on(gpu: &Gpu) -> Plan {
    let spec = ModelSpec::from_name("resnet8", 10).unwrap();
    let m = ModelState::new(gpu, &spec, 0).unwrap();
    let cfg = PlanConfig::train(
        2,
        (16, 16),
        SgdConfig::he2016(),
        Preprocess::pad_crop_flip(NORMALIZE),
    );
    Plan::new(gpu, &m, cfg).unwrap()
}

/// (op, shape, family) of every choice.
fn chosen(gpu: &Gpu) -> Vec<(String, Vec<usize>, &'static str)> {
    gpu.choices()
        .into_iter()
        .map(|c| (c.op, c.shape, c.family))
        .collect()
}

#[test]
fn a_second_device_starts_with_the_first_ones_choices() {
    let dir = tempfile::tempdir().unwrap();
    let first = tuned(dir.path());
    let first_plan = plan_on(&first);
    let measured = first.choices_measured();
    // forward, backward to the input (all but the stem) and to the weights of each of 6 shapes
    assert_eq!(measured, 17, "{:?}", chosen(&first));
    let file = first.tuning_cache().unwrap().path.clone();
    assert!(file.is_file(), "{} not written", file.display());
    for c in first.choices() {
        assert_eq!(
            c.ms.len(),
            fp32_families(),
            "every family timed (the first in full): {c:?}"
        );
        let fastest = c.ms.iter().min_by(|a, b| a.1.total_cmp(&b.1)).unwrap().0;
        assert_eq!(c.family, fastest, "{c:?}");
    }

    let second = tuned(dir.path());
    assert_eq!(chosen(&second), chosen(&first), "loaded before any plan");
    let second_plan = plan_on(&second);
    // the race's losing kernels and their scratch are freed: a plan built while tuning holds
    // what the same plan built from the cache holds (it once counted 4x as much)
    assert_eq!(first_plan.bytes, second_plan.bytes);
    assert_eq!(
        second.choices_measured(),
        0,
        "the second device timed kernels again"
    );
    assert_eq!(chosen(&second), chosen(&first));

    // without tuning nothing is loaded or written
    let untuned = Gpu::new_blocking(&GpuOptions {
        tune: Some(false),
        tuning_cache: Some(dir.path().to_path_buf()),
        ..Default::default()
    })
    .unwrap();
    assert!(untuned.choices().is_empty() && untuned.tuning_cache().is_none());
}

/// The device's count of live bytes against the sizes of the tensors alive: views add nothing,
/// a buffer counts while a kernel binds it, and stops counting when the last holder is dropped.
#[test]
fn bytes_allocated_counts_what_is_alive() {
    let gpu = Gpu::new_blocking(&GpuOptions::default()).unwrap();
    let before = gpu.bytes_allocated();
    let a = gpu.zeros(&[1000]).unwrap();
    let b = gpu.upload(&[1.0f32; 24], &[2, 3, 4]).unwrap();
    let view = a.view(0, &[10]).unwrap();
    assert_eq!(gpu.bytes_allocated() - before, 4000 + 96);
    drop(a);
    assert_eq!(
        gpu.bytes_allocated() - before,
        4000 + 96,
        "the view keeps a"
    );
    drop(view);
    assert_eq!(gpu.bytes_allocated() - before, 96);
    let (x, y) = (
        gpu.zeros(&[2, 3, 4]).unwrap(),
        gpu.zeros(&[2, 3, 4]).unwrap(),
    );
    let relu = resnet::ops::elementwise::relu_forward(&gpu, &x, &y).unwrap();
    drop((x, y, b));
    assert_eq!(
        gpu.bytes_allocated() - before,
        192,
        "the kernel binds x and y"
    );
    drop(relu);
    assert_eq!(gpu.bytes_allocated(), before);
}

#[test]
fn untrustworthy_cache_files_are_ignored_and_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let gpu = tuned(dir.path());
    plan_on(&gpu);
    let cache = TuningCache::new(dir.path(), &gpu.info);
    let good = std::fs::read_to_string(&cache.path).unwrap();
    assert_eq!(cache.load().0.len(), 17);
    assert!(cache.load().1.is_none());
    let other_set = good.replace(
        &format!("\"kernel_set\": {KERNEL_SET_VERSION}"),
        &format!("\"kernel_set\": {}", KERNEL_SET_VERSION + 1),
    );
    let other_adapter = good.replace(
        &format!("\"adapter\": {:?}", gpu.info.name),
        "\"adapter\": \"elsewhere\"",
    );
    for (bad, why) in [
        ("{ not json".to_string(), "not valid JSON"),
        (good[..good.len() / 2].to_string(), "not valid JSON"),
        (other_set, "kernel set"),
        (other_adapter, "another adapter"),
        (
            good.replacen("\"family\":\"", "\"family\":\"unknown-", 1),
            "does not parse",
        ),
    ] {
        std::fs::write(&cache.path, &bad).unwrap();
        let (choices, warning) = cache.load();
        assert!(choices.is_empty(), "{why}: trusted");
        let warning = warning.unwrap_or_default();
        assert!(
            warning.contains(why) && warning.contains(&cache.path.display().to_string()),
            "{why}: {warning}"
        );
        // a device on that file tunes again and leaves a good file behind
        let again = tuned(dir.path());
        assert!(again.choices().is_empty(), "{why}");
        plan_on(&again);
        assert_eq!(again.choices_measured(), 17, "{why}");
        assert_eq!(cache.load().0.len(), 17, "{why}: not replaced");
    }
}

fn resnet(args: &[&str], cache: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_resnet"))
        .args(args)
        .env("XDG_RUNTIME_DIR", std::env::temp_dir())
        .env("RESNET_CACHE", cache)
        .env_remove("RESNET_KERNELS")
        .env_remove("RESNET_COOPERATIVE")
        .output()
        .unwrap()
}

#[test]
fn resnet_tune_fills_the_cache_that_later_commands_use() {
    let cache = tempfile::tempdir().unwrap();
    let args = [
        "tune",
        "--model",
        "resnet8",
        "--batch-size",
        "2",
        "--eval-batch-size",
        "3",
    ];
    let first = resnet(&args, cache.path());
    let out = String::from_utf8_lossy(&first.stdout);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    // 17 training choices and the forward of 6 shapes at the evaluation batch
    assert!(out.contains("23 choices, 23 timed now"), "{out}");
    // a row per (op, shape) with the milliseconds of every family (the first tuning times each
    // at least once)
    let timed_row = |l: &&str| {
        let numbers = l
            .split_whitespace()
            .filter(|w| w.parse::<f64>().is_ok())
            .count();
        l.starts_with("conv2d backward (weight)") && numbers == fp32_families()
    };
    assert!(out.lines().any(|l| timed_row(&l)), "{out}");
    // the first run says on stderr that it times kernels; the runs that read the cache do not
    let timing = "timing the convolution kernel families at each new shape";
    let err = String::from_utf8_lossy(&first.stderr);
    assert_eq!(err.matches(timing).count(), 1, "{err}");
    let second = resnet(&args, cache.path());
    let out = String::from_utf8_lossy(&second.stdout);
    assert!(out.contains("23 choices, 0 timed now"), "{out}");
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(!err.contains(timing), "{err}");
    // bench at the same batch takes every training and inference choice from the cache
    let bench = [
        "bench",
        "--model",
        "resnet8",
        "--batch-size",
        "2",
        "--steps",
        "1",
    ];
    let out = resnet(&bench, cache.path());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("all from the tuning cache"), "{text}");
    // a corrupt cache: a warning, then tuning, then success
    let files: Vec<_> = std::fs::read_dir(cache.path().join("kernels"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    std::fs::write(&files[0], "garbage").unwrap();
    let out = resnet(&bench, cache.path());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("warning: kernel choices") && err.contains("timed again"),
        "{err}"
    );
    assert!(err.contains(timing), "{err}");
    // forcing a family leaves nothing to tune
    let forced = resnet(&["tune", "--kernels", "register"], cache.path());
    assert!(!forced.status.success());
    assert!(String::from_utf8_lossy(&forced.stderr).contains("--kernels"));
}

/// `resnet tune --amp` races the f16 families alone (each row times every one the adapter
/// offers, no fp32 family), and `bench --amp` then finds every choice in the cache while an fp32
/// bench at the same batch finds none of its own there.
#[test]
fn resnet_tune_with_amp_races_the_f16_families() {
    if !common::f16_shaders("resnet_tune_with_amp_races_the_f16_families") {
        return;
    }
    let cache = tempfile::tempdir().unwrap();
    let small = ["--model", "resnet8", "--batch-size", "2"];
    let tune = resnet(
        &[&["tune", "--amp", "--eval-batch-size", "3"], &small[..]].concat(),
        cache.path(),
    );
    let out = String::from_utf8_lossy(&tune.stdout);
    assert!(
        tune.status.success(),
        "{}",
        String::from_utf8_lossy(&tune.stderr)
    );
    assert!(out.contains("23 choices, 23 timed now"), "{out}");
    // the families a mixed device offers (the tensor cores' where they fit)
    let gpu = Gpu::new_blocking(&GpuOptions {
        precision: resnet::gpu::Precision::Mixed,
        ..common::untuned()
    })
    .unwrap();
    let offered = KernelFamily::offered(resnet::gpu::Precision::Mixed, gpu.features);
    let header = out.lines().find(|l| l.starts_with("op ")).expect("a table");
    for f in &offered {
        assert!(header.contains(f.name()), "{} missing: {header}", f.name());
    }
    assert!(
        KernelFamily::of_precision(resnet::gpu::Precision::Fp32)
            .all(|f| !header.split_whitespace().any(|w| w == f.name())),
        "an fp32 family raced: {header}"
    );
    let timed = |l: &&str| {
        let numbers = l.split_whitespace().filter(|w| w.parse::<f64>().is_ok());
        l.starts_with("conv2d forward") && numbers.count() == offered.len()
    };
    assert!(out.lines().any(|l| timed(&l)), "{out}");

    let bench = |precision: &[&str]| {
        let args = [&["bench", "--steps", "1"], precision, &small[..]].concat();
        let out = resnet(&args, cache.path());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{precision:?}: {err}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let mixed = bench(&["--amp"]);
    assert!(mixed.contains("all from the tuning cache"), "{mixed}");
    assert!(mixed.contains("-f16 for"), "{mixed}");
    // fp32 finds none of its own there: it times all 17 training choices
    let fp32 = bench(&[]);
    assert!(fp32.contains("(17 timed now)"), "{fp32}");
}

/// torchvision's `--use-deterministic-algorithms`: nothing is timed or read from the tuning
/// cache (the adapter type's family, whatever timings chose elsewhere): a run with it
/// reproduces one forcing that family, to the bit; `resnet tune` refuses it.
#[test]
fn deterministic_algorithms_time_nothing_and_take_the_adapters_family() {
    let cache = tempfile::tempdir().unwrap();
    // the family by adapter type, as the library picks it untuned
    let untuned = GpuOptions {
        tune: Some(false),
        ..GpuOptions::default()
    };
    let family = KernelFamily::of(&Gpu::new_blocking(&untuned).unwrap()).name();
    let data = common::cifar::subset(8, 2);
    let run = |out: &Path, extra: &[&str]| {
        let mut args = vec![
            "train",
            "--model",
            "resnet8",
            "--data",
            data.path().to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--epochs",
            "1",
            "--batch-size",
            "16",
            "--lr",
            "0.05",
        ];
        args.extend_from_slice(extra);
        let o = resnet(&args, cache.path());
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(o.status.success(), "{err}");
        (std::fs::read(out.join("last.safetensors")).unwrap(), err)
    };
    let runs = tempfile::tempdir().unwrap();
    let (deterministic, err) = run(&runs.path().join("a"), &["--use-deterministic-algorithms"]);
    assert!(
        !err.contains("timing the convolution kernel families"),
        "{err}"
    );
    assert!(
        !cache.path().join("kernels").exists(),
        "a tuning cache was written"
    );
    let (forced, _) = run(&runs.path().join("b"), &["--kernels", family]);
    assert!(deterministic == forced, "{family}: the runs differ");
    let refused = resnet(&["tune", "--use-deterministic-algorithms"], cache.path());
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("--use-deterministic-algorithms"), "{err}");
}

/// The browser's way: plans are built with the adapter's family at once, the families are timed
/// afterwards without blocking, and the choices travel as text to the next page load.
#[test]
fn deferred_tuning_measures_what_plans_built_and_travels_as_text() {
    let deferred = || {
        Gpu::new_blocking(&GpuOptions {
            tune: Some(true),
            defer_tuning: true,
            ..Default::default()
        })
        .unwrap()
    };
    let gpu = deferred();
    plan_on(&gpu);
    assert!(gpu.choices().is_empty(), "nothing timed while building");
    let measured = pollster::block_on(resnet::ops::conv2d::tune_pending(&gpu)).unwrap();
    assert_eq!(measured, 17);
    assert_eq!(gpu.choices().len(), 17);
    for c in gpu.choices() {
        assert_eq!(c.ms.len(), fp32_families(), "{c:?}");
        let fastest = c.ms.iter().min_by(|a, b| a.1.total_cmp(&b.1)).unwrap().0;
        assert_eq!(c.family, fastest, "{c:?}");
    }
    plan_on(&gpu);
    let again = pollster::block_on(resnet::ops::conv2d::tune_pending(&gpu)).unwrap();
    assert_eq!(again, 0, "a plan built after tuning uses the choices");

    let text = gpu.choices_json();
    let next = deferred();
    assert_eq!(next.load_choices_json(&text), Ok(17));
    assert_eq!(chosen(&next), chosen(&gpu));
    plan_on(&next);
    assert_eq!(
        pollster::block_on(resnet::ops::conv2d::tune_pending(&next)).unwrap(),
        0
    );
    let foreign = text.replace(&format!("{:?}", gpu.info.name), "\"another GPU\"");
    let err = deferred().load_choices_json(&foreign).unwrap_err();
    assert!(err.contains("another adapter"), "{err}");
}

/// A family that cannot be built at a shape (here the tiled kernels' grid would exceed
/// max_compute_workgroups_per_dimension) is left out of that shape's race, not an error: the op
/// runs with the fastest of the others.
#[test]
fn a_family_over_the_device_limits_drops_out_of_the_race() {
    use resnet::ops::conv2d::{self, Conv2dShape};
    // a device of 256 workgroups a dimension meets at 130 x 130 pixels what one of 65,535 meets
    // at 2049 x 2049: more tiles of 64 pixels for the tiled backward to the input than one grid
    // dimension holds (the other families lay their workgroups out over two)
    let small_grid = |kernel_family| GpuOptions {
        kernel_family,
        max_workgroups_per_dimension: Some(256),
        ..Default::default()
    };
    let gpu = Gpu::new_blocking(&GpuOptions {
        tune: Some(true),
        ..small_grid(None)
    })
    .unwrap();
    assert_eq!(gpu.limits.max_compute_workgroups_per_dimension, 256);
    let sh = Conv2dShape::new(1, 1, 130, 130, 1, 3, 1, 1);
    let forced = Gpu::new_blocking(&small_grid(Some(KernelFamily::Tiled.name()))).unwrap();
    let buffers = |g: &Gpu| {
        (
            g.zeros(&sh.y_shape()).unwrap(),
            g.zeros(&sh.w_shape()).unwrap(),
            g.zeros(&sh.x_shape()).unwrap(),
        )
    };
    let (dy, w, dx) = buffers(&forced);
    assert!(
        conv2d::backward_input(&forced, &sh, &dy, &w, &dx).is_err(),
        "tiled fits after all"
    );
    let (dy, w, dx) = buffers(&gpu);
    conv2d::backward_input(&gpu, &sh, &dy, &w, &dx).unwrap();
    let c = &gpu.choices()[0];
    let family = KernelFamily::from_name(c.family).unwrap();
    assert!(family.register_block().is_some(), "{c:?}");
    assert!(
        c.ms.iter().all(|(f, _)| *f != KernelFamily::Tiled.name()),
        "{c:?}"
    );
    assert_eq!(c.ms.len(), fp32_families() - 1, "{c:?}");
}

/// How many families an fp32 race times.
fn fp32_families() -> usize {
    KernelFamily::of_precision(resnet::gpu::Precision::Fp32).count()
}

/// The two precisions keep their choices apart in one cache: a mixed race times only the f16
/// families and records under the shape's key with 16 appended; an fp32 device then finds no
/// choice for its own key (it races the fp32 families), and each later device of either
/// precision takes its own precision's choice from the file.
#[test]
fn choices_are_kept_per_precision() {
    if !common::f16_shaders("choices_are_kept_per_precision") {
        return;
    }
    use resnet::gpu::Precision;
    use resnet::ops::conv2d::{self, Conv2dShape};
    let dir = tempfile::tempdir().unwrap();
    let sh = Conv2dShape::new(2, 8, 8, 8, 8, 3, 1, 1);
    let device = |precision| {
        Gpu::new_blocking(&GpuOptions {
            tune: Some(true),
            tuning_cache: Some(dir.path().to_path_buf()),
            precision,
            ..Default::default()
        })
        .unwrap()
    };
    let forward = |g: &Gpu| {
        let (x, w, y) = (
            g.zeros(&sh.x_shape()).unwrap(),
            g.zeros(&sh.w_shape()).unwrap(),
            g.zeros(&sh.y_shape()).unwrap(),
        );
        conv2d::forward(g, &sh, &x, &w, None, &y).unwrap();
    };
    let mixed = device(Precision::Mixed);
    forward(&mixed);
    let c = &mixed.choices()[0];
    assert_eq!(c.shape, [sh.key(), vec![16]].concat(), "{c:?}");
    let f16 = |name: &str| KernelFamily::from_name(name).unwrap().precision() == Precision::Mixed;
    assert!(f16(c.family) && c.ms.iter().all(|(f, _)| f16(f)), "{c:?}");
    assert_eq!(
        c.ms.len(),
        KernelFamily::offered(Precision::Mixed, mixed.features).len()
    );

    let fp32 = device(Precision::Fp32);
    forward(&fp32);
    assert_eq!(
        fp32.choices_measured(),
        1,
        "the fp32 device timed its own race"
    );
    let own = fp32.choices_used();
    assert!(
        own.iter().all(|c| c.shape == sh.key() && !f16(c.family)),
        "{own:?}"
    );

    for precision in [Precision::Mixed, Precision::Fp32] {
        let later = device(precision);
        forward(&later);
        assert_eq!(later.choices_measured(), 0, "{precision:?} timed again");
        let used = later.choices_used();
        assert!(
            used.iter()
                .all(|c| f16(c.family) == (precision == Precision::Mixed)),
            "{used:?}"
        );
    }
}
