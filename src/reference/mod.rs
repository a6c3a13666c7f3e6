//! Plain f64 CPU references, written from PyTorch's definitions (NCHW, OIHW): every op forward and
//! backward (`ops`), and one whole training step of a ResNet composed from them by state_dict
//! name (`network`). The tests check the GPU against them, and so does `resnet selftest` on a
//! user's adapter. Slow by design: loops a reader can check by hand.

pub mod network;
mod ops;

pub use ops::*;
