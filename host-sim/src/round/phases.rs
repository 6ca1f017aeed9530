//! One training round as its phases: sample → configure → claim, then window by window of the
//! sample: count the downlink → run clients → collect → validate → select → fold; then finish
//! the aggregate and apply it ([`Simulation::train_round`] calls them in that order).
//!
//! Streaming: each window's updates are folded into the round's [`Strategy`] as soon as they
//! are validated and selected, and the window's slots are reused, so memory is the model plus
//! one window of updates (a fixed multiple of the worker count), whatever the clients per
//! round. Selection and folding visit clients in sample order and the mean sums every row in
//! that order, so the result does not depend on the window size or the thread count.

use std::ops::Range;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use rayon::prelude::*;

use super::clients::{ClientHost, ClientJob, Outcome, RoundInput, Slot};
use super::{RoundStats, SimScalar, Simulation, client_round_config, recon_examples};
use crate::attack::RoundSecurity;
use crate::comm::{self, ClientTraffic, DownlinkRound};
use crate::round::faults::RoundFaults;
use crate::seeds::{Purpose, sample_without_replacement, seed_for};
use crate::server::ClientRows;
use crate::server::privacy::PrivacySpent;
use crate::server::strategy::{self, Strategy};
use crate::server::validate::Reject;

/// Clients per window and worker thread: enough work per window that the workers rarely wait
/// at its end, few enough that a window's updates are a small part of memory.
const WINDOW_PER_THREAD: usize = 64;

/// What a round has selected so far and what it records about the others.
#[derive(Default)]
struct Selection {
    /// Valid reports folded so far.
    accepted: usize,
    faults: RoundFaults,
    /// Traffic of every reporting client (a few numbers each).
    per_client: Vec<ClientTraffic>,
    bytes_up: u64,
    bytes_down: u64,
    payload_up: u64,
    payload_down: u64,
    /// Clients that had no batch.
    skipped: u32,
    /// Rating-steps of the reporting clients.
    examples: u64,
    /// Attack bench: malicious clients among the folded ones.
    attackers: u32,
    /// Seconds of selection and folding, of the aggregation (folding and finishing) and of
    /// the server step (for `fedrecon bench`).
    select_seconds: f64,
    aggregate_seconds: f64,
    step_seconds: f64,
}

impl<S: SimScalar, const K: usize> Simulation<'_, S, K> {
    /// Runs one training round over the seeded sample of training clients.
    pub fn train_round(&mut self) -> Result<RoundStats> {
        let t0 = Instant::now();
        let round = self.round + 1;
        let sample = self.sample(round);
        let jobs = self.configure(round, &sample);
        self.prepare_downlink(round)?;
        let mut s = Selection::default();
        let traffic = self.ranks.traffic();
        // Every rank of a cluster gets its share of each window.
        let window = WINDOW_PER_THREAD * self.threads().max(1) * self.ranks.size();
        self.ranks.window = window;
        // The other ranks decode and validate their clients' uploads, unless a tamper hook
        // must see the bytes here first.
        self.ranks.decode_remotely = self.tamper.is_none();
        // The plain mean sums each row on the rank that owns it; DP and the robust rules
        // need every update whole, on rank 0.
        self.ranks.shard = self.ranks.decode_remotely
            && self.ranks.size() > 1
            && self.dp.is_none()
            && self.robust.is_none();
        let free = jobs.iter().map(|j| !j.dropped).collect();
        self.claim_free(round, &jobs, free);
        self.agg.reset();
        if let Some(r) = self.robust.as_mut() {
            r.reset();
        }
        self.slots
            .resize_with(window.min(jobs.len()), Slot::default);
        for base in (0..jobs.len()).step_by(window) {
            let range = base..(base + window).min(jobs.len());
            self.count_downlink(round, &jobs, range.clone())?;
            self.run_clients(round, &jobs, range.clone(), &mut s.faults);
            self.collect(round, &jobs, range.clone());
            self.validate(round, &jobs, range.clone());
            let t = Instant::now();
            let take = self.select(round, &jobs, range.clone(), &mut s)?;
            let t_fold = Instant::now();
            if self.ranks.shard {
                self.fold_sharded(range.start, &take)
                    .with_context(|| format!("round {round}: aggregating updates"))?;
            } else {
                self.fold(round, &take, range.len())?;
            }
            s.aggregate_seconds += t_fold.elapsed().as_secs_f64();
            s.select_seconds += t.elapsed().as_secs_f64();
        }
        if self.ranks.shard {
            let t = Instant::now();
            self.gather_shards()
                .with_context(|| format!("round {round}: aggregating updates"))?;
            s.aggregate_seconds += t.elapsed().as_secs_f64();
            s.select_seconds += t.elapsed().as_secs_f64();
        }
        let device_seconds = t0.elapsed().as_secs_f64() - s.select_seconds;
        let (applied, privacy) = self.finish_and_apply(round, &mut s, sample.len())?;
        let security = (self.cfg.attack.kind != crate::attack::AttackKind::None
            || self.cfg.robust.is_active())
        .then(|| RoundSecurity {
            attackers: s.attackers,
            defense: self.robust.as_ref().map(|r| r.stats()).unwrap_or_default(),
        });
        self.round = round;
        let m = self.agg.metrics();
        let after = self.ranks.traffic();
        Ok(RoundStats {
            cluster_sent: after.sent - traffic.sent,
            cluster_received: after.received - traffic.received,
            round,
            loss: f64::from(m.loss_sum) / f64::from(m.count.max(1)),
            rating_accuracy: f64::from(m.correct) / f64::from(m.count.max(1)),
            seconds: t0.elapsed().as_secs_f64(),
            bytes_down: s.bytes_down,
            bytes_up: s.bytes_up,
            payload_down: s.payload_down,
            payload_up: s.payload_up,
            clients: sample.len() as u32,
            skipped: s.skipped,
            applied,
            traffic: comm::TrafficStats::from_clients(&s.per_client),
            faults: s.faults,
            privacy,
            security,
            examples: s.examples,
            device_seconds,
            server_seconds: t0.elapsed().as_secs_f64() - device_seconds,
            aggregate_seconds: s.aggregate_seconds,
            step_seconds: s.step_seconds,
        })
    }

    /// Sample: the round's seeded draw of training clients (over-selected when configured).
    pub(crate) fn sample(&self, round: u32) -> Vec<usize> {
        sample_without_replacement(
            self.part.train.len(),
            self.cfg
                .reliability
                .sample_size(self.cfg.run.clients_per_round),
            seed_for(self.cfg.run.seed, Purpose::SampleTrain, u64::from(round), 0),
        )
    }

    /// Configure: each sampled client's seed, device configuration and dropout, decided here
    /// for every client before any host sees it.
    pub(crate) fn configure(&mut self, round: u32, sample: &[usize]) -> Vec<ClientJob> {
        let seed = self.cfg.run.seed;
        let reshuffle = self.cfg.client.reshuffle_each_round;
        sample
            .iter()
            .map(|&index| {
                let user = self.part.train.client(index).user;
                ClientJob {
                    index,
                    user,
                    seed: seed_for(seed, Purpose::TrainClient, u64::from(round), user.into()),
                    cfg: client_round_config(&self.train_cfg, reshuffle, round, user),
                    dropped: self.cfg.reliability.drops(seed, round, user),
                }
            })
            .collect()
    }

    /// Configure, continued: encodes the round's downlink once.
    pub(crate) fn prepare_downlink(&mut self, round: u32) -> Result<()> {
        self.down = DownlinkRound::prepare::<K>(
            self.cfg.comm.downlink,
            round,
            &self.params,
            self.num_items,
            self.cfg.model.item_bias,
            &mut self.down_buf,
        )?;
        Ok(())
    }

    /// Claim: of the `free` jobs (on rank 0 those not dropped, on another rank its share),
    /// the boards take the clients that fit them and start, the other ranks of a cluster take
    /// their share, and the in-process devices take the rest.
    pub(crate) fn claim_free(&mut self, round: u32, jobs: &[ClientJob], mut free: Vec<bool>) {
        let mut local = free.clone();
        let input = RoundInput {
            round,
            train: &self.part.train,
            jobs,
            cfg: &self.train_cfg,
            params: &self.params,
            down: &self.down,
            num_items: self.num_items,
            comm: &self.cfg.comm,
            with_bias: self.cfg.model.item_bias,
        };
        let mut hosts: [&mut dyn ClientHost<K>; 3] =
            [&mut self.boards, &mut self.ranks, &mut self.devices];
        for host in hosts.iter_mut() {
            host.claim(&input, &mut free);
        }
        for (i, l) in local.iter_mut().enumerate() {
            *l &= !self.ranks.decodes(i);
        }
        self.local = local;
    }

    /// Counts what each participating client of the window downloads, whichever host runs
    /// it (of the jobs this process handles, [`Simulation::local`]), and clears the window's
    /// slots.
    pub(crate) fn count_downlink(
        &mut self,
        round: u32,
        jobs: &[ClientJob],
        range: Range<usize>,
    ) -> Result<()> {
        let (comm_cfg, params, n) = (&self.cfg.comm, &self.params, self.num_items);
        let (down, train, cfg) = (&self.down, &self.part.train, &self.train_cfg);
        let slots = &mut self.slots[..range.len()];
        slots.iter_mut().for_each(Slot::reset);
        let local = &self.local[range.clone()];
        let counted: Vec<Result<()>> = self.devices.pool.install(|| {
            slots
                .par_iter_mut()
                .zip(jobs[range].par_iter())
                .zip(local.par_iter())
                .filter(|(_, local)| **local)
                .map(|((slot, job), _)| {
                    comm::distinct_sorted(train.client(job.index).items, &mut slot.needed);
                    comm::extra_rows(cfg, &mut slot.needed);
                    let start = comm::round_start(round, job.seed, cfg, n, comm_cfg.uplink);
                    slot.down = comm::client_downlink_bytes::<K>(
                        comm_cfg.downlink,
                        down,
                        start,
                        params,
                        n,
                        &slot.needed,
                        &mut slot.frame_buf,
                    )?;
                    Ok(())
                })
                .collect()
        });
        counted.into_iter().collect()
    }

    /// Run clients: the in-process devices run the window's clients they claimed, then the
    /// boards hand over theirs (waiting for them when the window holds one); each client's
    /// upload lands in its slot.
    pub(crate) fn run_clients(
        &mut self,
        round: u32,
        jobs: &[ClientJob],
        range: Range<usize>,
        faults: &mut RoundFaults,
    ) {
        let input = RoundInput {
            round,
            train: &self.part.train,
            jobs,
            cfg: &self.train_cfg,
            params: &self.params,
            down: &self.down,
            num_items: self.num_items,
            comm: &self.cfg.comm,
            with_bias: self.cfg.model.item_bias,
        };
        let slots = &mut self.slots[..range.len()];
        for (slot, job) in slots.iter_mut().zip(&jobs[range.clone()]) {
            if job.dropped {
                slot.outcome = Outcome::Dropped;
            }
        }
        let mut hosts: [&mut dyn ClientHost<K>; 3] =
            [&mut self.boards, &mut self.ranks, &mut self.devices];
        for host in hosts.iter_mut().rev() {
            host.complete(&input, range.start, slots, faults);
        }
    }

    /// Collect: what the server receives, through the tamper hook (hostile devices, faulty
    /// links) when one is installed.
    fn collect(&mut self, round: u32, jobs: &[ClientJob], range: Range<usize>) {
        let Some(tamper) = self.tamper.as_deref() else {
            return;
        };
        for (slot, job) in self.slots.iter_mut().zip(&jobs[range]) {
            if matches!(slot.outcome, Outcome::Sent { .. }) {
                tamper(round, job.user, &mut slot.bytes);
            }
        }
    }

    /// Validate: decodes every upload of the window this process handles and checks it
    /// ([`crate::server::validate`]), in parallel (a pure function of each upload's bytes and
    /// its client's data, so another rank may do it for its own clients).
    pub(crate) fn validate(&mut self, round: u32, jobs: &[ClientJob], range: Range<usize>) {
        let (train, rel, n) = (&self.part.train, &self.cfg.reliability, self.num_items);
        let with_bias = self.cfg.model.item_bias;
        let (attack, seed, params) = (&self.cfg.attack, self.cfg.run.seed, &self.params);
        let shape = (n, K, with_bias);
        let slots = &mut self.slots[..range.len()];
        let local = &self.local[range.clone()];
        self.devices.pool.install(|| {
            slots
                .par_iter_mut()
                .zip(jobs[range].par_iter())
                .zip(local.par_iter())
                .filter(|(_, local)| **local)
                .for_each(|((slot, job), _)| {
                    let Outcome::Sent { wire_client } = slot.outcome else {
                        return;
                    };
                    let len = train.client(job.index).len();
                    slot.reject = match slot.receive::<K>(round, job.user, wire_client, with_bias) {
                        Ok(()) => {
                            slot.malicious = attack.is_malicious(seed, job.user);
                            if slot.malicious {
                                // The attack bench: the update of a malicious client (virtual
                                // or board) is rewritten, then validated like any other.
                                let u = crate::attack::Poisoned {
                                    items: &mut slot.items,
                                    rows: &mut slot.rows,
                                    biases: &mut slot.biases,
                                };
                                crate::attack::poison(attack, params, shape, u);
                                slot.header.rows = slot.items.len() as u32;
                            }
                            slot.validate(len, n, &job.cfg, rel, K)
                        }
                        Err(e) => Some((Reject::Malformed, format!("{e:#}"))),
                    };
                    slot.norm = comm::l2_norm(&slot.rows, &slot.biases);
                });
        });
    }

    /// Select, in sample order, the first `clients_per_round` valid reports (counting those
    /// of earlier windows); count the rest. Returns which of the window's slots to fold.
    fn select(
        &mut self,
        round: u32,
        jobs: &[ClientJob],
        range: Range<usize>,
        s: &mut Selection,
    ) -> Result<Vec<bool>> {
        let wanted = self.cfg.run.clients_per_round;
        let mut take = vec![false; range.len()];
        for (i, (slot, job)) in self.slots.iter_mut().zip(&jobs[range]).enumerate() {
            match std::mem::take(&mut slot.outcome) {
                Outcome::Sent { .. } => {}
                Outcome::Dropped => {
                    s.faults.dropped += 1;
                    continue;
                }
                Outcome::LinkFailed => {
                    s.faults.link_failed.push(job.user);
                    continue;
                }
                Outcome::NoBatch => {
                    s.skipped += 1;
                    continue;
                }
                Outcome::Failed(e) => {
                    return Err(e.context(format!("round {round}, user {}", job.user)));
                }
                Outcome::NotRun => bail!("internal: round {round}, user {} was not run", job.user),
            }
            s.bytes_up += slot.up_bytes();
            s.payload_up += slot.up_bytes() - slot.framing_up;
            s.bytes_down += slot.down.total;
            s.payload_down += slot.down.payload();
            s.per_client.push(ClientTraffic {
                bytes_down: slot.down.total,
                bytes_up: slot.up_bytes(),
                rows: slot.row_count(),
                padded_overflow: slot.padded_overflow,
                norm: slot.norm,
            });
            let client = self.part.train.client(job.index);
            s.examples +=
                u64::from(slot.header.metrics.count) + recon_examples(&self.train_cfg, &client);
            if let Some((why, msg)) = &slot.reject {
                s.faults.reject(*why);
                tracing::warn!(
                    round,
                    user = job.user,
                    reason = why.name(),
                    "update rejected: {msg}"
                );
                continue;
            }
            if s.accepted == wanted {
                s.faults.surplus += 1;
                continue;
            }
            s.accepted += 1;
            s.attackers += u32::from(slot.malicious);
            take[i] = true;
        }
        Ok(take)
    }

    /// Fold: hands the window's selected updates, in sample order, to the round's
    /// aggregation strategy.
    fn fold(&mut self, round: u32, take: &[bool], len: usize) -> Result<()> {
        let updates: Vec<_> = self.slots[..len]
            .iter()
            .zip(take)
            .filter(|&(_, &t)| t)
            .map(|(slot, _)| {
                let rows = ClientRows {
                    weight: slot.header.weight,
                    items: &slot.items,
                    rows: &slot.rows,
                    biases: &slot.biases,
                };
                (rows, slot.header.metrics)
            })
            .collect();
        if updates.is_empty() {
            return Ok(());
        }
        let mut strategy =
            strategy::for_round(&mut self.agg, self.dp.as_mut(), self.robust.as_mut())?;
        self.devices
            .pool
            .install(|| strategy.fold(&updates))
            .with_context(|| format!("round {round}: aggregating updates"))
    }

    /// Finish the aggregate (or skip the round whole when too few valid reports arrived: the
    /// folded rows are discarded, the reports' metrics kept) and apply it with the server
    /// optimizer. Returns whether it was applied and, for DP runs, the privacy spent.
    fn finish_and_apply(
        &mut self,
        round: u32,
        s: &mut Selection,
        sampled: usize,
    ) -> Result<(bool, Option<PrivacySpent>)> {
        let t_aggregate = Instant::now();
        let min = self.cfg.reliability.min_clients;
        let mut strategy: Box<dyn Strategy + '_> =
            strategy::for_round(&mut self.agg, self.dp.as_mut(), self.robust.as_mut())?;
        let mut privacy = None;
        let applied = if s.accepted < min {
            strategy.discard();
            let why = format!(
                "{} of {sampled} sampled clients sent a valid update, fewer than \
                 reliability.min_clients = {min}",
                s.accepted
            );
            tracing::warn!(round, "round skipped: {why}");
            s.faults.skipped = true;
            s.faults.reason = Some(why);
            false
        } else {
            let (aggregated, spent) = strategy.finish(round, &mut self.mean)?;
            drop(strategy);
            privacy = spent;
            s.aggregate_seconds += t_aggregate.elapsed().as_secs_f64();
            let t_step = Instant::now();
            if aggregated {
                self.apply(round);
                s.step_seconds = t_step.elapsed().as_secs_f64();
            } else {
                tracing::warn!(
                    round,
                    "aggregate is not finite or has no weight; server update skipped"
                );
            }
            aggregated
        };
        let faults = &mut s.faults;
        let rel = &self.cfg.reliability;
        if rel.dropout > 0.0
            || rel.over_select > 0.0
            || faults.skipped
            || !faults.rejected.is_empty()
            || faults.link_errors > 0
            || !faults.auth_refused.is_empty()
        {
            faults.aggregated = Some(if faults.skipped { 0 } else { s.accepted as u32 });
        }
        Ok((applied, privacy))
    }

    /// Apply: the server optimizer steps with the round's mean delta at the scheduled rate, then
    /// `run.item_l2` decays the item rows.
    fn apply(&mut self, round: u32) {
        let r = &self.cfg.run;
        let decay = r.server_lr_decay.factor(round, r.rounds, r.server_lr_final);
        let lr = self.cfg.server.lr() * decay;
        self.opt.set_lr(lr);
        self.opt.step(&mut self.params, &self.mean);
        if r.item_l2 > 0.0 {
            // Decoupled weight decay on the item rows (not the biases after them).
            let keep = 1.0 - lr * r.item_l2;
            for p in &mut self.params[..self.num_items * K] {
                *p *= keep;
            }
        }
    }
}
