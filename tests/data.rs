//! `resnet::data`: image folders from real CIFAR-10 JPEGs (tests/data/cifar10-jpeg), the binary layout round trip, every
//! bad-input error, and the download against a local HTTP server.

mod common;
use common::serve::serve;
use std::fs;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use resnet::data::{
    bundled_cifar10, download_cifar10, load, load_cifar_binary, load_cifar_python,
    load_cifar_python_test, load_cifar_test_batch, load_image_folder, load_test_with,
    write_cifar_binary, Dataset, Split, CIFAR_PY_DIR,
};
use resnet::Error;
use tempfile::TempDir;

const CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];
/// Training / test images per class taken from the real data.
const TRAIN_PER_CLASS: usize = 20;
const TEST_PER_CLASS: usize = 10;

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// Original CIFAR-10 JPEGs committed with the tests: `train/<class>/0000..0019.jpg`,
/// `test/<class>/0000..0009.jpg` (relative path, bytes), read once.
fn sample() -> &'static [(String, Vec<u8>)] {
    static SAMPLE: OnceLock<Vec<(String, Vec<u8>)>> = OnceLock::new();
    SAMPLE.get_or_init(|| {
        let root = repo("tests/data/cifar10-jpeg");
        let mut out = Vec::new();
        for (split, per) in [("train", TRAIN_PER_CLASS), ("test", TEST_PER_CLASS)] {
            for class in CLASSES {
                for k in 0..per {
                    let name = format!("{split}/{class}/{k:04}.jpg");
                    let bytes = fs::read(root.join(&name))
                        .unwrap_or_else(|e| panic!("{}: {e}", root.join(&name).display()));
                    out.push((name, bytes));
                }
            }
        }
        out
    })
}

/// A fresh image folder with the sample.
fn fixture() -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, bytes) in sample() {
        let path = dir.path().join(name);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, bytes).unwrap();
    }
    dir
}

/// Deterministic pseudo-random 32x32 data with labels cycling over the 10 classes.
fn synthetic(n_train: usize, n_test: usize) -> Split {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut set = |n: usize| Dataset {
        images: (0..n * 3072)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 24) as u8
            })
            .collect(),
        labels: (0..n).map(|i| (i % 10) as u8).collect(),
        classes: CLASSES.iter().map(|s| s.to_string()).collect(),
        height: 32,
        width: 32,
    };
    let train = set(n_train);
    let test = set(n_test);
    Split { train, test }
}

/// The message of an `Error::Invalid`, checked to be one line and to contain every `needles`.
fn invalid<T: std::fmt::Debug>(r: resnet::Result<T>, needles: &[&str]) -> String {
    let msg = match r {
        Err(Error::Invalid(m)) => m,
        other => panic!("expected Error::Invalid, got {other:?}"),
    };
    assert!(!msg.contains('\n'), "not one line: {msg}");
    for n in needles {
        assert!(msg.contains(n), "{msg:?} does not contain {n:?}");
    }
    msg
}

fn show(p: &Path) -> String {
    p.display().to_string()
}

#[test]
fn image_folder_loads() {
    let dir = fixture();
    let split = load_image_folder(dir.path(), (32, 32)).unwrap();
    for (set, per) in [
        (&split.train, TRAIN_PER_CLASS),
        (&split.test, TEST_PER_CLASS),
    ] {
        assert_eq!(set.classes, CLASSES);
        assert_eq!((set.height, set.width), (32, 32));
        assert_eq!(set.len(), 10 * per);
        assert_eq!(set.images.len(), set.len() * 3072);
        assert_eq!(set.class_counts(), vec![per; 10]);
        for i in 0..set.len() {
            assert!(
                set.image(i).iter().any(|&b| b != 0),
                "image {i} is all zero"
            );
        }
        let mean = set.images.iter().map(|&b| b as f64).sum::<f64>() / set.images.len() as f64;
        assert!((60.0..200.0).contains(&mean), "mean pixel {mean}");
    }
    // CHW planar order, against the decode of the same files (held to Pillow's bytes in
    // tests/jpeg.rs).
    for (split_name, set, per) in [
        ("train", &split.train, TRAIN_PER_CLASS),
        ("test", &split.test, TEST_PER_CLASS),
    ] {
        for (class, k) in [(0, 0), (2, 5), (9, per - 1)] {
            let path = dir
                .path()
                .join(format!("{split_name}/{}/{k:04}.jpg", CLASSES[class]));
            let rgb = resnet::data::read_rgb(&path).unwrap();
            let img = set.image(class * per + k);
            assert_eq!(set.labels[class * per + k] as usize, class);
            for (y, x) in [(0, 0), (5, 7), (31, 2), (17, 31)] {
                for c in 0..3 {
                    assert_eq!(
                        img[c * 1024 + y * 32 + x],
                        rgb.get_pixel(x as u32, y as u32)[c],
                        "{} pixel ({y}, {x}) channel {c}",
                        path.display()
                    );
                }
            }
        }
    }
    assert_eq!(split.train.subset(7).len(), 7);
    assert_eq!(split.train.subset(7).image(6), split.train.image(6));
    assert_eq!(split.train.subset(10_000), split.train);
    assert!(split.train.subset(0).is_empty());
}

/// Links are followed (a class folder that is a link, a photo that is one), sub-folders of a
/// class are its photos too: the same images as the plain folder, in the same order.
#[cfg(unix)]
#[test]
fn image_folders_follow_links_and_sub_folders() {
    let plain = fixture();
    let linked = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    for split in ["train", "test"] {
        for class in CLASSES {
            let from = plain.path().join(split).join(class);
            let to = linked.path().join(split).join(class);
            fs::create_dir_all(to.parent().unwrap()).unwrap();
            let mut files: Vec<_> = fs::read_dir(&from)
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            files.sort();
            match class {
                // the class folder a link to a folder elsewhere
                "cat" => {
                    let real = elsewhere.path().join(split);
                    fs::create_dir_all(&real).unwrap();
                    copy_files(&files, &real);
                    std::os::unix::fs::symlink(&real, &to).unwrap();
                }
                // each photo a link, the second half in a sub-folder named to sort after them
                "dog" => {
                    let (first, second) = files.split_at(files.len() / 2);
                    fs::create_dir_all(to.join("zz")).unwrap();
                    for (f, dir) in first
                        .iter()
                        .map(|f| (f, to.clone()))
                        .chain(second.iter().map(|f| (f, to.join("zz"))))
                    {
                        std::os::unix::fs::symlink(f, dir.join(f.file_name().unwrap())).unwrap();
                    }
                }
                _ => {
                    fs::create_dir_all(&to).unwrap();
                    copy_files(&files, &to);
                }
            }
        }
    }
    assert_eq!(
        load_image_folder(linked.path(), (32, 32)).unwrap(),
        load_image_folder(plain.path(), (32, 32)).unwrap()
    );
}

/// A folder link that leads back into the class folder holding it is one error naming it, not
/// a descent without end.
#[cfg(unix)]
#[test]
fn a_folder_link_loop_is_an_error_naming_it() {
    let dir = fixture();
    let cat = dir.path().join("train/cat");
    let link = cat.join("again");
    std::os::unix::fs::symlink(&cat, &link).unwrap();
    invalid(
        load_image_folder(dir.path(), (32, 32)),
        &[&show(&link), "link back"],
    );
    let photos = resnet::data::open_photos(dir.path(), Default::default());
    invalid(photos.map(|_| ()), &[&show(&link), "link back"]);
}

fn copy_files(files: &[PathBuf], to: &Path) {
    for f in files {
        fs::copy(f, to.join(f.file_name().unwrap())).unwrap();
    }
}

#[test]
fn image_folder_resizes_and_load_detects_it() {
    let dir = fixture();
    let split = load(dir.path(), (16, 24)).unwrap();
    assert_eq!((split.train.height, split.train.width), (16, 24));
    assert_eq!(split.train.images.len(), split.train.len() * 3 * 16 * 24);
    // resized as PIL's BILINEAR (torchvision's), to within PIL's own rounding
    let path = dir.path().join("train/bird/0003.jpg");
    let rgb = resnet::data::read_rgb(&path).unwrap();
    let want = common::pil::bilinear(&rgb, 24, 16);
    let img = split.train.image(2 * TRAIN_PER_CLASS + 3);
    for y in 0..16 {
        for x in 0..24 {
            for c in 0..3 {
                let got = img[c * 16 * 24 + y * 24 + x] as f64;
                let w = want[(y * 24 + x) * 3 + c];
                assert!((got - w).abs() <= 1.0, "({y}, {x}, {c}): {got} against {w}");
            }
        }
    }
    assert_eq!(
        load(dir.path(), (32, 32)).unwrap(),
        load_image_folder(dir.path(), (32, 32)).unwrap()
    );
    // `--interpolation nearest` reaches the images decoded into memory: every pixel is one of
    // the photo's own (a bilinear resize of this photo makes new ones)
    let nearest = resnet::preprocess::Interpolation::Nearest;
    let split = resnet::data::load_with(dir.path(), (16, 24), nearest).unwrap();
    let img = split.train.image(2 * TRAIN_PER_CLASS + 3);
    let own: std::collections::HashSet<[u8; 3]> = rgb.pixels().map(|p| p.0).collect();
    let plane = 16 * 24;
    let pixel = |p: usize| [img[p], img[plane + p], img[2 * plane + p]];
    assert!((0..plane).all(|p| own.contains(&pixel(p))));
    let bilinear = load(dir.path(), (16, 24)).unwrap();
    let img = bilinear.train.image(2 * TRAIN_PER_CLASS + 3);
    let pixel = |p: usize| [img[p], img[plane + p], img[2 * plane + p]];
    assert!(!(0..plane).all(|p| own.contains(&pixel(p))));
}

/// torchvision's transforms resize as PIL's BILINEAR does, shrinking (with its antialiasing) and
/// growing, to within PIL's own rounding: `Resize` to a size and `Resize(256)` + `CenterCrop`.
#[test]
fn transforms_resize_as_pil_bilinear() {
    use resnet::preprocess::transforms::{center_crop_box, resized_shorter_side, Transform};
    let photo = image::open(fixture().path().join("train/bird/0003.jpg"))
        .unwrap()
        .to_rgb8();
    // a 500x375 photo with detail at every scale: the 32x32 fixture grown, plus a pattern
    let big = image::imageops::resize(&photo, 500, 375, image::imageops::FilterType::Nearest);
    let big = image::RgbImage::from_fn(500, 375, |x, y| {
        let p = big.get_pixel(x, y);
        image::Rgb([
            p[0] ^ ((x * y) as u8 & 31),
            p[1],
            p[2].wrapping_add((x % 7) as u8 * 9),
        ])
    });
    let mut rng = resnet::rng::SplitMix64(0);
    let close = |got: &image::RgbImage, want: &[f64]| {
        for (i, (g, w)) in got.as_raw().iter().zip(want).enumerate() {
            assert!((*g as f64 - w).abs() <= 1.0, "byte {i}: {g} against {w}");
        }
    };
    for (w, h) in [(224, 168), (37, 301), (700, 400)] {
        let size = (h, w);
        let interpolation = resnet::preprocess::Interpolation::Bilinear;
        let got = Transform::Resize {
            size,
            interpolation,
        }
        .apply(big.clone(), &mut rng);
        assert_eq!(got.dimensions(), (w as u32, h as u32));
        close(&got, &common::pil::bilinear(&big, w, h));
    }
    let got = Transform::ResizeCenterCrop {
        resize: 256,
        crop: 224,
        interpolation: resnet::preprocess::Interpolation::Bilinear,
    }
    .apply(big.clone(), &mut rng);
    let (rh, rw) = resized_shorter_side(375, 500, 256);
    let resized = common::pil::bilinear(&big, rw, rh);
    let b = center_crop_box(rh, rw, 224);
    let want: Vec<f64> = (0..224)
        .flat_map(|y| {
            let row = (b.top + y) * rw + b.left;
            resized[row * 3..(row + 224) * 3].to_vec()
        })
        .collect();
    close(&got, &want);
}

#[test]
fn binary_round_trip_and_detection() {
    let dir = fixture();
    let split = load_image_folder(dir.path(), (32, 32)).unwrap();
    let bin = tempfile::tempdir().unwrap();
    write_cifar_binary(&split, bin.path()).unwrap();
    for k in 1..=5 {
        let len = fs::metadata(bin.path().join(format!("data_batch_{k}.bin")))
            .unwrap()
            .len();
        assert_eq!(len, (split.train.len() / 5 * 3073) as u64);
    }
    let test_len = fs::metadata(bin.path().join("test_batch.bin"))
        .unwrap()
        .len();
    assert_eq!(test_len, (split.test.len() * 3073) as u64);
    assert_eq!(load_cifar_binary(bin.path()).unwrap(), split);
    assert_eq!(load(bin.path(), (32, 32)).unwrap(), split);

    // The official archive's layout: the files in dir/cifar-10-batches-bin.
    let outer = tempfile::tempdir().unwrap();
    let synth = synthetic(23, 7);
    write_cifar_binary(&synth, &outer.path().join("cifar-10-batches-bin")).unwrap();
    assert_eq!(load_cifar_binary(outer.path()).unwrap(), synth);
    assert_eq!(load(outer.path(), (32, 32)).unwrap(), synth);
}

/// What an evaluation reads: the held-out images alone, the same as the full load's, from a
/// folder that has no training images or whose training images would not decode.
#[test]
fn the_held_out_images_load_without_the_training_ones() {
    let bilinear = resnet::preprocess::Interpolation::Bilinear;
    let full = load_image_folder(fixture().path(), (32, 32)).unwrap();
    // the binary layout with test_batch.bin and batches.meta.txt only
    let bin = tempfile::tempdir().unwrap();
    write_cifar_binary(&full, bin.path()).unwrap();
    for k in 1..=5 {
        fs::remove_file(bin.path().join(format!("data_batch_{k}.bin"))).unwrap();
    }
    assert_eq!(load_cifar_test_batch(bin.path()).unwrap(), full.test);
    assert_eq!(
        load_test_with(bin.path(), (32, 32), bilinear).unwrap(),
        full.test
    );
    invalid(load(bin.path(), (32, 32)), &["data_batch_1.bin"]);
    // an image folder with test/ alone, then val/ alone
    let dir = fixture();
    fs::remove_dir_all(dir.path().join("train")).unwrap();
    assert_eq!(
        load_test_with(dir.path(), (32, 32), bilinear).unwrap(),
        full.test
    );
    fs::rename(dir.path().join("test"), dir.path().join("val")).unwrap();
    assert_eq!(
        load_test_with(dir.path(), (32, 32), bilinear).unwrap(),
        full.test
    );
    // a training image that would not decode is not read
    let with_train = fixture();
    let bad = with_train.path().join("train/cat/0003.jpg");
    fs::write(&bad, b"not a jpeg").unwrap();
    invalid(load(with_train.path(), (32, 32)), &["0003.jpg"]);
    let test = load_test_with(with_train.path(), (32, 32), bilinear).unwrap();
    assert_eq!(test, full.test);
    // but where train/ is there, its classes number the outputs: they must be the same
    fs::rename(
        with_train.path().join("train/truck"),
        with_train.path().join("train/lorry"),
    )
    .unwrap();
    let held_out = load_test_with(with_train.path(), (32, 32), bilinear);
    invalid(held_out, &["class folders differ", "lorry", "truck"]);
    // train/ alone: the error names the missing test/ and val/
    fs::remove_dir_all(with_train.path().join("test")).unwrap();
    let only_train = load_test_with(with_train.path(), (32, 32), bilinear);
    invalid(
        only_train,
        &["missing folder", "test/<class>", "val/<class>"],
    );
    // neither: not a data set
    fs::rename(dir.path().join("val"), dir.path().join("valid")).unwrap();
    let none = load_test_with(dir.path(), (32, 32), bilinear);
    invalid(none, &["no data set found"]);
}

/// torchvision's `cifar-10-batches-py/` (Python 2's pickles of numpy arrays, made by
/// tests/data/cifar-10-batches-py/make.py from the first bundled images and read back there by
/// Python's own pickle): the same images and labels as the bundled binary records, found from
/// the root torchvision was given, from the folder itself, and for evaluation alone.
#[test]
fn torchvisions_cifar_pickles_load() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join(CIFAR_PY_DIR);
    fs::create_dir(&dir).unwrap();
    copy_files(&files_under(&repo("tests/data/cifar-10-batches-py")), &dir);
    let bundled = bundled_cifar10();
    let want = Split {
        train: bundled.train.subset(10),
        test: bundled.test.subset(5),
    };
    assert_eq!(load(root.path(), (32, 32)).unwrap(), want);
    assert_eq!(load_cifar_python(&dir).unwrap(), want);
    let bilinear = resnet::preprocess::Interpolation::Bilinear;
    assert_eq!(
        load_test_with(root.path(), (32, 32), bilinear).unwrap(),
        want.test
    );
    for k in 1..=5 {
        fs::remove_file(dir.join(format!("data_batch_{k}"))).unwrap();
    }
    assert_eq!(load_cifar_python_test(root.path()).unwrap(), want.test);
    invalid(
        load(root.path(), (32, 32)),
        &[&show(&dir.join("data_batch_1"))],
    );
}

/// CIFAR-100, as torchvision reads it (its 100 fine labels): `cifar-100-python/` (the pickles
/// of tests/data/cifar-10-batches-py/make.py: the first bundled images, the i-th labelled
/// (10 x label + i) % 100) and the official binary layout `cifar-100-binary/` (records of a
/// coarse and a fine label byte, then the pixels), written here from the same images.
#[test]
fn cifar100_loads_from_torchvisions_pickles_and_the_binary_layout() {
    let bundled = bundled_cifar10();
    let relabel = |d: &Dataset| Dataset {
        labels: (d.labels.iter().enumerate())
            .map(|(i, &l)| ((10 * l as usize + i) % 100) as u8)
            .collect(),
        classes: (0..100).map(|k| format!("class_{k:02}")).collect(),
        ..d.clone()
    };
    let want = Split {
        train: relabel(&bundled.train.subset(10)),
        test: relabel(&bundled.test.subset(5)),
    };
    let root = tempfile::tempdir().unwrap();
    let pickles = root.path().join("cifar-100-python");
    fs::create_dir(&pickles).unwrap();
    copy_files(&files_under(&repo("tests/data/cifar-100-python")), &pickles);
    assert_eq!(load(root.path(), (32, 32)).unwrap(), want);
    let bilinear = resnet::preprocess::Interpolation::Bilinear;
    assert_eq!(
        load_test_with(&pickles, (32, 32), bilinear).unwrap(),
        want.test
    );

    let binary = tempfile::tempdir().unwrap();
    let dir = binary.path().join("cifar-100-binary");
    fs::create_dir(&dir).unwrap();
    let records = |d: &Dataset| -> Vec<u8> {
        (0..d.len())
            .flat_map(|i| [&[d.labels[i] / 5, d.labels[i]], d.image(i)].concat())
            .collect()
    };
    fs::write(dir.join("train.bin"), records(&want.train)).unwrap();
    fs::write(dir.join("test.bin"), records(&want.test)).unwrap();
    fs::write(
        dir.join("fine_label_names.txt"),
        want.test.classes.join("\n"),
    )
    .unwrap();
    assert_eq!(load(binary.path(), (32, 32)).unwrap(), want);
    assert_eq!(load_test_with(&dir, (32, 32), bilinear).unwrap(), want.test);
    // a fine label beyond the names
    let names = &want.test.classes[..50];
    fs::write(dir.join("fine_label_names.txt"), names.join("\n")).unwrap();
    let f = dir.join("train.bin");
    let first = want.train.labels.iter().position(|&l| l >= 50).unwrap();
    let record = format!("record {first}: label {}", want.train.labels[first]);
    invalid(
        load(&dir, (32, 32)),
        &[&show(&f), &record, "only 50 classes"],
    );
}

#[test]
fn torchvisions_cifar_pickles_bad_inputs_name_the_file() {
    let fresh = || {
        let d = tempfile::tempdir().unwrap();
        copy_files(
            &files_under(&repo("tests/data/cifar-10-batches-py")),
            d.path(),
        );
        d
    };
    let test_labels = bundled_cifar10().test.labels[..5].to_vec();
    // the pickled list of labels: BININT1 (K) and the value, each
    let pickled = |labels: &[u8]| -> Vec<u8> { labels.iter().flat_map(|&l| [b'K', l]).collect() };
    let edit = |file: &Path, from: &[u8], to: &[u8]| {
        let bytes = fs::read(file).unwrap();
        let at = bytes.windows(from.len()).position(|w| w == from);
        let at = at.unwrap_or_else(|| panic!("{from:?} not in {}", file.display()));
        let mut edited = bytes[..at].to_vec();
        edited.extend_from_slice(to);
        edited.extend_from_slice(&bytes[at + from.len()..]);
        fs::write(file, edited).unwrap();
    };

    let d = fresh();
    let f = d.path().join("test_batch");
    let mut bad = test_labels.clone();
    bad[3] = 10;
    edit(&f, &pickled(&test_labels), &pickled(&bad));
    invalid(
        load_cifar_python(d.path()),
        &[&show(&f), "'labels' [3] is 10", "below 10"],
    );

    // the array's shape says 4 images, its bytes hold 5
    let d = fresh();
    let f = d.path().join("test_batch");
    edit(&f, b"K\x05M\x00\x0c\x86", b"K\x04M\x00\x0c\x86");
    invalid(load_cifar_python(d.path()), &[&show(&f), "'data'", "3072"]);

    let d = fresh();
    let f = d.path().join("data_batch_4");
    let bytes = fs::read(&f).unwrap();
    fs::write(&f, &bytes[..bytes.len() - 100]).unwrap();
    invalid(load_cifar_python(d.path()), &[&show(&f), "pickle"]);

    let d = fresh();
    let f = d.path().join("batches.meta");
    let no_names = std::collections::BTreeMap::from([("num_vis", 3072)]);
    fs::write(
        &f,
        serde_pickle::to_vec(&no_names, Default::default()).unwrap(),
    )
    .unwrap();
    invalid(
        load_cifar_python(d.path()),
        &[&show(&f), "no 'label_names'"],
    );

    let d = fresh();
    let f = d.path().join("data_batch_2");
    fs::write(
        &f,
        serde_pickle::to_vec(&vec![1, 2], Default::default()).unwrap(),
    )
    .unwrap();
    invalid(load_cifar_python(d.path()), &[&show(&f), "no dict"]);

    let d = fresh();
    let f = d.path().join("data_batch_3");
    let no_data = std::collections::BTreeMap::from([("labels", vec![1, 2])]);
    fs::write(
        &f,
        serde_pickle::to_vec(&no_data, Default::default()).unwrap(),
    )
    .unwrap();
    invalid(load_cifar_python(d.path()), &[&show(&f), "no 'data'"]);
}

#[test]
fn binary_bad_inputs_name_the_file() {
    let fresh = || {
        let d = tempfile::tempdir().unwrap();
        write_cifar_binary(&synthetic(20, 10), d.path()).unwrap();
        d
    };
    let d = fresh();
    let f = d.path().join("data_batch_3.bin");
    fs::remove_file(&f).unwrap();
    invalid(load_cifar_binary(d.path()), &[&show(&f)]);
    invalid(load(d.path(), (32, 32)), &[&show(&f)]);

    let d = fresh();
    let f = d.path().join("batches.meta.txt");
    fs::remove_file(&f).unwrap();
    invalid(load_cifar_binary(d.path()), &[&show(&f)]);

    let d = fresh();
    let f = d.path().join("test_batch.bin");
    let bytes = fs::read(&f).unwrap();
    fs::write(&f, &bytes[..bytes.len() - 100]).unwrap();
    invalid(load_cifar_binary(d.path()), &[&show(&f), "3073"]);

    let d = fresh();
    let f = d.path().join("data_batch_5.bin");
    let mut bytes = fs::read(&f).unwrap();
    bytes.push(0);
    fs::write(&f, &bytes).unwrap();
    invalid(load_cifar_binary(d.path()), &[&show(&f), "3073"]);

    let d = fresh();
    let f = d.path().join("data_batch_1.bin");
    fs::write(&f, b"").unwrap();
    invalid(load_cifar_binary(d.path()), &[&show(&f)]);

    let d = fresh();
    let f = d.path().join("data_batch_2.bin");
    let mut bytes = fs::read(&f).unwrap();
    bytes[3 * 3073] = 10;
    fs::write(&f, &bytes).unwrap();
    invalid(
        load_cifar_binary(d.path()),
        &[&show(&f), "record 3", "label 10"],
    );

    let d = fresh();
    fs::write(d.path().join("batches.meta.txt"), "a\nb\nc\n").unwrap();
    let f = d.path().join("data_batch_1.bin");
    invalid(load_cifar_binary(d.path()), &[&show(&f), "record 3"]);

    let empty = tempfile::tempdir().unwrap();
    invalid(load(empty.path(), (32, 32)), &[&show(empty.path())]);
    let missing = empty.path().join("nowhere");
    invalid(load(&missing, (32, 32)), &[&show(&missing)]);

    let mut small = synthetic(10, 5);
    small.train.height = 16;
    invalid(write_cifar_binary(&small, empty.path()), &["32x32"]);
    invalid(
        write_cifar_binary(&synthetic(4, 5), empty.path()),
        &["train"],
    );
}

#[test]
fn image_folder_bad_inputs_name_the_file() {
    let d = fixture();
    let f = d.path().join("train/cat/0001.jpg");
    fs::write(&f, b"this is not a jpeg").unwrap();
    invalid(load_image_folder(d.path(), (32, 32)), &[&show(&f)]);
    invalid(load(d.path(), (32, 32)), &[&show(&f)]);

    let d = fixture();
    let f = d.path().join("test/dog/notes.txt");
    fs::write(&f, b"hello").unwrap();
    invalid(load_image_folder(d.path(), (32, 32)), &[&show(&f)]);

    let d = fixture();
    let f = d.path().join("train/horse/0002.jpg");
    let bytes = fs::read(&f).unwrap();
    fs::write(&f, &bytes[..20]).unwrap();
    invalid(load_image_folder(d.path(), (32, 32)), &[&show(&f)]);

    let d = fixture();
    let f = d.path().join("train/ship/0004.jpg");
    fs::remove_file(&f).unwrap();
    fs::create_dir(&f).unwrap();
    fs::write(f.join("inner.jpg"), b"\xff\xd8\xff").unwrap();
    invalid(
        load_image_folder(d.path(), (32, 32)),
        &[&show(&f.join("inner.jpg"))],
    );

    let d = fixture();
    let f = d.path().join("test/frog");
    for e in fs::read_dir(&f).unwrap() {
        fs::remove_file(e.unwrap().path()).unwrap();
    }
    invalid(load_image_folder(d.path(), (32, 32)), &[&show(&f), "empty"]);

    let d = fixture();
    fs::create_dir(d.path().join("train/zebra")).unwrap();
    fs::copy(
        d.path().join("train/cat/0000.jpg"),
        d.path().join("train/zebra/0000.jpg"),
    )
    .unwrap();
    invalid(
        load_image_folder(d.path(), (32, 32)),
        &[
            "zebra",
            &show(&d.path().join("train")),
            &show(&d.path().join("test")),
        ],
    );

    let d = fixture();
    fs::rename(d.path().join("test/ship"), d.path().join("test/ships")).unwrap();
    invalid(load_image_folder(d.path(), (32, 32)), &["ships"]);

    let d = fixture();
    let f = d.path().join("test");
    fs::remove_dir_all(&f).unwrap();
    invalid(load_image_folder(d.path(), (32, 32)), &[&show(&f)]);
    invalid(load(d.path(), (32, 32)), &[&show(&f)]);

    let d = fixture();
    let f = d.path().join("train");
    fs::remove_dir_all(&f).unwrap();
    invalid(load_image_folder(d.path(), (32, 32)), &[&show(&f)]);

    let d = fixture();
    invalid(load_image_folder(d.path(), (0, 32)), &["0x32"]);
}

/// Paths of all files under `dir` (none when it does not exist).
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd {
            let p = e.unwrap().path();
            if p.is_dir() {
                out.extend(files_under(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// Processes filling one cache at the same time (two runs on a machine; the ranks of machines
/// whose caches are one shared file system) take turns: one request, and every one of them
/// finds the whole data set. Threads stand for the processes (the lock is per open file).
#[test]
fn simultaneous_downloads_into_one_cache_fetch_once() {
    let split = synthetic(15, 5);
    let (archive, md5) = common::cifar::binary_archive(&split);
    let (url, requests) = serve("/cifar-10-binary.tar.gz", archive, 0);
    let cache = tempfile::tempdir().unwrap();
    let cache_dir = cache.path().join("cache");
    std::thread::scope(|s| {
        let runs: Vec<_> = (0..4)
            .map(|_| s.spawn(|| download_cifar10(&url, &md5, &cache_dir, &mut |_| {})))
            .collect();
        for run in runs {
            let dir = run.join().unwrap().unwrap();
            assert_eq!(load_cifar_binary(&dir).unwrap(), split);
        }
    });
    assert_eq!(requests.lock().unwrap().len(), 1);
}

#[test]
fn download_checks_md5_caches_and_extracts() {
    let split = synthetic(15, 5);
    let (archive, md5) = common::cifar::binary_archive(&split);
    let (url, requests) = serve("/cifar-10-binary.tar.gz", archive, 0);
    let hits = || requests.lock().unwrap().len();

    let cache = tempfile::tempdir().unwrap();
    let cache_dir = cache.path().join("cache");
    let dir = download_cifar10(&url, &md5, &cache_dir, &mut |_| {}).unwrap();
    assert_eq!(hits(), 1);
    assert!(dir.join("cifar-10-batches-bin/test_batch.bin").is_file());
    assert!(cache_dir.join("cifar-10-binary.tar.gz").is_file());
    assert_eq!(load_cifar_binary(&dir).unwrap(), split);
    assert_eq!(load(&dir, (32, 32)).unwrap(), split);

    // Already there and verified: no second request.
    assert_eq!(
        download_cifar10(&url, &md5.to_uppercase(), &cache_dir, &mut |_| {}).unwrap(),
        dir
    );
    assert_eq!(hits(), 1);
    // Extracted folder gone: extracted again from the verified archive, still no request.
    fs::remove_dir_all(dir.join("cifar-10-batches-bin")).unwrap();
    assert_eq!(
        download_cifar10(&url, &md5, &cache_dir, &mut |_| {}).unwrap(),
        dir
    );
    assert_eq!(hits(), 1);
    assert_eq!(load_cifar_binary(&dir).unwrap(), split);

    // Wrong checksum: an error, and nothing left behind but the (empty) lock file that lets
    // processes sharing the cache take turns.
    let bad_dir = cache.path().join("bad");
    let wrong = "0123456789abcdef0123456789abcdef";
    invalid(
        download_cifar10(&url, wrong, &bad_dir, &mut |_| {}),
        &["md5", wrong],
    );
    assert_eq!(hits(), 2);
    assert_eq!(files_under(&bad_dir), vec![bad_dir.join(".cifar-10.lock")]);
    assert_eq!(
        fs::metadata(bad_dir.join(".cifar-10.lock")).unwrap().len(),
        0
    );

    // HTTP error and malformed checksum.
    let missing = url.replace("cifar-10-binary", "nope");
    invalid(
        download_cifar10(&missing, &md5, &bad_dir, &mut |_| {}),
        &[&missing],
    );
    assert_eq!(files_under(&bad_dir), vec![bad_dir.join(".cifar-10.lock")]);
    invalid(
        download_cifar10(&url, "xyz", &bad_dir, &mut |_| {}),
        &["xyz"],
    );

    // A response that breaks off halfway: the download resumes with a Range request (the same
    // fetch as the pretrained weights'), and the progress reached the whole archive.
    let (archive, md5) = common::cifar::binary_archive(&split);
    let (url, requests) = serve("/cifar-10-binary.tar.gz", archive.clone(), 1);
    let resumed_dir = cache.path().join("resumed");
    let mut last = 0;
    let progress = &mut |t| {
        if let resnet::data::Transfer::Bytes { done, .. } = t {
            last = done;
        }
    };
    let dir = download_cifar10(&url, &md5, &resumed_dir, progress).unwrap();
    assert_eq!(load_cifar_binary(&dir).unwrap(), split);
    let ranges = requests.lock().unwrap().clone();
    assert!(ranges.len() == 2 && !ranges[1].is_empty(), "{ranges:?}");
    assert_eq!(last, archive.len() as u64);
}

/// All 60,000 images, where the full data set is beside the repository (our machines):
/// `cargo test --release --test data -- --ignored --nocapture`.
#[test]
#[ignore = "extracts and decodes the whole data set in ../shared/data (seconds)"]
fn full_image_folder_loads() {
    let tarball = repo("../shared/data/cifar10-jpeg.tar.gz");
    if !tarball.is_file() {
        eprintln!(
            "full_image_folder_loads: skipped, {} is not there (only on the project's own machines)",
            tarball.display()
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let t = std::time::Instant::now();
    let file = fs::File::open(&tarball).unwrap();
    tar::Archive::new(flate2::read::GzDecoder::new(BufReader::new(file)))
        .unpack(dir.path())
        .unwrap();
    let extracted = t.elapsed();
    let t = std::time::Instant::now();
    let split = load(dir.path(), (32, 32)).unwrap();
    eprintln!("extract {extracted:?}, load 60,000 JPEGs {:?}", t.elapsed());
    assert_eq!(split.train.class_counts(), vec![5000; 10]);
    assert_eq!(split.test.class_counts(), vec![1000; 10]);
}
