//! Training: learning-rate schedules, data order and the step shared with the browser
//! (portable), and the native training loop, evaluation and the paper's experiments.

mod schedule;
mod step;
pub use schedule::{shuffled, LrSchedule};
pub use step::{Collective, Trainer};

#[cfg(not(target_arch = "wasm32"))]
mod evaluate;
#[cfg(not(target_arch = "wasm32"))]
mod options;
#[cfg(not(target_arch = "wasm32"))]
mod progress;
#[cfg(not(target_arch = "wasm32"))]
mod run;
#[cfg(not(target_arch = "wasm32"))]
pub use evaluate::evaluate;
#[cfg(not(target_arch = "wasm32"))]
pub use options::{Recipe, TrainOptions, TuneOptions, EVAL_BATCH};
#[cfg(not(target_arch = "wasm32"))]
pub use run::{check_resumable, train, train_as, TrainSummary, STALL_ENV};

#[cfg(not(target_arch = "wasm32"))]
mod experiment;
#[cfg(not(target_arch = "wasm32"))]
pub use experiment::{run_experiment, Experiment, PAPER_TABLE6};
