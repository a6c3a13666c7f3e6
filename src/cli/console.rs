//! How the CLI shows a run's events: progress bars (or a line every 30 s without a terminal),
//! one line per epoch on stdout, notes and warnings on stderr, settings named as flags. Under
//! mpirun only rank 0 shows progress and epochs; every rank shows its warnings.

use super::flags::with_flags;
use super::progress::{DownloadBar, Progress};
use resnet::report::EpochMetrics;
use resnet::train::{Event, Events, ExchangeCost, RunInfo};
use std::time::Duration;

/// For crash tests: after this iteration the run says so on stderr and hangs, so a test can
/// `kill -9` it at a known point in the middle of an epoch.
const STALL_ENV: &str = "RESNET_STALL_AT_ITERATION";

/// How long an evaluation runs before it shows progress.
const EVAL_QUIET_FOR: Duration = Duration::from_secs(3);

/// The terminal's view of a run.
pub struct Console {
    /// Whether this process shows progress and epochs (rank 0).
    shows: bool,
    training: Option<Progress>,
    evaluating: Option<Progress>,
    download: DownloadBar,
    stall_at: Option<u64>,
}

impl Console {
    /// A console for rank 0 (`shows`) or another rank.
    pub fn new(shows: bool) -> Console {
        Console {
            shows,
            training: None,
            evaluating: None,
            download: DownloadBar::default(),
            stall_at: std::env::var(STALL_ENV).ok().and_then(|v| v.parse().ok()),
        }
    }
}

impl Events for Console {
    fn emit(&mut self, event: Event) {
        match event {
            Event::Training {
                epoch,
                epochs,
                done,
                steps,
                iteration,
                status,
            } => {
                if self.shows {
                    let label = format!("epoch {epoch}/{epochs}");
                    let bar = self.training.get_or_insert_with(|| {
                        Progress::new(steps as u64, label, "step", Duration::ZERO)
                    });
                    bar.update(done as u64, &with_flags(&status));
                }
                if self.stall_at == Some(iteration) {
                    stall(iteration);
                }
            }
            Event::TrainingDone => self.training.take().into_iter().for_each(Progress::finish),
            Event::Evaluating { done, total } if self.shows => {
                let bar = self.evaluating.get_or_insert_with(|| {
                    Progress::new(total as u64, "evaluating".into(), "images", EVAL_QUIET_FOR)
                });
                bar.update(done as u64, "");
            }
            Event::EvaluatingDone => self
                .evaluating
                .take()
                .into_iter()
                .for_each(Progress::finish),
            Event::Warning(w) => eprintln!("warning: {}", with_flags(&w)),
            Event::Download(t) => self.download.show(t),
            other if self.shows => show(other),
            _ => {}
        }
    }
}

/// The lines of rank 0 alone.
fn show(event: Event) {
    match event {
        Event::Started(info) => announce(&info),
        Event::Epoch {
            row,
            epochs,
            evaluated,
        } => print_epoch(&row, epochs, evaluated),
        Event::Exchanged(cost) if cost.ranks > 1 => report_exchange(&cost),
        Event::RanksAgree { epoch, ranks } => {
            eprintln!("epoch {epoch}: weights and optimizer state identical on all {ranks} ranks")
        }
        Event::Note(n) => eprintln!("{}", with_flags(&n)),
        _ => {}
    }
}

/// One line saying what is about to run and what it costs (and how it is shared among ranks).
fn announce(i: &RunInfo) {
    let resuming = match i.resumed_after {
        Some(e) => format!(", resuming after epoch {e}"),
        None => String::new(),
    };
    let (model_mib, plan_mib) = (i.memory.0 >> 20, i.memory.1 >> 20);
    eprintln!(
        "{} on {}; {} train / {} eval images, batch {}, {} steps/epoch, {} epochs, lr {} {}, GPU memory {} MiB (model {model_mib} + plan {plan_mib}), {} dispatches/step{resuming}",
        i.model, i.adapter, i.train_images, i.eval_images, i.batch_size, i.steps_per_epoch,
        i.epochs, i.lr, i.schedule, (i.memory.0 + i.memory.1) >> 20, i.dispatches
    );
    let (ranks, local) = i.ranks;
    if ranks > 1 {
        let bn = match i.bn_exchanges {
            0 => "BatchNorm statistics of each rank's own images".to_string(),
            n => {
                format!("BatchNorm statistics of the whole batch (--sync-bn, {n} exchanges a step)")
            }
        };
        eprintln!(
            "data parallel over {ranks} MPI ranks: {local} images a step each, gradients averaged every step, {bn}"
        );
    }
}

fn print_epoch(row: &EpochMetrics, epochs: usize, evaluated: &str) {
    let average = match row.ema_test_loss.zip(row.ema_test_acc) {
        Some((loss, acc)) => format!(
            " | EMA loss {loss:.4} acc {:.2}% top-5 {:.2}%",
            100.0 * acc,
            100.0 * row.ema_test_acc5.unwrap_or(f64::NAN)
        ),
        None => String::new(),
    };
    println!(
        "epoch {}/{epochs}: train loss {:.4} acc {:.2}% top-5 {:.2}% | {evaluated} loss {:.4} acc {:.2}% top-5 {:.2}%{average} | {:.1} img/s | {:.0}s",
        row.epoch,
        row.train_loss,
        100.0 * row.train_acc,
        100.0 * row.train_acc5.unwrap_or(f64::NAN),
        row.test_loss,
        100.0 * row.test_acc,
        100.0 * row.test_acc5.unwrap_or(f64::NAN),
        row.images_per_sec,
        row.seconds
    );
}

fn report_exchange(c: &ExchangeCost) {
    let bn = match c.bn_exchanges {
        0 => String::new(),
        n => format!(" and {n} BatchNorm exchanges"),
    };
    let (ms, step_ms) = c.ms_per_step;
    let hidden = match c.buckets {
        1 => String::new(),
        n => format!(
            " in {n} buckets, {:.1} ms of it behind the backward pass",
            c.hidden_ms_per_step
        ),
    };
    eprintln!(
        "epoch {}: gradients of {} bytes a rank averaged over {} ranks{bn} in {ms:.1} ms a step ({:.1}% of the {step_ms:.0} ms step){hidden}, {} bytes received a step",
        c.epoch,
        c.gradient_bytes,
        c.ranks,
        100.0 * ms / step_ms,
        c.received_per_step
    );
}

fn stall(iteration: u64) -> ! {
    eprintln!("stalled after iteration {iteration} ({STALL_ENV})");
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
