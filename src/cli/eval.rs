//! `resnet eval`, and loading a checkpoint into a model (shared with `resnet predict`).

use super::{at_least_one, DataArgs, GpuArgs, Offline};
use clap::Args;
use resnet::checkpoint::{self, Checkpoint};
use resnet::gpu::Gpu;
use resnet::model::{ModelSpec, ModelState};
use resnet::train;
use resnet::{Error, Result};
use std::path::{Path, PathBuf};

/// Arguments of `resnet eval`.
#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Checkpoint: safetensors (from `resnet train`, or PyTorch's safetensors), a file PyTorch's
    /// torch.save wrote (.pth/.pt: a state_dict, or a training checkpoint holding one), an http(s)
    /// URL of either (downloaded once into the cache), or torchvision's weights by name with
    /// --model (IMAGENET1K_V1, IMAGENET1K_V2, DEFAULT)
    #[arg(long, value_name = "FILE|URL|NAME")]
    checkpoint: String,
    /// Model name when the checkpoint has no metadata (e.g. saved from PyTorch)
    #[arg(long)]
    model: Option<String>,
    #[command(flatten)]
    data: DataArgs,
    /// Images per evaluation step
    #[arg(long, default_value_t = train::EVAL_BATCH)]
    batch_size: usize,
    /// Print JSON instead of text
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    gpu: GpuArgs,
}

/// Runs `resnet eval`.
pub fn eval_cmd(mut a: EvalArgs, given: &dyn Fn(&str) -> bool) -> Result<()> {
    let what = Evaluation {
        offline: Offline::Fail,
        checkpoint: &a.checkpoint,
        sha256: None,
        model: a.model.as_deref(),
        batch_size: a.batch_size,
        json: a.json,
    };
    evaluate_checkpoint(what, (&mut a.data, &a.gpu), given)
}

/// A checkpoint to evaluate on the held-out images, and how: `resnet eval`'s arguments, or
/// those of `resnet train --test-only`.
pub(crate) struct Evaluation<'a> {
    /// Without `--data`, where CIFAR-10 cannot be downloaded: an error (`eval`), or the bundled
    /// images (`train --test-only`, as the run would train on them).
    pub offline: Offline,
    /// A file, URL or torchvision's weights by name.
    pub checkpoint: &'a str,
    /// The SHA-256 a downloaded file must have.
    pub sha256: Option<&'a str>,
    /// The model, where the checkpoint's metadata does not say.
    pub model: Option<&'a str>,
    /// Images per evaluation step.
    pub batch_size: usize,
    /// JSON instead of text.
    pub json: bool,
}

/// Evaluates `what` on the test split of `data`, printing the loss, top-1 and top-5 accuracy.
pub(crate) fn evaluate_checkpoint(
    what: Evaluation,
    (data, gpu_args): (&mut DataArgs, &GpuArgs),
    given: &dyn Fn(&str) -> bool,
) -> Result<()> {
    if what.batch_size == 0 {
        return Err(at_least_one("--batch-size"));
    }
    let opts = gpu_args.options()?;
    let (path, ck) = &read_checkpoint(what.checkpoint, what.model, what.sha256)?;
    let model = match what.model {
        Some(m) => m.to_string(),
        None => model_name(ck, path)?,
    };
    // photo folders are prepared as the run that wrote the checkpoint evaluated them
    data.transforms_from(ck, given)?;
    let test = data.open_test(what.offline, &model)?;
    let gpu = Gpu::new_blocking(&opts)?;
    let _warnings = super::GpuWarnings::new(&gpu);
    let m = load_model(&gpu, (ck, path), what.model, test.classes().len())?;
    if m.spec.num_classes != test.classes().len() {
        return Err(Error::Invalid(format!(
            "{}: the model has {} classes but the data has {}",
            path.display(),
            m.spec.num_classes,
            test.classes().len()
        )));
    }
    if let Some(warning) = other_classes(ck, path, test.classes()) {
        eprintln!("warning: {warning}");
    }
    let mut console = super::console::Console::new(true);
    let normalize = ck.normalisation(m.spec.usual_normalisation())?;
    let scores = train::evaluate((&gpu, &m), &test, what.batch_size, normalize, &mut console)?;
    let (loss, acc, acc5) = (scores.loss, scores.accuracy, scores.accuracy5);
    if what.json {
        println!(
            "{{\"checkpoint\": {:?}, \"model\": {:?}, \"images\": {}, \"loss\": {loss:.6}, \"accuracy\": {acc:.6}, \"accuracy5\": {acc5:.6}}}",
            what.checkpoint,
            m.spec.name,
            test.len()
        );
    } else {
        println!(
            "{}: {} test images, loss {loss:.4}, top-1 accuracy {:.2}%, top-5 {:.2}%",
            m.spec.name,
            test.len(),
            100.0 * acc,
            100.0 * acc5
        );
    }
    Ok(())
}

/// Where the checkpoint names its classes and the data's differ, what to say: the outputs are
/// scored by their order, whatever the names (as PyTorch does), which is wrong if the folders
/// are not those the model was trained on.
fn other_classes(ck: &Checkpoint, path: &Path, data: &[String]) -> Option<String> {
    let theirs = ck.metadata.get("classes")?;
    if *theirs == data.join(",") {
        return None; // the same names (some of which may hold a comma)
    }
    let theirs: Vec<&str> = theirs.split(',').collect();
    let (i, (a, b)) = theirs
        .iter()
        .zip(data)
        .enumerate()
        .find(|(_, (a, b))| **a != b.as_str())?;
    Some(format!(
        "{}: class {i} is '{a}' in the checkpoint but '{b}' in the data; outputs are scored by \
         their order, not by name",
        path.display()
    ))
}

/// The file of `--checkpoint`: a file as it is, a URL or one of torchvision's weight names
/// downloaded into the cache first (with a progress bar).
/// `--checkpoint` read, with the file it came from. torchvision's weights by name come with
/// torchvision's evaluation sizes as metadata (`resize` 256 for V1, 232 for V2, `input_size` 224),
/// as a checkpoint of ours records its own.
pub(crate) fn read_checkpoint(
    source: &str,
    model: Option<&str>,
    sha256: Option<&str>,
) -> Result<(PathBuf, Checkpoint)> {
    let mut bar = super::progress::DownloadBar::default();
    let (path, named) = resnet::data::weights_file(
        ("checkpoint", source),
        model,
        sha256,
        &resnet::data::default_cache_dir(),
        &mut |t| bar.show(t),
    )?;
    let mut ck = checkpoint::load(&path)?;
    if let Some(w) = named {
        let meta = &mut ck.metadata;
        meta.entry("resize".into())
            .or_insert(w.eval_resize.to_string());
        meta.entry("input_size".into()).or_insert("224,224".into());
    }
    Ok((path, ck))
}

/// A fresh model holding the checkpoint `ck` read from `path`: the model name from its metadata
/// or `--model`, the number of classes from its `fc.bias` (else `classes`).
pub(crate) fn load_model(
    gpu: &Gpu,
    (ck, path): (&Checkpoint, &Path),
    model: Option<&str>,
    classes: usize,
) -> Result<ModelState> {
    let name = match model {
        Some(m) => m.to_string(),
        None => model_name(ck, path)?,
    };
    let spec = ModelSpec::from_name(&name, ck.num_classes().unwrap_or(classes))?;
    let m = ModelState::new(gpu, &spec, 0)?;
    m.load_state_dict(gpu, ck, &path.display().to_string())?;
    Ok(m)
}

/// The model a checkpoint's metadata names.
pub(crate) fn model_name(ck: &Checkpoint, path: &Path) -> Result<String> {
    ck.metadata.get("model").cloned().ok_or_else(|| {
        Error::Invalid(format!(
            "{}: no 'model' in its metadata; say which with --model NAME",
            path.display()
        ))
    })
}
