//! The simulation and its round: sample clients, configure them, run each on a virtual device
//! or a board, decode and validate the updates, select and aggregate them in client order and
//! let the server optimizer apply the mean (docs/SEMANTICS.md "One client's round", "Server").
//! `phases` holds the round as those phases, `clients` where a client runs, `device` the
//! virtual device and the configuration's mapping onto core's, `evaluate` evaluation.
//!
//! Determinism: every random draw is derived from the experiment seed (see [`crate::seeds`]),
//! workers write into the slots of a window of clients, and everything order-dependent
//! (selection, each row's aggregate, metric sums) runs in client order, so the model is
//! bit-identical for any thread count (and window size).
//!
//! Each worker thread owns one boxed [`fedrecon_core::Device`] workspace of capacity [`N`] examples, reused for
//! every client it runs. The embedding width `K` is a const generic; [`dispatch_k!`] turns the
//! runtime `model.k` into a call of a generic function.

mod board_eval;
mod clients;
mod device;
pub mod evaluate;
pub mod faults;
mod phases;
mod ranks;
pub mod recommend;
pub mod workspace;

use anyhow::{Result, anyhow, ensure};
use fedrecon_core::{Error as CoreError, RoundConfig};
use rayon::prelude::*;

pub use self::device::{
    LARGE_N, Loaded, N, SimScalar, WORKER_STACK, Workspace, client_round_config, load_client,
    mean_rating, model_rows, new_workspace, round_config,
};
pub(crate) use self::device::{recon_examples, rows_view, thread_pool, worker_workspace};

use self::clients::{BoardHost, Slot, VirtualDevices};
use self::ranks::RankHost;
use crate::comm::{DownlinkRound, TrafficStats};
use crate::config::Config;
use crate::data::partition::{ClientSet, Partition};
use crate::round::evaluate::{EvalReport, EvalSums, UserEval, evaluate_loaded};
use crate::round::faults::RoundFaults;
use crate::seeds::{Purpose, sample_without_replacement, seed_for};
use crate::server::privacy::{DpSession, PrivacySpent};
use crate::server::robust::Shape;
use crate::server::strategy::RobustRound;
use crate::server::{Aggregator, ServerOptimizer};

/// A hook that may rewrite a client's encoded update before the server receives it
/// (`(round, user, bytes)`): how tests and fault injectors model hostile devices and faulty links.
pub type Tamper = Box<dyn Fn(u32, u32, &mut Vec<u8>) + Send + Sync>;

/// Figures of one training round.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct RoundStats {
    /// 1-based round number.
    pub round: u32,
    /// Example-weighted training loss of the round's post-reconstruction batches.
    pub loss: f64,
    /// Training rating accuracy.
    pub rating_accuracy: f64,
    /// Wall-clock seconds of the round (devices, encode, decode, aggregation, server step).
    pub seconds: f64,
    /// Bytes sent to the devices (the rows each needs), framing included: in-process packets
    /// for every client (docs: README "Communication").
    pub bytes_down: u64,
    /// Bytes of the encoded updates received, framing included: length-prefixed packets from
    /// in-process devices, COBS frames with CRC-32 from boards' serial links.
    pub bytes_up: u64,
    /// Of `bytes_down`, the messages alone (what any link must carry).
    pub payload_down: u64,
    /// Of `bytes_up`, the messages alone.
    pub payload_up: u64,
    /// Clients sampled.
    pub clients: u32,
    /// Clients skipped because a phase had no batch.
    pub skipped: u32,
    /// Whether the server applied the aggregate (false: non-finite or zero weight).
    pub applied: bool,
    /// Dropouts, rejections, surplus reports, a skipped round ([`crate::config::reliability`]).
    #[serde(flatten)]
    pub faults: RoundFaults,
    /// Per-client bytes and rows of the round's traffic.
    #[serde(flatten)]
    pub traffic: TrafficStats,
    /// Privacy spent so far (DP runs only).
    #[serde(skip_serializing_if = "Option::is_none", flatten)]
    pub privacy: Option<PrivacySpent>,
    /// Attack bench and robust aggregation figures (when either is on).
    #[serde(skip_serializing_if = "Option::is_none", flatten)]
    pub security: Option<crate::attack::RoundSecurity>,
    /// Rating-steps executed by the devices (examples visited in both phases).
    #[serde(skip)]
    pub examples: u64,
    /// Seconds of the parallel device section (rounds and encoding).
    #[serde(skip)]
    pub device_seconds: f64,
    /// Seconds of decoding, aggregation and the server step.
    #[serde(skip)]
    pub server_seconds: f64,
    /// Seconds of the aggregation alone (part of `server_seconds`).
    #[serde(skip)]
    pub aggregate_seconds: f64,
    /// Seconds of the server optimizer's step alone (part of `server_seconds`).
    #[serde(skip)]
    pub step_seconds: f64,
    /// Bytes this rank sent to the other ranks of a cluster during the round (model and
    /// orders; zero in one process).
    #[serde(skip)]
    pub cluster_sent: u64,
    /// Bytes this rank received from the other ranks during the round (their uploads).
    #[serde(skip)]
    pub cluster_received: u64,
}

/// Which held-out population an evaluation uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    /// Validation users.
    Val,
    /// Test users.
    Test,
}

impl Split {
    /// `"val"` / `"test"`.
    pub fn name(self) -> &'static str {
        match self {
            Split::Val => "val",
            Split::Test => "test",
        }
    }
}

/// A running federated-reconstruction experiment of embedding width `K` whose devices compute
/// in scalar `S`.
pub struct Simulation<'p, S: SimScalar, const K: usize> {
    cfg: Config,
    part: &'p Partition,
    /// The catalogue: ratings name items `0..catalogue`.
    catalogue: usize,
    /// Rows of the model: the catalogue's, plus its implicit rows and the mean row with
    /// implicit feedback (`fedrecon_core::implicit`).
    num_items: usize,
    /// Flat parameters: `num_items × K` row-major, then one bias per row when the model has
    /// item biases (an implicit row's bias is unused and stays zero).
    params: Vec<f32>,
    train_cfg: RoundConfig,
    eval_cfg: RoundConfig,
    opt: ServerOptimizer,
    agg: Aggregator,
    mean: Vec<f32>,
    /// The in-process devices (and the worker pool evaluation also uses).
    devices: VirtualDevices<S, K>,
    slots: Vec<Slot>,
    /// The round's jobs whose downlink this process counts and whose upload it decodes and
    /// validates (the others are another rank's, which does that itself).
    local: Vec<bool>,
    /// Differentially private aggregation and accounting (`privacy.enabled`).
    dp: Option<DpSession>,
    /// Robust aggregation's round state (`[robust]` active; issue 19).
    robust: Option<RobustRound>,
    /// The round's downlink as the devices receive it.
    down: DownlinkRound,
    /// Frame scratch of the downlink encoder.
    down_buf: Vec<u8>,
    round: u32,
    tamper: Option<Tamper>,
    /// Boards that train some clients of each round (see [`crate::board`]).
    boards: BoardHost,
    /// The other ranks of a cluster, on rank 0 ([`crate::cluster`]).
    ranks: RankHost,
}

impl<'p, S: SimScalar, const K: usize> Simulation<'p, S, K> {
    /// Sets up the server state (items uniform in ±0.05 from the seed), the worker pool and one
    /// workspace per worker. `num_items` is the catalogue size (dense ids `0..num_items`).
    pub fn new(cfg: &Config, part: &'p Partition, num_items: usize) -> Result<Self> {
        ensure!(
            cfg.model.k == K,
            "internal: model.k = {} dispatched to K = {K}",
            cfg.model.k
        );
        ensure!(num_items > 0, "the dataset has no items");
        cfg.attack.check_target(num_items)?;
        ensure!(!part.train.is_empty(), "the training split has no users");
        let global_mean = mean_rating(&part.train);
        let train_cfg = round_config(cfg, false, global_mean, num_items)?;
        let eval_cfg = round_config(cfg, true, global_mean, num_items)?;
        let catalogue = num_items;
        let num_items = model_rows(cfg, catalogue);
        let with_bias = cfg.model.item_bias;
        let agg = Aggregator::new(num_items, K, with_bias);
        let len = agg.param_len();
        let mut params = vec![0.0f32; len];
        let mut rng =
            fedrecon_core::rng::DeviceRng::new(seed_for(cfg.run.seed, Purpose::ItemInit, 0, 0));
        // Keras 'uniform': U(-0.05, 0.05) for the item rows; biases, implicit rows and the
        // mean row start at zero (no prior mean until training finds one).
        for p in &mut params[..catalogue * K] {
            *p = -0.05 + 0.1 * rng.unit_f32();
        }
        let threads = cfg.run.threads.unwrap_or(0);
        let devices = VirtualDevices::new(thread_pool(threads)?);
        Ok(Self {
            opt: ServerOptimizer::new(&cfg.server, len),
            cfg: cfg.clone(),
            part,
            catalogue,
            num_items,
            params,
            train_cfg,
            eval_cfg,
            agg,
            mean: vec![0.0; len],
            devices,
            slots: Vec::new(),
            local: Vec::new(),
            dp: cfg
                .privacy
                .enabled
                .then(|| {
                    DpSession::new(
                        &cfg.privacy,
                        cfg.run.clients_per_round,
                        part.train.len(),
                        num_items,
                        K,
                        with_bias,
                        cfg.run.seed,
                    )
                })
                .transpose()?,
            robust: cfg.robust.is_active().then(|| {
                let shape = Shape {
                    items: num_items,
                    k: K,
                    with_bias,
                };
                RobustRound::new(&cfg.robust, shape)
            }),
            down: DownlinkRound::default(),
            down_buf: Vec::new(),
            round: 0,
            tamper: None,
            boards: BoardHost::new(crate::board::Boards::default()),
            ranks: RankHost::default(),
        })
    }

    /// The flat server parameters (item rows, then item biases).
    pub fn params(&self) -> &[f32] {
        &self.params
    }

    /// The server optimizer and its state.
    pub fn optimizer(&self) -> &ServerOptimizer {
        &self.opt
    }

    /// Restores the server state of a checkpoint taken after `round` rounds.
    pub fn restore(&mut self, round: u32, params: Vec<f32>, opt: ServerOptimizer) -> Result<()> {
        ensure!(
            params.len() == self.params.len(),
            "checkpoint has {} parameters, this model has {}",
            params.len(),
            self.params.len()
        );
        self.params = params;
        self.opt = opt;
        self.round = round;
        Ok(())
    }

    /// Installs a hook that rewrites encoded updates before the server decodes them.
    pub fn set_tamper(&mut self, tamper: Option<Tamper>) {
        self.tamper = tamper;
    }

    /// Lets `boards` train the first clients of every training round that fit them (one per
    /// board); the result stays bit-identical (see [`crate::board`]).
    pub fn attach_boards(&mut self, boards: crate::board::Boards) -> Result<()> {
        ensure!(
            boards.is_empty() || !self.cfg.client.implicit,
            "client.implicit: boards cannot train implicit-feedback models yet (a client's \
             implicit rows and the mean row double the rows a board must hold); set \
             client.implicit = false and client.both_halves = false to train on boards"
        );
        self.boards = BoardHost::new(boards);
        Ok(())
    }

    /// The attached boards.
    pub fn boards(&self) -> &crate::board::Boards {
        &self.boards.boards
    }

    /// Worker threads in use.
    pub fn threads(&self) -> usize {
        self.devices.workspaces.len()
    }

    /// Rounds completed.
    pub fn rounds_done(&self) -> u32 {
        self.round
    }

    /// The configuration this simulation runs.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The device configuration of training rounds.
    pub fn train_config(&self) -> &RoundConfig {
        &self.train_cfg
    }

    /// The global item rows (`catalogue × K`).
    pub fn items(&self) -> &[[f32; K]] {
        self.params[..self.catalogue * K].as_chunks::<K>().0
    }

    /// With implicit feedback, the implicit rows (one per item) and then the mean row, in the
    /// layout of `fedrecon_core::implicit`; empty without.
    pub fn implicit_rows(&self) -> &[[f32; K]] {
        self.params[self.catalogue * K..self.num_items * K]
            .as_chunks::<K>()
            .0
    }

    /// The global-mean term the devices add to every prediction (`None` without one).
    pub fn global_mean(&self) -> Option<f32> {
        self.eval_cfg.model.global_mean
    }

    /// The global item biases (empty without item biases).
    pub fn item_biases(&self) -> &[f32] {
        let biases = &self.params[self.num_items * K..];
        &biases[..biases.len().min(self.catalogue)]
    }

    /// Replaces the global parameters (the item rows row-major, then the item biases when the
    /// model has them), e.g. with a centrally trained model, to evaluate it exactly as a
    /// federated one (the centralized baseline does).
    pub fn set_params(&mut self, params: &[f32]) -> Result<()> {
        ensure!(
            params.len() == self.params.len(),
            "parameter vector has {} values, the model {}",
            params.len(),
            self.params.len()
        );
        self.params.copy_from_slice(params);
        Ok(())
    }

    /// Privacy spent so far (DP runs after their first round).
    pub fn privacy_spent(&self) -> Option<PrivacySpent> {
        self.dp.as_ref().and_then(DpSession::spent)
    }

    /// The DP session of a DP run.
    pub fn dp_session(&self) -> Option<&DpSession> {
        self.dp.as_ref()
    }

    /// Evaluates the current model on the validation or test users (a seeded sample of
    /// `run.eval_clients` of them, or all).
    pub fn evaluate(&mut self, split: Split) -> Result<EvalReport> {
        let set = match split {
            Split::Val => &self.part.val,
            Split::Test => &self.part.test,
        };
        ensure!(!set.is_empty(), "the {} split has no users", split.name());
        let tag = match split {
            Split::Val => 0,
            Split::Test => 1,
        };
        let sample = sample_without_replacement(
            set.len(),
            self.cfg.run.eval_clients.unwrap_or(usize::MAX),
            seed_for(
                self.cfg.run.seed,
                Purpose::SampleEval,
                u64::from(self.round),
                tag,
            ),
        );
        let sums = self.evaluate_users(set, &sample, split)?;
        Ok(sums.finish(split.name(), self.round))
    }

    /// Evaluates the given users of `set` in parallel and sums their results in order (in a
    /// cluster, shared out over the ranks, whose `set` is the split's).
    pub fn evaluate_users(
        &mut self,
        set: &ClientSet,
        users: &[usize],
        split: Split,
    ) -> Result<EvalSums> {
        let results = match self.ranks.link().filter(|l| l.size() > 1) {
            Some(link) => self.evaluate_across(&link, set, users, split)?,
            None => self.evaluate_set(set, users, split)?,
        };
        let mut sums = EvalSums::default();
        for u in results.iter().flatten() {
            sums.add(u);
        }
        Ok(sums)
    }

    /// This rank's share of a cluster's evaluation: `users` of `split`.
    fn evaluate_share(&mut self, split: Split, users: &[usize]) -> Result<Vec<Option<UserEval>>> {
        let set = match split {
            Split::Val => &self.part.val,
            Split::Test => &self.part.test,
        };
        if let Some(&u) = users.iter().find(|&&u| u >= set.len()) {
            anyhow::bail!(
                "{} user {u} is out of range ({} users)",
                split.name(),
                set.len()
            );
        }
        self.evaluate_set(set, users, split)
    }

    /// Evaluates the given users of `set` in parallel; their results in order (`None`: no
    /// example to evaluate), or the first error in that order.
    fn evaluate_set(
        &mut self,
        set: &ClientSet,
        users: &[usize],
        split: Split,
    ) -> Result<Vec<Option<UserEval>>> {
        // Evaluation devices receive the same downlink as training devices.
        let down = DownlinkRound::prepare::<K>(
            self.cfg.comm.downlink,
            self.round,
            &self.params,
            self.num_items,
            self.cfg.model.item_bias,
            &mut self.down_buf,
        )?;
        let device_params = down.dequantized.as_deref().unwrap_or(&self.params);
        let lent = S::lend(device_params, &mut self.devices.lent);
        let rows = rows_view::<S, K>(lent, self.num_items, self.cfg.model.item_bias);
        let (cfg, workspaces, num_items) = (
            &self.eval_cfg,
            &self.devices.workspaces,
            self.num_items as u32,
        );
        let (seed, round) = (self.cfg.run.seed, u64::from(self.round));
        let reshuffle = self.cfg.client.reshuffle_each_round;
        let target = self.cfg.attack.target;
        let user_seed = |user: u32| {
            seed_for(
                seed,
                Purpose::EvalClient,
                round,
                (u64::from(user) << 1) | (split == Split::Test) as u64,
            )
        };
        // Boards that evaluate take their users first and work while the devices compute
        // (not in the attack bench: its target's hit ratio is measured on virtual devices).
        let board_jobs = if self.boards.boards.evaluates() && target.is_none() {
            board_eval::assign::<S>(
                &self.boards.boards,
                users.len(),
                round as u32,
                self.cfg.comm.downlink.encoding(),
                |pos| {
                    let client = set.client(users[pos]);
                    let rc = client_round_config(cfg, reshuffle, round as u32, client.user);
                    let s = user_seed(client.user);
                    (client, rc, s)
                },
            )
        } else {
            Vec::new()
        };
        let mut on_board = vec![false; users.len()];
        for j in &board_jobs {
            on_board[j.pos] = true;
        }
        let (params, boards) = (&self.params, &mut self.boards.boards);
        let catalogue = crate::board::eval::Catalogue {
            rows: params[..num_items as usize * K].as_chunks::<K>().0,
            biases: &params[num_items as usize * K..],
        };
        let eval_user = |relevant: &mut Vec<u32>, c: usize| -> Result<Option<UserEval>> {
            let client = set.client(c);
            let mut ws = worker_workspace(workspaces);
            let loaded = load_client(&mut ws, &client, num_items)?;
            let s = user_seed(client.user);
            let rc = client_round_config(cfg, reshuffle, round as u32, client.user);
            let outcome = crate::on_device!(loaded, |dev| {
                evaluate_loaded(dev, &rows, &rc, s, relevant, target)
            });
            match outcome {
                Ok(u) => Ok(Some(u)),
                Err(CoreError::EmptySplit { .. }) => Ok(None),
                Err(e) => Err(anyhow!("evaluating user {}: {e}", client.user)),
            }
        };
        let pool = &self.devices.pool;
        let (mut results, on_boards) = std::thread::scope(|scope| {
            let on_boards = (!board_jobs.is_empty())
                .then(|| scope.spawn(|| board_eval::run::<K>(boards, &board_jobs, &catalogue)));
            let results: Vec<Result<Option<UserEval>>> = pool.install(|| {
                users
                    .par_iter()
                    .zip(on_board.par_iter())
                    .map_init(Vec::new, |relevant, (&c, &theirs)| {
                        if theirs {
                            return Ok(None);
                        }
                        eval_user(relevant, c)
                    })
                    .collect()
            });
            let on_boards = on_boards.map(|h| h.join().unwrap_or_default());
            (results, on_boards.unwrap_or_default())
        });
        let mut done = vec![false; users.len()];
        for (pos, eval) in on_boards {
            if let (Some(u), Some(slot)) = (eval, results.get_mut(pos)) {
                *slot = Ok(Some(u));
                done[pos] = true;
            }
        }
        // A board that failed leaves its user to a virtual device.
        for j in &board_jobs {
            if !done[j.pos] {
                results[j.pos] = eval_user(&mut Vec::new(), users[j.pos]);
            }
        }
        results.into_iter().collect()
    }
}
