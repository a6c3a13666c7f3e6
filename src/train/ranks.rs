//! The processes training together, as the training loop sees them: one process, or the ranks
//! of a data-parallel run (PyTorch's DistributedDataParallel) that a launcher implements over
//! its transport (the CLI: MPI, `src/cli/mpi.rs`). The loop asks the same of both, so it never
//! tests how many there are.
//!
//! Every sum across ranks is taken in rank order from an allgather, the same way on every rank
//! and in every run: an allreduce would send less, but does not promise the order of its
//! additions, and a fixed order is what makes a data-parallel run repeat bit for bit.

use super::step::{Collective, Trainer};
use crate::error::{Error, Result};
use crate::gpu::{Gpu, Tensor};
use crate::model::ModelState;
use crate::ops::loss::LossSums;
use std::ops::Range;
use std::time::{Duration, Instant};

/// The transport of a data-parallel run: what a launcher provides. Everything the training loop
/// needs is built on these in the methods of `dyn Ranks`.
pub trait Ranks {
    /// This process's rank, 0-based.
    fn rank(&self) -> usize;
    /// How many processes train together.
    fn size(&self) -> usize;
    /// Every rank's `values`, rank after rank (each rank's the same length).
    fn allgather_f32(&self, values: &[f32]) -> Vec<f32>;
    /// Every rank's `values`, rank after rank (each rank's the same length).
    fn allgather_f64(&self, values: &[f64]) -> Vec<f64>;
    /// Replaces `values` by rank 0's.
    fn broadcast(&self, values: &mut [f32]);
    /// Turns each rank's outcome of the same point (`mine`: this rank's error, if any) into
    /// one for all: an error on every rank when any rank failed, so that no rank goes on to
    /// wait for the others at the next exchange.
    fn fail_together(&self, mine: Option<&Error>) -> Result<()>;
    /// An error every rank meets at the same point (a batch that does not divide among them).
    fn fail_all(&self, msg: String) -> Error;
}

/// One process training alone: rank 0 of 1.
#[derive(Debug, Clone, Copy, Default)]
pub struct OneProcess;

impl Ranks for OneProcess {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn allgather_f32(&self, values: &[f32]) -> Vec<f32> {
        values.to_vec()
    }
    fn allgather_f64(&self, values: &[f64]) -> Vec<f64> {
        values.to_vec()
    }
    fn broadcast(&self, _: &mut [f32]) {}
    fn fail_together(&self, _: Option<&Error>) -> Result<()> {
        Ok(())
    }
    fn fail_all(&self, msg: String) -> Error {
        Error::Invalid(msg)
    }
}

impl dyn Ranks + '_ {
    /// Whether this process writes the run's files (rank 0).
    pub fn is_root(&self) -> bool {
        self.rank() == 0
    }

    /// `result` if every rank succeeded at this point, else an error on every rank.
    pub fn together<T>(&self, result: Result<T>) -> Result<T> {
        self.fail_together(result.as_ref().err())?;
        result
    }

    /// Runs `f` on rank 0, then, once it succeeded, on the other ranks: what rank 0 downloads
    /// into a shared directory the others then find there.
    pub fn root_first<T>(&self, f: impl Fn() -> Result<T>) -> Result<T> {
        let first = match self.is_root() {
            true => f().map(Some),
            false => Ok(None),
        };
        // every rank takes part in both exchanges, in the same order
        let second = match self.together(first)? {
            Some(done) => Ok(done),
            None => f(),
        };
        self.together(second)
    }

    /// This rank's images of every global batch of `batch`: its contiguous shard.
    pub fn shard(&self, batch: usize) -> Result<Range<usize>> {
        let n = self.size();
        if !batch.is_multiple_of(n) {
            return Err(self.fail_all(format!(
                "`batch_size` {batch} is the global batch and must divide among the {n} MPI ranks evenly"
            )));
        }
        let local = batch / n;
        Ok(self.rank() * local..(self.rank() + 1) * local)
    }

    /// This rank's share of `len` items evaluated once (the shares may differ by one).
    pub fn share(&self, len: usize) -> Range<usize> {
        let (r, n) = (self.rank(), self.size());
        r * len / n..(r + 1) * len / n
    }

    /// `values` replaced by their sum over the ranks (in rank order).
    pub fn sum(&self, values: &mut [f64]) {
        if self.size() == 1 {
            return;
        }
        let all = self.allgather_f64(values);
        let len = values.len();
        for (i, v) in values.iter_mut().enumerate() {
            *v = (0..self.size()).map(|r| all[r * len + i]).sum();
        }
    }

    /// `values` replaced by their mean over the ranks, the same bits on every rank.
    pub fn average(&self, values: &mut [f32]) {
        if self.size() == 1 {
            return;
        }
        let all = self.allgather_f32(values);
        let (n, len) = (self.size() as f32, values.len());
        for (i, v) in values.iter_mut().enumerate() {
            let mut sum = 0.0f32;
            for r in 0..self.size() {
                sum += all[r * len + i];
            }
            *v = sum / n;
        }
    }

    /// The loss sums of every rank added together; the earliest bad batch of any rank.
    pub fn reduce(&self, local: LossSums) -> LossSums {
        if self.size() == 1 {
            return local;
        }
        let mine = local.to_array().map(f64::from);
        let mut sums = LossSums::default();
        for r in self.allgather_f64(&mine).chunks(4) {
            sums.loss += r[0] as f32;
            sums.correct += r[1] as f32;
            sums.count += r[2] as f32;
            let bad = r[3] as f32;
            if bad > 0.0 && (sums.first_non_finite == 0.0 || bad < sums.first_non_finite) {
                sums.first_non_finite = bad;
            }
        }
        sums
    }

    /// Checks that every rank has the same `value` of `what` (the configuration, the weights),
    /// so that ranks that would train different things stop at start-up and ranks that drifted
    /// apart stop at once. Returns whether there were other ranks to compare with (`value` is
    /// read only then).
    pub fn check_agree(&self, what: &str, value: &dyn Fn() -> Result<Vec<u8>>) -> Result<bool> {
        if self.size() == 1 {
            return Ok(false);
        }
        let all = self.allgather_f64(&[fnv1a(&self.together(value())?) as f64]);
        match all.iter().position(|h| *h != all[0]) {
            None => Ok(true),
            Some(r) => Err(self.fail_all(format!(
                "the {} MPI ranks disagree on the {what}: rank {r}'s differs from rank 0's",
                self.size()
            ))),
        }
    }

    /// Every rank takes rank 0's `tensors` (DDP's start: the weights, BatchNorm statistics and
    /// momentum), so that ranks whose initialisation or checkpoint differed cannot drift apart
    /// unnoticed.
    pub fn broadcast_tensors(&self, gpu: &Gpu, tensors: &[&Tensor]) -> Result<()> {
        if self.size() == 1 {
            return Ok(());
        }
        for t in tensors {
            let mut v = pollster::block_on(gpu.read(t))?;
            self.broadcast(&mut v);
            gpu.write(t, &v)?;
        }
        Ok(())
    }

    /// One optimizer step on this rank's shard of the batch, as DDP takes it: with several
    /// ranks the gradients are averaged across them between the backward pass and the
    /// optimizer. Returns the time spent exchanging.
    pub fn step(
        &self,
        trainer: &mut Trainer,
        (gpu, m): (&Gpu, &ModelState),
        (pixels, labels): (&[u8], &[u32]),
        lr: f32,
    ) -> Result<Duration> {
        if self.size() == 1 {
            trainer.step(gpu, m, pixels, labels, lr)?;
            return Ok(Duration::ZERO);
        }
        let mut timed = Timed {
            ranks: self,
            took: Duration::ZERO,
        };
        let step = trainer.step_data_parallel(gpu, m, (pixels, labels), lr, &mut timed);
        pollster::block_on(step)?;
        Ok(timed.took)
    }
}

/// The ranks of a data-parallel step, timing what is exchanged between them.
struct Timed<'r, 'a> {
    ranks: &'r (dyn Ranks + 'a),
    took: Duration,
}

impl Collective for Timed<'_, '_> {
    fn average(&mut self, grads: Result<Vec<f32>>) -> Result<Vec<f32>> {
        let t0 = Instant::now();
        let mut grads = self.ranks.together(grads)?;
        self.ranks.average(&mut grads);
        self.took += t0.elapsed();
        Ok(grads)
    }

    fn gather(&mut self, values: Result<Vec<f64>>) -> Result<Vec<f64>> {
        let t0 = Instant::now();
        let values = self.ranks.together(values)?;
        let all = self.ranks.allgather_f64(&values);
        self.took += t0.elapsed();
        Ok(all)
    }
}

/// FNV-1a of `bytes` shifted to 53 bits, exact in the f64 that the ranks exchange, for
/// comparing values across ranks without sending them.
fn fnv1a(bytes: &[u8]) -> u64 {
    crate::rng::fnv1a(bytes) >> 11
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_process_averages_to_itself_and_agrees_with_itself() {
        let one: &dyn Ranks = &OneProcess;
        let mut v = [1.5f32, -2.0];
        one.average(&mut v);
        assert_eq!(v, [1.5, -2.0]);
        assert!(!one
            .check_agree("configuration", &|| Ok(b"x".to_vec()))
            .unwrap());
        assert!(one.is_root() && one.size() == 1);
        assert_eq!(one.shard(128).unwrap(), 0..128);
    }

    #[test]
    fn hashes_tell_configurations_apart() {
        assert_ne!(fnv1a(b"resnet20 batch 128"), fnv1a(b"resnet20 batch 256"));
        assert!(fnv1a(b"anything") < 1 << 53);
    }
}
