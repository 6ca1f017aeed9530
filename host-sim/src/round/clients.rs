//! Where a sampled client's round runs, behind one trait ([`ClientHost`]): the in-process
//! virtual devices ([`VirtualDevices`]) and boards behind a link ([`Boards`]); a client on
//! another process or machine would be a third host. Every host gets the same [`ClientJob`]s
//! (dropouts are decided before any host sees them) and leaves the same thing in the client's
//! [`Slot`], the encoded update, which the server then decodes and validates identically
//! whichever host produced it: so a round with boards is bit-identical to an all-virtual one.

use std::sync::Mutex;

use anyhow::{Result, anyhow};
use fedrecon_core::{Error as CoreError, RoundConfig};
use rayon::prelude::*;

use super::{SimScalar, Workspace, load_client, rows_view, worker_workspace};
use crate::board::{BOARD_CLIENT, BoardJob, Boards, Pending};
use crate::comm::LinkBytes;
use crate::comm::transport::{self, UpdateHeader};
use crate::comm::{self, CommConfig, DownlinkRound, UplinkScratch};
use crate::data::partition::{Client, ClientSet};
use crate::round::faults::RoundFaults;
use crate::server::validate::Reject;
use fedrecon_core::wire::{Framing, UpdateShape, UplinkRows};

/// One sampled client of a round, as the configure phase sets it up for whichever host runs it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ClientJob {
    /// Index of the client in the training set.
    pub(crate) index: usize,
    /// Its user id (carried in a virtual device's update).
    pub(crate) user: u32,
    /// Seed of the user-embedding initialisation.
    pub(crate) seed: u64,
    /// Its device configuration (the shuffle seed may be per round and user).
    pub(crate) cfg: RoundConfig,
    /// It drops out of the round (sends nothing; no host runs it).
    pub(crate) dropped: bool,
}

/// What one round gives every host: the jobs (one per slot) and the model they train on.
pub(crate) struct RoundInput<'a> {
    /// 1-based round number.
    pub(crate) round: u32,
    /// The training clients' data.
    pub(crate) train: &'a ClientSet,
    /// The sampled clients, in sample order.
    pub(crate) jobs: &'a [ClientJob],
    /// The round's device configuration before per-client shuffle seeds (which clients have a
    /// batch in both phases depends only on it).
    pub(crate) cfg: &'a RoundConfig,
    /// The server's flat parameters (item rows, then item biases).
    pub(crate) params: &'a [f32],
    /// The round's downlink as the devices receive it.
    pub(crate) down: &'a DownlinkRound,
    /// Catalogue size.
    pub(crate) num_items: usize,
    /// The uplink and downlink modes.
    pub(crate) comm: &'a CommConfig,
    /// The model has item biases.
    pub(crate) with_bias: bool,
}

/// What became of a sampled client.
#[derive(Debug, Default)]
pub(crate) enum Outcome {
    /// No host ran it (an internal error if it stays so).
    #[default]
    NotRun,
    /// It dropped out of the round.
    Dropped,
    /// A phase had no batch: it sent nothing.
    NoBatch,
    /// A board failed twice on its link: nothing of it is aggregated.
    LinkFailed,
    /// Its update arrived in [`Slot::bytes`], carrying client id `wire_client`.
    Sent {
        /// The client id in the update's frames (the user, or a board's own id).
        wire_client: u32,
    },
    /// The client could not run (an error aborts the round).
    Failed(anyhow::Error),
}

/// A sampled client's upload and the server's reading of it.
#[derive(Debug, Default)]
pub(crate) struct Slot {
    /// What became of the client.
    pub(crate) outcome: Outcome,
    /// The encoded update (when [`Outcome::Sent`]).
    pub(crate) bytes: Vec<u8>,
    /// How `bytes` are delimited: set by the host that ran the client.
    pub(crate) framing: Framing,
    /// Of the upload, the framing (known once it decodes).
    pub(crate) framing_up: u64,
    /// Bytes of the client's downlink messages, and their framing.
    pub(crate) down: LinkBytes,
    /// Length of the upload when another rank decoded it (its bytes then stay there).
    pub(crate) up_len: Option<u64>,
    /// Rows of the update when they stay on the rank that decoded it (a sharded fold).
    pub(crate) rows_elsewhere: Option<u32>,
    /// L2 norm of the decoded update (computed while validating, in parallel).
    pub(crate) norm: f64,
    /// Padded uplink: the client touched more rows than `comm.pad_rows` (and sent them all).
    pub(crate) padded_overflow: bool,
    /// Frame scratch of the encoders and the decoder.
    pub(crate) frame_buf: Vec<u8>,
    /// The uplink rows built from the device update (see [`comm`]).
    up: UplinkScratch,
    /// The client's distinct items (the rows of a `needed` downlink).
    pub(crate) needed: Vec<u32>,
    /// The server's decoding of `bytes`: header, then the rows (ids, values, biases).
    pub(crate) header: UpdateHeader,
    pub(crate) items: Vec<u32>,
    pub(crate) rows: Vec<f32>,
    pub(crate) biases: Vec<f32>,
    /// Why the server refused the update ([`crate::server::validate`]), if it did.
    pub(crate) reject: Option<(Reject, String)>,
    /// The client is one of the attack bench's malicious users ([`crate::attack`]).
    pub(crate) malicious: bool,
}

impl Slot {
    /// Clears the slot for a new round.
    pub(crate) fn reset(&mut self) {
        self.outcome = Outcome::NotRun;
        self.bytes.clear();
        self.framing = transport::VIRTUAL_LINK;
        self.framing_up = 0;
        self.down = LinkBytes::default();
        self.up_len = None;
        self.rows_elsewhere = None;
        self.norm = 0.0;
        self.padded_overflow = false;
        // A malformed upload leaves no header: the previous client's must not be counted.
        self.header = UpdateHeader::default();
        self.reject = None;
        self.malicious = false;
    }

    /// Rows the update sends (held here or on the rank that decoded it).
    pub(crate) fn row_count(&self) -> u32 {
        self.rows_elsewhere.unwrap_or(self.items.len() as u32)
    }

    /// Bytes of the upload the server received.
    pub(crate) fn up_bytes(&self) -> u64 {
        self.up_len.unwrap_or(self.bytes.len() as u64)
    }

    /// The server side of one upload: decodes `bytes` into the slot's row buffers. Rows are
    /// kept only if the whole update decodes (the decoder validates every frame).
    pub(crate) fn receive<const K: usize>(
        &mut self,
        round: u32,
        user: u32,
        wire_client: u32,
        with_bias: bool,
    ) -> Result<()> {
        self.items.clear();
        self.rows.clear();
        self.biases.clear();
        let (items, rows, biases) = (&mut self.items, &mut self.rows, &mut self.biases);
        let decoded = transport::decode_update::<K>(
            self.framing,
            &self.bytes,
            round,
            wire_client,
            &mut self.frame_buf,
            |item, delta, bias| {
                items.push(item);
                rows.extend_from_slice(delta);
                if with_bias {
                    biases.push(bias.unwrap_or(0.0));
                }
            },
        );
        match decoded {
            Ok(h) => {
                self.framing_up = self.bytes.len() as u64 - h.payload;
                self.header = h;
                Ok(())
            }
            Err(e) => {
                self.items.clear();
                self.rows.clear();
                self.biases.clear();
                Err(e.context(format!("round {round}: decoding the update of user {user}")))
            }
        }
    }

    /// The server's check of the decoded update ([`crate::server::validate`]) of a client with
    /// `len` examples: `Some` when it must be rejected.
    pub(crate) fn validate(
        &self,
        len: usize,
        num_items: usize,
        cfg: &RoundConfig,
        rel: &crate::config::reliability::ReliabilityConfig,
        k: usize,
    ) -> Option<(Reject, String)> {
        let kept = cfg.split.kept(len);
        // What the device's round computes for this client (fedrecon_core::RoundConfig).
        let post = u32::try_from(cfg.trained_examples(kept)).unwrap_or(u32::MAX);
        let max_weight = cfg.weight(kept);
        let limits = crate::server::validate::Limits::new(rel, num_items, k, max_weight, post);
        if self.header.rows as usize != self.items.len() {
            return Some((
                Reject::Malformed,
                "row count differs from the header".into(),
            ));
        }
        crate::server::validate::check(
            &limits,
            &crate::server::validate::Decoded {
                weight: self.header.weight,
                metrics: self.header.metrics,
                items: &self.items,
                rows: &self.rows,
                biases: &self.biases,
            },
        )
        .err()
    }
}

/// Where clients run. A round offers the sampled clients no host has taken yet to each host
/// in turn ([`ClientHost::claim`]), then, window by window of the sample, lets the hosts
/// finish that window's clients in reverse order ([`ClientHost::complete`]): remote hosts
/// claim first and work while the last host, the in-process devices taking everything left,
/// computes.
pub(crate) trait ClientHost<const K: usize> {
    /// Takes the clients among `free` (indices into `input.jobs`) this host will run,
    /// clearing their flags, and starts them.
    fn claim(&mut self, input: &RoundInput<'_>, free: &mut [bool]);

    /// Runs or waits for the claimed clients among `input.jobs[base..base + slots.len()]`,
    /// leaving each one's [`Outcome`] (and update) in its slot; link figures go to `faults`.
    /// Called for consecutive windows covering all jobs.
    fn complete(
        &mut self,
        input: &RoundInput<'_>,
        base: usize,
        slots: &mut [Slot],
        faults: &mut RoundFaults,
    );
}

/// The in-process virtual devices: one [`Workspace`] per worker thread of a rayon pool.
pub(crate) struct VirtualDevices<S: SimScalar, const K: usize> {
    pub(crate) pool: rayon::ThreadPool,
    pub(crate) workspaces: Vec<Mutex<Workspace<S, K>>>,
    /// The parameters converted to the device scalar (unused for f32).
    pub(crate) lent: Vec<S>,
    /// Which jobs of the current round are ours.
    claimed: Vec<bool>,
}

impl<S: SimScalar, const K: usize> VirtualDevices<S, K> {
    /// Devices on `pool`, one workspace per worker.
    pub(crate) fn new(pool: rayon::ThreadPool) -> Self {
        let workspaces = pool.install(|| {
            (0..rayon::current_num_threads())
                .map(|_| Mutex::new(super::new_workspace::<S, K>()))
                .collect()
        });
        Self {
            pool,
            workspaces,
            lent: Vec::new(),
            claimed: Vec::new(),
        }
    }
}

impl<S: SimScalar, const K: usize> ClientHost<K> for VirtualDevices<S, K> {
    fn claim(&mut self, _: &RoundInput<'_>, free: &mut [bool]) {
        self.claimed.clear();
        self.claimed.extend_from_slice(free);
        free.fill(false);
    }

    fn complete(
        &mut self,
        input: &RoundInput<'_>,
        base: usize,
        slots: &mut [Slot],
        _: &mut RoundFaults,
    ) {
        let end = base + slots.len();
        // The devices train on what they decode: the dequantized rows of a quantized
        // downlink, else the server's rows.
        let device_params = input.down.dequantized.as_deref().unwrap_or(input.params);
        let lent = S::lend(device_params, &mut self.lent);
        let rows = rows_view::<S, K>(lent, input.num_items, input.with_bias);
        let workspaces = &self.workspaces;
        self.pool.install(|| {
            slots
                .par_iter_mut()
                .zip(input.jobs[base..end].par_iter())
                .zip(self.claimed[base..end].par_iter())
                .filter(|(_, mine)| **mine)
                .for_each(|((slot, job), _)| {
                    let client = input.train.client(job.index);
                    let mut ws = worker_workspace(workspaces);
                    let (comm, up, buf) = (input.comm, &mut slot.up, &mut slot.frame_buf);
                    let trained = train_client(
                        &mut ws,
                        &rows,
                        job,
                        input.round,
                        &client,
                        input.num_items as u32,
                        (comm, up),
                        buf,
                        &mut slot.bytes,
                    );
                    slot.padded_overflow = comm.update_mode == comm::UpdateMode::Padded
                        && slot.up.touched > comm.pad_rows;
                    slot.outcome = match trained {
                        Ok(true) => Outcome::Sent {
                            wire_client: client.user,
                        },
                        Ok(false) => Outcome::NoBatch,
                        Err(e) => Outcome::Failed(e),
                    };
                });
        });
    }
}

/// Boards run the first free clients of the round that fit them, one each.
pub(crate) struct BoardHost {
    pub(crate) boards: Boards,
    /// The running boards and the job index of each one's client.
    pending: Option<(Pending, Vec<usize>)>,
    /// Finished boards' clients not yet handed to their window: job index and outcome (the
    /// update's bytes in `Sent`'s slot and whether a padded update overflowed are carried
    /// alongside).
    ready: Vec<(usize, Outcome, Vec<u8>, bool)>,
    /// Link faults injected before this round's claim.
    faults_before: u64,
}

impl BoardHost {
    pub(crate) fn new(boards: Boards) -> Self {
        Self {
            boards,
            pending: None,
            ready: Vec::new(),
            faults_before: 0,
        }
    }
}

impl<const K: usize> ClientHost<K> for BoardHost {
    fn claim(&mut self, input: &RoundInput<'_>, free: &mut [bool]) {
        self.faults_before = self.boards.injected_faults();
        if self.boards.is_empty() {
            return;
        }
        let candidates: Vec<usize> = (0..free.len()).filter(|&i| free[i]).collect();
        let users: Vec<u32> = candidates.iter().map(|&i| input.jobs[i].user).collect();
        let lens: Vec<usize> = candidates
            .iter()
            .map(|&i| input.train.client(input.jobs[i].index).len())
            .collect();
        let mut slots = Vec::new();
        let mut jobs = Vec::new();
        let comm = input.comm;
        // The board shapes its update as a virtual device's is shaped (comm::UplinkScratch).
        let shape_of = |job: &ClientJob| {
            let rows = match comm.update_mode {
                comm::UpdateMode::Sparse => UplinkRows::Sparse,
                comm::UpdateMode::Dense => UplinkRows::Dense,
                comm::UpdateMode::Padded => UplinkRows::Padded,
            };
            let shape = UpdateShape {
                rows,
                pad_rows: u32::try_from(comm.pad_rows).unwrap_or(u32::MAX),
                seed: comm::uplink_seed(job.seed, input.round, job.user),
                stochastic_rounding: comm.stochastic_rounding,
            };
            (!shape.is_plain()).then_some(shape)
        };
        let probe = input.jobs.first().and_then(shape_of);
        // Clients too small to train stay virtual (Boards::assign skips them).
        for (board, c) in self
            .boards
            .assign(input.round, input.cfg, probe.as_ref(), &lens, &users)
        {
            let i = candidates[c];
            free[i] = false;
            let job = &input.jobs[i];
            let client = input.train.client(job.index);
            slots.push(i);
            jobs.push((
                board,
                BoardJob {
                    round: input.round,
                    items: client.items.to_vec(),
                    ratings: client.ratings.to_vec(),
                    seed: job.seed,
                    cfg: job.cfg,
                    down: comm.downlink.encoding(),
                    up: comm.uplink.encoding(),
                    shape: shape_of(job),
                    provisioned: self.boards.boards()[board].owner() == Some(job.user),
                },
            ));
        }
        // The server's f32 values: the board quantizes nothing itself, it decodes the
        // downlink's encoding exactly as a virtual device's rows were decoded.
        let (rows, biases) = input.params.split_at(input.num_items * K);
        let rows = rows.as_chunks::<K>().0;
        self.pending = Some((self.boards.start::<K>(rows, biases, jobs), slots));
    }

    /// Waits for the boards when this window holds one of their clients (or is the last):
    /// the boards work while the devices compute the windows before.
    fn complete(
        &mut self,
        input: &RoundInput<'_>,
        base: usize,
        slots: &mut [Slot],
        faults: &mut RoundFaults,
    ) {
        let end = base + slots.len();
        let due =
            |at: &[usize]| end == input.jobs.len() || at.iter().any(|i| (base..end).contains(i));
        if self.pending.as_ref().is_some_and(|(_, at)| due(at)) {
            let (pending, at) = self.pending.take().expect("checked above");
            for (i, report) in at.into_iter().zip(self.boards.finish(pending)) {
                faults.link_errors += report.link_errors;
                faults.link_retries += u32::from(report.retried);
                for (why, n) in &report.auth_refused.0 {
                    *faults.auth_refused.entry(why.clone()).or_default() += *n as u32;
                }
                self.ready.push(match report.update {
                    Ok(Some((bytes, rows))) => (
                        i,
                        Outcome::Sent {
                            wire_client: BOARD_CLIENT,
                        },
                        bytes,
                        // More rows than pad_rows: the client touched more (and sent all).
                        input.comm.update_mode == comm::UpdateMode::Padded
                            && rows as usize > input.comm.pad_rows,
                    ),
                    Ok(None) => (i, Outcome::LinkFailed, Vec::new(), false),
                    Err(e) => (i, Outcome::Failed(e), Vec::new(), false),
                });
            }
            faults.link_faults += self.boards.injected_faults() - self.faults_before;
        }
        let mut k = 0;
        while k < self.ready.len() {
            if (base..end).contains(&self.ready[k].0) {
                let (i, outcome, bytes, overflow) = self.ready.swap_remove(k);
                let slot = &mut slots[i - base];
                slot.outcome = outcome;
                slot.bytes = bytes;
                slot.framing = Framing::Stream;
                slot.padded_overflow = overflow;
            } else {
                k += 1;
            }
        }
    }
}

/// Runs one client's training round and encodes its update into `out` (`frame_buf` is the
/// encoder's scratch). `Ok(false)` when a phase has no batch (the client then sends nothing).
#[allow(clippy::too_many_arguments)]
pub(crate) fn train_client<S: SimScalar, R: fedrecon_core::ItemRows<S, K>, const K: usize>(
    dev: &mut Workspace<S, K>,
    rows: &R,
    job: &ClientJob,
    round: u32,
    client: &Client<'_>,
    num_items: u32,
    (comm_cfg, up): (&CommConfig, &mut UplinkScratch),
    frame_buf: &mut Vec<u8>,
    out: &mut Vec<u8>,
) -> Result<bool> {
    let loaded = load_client(dev, client, num_items)?;
    match crate::on_device!(loaded, |dev| dev.train(rows, &job.cfg, job.seed)) {
        Ok(update) => {
            let seed = comm::uplink_seed(job.seed, round, client.user);
            let sent = up.shape(&update, comm_cfg, num_items as usize, seed);
            transport::encode_update_as(
                transport::VIRTUAL_LINK,
                round,
                client.user,
                &sent,
                comm_cfg.uplink.encoding(),
                frame_buf,
                out,
            )?;
            Ok(true)
        }
        Err(CoreError::EmptySplit { .. }) => {
            out.clear();
            Ok(false)
        }
        Err(e) => Err(anyhow!("user {}: {e}", client.user)),
    }
}
