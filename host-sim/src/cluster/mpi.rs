//! The cluster over MPI (`--features mpi`): `mpirun -np N fedrecon train ...` or Slurm's
//! `srun`. Messages are MPI byte messages on `MPI_COMM_WORLD`; MPI's default error handler
//! ends the job on a communication error, and `mpirun` ends every rank when one dies.

use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Result, ensure};
use mpi::Threading;
use mpi::datatype::{Partition, PartitionMut};
use mpi::environment::Universe;
use mpi::point_to_point::{Destination, Source};
use mpi::topology::{Communicator, SimpleCommunicator};
use mpi::traits::{CommunicatorCollectives, Root};

use super::{Link, Traffic, Transport};

/// MPI, initialised for the life of the value (dropping it finalises MPI).
pub struct Mpi {
    _universe: Universe,
    link: Link,
}

impl Mpi {
    /// Initialises MPI (only the main thread calls it).
    pub fn init() -> Result<Self> {
        let (universe, _) = mpi::initialize_with_threading(Threading::Funneled)
            .ok_or_else(|| anyhow::anyhow!("MPI was already initialised"))?;
        let world = universe.world();
        let link: Link = std::sync::Arc::new(MpiTransport {
            rank: world.rank() as usize,
            size: world.size() as usize,
            sent: AtomicU64::new(0),
            received: AtomicU64::new(0),
        });
        Ok(Self {
            _universe: universe,
            link,
        })
    }

    /// This process's end of the job.
    pub fn link(&self) -> Link {
        self.link.clone()
    }
}

/// `MPI_COMM_WORLD`, seen from this rank (the handle is taken anew for each call, so the
/// transport itself holds no MPI object and may live anywhere).
#[derive(Debug)]
struct MpiTransport {
    rank: usize,
    size: usize,
    sent: AtomicU64,
    received: AtomicU64,
}

impl Transport for MpiTransport {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.size
    }

    fn send(&self, to: usize, bytes: &[u8]) -> Result<()> {
        ensure!(to < self.size && to != self.rank, "no rank {to} to send to");
        SimpleCommunicator::world()
            .process_at_rank(to as i32)
            .send(bytes);
        self.sent.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    fn recv(&self, from: usize) -> Result<Vec<u8>> {
        ensure!(
            from < self.size && from != self.rank,
            "no rank {from} to receive from"
        );
        let (bytes, _) = SimpleCommunicator::world()
            .process_at_rank(from as i32)
            .receive_vec::<u8>();
        self.received
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        Ok(bytes)
    }

    fn broadcast(&self, bytes: &mut Vec<u8>) -> Result<()> {
        let world = SimpleCommunicator::world();
        let root = world.process_at_rank(0);
        let mut len = bytes.len() as u64;
        root.broadcast_into(&mut len);
        if self.rank != 0 {
            bytes.resize(len as usize, 0);
        }
        root.broadcast_into(&mut bytes[..]);
        if self.rank == 0 {
            self.sent
                .fetch_add(len * (self.size as u64 - 1), Ordering::Relaxed);
        } else {
            self.received.fetch_add(len, Ordering::Relaxed);
        }
        Ok(())
    }

    fn exchange(&self, mut out: Vec<Vec<u8>>) -> Result<Vec<Vec<u8>>> {
        ensure!(
            out.len() == self.size,
            "an exchange needs a message per rank"
        );
        let world = SimpleCommunicator::world();
        let mine = std::mem::take(&mut out[self.rank]);
        let count = |b: &Vec<u8>| i32::try_from(b.len());
        let counts = out.iter().map(count).collect::<Result<Vec<i32>, _>>()?;
        let mut incoming = vec![0i32; self.size];
        world.all_to_all_into(&counts[..], &mut incoming[..]);
        let displs = |c: &[i32]| {
            c.iter()
                .scan(0i32, |at, &n| Some(std::mem::replace(at, *at + n)))
                .collect::<Vec<i32>>()
        };
        let send: Vec<u8> = out.concat();
        let total: usize = incoming.iter().map(|&n| n as usize).sum();
        let mut recv = vec![0u8; total];
        {
            let (sd, rd) = (displs(&counts), displs(&incoming));
            let s = Partition::new(&send[..], &counts[..], &sd[..]);
            let mut r = PartitionMut::new(&mut recv[..], &incoming[..], &rd[..]);
            world.all_to_all_varcount_into(&s, &mut r);
        }
        self.sent.fetch_add(send.len() as u64, Ordering::Relaxed);
        self.received.fetch_add(total as u64, Ordering::Relaxed);
        let mut at = 0;
        let mut got: Vec<Vec<u8>> = incoming
            .iter()
            .map(|&n| {
                let part = recv[at..at + n as usize].to_vec();
                at += n as usize;
                part
            })
            .collect();
        got[self.rank] = mine;
        Ok(got)
    }

    fn traffic(&self) -> Traffic {
        Traffic {
            sent: self.sent.load(Ordering::Relaxed),
            received: self.received.load(Ordering::Relaxed),
        }
    }

    fn abort(&self, code: i32) {
        SimpleCommunicator::world().abort(code);
    }
}
