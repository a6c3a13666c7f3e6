//! A `Kernel` is one recorded-ahead dispatch: pipeline, bind group, parameters and grid.
//! Ops build kernels once (plan time); a step only records them.

use super::{Gpu, Tensor};
use crate::error::{Error, Result};
use std::sync::Arc;
use wgpu::util::DeviceExt;

/// Parameters of a dispatch as 32-bit words, in the order of the shader's `Params` struct.
#[derive(Debug, Clone, Default)]
pub struct Uniform(pub Vec<u32>);

impl Uniform {
    /// An empty parameter list.
    pub fn new() -> Self {
        Self::default()
    }
    /// Appends a u32 field.
    pub fn u(mut self, v: usize) -> Self {
        self.0.push(v as u32);
        self
    }
    /// Appends an f32 field.
    pub fn f(mut self, v: f32) -> Self {
        self.0.push(v.to_bits());
        self
    }
    /// The words as bytes, padded to 16 bytes as uniform buffers require.
    pub fn bytes(&self) -> Vec<u8> {
        let mut w = self.0.clone();
        while w.is_empty() || !w.len().is_multiple_of(4) {
            w.push(0);
        }
        bytemuck::cast_slice(&w).to_vec()
    }
}

/// A dispatch ready to record: no allocation or compilation happens when it is recorded.
pub struct Kernel {
    /// Entry point name, for timings and errors.
    pub name: &'static str,
    /// The op that built it, as the op names itself in errors (e.g. `conv2d forward`).
    pub op: &'static str,
    /// Floating-point operations of useful work (a multiply-add is two), where the op counts
    /// them (convolutions, the linear layer; on the op's main kernel); 0 elsewhere.
    pub flops: u64,
    /// Bytes of the tensors it binds, each counted once: roughly its compulsory memory traffic
    /// (re-reads that miss the caches come on top; a bound tensor it leaves untouched, such as
    /// an unused bias slot, is counted all the same).
    pub bytes: u64,
    pipeline: Arc<wgpu::ComputePipeline>,
    bind_group: wgpu::BindGroup,
    /// Uniform buffer holding the parameters (binding 0), if the shader has one.
    pub params: Option<wgpu::Buffer>,
    /// Workgroup grid.
    pub grid: [u32; 3],
    /// The buffers its bind group holds, counted as live while the kernel is (a plan's
    /// intermediate tensors are dropped once bound; their memory is not).
    _holds: Vec<Arc<super::tensor::Allocation>>,
}

/// What a kernel binds: a shader entry point, its parameters and its storage buffers.
pub struct KernelDesc<'a> {
    /// Op name used in errors.
    pub op: &'static str,
    /// Shader file name (cache key).
    pub file: &'static str,
    /// Shader source.
    pub source: &'static str,
    /// Entry point.
    pub entry: &'static str,
    /// Parameters bound at binding 0.
    pub params: Uniform,
    /// Storage buffers: (binding, buffer).
    pub buffers: &'a [(u32, &'a Tensor)],
    /// Total number of workgroups; laid out over x and y when it exceeds one dimension's limit.
    pub workgroups: u64,
}

impl Kernel {
    /// Builds the kernel: pipeline from the cache, a parameter buffer, a bind group, a grid.
    pub fn new(gpu: &Gpu, d: KernelDesc<'_>) -> Result<Kernel> {
        let grid = grid(gpu, d.op, d.workgroups)?;
        for (_, t) in d.buffers {
            gpu.check_binding(d.op, t.offset, t.bytes())
                .map_err(|e| match e {
                    Error::Limit { op, msg } => Error::Limit {
                        op,
                        msg: format!("tensor {:?}: {msg}", t.shape),
                    },
                    e => e,
                })?;
        }
        let pipeline = gpu.pipeline(d.file, d.source, d.entry);
        let params = gpu
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(d.entry),
                contents: &d.params.bytes(),
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            });
        let mut entries = vec![wgpu::BindGroupEntry {
            binding: 0,
            resource: params.as_entire_binding(),
        }];
        for (b, t) in d.buffers {
            entries.push(wgpu::BindGroupEntry {
                binding: *b,
                resource: t.binding(),
            });
        }
        let bind_group = gpu.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(d.entry),
            layout: &pipeline.get_bind_group_layout(0),
            entries: &entries,
        });
        Ok(Kernel {
            name: d.entry,
            op: d.op,
            flops: 0,
            bytes: d.buffers.iter().map(|(_, t)| t.bytes()).sum(),
            pipeline,
            bind_group,
            params: Some(params),
            grid,
            _holds: d.buffers.iter().map(|(_, t)| t.allocation()).collect(),
        })
    }

    /// Records the dispatch into a compute pass.
    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>) {
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &self.bind_group, &[]);
        pass.dispatch_workgroups(self.grid[0], self.grid[1], self.grid[2]);
    }

    /// Rewrites the parameters (e.g. a new learning rate or seed); takes effect at the next submit.
    pub fn set_params(&self, gpu: &Gpu, params: &Uniform) {
        if let Some(p) = &self.params {
            gpu.queue.write_buffer(p, 0, &params.bytes());
        }
    }
}

/// Lays `n` workgroups out as x * y with x at most the per-dimension limit.
/// Shaders rebuild the linear index as `wid.x + wid.y * nwg.x` and skip indices past `n`.
fn grid(gpu: &Gpu, op: &'static str, n: u64) -> Result<[u32; 3]> {
    let max = gpu.limits.max_compute_workgroups_per_dimension as u64;
    if n == 0 {
        return Err(Error::Shape {
            op,
            msg: "nothing to compute (a dimension is zero)".into(),
        });
    }
    if n <= max {
        return Ok([n as u32, 1, 1]);
    }
    let y = n.div_ceil(max);
    if y > max {
        return Err(Error::Limit {
            op,
            msg: format!(
                "{n} workgroups exceed max_compute_workgroups_per_dimension {max} squared"
            ),
        });
    }
    Ok([max as u32, y as u32, 1])
}
