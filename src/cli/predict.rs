//! `resnet predict`: top-k classes of image files.

use super::eval::load_model;
use super::GpuArgs;
use clap::Args;
use resnet::classify::{softmax, top_k};
use resnet::gpu::Gpu;
use resnet::plan::{Plan, PlanConfig};
use resnet::{Error, Result};
use std::path::PathBuf;

/// Arguments of `resnet predict`.
#[derive(Args, Debug)]
pub struct PredictArgs {
    /// safetensors checkpoint (from `resnet train` or PyTorch)
    #[arg(long)]
    checkpoint: PathBuf,
    /// Model name when the checkpoint has no metadata
    #[arg(long)]
    model: Option<String>,
    /// How many classes to show per image
    #[arg(long, default_value_t = 5)]
    top: usize,
    /// Network input size (images are resized to it)
    #[arg(long, default_value_t = 32)]
    image_size: usize,
    /// Print JSON lines instead of text
    #[arg(long)]
    json: bool,
    /// Image files (PNG, JPEG, ...)
    #[arg(required = true)]
    images: Vec<PathBuf>,
    #[command(flatten)]
    gpu: GpuArgs,
}

/// Decodes, resizes (bilinear) and lays out an image as CHW bytes.
pub fn image_chw(path: &std::path::Path, size: usize) -> Result<Vec<u8>> {
    let img = image::open(path)
        .map_err(|e| Error::Invalid(format!("{}: cannot read image: {e}", path.display())))?;
    let rgb = img.to_rgb8();
    let rgb = if rgb.dimensions() == (size as u32, size as u32) {
        rgb
    } else {
        image::imageops::resize(
            &rgb,
            size as u32,
            size as u32,
            image::imageops::FilterType::Triangle,
        )
    };
    let mut out = vec![0u8; 3 * size * size];
    for (i, p) in rgb.pixels().enumerate() {
        for c in 0..3 {
            out[c * size * size + i] = p[c];
        }
    }
    Ok(out)
}

/// Runs `resnet predict`.
pub fn run(a: PredictArgs) -> Result<()> {
    if a.image_size == 0 || a.top == 0 {
        return Err(Error::Invalid(
            "--image-size and --top must be at least 1".into(),
        ));
    }
    let mut pixels = Vec::new();
    for p in &a.images {
        pixels.extend(image_chw(p, a.image_size)?);
    }
    let gpu = Gpu::new_blocking(&a.gpu.options()?)?;
    let (m, ck) = load_model(&gpu, &a.checkpoint, a.model.as_deref(), 10)?;
    let k = m.spec.num_classes;
    let classes = ck.class_names(k);
    let n = a.images.len();
    let size = (a.image_size, a.image_size);
    let plan = Plan::new(&gpu, &m, PlanConfig::eval(n, size, ck.normalisation()?))?;
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
