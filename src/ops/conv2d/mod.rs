//! conv2d forward and backward: implicit GEMM as register kernels in several block sizes
//! (shaders/conv2d.wgsl), as GPU-class GEMM tiles (shaders/conv2d_gemm.wgsl, `gemm`) and as the
//! first, simple workgroup-memory tiles (shaders/conv2d.wgsl); the families are the rows of
//! `family`, their modules expanded from the templates by `template`.
//!
//! x `[N, C, H, W]`, w `[K, C, R, S]`, bias `[K]`, y `[N, K, P, Q]`.

mod emulated;
mod family;
mod gemm;
mod grouped;
mod template;
mod tune;

pub use family::{all_sources, parse_kernel_family, KernelFamily, KERNEL_SET_VERSION};
pub use grouped::modules as grouped_modules;
pub use tune::tune_pending;

/// The op names in errors and kernel choices.
pub const FORWARD: &str = "conv2d forward";
/// See [`FORWARD`].
pub const BACKWARD_INPUT: &str = "conv2d backward (input)";
/// See [`FORWARD`].
pub const BACKWARD_WEIGHT: &str = "conv2d backward (weight)";

use super::{activations, check_dtype, check_shape, count_flops, dummy};
use crate::error::{shape_err, Error, Result};
use crate::gpu::{Dtype, Gpu, Kernel, Tensor, Uniform};
use family::{module, Scheme};

/// The block of the kernels that are not register-blocked (tiled, reductions): any module holds them.
const SHARED: KernelFamily = KernelFamily::Tiled;

/// The geometry of one convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv2dShape {
    /// Batch size.
    pub n: usize,
    /// Input channels.
    pub c: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Output channels.
    pub k: usize,
    /// Kernel height.
    pub r: usize,
    /// Kernel width.
    pub s: usize,
    /// Stride (both axes).
    pub stride: usize,
    /// Zero padding (both axes).
    pub pad: usize,
    /// PyTorch's `groups`: the input and output channels in this many groups, each output
    /// channel summing its group's inputs only (1: a dense convolution; ResNeXt's 3x3s: 32 or
    /// 64). Grouped convolutions run shaders/conv2d_grouped.wgsl (`grouped`).
    pub groups: usize,
}

impl Conv2dShape {
    /// A square-kernel convolution.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        n: usize,
        c: usize,
        h: usize,
        w: usize,
        k: usize,
        ksize: usize,
        stride: usize,
        pad: usize,
    ) -> Self {
        Conv2dShape {
            n,
            c,
            h,
            w,
            k,
            r: ksize,
            s: ksize,
            stride,
            pad,
            groups: 1,
        }
    }

    /// The same convolution in `groups` groups.
    pub fn grouped(self, groups: usize) -> Self {
        Conv2dShape { groups, ..self }
    }

    /// Output height.
    pub fn p(&self) -> usize {
        (self.h + 2 * self.pad - self.r) / self.stride + 1
    }
    /// Output width.
    pub fn q(&self) -> usize {
        (self.w + 2 * self.pad - self.s) / self.stride + 1
    }
    /// Input shape [N, C, H, W].
    pub fn x_shape(&self) -> Vec<usize> {
        vec![self.n, self.c, self.h, self.w]
    }
    /// Weight shape [K, C / groups, R, S].
    pub fn w_shape(&self) -> Vec<usize> {
        vec![self.k, self.c / self.groups, self.r, self.s]
    }
    /// Output shape [N, K, P, Q].
    pub fn y_shape(&self) -> Vec<usize> {
        vec![self.n, self.k, self.p(), self.q()]
    }
    /// Floating-point operations of the forward pass (2 per multiply-add); each backward is the same.
    pub fn flops(&self) -> f64 {
        let c = self.c / self.groups;
        2.0 * (self.n * self.k * self.p() * self.q() * c * self.r * self.s) as f64
    }

    /// The shape of a [`Conv2dShape::key`] (or of a `choice_key`, which may add the
    /// precision).
    pub fn from_key(key: &[usize]) -> Option<Conv2dShape> {
        let (&[n, c, h, w, k, r, s, stride, pad], [] | [16] | [16, 1]) =
            key.split_at(key.len().min(9))
        else {
            return None;
        };
        let sh = Conv2dShape {
            n,
            c,
            h,
            w,
            k,
            r,
            s,
            stride,
            pad,
            groups: 1,
        };
        sh.validate("conv2d").ok().map(|()| sh)
    }

    /// The shape as a key for per-shape kernel choices: [N, C, H, W, K, R, S, stride, pad].
    pub fn key(&self) -> Vec<usize> {
        vec![
            self.n,
            self.c,
            self.h,
            self.w,
            self.k,
            self.r,
            self.s,
            self.stride,
            self.pad,
        ]
    }

    fn validate(&self, op: &'static str) -> Result<()> {
        // every field but the padding must be positive
        if self.key()[..8].contains(&0) {
            return shape_err(op, format!("zero-sized dimension or stride in {self:?}"));
        }
        if self.h + 2 * self.pad < self.r || self.w + 2 * self.pad < self.s {
            return shape_err(
                op,
                format!(
                    "kernel {}x{} larger than padded input {}x{} (pad {})",
                    self.r, self.s, self.h, self.w, self.pad
                ),
            );
        }
        let g = self.groups;
        if g == 0 || !self.c.is_multiple_of(g) || !self.k.is_multiple_of(g) {
            return shape_err(
                op,
                format!(
                    "groups {g} must divide the input channels {} and the output channels {}",
                    self.c, self.k
                ),
            );
        }
        Ok(())
    }

    /// The shader's parameters; `kpad` and `cpad` round K and C up to `block` channels (the
    /// register kernels' channel block; 16 where none applies); `epi` the forward's epilogue
    /// ([`Epilogue::bits`]).
    fn params(&self, splits: usize, chunk: usize, epi: usize, block: usize) -> Uniform {
        self.params_with(splits, chunk, epi, block, 0)
    }

    /// [`Conv2dShape::params`], with the register forward's epilogue also writing BatchNorm's
    /// partial statistics (the register backward to the input's, the BatchNorm's backward sums)
    /// where `stats`.
    fn params_with(
        &self,
        splits: usize,
        chunk: usize,
        epi: usize,
        block: usize,
        stats: usize,
    ) -> Uniform {
        Uniform::new()
            .u(self.n)
            .u(self.c)
            .u(self.h)
            .u(self.w)
            .u(self.k)
            .u(self.p())
            .u(self.q())
            .u(self.r)
            .u(self.s)
            .u(self.stride)
            .u(self.pad)
            .u(epi)
            .u(self.k.div_ceil(block) * block)
            .u(self.c.div_ceil(block) * block)
            .u(splits)
            .u(chunk)
            .u(stats)
            .u(self.groups)
            .u(0)
            .u(0)
    }
}

/// What the forward adds to the convolution's sums, in this order: y = relu?(sum + bias? +
/// residual?), each part optional. An inference BatchNorm folded into the weights and bias
/// (`batchnorm::fold`) leaves its ReLU and residual add here.
#[derive(Clone, Copy, Default)]
pub struct Epilogue<'a> {
    /// `[K]`, one value per output channel.
    pub bias: Option<&'a Tensor>,
    /// Shaped as y.
    pub residual: Option<&'a Tensor>,
    pub relu: bool,
}

impl Epilogue<'_> {
    /// The shaders' `epi` word: their OUT_BIAS, OUT_RELU and OUT_RESIDUAL bits.
    fn bits(&self) -> usize {
        (self.bias.is_some() as usize)
            | (self.relu as usize) << 1
            | (self.residual.is_some() as usize) << 2
    }
}

/// Bindings `family`'s `entry` uses whether or not its epilogue runs, because the shader reads
/// them in a branch or in a function it shares with the other modes: the residual (7) of the
/// forward's epilogue (the register forward and backward to the input share their store; the
/// tiled and GEMM kernels are one function for all modes), the GEMM and tensor-core tiles'
/// BatchNorm statistics (6) and backward sums (8, 9), and what the register backward to the
/// input's BatchNorm sums read (1, 4, 6, 7, 8, 9).
fn shared_bindings(family: KernelFamily, entry: &str) -> &'static [u32] {
    let gemm = entry.contains("_gemm");
    if gemm && family.writes_stats() {
        return &[6, 7, 8, 9];
    }
    if entry == "conv_dx_reg" {
        return &[1, 4, 6, 7, 8, 9];
    }
    // the BatchNorm below's parameters, where the input is loaded through it
    if entry == "conv_dw_reg" {
        return &[4];
    }
    match gemm || entry.ends_with("_tiled") || entry == "conv_fwd_reg" {
        true => &[7],
        false => &[],
    }
}

/// The kernels of the backward to the weights and the bias: they read dy and x and write f32
/// sums, so with f16 activations they take the module of `activations::CONV_WEIGHTS`.
const WEIGHT_ENTRIES: [&str; 4] = ["conv_dw_reg", "conv_dw_tiled", "conv_dw_gemm", "conv_db"];

/// An entry point of a family's module, in the module derived with `BN_IN` where `bn_in`
/// (the forward and the backward to the weights applying the BatchNorm below on load).
#[derive(Clone, Copy)]
struct Entry {
    family: KernelFamily,
    name: &'static str,
    bn_in: bool,
}

impl From<(KernelFamily, &'static str)> for Entry {
    fn from((family, name): (KernelFamily, &'static str)) -> Entry {
        Entry {
            family,
            name,
            bn_in: false,
        }
    }
}

impl Entry {
    /// `name` of `family`, applying the BatchNorm below on load where `bn_in`.
    fn loading(family: KernelFamily, name: &'static str, bn_in: bool) -> Entry {
        Entry {
            family,
            name,
            bn_in,
        }
    }
}

/// The tag of the modules whose `BN_IN` is true (src/ops/derived.rs).
const BN_IN_TAG: &str = "bnin";

/// `m` with its shader's `BN_IN` constant set: a constant rather than a uniform, so that the
/// kernels without it compile as if the code were not there (a uniform's branch in the register
/// forward's loop cost lavapipe a tenth of its inference).
fn bn_in_module(m: (&'static str, &'static str)) -> (&'static str, &'static str) {
    super::derived::module(m, BN_IN_TAG, |name, source| {
        super::derived::replace_line(name, source, "const BN_IN = false;", "const BN_IN = true;")
    })
}

/// Every module a BatchNorm-on-load kernel may come from (for validation): each family's module
/// and its modules of f16 activations, derived with `BN_IN` set.
pub fn bn_in_modules() -> Vec<(&'static str, &'static str)> {
    (all_sources().into_iter())
        .flat_map(|m| std::iter::once(m).chain(activations::f16_modules(m)))
        .map(bn_in_module)
        .collect()
}

/// The tensor-core family's emulated modules (for validation): its own and its modules of f16
/// activations, each also with `BN_IN` set.
pub fn emulated_modules() -> Vec<(&'static str, &'static str)> {
    let own = emulated::module(module(KernelFamily::Coop64x64F16));
    let all: Vec<_> = std::iter::once(own)
        .chain(activations::f16_modules(own))
        .collect();
    let bn_in = all.iter().copied().map(bn_in_module);
    all.iter().copied().chain(bn_in).collect()
}

/// Builds one kernel of `family`'s module, binding a dummy of its own to each of the entry's
/// [`shared_bindings`] the caller has nothing for.
fn kernel(
    gpu: &Gpu,
    op: &'static str,
    entry: impl Into<Entry>,
    params: Uniform,
    buffers: &[(u32, &Tensor)],
    workgroups: u64,
) -> Result<Kernel> {
    let Entry {
        family,
        name: entry,
        bn_in,
    } = entry.into();
    let missing: Vec<u32> = (shared_bindings(family, entry).iter().copied())
        .filter(|b| !buffers.iter().any(|given| given.0 == *b))
        .collect();
    let dummies = missing
        .iter()
        .map(|_| dummy(gpu))
        .collect::<Result<Vec<_>>>()?;
    let own = match family.tensor_cores() && gpu.cooperative_emulated {
        true => emulated::module(module(family)),
        false => module(family),
    };
    let module = match activations::of(buffers.iter().map(|b| b.1)) {
        Dtype::F32 => own,
        Dtype::F16 if WEIGHT_ENTRIES.contains(&entry) => {
            activations::module_with(own, activations::CONV_WEIGHTS)
        }
        Dtype::F16 => activations::module_with(own, activations::CONV_FORWARD),
    };
    let module = if bn_in { bn_in_module(module) } else { module };
    let mut all = buffers.to_vec();
    all.extend(missing.into_iter().zip(&dummies));
    super::kernel(gpu, op, module, entry, params, &all, workgroups)
}

/// A kernel with an explicit 2-D grid (the tiled kernels use wid.y for the split).
fn kernel_grid(
    gpu: &Gpu,
    op: &'static str,
    entry: impl Into<Entry>,
    params: Uniform,
    buffers: &[(u32, &Tensor)],
    x: u64,
    y: u64,
) -> Result<Kernel> {
    let max = gpu.limits.max_compute_workgroups_per_dimension as u64;
    if x > max || y > max {
        return Err(Error::Limit {
            op,
            msg: format!("grid {x}x{y} exceeds max_compute_workgroups_per_dimension {max}"),
        });
    }
    let mut k = kernel(gpu, op, entry, params, buffers, 1)?;
    k.grid = [x as u32, y as u32, 1];
    Ok(k)
}

/// The weights re-laid [C*R*S, Kpad] for the forward, K padded with zeros to a multiple of
/// `block`, so that `block` output channels are block/4 vec4 loads: (the kernel that writes
/// them, the tensor). `params` must round with the same block.
fn weights_for_forward(
    gpu: &Gpu,
    sh: &Conv2dShape,
    w: &Tensor,
    params: &Uniform,
    (family, block): (KernelFamily, usize),
) -> Result<(Kernel, Tensor)> {
    let len = sh.c * sh.r * sh.s * sh.k.div_ceil(block) * block;
    relay(gpu, (FORWARD, family), "transpose_w_fwd", w, params, len)
}

/// The weights re-laid [R*S, K, Cpad] for the backward to the input, C padded with zeros to a
/// multiple of `block`: (the kernel that writes them, the tensor).
fn weights_for_input(
    gpu: &Gpu,
    sh: &Conv2dShape,
    w: &Tensor,
    params: &Uniform,
    (family, block): (KernelFamily, usize),
) -> Result<(Kernel, Tensor)> {
    let len = sh.r * sh.s * sh.k * sh.c.div_ceil(block) * block;
    relay(
        gpu,
        (BACKWARD_INPUT, family),
        "transpose_w_dx",
        w,
        params,
        len,
    )
}

/// Re-lays `w` with `entry`, for `family`'s kernels: in mixed precision rounded to f16 on the way
/// (the f16 register module's re-layouts; the GEMM modules have none of their own).
fn relay(
    gpu: &Gpu,
    (op, family): (&'static str, KernelFamily),
    entry: &'static str,
    w: &Tensor,
    params: &Uniform,
    len: usize,
) -> Result<(Kernel, Tensor)> {
    let wt = scratch(gpu, op, len)?;
    let groups = (len as u64).div_ceil(64);
    let k = kernel(
        gpu,
        op,
        (relay_module(family), entry),
        params.clone(),
        &[(1, w), (3, &wt)],
        groups,
    )?;
    Ok((k, wt))
}

/// The module whose weight re-layouts `family` uses: one that rounds as `family` does.
fn relay_module(family: KernelFamily) -> KernelFamily {
    match family.precision() {
        crate::gpu::Precision::Fp32 => SHARED,
        crate::gpu::Precision::Mixed => KernelFamily::Register16x16F16,
    }
}

/// How many partial sums of the weights' gradient [K, C/groups*R*S] one binding holds (at least 1):
/// the splits of a backward to the weights stay below it, so that they fit a device with small
/// bindings (where one does not, the weight itself does not either).
fn splits_that_fit(gpu: &Gpu, sh: &Conv2dShape) -> usize {
    (gpu.max_view_floats() / sh.w_shape().iter().product::<usize>()).max(1)
}

fn scratch(gpu: &Gpu, op: &'static str, len: usize) -> Result<Tensor> {
    gpu.check_binding(op, 0, len as u64 * 4)?;
    gpu.zeros(&[len])
}

/// Why a forced `family` cannot run on `gpu` (it needs the tensor cores' features).
pub(crate) fn cannot_run(gpu: &Gpu, family: KernelFamily) -> Error {
    let fits =
        crate::gpu::tensor_cores_fit(&gpu.info, gpu.adapter_features, &gpu.cooperative_matrices);
    let why = match fits {
        true => "which RESNET_COOPERATIVE=0 leaves off".to_string(),
        false => format!(
            "which {} ({:?}) does not offer; `resnet info` lists what it has",
            gpu.info.name, gpu.info.backend
        ),
    };
    Error::Invalid(format!(
        "kernel family {} (`kernels` or RESNET_KERNELS) needs cooperative matrices (16x16x16 \
         f16*f16+f32 in subgroups of 32), {why}",
        family.name()
    ))
}

/// The key kernel choices are remembered under: the shape's, with 16 appended in mixed precision
/// (an f16 family's choice is never taken for an fp32 run, nor the reverse) and then 1 where the
/// tensor-core family runs (a choice made without it is made again with it, and the reverse).
fn choice_key(gpu: &Gpu, sh: &Conv2dShape) -> Vec<usize> {
    let mut key = sh.key();
    if gpu.precision == crate::gpu::Precision::Mixed {
        key.push(16);
        if KernelFamily::Coop64x64F16.runs_on(gpu.features) {
            key.push(1);
        }
    }
    key
}

/// The kernels of `op` at `sh` in the family chosen for this shape: measured once per shape
/// (every family built and timed, the fastest kept and remembered) when the device tunes, else
/// the device's family (noted for [`tune_pending`] where the device cannot block to time).
fn pick(
    gpu: &Gpu,
    op: &'static str,
    sh: &Conv2dShape,
    build: impl Fn(KernelFamily) -> Result<Vec<Kernel>>,
) -> Result<Vec<Kernel>> {
    // a remembered name no family has any more is no choice: it is measured again
    let key = choice_key(gpu, sh);
    let chosen = gpu.choice(op, &key).and_then(KernelFamily::from_name);
    if let Some(f) = chosen.filter(|f| f.precision() == gpu.precision && f.runs_on_gpu(gpu)) {
        return build(f);
    }
    let own = KernelFamily::of(gpu);
    if !own.runs_on_gpu(gpu) {
        return Err(cannot_run(gpu, own));
    }
    #[cfg(not(target_arch = "wasm32"))]
    if gpu.tunes() {
        return tune::fastest(gpu, op, sh, build);
    }
    gpu.note_untuned(op, &key);
    build(own)
}

/// The forward's shape is valid, x, w and y have its shapes, the weights are f32 and x and y
/// activations of one type.
fn check_forward(sh: &Conv2dShape, x: &Tensor, w: &Tensor, y: &Tensor) -> Result<()> {
    sh.validate(FORWARD)?;
    check_shape(FORWARD, "x", x, &sh.x_shape())?;
    check_shape(FORWARD, "weight", w, &sh.w_shape())?;
    check_shape(FORWARD, "y", y, &sh.y_shape())?;
    check_dtype(FORWARD, "weight", w, Dtype::F32)?;
    check_dtype(FORWARD, "y", y, x.dtype)
}

/// Records y = conv2d(x, w) + bias. Returns the kernels to dispatch, in order.
pub fn forward(
    gpu: &Gpu,
    sh: &Conv2dShape,
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    y: &Tensor,
) -> Result<Vec<Kernel>> {
    let epi = Epilogue {
        bias,
        ..Default::default()
    };
    forward_epilogue(gpu, sh, x, w, &epi, y)
}

/// Records y = relu?(conv2d(x, w) + bias? + residual?) in one pass, every family alike.
pub fn forward_epilogue(
    gpu: &Gpu,
    sh: &Conv2dShape,
    x: &Tensor,
    w: &Tensor,
    epi: &Epilogue,
    y: &Tensor,
) -> Result<Vec<Kernel>> {
    const OP: &str = FORWARD;
    check_forward(sh, x, w, y)?;
    if let Some(b) = epi.bias {
        check_shape(OP, "bias", b, &[sh.k])?;
        check_dtype(OP, "bias", b, Dtype::F32)?;
    }
    if let Some(r) = epi.residual {
        check_shape(OP, "residual", r, &sh.y_shape())?;
        check_dtype(OP, "residual", r, x.dtype)?;
    }
    let ks = match sh.groups {
        1 => pick(gpu, OP, sh, |f| {
            forward_with(gpu, sh, x, w, epi, y, f, (None, None))
        })?,
        _ => grouped::forward(gpu, sh, (x, None), w, (epi, None), y)?,
    };
    Ok(count_flops(ks, sh.flops()))
}

/// The length of BatchNorm's partial statistics of `sh`'s output ([`forward_with_stats`]):
/// [K, ceil(N*P*Q / 8), 3], per output channel and run of 8 output pixels (in N*P*Q order) the
/// count of pixels, their mean and their sum of squared deviations.
pub fn stats_len(sh: &Conv2dShape) -> usize {
    sh.k * (sh.n * sh.p() * sh.q()).div_ceil(8) * 3
}

/// [`forward`] without bias that also writes BatchNorm's partial statistics of `y` into `stats`
/// ([`stats_len`] values; `batchnorm::forward_train_from` merges them), where the family chosen
/// for the shape computes them in its epilogue ([`KernelFamily::writes_stats`]): the register
/// families, whose invocations hold 8 pixels of each of their channels in registers, the
/// register-tile GEMMs, whose pairs of invocations do, and the tensor-core tile, from the
/// blocks it stages in workgroup memory; not the tiled kernel. (kernels, whether they write the
/// statistics.)
pub fn forward_with_stats(
    gpu: &Gpu,
    sh: &Conv2dShape,
    x: &Tensor,
    w: &Tensor,
    y: &Tensor,
    stats: &Tensor,
) -> Result<(Vec<Kernel>, bool)> {
    forward_bn_in(gpu, sh, (x, None), w, y, Some(stats))
}

/// The BatchNorm parameters [`forward_bn_in`] and [`backward_weight_bn_in`] take: scale, then
/// shift, of each of the convolution's input channels (`batchnorm::on_load_len`).
fn check_bn_in(op: &'static str, sh: &Conv2dShape, bn_in: Option<&Tensor>) -> Result<()> {
    let Some(t) = bn_in else { return Ok(()) };
    check_shape(op, "BatchNorm-on-load parameters", t, &[2 * sh.c])?;
    check_dtype(op, "BatchNorm-on-load parameters", t, Dtype::F32)
}

/// [`forward_with_stats`] (statistics where `stats` is given) whose input is x, or with `bn_in`
/// relu(BN(x)) of the training BatchNorm below, applied as every family loads x: `bn_in` holds
/// that BN as relu(x * scale + shift), scale then shift per input channel
/// (`batchnorm::forward_train_on_load` writes them), so relu(BN(x)) is never stored. No bias.
/// (kernels, whether they write the statistics.)
pub fn forward_bn_in(
    gpu: &Gpu,
    sh: &Conv2dShape,
    (x, bn_in): (&Tensor, Option<&Tensor>),
    w: &Tensor,
    y: &Tensor,
    stats: Option<&Tensor>,
) -> Result<(Vec<Kernel>, bool)> {
    const OP: &str = FORWARD;
    check_forward(sh, x, w, y)?;
    check_bn_in(OP, sh, bn_in)?;
    if let Some(stats) = stats {
        check_shape(OP, "stats", stats, &[stats_len(sh)])?;
        check_dtype(OP, "stats", stats, Dtype::F32)?;
    }
    let epi = Epilogue::default();
    if sh.groups > 1 {
        let ks = grouped::forward(gpu, sh, (x, bn_in), w, (&epi, stats), y)?;
        return Ok((count_flops(ks, sh.flops()), stats.is_some()));
    }
    let ks = pick(gpu, OP, sh, |f| {
        forward_with(gpu, sh, x, w, &epi, y, f, (stats, bn_in))
    })?;
    // the kernels kept are the ones that write them (a race may have kept another family)
    let written = stats.is_some()
        && (ks.iter()).any(|k| k.name == "conv_fwd_reg" || k.name == gemm::STATS_ENTRY);
    Ok((count_flops(ks, sh.flops()), written))
}

/// The forward on `family`'s kernels, with BatchNorm's partial statistics where `stats` and the
/// BatchNorm below on load where `bn_in` (no bias then: it takes the bias's binding); `epi`'s
/// tensors checked by the caller.
#[allow(clippy::too_many_arguments)]
pub(super) fn forward_with(
    gpu: &Gpu,
    sh: &Conv2dShape,
    x: &Tensor,
    w: &Tensor,
    epi: &Epilogue,
    y: &Tensor,
    family: KernelFamily,
    (stats, bn_in): (Option<&Tensor>, Option<&Tensor>),
) -> Result<Vec<Kernel>> {
    const OP: &str = FORWARD;
    let npq = (sh.n * sh.p() * sh.q()) as u64;
    // the BN's scale and shift take the bias's binding: a convolution before a BN has no bias
    debug_assert!(
        bn_in.is_none() || epi.bias.is_none(),
        "BN on load with a bias"
    );
    let (no_bias, no_residual) = (dummy(gpu)?, dummy(gpu)?);
    let (b, res) = (
        bn_in.or(epi.bias).unwrap_or(&no_bias),
        epi.residual.unwrap_or(&no_residual),
    );
    let on_load = bn_in.is_some();
    let (cb, pb) = match family.scheme() {
        Scheme::Gemm(tile) | Scheme::Coop(tile) => {
            let ins = (x, w, b, res);
            let bits = (epi.bits(), on_load);
            return gemm::forward(gpu, sh, ins, bits, y, stats, family, tile);
        }
        Scheme::Register { channels, pixels } => (channels, pixels),
        Scheme::Tiled => {
            let params = sh.params(1, 0, epi.bits(), 16);
            let tiles = (sh.k as u64).div_ceil(64) * npq.div_ceil(64);
            let bufs = [(1, w), (2, x), (3, y), (4, b), (7, res)];
            let entry = Entry::loading(family, "conv_fwd_tiled", on_load);
            let k = kernel_grid(gpu, OP, entry, params, &bufs, tiles, 1)?;
            return Ok(vec![k]);
        }
    };
    let params = sh.params_with(1, 0, epi.bits(), cb, stats.is_some() as usize);
    let kpad = sh.k.div_ceil(cb) * cb;
    let (t, wt) = weights_for_forward(gpu, sh, w, &params, (family, cb))?;
    let groups = (npq.div_ceil(pb as u64) * (kpad / cb) as u64).div_ceil(64);
    let no_stats = dummy(gpu)?;
    let stats = stats.unwrap_or(&no_stats);
    let bufs = [(2, x), (3, y), (4, b), (5, &wt), (6, stats), (7, res)];
    let entry = Entry::loading(family, "conv_fwd_reg", on_load);
    let c = kernel(gpu, OP, entry, params, &bufs, groups)?;
    Ok(vec![t, c])
}

/// Records dx = conv2d backward to the input, given dy and w.
pub fn backward_input(
    gpu: &Gpu,
    sh: &Conv2dShape,
    dy: &Tensor,
    w: &Tensor,
    dx: &Tensor,
) -> Result<Vec<Kernel>> {
    const OP: &str = BACKWARD_INPUT;
    check_backward_input(sh, dy, w, dx)?;
    let ks = match sh.groups {
        1 => pick(gpu, OP, sh, |f| {
            backward_input_with(gpu, sh, dy, w, dx, f, DxEpilogue::None)
        })?,
        _ => grouped::backward_input(gpu, sh, dy, w, dx, None)?,
    };
    Ok(count_flops(ks, sh.flops()))
}

/// What the backward to the input does besides dx: nothing, the first half of the backward of
/// the BatchNorm below ([`backward_input_bn`]), or adding another gradient of the same input
/// ([`backward_input_add`]).
#[derive(Clone, Copy)]
pub(super) enum DxEpilogue<'a> {
    None,
    Bn(&'a BnBelow<'a>),
    Add(&'a Tensor),
}

impl DxEpilogue<'_> {
    /// The shaders' `stats` word for the BatchNorm epilogue: BN_SUMS, BN_MASK_FROM_OUTPUT and
    /// BN_ADD_SIDE bits.
    fn bn_bits(&self) -> usize {
        match self {
            DxEpilogue::Bn(bn) => {
                1 | (bn.out.is_some() as usize) << 1 | (bn.side.is_some() as usize) << 2
            }
            _ => 0,
        }
    }

    /// The shaders' `epi` word: OUT_RESIDUAL for an addition.
    fn bits(&self) -> usize {
        match self {
            DxEpilogue::Add(other) => Epilogue {
                residual: Some(other),
                ..Default::default()
            }
            .bits(),
            _ => 0,
        }
    }
}

/// Records dx = conv2d backward to the input of dy, plus `other` (the gradient another path
/// brings to the same input: a block's shortcut), in one pass, every family alike.
pub fn backward_input_add(
    gpu: &Gpu,
    sh: &Conv2dShape,
    dy: &Tensor,
    w: &Tensor,
    other: &Tensor,
    dx: &Tensor,
) -> Result<Vec<Kernel>> {
    const OP: &str = BACKWARD_INPUT;
    check_backward_input(sh, dy, w, dx)?;
    check_shape(OP, "added gradient", other, &sh.x_shape())?;
    check_dtype(OP, "added gradient", other, dy.dtype)?;
    let epi = DxEpilogue::Add(other);
    let ks = match sh.groups {
        1 => pick(gpu, OP, sh, |f| {
            backward_input_with(gpu, sh, dy, w, dx, f, epi)
        })?,
        _ => grouped::backward_input(gpu, sh, dy, w, dx, Some(other))?,
    };
    Ok(count_flops(ks, sh.flops()))
}

/// The backward to the input's shape is valid and dy, w and dx have its shapes.
fn check_backward_input(sh: &Conv2dShape, dy: &Tensor, w: &Tensor, dx: &Tensor) -> Result<()> {
    const OP: &str = BACKWARD_INPUT;
    sh.validate(OP)?;
    check_shape(OP, "dy", dy, &sh.y_shape())?;
    check_shape(OP, "weight", w, &sh.w_shape())?;
    check_shape(OP, "dx", dx, &sh.x_shape())?;
    check_dtype(OP, "weight", w, Dtype::F32)?;
    check_dtype(OP, "dx", dx, dy.dtype)
}

/// The training BatchNorm (+ ReLU) whose output relu(BN(x) [+ residual]) is a convolution's
/// input, for [`backward_input_bn`]: its input x [N, C, H, W], gamma then beta [2, C], its batch
/// mean then invstd [2, C], and where the sums go ([`bn_sums_len`] values). Where the BN added a
/// residual (a block's last, below the next block's first convolution), `out` is its output
/// (the ReLU's mask: the recomputed pre-activation would lack the residual) and `side` the
/// gradient the next block's shortcut brings to it, added to dx before the mask.
#[derive(Clone, Copy)]
pub struct BnBelow<'a> {
    pub x: &'a Tensor,
    pub affine: &'a Tensor,
    pub saved: &'a Tensor,
    pub sums: &'a Tensor,
    pub out: Option<&'a Tensor>,
    pub side: Option<&'a Tensor>,
}

impl<'a> BnBelow<'a> {
    /// The epilogue's bindings (the shader's absent ones get dummies: `shared_bindings`).
    fn bindings(&self) -> Vec<(u32, &'a Tensor)> {
        let mut b = vec![
            (1, self.affine),
            (4, self.saved),
            (6, self.sums),
            (7, self.x),
        ];
        b.extend(self.side.map(|t| (8, t)));
        b.extend(self.out.map(|t| (9, t)));
        b
    }
}

/// The length of the backward sums of [`backward_input_bn`]: [C, ceil(N*H*W / 4), 2], per input
/// channel and run of 4 input pixels sum(g * xhat) and sum(g).
pub fn bn_sums_len(sh: &Conv2dShape) -> usize {
    sh.c * (sh.n * sh.h * sh.w).div_ceil(4) * 2
}

/// [`backward_input`] that, where the family chosen for the shape can (every family but the
/// tiled one, [`KernelFamily::writes_stats`]), also does the first half of
/// `bn`'s backward in its epilogue: dx masked where the BN's pre-activation is not positive
/// (the ReLU's backward: dx is then that BN's g) and its sums `bn.sums`
/// (`batchnorm::backward_from` finishes it). (kernels, whether they did.)
pub fn backward_input_bn(
    gpu: &Gpu,
    sh: &Conv2dShape,
    dy: &Tensor,
    w: &Tensor,
    dx: &Tensor,
    bn: &BnBelow,
) -> Result<(Vec<Kernel>, bool)> {
    const OP: &str = BACKWARD_INPUT;
    check_backward_input(sh, dy, w, dx)?;
    check_shape(OP, "BatchNorm input", bn.x, &sh.x_shape())?;
    check_shape(OP, "BatchNorm gamma and beta", bn.affine, &[2, sh.c])?;
    check_shape(OP, "BatchNorm statistics", bn.saved, &[2, sh.c])?;
    check_shape(OP, "BatchNorm sums", bn.sums, &[bn_sums_len(sh)])?;
    check_dtype(OP, "BatchNorm input", bn.x, dy.dtype)?;
    for (what, t) in [("BatchNorm output", bn.out), ("shortcut gradient", bn.side)] {
        if let Some(t) = t {
            check_shape(OP, what, t, &sh.x_shape())?;
            check_dtype(OP, what, t, dy.dtype)?;
        }
    }
    for (what, t) in [
        ("BatchNorm parameters", bn.affine),
        ("statistics", bn.saved),
        ("sums", bn.sums),
    ] {
        check_dtype(OP, what, t, Dtype::F32)?;
    }
    if sh.groups > 1 {
        // no sums in the grouped kernel's epilogue: the caller reduces them, as after `tiled`
        let ks = grouped::backward_input(gpu, sh, dy, w, dx, bn.side)?;
        return Ok((count_flops(ks, sh.flops()), false));
    }
    let ks = pick(gpu, OP, sh, |f| {
        backward_input_with(gpu, sh, dy, w, dx, f, DxEpilogue::Bn(bn))
    })?;
    // the kernels kept are the ones that do (a race may have kept another family)
    let written = ks
        .iter()
        .any(|k| k.name == "conv_dx_reg" || k.name == gemm::BN_GRAD_ENTRY);
    Ok((count_flops(ks, sh.flops()), written))
}

pub(super) fn backward_input_with(
    gpu: &Gpu,
    sh: &Conv2dShape,
    dy: &Tensor,
    w: &Tensor,
    dx: &Tensor,
    family: KernelFamily,
    epi: DxEpilogue,
) -> Result<Vec<Kernel>> {
    const OP: &str = BACKWARD_INPUT;
    let nhw = (sh.n * sh.h * sh.w) as u64;
    // a family without the BatchNorm epilogue still adds what the BN's dy adds up
    let epi = match epi {
        DxEpilogue::Bn(bn) if !family.writes_stats() => {
            bn.side.map_or(DxEpilogue::None, DxEpilogue::Add)
        }
        epi => epi,
    };
    let (cb, pb) = match family.scheme() {
        Scheme::Gemm(tile) | Scheme::Coop(tile) => {
            return gemm::backward_input(gpu, sh, dy, w, dx, epi, family, tile);
        }
        Scheme::Register { channels, pixels } => (channels, pixels),
        Scheme::Tiled => {
            let params = sh.params(1, 0, epi.bits(), 16);
            let tiles = (sh.c as u64).div_ceil(64) * nhw.div_ceil(64);
            let dummy_bias = dummy(gpu)?;
            let mut bufs = vec![(1, w), (2, dy), (3, dx), (4, &dummy_bias)];
            if let DxEpilogue::Add(other) = epi {
                bufs.push((7, other));
            }
            let k = kernel_grid(gpu, OP, (family, "conv_dx_tiled"), params, &bufs, tiles, 1)?;
            return Ok(vec![k]);
        }
    };
    let params = sh.params_with(1, 0, epi.bits(), cb, epi.bn_bits());
    let cpad = sh.c.div_ceil(cb) * cb;
    let (t, wt) = weights_for_input(gpu, sh, w, &params, (family, cb))?;
    let blocks = nhw.div_ceil(pb as u64) * (cpad / cb) as u64;
    let mut bufs = vec![(2, dy), (3, dx), (5, &wt)];
    match epi {
        DxEpilogue::Bn(bn) => bufs.extend(bn.bindings()),
        DxEpilogue::Add(other) => bufs.push((7, other)),
        DxEpilogue::None => {}
    }
    let c = kernel(
        gpu,
        OP,
        (family, "conv_dx_reg"),
        params,
        &bufs,
        blocks.div_ceil(64),
    )?;
    Ok(vec![t, c])
}

/// Records dw (and db if given) = conv2d backward to the weights, given x and dy.
/// Partial sums per split are reduced in a fixed order, so results are bit-reproducible.
pub fn backward_weight(
    gpu: &Gpu,
    sh: &Conv2dShape,
    x: &Tensor,
    dy: &Tensor,
    dw: &Tensor,
    db: Option<&Tensor>,
) -> Result<Vec<Kernel>> {
    backward_weight_bn_in(gpu, sh, (x, None), dy, dw, db)
}

/// [`backward_weight`] whose input is x, or with `bn_in` relu(BN(x)) of the BatchNorm below,
/// applied as x is loaded (as [`forward_bn_in`] does).
pub fn backward_weight_bn_in(
    gpu: &Gpu,
    sh: &Conv2dShape,
    (x, bn_in): (&Tensor, Option<&Tensor>),
    dy: &Tensor,
    dw: &Tensor,
    db: Option<&Tensor>,
) -> Result<Vec<Kernel>> {
    const OP: &str = BACKWARD_WEIGHT;
    sh.validate(OP)?;
    check_bn_in(OP, sh, bn_in)?;
    check_shape(OP, "x", x, &sh.x_shape())?;
    check_shape(OP, "dy", dy, &sh.y_shape())?;
    check_shape(OP, "dw", dw, &sh.w_shape())?;
    check_dtype(OP, "dy", dy, x.dtype)?;
    check_dtype(OP, "dw", dw, Dtype::F32)?;
    if let Some(db) = db {
        check_shape(OP, "db", db, &[sh.k])?;
        check_dtype(OP, "db", db, Dtype::F32)?;
    }
    let ks = match sh.groups {
        1 => pick(gpu, OP, sh, |f| {
            backward_weight_with(gpu, sh, (x, bn_in), dy, dw, db, f)
        })?,
        _ => grouped::backward_weight(gpu, sh, (x, bn_in), dy, dw, db)?,
    };
    Ok(count_flops(ks, sh.flops()))
}

pub(super) fn backward_weight_with(
    gpu: &Gpu,
    sh: &Conv2dShape,
    x: (&Tensor, Option<&Tensor>),
    dy: &Tensor,
    dw: &Tensor,
    db: Option<&Tensor>,
    family: KernelFamily,
) -> Result<Vec<Kernel>> {
    let (mut kernels, partial, splits) = match family.scheme() {
        Scheme::Register { channels, pixels } => {
            dw_register(gpu, sh, x, dy, family, (channels, pixels))?
        }
        Scheme::Gemm(tile) | Scheme::Coop(tile) => {
            gemm::backward_weight(gpu, sh, x, dy, family, tile)?
        }
        Scheme::Tiled => dw_tiled(gpu, sh, x, dy, family)?,
    };
    kernels.extend(reduce_weight_sums(
        gpu,
        sh,
        (&partial, splits),
        dw,
        (dy, db),
    )?);
    Ok(kernels)
}

/// dw = the `splits` partial sums [splits, K, C, R, S] of the weights' gradient added in a fixed
/// order (`conv_dw_reduce`), and db = dy's sum per output channel where given: the end of every
/// backward to the weights (the grouped one's with `sh` its dense weight of a group's channels).
fn reduce_weight_sums(
    gpu: &Gpu,
    sh: &Conv2dShape,
    (partial, splits): (&Tensor, usize),
    dw: &Tensor,
    (dy, db): (&Tensor, Option<&Tensor>),
) -> Result<Vec<Kernel>> {
    const OP: &str = BACKWARD_WEIGHT;
    let params = sh.params(splits, 0, 0, 16);
    let groups = ((sh.k * sh.c * sh.r * sh.s) as u64).div_ceil(64);
    let reduce = (SHARED, "conv_dw_reduce");
    let bufs = [(1, partial), (3, dw)];
    let mut kernels = vec![kernel(gpu, OP, reduce, params.clone(), &bufs, groups)?];
    if let Some(db) = db {
        let bufs = [(1, dy), (3, db)];
        let entry = (SHARED, "conv_db");
        kernels.push(kernel_grid(gpu, OP, entry, params, &bufs, sh.k as u64, 1)?);
    }
    Ok(kernels)
}

/// The register kernel of dw, split over output rows (n, p) so that about 4096 invocations run:
/// (kernels, partial sums [splits, K, C*R*S], splits).
fn dw_register(
    gpu: &Gpu,
    sh: &Conv2dShape,
    (x, bn_in): (&Tensor, Option<&Tensor>),
    dy: &Tensor,
    family: KernelFamily,
    (cb, pb): (usize, usize),
) -> Result<(Vec<Kernel>, Tensor, usize)> {
    const OP: &str = BACKWARD_WEIGHT;
    let crs = sh.c * sh.r * sh.s;
    let rows = sh.n * sh.p();
    let blocks = crs.div_ceil(pb) * sh.k.div_ceil(cb);
    let want = 4096usize
        .div_ceil(blocks)
        .clamp(1, rows)
        .min(splits_that_fit(gpu, sh));
    let chunk = rows.div_ceil(want);
    let splits = rows.div_ceil(chunk);
    let partial = scratch(gpu, OP, splits * sh.k * crs)?;
    let params = sh.params(splits, chunk, 0, cb);
    let mut bufs = vec![(1, dy), (2, x), (3, &partial)];
    bufs.extend(bn_in.map(|t| (4, t)));
    let groups = ((splits * blocks) as u64).div_ceil(64);
    let entry = Entry::loading(family, "conv_dw_reg", bn_in.is_some());
    let k = kernel(gpu, OP, entry, params, &bufs, groups)?;
    Ok((vec![k], partial, splits))
}

/// The tiled kernel of dw, split over N*P*Q so that about 512 tiles run.
fn dw_tiled(
    gpu: &Gpu,
    sh: &Conv2dShape,
    (x, bn_in): (&Tensor, Option<&Tensor>),
    dy: &Tensor,
    family: KernelFamily,
) -> Result<(Vec<Kernel>, Tensor, usize)> {
    const OP: &str = BACKWARD_WEIGHT;
    let crs = sh.c * sh.r * sh.s;
    let npq = sh.n * sh.p() * sh.q();
    let tiles = sh.k.div_ceil(64) * crs.div_ceil(64);
    let want = 512usize
        .div_ceil(tiles)
        .clamp(1, npq.div_ceil(16))
        .min(splits_that_fit(gpu, sh));
    let chunk = npq.div_ceil(want).div_ceil(16) * 16;
    let splits = npq.div_ceil(chunk);
    let partial = scratch(gpu, OP, splits * sh.k * crs)?;
    let params = sh.params(splits, chunk, 0, 16);
    let dummy_bias = dummy(gpu)?;
    let bufs = [
        (1, dy),
        (2, x),
        (3, &partial),
        (4, bn_in.unwrap_or(&dummy_bias)),
    ];
    let (t, s) = (tiles as u64, splits as u64);
    let entry = Entry::loading(family, "conv_dw_tiled", bn_in.is_some());
    let k = kernel_grid(gpu, OP, entry, params, &bufs, t, s)?;
    Ok((vec![k], partial, splits))
}

#[cfg(test)]
mod tests {
    use super::Conv2dShape;

    #[test]
    fn choice_keys_read_back_as_their_shape() {
        let sh = Conv2dShape::new(8, 16, 32, 32, 32, 3, 2, 1);
        let key = sh.key();
        // fp32, mixed precision, mixed precision with tensor cores
        for tail in [&[][..], &[16], &[16, 1]] {
            assert_eq!(Conv2dShape::from_key(&[&key[..], tail].concat()), Some(sh));
        }
        for tail in [&[1][..], &[16, 2], &[16, 1, 1], &[32]] {
            assert_eq!(Conv2dShape::from_key(&[&key[..], tail].concat()), None);
        }
    }
}
