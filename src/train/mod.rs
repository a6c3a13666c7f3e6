//! Training: learning-rate schedules, data order and the step shared with the browser
//! (portable), and natively the training loop [`fit`] with what it is given (a [`TrainConfig`],
//! the [`Ranks`] training together, a [`RunDir`], [`Events`]), evaluation and the paper's
//! experiments.

mod ema;
mod schedule;
mod step;
pub use ema::ExponentialMovingAverage;
pub use schedule::{repeated_augmentation, shuffled, LrSchedule, Steps, WarmupMethod};
pub use step::{Collective, Trainer};

#[cfg(not(target_arch = "wasm32"))]
mod config;
#[cfg(not(target_arch = "wasm32"))]
mod evaluate;
#[cfg(not(target_arch = "wasm32"))]
mod events;
#[cfg(not(target_arch = "wasm32"))]
mod fit;
#[cfg(not(target_arch = "wasm32"))]
mod ranks;
#[cfg(not(target_arch = "wasm32"))]
mod run_dir;
#[cfg(not(target_arch = "wasm32"))]
mod setup;
#[cfg(not(target_arch = "wasm32"))]
pub use config::{
    bucket_floats, FineTuning, ModelEma, Recipe, TrainConfig, BUCKET_MB, EVAL_BATCH,
    IMAGENET_EPOCHS, IMAGENET_LR, IMAGENET_MILESTONE_EPOCHS, PAPER_ITERATIONS,
};
#[cfg(not(target_arch = "wasm32"))]
pub use evaluate::{evaluate, Scores};
#[cfg(not(target_arch = "wasm32"))]
pub use events::{Event, Events, ExchangeCost, RunInfo, Silent};
#[cfg(not(target_arch = "wasm32"))]
pub use fit::{fit, TrainSummary};
#[cfg(not(target_arch = "wasm32"))]
pub use ranks::{Exchanged, OneProcess, Ranks};
#[cfg(not(target_arch = "wasm32"))]
pub use run_dir::{RunDir, RunIdentity, RunState};

#[cfg(not(target_arch = "wasm32"))]
mod experiment;
#[cfg(not(target_arch = "wasm32"))]
pub use experiment::{run_experiment, Experiment, PAPER_TABLE6};
