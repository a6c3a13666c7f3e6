//! Photo folders for the ImageNet models, end to end through `resnet`: streamed with
//! torchvision's transforms, resumed exactly, corrupt files skipped, checkpoints that `predict`
//! needs alone, pretrained weights from a file or a URL (resumed downloads, checksums, nothing
//! partial left in the cache), and one-line errors for bad input.

mod common;
use common::cifar::jpeg_fixture;
use common::cli::{fails_with, ok, resnet_with_cache};
use common::serve::serve;
use common::torchvision::BILINEAR;
use resnet::checkpoint::{self, Checkpoint};
use resnet::data::{assemble, open_photos, open_test_photos, BatchJob, ImageSource};
use resnet::data::{augmentation_rng, auto_augmented};
use resnet::data::{PhotoTransforms, Prefetch};
use resnet::model::{ModelSpec, ModelState};
use resnet::preprocess::auto_augment::{apply, trivial_augment_draw as draw};
use resnet::preprocess::transforms::from_chw;
use resnet::preprocess::AutoAugment;
use std::path::{Path, PathBuf};

/// resnet18 on the fixture's 200 + 100 JPEGs, small crops so that lavapipe trains quickly.
fn train_args<'a>(data: &'a str, out: &'a str, epochs: &'a str) -> Vec<&'a str> {
    vec![
        "train",
        "--model",
        "resnet18",
        "--data",
        data,
        "--out",
        out,
        "--epochs",
        epochs,
        "--batch-size",
        "20",
        "--train-crop",
        "32",
        "--eval-resize",
        "36",
        "--eval-crop",
        "32",
        "--eval-batch-size",
        "50",
        "--workers",
        "2",
        "--lr",
        "0.02",
    ]
}

/// Crops of 24 for training, 36 resized and 32 cropped for evaluation: quick on lavapipe.
const SMALL: PhotoTransforms = PhotoTransforms {
    train_crop: 24,
    train_crop_scale: (0.08, 1.0),
    eval_resize: 36,
    eval_crop: 32,
    interpolation: resnet::preprocess::Interpolation::Bilinear,
};

fn tensors(path: &Path) -> Vec<(String, Vec<f32>)> {
    let ck = checkpoint::load(path).unwrap();
    let mut v: Vec<_> = ck
        .tensors
        .iter()
        .filter_map(|t| t.as_f32().map(|d| (t.name.clone(), d.to_vec())))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn copy_dir(from: &Path, to: &Path) {
    for e in walk(from) {
        let dest = to.join(e.strip_prefix(from).unwrap());
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(&e, &dest).unwrap();
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn batches_do_not_depend_on_the_worker_threads() {
    let src = open_photos(&jpeg_fixture(), SMALL).unwrap();
    assert_eq!((src.train.len(), src.test.len()), (200, 100));
    assert_eq!(src.train.size(), (24, 24));
    assert_eq!(src.test.size(), (32, 32));
    // ImageFolder's order: classes sorted, files sorted within each
    assert_eq!(src.train.label(0), 0);
    assert_eq!(src.train.label(199), 9);
    let jobs: Vec<BatchJob> = (0..5)
        .map(|b| BatchJob {
            indices: (0..16).map(|i| (b * 37 + i * 11) % 200).collect(),
            stream: 3,
            repeats: Vec::new(),
        })
        .collect();
    let collect = |workers| {
        let mut p = Prefetch::new(src.train.clone(), jobs.clone(), 7, workers, 2).unwrap();
        let mut out = Vec::new();
        while let Some(b) = p.next_batch() {
            out.push(b.unwrap());
        }
        out
    };
    let (inline, threaded) = (collect(0), collect(3));
    assert_eq!(inline.len(), 5);
    for (a, b) in inline.iter().zip(&threaded) {
        assert_eq!(a.pixels, b.pixels);
        assert_eq!(a.labels, b.labels);
    }
    // another epoch (stream) draws other crops of the same images
    let other = assemble(
        &*src.train,
        &BatchJob {
            stream: 4,
            ..jobs[0].clone()
        },
        7,
    )
    .unwrap();
    assert_ne!(other.pixels, inline[0].pixels);
    assert_eq!(other.labels, inline[0].labels);
    // the repeated-augmentation sampler's repeats of one image are transformed apart; its first
    // is the image's draw without repeats
    let image = jobs[0].indices[0];
    let repeats = BatchJob {
        indices: vec![image; 3],
        stream: 3,
        repeats: vec![0, 1, 2],
    };
    let thrice = assemble(&*src.train, &repeats, 7).unwrap();
    let per = thrice.pixels.len() / 3;
    let (first, rest) = thrice.pixels.split_at(per);
    assert_eq!(first, &inline[0].pixels[..per]);
    assert!(first != &rest[..per] && first != &rest[per..] && rest[..per] != rest[per..]);
}

/// torchvision's ImageNet layout, `train/` and `val/`: with no `test/`, `val/` holds the
/// held-out images, streamed and loaded alike (the same images as the fixture's `test/`), and
/// streamed for evaluation from a folder with `val/` alone.
#[test]
fn a_val_folder_is_the_held_out_set_without_a_test_folder() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&jpeg_fixture().join("train"), &dir.path().join("train"));
    copy_dir(&jpeg_fixture().join("test"), &dir.path().join("val"));
    let src = open_photos(dir.path(), SMALL).unwrap();
    assert_eq!((src.train.len(), src.test.len()), (200, 100));
    let loaded = resnet::data::load(dir.path(), (32, 32)).unwrap();
    let fixture = resnet::data::load(&jpeg_fixture(), (32, 32)).unwrap();
    assert_eq!(loaded.test.len(), 100);
    assert_eq!(loaded.test.image(99), fixture.test.image(99));
    // evaluation streams val/ alone, train/ gone
    let val_only = tempfile::tempdir().unwrap();
    copy_dir(&jpeg_fixture().join("test"), &val_only.path().join("val"));
    let alone = open_test_photos(val_only.path(), SMALL).unwrap();
    let full = open_photos(&jpeg_fixture(), SMALL).unwrap().test;
    assert_eq!((alone.len(), alone.classes()), (100, full.classes()));
    let image = |set: &dyn ImageSource, i: usize| {
        let mut out = vec![0u8; 3 * 32 * 32];
        set.load(i, 5, &mut out).unwrap();
        (set.label(i), out)
    };
    for i in [0, 37, 99] {
        assert_eq!(image(&*alone, i), image(&*full, i), "image {i}");
    }
    // with both, test/ is the held-out set (here a copy of the 200 training images)
    copy_dir(&jpeg_fixture().join("train"), &dir.path().join("test"));
    assert_eq!(open_photos(dir.path(), SMALL).unwrap().test.len(), 200);
    std::fs::remove_dir_all(dir.path().join("test")).unwrap();
    // neither test/ nor val/: the error names both
    std::fs::rename(dir.path().join("val"), dir.path().join("valid")).unwrap();
    let err = open_photos(dir.path(), SMALL).err().unwrap().to_string();
    assert!(
        err.contains("test/<class>") && err.contains("val/<class>"),
        "{err}"
    );
}

/// `auto_augmented` puts TrivialAugmentWide after the training crop and flip of photo folders:
/// the crop is the plain one and the policy's draw follows on it, the same seed gives the same
/// pixels, and images selected for evaluation are untouched.
#[test]
fn trivial_augment_follows_the_training_crop_of_photo_folders() {
    let src = open_photos(&jpeg_fixture(), SMALL).unwrap();
    let ta = auto_augmented(src.train.clone(), AutoAugment::TrivialAugmentWide, BILINEAR).unwrap();
    assert_eq!(ta.preprocess(), src.train.preprocess());
    let load = |set: &dyn ImageSource, i: usize, seed: u64| {
        let (h, w) = set.size();
        let mut out = vec![0u8; 3 * h * w];
        set.load(i, seed, &mut out).unwrap();
        out
    };
    for i in 0..40 {
        let seed = 3 * i as u64;
        let once = load(&*ta, i, seed);
        assert_eq!(once, load(&*ta, i, seed), "image {i}");
        let crop = from_chw(&load(&*src.train, i, seed), (24, 24));
        let (op, magnitude) = draw(&mut augmentation_rng(seed));
        let want = apply(crop, op, magnitude, BILINEAR);
        assert_eq!(
            from_chw(&once, (24, 24)),
            want,
            "image {i}: {op:?} {magnitude}"
        );
    }
    let eval = |set: &dyn ImageSource| load(&*set.select(&[3, 5], false), 1, 9);
    assert_eq!(eval(&*ta), eval(&*src.train));
}

#[test]
fn photo_folders_stream_resume_exactly_and_checkpoints_predict_alone() {
    let cache = tempfile::tempdir().unwrap();
    let runs = tempfile::tempdir().unwrap();
    let data = jpeg_fixture();
    let data = data.to_str().unwrap();
    let (a, b) = (runs.path().join("a"), runs.path().join("b"));
    let (a, b) = (a.to_str().unwrap(), b.to_str().unwrap());
    // a fifth of the photos (2 steps an epoch), a fixed subset, TrivialAugment, bicubic
    // resampling (the run records them; the resume takes them from there)
    let extra = vec![
        "--subset",
        "40",
        "--auto-augment",
        "ta_wide",
        "--interpolation",
        "bicubic",
    ];
    let half = |out, epochs| [train_args(data, out, epochs), extra.clone()].concat();
    let log = ok(&resnet_with_cache(&half(a, "2"), cache.path()));
    assert!(
        log.contains("resnet18") && log.contains("40 train / 100 eval"),
        "{log}"
    );
    ok(&resnet_with_cache(&half(b, "1"), cache.path()));
    // the run directory remembers every option: `--resume DIR --epochs 2` is all it takes
    ok(&resnet_with_cache(
        &["train", "--resume", b, "--epochs", "2"],
        cache.path(),
    ));
    let last = |dir: &str| Path::new(dir).join("last.safetensors");
    assert_eq!(tensors(&last(a)), tensors(&last(b)), "resumed run differs");
    let meta = checkpoint::load(&last(a)).unwrap().metadata;
    assert_eq!(meta.get("input_size").map(String::as_str), Some("32,32"));
    assert_eq!(meta.get("resize").map(String::as_str), Some("36"));
    assert_eq!(
        meta.get("interpolation").map(String::as_str),
        Some("bicubic")
    );
    assert_eq!(
        meta.get("mean").map(String::as_str),
        Some("0.485,0.456,0.406")
    );
    // predict reads the preprocessing from the checkpoint: a 64x48 photo works as it is
    let photo = runs.path().join("photo.png");
    image::RgbImage::from_fn(64, 48, |x, y| image::Rgb([x as u8 * 4, y as u8 * 5, 90]))
        .save(&photo)
        .unwrap();
    let ck = last(a);
    let out = resnet_with_cache(
        &[
            "predict",
            "--checkpoint",
            ck.to_str().unwrap(),
            photo.to_str().unwrap(),
        ],
        cache.path(),
    );
    ok(&out);
    let line = String::from_utf8_lossy(&out.stdout);
    assert_eq!(line.trim().split(", ").count(), 5, "{line}");
    eval_prepares_photos_as_the_run(ck.to_str().unwrap(), data, Path::new(a), cache.path());
}

/// `eval` of the checkpoint `ck` of the run in `run` prepares the photos of `data` as the run
/// did (resize 36, crop 32, bicubic, from the metadata): the loss and accuracy of the run's last
/// evaluation; told bilinear, another loss.
fn eval_prepares_photos_as_the_run(ck: &str, data: &str, run: &Path, cache: &Path) {
    let eval_on = |data: &str, extra: &[&str]| {
        let args = [
            &["eval", "--checkpoint", ck, "--data", data, "--json"],
            extra,
        ]
        .concat();
        let out = resnet_with_cache(&args, cache);
        ok(&out);
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        (
            json["loss"].as_f64().unwrap(),
            json["accuracy"].as_f64().unwrap(),
        )
    };
    let eval = |extra: &[&str]| eval_on(data, extra);
    let (loss, acc) = eval(&[]);
    let metrics = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    let column = |name: &str| {
        let header: Vec<&str> = metrics.lines().next().unwrap().split(',').collect();
        let at = header.iter().position(|h| *h == name).unwrap();
        let value = metrics.lines().last().unwrap().split(',').nth(at).unwrap();
        value.parse::<f64>().unwrap()
    };
    let (run_loss, run_acc) = (column("test_loss"), column("test_acc"));
    assert!(
        (acc - run_acc).abs() < 1e-9 && (loss - run_loss).abs() <= 1e-5 * run_loss,
        "eval {loss} {acc} vs the run's {run_loss} {run_acc}"
    );
    let (bilinear_loss, _) = eval(&["--interpolation", "bilinear"]);
    assert!(
        (bilinear_loss - run_loss).abs() > 1e-4 * run_loss,
        "bilinear {bilinear_loss}, bicubic {run_loss}"
    );
    // a folder with the held-out images alone, as torchvision's val/: the same figures
    let val_only = tempfile::tempdir().unwrap();
    copy_dir(&Path::new(data).join("test"), &val_only.path().join("val"));
    assert_eq!(eval_on(val_only.path().to_str().unwrap(), &[]), (loss, acc));
}

#[test]
fn a_corrupt_photo_is_skipped_with_a_warning_naming_it() {
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&jpeg_fixture(), dir.path());
    let bad = dir.path().join("train/cat/0007.jpg");
    let bytes = std::fs::read(&bad).unwrap();
    std::fs::write(&bad, &bytes[..bytes.len() / 3]).unwrap();
    let out = dir.path().join("run");
    let log = ok(&resnet_with_cache(
        &train_args(dir.path().to_str().unwrap(), out.to_str().unwrap(), "1"),
        cache.path(),
    ));
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.starts_with("warning: skipping"))
        .collect();
    assert_eq!(warnings.len(), 1, "{log}");
    assert!(warnings[0].contains(&bad.display().to_string()), "{log}");
}

/// A resnet18 checkpoint with 1000 classes (an ImageNet one, random), as bytes.
fn imagenet_resnet18() -> Vec<u8> {
    let gpu = common::gpu();
    let m = ModelState::new(&gpu, &ModelSpec::from_name("resnet18", 1000).unwrap(), 5).unwrap();
    let ck = Checkpoint {
        tensors: pollster::block_on(m.state_dict(&gpu)).unwrap(),
        metadata: Default::default(),
    };
    ck.to_bytes().unwrap()
}

/// The files of the cache's pretrained folder, sorted (empty lock files aside).
fn cached_files(cache: &Path) -> Vec<String> {
    let dir = cache.join("pretrained");
    if !dir.exists() {
        return Vec::new();
    }
    // the empty lock files that let processes sharing the cache take turns hold no data
    let lock = |e: &std::fs::DirEntry| {
        e.file_name().to_string_lossy().ends_with(".lock") && e.metadata().unwrap().len() == 0
    };
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| !lock(e))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn pretrained_urls_download_once_resume_and_are_checked() {
    let body = imagenet_resnet18();
    let sha = {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), &body).unwrap();
        resnet::data::file_sha256(f.path()).unwrap()
    };
    let data = jpeg_fixture();
    let runs = tempfile::tempdir().unwrap();
    let out = runs.path().join("ft");
    // 40 of the photos: 2 steps an epoch are enough to see frozen layers kept and the rest moved
    let mut base = train_args(data.to_str().unwrap(), out.to_str().unwrap(), "1");
    base.extend(["--subset", "40"]);
    let with = |extra: &[&str]| -> Vec<String> {
        base.iter().chain(extra).map(|s| s.to_string()).collect()
    };

    // the first response breaks off halfway: the download resumes with a Range request
    let (url, seen) = serve("/w.safetensors", body.clone(), 1);
    let cache = tempfile::tempdir().unwrap();
    let log = ok(&resnet_with_cache(
        &with(&[
            "--pretrained",
            &url,
            "--pretrained-sha256",
            &sha,
            "--freeze",
            "stem,layer1",
        ]),
        cache.path(),
    ));
    assert!(log.contains("fc is a fresh 10-way layer"), "{log}");
    let ranges = seen.lock().unwrap().clone();
    assert_eq!(ranges.len(), 2, "{ranges:?}");
    assert!(ranges[0].is_empty() && !ranges[1].is_empty(), "{ranges:?}");
    // one file, named after the URL (a hash of it, then its last segment)
    let files = cached_files(cache.path());
    assert!(
        files.len() == 1 && files[0].ends_with("-w.safetensors"),
        "{files:?}"
    );
    let cached = cache.path().join("pretrained").join(&files[0]);
    assert_eq!(std::fs::read(cached).unwrap(), body);
    // frozen layers kept the downloaded weights
    let ck = checkpoint::load(&out.join("last.safetensors")).unwrap();
    let theirs = Checkpoint::from_bytes(&body).unwrap();
    for name in [
        "conv1.weight",
        "layer1.1.conv2.weight",
        "layer1.0.bn1.running_var",
    ] {
        assert_eq!(
            ck.get(name).unwrap().as_f32(),
            theirs.get(name).unwrap().as_f32(),
            "{name}"
        );
    }
    assert_ne!(
        ck.get("layer2.0.conv1.weight").unwrap().as_f32(),
        theirs.get("layer2.0.conv1.weight").unwrap().as_f32()
    );
    // `--resume DIR` alone continues the fine-tuning run as it was started (the URL, its
    // checksum and the frozen layers come from the run directory; nothing is downloaded), and
    // an option that contradicts the run is one error naming both values
    let o = out.to_str().unwrap();
    let log = ok(&resnet_with_cache(
        &["train", "--resume", o, "--epochs", "2"],
        cache.path(),
    ));
    assert!(log.contains("resuming after epoch 1"), "{log}");
    let ck = checkpoint::load(&out.join("last.safetensors")).unwrap();
    assert_eq!(ck.metadata.get("epoch").map(String::as_str), Some("2"));
    assert_eq!(
        ck.get("layer1.1.conv2.weight").unwrap().as_f32(),
        theirs.get("layer1.1.conv2.weight").unwrap().as_f32(),
        "a frozen layer trained after the resume"
    );
    assert_eq!(seen.lock().unwrap().len(), 2, "the resume downloaded again");
    fails_with(
        &resnet_with_cache(
            &["train", "--resume", o, "--freeze", "layer2"],
            cache.path(),
        ),
        &["--freeze layer2 differs from the run's stem,layer1"],
    );
    // a second run finds it in the cache
    std::fs::remove_dir_all(&out).unwrap();
    ok(&resnet_with_cache(
        &with(&["--pretrained", &url]),
        cache.path(),
    ));
    assert_eq!(seen.lock().unwrap().len(), 2, "downloaded again");

    // a wrong checksum: an error, and nothing in the cache
    let cache = tempfile::tempdir().unwrap();
    let zeros = "0".repeat(64);
    fails_with(
        &resnet_with_cache(
            &with(&["--pretrained", &url, "--pretrained-sha256", &zeros]),
            cache.path(),
        ),
        &["checksum mismatch", &url],
    );
    assert!(
        cached_files(cache.path()).is_empty(),
        "{:?}",
        cached_files(cache.path())
    );
    // a server that always breaks off, and a missing file: errors, nothing left
    let (broken, _) = serve("/w.safetensors", body.clone(), usize::MAX);
    fails_with(
        &resnet_with_cache(&with(&["--pretrained", &broken]), cache.path()),
        &["broke off", &broken],
    );
    let missing = url.replace("w.safetensors", "nope.safetensors");
    fails_with(
        &resnet_with_cache(&with(&["--pretrained", &missing]), cache.path()),
        &["404", &missing],
    );
    assert!(
        cached_files(cache.path()).is_empty(),
        "{:?}",
        cached_files(cache.path())
    );
}

#[test]
fn fine_tuning_mistakes_are_one_line_errors() {
    let cache = tempfile::tempdir().unwrap();
    let runs = tempfile::tempdir().unwrap();
    let data = jpeg_fixture();
    let out = runs.path().join("x");
    let base = train_args(data.to_str().unwrap(), out.to_str().unwrap(), "1");
    let run =
        |extra: &[&str]| resnet_with_cache(&[base.clone(), extra.to_vec()].concat(), cache.path());
    let mut small = base.clone();
    let at = small.iter().position(|a| *a == "--eval-resize").unwrap();
    small[at + 1] = "30";
    fails_with(
        &resnet_with_cache(&small, cache.path()),
        &["--eval-crop 32", "--eval-resize 30"],
    );
    fails_with(
        &run(&["--freeze", "layer9"]),
        &["--freeze layer9", "resnet18"],
    );
    fails_with(
        &run(&["--train-crop-scale", "0.5"]),
        &["--train-crop-scale", "MIN,MAX"],
    );
    fails_with(
        &run(&["--train-crop-scale", "0,1"]),
        &["--train-crop-scale 0,1"],
    );
    fails_with(
        &run(&["--num-classes", "7"]),
        &["--num-classes 7", "10 classes"],
    );
    fails_with(&run(&["--label-smoothing", "1.5"]), &["--label-smoothing"]);
    let notes = runs.path().join("notes.safetensors");
    std::fs::write(&notes, "not a checkpoint").unwrap();
    fails_with(
        &run(&["--pretrained", notes.to_str().unwrap()]),
        &[notes.to_str().unwrap()],
    );
    let gpu = common::gpu();
    let r34 = ModelState::new(&gpu, &ModelSpec::from_name("resnet34", 10).unwrap(), 1).unwrap();
    let ck = Checkpoint {
        tensors: pollster::block_on(r34.state_dict(&gpu)).unwrap(),
        metadata: Default::default(),
    };
    let path = runs.path().join("r34.safetensors");
    checkpoint::save(&path, &ck).unwrap();
    fails_with(
        &run(&["--pretrained", path.to_str().unwrap()]),
        &["does not fit a resnet18", "80 unexpected"],
    );
    // what the user gave is checked before GPU memory is planned: at the default batch (128 at
    // 224x224, over lavapipe's buffer limit) the wrong keys are reported, not the batch
    let defaults = [
        "train",
        "--model",
        "resnet18",
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--pretrained",
        path.to_str().unwrap(),
    ];
    fails_with(
        &resnet_with_cache(&defaults, cache.path()),
        &["does not fit a resnet18", "80 unexpected"],
    );
    // an empty class folder is named
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&jpeg_fixture(), dir.path());
    let empty = dir.path().join("test/frog");
    std::fs::remove_dir_all(&empty).unwrap();
    std::fs::create_dir(&empty).unwrap();
    let base = train_args(dir.path().to_str().unwrap(), out.to_str().unwrap(), "1");
    fails_with(
        &resnet_with_cache(&base, cache.path()),
        &[empty.to_str().unwrap(), "empty"],
    );
}
