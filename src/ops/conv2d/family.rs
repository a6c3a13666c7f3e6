//! The convolution kernel families, one row each in the `families!` list below: the only place a family
//! is added (its row, its template if it brings one, and [`KERNEL_SET_VERSION`] bumped). A row
//! names the family (`--kernels`, the tuning cache), its shader module and the scheme its three
//! ops are built with, which sets the template's constants; everything else is derived from the
//! rows: parsing names, the device's default family, the modules' sources, and what the GPU
//! layer's choice store may record (it stores names and knows nothing of convolutions).

use super::template;
use crate::error::{Error, Result};
use crate::gpu::{Gpu, GpuOptions, KernelSet, Precision};
use std::sync::OnceLock;

/// The version of the kernel set: bump it whenever a family is added, removed or changed (its row
/// or its template), so that choices measured on the old kernels are measured again.
pub const KERNEL_SET_VERSION: u32 = 15;

/// The family of CPU drivers where nothing was measured: register blocks suit their registers.
const CPU_DEFAULT: KernelFamily = KernelFamily::Register16x16;

/// The family of GPUs where nothing was measured.
const GPU_DEFAULT: KernelFamily = KernelFamily::Gemm64x64;

/// The families of mixed precision where nothing was measured, on CPU drivers and GPUs.
const MIXED_DEFAULTS: (KernelFamily, KernelFamily) =
    (KernelFamily::Register16x16F16, KernelFamily::Gemm64x64F16);

const REGISTER_TEMPLATE: &str = include_str!("../../../shaders/conv2d.wgsl");
const GEMM_TEMPLATE: &str = include_str!("../../../shaders/conv2d_gemm.wgsl");
const COOP_TEMPLATE: &str = include_str!("../../../shaders/conv2d_coop.wgsl");

/// The line of shaders/conv2d_gemm.wgsl above which its text is shared with the tensor-core
/// family (parameters, geometry, operand loads, the output's layout).
const GEMM_SHARED_END: &str = "// ==== the register-tile GEMM";

/// A tile of the GEMM kernels: rows (channels) and columns of C per workgroup, depth per step,
/// and the rows and columns each of the 256 invocations keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tile {
    /// Rows (output channels) of C per workgroup.
    pub tm: usize,
    /// Columns (pixels or weights) of C per workgroup.
    pub tn: usize,
    /// Depth per step through workgroup memory.
    pub tk: usize,
    /// Rows per invocation.
    pub rm: usize,
    /// Columns per invocation.
    pub rn: usize,
}

/// How a family computes the three ops (forward, backward to the input and to the weights), and
/// with it which template its module expands and with which constants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scheme {
    /// shaders/conv2d.wgsl's register kernels (`conv_fwd_reg`, `conv_dx_reg`, `conv_dw_reg`) on
    /// weights re-laid first, `channels` x `pixels` (or weights) per invocation (`CB` x `PB`).
    Register {
        /// Output channels per invocation (a multiple of 4).
        channels: usize,
        /// Pixels (or weights) per invocation (a multiple of 8: the forward's epilogue takes them
        /// 8 at a time, BatchNorm's runs).
        pixels: usize,
    },
    /// shaders/conv2d_gemm.wgsl's kernels (`conv_fwd_gemm`, `conv_dx_gemm`, `conv_dw_gemm`).
    Gemm(Tile),
    /// shaders/conv2d_coop.wgsl's tensor-core kernels on the GEMM family's operands and grid
    /// (same entry points): 16x16x16 cooperative matrices, f16 operands, f32 sums; 64x64x16
    /// tiles only. Offered where the device has cooperative matrices ([`KernelFamily::runs_on`]).
    Coop(Tile),
    /// shaders/conv2d.wgsl's workgroup-memory tiles of 64x64 outputs (`conv_fwd_tiled`,
    /// `conv_dx_tiled`, `conv_dw_tiled`): in every register module, taken from the 16x16 one.
    Tiled,
}

/// One family's row.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Family {
    /// The family.
    pub id: KernelFamily,
    /// The name `--kernels` takes and the tuning cache records.
    pub name: &'static str,
    /// A shorter name `--kernels` also takes.
    pub alias: Option<&'static str>,
    /// The shader module's name (pipeline cache, errors): rows of one name share one module.
    pub module: &'static str,
    /// How its ops are computed.
    pub scheme: Scheme,
    /// What its operands are rounded to (`Mixed`: f16 workgroup tiles, f32 accumulators).
    pub precision: Precision,
}

/// Declares [`KernelFamily`] and [`FAMILIES`] from one list, so that a family is one row (and
/// the enum's order is the table's).
macro_rules! families {
    ($($(#[$doc:meta])* $id:ident: $name:literal, $alias:expr, $module:literal, $precision:ident, $scheme:expr;)*) => {
        /// Which family of kernels a convolution is built from (docs/ARCHITECTURE.md, "Kernel
        /// families"): register blocking in several block sizes, whose best size depends on the
        /// registers of the CPU (or GPU) underneath; GPU-class implicit GEMM in several tile sizes (workgroup memory,
        /// double-buffered); or the first, simple workgroup-memory tiles. Measured 2-40x apart on
        /// lavapipe.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum KernelFamily {
            $($(#[$doc])* $id,)*
        }

        /// Every family's row, in the order of [`KernelFamily`] (the order the tuner tries them).
        pub(crate) const FAMILIES: &[Family] = &[$(Family {
            id: KernelFamily::$id,
            name: $name,
            alias: $alias,
            module: $module,
            scheme: $scheme,
            precision: Precision::$precision,
        },)*];
    };
}

// Columns: the family, its name, another name `--kernels` takes, its shader module, the precision
// of its operands, and the scheme with its constants (register blocks: channels x pixels; GEMM
// tiles: TM, TN, TK, RM, RN). Both workgroup buffers of each GEMM tile fit WebGPU's default
// 16 KiB: 2 * (TM + TN) * TK * 4 bytes (tested below); and each tile is 256 invocations:
// (TM / RM) * (TN / RN) (asserted when its module is expanded). A run races the families of its
// precision only: an f16 family never stands in for an fp32 one, nor the reverse.
families! {
    /// Register blocking, 16 channels x 16 pixels per invocation: many FMAs per load.
    Register16x16: "register16x16", Some("register"), "conv2d.wgsl",                Fp32, register(16, 16);
    /// Register blocking, 8 channels x 16 pixels: half the accumulators.
    Register8x16:  "register8x16",  None,             "conv2d.wgsl (8x16)",         Fp32, register(8, 16);
    /// Register blocking, 16 channels x 8 pixels.
    Register16x8:  "register16x8",  None,             "conv2d.wgsl (16x8)",         Fp32, register(16, 8);
    /// Register blocking, 8 channels x 8 pixels: the fewest registers.
    Register8x8:   "register8x8",   None,             "conv2d.wgsl (8x8)",          Fp32, register(8, 8);
    /// GPU GEMM tiles of 32 channels x 128 pixels, 4x4 per invocation: for layers of few channels.
    Gemm32x128:    "gemm32x128",    None,             "conv2d_gemm.wgsl (32x128)",  Fp32, gemm(32, 128, 8, 4, 4);
    /// GPU GEMM tiles of 64x64, 4x4 per invocation.
    Gemm64x64:     "gemm64x64",     Some("gemm"),     "conv2d_gemm.wgsl (64x64)",   Fp32, gemm(64, 64, 16, 4, 4);
    /// GPU GEMM tiles of 128x128, 8x8 per invocation: for wide layers on large GPUs.
    Gemm128x128:   "gemm128x128",   None,             "conv2d_gemm.wgsl (128x128)", Fp32, gemm(128, 128, 8, 8, 8);
    /// Simple workgroup-memory tiles of 64x64 outputs, 4x4 per invocation, one buffer.
    Tiled:         "tiled",         None,             "conv2d.wgsl",                Fp32, Scheme::Tiled;
    /// Register blocking 16x16 with operands rounded to f16, f32 accumulators (mixed precision).
    Register16x16F16: "register16x16-f16", Some("register-f16"), "conv2d.wgsl (f16)", Mixed, register(16, 16);
    /// Register blocking 8x16 in f16.
    Register8x16F16:  "register8x16-f16",  None, "conv2d.wgsl (8x16, f16)",  Mixed, register(8, 16);
    /// Register blocking 16x8 in f16.
    Register16x8F16:  "register16x8-f16",  None, "conv2d.wgsl (16x8, f16)",  Mixed, register(16, 8);
    /// Register blocking 8x8 in f16.
    Register8x8F16:   "register8x8-f16",   None, "conv2d.wgsl (8x8, f16)",   Mixed, register(8, 8);
    /// The 32x128 GEMM tile with f16 operands in workgroup memory and f32 accumulators.
    Gemm32x128F16:  "gemm32x128-f16",  None,              "conv2d_gemm.wgsl (32x128, f16)",  Mixed, gemm(32, 128, 8, 4, 4);
    /// The 64x64 GEMM tile in f16 (mixed precision's default).
    Gemm64x64F16:   "gemm64x64-f16",   Some("gemm-f16"),  "conv2d_gemm.wgsl (64x64, f16)",   Mixed, gemm(64, 64, 16, 4, 4);
    /// The 128x128 GEMM tile in f16.
    Gemm128x128F16: "gemm128x128-f16", None,              "conv2d_gemm.wgsl (128x128, f16)", Mixed, gemm(128, 128, 8, 8, 8);
    /// Tensor cores: the 64x64 GEMM tile multiplied as 16x16x16 cooperative matrices (f16 in, f32
    /// sums); only where the adapter has them (native Vulkan on NVIDIA-class GPUs).
    Coop64x64F16:   "coop64x64-f16",   Some("coop-f16"),  "conv2d_coop.wgsl (64x64, f16)",   Mixed, Scheme::Coop(Tile { tm: 64, tn: 64, tk: 16, rm: 0, rn: 0 });
}

/// The scheme of a register block of `channels` x `pixels`.
const fn register(channels: usize, pixels: usize) -> Scheme {
    Scheme::Register { channels, pixels }
}

/// The scheme of a GEMM tile.
const fn gemm(tm: usize, tn: usize, tk: usize, rm: usize, rn: usize) -> Scheme {
    Scheme::Gemm(Tile { tm, tn, tk, rm, rn })
}

impl KernelFamily {
    /// Every family, in the order the tuner tries them.
    pub const ALL: [KernelFamily; FAMILIES.len()] = {
        let mut all = [FAMILIES[0].id; FAMILIES.len()];
        let mut i = 0;
        while i < all.len() {
            all[i] = FAMILIES[i].id;
            i += 1;
        }
        all
    };

    /// This family's row (the enum and the table are declared together, in one order).
    fn row(self) -> &'static Family {
        &FAMILIES[self as usize]
    }

    /// The name `--kernels` takes and the tuning cache records.
    pub fn name(self) -> &'static str {
        self.row().name
    }

    /// The family of a name or alias (`register` is the 16x16 block, `gemm` the 64x64 tile).
    pub fn from_name(name: &str) -> Option<KernelFamily> {
        let name = name.trim().to_ascii_lowercase();
        FAMILIES
            .iter()
            .find(|f| f.name == name || f.alias == Some(name.as_str()))
            .map(|f| f.id)
    }

    /// How this family computes the ops.
    pub(crate) fn scheme(self) -> Scheme {
        self.row().scheme
    }

    /// What this family's operands are rounded to.
    pub fn precision(self) -> Precision {
        self.row().precision
    }

    /// The families of `precision`, in the order the tuner tries them.
    pub fn of_precision(precision: Precision) -> impl Iterator<Item = KernelFamily> {
        KernelFamily::ALL
            .into_iter()
            .filter(move |f| f.precision() == precision)
    }

    /// (channels, pixels) per invocation of a register family.
    pub fn register_block(self) -> Option<(usize, usize)> {
        match self.scheme() {
            Scheme::Register { channels, pixels } => Some((channels, pixels)),
            _ => None,
        }
    }

    /// Whether the family's forward can write BatchNorm's partial statistics of its output in its
    /// epilogue (`conv2d::forward_with_stats`), and its backward to the input the ReLU's mask and
    /// BatchNorm's backward sums (`conv2d::backward_input_bn`): every family but the tiled kernel.
    pub fn writes_stats(self) -> bool {
        !matches!(self.scheme(), Scheme::Tiled)
    }

    /// (rows, columns) of C per workgroup of a GEMM family, tensor cores' included (rows are
    /// channels).
    pub fn gemm_tile(self) -> Option<(usize, usize)> {
        match self.scheme() {
            Scheme::Gemm(t) | Scheme::Coop(t) => Some((t.tm, t.tn)),
            _ => None,
        }
    }

    /// Whether a device with `features` can run this family: the tensor-core family needs
    /// cooperative matrices, which `Gpu::open` enables only where the adapter fits it
    /// (`gpu::fits_tensor_core_family`); every other family runs everywhere its precision does.
    pub fn runs_on(self, features: wgpu::Features) -> bool {
        match self.scheme() {
            Scheme::Coop(_) => features.contains(
                wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX | wgpu::Features::SUBGROUP,
            ),
            _ => true,
        }
    }

    /// Whether `gpu` runs this family: [`KernelFamily::runs_on`] its features, or the
    /// tensor-core family with emulated cooperative matrices (`Gpu::cooperative_emulated`).
    pub fn runs_on_gpu(self, gpu: &Gpu) -> bool {
        self.runs_on(gpu.features) || (self.tensor_cores() && gpu.cooperative_emulated)
    }

    /// Whether this is the tensor-core family (cooperative matrices).
    pub fn tensor_cores(self) -> bool {
        matches!(self.scheme(), Scheme::Coop(_))
    }

    /// The families a device with `features` runs in `precision`, in the order the tuner tries
    /// them (for a `Gpu`: `offered(gpu.precision, gpu.features)`; the tuner never races an
    /// emulated family).
    pub fn offered(precision: Precision, features: wgpu::Features) -> Vec<KernelFamily> {
        KernelFamily::of_precision(precision)
            .filter(|f| f.runs_on(features))
            .collect()
    }

    /// The family ops build with on `gpu` where no per-shape choice says otherwise: the one
    /// `--kernels` forced, else in fp32 register blocks on CPU drivers and GEMM tiles on GPUs,
    /// and the same in f16 in mixed precision.
    pub fn of(gpu: &Gpu) -> KernelFamily {
        match gpu.forced_kernels().and_then(KernelFamily::from_name) {
            Some(f) => f,
            None => KernelFamily::default_for(gpu.info.device_type, gpu.precision),
        }
    }

    /// The family of a device of `device_type` in `precision` where nothing was forced or
    /// measured. Never the tensor-core family, even where it runs: wgpu 30 marks cooperative
    /// matrices experimental (its SPIR-V declares the Vulkan memory model without availability
    /// operands on workgroup barriers), so that family is taken where a race measured it, on
    /// adapters whose `resnet selftest --precision mixed` vouches for it.
    fn default_for(device_type: wgpu::DeviceType, precision: Precision) -> KernelFamily {
        let (on_cpu, on_gpu) = match precision {
            Precision::Fp32 => (CPU_DEFAULT, GPU_DEFAULT),
            Precision::Mixed => MIXED_DEFAULTS,
        };
        match device_type {
            wgpu::DeviceType::Cpu => on_cpu,
            _ => on_gpu,
        }
    }
}

impl Scheme {
    /// The source of this scheme's module: its template with its constants set, and in
    /// `Mixed` precision its workgroup tiles in f16 (the template's `alias tile_t = f32;`).
    fn source(self, module: &str, precision: Precision) -> String {
        if let Scheme::Coop(t) = self {
            return coop_source(module, t);
        }
        let f32_source = self.f32_source(module);
        match precision {
            Precision::Fp32 => f32_source,
            Precision::Mixed => {
                const ALIAS: &str = "alias tile_t = f32;";
                assert_eq!(
                    f32_source.matches(ALIAS).count(),
                    1,
                    "{module}: an f16 family needs its template's `{ALIAS}`"
                );
                let f16 = f32_source.replace(ALIAS, "alias tile_t = f16;");
                format!("enable f16;\n{}", own_exchange(module, f16))
            }
        }
    }

    /// The source of this scheme's module with f32 operands.
    fn f32_source(self, module: &str) -> String {
        match self {
            Scheme::Register { channels, pixels } => {
                assert!(
                    channels % 4 == 0 && pixels % 8 == 0,
                    "{module}: {channels}x{pixels}"
                );
                let consts = [("CB", channels), ("PB", pixels)];
                let counts = [
                    ("CB4", channels / 4),
                    ("PB4", pixels / 4),
                    ("PB8", pixels / 8),
                ];
                template::expand(module, REGISTER_TEMPLATE, &consts, &counts)
            }
            Scheme::Tiled => register(16, 16).f32_source(module),
            Scheme::Coop(_) => unreachable!("the tensor-core family has f16 operands only"),
            Scheme::Gemm(t) => {
                assert_eq!(
                    (t.tm / t.rm) * (t.tn / t.rn),
                    256,
                    "a tile needs 256 invocations"
                );
                // the statistics epilogue's exchange (256 vec4) lives in the B tiles, and pairs
                // of invocations hold runs of 8 pixels
                assert!(2 * t.tk * t.tn / 4 >= 256 && (t.tn / t.rn) % 2 == 0);
                let consts = [
                    ("TM", t.tm),
                    ("TN", t.tn),
                    ("TK", t.tk),
                    ("RM", t.rm),
                    ("RN", t.rn),
                ];
                // the counts marked lines may loop over
                let counts = [
                    ("RM", t.rm),
                    ("RM4", t.rm / 4),
                    ("RN4", t.rn / 4),
                    ("A_SLOADS", t.tk * t.tm / 256),
                    ("B_LOADS", t.tk * t.tn / 256),
                ];
                template::expand(module, GEMM_TEMPLATE, &consts, &counts)
            }
        }
    }
}

/// The GEMM template's statistics exchange (`xchg_put` / `xchg_get`, in the f32 B tiles) given
/// an array of f32 of its own, for the f16 families, whose tiles cannot hold f32: 4 KiB beside
/// their 8 KiB of tiles. Register modules have no exchange and are returned as they are.
fn own_exchange(module: &str, source: String) -> String {
    const IN_TILES: &str = "fn xchg_put(i: u32, v: vec4<f32>) { tile_b[i] = v; }\n\
                            fn xchg_get(i: u32) -> vec4<f32> { return tile_b[i]; }";
    const OWN: &str = "var<workgroup> xchg: array<vec4<f32>, 256>;\n\
                       fn xchg_put(i: u32, v: vec4<f32>) { xchg[i] = v; }\n\
                       fn xchg_get(i: u32) -> vec4<f32> { return xchg[i]; }";
    if !source.contains("fn xchg_put") {
        return source;
    }
    assert_eq!(
        source.matches(IN_TILES).count(),
        1,
        "{module}: the statistics exchange is not in the B tiles as expected"
    );
    source.replace(IN_TILES, OWN)
}

/// The tensor-core module: the shared part of the GEMM template (above [`GEMM_SHARED_END`]), then
/// shaders/conv2d_coop.wgsl, with the tile's constants set. Its kernels are written for 64x64x16
/// tiles of 8 subgroups: any other tile is a programming error.
fn coop_source(module: &str, t: Tile) -> String {
    assert_eq!(
        (t.tm, t.tn, t.tk),
        (64, 64, 16),
        "{module}: tiles of 64x64x16 only"
    );
    let shared_end = GEMM_TEMPLATE
        .find(GEMM_SHARED_END)
        .expect("conv2d_gemm.wgsl marks where its shared part ends");
    let template = format!("{}{COOP_TEMPLATE}", &GEMM_TEMPLATE[..shared_end]);
    let consts = [("TM", t.tm), ("TN", t.tn), ("TK", t.tk)];
    let counts = [
        ("A_SLOADS", t.tk * t.tm / 256),
        ("B_LOADS", t.tk * t.tn / 256),
    ];
    let body = template::expand(module, &template, &consts, &counts);
    format!("enable f16;\nenable wgpu_cooperative_matrix;\n{body}")
}

/// The shader module (name, source) that holds `family`'s kernels, expanded once per process.
pub(super) fn module(family: KernelFamily) -> (&'static str, &'static str) {
    static SOURCES: [OnceLock<String>; FAMILIES.len()] =
        [const { OnceLock::new() }; FAMILIES.len()];
    let row = family.row();
    let source =
        SOURCES[family as usize].get_or_init(|| row.scheme.source(row.module, row.precision));
    (row.module, source.as_str())
}

/// Every module's source (each once), for validation.
pub fn all_sources() -> Vec<(&'static str, &'static str)> {
    let mut all: Vec<_> = KernelFamily::ALL.into_iter().map(module).collect();
    all.sort_by_key(|m| m.0);
    all.dedup_by_key(|m| m.0);
    all
}

/// Parses a kernel family name: `register` (the 16x16 block), `register8x16`, `register16x8`,
/// `register8x8` (CPU drivers, small GPUs), `gemm` (the 64x64 tile), `gemm32x128`,
/// `gemm128x128` (GPUs) or `tiled`.
pub fn parse_kernel_family(name: &str) -> Result<KernelFamily> {
    KernelFamily::from_name(name).ok_or_else(|| {
        let names: Vec<&str> = KernelFamily::ALL.iter().map(|f| f.name()).collect();
        Error::Invalid(format!(
            "`kernels`: unknown kernel family '{}' (expected auto, register, gemm, {})",
            name.trim(),
            names.join(", ")
        ))
    })
}

impl Default for KernelSet {
    /// This build's kernel set: the convolution families (the only op with several kernels).
    fn default() -> KernelSet {
        KernelSet {
            version: KERNEL_SET_VERSION,
            canonical: |name| KernelFamily::from_name(name).map(KernelFamily::name),
        }
    }
}

// The options that name kernel families live here, beside the families, so that the GPU layer
// stores a name without knowing which names exist.
impl GpuOptions {
    /// Applies a `--kernels` value: a family name forces that family, `auto` measures every
    /// family per convolution shape.
    pub fn set_kernels(&mut self, name: &str) -> Result<()> {
        if name.trim().eq_ignore_ascii_case("auto") {
            self.kernel_family = None;
            self.tune = Some(true);
        } else {
            self.kernel_family = Some(parse_kernel_family(name)?.name());
            self.tune = Some(false);
        }
        Ok(())
    }

    /// Applies a `--precision` value, after `--kernels` (and `RESNET_KERNELS`): a family forced
    /// there computes in this precision (its twin of the same scheme, else an error).
    pub fn set_precision(&mut self, precision: Precision) -> Result<()> {
        self.precision = precision;
        self.check_kernels_precision()
    }

    /// A forced family computes in the run's precision: one of the other precision becomes its
    /// twin of the same scheme (`--kernels gemm --amp` is the f16 64x64 GEMM tile), and where
    /// there is none the error lists the families that fit.
    fn check_kernels_precision(&mut self) -> Result<()> {
        let Some(f) = self.kernel_family.and_then(KernelFamily::from_name) else {
            return Ok(());
        };
        if f.precision() == self.precision {
            return Ok(());
        }
        // fp32's names (and RESNET_KERNELS=register) carry over to mixed precision; an f16 name
        // in an fp32 run is a mistake, not a wish for its fp32 twin
        let twin = KernelFamily::of_precision(self.precision).find(|t| t.scheme() == f.scheme());
        if let (Some(twin), Precision::Mixed) = (twin, self.precision) {
            self.kernel_family = Some(twin.name());
            return Ok(());
        }
        let names: Vec<&str> = KernelFamily::of_precision(self.precision)
            .map(KernelFamily::name)
            .collect();
        Err(Error::Invalid(format!(
            "kernel family {} (`kernels` or RESNET_KERNELS) is a {} family; `precision` {} takes {}",
            f.name(),
            f.precision().name(),
            self.precision.name(),
            names.join(", ")
        )))
    }

    /// Options from the environment: `WGPU_BACKEND` (read by wgpu), `RESNET_KERNELS`,
    /// `RESNET_TIMESTAMPS` (`0` leaves timestamp queries off), `RESNET_COOPERATIVE` (`0`
    /// leaves cooperative matrices, the tensor-core family, off; `emulate` runs that family with
    /// emulated ones where the adapter has none, for testing) and `RESNET_FUSE` (`0` records
    /// the ops unfused).
    pub fn from_env() -> Result<Self> {
        let mut o = GpuOptions::default();
        match std::env::var("RESNET_KERNELS") {
            Ok(v) if !v.is_empty() => o.set_kernels(&v)?,
            _ => {}
        }
        o.no_timestamps = switched_off("RESNET_TIMESTAMPS")?;
        match std::env::var("RESNET_COOPERATIVE").as_deref() {
            Ok("emulate") => o.emulate_cooperative = true,
            _ => {
                o.no_cooperative = switched_off("RESNET_COOPERATIVE").map_err(|e| {
                    Error::Invalid(format!(
                        "{e}, nor emulate (the tensor-core family in scalar code)"
                    ))
                })?
            }
        }
        o.no_fusion = switched_off("RESNET_FUSE")?;
        Ok(o)
    }
}

/// Whether the switch `var` (on unless set to 0 or off) is off; another value is an error.
fn switched_off(var: &str) -> Result<bool> {
    match std::env::var(var).as_deref() {
        Err(_) | Ok("") | Ok("1") | Ok("on") => Ok(false),
        Ok("0") | Ok("off") => Ok(true),
        Ok(other) => Err(Error::Invalid(format!(
            "{var}: '{other}' is neither 0 nor 1 (off or on)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_aliases_parse_to_their_rows() {
        for f in KernelFamily::ALL {
            assert_eq!(KernelFamily::from_name(f.name()), Some(f));
            assert_eq!(f.row().id, f);
        }
        assert_eq!(
            KernelFamily::from_name(" Register "),
            Some(KernelFamily::Register16x16)
        );
        assert_eq!(
            KernelFamily::from_name("gemm"),
            Some(KernelFamily::Gemm64x64)
        );
        assert_eq!(KernelFamily::from_name("auto"), None);
    }

    #[test]
    fn rows_that_share_a_module_share_its_source() {
        for a in KernelFamily::ALL {
            for b in KernelFamily::ALL {
                if module(a).0 == module(b).0 {
                    assert_eq!(module(a).1, module(b).1, "{a:?} {b:?}");
                }
            }
        }
    }

    #[test]
    fn every_tile_constant_is_set_and_every_marked_line_written_out() {
        let e = module(KernelFamily::Gemm128x128).1;
        assert!(e.contains("const TM: u32 = 128u;") && e.contains("const RN: u32 = 8u;"));
        assert!(e.contains("const TK: u32 = 8u;") && !e.contains("const TM: u32 = 64u;"));
        assert!(!e.lines().any(|l| l.trim_start().starts_with("//%")) && !e.contains("{r}"));
        assert!(!e.contains("{#}"));
        // 8 rows x 2 column groups of accumulators, each declared, updated and picked once for
        // the epilogue's loop (case 15 = row 7, group 1), plus the loop's own `var acc:`
        assert_eq!(e.matches("var acc").count(), 16 + 1);
        assert!(e.contains("acc7_1 += a1[3u] * b1;"));
        assert!(e.contains("case 15u: { acc = acc7_1; }") && !e.contains("case 16u"));
    }

    #[test]
    fn both_buffers_fit_webgpus_default_workgroup_storage() {
        for f in FAMILIES {
            let bytes = match f.scheme {
                Scheme::Gemm(t) => 2 * (t.tm + t.tn) * t.tk * 4,
                // f16 tiles, and 8 subgroups' 16x16 f32 blocks staged for the output
                Scheme::Coop(t) => 2 * (t.tm + t.tn) * t.tk * 2 + 8 * 16 * 16 * 4,
                _ => continue,
            };
            assert!(bytes <= 16384, "{}: {bytes} bytes", f.name);
        }
    }

    #[test]
    fn the_tensor_core_family_needs_cooperative_matrices() {
        use wgpu::Features as F;
        let f16 = F::SHADER_F16;
        let tensor_cores = f16 | F::EXPERIMENTAL_COOPERATIVE_MATRIX | F::SUBGROUP;
        let coop = KernelFamily::Coop64x64F16;
        let with = KernelFamily::offered(Precision::Mixed, tensor_cores);
        let without = KernelFamily::offered(Precision::Mixed, f16);
        assert!(with.contains(&coop) && !without.contains(&coop));
        assert_eq!(
            with.len(),
            without.len() + 1,
            "nothing else depends on them"
        );
        // subgroups are needed as well (the kernels read subgroup_id)
        let no_subgroups = tensor_cores - F::SUBGROUP;
        assert!(!KernelFamily::offered(Precision::Mixed, no_subgroups).contains(&coop));
        // never in fp32, whatever the device has
        assert!(!KernelFamily::offered(Precision::Fp32, tensor_cores).contains(&coop));
        // untuned, mixed precision takes the f16 GEMM tile on GPUs, tensor cores or not
        let (gpu, cpu) = (wgpu::DeviceType::DiscreteGpu, wgpu::DeviceType::Cpu);
        let mixed = |device| KernelFamily::default_for(device, Precision::Mixed);
        assert_eq!(mixed(gpu), KernelFamily::Gemm64x64F16);
        assert_eq!(mixed(cpu), KernelFamily::Register16x16F16);
        assert_eq!(
            KernelFamily::default_for(gpu, Precision::Fp32),
            KernelFamily::Gemm64x64
        );
    }
}
