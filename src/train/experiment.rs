//! The paper's CIFAR-10 experiments in one command (He et al. 2016): plain vs residual nets of
//! growing depth (Fig. 6), and ResNet depth vs test error (Table 6). Each run is an ordinary
//! training run under OUT/NAME/, so an interrupted experiment resumes where it stopped.

use super::{fit, Event, Events, OneProcess, RunDir, TrainConfig};
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
/// writes the figure, CSV and Markdown table into `out`. Returns the Markdown table.
pub fn run_experiment(
    (kind, depths): (Experiment, &[usize]),
    base: &TrainConfig,
    (split, out): (&Split, &Path),
    events: &mut dyn Events,
) -> Result<String> {
    if depths.is_empty() {
        return Err(Error::Invalid(
            "`depths`: give at least one depth, e.g. 20,56".into(),
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
    std::fs::create_dir_all(out)
        .map_err(|e| Error::Invalid(format!("`out` {}: {e}", out.display())))?;
    let mut results = Vec::new();
    for name in &names {
        let run_out = out.join(name);
        let done = read_rows(&run_out)?;
        let target = base.epochs.unwrap_or(usize::MAX);
        if done.last().map(|r| r.epoch) < Some(target) || base.epochs.is_none() {
            let dir = match RunDir::resume(&run_out).check() {
                Ok(()) => RunDir::resume(&run_out),
                Err(_) => RunDir::new(&run_out),
            };
            let how = if dir.resumes() {
                "resuming"
            } else {
                "starting"
            };
            events.emit(Event::Note(format!("== {name} ({how})")));
            let config = TrainConfig {
                model: name.clone(),
                ..base.clone()
            };
            fit(&config, split.clone(), &OneProcess, dir, events)?;
        } else {
            let n = done.len();
            events.emit(Event::Note(format!(
                "== {name}: finished earlier ({n} epochs), skipped"
            )));
        }
        results.push(RunCurves {
            name: name.clone(),
            epochs: read_rows(&run_out)?,
            steps: report::read_steps(&run_out.join("steps.csv"))?,
        });
    }
    write_outputs(kind, out, &results, split.train.classes.len())
}

/// What one run of an experiment left in OUT/NAME/.
struct RunCurves {
    name: String,
    /// metrics.csv: one row per epoch (test error).
    epochs: Vec<EpochMetrics>,
    /// steps.csv: training error every `log_every` steps.
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

/// The experiment's outputs in `out`: the curves as CSV, the figure, and the Markdown table of
/// final errors (returned).
fn write_outputs(
    kind: Experiment,
    out: &Path,
    results: &[RunCurves],
    classes: usize,
) -> Result<String> {
    let stem = match kind {
        Experiment::Degradation => "degradation",
        Experiment::Depth => "depth",
    };
    write_curves(
        &out.join(format!("{stem}.csv")),
        &out.join(format!("{stem}_train_curve.csv")),
        results,
    )?;
    report::plot_panels(
        &figure(kind, results),
        &out.join(format!("{stem}.png")),
        (1200, 500),
    )?;
    let md = markdown_table(kind, results, classes)?;
    write_atomic(&out.join(format!("{stem}.md")), md.as_bytes())?;
    Ok(md)
}

/// Per-epoch errors of every run into `epochs_csv`, the training curves into `steps_csv`.
fn write_curves(epochs_csv: &Path, steps_csv: &Path, results: &[RunCurves]) -> Result<()> {
    let mut steps = String::from("model,iteration,train_error\n");
    for run in results {
        for (it, e) in train_curve(run) {
            let _ = writeln!(steps, "{},{it},{e:.4}", run.name);
        }
    }
    write_atomic(steps_csv, steps.as_bytes())?;
    let mut epochs = String::from("model,epoch,iteration,train_error,test_error\n");
    for run in results {
        for r in &run.epochs {
            let (train, test) = (err_pct(r.train_acc), err_pct(r.test_acc));
            let _ = writeln!(
                epochs,
                "{},{},{},{train:.4},{test:.4}",
                run.name, r.epoch, r.iteration
            );
        }
    }
    write_atomic(epochs_csv, epochs.as_bytes())
}

/// Error against iterations, training error thin and test error bold, as the paper's Fig. 6:
/// plain nets and ResNets side by side (degradation), or the ResNets alone (depth).
fn figure(kind: Experiment, results: &[RunCurves]) -> Vec<Panel> {
    let series = |pred: &dyn Fn(&str) -> bool| -> Vec<Series> {
        let test_curve = |r: &RunCurves| {
            r.epochs
                .iter()
                .map(|e| (e.iteration as f64, err_pct(e.test_acc)))
                .collect()
        };
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
                        points: test_curve(r),
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
    match kind {
        Experiment::Degradation => vec![
            panel("plain", series(&|n| n.starts_with("plain"))),
            panel("ResNet", series(&|n| n.starts_with("resnet"))),
        ],
        Experiment::Depth => vec![panel("ResNet", series(&|_| true))],
    }
}

/// The final errors of every run: training and test error (degradation), or test error beside
/// the paper's Table 6 (depth).
fn markdown_table(kind: Experiment, results: &[RunCurves], classes: usize) -> Result<String> {
    let mut md = String::from(match kind {
        Experiment::Degradation => "| model | layers | params | epochs | train error (%) | test error (%) |\n|---|---|---|---|---|---|\n",
        Experiment::Depth => "| model | layers | params | epochs | test error (%) | paper (%) |\n|---|---|---|---|---|---|\n",
    });
    for run in results {
        let name = &run.name;
        let spec = ModelSpec::from_name(name, classes)?;
        let depth: usize = name
            .trim_start_matches(|c: char| c.is_alphabetic())
            .parse()
            .unwrap_or(0);
        let params = format!("{:.2}M", spec.param_count() as f64 / 1e6);
        let Some(last) = run.epochs.last() else {
            continue;
        };
        let (epoch, train, test) = (last.epoch, err_pct(last.train_acc), err_pct(last.test_acc));
        let last_columns = match kind {
            Experiment::Degradation => format!("{train:.2} | {test:.2}"),
            Experiment::Depth => {
                let paper = PAPER_TABLE6
                    .iter()
                    .find(|p| p.0 == depth)
                    .map(|p| format!("{:.2}", p.1))
                    .unwrap_or("-".into());
                format!("{test:.2} | {paper}")
            }
        };
        let _ = writeln!(
            md,
            "| {name} | {depth} | {params} | {epoch} | {last_columns} |"
        );
    }
    Ok(md)
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    crate::files::write_atomic(path, bytes)
        .map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))
}
