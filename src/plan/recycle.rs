//! Activation buffers shared between layers: a buffer goes back to the pool once its last reader
//! has been recorded, and the next request for the same number of elements takes it.

use crate::error::Result;
use crate::gpu::{Gpu, Tensor};
use std::collections::HashMap;

/// Free buffers by element count.
#[derive(Default)]
pub(super) struct BufferPool {
    free: HashMap<usize, Vec<Tensor>>,
}

impl BufferPool {
    /// A buffer of `shape`: a free one of the same size, else a new one.
    pub fn get(&mut self, gpu: &Gpu, shape: &[usize]) -> Result<Tensor> {
        let len: usize = shape.iter().product();
        match self.free.get_mut(&len).and_then(Vec::pop) {
            Some(t) => Ok(t.reshaped(shape)),
            None => gpu.zeros(shape),
        }
    }

    /// Hands `t` back: no kernel recorded later may read what it holds.
    pub fn put(&mut self, t: Tensor) {
        self.free.entry(t.len()).or_default().push(t);
    }
}
