//! The round loop of the simulator: sample clients, run every virtual device's round in
//! parallel, encode each update, then decode and aggregate sequentially in client order and let
//! the server optimizer apply the mean (docs/SEMANTICS.md "One client's round", "Server").
//!
//! Determinism: every random draw is derived from the experiment seed (see [`crate::seeds`]),
//! workers write into per-client slots, and everything order-dependent (aggregation, metric
//! sums) runs sequentially in client order, so the model is bit-identical for any thread count.
//!
//! Each worker thread owns one boxed [`Device`] workspace of capacity [`N`] examples, reused for
//! every client it runs. The embedding width `K` is a const generic; [`dispatch_k!`] turns the
//! runtime `model.k` into a call of a generic function.

pub mod evaluate;

use std::sync::Mutex;
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail, ensure};
use fedrecon_core::{
    DenseRows, Device, Error as CoreError, Metrics, ModelConfig, Q12, Q16, RoundConfig, Scalar,
    SplitConfig,
};
use rayon::prelude::*;

use crate::comm::transport::{self, UpdateHeader};
use crate::comm::{self, DownlinkRound, TrafficStats, UplinkScratch};
use crate::config::reliability::{Reject, RoundFaults};
use crate::config::{Config, Weighting};
use crate::data::partition::{Client, ClientSet, Partition};
use crate::round::evaluate::{EvalReport, EvalSums, UserEval, evaluate_loaded};
use crate::seeds::{Purpose, sample_without_replacement, seed_for};
use crate::server::privacy::{DpSession, PrivacySpent};
use crate::server::{Aggregator, ClientRows, ServerOptimizer};

/// Example capacity of a device workspace: fits every ML-1M user uncapped (max 2,314 ratings).
pub const N: usize = 2400;

/// One virtual device's workspace.
pub type Workspace<S, const K: usize> = Device<S, N, K>;

/// A device scalar the simulator can run. The server keeps its rows in f32; each round it lends
/// them to the devices in the device scalar: zero-copy for f32, converted once for fixed point
/// (as the server would quantise the rows it sends to a fixed-point board).
pub trait SimScalar: Scalar + Send + Sync {
    /// `params` in this scalar, using `scratch` when a conversion is needed.
    fn lend<'a>(params: &'a [f32], scratch: &'a mut Vec<Self>) -> &'a [Self];
}

impl SimScalar for f32 {
    fn lend<'a>(params: &'a [f32], _: &'a mut Vec<Self>) -> &'a [Self] {
        params
    }
}

macro_rules! convert_lend {
    ($($t:ty),*) => {$(
        impl SimScalar for $t {
            fn lend<'a>(params: &'a [f32], scratch: &'a mut Vec<Self>) -> &'a [Self] {
                scratch.clear();
                scratch.extend(params.iter().map(|&x| <$t>::from_f32(x)));
                scratch
            }
        }
    )*};
}
convert_lend!(Q16, Q12);

/// Stack size of worker threads: a workspace is built on the stack before it is boxed in
/// unoptimised builds, and is over a megabyte for large `K`.
pub const WORKER_STACK: usize = 64 << 20;

/// Calls `$f::<K>($args)` with the const `K` equal to the runtime value `$k`, for every width in
/// [`crate::config::SUPPORTED_K`]; an unsupported width is an error.
#[macro_export]
macro_rules! dispatch_k {
    ($k:expr, $f:ident $(< $s:ty >)? ( $($arg:expr),* $(,)? )) => {
        match $k {
            8 => $f::<$($s,)? 8>($($arg),*),
            16 => $f::<$($s,)? 16>($($arg),*),
            20 => $f::<$($s,)? 20>($($arg),*),
            32 => $f::<$($s,)? 32>($($arg),*),
            50 => $f::<$($s,)? 50>($($arg),*),
            64 => $f::<$($s,)? 64>($($arg),*),
            100 => $f::<$($s,)? 100>($($arg),*),
            128 => $f::<$($s,)? 128>($($arg),*),
            other => Err(::anyhow::anyhow!(
                "embedding size K = {other} is not built in (supported: {:?})",
                $crate::config::SUPPORTED_K
            )),
        }
    };
}

/// Calls `$f::<S, K>($args)` with `S` the device scalar named by the runtime `$scalar`
/// ([`crate::config::Scalar`]) and `K` as in [`dispatch_k!`].
#[macro_export]
macro_rules! dispatch {
    ($scalar:expr, $k:expr, $f:ident ( $($arg:expr),* $(,)? )) => {
        match $scalar {
            $crate::config::Scalar::F32 => $crate::dispatch_k!($k, $f<f32>($($arg),*)),
            $crate::config::Scalar::Q16 => {
                $crate::dispatch_k!($k, $f<::fedrecon_core::Q16>($($arg),*))
            }
            $crate::config::Scalar::Q12 => {
                $crate::dispatch_k!($k, $f<::fedrecon_core::Q12>($($arg),*))
            }
        }
    };
}

/// A fresh boxed workspace (call on a thread with a [`WORKER_STACK`]-sized stack).
pub fn new_workspace<S: Scalar, const K: usize>() -> Box<Workspace<S, K>> {
    Box::new(Device::new())
}

/// A rayon pool of `threads` workers (0 = one per core) with large stacks.
pub fn thread_pool(threads: usize) -> Result<rayon::ThreadPool> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .stack_size(WORKER_STACK)
        .thread_name(|i| format!("fedrecon-worker-{i}"))
        .build()
        .context("cannot start the worker thread pool")
}

/// The device configuration of training rounds (`eval = false`) or evaluation (`eval = true`,
/// reconstruction SGD at `eval_recon_lr`). `global_mean` is the training mean rating, used when
/// the model asks for a global-mean term.
pub fn round_config(cfg: &Config, eval: bool, global_mean: f32) -> Result<RoundConfig> {
    let c = &cfg.client;
    let u16_of = |what: &str, v: u64| -> Result<u16> {
        u16::try_from(v).map_err(|_| anyhow!("client.{what} = {v} is too large (max 65535)"))
    };
    let rc = RoundConfig {
        split: SplitConfig {
            batch_size: u16_of("batch_size", c.batch_size as u64)?,
            // The partition already applied `max_ratings_per_user`.
            max_examples: None,
            shuffle_seed: c.shuffle_seed,
            split_dataset: c.split_dataset,
            recon_epochs: u16_of("recon_epochs", u64::from(c.recon_epochs))?,
            recon_steps_max: c
                .recon_steps_max
                .map(|v| u16_of("recon_steps_max", u64::from(v)))
                .transpose()?,
            post_epochs: u16_of("post_epochs", u64::from(c.post_epochs))?,
            post_steps_max: c
                .post_steps_max
                .map(|v| u16_of("post_steps_max", u64::from(v)))
                .transpose()?,
        },
        recon_lr: if eval { c.eval_recon_lr } else { c.recon_lr },
        post_lr: c.client_lr,
        user_l2: c.user_l2,
        init_scale: 0.05,
        weighting: match c.weighting {
            Weighting::Examples => fedrecon_core::Weighting::Examples,
            Weighting::Uniform => fedrecon_core::Weighting::Uniform,
        },
        accuracy_threshold: c.accuracy_threshold,
        model: ModelConfig {
            user_bias: cfg.model.user_bias,
            item_bias: cfg.model.item_bias,
            global_mean: cfg.model.global_mean.then_some(global_mean),
        },
    };
    rc.validate()
        .map_err(|e| anyhow!("client configuration rejected by the device: {e}"))?;
    Ok(rc)
}

/// Copies a client's examples into a device workspace.
pub fn load_client<S: Scalar, const K: usize>(
    dev: &mut Workspace<S, K>,
    client: &Client<'_>,
    num_items: u32,
) -> Result<()> {
    let data = dev.data_mut();
    data.clear();
    for (&item, &rating) in client.items.iter().zip(client.ratings) {
        data.push(item, S::from_f32(rating), num_items)
            .map_err(|e| match e {
                CoreError::CapacityExceeded { .. } => anyhow!(
                    "user {} has {} ratings, more than the device capacity of {N}; \
                 set data.max_ratings_per_user",
                    client.user,
                    client.len()
                ),
                e => anyhow!("user {}: {e}", client.user),
            })?;
    }
    Ok(())
}

/// One client's training outcome, written by a worker into its slot.
#[derive(Debug, Default)]
struct Slot {
    /// The encoded update (empty when the client had nothing to train on).
    bytes: Vec<u8>,
    /// Frame scratch of the encoder.
    frame_buf: Vec<u8>,
    /// Bytes of the client's downlink frames.
    bytes_down: u64,
    /// The uplink rows built from the device update (see [`comm`]).
    up: UplinkScratch,
    /// The client's distinct items (the rows of a `needed` downlink).
    needed: Vec<u32>,
    /// `Ok(false)`: skipped (a phase had no batch); an error aborts the round.
    outcome: Option<Result<bool>>,
    /// The server's decoding of `bytes`: header, then the rows (ids, values, biases).
    header: UpdateHeader,
    items: Vec<u32>,
    rows: Vec<f32>,
    biases: Vec<f32>,
    /// The client dropped out of the round (sent nothing).
    dropped: bool,
    /// A board client dropped for the round after failed exchanges on its link.
    link_failed: bool,
    /// Why the server refused the update ([`crate::server::validate`]), if it did.
    reject: Option<(Reject, String)>,
    /// The client is one of the attack bench's malicious users ([`crate::attack`]).
    malicious: bool,
}

/// A hook that may rewrite a client's encoded update before the server receives it
/// (`(round, user, bytes)`): how tests and fault injectors model hostile devices and faulty links.
pub type Tamper = Box<dyn Fn(u32, u32, &mut Vec<u8>) + Send + Sync>;

impl Slot {
    /// The server side of one upload: decodes `bytes` into the slot's row buffers. Rows are
    /// kept only if the whole update decodes (the decoder validates every frame).
    /// `wire_client` is the client id the update carries (the user, or a board's own id).
    fn receive<const K: usize>(
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

    /// The server's check of the decoded update ([`crate::server::validate`]): `Some` when it must be
    /// rejected.
    fn validate(
        &self,
        job: &ClientJob<'_, '_>,
        cfg: &RoundConfig,
        rel: &crate::config::reliability::ReliabilityConfig,
        k: usize,
    ) -> Option<(Reject, String)> {
        let kept = cfg.split.kept(job.client.len());
        let post = cfg
            .split
            .schedule(fedrecon_core::Phase::PostReconstruction, kept)
            .examples();
        let post = u32::try_from(post).unwrap_or(u32::MAX);
        let max_weight = match cfg.weighting {
            fedrecon_core::Weighting::Examples => post,
            fedrecon_core::Weighting::Uniform => 1,
        };
        let limits =
            crate::server::validate::Limits::new(rel, job.num_items as usize, k, max_weight, post);
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
    /// Bytes sent to the devices (the rows each needs).
    pub bytes_down: u64,
    /// Bytes of the encoded updates received.
    pub bytes_up: u64,
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
    num_items: usize,
    /// Flat parameters: `items × K` row-major, then item biases when the model has them.
    params: Vec<f32>,
    train_cfg: RoundConfig,
    eval_cfg: RoundConfig,
    opt: ServerOptimizer,
    agg: Aggregator,
    mean: Vec<f32>,
    pool: rayon::ThreadPool,
    workspaces: Vec<Mutex<Box<Workspace<S, K>>>>,
    /// The parameters converted to the device scalar (unused for f32).
    lent: Vec<S>,
    slots: Vec<Slot>,
    /// Differentially private aggregation and accounting (`privacy.enabled`).
    dp: Option<DpSession>,
    /// The round's downlink as the devices receive it.
    down: DownlinkRound,
    /// Frame scratch of the downlink encoder.
    down_buf: Vec<u8>,
    round: u32,
    tamper: Option<Tamper>,
    /// Boards that train some clients of each round (see [`crate::board`]).
    boards: crate::board::Boards,
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
        let train_cfg = round_config(cfg, false, global_mean)?;
        let eval_cfg = round_config(cfg, true, global_mean)?;
        let with_bias = cfg.model.item_bias;
        let agg = Aggregator::new(num_items, K, with_bias);
        let len = agg.param_len();
        let mut params = vec![0.0f32; len];
        let mut rng =
            fedrecon_core::rng::DeviceRng::new(seed_for(cfg.run.seed, Purpose::ItemInit, 0, 0));
        // Keras 'uniform': U(-0.05, 0.05) for the rows; biases start at zero.
        for p in &mut params[..num_items * K] {
            *p = -0.05 + 0.1 * rng.unit_f32();
        }
        let threads = cfg.run.threads.unwrap_or(0);
        let pool = thread_pool(threads)?;
        let workspaces = pool.install(|| {
            (0..rayon::current_num_threads())
                .map(|_| Mutex::new(new_workspace::<S, K>()))
                .collect()
        });
        Ok(Self {
            opt: ServerOptimizer::new(&cfg.server, len),
            cfg: cfg.clone(),
            part,
            num_items,
            params,
            train_cfg,
            eval_cfg,
            agg,
            mean: vec![0.0; len],
            pool,
            workspaces,
            lent: Vec::new(),
            slots: Vec::new(),
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
            down: DownlinkRound::default(),
            down_buf: Vec::new(),
            round: 0,
            tamper: None,
            boards: crate::board::Boards::default(),
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
            boards.is_empty() || !self.cfg.model.item_bias,
            "boards cannot join rounds of a model with item biases (the images cache none)"
        );
        ensure!(
            boards.is_empty() || self.cfg.comm == crate::comm::CommConfig::default(),
            "boards join rounds with the default link only (full f32 downlink, sparse f32 \
             uplink): the board images do not implement the [comm] modes"
        );
        self.boards = boards;
        Ok(())
    }

    /// The attached boards.
    pub fn boards(&self) -> &crate::board::Boards {
        &self.boards
    }

    /// Worker threads in use.
    pub fn threads(&self) -> usize {
        self.workspaces.len()
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

    /// The global item rows (`num_items × K`).
    pub fn items(&self) -> &[[f32; K]] {
        self.params[..self.num_items * K].as_chunks::<K>().0
    }

    /// The global item biases (empty without item biases).
    pub fn item_biases(&self) -> &[f32] {
        &self.params[self.num_items * K..]
    }

    /// Replaces the global parameters (the item rows row-major, then the item biases when the
    /// model has them), e.g. with a centrally trained model, to evaluate it exactly as a
    /// federated one (see [`crate::baselines::centralized`]).
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

    /// Runs one training round over the seeded sample of training clients.
    pub fn train_round(&mut self) -> Result<RoundStats> {
        let t0 = Instant::now();
        let round = self.round + 1;
        let seed = self.cfg.run.seed;
        let train = &self.part.train;
        let rel = &self.cfg.reliability.clone();
        let sample = sample_without_replacement(
            train.len(),
            rel.sample_size(self.cfg.run.clients_per_round),
            seed_for(seed, Purpose::SampleTrain, u64::from(round), 0),
        );
        self.slots.resize_with(sample.len(), Slot::default);
        let with_bias = self.cfg.model.item_bias;
        // Boards start on their clients first (none without boards); the rest run virtually.
        let link_faults_before = self.boards.injected_faults();
        let (on_board, board_clients, pending) = self.start_boards(round, &sample);
        let reshuffle = self.cfg.client.reshuffle_each_round;
        let comm_cfg = &self.cfg.comm;
        self.down = DownlinkRound::prepare::<K>(
            comm_cfg.downlink,
            round,
            &self.params,
            self.num_items,
            with_bias,
            &mut self.down_buf,
        )?;
        {
            // The devices train on what they decode: the dequantized rows of a quantized
            // downlink, else the server's rows.
            let device_params = self.down.dequantized.as_deref().unwrap_or(&self.params);
            let lent = S::lend(device_params, &mut self.lent);
            let rows = rows_view::<S, K>(lent, self.num_items, with_bias);
            let (cfg, workspaces, num_items) =
                (&self.train_cfg, &self.workspaces, self.num_items as u32);
            let tamper = self.tamper.as_deref();
            let attack = &self.cfg.attack;
            let shape = (self.num_items, K, with_bias);
            let (params, down) = (&self.params, &self.down);
            let slots = &mut self.slots;
            self.pool.install(|| {
                slots
                    .par_iter_mut()
                    .zip(sample.par_iter())
                    .zip(on_board.par_iter())
                    .filter(|(_, on_board)| !**on_board)
                    .for_each(|((slot, &c), _)| {
                        let client = train.client(c);
                        let client_seed = seed_for(
                            seed,
                            Purpose::TrainClient,
                            u64::from(round),
                            client.user.into(),
                        );
                        slot.reject = None;
                        slot.malicious = false;
                        slot.link_failed = false;
                        slot.dropped = rel.drops(seed, round, client.user);
                        if slot.dropped {
                            slot.bytes.clear();
                            slot.outcome = Some(Ok(false));
                            return;
                        }
                        let job = ClientJob {
                            round,
                            client: &client,
                            num_items,
                            seed: client_seed,
                        };
                        comm::distinct_sorted(client.items, &mut slot.needed);
                        let start = comm::round_start(
                            round,
                            client_seed,
                            cfg,
                            num_items as usize,
                            comm_cfg.uplink,
                        );
                        let outcome = comm::client_downlink_bytes::<K>(
                            comm_cfg.downlink,
                            down,
                            start,
                            params,
                            num_items as usize,
                            &slot.needed,
                            &mut slot.frame_buf,
                        )
                        .and_then(|b| {
                            slot.bytes_down = b;
                            let mut ws = worker_workspace(workspaces);
                            let rc = client_round_config(cfg, reshuffle, round, client.user);
                            train_client(
                                &mut ws,
                                &rows,
                                &rc,
                                &job,
                                (comm_cfg, &mut slot.up),
                                &mut slot.frame_buf,
                                &mut slot.bytes,
                            )
                        });
                        if let (Ok(true), Some(t)) = (&outcome, tamper) {
                            t(round, client.user, &mut slot.bytes);
                        }
                        // The server decodes and validates each upload as soon as it is
                        // complete (in parallel across clients; a pure function of the bytes).
                        slot.outcome = Some(match outcome {
                            Ok(true) => {
                                slot.reject = match slot.receive::<K>(
                                    round,
                                    client.user,
                                    client.user,
                                    with_bias,
                                ) {
                                    Ok(()) => {
                                        slot.malicious = attack.is_malicious(seed, client.user);
                                        if slot.malicious {
                                            // The attack bench: this client's update is
                                            // rewritten, then validated like any other.
                                            let u = crate::attack::Poisoned {
                                                items: &mut slot.items,
                                                rows: &mut slot.rows,
                                                biases: &mut slot.biases,
                                            };
                                            crate::attack::poison(attack, params, shape, u);
                                            slot.header.rows = slot.items.len() as u32;
                                        }
                                        slot.validate(&job, cfg, rel, K)
                                    }
                                    Err(e) => Some((Reject::Malformed, format!("{e:#}"))),
                                };
                                Ok(true)
                            }
                            other => other,
                        });
                    });
            });
        }
        let (mut link_errors, mut link_retries) = (0u32, 0u32);
        for ((i, user), report) in board_clients.into_iter().zip(self.boards.finish(pending)) {
            let client = train.client(sample[i]);
            let job = ClientJob {
                round,
                client: &client,
                num_items: self.num_items as u32,
                seed: seed_for(seed, Purpose::TrainClient, u64::from(round), user.into()),
            };
            let slot = &mut self.slots[i];
            slot.reject = None;
            slot.malicious = false;
            slot.dropped = false;
            slot.bytes_down = 0;
            slot.link_failed = false;
            link_errors += report.link_errors;
            link_retries += u32::from(report.retried);
            slot.outcome = Some(match report.update {
                Ok(Some(bytes)) => {
                    // A board's update is decoded and validated exactly like a virtual one's.
                    slot.bytes = bytes;
                    let board = crate::board::BOARD_CLIENT;
                    slot.reject = match slot.receive::<K>(round, user, board, with_bias) {
                        Ok(()) => slot.validate(&job, &self.train_cfg, rel, K),
                        Err(e) => Some((Reject::Malformed, format!("{e:#}"))),
                    };
                    Ok(true)
                }
                // Failed twice on the link: nothing of it is aggregated.
                Ok(None) => {
                    slot.bytes.clear();
                    slot.link_failed = true;
                    Ok(false)
                }
                Err(e) => Err(e),
            });
        }
        let device_seconds = t0.elapsed().as_secs_f64();

        // Select, in sample order, the first `clients_per_round` valid reports; aggregate
        // them in that order (item stripes in parallel, each summed in client order).
        self.agg.reset();
        let (mut bytes_up, mut bytes_down, mut skipped, mut examples) = (0u64, 0u64, 0u32, 0u64);
        let mut faults = RoundFaults {
            link_faults: self.boards.injected_faults() - link_faults_before,
            link_errors,
            link_retries,
            ..RoundFaults::default()
        };
        let wanted = self.cfg.run.clients_per_round;
        let mut take = vec![false; self.slots.len()];
        let mut accepted = 0usize;
        let mut per_client = Vec::with_capacity(self.slots.len());
        for (i, (slot, &c)) in self.slots.iter_mut().zip(&sample).enumerate() {
            let client = train.client(c);
            match slot.outcome.take() {
                Some(Ok(true)) => {}
                Some(Ok(false)) if slot.dropped => {
                    faults.dropped += 1;
                    continue;
                }
                Some(Ok(false)) if slot.link_failed => {
                    faults.link_failed.push(client.user);
                    continue;
                }
                Some(Ok(false)) => {
                    skipped += 1;
                    continue;
                }
                Some(Err(e)) => {
                    return Err(e.context(format!("round {round}, user {}", client.user)));
                }
                None => bail!("internal: round {round}, user {} was not run", client.user),
            }
            bytes_up += slot.bytes.len() as u64;
            bytes_down += slot.bytes_down;
            per_client.push((
                slot.bytes_down,
                slot.bytes.len() as u64,
                slot.items.len() as u32,
                comm_cfg.update_mode == comm::UpdateMode::Padded
                    && slot.up.touched > comm_cfg.pad_rows,
                comm::l2_norm(&slot.rows, &slot.biases),
            ));
            examples +=
                u64::from(slot.header.metrics.count) + recon_examples(&self.train_cfg, &client);
            if let Some((why, msg)) = &slot.reject {
                faults.reject(*why);
                tracing::warn!(
                    round,
                    user = client.user,
                    reason = why.name(),
                    "update rejected: {msg}"
                );
                continue;
            }
            if accepted == wanted {
                faults.surplus += 1;
                continue;
            }
            accepted += 1;
            take[i] = true;
        }
        let traffic = TrafficStats::from_clients(&per_client);
        let mut security = (self.cfg.attack.kind != crate::attack::AttackKind::None
            || self.cfg.robust.is_active())
        .then(|| crate::attack::RoundSecurity {
            attackers: self
                .slots
                .iter()
                .zip(&take)
                .filter(|&(slot, &t)| t && slot.malicious)
                .count() as u32,
            ..Default::default()
        });
        let min = self.cfg.reliability.min_clients;
        let round_skipped = accepted < min;
        let updates: Vec<_> = self
            .slots
            .iter()
            .zip(&take)
            .filter(|&(_, &t)| t)
            .map(|(slot, _)| {
                (
                    ClientRows {
                        weight: slot.header.weight,
                        items: &slot.items,
                        rows: &slot.rows,
                        biases: &slot.biases,
                    },
                    slot.header.metrics,
                )
            })
            .collect();
        let mut privacy = None;
        let applied = if round_skipped {
            // Never half-applied: the reports' metrics are kept, their rows are not.
            for (c, m) in &updates {
                self.agg.add_client(c.weight, m);
            }
            let why = format!(
                "{accepted} of {} sampled clients sent a valid update, fewer than \
                 reliability.min_clients = {min}",
                sample.len()
            );
            tracing::warn!(round, "round skipped: {why}");
            faults.skipped = true;
            faults.reason = Some(why);
            false
        } else {
            let robust = &self.cfg.robust;
            let applied = match self.dp.as_mut() {
                None if robust.is_active() => {
                    // A robust rule (issue 19) replaces the weighted mean; the aggregator
                    // still sums the clients' weights and metrics.
                    let rows: Vec<ClientRows<'_>> = updates.iter().map(|(c, _)| *c).collect();
                    let shape = crate::server::robust::Shape {
                        items: self.num_items,
                        k: K,
                        with_bias,
                    };
                    let mean = &mut self.mean;
                    let (ok, stats) = self
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
                    self.pool
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
            if applied {
                let r = &self.cfg.run;
                let decay = r.server_lr_decay.factor(round, r.rounds, r.server_lr_final);
                self.opt.set_lr(self.cfg.server.lr() * decay);
                self.opt.step(&mut self.params, &self.mean);
            } else {
                tracing::warn!(
                    round,
                    "aggregate is not finite or has no weight; server update skipped"
                );
            }
            applied
        };
        drop(updates);
        let rel = &self.cfg.reliability;
        if rel.dropout > 0.0
            || rel.over_select > 0.0
            || round_skipped
            || !faults.rejected.is_empty()
            || faults.link_errors > 0
        {
            faults.aggregated = Some(if round_skipped { 0 } else { accepted as u32 });
        }
        self.round = round;
        let m = self.agg.metrics();
        Ok(RoundStats {
            round,
            loss: f64::from(m.loss_sum) / f64::from(m.count.max(1)),
            rating_accuracy: f64::from(m.correct) / f64::from(m.count.max(1)),
            seconds: t0.elapsed().as_secs_f64(),
            bytes_down,
            bytes_up,
            clients: sample.len() as u32,
            skipped,
            applied,
            faults,
            traffic,
            privacy,
            security,
            examples,
            device_seconds,
            server_seconds: t0.elapsed().as_secs_f64() - device_seconds,
        })
    }

    /// Privacy spent so far (DP runs after their first round).
    pub fn privacy_spent(&self) -> Option<PrivacySpent> {
        self.dp.as_ref().and_then(DpSession::spent)
    }

    /// The DP session of a DP run.
    pub fn dp_session(&self) -> Option<&DpSession> {
        self.dp.as_ref()
    }

    /// Assigns clients of `sample` to the boards and starts them: which sample positions are
    /// on a board, `(position, user)` of each in job order, and the running boards.
    #[allow(clippy::type_complexity)]
    fn start_boards(
        &mut self,
        round: u32,
        sample: &[usize],
    ) -> (Vec<bool>, Vec<(usize, u32)>, crate::board::Pending) {
        let train = &self.part.train;
        let lens: Vec<usize> = sample.iter().map(|&c| train.client(c).len()).collect();
        let assigned = self.boards.assign(round, &self.train_cfg, &lens);
        let mut on_board = vec![false; sample.len()];
        let mut clients = Vec::with_capacity(assigned.len());
        let mut jobs = Vec::with_capacity(assigned.len());
        for (b, i) in assigned {
            let client = train.client(sample[i]);
            on_board[i] = true;
            clients.push((i, client.user));
            let seed = seed_for(
                self.cfg.run.seed,
                Purpose::TrainClient,
                u64::from(round),
                client.user.into(),
            );
            let job = crate::board::BoardJob {
                round,
                items: client.items.to_vec(),
                ratings: client.ratings.to_vec(),
                seed,
                cfg: client_round_config(
                    &self.train_cfg,
                    self.cfg.client.reshuffle_each_round,
                    round,
                    client.user,
                ),
            };
            jobs.push((b, job));
        }
        let rows = self.params[..self.num_items * K].as_chunks::<K>().0;
        let pending = self.boards.start::<K>(rows, jobs);
        (on_board, clients, pending)
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

    /// Evaluates the given users of `set` in parallel and sums their results in order.
    pub fn evaluate_users(
        &mut self,
        set: &ClientSet,
        users: &[usize],
        split: Split,
    ) -> Result<EvalSums> {
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
        let lent = S::lend(device_params, &mut self.lent);
        let rows = rows_view::<S, K>(lent, self.num_items, self.cfg.model.item_bias);
        let (cfg, workspaces, num_items) =
            (&self.eval_cfg, &self.workspaces, self.num_items as u32);
        let (seed, round) = (self.cfg.run.seed, u64::from(self.round));
        let reshuffle = self.cfg.client.reshuffle_each_round;
        let target = self.cfg.attack.target;
        let results: Vec<Result<Option<UserEval>>> = self.pool.install(|| {
            users
                .par_iter()
                .map_init(Vec::new, |relevant, &c| {
                    let client = set.client(c);
                    let mut ws = worker_workspace(workspaces);
                    load_client(&mut ws, &client, num_items)?;
                    let s = seed_for(
                        seed,
                        Purpose::EvalClient,
                        round,
                        (u64::from(client.user) << 1) | (split == Split::Test) as u64,
                    );
                    let rc = client_round_config(cfg, reshuffle, round as u32, client.user);
                    match evaluate_loaded(&mut **ws, &rows, &rc, s, relevant, target) {
                        Ok(u) => Ok(Some(u)),
                        Err(CoreError::EmptySplit { .. }) => Ok(None),
                        Err(e) => Err(anyhow!("evaluating user {}: {e}", client.user)),
                    }
                })
                .collect()
        });
        let mut sums = EvalSums::default();
        for r in results {
            if let Some(u) = r? {
                sums.add(&u);
            }
        }
        Ok(sums)
    }
}

/// The device configuration of one client in one round: with `reshuffle`, its shuffle seed is
/// derived from the configured seed, the round and the user, so each round sees a new order
/// (TFF reshuffles on every iteration); otherwise `cfg` as is.
pub fn client_round_config(
    cfg: &RoundConfig,
    reshuffle: bool,
    round: u32,
    user: u32,
) -> RoundConfig {
    let mut rc = *cfg;
    if reshuffle {
        rc.split.shuffle_seed = rc
            .split
            .shuffle_seed
            .map(|s| crate::seeds::derive(&[s, u64::from(round), u64::from(user)]));
    }
    rc
}

/// The dense view of the flat parameter vector.
fn rows_view<S: Scalar, const K: usize>(
    params: &[S],
    num_items: usize,
    bias: bool,
) -> DenseRows<'_, S, K> {
    let rows = params[..num_items * K].as_chunks::<K>().0;
    if bias {
        DenseRows::with_biases(rows, &params[num_items * K..])
            .expect("one bias per item row by construction")
    } else {
        DenseRows::new(rows)
    }
}

/// The workspace of the current worker thread (uncontended: one per worker).
fn worker_workspace<S: Scalar, const K: usize>(
    workspaces: &[Mutex<Box<Workspace<S, K>>>],
) -> std::sync::MutexGuard<'_, Box<Workspace<S, K>>> {
    let i = rayon::current_thread_index().unwrap_or(0) % workspaces.len();
    workspaces[i].lock().unwrap_or_else(|p| p.into_inner())
}

/// One client's training job.
#[derive(Clone, Copy, Debug)]
pub struct ClientJob<'a, 'c> {
    /// 1-based round number (carried in the update's frames).
    pub round: u32,
    /// The client's data.
    pub client: &'a Client<'c>,
    /// Catalogue size.
    pub num_items: u32,
    /// Seed of the user-embedding initialisation.
    pub seed: u64,
}

/// Runs one client's training round and encodes its update into `out` (`frame_buf` is the
/// encoder's scratch). `Ok(false)` when a phase has no batch (the client then sends nothing).
pub fn train_client<S: Scalar, R: fedrecon_core::ItemRows<S, K>, const K: usize>(
    dev: &mut Workspace<S, K>,
    rows: &R,
    cfg: &RoundConfig,
    job: &ClientJob<'_, '_>,
    (comm_cfg, up): (&comm::CommConfig, &mut UplinkScratch),
    frame_buf: &mut Vec<u8>,
    out: &mut Vec<u8>,
) -> Result<bool> {
    let client = job.client;
    load_client(dev, client, job.num_items)?;
    match dev.train(rows, cfg, job.seed) {
        Ok(update) => {
            let seed = comm::uplink_seed(job.seed, job.round, client.user);
            let sent = up.shape(&update, comm_cfg, job.num_items as usize, seed);
            transport::encode_update_as(
                job.round,
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

/// Examples the reconstruction phase of `cfg` visits for `client` (for throughput figures).
fn recon_examples(cfg: &RoundConfig, client: &Client<'_>) -> u64 {
    let kept = cfg.split.kept(client.len());
    cfg.split
        .schedule(fedrecon_core::Phase::Reconstruction, kept)
        .examples() as u64
}

/// Mean training rating (the global-mean term when the model uses one).
pub fn mean_rating(set: &ClientSet) -> f32 {
    let (mut sum, mut n) = (0f64, 0u64);
    for c in set.iter() {
        sum += c.ratings.iter().map(|&r| f64::from(r)).sum::<f64>();
        n += c.len() as u64;
    }
    if n == 0 { 0.0 } else { (sum / n as f64) as f32 }
}

/// Sums of metrics across clients, finalised (kept for callers outside the engine).
pub fn finalize(m: &Metrics) -> (f64, f64) {
    let n = f64::from(m.count.max(1));
    (f64::from(m.loss_sum) / n, f64::from(m.correct) / n)
}
