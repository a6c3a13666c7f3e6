//! Progress on long work: a bar on a terminal, and without one (logs, CI) a plain line every
//! 30 seconds. Work that ends within `delay` shows nothing. Kernel timing (a first run on an
//! adapter, before any bar) gets plain lines: one when it starts, then a count every 15 s.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use resnet::gpu::{Choice, OnMeasured};
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often a line is printed when stderr is not a terminal.
const LINE_EVERY: Duration = Duration::from_secs(30);

/// Progress of `len` units of work (steps, images).
pub struct Progress {
    bar: ProgressBar,
    label: String,
    unit: &'static str,
    started: Instant,
    last_line: Instant,
    delay: Duration,
    terminal: bool,
}

impl Progress {
    /// Progress labelled e.g. `epoch 3/10` over `len` `unit`s, shown once `delay` has passed.
    pub fn new(len: u64, label: String, unit: &'static str, delay: Duration) -> Progress {
        let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::hidden());
        bar.set_style(
            ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} ETA {eta}")
                .expect("template")
                .progress_chars("=> "),
        );
        bar.set_prefix(label.clone());
        let now = Instant::now();
        Progress {
            bar,
            label,
            unit,
            started: now,
            last_line: now,
            delay,
            terminal: std::io::stderr().is_terminal(),
        }
    }

    /// `done` units are done; `msg` says how it goes (loss, speed).
    pub fn update(&mut self, done: u64, msg: &str) {
        self.bar.set_position(done);
        self.bar.set_message(msg.to_string());
        let elapsed = self.started.elapsed();
        if elapsed < self.delay {
            return;
        }
        if self.terminal {
            if self.bar.is_hidden() {
                self.bar.set_draw_target(ProgressDrawTarget::stderr());
            }
        } else if self.last_line.elapsed() >= LINE_EVERY && done > 0 {
            let len = self.bar.length().unwrap_or(done);
            let eta = elapsed.as_secs_f64() / done as f64 * len.saturating_sub(done) as f64;
            eprintln!(
                "{} {} {done}/{len} {msg} ETA {eta:.0}s",
                self.label, self.unit
            );
            self.last_line = Instant::now();
        }
    }

    /// Removes the bar.
    pub fn finish(self) {
        self.bar.finish_and_clear();
    }
}

/// A download's bytes as a bar on a terminal (nothing elsewhere: logs get the final line of
/// whatever follows), and its notes as lines.
#[derive(Default)]
pub struct DownloadBar {
    bar: Option<ProgressBar>,
}

impl DownloadBar {
    /// Shows one report of a download.
    pub fn show(&mut self, t: resnet::data::Transfer) {
        use resnet::data::Transfer;
        match t {
            Transfer::Bytes { url, done, total } => {
                let bar = self.bar.get_or_insert_with(|| download_bar(total, &url));
                bar.set_position(done);
            }
            Transfer::Ended => {
                if let Some(b) = self.bar.take() {
                    b.finish_and_clear();
                }
            }
            Transfer::Note(n) => eprintln!("{}", super::flags::with_flags(&n)),
        }
    }
}

/// A byte-counting bar on stderr, hidden when stderr is not a terminal.
fn download_bar(len: Option<u64>, url: &str) -> ProgressBar {
    let target = match std::io::stderr().is_terminal() {
        true => ProgressDrawTarget::stderr(),
        false => ProgressDrawTarget::hidden(),
    };
    let template = if len.is_some() {
        "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}"
    } else {
        "{msg} {spinner} {bytes} {bytes_per_sec}"
    };
    let style = ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    ProgressBar::with_draw_target(len, target)
        .with_style(style)
        .with_message(format!("downloading {url}"))
}

/// How often a line counts the (op, shape) timed so far while kernels are timed.
const TUNING_LINE_EVERY: Duration = Duration::from_secs(15);

/// The lines that say kernels are being timed: one at the first (op, shape) measured, then the
/// count every [`TUNING_LINE_EVERY`]. A first run on an adapter spends a minute or more there
/// (every family at every convolution shape) before its first step; later runs read the cache.
#[derive(Default)]
struct TuningLines {
    timed: usize,
    last_line: Option<Instant>,
}

impl TuningLines {
    /// One more (op, shape) timed at `now`; the line to print, if any.
    fn note(&mut self, now: Instant) -> Option<String> {
        self.timed += 1;
        let line = match self.last_line {
            None => "timing the convolution kernel families at each new shape on this adapter \
                     (remembered in the tuning cache for later runs)"
                .to_string(),
            Some(t) if now.duration_since(t) >= TUNING_LINE_EVERY => {
                format!("timing kernels: {} (op, shape) timed so far", self.timed)
            }
            Some(_) => return None,
        };
        self.last_line = Some(now);
        Some(line)
    }
}

/// [`TuningLines`] on stderr, for [`resnet::gpu::GpuOptions::on_measured`].
pub fn tuning_lines() -> OnMeasured {
    let lines = Mutex::new(TuningLines::default());
    OnMeasured(Some(Arc::new(move |_: &Choice| {
        let mut lines = lines.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(l) = lines.note(Instant::now()) {
            eprintln!("{l}");
        }
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tuning_says_it_started_then_counts_every_15_seconds() {
        let mut lines = TuningLines::default();
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let first = lines.note(at(0)).unwrap();
        assert!(
            first.starts_with("timing the convolution kernel families"),
            "{first}"
        );
        assert_eq!(lines.note(at(5)), None);
        assert_eq!(lines.note(at(14)), None);
        let count = lines.note(at(15)).unwrap();
        assert_eq!(count, "timing kernels: 4 (op, shape) timed so far");
        assert_eq!(lines.note(at(29)), None);
        assert_eq!(
            lines.note(at(31)).unwrap(),
            "timing kernels: 6 (op, shape) timed so far"
        );
    }
}
