//! A ResNet engine whose math runs in hand-written WGSL compute shaders through wgpu.
//!
//! Layers of the crate, data flowing one way: `ops` (one Rust file per shader file) build
//! [`gpu::Kernel`]s on top of `gpu` (device, buffers, pipeline cache, readback).

pub mod checkpoint;
#[cfg(not(target_arch = "wasm32"))]
pub mod data;
pub mod error;
pub mod gpu;
pub mod model;
pub mod ops;
pub mod plan;
#[cfg(not(target_arch = "wasm32"))]
pub mod report;
pub mod train;

pub use error::{Error, Result};
pub use gpu::{Gpu, GpuOptions, Kernel, Tensor};
