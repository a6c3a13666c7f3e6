//! Training reports (native only): a metrics CSV with one row per epoch, and PNG line plots.
//!
//! Plots are drawn by `plotters` into an RGB buffer and encoded by `image`, so no system library
//! is needed. Labels need a TrueType font, read at run time: `$RESNET_FONT` if set, else the first
//! of [`FONT_PATHS`] that exists (Debian: `apt-get install fonts-dejavu-core`). Without any font
//! the plots are still drawn, without text (see [`text_available`]).

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::prelude::*;

use crate::{Error, Result};

/// One epoch's numbers, one CSV row; accuracies are fractions in [0, 1].
#[derive(Debug, Clone, PartialEq)]
pub struct EpochMetrics {
    /// Epoch number (1-based by convention of the trainer).
    pub epoch: usize,
    /// Optimiser steps taken so far.
    pub iteration: u64,
    /// Learning rate used in this epoch (its last value if it changed within the epoch).
    pub lr: f64,
    /// Mean training loss over the epoch.
    pub train_loss: f64,
    /// Training accuracy, a fraction in [0, 1].
    pub train_acc: f64,
    /// Mean test loss.
    pub test_loss: f64,
    /// Test accuracy, a fraction in [0, 1].
    pub test_acc: f64,
    /// Training throughput.
    pub images_per_sec: f64,
    /// Wall-clock seconds of the epoch.
    pub seconds: f64,
    /// Milliseconds a step spent exchanging gradients with the other ranks (0 for one process).
    pub exchange_ms: f64,
    /// The part of `exchange_ms` spent while the GPU still computed the backward pass.
    pub exchange_hidden_ms: f64,
    /// Mixed precision: the loss scale at the end of the epoch (GradScaler's); `None` in fp32
    /// (an empty column).
    pub loss_scale: Option<f64>,
    /// Mixed precision: the steps skipped so far for an inf or NaN gradient (0 in fp32).
    pub skipped_steps: u64,
    /// With `--model-ema`: the moving average's test loss; `None` without (an empty column).
    pub ema_test_loss: Option<f64>,
    /// With `--model-ema`: the moving average's test accuracy, a fraction in [0, 1].
    pub ema_test_acc: Option<f64>,
    /// Top-5 test accuracy (torchvision's Acc@5), a fraction in [0, 1]; `None` in files
    /// written before it was recorded.
    pub test_acc5: Option<f64>,
    /// With `--model-ema`: the moving average's top-5 test accuracy.
    pub ema_test_acc5: Option<f64>,
    /// Top-5 training accuracy over the epoch's batches (as augmented, and mixed where MixUp or
    /// CutMix mix them: the argmax of the mixed target, as for `train_acc`); `None` in files
    /// written before it was recorded.
    pub train_acc5: Option<f64>,
}

/// The CSV header, the columns in [`EpochMetrics`] field order.
pub const CSV_HEADER: &str = "epoch,iteration,lr,train_loss,train_acc,test_loss,test_acc,images_per_sec,seconds,exchange_ms,exchange_hidden_ms,loss_scale,skipped_steps,ema_test_loss,ema_test_acc,test_acc5,ema_test_acc5,train_acc5";

/// The columns of the headers older files have, each a beginning of [`CSV_HEADER`] (columns were
/// only ever added at the end), read with the later columns empty (the exchange's as 0): before
/// the training top-5 (17), the top-5 (15), the moving average's (13), the loss scale's (11) and
/// the exchange's (9) columns.
const OLDER_HEADER_COLUMNS: [usize; 5] = [17, 15, 13, 11, 9];

/// Whether `line` is this version's header or an older one ([`OLDER_HEADER_COLUMNS`]).
fn known_header(line: &str) -> bool {
    let n = line.split(',').count();
    let columns = CSV_HEADER.split(',').count();
    (n == columns || OLDER_HEADER_COLUMNS.contains(&n))
        && line.split(',').eq(CSV_HEADER.split(',').take(n))
}

/// One CSV row, columns in the field order of [`EpochMetrics`], with its newline.
fn metrics_row(m: &EpochMetrics) -> String {
    format!(
        "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}\n",
        m.epoch,
        m.iteration,
        m.lr,
        m.train_loss,
        m.train_acc,
        m.test_loss,
        m.test_acc,
        m.images_per_sec,
        m.seconds,
        m.exchange_ms,
        m.exchange_hidden_ms,
        optional(m.loss_scale),
        m.skipped_steps,
        optional(m.ema_test_loss),
        optional(m.ema_test_acc),
        optional(m.test_acc5),
        optional(m.ema_test_acc5),
        optional(m.train_acc5),
    )
}

/// An optional column's text: empty for `None`.
fn optional(v: Option<f64>) -> String {
    v.map_or(String::new(), |v| v.to_string())
}

/// Appends one row to OUT/metrics.csv (writes the header when the file is new). Columns in the field order above.
pub fn append_metrics(path: &Path, m: &EpochMetrics) -> Result<()> {
    let err = |what: String| Error::Invalid(format!("metrics {}: {what}", path.display()));
    let existing = match std::fs::read_to_string(path) {
        Ok(s) => Some(s),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(err(format!("cannot read: {e}"))),
    };
    let mut text = String::new();
    match existing.as_deref().map(str::trim) {
        None | Some("") => text.push_str(&format!("{CSV_HEADER}\n")),
        Some(s) if s.lines().next().map(str::trim) == Some(CSV_HEADER) => {
            // A file cut mid-line (a crash) must not glue two rows together.
            if !existing.as_deref().unwrap_or("").ends_with('\n') {
                text.push('\n');
            }
        }
        Some(_) => return Err(err(format!("the first line is not `{CSV_HEADER}`"))),
    }
    text.push_str(&metrics_row(m));
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| err(format!("cannot open for appending: {e}")))?;
    f.write_all(text.as_bytes())
        .map_err(|e| err(format!("cannot append: {e}")))
}

/// Replaces OUT/metrics.csv with `rows` (header included), atomically.
pub fn write_metrics(path: &Path, rows: &[EpochMetrics]) -> Result<()> {
    let mut text = format!("{CSV_HEADER}\n");
    rows.iter().for_each(|r| text.push_str(&metrics_row(r)));
    crate::files::write_atomic(path, text.as_bytes())
        .map_err(|e| Error::Invalid(format!("metrics {}: {e}", path.display())))
}

/// Reads every row of a metrics CSV written by [`append_metrics`]; errors name the file and line.
pub fn read_metrics(path: &Path) -> Result<Vec<EpochMetrics>> {
    let err = |what: String| Error::Invalid(format!("metrics {}: {what}", path.display()));
    let text = std::fs::read_to_string(path).map_err(|e| err(format!("cannot read: {e}")))?;
    let mut rows = Vec::new();
    let mut header = None;
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if header.is_none() {
            if !known_header(line) {
                return Err(err(format!(
                    "line {}: expected the header `{CSV_HEADER}`",
                    i + 1
                )));
            }
            header = Some(line);
            continue;
        }
        let row = parse_row(line, header.unwrap_or(CSV_HEADER));
        rows.push(row.map_err(|m| err(format!("line {}: {m}", i + 1)))?);
    }
    Ok(rows)
}

/// A row of a file with `header` (this version's, or one before the exchange's columns).
fn parse_row(line: &str, header: &str) -> std::result::Result<EpochMetrics, String> {
    let names: Vec<&str> = header.split(',').collect();
    let f: Vec<&str> = line.split(',').map(str::trim).collect();
    if f.len() != names.len() {
        return Err(format!(
            "expected {} fields, found {}",
            names.len(),
            f.len()
        ));
    }
    let num = |i: usize| -> std::result::Result<f64, String> {
        f[i].parse::<f64>()
            .map_err(|_| format!("column {}: `{}` is not a number", names[i], f[i]))
    };
    let optional_num = |i: usize| match names.len() > i && !f[i].is_empty() {
        true => num(i).map(Some),
        false => Ok(None),
    };
    let int = |i: usize| -> std::result::Result<u64, String> {
        f[i].parse::<u64>()
            .map_err(|_| format!("column {}: `{}` is not a whole number", names[i], f[i]))
    };
    Ok(EpochMetrics {
        epoch: int(0)? as usize,
        iteration: int(1)?,
        lr: num(2)?,
        train_loss: num(3)?,
        train_acc: num(4)?,
        test_loss: num(5)?,
        test_acc: num(6)?,
        images_per_sec: num(7)?,
        seconds: num(8)?,
        exchange_ms: if names.len() > 9 { num(9)? } else { 0.0 },
        exchange_hidden_ms: if names.len() > 10 { num(10)? } else { 0.0 },
        loss_scale: optional_num(11)?,
        skipped_steps: if names.len() > 12 { int(12)? } else { 0 },
        ema_test_loss: optional_num(13)?,
        ema_test_acc: optional_num(14)?,
        test_acc5: optional_num(15)?,
        ema_test_acc5: optional_num(16)?,
        train_acc5: optional_num(17)?,
    })
}

/// The training loss and accuracy between two read-backs (every `--log-every` steps): the points
/// of a per-iteration training curve, one row of OUT/steps.csv.
#[derive(Debug, Clone, PartialEq)]
pub struct StepMetrics {
    /// Optimiser steps taken at the read-back.
    pub iteration: u64,
    /// Mean training loss over the steps since the previous read-back.
    pub train_loss: f64,
    /// Training accuracy over the same steps, a fraction in [0, 1].
    pub train_acc: f64,
}

/// The header of OUT/steps.csv.
pub const STEPS_HEADER: &str = "iteration,train_loss,train_acc";

/// Replaces OUT/steps.csv with `rows` (temporary file, then rename).
pub fn write_steps(path: &Path, rows: &[StepMetrics]) -> Result<()> {
    let mut text = format!("{STEPS_HEADER}\n");
    for r in rows {
        let _ = writeln!(text, "{},{},{}", r.iteration, r.train_loss, r.train_acc);
    }
    crate::files::write_atomic(path, text.as_bytes())
        .map_err(|e| Error::Invalid(format!("steps {}: {e}", path.display())))
}

/// Reads OUT/steps.csv (empty when the file does not exist); errors name the file and line.
pub fn read_steps(path: &Path) -> Result<Vec<StepMetrics>> {
    let err = |what: String| Error::Invalid(format!("steps {}: {what}", path.display()));
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(err(format!("cannot read: {e}"))),
    };
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate().skip(1) {
        let f: Vec<&str> = line.trim().split(',').collect();
        let parsed = match f[..] {
            [it, l, a] => it.parse().ok().zip(l.parse().ok()).zip(a.parse().ok()).map(
                |((iteration, train_loss), train_acc)| StepMetrics {
                    iteration,
                    train_loss,
                    train_acc,
                },
            ),
            _ => None,
        };
        match parsed {
            Some(r) => rows.push(r),
            None if line.trim().is_empty() => {}
            None => return Err(err(format!("line {}: expected {STEPS_HEADER}", i + 1))),
        }
    }
    Ok(rows)
}

/// One line of a panel: a name for the legend, its (x, y) points, and thin or bold stroke.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Legend entry.
    pub name: String,
    /// Points in drawing order; non-finite points are skipped.
    pub points: Vec<(f64, f64)>,
    /// Bold (3 px) instead of thin (1 px), as in the ResNet paper's figures (bold: test).
    pub bold: bool,
}

/// One chart: a title, axis labels and its series.
#[derive(Debug, Clone, PartialEq)]
pub struct Panel {
    /// Caption above the chart.
    pub title: String,
    /// Label under the x axis.
    pub x_label: String,
    /// Label beside the y axis.
    pub y_label: String,
    /// The lines, coloured in order from a fixed palette.
    pub series: Vec<Series>,
}

/// Draws loss (train, test) and error % (train, test) against epoch, two panels side by side, into a PNG with the `plotters` crate.
pub fn plot_curves(rows: &[EpochMetrics], png: &Path) -> Result<()> {
    let line = |name: &str, bold: bool, f: &dyn Fn(&EpochMetrics) -> f64| Series {
        name: name.to_string(),
        points: rows.iter().map(|r| (r.epoch as f64, f(r))).collect(),
        bold,
    };
    let panels = [
        Panel {
            title: "Loss".into(),
            x_label: "epoch".into(),
            y_label: "cross-entropy".into(),
            series: vec![
                line("train", false, &|r| r.train_loss),
                line("test", true, &|r| r.test_loss),
            ],
        },
        Panel {
            title: "Error (%)".into(),
            x_label: "epoch".into(),
            y_label: "error %".into(),
            series: vec![
                line("train", false, &|r| 100.0 * (1.0 - r.train_acc)),
                line("test", true, &|r| 100.0 * (1.0 - r.test_acc)),
            ],
        },
    ];
    plot_panels(&panels, png, (1200, 480))
}

/// General line-plot helper for later experiment figures: several panels, each with named series (x, y), thin or bold lines.
pub fn plot_panels(panels: &[Panel], png: &Path, size: (u32, u32)) -> Result<()> {
    draw_png(panels, png, size, text_available())
}

/// [`plot_panels`] without any text, as drawn when no font is found (exposed for tests).
#[doc(hidden)]
pub fn plot_panels_without_text(panels: &[Panel], png: &Path, size: (u32, u32)) -> Result<()> {
    draw_png(panels, png, size, false)
}

/// Font files tried in order after `$RESNET_FONT` (Debian/Ubuntu, Fedora, Arch, macOS, Windows).
pub const FONT_PATHS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/truetype/liberation2/LiberationSans-Regular.ttf",
    "/usr/share/fonts/liberation-sans/LiberationSans-Regular.ttf",
    "/usr/share/fonts/truetype/noto/NotoSans-Regular.ttf",
    "/usr/share/fonts/noto/NotoSans-Regular.ttf",
    "/usr/share/fonts/truetype/freefont/FreeSans.ttf",
    "/System/Library/Fonts/Supplemental/Arial.ttf",
    "/Library/Fonts/Arial.ttf",
    "C:\\Windows\\Fonts\\arial.ttf",
    "C:\\Windows\\Fonts\\segoeui.ttf",
];

static TEXT: OnceLock<bool> = OnceLock::new();

/// Whether a font was found (once per process) so that plots carry titles, labels and legends.
pub fn text_available() -> bool {
    *TEXT.get_or_init(|| {
        let from_env = std::env::var_os("RESNET_FONT").map(PathBuf::from);
        let candidates = from_env
            .into_iter()
            .chain(FONT_PATHS.iter().map(PathBuf::from));
        for path in candidates {
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            // plotters keeps fonts for the whole process; this happens at most once per font file.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                return true;
            }
        }
        false
    })
}

/// Line colours, in order (colour-blind-safe Okabe-Ito hues, then grey).
const PALETTE: [RGBColor; 8] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
    RGBColor(0, 0, 0),
    RGBColor(128, 128, 128),
];

fn draw_png(panels: &[Panel], png: &Path, size: (u32, u32), text: bool) -> Result<()> {
    let err = |what: String| Error::Invalid(format!("plot {}: {what}", png.display()));
    let (w, h) = size;
    if w < 64 || h < 64 || w > 16384 || h > 16384 {
        return Err(err(format!(
            "size {w}x{h} out of range (64..=16384 a side)"
        )));
    }
    if panels.is_empty() {
        return Err(err("no panels to draw".into()));
    }
    let mut buf = vec![255u8; w as usize * h as usize * 3];
    draw(&mut buf, panels, size, text).map_err(|m| err(format!("drawing failed: {m}")))?;
    let img = image::RgbImage::from_raw(w, h, buf).expect("buffer is w*h*3 bytes");
    let mut bytes = Vec::new();
    img.write_to(
        &mut std::io::Cursor::new(&mut bytes),
        image::ImageFormat::Png,
    )
    .map_err(|e| err(format!("PNG encoding failed: {e}")))?;
    crate::files::write_atomic(png, &bytes).map_err(err)
}

/// Draws all panels into an RGB buffer: one row for up to 3 panels, else a grid 3 wide.
fn draw(
    buf: &mut [u8],
    panels: &[Panel],
    size: (u32, u32),
    text: bool,
) -> std::result::Result<(), String> {
    let root = BitMapBackend::with_buffer(buf, size).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let cols = panels.len().min(3);
    let rows = panels.len().div_ceil(cols);
    let areas = root.split_evenly((rows, cols));
    for (area, panel) in areas.iter().zip(panels) {
        draw_panel(area, panel, text).map_err(|e| format!("panel `{}`: {e}", panel.title))?;
    }
    root.present().map_err(|e| e.to_string())
}

/// The range of the finite values, widened when empty or a single value, padded by 5%.
fn range(values: impl Iterator<Item = f64>, pad: bool) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if lo > hi {
        return (0.0, 1.0);
    }
    if hi - lo <= f64::EPSILON * hi.abs().max(1.0) {
        let d = (hi.abs() * 0.05).max(0.5);
        return (lo - d, hi + d);
    }
    let m = if pad { 0.05 * (hi - lo) } else { 0.0 };
    (lo - m, hi + m)
}

/// A tick label: integers without decimals, others with what they need, exponents when tiny/huge.
fn tick(v: f64) -> String {
    let a = v.abs();
    if a != 0.0 && !(1e-4..1e7).contains(&a) {
        return format!("{v:.1e}");
    }
    let s = format!("{v:.6}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".to_string()
    } else {
        s.to_string()
    }
}

fn draw_panel(
    area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    panel: &Panel,
    text: bool,
) -> std::result::Result<(), String> {
    let finite = |p: &&(f64, f64)| p.0.is_finite() && p.1.is_finite();
    let all = || {
        panel
            .series
            .iter()
            .flat_map(|s| s.points.iter().filter(finite))
    };
    let (x0, x1) = range(all().map(|p| p.0), false);
    let (y0, y1) = range(all().map(|p| p.1), true);
    let mut builder = ChartBuilder::on(area);
    builder.margin(12);
    if text {
        builder
            .caption(&panel.title, ("sans-serif", 22))
            .x_label_area_size(40)
            .y_label_area_size(60);
    }
    let mut chart = builder
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(|e| e.to_string())?;
    let mut mesh = chart.configure_mesh();
    mesh.light_line_style(RGBColor(235, 235, 235))
        .bold_line_style(RGBColor(205, 205, 205));
    if text {
        let (aw, ah) = area.dim_in_pixel();
        mesh.x_labels((aw as usize / 90).clamp(2, 10))
            .y_labels((ah as usize / 45).clamp(2, 10))
            .x_label_formatter(&|v| tick(*v))
            .y_label_formatter(&|v| tick(*v))
            .x_desc(&panel.x_label)
            .y_desc(&panel.y_label)
            .label_style(("sans-serif", 14))
            .axis_desc_style(("sans-serif", 16));
    } else {
        mesh.x_labels(0).y_labels(0);
    }
    mesh.draw().map_err(|e| e.to_string())?;
    // Frame the plotting area so a text-less plot still shows its extent.
    let (xr, yr) = (chart.x_range(), chart.y_range());
    chart
        .draw_series(std::iter::once(Rectangle::new(
            [(xr.start, yr.start), (xr.end, yr.end)],
            RGBColor(120, 120, 120).stroke_width(1),
        )))
        .map_err(|e| e.to_string())?;
    for (i, s) in panel.series.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let width = if s.bold { 3 } else { 1 };
        let style = color.stroke_width(width);
        let points: Vec<(f64, f64)> = s.points.iter().filter(finite).copied().collect();
        let drawn = if points.len() == 1 {
            // A line through one point draws nothing: mark it instead.
            chart.draw_series(
                points
                    .iter()
                    .map(|&p| Circle::new(p, 3 + width, style.filled())),
            )
        } else {
            chart.draw_series(LineSeries::new(points, style))
        }
        .map_err(|e| e.to_string())?;
        if text {
            drawn.label(&s.name).legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 24, y)], color.stroke_width(width))
            });
        }
    }
    if text && panel.series.iter().any(|s| !s.name.is_empty()) {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(160, 160, 160))
            .position(SeriesLabelPosition::UpperRight)
            .label_font(("sans-serif", 14))
            .draw()
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}
