//! `resnet predict`: top-k classes of image files.

use super::{load_model, GpuArgs};
use clap::Args;
use resnet::gpu::Gpu;
use resnet::ops::sgd::SgdConfig;
use resnet::plan::{Mode, Plan, PlanConfig};
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
    let classes: Vec<String> = match ck.metadata.get("classes") {
        Some(c) => c.split(',').map(str::to_string).collect(),
        None => (0..m.spec.num_classes).map(|i| i.to_string()).collect(),
    };
    let n = a.images.len();
    let (mean, std) = ck.normalisation()?;
    let cfg = PlanConfig {
        batch: n,
        src: (a.image_size, a.image_size),
        input: (a.image_size, a.image_size),
        pad: 0,
        augment: false,
        mean,
        std,
        mode: Mode::Eval,
        sgd: SgdConfig {
            lr: 0.0,
            momentum: 0.0,
            weight_decay: 0.0,
            nesterov: false,
        },
    };
    let plan = Plan::new(&gpu, &m, cfg)?;
    plan.set_batch(&gpu, &pixels, &vec![0; n])?;
    plan.submit(&gpu);
    let logits = gpu.read_blocking(&plan.logits)?;
    let k = m.spec.num_classes;
    for (i, path) in a.images.iter().enumerate() {
        let row = &logits[i * k..(i + 1) * k];
        let mx = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let e: Vec<f64> = row.iter().map(|v| ((v - mx) as f64).exp()).collect();
        let sum: f64 = e.iter().sum();
        let mut order: Vec<usize> = (0..k).collect();
        order.sort_by(|&x, &y| e[y].partial_cmp(&e[x]).unwrap_or(std::cmp::Ordering::Equal));
        let name = |j: usize| classes.get(j).cloned().unwrap_or_else(|| j.to_string());
        let top: Vec<(String, f64)> = order
            .iter()
            .take(a.top)
            .map(|&j| (name(j), e[j] / sum))
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
