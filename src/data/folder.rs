//! Image folders as torchvision's ImageFolder reads them: `train/<class>/*` and `test/<class>/*`
//! (or `val/<class>/*`, the held-out half of torchvision's ImageNet layout).

use std::fs;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use image::RgbImage;

use super::{invalid, io_err, Dataset, Split};
use crate::preprocess::transforms::{write_chw, Transform};
use crate::preprocess::Interpolation;
use crate::rng::SplitMix64;
use crate::{Error, Result};

/// Images handed to a decoding thread at a time.
const BLOCK: usize = 64;
/// Largest accepted side of the target size.
const MAX_SIDE: usize = 1 << 14;

/// Loads `dir/train/<class>/*` and `dir/test/<class>/*` (or `val/`: `held_out_dir`) (classes sorted by name, files sorted by
/// path, sub-folders of a class folder included, names starting with '.' skipped), decoding the
/// images in parallel, converting them to RGB and resizing them to `size` (h, w) with Pillow's
/// bilinear filter when they are not already that size.
pub fn load_image_folder(dir: &Path, size: (usize, usize)) -> Result<Split> {
    load_image_folder_with(dir, size, Interpolation::Bilinear)
}

/// [`load_image_folder`], resizing with `interpolation`.
pub fn load_image_folder_with(
    dir: &Path,
    size: (usize, usize),
    interpolation: Interpolation,
) -> Result<Split> {
    let resize = resize_to(size, interpolation)?;
    let classes = split_classes(dir)?;
    let (train_dir, test_dir) = (dir.join("train"), held_out_dir(dir));
    let train = load_set(&train_dir, &classes, resize)?;
    let test = load_set(&test_dir, &classes, resize)?;
    Ok(Split { train, test })
}

/// The held-out images of the image folder `dir` alone (`test/`, or `val/` where there is no
/// `test/`), decoded and resized
/// as [`load_image_folder_with`] does: what an evaluation reads, so `train/` need not be there
/// (where it is, its class folders must be the held-out ones).
pub fn load_held_out_folder(
    dir: &Path,
    size: (usize, usize),
    interpolation: Interpolation,
) -> Result<Dataset> {
    let resize = resize_to(size, interpolation)?;
    load_set(&held_out_dir(dir), &held_out_classes(dir)?, resize)
}

/// The held-out images of an image folder: `dir/test`, or torchvision's ImageNet layout's
/// `dir/val` where there is no `test` (its reference script reads train/ and val/).
pub(super) fn held_out_dir(dir: &Path) -> std::path::PathBuf {
    let test = dir.join("test");
    match !test.exists() && dir.join("val").is_dir() {
        true => dir.join("val"),
        false => test,
    }
}

/// The resize to `size` (h, w), each side checked.
fn resize_to(size: (usize, usize), interpolation: Interpolation) -> Result<Transform> {
    let (h, w) = size;
    if h == 0 || w == 0 || h > MAX_SIDE || w > MAX_SIDE {
        return Err(invalid(format!(
            "image size {h}x{w}: each side must be 1 to {MAX_SIDE}"
        )));
    }
    Ok(Transform::Resize {
        size,
        interpolation,
    })
}

/// The class folders of the held-out images of `dir` ([`held_out_dir`]); where `dir/train` is
/// there too, they must be its classes (a model trained on it numbers its outputs by them).
pub(super) fn held_out_classes(dir: &Path) -> Result<Vec<String>> {
    if dir.join("train").exists() {
        return split_classes(dir);
    }
    let test_dir = held_out_dir(dir);
    if !test_dir.is_dir() {
        return Err(invalid(format!(
            "{}: missing folder (evaluation reads test/<class>/*, or val/<class>/* as \
             torchvision's ImageNet layout)",
            test_dir.display()
        )));
    }
    let classes = list_classes(&test_dir)?;
    check_class_count(&test_dir, &classes)?;
    Ok(classes)
}

/// The class folders of `dir/train` and of its held-out images ([`held_out_dir`]), which must
/// be the same (sorted by name).
pub(super) fn split_classes(dir: &Path) -> Result<Vec<String>> {
    let (train_dir, test_dir) = (dir.join("train"), held_out_dir(dir));
    for d in [&train_dir, &test_dir] {
        if !d.is_dir() {
            return Err(invalid(format!(
                "{}: missing folder (an image folder needs train/<class>/* and test/<class>/*, \
                 or val/<class>/* as torchvision's ImageNet layout)",
                d.display()
            )));
        }
    }
    let classes = list_classes(&train_dir)?;
    let test_classes = list_classes(&test_dir)?;
    if classes != test_classes {
        return Err(invalid(format!(
            "class folders differ: {} has [{}] but {} has [{}]",
            train_dir.display(),
            classes.join(", "),
            test_dir.display(),
            test_classes.join(", ")
        )));
    }
    check_class_count(&train_dir, &classes)?;
    Ok(classes)
}

/// At most 65,536 class folders.
fn check_class_count(dir: &Path, classes: &[String]) -> Result<()> {
    if classes.len() > 65_536 {
        return Err(invalid(format!(
            "{}: {} class folders, at most 65,536 are supported",
            dir.display(),
            classes.len()
        )));
    }
    Ok(())
}

/// Sorted names of the sub-folders of `dir` (hidden ones skipped).
fn list_classes(dir: &Path) -> Result<Vec<String>> {
    let mut classes = Vec::new();
    for Entry { path, name, is_dir } in entries(dir)? {
        if is_dir {
            let name = name.into_string().map_err(|_| {
                invalid(format!(
                    "{}: class folder name is not UTF-8",
                    path.display()
                ))
            })?;
            classes.push(name);
        }
    }
    if classes.is_empty() {
        return Err(invalid(format!("{}: no class folders", dir.display())));
    }
    classes.sort();
    Ok(classes)
}

/// A non-hidden entry of a folder.
struct Entry {
    path: PathBuf,
    name: std::ffi::OsString,
    /// A folder, or a link to one.
    is_dir: bool,
}

/// Non-hidden entries of `dir`. Whether each is a folder comes with the listing where the file
/// system says (no `stat` per file: a million photos list in seconds); links are followed.
fn entries(dir: &Path) -> Result<Vec<Entry>> {
    let rd = fs::read_dir(dir).map_err(|e| io_err(dir, "cannot list folder", e))?;
    let mut out = Vec::new();
    for e in rd {
        let e = e.map_err(|e| io_err(dir, "cannot list folder", e))?;
        let name = e.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        let path = e.path();
        let is_dir = match e.file_type() {
            Ok(t) if !t.is_symlink() => t.is_dir(),
            _ => path.is_dir(),
        };
        out.push(Entry { path, name, is_dir });
    }
    Ok(out)
}

/// All files under `dir`, recursively, sorted by path. `above` holds the folders it lies in
/// (resolved): a link back to one of them is an error, not an endless descent.
fn list_files(dir: &Path, above: &mut Vec<PathBuf>, out: &mut Vec<PathBuf>) -> Result<()> {
    let real = fs::canonicalize(dir).map_err(|e| io_err(dir, "cannot list folder", e))?;
    if let Some(outer) = above.iter().find(|a| **a == real) {
        return Err(invalid(format!(
            "{}: a link back to {}, which holds it: the folder would never end",
            dir.display(),
            outer.display()
        )));
    }
    let mut items = entries(dir)?;
    items.sort_by(|a, b| a.path.cmp(&b.path));
    above.push(real);
    for e in items {
        if e.is_dir {
            list_files(&e.path, above, out)?;
        } else {
            out.push(e.path);
        }
    }
    above.pop();
    Ok(())
}

/// The files of one class folder, recursively, sorted by path; an empty folder is an error.
pub(super) fn class_files(class_dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    list_files(class_dir, &mut Vec::new(), &mut files)?;
    if files.is_empty() {
        return Err(invalid(format!(
            "{}: empty class folder",
            class_dir.display()
        )));
    }
    Ok(files)
}

fn load_set(dir: &Path, classes: &[String], resize: Transform) -> Result<Dataset> {
    let (h, w) = resize.out_size();
    if classes.len() > 256 {
        return Err(invalid(format!(
            "{}: {} class folders; images decoded into memory hold at most 256 (the ImageNet models read larger sets as they train)",
            dir.display(),
            classes.len()
        )));
    }
    let mut files = Vec::new();
    let mut labels = Vec::new();
    for (label, class) in classes.iter().enumerate() {
        files.extend(class_files(&dir.join(class))?);
        labels.resize(files.len(), label as u8);
    }
    let images = decode_all(&files, resize)?;
    Ok(Dataset {
        images,
        labels,
        classes: classes.to_vec(),
        height: h,
        width: w,
    })
}

/// Decodes `files` into one CHW buffer on all cores, each resized by `resize`; the error of the
/// first failing file wins.
fn decode_all(files: &[PathBuf], resize: Transform) -> Result<Vec<u8>> {
    let (h, w) = resize.out_size();
    let per = 3 * h * w;
    let mut images = vec![0u8; files.len() * per];
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(2, 32)
        .min(files.len().div_ceil(BLOCK).max(1));
    let work = Mutex::new(
        files
            .chunks(BLOCK)
            .zip(images.chunks_mut(BLOCK * per))
            .enumerate(),
    );
    let failed = AtomicBool::new(false);
    let errors: Mutex<Vec<(usize, Error)>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                if failed.load(Ordering::Relaxed) {
                    return;
                }
                let next = work.lock().map(|mut it| it.next());
                let Ok(Some((b, (paths, out)))) = next else {
                    return;
                };
                for (i, (path, img)) in paths.iter().zip(out.chunks_mut(per)).enumerate() {
                    if let Err(e) = decode_one(path, &resize, img) {
                        failed.store(true, Ordering::Relaxed);
                        if let Ok(mut errs) = errors.lock() {
                            errs.push((b * BLOCK + i, e));
                        }
                        return;
                    }
                }
            });
        }
    });
    let errors = errors.into_inner().unwrap_or_else(|p| p.into_inner());
    match errors.into_iter().min_by_key(|(i, _)| *i) {
        Some((_, e)) => Err(e),
        None => Ok(images),
    }
}

/// Decodes one image file (format guessed from its content) as RGB: JPEGs to Pillow's bytes
/// where `jpeg` covers them (baseline: nearly all photos).
pub fn read_rgb(path: &Path) -> Result<RgbImage> {
    let bytes = fs::read(path).map_err(|e| io_err(path, "cannot read", e))?;
    // JPEGs as libjpeg-turbo decodes them (Pillow's, torchvision's) where the file is one
    // super::jpeg covers; the rest, and damaged files, through the image crate
    if let Some(img) = super::jpeg::decode(&bytes) {
        return Ok(img);
    }
    let img = image::ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| io_err(path, "cannot read", e))?
        .decode()
        .map_err(|e| invalid(format!("{}: not a readable image: {e}", path.display())))?;
    Ok(img.into_rgb8())
}

/// Decodes one file into `out` as RGB CHW, resized by `resize`.
fn decode_one(path: &Path, resize: &Transform, out: &mut [u8]) -> Result<()> {
    let img = resize.apply(read_rgb(path)?, &mut SplitMix64(0));
    write_chw(&img, out);
    Ok(())
}
