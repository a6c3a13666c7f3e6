//! Training: learning-rate schedules and data order (portable), and the native training loop.

mod schedule;
pub use schedule::{shuffled, LrSchedule};

#[cfg(not(target_arch = "wasm32"))]
mod run;
#[cfg(not(target_arch = "wasm32"))]
pub use run::{evaluate, metadata, train, TrainOptions, TrainSummary};

#[cfg(not(target_arch = "wasm32"))]
mod experiment;
#[cfg(not(target_arch = "wasm32"))]
pub use experiment::{run_experiment, Experiment, PAPER_TABLE6};
