//! `resnet selftest`: every op against the CPU references on this adapter, as a table.

use super::GpuArgs;
use clap::Args;
use resnet::gpu::{Gpu, Precision};
use resnet::selftest::{self, Group, TOLERANCE};
use resnet::{Error, Result};

/// Arguments of `resnet selftest`.
#[derive(Args, Debug)]
pub struct SelftestArgs {
    /// Largest max-norm relative error, max |gpu - reference| / max |reference|, that passes
    /// (with --precision mixed the f16 convolutions are held to the bounds of f16 operands and
    /// whole training steps to 2^-7, their parameter gradients to 2^-5, instead; BatchNorm still
    /// to this)
    #[arg(long, default_value_t = TOLERANCE)]
    tolerance: f64,
    #[command(flatten)]
    gpu: GpuArgs,
}

/// Runs `resnet selftest`; fails (exit 1) when any check does.
pub fn run(a: SelftestArgs) -> Result<()> {
    if a.tolerance.is_nan() || a.tolerance < 0.0 {
        return Err(Error::Invalid(format!(
            "--tolerance must be a number >= 0, got {}",
            a.tolerance
        )));
    }
    let opts = a.gpu.options()?;
    let gpu = Gpu::new_blocking(&opts)?;
    super::print_gpu_warnings(&gpu);
    println!(
        "selftest on {} ({:?}, {:?}): every op against f64 CPU references, pass if max |gpu - ref| / max |ref| <= {:e}",
        gpu.info.name, gpu.info.backend, gpu.info.device_type, a.tolerance
    );
    if gpu.precision == Precision::Mixed {
        println!(
            "mixed precision: the f16 convolution families pass if every output is within the bound of f16 operands and f32 sums; whole training steps against a reference that rounds the same operands to f16, within {:e} (their parameter gradients {:e})",
            selftest::MIXED_STEP_TOLERANCE,
            selftest::MIXED_GRADIENT_TOLERANCE
        );
    }
    drop(gpu);
    println!(
        "{:<48} {:>5} {:>12} {:>9}  {:<6} worst at",
        "op", "cases", "worst error", "bound", "result"
    );
    let t0 = std::time::Instant::now();
    let tol = a.tolerance;
    let groups = selftest::run(&opts, &mut |g: &Group| {
        let result = if g.passes(tol) { "pass" } else { "FAIL" };
        println!(
            "{:<48} {:>5} {:>12.2e} {:>9}  {result:<6} {}",
            g.op,
            g.cases.len(),
            g.worst,
            bound(g, tol),
            g.worst_case
        );
    })?;
    let failed: Vec<&Group> = groups.iter().filter(|g| !g.passes(tol)).collect();
    if let Some(worst) = failed.iter().max_by(|a, b| a.worst.total_cmp(&b.worst)) {
        return Err(Error::Invalid(format!(
            "selftest: {} of {} checks failed on this adapter (worst: {} {:.2e} at {})",
            failed.len(),
            groups.len(),
            worst.op,
            worst.worst,
            worst.worst_case
        )));
    }
    println!(
        "all {} checks passed in {:.0} s",
        groups.len(),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The bound a row is held to: its max-norm tolerance, or "per elem." where each output has a
/// bound of its own (the f16 convolutions').
fn bound(g: &Group, tolerance: f64) -> String {
    match g.within_bounds {
        Some(_) => "per elem.".into(),
        None => format!("{:.2e}", g.tolerance.unwrap_or(tolerance)),
    }
}
