//! An experiment driven one call at a time, for notebooks and language bindings: a [`Session`]
//! owns its data and configuration and runs the [`Simulation`] on a worker thread of its own
//! (with the large stack workspaces need), so a caller needs no lifetimes, no const generics
//! and no stack sizing, and may release its own locks (Python's GIL) while a round runs.
//!
//! The schedule is [`crate::run`]'s: [`Session::start`] evaluates the untrained model when
//! `run.eval_every > 0`, [`Session::step`] trains one round and validates every
//! `run.eval_every` rounds (not after the last), [`Session::finish`] runs the final validation
//! and test evaluations. `start`, `step` until [`Session::done`], `finish` produce the same
//! records as `fedrecon train` (timings aside).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;

use anyhow::{Context, Result, anyhow, bail, ensure};

use crate::config::{Config, ConfigError};
use crate::data::movielens::Ratings;
use crate::data::partition::{Client, Partition, partition};
use crate::dispatch;
use crate::output::checkpoint::{self, Checkpoint};
use crate::output::{self, CSV_HEADER, Record};
use crate::round::evaluate::EvalReport;
use crate::round::{RoundStats, SimScalar, Simulation, Split, WORKER_STACK};
use crate::server::privacy::PrivacySpent;

/// What the worker thread's simulation offers a job, with `S` and `K` erased.
trait Engine {
    fn train_round(&mut self) -> Result<RoundStats>;
    fn evaluate(&mut self, split: Split) -> Result<EvalReport>;
    fn params(&self) -> &[f32];
    fn global_mean(&self) -> Option<f32>;
    fn privacy_spent(&self) -> Option<PrivacySpent>;
    fn checkpoint_state(&self) -> (Vec<f32>, u8, u32, Vec<Vec<f32>>);
    fn restore(&mut self, ck: &Checkpoint) -> Result<()>;
}

impl<S: SimScalar, const K: usize> Engine for Simulation<'_, S, K> {
    fn train_round(&mut self) -> Result<RoundStats> {
        Simulation::train_round(self)
    }
    fn evaluate(&mut self, split: Split) -> Result<EvalReport> {
        Simulation::evaluate(self, split)
    }
    fn params(&self) -> &[f32] {
        Simulation::params(self)
    }
    fn global_mean(&self) -> Option<f32> {
        Simulation::global_mean(self)
    }
    fn privacy_spent(&self) -> Option<PrivacySpent> {
        Simulation::privacy_spent(self)
    }
    fn checkpoint_state(&self) -> (Vec<f32>, u8, u32, Vec<Vec<f32>>) {
        let (tag, t, vecs) = checkpoint::optimizer_state(self.optimizer());
        (self.params().to_vec(), tag, t, vecs)
    }
    fn restore(&mut self, ck: &Checkpoint) -> Result<()> {
        let mut opt = self.optimizer().clone();
        ck.restore_optimizer(&mut opt)?;
        Simulation::restore(self, ck.round, ck.params.clone(), opt)
    }
}

type Job = Box<dyn FnOnce(&mut dyn Engine) + Send>;

/// Users and ratings of each split, as the partition put them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SplitSizes {
    /// Training users and their ratings.
    pub train: (usize, usize),
    /// Validation users and their ratings.
    pub val: (usize, usize),
    /// Test users and their ratings.
    pub test: (usize, usize),
}

/// A running experiment that owns its data (see the module documentation).
pub struct Session {
    cfg: Config,
    ratings: Arc<Ratings>,
    data_dir: PathBuf,
    fingerprint: [u64; 7],
    /// The partition's contents digest: a resume refuses the same shape with other ratings.
    data_digest: u64,
    sizes: SplitSizes,
    rounds_done: u32,
    records: Vec<Record>,
    jobs: Option<mpsc::Sender<Job>>,
    worker: Option<JoinHandle<()>>,
}

impl Session {
    /// Validates `cfg`, partitions `ratings` as it says and starts the simulation (items drawn
    /// from the seed). `data_dir` is recorded in checkpoints (empty for in-memory data).
    pub fn new(cfg: Config, ratings: Arc<Ratings>, data_dir: PathBuf) -> Result<Session> {
        cfg.validate()
            .map_err(|e: ConfigError| anyhow!(e))
            .context("building the configuration")?;
        let part = partition(&ratings, &cfg.data);
        let num_items = ratings.items();
        let fingerprint = checkpoint::fingerprint(&part, num_items);
        let data_digest = checkpoint::data_digest(&part, num_items);
        let sizes = SplitSizes {
            train: (part.train.len(), part.train.examples()),
            val: (part.val.len(), part.val.examples()),
            test: (part.test.len(), part.test.examples()),
        };
        let (jobs, rx) = mpsc::channel::<Job>();
        let (ready_tx, ready) = mpsc::channel::<Result<()>>();
        let worker_cfg = cfg.clone();
        let worker = std::thread::Builder::new()
            .name("fedrecon-session".into())
            .stack_size(WORKER_STACK)
            .spawn(move || {
                let r = dispatch!(
                    worker_cfg.run.scalar,
                    worker_cfg.model.k,
                    serve(&worker_cfg, &part, num_items, &rx, &ready_tx)
                );
                if let Err(e) = r {
                    let _ = ready_tx.send(Err(e));
                }
            })
            .context("cannot start the simulation thread")?;
        let started = ready
            .recv()
            .map_err(|_| anyhow!("the simulation thread stopped while starting"));
        let session = Session {
            cfg,
            ratings,
            data_dir,
            fingerprint,
            data_digest,
            sizes,
            rounds_done: 0,
            records: Vec::new(),
            jobs: Some(jobs),
            worker: Some(worker),
        };
        started??;
        Ok(session)
    }

    /// Continues the run checkpointed in `dir` (by [`Session::save_checkpoint`] or
    /// `fedrecon train --checkpoint-every`) on `ratings`, which must be the same data.
    pub fn resume(dir: &Path, ratings: Arc<Ratings>) -> Result<Session> {
        let ck = checkpoint::load(dir)?;
        let origin = dir.join(checkpoint::FILE).display().to_string();
        let cfg = Config::from_toml_str(&ck.config_toml, &origin, None)?;
        let mut s = Session::new(cfg, ratings, ck.data_dir.clone())?;
        ensure!(
            ck.fingerprint == s.fingerprint,
            "the data differs from the checkpointed run's (users/examples per split and items: \
             {:?} now, {:?} in the checkpoint)",
            s.fingerprint,
            ck.fingerprint
        );
        ensure!(
            ck.data_digest == s.data_digest,
            "the data differs from the checkpointed run's: same users, ratings and items, \
             other contents (digest {:016x} now, {:016x} in the checkpoint)",
            s.data_digest,
            ck.data_digest
        );
        let records = ck.records()?;
        let ck = Arc::new(ck);
        let c = Arc::clone(&ck);
        s.call(move |e| e.restore(&c))??;
        s.rounds_done = ck.round;
        s.records = records;
        Ok(s)
    }

    /// Runs `f` on the simulation's thread and returns its result.
    fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut dyn Engine) -> R + Send + 'static,
    ) -> Result<R> {
        let (tx, rx) = mpsc::sync_channel(1);
        let job: Job = Box::new(move |e| {
            let _ = tx.send(f(e));
        });
        let stopped = || anyhow!("the simulation thread has stopped (after a panic: see stderr)");
        self.jobs
            .as_ref()
            .ok_or_else(stopped)?
            .send(job)
            .map_err(|_| stopped())?;
        rx.recv().map_err(|_| stopped())
    }

    /// The validated configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The data the session trains and evaluates on.
    pub fn ratings(&self) -> &Arc<Ratings> {
        &self.ratings
    }

    /// Users and ratings per split.
    pub fn split_sizes(&self) -> SplitSizes {
        self.sizes
    }

    /// Training rounds completed.
    pub fn rounds_done(&self) -> u32 {
        self.rounds_done
    }

    /// True once `run.rounds` rounds are done.
    pub fn done(&self) -> bool {
        self.rounds_done >= self.cfg.run.rounds
    }

    /// Every record so far (training rounds and evaluations), in order.
    pub fn records(&self) -> &[Record] {
        &self.records
    }

    /// Trains one round (beyond `run.rounds` too) and records it.
    pub fn train_round(&mut self) -> Result<RoundStats> {
        let s = self.call(|e| e.train_round())??;
        self.rounds_done = s.round;
        self.records.push(Record::from(&s));
        Ok(s)
    }

    /// Evaluates the current model on the validation or test users and records it (with the
    /// privacy spent so far in DP runs).
    pub fn evaluate(&mut self, split: Split) -> Result<EvalReport> {
        let mut r = self.call(move |e| e.evaluate(split).map(|r| (r, e.privacy_spent())))??;
        if let Some(p) = r.1 {
            r.0.epsilon = Some(p.epsilon);
            r.0.delta = Some(p.delta);
        }
        self.records.push(Record::Eval(r.0.clone()));
        Ok(r.0)
    }

    /// The untrained model's validation, when the schedule has one (`run.eval_every > 0`) and
    /// no round has run; the records it added.
    pub fn start(&mut self) -> Result<Vec<Record>> {
        let n = self.records.len();
        if self.cfg.run.eval_every > 0 && self.rounds_done == 0 && self.records.is_empty() {
            self.evaluate(Split::Val)?;
        }
        Ok(self.records[n..].to_vec())
    }

    /// One round of the schedule: train, then validate when the round is a multiple of
    /// `run.eval_every` and not the last; the records it added.
    pub fn step(&mut self) -> Result<Vec<Record>> {
        let n = self.records.len();
        let round = self.train_round()?.round;
        let every = self.cfg.run.eval_every;
        if every > 0 && round % every == 0 && round < self.cfg.run.rounds {
            self.evaluate(Split::Val)?;
        }
        Ok(self.records[n..].to_vec())
    }

    /// The final validation and test evaluations; returns the test report.
    pub fn finish(&mut self) -> Result<EvalReport> {
        self.evaluate(Split::Val)?;
        self.evaluate(Split::Test)
    }

    /// A copy of the server parameters: the item rows (`items × k`, row-major), then the item
    /// biases when the model has them.
    pub fn params(&self) -> Result<Vec<f32>> {
        self.call(|e| e.params().to_vec())
    }

    /// Number of items (rows of the item matrix).
    pub fn num_items(&self) -> usize {
        self.ratings.items()
    }

    /// The `k` best-scored items the user with MovieLens id `raw_user` has not rated, best
    /// first, as `(dense item, score)`: their embedding (and bias) reconstructed from all their
    /// ratings against the current item rows, scored with the item biases and global mean.
    pub fn recommend(&self, raw_user: u32, k: usize) -> Result<Vec<(u32, f32)>> {
        let user = self
            .ratings
            .user_raw_ids()
            .iter()
            .position(|&u| u == raw_user)
            .ok_or_else(|| anyhow!("user {raw_user}: no such user in the data"))?;
        let (params, global_mean) = self.call(|e| (e.params().to_vec(), e.global_mean()))?;
        let (n, cols) = (self.num_items(), self.cfg.model.k);
        let all = crate::round::model_rows(&self.cfg, n) * cols;
        let biases = &params[all..];
        let model = crate::round::recommend::ModelView {
            items: &params[..n * cols],
            cols,
            item_biases: &biases[..biases.len().min(n)],
            global_mean: global_mean.unwrap_or(0.0),
            implicit: &params[n * cols..all],
        };
        let mine = self.ratings.user(user);
        let client = Client {
            user: raw_user,
            items: mine.items,
            ratings: mine.values,
        };
        crate::round::recommend::recommend(&self.cfg, &model, &client, k)
    }

    /// The current model as a bundle (`model.npz`, [`output::bundle`]): rows, biases, global
    /// mean, the data's movie ids, the data digest and the configuration.
    pub fn model_bundle(&self) -> Result<output::bundle::ModelBundle> {
        let (params, global_mean) = self.call(|e| (e.params().to_vec(), e.global_mean()))?;
        let (n, k) = (self.num_items(), self.cfg.model.k);
        let all = crate::round::model_rows(&self.cfg, n) * k;
        let item_biases = match &params[all..] {
            [] => vec![0.0; n],
            b => b[..n].to_vec(),
        };
        let implicit = params[n * k..all].to_vec();
        let mut items = params;
        items.truncate(n * k);
        Ok(output::bundle::ModelBundle {
            config_toml: self.cfg.to_toml_string(),
            k,
            items,
            item_biases,
            global_mean: global_mean.unwrap_or(0.0),
            item_ids: self.ratings.item_raw_ids().to_vec(),
            data_digest: self.data_digest,
            rounds: self.rounds_done,
            implicit,
        })
    }

    /// Writes [`Session::model_bundle`] to `path` (atomically), for `fedrecon recommend` and
    /// numpy.
    pub fn save_model(&self, path: &Path) -> Result<()> {
        self.model_bundle()?.write(path)
    }

    /// Writes `dir/checkpoint.bin` with `config.toml`, `metrics.jsonl` and `metrics.csv` beside
    /// it (creating `dir`), so [`Session::resume`] or `fedrecon train --resume DIR` can continue.
    pub fn save_checkpoint(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let (params, opt_tag, opt_t, opt_vecs) = self.call(|e| e.checkpoint_state())?;
        let mut jsonl = String::new();
        let mut csv = format!("{CSV_HEADER}\n");
        for r in &self.records {
            jsonl.push_str(&serde_json::to_string(r).context("cannot serialise a record")?);
            jsonl.push('\n');
            csv.push_str(&r.csv_line());
            csv.push('\n');
        }
        let config_toml = self.cfg.to_toml_string();
        output::write_atomic(&dir.join("config.toml"), config_toml.as_bytes())?;
        output::write_atomic(&dir.join("metrics.jsonl"), jsonl.as_bytes())?;
        output::write_atomic(&dir.join("metrics.csv"), csv.as_bytes())?;
        let ck = Checkpoint {
            round: self.rounds_done,
            config_toml,
            data_dir: self.data_dir.clone(),
            fingerprint: self.fingerprint,
            data_digest: self.data_digest,
            params,
            opt_tag,
            opt_t,
            opt_vecs,
            metrics_jsonl: jsonl,
            metrics_csv: csv,
        };
        output::write_atomic(&dir.join(checkpoint::FILE), &ck.encode())
            .with_context(|| format!("writing the checkpoint of round {}", ck.round))
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // Closing the job channel ends the worker's loop.
        self.jobs = None;
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

/// The worker thread: builds the simulation, reports readiness, then runs jobs until the
/// session closes the channel.
fn serve<S: SimScalar, const K: usize>(
    cfg: &Config,
    part: &Partition,
    num_items: usize,
    jobs: &mpsc::Receiver<Job>,
    ready: &mpsc::Sender<Result<()>>,
) -> Result<()> {
    let mut sim = Simulation::<S, K>::new(cfg, part, num_items)?;
    if ready.send(Ok(())).is_err() {
        bail!("the session was dropped while starting");
    }
    while let Ok(job) = jobs.recv() {
        job(&mut sim);
    }
    Ok(())
}
