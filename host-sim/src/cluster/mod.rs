//! Past one machine: one experiment across several processes (`mpirun -np N fedrecon train`).
//!
//! Rank 0 is the server: it samples and configures every round, runs its share of the clients
//! on its own devices, receives the other ranks' verdicts on their clients' uploads, and
//! selects every update in sample order exactly as a one-process run does; then it steps the
//! server optimizer and writes every output and checkpoint. The other ranks are the third
//! client host of rank 0's round (next to the in-process devices and the boards;
//! `round/ranks`): each holds only its own users' ratings ([`owner`]), trains and validates
//! them on its own thread pool (and its own boards), window by window. The plain mean is
//! folded sharded by item rows (each rank sums its rows over the selected clients in sample
//! order); DP and the robust rules fold on rank 0. Evaluation is shared out the same way, and
//! the per-user results are summed in user order on rank 0.
//!
//! Because every row is summed over the same updates in the same order, the model is
//! bit-identical to the one-process run for any number of ranks and threads, and a checkpoint
//! can be resumed with any number of ranks. Ranks talk through the [`Transport`] seam: MPI
//! (`mpi`, with the `mpi` feature) or threads of one process ([`local`], for tests).

pub mod local;
#[cfg(feature = "mpi")]
pub mod mpi;

use std::fmt::Debug;
use std::sync::Arc;

use anyhow::{Context, Result};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Bytes a rank has sent and received through its transport.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Payload bytes sent (a broadcast counts once per receiving rank at the root).
    pub sent: u64,
    /// Payload bytes received.
    pub received: u64,
}

/// How the ranks of one experiment exchange bytes: ordered, reliable messages between rank 0
/// and each other rank, and a broadcast from rank 0. A failure of a peer is an error (or, with
/// MPI, the end of the job), never a hang.
pub trait Transport: Send + Sync + Debug {
    /// This process's rank (0 is the server).
    fn rank(&self) -> usize;
    /// Number of ranks.
    fn size(&self) -> usize;
    /// Sends one message to rank `to`.
    fn send(&self, to: usize, bytes: &[u8]) -> Result<()>;
    /// Receives the next message from rank `from`.
    fn recv(&self, from: usize) -> Result<Vec<u8>>;
    /// Rank 0's `bytes` to every rank (every rank calls it; the others' `bytes` are replaced).
    fn broadcast(&self, bytes: &mut Vec<u8>) -> Result<()>;
    /// All to all (every rank calls it): `out[j]` goes to rank `j` and the result's `[j]` is
    /// what rank `j` sent here (`out[rank]` stays here as is).
    fn exchange(&self, out: Vec<Vec<u8>>) -> Result<Vec<Vec<u8>>>;
    /// Bytes sent and received so far.
    fn traffic(&self) -> Traffic;
    /// Ends every rank of the job now (MPI); a no-op where a failed rank's peers see it
    /// through their next receive.
    fn abort(&self, code: i32);
}

/// A shared handle on this process's transport.
pub type Link = Arc<dyn Transport>;

/// Sends a serialised message to `to`.
pub(crate) fn send_msg<T: Serialize>(t: &dyn Transport, to: usize, msg: &T) -> Result<()> {
    let bytes = postcard::to_allocvec(msg).context("encoding a cluster message")?;
    t.send(to, &bytes)
        .with_context(|| format!("sending to rank {to}"))
}

/// Receives a serialised message from `from`, naming the rank in errors.
pub(crate) fn recv_msg<T: DeserializeOwned>(t: &dyn Transport, from: usize) -> Result<T> {
    let bytes = t
        .recv(from)
        .with_context(|| format!("receiving from rank {from}"))?;
    postcard::from_bytes(&bytes).with_context(|| format!("rank {from} sent a malformed message"))
}

/// Rank 0's side of the model's broadcast: `params` as little-endian `f32` bytes.
pub(crate) fn broadcast_model(t: &dyn Transport, params: &[f32]) -> Result<()> {
    let mut bytes = Vec::with_capacity(params.len() * 4);
    for p in params {
        bytes.extend_from_slice(&p.to_le_bytes());
    }
    t.broadcast(&mut bytes).context("broadcasting the model")
}

/// Another rank's side of [`broadcast_model`]: rank 0's parameters into `params`.
pub(crate) fn receive_model(t: &dyn Transport, params: &mut [f32]) -> Result<()> {
    let mut bytes = Vec::new();
    t.broadcast(&mut bytes)
        .context("receiving the model from rank 0")?;
    anyhow::ensure!(
        bytes.len() == params.len() * 4,
        "rank 0 broadcast {} bytes of parameters, this model has {} parameters",
        bytes.len(),
        params.len()
    );
    for (p, b) in params.iter_mut().zip(bytes.chunks_exact(4)) {
        *p = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    }
    Ok(())
}

/// Ranks the MPI launcher that started this process asked for: `Some(n)` under `mpirun`,
/// `mpiexec` or `srun` (`Some(0)` when it does not say how many), `None` otherwise.
pub fn launched_ranks() -> Option<usize> {
    let var = |v: &str| std::env::var(v).ok();
    for v in ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE"] {
        if let Some(n) = var(v) {
            return Some(n.parse().unwrap_or(0));
        }
    }
    ["PMIX_RANK", "PMI_RANK"]
        .iter()
        .any(|v| var(v).is_some())
        .then_some(0)
}

/// A fault injected into rank `rank`'s round `round` by `FEDRECON_CLUSTER_FAULT=HOW:RANK:ROUND`
/// (`kill`: the process dies of SIGKILL; `error`: the rank fails with an error), so tests can
/// check that a failing rank ends the whole job naming it.
pub(crate) fn injected_fault(rank: usize, round: u32) -> Result<()> {
    let Ok(spec) = std::env::var("FEDRECON_CLUSTER_FAULT") else {
        return Ok(());
    };
    let mut it = spec.split(':');
    let (how, r, n) = (it.next(), it.next(), it.next());
    let hit = r.and_then(|r| r.parse::<usize>().ok()) == Some(rank)
        && n.and_then(|n| n.parse::<u32>().ok()) == Some(round);
    match how {
        _ if !hit => Ok(()),
        Some("kill") => {
            signal_hook::low_level::raise(signal_hook::consts::SIGKILL)
                .context("raising SIGKILL")?;
            unreachable!("SIGKILL ends the process")
        }
        Some("error") => {
            anyhow::bail!("fault injected into round {round} (FEDRECON_CLUSTER_FAULT)")
        }
        _ => anyhow::bail!(
            "FEDRECON_CLUSTER_FAULT={spec}: expected kill:RANK:ROUND or error:RANK:ROUND"
        ),
    }
}

/// The rank that holds dense user `user`'s ratings and so runs and evaluates that user when
/// rank 0's boards do not (every rank but 0 loads only its own users' ratings). The sample is
/// random, so every window of it keeps every rank about equally busy.
pub(crate) fn owner(user: u32, size: usize) -> usize {
    crate::data::movielens::UserShare::owner(user, size)
}

/// Boards of `specs` that attach on `rank`: `R=SPEC` attaches `SPEC` on rank `R`; a spec
/// without a rank attaches on rank 0 (`--device 1=/dev/ttyACM0` puts that board on rank 1).
pub fn devices_for_rank(specs: &[String], rank: usize) -> Result<Vec<String>> {
    let mut mine = Vec::new();
    for spec in specs {
        let (r, s) = match spec.split_once('=') {
            Some((r, s)) if !r.is_empty() && r.bytes().all(|b| b.is_ascii_digit()) => (
                r.parse::<usize>()
                    .with_context(|| format!("--device {spec}: rank {r} is out of range"))?,
                s,
            ),
            _ => (0, spec.as_str()),
        };
        anyhow::ensure!(!s.is_empty(), "--device {spec}: no board after the rank");
        if r == rank {
            mine.push(s.to_string());
        }
    }
    Ok(mine)
}

/// Checks that every `R=` of `specs` names a rank of a job of `size` ranks.
pub fn check_device_ranks(specs: &[String], size: usize) -> Result<()> {
    for spec in specs {
        if let Some((r, _)) = spec.split_once('=')
            && !r.is_empty()
            && r.bytes().all(|b| b.is_ascii_digit())
        {
            let r: usize = r.parse().unwrap_or(usize::MAX);
            anyhow::ensure!(
                r < size,
                "--device {spec}: rank {r} does not exist (the job has {size} ranks)"
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_go_to_their_rank() {
        let specs = vec![
            "/dev/ttyACM0".to_string(),
            "1=/dev/ttyACM1".to_string(),
            "1=tcp:host:4000".to_string(),
            "2=/dev/ttyUSB0".to_string(),
        ];
        assert_eq!(devices_for_rank(&specs, 0).unwrap(), ["/dev/ttyACM0"]);
        assert_eq!(
            devices_for_rank(&specs, 1).unwrap(),
            ["/dev/ttyACM1", "tcp:host:4000"]
        );
        assert_eq!(devices_for_rank(&specs, 2).unwrap(), ["/dev/ttyUSB0"]);
        assert!(check_device_ranks(&specs, 3).is_ok());
        let err = check_device_ranks(&specs, 2).unwrap_err().to_string();
        assert!(err.contains("rank 2 does not exist"), "{err}");
        assert!(devices_for_rank(&["1=".to_string()], 1).is_err());
    }
}
