//! Work submitted now and awaited later: a read-back queued behind the kernels that produce its
//! data, and a marker of everything submitted so far. The data-parallel step uses them to
//! exchange each gradient bucket while the GPU still computes the layers below it.

use super::{Gpu, Tensor};
use crate::error::{Error, Result};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

type Mapped = std::result::Result<(), wgpu::BufferAsyncError>;

/// A read-back submitted behind some work; [`Gpu::finish_read`] waits for it.
pub struct PendingRead {
    staging: wgpu::Buffer,
    mapped: futures_channel::oneshot::Receiver<Mapped>,
    #[cfg_attr(target_arch = "wasm32", allow(dead_code))]
    submission: wgpu::SubmissionIndex,
}

/// Everything submitted up to a point; [`Gpu::has_finished`] tells whether the GPU is done
/// with it, without waiting.
pub struct Submitted(Arc<AtomicBool>);

impl Gpu {
    /// Submits `work`, then a copy of the floats `floats` of `t` into a mappable buffer, and asks
    /// for that buffer to be mapped. Returns at once, the GPU still working.
    pub fn submit_then_read(
        &self,
        work: Vec<wgpu::CommandBuffer>,
        t: &Tensor,
        floats: Range<usize>,
    ) -> PendingRead {
        let size = (floats.len() * 4) as u64;
        let staging = self.readback_buffer(size);
        let mut enc = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        let from = t.offset + floats.start as u64 * 4;
        enc.copy_buffer_to_buffer(&t.buffer, from, &staging, 0, size);
        let submission = self.queue.submit(work.into_iter().chain([enc.finish()]));
        let (tx, mapped) = futures_channel::oneshot::channel();
        staging.map_async(wgpu::MapMode::Read, .., move |r| {
            let _ = tx.send(r);
        });
        PendingRead {
            staging,
            mapped,
            submission,
        }
    }

    /// The floats of `read`, once the GPU has done the work submitted before it (not the work
    /// submitted after it).
    pub async fn finish_read(&self, read: PendingRead) -> Result<Vec<f32>> {
        #[cfg(not(target_arch = "wasm32"))]
        self.device
            .poll(wgpu::PollType::Wait {
                submission_index: Some(read.submission),
                timeout: None,
            })
            .map_err(|e| Error::Readback(e.to_string()))?;
        read.mapped
            .await
            .map_err(|_| Error::Readback("the map callback was dropped".into()))?
            .map_err(|e| Error::Readback(e.to_string()))?;
        let floats = bytemuck::cast_slice(
            &read
                .staging
                .get_mapped_range(..)
                .map_err(|e| Error::Readback(e.to_string()))?,
        )
        .to_vec();
        read.staging.unmap();
        self.recycle_readback(read.staging);
        Ok(floats)
    }

    /// Marks everything submitted so far.
    pub fn submitted(&self) -> Submitted {
        let done = Arc::new(AtomicBool::new(false));
        let set = done.clone();
        self.queue
            .on_submitted_work_done(move || set.store(true, Ordering::Release));
        Submitted(done)
    }

    /// Whether the GPU has finished the work `marked` (asks the device without waiting).
    pub fn has_finished(&self, marked: &Submitted) -> bool {
        #[cfg(not(target_arch = "wasm32"))]
        let _ = self.device.poll(wgpu::PollType::Poll);
        marked.0.load(Ordering::Acquire)
    }
}
