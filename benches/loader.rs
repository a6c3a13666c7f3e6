//! The photo loader on one core, in images/s (criterion's "elem/s"): JPEG decode alone, decode +
//! torchvision's training transform (RandomResizedCrop(224) + flip, without and with
//! TrivialAugmentWide or AutoAugment's ImageNet policy after it) and decode + the evaluation transform (Resize(256) +
//! CenterCrop(224)), on 224x224 JPEGs and on 500x375 ones (ImageNet's typical size), made by
//! upscaling the repository's CIFAR-10 photos. Multiply by `--workers` for a whole machine and
//! compare with `resnet bench`'s training images/s to see whether the GPU would wait.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use image::codecs::jpeg::JpegEncoder;
use resnet::data::{assemble, auto_augmented, open_photos, BatchJob, PhotoTransforms};
use resnet::preprocess::{AutoAugment, AutoAugmentPolicy};
use std::path::Path;
use std::time::Duration;

/// torchvision's default `--interpolation`.
const BILINEAR: resnet::preprocess::Interpolation = resnet::preprocess::Interpolation::Bilinear;

/// Images per measured batch.
const BATCH: usize = 16;

/// `dir/{train,test}/<class>/NN.jpg`: the fixture's photos upscaled to `w` x `h`, quality 90.
fn photo_folder(dir: &Path, (w, h): (u32, u32)) {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/cifar10-jpeg/train");
    for class in ["cat", "ship"] {
        for split in ["train", "test"] {
            let out = dir.join(split).join(class);
            std::fs::create_dir_all(&out).expect("folder");
            for i in 0..BATCH / 2 {
                let src = fixture.join(class).join(format!("{i:04}.jpg"));
                let img = image::open(&src).expect("fixture photo").to_rgb8();
                let big =
                    image::imageops::resize(&img, w, h, image::imageops::FilterType::Triangle);
                let file = std::fs::File::create(out.join(format!("{i:02}.jpg"))).expect("jpeg");
                JpegEncoder::new_with_quality(file, 90)
                    .encode_image(&big)
                    .expect("encode");
            }
        }
    }
}

fn loader(c: &mut Criterion) {
    let mut g = c.benchmark_group("loader");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(BATCH as u64));
    for (w, h) in [(224, 224), (500, 375)] {
        let dir = tempfile::tempdir().expect("temp dir");
        photo_folder(dir.path(), (w, h));
        let src = open_photos(dir.path(), PhotoTransforms::default()).expect("photo folder");
        let job = BatchJob {
            indices: (0..BATCH).collect(),
            stream: 1,
            repeats: Vec::new(),
        };
        let files: Vec<_> = (0..BATCH)
            .map(|i| {
                let class = if i < BATCH / 2 { "cat" } else { "ship" };
                let name = format!("{:02}.jpg", i % (BATCH / 2));
                dir.path().join("train").join(class).join(name)
            })
            .collect();
        g.bench_function(format!("decode/{w}x{h}"), |b| {
            b.iter(|| {
                for f in &files {
                    std::hint::black_box(image::open(f).expect("decode").to_rgb8());
                }
            })
        });
        // what the loader decodes with: libjpeg-turbo's arithmetic (Pillow's bytes)
        g.bench_function(format!("decode_as_pillow/{w}x{h}"), |b| {
            b.iter(|| {
                for f in &files {
                    std::hint::black_box(resnet::data::read_rgb(f).expect("decode"));
                }
            })
        });
        g.bench_function(
            format!("decode_random_resized_crop_224_flip/{w}x{h}"),
            |b| b.iter(|| assemble(&*src.train, &job, 0).expect("batch")),
        );
        let ta = auto_augmented(src.train.clone(), AutoAugment::TrivialAugmentWide, BILINEAR)
            .expect("every policy warps bilinearly");
        g.bench_function(
            format!("decode_random_resized_crop_224_flip_ta_wide/{w}x{h}"),
            |b| b.iter(|| assemble(&*ta, &job, 0).expect("batch")),
        );
        let imagenet = auto_augmented(
            src.train.clone(),
            AutoAugment::Learned(AutoAugmentPolicy::Imagenet),
            BILINEAR,
        )
        .expect("every policy warps bilinearly");
        g.bench_function(
            format!("decode_random_resized_crop_224_flip_autoaugment_imagenet/{w}x{h}"),
            |b| b.iter(|| assemble(&*imagenet, &job, 0).expect("batch")),
        );
        let augmix = auto_augmented(
            src.train.clone(),
            "augmix".parse().expect("a policy"),
            BILINEAR,
        )
        .expect("every policy warps bilinearly");
        g.bench_function(
            format!("decode_random_resized_crop_224_flip_augmix/{w}x{h}"),
            |b| b.iter(|| assemble(&*augmix, &job, 0).expect("batch")),
        );
        g.bench_function(format!("decode_resize_256_center_crop_224/{w}x{h}"), |b| {
            b.iter(|| assemble(&*src.test, &job, 0).expect("batch"))
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    // no HTML plots: criterion's plotters text rendering needs fonts a CI machine may not have
    config = Criterion::default().without_plots();
    targets = loader
}
criterion_main!(benches);
