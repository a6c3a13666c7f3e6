//! Where a step's time goes: every kernel of a plan timed alone (its own compute pass between two
//! timestamp queries), then summed per kind of op with the work each did (floating-point
//! operations where the op counts them, bytes of the tensors it binds) for achieved rates.
//! Timing each kernel alone adds a little per pass on GPUs, so the kernels' sum can exceed a
//! step's wall time a little; the shares are what the profile is for.

use super::Plan;
use crate::error::Result;
use crate::gpu::{Gpu, PassTimer};
use crate::ops::OpKind;

/// One kernel's GPU time in a profiled step.
#[derive(Debug, Clone)]
pub struct KernelTime {
    /// The stage it belongs to (`layer2.0.backward`).
    pub stage: String,
    /// Its entry point.
    pub entry: &'static str,
    /// What kind of op built it.
    pub kind: OpKind,
    /// GPU milliseconds.
    pub ms: f64,
    /// Floating-point operations of useful work (0 where the op does not count them).
    pub flops: u64,
    /// Bytes of the tensors it binds.
    pub bytes: u64,
}

/// The kernels of one kind of op in a profiled step, summed.
#[derive(Debug, Clone, PartialEq)]
pub struct KindTime {
    /// The kind.
    pub kind: OpKind,
    /// GPU milliseconds of its kernels.
    pub ms: f64,
    /// How many kernels.
    pub dispatches: usize,
    /// Their floating-point operations.
    pub flops: u64,
    /// Their bytes bound.
    pub bytes: u64,
}

impl KindTime {
    /// Achieved TFLOP/s; `None` for kinds whose ops count no floating-point work.
    pub fn tflops(&self) -> Option<f64> {
        (self.flops > 0 && self.ms > 0.0).then(|| self.flops as f64 / (self.ms * 1e9))
    }

    /// Achieved GB/s over the bytes bound (a lower bound of the traffic).
    pub fn gbs(&self) -> Option<f64> {
        (self.ms > 0.0).then(|| self.bytes as f64 / (self.ms * 1e6))
    }
}

/// Every kernel of one step, timed alone, in the order they ran.
#[derive(Debug, Clone)]
pub struct Profile {
    /// The kernels.
    pub kernels: Vec<KernelTime>,
}

impl Profile {
    /// The sum of the kernels' milliseconds.
    pub fn total_ms(&self) -> f64 {
        self.kernels.iter().map(|k| k.ms).sum()
    }

    /// One row per kind that ran, in [`OpKind::ALL`]'s order.
    pub fn by_kind(&self) -> Vec<KindTime> {
        OpKind::ALL
            .iter()
            .map(|&kind| {
                let of_kind = self.kernels.iter().filter(|k| k.kind == kind);
                of_kind.fold(
                    KindTime {
                        kind,
                        ms: 0.0,
                        dispatches: 0,
                        flops: 0,
                        bytes: 0,
                    },
                    |sum, k| KindTime {
                        ms: sum.ms + k.ms,
                        dispatches: sum.dispatches + 1,
                        flops: sum.flops + k.flops,
                        bytes: sum.bytes + k.bytes,
                        ..sum
                    },
                )
            })
            .filter(|row| row.dispatches > 0)
            .collect()
    }
}

/// At most this many kernels per query set (wgpu allows 4096 queries per set, two per pass).
const KERNELS_PER_TIMER: usize = 2048;

impl Plan {
    /// Runs one step with every kernel in a compute pass of its own between two timestamp
    /// queries; `None` when the adapter has no timestamp queries (nothing is submitted then).
    /// For benchmarks: allocates and waits. The host exchanges of SyncBatchNorm do not run.
    pub async fn profile(&self, gpu: &Gpu) -> Result<Option<Profile>> {
        let mut timed = Vec::new();
        for (si, stage) in self.stages.iter().enumerate() {
            for (ci, chunk) in stage.kernels.chunks(KERNELS_PER_TIMER).enumerate() {
                let Some(timer) = PassTimer::new(gpu, chunk.len())? else {
                    return Ok(None);
                };
                let mut enc = gpu.device.create_command_encoder(&Default::default());
                for (i, k) in chunk.iter().enumerate() {
                    let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                        label: Some(k.name),
                        timestamp_writes: Some(timer.writes(i)),
                    });
                    k.record(&mut pass);
                }
                timer.resolve(&mut enc);
                gpu.queue.submit([enc.finish()]);
                timed.push((si, ci * KERNELS_PER_TIMER, timer));
            }
        }
        let mut kernels = Vec::new();
        for (si, first, timer) in timed {
            let stage = &self.stages[si];
            let ms = timer.read_ms(gpu).await?;
            kernels.extend(
                stage.kernels[first..]
                    .iter()
                    .zip(ms)
                    .map(|(k, ms)| KernelTime {
                        stage: stage.name.clone(),
                        entry: k.name,
                        kind: OpKind::of(k.op),
                        ms,
                        flops: k.flops,
                        bytes: k.bytes,
                    }),
            );
        }
        Ok(Some(Profile { kernels }))
    }
}
