//! GPU time of compute passes, from timestamp queries (adapters with `TIMESTAMP_QUERY`).

use super::{Gpu, Kernel, Tensor};
use crate::error::Result;

/// A timestamp at the start and end of each of `passes` compute passes, read back in milliseconds.
pub struct PassTimer {
    query: wgpu::QuerySet,
    resolve: wgpu::Buffer,
    readable: Tensor,
    passes: u32,
}

impl PassTimer {
    /// A timer for `passes` passes; `None` when the device has no timestamp queries.
    pub fn new(gpu: &Gpu, passes: usize) -> Result<Option<PassTimer>> {
        if !gpu.features.contains(wgpu::Features::TIMESTAMP_QUERY) || passes == 0 {
            return Ok(None);
        }
        let count = 2 * passes as u32;
        let query = gpu.device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("pass timestamps"),
            ty: wgpu::QueryType::Timestamp,
            count,
        });
        let resolve = gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("timestamps"),
            size: count as u64 * 8,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let readable = gpu.zeros(&[2 * count as usize])?;
        Ok(Some(PassTimer {
            query,
            resolve,
            readable,
            passes: passes as u32,
        }))
    }

    /// The timestamp writes of pass `i`.
    pub fn writes(&self, i: usize) -> wgpu::ComputePassTimestampWrites<'_> {
        wgpu::ComputePassTimestampWrites {
            query_set: &self.query,
            beginning_of_pass_write_index: Some(2 * i as u32),
            end_of_pass_write_index: Some(2 * i as u32 + 1),
        }
    }

    /// Records the copy of the timestamps to a readable buffer (after the timed passes).
    pub fn resolve(&self, enc: &mut wgpu::CommandEncoder) {
        let count = 2 * self.passes;
        enc.resolve_query_set(&self.query, 0..count, &self.resolve, 0);
        enc.copy_buffer_to_buffer(&self.resolve, 0, &self.readable.buffer, 0, count as u64 * 8);
    }

    /// Milliseconds of each pass, once the submitted work is done.
    pub async fn read_ms(&self, gpu: &Gpu) -> Result<Vec<f64>> {
        let words = gpu.read_u32(&self.readable).await?;
        let period = gpu.queue.get_timestamp_period() as f64;
        let ts: Vec<u64> = words
            .chunks(2)
            .map(|w| w[0] as u64 | (w[1] as u64) << 32)
            .collect();
        Ok(ts
            .chunks(2)
            .map(|t| t[1].saturating_sub(t[0]) as f64 * period / 1e6)
            .collect())
    }
}

impl Gpu {
    /// Runs `kernels` in one compute pass like [`Gpu::run`] and returns its GPU time in
    /// milliseconds (`None` without timestamp queries). For benchmarks: allocates and waits.
    pub async fn run_timed(&self, kernels: &[Kernel]) -> Result<Option<f64>> {
        let Some(timer) = PassTimer::new(self, 1)? else {
            self.run(kernels);
            return Ok(None);
        };
        let mut enc = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: None,
                timestamp_writes: Some(timer.writes(0)),
            });
            for k in kernels {
                k.record(&mut pass);
            }
        }
        timer.resolve(&mut enc);
        self.queue.submit([enc.finish()]);
        Ok(timer.read_ms(self).await?.first().copied())
    }
}
