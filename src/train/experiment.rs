//! The paper's CIFAR-10 experiments in one command (He et al. 2016): plain vs residual nets of
//! growing depth (Fig. 6), and ResNet depth vs test error (Table 6). Each run is an ordinary
//! training run under OUT/NAME/, so an interrupted experiment resumes where it stopped.

use super::run::{train, TrainOptions};
use crate::data::Split;
use crate::error::{Error, Result};
use crate::model::ModelSpec;
use crate::report::{self, EpochMetrics, Panel, Series};
use std::fmt::Write as _;
use std::path::Path;

/// Test error (%) of the paper's Table 6 by depth.
pub const PAPER_TABLE6: &[(usize, f64)] = &[
    (20, 8.75),
    (32, 7.51),
    (44, 7.17),
    (56, 6.97),
    (110, 6.43),
    (1202, 7.93),
];

/// Which experiment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Experiment {
    /// plainN and resnetN for every depth: the degradation problem (Fig. 6).
    Degradation,
    /// resnetN for every depth: Table 6.
    Depth,
}

/// Runs every model of the experiment (skipping finished runs, resuming interrupted ones) and
/// writes the figure, CSV and Markdown table into `base.out`. Returns the Markdown table.
pub fn run_experiment(
    kind: Experiment,
    depths: &[usize],
    base: &TrainOptions,
    split: &Split,
) -> Result<String> {
    if depths.is_empty() {
        return Err(Error::Invalid(
            "--depths: give at least one depth, e.g. 20,56".into(),
        ));
    }
    let mut names = Vec::new();
    for &d in depths {
        if kind == Experiment::Degradation {
            names.push(format!("plain{d}"));
        }
        names.push(format!("resnet{d}"));
    }
    for n in &names {
        ModelSpec::from_name(n, 10)?; // every name valid before anything trains
    }
    std::fs::create_dir_all(&base.out)
        .map_err(|e| Error::Invalid(format!("--out {}: {e}", base.out.display())))?;
    let mut results = Vec::new();
    for name in &names {
        let out = base.out.join(name);
        let done = read_rows(&out)?;
        let target = base.epochs.unwrap_or(usize::MAX);
        if done.last().map(|r| r.epoch) < Some(target) || base.epochs.is_none() {
            let resume = out.join("last.safetensors").exists()
                && out.join("last.state.safetensors").exists();
            let opts = TrainOptions {
                model: name.clone(),
                out: out.clone(),
                resume,
                ..base.clone()
            };
            eprintln!(
                "== {name} ({})",
                if resume { "resuming" } else { "starting" }
            );
            train(&opts, split.clone())?;
        } else {
            eprintln!(
                "== {name}: finished earlier ({} epochs), skipped",
                done.len()
            );
        }
        results.push(RunCurves {
            name: name.clone(),
            epochs: read_rows(&out)?,
            steps: report::read_steps(&out.join("steps.csv"))?,
        });
    }
    write_outputs(kind, &base.out, &results, split.train.classes.len())
}

/// What one run of an experiment left in OUT/NAME/.
struct RunCurves {
    name: String,
    /// metrics.csv: one row per epoch (test error).
    epochs: Vec<EpochMetrics>,
    /// steps.csv: training error every `--log-every` steps.
    steps: Vec<report::StepMetrics>,
}

/// Training error (%) against iteration, from steps.csv averaged over bins of consecutive
/// read-backs (at most ~300 points per line), or per epoch where a run has no steps.csv.
fn train_curve(r: &RunCurves) -> Vec<(f64, f64)> {
    if r.steps.is_empty() {
        return r
            .epochs
            .iter()
            .map(|e| (e.iteration as f64, err_pct(e.train_acc)))
            .collect();
    }
    let bin = r.steps.len().div_ceil(300).max(1);
    r.steps
        .chunks(bin)
        .map(|c| {
            let acc = c.iter().map(|s| s.train_acc).sum::<f64>() / c.len() as f64;
            (c[c.len() - 1].iteration as f64, err_pct(acc))
        })
        .collect()
}

fn read_rows(dir: &Path) -> Result<Vec<EpochMetrics>> {
    let p = dir.join("metrics.csv");
    if p.exists() {
        report::read_metrics(&p)
    } else {
        Ok(Vec::new())
    }
}

fn err_pct(acc: f64) -> f64 {
    100.0 * (1.0 - acc)
}

fn write_outputs(
    kind: Experiment,
    out: &Path,
    results: &[RunCurves],
    classes: usize,
) -> Result<String> {
    let stem = if kind == Experiment::Degradation {
        "degradation"
    } else {
        "depth"
    };
    // CSV of the curves
    let mut csv = String::from("model,epoch,iteration,train_error,test_error\n");
    let mut steps_csv = String::from("model,iteration,train_error\n");
    for run in results {
        for (it, e) in train_curve(run) {
            let _ = writeln!(steps_csv, "{},{it},{e:.4}", run.name);
        }
    }
    write_atomic(
        &out.join(format!("{stem}_train_curve.csv")),
        steps_csv.as_bytes(),
    )?;
    for RunCurves {
        name, epochs: rows, ..
    } in results
    {
        for r in rows {
            let _ = writeln!(
                csv,
                "{name},{},{},{:.4},{:.4}",
                r.epoch,
                r.iteration,
                err_pct(r.train_acc),
                err_pct(r.test_acc)
            );
        }
    }
    write_atomic(&out.join(format!("{stem}.csv")), csv.as_bytes())?;
    // figure: training error thin, test error bold, against iterations
    let series = |pred: &dyn Fn(&str) -> bool| -> Vec<Series> {
        results
            .iter()
            .filter(|r| pred(&r.name))
            .flat_map(|r| {
                [
                    Series {
                        name: format!("{} train", r.name),
                        points: train_curve(r),
                        bold: false,
                    },
                    Series {
                        name: format!("{} test", r.name),
                        points: r
                            .epochs
                            .iter()
                            .map(|e| (e.iteration as f64, err_pct(e.test_acc)))
                            .collect(),
                        bold: true,
                    },
                ]
            })
            .collect()
    };
    let panel = |title: &str, s| Panel {
        title: title.into(),
        x_label: "iterations".into(),
        y_label: "error (%)".into(),
        series: s,
    };
    let panels = if kind == Experiment::Degradation {
        vec![
            panel("plain", series(&|n| n.starts_with("plain"))),
            panel("ResNet", series(&|n| n.starts_with("resnet"))),
        ]
    } else {
        vec![panel("ResNet", series(&|_| true))]
    };
    report::plot_panels(&panels, &out.join(format!("{stem}.png")), (1200, 500))?;
    // Markdown table of final errors
    let mut md = String::new();
    if kind == Experiment::Degradation {
        md += "| model | layers | params | epochs | train error (%) | test error (%) |\n|---|---|---|---|---|---|\n";
    } else {
        md += "| model | layers | params | epochs | test error (%) | paper (%) |\n|---|---|---|---|---|---|\n";
    }
    for RunCurves {
        name, epochs: rows, ..
    } in results
    {
        let spec = ModelSpec::from_name(name, classes)?;
        let depth: usize = name
            .trim_start_matches(|c: char| c.is_alphabetic())
            .parse()
            .unwrap_or(0);
        let params = format!("{:.2}M", spec.param_count() as f64 / 1e6);
        let Some(last) = rows.last() else { continue };
        if kind == Experiment::Degradation {
            let _ = writeln!(
                md,
                "| {name} | {depth} | {params} | {} | {:.2} | {:.2} |",
                last.epoch,
                err_pct(last.train_acc),
                err_pct(last.test_acc)
            );
        } else {
            let paper = PAPER_TABLE6
                .iter()
                .find(|p| p.0 == depth)
                .map(|p| format!("{:.2}", p.1))
                .unwrap_or("-".into());
            let _ = writeln!(
                md,
                "| {name} | {depth} | {params} | {} | {:.2} | {paper} |",
                last.epoch,
                err_pct(last.test_acc)
            );
        }
    }
    write_atomic(&out.join(format!("{stem}.md")), md.as_bytes())?;
    Ok(md)
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)
        .and_then(|_| std::fs::rename(&tmp, path))
        .map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))
}
