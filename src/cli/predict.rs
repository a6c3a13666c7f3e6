//! `resnet predict`: top-k classes of image files.

use super::eval::load_model;
use super::GpuArgs;
use clap::Args;
use resnet::checkpoint::Checkpoint;
use resnet::classify::{softmax, top_k};
use resnet::gpu::Gpu;
use resnet::model::{Family, ModelSpec};
use resnet::plan::{Plan, PlanConfig};
use resnet::preprocess::transforms::{write_chw, Transform};
use resnet::preprocess::Interpolation;
use resnet::rng::SplitMix64;
use resnet::{Error, Result};
use std::path::PathBuf;

/// Arguments of `resnet predict`.
#[derive(Args, Debug)]
pub struct PredictArgs {
    /// Checkpoint: safetensors (from `resnet train`, or PyTorch's safetensors), a file PyTorch's
    /// torch.save wrote (.pth/.pt: a state_dict, or a training checkpoint holding one), an http(s)
    /// URL of either (downloaded once into the cache), or torchvision's weights by name with
    /// --model (IMAGENET1K_V1, IMAGENET1K_V2, DEFAULT)
    #[arg(long, value_name = "FILE|URL|NAME")]
    checkpoint: String,
    /// Model name when the checkpoint has no metadata
    #[arg(long)]
    model: Option<String>,
    /// How many classes to show per image
    #[arg(long, default_value_t = 5)]
    top: usize,
    /// Resize images to this size (default: as the checkpoint was evaluated, from its
    /// metadata: e.g. resize 256 + centre crop 224, or 32 for CIFAR models)
    #[arg(long)]
    image_size: Option<usize>,
    /// How images are resampled (torchvision's --interpolation: nearest, bilinear, bicubic,
    /// box, hamming or lanczos); default: the checkpoint's, else bilinear
    #[arg(long, value_parser = super::parse_interpolation)]
    interpolation: Option<Interpolation>,
    /// Print JSON lines instead of text
    #[arg(long)]
    json: bool,
    /// Image files (PNG, JPEG, ...)
    #[arg(required = true)]
    images: Vec<PathBuf>,
    #[command(flatten)]
    gpu: GpuArgs,
}

/// How the checkpoint's evaluation prepared images: its `resize` + centre crop to
/// `input_size` (the ImageNet models on photo folders), else a resize to `input_size`; a
/// checkpoint without them (saved from PyTorch) as its model usually is, torchvision's resize
/// 256 + centre crop 224 for the ImageNet ResNets, 32x32 for the CIFAR ones. `--image-size`
/// resizes to that size instead. Resampled with `interpolation`.
fn preprocessing(
    ck: &Checkpoint,
    (image_size, interpolation): (Option<usize>, Interpolation),
    imagenet: bool,
) -> Result<Transform> {
    if let Some(s) = image_size {
        return Ok(Transform::Resize {
            size: (s, s),
            interpolation,
        });
    }
    let has = |key| ck.metadata.contains_key(key);
    if imagenet && !has("input_size") && !has("resize") {
        let torchvision = resnet::data::PhotoTransforms::default();
        return Ok(Transform::ResizeCenterCrop {
            resize: torchvision.eval_resize,
            crop: torchvision.eval_crop,
            interpolation,
        });
    }
    let number = |key: &str, v: &str| {
        v.trim()
            .parse::<usize>()
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| {
                Error::Invalid(format!("checkpoint metadata '{key}' is not a size: {v}"))
            })
    };
    let side = match ck.metadata.get("input_size") {
        Some(v) => number("input_size", v.split(',').next().unwrap_or(""))?,
        None => 32,
    };
    Ok(match ck.metadata.get("resize") {
        Some(r) => Transform::ResizeCenterCrop {
            resize: number("resize", r)?.max(side),
            crop: side,
            interpolation,
        },
        None => Transform::Resize {
            size: (side, side),
            interpolation,
        },
    })
}

/// How images are resampled: `--interpolation` where given, else as the run that wrote the
/// checkpoint did (its metadata), else bilinear (torchvision's default).
fn interpolation(given: Option<Interpolation>, ck: &Checkpoint) -> Result<Interpolation> {
    match given {
        Some(i) => Ok(i),
        None => Ok(ck.interpolation()?.unwrap_or_default()),
    }
}

/// Decodes an image, prepares it with `t` and lays it out as CHW bytes.
fn image_chw(path: &std::path::Path, t: &Transform) -> Result<Vec<u8>> {
    let img = t.apply(resnet::data::read_rgb(path)?, &mut SplitMix64(0));
    let mut out = vec![0u8; 3 * (img.width() * img.height()) as usize];
    write_chw(&img, &mut out);
    Ok(out)
}

/// Runs `resnet predict`.
pub fn run(a: PredictArgs) -> Result<()> {
    if a.image_size == Some(0) || a.top == 0 {
        return Err(Error::Invalid(
            "--image-size and --top must be at least 1".into(),
        ));
    }
    let (path, ck) = super::eval::read_checkpoint(&a.checkpoint, a.model.as_deref(), None)?;
    let imagenet = match a.model.as_ref().or(ck.metadata.get("model")) {
        Some(name) => ModelSpec::from_name(name, 10)?.family == Family::ImageNet,
        None => false,
    };
    let interpolation = interpolation(a.interpolation, &ck)?;
    let prep = preprocessing(&ck, (a.image_size, interpolation), imagenet)?;
    let mut pixels = Vec::new();
    for p in &a.images {
        pixels.extend(image_chw(p, &prep)?);
    }
    let gpu = Gpu::new_blocking(&a.gpu.options()?)?;
    let _warnings = super::GpuWarnings::new(&gpu);
    let m = load_model(&gpu, (&ck, &path), a.model.as_deref(), 10)?;
    let k = m.spec.num_classes;
    let classes = ck.class_names(k);
    let n = a.images.len();
    let size = prep.out_size();
    let normalize = ck.normalisation(m.spec.usual_normalisation())?;
    let plan = Plan::new(&gpu, &m, PlanConfig::eval(n, size, normalize))?;
    plan.set_batch(&gpu, &pixels, &vec![0; n])?;
    plan.submit(&gpu);
    let logits = gpu.read_blocking(&plan.logits)?;
    for (i, path) in a.images.iter().enumerate() {
        let probs = softmax(&logits[i * k..(i + 1) * k]);
        let name = |j: usize| classes.get(j).cloned().unwrap_or_else(|| j.to_string());
        let top: Vec<(String, f64)> = top_k(&probs, a.top)
            .into_iter()
            .map(|(j, p)| (name(j), p))
            .collect();
        if a.json {
            let items: Vec<String> = top
                .iter()
                .map(|(c, p)| format!("{{\"class\": {c:?}, \"probability\": {p:.6}}}"))
                .collect();
            println!(
                "{{\"image\": {:?}, \"top\": [{}]}}",
                path.display().to_string(),
                items.join(", ")
            );
        } else {
            let items: Vec<String> = top
                .iter()
                .map(|(c, p)| format!("{c} {:.1}%", 100.0 * p))
                .collect();
            println!("{}: {}", path.display(), items.join(", "));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_metadata(pairs: &[(&str, &str)]) -> Checkpoint {
        Checkpoint {
            tensors: Vec::new(),
            metadata: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn the_flag_then_the_checkpoint_then_bilinear_resample() {
        let bicubic = with_metadata(&[("interpolation", "bicubic")]);
        let nearest = Some(Interpolation::Nearest);
        assert_eq!(
            interpolation(nearest, &bicubic).unwrap(),
            Interpolation::Nearest
        );
        assert_eq!(
            interpolation(None, &bicubic).unwrap(),
            Interpolation::Bicubic
        );
        let pytorch = with_metadata(&[]);
        assert_eq!(
            interpolation(None, &pytorch).unwrap(),
            Interpolation::Bilinear
        );
        let bad = with_metadata(&[("interpolation", "cubic")]);
        let err = interpolation(None, &bad).unwrap_err().to_string();
        assert!(
            err.contains("'interpolation'") && err.contains("cubic"),
            "{err}"
        );
        // and the transform takes it: a photo-run checkpoint's resize + centre crop
        let photos = with_metadata(&[("resize", "36"), ("input_size", "32,32")]);
        let t = preprocessing(&photos, (None, Interpolation::Lanczos), true).unwrap();
        assert_eq!(t.interpolation(), Interpolation::Lanczos);
        assert_eq!(t.out_size(), (32, 32));
    }
}
