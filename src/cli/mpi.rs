//! Data-parallel training across processes over MPI (cargo feature `mpi`): the CLI's
//! implementation of the library's [`Ranks`], with the semantics of PyTorch's
//! DistributedDataParallel (every rank starts from rank 0's weights, trains on its shard of
//! every global batch, and averages the gradients with every other rank before the optimizer
//! step; see `resnet::train::Ranks`).
//!
//! A process not started by an MPI launcher (`mpirun`, `srun`, Hydra), or built without the
//! feature, is rank 0 of 1 and trains exactly as before.
//!
//! When the ranks stop together, the rank that met the error first prints it, and the others
//! wait at a barrier until it has: the launcher ends the whole job when the first rank exits,
//! which must not cut that message short. Ranks other than 0 then exit a little after rank 0
//! ([`exits_late`]).

use super::flags::with_flags;
use resnet::train::Ranks;
use resnet::{Error, Result};
use std::sync::atomic::{AtomicBool, Ordering};

/// Variables MPI launchers set in the processes they start: Open MPI, MPICH's Hydra, PMIx, Slurm.
const LAUNCHER_VARS: [&str; 4] = [
    "OMPI_COMM_WORLD_SIZE",
    "PMI_SIZE",
    "PMIX_RANK",
    "SLURM_NTASKS",
];

/// Set in ranks other than 0 of a run that stopped together.
static EXIT_LATE: AtomicBool = AtomicBool::new(false);

/// Whether this process should exit a little after rank 0 (a rank other than 0 of a run that
/// stopped together).
pub fn exits_late() -> bool {
    EXIT_LATE.load(Ordering::Relaxed)
}

/// The processes of one data-parallel run and this process's place among them.
pub struct Dist {
    rank: usize,
    size: usize,
    /// The rank among the ranks on this machine.
    local_rank: usize,
    /// This machine's name, as MPI knows it.
    node: String,
    /// Bytes received from the other ranks so far.
    received: std::cell::Cell<u64>,
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
            local_rank: 0,
            node: String::new(),
            received: Default::default(),
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
        // the ranks that share this machine's memory, in world rank order
        let machine = world.split_shared(world.rank());
        Ok(Dist {
            rank: world.rank() as usize,
            size: world.size() as usize,
            local_rank: machine.rank() as usize,
            // unnamed, each rank counts as its own machine (downloads then take turns)
            node: mpi::environment::processor_name()
                .unwrap_or_else(|_| format!("rank {}", world.rank())),
            received: Default::default(),
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

    /// `values` replaced by their sum over the ranks by MPI_Allreduce, whose order of additions
    /// the standard leaves to the implementation (benchmarks only: training sums in rank order).
    pub fn allreduce_sum(&self, values: &mut [f32]) {
        #[cfg(feature = "mpi")]
        if let Some(m) = &self.mpi {
            use mpi::collective::SystemOperation;
            use mpi::traits::CommunicatorCollectives;
            let mine = values.to_vec();
            m.world
                .all_reduce_into(&mine[..], values, SystemOperation::sum());
        }
        #[cfg(not(feature = "mpi"))]
        let _ = values;
    }

    fn barrier(&self) {
        #[cfg(feature = "mpi")]
        if let Some(m) = &self.mpi {
            use mpi::traits::CommunicatorCollectives;
            m.world.barrier();
        }
    }

    /// Every rank's `values`, rank after rank.
    fn gather<T: Copy + Default + GatherValue>(&self, values: &[T]) -> Vec<T> {
        let mut all = vec![T::default(); values.len() * self.size];
        #[cfg(feature = "mpi")]
        if let Some(m) = &self.mpi {
            use mpi::traits::CommunicatorCollectives;
            m.world.all_gather_into(values, &mut all[..]);
            self.count(std::mem::size_of_val(values) * (self.size - 1));
            return all;
        }
        all[..values.len()].copy_from_slice(values);
        all
    }
}

impl Ranks for Dist {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.size
    }

    fn allgatherv_f32(&self, mine: &[f32], counts: &[usize]) -> Vec<f32> {
        let mut all = vec![0.0f32; counts.iter().sum()];
        #[cfg(feature = "mpi")]
        if let Some(m) = &self.mpi {
            use mpi::datatype::PartitionMut;
            use mpi::traits::CommunicatorCollectives;
            let (c, d) = partition(counts);
            m.world
                .all_gather_varcount_into(mine, &mut PartitionMut::new(&mut all[..], c, d));
            self.count(4 * (all.len() - mine.len()));
            return all;
        }
        all.copy_from_slice(mine);
        all
    }

    fn alltoallv_f32(
        &self,
        send: &[f32],
        send_counts: &[usize],
        recv_counts: &[usize],
    ) -> Vec<f32> {
        let mut recv = vec![0.0f32; recv_counts.iter().sum()];
        #[cfg(feature = "mpi")]
        if let Some(m) = &self.mpi {
            use mpi::datatype::{Partition, PartitionMut};
            use mpi::traits::CommunicatorCollectives;
            let (sc, sd) = partition(send_counts);
            let (rc, rd) = partition(recv_counts);
            m.world.all_to_all_varcount_into(
                &Partition::new(send, sc, sd),
                &mut PartitionMut::new(&mut recv[..], rc, rd),
            );
            self.count(4 * (recv.len() - recv_counts[self.rank]));
            return recv;
        }
        let _ = send_counts;
        recv.copy_from_slice(send);
        recv
    }

    fn received_bytes(&self) -> u64 {
        self.received.get()
    }

    fn local_rank(&self) -> usize {
        self.local_rank
    }

    fn node(&self) -> String {
        self.node.clone()
    }

    fn allgather_f64(&self, values: &[f64]) -> Vec<f64> {
        self.gather(values)
    }

    fn broadcast(&self, values: &mut [f32]) {
        #[cfg(feature = "mpi")]
        if let Some(m) = &self.mpi {
            use mpi::traits::{Communicator, Root};
            m.world.process_at_rank(0).broadcast_into(values);
        }
        #[cfg(not(feature = "mpi"))]
        let _ = values;
    }

    /// If any rank failed, the lowest such rank prints its error (one line) and every rank
    /// returns [`Error::Reported`].
    fn fail_together(&self, mine: Option<&Error>) -> Result<()> {
        if self.size == 1 {
            return Ok(());
        }
        let failed = self.gather(&[mine.is_some() as u8 as f64]);
        let Some(first) = failed.iter().position(|f| *f != 0.0) else {
            return Ok(());
        };
        let msg = match mine {
            Some(e) if self.rank == first => {
                let msg = match first {
                    0 => with_flags(&e.to_string()),
                    r => format!("rank {r}: {}", with_flags(&e.to_string())),
                };
                eprintln!("error: {msg}");
                msg
            }
            _ => format!("rank {first} failed (its error is above)"),
        };
        Err(self.stop_together(msg))
    }

    /// Rank 0 prints `msg` now, and the other ranks wait until it has.
    fn fail_all(&self, msg: String) -> Error {
        if self.size == 1 {
            return Error::Invalid(msg);
        }
        if self.rank == 0 {
            eprintln!("error: {}", with_flags(&msg));
        }
        self.stop_together(msg)
    }
}

/// MPI's counts and displacements of chunks of `counts` values laid back to back.
#[cfg(feature = "mpi")]
fn partition(counts: &[usize]) -> (Vec<mpi::Count>, Vec<mpi::Count>) {
    let c: Vec<mpi::Count> = counts.iter().map(|&n| n as mpi::Count).collect();
    let d = c
        .iter()
        .scan(0, |at, &n| {
            let start = *at;
            *at += n;
            Some(start)
        })
        .collect();
    (c, d)
}

impl Dist {
    /// Adds `bytes` received from the other ranks to the count.
    #[cfg(feature = "mpi")]
    fn count(&self, bytes: usize) {
        self.received.set(self.received.get() + bytes as u64);
    }

    /// Waits until every rank is here (the message printed), then the error every rank
    /// returns.
    fn stop_together(&self, msg: String) -> Error {
        self.barrier();
        EXIT_LATE.store(self.rank != 0, Ordering::Relaxed);
        Error::Reported(msg)
    }
}

/// The element types gathered: MPI datatypes where the feature is on.
#[cfg(feature = "mpi")]
trait GatherValue: mpi::datatype::Equivalence {}
#[cfg(not(feature = "mpi"))]
trait GatherValue {}
impl GatherValue for f32 {}
impl GatherValue for f64 {}
