//! The engine in a browser tab: wasm-bindgen entry points over the same library the CLI uses
//! (ops, plan, [`Trainer`] step, safetensors checkpoints). Nothing here blocks: readbacks return
//! promises that resolve when WebGPU has mapped the buffer.
#![cfg(target_arch = "wasm32")]

use js_sys::{Float32Array, Promise, Uint8Array};
use resnet::checkpoint::{self, Checkpoint};
use resnet::cifar10;
use resnet::classify::softmax;
use resnet::gpu::{Gpu, GpuOptions, Precision};
use resnet::model::{ModelSpec, ModelState};
use resnet::ops::amp::LossScale;
use resnet::ops::conv2d::{parse_kernel_family, tune_pending, KernelFamily};
use resnet::ops::sgd::{Rule, SgdConfig};
use resnet::plan::{Normalize, Plan, PlanConfig};
use resnet::preprocess::Preprocess;
use resnet::train::Trainer;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::future_to_promise;

struct Inner {
    gpu: Gpu,
    model: ModelState,
    trainer: RefCell<Trainer>,
    /// Evaluation plans by batch size, built on first use.
    eval: RefCell<HashMap<usize, Plan>>,
    classes: Vec<String>,
    normalize: Normalize,
    optimizer: SgdConfig,
}

/// A model on the GPU with a training plan: `step` trains, `predict` classifies, `save` and
/// `fromSafetensors` exchange weights with `resnet train` / `resnet eval`.
#[wasm_bindgen]
pub struct Engine {
    inner: Rc<Inner>,
}

fn js_err(e: resnet::Error) -> JsError {
    JsError::new(&e.to_string())
}

/// The page's images: CIFAR-10's 32x32.
const SIZE: (usize, usize) = (32, 32);

/// Opens WebGPU. `kernels`: a family name, or "auto": the choices in `remembered` (the text of
/// `kernelChoices()` the page kept from an earlier visit) where they are of this adapter, and the
/// adapter's family elsewhere until `tune()` times them (the browser cannot block to time).
/// `precision`: "fp32" (the default) or "mixed" (f16 convolution operands: the adapter must have
/// `shader-f16`).
async fn open(
    kernels: Option<String>,
    remembered: Option<String>,
    precision: Option<String>,
) -> Result<Gpu, JsError> {
    let mut opts = GpuOptions::default();
    if let Some(k) = kernels.filter(|k| !k.is_empty() && k != "auto") {
        opts.kernel_family = Some(parse_kernel_family(&k).map_err(js_err)?.name());
    }
    let precision = match precision.filter(|p| !p.is_empty()) {
        Some(p) => Precision::parse(&p).map_err(js_err)?,
        None => Precision::Fp32,
    };
    opts.set_precision(precision).map_err(js_err)?;
    let gpu = Gpu::new(&opts).await.map_err(js_err)?;
    if let Some(text) = remembered.filter(|t| !t.is_empty() && opts.kernel_family.is_none()) {
        // choices of another adapter or kernel set are simply not used: tune() measures anew
        let _ = gpu.load_choices_json(&text);
    }
    Ok(gpu)
}

/// The optimizer `opt` names ("sgd", "sgd_nesterov", "rmsprop", "adamw": torchvision's
/// `--opt`; none: SGD), with He et al.'s momentum 0.9 and weight decay 1e-4 (decoupled in
/// AdamW); the rate is set per step.
fn optimizer(opt: Option<String>) -> Result<SgdConfig, JsError> {
    let (rule, nesterov) = match opt.filter(|o| !o.is_empty()) {
        Some(o) => Rule::parse(&o).map_err(js_err)?,
        None => (Rule::Sgd, false),
    };
    Ok(SgdConfig {
        rule,
        nesterov,
        ..SgdConfig::he2016()
    })
}

impl Engine {
    fn build(
        (gpu, model): (Gpu, ModelState),
        (batch, seed): (usize, u64),
        optimizer: SgdConfig,
        classes: Vec<String>,
        normalize: Normalize,
    ) -> Result<Engine, JsError> {
        let preprocess = Preprocess::pad_crop_flip(normalize);
        let cfg = PlanConfig {
            // mixed precision trains with the loss scaled (torch.amp's GradScaler)
            loss_scale: LossScale::default().for_precision(gpu.precision),
            ..PlanConfig::train(batch, SIZE, optimizer, preprocess)
        };
        let trainer = Trainer::new(&gpu, &model, cfg, seed).map_err(js_err)?;
        Ok(Engine {
            inner: Rc::new(Inner {
                gpu,
                model,
                trainer: RefCell::new(trainer),
                eval: RefCell::new(HashMap::new()),
                classes,
                normalize,
                optimizer,
            }),
        })
    }
}

#[wasm_bindgen]
impl Engine {
    /// Opens WebGPU and builds a freshly initialised CIFAR model (`resnet20`, `resnet8`, ...) with
    /// a training plan for `batch` images per step. `kernels`: "auto" or a family name
    /// ("register8x8", "gemm64x64", ...: `resnet --help` lists them); `precision`: "fp32" or
    /// "mixed"; `opt`: "sgd" (the default), "sgd_nesterov", "rmsprop" or "adamw".
    pub async fn create(
        model: String,
        batch: usize,
        seed: u32,
        kernels: Option<String>,
        remembered: Option<String>,
        precision: Option<String>,
        opt: Option<String>,
    ) -> Result<Engine, JsError> {
        let spec = ModelSpec::from_name(&model, 10).map_err(js_err)?;
        let optimizer = optimizer(opt)?;
        let gpu = open(kernels, remembered, precision).await?;
        let state = ModelState::new(&gpu, &spec, seed as u64).map_err(js_err)?;
        let classes = cifar10::CLASSES.map(String::from).to_vec();
        let normalize = cifar10::NORMALIZE;
        Engine::build(
            (gpu, state),
            (batch, seed as u64),
            optimizer,
            classes,
            normalize,
        )
    }

    /// Opens WebGPU and loads a safetensors checkpoint (from `resnet train`, this page, or
    /// PyTorch with a `model` entry in its metadata), with a training plan of `batch`.
    #[wasm_bindgen(js_name = fromSafetensors)]
    pub async fn from_safetensors(
        bytes: Vec<u8>,
        batch: usize,
        kernels: Option<String>,
        remembered: Option<String>,
        precision: Option<String>,
        opt: Option<String>,
    ) -> Result<Engine, JsError> {
        let optimizer = optimizer(opt)?;
        let ck = Checkpoint::from_bytes(&bytes).map_err(js_err)?;
        let name = ck
            .metadata
            .get("model")
            .cloned()
            .ok_or_else(|| JsError::new("the checkpoint has no 'model' in its metadata"))?;
        let classes = ck.class_names(ck.num_classes().unwrap_or(10));
        let spec = ModelSpec::from_name(&name, classes.len()).map_err(js_err)?;
        let normalize = ck
            .normalisation(spec.usual_normalisation())
            .map_err(js_err)?;
        let gpu = open(kernels, remembered, precision).await?;
        let state = ModelState::new(&gpu, &spec, 0).map_err(js_err)?;
        // the weights, BN statistics and num_batches_tracked, as `resnet train --resume` loads them
        state
            .load_state_dict(&gpu, &ck, "checkpoint")
            .map_err(js_err)?;
        Engine::build((gpu, state), (batch, 0), optimizer, classes, normalize)
    }

    /// The optimizer's name ("sgd", "rmsprop" or "adamw"), with " (Nesterov)" for Nesterov's SGD.
    pub fn optimizer(&self) -> String {
        let o = &self.inner.optimizer;
        match o.nesterov {
            true => format!("{} (Nesterov)", o.rule.name()),
            false => o.rule.name().to_string(),
        }
    }

    /// What the convolutions compute in: "fp32" or "mixed".
    pub fn precision(&self) -> String {
        self.inner.gpu.precision.name().into()
    }

    /// The adapter WebGPU gave us as wgpu sees it (name where the browser tells it, backend,
    /// device type), the kernel family chosen for it and the precision.
    pub fn adapter(&self) -> String {
        let g = &self.inner.gpu;
        let kernels = match g.choices().len() {
            0 => format!("{} kernels", KernelFamily::of(g).name()),
            n => format!(
                "{n} convolution shapes with timed kernels, else {}",
                KernelFamily::of(g).name()
            ),
        };
        let precision = match g.precision {
            Precision::Fp32 => "fp32",
            Precision::Mixed => "mixed precision (f16 convolution operands, f32 sums)",
        };
        let kind = format!(
            "{:?}, {:?}, {kernels}, {precision}",
            g.info.backend, g.info.device_type
        );
        if g.info.name.is_empty() {
            kind
        } else {
            format!("{} ({kind})", g.info.name)
        }
    }

    /// Times every kernel family at each convolution shape built so far without timed choices
    /// (asynchronously: the browser cannot block), keeps the fastest, and rebuilds the plans with
    /// them. Resolves to how many shapes were timed (0 with `kernels` forced).
    pub fn tune(&self) -> Promise {
        let i = self.inner.clone();
        future_to_promise(async move {
            let err = |e: resnet::Error| JsValue::from(js_err(e));
            let timed = tune_pending(&i.gpu).await.map_err(err)?;
            if timed > 0 {
                i.trainer
                    .borrow_mut()
                    .rebuild(&i.gpu, &i.model)
                    .map_err(err)?;
                i.eval.borrow_mut().clear();
            }
            Ok(JsValue::from(timed as u32))
        })
    }

    /// Every kernel choice as text, naming this adapter and kernel set: for the page's storage,
    /// handed back to `create` on the next visit.
    #[wasm_bindgen(js_name = kernelChoices)]
    pub fn kernel_choices(&self) -> String {
        self.inner.gpu.choices_json()
    }

    /// The model's name, e.g. `resnet20`.
    #[wasm_bindgen(js_name = modelName)]
    pub fn model_name(&self) -> String {
        self.inner.model.spec.name.clone()
    }

    /// Trainable parameters.
    #[wasm_bindgen(js_name = paramCount)]
    pub fn param_count(&self) -> usize {
        self.inner.model.spec.param_count()
    }

    /// Images per training step.
    #[wasm_bindgen(js_name = batchSize)]
    pub fn batch_size(&self) -> usize {
        self.inner.trainer.borrow().plan.config.batch
    }

    /// Class names in label order.
    pub fn classes(&self) -> Vec<String> {
        self.inner.classes.clone()
    }

    /// Steps taken.
    pub fn iteration(&self) -> f64 {
        self.inner.trainer.borrow().iteration as f64
    }

    /// One SGD step on a batch: `pixels` holds N images of 3x32x32 bytes (CHW, as CIFAR-10's
    /// binary records), `labels` N class indices. Submits and returns at once.
    pub fn step(&self, pixels: &[u8], labels: &[u32], lr: f32) -> Result<(), JsError> {
        let i = &self.inner;
        i.trainer
            .borrow_mut()
            .step(&i.gpu, &i.model, pixels, labels, lr)
            .map_err(js_err)
    }

    /// Resolves to [loss sum, correct, count, first non-finite batch, top-5] over the steps since the
    /// previous call (a Float32Array), then starts the next window.
    pub fn metrics(&self) -> Promise {
        let i = self.inner.clone();
        future_to_promise(async move {
            let err = |e: resnet::Error| JsValue::from(js_err(e));
            // no RefCell borrow is held across the await: `step` may run meanwhile
            let loss = i.trainer.borrow().plan.loss.clone();
            let sums = loss.read(&i.gpu).await.map_err(err)?;
            loss.clear(&i.gpu).map_err(err)?;
            Ok(Float32Array::from(&sums.to_array()[..]).into())
        })
    }

    /// Resolves to class probabilities [N, classes] (softmax of the logits, eval mode) of N
    /// images of 3x32x32 bytes (CHW).
    pub fn predict(&self, pixels: Vec<u8>) -> Promise {
        let i = self.inner.clone();
        future_to_promise(async move {
            let n = pixels.len() / (3 * 32 * 32);
            if n == 0 || pixels.len() != n * 3 * 32 * 32 {
                return Err(JsError::new(&format!(
                    "predict: {} bytes is not a whole number of 3x32x32 images",
                    pixels.len()
                ))
                .into());
            }
            let err = |e: resnet::Error| JsValue::from(js_err(e));
            if !i.eval.borrow().contains_key(&n) {
                let cfg = PlanConfig::eval(n, SIZE, i.normalize);
                let plan = Plan::new(&i.gpu, &i.model, cfg).map_err(err)?;
                i.eval.borrow_mut().insert(n, plan);
            }
            let out = {
                let eval = i.eval.borrow();
                let plan = &eval[&n];
                plan.set_batch(&i.gpu, &pixels, &vec![0; n]).map_err(err)?;
                plan.submit(&i.gpu);
                plan.logits.clone()
            };
            let logits = i.gpu.read(&out).await.map_err(err)?;
            let k = logits.len() / n;
            let probs: Vec<f32> = logits
                .chunks(k)
                .flat_map(softmax)
                .map(|p| p as f32)
                .collect();
            Ok(Float32Array::from(&probs[..]).into())
        })
    }

    /// Resolves to the weights as safetensors bytes (PyTorch state_dict names, the CLI's
    /// metadata), for `resnet eval --checkpoint` or `load_state_dict` in PyTorch.
    pub fn save(&self) -> Promise {
        let i = self.inner.clone();
        future_to_promise(async move {
            let err = |e: resnet::Error| JsValue::from(js_err(e));
            let mut metadata = checkpoint::metadata(&i.model.spec.name, &i.classes, &i.normalize);
            let it = i.trainer.borrow().iteration;
            metadata.insert("iteration".into(), it.to_string());
            metadata.insert("trained_in".into(), "browser".into());
            let ck = Checkpoint {
                tensors: i.model.state_dict(&i.gpu).await.map_err(err)?,
                metadata,
            };
            let bytes = ck.to_bytes().map_err(err)?;
            Ok(Uint8Array::from(&bytes[..]).into())
        })
    }
}
