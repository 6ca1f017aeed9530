//! `fedrecon train` under an MPI launcher (`mpirun -np N`, `srun`): rank 0 runs the experiment
//! as usual (outputs, checkpoints), every other rank serves it ([`fedrecon_host_sim::cluster`]).
//! A rank that fails ends the whole job, naming itself.

use anyhow::Result;
use fedrecon_host_sim::cluster::Link;

/// This process's place in a job of more than one rank.
pub struct Job {
    #[cfg(feature = "mpi")]
    _mpi: fedrecon_host_sim::cluster::mpi::Mpi,
    link: Link,
}

impl Job {
    /// Joins the job when an MPI launcher started this process with more than one rank.
    pub fn start() -> Result<Option<Job>> {
        let Some(n) = fedrecon_host_sim::cluster::launched_ranks() else {
            return Ok(None);
        };
        if n == 1 {
            return Ok(None);
        }
        Self::init()
    }

    #[cfg(feature = "mpi")]
    fn init() -> Result<Option<Job>> {
        let mpi = fedrecon_host_sim::cluster::mpi::Mpi::init()?;
        let link = mpi.link();
        if link.size() == 1 {
            return Ok(None);
        }
        Ok(Some(Job { _mpi: mpi, link }))
    }

    #[cfg(not(feature = "mpi"))]
    fn init() -> Result<Option<Job>> {
        anyhow::bail!(
            "started by an MPI launcher with several ranks, but this fedrecon was built \
             without MPI: build it with `cargo build --release --features mpi` (README, \
             \"Past one machine\")"
        )
    }

    /// This process's end of the job.
    pub fn link(&self) -> &Link {
        &self.link
    }

    /// Reports `e` as this rank's failure and ends every rank of the job.
    pub fn fail(&self, e: &anyhow::Error) -> ! {
        eprintln!(
            "error: rank {} of {}: {e:#}",
            self.link.rank(),
            self.link.size()
        );
        self.link.abort(1);
        std::process::exit(1)
    }
}
