//! Data-parallel training across processes over MPI (cargo feature `mpi`), with the semantics of
//! PyTorch's DistributedDataParallel: every rank starts from rank 0's weights, trains on its
//! shard of every global batch, and averages the gradients with every other rank before the
//! optimizer step, so all ranks hold the same weights after every step.
//!
//! The averages are computed the same way on every rank and in every run: each rank's values are
//! gathered (MPI_Allgather) and added in rank order. An MPI_Allreduce would send less, but MPI
//! does not promise the order of its additions, and a fixed order is what makes a distributed run
//! repeatable bit for bit.
//!
//! A process not started by an MPI launcher (`mpirun`, `srun`, Hydra), or built without the
//! feature, is rank 0 of 1 and trains exactly as before.

use crate::error::{Error, Result};

/// Variables MPI launchers set in the processes they start: Open MPI, MPICH's Hydra, PMIx, Slurm.
const LAUNCHER_VARS: [&str; 4] = [
    "OMPI_COMM_WORLD_SIZE",
    "PMI_SIZE",
    "PMIX_RANK",
    "SLURM_NTASKS",
];

/// The processes of one data-parallel run and this process's place among them.
pub struct Dist {
    rank: usize,
    size: usize,
    #[cfg(feature = "mpi")]
    mpi: Option<Mpi>,
}

#[cfg(feature = "mpi")]
struct Mpi {
    world: mpi::topology::SimpleCommunicator,
    // MPI is finalised when this is dropped: it must outlive `world`'s use
    _universe: mpi::environment::Universe,
}

impl Dist {
    /// One process: rank 0 of 1.
    pub fn single() -> Dist {
        Dist {
            rank: 0,
            size: 1,
            #[cfg(feature = "mpi")]
            mpi: None,
        }
    }

    /// The run this process belongs to: MPI's world when an MPI launcher started it, else one
    /// process. Without the `mpi` feature, being started as one of several ranks is an error
    /// (N copies of the same single-process run would each write the same files).
    pub fn from_env() -> Result<Dist> {
        if !LAUNCHER_VARS.iter().any(|v| std::env::var_os(v).is_some()) {
            return Ok(Dist::single());
        }
        Dist::launched()
    }

    #[cfg(feature = "mpi")]
    fn launched() -> Result<Dist> {
        use mpi::traits::Communicator;
        let universe = mpi::initialize()
            .ok_or_else(|| Error::Invalid("MPI: already initialised in this process".into()))?;
        let world = universe.world();
        Ok(Dist {
            rank: world.rank() as usize,
            size: world.size() as usize,
            mpi: Some(Mpi {
                world,
                _universe: universe,
            }),
        })
    }

    #[cfg(not(feature = "mpi"))]
    fn launched() -> Result<Dist> {
        let size = ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE"]
            .iter()
            .find_map(|v| std::env::var(v).ok()?.parse::<usize>().ok())
            .unwrap_or(1);
        if size > 1 {
            return Err(Error::Invalid(format!(
                "started by an MPI launcher as one of {size} processes, but this resnet was built without MPI: build it with `cargo build --release --features mpi`"
            )));
        }
        Ok(Dist::single())
    }

    /// This process's rank, 0-based.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// How many processes train together.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Whether this process writes the run's files and prints its progress (rank 0).
    pub fn is_root(&self) -> bool {
        self.rank == 0
    }

    /// Replaces `values` by their mean over the ranks, the same bits on every rank.
    pub fn average(&self, values: &mut [f32]) {
        if self.size == 1 {
            return;
        }
        let all = self.gather(values);
        let (n, len) = (self.size as f32, values.len());
        for (i, v) in values.iter_mut().enumerate() {
            let mut sum = 0.0f32;
            for r in 0..self.size {
                sum += all[r * len + i];
            }
            *v = sum / n;
        }
    }

    /// Replaces `values` by their sum over the ranks (in rank order).
    pub fn sum(&self, values: &mut [f64]) {
        if self.size == 1 {
            return;
        }
        let all = self.gather(values);
        let len = values.len();
        for (i, v) in values.iter_mut().enumerate() {
            *v = (0..self.size).map(|r| all[r * len + i]).sum();
        }
    }

    /// An error every rank meets at the same point: rank 0 prints it now, and the other ranks
    /// wait until it has (the launcher ends the whole job when the first rank exits, which must
    /// not cut rank 0 short before its message is out). The error itself is printed nowhere else.
    pub fn all_ranks(&self, msg: String) -> Error {
        if self.size == 1 {
            return Error::Invalid(msg);
        }
        if self.is_root() {
            eprintln!("error: {msg}");
        }
        self.barrier();
        Error::AllRanks {
            msg,
            root: self.is_root(),
        }
    }

    /// Turns each rank's result of the same step into one outcome for all: if any rank failed,
    /// the lowest such rank prints its error (one line) and every rank returns an error, so
    /// that no rank goes on to wait for the others at the next exchange.
    pub fn collective<T>(&self, result: Result<T>) -> Result<T> {
        if self.size == 1 {
            return result;
        }
        let failed = self.gather(&[result.is_err() as u8 as f64]);
        let Some(first) = failed.iter().position(|f| *f != 0.0) else {
            return result;
        };
        let msg = match &result {
            Err(e) if self.rank == first => {
                let msg = match first {
                    0 => e.to_string(),
                    r => format!("rank {r}: {e}"),
                };
                eprintln!("error: {msg}");
                msg
            }
            _ => format!("rank {first} failed (its error is above)"),
        };
        self.barrier();
        Err(Error::AllRanks {
            msg,
            root: self.is_root(),
        })
    }

    /// Runs `f` on rank 0, then, once it succeeded, on the other ranks: what rank 0 downloads
    /// into a shared directory (CIFAR-10) the others then find there, rather than every rank
    /// downloading the same file at once. A failure on any rank stops them all.
    pub fn root_first<T>(&self, f: impl Fn() -> Result<T>) -> Result<T> {
        if self.size == 1 {
            return f();
        }
        let first = match self.is_root() {
            true => f().map(Some),
            false => Ok(None),
        };
        let first = self.collective(first)?;
        self.collective(match first {
            Some(done) => Ok(done),
            None => f(),
        })
    }

    fn barrier(&self) {
        #[cfg(feature = "mpi")]
        if let Some(m) = &self.mpi {
            use mpi::traits::CommunicatorCollectives;
            m.world.barrier();
        }
    }

    /// Every rank's `values`, rank after rank (each rank's the same length).
    pub fn all(&self, values: &[f64]) -> Vec<f64> {
        self.gather(values)
    }

    /// Replaces `values` by rank 0's.
    pub fn broadcast(&self, values: &mut [f32]) {
        #[cfg(feature = "mpi")]
        if let Some(m) = &self.mpi {
            use mpi::traits::{Communicator, Root};
            m.world.process_at_rank(0).broadcast_into(values);
        }
        #[cfg(not(feature = "mpi"))]
        let _ = values;
    }

    /// Checks that every rank has the same `value` of `what` (the configuration, the weights), so
    /// that ranks that would train different things stop at start-up and ranks that drifted
    /// apart stop at once; every rank fails together.
    pub fn check_same(&self, what: &str, value: &[u8]) -> Result<()> {
        if self.size == 1 {
            return Ok(());
        }
        let all = self.gather(&[fnv1a(value) as f64]);
        match all.iter().position(|h| *h != all[0]) {
            None => Ok(()),
            Some(r) => Err(self.all_ranks(format!(
                "the {} MPI ranks disagree on the {what}: rank {r}'s differs from rank 0's",
                self.size
            ))),
        }
    }

    /// Every rank's `values`, rank after rank.
    fn gather<T: Copy + Default + GatherValue>(&self, values: &[T]) -> Vec<T> {
        let mut all = vec![T::default(); values.len() * self.size];
        #[cfg(feature = "mpi")]
        if let Some(m) = &self.mpi {
            use mpi::traits::CommunicatorCollectives;
            m.world.all_gather_into(values, &mut all[..]);
            return all;
        }
        all[..values.len()].copy_from_slice(values);
        all
    }
}

/// The element types gathered: MPI datatypes where the feature is on.
#[cfg(feature = "mpi")]
trait GatherValue: mpi::datatype::Equivalence {}
#[cfg(not(feature = "mpi"))]
trait GatherValue {}
impl GatherValue for f32 {}
impl GatherValue for f64 {}

/// A 64-bit FNV-1a hash, exact in an f64 to 2^53 after the shift, for comparing strings across
/// ranks without sending them.
fn fnv1a(bytes: &[u8]) -> u64 {
    let h = bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    });
    h >> 11
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_process_averages_to_itself_and_agrees_with_itself() {
        let d = Dist::single();
        let mut v = [1.5f32, -2.0];
        d.average(&mut v);
        assert_eq!(v, [1.5, -2.0]);
        assert!(d.check_same("configuration", b"resnet20 batch 128").is_ok());
        assert!(d.is_root() && d.size() == 1);
    }

    #[test]
    fn hashes_tell_configurations_apart() {
        assert_ne!(fnv1a(b"resnet20 batch 128"), fnv1a(b"resnet20 batch 256"));
        assert!(fnv1a(b"anything") < 1 << 53);
    }
}
