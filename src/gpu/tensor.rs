//! A tensor is a storage buffer plus its shape (row-major, PyTorch's NCHW for images).

use super::Gpu;
use crate::error::{Error, Result};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use wgpu::util::DeviceExt;

/// One buffer's share of its device's count of live bytes: the count drops when the last tensor
/// (or view) of the buffer does, so the count is what the device holds now, not all it ever
/// allocated (a tuning race's losing kernels and their scratch are freed, and must not count).
#[derive(Debug)]
pub(super) struct Allocation {
    bytes: u64,
    live: Arc<AtomicU64>,
}

impl Allocation {
    fn new(live: &Arc<AtomicU64>, bytes: u64) -> Arc<Allocation> {
        live.fetch_add(bytes, Ordering::Relaxed);
        Arc::new(Allocation {
            bytes,
            live: live.clone(),
        })
    }
}

impl Drop for Allocation {
    fn drop(&mut self) {
        self.live.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// What a tensor's elements are: 4-byte words (f32, or u32 where a shader says so), or f16
/// (activations in mixed precision, where the plan stores them so: half the memory traffic).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dtype {
    F32,
    F16,
}

impl Dtype {
    /// Bytes per element.
    pub fn size(self) -> u64 {
        match self {
            Dtype::F32 => 4,
            Dtype::F16 => 2,
        }
    }
}

/// A GPU buffer of f32 (or u32) or f16 elements with a shape.
#[derive(Clone, Debug)]
pub struct Tensor {
    /// The storage buffer (STORAGE | COPY_SRC | COPY_DST).
    pub buffer: wgpu::Buffer,
    /// Byte offset of element 0 in `buffer` (non-zero for views into a flat buffer).
    pub offset: u64,
    /// Dimensions, outermost first.
    pub shape: Vec<usize>,
    /// The element type.
    pub dtype: Dtype,
    /// Keeps the buffer counted in [`Gpu::bytes_allocated`] while any view of it lives.
    allocation: Arc<Allocation>,
}

const USAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_SRC)
    .union(wgpu::BufferUsages::COPY_DST);

impl Tensor {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }
    /// True when a dimension is zero.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Size in bytes, rounded up to whole 4-byte words (a storage binding's size must be, so an
    /// f16 tensor of odd length holds one more element's bytes).
    pub fn bytes(&self) -> u64 {
        (self.len() as u64 * self.dtype.size()).next_multiple_of(4)
    }
    /// The binding of exactly this tensor's bytes.
    pub fn binding(&self) -> wgpu::BindingResource<'_> {
        wgpu::BindingResource::Buffer(wgpu::BufferBinding {
            buffer: &self.buffer,
            offset: self.offset,
            size: wgpu::BufferSize::new(self.bytes()),
        })
    }
    /// What keeps the buffer counted as live (a kernel that binds it holds it too).
    pub(super) fn allocation(&self) -> Arc<Allocation> {
        self.allocation.clone()
    }

    /// The same buffer seen with another shape of the same number of elements.
    pub fn reshaped(self, shape: &[usize]) -> Tensor {
        assert_eq!(
            shape.iter().product::<usize>(),
            self.len(),
            "reshape to {shape:?}"
        );
        Tensor {
            shape: shape.to_vec(),
            ..self
        }
    }

    /// A view of `shape` starting `start` elements into this tensor. The byte offset must meet the
    /// device's `min_storage_buffer_offset_alignment` (256 on most devices).
    pub fn view(&self, start: usize, shape: &[usize]) -> Result<Tensor> {
        let len: usize = shape.iter().product();
        if start + len > self.len() {
            return Err(Error::Shape {
                op: "view",
                msg: format!("{start}+{len} elements past a tensor of {}", self.len()),
            });
        }
        Ok(Tensor {
            buffer: self.buffer.clone(),
            offset: self.offset + start as u64 * self.dtype.size(),
            shape: shape.to_vec(),
            dtype: self.dtype,
            allocation: self.allocation.clone(),
        })
    }
}

fn checked_bytes(gpu: &Gpu, op: &'static str, shape: &[usize], dtype: Dtype) -> Result<u64> {
    if shape.contains(&0) {
        return Err(Error::Shape {
            op,
            msg: format!("zero-sized dimension in {shape:?}"),
        });
    }
    let bytes = (shape.iter().product::<usize>() as u64 * dtype.size()).next_multiple_of(4);
    gpu.check_size(op, bytes).map_err(|e| match e {
        Error::Limit { op, msg } => Error::Limit {
            op,
            msg: format!("tensor {shape:?}: {msg}"),
        },
        e => e,
    })?;
    Ok(bytes)
}

impl Gpu {
    /// A zero-filled f32 tensor.
    pub fn zeros(&self, shape: &[usize]) -> Result<Tensor> {
        self.zeros_of(shape, Dtype::F32)
    }

    /// A zero-filled tensor of `dtype`.
    pub fn zeros_of(&self, shape: &[usize], dtype: Dtype) -> Result<Tensor> {
        let bytes = checked_bytes(self, "alloc", shape, dtype)?;
        let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size: bytes,
            usage: USAGE,
            mapped_at_creation: false,
        });
        Ok(Tensor {
            buffer,
            offset: 0,
            shape: shape.to_vec(),
            dtype,
            allocation: Allocation::new(&self.allocated, bytes),
        })
    }

    /// A tensor holding `data` (f32 or u32 words).
    pub fn upload<T: bytemuck::Pod>(&self, data: &[T], shape: &[usize]) -> Result<Tensor> {
        let dtype = Dtype::F32;
        let bytes = checked_bytes(self, "upload", shape, dtype)?;
        if std::mem::size_of_val(data) as u64 != bytes {
            return Err(Error::Shape {
                op: "upload",
                msg: format!(
                    "{} bytes of data for shape {shape:?}",
                    std::mem::size_of_val(data)
                ),
            });
        }
        let buffer = self
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: None,
                contents: bytemuck::cast_slice(data),
                usage: USAGE,
            });
        Ok(Tensor {
            buffer,
            offset: 0,
            shape: shape.to_vec(),
            dtype,
            allocation: Allocation::new(&self.allocated, bytes),
        })
    }

    /// An f16 tensor holding `data` rounded to f16 (to nearest, ties to even).
    pub fn upload_f16(&self, data: &[f32], shape: &[usize]) -> Result<Tensor> {
        let t = self.zeros_of(shape, Dtype::F16)?;
        if data.len() != t.len() {
            return Err(Error::Shape {
                op: "upload",
                msg: format!("{} values for shape {shape:?}", data.len()),
            });
        }
        let mut halves: Vec<u16> = data
            .iter()
            .map(|v| half::f16::from_f32(*v).to_bits())
            .collect();
        halves.resize(t.bytes() as usize / 2, 0);
        self.queue
            .write_buffer(&t.buffer, 0, bytemuck::cast_slice(&halves));
        Ok(t)
    }

    /// Overwrites a tensor's contents (same size) through the queue.
    pub fn write<T: bytemuck::Pod>(&self, t: &Tensor, data: &[T]) -> Result<()> {
        if t.dtype != Dtype::F32 || std::mem::size_of_val(data) != t.len() * 4 {
            return Err(Error::Shape {
                op: "write",
                msg: format!(
                    "{} bytes for a tensor of shape {:?}",
                    std::mem::size_of_val(data),
                    t.shape
                ),
            });
        }
        self.queue
            .write_buffer(&t.buffer, t.offset, bytemuck::cast_slice(data));
        Ok(())
    }
}
