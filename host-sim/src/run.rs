//! An experiment from configuration to outputs: partition, rounds with periodic validation,
//! the final test evaluation, and (with an output directory) metrics, plots, `items.npy` and
//! `config.toml`. The command line's `train` is this plus argument parsing.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, ensure};
use indicatif::{ProgressBar, ProgressStyle};

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
    /// Output directory (already checked with [`output::prepare_out_dir`]); `None` writes
    /// nothing.
    pub out: Option<PathBuf>,
    /// Show a progress bar over rounds.
    pub progress: bool,
    /// Write `train.png` / `eval.png` into the output directory.
    pub plots: bool,
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
    run_partition_with_boards(cfg, &part, ratings.items(), opts, boards)
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

/// [`run_partition`] with boards.
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
        run_k(cfg, part, num_items, opts, &ck, boards)
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
        run_k(cfg, &part, num_items, opts, ck, boards)
    )
}

fn run_k<S: SimScalar, const K: usize>(
    cfg: &Config,
    part: &Partition,
    num_items: usize,
    opts: &RunOptions,
    ckpt: &Checkpointing,
    boards: &BoardOptions,
) -> Result<RunResult> {
    let t0 = Instant::now();
    let resume = ckpt.resume.as_ref();
    let fingerprint = checkpoint::fingerprint(part, num_items);
    if let Some(ck) = resume {
        ensure!(
            ck.fingerprint == fingerprint,
            "the data differs from the checkpointed run's (users/examples per split and items: \
             {:?} now, {:?} in the checkpoint)",
            fingerprint,
            ck.fingerprint
        );
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
            Some(MetricsLog::append(dir, ck.records()?)?)
        }
        (None, _) => None,
    };
    let mut records = match resume {
        Some(ck) => ck.records()?,
        None => Vec::new(),
    };
    let mut emit = |r: Record| -> Result<()> {
        if let Some(log) = log.as_mut() {
            log.push(r.clone())?;
        }
        records.push(r);
        Ok(())
    };

    let mut sim = Simulation::<S, K>::new(cfg, part, num_items)?;
    if let Some(ck) = resume {
        let mut opt = sim.optimizer().clone();
        ck.restore_optimizer(&mut opt)?;
        sim.restore(ck.round, ck.params.clone(), opt)?;
        tracing::info!(round = ck.round, "resumed from the checkpoint");
    }
    let start = sim.rounds_done();
    if boards.any() {
        let opened =
            Boards::open(boards, K, S::KIND, cfg.run.seed).context("opening the boards")?;
        sim.attach_boards(opened)?;
    }
    tracing::info!(
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
    if every > 0 && start == 0 {
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
    for round in start + 1..=rounds {
        let s = sim.train_round()?;
        tracing::debug!(
            round,
            loss = s.loss,
            accuracy = s.rating_accuracy,
            ms = s.seconds * 1e3,
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
            let (opt_tag, opt_t, opt_vecs) = checkpoint::optimizer_state(sim.optimizer());
            checkpoint::save(
                dir,
                Checkpoint {
                    round,
                    config_toml: cfg.to_toml_string(),
                    data_dir: ckpt.data_dir.clone(),
                    fingerprint,
                    params: sim.params().to_vec(),
                    opt_tag,
                    opt_t,
                    opt_vecs,
                    metrics_jsonl: String::new(),
                    metrics_csv: String::new(),
                },
            )?;
            tracing::debug!(round, "checkpoint written");
        }
        bar.inc(1);
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
            seconds = st.seconds,
            bytes_down = st.bytes_down,
            bytes_up = st.bytes_up,
            link_errors = st.link_errors,
            retries = st.retries,
            link_failures = st.link_failures,
            resyncs = st.resyncs,
            injected_faults = st.faults.total(),
            "board totals"
        );
    }
    let items: Vec<f32> = sim.items().as_flattened().to_vec();
    if let Some(dir) = &opts.out {
        output::write_npy(&dir.join("items.npy"), &items, num_items, K)
            .with_context(|| format!("writing {}", dir.join("items.npy").display()))?;
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
