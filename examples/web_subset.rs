//! Makes the web demo's bundled data from the CIFAR-10 JPEG tarball (../shared/data):
//! `web/data/train.bin` and `web/data/test.bin` in CIFAR-10's binary record format (1 label byte,
//! then 1024 R, 1024 G, 1024 B bytes), and one PNG per class in `web/data/samples/`.
//!
//! cargo run --release --example web_subset -- [TARBALL] [OUT] [TRAIN_PER_CLASS] [TEST_PER_CLASS]

use resnet::data::{self, Dataset};
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, default: &str| args.get(i).cloned().unwrap_or(default.into());
    let tarball = PathBuf::from(arg(0, "../shared/data/cifar10-jpeg.tar.gz"));
    let out = PathBuf::from(arg(1, "web/data"));
    let num = |i: usize, default: &str| {
        arg(i, default)
            .parse::<usize>()
            .map_err(|_| format!("argument {}: not a number", i + 1))
    };
    let (train_n, test_n) = (num(2, "200")?, num(3, "50")?);
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    extract(&tarball, tmp.path(), train_n, test_n)?;
    let split = data::load(tmp.path(), (32, 32)).map_err(|e| e.to_string())?;
    std::fs::create_dir_all(out.join("samples")).map_err(|e| e.to_string())?;
    write_records(&split.train, &out.join("train.bin"))?;
    write_records(&split.test, &out.join("test.bin"))?;
    // one test image per class, as PNG (lossless: the page and `resnet predict` see equal pixels)
    for (c, name) in split.test.classes.iter().enumerate() {
        let i = (0..split.test.len())
            .find(|&i| split.test.labels[i] as usize == c)
            .ok_or_else(|| format!("no test image of class {name}"))?;
        let chw = split.test.image(i);
        let img = image::RgbImage::from_fn(32, 32, |x, y| {
            let p = (y * 32 + x) as usize;
            image::Rgb([chw[p], chw[1024 + p], chw[2048 + p]])
        });
        img.save(out.join("samples").join(format!("{name}.png")))
            .map_err(|e| e.to_string())?;
    }
    println!(
        "{} training and {} test images of {} classes in {}",
        split.train.len(),
        split.test.len(),
        split.train.classes.len(),
        out.display()
    );
    Ok(())
}

/// Extracts the first `train` and `test` JPEGs of every class into `dir` (train/<class>/...).
fn extract(tarball: &Path, dir: &Path, train: usize, test: usize) -> Result<(), String> {
    let f = std::fs::File::open(tarball).map_err(|e| format!("{}: {e}", tarball.display()))?;
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(f));
    let mut counts: HashMap<(String, String), usize> = HashMap::new();
    for entry in ar.entries().map_err(|e| e.to_string())? {
        let mut entry = entry.map_err(|e| e.to_string())?;
        let path = entry.path().map_err(|e| e.to_string())?.into_owned();
        let parts: Vec<String> = path
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        let n = parts.len();
        if n < 3 || !parts[n - 1].ends_with(".jpg") {
            continue;
        }
        let (split, class) = (parts[n - 3].clone(), parts[n - 2].clone());
        let limit = match split.as_str() {
            "train" => train,
            "test" => test,
            _ => continue,
        };
        let c = counts.entry((split.clone(), class.clone())).or_default();
        if *c >= limit {
            continue;
        }
        *c += 1;
        let to = dir.join(&split).join(&class);
        std::fs::create_dir_all(&to).map_err(|e| e.to_string())?;
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).map_err(|e| e.to_string())?;
        std::fs::write(to.join(&parts[n - 1]), bytes).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// CIFAR-10 binary records, in a fixed shuffled order (so any prefix mixes the classes).
fn write_records(d: &Dataset, path: &Path) -> Result<(), String> {
    let order = resnet::train::shuffled(d.len(), 10);
    let mut bytes = Vec::with_capacity(d.len() * 3073);
    for i in order {
        bytes.push(d.labels[i]);
        bytes.extend_from_slice(d.image(i));
    }
    std::fs::write(path, bytes).map_err(|e| format!("{}: {e}", path.display()))
}
