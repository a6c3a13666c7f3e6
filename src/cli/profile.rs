//! `resnet bench --profile`: the table of where a training step's GPU time goes, per kind of op,
//! with the rates achieved against the adapter's peaks.

use resnet::gpu::{known_peak, Peak};
use resnet::plan::{KindTime, Profile};
use resnet::{Error, Result};

/// The peaks the percentages compare with, and where they came from.
pub(super) struct Peaks {
    /// fp32 TFLOP/s, if known or given.
    pub tflops: Option<f64>,
    /// GB/s, if known or given.
    pub gbs: Option<f64>,
    /// e.g. `published figures of the H200 SXM` or `--peak-tflops`.
    pub source: String,
}

/// A peak given on the command line: positive and finite, and only with --profile (which
/// `profiled` says), else a one-line error naming `flag`.
pub(super) fn check_peak(flag: &str, v: Option<f64>, profiled: bool) -> Result<()> {
    match v {
        Some(p) if !(p.is_finite() && p > 0.0) => Err(Error::Invalid(format!(
            "{flag}: must be a positive number, got {p}"
        ))),
        Some(_) if !profiled => Err(Error::Invalid(format!(
            "{flag}: is for --profile's percentages; add --profile"
        ))),
        _ => Ok(()),
    }
}

impl Peaks {
    /// The given peaks, else the published ones of the adapter named `adapter`.
    pub fn resolve(adapter: &str, tflops: Option<f64>, gbs: Option<f64>) -> Peaks {
        let known = known_peak(adapter);
        let given = match (tflops.is_some(), gbs.is_some()) {
            (true, true) => Some("--peak-tflops and --peak-gbs given"),
            (true, false) => Some("--peak-tflops given"),
            (false, true) => Some("--peak-gbs given"),
            (false, false) => None,
        };
        let source = match (given, known) {
            (Some(g), _) if tflops.is_some() && gbs.is_some() => g.to_string(),
            (None, Some((gpu, _))) => format!("published figures of the {gpu}"),
            (Some(g), Some((gpu, _))) => format!("{g}; the other the {gpu}'s published figure"),
            (g, None) => [
                g,
                Some("none known for this adapter (give --peak-tflops and --peak-gbs)"),
            ]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join("; "),
        };
        let k = known.map(|(_, p): (_, Peak)| p);
        Peaks {
            tflops: tflops.or(k.map(|p| p.tflops)),
            gbs: gbs.or(k.map(|p| p.gbs)),
            source,
        }
    }
}

/// `part` of `peak` as a percentage, or a dash.
fn percent(part: Option<f64>, peak: Option<f64>) -> String {
    match (part, peak) {
        (Some(x), Some(p)) => format!("{:.1}%", 100.0 * x / p),
        _ => "-".into(),
    }
}

/// A rate with about four significant digits (CPU drivers reach thousandths of a TFLOP/s).
fn rate(v: Option<f64>) -> String {
    v.map_or("-".into(), |x| {
        let digits = (3 - x.abs().max(1e-4).log10().floor() as i32).clamp(0, 6) as usize;
        format!("{x:.digits$}")
    })
}

/// `part` of `total` as a fraction, 0 when the total is 0 (a driver whose timestamps all read 0).
fn share(part: f64, total: f64) -> f64 {
    if total > 0.0 {
        part / total
    } else {
        0.0
    }
}

/// Prints the per-kind table and the slowest kernels.
pub(super) fn print_text(p: &Profile, peaks: &Peaks) {
    let total = p.total_ms();
    println!(
        "  where one training step's GPU time goes ({} kernels, each timed alone with timestamp queries), total {total:.2} ms",
        p.kernels.len()
    );
    let fmt = |v: Option<f64>, unit: &str| v.map_or("?".to_string(), |x| format!("{x} {unit}"));
    match (peaks.tflops, peaks.gbs) {
        (None, None) => println!("  peaks: {}", peaks.source),
        (t, g) => println!(
            "  peaks: {} fp32 without tensor cores, {} ({})",
            fmt(t, "TFLOP/s"),
            fmt(g, "GB/s"),
            peaks.source
        ),
    }
    println!(
        "    {:<24} {:>10} {:>6} {:>8} {:>9} {:>8} {:>9} {:>8}",
        "op kind", "ms", "share", "kernels", "TFLOP/s", "of peak", "GB/s", "of peak"
    );
    for row in p.by_kind() {
        println!(
            "    {:<24} {:>10.3} {:>5.1}% {:>8} {:>9} {:>8} {:>9} {:>8}",
            row.kind.name(),
            row.ms,
            100.0 * share(row.ms, total),
            row.dispatches,
            rate(row.tflops()),
            percent(row.tflops(), peaks.tflops),
            rate(row.gbs()),
            percent(row.gbs(), peaks.gbs),
        );
    }
    print_entries(p, total);
    let mut slowest: Vec<_> = p.kernels.iter().collect();
    slowest.sort_by(|a, b| b.ms.total_cmp(&a.ms));
    println!("  slowest kernels:");
    for k in slowest.iter().take(5) {
        let name = format!("{} {}", k.stage, k.entry);
        println!(
            "    {name:<40} {:>10.3} ms {:>5.1}%",
            k.ms,
            100.0 * share(k.ms, total)
        );
    }
}

/// The shader entry points that take the most time, each summed over every layer it runs in
/// (which kernel of an op kind to make faster).
fn print_entries(p: &Profile, total: f64) {
    let mut entries: Vec<(&str, f64, usize)> = Vec::new();
    for k in &p.kernels {
        match entries.iter_mut().find(|e| e.0 == k.entry) {
            Some(e) => (e.1, e.2) = (e.1 + k.ms, e.2 + 1),
            None => entries.push((k.entry, k.ms, 1)),
        }
    }
    entries.sort_by(|a, b| b.1.total_cmp(&a.1));
    println!("  slowest entry points (summed over the layers):");
    for (entry, ms, count) in entries.iter().take(8) {
        println!(
            "    {entry:<28} {count:>4} x {:>10.3} ms {:>5.1}%",
            ms,
            100.0 * share(*ms, total)
        );
    }
}

/// The profile as a JSON object.
pub(super) fn json(p: &Profile, peaks: &Peaks) -> String {
    let num = |v: Option<f64>| v.map_or("null".into(), |x| format!("{x:.6}"));
    let total = p.total_ms();
    let kinds: Vec<String> = p
        .by_kind()
        .iter()
        .map(|r: &KindTime| {
            format!(
                "{{\"kind\": {:?}, \"ms\": {:.4}, \"share\": {:.4}, \"kernels\": {}, \"flops\": {}, \"bytes\": {}, \"tflops\": {}, \"gbs\": {}}}",
                r.kind.name(),
                r.ms,
                share(r.ms, total),
                r.dispatches,
                r.flops,
                r.bytes,
                num(r.tflops()),
                num(r.gbs())
            )
        })
        .collect();
    format!(
        "{{\"total_ms\": {total:.4}, \"peak_tflops\": {}, \"peak_gbs\": {}, \"kinds\": [{}]}}",
        num(peaks.tflops),
        num(peaks.gbs),
        kinds.join(", ")
    )
}
