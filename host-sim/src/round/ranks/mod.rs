//! The other ranks of a cluster ([`crate::cluster`]) as a host of rank 0's round, and a
//! rank's side of it. Rank 0 gives each client no board took to the rank that holds its
//! user's ratings ([`cluster::owner`]; the other ranks load only their own users), sends each
//! rank its jobs and the model, and takes the ranks' uploads window by window into the
//! clients' slots; from there the server's phases run as in one process. A rank rebuilds the
//! round's jobs from the seed (the same sample and configuration as rank 0's), trains its
//! jobs on its own boards and devices, and reports each window's uploads in sample order.

mod wire;

use std::ops::Range;

use anyhow::{Context, Result, anyhow, bail, ensure};

use self::wire::{ClientReport, Command, Decoded, EvalReply, Piece, Ran, WindowReport};
use super::clients::{ClientHost, Outcome, RoundInput, Slot};
use super::evaluate::UserEval;
use super::{SimScalar, Simulation, Split};
use crate::cluster::{self, Link, Traffic, owner, recv_msg, send_msg};
use crate::comm::LinkBytes;
use crate::comm::transport::{self, UpdateHeader};
use crate::round::faults::RoundFaults;
use crate::server::{Aggregator, ClientRows};
use fedrecon_core::wire::Framing;

/// Rank 0's view of the other ranks (empty in a one-process run).
#[derive(Default)]
pub(crate) struct RankHost {
    link: Option<Link>,
    /// Jobs per window of the current round (rank 0's window, told to every rank).
    pub(crate) window: usize,
    /// The ranks count their clients' downlinks and decode and validate their uploads
    /// (rank 0 then only selects and folds); else they send the upload bytes.
    pub(crate) decode_remotely: bool,
    /// The fold is sharded by item rows over the ranks ([`Simulation::fold_sharded`]); else
    /// rank 0 folds every update.
    pub(crate) shard: bool,
    /// The rank running each job of the round (0: not another rank's).
    owner: Vec<u32>,
    /// A rank failed this round: every later client of another rank fails with this.
    failed: Option<String>,
}

impl RankHost {
    /// Ranks in the job (1 without a cluster).
    pub(crate) fn size(&self) -> usize {
        self.link.as_ref().map_or(1, |l| l.size())
    }

    /// The transport's figures so far (zero without a cluster).
    pub(crate) fn traffic(&self) -> Traffic {
        self.link.as_ref().map(|l| l.traffic()).unwrap_or_default()
    }

    /// Whether another rank counts and decodes job `i` of the round.
    pub(crate) fn decodes(&self, i: usize) -> bool {
        self.decode_remotely && self.owner.get(i).is_some_and(|&o| o != 0)
    }

    /// The transport, in a cluster.
    pub(crate) fn link(&self) -> Option<Link> {
        self.link.clone()
    }

    /// The other ranks, when there are any.
    fn others(&self) -> Option<&Link> {
        self.link.as_ref().filter(|l| l.size() > 1)
    }

    /// Tells every other rank the run is over (once).
    fn stop(&mut self) {
        if let Some(link) = self.link.take() {
            for r in 1..link.size() {
                // A rank that already ended needs no telling.
                let _ = send_msg(&*link, r, &Command::Stop);
            }
        }
    }

    /// Fails every client of rank `r` (all other ranks when `None`) in the window.
    fn fail(&self, r: Option<usize>, base: usize, slots: &mut [Slot], why: &str) {
        for (i, slot) in slots.iter_mut().enumerate() {
            let o = self.owner[base + i] as usize;
            if o != 0 && r.is_none_or(|r| r == o) {
                slot.outcome = Outcome::Failed(anyhow!("{why}"));
            }
        }
    }
}

impl Drop for RankHost {
    fn drop(&mut self) {
        self.stop();
    }
}

impl<const K: usize> ClientHost<K> for RankHost {
    fn claim(&mut self, input: &RoundInput<'_>, free: &mut [bool]) {
        self.owner.clear();
        self.owner.resize(free.len(), 0);
        self.failed = None;
        let Some(link) = self.others().cloned() else {
            return;
        };
        let size = link.size();
        let mut assigned = vec![Vec::new(); size];
        for (i, free) in free.iter_mut().enumerate().filter(|(_, f)| **f) {
            let r = owner(input.jobs[i].user, size);
            if r != 0 {
                *free = false;
                self.owner[i] = r as u32;
                assigned[r].push(i as u32);
            }
        }
        let sent = (1..size)
            .try_for_each(|r| {
                let cmd = Command::Train {
                    round: input.round,
                    window: self.window as u32,
                    assigned: std::mem::take(&mut assigned[r]),
                    decode: self.decode_remotely,
                    shard: self.shard,
                };
                send_msg(&*link, r, &cmd)
            })
            .and_then(|()| cluster::broadcast_model(&*link, input.params));
        if let Err(e) = sent {
            self.failed = Some(format!("{e:#}"));
        }
    }

    fn complete(
        &mut self,
        _: &RoundInput<'_>,
        base: usize,
        slots: &mut [Slot],
        faults: &mut RoundFaults,
    ) {
        let Some(link) = self.others().cloned() else {
            return;
        };
        if let Some(why) = self.failed.clone() {
            self.fail(None, base, slots, &why);
            return;
        }
        let range = base..base + slots.len();
        for r in 1..link.size() {
            let received = recv_msg::<WindowReport>(&*link, r)
                .and_then(|w| self.take_window(r, &range, w, slots, faults));
            if let Err(e) = received {
                let why = format!("rank {r}: {e:#}");
                self.fail(Some(r), base, slots, &why);
                self.failed = Some(why);
                // The other ranks' reports of this window are still read, so a failure of
                // one rank reports that rank.
            }
        }
    }
}

impl RankHost {
    /// Puts rank `r`'s report of the window into the slots of its clients.
    fn take_window(
        &self,
        r: usize,
        range: &Range<usize>,
        w: WindowReport,
        slots: &mut [Slot],
        faults: &mut RoundFaults,
    ) -> Result<()> {
        faults.link_faults += w.link_faults;
        faults.link_errors += w.link_errors;
        faults.link_retries += w.link_retries;
        let expected = range
            .clone()
            .filter(|&i| self.owner[i] as usize == r)
            .count();
        ensure!(
            w.clients.len() == expected,
            "reported {} clients of the window, it runs {expected}",
            w.clients.len()
        );
        for c in w.clients {
            let i = c.job as usize;
            ensure!(
                range.contains(&i) && self.owner[i] as usize == r,
                "reported job {i}, which is not one of its jobs in this window"
            );
            let slot = &mut slots[i - range.start];
            slot.outcome = match c.ran {
                Ran::Sent { wire_client } => Outcome::Sent { wire_client },
                Ran::NoBatch => Outcome::NoBatch,
                Ran::LinkFailed => Outcome::LinkFailed,
                Ran::Failed(e) => Outcome::Failed(anyhow!("rank {r}: {e}")),
                Ran::NotRun => Outcome::NotRun,
            };
            slot.padded_overflow = c.padded_overflow;
            slot.bytes = c.bytes;
            slot.framing = if c.serial {
                Framing::Stream
            } else {
                transport::VIRTUAL_LINK
            };
            let sent = matches!(slot.outcome, Outcome::Sent { .. });
            match c.decoded {
                Some(d) if sent && self.decode_remotely => {
                    slot.header = UpdateHeader {
                        weight: d.weight,
                        metrics: d.metrics,
                        rows: d.rows_in_header,
                        payload: d.up_len - d.framing_up,
                    };
                    slot.items = d.items;
                    slot.rows = d.rows;
                    slot.biases = d.biases;
                    slot.rows_elsewhere = self.shard.then_some(d.row_count);
                    slot.malicious = d.malicious;
                    slot.reject = d.reject;
                    slot.down = LinkBytes {
                        total: d.bytes_down,
                        framing: d.framing_down,
                    };
                    slot.up_len = Some(d.up_len);
                    slot.framing_up = d.framing_up;
                    slot.norm = d.norm;
                }
                None if !(sent && self.decode_remotely) => {}
                _ => bail!("job {i}: the upload is not in the form asked for"),
            }
        }
        Ok(())
    }
}

impl<S: SimScalar, const K: usize> Simulation<'_, S, K> {
    /// Makes this simulation rank 0 of a cluster: rounds and evaluations share their clients
    /// out to the other ranks, which run [`Self::serve`]. The result is bit-identical to a
    /// one-process run.
    pub fn join(&mut self, link: Link) -> Result<()> {
        ensure!(
            link.rank() == 0,
            "internal: rank {} cannot lead the rounds",
            link.rank()
        );
        self.ranks.stop();
        // The other ranks hold only their own users' ratings: the training mean comes from here.
        let global_mean = super::mean_rating(&self.part.train).to_bits();
        for r in 1..link.size() {
            send_msg(&*link, r, &Command::Setup { global_mean })?;
        }
        self.ranks.link = Some(link);
        Ok(())
    }

    /// Ends the cluster: the other ranks' [`Self::serve`] returns (also when this simulation
    /// is dropped).
    pub fn leave(&mut self) {
        self.ranks.stop();
    }

    /// Bytes this rank has sent and received through the cluster so far.
    pub fn cluster_traffic(&self) -> Traffic {
        self.ranks.traffic()
    }

    /// Runs rank 0's orders on this rank (not 0) until it says stop: trains the jobs of each
    /// round it is given and evaluates the users it is given.
    pub fn serve(&mut self, link: &Link) -> Result<()> {
        ensure!(link.rank() != 0, "internal: rank 0 serves no one");
        loop {
            match recv_msg::<Command>(&**link, 0)? {
                Command::Stop => return Ok(()),
                Command::Setup { global_mean } => {
                    let mean = f32::from_bits(global_mean);
                    self.train_cfg = super::round_config(&self.cfg, false, mean, self.catalogue)?;
                    self.eval_cfg = super::round_config(&self.cfg, true, mean, self.catalogue)?;
                }
                Command::Train {
                    round,
                    window,
                    assigned,
                    decode,
                    shard,
                } => {
                    cluster::receive_model(&**link, &mut self.params)?;
                    cluster::injected_fault(link.rank(), round)?;
                    self.round = round.saturating_sub(1);
                    let window = (window as usize).max(1);
                    let shard = shard && decode;
                    self.run_share(link, round, &assigned, window, decode, shard)?;
                }
                Command::Evaluate { round, test, users } => {
                    cluster::receive_model(&**link, &mut self.params)?;
                    self.round = round;
                    let split = if test { Split::Test } else { Split::Val };
                    let users: Vec<usize> = users.into_iter().map(|u| u as usize).collect();
                    let reply = match self.evaluate_share(split, &users) {
                        Ok(done) => EvalReply::Done(done),
                        Err(e) => EvalReply::Failed(format!("{e:#}")),
                    };
                    send_msg(&**link, 0, &reply)?;
                }
            }
        }
    }

    /// A rank's part of round `round`: the `assigned` jobs, run by this rank's boards and
    /// devices, reported window by window (every window, possibly empty); with `decode`, their
    /// downlinks counted and their uploads decoded and validated here; with `shard`, this
    /// rank's shard of the round's sums folded here and sent to rank 0 at the end.
    fn run_share(
        &mut self,
        link: &Link,
        round: u32,
        assigned: &[u32],
        window: usize,
        decode: bool,
        shard: bool,
    ) -> Result<()> {
        self.agg.reset();
        let sample = self.sample(round);
        let jobs = self.configure(round, &sample);
        self.prepare_downlink(round)?;
        let mut free = vec![false; jobs.len()];
        for &a in assigned {
            let f = free
                .get_mut(a as usize)
                .with_context(|| format!("round {round}: job {a} is outside the sample"))?;
            *f = true;
        }
        self.claim_free(round, &jobs, free);
        self.slots
            .resize_with(window.min(jobs.len()), Slot::default);
        let mut next = assigned.iter().peekable();
        for base in (0..jobs.len()).step_by(window) {
            let range = base..(base + window).min(jobs.len());
            if decode {
                self.count_downlink(round, &jobs, range.clone())?;
            } else {
                self.slots[..range.len()].iter_mut().for_each(Slot::reset);
            }
            let mut faults = RoundFaults::default();
            self.run_clients(round, &jobs, range.clone(), &mut faults);
            if decode {
                self.validate(round, &jobs, range.clone());
            }
            let mut w = WindowReport {
                link_faults: faults.link_faults,
                link_errors: faults.link_errors,
                link_retries: faults.link_retries,
                ..WindowReport::default()
            };
            while let Some(&&a) = next.peek().filter(|&&&a| range.contains(&(a as usize))) {
                next.next();
                let slot = &mut self.slots[a as usize - base];
                let ran = match std::mem::take(&mut slot.outcome) {
                    Outcome::Sent { wire_client } => Ran::Sent { wire_client },
                    Outcome::NoBatch => Ran::NoBatch,
                    Outcome::LinkFailed => Ran::LinkFailed,
                    Outcome::Failed(e) => Ran::Failed(format!("{e:#}")),
                    Outcome::NotRun | Outcome::Dropped => Ran::NotRun,
                };
                // In a sharded fold the rows stay here until rank 0 has selected.
                fn keep<T>(shard: bool, v: &mut Vec<T>) -> Vec<T> {
                    if shard { Vec::new() } else { std::mem::take(v) }
                }
                let decoded = (decode && matches!(ran, Ran::Sent { .. })).then(|| Decoded {
                    weight: slot.header.weight,
                    row_count: slot.items.len() as u32,
                    malicious: slot.malicious,
                    metrics: slot.header.metrics,
                    rows_in_header: slot.header.rows,
                    items: keep(shard, &mut slot.items),
                    rows: keep(shard, &mut slot.rows),
                    biases: keep(shard, &mut slot.biases),
                    reject: slot.reject.take(),
                    bytes_down: slot.down.total,
                    framing_down: slot.down.framing,
                    up_len: slot.bytes.len() as u64,
                    framing_up: slot.framing_up,
                    norm: slot.norm,
                });
                let bytes = if decode {
                    Vec::new()
                } else {
                    std::mem::take(&mut slot.bytes)
                };
                w.clients.push(ClientReport {
                    job: a,
                    ran,
                    padded_overflow: slot.padded_overflow,
                    bytes,
                    serial: slot.framing == Framing::Stream,
                    decoded,
                });
            }
            let mine: Vec<u32> = w.clients.iter().map(|c| c.job).collect();
            send_msg(&**link, 0, &w)?;
            if shard {
                self.fold_window_share(link, &range, &mine)?;
            }
        }
        ensure!(
            next.next().is_none(),
            "round {round}: the assigned jobs are not in sample order"
        );
        if shard {
            link.send(0, &self.agg.shard_bytes(link.rank(), link.size()))
                .context("sending this rank's shard of the sums")?;
        }
        Ok(())
    }

    /// A rank's side of one window of a sharded fold: which of its jobs `mine` rank 0 took,
    /// then the exchange of their rows and this rank's shard summed.
    fn fold_window_share(&mut self, link: &Link, range: &Range<usize>, mine: &[u32]) -> Result<()> {
        let mut take = Vec::new();
        link.broadcast(&mut take)
            .context("receiving the window's selection from rank 0")?;
        ensure!(
            take.len() == range.len(),
            "rank 0 selected over {} clients, the window has {}",
            take.len(),
            range.len()
        );
        let taken: Vec<(u32, &Slot)> = mine
            .iter()
            .filter(|&&j| take[j as usize - range.start] != 0)
            .map(|&j| (j, &self.slots[j as usize - range.start]))
            .collect();
        let agg = &mut self.agg;
        self.devices
            .pool
            .install(|| exchange_and_fold::<K>(link, agg, &taken))
    }

    /// Rank 0's fold of one window of a sharded fold (`take`: the window's selected clients):
    /// tells the ranks which it took, records every taken client's weight and metrics in
    /// sample order, and sums its own shard of the rows while every rank sums its own.
    pub(crate) fn fold_sharded(&mut self, base: usize, take: &[bool]) -> Result<()> {
        let link = self
            .ranks
            .link()
            .context("internal: a sharded fold without ranks")?;
        let mut bits: Vec<u8> = take.iter().map(|&t| u8::from(t)).collect();
        link.broadcast(&mut bits)
            .context("broadcasting the window's selection")?;
        for (slot, _) in self.slots.iter().zip(take).filter(|&(_, &t)| t) {
            self.agg
                .add_client(slot.header.weight, &slot.header.metrics);
        }
        let ranks = &self.ranks;
        let taken: Vec<(u32, &Slot)> = take
            .iter()
            .enumerate()
            .filter(|&(i, &t)| t && !ranks.decodes(base + i))
            .map(|(i, _)| ((base + i) as u32, &self.slots[i]))
            .collect();
        let agg = &mut self.agg;
        self.devices
            .pool
            .install(|| exchange_and_fold::<K>(&link, agg, &taken))
    }

    /// Rank 0, at the end of a sharded fold: every other rank's shard of the sums into the
    /// aggregate, which then holds what one process would have summed.
    pub(crate) fn gather_shards(&mut self) -> Result<()> {
        let link = self
            .ranks
            .link()
            .context("internal: a sharded fold without ranks")?;
        for r in 1..link.size() {
            let bytes = link
                .recv(r)
                .with_context(|| format!("rank {r}: its shard"))?;
            self.agg
                .set_shard(r, link.size(), &bytes)
                .with_context(|| format!("rank {r}: its shard"))?;
        }
        Ok(())
    }

    /// Rank 0's evaluation of `users` of `split`, each on the rank that holds its ratings, put
    /// back in user order.
    pub(crate) fn evaluate_across(
        &mut self,
        link: &Link,
        set: &crate::data::partition::ClientSet,
        users: &[usize],
        split: Split,
    ) -> Result<Vec<Option<UserEval>>> {
        let size = link.size();
        let rank_of = |p: usize| owner(set.users()[users[p]], size);
        let share = |r: usize| -> Vec<usize> {
            (0..users.len())
                .filter(|&p| rank_of(p) == r)
                .map(|p| users[p])
                .collect()
        };
        for r in 1..size {
            let cmd = Command::Evaluate {
                round: self.round,
                test: split == Split::Test,
                users: share(r).into_iter().map(|u| u as u32).collect(),
            };
            send_msg(&**link, r, &cmd)?;
        }
        cluster::broadcast_model(&**link, &self.params)?;
        let mut parts = vec![self.evaluate_set(set, &share(0), split)?.into_iter()];
        for r in 1..size {
            match recv_msg::<EvalReply>(&**link, r)? {
                EvalReply::Done(v) => {
                    ensure!(
                        v.len() == share(r).len(),
                        "rank {r} evaluated {} users, it was given {}",
                        v.len(),
                        share(r).len()
                    );
                    parts.push(v.into_iter());
                }
                EvalReply::Failed(e) => bail!("rank {r}: {e}"),
            }
        }
        Ok((0..users.len())
            .map(|p| {
                parts[rank_of(p)]
                    .next()
                    .expect("each rank's share has its users")
            })
            .collect())
    }
}

/// The rank that sums item `item`'s row in a sharded fold: strided, not contiguous ranges,
/// because dense ids follow first appearance, so the popular items crowd the low ids.
pub(crate) fn shard_of(item: u32, size: usize) -> usize {
    item as usize % size
}

/// One window of a sharded fold on any rank: the `taken` clients' rows this rank holds go to
/// their shards' owners (all to all), and this rank sums the rows of its own shard over every
/// rank's taken clients in sample order: each row's sum is the one-process sum, bit for bit.
fn exchange_and_fold<const K: usize>(
    link: &Link,
    agg: &mut Aggregator,
    taken: &[(u32, &Slot)],
) -> Result<()> {
    let (me, size) = (link.rank(), link.size());
    let mut out: Vec<Vec<Piece>> = (0..size).map(|_| Vec::new()).collect();
    let mut piece: Vec<Option<Piece>> = (0..size).map(|_| None).collect();
    for &(job, slot) in taken {
        let weight = slot.header.weight;
        if weight == 0 {
            continue;
        }
        for (r, &item) in slot.items.iter().enumerate() {
            let p = piece[shard_of(item, size)].get_or_insert_with(|| Piece {
                job,
                weight,
                items: Vec::new(),
                rows: Vec::new(),
                biases: Vec::new(),
            });
            p.items.push(item);
            p.rows.extend_from_slice(&slot.rows[r * K..(r + 1) * K]);
            if let Some(&b) = slot.biases.get(r) {
                p.biases.push(b);
            }
        }
        for (pieces, p) in out.iter_mut().zip(&mut piece) {
            pieces.extend(p.take());
        }
    }
    let mut pieces = std::mem::take(&mut out[me]);
    let bytes = out
        .iter()
        .map(postcard::to_allocvec)
        .collect::<Result<Vec<_>, _>>()
        .context("encoding update rows")?;
    let got = link.exchange(bytes).context("exchanging update rows")?;
    for (r, b) in got.iter().enumerate().filter(|&(r, _)| r != me) {
        let p: Vec<Piece> = postcard::from_bytes(b)
            .with_context(|| format!("rank {r} sent malformed update rows"))?;
        pieces.extend(p);
    }
    // A client sends a shard one piece at most, so the job alone orders them.
    pieces.sort_unstable_by_key(|p| p.job);
    let rows: Vec<ClientRows<'_>> = pieces
        .iter()
        .map(|p| ClientRows {
            weight: p.weight,
            items: &p.items,
            rows: &p.rows,
            biases: &p.biases,
        })
        .collect();
    agg.add_rows_scaled(&rows, |_| 1.0)
}
