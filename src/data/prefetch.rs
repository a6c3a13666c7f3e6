//! Batches assembled ahead of the training loop on worker threads: each batch is a list of image
//! indices, each image drawn with its own seed, so the pixels of a batch do not depend on which
//! thread made it or when. At most `depth` batches wait ready, so memory stays bounded whatever
//! the size of the data set.

use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::ImageSource;
use crate::error::{Error, Result};
use crate::rng::item_seed;

/// One batch to assemble: the images (indices into the source) and the seed stream of their
/// random transforms (the epoch, so that every epoch draws new crops).
#[derive(Debug, Clone)]
pub struct BatchJob {
    pub indices: Vec<usize>,
    pub stream: u64,
    /// Which repeat of its image each is in the epoch (the repeated-augmentation sampler), so
    /// that repeats are transformed apart; empty: every image's first.
    pub repeats: Vec<u32>,
}

/// The key of image `index`'s `repeat`-th transform in an epoch: the index itself for the
/// first (as without repeats), distinct for the others.
fn transform_key(index: usize, repeat: u32) -> u64 {
    index as u64 + ((repeat as u64) << 40)
}

/// An assembled batch: CHW u8 pixels of every image, back to back, and their labels.
#[derive(Debug, Default)]
pub struct Batch {
    pub pixels: Vec<u8>,
    pub labels: Vec<u32>,
}

/// Assembles `job` from `source` on this thread; image `i` is drawn with
/// `item_seed(seed, job.stream, i)` (its repeats with other keys).
pub fn assemble(source: &dyn ImageSource, job: &BatchJob, seed: u64) -> Result<Batch> {
    let (h, w) = source.size();
    let per = 3 * h * w;
    let mut pixels = vec![0u8; job.indices.len() * per];
    for (k, (&i, out)) in job.indices.iter().zip(pixels.chunks_mut(per)).enumerate() {
        let key = transform_key(i, job.repeats.get(k).copied().unwrap_or(0));
        source.load(i, item_seed(seed, job.stream, key), out)?;
    }
    let labels = job.indices.iter().map(|&i| source.label(i)).collect();
    Ok(Batch { pixels, labels })
}

struct Queue {
    /// The next job a worker takes.
    next: usize,
    /// Jobs handed to the consumer so far.
    taken: usize,
    ready: BTreeMap<usize, Result<Batch>>,
    stop: bool,
}

struct Shared {
    source: Arc<dyn ImageSource>,
    jobs: Vec<BatchJob>,
    seed: u64,
    depth: usize,
    queue: Mutex<Queue>,
    /// Signalled when a batch is taken or the prefetcher stops (workers wait on it).
    room: Condvar,
    /// Signalled when a batch is ready.
    filled: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next job this worker may start, waiting while `depth` batches are ahead of the
    /// consumer; None when there is no more work.
    fn claim(&self) -> Option<usize> {
        let mut q = self.lock();
        loop {
            if q.stop || q.next >= self.jobs.len() {
                return None;
            }
            if q.next < q.taken + self.depth {
                q.next += 1;
                return Some(q.next - 1);
            }
            q = self.room.wait(q).unwrap_or_else(|p| p.into_inner());
        }
    }

    fn work(&self) {
        while let Some(j) = self.claim() {
            // a panic must still hand the consumer a result, or it would wait for ever
            let batch = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                assemble(&*self.source, &self.jobs[j], self.seed)
            }))
            .unwrap_or_else(|_| Err(Error::Invalid("a data worker thread panicked".into())));
            self.lock().ready.insert(j, batch);
            self.filled.notify_all();
        }
    }
}

/// The batches of a list of jobs, in order, assembled ahead by worker threads (or on the
/// caller's thread when there are none).
pub struct Prefetch {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    /// Time the caller spent waiting for a batch that was not ready.
    pub waited: Duration,
}

impl Prefetch {
    /// Starts `workers` threads (0: assemble on the caller's thread) keeping up to `depth`
    /// batches ready.
    pub fn new(
        source: Arc<dyn ImageSource>,
        jobs: Vec<BatchJob>,
        seed: u64,
        workers: usize,
        depth: usize,
    ) -> Result<Prefetch> {
        let shared = Arc::new(Shared {
            source,
            jobs,
            seed,
            depth: depth.max(1),
            queue: Mutex::new(Queue {
                next: 0,
                taken: 0,
                ready: BTreeMap::new(),
                stop: false,
            }),
            room: Condvar::new(),
            filled: Condvar::new(),
        });
        let mut p = Prefetch {
            shared,
            workers: Vec::with_capacity(workers),
            waited: Duration::ZERO,
        };
        for w in 0..workers {
            let s = Arc::clone(&p.shared);
            let h = std::thread::Builder::new()
                .name(format!("data-{w}"))
                .spawn(move || s.work())
                // dropping `p` stops and joins the threads already started
                .map_err(|e| Error::Invalid(format!("cannot start a data worker thread: {e}")))?;
            p.workers.push(h);
        }
        Ok(p)
    }

    /// The next batch in job order; None after the last.
    pub fn next_batch(&mut self) -> Option<Result<Batch>> {
        let s = &self.shared;
        if self.workers.is_empty() {
            let mut q = s.lock();
            let j = q.taken;
            q.taken += 1;
            drop(q);
            return s.jobs.get(j).map(|job| assemble(&*s.source, job, s.seed));
        }
        let started = Instant::now();
        let mut q = s.lock();
        let j = q.taken;
        if j >= s.jobs.len() {
            return None;
        }
        let batch = loop {
            if let Some(b) = q.ready.remove(&j) {
                break b;
            }
            q = s.filled.wait(q).unwrap_or_else(|p| p.into_inner());
        };
        q.taken += 1;
        drop(q);
        s.room.notify_all();
        self.waited += started.elapsed();
        Some(batch)
    }
}

impl Drop for Prefetch {
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.room.notify_all();
        for h in self.workers.drain(..) {
            let _ = h.join();
        }
    }
}

/// Worker threads for decoding sources: the cores less one for the training loop, shared among
/// the MPI ranks of this machine, 1 to 16.
pub fn default_workers() -> usize {
    let ranks_here = [
        "OMPI_COMM_WORLD_LOCAL_SIZE",
        "MPI_LOCALNRANKS",
        "SLURM_NTASKS_PER_NODE",
    ]
    .iter()
    .find_map(|v| std::env::var(v).ok()?.parse::<usize>().ok())
    .unwrap_or(1)
    .max(1);
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    (cores.saturating_sub(1) / ranks_here).clamp(1, 16)
}

/// Batches kept ready ahead of the loop for `workers` threads: enough to keep every thread
/// busy, bounded so that memory does not follow the core count.
pub fn queue_depth(workers: usize) -> usize {
    workers.min(6) + 2
}
