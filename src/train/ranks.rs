//! The processes training together, as the training loop sees them: one process, or the ranks
//! of a data-parallel run (PyTorch's DistributedDataParallel) that a launcher implements over
//! its transport (the CLI: MPI, `src/cli/mpi.rs`). The loop asks the same of both, so it never
//! tests how many there are.
//!
//! Every sum across ranks is taken in rank order, the same way on every rank and in every run:
//! MPI's allreduce does not promise the order of its additions, and a fixed order is what makes a
//! data-parallel run repeat bit for bit. The gradients are averaged as a reduce-scatter then an
//! allgather: each rank owns 1/N of the flat gradient, receives every rank's copy of its slice
//! (an all-to-all), adds them in rank order, and the owned slices are gathered back. Each rank
//! receives 2(N-1)/N of the gradient's bytes whatever N is (gathering every rank's whole gradient
//! received N-1 times them), and the sums are those of the gather-and-add, bit for bit.

use super::step::{Collective, Trainer};
use crate::error::{Error, Result};
use crate::gpu::{Gpu, Tensor};
use crate::model::ModelState;
use crate::ops::loss::LossSums;
use std::ops::Range;
use std::path::Path;
use std::time::{Duration, Instant};

/// The transport of a data-parallel run: what a launcher provides. Everything the training loop
/// needs is built on these in the methods of `dyn Ranks`.
pub trait Ranks {
    /// This process's rank, 0-based.
    fn rank(&self) -> usize;
    /// How many processes train together.
    fn size(&self) -> usize;
    /// Every rank's `values`, rank after rank (each rank's the same length).
    fn allgather_f64(&self, values: &[f64]) -> Vec<f64>;
    /// Every rank's `mine` (rank r's holds `counts[r]` values), rank after rank.
    fn allgatherv_f32(&self, mine: &[f32], counts: &[usize]) -> Vec<f32>;
    /// Sends the r-th chunk of `send` (chunks of `send_counts` values, back to back) to rank r;
    /// returns the chunk each rank sent this one (`recv_counts[r]` values from rank r), rank
    /// after rank.
    fn alltoallv_f32(&self, send: &[f32], send_counts: &[usize], recv_counts: &[usize])
        -> Vec<f32>;
    /// This process's rank among the ranks on its machine, which picks the machine's adapter
    /// (MPI: `MPI_Comm_split_type` shared, not the global rank modulo the adapters, which
    /// leaves GPUs idle when machines hold different numbers of ranks).
    fn local_rank(&self) -> usize {
        self.rank()
    }
    /// The machine this process runs on (ranks of one machine share its local directories).
    fn node(&self) -> String {
        String::new()
    }
    /// Bytes this process has received from the other ranks so far, as the transport counted
    /// them (0 for one process).
    fn received_bytes(&self) -> u64 {
        0
    }
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
    fn allgather_f64(&self, values: &[f64]) -> Vec<f64> {
        values.to_vec()
    }
    fn allgatherv_f32(&self, mine: &[f32], _: &[usize]) -> Vec<f32> {
        mine.to_vec()
    }
    fn alltoallv_f32(&self, send: &[f32], _: &[usize], _: &[usize]) -> Vec<f32> {
        send.to_vec()
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

    /// Runs `f` first on one rank of each machine and `cache` directory (the lowest rank of
    /// each), one machine after another, then, once all of those succeeded, on the other ranks,
    /// which find there what their machine's first rank downloaded: a cache the ranks of a
    /// machine share is filled once per machine, ranks given different directories fill each
    /// their own, and machines whose caches are one shared file system (NFS) take turns, the
    /// later ones finding it filled.
    pub fn first_per_cache<T>(&self, cache: &Path, f: impl Fn() -> Result<T>) -> Result<T> {
        let place = format!("{}\0{}", self.node(), cache.display());
        let keys = self.allgather_f64(&[fnv1a(place.as_bytes()) as f64]);
        let firsts = (0..keys.len()).filter(|&r| keys[..r].iter().all(|k| *k != keys[r]));
        let mut done = None;
        for first in firsts {
            // every rank takes part in each turn, in the same order
            let turn = match first == self.rank() {
                true => f().map(Some),
                false => Ok(None),
            };
            if let Some(v) = self.together(turn)? {
                done = Some(v);
            }
        }
        let rest = match done {
            Some(v) => Ok(v),
            None => f(),
        };
        self.together(rest)
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

    /// `values` replaced by their mean over the ranks, the same bits on every rank: a
    /// reduce-scatter (each rank adds its slice's N copies in rank order) and an allgather.
    pub fn average(&self, values: &mut [f32]) {
        let n = self.size();
        if n == 1 {
            return;
        }
        let counts: Vec<usize> = (0..n).map(|r| owned(r, n, values.len()).len()).collect();
        let mine = counts[self.rank()];
        let copies = self.alltoallv_f32(values, &counts, &vec![mine; n]);
        let mut slice = vec![0.0f32; mine];
        for (i, v) in slice.iter_mut().enumerate() {
            let mut sum = 0.0f32;
            for r in 0..n {
                sum += copies[r * mine + i];
            }
            *v = sum / n as f32;
        }
        values.copy_from_slice(&self.allgatherv_f32(&slice, &counts));
    }

    /// The loss sums of every rank added together; the earliest bad batch of any rank.
    pub fn reduce(&self, local: LossSums) -> LossSums {
        if self.size() == 1 {
            return local;
        }
        let mine = local.to_array().map(f64::from);
        let mut sums = LossSums::default();
        for r in self.allgather_f64(&mine).chunks(mine.len()) {
            sums.loss += r[0] as f32;
            sums.correct += r[1] as f32;
            sums.count += r[2] as f32;
            sums.top5 += r[4] as f32;
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
    /// optimizer. Returns what exchanging cost.
    pub fn step(
        &self,
        trainer: &mut Trainer,
        (gpu, m): (&Gpu, &ModelState),
        (pixels, labels): (&[u8], &[u32]),
        lr: f32,
    ) -> Result<Exchanged> {
        if self.size() == 1 {
            trainer.step(gpu, m, pixels, labels, lr)?;
            return Ok(Exchanged::default());
        }
        let mut timed = Timed {
            ranks: self,
            cost: Exchanged::default(),
        };
        let step = trainer.step_data_parallel(gpu, m, (pixels, labels), lr, &mut timed);
        pollster::block_on(step)?;
        Ok(timed.cost)
    }
}

/// The part of `len` values that rank `r` of `n` owns in the gradient exchange: contiguous
/// slices that differ in length by one at most.
fn owned(r: usize, n: usize, len: usize) -> Range<usize> {
    r * len / n..(r + 1) * len / n
}

/// What a data-parallel step's exchanges cost this rank.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Exchanged {
    /// Time spent exchanging (the transfers and the fixed-order sums).
    pub time: Duration,
    /// Bytes of the gradients received from the other ranks, as the transport counted them.
    pub gradient_bytes: u64,
    /// The part of `time` spent while the GPU still computed the backward pass (gradient
    /// buckets exchanged behind it).
    pub hidden: Duration,
}

/// The ranks of a data-parallel step, timing what is exchanged between them.
struct Timed<'r, 'a> {
    ranks: &'r (dyn Ranks + 'a),
    cost: Exchanged,
}

impl Collective for Timed<'_, '_> {
    fn average(
        &mut self,
        grads: Result<Vec<f32>>,
        computing: &dyn Fn() -> bool,
    ) -> Result<Vec<f32>> {
        let t0 = Instant::now();
        let mut grads = self.ranks.together(grads)?;
        let before = self.ranks.received_bytes();
        self.ranks.average(&mut grads);
        self.cost.gradient_bytes += self.ranks.received_bytes() - before;
        let spent = t0.elapsed();
        self.cost.time += spent;
        // asked after the exchange: a bucket counts as hidden only if the backward outlasted it
        if computing() {
            self.cost.hidden += spent;
        }
        Ok(grads)
    }

    fn gather(&mut self, values: Result<Vec<f64>>) -> Result<Vec<f64>> {
        let t0 = Instant::now();
        let values = self.ranks.together(values)?;
        let all = self.ranks.allgather_f64(&values);
        self.cost.time += t0.elapsed();
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

    /// N ranks as threads of one process, exchanging through shared memory and counting the
    /// bytes each receives from the others, as an MPI transport does.
    struct Threads {
        rank: usize,
        size: usize,
        shared: std::sync::Arc<Shared>,
        received: std::cell::Cell<u64>,
    }

    /// What the threads exchange through: each rank's posted values and send counts.
    struct Shared {
        barrier: std::sync::Barrier,
        posted: std::sync::Mutex<Vec<(Vec<f64>, Vec<usize>)>>,
    }

    impl Threads {
        /// Posts `values` (and `counts`), waits for every rank's, returns them all.
        fn exchange(&self, values: Vec<f64>, counts: &[usize]) -> Vec<(Vec<f64>, Vec<usize>)> {
            self.shared.posted.lock().unwrap()[self.rank] = (values, counts.to_vec());
            self.shared.barrier.wait();
            let all = self.shared.posted.lock().unwrap().clone();
            self.shared.barrier.wait();
            all
        }

        fn count(&self, values: usize) {
            self.received.set(self.received.get() + 4 * values as u64);
        }
    }

    impl Ranks for Threads {
        fn rank(&self) -> usize {
            self.rank
        }
        fn size(&self) -> usize {
            self.size
        }
        fn allgather_f64(&self, values: &[f64]) -> Vec<f64> {
            let all = self.exchange(values.to_vec(), &[]);
            all.into_iter().flat_map(|(v, _)| v).collect()
        }
        fn allgatherv_f32(&self, mine: &[f32], _: &[usize]) -> Vec<f32> {
            let all = self.exchange(mine.iter().map(|&v| v as f64).collect(), &[]);
            let out: Vec<f32> = all
                .into_iter()
                .flat_map(|(v, _)| v)
                .map(|v| v as f32)
                .collect();
            self.count(out.len() - mine.len());
            out
        }
        fn alltoallv_f32(&self, send: &[f32], counts: &[usize], _: &[usize]) -> Vec<f32> {
            let all = self.exchange(send.iter().map(|&v| v as f64).collect(), counts);
            let mut out = Vec::new();
            for (r, (values, theirs)) in all.iter().enumerate() {
                let start: usize = theirs[..self.rank].iter().sum();
                let chunk = &values[start..start + theirs[self.rank]];
                out.extend(chunk.iter().map(|&v| v as f32));
                if r != self.rank {
                    self.count(chunk.len());
                }
            }
            out
        }
        fn broadcast(&self, _: &mut [f32]) {}
        fn fail_together(&self, _: Option<&Error>) -> Result<()> {
            Ok(())
        }
        fn fail_all(&self, msg: String) -> Error {
            Error::Invalid(msg)
        }
        fn received_bytes(&self) -> u64 {
            self.received.get()
        }
    }

    /// Rank r's gradient of `len` values: signs, magnitudes and zeros of both signs mixed.
    fn gradient(r: usize, len: usize) -> Vec<f32> {
        let mut rng = crate::rng::SplitMix64(r as u64 * 977 + len as u64);
        (0..len)
            .map(|i| match i % 7 {
                0 => -0.0,
                1 => 0.0,
                _ => {
                    (rng.next_u64() as i64 as f64 / 2f64.powi(60)) as f32
                        * 10f32.powi(i as i32 % 5 - 2)
                }
            })
            .collect()
    }

    /// Every rank's average of `len` values over `n` ranks as threads, and the bytes each
    /// received.
    fn average_on_threads(n: usize, len: usize) -> Vec<(Vec<f32>, u64)> {
        let shared = std::sync::Arc::new(Shared {
            barrier: std::sync::Barrier::new(n),
            posted: std::sync::Mutex::new(vec![(Vec::new(), Vec::new()); n]),
        });
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..n)
                .map(|rank| {
                    let shared = shared.clone();
                    scope.spawn(move || {
                        let t = Threads {
                            rank,
                            size: n,
                            shared,
                            received: Default::default(),
                        };
                        let mut v = gradient(rank, len);
                        (&t as &dyn Ranks).average(&mut v);
                        (v, t.received.get())
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        })
    }

    /// The reduce-scatter and allgather give every rank the bits of the gather-and-add it
    /// replaced (every rank's whole gradient, added in rank order), also where the length does
    /// not divide among the ranks, and each rank receives 2(N-1)/N of the gradient's bytes.
    #[test]
    fn the_exchange_averages_as_gather_and_add_with_2_n_minus_1_over_n_bytes() {
        for n in [1, 2, 3, 4, 8] {
            for len in [1, 7, 10, 33, 96] {
                // one process keeps its own gradient, as the gather-and-add did
                let mut want = gradient(0, len);
                for (i, w) in want.iter_mut().enumerate().filter(|_| n > 1) {
                    let mut sum = 0.0f32;
                    for r in 0..n {
                        sum += gradient(r, len)[i];
                    }
                    *w = sum / n as f32;
                }
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                for (rank, (got, received)) in average_on_threads(n, len).iter().enumerate() {
                    assert_eq!(bits(got), bits(&want), "n {n} len {len} rank {rank}");
                    let mine = owned(rank, n, len).len();
                    let expected = 4 * ((n - 1) * mine + len - mine) as u64;
                    assert_eq!(*received, expected, "n {n} len {len} rank {rank}");
                    if len % n == 0 {
                        assert_eq!(*received, (2 * (n - 1) * len * 4 / n) as u64);
                    }
                }
            }
        }
    }

    #[test]
    fn hashes_tell_configurations_apart() {
        assert_ne!(fnv1a(b"resnet20 batch 128"), fnv1a(b"resnet20 batch 256"));
        assert!(fnv1a(b"anything") < 1 << 53);
    }
}
