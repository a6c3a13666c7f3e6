//! Training: learning-rate schedules and data order (portable), and the native training loop.

mod schedule;
mod step;
pub use schedule::{shuffled, LrSchedule};
pub use step::Trainer;

#[cfg(not(target_arch = "wasm32"))]
mod run;
#[cfg(not(target_arch = "wasm32"))]
pub use run::{evaluate, train, Norm, TrainOptions, TrainSummary, CIFAR10_NORM};

#[cfg(not(target_arch = "wasm32"))]
mod experiment;
#[cfg(not(target_arch = "wasm32"))]
pub use experiment::{run_experiment, Experiment, PAPER_TABLE6};
