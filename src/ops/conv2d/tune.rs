//! Choosing a kernel family per convolution shape by timing every family, in one race written
//! once, asynchronously (the browser cannot block); native code blocks on it with `pollster` when
//! a plan is built, the browser runs it later ([`tune_pending`]). The race: the device's own
//! family first (a tie keeps it), each family once untimed (compilation, caches; a family over
//! four times the best so far is dropped there, its untimed run recorded as its time), then once
//! timed; a family more than twice as slow as the best so far is dropped there (a slow adapter
//! should not wait for hopeless kernels; that one run is recorded), the others get two more runs
//! and their median counts. Where one run is shorter than a millisecond (GPUs), each timed run
//! repeats the kernels in one submission, about a millisecond's worth, so that the cost of
//! submitting and waiting does not hide the differences between kernels. A family that cannot be
//! built at a shape (a grid over the device's limits) is left out of that race (and of the times
//! recorded).

use super::KernelFamily;
use super::{Conv2dShape, BACKWARD_INPUT, BACKWARD_WEIGHT, FORWARD};
use crate::error::{Error, Result};
use crate::gpu::{Choice, Gpu, Kernel};

/// The times of the families so far, the fastest, its kernels, and why a family failed to build.
struct Race {
    ms: Vec<(KernelFamily, f64)>,
    best: Option<(f64, KernelFamily)>,
    // read by the native `fastest` only (the browser builds its plans before it times)
    #[cfg_attr(target_arch = "wasm32", allow(dead_code))]
    kept: Option<Vec<Kernel>>,
    #[cfg_attr(target_arch = "wasm32", allow(dead_code))]
    failed: Option<Error>,
}

impl Race {
    /// A race nobody has run yet.
    fn new() -> Race {
        Race {
            ms: Vec::new(),
            best: None,
            kept: None,
            failed: None,
        }
    }

    /// Whether a family whose first timed run took `first` ms deserves two more.
    fn worth_more(&self, first: f64) -> bool {
        self.best.is_none_or(|(b, _)| first <= 2.0 * b)
    }

    /// Whether a family whose untimed first run took `warm_up` ms deserves timing at all: not
    /// when it is over four times the best (the warm-up run is slower than the later ones, hence
    /// the wider margin). On CPU drivers this saves the slowest family a second run.
    fn worth_timing(&self, warm_up: f64) -> bool {
        self.best.is_none_or(|(b, _)| warm_up <= 4.0 * b)
    }

    /// Records `family`'s runs; true if it is the fastest so far.
    fn finish(&mut self, family: KernelFamily, mut runs: Vec<f64>) -> bool {
        runs.sort_by(f64::total_cmp);
        let median = runs[runs.len() / 2];
        self.ms.push((family, median));
        let fastest = self.best.is_none_or(|(b, _)| median < b);
        if fastest {
            self.best = Some((median, family));
        }
        fastest
    }

    /// The families the device runs in its precision, in the order they run: its own first.
    fn entrants(gpu: &Gpu) -> Vec<KernelFamily> {
        let own = KernelFamily::of(gpu);
        let mut all = vec![own];
        all.extend(
            KernelFamily::offered(gpu.precision, gpu.features)
                .into_iter()
                .filter(|&f| f != own),
        );
        all
    }

    /// What the race measured of `op` at `sh`, for the device's store (families by name).
    fn choice(&self, gpu: &Gpu, op: &str, sh: &Conv2dShape) -> Choice {
        Choice {
            op: op.to_string(),
            shape: super::choice_key(gpu, sh),
            family: self.best.expect("at least one family").1.name(),
            ms: self.ms.iter().map(|&(f, ms)| (f.name(), ms)).collect(),
        }
    }

    /// Times every family `build` builds (see the module's doc), waiting for each run without
    /// blocking; keeps the fastest's kernels.
    async fn run(gpu: &Gpu, build: impl Fn(KernelFamily) -> Result<Vec<Kernel>>) -> Result<Race> {
        let mut race = Race::new();
        for family in Race::entrants(gpu) {
            let ks = match build(family) {
                Ok(ks) => ks,
                Err(e) => {
                    race.failed = Some(e); // over a limit of this device at this shape
                    continue;
                }
            };
            let warm_up = timed_run(gpu, &ks, 1).await?;
            if !race.worth_timing(warm_up) {
                race.finish(family, vec![warm_up]);
                continue;
            }
            let times = repeats(warm_up);
            let mut runs = vec![timed_run(gpu, &ks, times).await?];
            if race.worth_more(runs[0]) {
                runs.push(timed_run(gpu, &ks, times).await?);
                runs.push(timed_run(gpu, &ks, times).await?);
            }
            if race.finish(family, runs) {
                race.kept = Some(ks);
            }
        }
        Ok(race)
    }
}

/// Times every family at `sh` (blocking on the race), records and returns the fastest one's
/// kernels; where no family builds, the last one's error.
#[cfg(not(target_arch = "wasm32"))]
pub(super) fn fastest(
    gpu: &Gpu,
    op: &'static str,
    sh: &Conv2dShape,
    build: impl Fn(KernelFamily) -> Result<Vec<Kernel>>,
) -> Result<Vec<Kernel>> {
    let mut race = pollster::block_on(Race::run(gpu, build))?;
    match race.kept.take() {
        Some(ks) => {
            gpu.record_measured(race.choice(gpu, op, sh));
            Ok(ks)
        }
        None => Err(race.failed.expect("a family failed to build")),
    }
}

/// Times every family at each (op, shape) the device built without timing (the browser builds
/// with the adapter's family first: it cannot block), without blocking: each run is waited for
/// by reading a buffer back. Records the fastest, which plans built afterwards use; returns how
/// many (op, shape) were measured.
pub async fn tune_pending(gpu: &Gpu) -> Result<usize> {
    let pending = gpu.take_untuned();
    for (i, (op, key)) in pending.iter().enumerate() {
        if let Err(e) = tune_one(gpu, op, key).await {
            // what was not timed stays pending
            pending[i..]
                .iter()
                .for_each(|(op, key)| gpu.note_untuned(op, key));
            return Err(e);
        }
    }
    Ok(pending.len())
}

/// Times every family at one (op, shape) on buffers of its own, and records the fastest.
async fn tune_one(gpu: &Gpu, op: &str, key: &[usize]) -> Result<()> {
    let Some(sh) = Conv2dShape::from_key(key) else {
        return Ok(());
    };
    let race = Race::run(gpu, |family| build_alone(gpu, op, &sh, family)).await?;
    if race.best.is_some() {
        gpu.record_measured(race.choice(gpu, op, &sh));
    }
    Ok(())
}

/// How many times to repeat kernels whose untimed run took `first_ms` in one timed submission:
/// about a millisecond's worth, at most 16.
fn repeats(first_ms: f64) -> usize {
    (1.0 / first_ms.max(1e-3)).ceil().clamp(1.0, 16.0) as usize
}

/// Milliseconds per run from submitting `ks` `times` over to the device being done with them.
async fn timed_run(gpu: &Gpu, ks: &[Kernel], times: usize) -> Result<f64> {
    let t0 = crate::gpu::now_ms();
    gpu.run_times(ks, times);
    gpu.done().await?;
    Ok((crate::gpu::now_ms() - t0) / times as f64)
}

/// `family`'s kernels of `op` at `sh` on buffers of their own (zeros: timing does not depend on
/// the values). The forward and the backward to the input are timed as training records them,
/// with BatchNorm's statistics (backward sums) in their epilogue where the family writes them
/// (the race of a plan being built times them so too), on activations of the type a plan of
/// the device's precision stores them in (f16 in mixed precision: the f16 modules).
fn build_alone(gpu: &Gpu, op: &str, sh: &Conv2dShape, family: KernelFamily) -> Result<Vec<Kernel>> {
    let act = gpu.precision.activation_type();
    let (x, w, y) = (
        gpu.zeros_of(&sh.x_shape(), act)?,
        gpu.zeros(&sh.w_shape())?,
        gpu.zeros_of(&sh.y_shape(), act)?,
    );
    match op {
        FORWARD => {
            let stats = gpu.zeros(&[super::stats_len(sh)])?;
            let epi = super::Epilogue::default();
            super::forward_with(gpu, sh, &x, &w, &epi, &y, family, (Some(&stats), None))
        }
        BACKWARD_INPUT => {
            // the BN's input apart from dx (written: one buffer may not be bound both writable
            // and read-only)
            let bn_x = gpu.zeros_of(&sh.x_shape(), act)?;
            let (affine, saved) = (gpu.zeros(&[2, sh.c])?, gpu.zeros(&[2, sh.c])?);
            let sums = gpu.zeros(&[super::bn_sums_len(sh)])?;
            let bn = super::BnBelow {
                x: &bn_x,
                affine: &affine,
                saved: &saved,
                sums: &sums,
                out: None,
                side: None,
            };
            let epi = super::DxEpilogue::Bn(&bn);
            super::backward_input_with(gpu, sh, &y, &w, &x, family, epi)
        }
        BACKWARD_WEIGHT => super::backward_weight_with(gpu, sh, (&x, None), &y, &w, None, family),
        _ => Ok(Vec::new()),
    }
}
