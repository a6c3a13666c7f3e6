//! Activation buffers shared between layers: a buffer goes back to the pool once its last reader
//! has been recorded, and the next request for the same number and type of elements takes it.

use crate::error::Result;
use crate::gpu::{Dtype, Gpu, Tensor};
use std::collections::HashMap;

/// Free buffers by element count and type.
#[derive(Default)]
pub(super) struct BufferPool {
    free: HashMap<(usize, Dtype), Vec<Tensor>>,
}

impl BufferPool {
    /// An f32 buffer of `shape`: a free one of the same size, else a new one.
    pub fn get(&mut self, gpu: &Gpu, shape: &[usize]) -> Result<Tensor> {
        self.get_of(gpu, shape, Dtype::F32)
    }

    /// A buffer of `shape` and `dtype`: a free one of the same size and type, else a new one.
    pub fn get_of(&mut self, gpu: &Gpu, shape: &[usize], dtype: Dtype) -> Result<Tensor> {
        let len: usize = shape.iter().product();
        match self.free.get_mut(&(len, dtype)).and_then(Vec::pop) {
            Some(t) => Ok(t.reshaped(shape)),
            None => gpu.zeros_of(shape, dtype),
        }
    }

    /// Hands `t` back: no kernel recorded later may read what it holds.
    pub fn put(&mut self, t: Tensor) {
        self.free.entry((t.len(), t.dtype)).or_default().push(t);
    }
}
