//! One training round as its phases: sample → configure → run clients → collect → validate →
//! select → aggregate → apply ([`Simulation::train_round`] calls them in that order).

use std::time::Instant;

use anyhow::{Context, Result, bail};
use rayon::prelude::*;

use super::clients::{ClientHost, ClientJob, Outcome, RoundInput, Slot};
use super::{RoundStats, SimScalar, Simulation, client_round_config, recon_examples};
use crate::attack::RoundSecurity;
use crate::comm::{self, ClientTraffic, DownlinkRound, TrafficStats};
use crate::round::faults::RoundFaults;
use crate::seeds::{Purpose, sample_without_replacement, seed_for};
use crate::server::ClientRows;
use crate::server::privacy::PrivacySpent;
use crate::server::validate::Reject;

/// The reports a round aggregates and what it records about the others.
struct Selection {
    /// Per slot: aggregated.
    take: Vec<bool>,
    accepted: usize,
    faults: RoundFaults,
    traffic: TrafficStats,
    bytes_up: u64,
    bytes_down: u64,
    /// Clients that had no batch.
    skipped: u32,
    /// Rating-steps of the reporting clients.
    examples: u64,
    /// Seconds of the aggregation and of the server step (for `fedrecon bench`).
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
        self.send_downlink(round, &jobs)?;
        let mut faults = RoundFaults::default();
        self.run_clients(round, &jobs, &mut faults);
        self.collect(round, &jobs);
        self.validate(round, &jobs);
        let device_seconds = t0.elapsed().as_secs_f64();
        let mut chosen = self.select(round, &jobs, faults)?;
        let (applied, privacy, security) =
            self.aggregate_and_apply(round, &mut chosen, sample.len())?;
        self.round = round;
        let m = self.agg.metrics();
        Ok(RoundStats {
            round,
            loss: f64::from(m.loss_sum) / f64::from(m.count.max(1)),
            rating_accuracy: f64::from(m.correct) / f64::from(m.count.max(1)),
            seconds: t0.elapsed().as_secs_f64(),
            bytes_down: chosen.bytes_down,
            bytes_up: chosen.bytes_up,
            clients: sample.len() as u32,
            skipped: chosen.skipped,
            applied,
            faults: chosen.faults,
            traffic: chosen.traffic,
            privacy,
            security,
            examples: chosen.examples,
            device_seconds,
            server_seconds: t0.elapsed().as_secs_f64() - device_seconds,
            aggregate_seconds: chosen.aggregate_seconds,
            step_seconds: chosen.step_seconds,
        })
    }

    /// Sample: the round's seeded draw of training clients (over-selected when configured).
    fn sample(&self, round: u32) -> Vec<usize> {
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
    fn configure(&mut self, round: u32, sample: &[usize]) -> Vec<ClientJob> {
        let seed = self.cfg.run.seed;
        self.slots.resize_with(sample.len(), Slot::default);
        self.slots.iter_mut().for_each(Slot::reset);
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

    /// Configure, continued: encodes the round's downlink once and counts what each
    /// participating client downloads, whichever host runs it.
    fn send_downlink(&mut self, round: u32, jobs: &[ClientJob]) -> Result<()> {
        let (comm_cfg, params, n) = (&self.cfg.comm, &self.params, self.num_items);
        self.down = DownlinkRound::prepare::<K>(
            comm_cfg.downlink,
            round,
            params,
            n,
            self.cfg.model.item_bias,
            &mut self.down_buf,
        )?;
        let (down, train, cfg) = (&self.down, &self.part.train, &self.train_cfg);
        let counted: Vec<Result<()>> = self.devices.pool.install(|| {
            self.slots
                .par_iter_mut()
                .zip(jobs.par_iter())
                .filter(|(_, job)| !job.dropped)
                .map(|(slot, job)| {
                    comm::distinct_sorted(train.client(job.index).items, &mut slot.needed);
                    let start = comm::round_start(round, job.seed, cfg, n, comm_cfg.uplink);
                    slot.bytes_down = comm::client_downlink_bytes::<K>(
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

    /// Run clients: the boards claim the clients that fit them, the in-process devices take
    /// the rest; each client's upload lands in its slot.
    fn run_clients(&mut self, round: u32, jobs: &[ClientJob], faults: &mut RoundFaults) {
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
        let mut free: Vec<bool> = jobs.iter().map(|j| !j.dropped).collect();
        for (slot, job) in self.slots.iter_mut().zip(jobs) {
            if job.dropped {
                slot.outcome = Outcome::Dropped;
            }
        }
        let mut hosts: [&mut dyn ClientHost<K>; 2] = [&mut self.boards, &mut self.devices];
        for host in hosts.iter_mut() {
            host.claim(&input, &mut free);
        }
        for host in hosts.iter_mut().rev() {
            host.complete(&input, &mut self.slots, faults);
        }
    }

    /// Collect: what the server receives, through the tamper hook (hostile devices, faulty
    /// links) when one is installed.
    fn collect(&mut self, round: u32, jobs: &[ClientJob]) {
        let Some(tamper) = self.tamper.as_deref() else {
            return;
        };
        for (slot, job) in self.slots.iter_mut().zip(jobs) {
            if matches!(slot.outcome, Outcome::Sent { .. }) {
                tamper(round, job.user, &mut slot.bytes);
            }
        }
    }

    /// Validate: decodes every upload and checks it ([`crate::server::validate`]), in
    /// parallel (a pure function of each upload's bytes).
    fn validate(&mut self, round: u32, jobs: &[ClientJob]) {
        let (train, rel, n) = (&self.part.train, &self.cfg.reliability, self.num_items);
        let with_bias = self.cfg.model.item_bias;
        let (attack, seed, params) = (&self.cfg.attack, self.cfg.run.seed, &self.params);
        let shape = (n, K, with_bias);
        self.devices.pool.install(|| {
            self.slots
                .par_iter_mut()
                .zip(jobs.par_iter())
                .for_each(|(slot, job)| {
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
                });
        });
    }

    /// Select, in sample order, the first `clients_per_round` valid reports; count the rest.
    fn select(&mut self, round: u32, jobs: &[ClientJob], faults: RoundFaults) -> Result<Selection> {
        let wanted = self.cfg.run.clients_per_round;
        let mut s = Selection {
            take: vec![false; jobs.len()],
            accepted: 0,
            faults,
            traffic: TrafficStats::default(),
            bytes_up: 0,
            bytes_down: 0,
            skipped: 0,
            examples: 0,
            aggregate_seconds: 0.0,
            step_seconds: 0.0,
        };
        let mut per_client = Vec::with_capacity(jobs.len());
        for (i, (slot, job)) in self.slots.iter_mut().zip(jobs).enumerate() {
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
            s.bytes_up += slot.bytes.len() as u64;
            s.bytes_down += slot.bytes_down;
            per_client.push(ClientTraffic {
                bytes_down: slot.bytes_down,
                bytes_up: slot.bytes.len() as u64,
                rows: slot.items.len() as u32,
                padded_overflow: slot.padded_overflow,
                norm: comm::l2_norm(&slot.rows, &slot.biases),
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
            s.take[i] = true;
        }
        s.traffic = TrafficStats::from_clients(&per_client);
        Ok(s)
    }

    /// Aggregate the selected reports in sample order (or skip the round whole when too few
    /// arrived) and apply the mean with the server optimizer. Returns whether it was applied
    /// and, for DP runs, the privacy spent; with an attack or a robust rule (issue 19), what
    /// they did.
    fn aggregate_and_apply(
        &mut self,
        round: u32,
        chosen: &mut Selection,
        sampled: usize,
    ) -> Result<(bool, Option<PrivacySpent>, Option<RoundSecurity>)> {
        let t_aggregate = Instant::now();
        self.agg.reset();
        let updates: Vec<_> = self
            .slots
            .iter()
            .zip(&chosen.take)
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
        let mut security = (self.cfg.attack.kind != crate::attack::AttackKind::None
            || self.cfg.robust.is_active())
        .then(|| RoundSecurity {
            attackers: self
                .slots
                .iter()
                .zip(&chosen.take)
                .filter(|&(slot, &t)| t && slot.malicious)
                .count() as u32,
            ..Default::default()
        });
        let min = self.cfg.reliability.min_clients;
        let faults = &mut chosen.faults;
        let mut privacy = None;
        let applied = if chosen.accepted < min {
            // Never half-applied: the reports' metrics are kept, their rows are not.
            for (c, m) in &updates {
                self.agg.add_client(c.weight, m);
            }
            let why = format!(
                "{} of {sampled} sampled clients sent a valid update, fewer than \
                 reliability.min_clients = {min}",
                chosen.accepted
            );
            tracing::warn!(round, "round skipped: {why}");
            faults.skipped = true;
            faults.reason = Some(why);
            false
        } else {
            let robust = &self.cfg.robust;
            let aggregated = match self.dp.as_mut() {
                None if robust.is_active() => {
                    // A robust rule (issue 19) replaces the weighted mean; the aggregator
                    // still sums the clients' weights and metrics.
                    let rows: Vec<ClientRows<'_>> = updates.iter().map(|(c, _)| *c).collect();
                    let shape = crate::server::robust::Shape {
                        items: self.num_items,
                        k: K,
                        with_bias: self.cfg.model.item_bias,
                    };
                    let mean = &mut self.mean;
                    let (ok, stats) = self
                        .devices
                        .pool
                        .install(|| crate::server::robust::aggregate(robust, shape, &rows, mean))
                        .with_context(|| format!("round {round}: robust aggregation"))?;
                    for (c, m) in &updates {
                        self.agg.add_client(c.weight, m);
                    }
                    security.get_or_insert_default().defense = stats;
                    ok
                }
                None => {
                    let agg = &mut self.agg;
                    self.devices
                        .pool
                        .install(|| agg.add_clients(&updates))
                        .with_context(|| format!("round {round}: aggregating updates"))?;
                    self.agg.mean_delta(&mut self.mean)
                }
                Some(dp) => {
                    // Central DP: clipped, uniformly weighted, noised on the server (the
                    // aggregator only sums the metrics here).
                    for (u, m) in &updates {
                        dp.add_client(u.items, u.rows, u.biases)
                            .with_context(|| format!("round {round}: DP aggregation"))?;
                        self.agg.add_client(u.weight, m);
                    }
                    let (mean, spent) = dp.finish(round)?;
                    self.mean.copy_from_slice(&mean);
                    privacy = Some(spent);
                    self.mean.iter().all(|x| x.is_finite())
                }
            };
            chosen.aggregate_seconds = t_aggregate.elapsed().as_secs_f64();
            let t_step = Instant::now();
            if aggregated {
                self.apply(round);
                chosen.step_seconds = t_step.elapsed().as_secs_f64();
            } else {
                tracing::warn!(
                    round,
                    "aggregate is not finite or has no weight; server update skipped"
                );
            }
            aggregated
        };
        let rel = &self.cfg.reliability;
        if rel.dropout > 0.0
            || rel.over_select > 0.0
            || faults.skipped
            || !faults.rejected.is_empty()
            || faults.link_errors > 0
        {
            faults.aggregated = Some(if faults.skipped {
                0
            } else {
                chosen.accepted as u32
            });
        }
        Ok((applied, privacy, security))
    }

    /// Apply: the server optimizer steps with the round's mean delta at the scheduled rate.
    fn apply(&mut self, round: u32) {
        let r = &self.cfg.run;
        let decay = r.server_lr_decay.factor(round, r.rounds, r.server_lr_final);
        self.opt.set_lr(self.cfg.server.lr() * decay);
        self.opt.step(&mut self.params, &self.mean);
    }
}
