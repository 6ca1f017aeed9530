//! An experiment from configuration to outputs: partition, rounds with periodic validation,
//! the final test evaluation, and (with an output directory) metrics, plots, `items.npy`, the
//! model bundle `model.npz` and `config.toml`. The command line's `train` is this plus argument parsing.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, ensure};
use indicatif::{ProgressBar, ProgressStyle};

pub mod interrupt;

pub use interrupt::{Interrupted, Interrupts};

use crate::board::{BoardOptions, BoardStats, Boards};
use crate::config::Config;
use crate::data::movielens::Ratings;
use crate::data::partition::{Partition, partition};
use crate::dispatch;
use crate::output::checkpoint::{self, Checkpoint};
use crate::output::{self, MetricsLog, Record};
use crate::round::evaluate::EvalReport;
use crate::round::{SimScalar, Simulation, Split};

/// How to run an experiment besides its [`Config`].
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Output directory (claimed with [`output::RunDir`]); `None` writes nothing.
    pub out: Option<PathBuf>,
    /// Show a progress bar over rounds.
    pub progress: bool,
    /// Write `train.png` / `eval.png` into the output directory.
    pub plots: bool,
    /// SIGINT/SIGTERM, polled between rounds: the run writes a checkpoint (with an output
    /// directory) and fails with [`Interrupted`]; `None` leaves the
    /// signals' default action.
    pub interrupts: Option<Interrupts>,
    /// Rank 0's end of a cluster ([`crate::cluster`]): the other ranks run [`serve`] and
    /// train a share of every round's clients; the outputs are the same bits.
    pub cluster: Option<crate::cluster::Link>,
}

/// What an experiment produced.
#[derive(Clone, Debug)]
pub struct RunResult {
    /// Every metrics record, in order (the last one is the final test evaluation).
    pub records: Vec<Record>,
    /// The trained item matrix, row-major `items × k`.
    pub items: Vec<f32>,
    /// Embedding width.
    pub k: usize,
    /// The final test evaluation.
    pub test: EvalReport,
    /// Wall-clock seconds of the whole experiment (after data loading).
    pub seconds: f64,
    /// What each board did (name and totals); empty without boards.
    pub boards: Vec<(String, BoardStats)>,
}

/// An evaluation's record, carrying the privacy spent so far in DP runs.
fn eval_record(mut e: EvalReport, spent: Option<crate::server::privacy::PrivacySpent>) -> Record {
    if let Some(p) = spent {
        e.epsilon = Some(p.epsilon);
        e.delta = Some(p.delta);
    }
    Record::Eval(e)
}

/// Partitions `ratings` as `cfg` says and runs the experiment.
pub fn run(cfg: &Config, ratings: &Ratings, opts: &RunOptions) -> Result<RunResult> {
    run_with_boards(cfg, ratings, opts, &BoardOptions::default())
}

/// [`run`] with boards training some clients of each round (`--qemu-devices`, `--device`).
pub fn run_with_boards(
    cfg: &Config,
    ratings: &Ratings,
    opts: &RunOptions,
    boards: &BoardOptions,
) -> Result<RunResult> {
    let part = partition(ratings, &cfg.data);
    tracing::info!(
        train = part.train.len(),
        val = part.val.len(),
        test = part.test.len(),
        items = ratings.items(),
        "partitioned users"
    );
    let ids = ratings.item_raw_ids();
    let ck = Checkpointing::default();
    dispatch!(
        cfg.run.scalar,
        cfg.model.k,
        run_k(cfg, &part, ratings.items(), Some(ids), opts, &ck, boards)
    )
}

/// Runs the experiment on an existing partition with `num_items` items.
pub fn run_partition(
    cfg: &Config,
    part: &Partition,
    num_items: usize,
    opts: &RunOptions,
) -> Result<RunResult> {
    run_partition_with_boards(cfg, part, num_items, opts, &BoardOptions::default())
}

/// [`run_partition`] with boards. Without the data's movie ids no `model.npz` is written
/// (only `items.npy`).
pub fn run_partition_with_boards(
    cfg: &Config,
    part: &Partition,
    num_items: usize,
    opts: &RunOptions,
    boards: &BoardOptions,
) -> Result<RunResult> {
    let ck = Checkpointing::default();
    dispatch!(
        cfg.run.scalar,
        cfg.model.k,
        run_k(cfg, part, num_items, None, opts, &ck, boards)
    )
}

/// Checkpoint bookkeeping of a run ([`crate::output::checkpoint`]).
#[derive(Clone, Debug, Default)]
pub struct Checkpointing {
    /// The `--data` directory, recorded in checkpoints.
    pub data_dir: PathBuf,
    /// Continue from this checkpoint (already verified against `cfg`) instead of starting.
    pub resume: Option<Checkpoint>,
}

/// [`run`] with checkpoints: written every `reliability.checkpoint_every` rounds into
/// `opts.out`, and resumed from `ck.resume` when given; `boards` as in [`run_with_boards`].
pub fn run_checkpointed(
    cfg: &Config,
    ratings: &Ratings,
    opts: &RunOptions,
    ck: &Checkpointing,
    boards: &BoardOptions,
) -> Result<RunResult> {
    let part = partition(ratings, &cfg.data);
    let num_items = ratings.items();
    dispatch!(
        cfg.run.scalar,
        cfg.model.k,
        run_k(
            cfg,
            &part,
            num_items,
            Some(ratings.item_raw_ids()),
            opts,
            ck,
            boards
        )
    )
}

/// Every split must hold users before round 1: training needs train users and the final
/// evaluations need val and test users (found only after the rounds, the work was lost).
fn check_splits(cfg: &Config, part: &Partition) -> Result<()> {
    let users = part.train.len() + part.val.len() + part.test.len();
    for (name, set) in [
        ("train", &part.train),
        ("val", &part.val),
        ("test", &part.test),
    ] {
        ensure!(
            !set.is_empty(),
            "the {name} split has no users: {users} users (data.max_clients = {}) split with \
             data.train_fraction = {} and data.val_fraction = {} leave it empty; every split \
             needs at least one user",
            cfg.data
                .max_clients
                .map_or("none".to_string(), |m| m.to_string()),
            cfg.data.train_fraction,
            cfg.data.val_fraction
        );
    }
    Ok(())
}

fn run_k<S: SimScalar, const K: usize>(
    cfg: &Config,
    part: &Partition,
    num_items: usize,
    item_ids: Option<&[u32]>,
    opts: &RunOptions,
    ckpt: &Checkpointing,
    boards: &BoardOptions,
) -> Result<RunResult> {
    let t0 = Instant::now();
    let resume = ckpt.resume.as_ref();
    check_splits(cfg, part)?;
    let fingerprint = checkpoint::fingerprint(part, num_items);
    let data_digest = checkpoint::data_digest(part, num_items);
    // Everything below is checked before the output directory is touched: a refused resume
    // leaves it as it was.
    let mut sim = Simulation::<S, K>::new(cfg, part, num_items)?;
    let mut records = Vec::new();
    if let Some(ck) = resume {
        ensure!(
            ck.fingerprint == fingerprint,
            "the data differs from the checkpointed run's (users/examples per split and items: \
             {:?} now, {:?} in the checkpoint)",
            fingerprint,
            ck.fingerprint
        );
        ensure!(
            ck.data_digest == data_digest,
            "the data differs from the checkpointed run's: same users, ratings and items, \
             other contents (digest {data_digest:016x} now, {:016x} in the checkpoint)",
            ck.data_digest
        );
        ensure!(
            ck.round <= cfg.run.rounds,
            "the checkpoint is at round {} but the run has {} rounds",
            ck.round,
            cfg.run.rounds
        );
        records = ck.records()?;
        let trained: Vec<u32> = records
            .iter()
            .filter_map(|r| match r {
                Record::Train { round, .. } => Some(*round),
                Record::Eval(_) => None,
            })
            .collect();
        ensure!(
            trained.iter().copied().eq(1..=ck.round),
            "the checkpoint's metrics do not hold rounds 1..={} once each, in order",
            ck.round
        );
        let mut opt = sim.optimizer().clone();
        ck.restore_optimizer(&mut opt)?;
        sim.restore(ck.round, ck.params.clone(), opt)?;
    }
    let mut log = match (&opts.out, resume) {
        (Some(dir), None) => {
            // A fresh run: a checkpoint of an earlier run here (with --force) is stale.
            match std::fs::remove_file(dir.join(checkpoint::FILE)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).context("cannot remove the stale checkpoint"),
            }
            output::write_atomic(&dir.join("config.toml"), cfg.to_toml_string().as_bytes())?;
            Some(MetricsLog::create(dir)?)
        }
        (Some(dir), Some(ck)) => {
            checkpoint::rewind_metrics(dir, ck)?;
            Some(MetricsLog::append(dir, records.clone())?)
        }
        (None, _) => None,
    };
    if let Some(ck) = resume {
        tracing::info!(round = ck.round, "resumed from the checkpoint");
    }
    let mut emit = |r: Record| -> Result<()> {
        if let Some(log) = log.as_mut() {
            log.push(r.clone())?;
        }
        records.push(r);
        Ok(())
    };

    let start = sim.rounds_done();
    if boards.any() {
        let mut boards = boards.clone();
        let (read, connect) = cfg.reliability.board_timeouts();
        boards.timeouts = boards
            .timeouts
            .or(Some(crate::board::links::LinkTimeouts { read, connect }));
        let mut opened =
            Boards::open(&boards, K, S::KIND, cfg.run.seed).context("opening the boards")?;
        if !boards.users.is_empty() {
            opened
                .provision(&boards.users, &part.train)
                .context("--board-users")?;
        }
        sim.attach_boards(opened)?;
    }
    if let Some(link) = &opts.cluster {
        sim.join(link.clone())?;
    }
    tracing::info!(
        ranks = opts.cluster.as_ref().map_or(1, |l| l.size()),
        threads = sim.threads(),
        k = K,
        rounds = cfg.run.rounds,
        clients_per_round = cfg.run.clients_per_round,
        "simulation ready"
    );
    let rounds = cfg.run.rounds;
    let bar = if opts.progress {
        let pb = ProgressBar::new(u64::from(rounds));
        pb.set_style(
            ProgressStyle::with_template(
                "{spinner} round {pos}/{len} [{bar:30}] {elapsed_precise} eta {eta} {msg}",
            )
            .expect("static progress template")
            .progress_chars("=> "),
        );
        pb.set_position(u64::from(start.min(rounds)));
        pb
    } else {
        ProgressBar::hidden()
    };
    let every = cfg.run.eval_every;
    let mut last_val: Option<String> = None;
    // (A resume from round 0, after an early interrupt, already holds this evaluation.)
    if every > 0 && start == 0 && resume.is_none() {
        let e = sim.evaluate(Split::Val)?;
        last_val = Some(format!(
            "val loss {:.3} acc {:.3}",
            e.loss, e.rating_accuracy
        ));
        tracing::info!(
            round = 0,
            loss = e.loss,
            accuracy = e.rating_accuracy,
            "val (untrained)"
        );
        emit(eval_record(e, sim.privacy_spent()))?;
    }
    let ck_every = cfg.reliability.checkpoint_every;
    let save = |sim: &Simulation<S, K>, round: u32, dir: &std::path::Path| -> Result<()> {
        let (opt_tag, opt_t, opt_vecs) = checkpoint::optimizer_state(sim.optimizer());
        checkpoint::save(
            dir,
            Checkpoint {
                round,
                config_toml: cfg.to_toml_string(),
                data_dir: ckpt.data_dir.clone(),
                fingerprint,
                data_digest,
                params: sim.params().to_vec(),
                opt_tag,
                opt_t,
                opt_vecs,
                metrics_jsonl: String::new(),
                metrics_csv: String::new(),
            },
        )?;
        tracing::debug!(round, "checkpoint written");
        Ok(())
    };
    // A signal stops the run between rounds, after a checkpoint of the last finished one.
    let pending = || opts.interrupts.as_ref().and_then(Interrupts::pending);
    let stop = |sig: Interrupted, done: u32, sim: &Simulation<S, K>| {
        bar.finish_and_clear();
        let how = match &opts.out {
            Some(_) if cfg.privacy.enabled => {
                "differentially private runs are not checkpointed, so it cannot be resumed".into()
            }
            Some(dir) => match save(sim, done, dir) {
                Ok(()) => format!(
                    "checkpoint of round {done} written; continue with `fedrecon train --resume {}`",
                    dir.display()
                ),
                Err(e) => format!("the checkpoint of round {done} could not be written: {e:#}"),
            },
            None => "nothing was written (no --out)".to_string(),
        };
        anyhow::Error::new(sig).context(format!("interrupted after round {done}: {how}"))
    };
    for round in start + 1..=rounds {
        if let Some(sig) = pending() {
            return Err(stop(sig, round - 1, &sim));
        }
        let s = sim.train_round()?;
        tracing::debug!(
            round,
            loss = s.loss,
            accuracy = s.rating_accuracy,
            ms = s.seconds * 1e3,
            cluster_sent = s.cluster_sent,
            cluster_received = s.cluster_received,
            "round"
        );
        bar.set_message(format!(
            "train loss {:.3} acc {:.3}{}",
            s.loss,
            s.rating_accuracy,
            last_val
                .as_deref()
                .map(|v| format!(" | {v}"))
                .unwrap_or_default()
        ));
        emit(Record::from(&s))?;
        if every > 0 && round % every == 0 && round != rounds {
            let e = sim.evaluate(Split::Val)?;
            last_val = Some(format!(
                "val loss {:.3} acc {:.3}",
                e.loss, e.rating_accuracy
            ));
            bar.suspend(|| {
                tracing::info!(round, loss = e.loss, accuracy = e.rating_accuracy, "val")
            });
            emit(eval_record(e, sim.privacy_spent()))?;
        }
        if let Some(dir) = opts
            .out
            .as_ref()
            .filter(|_| ck_every > 0 && round % ck_every == 0)
        {
            save(&sim, round, dir)?;
        }
        bar.inc(1);
    }
    if let Some(sig) = pending() {
        return Err(stop(sig, rounds.max(start), &sim));
    }
    bar.finish_and_clear();
    let val = sim.evaluate(Split::Val)?;
    tracing::info!(
        round = rounds,
        loss = val.loss,
        accuracy = val.rating_accuracy,
        "val (final)"
    );
    emit(eval_record(val, sim.privacy_spent()))?;
    let test = match eval_record(sim.evaluate(Split::Test)?, sim.privacy_spent()) {
        Record::Eval(e) => e,
        Record::Train { .. } => unreachable!("eval_record returns an evaluation"),
    };
    tracing::info!(
        loss = test.loss,
        accuracy = test.rating_accuracy,
        recall_at_10 = test.recall_at_10,
        ndcg_at_10 = test.ndcg_at_10,
        "test (final)"
    );
    emit(eval_record(test.clone(), sim.privacy_spent()))?;
    if opts.cluster.is_some() {
        let t = sim.cluster_traffic();
        sim.leave();
        tracing::info!(
            bytes_sent = t.sent,
            bytes_received = t.received,
            "rank 0 cluster traffic"
        );
    }
    if let Some(p) = sim.privacy_spent() {
        tracing::info!(
            epsilon = p.epsilon,
            delta = p.delta,
            q = sim.dp_session().map_or(0.0, |s| s.q()),
            "privacy spent (RDP accountant; assumes Poisson sampling, the simulator samples \
             a fixed number of clients without replacement)"
        );
    }

    for b in sim.boards().boards() {
        let st = b.stats();
        tracing::info!(
            board = b.name(),
            clients = st.clients,
            evaluations = st.evaluations,
            seconds = st.seconds,
            bytes_down = st.bytes_down,
            bytes_up = st.bytes_up,
            link_errors = st.link_errors,
            retries = st.retries,
            link_failures = st.link_failures,
            resyncs = st.resyncs,
            reconnects = st.reconnects,
            injected_faults = st.faults.total(),
            "board totals"
        );
    }
    let items: Vec<f32> = sim.items().as_flattened().to_vec();
    if let Some(dir) = &opts.out {
        output::write_npy(&dir.join("items.npy"), &items, num_items, K)
            .with_context(|| format!("writing {}", dir.join("items.npy").display()))?;
        if let Some(ids) = item_ids {
            let biases = sim.item_biases();
            output::bundle::ModelBundle {
                config_toml: cfg.to_toml_string(),
                k: K,
                items: items.clone(),
                item_biases: if biases.is_empty() {
                    vec![0.0; num_items]
                } else {
                    biases.to_vec()
                },
                global_mean: sim.global_mean().unwrap_or(0.0),
                item_ids: ids.to_vec(),
                data_digest,
                rounds: sim.rounds_done(),
                implicit: sim.implicit_rows().as_flattened().to_vec(),
            }
            .write(&dir.join(output::bundle::FILE))?;
        }
        #[cfg(feature = "plots")]
        if opts.plots
            && let Err(e) = crate::output::plot::write_plots(dir, &records)
        {
            tracing::warn!("plots not written: {e:#}");
        }
    }
    Ok(RunResult {
        records,
        items,
        k: K,
        test,
        seconds: t0.elapsed().as_secs_f64(),
        boards: sim
            .boards()
            .boards()
            .iter()
            .map(|b| (b.name().to_string(), b.stats()))
            .collect(),
    })
}

/// Another rank of a cluster ([`crate::cluster`]): partitions `ratings` as `cfg` says, attaches
/// this rank's `boards`, and runs rank 0's orders until it says stop. Returns what each of
/// its boards did.
pub fn serve(
    cfg: &Config,
    ratings: &Ratings,
    link: &crate::cluster::Link,
    boards: &BoardOptions,
) -> Result<Vec<(String, BoardStats)>> {
    let part = partition(ratings, &cfg.data);
    dispatch!(
        cfg.run.scalar,
        cfg.model.k,
        serve_k(cfg, &part, ratings.items(), link, boards)
    )
}

fn serve_k<S: SimScalar, const K: usize>(
    cfg: &Config,
    part: &Partition,
    num_items: usize,
    link: &crate::cluster::Link,
    boards: &BoardOptions,
) -> Result<Vec<(String, BoardStats)>> {
    let mut sim = Simulation::<S, K>::new(cfg, part, num_items)?;
    if boards.any() {
        let opened =
            Boards::open(boards, K, S::KIND, cfg.run.seed).context("opening the boards")?;
        sim.attach_boards(opened)?;
    }
    tracing::debug!(
        rank = link.rank(),
        threads = sim.threads(),
        "serving rank 0"
    );
    sim.serve(link)?;
    let t = link.traffic();
    tracing::info!(
        rank = link.rank(),
        bytes_sent = t.sent,
        bytes_received = t.received,
        "cluster traffic"
    );
    Ok(sim
        .boards()
        .boards()
        .iter()
        .map(|b| (b.name().to_string(), b.stats()))
        .collect())
}
