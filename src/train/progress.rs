//! Progress on long work: a bar on a terminal, and without one (logs, CI) a plain line every
//! 30 seconds. Work that ends within `delay` shows nothing.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// How often a line is printed when stderr is not a terminal.
const LINE_EVERY: Duration = Duration::from_secs(30);

/// Progress of `len` units of work (steps, images).
pub(super) struct Progress {
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
