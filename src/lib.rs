//! A ResNet engine whose math runs in hand-written WGSL compute shaders through wgpu.
//!
//! Layers of the crate, data flowing one way: `train` (the loop, schedules) runs a `plan` (a model
//! and a batch size become every buffer and dispatch of a step, once) of a `model` (specs by name,
//! the layer graph, weights with PyTorch names); `ops` (the Rust side of each shader family) build
//! [`gpu::Kernel`]s on top of `gpu` (device, buffers, pipeline cache, readback).

pub mod checkpoint;
pub mod cifar10;
pub mod classify;
#[cfg(not(target_arch = "wasm32"))]
pub mod data;
pub mod error;
#[cfg(not(target_arch = "wasm32"))]
pub mod files;
pub mod gpu;
pub mod model;
pub mod ops;
pub mod plan;
pub mod preprocess;
pub mod reference;
#[cfg(not(target_arch = "wasm32"))]
pub mod report;
pub mod rng;
#[cfg(not(target_arch = "wasm32"))]
pub mod selftest;
pub mod train;

pub use error::{Error, Result};
pub use gpu::{Gpu, GpuOptions, Kernel, Tensor};
