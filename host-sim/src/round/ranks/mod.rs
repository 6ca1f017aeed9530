//! The other ranks of a cluster ([`crate::cluster`]) as a host of rank 0's round, and a
//! rank's side of it. Rank 0 shares out the clients no board took, round-robin, sends each
//! rank its jobs and the model, and takes the ranks' uploads window by window into the
//! clients' slots; from there the server's phases run as in one process. A rank rebuilds the
//! round's jobs from the seed (the same sample and configuration as rank 0's), trains its
//! jobs on its own boards and devices, and reports each window's uploads in sample order.

mod wire;

use std::ops::Range;

use anyhow::{Context, Result, anyhow, bail, ensure};

use self::wire::{ClientReport, Command, Decoded, EvalReply, Ran, WindowReport};
use super::clients::{ClientHost, Outcome, RoundInput, Slot};
use super::evaluate::UserEval;
use super::{SimScalar, Simulation, Split};
use crate::cluster::{self, Link, Traffic, rank_of, recv_msg, send_msg};
use crate::comm::LinkBytes;
use crate::comm::transport::{self, UpdateHeader};
use crate::round::faults::RoundFaults;
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
        let mine = free.iter_mut().enumerate().filter(|(_, f)| **f);
        for (f, (i, free)) in mine.enumerate() {
            let r = rank_of(f, size);
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
                Command::Train {
                    round,
                    window,
                    assigned,
                    decode,
                } => {
                    cluster::receive_model(&**link, &mut self.params)?;
                    cluster::injected_fault(link.rank(), round)?;
                    self.round = round.saturating_sub(1);
                    let window = (window as usize).max(1);
                    self.run_share(round, &assigned, window, decode, |w| {
                        send_msg(&**link, 0, &w)
                    })?;
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
    /// downlinks counted and their uploads decoded and validated here.
    fn run_share(
        &mut self,
        round: u32,
        assigned: &[u32],
        window: usize,
        decode: bool,
        mut report: impl FnMut(WindowReport) -> Result<()>,
    ) -> Result<()> {
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
                let decoded = (decode && matches!(ran, Ran::Sent { .. })).then(|| Decoded {
                    weight: slot.header.weight,
                    metrics: slot.header.metrics,
                    rows_in_header: slot.header.rows,
                    items: std::mem::take(&mut slot.items),
                    rows: std::mem::take(&mut slot.rows),
                    biases: std::mem::take(&mut slot.biases),
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
            report(w)?;
        }
        ensure!(
            next.next().is_none(),
            "round {round}: the assigned jobs are not in sample order"
        );
        Ok(())
    }

    /// Rank 0's evaluation of `users` of `split`, shared out round-robin over the ranks and
    /// put back in user order.
    pub(crate) fn evaluate_across(
        &mut self,
        link: &Link,
        set: &crate::data::partition::ClientSet,
        users: &[usize],
        split: Split,
    ) -> Result<Vec<Option<UserEval>>> {
        let size = link.size();
        let share = |r: usize| -> Vec<usize> {
            users
                .iter()
                .enumerate()
                .filter(|&(p, _)| rank_of(p, size) == r)
                .map(|(_, &u)| u)
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
                parts[rank_of(p, size)]
                    .next()
                    .expect("each rank's share has its users")
            })
            .collect())
    }
}
