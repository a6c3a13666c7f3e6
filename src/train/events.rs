//! What a training run reports as it goes: progress, epochs, warnings. The library prints
//! nothing; whoever runs it renders these (the CLI with progress bars, tests collect them, a
//! browser page could draw them).

use crate::report::EpochMetrics;

/// One thing a run has to say.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The run is set up and about to train.
    Started(RunInfo),
    /// An epoch's steps are under way: `done` of `steps`; `status` says how it goes (loss,
    /// accuracy, rate, speed), empty until the first read-back.
    Training {
        /// The epoch, 1-based.
        epoch: usize,
        /// The run's epochs.
        epochs: usize,
        /// Steps done in this epoch.
        done: usize,
        /// Steps in the epoch.
        steps: usize,
        /// Steps taken in the run (the iteration just finished).
        iteration: u64,
        /// "loss 1.2345 acc 56.78% lr 0.1000 123.4 img/s".
        status: String,
    },
    /// The epoch's steps are done (a progress bar can go).
    TrainingDone,
    /// An evaluation is under way: `done` of `total` images.
    Evaluating {
        /// Images evaluated.
        done: usize,
        /// Images to evaluate.
        total: usize,
    },
    /// The evaluation is done.
    EvaluatingDone,
    /// An epoch finished: its metrics row, written to metrics.csv.
    Epoch {
        /// The row.
        row: EpochMetrics,
        /// The run's epochs.
        epochs: usize,
        /// What was evaluated: "test" or "val".
        evaluated: &'static str,
    },
    /// With several ranks: what exchanging gradients (and BatchNorm sums) cost this epoch.
    Exchanged(ExchangeCost),
    /// With several ranks: every rank holds the same weights and optimizer state after
    /// `epoch`.
    RanksAgree {
        /// The epoch checked.
        epoch: usize,
        /// How many ranks.
        ranks: usize,
    },
    /// Something worth a line that does not stop the run (a pretrained head replaced).
    Note(String),
    /// A download (of pretrained weights) is under way.
    Download(crate::data::Transfer),
    /// Something that went wrong but did not stop the run (a skipped photo).
    Warning(String),
}

/// What [`Event::Started`] says about a run.
#[derive(Debug, Clone, PartialEq)]
pub struct RunInfo {
    /// The model's name.
    pub model: String,
    /// The adapter and its backend.
    pub adapter: String,
    /// Images trained on and evaluated each epoch.
    pub train_images: usize,
    /// Images evaluated after each epoch.
    pub eval_images: usize,
    /// The global batch.
    pub batch_size: usize,
    /// Steps in an epoch.
    pub steps_per_epoch: usize,
    /// Epochs of the run.
    pub epochs: usize,
    /// The base learning rate.
    pub lr: f64,
    /// The schedule in words.
    pub schedule: String,
    /// GPU memory of the model and of the plan, bytes.
    pub memory: (u64, u64),
    /// Dispatches of a training step.
    pub dispatches: usize,
    /// The epoch a resumed run continues after (`None`: a new run).
    pub resumed_after: Option<usize>,
    /// Processes training together, and the images of each one's step.
    pub ranks: (usize, usize),
    /// BatchNorm exchanges between ranks a step (0 without SyncBatchNorm).
    pub bn_exchanges: usize,
}

/// What [`Event::Exchanged`] says.
#[derive(Debug, Clone, PartialEq)]
pub struct ExchangeCost {
    /// The epoch.
    pub epoch: usize,
    /// Gradient bytes each rank contributes (S).
    pub gradient_bytes: usize,
    /// Gradient bytes this rank received from the others a step, as the transport counted them
    /// (2(N-1)/N x S for the reduce-scatter and allgather).
    pub received_per_step: u64,
    /// Processes training together.
    pub ranks: usize,
    /// BatchNorm exchanges a step.
    pub bn_exchanges: usize,
    /// Gradient buckets a step (1: one exchange after the backward pass).
    pub buckets: usize,
    /// Milliseconds of exchange a step, and the whole step's.
    pub ms_per_step: (f64, f64),
    /// Milliseconds of exchange a step spent while the GPU still computed the backward pass.
    pub hidden_ms_per_step: f64,
}

/// Where a run's events go.
pub trait Events {
    /// Takes one event.
    fn emit(&mut self, event: Event);
}

/// Events collected in order (tests; a caller that reads them afterwards).
impl Events for Vec<Event> {
    fn emit(&mut self, event: Event) {
        self.push(event);
    }
}

/// No events (a caller that wants none).
pub struct Silent;

impl Events for Silent {
    fn emit(&mut self, _: Event) {}
}
