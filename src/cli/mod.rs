//! clap commands (native only).

mod bench;
mod console;
mod eval;
mod exchange_bench;
mod flags;
mod info;
pub mod mpi;
mod predict;
mod profile;
mod progress;
mod resume;
mod selftest;
mod train;
mod train_args;
mod tune;

pub use flags::with_flags;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use resnet::data;
use resnet::gpu::{parse_backend, GpuOptions, Precision};
use resnet::model::{Family, ModelSpec};
use resnet::preprocess::Interpolation;
use resnet::{Error, Result};
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Parser)]
#[command(
    name = "resnet",
    version,
    about = "ResNets in hand-written WGSL compute shaders on any GPU (wgpu): train, evaluate, predict",
    after_help = "Examples:\n  resnet train --model resnet20 --epochs 1 --data ./cifar10\n  resnet eval --checkpoint runs/resnet20/best.safetensors --data ./cifar10\n  resnet predict --checkpoint runs/resnet20/best.safetensors cat.png\n  resnet summary --model resnet18 --input 32,3,224,224"
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Options every GPU command shares.
#[derive(Args, Clone, Debug)]
struct GpuArgs {
    /// GPU backend: vulkan, metal, dx12 or gl (default: WGPU_BACKEND, else the best adapter of any)
    #[arg(long, global = true)]
    backend: Option<String>,
    /// Convolution kernel family: auto (the default: time every family once per convolution shape
    /// on this adapter, keep the fastest, remember the choice in the cache directory for the next
    /// run; `resnet tune` does it ahead of time), register (= register16x16), register8x16,
    /// register16x8, register8x8 (register blocking: fast on CPU drivers such as lavapipe),
    /// gemm (= gemm64x64), gemm32x128, gemm128x128 (double-buffered workgroup-memory GEMM tiles,
    /// for GPUs) or tiled (the first, simple workgroup-memory tiles); with --precision mixed
    /// their f16 twins (register16x16-f16 ... gemm128x128-f16; a name above means its twin) and
    /// coop64x64-f16 (tensor cores, where the GPU has cooperative matrices: `resnet info`); also
    /// RESNET_KERNELS
    #[arg(long, global = true, value_name = "FAMILY")]
    kernels: Option<String>,
    /// Which adapter of the best kind to use when a machine has several (0, 1, ...: the four
    /// GPUs of a 4-GPU machine); default the first, or under mpirun the rank on the machine mod
    /// their count
    #[arg(long, global = true, value_name = "N")]
    device_index: Option<usize>,
    /// What the network computes in: fp32 (the default) or mixed (torch.amp with fp16: the
    /// convolutions' operands rounded to f16 with f32 accumulation on the f16 kernel families,
    /// activations and their gradients stored in f16; in training dynamic loss scaling as
    /// GradScaler; weights, BatchNorm's statistics, the loss and checkpoints stay f32). Needs an
    /// adapter with f16 shaders (`resnet info` says)
    #[arg(long, global = true, value_name = "fp32|mixed")]
    precision: Option<String>,
    /// The same as --precision mixed (the flag of torchvision's and timm's training scripts)
    #[arg(long, global = true)]
    amp: bool,
    /// torchvision's flag. Every kernel here sums in a fixed order already (the same seed,
    /// adapter and kernels give the same bits), so this turns off what timing decides: the
    /// convolutions take the adapter type's family (register on CPU drivers, gemm on GPUs)
    /// instead of the fastest measured (as cudnn.benchmark = False), so that runs on two
    /// machines with the same adapter match to the bit whatever their timings were
    #[arg(long, global = true)]
    use_deterministic_algorithms: bool,
}

impl GpuArgs {
    fn options(&self) -> Result<GpuOptions> {
        let mut o = GpuOptions::from_env()?;
        if let Some(b) = &self.backend {
            if ["pil", "tensor"].contains(&b.to_ascii_lowercase().as_str()) {
                return Err(Error::Invalid(format!(
                    "--backend {b}: torchvision's --backend picks PIL or tensor transforms; here the transforms are always Pillow's, and --backend picks the GPU API: vulkan, metal, dx12 or gl"
                )));
            }
            o.backends = Some(parse_backend(b)?);
        }
        if let Some(k) = &self.kernels {
            o.set_kernels(k)?;
        }
        if self.use_deterministic_algorithms {
            // RESNET_KERNELS=auto gives way to the flag; --kernels auto beside it is a contradiction
            let auto_given = self.kernels.as_deref().map(str::trim) == Some("auto");
            if auto_given {
                return Err(Error::Invalid(
                    "--use-deterministic-algorithms takes the adapter type's kernels; it contradicts --kernels auto".into(),
                ));
            }
            o.tune = Some(false);
        }
        o.set_precision(self.precision()?)?;
        o.tuning_cache = Some(data::default_cache_dir().join("kernels"));
        o.device_index = self.device_index;
        o.on_measured = progress::tuning_lines();
        Ok(o)
    }

    /// --precision, or mixed for --amp; --amp with --precision fp32 is an error.
    fn precision(&self) -> Result<Precision> {
        let given = self
            .precision
            .as_deref()
            .map(Precision::parse)
            .transpose()?;
        match (given, self.amp) {
            (Some(Precision::Fp32), true) => Err(Error::Invalid(
                "--amp is --precision mixed; it contradicts --precision fp32".into(),
            )),
            (_, true) => Ok(Precision::Mixed),
            (p, false) => Ok(p.unwrap_or_default()),
        }
    }
}

/// Where the data comes from.
#[derive(Args, Clone, Debug)]
struct DataArgs {
    /// CIFAR-10's or CIFAR-100's binary layout (cifar-10-batches-bin/, cifar-100-binary/),
    /// torchvision's CIFAR10 or CIFAR100 (its root, or cifar-10-batches-py/, cifar-100-python/)
    /// or an image folder (train/<class>/*, test/<class>/* or val/<class>/*;
    /// `eval` and `--test-only` read the held-out images alone: test/ or val/, or the test batch);
    /// default: download the official CIFAR-10 binary archive into the cache directory (where
    /// that fails, `train` and `experiment` use the 2,000 + 500 images bundled with resnet)
    #[arg(long, visible_alias = "data-path")]
    data: Option<PathBuf>,
    /// Where to download CIFAR-10 from when --data is not given
    #[arg(long, default_value = data::CIFAR10_URL)]
    data_url: String,
    /// Expected MD5 of the downloaded archive
    #[arg(long, default_value = data::CIFAR10_MD5)]
    data_md5: String,
    /// Image size (height = width) for image folders decoded into memory (the CIFAR models);
    /// the CIFAR layouts are always 32
    #[arg(long, default_value_t = 32)]
    image_size: usize,
    /// The ImageNet models (resnet18..152) stream image folders from disk with torchvision's
    /// transforms: training RandomResizedCrop to this size (scale 0.08-1, ratio 3/4-4/3) + flip
    #[arg(long, visible_alias = "train-crop-size", default_value_t = 224)]
    train_crop: usize,
    /// The range of RandomResizedCrop's share of the image's area (torchvision's scale=); a
    /// larger minimum for small photos
    #[arg(long, value_delimiter = ',', num_args = 1, default_value = "0.08,1", value_parser = clap::value_parser!(f64))]
    train_crop_scale: Vec<f64>,
    /// Evaluation of the ImageNet models on image folders: resize the shorter side to this ...
    #[arg(long, visible_alias = "val-resize-size", default_value_t = 256)]
    eval_resize: usize,
    /// ... then take the centre crop of this size
    #[arg(long, visible_alias = "val-crop-size", default_value_t = 224)]
    eval_crop: usize,
    /// How photos are resampled (torchvision's --interpolation, Pillow's filters): nearest,
    /// bilinear, bicubic, box, hamming or lanczos; by the resizes of the ImageNet models' photo
    /// folders and of image folders decoded into memory, and by --auto-augment's warps, which
    /// take nearest, bilinear or bicubic (augmix: nearest or bilinear). A run records it in its
    /// checkpoints: `eval`, `predict` and `--test-only` take it from there unless given
    #[arg(long, default_value = "bilinear", value_parser = parse_interpolation)]
    interpolation: Interpolation,
}

fn parse_interpolation(s: &str) -> std::result::Result<Interpolation, String> {
    s.parse()
}

/// What to do when CIFAR-10 cannot be downloaded and no --data was given.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Offline {
    /// Train on the subset bundled with the program, saying so (the main job runs anywhere).
    UseBundled,
    /// Fail: an evaluation on 500 images would pass for one on the real test set.
    Fail,
}

impl DataArgs {
    /// What can be checked before anything is written or loaded: a mistyped checksum.
    fn check(&self) -> Result<()> {
        if self.data.is_none() {
            data::parse_md5(&self.data_md5)?;
        }
        Ok(())
    }

    /// The torchvision transform sizes given.
    fn photo_transforms(&self) -> Result<data::PhotoTransforms> {
        if self.train_crop_scale.len() != 2 {
            return Err(Error::Invalid(format!(
                "--train-crop-scale {:?}: expected two numbers, MIN,MAX",
                self.train_crop_scale
            )));
        }
        Ok(data::PhotoTransforms {
            train_crop: self.train_crop,
            train_crop_scale: (self.train_crop_scale[0], self.train_crop_scale[1]),
            eval_resize: self.eval_resize,
            eval_crop: self.eval_crop,
            interpolation: self.interpolation,
        })
    }

    /// `--eval-resize`, `--eval-crop` and `--interpolation` from a checkpoint's `resize`,
    /// `input_size` and `interpolation` metadata where they were not given.
    fn transforms_from(
        &mut self,
        ck: &resnet::checkpoint::Checkpoint,
        given: &dyn Fn(&str) -> bool,
    ) -> Result<()> {
        let size = |key: &str| -> Result<Option<usize>> {
            let Some(v) = ck.metadata.get(key) else {
                return Ok(None);
            };
            let first = v.split(',').next().unwrap_or("").trim();
            first.parse().map(Some).map_err(|_| {
                Error::Invalid(format!("checkpoint metadata '{key}' is not a size: {v}"))
            })
        };
        if let (Some(i), false) = (ck.interpolation()?, given("interpolation")) {
            self.interpolation = i;
        }
        // only checkpoints of runs on photo folders have a resize; the others' input size
        // says nothing about how photos are prepared
        let Some(resize) = size("resize")? else {
            return Ok(());
        };
        if !given("eval_resize") {
            self.eval_resize = resize;
        }
        if let (Some(c), false) = (size("input_size")?, given("eval_crop")) {
            self.eval_crop = c;
        }
        Ok(())
    }

    /// The data for `model`: an image folder is streamed with torchvision's ImageNet transforms
    /// for the ImageNet models, everything else is decoded into memory (see `load`).
    fn open(&self, offline: Offline, model: &str) -> Result<data::Sources> {
        match self.photo_folder(model)? {
            Some(dir) => data::open_photos(dir, self.photo_transforms()?),
            None => Ok(self.load(offline)?.into()),
        }
    }

    /// --data where `model` streams it: an image folder for an ImageNet model.
    fn photo_folder(&self, model: &str) -> Result<Option<&PathBuf>> {
        let imagenet = ModelSpec::from_name(model, 10)?.family == Family::ImageNet;
        let dir = self.data.as_ref();
        Ok(dir.filter(|d| imagenet && data::is_image_folder(d)))
    }

    fn load(&self, offline: Offline) -> Result<data::Split> {
        let size = (self.image_size, self.image_size);
        match (&self.data, self.cifar10(offline)?) {
            (Some(dir), _) => data::load_with(dir, size, self.interpolation),
            (None, Some(dir)) => data::load_cifar_binary(&dir),
            (None, None) => Ok(data::bundled_cifar10()),
        }
    }

    /// The held-out images alone for `model`, as [`DataArgs::open`] would give them: what an
    /// evaluation reads, so a folder holding only `test/` or `val/` (or a CIFAR layout's test
    /// batch and class names) will do, and no training image is decoded.
    fn open_test(&self, offline: Offline, model: &str) -> Result<Arc<dyn data::ImageSource>> {
        if let Some(dir) = self.photo_folder(model)? {
            return data::open_test_photos(dir, self.photo_transforms()?);
        }
        let size = (self.image_size, self.image_size);
        Ok(match (&self.data, self.cifar10(offline)?) {
            (Some(dir), _) => Arc::new(data::load_test_with(dir, size, self.interpolation)?),
            (None, Some(dir)) => Arc::new(data::load_cifar_test_batch(&dir)?),
            (None, None) => Arc::new(data::bundled_cifar10().test),
        })
    }

    /// Without --data, the folder of the official CIFAR-10 archive, downloaded into the cache
    /// where it is not there yet; `None` with --data, or for the bundled images where the
    /// download fails and `offline` allows them.
    fn cifar10(&self, offline: Offline) -> Result<Option<PathBuf>> {
        if self.data.is_some() {
            return Ok(None);
        }
        data::parse_md5(&self.data_md5)?; // a mistyped checksum is an error, not a fallback
        let mut bar = progress::DownloadBar::default();
        let cache = data::default_cache_dir();
        match data::download_cifar10(&self.data_url, &self.data_md5, &cache, &mut |t| bar.show(t)) {
            Ok(dir) => Ok(Some(dir)),
            Err(e) if offline == Offline::UseBundled => {
                eprintln!(
                    "warning: {e}; using the 2,000 + 500 CIFAR-10 images bundled with resnet \
                     instead (for all 60,000, download the archive on a connected machine, extract \
                     it and pass --data DIR)"
                );
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Train a ResNet (default: the recipe of He et al. 2016 for ResNet-20 on CIFAR-10)
    Train(Box<train::TrainArgs>),
    /// Loss, top-1 and top-5 accuracy of a checkpoint on the test split
    Eval(eval::EvalArgs),
    /// Top-5 classes of image files (any size and format the `image` crate reads)
    Predict(predict::PredictArgs),
    /// Training and inference throughput (medians), with per-block GPU times where supported
    Bench(bench::BenchArgs),
    /// Time every convolution kernel family at every shape of a model on this adapter and
    /// remember the fastest (what the first run of any command does on its own)
    Tune(tune::TuneArgs),
    /// Check every op, forward and backward, on this adapter against CPU references (a pass/fail
    /// table; exit 1 on any failure); with --kernels FAMILY (or RESNET_KERNELS) only that
    /// convolution family (the other checks then run with it)
    Selftest(selftest::SelftestArgs),
    /// Reproduce the paper's CIFAR-10 experiments: `degradation` (plain vs ResNet, Fig. 6) or
    /// `depth` (ResNet depth vs test error, Table 6); each run resumes where it stopped
    Experiment(Box<train::ExperimentArgs>),
    /// A torchinfo-style table of a model: layers, output shapes, parameters, mult-adds
    Summary(info::SummaryArgs),
    /// List every GPU adapter found and show the chosen one's limits and features
    Info {
        #[command(flatten)]
        gpu: GpuArgs,
    },
}

/// Parses the command line; a mistake in it is one `error:` line (exit 2), like every other
/// error of the tool, while --help and --version print as usual.
fn parse() -> (Cli, clap::ArgMatches) {
    let parsed = Cli::command()
        .try_get_matches()
        .and_then(|m| Cli::from_arg_matches(&m).map(|cli| (cli, m)));
    parsed.unwrap_or_else(|e| {
        if !e.use_stderr() {
            e.exit();
        }
        let rendered = e.render().to_string();
        let first = rendered
            .lines()
            .next()
            .unwrap_or("error: invalid arguments");
        let line = first.strip_prefix("error: ").unwrap_or(first);
        let flag = e.get(clap::error::ContextKind::InvalidArg);
        let hint = match (e.kind(), flag) {
            (
                clap::error::ErrorKind::UnknownArgument,
                Some(clap::error::ContextValue::String(f)),
            ) => flags::torchvision_only(f),
            _ => None,
        };
        match hint {
            Some(why) => eprintln!(
                "error: {line}: a flag of torchvision's script that this tool does without: {why}"
            ),
            None => eprintln!("error: {line} (see --help)"),
        }
        std::process::exit(2);
    })
}

/// Runs the command line.
pub fn main() -> Result<()> {
    let (cli, matches) = parse();
    // which options the user gave, so that a model's own recipe fills in the others
    let given = |id: &str| {
        let sub = matches.subcommand().map(|(_, m)| m);
        sub.and_then(|m| m.value_source(id)) == Some(clap::parser::ValueSource::CommandLine)
    };
    match cli.command {
        Command::Info { gpu } => info::info(&gpu.options()?),
        Command::Train(_) => {
            let sub = matches.subcommand().map(|(_, m)| m);
            train::train_cmd(sub.expect("train's matches"))
        }
        Command::Eval(a) => eval::eval_cmd(a, &given),
        Command::Predict(a) => predict::run(a),
        Command::Experiment(a) => train::experiment_cmd(*a, &given),
        Command::Bench(a) => bench::run(a),
        Command::Tune(a) => tune::run(a),
        Command::Selftest(a) => selftest::run(a),
        Command::Summary(a) => info::summary_cmd(a),
    }
}

/// The input size and classifier outputs a model is used with unless told otherwise: 32 and 10
/// for the CIFAR models, 224 and 1000 for the ImageNet ones.
fn model_defaults(model: &str) -> Result<(usize, usize)> {
    let family = resnet::model::ModelSpec::from_name(model, 1)?.family;
    Ok(match family {
        resnet::model::Family::Cifar => (32, 10),
        resnet::model::Family::ImageNet => (224, 1000),
    })
}

/// Prints what a device had to say without stopping (a kernel-choice cache it could not read
/// or write).
fn print_gpu_warnings(gpu: &resnet::Gpu) {
    for w in gpu.take_warnings() {
        eprintln!("warning: {}", with_flags(&w));
    }
}

/// [`print_gpu_warnings`] at once, and again when the command is done with the device.
struct GpuWarnings<'g>(&'g resnet::Gpu);

impl<'g> GpuWarnings<'g> {
    fn new(gpu: &'g resnet::Gpu) -> Self {
        print_gpu_warnings(gpu);
        GpuWarnings(gpu)
    }
}

impl Drop for GpuWarnings<'_> {
    fn drop(&mut self) {
        print_gpu_warnings(self.0);
    }
}

/// An error for an option that must be at least 1.
fn at_least_one(name: &str) -> Error {
    Error::Invalid(format!("{name} must be at least 1"))
}
