//! `resnet bench --exchange`: the gradient exchange alone, among the ranks mpirun started (no
//! GPU): a model's flat gradient averaged as the data-parallel step averages it (in one piece,
//! and in equal pieces of `--bucket-mb`, where training cuts its buckets at layer boundaries),
//! against gathering every rank's whole gradient and adding (the exchange until 2026-12-03) and
//! against MPI_Allreduce. Milliseconds (the median step, the slowest rank's) and the
//! bytes each rank received, as MPI counted them.

use super::mpi::Dist;
use resnet::model::{ModelSpec, ParamLayout};
use resnet::train::Ranks;
use resnet::Result;
use std::time::Instant;

/// Floats of alignment between the regions of the flat gradient: 256 bytes, the storage
/// buffer offset alignment of most GPUs.
const ALIGN: usize = 64;

/// One way of exchanging a gradient of `len` floats.
#[derive(Clone, Copy)]
enum Method {
    /// MPI_Allgatherv of every rank's whole gradient, then the sum in rank order.
    GatherAndAdd,
    /// MPI_Allreduce (its order of additions is the MPI library's).
    Allreduce,
    /// The training step's reduce-scatter and allgather, over pieces of this many floats.
    ReduceScatter(usize),
}

/// Times `steps` exchanges of `model`'s gradient (`classes` outputs) after `warmup` untimed ones,
/// in one piece and in pieces of `bucket` floats (`bucket_mb` MiB).
pub fn run(
    model: &str,
    classes: usize,
    (bucket_mb, bucket): (f64, usize),
    (warmup, steps): (usize, usize),
) -> Result<()> {
    let dist = Dist::from_env()?;
    let ranks: &dyn Ranks = &dist;
    let spec = ModelSpec::from_name(model, classes)?;
    let len = ParamLayout::new(&spec.arch(), ALIGN).params_len;
    let bucket = bucket.min(len);
    if ranks.is_root() {
        println!(
            "{model} ({classes} classes): a gradient of {} bytes averaged over {} rank(s), median of {steps} steps",
            len * 4,
            ranks.size()
        );
    }
    let methods = [
        ("gather every rank's gradient, add", Method::GatherAndAdd),
        ("MPI_Allreduce (bytes not counted)", Method::Allreduce),
        (
            "reduce-scatter + allgather, one piece",
            Method::ReduceScatter(len),
        ),
        (
            "reduce-scatter + allgather, buckets",
            Method::ReduceScatter(bucket),
        ),
    ];
    for (name, method) in methods {
        let (ms, bytes) = time(&dist, method, len, (warmup, steps));
        if ranks.is_root() {
            let pieces = match method {
                Method::ReduceScatter(b) if b < len => {
                    format!(" of {bucket_mb} MiB ({} pieces)", len.div_ceil(b))
                }
                _ => String::new(),
            };
            println!("  {name}{pieces}: {ms:.2} ms, {bytes} bytes received a rank and step");
        }
    }
    let differ = allreduce_differs(&dist, len);
    if ranks.is_root() {
        println!(
            "  MPI_Allreduce against the rank-order sum: {differ} of {len} floats differ in their bits"
        );
    }
    Ok(())
}

/// How many floats of a mean over the ranks MPI_Allreduce gives other bits for than the
/// rank-order sum of the training step, on gradients of mixed signs and magnitudes.
fn allreduce_differs(dist: &Dist, len: usize) -> usize {
    let ranks: &dyn Ranks = dist;
    let mut rng = resnet::rng::SplitMix64(ranks.rank() as u64 + 1);
    let grads: Vec<f32> = (0..len)
        .map(|i| {
            (rng.next_u64() as i64 as f64 / 2f64.powi(63)) as f32 * 10f32.powi(i as i32 % 5 - 2)
        })
        .collect();
    let (mut ours, mut theirs) = (grads.clone(), grads);
    ranks.average(&mut ours);
    exchange(dist, Method::Allreduce, &mut theirs);
    ours.iter()
        .zip(&theirs)
        .filter(|(a, b)| a.to_bits() != b.to_bits())
        .count()
}

/// The median over `steps` of the slowest rank's milliseconds, and this rank's bytes received
/// a step.
fn time(dist: &Dist, method: Method, len: usize, (warmup, steps): (usize, usize)) -> (f64, u64) {
    let ranks: &dyn Ranks = dist;
    let mut grads: Vec<f32> = (0..len)
        .map(|i| ((i * 7 + ranks.rank()) % 13) as f32 * 1e-3)
        .collect();
    let mut times = Vec::new();
    let mut bytes = 0;
    for s in 0..warmup + steps {
        let t0 = Instant::now();
        let received = exchange(dist, method, &mut grads);
        let slowest = ranks
            .allgather_f64(&[t0.elapsed().as_secs_f64() * 1e3])
            .into_iter()
            .fold(0.0, f64::max);
        if s >= warmup {
            times.push(slowest);
            bytes = received;
        }
    }
    times.sort_by(f64::total_cmp);
    (times[times.len() / 2], bytes)
}

/// Averages `grads` over the ranks by `method`; returns the gradient bytes received (not those
/// of the small agreement exchanges).
fn exchange(dist: &Dist, method: Method, grads: &mut [f32]) -> u64 {
    let ranks: &dyn Ranks = dist;
    let mut received = 0;
    match method {
        Method::Allreduce => {
            dist.allreduce_sum(grads);
            let n = ranks.size() as f32;
            grads.iter_mut().for_each(|g| *g /= n);
        }
        Method::GatherAndAdd => {
            let (n, len) = (ranks.size(), grads.len());
            let before = ranks.received_bytes();
            let all = ranks.allgatherv_f32(grads, &vec![len; n]);
            received += ranks.received_bytes() - before;
            for (i, g) in grads.iter_mut().enumerate() {
                let mut sum = 0.0f32;
                for r in 0..n {
                    sum += all[r * len + i];
                }
                *g = sum / n as f32;
            }
        }
        Method::ReduceScatter(bucket) => {
            for piece in grads.chunks_mut(bucket) {
                // each bucket of the step first learns that every rank read it back
                let _ = ranks.together(Ok(()));
                let before = ranks.received_bytes();
                ranks.average(piece);
                received += ranks.received_bytes() - before;
            }
        }
    }
    received
}
